"""``placement: speed``: keep float the layers where int8 does not pay on this ONNX Runtime target.

A quantized layer saves multiply time in proportion to its MACs, but every Q/DQ pair around it
costs a fixed conversion of its input and output; on small layers (a digits CNN, the last blocks
of a mobile network at batch 1) the conversions win and the int8 model runs slower than the float
one. Which layers pay depends on the CPU, its int8 kernels, the batch and the thread count, so it
is measured, not assumed: the calibrated model is exported with the k smallest quantized layers
(by MACs) left float, for k in 0, n/4, n/2, 3n/4 of the n quantized layers, and with every layer
float (the input model), and the variants are timed in turns in one process. The fastest wins
unless its quality is below the floor that ``eval.max_drop`` sets (random-weight MobileNetV2: all
int8 ran at 0.55x float but lost 0.14 fidelity with the budget at 0.02); then the next fastest is
tried, down to all float. The stage records which layers stayed float, every variant's latency and
the quality of each variant passed over.
"""
from __future__ import annotations

import copy
import tempfile
from pathlib import Path
from typing import Any, Callable

from torch import Tensor, nn

from compressor.errors import StageError
from compressor.export.bench import interleaved, ort_runner
from compressor.export.onnx import export_onnx
from compressor.export.targets import Target
from compressor.stages.quantize.placement import shared_quantizer_groups
from compressor.stages.quantize.quantizers import unsigned_quantizers
from compressor.task import Task

#: Shares of the quantized layers (smallest first) tried as float.
FLOAT_SHARES = (0.0, 0.25, 0.5, 0.75)
#: The variant without any quantized layer: the input model.
ALL_FLOAT = "all float"


def layer_macs(model: nn.Module, names: list[str], inputs: tuple[Tensor, ...]) -> dict[str, int]:
    """Multiply-accumulates per sample of each named Conv2d / Linear on ``inputs``."""
    macs: dict[str, int] = {}

    def hook(name: str) -> Callable[[nn.Module, Any, Tensor], None]:
        def count(module: nn.Module, _inputs: Any, output: Tensor) -> None:
            per_output = module.weight[0].numel()  # in_channels / groups x kernel, or in_features
            macs[name] = output[0].numel() * per_output
        return count

    handles = [model.get_submodule(n).register_forward_hook(hook(n)) for n in names]
    try:
        model.eval()(*inputs)
    finally:
        for h in handles:
            h.remove()
    return macs


def without_quantizers(model: nn.Module, names: list[str]) -> nn.Module:
    """A copy of the quantized ``model`` with the named layers back in float."""
    out = copy.deepcopy(model)
    for name in names:
        layer = out.get_submodule(name)
        layer.weight_quantizer = layer.input_quantizer = None
    return out


def place_for_speed(float_model: nn.Module, quantized: nn.Module, state: dict[str, Any], task: Task,
                    target: Target, *, batch: int = 1, floor: float | None = None,
                    log: Callable[[str], None] = print) -> tuple[nn.Module, dict[str, Any], dict[str, Any]]:
    """The fastest of the variants described in the module docstring, timed at ``batch`` by
    :func:`time_onnx`, whose held-out quality is at least ``floor`` (None: any): (model, stage
    state, metrics)."""
    if target.runtime != "onnxruntime":
        raise StageError(f"quantize.placement: speed times ONNX Runtime; target {target.name!r} runs "
                         f"{target.runtime}, which picks int8 or float kernels per layer itself: use placement: all")
    names = list(state["plans"])
    macs = layer_macs(quantized, names, task.example_inputs(1))
    smallest = sorted(names, key=lambda n: (macs.get(n, 0), n))
    #: label -> the layers it keeps float; each variant's model is built when it is needed, one at a time.
    variants = {f"{k} of {len(names)} layers float": smallest[:k]
                for k in sorted({int(share * len(names)) for share in FLOAT_SHARES})}
    variants[ALL_FLOAT] = names

    def build(label: str) -> nn.Module:
        kept = variants[label]
        return float_model if label == ALL_FLOAT else without_quantizers(quantized, kept) if kept else quantized

    axes = task.dynamic_axes or {n: {0: "batch"} for n in task.input_names + task.output_names}
    with tempfile.TemporaryDirectory(prefix="placement-") as tmp:
        paths = {label: export_onnx(build(label), task.example_inputs(2), Path(tmp) / f"{i}.onnx",
                                    input_names=task.input_names, output_names=task.output_names,
                                    dynamic_axes=axes, runtime=target.runtime, cpu=target.cpu,
                                    qdq_min_opset=target.rules.min_opset,
                                    narrow_weights=target.rules.narrow_range_weights)
                 for i, label in enumerate(variants)}
        latency = time_onnx(paths, task.example_inputs(batch), target.threads)
    over: dict[str, float] = {}  # faster variants passed over for their quality
    for best in sorted(latency, key=latency.__getitem__):
        model = build(best)
        if best == ALL_FLOAT or floor is None:
            break
        quality = task.evaluate(model)
        if quality >= floor:
            break
        over[best] = round(quality, 4)
    kept = variants[best]
    metrics = {"placement": {"chosen": best, "kept_float": kept, "batch": batch,
                             "latency_ms": {k: round(v, 4) for k, v in latency.items()}}}
    log(f"placement: speed chose {best} at batch {batch} ({latency[best]:.3f} ms; "
        + ", ".join(f"{k} {v:.3f} ms" for k, v in latency.items() if k != best) + ")")
    if over:
        metrics["placement"]["over_max_drop"] = over
        log(f"placement: passed over as below the quality floor {floor:.4f} (eval.max_drop): "
            + ", ".join(f"{k} {v:.4f}" for k, v in over.items()))
    if best == ALL_FLOAT:
        return model, {**state, "pairs": [], "sites": [], "plans": {}, "ties": [], "smoothed": [],
                       "unsigned": []}, metrics
    plans = {n: plan for n, plan in state["plans"].items() if n not in kept}
    ties = shared_quantizer_groups(model, task.example_inputs(2))
    return model, {**state, "plans": plans, "ties": ties, "unsigned": unsigned_quantizers(model)}, metrics


def time_onnx(paths: dict[str, Path], inputs: tuple[Tensor, ...], threads: int | None) -> dict[str, float]:
    """Median latency (ms) of each file in ONNX Runtime, the variants timed in turns."""
    runners = {label: ort_runner(path, inputs, threads) for label, path in paths.items()}
    return {label: lat.p50_ms for label, lat in interleaved(runners, threads=threads).items()}
