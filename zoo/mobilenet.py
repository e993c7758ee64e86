"""MobileNetV2 (Sandler et al., 2018) with ImageNet shapes, written by hand.

The edge-target workhorse: depthwise convs and inverted residuals stress pruning (group convs must
keep in/out channels tied) and int8 quantization (ReLU6 ranges, depthwise per-channel scales)
differently from ResNet. Module names follow torchvision, so its state dicts load unchanged; without
one the weights are random with a fixed seed and a data-dependent init (``zoo/synthetic.py``).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from compressor.zoo.registry import register_model
from compressor.zoo.resnet import make_divisible
from compressor.zoo.synthetic import data_dependent_init

#: (expansion t, output channels c, repeats n, first stride s), as in the paper's Table 2.
_SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
             (6, 160, 3, 2), (6, 320, 1, 1))


def conv_bn_relu6(cin: int, cout: int, kernel: int = 3, stride: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU6(inplace=True))


class InvertedResidual(nn.Module):
    """1x1 expand, 3x3 depthwise, linear 1x1 project; a residual when stride 1 keeps the shape."""

    def __init__(self, cin: int, cout: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        hidden = round(cin * expand_ratio)
        self.use_res_connect = stride == 1 and cin == cout
        layers = [conv_bn_relu6(cin, hidden, kernel=1)] if expand_ratio != 1 else []
        layers += [conv_bn_relu6(hidden, hidden, stride=stride, groups=hidden),
                   nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class MobileNetV2(nn.Module):
    """Stem conv, 17 inverted-residual blocks, a 1x1 conv to 1280 channels, pool, dropout, linear."""

    def __init__(self, num_classes: int = 1000, width_mult: float = 1.0, dropout: float = 0.2) -> None:
        super().__init__()
        cin = make_divisible(32 * width_mult)
        last = make_divisible(1280 * max(1.0, width_mult))
        layers: list[nn.Module] = [conv_bn_relu6(3, cin, stride=2)]
        for t, c, n, s in _SETTINGS:
            cout = make_divisible(c * width_mult)
            for i in range(n):
                layers.append(InvertedResidual(cin, cout, s if i == 0 else 1, t))
                cin = cout
        layers.append(conv_bn_relu6(cin, last, kernel=1))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(last, num_classes))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


@register_model("mobilenet_v2", dataset="imagenet-synthetic", weights="random (or your checkpoint)",
                description="MobileNetV2, ImageNet shapes (3x224x224 -> 1000 classes), 3.5M parameters")
def mobilenet_v2(num_classes: int = 1000, width_mult: float = 1.0, seed: int = 0,
                 resolution: int = 224, pretrained: bool = True) -> MobileNetV2:
    """MobileNetV2 with seeded random weights and a data-dependent init (see ``zoo/synthetic.py``).

    ``width_mult`` scales every layer's channels; ``resolution`` is the image size the init
    calibrates at and must be the dataset's (the logits are centred for that size only).
    ``pretrained=False`` skips the init (there are no ImageNet weights offline): the bare
    architecture, for a checkpoint to fill.
    """
    with torch.random.fork_rng(devices=[]):  # also holds the calibration pass's dropout draws
        torch.manual_seed(seed)
        model = MobileNetV2(num_classes, width_mult)
        if not pretrained:
            return model.eval()
        residual = [b.conv[-1] for b in model.modules() if isinstance(b, InvertedResidual) and b.use_res_connect]
        return data_dependent_init(model, model.classifier[-1], residual, resolution)
