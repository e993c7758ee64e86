"""What `compressor export` exports: a run's last checkpoint, a recipe's input model or a zoo model.

Each source yields the model, its Task (held-out inputs for parity and quality), the target, the
export settings (the recipe's export stage, if it has one) and provenance for the manifest.
"""
from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from compressor.checkpoint import read_records, restore
from compressor.errors import CompressorError
from compressor.export.deploy import Provenance
from compressor.export.params import ExportParams
from compressor.pipeline import build_task, seed_everything
from compressor.recipe.loader import load_recipe
from compressor.recipe.schema import Recipe
from compressor.rundir import RUN_STATE, default_run_dir
from compressor.sources import load_model
from compressor.task import Task
from compressor.zoo import MODELS


@dataclass
class ExportSource:
    name: str
    model: nn.Module
    task: Task
    recipe: Recipe
    params: ExportParams
    provenance: Provenance
    #: The deploy directory used when none is given.
    default_out: Path


def resolve_source(source: str | Path, *, trust_code: bool = False) -> ExportSource:
    """A run directory, a recipe file or a zoo model name -> what to export.

    A run directory's recipe.yaml is a recipe: ``trust_code`` as for :func:`load_recipe`."""
    path = Path(source)
    if path.is_dir():
        if not (path / RUN_STATE).is_file():
            raise CompressorError(f"{path}: not a run directory (no {RUN_STATE}); give a run directory, "
                                  "a recipe file or a zoo model name")
        return _from_run(path, trust_code=trust_code)
    if path.is_file():
        return _from_recipe(load_recipe(path, trust_code=trust_code), label=path.stem)
    if str(source) in MODELS:
        return _from_recipe(load_recipe({"name": str(source), "model": {"zoo": str(source)}}),
                            label=str(source))
    raise CompressorError(f"{source}: no such run directory or recipe file, and not a zoo model "
                          f"(known: {', '.join(sorted(MODELS))})")


def _from_run(run_dir: Path, *, trust_code: bool) -> ExportSource:
    recipe = load_recipe(run_dir / "recipe.yaml", trust_code=trust_code)
    state = json.loads((run_dir / RUN_STATE).read_text())
    seed_everything(recipe.seed)
    original = load_model(recipe.model, trust_code=recipe.trust_code)
    task = build_task(recipe, original)
    done = [s for s in state["stages"] if s.get("status") == "done" and s.get("checkpoint")]
    if done:
        ckpt = run_dir / done[-1]["checkpoint"]
        model = restore(ckpt, base=copy.deepcopy(original))
        stages = [{"name": r.name, "kind": r.kind} for r in read_records(ckpt)]
    else:
        model, stages = original, []
    provenance = Provenance(recipe_hash=state.get("recipe_hash"), stages=stages, recipe=recipe.name)
    return ExportSource(recipe.name or run_dir.name, model, task, recipe, _params(recipe), provenance,
                        run_dir / "deploy")


def _from_recipe(recipe: Recipe, *, label: str) -> ExportSource:
    seed_everything(recipe.seed)
    model = load_model(recipe.model, trust_code=recipe.trust_code)
    task = build_task(recipe, model)
    provenance = Provenance(recipe_hash=recipe.digest(), stages=[], recipe=recipe.name)
    name = recipe.name or label
    return ExportSource(name, model, task, recipe, _params(recipe), provenance,
                        default_run_dir(name, "-export") / "deploy")


def _params(recipe: Recipe) -> ExportParams:
    """The recipe's export stage settings (the last export stage), else the defaults."""
    specs = [s for s in recipe.stages if s.kind == "export"]
    return copy.deepcopy(specs[-1].params) if specs else ExportParams()
