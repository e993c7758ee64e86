"""Fold BatchNorm into the preceding convolution before quantization.

Quantizing the folded weight is what the deployed graph computes (ONNX exporters and TensorRT fold
BN anyway), so calibration and QAT see the real per-channel weight ranges. The BN module becomes
``nn.Identity``; ``apply_fold_structure`` replays that change on a fresh model so checkpoints load.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from compressor.stages.quantize.dataflow import trace_flow

_BN = (nn.BatchNorm1d, nn.BatchNorm2d)


def find_conv_bn_pairs(model: nn.Module, inputs: tuple[Tensor, ...]) -> list[tuple[str, str]]:
    """(conv, bn) names where the BN's input is exactly the conv's output."""
    modules = {n: m for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear) + _BN)}
    flow = trace_flow(model, inputs, modules)
    convs = {flow.outputs[n]: n for n, m in modules.items()
             if isinstance(m, (nn.Conv2d, nn.Linear)) and n in flow.outputs}
    return [(convs[flow.inputs[n]], n) for n, m in modules.items()
            if isinstance(m, _BN) and flow.inputs.get(n) in convs]


@torch.no_grad()
def fold_batchnorm(model: nn.Module, pairs: list[tuple[str, str]]) -> None:
    """Fold each BN's affine transform and running statistics into its conv, in place."""
    for conv_name, bn_name in pairs:
        conv, bn = model.get_submodule(conv_name), model.get_submodule(bn_name)
        std = torch.sqrt(bn.running_var + bn.eps)
        gamma = bn.weight if bn.affine else torch.ones_like(std)
        beta = bn.bias if bn.affine else torch.zeros_like(std)
        factor = gamma / std
        conv.weight.mul_(factor.reshape(-1, *([1] * (conv.weight.dim() - 1))))
        bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
        new_bias = beta + (bias - bn.running_mean) * factor
        _ensure_bias(conv)
        conv.bias.copy_(new_bias)
        _replace(model, bn_name, nn.Identity())


def apply_fold_structure(model: nn.Module, pairs: list[tuple[str, str]]) -> None:
    """The architecture change of ``fold_batchnorm`` without the arithmetic (for restore)."""
    for conv_name, bn_name in pairs:
        _ensure_bias(model.get_submodule(conv_name))
        _replace(model, bn_name, nn.Identity())


def _ensure_bias(conv: nn.Module) -> None:
    if conv.bias is None:
        conv.bias = nn.Parameter(torch.zeros(conv.weight.shape[0], dtype=conv.weight.dtype))


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, new)
