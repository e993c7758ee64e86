"""``codebook``: per-layer k-means weight clustering or product quantization, then fine-tuning.

Each selected layer's weight becomes ``codebook[indices]`` (times a per-row scale if asked),
with ``k`` codewords of ``dim`` values. Fine-tuning then trains the codewords (and everything
left dense) with assignments fixed, or, with ``assignments: refresh``, learns the assignments
jointly: each weight keeps a latent value that follows the gradient and maps to its nearest
codeword, moving only to neighbouring codewords (the proximal search of JLCM, Yvinec et al.,
ICLR 2024).
"""
from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field
from torch import Tensor, nn

from compressor import distributed
from compressor.calibration import input_statistics
from compressor.context import Context
from compressor.errors import StageError
from compressor.layers import LayerSelection, layer_value, select_layers
from compressor.stages.base import Stage, StageParams, register_stage
from compressor.stages.codebook.kmeans import Algorithm
from compressor.stages.codebook.modules import DENSE_TYPES, CodebookLayer, codebook_layer
from compressor.stages.codebook.packing import (Coder, codebook_layers, convert, layer_specs, save_packed,
                                                storage)
from compressor.stages.codebook.product import quantize
from compressor.train import TrainParams, train


class CodebookParams(LayerSelection, StageParams):
    per_layer_fields = {"clusters": None, "dim": None, "per_channel_scale": None}
    clusters: int = Field(16, ge=2, le=256, description="Codewords per layer (k); indices take "
                          "ceil(log2 k) bits.")
    dim: int = Field(1, ge=1, le=8, description="Values per codeword: 1 = scalar weight clustering, "
                     "2..8 = product quantization of sub-vectors along each row.")
    per_channel_scale: bool = Field(False, description="Divide each output row by its largest "
                                    "magnitude before clustering (one fp32 scale per row).")
    weighting: Literal["uniform", "activation"] = Field(
        "uniform", description="activation: weight each value's k-means error by the mean square "
        "of the input it multiplies on calibration data (Linear, ungrouped Conv2d), so codewords "
        "fit the weights that move the outputs most.")
    algorithm: Algorithm = Field("kmeans", description="scikit-learn KMeans, or MiniBatchKMeans "
                                 "for very large layers.")
    assignments: Literal["fixed", "refresh"] = Field(
        "fixed", description="fixed: fine-tune codewords only; refresh: learn assignments jointly.")
    int8_grid: bool = Field(False, description="Keep codewords on the layer's symmetric int8 grid "
                            "(step max|codeword|/127), so a later int8 Q/DQ quantizer carries them "
                            "without further error.")
    entropy_coder: Coder = Field("none", description="Entropy-code the packed indices (stdlib "
                                 "zlib/lzma); the coded size is reported beside the bit-packed one.")
    save_packed: bool = Field(True, description="Write deploy/STAGE.safetensors: bit-packed "
                              "indices, codebooks and all other tensors.")
    materialize: bool = Field(False, description="End with plain layers holding the clustered "
                              "weights (after measuring and packing), so a following quantize stage "
                              "treats them as usual; with int8_grid its int8 weights are exact.")
    finetune: TrainParams = Field(default_factory=lambda: TrainParams(epochs=1),
                                  description="Fine-tuning after clustering (epochs: 0 to skip).")


@register_stage("codebook")
class Codebook(Stage):
    Params = CodebookParams

    def apply(self, ctx: Context) -> Context:
        p: CodebookParams = self.params
        targets = select_layers(ctx.model, p, types=DENSE_TYPES)
        if not targets:
            raise StageError(f"{self.name}: no Linear, Conv2d or Embedding layer matches layers="
                             f"{p.layers} ignore={p.ignore}")
        power = (input_statistics(ctx.model, ctx.task, targets, _input_power)
                 if p.weighting == "activation" else {})
        dense: dict[str, Tensor] = {}
        for name, module in targets.items():
            ctx.model.set_submodule(name, self._cluster(name, module, power.get(name), ctx.seed))
            if p.assignments == "refresh":
                dense[name] = module.weight.detach()
        layers = codebook_layers(ctx.model)
        if p.int8_grid:
            _snap(layers)
        if p.assignments == "refresh":
            for name, layer in layers.items():
                layer.begin_joint(dense[name])
        history = train(ctx.model, ctx.task, p.finetune, seed=ctx.seed, desc=self.name,
                        after_step=(lambda: _snap(layers)) if p.int8_grid else None)
        for layer in layers.values():
            layer.end_joint()
        self.record(layers=layer_specs(ctx.model))

        size = storage(ctx.model, p.entropy_coder)
        ctx.stage_metrics.update({
            "layers": len(layers), "quality_kmeans": round(history[0], 5),
            "quality_per_epoch": [round(q, 5) for q in history], "storage": size.as_dict()})
        if p.save_packed:  # rank 0 writes it under torchrun
            path = ctx.run_dir / "deploy" / f"{self.name}.safetensors"
            ctx.stage_metrics["packed_file_bytes"] = distributed.main_only(
                lambda: save_packed(ctx.model, path, p.entropy_coder))
            ctx.artifacts[self.name] = str(path)
        if p.materialize:
            for name, layer in layers.items():
                ctx.model.set_submodule(name, layer.to_dense())
            self.record(layers={})
        return ctx

    def _cluster(self, name: str, module: nn.Module, power: Tensor | None, seed: int) -> CodebookLayer:
        p: CodebookParams = self.params
        k, dim, per_channel = (layer_value(name, module, f, getattr(p, f), p.per_layer)
                               for f in p.per_layer_fields)
        try:
            q = quantize(module.weight, k, dim=dim, per_channel=per_channel, importance=power,
                         algorithm=p.algorithm, seed=seed)
            layer = codebook_layer(module, len(q.codebook), dim, per_channel)
        except ValueError as exc:
            raise StageError(f"{self.name}: layer {name!r} ({type(module).__name__} "
                             f"{tuple(module.weight.shape)}): {exc}; override it with per_layer: "
                             f"{{{name}: {{dim: 1}}}} or add it to ignore") from None
        layer.load_quantized(q)
        return layer

    @classmethod
    def restore(cls, model: nn.Module, state: dict[str, Any]) -> nn.Module:
        return convert(model, state["layers"])


def _input_power(module: nn.Module, x: Tensor) -> Tensor:
    """Sum of squares of each input feature, shaped to broadcast against the layer's weight."""
    if isinstance(module, nn.Linear):
        return (x.reshape(-1, x.shape[-1]).double() ** 2).sum(0)[None, :]
    if isinstance(module, nn.Conv2d) and module.groups == 1:
        return (x.double() ** 2).sum((0, 2, 3))[None, :, None, None]
    return torch.ones(1, dtype=torch.float64)


def _snap(layers: dict[str, CodebookLayer]) -> None:
    for layer in layers.values():
        layer.snap_to_int8()
