"""``lowrank``: factorise Linear layers (and Conv2d, as a channel-reduced pair) by truncated SVD.

A weight ``W`` (out x in) of rank ``r`` becomes two plain layers, ``in -> r`` (no bias) then
``r -> out`` (with the bias): ``W ~ B @ A``, ``B = U_r sqrt(S_r)``, ``A = sqrt(S_r) V_r^T``. A
Conv2d keeps its kernel in the first layer (``in -> r`` channels) and mixes channels back with a
1x1 conv. The rank comes per layer from an explicit ``rank``, a ``rank_ratio`` of the full rank, or
the smallest rank keeping an ``energy`` fraction of the squared singular values.

``method: activation`` factorises ``W C^(1/2)`` instead of ``W`` (``C``: the layer's input Gram
matrix on calibration data, Cholesky factor), so the truncation minimises the error of the
layer's *outputs* on real inputs rather than of its weights (as in SVD-LLM, Wang et al. 2024).
"""
from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field, PositiveInt, model_validator
from torch import Tensor, nn

from compressor.calibration import input_statistics
from compressor.context import Context
from compressor.errors import StageError
from compressor.layers import LayerSelection, layer_value, select_layers
from compressor.limits import MAX_SAMPLES
from compressor.stages.base import Stage, StageParams, register_stage
from compressor.train import TrainParams, train

RULES = ("rank", "rank_ratio", "energy")


class LowRankParams(LayerSelection, StageParams):
    per_layer_fields = dict.fromkeys(RULES)
    rank: PositiveInt | None = Field(None, description="Explicit rank of every selected layer.")
    rank_ratio: float | None = Field(None, gt=0, le=1, description="Rank as a fraction of the full "
                                     "rank min(out, in) (0.5: half rank).")
    energy: float | None = Field(None, gt=0, le=1, description="Smallest rank keeping this fraction "
                                 "of the squared singular values.")
    method: Literal["svd", "activation"] = Field(
        "activation", description="svd: truncate W; activation: truncate W scaled by the input "
        "statistics on calibration data (Linear only; Conv2d falls back to svd).")
    calibration_samples: PositiveInt | None = Field(
        None, le=MAX_SAMPLES, description="Samples for method=activation (default: data.calibration_samples).")
    keep_unprofitable: bool = Field(False, description="Factorise even when the pair has at least "
                                    "as many weights as the original layer.")
    finetune: TrainParams = Field(default_factory=lambda: TrainParams(epochs=1),
                                  description="Fine-tuning after factorisation (epochs: 0 to skip).")

    @model_validator(mode="after")
    def _one_rule(self) -> "LowRankParams":
        given = [r for r in RULES if getattr(self, r) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of rank, rank_ratio, energy (got {', '.join(given) or 'none'})")
        return self


def factorized(dense: nn.Module, rank: int) -> nn.Sequential:
    """The (uninitialised) pair of plain layers that replaces ``dense`` at ``rank``."""
    bias = dense.bias is not None
    if isinstance(dense, nn.Linear):
        return nn.Sequential(nn.Linear(dense.in_features, rank, bias=False),
                             nn.Linear(rank, dense.out_features, bias=bias))
    if isinstance(dense, nn.Conv2d):
        if dense.groups != 1:
            raise ValueError("grouped convolutions are not factorised")
        return nn.Sequential(
            nn.Conv2d(dense.in_channels, rank, dense.kernel_size, dense.stride, dense.padding,
                      dense.dilation, bias=False, padding_mode=dense.padding_mode),
            nn.Conv2d(rank, dense.out_channels, 1, bias=bias))
    raise TypeError(f"{type(dense).__name__} cannot be factorised (Linear or Conv2d only)")


def svd_factors(weight: Tensor, gram: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """``(B, S, A)`` with ``weight ~ B[:, :r] @ A[:r]`` best for every r; ``S``: singular values.

    With ``gram`` (the input Gram matrix), the factors minimise the output error on those inputs.
    """
    w = weight.detach().flatten(1).double()
    if gram is None:
        u, s, vh = torch.linalg.svd(w, full_matrices=False)
        root = s.sqrt()
        return u * root, s, root[:, None] * vh
    damp = 1e-6 * gram.diagonal().mean().clamp_min(1e-12)
    eye = torch.eye(len(gram), dtype=gram.dtype)
    chol = torch.linalg.cholesky(gram + damp * eye)              # C = L L^T
    u, s, vh = torch.linalg.svd(w @ chol, full_matrices=False)
    root = s.sqrt()
    # A = sqrt(S) V^T L^-1, solved without forming the inverse
    a = torch.linalg.solve_triangular(chol, root[:, None] * vh, upper=False, left=False)
    return u * root, s, a


def pick_rank(s: Tensor, rule: str, value: float, full: int) -> int:
    if rule == "rank":
        return min(int(value), full)
    if rule == "rank_ratio":
        return max(1, round(value * full))
    energy = (s ** 2).cumsum(0) / (s ** 2).sum()
    return min(int((energy < value - 1e-12).sum()) + 1, full)


@register_stage("lowrank")
class LowRank(Stage):
    Params = LowRankParams

    def apply(self, ctx: Context) -> Context:
        p: LowRankParams = self.params
        targets = select_layers(ctx.model, p, types=(nn.Linear, nn.Conv2d))
        if not targets:
            raise StageError(f"{self.name}: no Linear or Conv2d layer matches layers={p.layers} "
                             f"ignore={p.ignore}")
        linear = {n: m for n, m in targets.items() if isinstance(m, nn.Linear)}
        grams = (input_statistics(ctx.model, ctx.task, linear, _gram, p.calibration_samples)
                 if p.method == "activation" else {})
        ranks: dict[str, int] = {}
        skipped = []
        for name, module in targets.items():
            b, s, a = svd_factors(module.weight, grams.get(name))
            rule, value = self._rule(name, module)
            rank = pick_rank(s, rule, value, len(s))
            out_f, in_f = module.weight.flatten(1).shape
            if rank * (out_f + in_f) >= out_f * in_f and not p.keep_unprofitable:
                skipped.append(name)
                continue
            try:
                pair = factorized(module, rank)
            except ValueError as exc:
                raise StageError(f"{self.name}: layer {name!r}: {exc}; add it to ignore") from None
            with torch.no_grad():
                pair[0].weight.copy_(a[:rank].reshape(pair[0].weight.shape))
                pair[1].weight.copy_(b[:, :rank].reshape(pair[1].weight.shape))
                if module.bias is not None:
                    pair[1].bias.copy_(module.bias)
            ctx.model.set_submodule(name, pair)
            ranks[name] = rank
        if not ranks:
            raise StageError(f"{self.name}: every selected layer would grow at its rank "
                             f"({', '.join(skipped)}); lower the rank or set keep_unprofitable")
        self.record(ranks=ranks)
        history = train(ctx.model, ctx.task, p.finetune, seed=ctx.seed, desc=self.name)
        ctx.stage_metrics.update({
            "ranks": dict(ranks), "skipped": skipped,
            "quality_factorized": round(history[0], 5),
            "quality_per_epoch": [round(q, 5) for q in history]})
        return ctx

    def _rule(self, name: str, module: nn.Module) -> tuple[str, float]:
        """The layer's own per_layer rule if it has one, else the stage-wide rule."""
        p: LowRankParams = self.params
        for rule in RULES:
            value = layer_value(name, module, rule, None, p.per_layer)
            if value is not None:
                return rule, value
        rule = next(r for r in RULES if getattr(p, r) is not None)
        return rule, getattr(p, rule)

    @classmethod
    def restore(cls, model: nn.Module, state: dict[str, Any]) -> nn.Module:
        for name, rank in state["ranks"].items():
            model.set_submodule(name, factorized(model.get_submodule(name), rank))
        return model


def _gram(module: nn.Module, x: Tensor) -> Tensor:
    """Sum of x x^T over the input vectors of a Linear layer (float64)."""
    rows = x.reshape(-1, x.shape[-1]).double()
    return rows.T @ rows
