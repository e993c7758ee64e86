"""Structured channel pruning on torch-pruning's dependency graph, and its replay on restore.

The dependency graph couples every layer whose channels must shrink together (a conv, its
BatchNorm, the next layer's inputs, all members of a residual sum, a depthwise conv and its
producer, the inputs of a concat), so the pruned model always runs. What was removed is recorded
as torch-pruning's pruning history (root layer name, out/in, channel indices), which replays on a
freshly built base model: checkpoints never pickle modules.
"""
from __future__ import annotations

import contextlib
import copy
import warnings
from typing import Any, Callable, Iterator

import torch
import torch_pruning as tp
from torch import Tensor, nn

from compressor.errors import StageError

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
    after it (e.g. fine-tuning). After every step the model must still run on ``inputs`` with
    outputs of the same shapes; if pruning fails or breaks it, :class:`StageError` names the layers
    whose channels cannot shrink (see :func:`unprunable_layers`).
    """
    pristine = copy.deepcopy(model)
    expected = output_shapes(model, inputs)
    graph = dependency_graph(model, inputs)
    chosen = set(selected.values())
    excluded = {m for m in model.modules() if isinstance(m, PRUNABLE) and m not in chosen}
    ignored = list(excluded | protected_layers(graph, excluded))
    names = {m: n for n, m in model.named_modules()}
    try:
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
            if output_shapes(model, inputs) != expected:
                raise RuntimeError("the pruned model's outputs changed shape")
            after_step(step)
    except (IndexError, RuntimeError, ValueError) as exc:  # torch-pruning's index mapping, or the forward
        bad = unprunable_layers(pristine, inputs, {names[m] for m in ignored})
        if not bad:
            raise
        raise StageError(
            f"channel pruning cannot shrink {', '.join(bad)} ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else 'no message'}): the forward reshapes their outputs "
            "with sizes fixed in the code (e.g. heads split from a fused q/k/v projection or from the "
            f"input width). Keep them whole with ignore: [{', '.join(bad)}] (each keeps its coupled layers "
            "too), or for Hugging Face transformers use method: ffn or heads") from None
    return [[name, bool(out), [int(i) for i in idxs]] for name, out, idxs in pruner.pruning_history()]


def output_shapes(model: nn.Module, inputs: tuple[Tensor, ...]) -> list[tuple[int, ...]] | None:
    """Shapes of the model's outputs on ``inputs``; None when the forward fails."""
    try:
        with torch.no_grad():
            out = model.eval()(*inputs)
    except (IndexError, RuntimeError, ValueError):
        return None
    outs = out if isinstance(out, (tuple, list)) else (out,)
    return [tuple(o.shape) for o in outs if isinstance(o, Tensor)]


def unprunable_layers(model: nn.Module, inputs: tuple[Tensor, ...], ignored: set[str]) -> list[str]:
    """Root layers (not in ``ignored``) of the dependency groups that break ``model`` when one of
    their channels is removed: each is tried on its own copy, so this runs only to explain a failure."""
    expected = output_shapes(model, inputs)
    graph = dependency_graph(model, inputs)
    names = {m: n for n, m in model.named_modules()}
    roots = [names[g[0].dep.target.module] for g in graph.get_all_groups(
        ignored_layers=[m for m, n in names.items() if n in ignored], root_module_types=PRUNABLE)]
    return [name for name in roots if not _prunes_one_channel(model, inputs, name, expected)]


def _prunes_one_channel(model: nn.Module, inputs: tuple[Tensor, ...], name: str,
                        expected: list[tuple[int, ...]] | None) -> bool:
    trial = copy.deepcopy(model)
    layer = trial.get_submodule(name)
    prune = tp.prune_linear_out_channels if isinstance(layer, nn.Linear) else tp.prune_conv_out_channels
    try:
        group = dependency_graph(trial, inputs).get_pruning_group(layer, prune, [0])
        with torch.no_grad():
            tp.importance.GroupMagnitudeImportance()(group)  # torch-pruning's index mapping must hold
        with traceable(trial):
            group.prune()
    except (IndexError, RuntimeError, ValueError):
        return False
    return output_shapes(trial, inputs) == expected


def widths(model: nn.Module) -> dict[str, int]:
    """Output channels of every prunable layer, by name."""
    return {name: (m.out_features if isinstance(m, nn.Linear) else m.out_channels)
            for name, m in model.named_modules() if isinstance(m, PRUNABLE)}
