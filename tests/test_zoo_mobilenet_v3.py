"""The zoo's MobileNetV3-Small through the tool: hard-swish/hard-sigmoid in ONNX, int8 for
ONNX Runtime with parity at fp32 and int8, and channel pruning that keeps each squeeze-excitation
in step with its block. At 64 px with a few samples, so each test takes seconds."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import onnx
import torch
import yaml

import compressor
from compressor.checkpoint import restore
from compressor.export.runtime import ort_session
from compressor.zoo.mobilenet_v3 import SqueezeExcitation

RECIPE = {"name": "mnv3", "model": {"zoo": "mobilenet_v3_small", "args": {"resolution": 64}},
          "data": {"dataset": "imagenet-synthetic", "batch_size": 16, "calibration_samples": 16,
                   "args": {"resolution": 64, "train_samples": 16, "val_samples": 8}},
          "target": "cpu-x86", "report": {"latency": "off"}}
EXPORT = {"export": {"formats": ["onnx"], "evaluate": False, "latency": False, "parity": {"samples": 8}}}


def _parity(deploy: Path) -> tuple[str, dict[str, float]]:
    entry = json.loads((deploy / "manifest.json").read_text())["models"]["onnx"]
    return entry["precision"], entry["parity"]


def test_int8_for_onnx_runtime_passes_parity_at_fp32_and_int8(tmp_path: Path) -> None:
    recipe = {**RECIPE, "stages": [{"quantize": {"activations": {"observer": "minmax"}, "placement": "all"}}, EXPORT]}
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    compressor.deploy(path, out=tmp_path / "fp32")  # the recipe's input model: raises on a parity failure
    report = compressor.run(path, run_dir=tmp_path / "run")  # fails its export stage on one
    precision, parity = _parity(tmp_path / "fp32")
    assert precision == "fp32" and parity["cosine"] >= 0.9999
    precision, parity = _parity(Path(report.run_dir) / "deploy")
    assert precision == "int8" and parity["cosine"] >= 0.999 and parity["top1_agreement"] == 1.0
    ops = Counter(n.op_type for n in onnx.load(report.artifacts["onnx"]).graph.node)
    assert ops["HardSwish"] and ops["HardSigmoid"] and ops["GlobalAveragePool"]  # standard ops, opset 17
    ort_session(tmp_path / "fp32" / "model.onnx")


def test_channel_pruning_keeps_squeeze_excitation_in_step(tmp_path: Path) -> None:
    recipe = {**RECIPE, "stages": [{"prune": {"sparsity": 0.5, "round_to": 8}}]}
    report = compressor.run(recipe, run_dir=tmp_path / "run")
    row = report.rows[1]
    assert row["params"] < 0.5 * report.rows[0]["params"]
    model = restore(sorted((Path(report.run_dir) / "checkpoints").glob("*.pt"))[-1])
    blocks = [b.block for b in model.features[1:-1]]
    se_blocks = [(block, se) for block in blocks for se in block if isinstance(se, SqueezeExcitation)]
    assert len(se_blocks) == 9
    for block, se in se_blocks:
        depthwise = next(m for m in block.modules() if isinstance(m, torch.nn.Conv2d) and m.groups > 1)
        assert se.fc1.in_channels == se.fc2.out_channels == depthwise.out_channels  # the gate fits the block
    shrunk = row["channels"]  # name -> [before, after]
    assert any(n.endswith(".fc1") for n in shrunk) and any(n.endswith(".fc2") for n in shrunk)
    with torch.no_grad():
        assert model(torch.randn(2, 3, 64, 64)).shape == (2, 1000)
