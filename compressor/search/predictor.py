"""A per-layer latency table: a cheap predictor of a configuration's latency.

Each entry is measured on the target: the recipe as written, with one variable (one layer's
sparsity, one group's bits, ...) set to one value of its grid, built without training and timed
in ONNX Runtime interleaved with the input model. An entry is the factor by which that one
change scales the latency; a configuration's prediction is the base latency times the product
of its variables' factors (linear between grid points). Factors, not differences: pruning the
output channels of one layer and the input channels of the next shrinks the conv between them
twice, which multiplies; added differences would even go negative. What the product still
misses (kernel choices, cache effects) shows as the table's error, which the search reports
against every trial it measures.
"""
from __future__ import annotations

import bisect
import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from compressor.recipe.schema import Recipe
from compressor.search.latency import (LatencyCache, LatencySettings, export_for_latency, graph_key,
                                       relative_latency)
from compressor.search.space import Scalar, Variable, current_value
from compressor.search.trial import captured, configured, for_trial, run_recipe
from compressor.task import Task


@dataclass
class LatencyTable:
    #: Latency ratio (to the input model) of the recipe as written.
    base: float
    #: Variable name -> [(value, latency factor against the base)].
    entries: dict[str, list[tuple[Scalar, float]]] = field(default_factory=dict)

    def predict(self, values: dict[str, Scalar]) -> float:
        """Predicted latency ratio of a configuration (variables absent from it change nothing)."""
        return self.base * math.prod(self.factor(name, value) for name, value in values.items())

    def factor(self, name: str, value: Scalar) -> float:
        points = self.entries.get(name, [])
        for x, f in points:
            if x == value:
                return f
        numeric = sorted((x, f) for x, f in points
                         if isinstance(x, (int, float)) and not isinstance(x, bool))
        if not numeric or not isinstance(value, (int, float)):
            return 1.0
        xs = [x for x, _ in numeric]
        if len(xs) == 1:
            return numeric[0][1]
        i = min(max(bisect.bisect_left(xs, value), 1), len(xs) - 1)
        (x0, f0), (x1, f1) = numeric[i - 1], numeric[i]
        return f0 + (f1 - f0) * (value - x0) / (x1 - x0)

    def as_dict(self) -> dict[str, Any]:
        return {"base": self.base, "entries": {k: [list(p) for p in v] for k, v in self.entries.items()}}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "LatencyTable":
        return cls(data["base"], {k: [tuple(p) for p in v] for k, v in data["entries"].items()})


def measure_table(recipe: Recipe, variables: list[Variable], base: tuple[nn.Module, Task],
                  workdir: Path, reference: Path, settings: LatencySettings,
                  cache: LatencyCache | None = None, points: int = 5) -> LatencyTable:
    """Build and time every one-variable variant of ``recipe`` (see the module docstring).

    ``base`` is the input model and its task; a value the recipe already gives a variable needs
    no run (its factor is 1).
    """
    model, task = base
    variants: dict[str, dict[str, Scalar]] = {"base": {}}
    for i, var in enumerate(variables):
        now = current_value(var, recipe, model)
        for j, value in enumerate(var.domain.grid(points)):
            if value != now:
                variants[f"v{i}_{j}"] = {var.name: value}
    graphs: dict[str, str] = {}
    paths: dict[str, Path] = {}
    folder = workdir / "table"
    folder.mkdir(parents=True, exist_ok=True)
    with captured(folder / "log.txt"):
        for name, values in variants.items():
            built, _ = run_recipe(for_trial(configured(recipe, variables, values), train=False),
                                  folder / name, base)
            path = export_for_latency(built, task, folder / f"{name}.onnx", settings)
            shutil.rmtree(folder / name)
            graphs[name] = key = graph_key(path)
            paths.setdefault(key, path)
    ratios = {key: cache.get(key) for key in paths} if cache else {}
    todo = {key: path for key, path in paths.items() if ratios.get(key) is None}
    if todo:
        measured = relative_latency(todo, reference, task.example_inputs(settings.batch), settings)
        for key, (ratio, _) in measured.items():
            ratios[key] = ratio
            if cache is not None:
                cache.put(key, ratio)
    base = ratios[graphs["base"]]
    table = LatencyTable(base)
    for i, var in enumerate(variables):
        table.entries[var.name] = [(value, ratios[graphs.get(f"v{i}_{j}", graphs["base"])] / base)
                                   for j, value in enumerate(var.domain.grid(points))]
    return table
