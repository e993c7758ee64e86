"""``distill``: train the current model (the student) to imitate a frozen teacher.

The teacher is the original model, the model as it was before a named stage (``before:NAME``),
a compressor checkpoint, or any model a ``model:`` section can describe. Losses, mixed by weight:
the task loss, output KD (logit KD with temperature for classifiers; cosine or MSE for
embeddings), feature hints with learned projections where widths differ, and MiniLM-style
self-attention relations for transformers of the layouts in :mod:`compressor.transformer_layers`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, PositiveInt
from torch import Tensor, nn

from compressor.context import Context
from compressor.errors import StageError
from compressor.recipe.schema import ModelSpec
from compressor.sources import load_model
from compressor.stages.base import Stage, StageParams, register_stage
from compressor.stages.distill.losses import (AttentionRelations, FeatureHints, OutputLoss, Relation,
                                              output_loss)
from compressor.train import TrainParams, train
from compressor.transformer_layers import transformer_layers


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class OutputKD(_Section):
    loss: Literal["auto"] | OutputLoss = Field("auto", description=(
        "kl (logit KD; auto for accuracy tasks), cosine (auto for fidelity/embedding tasks) or mse."))
    temperature: PositiveFloat = Field(4.0, description="Softens both distributions (kl only).")
    weight: float = Field(1.0, ge=0)


class FeatureKD(_Section):
    weight: float = Field(0.0, ge=0, description="0 disables feature hints.")
    layers: dict[str, str] | list[str] = Field(default_factory=list, description=(
        "Student layer -> teacher layer whose outputs are matched; a list maps each name to itself."))
    loss: Literal["mse", "cosine"] = "mse"


class AttentionKD(_Section):
    weight: float = Field(0.0, ge=0, description="0 disables MiniLM self-attention distillation.")
    relations: list[Relation] = Field(default_factory=lambda: ["qk", "vv"], description=(
        "qk: attention distributions, vv: value relations (MiniLM); qq, kk: MiniLMv2's extra relations."))
    layers: Literal["all", "last"] | dict[int, int] = Field("all", description=(
        "Encoder layer pairs {student: teacher}; 'all' pairs layers one to one (last to last when "
        "depths differ), 'last' only the last layers."))
    relation_heads: PositiveInt | None = Field(None, description="Default: the teacher's head count.")


class DistillParams(StageParams):
    teacher: str | ModelSpec = Field("original", description=(
        "original, before:STAGE (the model before that stage), a compressor checkpoint path, or a "
        "model section ({zoo: ...}, {factory: ..., checkpoint: ...})."))
    task_weight: float = Field(0.0, ge=0, description="Weight of the task loss (labels) in the mix.")
    kd: OutputKD = Field(default_factory=OutputKD)
    features: FeatureKD = Field(default_factory=FeatureKD)
    attention: AttentionKD = Field(default_factory=AttentionKD)
    finetune: TrainParams = Field(default_factory=TrainParams)


@register_stage("distill")
class Distill(Stage):
    Params = DistillParams

    def apply(self, ctx: Context) -> Context:
        p: DistillParams = self.params
        if p.task_weight + p.kd.weight + p.features.weight + p.attention.weight == 0:
            raise StageError("every loss weight is 0: set kd.weight, features.weight, attention.weight "
                             "or task_weight")
        teacher = self._teacher(ctx).eval()
        for param in teacher.parameters():
            param.requires_grad_(False)
        student, task = ctx.model, ctx.task
        kind: OutputLoss = p.kd.loss if p.kd.loss != "auto" else ("kl" if task.metric == "accuracy" else "cosine")
        mask_index = task.input_names.index("attention_mask") if "attention_mask" in task.input_names else None
        hints, relations, extra = None, None, []
        try:
            if p.features.weight:
                layers = p.features.layers
                layer_map = dict(layers) if isinstance(layers, dict) else {n: n for n in layers}
                if not layer_map:
                    raise StageError("features.weight > 0 needs features.layers (student -> teacher names)")
                hints = FeatureHints(student, teacher, layer_map, task.example_inputs(2), p.features.loss)
                extra = list(hints.parameters())
            if p.attention.weight:
                relations = self._relations(student, teacher)

            def loss_fn(model: nn.Module, inputs: tuple[Tensor, ...], target: Tensor) -> Tensor:
                with torch.no_grad():
                    t_out = teacher(*inputs)
                s_out = model(*inputs)
                loss = p.kd.weight * output_loss(s_out, t_out, kind, p.kd.temperature) if p.kd.weight else 0
                if p.task_weight:
                    loss = loss + p.task_weight * task.loss(s_out, target)
                mask = inputs[mask_index] if mask_index is not None else None
                if hints is not None:
                    loss = loss + p.features.weight * hints.loss(mask)
                if relations is not None:
                    loss = loss + p.attention.weight * relations.loss(mask)
                return loss

            history = train(student, task, p.finetune, loss_fn=loss_fn, extra_parameters=extra,
                            seed=ctx.seed, desc=self.name)
        finally:
            if hints is not None:
                hints.remove()
            if relations is not None:
                relations.remove()
        ctx.stage_metrics["quality_per_epoch"] = [round(q, 5) for q in history]
        ctx.stage_metrics["teacher_quality"] = task.evaluate(teacher)
        return ctx

    # ------------------------------------------------------------------ teacher
    def _teacher(self, ctx: Context) -> nn.Module:
        spec = self.params.teacher
        if isinstance(spec, ModelSpec):
            return load_model(spec, trust_code=ctx.recipe.trust_code)
        if spec == "original":
            return ctx.original
        if spec.startswith("before:"):
            try:
                return ctx.model_before(spec.removeprefix("before:"))
            except KeyError as exc:
                raise StageError(f"teacher {spec!r}: {exc.args[0]}") from None
        path = Path(spec)
        if not path.is_file():
            raise StageError(f"teacher {spec!r}: expected 'original', 'before:STAGE', a checkpoint "
                             "file or a model section")
        return ctx.restore(path)

    # ------------------------------------------------------------------ MiniLM relations
    def _relations(self, student: nn.Module, teacher: nn.Module) -> AttentionRelations:
        a = self.params.attention
        s_layers, t_layers = transformer_layers(student), transformer_layers(teacher)
        if not s_layers or not t_layers:
            side = "student" if not s_layers else "teacher"
            raise StageError(f"attention.weight > 0 needs transformer layers of a known layout (BERT, RoBERTa, "
                             f"DistilBERT, ViT/DeiT, GPT-2, Llama-style; compressor/transformer_layers.py) in "
                             f"student and teacher; the {side} ({type(student if side == 'student' else teacher).__name__}) "
                             "has none: set attention.weight: 0")
        if a.layers == "last" or (a.layers == "all" and len(s_layers) != len(t_layers)):
            layer_map = {len(s_layers) - 1: len(t_layers) - 1}
        elif a.layers == "all":
            layer_map = {i: i for i in range(len(s_layers))}
        else:
            layer_map = dict(a.layers)
        heads = a.relation_heads or t_layers[layer_map[next(iter(layer_map))]].num_heads
        return AttentionRelations(s_layers, t_layers, layer_map, a.relations, heads)
