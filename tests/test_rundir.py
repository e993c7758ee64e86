"""Run directories: nothing deleted that the tool did not write, names stay under runs/, and a run
that finished no stage can be run again without --overwrite."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import compressor
from compressor.cli import main
from compressor.errors import CompressorError
from compressor.rundir import RUN_STATE, default_run_dir, prepare_run_dir
from compressor.zoo.digits import DigitsCNN

FACTORY_MODULE = """\
from compressor.zoo.digits import DigitsCNN


def build(width=8):
    return DigitsCNN(width=width)
"""


def _run_dir(path: Path, stages: list[dict]) -> Path:
    path.mkdir(parents=True)
    (path / RUN_STATE).write_text(json.dumps({"recipe_hash": "x", "stages": stages}))
    (path / "report.md").write_text("old")
    return path


@pytest.mark.parametrize("overwrite", [False, True])
def test_a_foreign_directory_is_never_deleted(tmp_path: Path, overwrite: bool) -> None:
    (tmp_path / "thesis.tex").write_text("precious")
    (tmp_path / RUN_STATE).write_text('{"some other tool": 1}')  # a run.json that is not ours
    with pytest.raises(CompressorError, match="not a compressor run directory"):
        prepare_run_dir(tmp_path, overwrite=overwrite)
    assert (tmp_path / "thesis.tex").read_text() == "precious"


def test_a_file_or_symlink_is_refused(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    with pytest.raises(CompressorError, match="not a directory"):
        prepare_run_dir(tmp_path / "f", overwrite=True)
    target = _run_dir(tmp_path / "real", [{"name": "a", "status": "done"}])
    (tmp_path / "link").symlink_to(target)
    with pytest.raises(CompressorError, match="symbolic link"):
        prepare_run_dir(tmp_path / "link", overwrite=True)
    assert (target / "report.md").exists()


def test_finished_runs_need_overwrite(tmp_path: Path) -> None:
    run = _run_dir(tmp_path / "run", [{"name": "prune", "status": "done"}])
    with pytest.raises(CompressorError, match="--resume"):
        prepare_run_dir(run, overwrite=False)
    assert prepare_run_dir(run, overwrite=True) is None
    assert list(run.iterdir()) == []


def test_a_run_that_finished_no_stage_is_replaced(tmp_path: Path) -> None:
    run = _run_dir(tmp_path / "run", [{"name": "prune", "status": "failed"}])
    assert "finished no stage" in prepare_run_dir(run, overwrite=False)
    assert list(run.iterdir()) == []


def test_leftovers_of_an_interrupted_write_count_as_empty(tmp_path: Path) -> None:
    (tmp_path / ".run.json.abc123.tmp").write_text("{")
    assert prepare_run_dir(tmp_path, overwrite=False) is None


@pytest.mark.parametrize("name", ["../..", "/tmp/x", "a/b", "a\\b", ".", "..", ".hidden", ""])
def test_names_cannot_leave_runs(name: str) -> None:
    with pytest.raises(CompressorError, match="cannot name a folder"):
        default_run_dir(name, "-search")
    assert default_run_dir("quickstart", "-search") == Path("runs/quickstart-search")


def test_user_factory_run_fails_first_stage_reruns_resumes_and_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                     capsys: pytest.CaptureFixture) -> None:
    """issue 18.3: a factory module beside the recipe, no PYTHONPATH, a failed first stage that
    does not block the rerun, resume from the run directory, load_model with the factory."""
    project = tmp_path / "project"
    project.mkdir()
    (project / "rundir_test_models.py").write_text(FACTORY_MODULE)

    torch.save(DigitsCNN(width=8).state_dict(), project / "w.pt")
    (project / "r.yaml").write_text(
        "model: {factory: 'rundir_test_models:build', checkpoint: w.pt}\n"
        "data: {dataset: digits, batch_size: 64, eval_samples: 64}\n"
        "report: {latency: 'off'}\n"
        "stages:\n"
        "  - distill: {kd: {weight: 0}, finetune: {epochs: 1, max_steps_per_epoch: 2}}\n")
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "run"
    assert main(["run", str(project / "r.yaml"), "--out", str(out)]) == 2
    assert "every loss weight is 0" in capsys.readouterr().err
    assert main(["run", str(project / "r.yaml"), "--out", str(out), "--set", "distill.kd.weight=1"]) == 0
    assert main(["run", "--resume", str(out)]) == 0
    ckpt = out / "checkpoints" / "01-distill.pt"
    with pytest.raises(CompressorError, match="names but you did not"):
        compressor.load_model(ckpt)
    model = compressor.load_model(ckpt, factory=lambda: DigitsCNN(width=8))
    assert isinstance(model, DigitsCNN)
