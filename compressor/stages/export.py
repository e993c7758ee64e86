"""``export``: write the deploy bundle (ONNX fp32/Q-DQ, fp16, TensorRT engine or its build command),
check parity against PyTorch and time the exported models.

A parity failure fails the stage (and the run) with the reason; the artifacts stay in ``deploy/``
for inspection and the report records why.
"""
from __future__ import annotations

from compressor.context import Context
from compressor.errors import ExportError
from compressor.export.deploy import Provenance, export_model
from compressor.export.params import ExportParams
from compressor.stages.base import Stage, register_stage


@register_stage("export")
class Export(Stage):
    Params = ExportParams
    changes_model = False
    runs_after = ("*",)

    def apply(self, ctx: Context) -> Context:
        provenance = Provenance(recipe_hash=ctx.recipe.digest(),
                                stages=[{"name": r.name, "kind": r.kind} for r in ctx.records],
                                recipe=ctx.recipe.name)
        params = self.params
        if ctx.recipe.report.latency == "off":  # the recipe turned timing off for every stage
            params = params.model_copy(update={"latency": False})
        result = export_model(ctx.model, ctx.task, ctx.target, ctx.run_dir / "deploy", params,
                              provenance=provenance, report=ctx.recipe.report)
        for note in result.notes:
            ctx.log(f"note: {note}")
        ctx.artifacts.update(result.artifacts)
        ctx.stage_metrics.update(result.metrics)
        if result.failures:
            raise ExportError(result.failure_message())
        return ctx
