"""SmoothQuant (Xiao et al., 2023): migrate activation outliers into the weights.

Transformer activations have a few channels with values 10-100x the rest; one per-tensor int8
scale then crushes every other channel, which is why naive static int8 breaks MiniLM. For a
Linear ``y = x W^T`` the per-input-channel factor ``s_j = max|x_j|^alpha / max|W_:,j|^(1-alpha)``
gives ``y = (x / s) (W * s)^T``: the same output, flatter activations, and weights that per-channel
int8 still handles.

The paper folds ``1 / s`` into the LayerNorm before the Linear. That is only exact for pre-LN
models (LLaMA, OPT): in post-LN BERT models such as MiniLM the LayerNorm output is also the
residual stream, so scaling it changes the model. Here the factor stays an explicit per-channel
multiply in front of the input quantizer (``TensorQuantizer.smooth``): one elementwise op per
quantized tensor, exact for any architecture, and shared by all Linears that read the tensor
(Q, K and V get one factor, computed over their three weights).

Because each factor costs that Mul at run time, ``min_outlier_ratio`` smooths only tensors that
have outliers: those whose largest channel range is at least that many times the median channel
range (in MiniLM: 9-20x for the FFN inputs, 4-6x for Q/K/V, 2-3x for the attention output).
"""
from __future__ import annotations

from typing import Iterable

import torch
from torch import Tensor, nn

from compressor.stages.quantize.dataflow import run_hooked
from compressor.stages.quantize.quantizers import QuantLinear, TensorQuantizer


def smooth_groups(model: nn.Module) -> dict[str, list[str]]:
    """Quantized Linears grouped by their (shared) input quantizer, keyed by its name."""
    names = {id(q): n for n, q in model.named_modules() if isinstance(q, TensorQuantizer)}
    groups: dict[str, list[str]] = {}
    for name, m in model.named_modules():
        if isinstance(m, QuantLinear) and m.input_quantizer is not None:
            groups.setdefault(names[id(m.input_quantizer)], []).append(name)
    return groups


@torch.no_grad()
def input_channel_max(model: nn.Module, quantizer_names: list[str],
                      batches: Iterable[tuple[Tensor, ...]]) -> dict[str, Tensor]:
    """Per-channel (last dim) max |x| each named quantizer sees in the float model."""
    stats: dict[str, Tensor] = {}

    def hook(name: str):
        def fn(_m: nn.Module, args: tuple) -> None:
            x = args[0].detach()
            cur = x.abs().reshape(-1, x.shape[-1]).amax(0).float()
            stats[name] = cur if name not in stats else torch.maximum(stats[name], cur)
        return fn

    quantizers = [m for m in model.modules() if isinstance(m, TensorQuantizer)]
    states = [q.enabled for q in quantizers]
    for q in quantizers:  # statistics of the float model
        q.enabled = False
    try:
        run_hooked(model, batches, [(model.get_submodule(n), hook(n)) for n in quantizer_names], pre=True)
    finally:
        for q, state in zip(quantizers, states):
            q.enabled = state
    return stats


@torch.no_grad()
def smooth(model: nn.Module, groups: dict[str, list[str]], act_max: dict[str, Tensor],
           alpha: float = 0.5, min_outlier_ratio: float = 0.0) -> list[str]:
    """Set each group's factors and rescale its weights (the float function is unchanged).

    Returns the input quantizers that were smoothed (groups below ``min_outlier_ratio`` are not).
    """
    done = []
    for qname, linears in groups.items():
        if qname not in act_max:
            continue
        a = act_max[qname].clamp_min(1e-5)
        if float(a.max() / a.median()) < min_outlier_ratio:
            continue
        mods = [model.get_submodule(n) for n in linears]
        w = torch.stack([m.weight.abs().amax(0) for m in mods]).amax(0).clamp_min(1e-5)
        s = (a.pow(alpha) / w.pow(1 - alpha)).clamp(1e-4, 1e4)
        q = model.get_submodule(qname)
        if q.smooth is None:
            q.enable_smoothing(len(s))
        q.smooth.div_(s)
        for m in mods:
            m.weight.mul_(s[None, :])
        done.append(qname)
    return done
