"""Per-layer sensitivity: the quality lost when one layer alone is quantized.

Search seeds its per-layer bit-widths from it (sensitive layers get more bits), the quantize stage
keeps the worst layers float (``keep_float``), and `compressor sensitivity` reports it. A layer's
input quantizer may be shared with other readers of the same tensor (Q, K and V); enabling it
quantizes that tensor for all of them, as deployment would.
"""
from __future__ import annotations

import copy
from contextlib import contextmanager
from typing import Iterator

from torch import nn
from tqdm.auto import tqdm

from compressor.task import Task


@contextmanager
def _only(model: nn.Module, layer: str | None) -> Iterator[None]:
    """Enable the quantizers of ``layer`` alone (None: none), restoring the previous states after."""
    from compressor.stages.quantize.quantizers import QuantMixin, TensorQuantizer

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
    from compressor.stages.quantize.quantizers import QuantMixin

    layers = [n for n, m in qmodel.named_modules()
              if isinstance(m, QuantMixin) and (m.weight_quantizer or m.input_quantizer) is not None]
    with _only(qmodel, None):
        reference = task.evaluate(qmodel, limit=samples)
    drops = {}
    for name in tqdm(layers, desc="sensitivity", unit="layer", leave=False):
        with _only(qmodel, name):
            drops[name] = reference - task.evaluate(qmodel, limit=samples)
    return drops


def layer_sensitivity(model: nn.Module, task: Task, *, params: object | None = None,
                      quant_rules: str = "ort-cpu", samples: int | None = 128) -> dict[str, float]:
    """Quality drop when each layer alone is quantized with ``params`` (a ``QuantizeParams``;
    default int8 weights and activations). ``model`` is not changed."""
    from compressor.stages.quantize.stage import QuantizeParams, quantize_model

    params = params if params is not None else QuantizeParams()
    qmodel, _, _ = quantize_model(copy.deepcopy(model), task, params, quant_rules=quant_rules,
                                  log=lambda _m: None)
    return quantized_layer_drops(qmodel, task, samples=samples)
