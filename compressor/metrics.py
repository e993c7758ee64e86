"""Model measurements reported after every stage: parameters, MACs, storage and latency."""
from __future__ import annotations

import copy
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from compressor.layers import materialize


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_nonzero(model: nn.Module) -> int:
    return sum(int(torch.count_nonzero(p)) for p in model.parameters())


def count_macs(model: nn.Module, example_inputs: tuple[Tensor, ...]) -> int | None:
    """Multiply-accumulates of one forward pass (torch-pruning's counter); None if it can't trace.

    The counter hooks standard layers only, so modules that store weights compactly and define
    ``to_dense()`` (codebook layers) are counted as the plain layer they compute.
    """
    import torch_pruning as tp

    if any(hasattr(m, "to_dense") for m in model.modules()):
        model = materialize(copy.deepcopy(model))
    _count_subclasses_like_bases(model)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            macs, _ = tp.utils.count_ops_and_params(model, example_inputs)
        return int(macs)
    except Exception:  # the counter hooks fail on some custom modules; report "n/a"
        return None


def _count_subclasses_like_bases(model: nn.Module) -> None:
    """Let torch-pruning's counter (keyed by exact class) count subclasses of the layers it knows,
    e.g. sparse or fake-quantized convs, like their base: they run the same dense kernels."""
    from torch_pruning.utils.op_counter import MODULES_MAPPING

    for module in model.modules():
        cls = type(module)
        if cls not in MODULES_MAPPING:
            base = next((b for b in cls.__mro__[1:] if b in MODULES_MAPPING), None)
            if base is not None:
                MODULES_MAPPING[cls] = MODULES_MAPPING[base]


def storage_bytes(model: nn.Module) -> int:
    """Bytes to store the weights as deployed.

    A module that stores its weights in a compact form (sparse, quantized, codebook) defines
    ``storage_bits() -> int`` covering its own parameters and buffers; everything else is counted
    at its dtype's size (BatchNorm statistics included, step counters excluded).
    """
    bits = 0
    counted: set[int] = set()
    for module in model.modules():
        if hasattr(module, "storage_bits"):
            bits += int(module.storage_bits())
            counted.update(id(t) for t in module.parameters())
            counted.update(id(t) for t in module.buffers())
    for tensor in list(model.parameters()) + list(model.buffers()):
        if id(tensor) in counted or not tensor.is_floating_point():
            continue
        counted.add(id(tensor))
        bits += tensor.numel() * tensor.element_size() * 8
    return (bits + 7) // 8


def onnx_latency(model: nn.Module, task: Any, *, batch: int = 1, threads: int | None = None,
                 warmup: int = 5, iterations: int = 30, opset: int = 17) -> dict[str, float]:
    """Export to a temporary ONNX file and time it in ONNX Runtime (the CPU target's runtime)."""
    from compressor.export.bench import ort_latency
    from compressor.export.onnx import export_onnx

    inputs = task.example_inputs(batch)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        export_onnx(model, inputs, path, input_names=task.input_names,
                    output_names=task.output_names, dynamic_axes=task.dynamic_axes, opset=opset)
        lat = ort_latency(str(path), inputs, threads=threads, warmup=warmup, iterations=iterations)
    return {"latency_ms": lat.p50_ms, "latency_p90_ms": lat.p90_ms}
