"""Acceptance: the zoo's ResNet-18, MobileNetV2 and MiniLM export at fp32 and fp16 with parity."""
from __future__ import annotations

from pathlib import Path

import pytest

from compressor.export.deploy import export_model
from compressor.export.targets import TARGETS
from compressor.stages.export import ExportParams
from compressor.zoo import DATASETS, MODELS, build_model


@pytest.mark.slow
@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2", "minilm"])
def test_zoo_model_exports_fp32_and_fp16_within_tolerance(tmp_path: Path, name: str) -> None:
    if name not in MODELS or MODELS[name].dataset not in DATASETS:
        pytest.skip(f"zoo model {name} or its dataset is not registered on this branch yet")
    model = build_model(name).eval()
    task = DATASETS[MODELS[name].dataset].build(model=model)
    params = ExportParams(formats=["onnx", "onnx-fp16"], latency=False, evaluate=False,
                          parity={"samples": 8})
    result = export_model(model, task, TARGETS["cpu-arm64"], tmp_path, params)
    assert result.failures == []
    parity = result.metrics["parity_by_format"]
    assert parity["onnx"]["cosine"] >= 0.9999 and parity["onnx-fp16"]["cosine"] >= 0.999
    if task.metric == "accuracy":
        assert parity["onnx"]["top1_agreement"] == 1.0
