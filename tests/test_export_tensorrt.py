"""TensorRT: profiles, the trtexec fallback, the builder's wiring (mocked) and, on a GPU, the real thing.

No test here has run against a real TensorRT: this machine has no GPU and no `tensorrt` wheel.
The mocked test checks that our calls follow the TensorRT 10 Python API; the `gpu` test builds and
runs a real engine where TensorRT and a CUDA GPU exist.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from unittest.mock import MagicMock

import numpy as np
import pytest
import torch
from torch import nn

from compressor.errors import ExportError
from compressor.export import tensorrt as trt_mod
from compressor.export.onnx import export_onnx

IDS = [{"name": "ids", "dtype": "int64", "shape": ["batch", "seq"]},
       {"name": "image", "dtype": "float32", "shape": ["batch", 3, 32, 32]}]


def test_profile_shapes_span_batch_and_sequence() -> None:
    shapes = trt_mod.profile_shapes(IDS, {"ids": (1, 128), "image": (1, 3, 32, 32)}, max_batch=16, opt_batch=4)
    assert shapes == {"ids": ((1, 1), (4, 128), (16, 128)),
                      "image": ((1, 3, 32, 32), (4, 3, 32, 32), (16, 3, 32, 32))}


def test_trtexec_command() -> None:
    shapes = trt_mod.profile_shapes(IDS[1:], {"image": (1, 3, 32, 32)}, max_batch=8)
    cmd = trt_mod.trtexec_command("model.fp16.onnx", "model.engine", shapes, workspace_mb=2048)
    assert cmd == ["trtexec", "--onnx=model.fp16.onnx", "--saveEngine=model.engine", "--stronglyTyped",
                   "--memPoolSize=workspace:2048", "--timingCacheFile=timing.cache",
                   "--minShapes=image:1x3x32x32", "--optShapes=image:1x3x32x32", "--maxShapes=image:8x3x32x32"]
    static = {"image": ((1, 3, 32, 32),) * 3}
    assert not any(c.startswith("--minShapes") for c in trt_mod.trtexec_command("m.onnx", "e", static, workspace_mb=1))


@pytest.fixture()
def fake_trt(monkeypatch: pytest.MonkeyPatch) -> MagicMock:
    """A stand-in `tensorrt` module recording calls (the real one is not installable here)."""
    trt = MagicMock(name="tensorrt")
    trt.__version__ = "10.3.0"
    trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED = 2
    builder = trt.Builder.return_value
    trt.OnnxParser.return_value.parse_from_file.return_value = True
    builder.build_serialized_network.return_value = b"ENGINE"
    builder.create_builder_config.return_value.get_timing_cache.return_value.serialize.return_value = b"CACHE"
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setattr(trt_mod, "gpu_info", lambda: trt_mod.GPU("Orin", "8.7"))
    return trt


def test_build_engine_wiring(tmp_path: Path, fake_trt: MagicMock) -> None:
    shapes = {"image": ((1, 3, 8, 8), (2, 3, 8, 8), (4, 3, 8, 8))}
    cache = tmp_path / "timing.cache"
    entry = trt_mod.build_engine(tmp_path / "m.onnx", tmp_path / "m.engine", shapes, workspace_mb=512,
                                 timing_cache=cache)
    builder = fake_trt.Builder.return_value
    builder.create_network.assert_called_once_with(1 << 2)  # strongly typed
    fake_trt.OnnxParser.return_value.parse_from_file.assert_called_once_with(str(tmp_path / "m.onnx"))
    config = builder.create_builder_config.return_value
    config.set_memory_pool_limit.assert_called_once_with(fake_trt.MemoryPoolType.WORKSPACE, 512 * 2**20)
    builder.create_optimization_profile.return_value.set_shape.assert_called_once_with(
        "image", (1, 3, 8, 8), (2, 3, 8, 8), (4, 3, 8, 8))
    config.add_optimization_profile.assert_called_once()
    config.create_timing_cache.assert_called_once_with(b"")
    assert (tmp_path / "m.engine").read_bytes() == b"ENGINE" and cache.read_bytes() == b"CACHE"
    assert entry["tensorrt"] == "10.3.0" and entry["gpu"] == {"name": "Orin", "compute_capability": "8.7"}
    assert entry["shapes"]["image"]["max"] == (4, 3, 8, 8)
    # A second build reuses the timing cache.
    trt_mod.build_engine(tmp_path / "m.onnx", tmp_path / "m.engine", shapes, workspace_mb=512, timing_cache=cache)
    config.create_timing_cache.assert_called_with(b"CACHE")


def test_parser_errors_are_reported(tmp_path: Path, fake_trt: MagicMock) -> None:
    parser = fake_trt.OnnxParser.return_value
    parser.parse_from_file.return_value = False
    parser.num_errors = 1
    parser.get_error.return_value = "node conv: unsupported QLinearConv"
    with pytest.raises(ExportError, match="unsupported QLinearConv"):
        trt_mod.build_engine(tmp_path / "m.onnx", tmp_path / "e", {}, workspace_mb=1)


def test_without_tensorrt_the_bundle_has_the_trtexec_script(tmp_path: Path) -> None:
    if trt_mod.unavailable_reason() is None:
        pytest.skip("TensorRT and a GPU are present: the engine is built instead")
    import compressor

    result = compressor.deploy("digits_cnn", target="jetson-orin", out=tmp_path / "deploy",
                               formats=["onnx", "tensorrt"], latency=False, evaluate=False)
    script = tmp_path / "deploy" / "build_engine.sh"
    assert result.artifacts["tensorrt_build"] == str(script) and script.stat().st_mode & 0o111
    text = script.read_text()
    assert "trtexec \\\n    --onnx=model.fp16.onnx \\\n    --saveEngine=model.engine \\\n    --stronglyTyped" in text
    assert "--maxShapes=image:16x1x8x8" in text  # jetson-orin's max batch
    manifest = json.loads((tmp_path / "deploy" / "manifest.json").read_text())
    entry = manifest["models"]["tensorrt"]
    assert entry["not_built"] and entry["build_command"].startswith("trtexec ")
    assert entry["compute_capability"] == "8.7"
    assert any("TensorRT engine not built here" in n for n in manifest["notes"])


@pytest.mark.gpu
def test_real_engine_matches_pytorch(tmp_path: Path) -> None:
    reason = trt_mod.unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten(), nn.LazyLinear(4)).eval()
    x = torch.randn(2, 3, 16, 16)
    model(x)
    path = export_onnx(model, (x,), tmp_path / "m.onnx", input_names=["x"], output_names=["y"],
                       dynamic_axes={"x": {0: "batch"}}, opset=17)
    shapes = trt_mod.profile_shapes([{"name": "x", "shape": ["batch", 3, 16, 16]}], {"x": (1, 3, 16, 16)},
                                    max_batch=4)
    trt_mod.build_engine(path, tmp_path / "m.engine", shapes, workspace_mb=256, timing_cache=tmp_path / "t.cache")
    out = trt_mod.run_engine(tmp_path / "m.engine", {"x": x.numpy()})[0]
    np.testing.assert_allclose(out, model(x).detach().numpy(), atol=1e-2)
