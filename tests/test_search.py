"""Search studies end to end on a tiny digits CNN with the test-only 'ensemble' stage."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from unittest import mock

import optuna
import pytest
import yaml
from optuna.trial import TrialState
from search_toy import builtin_recipe, toy_recipe  # also registers the test-only 'ensemble' stage

from compressor import api
from compressor.cli import main as cli
from compressor.recipe.loader import load_recipe
from compressor.search.crash import CRASH_ENV
from compressor.search.objective import Objective, counted, worker_id
from compressor.search.storage import open_storage
from compressor.search.study import Search
from compressor.search.workers import alive, retried_from, retry_stale

ROOT = Path(__file__).resolve().parents[1]


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


def test_a_trial_taken_over_from_a_slow_worker_is_run_again(tmp_path, monkeypatch, capsys):
    """Another worker took this one for dead mid-trial (a late heartbeat), failed and re-queued
    its trial: this worker says so and goes on; the retry is run and the budget met."""
    search = Search(load_recipe(toy_recipe(trials=2, warm_start=0)), tmp_path / "s")
    evaluate = Objective.__call__

    def taken_over_once(self, trial):
        if trial.number == 0:
            self.study.tell(0, state=TrialState.FAIL)
            retry_stale(self.study, self.study.get_trials()[0])
        return evaluate(self, trial)

    monkeypatch.setattr(Objective, "__call__", taken_over_once)
    search.run(report=False)
    trials = trials_of(search)
    assert trials[0].state == TrialState.FAIL and retried_from(trials[1]) == 0
    assert [t.state for t in trials[1:]] == [TrialState.COMPLETE] * 2
    assert "trial   0  taken over by another worker" in capsys.readouterr().out


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


def test_a_zombie_is_not_alive():
    """A killed child of ``--workers`` is a zombie until reaped; its trial must still be recovered."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    while Path(f"/proc/{child.pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z":
        time.sleep(0.05)
    assert not alive(child.pid)
    child.wait()
    assert not alive(child.pid) and alive(os.getpid())


@pytest.mark.slow
def test_workers_finish_the_budget_and_report_when_a_child_is_killed(tmp_path, monkeypatch):
    """`--workers 2` whose child is SIGKILLed mid-trial: the parent reaps it, re-queues its trial
    and runs it, finishes the budget and writes the report."""
    search = Search(load_recipe(builtin_recipe(trials=3)), tmp_path / "s", torch_threads=1)
    spawn = Search._spawn

    def crashing_child(self):
        with mock.patch.dict(os.environ, {CRASH_ENV: "evaluating"}):  # the child's first trial
            return spawn(self)

    evaluate = Objective.__call__

    def after_the_child_took_a_trial(self, trial):  # else the parent may use up the budget alone
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and not any(
                t.user_attrs.get("worker") not in (None, worker_id()) for t in self.study.get_trials()):
            time.sleep(0.2)
        return evaluate(self, trial)

    monkeypatch.setattr(Search, "_spawn", crashing_child)
    monkeypatch.setattr(Objective, "__call__", after_the_child_took_a_trial)
    summary = search.run(workers=2)
    trials = trials_of(search)
    killed = [t for t in trials if t.state == TrialState.FAIL]
    assert len(killed) == 1 and killed[0].user_attrs["worker"] != worker_id()
    retry = [t for t in trials if retried_from(t) == killed[0].number]
    assert len(retry) == 1 and retry[0].state == TrialState.COMPLETE and retry[0].params == killed[0].params
    assert len([t for t in trials if t.state == TrialState.COMPLETE]) == 3
    assert summary.best is not None and (tmp_path / "s" / "search_report.md").is_file()


@pytest.mark.slow
def test_a_killed_worker_resumed_continues_the_count(tmp_path):
    """A worker SIGKILLed in trial 1 between Optuna's ask() and the owner write (no owner, no
    heartbeat yet): run again, the same command fails and re-queues that trial once and ends
    with the budget of finished trials. (A kill once the trial is owned: the test above.)"""
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(builtin_recipe(trials=3)))
    cmd = [sys.executable, "-m", "compressor.cli", "search", str(path), "--out", str(tmp_path / "s"),
           "--torch-threads", "1", "--heartbeat", "1"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    killed = subprocess.run(cmd, cwd=ROOT, env={**env, CRASH_ENV: "asked@1"}, capture_output=True,
                            text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    trials = optuna.load_study(study_name="toy", storage=f"sqlite:///{tmp_path / 's' / 'study.db'}").trials
    assert trials[1].state == TrialState.FAIL
    assert "worker" not in trials[1].user_attrs
    retry = [t for t in trials if retried_from(t) == 1]
    assert len(retry) == 1 and retry[0].state == TrialState.COMPLETE
    assert len([t for t in trials if t.state == TrialState.COMPLETE]) == 3
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
