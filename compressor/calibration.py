"""Statistics of layer inputs on calibration data, gathered with forward pre-hooks."""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn

from compressor.task import Task


@torch.no_grad()
def input_statistics(model: nn.Module, task: Task, layers: dict[str, nn.Module],
                     reduce: Callable[[nn.Module, Tensor], Tensor],
                     samples: int | None = None) -> dict[str, Tensor]:
    """Sum over the task's calibration batches of ``reduce(layer, first input)`` for each layer."""
    totals: dict[str, Tensor] = {}

    def hook(name: str) -> Callable[[nn.Module, tuple[Tensor, ...]], None]:
        def record(module: nn.Module, args: tuple[Tensor, ...]) -> None:
            value = reduce(module, args[0].detach())
            totals[name] = totals[name] + value if name in totals else value
        return record

    handles = [m.register_forward_pre_hook(hook(n)) for n, m in layers.items()]
    was_training = model.training
    model.eval()
    try:
        for inputs in task.calibration_batches(samples):
            model(*inputs)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return totals
