"""``quantize``: PTQ (and optionally QAT) to a fake-quantized model that exports as Q/DQ ONNX.

Order of work: fold BN -> place quantizers for the target -> share one quantizer per tensor ->
SmoothQuant (optional) -> calibrate -> COMQ rounding (optional) -> keep the most sensitive layers
float (optional) -> QAT (``mode: qat``). ``state()`` records every structural decision, so
``restore`` rebuilds the same quantizers on a fresh model and the scales load from the weights.
"""
from __future__ import annotations

import copy
import math
from typing import Any, Callable, Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, model_validator
from torch import nn

from compressor.context import Context
from compressor.errors import StageError
from compressor.export.ort_kernels import host_cpu
from compressor.export.targets import QUANT_RULES, QuantRules, Target
from compressor.layers import LayerSelection
from compressor.limits import MAX_ROUNDS, MAX_SAMPLES
from compressor.stages.base import Stage, StageParams, register_stage
from compressor.stages.quantize.bnfold import apply_fold_structure, find_conv_bn_pairs, fold_batchnorm
from compressor.stages.quantize.calibrate import calibrate_activations, calibrate_weights
from compressor.stages.quantize.observers import OBSERVERS
from compressor.stages.quantize.placement import (FLOAT_BITS, LayerPlan, TensorPlan, insert_add_quantizers,
                                                  plan_layers, residual_adds, share_quantizers,
                                                  shared_quantizer_groups, wrap_layers)
from compressor.stages.quantize.qat import quantization_aware_training
from compressor.stages.quantize.quantizers import make_unsigned, snap_biases, unsigned_quantizers
from compressor.stages.quantize.rounding import round_weights
from compressor.stages.quantize.sensitivity import quantized_layer_drops
from compressor.stages.quantize.smoothquant import input_channel_max, smooth, smooth_groups
from compressor.stages.quantize.speed import place_for_speed
from compressor.task import Task
from compressor.train import TrainParams


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class WeightParams(_Section):
    bits: int | None = Field(None, description="Weight bits: 2..8 integer (4 = int4 weight-only grid); "
                                            "16 or 32 keep weights float. Default: the target's (8; 7 "
                                            "on cpu-x86, whose fast int8 kernels overflow on 8-bit weights).")
    per_channel: bool = Field(True, description="One scale per output channel (axis 0).")
    observer: Literal["minmax", "mse"] = Field("minmax", description="Weight range: max or MSE-optimal clip.")
    format: Literal["int", "fp8"] = Field("int", description="fp8: simulated E4M3 (TensorRT fp8 targets).")

    @model_validator(mode="after")
    def _bits(self) -> "WeightParams":
        if self.bits is not None and self.bits not in FLOAT_BITS and not 2 <= self.bits <= 8:
            raise ValueError(f"bits must be 2..8, 16 or 32, got {self.bits}")
        return self


class ActivationParams(_Section):
    bits: int = Field(8, description="Activation bits: 8, or 16/32 for weight-only quantization.")
    observer: Literal["minmax", "percentile", "mse", "entropy"] = Field(
        "mse", description=f"Calibration method: {', '.join(OBSERVERS)}.")
    percentile: float = Field(99.99, gt=0, le=100, description="For observer: percentile.")
    format: Literal["int", "fp8"] = "int"

    @model_validator(mode="after")
    def _bits(self) -> "ActivationParams":
        if self.bits not in FLOAT_BITS and self.bits != 8:
            raise ValueError(f"activation bits must be 8 (or 16/32: float), got {self.bits}")
        return self


class SmoothQuantParams(_Section):
    alpha: float = Field(0.5, ge=0, le=1, description="Migration strength: 0 = none, 1 = all onto weights.")
    min_outlier_ratio: float = Field(0.0, ge=0, description="Smooth only tensors whose largest channel range "
                                                            "is this many times the median one (each smoothed "
                                                            "tensor costs a Mul at run time); 0 = all.")


class RoundingParams(_Section):
    method: Literal["nearest", "comq"] = Field("nearest", description="comq: layer-wise reconstruction "
                                                                      "(worth it for 4-bit weights).")
    sweeps: PositiveInt = Field(2, le=MAX_ROUNDS)


class QuantizeParams(StageParams, LayerSelection):
    #: bits: weight bits (16/32 keep the layer float); act_bits: input bits; enabled: false keeps it float.
    per_layer_fields = {"bits": Literal[2, 3, 4, 5, 6, 7, 8, 16, 32], "act_bits": Literal[8, 16, 32],
                        "enabled": bool}
    mode: Literal["ptq", "qat"] = "ptq"
    weights: WeightParams = Field(default_factory=WeightParams)
    activations: ActivationParams = Field(default_factory=ActivationParams)
    residual_adds: Literal["auto", "none", "residual", "both"] = Field(
        "auto", description="Quantize residual Add inputs: auto = the target's rule ('residual' for "
                            "TensorRT: Conv+Add fusion; 'both' for ONNX Runtime: QLinearAdd).")
    fold_bn: bool = Field(True, description="Fold BatchNorm into the preceding conv first.")
    smoothquant: SmoothQuantParams | None = Field(None, description="SmoothQuant outlier migration.")
    rounding: RoundingParams = Field(default_factory=RoundingParams)
    placement: Literal["auto", "all", "speed"] = Field(
        "auto", description="all: quantize every selected layer. speed (ONNX Runtime targets): time the "
        "calibrated model on this machine (at report.latency_batch) with its smallest layers left float "
        "(none, 1/4, 1/2, 3/4, all) and keep the fastest whose quality is within eval.max_drop (post-training "
        "mode); for small layers the Q/DQ conversions cost more than int8 saves. auto: speed for post-training "
        "int8 on ONNX Runtime "
        "targets of this machine's CPU; all for TensorRT (which picks int8 or float per layer itself), "
        "other CPUs (not measurable here), smoothquant, QAT and weights below 8 bits (asked for size, "
        "which float layers would not give).")
    keep_float: int = Field(0, ge=0, description="Keep the N layers whose lone quantization costs the "
                                                 "most quality in float (sensitivity-based).")
    sensitivity_samples: PositiveInt = Field(128, le=MAX_SAMPLES, description="Held-out samples for keep_float.")
    calibration_samples: PositiveInt | None = Field(None, le=MAX_SAMPLES,
                                                    description="Default: data.calibration_samples.")
    finetune: TrainParams = Field(default_factory=lambda: TrainParams(epochs=3, lr=1e-4),
                                  description="QAT training (mode: qat).")
    learn_scales: bool = Field(True, description="QAT: train the scales too (LSQ).")
    distill: float = Field(0.0, ge=0, le=1, description="QAT: weight of distillation from the fp32 model.")
    temperature: float = Field(4.0, gt=0)

    def times_placement(self, target: Target) -> bool:
        """Whether the stage times int8 against float layers (``placement``) for ``target``: auto
        needs a target this machine can stand in for (ONNX Runtime on this CPU's architecture)."""
        return self.placement == "speed" or (
            self.placement == "auto" and target.runtime == "onnxruntime" and target.cpu == host_cpu()
            and self.mode == "ptq" and self.smoothquant is None and self.weights.bits in (None, 8)
            and self.weights.format == "int")

    @model_validator(mode="after")
    def _speed_alone(self) -> "QuantizeParams":
        if self.placement == "speed" and self.smoothquant is not None:
            raise ValueError("placement: speed does not combine with smoothquant (a smoothed layer's scales "
                             "live in its input quantizer); use one of them")
        return self


def _plans(p: QuantizeParams, rules: QuantRules) -> tuple[TensorPlan, TensorPlan | None]:
    w, a = p.weights, p.activations
    bits = w.bits if w.bits is not None else (8 if w.format == "fp8" else rules.weight_bits)
    weight = TensorPlan(bits, w.format, w.observer)
    act = None if a.bits in FLOAT_BITS else TensorPlan(a.bits, a.format, a.observer, a.percentile)
    return weight, act


def quantize_model(model: nn.Module, task: Task, p: QuantizeParams, *,
                   rules: QuantRules = QUANT_RULES["ort-cpu"], log: Callable[[str], None] = print
                   ) -> tuple[nn.Module, dict[str, Any], dict[str, Any]]:
    """Post-training quantization of ``model`` (changed in place, maybe re-rooted as a GraphModule)
    with quantizers placed by the target's ``rules``.

    Returns the quantized model, the stage state that :func:`restore_quantized` replays, and metrics.
    """
    example = task.example_inputs(2)
    n_cal = p.calibration_samples or task.calibration_samples
    n_batches = math.ceil(n_cal / task.batch_size)
    batches = lambda: task.calibration_batches(n_cal)  # noqa: E731
    weight, act = _plans(p, rules)
    metrics: dict[str, Any] = {}

    pairs = find_conv_bn_pairs(model, example) if p.fold_bn else []
    fold_batchnorm(model, pairs)
    mode = p.residual_adds if p.residual_adds != "auto" else rules.residual_adds
    if rules.keeps_float("Add"):
        mode = "none"
    sites = residual_adds(model, mode) if act is not None else []
    model = insert_add_quantizers(model, sites, act) if sites else model
    plans = plan_layers(model, p, weight, act, p.weights.per_channel and rules.per_channel_weights,
                        narrow=rules.narrow_range_weights, keep_float=rules.keep_float)
    if not plans:
        raise StageError("quantize: no layer selected (layers/ignore/per_layer leave no Conv2d or "
                         "Linear to quantize)")
    wrap_layers(model, plans)
    share_quantizers(model, shared_quantizer_groups(model, example))

    smoothed: list[str] = []
    if p.smoothquant is not None and act is not None:
        groups = smooth_groups(model)
        smoothed = smooth(model, groups, input_channel_max(model, list(groups), batches()),
                          p.smoothquant.alpha, p.smoothquant.min_outlier_ratio)
        metrics["smoothed_tensors"] = len(smoothed)
    calibrate_weights(model)
    unsigned = rules.unsigned_activations
    metrics["calibration_samples"] = calibrate_activations(model, batches(), total=n_batches, unsigned=unsigned)
    if p.rounding.method == "comq":
        metrics["comq_layers"] = len(round_weights(model, batches(), sweeps=p.rounding.sweeps))
        calibrate_activations(model, batches(), total=n_batches, desc="recalibrate", unsigned=unsigned)

    if p.keep_float:
        drops = quantized_layer_drops(model, task, samples=p.sensitivity_samples)
        worst = sorted(drops, key=drops.get, reverse=True)[:p.keep_float]
        for name in worst:
            layer = model.get_submodule(name)
            layer.weight_quantizer = layer.input_quantizer = None
            plans.pop(name)
        metrics["kept_float"] = worst
        log(f"kept float (most sensitive): {', '.join(worst)}")
    ties = shared_quantizer_groups(model, example)
    state = {"pairs": [list(x) for x in pairs], "sites": [list(x) for x in sites],
             "act": None if act is None else vars(act), "plans": {n: pl.to_dict() for n, pl in plans.items()},
             "ties": ties, "smoothed": smoothed, "unsigned": unsigned_quantizers(model)}
    metrics["quantized_layers"] = len(plans)
    return model, state, metrics


def layer_sensitivity(model: nn.Module, task: Task, *, params: QuantizeParams | None = None,
                      rules: QuantRules = QUANT_RULES["ort-cpu"], samples: int | None = 128
                      ) -> dict[str, float]:
    """Quality drop when each layer alone is quantized with ``params`` (default int8 weights and
    activations) under the target's ``rules``. ``model`` is not changed."""
    params = params if params is not None else QuantizeParams()
    qmodel, _, _ = quantize_model(copy.deepcopy(model), task, params, rules=rules, log=lambda _m: None)
    return quantized_layer_drops(qmodel, task, samples=samples)


def restore_quantized(model: nn.Module, state: dict[str, Any]) -> nn.Module:
    """Rebuild the quantized architecture recorded by :func:`quantize_model` (weights load after)."""
    apply_fold_structure(model, [tuple(x) for x in state["pairs"]])
    if state["sites"]:
        model = insert_add_quantizers(model, [tuple(x) for x in state["sites"]], TensorPlan(**state["act"]))
    wrap_layers(model, {n: LayerPlan.from_dict(d) for n, d in state["plans"].items()})
    share_quantizers(model, state["ties"])
    for name in state["smoothed"]:
        q = model.get_submodule(name)
        layer = next(m for m in model.modules() if getattr(m, "input_quantizer", None) is q)
        q.enable_smoothing(layer.weight.shape[1])
    make_unsigned(model, state.get("unsigned", []))  # absent from checkpoints older than the grid
    return model


@register_stage("quantize")
class Quantize(Stage):
    Params = QuantizeParams
    runs_after = ("prune", "codebook", "lowrank")

    def apply(self, ctx: Context) -> Context:
        p: QuantizeParams = self.params
        float_model = copy.deepcopy(ctx.model) if p.times_placement(ctx.target) else None
        model, state, metrics = quantize_model(ctx.model, ctx.task, p, rules=ctx.target.rules, log=ctx.log)
        if float_model is not None:
            max_drop = ctx.recipe.eval.max_drop
            floor = (ctx.baseline_quality - max_drop  # QAT may win back what PTQ loses: no floor before it
                     if max_drop is not None and ctx.baseline_quality is not None and p.mode == "ptq" else None)
            model, state, chosen = place_for_speed(float_model, model, state, ctx.task, ctx.target,
                                                   batch=ctx.recipe.report.latency_batch, floor=floor,
                                                   log=ctx.log)
            metrics.update(chosen, quantized_layers=len(state["plans"]))
        self.record(**state)
        ctx.model = model
        ctx.stage_metrics.update(metrics)
        snap_biases(model)
        ctx.stage_metrics["ptq_quality"] = ctx.task.evaluate(model)
        if p.mode == "qat" and state["plans"]:
            history = quantization_aware_training(
                model, ctx.task, p.finetune, teacher=ctx.original, distill=p.distill,
                temperature=p.temperature, learn_scales=p.learn_scales, seed=ctx.seed)
            ctx.stage_metrics["quality_per_epoch"] = [round(q, 5) for q in history]
            snap_biases(model)  # training moved them off the grid
        return ctx

    @classmethod
    def restore(cls, model: nn.Module, state: dict[str, Any]) -> nn.Module:
        return restore_quantized(model, state)

