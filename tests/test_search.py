"""Search studies end to end on a tiny digits CNN with the test-only 'ensemble' stage."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState
from search_toy import NoisyEnsemble  # noqa: F401  (registers the test-only 'ensemble' stage)

from compressor import api
from compressor.cli import main as cli
from compressor.recipe.loader import load_recipe
from compressor.search.objective import counted
from compressor.search.study import Search, open_storage

ROOT = Path(__file__).resolve().parents[1]


def toy_recipe(**search) -> dict:
    """Random-init width-8 digits CNN: every trial takes a second or two."""
    spec = {"trials": 3, "warm_start": 1, "startup_trials": 2, "latency_table": False,
            "space": {"ensemble.repeat": {"per_layer": [1, 3]}}}
    spec.update(search)
    return {
        "name": "toy", "model": {"zoo": "digits_cnn", "args": {"pretrained": False, "width": 8}},
        "data": {"batch_size": 32, "eval_samples": 96},
        "report": {"latency_batch": 4, "iterations": 10, "warmup": 2},
        "stages": [{"ensemble": {"noise": 0.3, "ignore": ["classifier"]}},
                   {"finetune": {"epochs": 1, "max_steps_per_epoch": 8, "lr": 0.01}},
                   {"export": {}}],
        "search": spec,
    }


def retried_from(trial: optuna.trial.FrozenTrial) -> int | None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RetryHeartbeatStaleTrialCallback.retried_trial_number(trial)


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Trials are tiny; one thread keeps them fast when other jobs share the cores."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def trials_of(search: Search) -> list[optuna.trial.FrozenTrial]:
    return search.study.get_trials(deepcopy=False)


def test_search_writes_report_and_best_recipe_reproduces_the_trial(tmp_path):
    search = Search(load_recipe(toy_recipe(trials=4, warm_start=2, latency_table=True,
                                           budget={"latency_ratio": 50.0})), tmp_path / "s")
    summary = search.run()
    assert len(counted(trials_of(search))) == 4
    assert {r["number"] for r in summary.trials if r["warm_start"]} == {0, 1}
    for name in ("best.yaml", "search_report.md", "search_report.json", "pareto.png"):
        assert (tmp_path / "s" / name).is_file()
    assert "optuna-dashboard sqlite:///" in (tmp_path / "s" / "search_report.md").read_text()
    assert summary.predictor["trials"] >= 1  # the latency table was checked against measurements
    best = summary.row(summary.best)
    assert best["feasible"] and best["latency_ratio"] <= 50.0
    assert best["latency_predicted"] is not None

    recipe = load_recipe(tmp_path / "s" / "best.yaml")
    assert recipe.search is None and [s.kind for s in recipe.stages] == ["ensemble", "finetune", "export"]
    assert set(recipe.stages[0].params.per_layer) == {"features.0.0", "features.1.0", "features.3.0"}
    report = api.run(recipe, run_dir=tmp_path / "again")
    assert report.final["quality"] == pytest.approx(best["quality"], abs=1e-6)


def test_resume_continues_the_count_and_keeps_the_setup(tmp_path):
    recipe = load_recipe(toy_recipe(trials=2))
    first = Search(recipe, tmp_path / "s")
    first.run(report=False)
    baseline = first.study.user_attrs["baseline"]
    again = Search(recipe, tmp_path / "s", trials=4)
    again.run(report=False)
    numbers = [t.number for t in trials_of(again)]
    assert numbers == [0, 1, 2, 3]
    assert all(t.state == TrialState.COMPLETE for t in trials_of(again))
    assert again.study.user_attrs["baseline"] == baseline  # measured once per study


def test_a_changed_search_space_is_not_mixed_into_the_study(tmp_path):
    Search(load_recipe(toy_recipe(trials=1, warm_start=0)), tmp_path / "s").prepare()
    changed = toy_recipe(trials=1, warm_start=0, space={"ensemble.repeat": {"per_layer": [1, 2]}})
    with pytest.raises(Exception, match="different recipe or search space"):
        Search(load_recipe(changed), tmp_path / "s").prepare()


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")
def test_stale_trial_of_a_dead_worker_is_retried_and_not_counted(tmp_path):
    search = Search(load_recipe(toy_recipe(trials=2, warm_start=0)), tmp_path / "s")
    study = search.prepare()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = study.ask({f"ensemble.repeat[{n}]": optuna.distributions.IntDistribution(1, 3)
                       for n in ("features.0.0", "features.1.0", "features.3.0")})
    stale.set_user_attr("worker", f"{socket.gethostname()}:{dead.pid}")
    search.work()
    trials = trials_of(search)
    assert trials[0].state == TrialState.FAIL
    retry = [t for t in trials if retried_from(t) == 0]
    assert len(retry) == 1 and retry[0].state == TrialState.COMPLETE
    assert retry[0].params == trials[0].params
    assert len(counted(trials)) == 2


def test_trials_over_budget_stop_before_training(tmp_path):
    search = Search(load_recipe(toy_recipe(trials=2, budget={"latency_ratio": 0.01})), tmp_path / "s")
    summary = search.run()
    trials = trials_of(search)
    assert all(t.state == TrialState.PRUNED and t.constraints["budget"] > 0 for t in trials)
    assert not any((Path(t.user_attrs["dir"]) / "run").exists() for t in trials)
    assert summary.best is None
    assert "No trial met the budget" in (tmp_path / "s" / "search_report.md").read_text()


def test_a_configuration_that_cannot_be_built_is_an_infeasible_trial(tmp_path):
    recipe = toy_recipe(trials=2, warm_start=0, space={"quantize.enabled": {"per_layer": {"choices": [False]}}})
    recipe["stages"][0] = {"quantize": {}}  # every layer switched off: the stage refuses
    search = Search(load_recipe(recipe), tmp_path / "s")
    search.run(report=False)
    trials = trials_of(search)
    assert len(trials) == 2  # the budget still ends the search
    assert all(t.state == TrialState.PRUNED and "no layer selected" in t.user_attrs["error"]
               and t.constraints["buildable"] > 0 for t in trials)


def test_repeated_configuration_reuses_the_first_result(tmp_path):
    space = {"ensemble.repeat": {"per_layer": {"choices": [2]}}}
    search = Search(load_recipe(toy_recipe(trials=3, warm_start=0, space=space)), tmp_path / "s")
    search.run(report=False)
    trials = trials_of(search)
    assert [t.user_attrs.get("duplicate_of") for t in trials] == [None, 0, 0]
    assert trials[1].values == trials[0].values


def test_multi_objective_search_in_a_journal_file(tmp_path):
    journal = tmp_path / "shared" / "journal.log"
    recipe = load_recipe(toy_recipe(trials=4, warm_start=2, objectives=["quality", "latency"],
                                    sampler="nsga2", population=2))
    summary = Search(recipe, tmp_path / "s", storage=str(journal)).run()
    study = optuna.load_study(study_name="toy", storage=open_storage(str(journal)))
    assert len(study.trials) == 4 and len(study.directions) == 2
    assert summary.pareto and summary.best in summary.pareto
    assert all((tmp_path / "s" / "pareto" / f"trial-{n:04d}.yaml").is_file() for n in summary.pareto)


def test_cli_explains_a_recipe_without_search(tmp_path, capsys):
    path = tmp_path / "r.yaml"
    recipe = toy_recipe()
    del recipe["search"]
    path.write_text(yaml.safe_dump(recipe))
    assert cli(["search", str(path), "--out", str(tmp_path / "s")]) == 2
    assert "no 'search:' section" in capsys.readouterr().err


@pytest.mark.slow
def test_two_worker_processes_share_one_study_without_losing_trials(tmp_path):
    """`--workers 2` (built-in stages only: the workers are fresh processes)."""
    recipe = toy_recipe(trials=8, warm_start=2, space={
        "finetune.lr": {"value": {"low": 1e-4, "high": 1e-2, "log": True}},
        "finetune.max_steps_per_epoch": {"value": [10, 40]}})
    recipe["stages"] = recipe["stages"][1:]
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(recipe))
    done = subprocess.run([sys.executable, "-m", "compressor.cli", "search", str(path), "--out",
                           str(tmp_path / "s"), "--workers", "2"], cwd=ROOT, capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    study = optuna.load_study(study_name="toy", storage=f"sqlite:///{tmp_path / 's' / 'study.db'}")
    finished = [t for t in study.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) == 8
    assert not [t for t in study.trials if t.state == TrialState.RUNNING]
    # Which worker takes which trial depends on timing (a fast worker may take them all), so only
    # the study's bookkeeping is asserted: every trial finished once, none left running.
    assert all("worker" in t.user_attrs for t in finished)
    assert (tmp_path / "s" / "best.yaml").is_file()


@pytest.mark.slow
def test_a_killed_worker_resumed_continues_the_count(tmp_path):
    recipe = toy_recipe(trials=4, warm_start=0, space={"finetune.max_steps_per_epoch": {"value": [30, 45]}})
    recipe["stages"] = recipe["stages"][1:]
    recipe["stages"][0]["finetune"]["epochs"] = 4  # trials of a few seconds: time to kill one
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(recipe))
    cmd = [sys.executable, "-m", "compressor.cli", "search", str(path), "--out", str(tmp_path / "s"),
           "--threads", "1"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    url = f"sqlite:///{tmp_path / 's' / 'study.db'}"
    worker = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    killed = None
    deadline = time.monotonic() + 240
    while killed is None and time.monotonic() < deadline and worker.poll() is None:
        time.sleep(0.2)
        try:
            trials = optuna.load_study(study_name="toy", storage=url).trials
        except Exception:  # the study is not created yet
            continue
        running = [t.number for t in trials if t.state == TrialState.RUNNING and t.number >= 1]
        if running:
            worker.kill()
            killed = running[0]
    worker.wait()
    assert killed is not None, "the worker finished before it could be killed"
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    trials = optuna.load_study(study_name="toy", storage=url).trials
    assert trials[killed].state == TrialState.FAIL
    retry = [t for t in trials if retried_from(t) == killed]
    assert len(retry) == 1 and retry[0].state == TrialState.COMPLETE
    assert len([t for t in trials if t.state == TrialState.COMPLETE]) == 4
