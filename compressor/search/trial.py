"""The recipe a trial stands for, and running it.

A trial's sampled values are written into the search recipe (:func:`configured`, which is what
``best.yaml`` holds); what a trial actually runs is that recipe cut to the stages that change the
model, with the cheap caps applied (:func:`for_trial`), executed by the ordinary pipeline.
"""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Iterator

from pydantic import BaseModel
from torch import nn

from compressor.pipeline import Pipeline
from compressor.recipe.loader import load_recipe
from compressor.recipe.schema import Recipe
from compressor.recipe.space import CheapSpec
from compressor.search.space import Scalar, Variable, apply
from compressor.stages import STAGES
from compressor.task import Task
from compressor.train import TrainParams


def configured(recipe: Recipe, variables: list[Variable], values: dict[str, Scalar],
               cheap: CheapSpec | None = None) -> Recipe:
    """The recipe a trial stands for (what ``best.yaml`` holds): values written in, caps applied."""
    out = load_recipe(apply(recipe, variables, values), trust_code=recipe.trust_code)
    for spec in out.stages:  # the searched per-layer bits are the placement: no timing in trials
        if getattr(spec.params, "placement", None) == "auto":
            spec.params.placement = "all"
    if cheap is not None:
        for params in train_params(out):
            if cheap.epochs is not None:
                params.epochs = min(params.epochs, cheap.epochs)
            if cheap.max_steps_per_epoch is not None:
                params.max_steps_per_epoch = min(params.max_steps_per_epoch or cheap.max_steps_per_epoch,
                                                 cheap.max_steps_per_epoch)
        if cheap.eval_samples is not None:
            out.data.eval_samples = min(out.data.eval_samples or cheap.eval_samples, cheap.eval_samples)
    return out


def for_trial(recipe: Recipe, *, train: bool = True) -> Recipe:
    """What a trial runs: only stages that change the model, no per-stage latency.

    ``train=False`` gives the architecture phase: every training inside the stages is set to
    zero epochs and quality is evaluated on one batch (it is not used).
    """
    out = load_recipe(recipe.to_dict(), trust_code=recipe.trust_code)
    out.stages = [s for s in out.stages if STAGES[s.kind].changes_model]
    out.report.latency = "off"
    if not train:
        for params in train_params(out):
            params.epochs = 0
        out.data.eval_samples = out.data.batch_size
    return out


def train_params(recipe: Recipe) -> Iterator[TrainParams]:
    """Every :class:`TrainParams` inside the stages (a finetune stage, a prune stage's finetune)."""
    def walk(obj: Any) -> Iterator[TrainParams]:
        if isinstance(obj, TrainParams):
            yield obj
        if isinstance(obj, BaseModel):
            for name in type(obj).model_fields:
                yield from walk(getattr(obj, name))
        elif isinstance(obj, (list, tuple)):
            for item in obj:
                yield from walk(item)

    for spec in recipe.stages:
        yield from walk(spec.params)


def run_recipe(recipe: Recipe, run_dir: Path, base: tuple[nn.Module, Task], on_stage: Any = None
               ) -> tuple[nn.Module, list[dict[str, Any]]]:
    """Run ``recipe`` into ``run_dir`` on ``base`` (the input model and its task, built once per
    worker): the final model and the report's metrics rows."""
    final: dict[str, nn.Module] = {}

    def hook(index: int, spec: Any, row: dict[str, Any], ctx: Any) -> None:
        final["model"] = ctx.model
        if on_stage is not None:
            on_stage(index, spec, row, ctx)

    report = Pipeline(recipe, run_dir, overwrite=True, on_stage=hook, light=True, base=base).run()
    return final.get("model", base[0]), report.rows  # the input model when no stage changed it


@contextlib.contextmanager
def captured(path: Path) -> Iterator[None]:
    """Send the stages' progress output to the trial's log instead of the terminal."""
    with open(path, "a") as log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        yield
