"""Deployment targets as data: which runtime runs the model, what it allows, how to quantize for it.

A target is chosen by name in a recipe (``target: jetson-orin``). Stages read it to decide what to
do (the quantize stage places Q/DQ by its :class:`QuantRules`; export picks precisions, opset and,
for TensorRT, the engine's build settings). ``compressor targets`` prints this table.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

Precision = Literal["fp32", "fp16", "int8", "fp8"]


@dataclass(frozen=True)
class QuantRules:
    """How a runtime wants explicitly quantized (Q/DQ) graphs to look.

    The quantize stage places quantizers by these rules and export follows ``min_opset``;
    ``compressor check-trt`` checks TensorRT's. Every target gets symmetric signed int8 (zero point
    0): the one scheme both runtimes fuse, so it is not a rule that varies.
    """

    name: str
    #: Weights use [-127, 127] so that -128 never occurs (TensorRT's int8 weight range).
    narrow_range_weights: bool
    #: Weights may have one scale per output channel (else per tensor, whatever the recipe asks).
    per_channel_weights: bool
    #: Smallest opset that expresses the scheme (per-channel Q/DQ needs 13); Q/DQ exports use at least it.
    min_opset: int
    #: ONNX op types whose inputs stay float. Placement could quantize the inputs of Conv (Conv2d),
    #: Gemm/MatMul (Linear) and Add (residual Adds); the others listed are never quantized.
    keep_float: tuple[str, ...]
    #: Which inputs of residual Adds get Q/DQ: "residual" (the skip input, so Conv+Add fuses into one
    #: TensorRT kernel), "both" (ONNX Runtime's QLinearAdd needs both) or "none".
    residual_adds: Literal["none", "residual", "both"]
    #: Bits of integer weights when a recipe does not set them. 7 for ONNX Runtime on x86: its
    #: u8s8 kernels add two products in int16 on CPUs without VNNI, which 8-bit weights can
    #: overflow and 7-bit ones cannot (ORT's ``reduce_range``); 8-bit weights there run the exact
    #: but slower u8u8 kernels (export/ort_kernels.py).
    weight_bits: int = 8
    #: Activations that calibration never saw negative (after ReLU, ReLU6, Sigmoid) get the unsigned
    #: grid [0, 255] (uint8, zero point 0): twice the resolution of half an int8 grid, and ONNX
    #: Runtime's x86 kernels take uint8 activations, so it drops the ReLU/Clip before each Q too.
    #: Off for TensorRT (int8 only) and ARM (ORT's ARM kernels take int8 activations).
    unsigned_activations: bool = False

    def keeps_float(self, *op_types: str) -> bool:
        """Whether any of ``op_types`` (the ONNX ops a layer exports as) must stay float."""
        return any(op in self.keep_float for op in op_types)


# ORT's CPU kernels fuse Q/DQ around Conv/MatMul/Gemm; LayerNorm, Softmax and GELU outputs carry
# outliers that int8 breaks (MiniLM static QDQ on all ops: cosine 0.35), so they stay float.
# Narrow-range weights too: one weight grid serves both runtimes (a CNN's ORT export passes
# check-trt, docs/quantization.md).
_ORT_CPU = QuantRules("ort-cpu", narrow_range_weights=True, per_channel_weights=True, min_opset=13,
                      keep_float=("Softmax", "LayerNormalization", "Gelu", "Erf", "Pow", "ReduceMean"),
                      residual_adds="both")

QUANT_RULES: dict[str, QuantRules] = {r.name: r for r in (
    QuantRules("tensorrt", narrow_range_weights=True, per_channel_weights=True, min_opset=13,
               keep_float=("Softmax", "LayerNormalization"), residual_adds="residual"),
    _ORT_CPU,
    replace(_ORT_CPU, name="ort-x86", weight_bits=7, unsigned_activations=True),
)}


@dataclass(frozen=True)
class Target:
    name: str
    runtime: Literal["onnxruntime", "tensorrt"]
    description: str
    #: Precisions the target runs, fastest first; export refuses the others.
    precisions: tuple[Precision, ...]
    opset: int = 17
    #: CPU targets: the instruction set, which decides the int8 kernels' activation type.
    cpu: Literal["x86_64", "arm64"] | None = None
    #: How the quantize stage places quantizers and export writes Q/DQ for this target.
    rules: QuantRules = QUANT_RULES["ort-cpu"]
    #: Intra-op threads for latency measurement (None: the runtime's default).
    threads: int | None = None
    #: Semi-structured sparsity the target accelerates (TensorRT: 2:4 only).
    sparsity: tuple[str, ...] = field(default_factory=tuple)
    #: TensorRT targets: the GPU and its compute capability (engines only run where they were built).
    gpu: str | None = None
    compute_capability: str | None = None
    #: TensorRT version the target ships (engines are tied to it).
    tensorrt: str | None = None
    #: TensorRT builder workspace limit (MiB) and the batch range of the optimization profile.
    workspace_mb: int = 1024
    max_batch: int = 32

    def allows(self, precision: str) -> bool:
        return precision in self.precisions

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


TARGETS: dict[str, Target] = {t.name: t for t in (
    Target("cpu-x86", "onnxruntime", "x86-64 CPU through ONNX Runtime (AVX2/AVX-512/VNNI)",
           ("int8", "fp32"), cpu="x86_64", rules=QUANT_RULES["ort-x86"]),
    Target("cpu-arm64", "onnxruntime",
           "ARM64 CPU (Graviton, Raspberry Pi 5, phones) through ONNX Runtime; fp16 on ARMv8.2+",
           ("int8", "fp16", "fp32"), cpu="arm64"),
    Target("jetson-orin", "tensorrt", "NVIDIA Jetson Orin (Ampere, sm_87) through TensorRT (JetPack 6)",
           ("int8", "fp16", "fp32"), opset=17, rules=QUANT_RULES["tensorrt"], sparsity=("2:4",),
           gpu="Jetson AGX Orin", compute_capability="8.7", tensorrt="10.3", workspace_mb=1024,
           max_batch=16),
    Target("rtx-4090", "tensorrt", "NVIDIA RTX 4090 (Ada, sm_89) through TensorRT",
           ("fp8", "int8", "fp16", "fp32"), opset=19, rules=QUANT_RULES["tensorrt"], sparsity=("2:4",),
           gpu="GeForce RTX 4090", compute_capability="8.9", tensorrt="10.8", workspace_mb=4096),
    Target("h100", "tensorrt", "NVIDIA H100 (Hopper, sm_90) through TensorRT",
           ("fp8", "int8", "fp16", "fp32"), opset=19, rules=QUANT_RULES["tensorrt"], sparsity=("2:4",),
           gpu="H100", compute_capability="9.0", tensorrt="10.8", workspace_mb=8192, max_batch=64),
)}


def get_target(name: str) -> Target:
    try:
        return TARGETS[name]
    except KeyError:
        raise KeyError(f"unknown target {name!r}; known: {', '.join(sorted(TARGETS))}") from None
