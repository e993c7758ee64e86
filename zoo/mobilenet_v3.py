"""MobileNetV3-Small (Howard et al., 2019) with ImageNet shapes, written by hand.

What MobileNetV2 lacks and edge models now use: squeeze-excitation (a per-channel gate that pruning
must keep in step with the block's channels, and a Mul that quantization must place) and
hard-swish/hard-sigmoid (ONNX HardSwish/HardSigmoid from opset 14). Module names follow
torchvision's ``mobilenet_v3_small``, so its state dicts load unchanged; without one the weights
are random with a fixed seed and a data-dependent init (``zoo/synthetic.py``).
"""
from __future__ import annotations

from functools import partial
from typing import NamedTuple

import torch
from torch import Tensor, nn

from compressor.zoo.registry import register_model
from compressor.zoo.resnet import make_divisible
from compressor.zoo.synthetic import data_dependent_init


class Bneck(NamedTuple):
    """One bottleneck row of the paper's Table 2 (channels before width scaling)."""

    kernel: int
    expanded: int
    out: int
    se: bool
    hardswish: bool
    stride: int


#: MobileNetV3-Small's bottlenecks after its 16-channel stem; the last conv is 6x the last width.
_SMALL = (Bneck(3, 16, 16, True, False, 2),
          Bneck(3, 72, 24, False, False, 2), Bneck(3, 88, 24, False, False, 1),
          Bneck(5, 96, 40, True, True, 2), Bneck(5, 240, 40, True, True, 1), Bneck(5, 240, 40, True, True, 1),
          Bneck(5, 120, 48, True, True, 1), Bneck(5, 144, 48, True, True, 1),
          Bneck(5, 288, 96, True, True, 2), Bneck(5, 576, 96, True, True, 1),
          Bneck(5, 576, 96, True, True, 1))

#: torchvision's BatchNorm settings for MobileNetV3 (they differ from PyTorch's defaults).
_norm = partial(nn.BatchNorm2d, eps=0.001, momentum=0.01)


def conv_bn_act(cin: int, cout: int, kernel: int = 1, stride: int = 1, groups: int = 1,
                act: type[nn.Module] | None = nn.Hardswish) -> nn.Sequential:
    """torchvision's ``Conv2dNormActivation``: the same children (0: conv, 1: norm, 2: activation)."""
    conv = nn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False)
    layers: list[nn.Module] = [conv, _norm(cout)]
    return nn.Sequential(*layers, act(inplace=True)) if act is not None else nn.Sequential(*layers)


class SqueezeExcitation(nn.Module):
    """Pool to 1x1, squeeze and excite with 1x1 convs, gate the channels with hard-sigmoid.

    1x1 convs (torchvision's, not Linear layers) keep the gate NCHW: torch-pruning couples ``fc2``'s
    outputs to the gated channels through the Mul, and ONNX needs no reshapes.
    """

    def __init__(self, channels: int, squeeze: int) -> None:
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, squeeze, 1)
        self.fc2 = nn.Conv2d(squeeze, channels, 1)
        self.activation = nn.ReLU()
        self.scale_activation = nn.Hardsigmoid()

    def forward(self, x: Tensor) -> Tensor:
        return x * self.scale_activation(self.fc2(self.activation(self.fc1(self.avgpool(x)))))


class InvertedResidual(nn.Module):
    """1x1 expand (unless the width stays), kxk depthwise, optional SE, linear 1x1 project."""

    def __init__(self, cin: int, cnf: Bneck, width_mult: float) -> None:
        super().__init__()
        hidden, cout = make_divisible(cnf.expanded * width_mult), make_divisible(cnf.out * width_mult)
        act = nn.Hardswish if cnf.hardswish else nn.ReLU
        self.use_res_connect = cnf.stride == 1 and cin == cout
        self.out_channels = cout
        layers = [conv_bn_act(cin, hidden, act=act)] if hidden != cin else []
        layers.append(conv_bn_act(hidden, hidden, cnf.kernel, cnf.stride, groups=hidden, act=act))
        if cnf.se:
            layers.append(SqueezeExcitation(hidden, make_divisible(hidden // 4)))
        layers.append(conv_bn_act(hidden, cout, act=None))
        self.block = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        # Out of place, so the residual Add is a node of its own (Q/DQ placement and pruning see it).
        return x + self.block(x) if self.use_res_connect else self.block(x)


class MobileNetV3(nn.Module):
    """Stem conv, the bottlenecks, a 1x1 conv to 6x the last width, pool, a hard-swish MLP head."""

    def __init__(self, settings: tuple[Bneck, ...] = _SMALL, last_channel: int = 1024,
                 num_classes: int = 1000, width_mult: float = 1.0, dropout: float = 0.2) -> None:
        super().__init__()
        cin = make_divisible(16 * width_mult)
        layers: list[nn.Module] = [conv_bn_act(3, cin, 3, 2)]
        for cnf in settings:
            layers.append(InvertedResidual(cin, cnf, width_mult))
            cin = layers[-1].out_channels
        layers.append(conv_bn_act(cin, 6 * cin))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        last = make_divisible(last_channel * width_mult)
        self.classifier = nn.Sequential(nn.Linear(6 * cin, last), nn.Hardswish(inplace=True),
                                        nn.Dropout(dropout, inplace=True), nn.Linear(last, num_classes))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


@register_model("mobilenet_v3_small", dataset="imagenet-synthetic", weights="random (or your checkpoint)",
                description="MobileNetV3-Small (SE, hard-swish), ImageNet shapes (3x224x224 -> 1000), "
                            "2.5M parameters")
def mobilenet_v3_small(num_classes: int = 1000, width_mult: float = 1.0, seed: int = 0,
                       resolution: int = 224, pretrained: bool = True) -> MobileNetV3:
    """MobileNetV3-Small with seeded random weights and a data-dependent init (see ``zoo/synthetic.py``).

    ``width_mult`` scales every layer's channels (the head's hidden width too); ``resolution`` is
    the image size the init calibrates at and must be the dataset's (the logits are centred for
    that size only). ``pretrained=False`` skips the init (there are no ImageNet weights offline):
    the bare architecture, for a checkpoint to fill.
    """
    with torch.random.fork_rng(devices=[]):  # also holds the calibration pass's dropout draws
        torch.manual_seed(seed)
        model = MobileNetV3(_SMALL, 1024, num_classes, width_mult)
        if not pretrained:
            return model.eval()
        residual = [b.block[-1][1] for b in model.modules()
                    if isinstance(b, InvertedResidual) and b.use_res_connect]
        return data_dependent_init(model, model.classifier[-1], residual, resolution)
