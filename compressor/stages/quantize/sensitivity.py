"""Per-layer sensitivity: the quality lost when one layer alone is quantized.

The quantize stage keeps the worst layers float (``keep_float``); search seeds its per-layer
bit-widths from :func:`~compressor.stages.quantize.stage.layer_sensitivity` (sensitive layers get
more bits), and `compressor sensitivity` reports it. A layer's
input quantizer may be shared with other readers of the same tensor (Q, K and V); enabling it
quantizes that tensor for all of them, as deployment would.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from torch import nn
from tqdm.auto import tqdm

from compressor.stages.quantize.quantizers import QuantMixin, TensorQuantizer
from compressor.task import Task


@contextmanager
def _only(model: nn.Module, layer: str | None) -> Iterator[None]:
    """Enable the quantizers of ``layer`` alone (None: none), restoring the previous states after."""
    qs = [m for m in model.modules() if isinstance(m, TensorQuantizer)]
    states = [q.enabled for q in qs]
    for q in qs:
        q.enabled = False
    if layer is not None:
        m = model.get_submodule(layer)
        assert isinstance(m, QuantMixin)
        for q in (m.weight_quantizer, m.input_quantizer):
            if q is not None:
                q.enabled = True
    try:
        yield
    finally:
        for q, s in zip(qs, states):
            q.enabled = s


def quantized_layer_drops(qmodel: nn.Module, task: Task, *, samples: int | None = 128) -> dict[str, float]:
    """For a calibrated quantized model: quality drop (float minus quantized) per quantized layer."""
    layers = [n for n, m in qmodel.named_modules()
              if isinstance(m, QuantMixin) and (m.weight_quantizer or m.input_quantizer) is not None]
    with _only(qmodel, None):
        reference = task.evaluate(qmodel, limit=samples)
    drops = {}
    for name in tqdm(layers, desc="sensitivity", unit="layer", leave=False):
        with _only(qmodel, name):
            drops[name] = reference - task.evaluate(qmodel, limit=samples)
    return drops
