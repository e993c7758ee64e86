"""Channel importance criteria: torch-pruning's group importance estimators, by recipe name.

Every criterion scores a whole dependency group (a conv, its BatchNorm, the next layer's input
channels, residual partners), so coupled layers are ranked together. ``activation`` ranks
transformer units by the data they carry (:func:`input_energy`), so it has no torch-pruning
estimator.
"""
from __future__ import annotations

from itertools import islice
from typing import Iterator, Literal

import torch
import torch_pruning as tp
from torch import Tensor, nn

from compressor.errors import StageError
from compressor.task import Task

Criterion = Literal["l1", "l2", "bn_scale", "taylor", "activation", "random"]


def build_importance(criterion: Criterion) -> tp.importance.Importance:
    """The torch-pruning estimator behind a recipe's ``importance`` name."""
    if criterion == "l1":
        return tp.importance.GroupMagnitudeImportance(p=1)
    if criterion == "l2":
        return tp.importance.GroupMagnitudeImportance(p=2)
    if criterion == "bn_scale":
        return tp.importance.BNScaleImportance()
    if criterion == "taylor":
        return tp.importance.GroupTaylorImportance()
    if criterion == "random":
        return tp.importance.RandomImportance()
    raise StageError(f"importance {criterion!r} ranks FFN neurons and attention heads (methods ffn, heads), "
                     "not conv channels")


def accumulate_gradients(model: nn.Module, task: Task, batches: int, seed: int) -> None:
    """Sum the task loss's gradients over ``batches`` training batches (Taylor importance reads them).

    A fidelity task's loss (1 - cosine to the original outputs) sits at its minimum before the
    first pruning step, so its gradients vanish and the Taylor score carries no signal: refuse.
    """
    if task.metric != "accuracy":
        raise StageError(f"importance 'taylor' needs a task loss with a gradient; the {task.name!r} "
                         "task measures fidelity to the unpruned model, whose loss gradient is zero "
                         "before pruning: use importance 'l1' or 'l2' (or 'activation' for methods ffn, heads)")
    model.eval()  # BatchNorm statistics stay as they are; only gradients are wanted
    model.zero_grad(set_to_none=True)
    for inputs, target in _train_batches(task, batches, seed):
        task.loss(model(*inputs), target).backward()


@torch.no_grad()
def input_energy(model: nn.Module, task: Task, batches: int, seed: int) -> dict[nn.Module, Tensor]:
    """Mean square of each input feature of every Linear over ``batches`` training batches.

    Removing the unit behind input column c of a Linear with weight W changes its output by
    ``x_c * W[:, c]``, whose expected squared norm is ``E[x_c^2] * |W[:, c]|^2``: what a fidelity
    task loses, so it needs no gradient (unlike Taylor) and sees which neurons the data uses (unlike
    weight magnitude). Padding tokens count like the rest.
    """
    sums: dict[nn.Module, Tensor] = {}
    counts: dict[nn.Module, int] = {}

    def hook(module: nn.Module, args: tuple[Tensor, ...]) -> None:
        x = args[0].detach().float().reshape(-1, args[0].shape[-1])
        sums[module] = sums.get(module, 0) + x.pow(2).sum(0)
        counts[module] = counts.get(module, 0) + x.shape[0]

    handles = [m.register_forward_pre_hook(hook) for m in model.modules() if isinstance(m, nn.Linear)]
    was_training = model.training
    model.eval()
    try:
        for inputs, _ in _train_batches(task, batches, seed):
            model(*inputs)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return {m: total / counts[m] for m, total in sums.items()}


def _train_batches(task: Task, batches: int, seed: int) -> Iterator[tuple[tuple[Tensor, ...], Tensor]]:
    """The first ``batches`` training batches of ``seed``'s order, as (inputs, target)."""
    return map(task.split, islice(task.loader("train", seed=seed), batches))
