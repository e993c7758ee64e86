"""``finetune``: train the current model on the task loss (e.g. after pruning)."""
from __future__ import annotations

from compressor.context import Context
from compressor.stages.base import Stage, register_stage
from compressor.train import TrainParams, train


@register_stage("finetune")
class Finetune(Stage):
    Params = TrainParams

    def apply(self, ctx: Context) -> Context:
        history = train(ctx.model, ctx.task, self.params, seed=ctx.seed, desc=self.name)
        ctx.stage_metrics["quality_per_epoch"] = [round(q, 5) for q in history]
        return ctx
