"""Deployment targets as data: which runtime runs the model and what it allows."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


@dataclass(frozen=True)
class Target:
    name: str
    runtime: Literal["onnxruntime", "tensorrt"]
    description: str
    #: Precisions the target runs fast, best first.
    precisions: tuple[str, ...]
    opset: int = 17
    #: Quantization placement rules: "ort-cpu" keeps LayerNorm/Softmax/GELU float; "tensorrt"
    #: quantizes inputs of weighted ops and residual Add inputs so Conv+Add fuses.
    quant_rules: Literal["ort-cpu", "tensorrt"] = "ort-cpu"
    #: Intra-op threads for latency measurement (None: the runtime's default).
    threads: int | None = None
    #: Semi-structured sparsity the target accelerates (TensorRT: 2:4 only).
    sparsity: tuple[str, ...] = field(default_factory=tuple)


TARGETS: dict[str, Target] = {t.name: t for t in (
    Target("cpu-x86", "onnxruntime", "x86-64 CPU through ONNX Runtime (AVX2/AVX-512/VNNI)",
           ("fp32", "int8")),
    Target("cpu-arm64", "onnxruntime", "ARM64 CPU (Graviton, Raspberry Pi, phones) through ONNX Runtime",
           ("fp32", "int8")),
    Target("jetson-orin", "tensorrt", "NVIDIA Jetson Orin (Ampere, sm_87) through TensorRT",
           ("int8", "fp16", "fp32"), opset=17, quant_rules="tensorrt", sparsity=("2:4",)),
    Target("rtx-4090", "tensorrt", "NVIDIA RTX 4090 (Ada, sm_89) through TensorRT",
           ("fp8", "int8", "fp16", "fp32"), opset=19, quant_rules="tensorrt", sparsity=("2:4",)),
    Target("h100", "tensorrt", "NVIDIA H100 (Hopper, sm_90) through TensorRT",
           ("fp8", "int8", "fp16", "fp32"), opset=19, quant_rules="tensorrt", sparsity=("2:4",)),
)}


def get_target(name: str) -> Target:
    try:
        return TARGETS[name]
    except KeyError:
        raise KeyError(f"unknown target {name!r}; known: {', '.join(sorted(TARGETS))}") from None
