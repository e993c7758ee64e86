"""Search workers on a real PostgreSQL server (started by .ci/with_postgres.sh, as .ci/run does),
and `--storage` URLs that cannot work: one line of error, exit code 2."""
from __future__ import annotations

import collections
import os
import signal
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState
from sqlalchemy.engine import make_url
from search_toy import builtin_recipe

from compressor.cli import main as cli
from compressor.search.crash import CRASH_ENV

ROOT = Path(__file__).resolve().parents[1]
PG_URL = os.environ.get("COMPRESSOR_TEST_PG_URL")
needs_pg = pytest.mark.skipif(not PG_URL, reason="COMPRESSOR_TEST_PG_URL is unset: run the tests under "
                                                 ".ci/with_postgres.sh (as .ci/run does) to start a PostgreSQL server")
pytest.importorskip("psycopg", reason="the postgres extra (psycopg) is not installed")


def search_cmd(recipe: Path, out: Path, study: str, storage: str) -> list[str]:
    return [sys.executable, "-m", "compressor.cli", "search", str(recipe), "--out", str(out),
            "--storage", storage, "--study-name", study, "--torch-threads", "1", "--heartbeat", "1"]


def retry_of(trial: optuna.trial.FrozenTrial) -> int | None:
    """The trial that ``trial`` directly retries (Optuna's retry history), if any."""
    history = trial.system_attrs.get("retry_history")
    return history[-1] if history else None


@needs_pg
@pytest.mark.slow
def test_three_workers_on_postgres_lose_no_trial_when_two_are_killed(tmp_path):
    """The same command three times at once; whoever takes trial 1 is killed between Optuna's
    ask() and the owner write, whoever takes trial 2 as it starts the stages. The survivor(s)
    fail and re-queue both, and the study ends with exactly its trials, none running, no
    configuration evaluated twice. A worker started then exits 0 at once."""
    study = f"pg-{uuid.uuid4().hex[:8]}"
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(builtin_recipe(trials=4)))
    env = {**os.environ, "PYTHONPATH": str(ROOT), CRASH_ENV: "asked@1,evaluating@2"}
    workers = [subprocess.Popen(search_cmd(recipe, tmp_path / f"w{i}", study, PG_URL), cwd=ROOT, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
               for i in range(3)]
    outputs = [w.communicate(timeout=400)[0] for w in workers]
    codes = sorted(w.returncode for w in workers)
    assert codes == [-signal.SIGKILL, -signal.SIGKILL, 0], "\n---\n".join(o[-1500:] for o in outputs)

    trials = optuna.load_study(study_name=study, storage=PG_URL).trials
    states = collections.Counter(t.state for t in trials)
    assert states[TrialState.RUNNING] == states[TrialState.WAITING] == 0
    assert states[TrialState.COMPLETE] + states[TrialState.PRUNED] == 4
    assert "worker" not in trials[1].user_attrs and "worker" in trials[2].user_attrs
    failed = [t.number for t in trials if t.state == TrialState.FAIL]
    assert 1 in failed and 2 in failed
    for number in failed:  # each killed trial (a retry may be one) retried exactly once
        assert len([t for t in trials if retry_of(t) == number]) == 1
    evaluated = collections.Counter(t.user_attrs["config"] for t in trials
                                    if t.state == TrialState.COMPLETE and "duplicate_of" not in t.user_attrs)
    assert evaluated and max(evaluated.values()) == 1

    late = subprocess.run(search_cmd(recipe, tmp_path / "late", study, PG_URL), cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
                          timeout=300)
    assert late.returncode == 0, late.stderr[-2000:]
    assert "already holds its 4 finished trials: nothing to do" in late.stdout
    assert len(optuna.load_study(study_name=study, storage=PG_URL).trials) == len(trials)
    assert not (tmp_path / "late" / "reference.onnx").exists()  # no set-up was done


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("case", ["stopped server", pytest.param("wrong password", marks=needs_pg),
                                  "unknown kind"])
def test_a_storage_that_cannot_be_opened_is_one_line_and_exit_2(tmp_path, capsys, case):
    if case == "stopped server":  # a free loopback port: nobody listens there
        url = f"postgresql+psycopg://compressor:secret@127.0.0.1:{free_port()}/postgres"
        expected = "cannot open the study storage (connection failed: "
    elif case == "wrong password":
        url = make_url(PG_URL).set(password="secret").render_as_string(hide_password=False)
        expected = "password authentication failed"
    else:
        url = "postgres://compressor:secret@127.0.0.1/postgres"  # SQLAlchemy says postgresql://
        expected = "unknown database kind; write e.g. postgresql+psycopg://"
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(builtin_recipe(trials=1)))
    assert cli(["search", str(recipe), "--out", str(tmp_path / "s"), "--storage", url]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: --storage {url.replace('secret', '***')}: ")
    assert expected in err and "Traceback" not in err and "secret" not in err
