"""The typed Python API behind the CLI."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from pydantic import ValidationError
from torch import nn

from compressor.errors import CompressorError
from compressor.recipe import Recipe, load_recipe
from compressor.report import Report

if TYPE_CHECKING:
    from compressor.export.deploy import ExportResult
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
    search = Search(recipe, run_dir or default_run_dir(recipe), storage=storage, study_name=study_name,
                    trials=trials)
    return search.run(workers=workers) or search.report()  # a complete study: its report


def resume(run_dir: str | Path) -> Report:
    """Continue an interrupted run; finished stages are skipped."""
    from compressor.pipeline import Pipeline

    return Pipeline.resume(run_dir).run()


def load_model(checkpoint: str | Path) -> nn.Module:
    """Rebuild a compressed model from a stage checkpoint (``RUN_DIR/checkpoints/NN-stage.pt``)."""
    from compressor.checkpoint import restore

    return restore(checkpoint)


def deploy(source: str | Path, *, target: str | None = None, out: str | Path | None = None,
           **params: Any) -> "ExportResult":
    """Export a run directory's last checkpoint, a recipe's model or a zoo model (``compressor export``).

    ``params`` override the recipe's export stage (e.g. ``formats=["onnx", "onnx-fp16"]``).
    Raises :class:`~compressor.errors.ExportError` when parity or TensorRT's Q/DQ rules fail;
    the bundle is written either way.
    """
    from compressor.errors import ExportError
    from compressor.export.deploy import export_model
    from compressor.export.targets import TARGETS
    from compressor.export_source import resolve_source
    from compressor.stages.export import ExportParams

    src = resolve_source(source)
    name = target or src.recipe.target
    if name not in TARGETS:
        raise CompressorError(f"--target: unknown target {name!r}; known: {', '.join(sorted(TARGETS))}")
    merged = src.params.model_dump()
    for key, value in params.items():
        merged[key] = {**merged[key], **value} if isinstance(value, dict) else value
    try:
        export_params = ExportParams.model_validate(merged)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise CompressorError(f"export option {'.'.join(map(str, err['loc']))}: {err['msg']}") from None
    result = export_model(src.model, src.task, TARGETS[name], Path(out) if out else src.default_out,
                          export_params, provenance=src.provenance, report=src.recipe.report)
    if result.failures:
        raise ExportError(result.failure_message())
    return result
