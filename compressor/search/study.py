"""The persistent study: storage, the set-up every worker shares, and the worker loop.

Every worker (a process started by ``--workers N``, or the same command on another machine
pointed at the same ``--storage``) opens the one study, does the set-up once for all (input
model latency, latency table, warm-start trials; kept in the study's attributes) and then takes
trials until the study holds ``search.trials`` of them. A worker killed mid-trial leaves a
RUNNING trial behind: a worker on the same host fails and re-queues it at once (its process is
gone), and RDB storages also catch it from other hosts by Optuna's heartbeat.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import warnings
import zlib
from pathlib import Path
from typing import Any, Callable

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
from compressor.search.trial import configured
from compressor.sources import load_model

#: Seconds between heartbeats of a running trial (RDB storages); stale after three missed.
HEARTBEAT_S = 20
#: How often a trial of a dead worker is re-queued before it is given up.
MAX_RETRY = 2
RECIPE_FILE = "search_recipe.yaml"
_DIRECTIONS = {"quality": "maximize", "latency": "minimize", "size": "minimize"}


def default_run_dir(recipe: Recipe) -> Path:
    """``runs/<name>-search``: stable, so running the same command again resumes the study."""
    stem = recipe.name or (recipe.source.stem if recipe.source else "recipe")
    return Path("runs") / f"{stem}-search"


def storage_url(storage: str | None, run_dir: Path) -> str:
    """The storage to use: ``--storage`` as given, else SQLite in the run directory."""
    return storage or f"sqlite:///{(run_dir / 'study.db').resolve()}"


def open_storage(url: str) -> optuna.storages.BaseStorage:
    """An RDB URL (``sqlite:///``, ``postgresql://``, ``mysql://``) or a journal file path."""
    if "://" not in url:
        from optuna.storages.journal import JournalFileBackend

        Path(url).parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.JournalStorage(JournalFileBackend(url))
    engine = {"connect_args": {"timeout": 120}} if url.startswith("sqlite") else None
    try:
        with warnings.catch_warnings():  # heartbeats are "experimental" since Optuna 2.8
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(
                url, engine_kwargs=engine, heartbeat_interval=HEARTBEAT_S, grace_period=3 * HEARTBEAT_S,
                heartbeat_stale_trial_callback=_retry())
    except ImportError as exc:
        raise CompressorError(f"--storage {url}: the database driver is missing ({exc}); install it, "
                              "e.g. `pip install 'psycopg[binary]'` and use postgresql+psycopg://") from None
    except Exception as exc:  # sqlalchemy raises many kinds for bad URLs and unreachable servers
        raise CompressorError(f"--storage {url}: cannot open the study storage ({exc})") from None


def _search_hash(recipe: Recipe) -> str:
    """What must not change between workers of one study (the trial count may grow)."""
    data = recipe.to_dict()
    data["search"].pop("trials", None)
    return load_recipe(data).digest()


class Search:
    """One worker's view of a study; :meth:`run` is what `compressor search` does."""

    def __init__(self, recipe: Recipe, run_dir: str | Path, *, storage: str | None = None,
                 study_name: str | None = None, trials: int | None = None, torch_threads: int | None = None,
                 log: Callable[[str], None] = print) -> None:
        if recipe.search is None:
            raise CompressorError("the recipe has no 'search:' section; see docs/search.md")
        self.recipe = load_recipe(recipe.to_dict())
        self.spec: SearchSpec = self.recipe.search
        if trials is not None:
            self.spec.trials = trials
        self.run_dir = Path(run_dir)
        self.url = storage_url(storage, self.run_dir)
        self.study_name = study_name or self.recipe.name or "search"
        self.target = get_target(self.recipe.target)
        self.settings = LatencySettings.of(self.recipe, self.target)
        self.torch_threads = torch_threads
        self.log = log
        self._objective: Objective | None = None

    # ------------------------------------------------------------------ set-up
    def prepare(self) -> optuna.Study:
        """Open (or create) the study and do the shared set-up that is not done yet."""
        if self.torch_threads:
            torch.set_num_threads(self.torch_threads)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        write_text(self.run_dir / RECIPE_FILE, yaml.safe_dump(self.recipe.to_dict(), sort_keys=False))
        optuna.logging.set_verbosity(optuna.logging.ERROR)  # trials print their own line
        storage = open_storage(self.url)
        fresh = self.study_name not in {s.study_name for s in optuna.get_all_study_summaries(storage)}
        seed = self.spec.seed if self.spec.seed is not None else self.recipe.seed
        if not fresh:  # a joining or resumed worker must not replay the first worker's samples
            seed += zlib.crc32(worker_id().encode())
        study = optuna.create_study(storage=storage, study_name=self.study_name,
                                    directions=[_DIRECTIONS[o] for o in self.spec.objectives],
                                    sampler=self._sampler(seed), pruner=self._pruner(),
                                    load_if_exists=True)
        digest = _search_hash(self.recipe)
        known = study.user_attrs.get("recipe_hash")
        if known is not None and known != digest:
            raise CompressorError(
                f"study {self.study_name!r} in {self.url} was made from a different recipe or "
                "search space; use another --out, --storage or --study-name to start a new study")
        if known is None:
            study.set_user_attr("recipe_hash", digest)

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
                                    reference, (original, task), table, self.settings)
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
        """Take trials until the study holds ``search.trials`` of them."""
        assert self._objective is not None, "call prepare() first"
        study = self.study
        while True:
            recover_stale(study)
            started = [t for t in counted(study.get_trials(deepcopy=False)) if t.state != TrialState.WAITING]
            if len(started) >= self.spec.trials:
                return
            study.optimize(self._objective, n_trials=1, catch=(CompressorError, SurplusTrial),
                           callbacks=[self._announce])

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

    def run(self, workers: int = 1, report: bool = True) -> "Any":
        """Set up, take trials with ``workers`` processes, and write the report (if asked)."""
        self.prepare()
        children = [self._spawn() for _ in range(workers - 1)]
        try:
            self.work()
        finally:
            for child in children:
                child.wait()
        failed = [c.args for c in children if c.returncode]
        if failed:
            raise CompressorError(f"{len(failed)} worker process(es) failed; see their output above")
        return write_report(self) if report else None

    def _spawn(self) -> subprocess.Popen:
        """Another worker process on this study (same recipe file, storage and study name)."""
        cmd = [sys.executable, "-m", "compressor.cli", "search", str(self.run_dir / RECIPE_FILE),
               "--out", str(self.run_dir), "--storage", self.url, "--study-name", self.study_name,
               "--trials", str(self.spec.trials), "--no-report"]
        if self.torch_threads:
            cmd += ["--torch-threads", str(self.torch_threads)]
        return subprocess.Popen(cmd)


def recover_stale(study: optuna.Study) -> list[int]:
    """Fail and re-queue RUNNING trials whose worker process on this host is gone."""
    host = socket.gethostname()
    recovered = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        owner = str(trial.user_attrs.get("worker", ""))
        owner_host, _, pid = owner.rpartition(":")
        if owner_host != host or not pid.isdigit() or _alive(int(pid)):
            continue
        try:
            study.tell(trial.number, state=TrialState.FAIL)
        except (ValueError, RuntimeError):  # another worker recovered it first
            continue
        frozen = next(t for t in study.get_trials() if t.number == trial.number)
        _retry()(study, frozen)
        recovered.append(trial.number)
    return recovered


def _retry() -> optuna.storages.RetryHeartbeatStaleTrialCallback:
    """Re-queues a stale trial with the same parameters (Optuna marks it experimental)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
