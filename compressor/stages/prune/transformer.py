"""FFN-width and attention-head pruning for BERT-style Hugging Face encoders.

Both run on torch-pruning's dependency graph: the group of an FFN's ``intermediate.dense`` output
channels holds the ``output.dense`` input columns; the group of ``query``'s output channels holds
``key`` and ``value`` rows and the attention output's input columns (the graph follows the
attention matmuls), so removing one head's block of indices removes the head everywhere.
Importance comes from the same torch-pruning estimators as channel pruning, summed per neuron
(FFN) or averaged per head. Afterwards :func:`compressor.hf.sync_config` makes the modules'
``num_attention_heads``/``all_head_size`` and the config's ``intermediate_size`` match the weights.
"""
from __future__ import annotations

from typing import Callable, Literal

import torch
import torch_pruning as tp
from torch import Tensor, nn

from compressor.errors import StageError
from compressor.hf import EncoderLayer, sync_config
from compressor.stages.prune.structured import History, dependency_graph, traceable

Unit = Literal["ffn", "heads"]


def kept(initial: int, ratio: float, step: int, steps: int, round_to: int | None = None) -> int:
    """Units kept after ``step`` of ``steps`` linear steps towards removing ``ratio`` of ``initial``."""
    keep = initial - int(initial * ratio * step / steps)
    if round_to:
        keep = max(round_to, keep - keep % round_to)
    return max(1, min(initial, keep))


def prune_transformer(model: nn.Module, inputs: tuple[Tensor, ...], *, unit: Unit,
                      layers: dict[str, EncoderLayer], ratios: dict[str, float],
                      importance: tp.importance.Importance, round_to: int | None, steps: int,
                      before_step: Callable[[], None], after_step: Callable[[int], None]) -> History:
    """Remove FFN neurons or whole heads of ``layers`` (by name) in ``steps`` steps; returns the history."""
    initial = {name: (layer.ffn_up.out_features if unit == "ffn" else layer.num_heads)
               for name, layer in layers.items()}
    history: History = []
    for step in range(1, steps + 1):
        before_step()
        graph = dependency_graph(model, inputs)
        for name, layer in layers.items():
            target = kept(initial[name], ratios[name], step, steps, round_to if unit == "ffn" else None)
            group = (_prune_ffn if unit == "ffn" else _prune_heads)(graph, layer, target, importance)
            if group is not None:
                with traceable(model):
                    group.prune()
        history += [[n, bool(o), [int(i) for i in idx]] for n, o, idx in graph.pruning_history()]
        model.zero_grad(set_to_none=True)
        sync_config(model)
        after_step(step)
    return history


def _scores(graph: tp.DependencyGraph, root: nn.Linear, importance: tp.importance.Importance,
            what: str) -> tuple[tp.Group, Tensor]:
    group = graph.get_pruning_group(root, tp.prune_linear_out_channels, list(range(root.out_features)))
    with torch.no_grad():
        scores = importance(group)
    if scores is None:
        raise StageError(f"importance gives no score for {what} (bn_scale needs BatchNorm layers; "
                         "use l1, l2, taylor or random)")
    return group, scores


def _prune_ffn(graph: tp.DependencyGraph, layer: EncoderLayer, target: int,
               importance: tp.importance.Importance) -> tp.Group | None:
    n = layer.ffn_up.out_features
    if target >= n:
        return None
    _, scores = _scores(graph, layer.ffn_up, importance, f"the FFN of {layer.name}")
    drop = scores.argsort()[: n - target].tolist()
    return graph.get_pruning_group(layer.ffn_up, tp.prune_linear_out_channels, drop)


def _prune_heads(graph: tp.DependencyGraph, layer: EncoderLayer, target: int,
                 importance: tp.importance.Importance) -> tp.Group | None:
    heads, size = layer.num_heads, layer.attention.attention_head_size
    if target >= heads:
        return None
    group, scores = _scores(graph, layer.attention.query, importance, f"the heads of {layer.name}")
    coupled = {dep.target.module for dep, _ in group}
    needed = (layer.attention.key, layer.attention.value, layer.attention_out)
    if not all(m in coupled for m in needed):
        raise StageError(f"{layer.attention_name}: query, key, value and the attention output are "
                         "not coupled in the traced graph, so heads cannot be removed consistently")
    drop = scores.view(heads, size).mean(1).argsort()[: heads - target]
    idxs = (drop[:, None] * size + torch.arange(size)).flatten().tolist()
    return graph.get_pruning_group(layer.attention.query, tp.prune_linear_out_channels, idxs)
