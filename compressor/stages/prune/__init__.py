"""``prune``: structured channels, transformer FFN width and heads, unstructured and 2:4 sparsity.

One stage kind, five methods:

- ``channel``: remove conv/linear output channels on torch-pruning's dependency graph; the model
  really shrinks (params, MACs, latency). Residual, concat and depthwise groups stay consistent.
- ``ffn`` / ``heads``: remove FFN neurons / whole attention heads of transformer layers whose layout
  :mod:`compressor.transformer_layers` knows (BERT, RoBERTa, DistilBERT, ViT/DeiT, GPT-2, Llama-style).
- ``unstructured``: zero the smallest-magnitude weights (size shrinks in a sparse encoding).
- ``2:4``: keep 2 of every 4 weights along the input dimension (what TensorRT accelerates).

``steps`` > 1 prunes iteratively, fine-tuning (``finetune``) after every step. The recorded state
(torch-pruning's pruning history, the FFN/head cuts, or the sparse layers' names with their masks in the weights)
rebuilds the pruned architecture from the base model.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field, PositiveInt, model_validator
from torch import Tensor, nn

from compressor.context import Context
from compressor.errors import StageError
from compressor.export.onnx import export_onnx
from compressor.export.sparsity import semi_structured_report
from compressor.layers import LayerSelection, layer_value, pick, select_layers
from compressor.limits import MAX_ROUNDS, MAX_STEPS
from compressor.stages.base import Stage, StageParams, register_stage
from compressor.stages.prune import sparse
from compressor.stages.prune.importance import Criterion, accumulate_gradients, build_importance, input_energy
from compressor.stages.prune.structured import input_spec, prune_channels, replay, widths
from compressor.stages.prune.transformer import apply_cuts, prune_transformer, units
from compressor.transformer_layers import fused_attention_candidates, sync_config, transformer_layers
from compressor.train import TrainParams, train

#: Transformer layouts whose channel pruning is refused (see Prune._structured).
ROTARY_LAYOUTS = ("llama",)

Method = Literal["channel", "ffn", "heads", "unstructured", "2:4"]
SPARSE_METHODS = ("unstructured", "2:4")


class PruneParams(LayerSelection, StageParams):
    per_layer_fields = {"sparsity": None}
    method: Method = Field("channel", description="What to remove: channel, ffn, heads, unstructured, 2:4.")
    sparsity: float = Field(0.5, ge=0, lt=1, description=(
        "Fraction removed: of each layer's output channels (channel), FFN neurons (ffn), attention "
        "heads (heads) or weights (unstructured); 2:4 is always 0.5. Per layer: per_layer.NAME.sparsity."))
    importance: Criterion = Field("l2", description=(
        "Channel/neuron/head ranking: l1, l2 (weight magnitude), bn_scale (BatchNorm gamma), taylor "
        "(|weight x gradient| on training batches), activation (ffn, heads: the output energy a unit "
        "carries on training batches, E[x^2] |w|^2; needs no gradient, so it suits fidelity tasks), "
        "random (a baseline). Sparse methods use magnitude."))
    global_ranking: bool = Field(False, description=(
        "Rank across layers with one threshold (layers then lose different fractions) instead of per layer."))
    max_sparsity: float = Field(0.9, gt=0, le=1, description="Cap on any layer's pruned fraction under global ranking.")
    round_to: PositiveInt | None = Field(None, description=(
        "Keep channel counts (channel) or FFN widths (ffn) multiples of this, e.g. 8 for fast int8/fp16 kernels."))
    steps: PositiveInt = Field(1, le=MAX_ROUNDS,
                               description="Iterative pruning: reach the target in this many equal steps.")
    taylor_batches: PositiveInt = Field(4, le=MAX_STEPS, description=(
        "Training batches the data-driven importances read: taylor sums their gradients, activation "
        "their input energy."))
    finetune: TrainParams = Field(default_factory=lambda: TrainParams(epochs=0),
                                  description="Fine-tuning after every step (epochs: 0 for none).")
    verify_onnx: bool = Field(True, description="2:4: export to ONNX and check the pattern in its weights.")

    @model_validator(mode="after")
    def _consistent(self) -> "PruneParams":
        if self.method == "2:4":
            if "sparsity" in self.model_fields_set and self.sparsity != 0.5:
                raise ValueError("method '2:4' always removes half of the weights; drop 'sparsity'")
            if self.steps != 1:
                raise ValueError("method '2:4' prunes in one step; set steps: 1")
            if self.per_layer:
                raise ValueError("method '2:4' has no per-layer sparsity; use layers/ignore to choose layers")
        if self.method in SPARSE_METHODS and self.importance not in ("l1", "l2"):
            raise ValueError(f"method '{self.method}' ranks single weights by magnitude; "
                             f"importance must be l1 or l2, got {self.importance!r}")
        if self.round_to is not None and self.method not in ("channel", "ffn"):
            raise ValueError(f"round_to applies to methods channel and ffn, not {self.method!r}")
        if self.importance == "activation" and self.method not in ("ffn", "heads"):
            raise ValueError(f"importance 'activation' ranks FFN neurons and heads (methods ffn, heads), "
                             f"not {self.method!r}")
        if self.global_ranking and self.method not in ("channel", "unstructured"):
            raise ValueError(f"global_ranking applies to methods channel and unstructured, not {self.method!r}")
        return self


@register_stage("prune")
class Prune(Stage):
    Params = PruneParams

    def apply(self, ctx: Context) -> Context:
        p: PruneParams = self.params
        self.record(method=p.method)
        quality: dict[str, list[float]] = {}

        def finetune(step: int) -> None:
            if p.finetune.epochs:
                history = train(ctx.model, ctx.task, p.finetune, seed=ctx.seed + step,
                                desc=f"{self.name} {step}/{p.steps}")
                quality[str(step)] = [round(q, 5) for q in history]

        if p.method in SPARSE_METHODS:
            self._sparsify(ctx, finetune)
        else:
            self._structured(ctx, finetune)
        if quality:
            ctx.stage_metrics["quality_per_step"] = quality
        ctx.model.eval()
        return ctx

    # ------------------------------------------------------------------ structured
    def _structured(self, ctx: Context, finetune: Any) -> None:
        p: PruneParams = self.params
        model, task = ctx.model, ctx.task
        inputs = task.example_inputs(1)

        energy: dict[nn.Module, Tensor] = {}  # activation importance, measured before each step

        def before_step() -> None:
            if p.importance == "taylor":
                accumulate_gradients(model, task, p.taylor_batches, ctx.seed)
            elif p.importance == "activation":
                energy.clear()
                energy.update(input_energy(model, task, p.taylor_batches, ctx.seed))

        if p.method != "channel":
            self._transformer(ctx, before_step, finetune, energy)
            return
        rotary = [layer.name for layer in transformer_layers(model) if layer.layout.name in ROTARY_LAYOUTS]
        if rotary:
            raise StageError(f"method 'channel' on Llama-style layers ({rotary[0]}, ...: rotary position "
                             "embeddings, grouped-query attention) is not supported: "
                             "torch-pruning's dependency graph of a 2-layer model did not finish in 10 minutes; "
                             "use method: ffn or heads")
        before = widths(model)
        selected = select_layers(model, p)
        ratios = {n: r for n, m in selected.items()
                  if (r := layer_value(n, m, "sparsity", None, p.per_layer)) is not None}
        history = prune_channels(model, inputs, importance=build_importance(p.importance), selected=selected,
                                 ratios=ratios, default_ratio=p.sparsity,
                                 global_ranking=p.global_ranking, max_ratio=p.max_sparsity,
                                 round_to=p.round_to, steps=p.steps, before_step=before_step,
                                 after_step=finetune)
        after = widths(model)
        ctx.stage_metrics["channels"] = {n: [before[n], after[n]] for n in before
                                         if n in after and after[n] != before[n]}
        self.record(inputs=input_spec(inputs), history=history)

    def _transformer(self, ctx: Context, before_step: Any, finetune: Any,
                     energy: dict[nn.Module, Tensor]) -> None:
        p: PruneParams = self.params
        unit = "ffn" if p.method == "ffn" else "heads"
        layers = {layer.ffn_name if unit == "ffn" else layer.attention_name: layer
                  for layer in transformer_layers(ctx.model)}
        if not layers:
            raise StageError(_no_transformer_layers(ctx.model, p.method))
        modules = {n: (layer.ffn_up[-1] if unit == "ffn" else layer.attention) for n, layer in layers.items()}
        chosen = pick(modules.items(), p)
        if not chosen:
            raise StageError(f"layers/ignore select none of: {', '.join(layers)}")
        counts = {n: units(layers[n], unit) for n in chosen}
        cuts = prune_transformer(
            ctx.model, unit=unit, layers={n: layers[n] for n in chosen},
            ratios={n: layer_value(n, m, "sparsity", p.sparsity, p.per_layer) for n, m in chosen.items()},
            criterion=p.importance, round_to=p.round_to, steps=p.steps, before_step=before_step,
            after_step=finetune, energy=energy)
        key = "ffn_width" if unit == "ffn" else "heads"
        ctx.stage_metrics[key] = {n: [counts[n], units(layers[n], unit)] for n in chosen}
        self.record(cuts=cuts)

    # ------------------------------------------------------------------ sparse
    def _sparsify(self, ctx: Context, finetune: Any) -> None:
        p: PruneParams = self.params
        pattern: sparse.Pattern = "2:4" if p.method == "2:4" else "unstructured"
        layers = select_layers(ctx.model, p)
        if pattern == "2:4":
            skipped = [n for n, m in layers.items() if not sparse.supports_2_4(m)]
            layers = {n: m for n, m in layers.items() if n not in skipped}
            if skipped:
                ctx.stage_metrics["skipped"] = skipped  # input dimension not a multiple of 4
        if not layers:
            raise StageError("layers/ignore select no Conv/Linear layer to sparsify")
        explicit = {n for n, m in layers.items() if layer_value(n, m, "sparsity", None, p.per_layer) is not None}
        for step in range(1, p.steps + 1):
            if pattern == "2:4":
                masks = {n: sparse.semi_structured_mask(m.weight.detach()) for n, m in layers.items()}
            else:
                fraction = step / p.steps
                targets = {n: layer_value(n, m, "sparsity", p.sparsity, p.per_layer) * fraction
                           for n, m in layers.items()}
                masks = sparse.magnitude_masks({n: m.weight.detach() for n, m in layers.items()}, targets,
                                               global_names=[n for n in layers if n not in explicit]
                                               if p.global_ranking else ())
            for name, mask in masks.items():
                sparse.make_sparse(layers[name], mask, pattern)
            finetune(step)
        ctx.stage_metrics.update(sparse.storage_summary(ctx.model))
        if pattern == "2:4":
            if not all(sparse.is_2_4(m.weight) for m in layers.values()):
                raise StageError("2:4 pattern broken after fine-tuning")
            if p.verify_onnx:
                self._verify_onnx(ctx, len(layers))
        self.record(pattern=pattern, layers=list(layers))

    def _verify_onnx(self, ctx: Context, expected: int) -> None:
        """Export and count the weights that hold 2:4 in the file TensorRT would read."""
        task = ctx.task
        with tempfile.TemporaryDirectory() as tmp:
            path = export_onnx(ctx.model, task.example_inputs(2), Path(tmp) / "model.onnx",
                               input_names=task.input_names, output_names=task.output_names,
                               dynamic_axes=task.dynamic_axes, opset=ctx.target.opset)
            report = semi_structured_report(path)
        holding = sum(w.holds for w in report)
        ctx.stage_metrics["onnx_2_4_weights"] = f"{holding}/{len(report)}"
        if holding < expected:
            raise StageError(f"only {holding} ONNX weights hold the 2:4 pattern, expected {expected}")

    # ------------------------------------------------------------------ state
    @classmethod
    def restore(cls, model: nn.Module, state: dict[str, Any]) -> nn.Module:
        if state["method"] in SPARSE_METHODS:
            modules = dict(model.named_modules())
            for name in state["layers"]:
                weight = modules[name].weight
                sparse.make_sparse(modules[name], torch.ones_like(weight, dtype=torch.bool), state["pattern"])
            return model
        if "cuts" in state:
            return apply_cuts(model, state["cuts"])
        replay(model, state["history"], state["inputs"])  # channels, or ffn/heads before cuts were recorded
        sync_config(model)
        return model


def _no_transformer_layers(model: nn.Module, method: str) -> str:
    """Why ``method`` (ffn or heads) finds nothing to prune in ``model``, and what to do instead."""
    message = (f"method {method!r} needs transformer layers of a known layout (BERT, RoBERTa, DistilBERT, "
               f"ViT/DeiT, GPT-2, Llama-style; see compressor/transformer_layers.py); "
               f"{type(model).__name__} has none")
    fused = fused_attention_candidates(model)
    if fused:
        message += (f". {', '.join(fused)} look like hand-written fused q/k/v projections: a forward that "
                    "derives the head size from its input width cannot follow pruned weights. Prune the "
                    f"FFNs with method: channel, ignore: [{', '.join(fused)}]")
    return message
