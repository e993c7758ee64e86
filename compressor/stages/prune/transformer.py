"""FFN-width and attention-head pruning of transformer layers (:mod:`compressor.transformer_layers`).

Units are cut from the Linears directly, so no graph tracing is involved and fused projections
work: an FFN neuron is a row of each up (and gate) projection and a column of the down
projection; a head is ``head_size`` rows of the query, key and value projections (one block in
each third of a fused ``c_attn``) and the matching columns of the attention output. With
grouped-query attention the unit is one key/value head together with the query heads that read
it, so the grouping survives. Importance ranks units like torch-pruning's group estimators:
``|w|^p`` (l1, l2) or ``|w * grad|`` (taylor) summed over every row and column of a unit, the
output energy a unit carries on training data (activation: ``E[x^2] |w|^2`` over its columns of
the down or output projection; magnitude misses a neuron that is small but always on), or random.
Each cut is recorded as ``[layer name, output?, removed indices]`` and replays on restore;
:func:`compressor.transformer_layers.sync_config` then updates head counts and the config.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal

import torch
import torch_pruning as tp
from torch import Tensor, nn

from compressor.errors import StageError
from compressor.stages.prune.importance import Criterion
from compressor.transformer_layers import TransformerLayer, sync_config

Unit = Literal["ffn", "heads"]
#: One cut: [layer name, prunes output rows?, removed indices].
Cuts = list[list[object]]


@dataclass(frozen=True)
class Member:
    """One Linear's share of a layer's units: ``index[u]`` lists the rows (``out``) or columns of unit u."""

    name: str
    module: nn.Linear
    out: bool
    index: Tensor  # (units, k)


def kept(initial: int, ratio: float, step: int, steps: int, round_to: int | None = None) -> int:
    """Units kept after ``step`` of ``steps`` linear steps towards removing ``ratio`` of ``initial``."""
    keep = initial - int(initial * ratio * step / steps)
    if round_to:
        keep = max(round_to, keep - keep % round_to)
    return max(1, min(initial, keep))


def units(layer: TransformerLayer, unit: Unit) -> int:
    """FFN neurons or query heads: what the stage reports before and after."""
    return layer.ffn_width if unit == "ffn" else layer.num_heads


def members(layer: TransformerLayer, unit: Unit, names: dict[nn.Module, str]) -> list[Member]:
    """The rows and columns that make up each unit of ``layer``."""
    if unit == "ffn":
        neurons = torch.arange(layer.ffn_width)[:, None]
        return ([Member(names[m], m, True, neurons) for m in layer.ffn_up]
                + [Member(names[layer.ffn_down], layer.ffn_down, False, neurons)])
    size, groups = layer.head_size, layer.num_kv_heads
    query = torch.arange(layer.query_width).view(groups, -1)  # a key/value head's query heads
    kv = torch.arange(layer.kv_width).view(groups, size)
    out = [Member(names[layer.attention_out], layer.attention_out, False, query)]
    if layer.fused:
        fused = torch.cat([query, kv + layer.query_width, kv + layer.query_width + layer.kv_width], dim=1)
        return [Member(names[layer.qkv[0]], layer.qkv[0], True, fused)] + out
    q, k, v = layer.qkv
    return [Member(names[q], q, True, query), Member(names[k], k, True, kv),
            Member(names[v], v, True, kv)] + out


def unit_scores(parts: list[Member], criterion: Criterion, what: str,
                energy: dict[nn.Module, Tensor] | None = None) -> Tensor:
    """Importance of each unit, summed over its rows and columns in every member (``activation``:
    over its columns, weighted by ``energy``, the mean square of each input feature)."""
    if criterion == "bn_scale":
        raise StageError(f"importance gives no score for {what} (bn_scale needs BatchNorm layers; "
                         "use l1, l2, taylor, activation or random)")
    n = len(parts[0].index)
    if criterion == "random":
        return torch.rand(n)
    total = torch.zeros(n)
    for part in parts:
        weight = part.module.weight.detach()
        if criterion == "activation":
            if part.out:
                continue  # a unit's rows of the up projections only produce what its column reads
            if energy is None or part.module not in energy:
                raise StageError(f"importance 'activation' saw no input of {part.name}")
            weight = weight * energy[part.module].sqrt().to(weight)
        if criterion == "taylor":
            if part.module.weight.grad is None:
                raise StageError(f"importance 'taylor' found no gradient on {part.name}")
            weight = weight * part.module.weight.grad
        values = weight.abs().pow(2 if criterion in ("l2", "activation") else 1)
        per_index = values.sum(1) if part.out else values.sum(0)
        total += per_index[part.index.flatten()].view(n, -1).sum(1).float()
    return total


def prune_transformer(model: nn.Module, *, unit: Unit, layers: dict[str, TransformerLayer],
                      ratios: dict[str, float], criterion: Criterion, round_to: int | None, steps: int,
                      before_step: Callable[[], None], after_step: Callable[[int], None],
                      energy: dict[nn.Module, Tensor] | None = None) -> Cuts:
    """Remove FFN neurons or heads of ``layers`` (by name) in ``steps`` steps; returns the cuts.
    ``energy``: what ``before_step`` measured for the activation criterion (:func:`unit_scores`)."""
    names = {m: n for n, m in model.named_modules()}
    # heads are removed a key/value group at a time (one head per group without grouped-query attention)
    initial = {name: layer.ffn_width if unit == "ffn" else layer.num_kv_heads for name, layer in layers.items()}
    cuts: Cuts = []
    for step in range(1, steps + 1):
        before_step()
        for name, layer in layers.items():
            target = kept(initial[name], ratios[name], step, steps, round_to if unit == "ffn" else None)
            parts = members(layer, unit, names)
            count = len(parts[0].index)
            if target >= count:
                continue
            what = f"the {'FFN' if unit == 'ffn' else 'heads'} of {layer.name}"
            drop = unit_scores(parts, criterion, what, energy).argsort()[: count - target]
            for part in parts:
                removed = sorted(int(i) for i in part.index[drop].flatten())
                cut(part.module, part.out, removed)
                cuts.append([part.name, part.out, removed])
        model.zero_grad(set_to_none=True)
        sync_config(model)
        after_step(step)
    return cuts


def cut(module: nn.Linear, out: bool, removed: list[int]) -> None:
    """Remove output rows (with their bias) or input columns of ``module``."""
    (tp.prune_linear_out_channels if out else tp.prune_linear_in_channels)(module, removed)


def apply_cuts(model: nn.Module, cuts: Cuts) -> nn.Module:
    """Replay recorded cuts on a freshly built model (restore), then sync its config."""
    modules = dict(model.named_modules())
    for name, out, removed in cuts:
        cut(modules[str(name)], bool(out), [int(i) for i in removed])  # type: ignore[union-attr]
    sync_config(model)
    return model
