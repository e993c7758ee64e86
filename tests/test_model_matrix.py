"""Every model family through prune -> distill -> int8 PTQ -> export, for an ONNX Runtime and a TensorRT
target; every recipe a family cannot run exits 2 with one line naming the module and the key (13.4).

Three cells and the refusals of their families run in the quick suite; the others are marked slow
(``make test`` runs them all). The export stage's parity check holds for both targets: the
ONNX Runtime file runs ONNX Runtime's exact kernels (export/ort_kernels.py), and the TensorRT file
is checked with every Q/DQ evaluated as the ONNX standard defines it.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

import compressor
from compressor.cli import main
from compressor.export.qdq_rules import check_trt
from compressor.export.runtime import ort_session
from model_matrix import FAMILIES, TARGETS, pipeline, recipe, reference_parity

#: The cells of the quick suite (``-m "not slow"``): a CNN, hand-written attention and a Hugging Face model.
QUICK = {("mobilenet_v3", "cpu-x86"), ("vit_hand", "jetson-orin"), ("bert", "cpu-x86")}


def _mark(family: str, target: str = "cpu-x86") -> tuple:
    return () if (family, target) in QUICK else (pytest.mark.slow,)


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("families")


@pytest.mark.parametrize("family,target", [pytest.param(f, t, marks=_mark(f, t), id=f"{f}-{t}")
                                           for f in FAMILIES for t in TARGETS])
def test_the_pipeline_runs_and_exports_a_valid_model(family: str, target: str, root: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    compressor.run(recipe(FAMILIES[family], root, target, pipeline(FAMILIES[family])), run_dir=run_dir)
    state = json.loads((run_dir / "run.json").read_text())
    stages = {s["name"]: s for s in state["stages"]}
    assert [stages[k]["status"] for k in ("prune", "distill", "quantize")] == ["done"] * 3
    assert stages["prune"]["metrics"]["params"] < state["baseline"]["params"]
    deploy = run_dir / "deploy"
    assert json.loads((deploy / "manifest.json").read_text())["models"]["onnx"]["precision"] == "int8"
    ort_session(deploy / "model.onnx")  # ONNX Runtime loads what was written
    if target == "jetson-orin":  # pure Q/DQ: TensorRT's rules, and each Q/DQ as the ONNX standard defines it
        assert check_trt(deploy / "model.onnx") == []
        assert reference_parity(deploy) > 0.999


@pytest.mark.parametrize("family,case", [pytest.param(f, case, marks=_mark(f), id=f"{f}-{case}")
                                         for f in FAMILIES for case in FAMILIES[f].refusals])
def test_what_a_family_cannot_do_exits_2_in_one_line(family: str, case: str, root: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    stages, message = FAMILIES[family].refusals[case]
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe(FAMILIES[family], root, "cpu-x86", stages)))
    assert main(["run", str(path), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and err.endswith(errors[0]) and "Traceback" not in err, err
    assert re.search(message, errors[0]), err
