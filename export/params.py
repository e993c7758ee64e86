"""Export settings: the ``export`` stage's recipe keys, also what `compressor export` and
:func:`compressor.deploy` take. They live with the exporters so that export depends on no stage."""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveInt

from compressor.limits import MAX_BATCH, MAX_SAMPLES
from compressor.recipe.schema import Strict

Format = Literal["onnx", "onnx-fp16", "onnx-codebook", "tensorrt"]


class Tolerance(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    atol: float | None = Field(None, gt=0, description="Largest allowed absolute difference (None: not checked).")
    min_cosine: float = Field(0.999, ge=0, le=1, description="Smallest allowed mean cosine.")
    min_top1: float | None = Field(None, ge=0, le=1, description="Smallest allowed top-1 agreement.")


class ParityParams(Tolerance):
    """Tolerances per precision; the top-level keys are fp32's."""

    atol: float | None = Field(1e-3, gt=0, description="fp32: largest allowed absolute difference.")
    min_cosine: float = Field(0.9999, ge=0, le=1, description="fp32: smallest allowed mean cosine.")
    fp16: Tolerance = Field(default_factory=lambda: Tolerance(min_cosine=0.999))
    int8: Tolerance = Field(default_factory=lambda: Tolerance(min_cosine=0.999),
                            description="Q/DQ models: ONNX Runtime's int8 kernels vs PyTorch fake-quant.")
    samples: PositiveInt = Field(64, le=MAX_SAMPLES, description="Held-out samples compared.")

    def tolerance(self, precision: str) -> Tolerance:
        if precision == "fp16":
            return self.fp16
        if precision == "int8":
            return self.int8
        return Tolerance(atol=self.atol, min_cosine=self.min_cosine, min_top1=self.min_top1)


class TensorRTParams(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    workspace_mb: PositiveInt | None = Field(None, description="Builder workspace (default: the target's).")
    max_batch: PositiveInt | None = Field(None, le=MAX_BATCH,
                                          description="Largest batch of the profile (default: the target's).")
    opt_batch: PositiveInt = Field(1, le=MAX_BATCH, description="Batch the engine is tuned for.")
    timing_cache: Path | None = Field(None, description="Timing cache file (default: in the compressor cache).")


class ExportParams(Strict):
    formats: list[Format] = Field(default_factory=lambda: ["onnx"], min_length=1, description=(
        "onnx: fp32 (Q/DQ int8 when the model carries fake-quant modules); onnx-fp16: fp16 with "
        "sensitive ops in fp32; onnx-codebook: a compact ONNX storing codebook layers as uint8 indices + "
        "codebooks (needs a codebook stage); tensorrt: an engine (or the trtexec command that builds it)."))
    opset: int | None = Field(None, ge=13, le=21, description="Default: the target's opset.")
    exporter: Literal["torchscript", "dynamo"] = "torchscript"
    simplify: bool = Field(True, description="Simplify (and constant-fold) the graph with onnxslim.")
    external_data_mb: float = Field(1024, gt=0, description="Weights above this go to model.onnx.data.")
    fp16_keep_float: list[str] | None = Field(None, description="Op types kept fp32 in onnx-fp16 "
                                                                "(default: compressor.export.fp16.KEEP_FLOAT).")
    parity: ParityParams = Field(default_factory=ParityParams)
    evaluate: bool = Field(True, description="Measure each exported model's quality on the held-out split.")
    latency: bool = Field(True, description="Time the exported ONNX models on this CPU (interleaved).")
    tensorrt: TensorRTParams = Field(default_factory=TensorRTParams)
