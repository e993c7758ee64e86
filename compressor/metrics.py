"""Model measurements reported after every stage: parameters, MACs and storage (latency:
:func:`compressor.export.bench.onnx_latency`)."""
from __future__ import annotations

import copy
import warnings

import torch
import torch_pruning as tp
from torch import Tensor, nn
from torch_pruning.utils.op_counter import MODULES_MAPPING

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
