"""Latency helpers, `compressor bench` and the roofline's GEMM models (no wall-clock assertions)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from export_helpers import export_tiny

from compressor.cli import main
from compressor.export import roofline
from compressor.export.bench import Latency, compare_onnx, interleaved, measure, synthetic_inputs
from compressor.export.parity import ort_outputs


def test_measure_and_interleaved_count_every_call() -> None:
    calls = {"a": 0, "b": 0}

    def fn(name: str):
        return lambda: calls.__setitem__(name, calls[name] + 1)

    lat = measure(fn("a"), batch=4, warmup=2, iterations=7, threads=2)
    assert calls["a"] == 9 and lat.iterations == 7 and lat.threads == 2
    assert lat.p50_ms <= lat.p90_ms <= lat.p99_ms and lat.throughput == 4 / (lat.p50_ms / 1e3)
    calls["a"] = 0
    out = interleaved({"a": fn("a"), "b": fn("b")}, warmup=1, iterations=10, rounds=5)
    assert calls == {"a": 11, "b": 11} and out["a"].iterations == out["b"].iterations == 10
    assert set(Latency(1, 2, 3, 2, 1, 1).as_dict()) >= {"p50_ms", "throughput", "threads"}


@pytest.mark.parametrize("spinning", [False, True])
def test_compare_onnx_times_every_file_in_both_threading_modes(tmp_path: Path, spinning: bool) -> None:
    _, a = export_tiny(tmp_path / "a.onnx")
    _, b = export_tiny(tmp_path / "b.onnx")
    inputs = synthetic_inputs(a, batch=2, dims={"seq": 8})
    out = compare_onnx({"a": a, "b": b}, inputs, threads=1, warmup=1, iterations=6, rounds=3, spinning=spinning)
    assert set(out) == {"a", "b"}
    assert all(lat.iterations == 6 and lat.batch == 2 and lat.threads == 1 for lat in out.values())


def test_synthetic_inputs_follow_the_signature(tmp_path: Path) -> None:
    _, path = export_tiny(tmp_path / "m.onnx")
    ids, mask = synthetic_inputs(path, batch=3, dims={"seq": 12})
    assert ids.shape == mask.shape == (3, 12) and ids.dtype == np.int64
    assert (mask == 1).all() and ids.min() >= 0


def test_bench_cli_interleaves_models(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    _, a = export_tiny(tmp_path / "a.onnx")
    assert main(["bench", str(a), str(a), "--dim", "seq=16", "--batch", "2", "--iterations", "5",
                 "--warmup", "1", "--threads", "1", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert list(result) == [str(a)]  # the same file twice is one entry
    assert result[str(a)]["batch"] == 2 and result[str(a)]["threads"] == 1
    assert main(["bench", str(a), "--dim", "seq"]) == 2


@pytest.mark.parametrize("kernel", list(roofline.KERNELS))
def test_gemm_models_compute_a_matrix_product(tmp_path: Path, kernel: str) -> None:
    proto = roofline.gemm_model(kernel, 4, 8, 3)
    onnx.checker.check_model(proto)
    path = tmp_path / f"{kernel}.onnx"
    onnx.save(proto, str(path))
    b = onnx.numpy_helper.to_array(proto.graph.initializer[0]).astype(np.float64)
    if kernel == "int8":  # exact in int8: A on the quantization grid, B scaled like the graph
        a, b = np.arange(-16, 16).reshape(4, 8) * 0.01, b * 0.01
    else:
        a = np.arange(32).reshape(4, 8) if kernel == "int8-u8s8" else np.linspace(-1, 1, 32).reshape(4, 8)
    out = ort_outputs(path, (a.astype(roofline.KERNELS[kernel]),))
    np.testing.assert_allclose(out, a @ b, rtol=1e-4, atol=1e-4)


def test_efficiency_and_peaks_cache(tmp_path: Path) -> None:
    peaks = {"cpu": roofline.cpu_name(), "gmacs": {"fp32": {"1": 50.0, "default": 90.0}}}
    # 1e9 MACs in 100 ms = 10 GMAC/s, a fifth of the 1-thread fp32 peak.
    assert roofline.efficiency(1e9, 100.0, peaks, "fp32", 1) == pytest.approx(0.2)
    assert roofline.efficiency(1e9, 100.0, peaks, "int8", 1) is None
    path = roofline.save_peaks(peaks, tmp_path / "r.json")
    assert roofline.load_peaks(path) == peaks
    path.write_text(json.dumps({**peaks, "cpu": "another machine"}))
    assert roofline.load_peaks(path) is None


def test_measure_peaks_reports_every_kernel(tmp_path: Path) -> None:
    peaks = roofline.measure_peaks(size=64, threads=(1,), warmup=1, iterations=2, rounds=1, directory=tmp_path)
    assert set(peaks["gmacs"]) == set(roofline.KERNELS)
    assert all(v["1"] > 0 for v in peaks["gmacs"].values())
