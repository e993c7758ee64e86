"""Every malformed input of tests/bad_inputs.py: exit code 2, one message naming the file (or
option) and the problem, no traceback, within 30 s; the few that could exhaust memory run in a
child process under a 3 GiB address-space limit."""
from __future__ import annotations

import resource
import subprocess
import sys
from pathlib import Path

import pytest
from bad_inputs import CORPUS, Case

from compressor.cli import main

#: Address space of a child CLI process: torch and onnxruntime load in ~2 GiB.
CHILD_MEMORY = 3 << 30


def test_corpus_is_large_enough() -> None:
    assert len(CORPUS) >= 100
    assert len({c.id for c in CORPUS}) == len(CORPUS)


def _run_in_process(argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str]:
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's usage errors
        code = exc.code
    return int(code or 0), capsys.readouterr().err


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (CHILD_MEMORY, CHILD_MEMORY))


def _run_in_child(argv: list[str], cwd: Path) -> tuple[int, str]:
    done = subprocess.run([sys.executable, "-m", "compressor.cli", *argv], cwd=cwd, capture_output=True,
                          text=True, preexec_fn=_limit_memory, timeout=60)
    return done.returncode, done.stderr


@pytest.mark.timeout(30)
@pytest.mark.parametrize("case", CORPUS, ids=[c.id for c in CORPUS])
def test_bad_input_is_refused(case: Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                              capsys: pytest.CaptureFixture) -> None:
    monkeypatch.chdir(tmp_path)  # nothing may land in the repository's runs/
    argv = case.make(tmp_path)
    if case.subprocess:
        code, err = _run_in_child(argv, tmp_path)
    else:
        code, err = _run_in_process(argv, capsys)
    assert "Traceback" not in err
    assert code == 2, err
    assert case.words in err
    assert case.names.replace("{tmp}", str(tmp_path)) in err
