"""``export``: write the deployable ONNX model, check it and measure parity against PyTorch."""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveInt

from compressor.context import Context
from compressor.errors import ExportError
from compressor.export.onnx import export_onnx
from compressor.export.parity import onnx_parity
from compressor.stages.base import Stage, StageParams, register_stage


class ParityParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    atol: float = Field(1e-3, gt=0, description="Largest allowed absolute difference of outputs.")
    min_cosine: float = Field(0.9999, ge=0, le=1, description="Smallest allowed mean cosine.")
    samples: PositiveInt = Field(64, description="Held-out samples compared.")


class ExportParams(StageParams):
    formats: list[Literal["onnx"]] = Field(default_factory=lambda: ["onnx"])
    opset: int | None = Field(None, ge=13, le=21, description="Default: the target's opset.")
    exporter: Literal["torchscript", "dynamo"] = "torchscript"
    simplify: bool = Field(True, description="Simplify the graph with onnxslim.")
    parity: ParityParams = Field(default_factory=ParityParams)


@register_stage("export")
class Export(Stage):
    Params = ExportParams
    changes_model = False

    def apply(self, ctx: Context) -> Context:
        p: ExportParams = self.params
        task = ctx.task
        path = ctx.run_dir / "deploy" / "model.onnx"
        export_onnx(ctx.model, task.example_inputs(2), path, input_names=task.input_names,
                    output_names=task.output_names, dynamic_axes=task.dynamic_axes,
                    opset=p.opset or ctx.target.opset, exporter=p.exporter, simplify=p.simplify,
                    runtime=ctx.target.runtime)
        ctx.artifacts["onnx"] = str(path)
        parity = onnx_parity(ctx.model, path, task.example_inputs(p.parity.samples))
        ctx.stage_metrics["parity"] = parity.as_dict()
        if parity.max_abs > p.parity.atol or parity.cosine < p.parity.min_cosine:
            raise ExportError(
                f"parity check failed for {path}: max abs error {parity.max_abs:.3g} "
                f"(allowed {p.parity.atol:g}), cosine {parity.cosine:.6f} (required "
                f">= {p.parity.min_cosine:g}); the artifact is kept for inspection")
        return ctx
