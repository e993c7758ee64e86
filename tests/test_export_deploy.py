"""The export stage and `compressor export`: bundle, manifest, example script, failures."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from export_helpers import fake_quantize

import compressor
from compressor.cli import main
from compressor.errors import ExportError, StageError
from compressor.export.deploy import export_model
from compressor.export.onnx import read_metadata
from compressor.export.targets import TARGETS
from compressor.stages.export import ExportParams
from compressor.zoo import build_model
from compressor.zoo.digits import digits_task


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    recipe = {"name": "deploytest", "model": {"zoo": "digits_cnn"}, "target": "cpu-arm64",
              "report": {"latency": "final", "iterations": 5, "warmup": 1},
              "stages": [{"finetune": {"epochs": 1, "lr": 1e-4, "max_steps_per_epoch": 2}},
                         {"export": {"formats": ["onnx", "onnx-fp16"], "parity": {"samples": 32}}}]}
    report = compressor.run(recipe, run_dir=tmp_path_factory.mktemp("deploy") / "run")
    return Path(report.run_dir)


def test_stage_writes_the_bundle(run_dir: Path) -> None:
    deploy = run_dir / "deploy"
    for name in ("model.onnx", "model.fp16.onnx", "manifest.json", "infer.py", "sample.npz"):
        assert (deploy / name).is_file(), name
    manifest = json.loads((deploy / "manifest.json").read_text())
    state = json.loads((run_dir / "run.json").read_text())
    assert manifest["status"] == "ok" and manifest["target"]["name"] == "cpu-arm64"
    assert manifest["inputs"] == [{"name": "image", "dtype": "float32", "shape": ["batch", 1, 8, 8]}]
    assert manifest["outputs"][0]["name"] == "logits" and manifest["preprocessing"]["image"]
    assert manifest["provenance"]["recipe_hash"] == state["recipe_hash"]
    assert manifest["provenance"]["stages"] == [{"name": "finetune", "kind": "finetune"}]
    onnx_entry, fp16_entry = manifest["models"]["onnx"], manifest["models"]["onnx-fp16"]
    assert onnx_entry["precision"] == "fp32" and fp16_entry["precision"] == "fp16"
    assert len(onnx_entry["files"]["model.onnx"]["sha256"]) == 64
    assert onnx_entry["parity"]["cosine"] >= 0.9999 and fp16_entry["parity"]["cosine"] >= 0.999
    assert fp16_entry["files"]["model.fp16.onnx"]["bytes"] < 0.6 * onnx_entry["files"]["model.onnx"]["bytes"]
    assert abs(fp16_entry["quality"] - onnx_entry["quality"]) <= 0.01
    assert set(onnx_entry["latency"]) >= {"p50_ms", "p90_ms", "p99_ms", "throughput", "batch"}
    meta = read_metadata(deploy / "model.onnx")
    assert meta["recipe_hash"] == state["recipe_hash"] and meta["target"] == "cpu-arm64"
    assert meta["metrics"]["quality"] == manifest["metrics"]["quality"]
    row = state["stages"][-1]["metrics"]
    assert set(row["parity_by_format"]) == {"onnx", "onnx-fp16"} and "latency_ms" in row


@pytest.mark.parametrize("variant", ["onnx", "onnx-fp16"])
def test_example_script_runs_with_onnxruntime_and_numpy(run_dir: Path, variant: str) -> None:
    # The script imports only numpy, onnxruntime and the standard library (checked by hand in a
    # fresh venv too, see docs/export.md); here it runs in a subprocess from another directory.
    out = subprocess.run([sys.executable, str(run_dir / "deploy" / "infer.py"), "--model", variant],
                         capture_output=True, text=True, cwd=run_dir.parent, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "logits: shape [4, 10]" in out.stdout and "-> ok" in out.stdout
    source = (run_dir / "deploy" / "infer.py").read_text()
    imports = {line.split()[1].split(".")[0] for line in source.splitlines()
               if line.startswith(("import ", "from "))}
    assert imports <= {"__future__", "argparse", "json", "sys", "pathlib", "numpy", "onnxruntime"}


def test_cli_export_of_a_run_uses_its_last_checkpoint(run_dir: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "bundle"
    assert main(["export", str(run_dir), "--out", str(out), "--formats", "onnx", "--no-latency",
                 "--samples", "16"]) == 0
    printed = capsys.readouterr().out
    assert "onnx       cosine" in printed and f"manifest: {out}/manifest.json" in printed
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["provenance"]["stages"] == [{"name": "finetune", "kind": "finetune"}]
    assert set(manifest["models"]) == {"onnx"}
    original = json.loads((run_dir / "deploy" / "manifest.json").read_text())
    assert manifest["metrics"]["quality"] == original["metrics"]["quality"]


def test_reexport_removes_stale_variants(tmp_path: Path) -> None:
    out = tmp_path / "d"
    compressor.deploy("digits_cnn", target="cpu-arm64", out=out, formats=["onnx", "onnx-fp16"],
                      latency=False, evaluate=False)
    compressor.deploy("digits_cnn", out=out, latency=False, evaluate=False)
    assert not (out / "model.fp16.onnx").exists()
    assert set(json.loads((out / "manifest.json").read_text())["models"]) == {"onnx"}


def test_parity_failure_fails_the_run_and_keeps_the_bundle(tmp_path: Path) -> None:
    recipe = {"model": {"zoo": "digits_cnn"}, "report": {"latency": "off"},
              "stages": [{"export": {"parity": {"atol": 1e-12, "samples": 8}, "latency": False}}]}
    with pytest.raises(ExportError, match=r"parity check failed for onnx \(fp32\): max abs error .* > 1e-12"):
        compressor.run(recipe, run_dir=tmp_path / "run")
    run_dir = tmp_path / "run"
    state = json.loads((run_dir / "run.json").read_text())
    failed = state["stages"][-1]
    assert failed["status"] == "failed" and "artifacts kept" in failed["error"]
    assert failed["metrics"]["parity"]["max_abs"] > 1e-12  # the numbers behind the failure
    manifest = json.loads((run_dir / "deploy" / "manifest.json").read_text())
    assert manifest["status"] == "failed" and "max abs error" in manifest["failures"][0]
    assert (run_dir / "deploy" / "model.onnx").is_file()
    report = (run_dir / "report.md").read_text()
    assert "status: **failed**" in report and "parity check failed" in report
    assert main(["export", str(run_dir), "--no-latency"]) == 2  # same tolerance from the recipe


def test_formats_the_target_cannot_run_are_refused() -> None:
    with pytest.raises(StageError, match="cpu-x86 does not run fp16.*cpu-arm64"):
        compressor.deploy("digits_cnn", target="cpu-x86", formats=["onnx-fp16"])
    with pytest.raises(StageError, match="tensorrt needs a TensorRT target"):
        compressor.deploy("digits_cnn", target="cpu-arm64", formats=["tensorrt"])


def test_qdq_model_for_tensorrt_is_checked(tmp_path: Path) -> None:
    task = digits_task()
    x = task.example_inputs(64)
    params = ExportParams(latency=False, evaluate=False, parity={"samples": 32})
    good = fake_quantize(build_model("digits_cnn"), x)
    res = export_model(good, task, TARGETS["jetson-orin"], tmp_path / "good", params)
    assert res.failures == [], res.failures
    manifest = json.loads((tmp_path / "good" / "manifest.json").read_text())
    assert manifest["models"]["onnx"]["precision"] == "int8"
    assert manifest["models"]["onnx"]["parity"]["top1_agreement"] >= 0.95

    class Unsigned(torch.nn.Module):  # uint8 activations: fine for ORT, refused by TensorRT
        def forward(self, t: torch.Tensor) -> torch.Tensor:
            return torch.fake_quantize_per_tensor_affine(t, 1 / 255, 0, 0, 255)

    bad = torch.nn.Sequential(Unsigned(), build_model("digits_cnn"))
    res = export_model(bad, task, TARGETS["jetson-orin"], tmp_path / "bad", params)
    assert any("breaks TensorRT's Q/DQ rules" in f and "[signed-int8]" in f for f in res.failures)
    res = export_model(bad, task, TARGETS["cpu-x86"], tmp_path / "cpu", params)
    assert res.failures == []  # ONNX Runtime targets are not held to TensorRT's rules
