"""The typed Python API behind the CLI."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from torch import nn

from compressor.recipe import Recipe, load_recipe
from compressor.report import Report

if TYPE_CHECKING:
    from compressor.search.report import SearchSummary


def run(recipe: Recipe | str | Path | Mapping[str, Any], *, overrides: Sequence[str] = (),
        run_dir: str | Path | None = None, overwrite: bool = False) -> Report:
    """Run a recipe (a :class:`Recipe`, a YAML path or a dict) and return its report."""
    from compressor.pipeline import Pipeline

    if not isinstance(recipe, Recipe):
        recipe = load_recipe(recipe, overrides=overrides)
    elif overrides:
        recipe = load_recipe(recipe.to_dict(), overrides=overrides)
    return Pipeline(recipe, run_dir, overwrite=overwrite).run()


def search(recipe: Recipe | str | Path | Mapping[str, Any], *, overrides: Sequence[str] = (),
           run_dir: str | Path | None = None, storage: str | None = None, study_name: str | None = None,
           trials: int | None = None, workers: int = 1) -> "SearchSummary":
    """Search the recipe's ``search.space`` (see docs/search.md); returns the report's summary.

    Running it again with the same ``run_dir`` (or ``storage``) resumes the study.
    """
    from compressor.search.study import Search, default_run_dir

    if not isinstance(recipe, Recipe) or overrides:
        recipe = load_recipe(recipe.to_dict() if isinstance(recipe, Recipe) else recipe, overrides=overrides)
    return Search(recipe, run_dir or default_run_dir(recipe), storage=storage, study_name=study_name,
                  trials=trials).run(workers=workers)


def resume(run_dir: str | Path) -> Report:
    """Continue an interrupted run; finished stages are skipped."""
    from compressor.pipeline import Pipeline

    return Pipeline.resume(run_dir).run()


def load_model(checkpoint: str | Path) -> nn.Module:
    """Rebuild a compressed model from a stage checkpoint (``RUN_DIR/checkpoints/NN-stage.pt``)."""
    from compressor.checkpoint import restore

    return restore(checkpoint)
