"""ResNet-18 (He et al., 2015) with ImageNet shapes, written by hand.

torchvision does not import beside this torch build, so the network is rebuilt here with
torchvision's module names: a torchvision ``resnet18`` state dict loads into it unchanged, which is
how a user brings real weights (recipe ``model: {zoo: resnet18, checkpoint: resnet18.pth}``).
Without a checkpoint the weights are random with a fixed seed (and a data-dependent init, see
``zoo/synthetic.py``), so every rebuild of the base model (resume, search trials, stage replay) is
the same network.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from compressor.zoo.registry import register_model
from compressor.zoo.synthetic import data_dependent_init


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round a scaled channel count to a multiple of ``divisor`` without losing more than 10%.

    Multiples of 8 keep int8/fp16 kernels (TensorRT, ORT) on their fast paths after width scaling.
    """
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


class BasicBlock(nn.Module):
    """Two 3x3 convs and a shortcut; a 1x1 strided conv on the shortcut when the shape changes."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                           if stride != 1 or cin != cout else None)

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        # Out of place, so the residual Add is a node of its own (Q/DQ placement and pruning see it).
        return self.relu(out + identity)


class ResNet(nn.Module):
    """Stem (7x7/2 conv, 3x3/2 max-pool), four stages of BasicBlocks, global pool and a linear head."""

    def __init__(self, layers: tuple[int, ...] = (2, 2, 2, 2), num_classes: int = 1000,
                 width: float = 1.0) -> None:
        super().__init__()
        widths = [make_divisible(c * width) for c in (64, 128, 256, 512)]
        self.conv1 = nn.Conv2d(3, widths[0], 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        cin = widths[0]
        for i, (depth, cout) in enumerate(zip(layers, widths)):
            blocks = [BasicBlock(cin if j == 0 else cout, cout, 2 if (j == 0 and i > 0) else 1)
                      for j in range(depth)]
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
            cin = cout
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


@register_model("resnet18", dataset="imagenet-synthetic", weights="random (or your checkpoint)",
                description="ResNet-18, ImageNet shapes (3x224x224 -> 1000 classes), 11.7M parameters")
def resnet18(num_classes: int = 1000, width: float = 1.0, seed: int = 0, resolution: int = 224,
             pretrained: bool = True) -> ResNet:
    """ResNet-18 with seeded random weights and a data-dependent init (see ``zoo/synthetic.py``).

    ``width`` scales every stage's channels; ``resolution`` is the image size the init calibrates at
    and must be the dataset's (the logits are centred for that size only). ``pretrained=False`` skips
    the init (there are no ImageNet weights offline): the bare architecture, for a checkpoint to fill.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = ResNet((2, 2, 2, 2), num_classes, width)
        if not pretrained:
            return model.eval()
        residual = [b.bn2 for b in model.modules() if isinstance(b, BasicBlock) and b.downsample is None]
        return data_dependent_init(model, model.fc, residual, resolution)
