"""Acceptance: the zoo's ResNet-18, MobileNetV2, MobileNetV3-Small and MiniLM export at fp32 and fp16 with parity.

Full architectures; the CNNs at 64 px and few samples to keep the suite fast (bench/export_latency.py
runs them at 224 px).
"""
from __future__ import annotations

from pathlib import Path

import pytest

from compressor.export.deploy import export_model
from compressor.export.targets import TARGETS
from compressor.stages.export import ExportParams
from compressor.zoo import DATASETS, MODELS, build_model

CASES = {
    "resnet18": ({"resolution": 64}, {"resolution": 64, "train_samples": 4, "val_samples": 8}),
    "mobilenet_v2": ({"resolution": 64}, {"resolution": 64, "train_samples": 4, "val_samples": 8}),
    "mobilenet_v3_small": ({"resolution": 64}, {"resolution": 64, "train_samples": 4, "val_samples": 8}),
    "minilm": ({}, {"samples": 40}),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CASES))
def test_zoo_model_exports_fp32_and_fp16_within_tolerance(tmp_path: Path, name: str) -> None:
    model_args, data_args = CASES[name]
    model = build_model(name, **model_args).eval()
    task = DATASETS[MODELS[name].dataset].build(model=model, **data_args)
    params = ExportParams(formats=["onnx", "onnx-fp16"], latency=False, evaluate=False, parity={"samples": 8})
    result = export_model(model, task, TARGETS["cpu-arm64"], tmp_path, params)
    assert result.failures == []
    parity = result.metrics["parity_by_format"]
    assert parity["onnx"]["cosine"] >= 0.9999 and parity["onnx-fp16"]["cosine"] >= 0.999
    assert parity["onnx"]["top1_agreement"] == 1.0
