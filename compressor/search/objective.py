"""One trial: sampled choices become a recipe, which is measured on the target and run cheaply.

A trial has two phases. The *architecture* phase runs the stages with all training switched
off: what it builds already has the final graph, so its latency (ONNX Runtime, interleaved with
the input model) and size are exact, and a trial that breaks the budget stops here, before any
training. The *quality* phase runs the stages with the cheap caps (short fine-tunes, an eval
subset) and reports the quality after each stage to Optuna's pruner.
"""
from __future__ import annotations

import os
import shutil
import socket
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
from torch import nn

from compressor.errors import CompressorError
from compressor.recipe.schema import Recipe
from compressor.recipe.space import SearchSpec
from compressor.search.crash import crash_point
from compressor.search.latency import (LatencyCache, LatencySettings, export_for_latency, graph_key,
                                       relative_latency)
from compressor.search.predictor import LatencyTable
from compressor.search.space import Scalar, Variable, sample
from compressor.search.trial import captured, configured, for_trial, run_recipe
from compressor.search.twins import earlier_twin
from compressor.task import Task

if TYPE_CHECKING:
    from compressor.search.workers import Recovery


# --------------------------------------------------------------------------- the objective
@dataclass(frozen=True)
class Baseline:
    """The input model, measured once per study: every ratio is relative to it."""

    quality: float
    latency_ms: float
    size_bytes: int


@dataclass
class Measured:
    latency_ratio: float | None = None
    latency_ms: float | None = None
    latency_predicted: float | None = None
    size_bytes: int | None = None
    graph: str | None = None


class SurplusTrial(Exception):
    """Raised when other workers already started the study's last trials (the trial is dropped)."""


#: Trial states that use up the study's trial budget (see :func:`counted`).
_COUNTED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED,
            optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.WAITING)


def counted(trials: list[optuna.trial.FrozenTrial]) -> list[optuna.trial.FrozenTrial]:
    """Trials that count toward ``search.trials``: finished, running or queued. Stale trials of
    dead workers (retried as new trials) and surplus trials (FAIL) don't count."""
    return [t for t in trials if t.state in _COUNTED]


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class Objective:
    """The callable Optuna runs: see the module docstring for its two phases."""

    def __init__(self, study: optuna.Study, recipe: Recipe, spec: SearchSpec, variables: list[Variable],
                 baseline: Baseline, workdir: Path, reference: Path, base: tuple[nn.Module, Task],
                 table: LatencyTable | None, settings: LatencySettings, recover: "Recovery") -> None:
        self.study = study
        self.recover = recover  # run while waiting on another worker's trial (see search/twins.py)
        self.recipe, self.spec, self.variables = recipe, spec, variables
        self.baseline, self.workdir, self.reference = baseline, workdir, reference
        self.base, self.task = base, base[1]
        self.table = table
        self.settings = settings

    # ------------------------------------------------------------------ entry point
    def __call__(self, trial: optuna.Trial) -> float | tuple[float, ...]:
        self._check_surplus(trial)
        values = sample(trial, self.variables)
        config = configured(self.recipe, self.variables, values, self.spec.cheap)
        digest = config.digest()
        trial.set_user_attr("config", digest)
        duplicate = earlier_twin(self.study, trial.number, digest, self.recover)
        if duplicate is not None:
            return self._copy(trial, duplicate)
        crash_point("evaluating", trial.number)
        trial_dir = self.workdir / "trials" / f"{trial.number:04d}"
        if trial_dir.exists():
            shutil.rmtree(trial_dir)
        trial_dir.mkdir(parents=True)
        trial.set_user_attr("dir", str(trial_dir))
        try:
            with captured(trial_dir / "log.txt"):
                return self._evaluate(trial, values, config, trial_dir)
        except CompressorError as exc:
            # The configuration cannot be built (say, every layer of a stage switched off): an
            # infeasible trial, which the sampler learns to avoid, rather than a failure it ignores.
            trial.set_user_attr("error", str(exc))
            trial.set_constraint("buildable", 1.0)
            raise optuna.TrialPruned(str(exc)) from None
        finally:
            if not self.spec.keep_checkpoints:
                for ckpt in trial_dir.rglob("*.pt"):
                    ckpt.unlink()

    def _evaluate(self, trial: optuna.Trial, values: dict[str, Scalar], config: Recipe,
                  trial_dir: Path) -> float | tuple[float, ...]:
        measured = Measured()
        if self.table is not None:
            measured.latency_predicted = self.table.predict(values)
        model, rows = run_recipe(for_trial(config, train=False), trial_dir / "architecture", self.base)
        measured.size_bytes = int(rows[-1]["size_bytes"])
        self._latency(model, trial_dir / "architecture.onnx", measured)
        if self.spec.skip_infeasible and self._violation(measured) > 0:
            self._record(trial, measured)
            raise optuna.TrialPruned("breaks the budget before training")

        trial_recipe = for_trial(config)
        # Optuna cannot prune multi-objective trials, and after the last stage there is nothing
        # left to save: the quality after each earlier stage goes to the pruner.
        last = len(trial_recipe.stages) - 1
        report_quality = self.spec.objectives == ["quality"] and self.spec.pruner != "none"

        def on_stage(index: int, spec: Any, row: dict[str, Any], ctx: Any) -> None:
            if report_quality and index < last:
                trial.report(row["quality"], step=index)
                if trial.should_prune():
                    self._record(trial, measured)
                    raise optuna.TrialPruned(f"quality {row['quality']:.4f} after {spec.name}")

        model, rows = run_recipe(trial_recipe, trial_dir / "run", self.base, on_stage)
        measured.size_bytes = int(rows[-1]["size_bytes"])
        self._latency(model, trial_dir / "model.onnx", measured)
        quality = float(rows[-1]["quality"])
        trial.set_user_attr("quality", quality)
        self._record(trial, measured)
        return self._values(quality, measured)

    # ------------------------------------------------------------------ phases
    def _latency(self, model: nn.Module, path: Path, measured: Measured) -> None:
        """Fill in latency: from the table, the study's cache (same graph), or a measurement."""
        if self.spec.latency_source == "table":
            assert measured.latency_predicted is not None
            measured.latency_ratio = measured.latency_predicted
        else:
            export_for_latency(model, self.task, path, self.settings)
            key = graph_key(path)
            if key != measured.graph:
                measured.graph = key
                cache = LatencyCache(self.study)
                ratio = cache.get(key)
                if ratio is None:
                    ratio, _ = relative_latency({"trial": path}, self.reference,
                                                self.task.example_inputs(self.settings.batch),
                                                self.settings)["trial"]
                    cache.put(key, ratio)
                measured.latency_ratio = ratio
        measured.latency_ms = measured.latency_ratio * self.baseline.latency_ms

    # ------------------------------------------------------------------ budget and results
    def _violation(self, m: Measured) -> float:
        """Largest relative budget overshoot (<= 0: within budget)."""
        budget, base = self.spec.budget, self.baseline
        if budget is None:
            return -1.0
        over = []
        if budget.latency_ratio is not None:
            over.append(m.latency_ratio / budget.latency_ratio - 1)
        if budget.latency_ms is not None:
            over.append(m.latency_ms / budget.latency_ms - 1)
        if budget.size_ratio is not None:
            over.append(m.size_bytes / base.size_bytes / budget.size_ratio - 1)
        if budget.size_bytes is not None:
            over.append(m.size_bytes / budget.size_bytes - 1)
        return max(over, default=-1.0)

    def _record(self, trial: optuna.Trial, m: Measured) -> None:
        attrs = {k: v for k, v in asdict(m).items() if v is not None}
        if m.size_bytes is not None:
            attrs["size_ratio"] = m.size_bytes / self.baseline.size_bytes
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
        if self.spec.budget is not None:
            trial.set_constraint("budget", self._violation(m))

    def _values(self, quality: float, m: Measured) -> float | tuple[float, ...]:
        by_name = {"quality": quality, "latency": m.latency_ms, "size": float(m.size_bytes)}
        values = tuple(by_name[o] for o in self.spec.objectives)
        return values[0] if len(values) == 1 else values

    # ------------------------------------------------------------------ bookkeeping
    def _check_surplus(self, trial: optuna.Trial) -> None:
        """Drop this trial when, by start time, the study's budget was already used up."""
        started = [t for t in counted(self.study.get_trials(deepcopy=False))
                   if t.state != optuna.trial.TrialState.WAITING and t.datetime_start is not None]
        started.sort(key=lambda t: (t.datetime_start, t.number))
        if trial.number in {t.number for t in started[self.spec.trials:]}:
            trial.set_user_attr("surplus", True)
            raise SurplusTrial(f"trial {trial.number}: the study already has {self.spec.trials} trials")

    def _copy(self, trial: optuna.Trial, twin: optuna.trial.FrozenTrial) -> float | tuple[float, ...]:
        """A configuration evaluated before: reuse its results instead of running it again."""
        for key, value in twin.user_attrs.items():
            if key not in ("worker", "config", "dir"):
                trial.set_user_attr(key, value)
        trial.set_user_attr("duplicate_of", twin.number)
        for key, value in twin.constraints.items():
            trial.set_constraint(key, value)
        if twin.state == optuna.trial.TrialState.PRUNED:
            raise optuna.TrialPruned(f"same configuration as trial {twin.number}")
        return twin.values[0] if len(twin.values) == 1 else tuple(twin.values)
