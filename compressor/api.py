"""The typed Python API behind the CLI."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

from pydantic import ValidationError
from torch import nn

from compressor.checkpoint import restore
from compressor.errors import CompressorError, ExportError
from compressor.export.deploy import export_model
from compressor.export.params import ExportParams
from compressor.export.targets import TARGETS
from compressor.export_source import resolve_source
from compressor.pipeline import Pipeline
from compressor.recipe.loader import load_recipe
from compressor.recipe.schema import Recipe
from compressor.report import Report
from compressor.search.study import Search, default_run_dir

if TYPE_CHECKING:
    from compressor.export.deploy import ExportResult
    from compressor.search.report import SearchSummary


def run(recipe: Recipe | str | Path | Mapping[str, Any], *, overrides: Sequence[str] = (),
        run_dir: str | Path | None = None, overwrite: bool = False, trust_code: bool = False) -> Report:
    """Run a recipe (a :class:`Recipe`, a YAML path or a dict) and return its report.

    ``overwrite`` replaces a finished run in ``run_dir`` (never a directory this tool did not
    write); ``trust_code`` allows factories from the modules :mod:`compressor.trust` refuses.
    """
    if not isinstance(recipe, Recipe):
        recipe = load_recipe(recipe, overrides=overrides, trust_code=trust_code)
    elif overrides or trust_code != recipe.trust_code:
        recipe = load_recipe(recipe.to_dict(), overrides=overrides, trust_code=trust_code)
    return Pipeline(recipe, run_dir, overwrite=overwrite).run()


def search(recipe: Recipe | str | Path | Mapping[str, Any], *, overrides: Sequence[str] = (),
           run_dir: str | Path | None = None, storage: str | None = None, study_name: str | None = None,
           trials: int | None = None, workers: int = 1, trust_code: bool = False) -> "SearchSummary":
    """Search the recipe's ``search.space`` (see docs/search.md); returns the report's summary.

    Running it again with the same ``run_dir`` (or ``storage``) resumes the study. ``trust_code``
    allows factories from the modules :mod:`compressor.trust` refuses.
    """
    if not isinstance(recipe, Recipe) or overrides or trust_code != recipe.trust_code:
        recipe = load_recipe(recipe.to_dict() if isinstance(recipe, Recipe) else recipe, overrides=overrides,
                             trust_code=trust_code)
    search = Search(recipe, run_dir or default_run_dir(recipe), storage=storage, study_name=study_name,
                    trials=trials)
    return search.run(workers=workers) or search.report()  # a complete study: its report


def resume(run_dir: str | Path, *, trust_code: bool = False) -> Report:
    """Continue an interrupted run; finished stages are skipped."""
    return Pipeline.resume(run_dir, trust_code=trust_code).run()


def load_model(checkpoint: str | Path, *, factory: str | Callable[..., nn.Module] | None = None,
               base: nn.Module | None = None, trust_code: bool = False) -> nn.Module:
    """Rebuild a compressed model from a stage checkpoint (``RUN_DIR/checkpoints/NN-stage.pt``).

    A checkpoint of a zoo model or a Hugging Face folder rebuilds by itself. One of a model from
    your own factory needs that factory named here (``factory="pkg.mod:build"`` or the callable;
    it gets the arguments the checkpoint records), or ``base``, the uncompressed model; the
    checkpoint's own record of the factory is used only with ``trust_code=True``: loading a file
    never imports code you did not name (README, Trust model).
    """
    return restore(checkpoint, base=base, factory=factory, trust_code=trust_code)


def deploy(source: str | Path, *, target: str | None = None, out: str | Path | None = None,
           trust_code: bool = False, **params: Any) -> "ExportResult":
    """Export a run directory's last checkpoint, a recipe's model or a zoo model (``compressor export``).

    ``params`` override the recipe's export stage (e.g. ``formats=["onnx", "onnx-fp16"]``).
    Raises :class:`~compressor.errors.ExportError` when parity or TensorRT's Q/DQ rules fail;
    the bundle is written either way.
    """
    src = resolve_source(source, trust_code=trust_code)
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
