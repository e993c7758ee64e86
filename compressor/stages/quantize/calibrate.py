"""Post-training calibration: set every quantizer's scale from weights and calibration batches."""
from __future__ import annotations

from typing import Iterable

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from compressor.stages.quantize.quantizers import QuantMixin, TensorQuantizer, quantizers


@torch.no_grad()
def calibrate_weights(model: nn.Module) -> None:
    """Weight scales straight from the weights (their observers see the tensor once)."""
    for m in model.modules():
        if isinstance(m, QuantMixin) and m.weight_quantizer is not None:
            q = m.weight_quantizer
            q.start_calibration()
            q(m.weight)
            q.load_calibration()


@torch.no_grad()
def calibrate_activations(model: nn.Module, batches: Iterable[tuple[Tensor, ...]], *,
                          total: int | None = None, desc: str = "calibrate", unsigned: bool = False) -> int:
    """Run ``batches`` through ``model`` with activation observers on; returns samples seen.
    ``unsigned``: activations never seen negative take the unsigned grid (``QuantRules``).

    Weight quantizers stay active meanwhile, so each activation range is the one the quantized
    model produces (the error of earlier layers is part of what later layers see).
    """
    acts = [q for q in quantizers(model).values() if q.axis is None and q.enabled
            and not _is_weight_quantizer(model, q)]
    for q in acts:
        q.start_calibration()
    was_training = model.training
    model.eval()
    seen = 0
    try:
        for inputs in tqdm(batches, total=total, desc=desc, unit="batch", leave=False):
            model(*inputs)
            seen += len(inputs[0])
    finally:
        for q in acts:
            q.load_calibration(unsigned_if_nonnegative=unsigned)
        model.train(was_training)
    return seen


def _is_weight_quantizer(model: nn.Module, q: TensorQuantizer) -> bool:
    return any(isinstance(m, QuantMixin) and m.weight_quantizer is q for m in model.modules())


def calibrate(model: nn.Module, batches: Iterable[tuple[Tensor, ...]], *, total: int | None = None) -> int:
    calibrate_weights(model)
    return calibrate_activations(model, batches, total=total)
