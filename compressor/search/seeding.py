"""A warm-start configuration from per-layer quantization sensitivity.

Uniform warm starts give every layer the same bits; layers are not equally fragile. When the
space searches a quantize stage's per-layer ``bits``, ``act_bits`` or ``enabled``, the layers are
ranked by the quality lost when each alone is quantized
(:func:`compressor.stages.quantize.layer_sensitivity`) and split into as many groups as the
domain has values: the most sensitive group gets the mildest value (float, most bits), the least
sensitive the strongest. Every other variable takes the middle of its domain.
"""
from __future__ import annotations

from torch import nn

from compressor.export.targets import QUANT_RULES, QuantRules
from compressor.recipe.schema import Recipe
from compressor.search.space import Scalar, Variable
from compressor.stages.quantize import layer_sensitivity
from compressor.task import Task

#: Per-layer quantize fields, with their values ordered from mildest to strongest.
_MILD_FIRST = {"bits": lambda vs: sorted(vs, reverse=True), "act_bits": lambda vs: sorted(vs, reverse=True),
               "enabled": lambda vs: sorted(vs)}  # False (keep float) before True


def sensitivity_config(recipe: Recipe, variables: list[Variable], base: tuple[nn.Module, Task],
                       samples: int | None = 128, *, rules: QuantRules = QUANT_RULES["ort-cpu"]
                       ) -> dict[str, Scalar] | None:
    """The seeded configuration (layers quantized by the target's ``rules``), or None when no
    quantize stage is searched per layer."""
    ranked = [v for v in variables if v.layers and v.ref.layer_field in _MILD_FIRST
              and recipe.stages[v.ref.index].kind == "quantize"
              and all(isinstance(c, (int, bool)) for c in v.domain.grid())]
    if not ranked:
        return None
    model, task = base
    drops: dict[str, float] = {}
    for index in sorted({v.ref.index for v in ranked}):
        drops.update(layer_sensitivity(model, task, params=recipe.stages[index].params, samples=samples,
                                       rules=rules))
    config: dict[str, Scalar] = {v.name: v.domain.at(0.5) for v in variables}
    for key in {v.key for v in ranked}:
        group = sorted((v for v in ranked if v.key == key),
                       key=lambda v: -max(drops.get(n, 0.0) for n in v.layers))
        values = _MILD_FIRST[group[0].ref.layer_field](group[0].domain.grid())
        for i, var in enumerate(group):
            config[var.name] = values[i * len(values) // len(group)]
    return config

