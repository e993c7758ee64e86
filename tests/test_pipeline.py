"""End-to-end runs: report, checkpoints, restore, resume after a kill."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

import compressor
from compressor.errors import CompressorError, ExportError
from compressor.recipe.loader import load_recipe


def _same_metrics(a: dict, b: dict) -> None:
    for key in ("quality", "params", "nonzero_params", "macs", "size_bytes"):
        assert a[key] == b[key], key


def test_run_writes_report_checkpoints_and_onnx(tmp_path: Path, digits_recipe: dict) -> None:
    report = compressor.run(digits_recipe, run_dir=tmp_path / "run")
    run_dir = Path(report.run_dir)
    assert [r["stage"] for r in report.rows] == ["input", "finetune", "export"]
    assert report.rows[0]["quality"] > 0.95
    assert report.rows[1]["macs"] > 0 and report.rows[1]["size_bytes"] > 300_000
    assert report.rows[-1]["parity"]["cosine"] > 0.9999
    assert (run_dir / "deploy" / "model.onnx").is_file()
    for name in ("report.md", "report.json", "report.png", "recipe.yaml", "run.json"):
        assert (run_dir / name).is_file(), name
    assert "| finetune |" in (run_dir / "report.md").read_text()
    ckpt = run_dir / "checkpoints" / "01-finetune.pt"
    restored = compressor.load_model(ckpt)
    x = torch.randn(4, 1, 8, 8)
    weights = torch.load(ckpt, weights_only=True)["weights"]
    assert all(torch.equal(v, restored.state_dict()[k]) for k, v in weights.items())
    assert restored(x).shape == (4, 10)


@pytest.mark.parametrize("overwrite", [False, True])
def test_existing_run_dir_is_not_overwritten(tmp_path: Path, digits_recipe: dict, overwrite: bool) -> None:
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "keep.txt").write_text("x")
    with pytest.raises(CompressorError, match="not a compressor run directory"):
        compressor.run(digits_recipe, run_dir=tmp_path / "run", overwrite=overwrite)
    assert (tmp_path / "run" / "keep.txt").exists()


def test_parity_failure_keeps_artifact_and_reports_why(tmp_path: Path, digits_recipe: dict) -> None:
    digits_recipe["stages"][-1] = {"export": {"simplify": False, "parity": {"atol": 1e-12}}}
    with pytest.raises(ExportError, match="parity check failed"):
        compressor.run(digits_recipe, run_dir=tmp_path / "run")
    run_dir = tmp_path / "run"
    assert (run_dir / "deploy" / "model.onnx").is_file()
    report = json.loads((run_dir / "report.json").read_text())
    assert report["status"] == "failed" and "parity check failed" in report["error"]


def test_resume_skips_finished_stages_and_matches(tmp_path: Path, digits_recipe: dict) -> None:
    digits_recipe["stages"].insert(1, {"finetune": {"name": "second", "epochs": 1, "lr": 1e-4,
                                                    "max_steps_per_epoch": 4}})
    full = compressor.run(digits_recipe, run_dir=tmp_path / "full")
    # Simulate an interruption after the first stage: drop later stages from the saved state.
    partial = tmp_path / "partial"
    compressor.run(digits_recipe, run_dir=partial)
    state = json.loads((partial / "run.json").read_text())
    state["stages"] = state["stages"][:1]
    (partial / "run.json").write_text(json.dumps(state))
    resumed = compressor.resume(partial)
    _same_metrics(full.rows[-2], resumed.rows[-2])
    assert [r["stage"] for r in resumed.rows] == ["input", "finetune", "second", "export"]


def test_resume_refuses_a_changed_recipe(tmp_path: Path, digits_recipe: dict) -> None:
    compressor.run(digits_recipe, run_dir=tmp_path / "run")
    recipe = yaml.safe_load((tmp_path / "run" / "recipe.yaml").read_text())
    recipe["seed"] = 7
    (tmp_path / "run" / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    with pytest.raises(CompressorError, match="changed since the run started"):
        compressor.resume(tmp_path / "run")


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_result(tmp_path: Path, digits_recipe: dict) -> None:
    """SIGKILL the CLI while its second stage trains, resume, compare with an uninterrupted run."""
    digits_recipe["stages"].insert(1, {"finetune": {"name": "long", "epochs": 4, "lr": 1e-4}})
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(digits_recipe))
    cli = [sys.executable, "-m", "compressor.cli"]
    run_dir = tmp_path / "killed"
    proc = subprocess.Popen(cli + ["run", str(recipe), "--out", str(run_dir)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    def finished() -> list[str]:
        try:
            return [s["name"] for s in json.loads((run_dir / "run.json").read_text())["stages"]]
        except (FileNotFoundError, json.JSONDecodeError):
            return []

    deadline = time.time() + 300
    while not finished() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert finished() == ["finetune"]

    resumed = subprocess.run(cli + ["run", "--resume", str(run_dir)], capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert "done earlier, skipped" in resumed.stdout + resumed.stderr
    full = compressor.run(recipe, run_dir=tmp_path / "full")
    after = json.loads((run_dir / "report.json").read_text())
    _same_metrics(full.rows[-2], after["rows"][-2])
    a = torch.load(run_dir / "checkpoints" / "02-long.pt", weights_only=True)["weights"]
    b = torch.load(tmp_path / "full" / "checkpoints" / "02-long.pt", weights_only=True)["weights"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_variables_and_overrides(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text("variables: {ep: 2, tag: v}\nname: 'run-${tag}'\nmodel: {zoo: digits_cnn}\n"
                    "stages:\n  - finetune: {epochs: '${ep}'}\n")
    recipe = compressor.load_recipe(path, overrides=["variables.ep=3", "data.batch_size=16"])
    assert recipe.stage("finetune").params.epochs == 3
    assert recipe.name == "run-v" and recipe.data.batch_size == 16
    assert compressor.load_recipe(recipe.to_dict()).to_dict() == recipe.to_dict()


def test_stage_order_warning() -> None:
    recipe = load_recipe({"model": {"zoo": "digits_cnn"},
                          "stages": [{"export": {}}, {"finetune": {}}]})
    assert any("not last" in w for w in recipe.warnings)
