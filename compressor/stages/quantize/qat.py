"""Quantization-aware training: the PTQ model trains through its fake quantizers.

The calibrated scales are the warm-up: observers are off from here on. Rounding passes gradients
straight through (STE); with ``learn_scales`` every enabled scale becomes a parameter trained with
LSQ's gradient (Esser et al., 2020), so clipping ranges adapt to the new weights. BatchNorm was
folded before calibration, so the weights that train are the ones that deploy (no BN statistics
drift under fake quantization). Optionally the loss adds distillation from the fp32 model.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from compressor.stages.quantize.quantizers import quantizers
from compressor.task import Task
from compressor.train import TrainParams, train


def distillation_loss(task: Task, teacher: nn.Module, weight: float, temperature: float):
    """Task loss blended with KL (classification) or cosine (embeddings) to the teacher."""

    def loss_fn(model: nn.Module, inputs: tuple[Tensor, ...], target: Tensor) -> Tensor:
        out = model(*inputs)
        loss = task.loss(out, target)
        if weight <= 0:
            return loss
        with torch.no_grad():
            ref = teacher(*inputs)
        if task.metric == "accuracy":
            t = temperature
            kd = F.kl_div(F.log_softmax(out / t, -1), F.softmax(ref / t, -1), reduction="batchmean") * t * t
        else:
            kd = (1 - F.cosine_similarity(out.flatten(1), ref.flatten(1), dim=1)).mean()
        return (1 - weight) * loss + weight * kd

    return loss_fn


def quantization_aware_training(model: nn.Module, task: Task, params: TrainParams, *,
                                teacher: nn.Module | None = None, distill: float = 0.0,
                                temperature: float = 4.0, learn_scales: bool = True,
                                seed: int = 0) -> list[float]:
    """Train ``model`` in place; returns held-out quality per epoch (index 0 = after PTQ)."""
    active = [q for q in quantizers(model).values() if q.enabled]
    if learn_scales:
        for q in active:
            q.learnable()
    teacher = teacher if distill > 0 else None
    if teacher is not None:
        teacher.eval()
    loss_fn = distillation_loss(task, teacher, distill, temperature) if teacher is not None else None
    try:
        return train(model, task, params, loss_fn=loss_fn, seed=seed, desc="qat")
    finally:
        for q in active:
            q.freeze()
