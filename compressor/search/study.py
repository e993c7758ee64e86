"""The persistent study: storage, the set-up every worker shares, and the worker loop.

Every worker (a process started by ``--workers N``, or the same command on another machine
pointed at the same ``--storage``) opens the one study, does the set-up once for all (input
model latency, latency table, warm-start trials; kept in the study's attributes) and then takes
trials until the study holds ``search.trials`` of them, and waits for the other workers' running
trials before it leaves, so that the report it writes is complete. A worker that dies mid-trial
leaves a RUNNING trial behind, which the others fail and re-queue (search/workers.py).
"""
from __future__ import annotations

import subprocess
import sys
import time
import warnings
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import optuna
import torch
import yaml
from optuna.trial import TrialState

from compressor.errors import CompressorError
from compressor.export.bench import ort_latency
from compressor.export.targets import get_target
from compressor.io import write_text
from compressor.metrics import storage_bytes
from compressor.pipeline import build_task, seed_everything
from compressor.recipe.loader import load_recipe
from compressor.recipe.schema import Recipe
from compressor.recipe.space import SearchSpec
from compressor.search.latency import LatencyCache, LatencySettings, export_for_latency
from compressor.search.objective import Baseline, Objective, SurplusTrial, counted, worker_id
from compressor.search.predictor import LatencyTable, measure_table
from compressor.search.report import write_report
from compressor.search.seeding import sensitivity_config
from compressor.search.space import resolve, warm_start_configs
from compressor.search.storage import open_storage, shown, storage_url
from compressor.search.trial import configured
from compressor.search.workers import Owned, Recovery, retry_stale, was_retried
from compressor.sources import load_model

if TYPE_CHECKING:
    from compressor.search.report import SearchSummary

#: Seconds between heartbeats of a running trial (RDB storages); stale after three missed.
HEARTBEAT_S = 20
#: Seconds between looks at the study while other workers' trials finish.
POLL_S = 1.0
RECIPE_FILE = "search_recipe.yaml"
_DIRECTIONS = {"quality": "maximize", "latency": "minimize", "size": "minimize"}


def default_run_dir(recipe: Recipe) -> Path:
    """``runs/<name>-search``: stable, so running the same command again resumes the study."""
    stem = recipe.name or (recipe.source.stem if recipe.source else "recipe")
    return Path("runs") / f"{stem}-search"


def _search_hash(recipe: Recipe) -> str:
    """What must not change between workers of one study (the trial count may grow)."""
    data = recipe.to_dict()
    data["search"].pop("trials", None)
    return load_recipe(data, trust_code=recipe.trust_code).digest()


class Search:
    """One worker's view of a study; :meth:`run` is what `compressor search` does."""

    def __init__(self, recipe: Recipe, run_dir: str | Path, *, storage: str | None = None,
                 study_name: str | None = None, trials: int | None = None, torch_threads: int | None = None,
                 heartbeat: int | None = None, log: Callable[[str], None] = print) -> None:
        if recipe.search is None:
            raise CompressorError("the recipe has no 'search:' section; see docs/search.md")
        heartbeat = HEARTBEAT_S if heartbeat is None else heartbeat
        if heartbeat < 1:
            raise CompressorError(f"--heartbeat must be at least 1 second (got {heartbeat})")
        self.recipe = load_recipe(recipe.to_dict(), trust_code=recipe.trust_code)
        self.spec: SearchSpec = self.recipe.search
        if trials is not None:
            self.spec.trials = trials
        self.run_dir = Path(run_dir)
        self.url = storage_url(storage, self.run_dir)
        self.study_name = study_name or self.recipe.name or "search"
        self.target = get_target(self.recipe.target)
        self.settings = LatencySettings.of(self.recipe, self.target)
        self.torch_threads = torch_threads
        self.heartbeat = heartbeat
        self.log = log
        # A trial silent for three heartbeats, or ownerless that long, belongs to a dead worker.
        self.recovery = Recovery(grace_s=3 * heartbeat, heartbeats="://" in self.url, log=log)
        self.study: optuna.Study | None = None
        self._objective: Objective | None = None

    # ------------------------------------------------------------------ set-up
    def open(self) -> optuna.Study:
        """Open the study, or create it: of workers starting at once, exactly one creates it."""
        if self.study is not None:
            return self.study
        self.run_dir.mkdir(parents=True, exist_ok=True)
        write_text(self.run_dir / RECIPE_FILE, yaml.safe_dump(self.recipe.to_dict(), sort_keys=False))
        optuna.logging.set_verbosity(optuna.logging.ERROR)  # trials print their own line
        storage = open_storage(self.url, heartbeat_s=self.heartbeat, on_stale=retry_stale)
        seed = self.spec.seed if self.spec.seed is not None else self.recipe.seed
        try:
            study = optuna.create_study(storage=storage, study_name=self.study_name,
                                        directions=[_DIRECTIONS[o] for o in self.spec.objectives],
                                        sampler=self._sampler(seed), pruner=self._pruner())
        except optuna.exceptions.DuplicatedStudyError:
            # A joining or resuming worker must not replay the samples of the one that created it.
            seed += zlib.crc32(worker_id().encode())
            study = optuna.load_study(study_name=self.study_name, storage=storage,
                                      sampler=self._sampler(seed), pruner=self._pruner())
        digest = _search_hash(self.recipe)
        known = study.user_attrs.get("recipe_hash")
        if known is not None and known != digest:
            raise CompressorError(
                f"study {self.study_name!r} in {shown(self.url)} was made from a different recipe or "
                "search space; use another --out, --storage or --study-name to start a new study")
        if known is None:
            study.set_user_attr("recipe_hash", digest)
        self.study = study
        return study

    def complete(self) -> bool:
        """Whether the study holds ``search.trials`` finished trials and none is running."""
        trials = self.open().get_trials(deepcopy=False)
        finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
        return len(finished) >= self.spec.trials and not any(t.state == TrialState.RUNNING for t in trials)

    def prepare(self) -> optuna.Study:
        """Open (or create) the study and do the shared set-up that is not done yet."""
        if self.torch_threads:
            torch.set_num_threads(self.torch_threads)
        study = self.open()
        seed_everything(self.recipe.seed)  # as the pipeline does: a randomly initialised model is the same
        original = load_model(self.recipe.model)
        variables = resolve(self.spec, self.recipe, original)
        cheap = configured(self.recipe, variables, {}, self.spec.cheap)
        task = build_task(cheap, original)
        reference = self.run_dir / "reference.onnx"
        export_for_latency(original, task, reference, self.settings)
        attrs = study.user_attrs
        if "baseline" not in attrs:
            self.log("measuring the input model ...")
            baseline = Baseline(quality=task.evaluate(original), latency_ms=self._reference_ms(reference, task),
                                size_bytes=storage_bytes(original))
            study.set_user_attr("baseline", vars(baseline))
        baseline = Baseline(**study.user_attrs["baseline"])
        table = None
        if self.spec.latency_table:
            if "latency_table" not in attrs:
                self.log(f"measuring the per-layer latency table ({len(variables)} variables) ...")
                table = measure_table(self.recipe, variables, (original, task), self.run_dir, reference,
                                      self.settings, LatencyCache(study))
                study.set_user_attr("latency_table", table.as_dict())
            table = LatencyTable.from_dict(study.user_attrs["latency_table"])
        if "warm_start" not in attrs:
            for config in warm_start_configs(self.spec, variables):
                study.enqueue_trial(config, user_attrs={"warm_start": "uniform"}, skip_if_exists=True)
            seeded = (sensitivity_config(self.recipe, variables, (original, task), self.spec.cheap.eval_samples,
                                         rules=self.target.rules)
                      if self.spec.sensitivity_seed else None)
            if seeded is not None:
                study.enqueue_trial(seeded, user_attrs={"warm_start": "sensitivity"}, skip_if_exists=True)
            study.set_user_attr("warm_start", True)
        self.study, self.variables, self.baseline, self.table = study, variables, baseline, table
        self.task, self.reference = task, reference
        self._objective = Objective(study, self.recipe, self.spec, variables, baseline, self.run_dir,
                                    reference, (original, task), table, self.settings, self.recovery)
        return study

    def _reference_ms(self, reference: Path, task: Any) -> float:
        settings = self.settings
        return ort_latency(str(reference), task.example_inputs(settings.batch), threads=settings.threads,
                           warmup=settings.warmup, iterations=settings.iterations * settings.rounds).p50_ms

    def _sampler(self, seed: int) -> optuna.samplers.BaseSampler:
        if self.spec.sampler == "nsga2":
            return optuna.samplers.NSGAIISampler(population_size=self.spec.population, seed=seed)
        if self.spec.sampler == "random":
            return optuna.samplers.RandomSampler(seed=seed)
        # multivariate + group: models the per-layer variables jointly, conditional ones apart;
        # constant_liar: parallel workers don't all sample next to the same running trial.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.TPESampler(n_startup_trials=self.spec.startup_trials, seed=seed,
                                              multivariate=True, group=True, constant_liar=True)

    def _pruner(self) -> optuna.pruners.BasePruner:
        if self.spec.multi_objective or self.spec.pruner == "none":
            return optuna.pruners.NopPruner()
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=0)

    # ------------------------------------------------------------------ trials
    def work(self) -> None:
        """Take trials until the study holds ``search.trials`` of them, then wait until no trial
        runs: another worker's may finish, or die and be re-queued for this one to take."""
        assert self._objective is not None, "call prepare() first"
        objective = Owned(self._objective)
        waiting_for: list[int] = []
        while True:
            self.recovery(self.study)
            trials = self.study.get_trials(deepcopy=False)
            started = [t for t in counted(trials) if t.state != TrialState.WAITING]
            running = [t.number for t in trials if t.state == TrialState.RUNNING and self.recovery.watches(t)]
            if len(started) < self.spec.trials:
                self._take(objective)
            elif running:
                if running != waiting_for:
                    self.log(f"waiting for trial(s) {', '.join(map(str, running))} of other workers")
                    waiting_for = running
                time.sleep(POLL_S)
            else:
                return

    def _take(self, objective: Owned) -> None:
        objective.trial = None
        try:
            self.study.optimize(objective, n_trials=1, catch=(CompressorError, SurplusTrial),
                                callbacks=[self._announce])
        except (ValueError, optuna.exceptions.UpdateFinishedTrialError):
            # Optuna cannot tell a trial that another worker failed meanwhile: one that took this
            # worker for dead (a heartbeat or owner write later than the grace) and re-queued it.
            if objective.trial is None or not was_retried(self.study, objective.trial):
                raise
            self.log(f"trial {objective.trial:3d}  taken over by another worker (this one was too slow to "
                     "answer); its retry runs it again")

    def _announce(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        a = trial.user_attrs
        if a.get("surplus"):
            return
        parts = [f"trial {trial.number:3d}"]
        if "latency_ratio" in a:
            parts.append(f"latency {a['latency_ratio']:.3f}x ({a['latency_ms']:.3f} ms)")
        if "size_ratio" in a:
            parts.append(f"size {a['size_ratio']:.3f}x")
        if "quality" in a:
            parts.append(f"quality {a['quality']:.4f}")
        if "error" in a:
            parts.append(f"cannot be built: {a['error']}")
        elif trial.state == TrialState.PRUNED:
            if any(v > 0 for v in trial.constraints.values()):
                parts.append("stopped: over budget")
            else:
                step = trial.last_step
                parts.append(f"stopped: quality {trial.intermediate_values[step]:.4f} after stage "
                             f"{step + 1}, below the median" if step is not None else "stopped")
        elif trial.state == TrialState.FAIL:
            parts.append("failed: see the log")
        elif any(v > 0 for v in trial.constraints.values()):
            parts.append("over budget")
        if "duplicate_of" in a:
            parts.append(f"(same as trial {a['duplicate_of']})")
        self.log("  ".join(parts))

    def run(self, workers: int = 1, report: bool = True) -> "SearchSummary | None":
        """Set up, take trials with ``workers`` processes, and write the report (if asked).
        None, at once, when the study is already complete."""
        if self.complete():
            self.log(f"study {self.study_name!r} in {shown(self.url)} already holds its {self.spec.trials} "
                     "finished trials: nothing to do (--trials N extends it, --report-only rewrites the report)")
            return None
        self.prepare()
        self.recovery.children = [self._spawn() for _ in range(workers - 1)]
        try:
            self.work()
        finally:
            self.recovery.reap(wait=True)
        return self.report() if report else None

    def report(self) -> "SearchSummary":
        """Write the report of the study as it is (see search/report.py)."""
        if self._objective is None:
            self.prepare()
        return write_report(self)

    def _spawn(self) -> subprocess.Popen:
        """Another worker process on this study (same recipe file, storage and study name)."""
        cmd = [sys.executable, "-m", "compressor.cli", "search", str(self.run_dir / RECIPE_FILE),
               "--out", str(self.run_dir), "--storage", self.url, "--study-name", self.study_name,
               "--trials", str(self.spec.trials), "--heartbeat", str(self.heartbeat), "--no-report"]
        if self.torch_threads:
            cmd += ["--torch-threads", str(self.torch_threads)]
        if self.recipe.trust_code:
            cmd.append("--trust-code")
        return subprocess.Popen(cmd)
