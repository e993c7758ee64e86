"""Channel importance criteria: torch-pruning's group importance estimators, by recipe name.

Every criterion scores a whole dependency group (a conv, its BatchNorm, the next layer's input
channels, residual partners), so coupled layers are ranked together.
"""
from __future__ import annotations

from typing import Literal

import torch_pruning as tp
from torch import nn

from compressor.errors import StageError
from compressor.task import Task

Criterion = Literal["l1", "l2", "bn_scale", "taylor", "random"]


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
    return tp.importance.RandomImportance()


def accumulate_gradients(model: nn.Module, task: Task, batches: int, seed: int) -> None:
    """Sum the task loss's gradients over ``batches`` training batches (Taylor importance reads them).

    A fidelity task's loss (1 - cosine to the original outputs) sits at its minimum before the
    first pruning step, so its gradients vanish and the Taylor score carries no signal: refuse.
    """
    if task.metric != "accuracy":
        raise StageError(f"importance 'taylor' needs a task loss with a gradient; the {task.name!r} "
                         "task measures fidelity to the unpruned model, whose loss gradient is zero "
                         "before pruning: use importance 'l1' or 'l2'")
    model.eval()  # BatchNorm statistics stay as they are; only gradients are wanted
    model.zero_grad(set_to_none=True)
    for i, batch in enumerate(task.loader("train", seed=seed)):
        if i >= batches:
            break
        inputs, target = task.split(batch)
        task.loss(model(*inputs), target).backward()
