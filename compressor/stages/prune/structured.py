"""Structured channel pruning on torch-pruning's dependency graph, and its replay on restore.

The dependency graph couples every layer whose channels must shrink together (a conv, its
BatchNorm, the next layer's inputs, all members of a residual sum, a depthwise conv and its
producer, the inputs of a concat), so the pruned model always runs. What was removed is recorded
as torch-pruning's pruning history (root layer name, out/in, channel indices), which replays on a
freshly built base model: checkpoints never pickle modules.
"""
from __future__ import annotations

import contextlib
import warnings
from typing import Any, Callable, Iterator

import torch
import torch_pruning as tp
from torch import Tensor, nn

#: One pruning action: [root layer name, prunes output channels?, removed channel indices].
History = list[list[Any]]
PRUNABLE = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def input_spec(inputs: tuple[Tensor, ...]) -> list[dict[str, Any]]:
    """Shapes and dtypes of example inputs: enough to trace the graph again on restore."""
    return [{"shape": list(x.shape), "dtype": str(x.dtype).removeprefix("torch.")} for x in inputs]


def dummy_inputs(spec: list[dict[str, Any]]) -> tuple[Tensor, ...]:
    """Inputs of the recorded shapes: zeros for floats, ones for integers (valid token ids, masks)."""
    out = []
    for s in spec:
        dtype = getattr(torch, s["dtype"])
        fill = torch.zeros if dtype.is_floating_point else torch.ones
        out.append(fill(s["shape"], dtype=dtype))
    return tuple(out)


@contextlib.contextmanager
def traceable(model: nn.Module) -> Iterator[None]:
    """Let autograd trace ``model`` (torch-pruning follows grad_fns), even if it is frozen.

    Pruning replaces parameters, so the frozen/trainable state is restored model-wide afterwards.
    """
    frozen = not any(p.requires_grad for p in model.parameters())
    for p in model.parameters():
        p.requires_grad_(True)
    try:
        with torch.enable_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for p in model.parameters():
            p.requires_grad_(not frozen)


def dependency_graph(model: nn.Module, inputs: tuple[Tensor, ...]) -> tp.DependencyGraph:
    with traceable(model):
        return tp.DependencyGraph().build_dependency(model, example_inputs=inputs, verbose=False)


def replay(model: nn.Module, history: History, spec: list[dict[str, Any]]) -> nn.Module:
    """Re-apply recorded pruning to ``model`` (same architecture as when it was recorded)."""
    graph = dependency_graph(model, dummy_inputs(spec))
    with traceable(model):
        graph.load_pruning_history([list(h) for h in history])
    return model


def protected_layers(graph: tp.DependencyGraph, excluded: set[nn.Module]) -> set[nn.Module]:
    """Layers whose output channels must stay: every output-channel member of a group that feeds
    the model's output (pruning it would change the output shape) or that holds an excluded layer
    (a residual stage is kept whole when one of its layers is ignored)."""
    protected: set[nn.Module] = set()
    for group in graph.get_all_groups(root_module_types=PRUNABLE):
        members = [dep.target for dep, _ in group if graph.is_out_channel_pruning_fn(dep.handler)]
        if any(not node.outputs for node in members) or any(n.module in excluded for n in members):
            protected.update(n.module for n in members if isinstance(n.module, PRUNABLE))
    return protected


def prune_channels(model: nn.Module, inputs: tuple[Tensor, ...], *, importance: tp.importance.Importance,
                   selected: dict[str, nn.Module], ratios: dict[str, float], default_ratio: float,
                   global_ranking: bool, max_ratio: float, round_to: int | None, steps: int,
                   before_step: Callable[[], None], after_step: Callable[[int], None]) -> History:
    """Prune the output channels of ``selected`` layers in ``steps`` equal steps; returns the history.

    ``ratios`` holds per-layer pruning ratios (others use ``default_ratio``); ``before_step`` runs
    before each step (e.g. to accumulate gradients for Taylor importance), ``after_step(step)``
    after it (e.g. fine-tuning).
    """
    graph = dependency_graph(model, inputs)
    chosen = set(selected.values())
    excluded = {m for m in model.modules() if isinstance(m, PRUNABLE) and m not in chosen}
    ignored = list(excluded | protected_layers(graph, excluded))
    with traceable(model):
        pruner = tp.pruner.MetaPruner(
            model, inputs, importance=importance, global_pruning=global_ranking,
            pruning_ratio=default_ratio,
            pruning_ratio_dict={selected[n]: r for n, r in ratios.items() if n in selected},
            max_pruning_ratio=max_ratio, iterative_steps=steps, ignored_layers=ignored,
            round_to=round_to)
    for step in range(1, steps + 1):
        before_step()
        with traceable(model):
            pruner.step()
        model.zero_grad(set_to_none=True)
        after_step(step)
    return [[name, bool(out), [int(i) for i in idxs]] for name, out, idxs in pruner.pruning_history()]


def widths(model: nn.Module) -> dict[str, int]:
    """Output channels of every prunable layer, by name."""
    return {name: (m.out_features if isinstance(m, nn.Linear) else m.out_channels)
            for name, m in model.named_modules() if isinstance(m, PRUNABLE)}
