"""This machine's achievable GEMM rate in ONNX Runtime: the roof a model's latency is held against.

A model needing M multiply-accumulates that runs in t seconds reaches M / t MAC/s; divided by the
rate ONNX Runtime's own GEMM kernels reach on a large square matrix product, that says how much
speed is left to win by better kernels or fusion (near 1: only fewer MACs help). ``bench/roofline.py``
measures the peaks and caches them; reports read the cache.
"""
from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from compressor.cache import cache_dir
from compressor.export.bench import interleaved, ort_runner
from compressor.io import write_json

#: GEMM kernels measured, with the dtype of their input A: ``fp32`` MatMul; ``int8`` a MatMul between
#: Q/DQ pairs (symmetric int8, as our exports are), which ONNX Runtime fuses into its int8 kernels the
#: way it does for a whole Q/DQ model; ``int8-u8s8`` the raw MatMulInteger kernel with uint8
#: activations (what x86 without VNNI multiplies fastest).
KERNELS = {"fp32": np.float32, "int8": np.float32, "int8-u8s8": np.uint8}


def gemm_model(kernel: str, m: int, k: int, n: int, seed: int = 0) -> onnx.ModelProto:
    """``A[m, k] @ B[k, n]`` with a constant B, computed by ``kernel`` (see :data:`KERNELS`)."""
    rng = np.random.default_rng(seed)
    f32 = TensorProto.FLOAT
    if kernel == "fp32":
        inits = [numpy_helper.from_array(rng.standard_normal((k, n)).astype(np.float32), "B")]
        nodes = [helper.make_node("MatMul", ["A", "B"], ["Y"])]
        a_type, y_type = f32, f32
    elif kernel == "int8":
        inits = [numpy_helper.from_array(rng.integers(-127, 128, (k, n)).astype(np.int8), "B"),
                 numpy_helper.from_array(np.array(0.01, np.float32), "scale"),
                 numpy_helper.from_array(np.array(0, np.int8), "zero")]
        nodes = [helper.make_node("QuantizeLinear", ["A", "scale", "zero"], ["Aq"]),
                 helper.make_node("DequantizeLinear", ["Aq", "scale", "zero"], ["Ad"]),
                 helper.make_node("DequantizeLinear", ["B", "scale", "zero"], ["Bd"]),
                 helper.make_node("MatMul", ["Ad", "Bd"], ["Y"])]
        a_type, y_type = f32, f32
    else:
        inits = [numpy_helper.from_array(rng.integers(-127, 128, (k, n)).astype(np.int8), "B")]
        nodes = [helper.make_node("MatMulInteger", ["A", "B"], ["Y"])]
        a_type, y_type = TensorProto.UINT8, TensorProto.INT32
    graph = helper.make_graph(nodes, f"gemm_{kernel}", [helper.make_tensor_value_info("A", a_type, [m, k])],
                              [helper.make_tensor_value_info("Y", y_type, [m, n])], inits)
    # IR version 8 pairs with opset 17 (onnx.helper would stamp its newest, which ORT may not read).
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def measure_peaks(size: int = 1024, threads: Iterable[int | None] = (1, None), *, warmup: int = 3,
                  iterations: int = 20, rounds: int = 5, directory: str | Path | None = None
                  ) -> dict[str, Any]:
    """GMAC/s of each kernel at each thread count (None: ONNX Runtime's default), interleaved."""
    import tempfile

    rng = np.random.default_rng(0)
    peaks: dict[str, Any] = {"cpu": cpu_name(), "size": size, "gmacs": {k: {} for k in KERNELS}}
    with tempfile.TemporaryDirectory(dir=directory) as tmp:
        runners = {}
        for kernel, dtype in KERNELS.items():
            path = Path(tmp) / f"{kernel}.onnx"
            onnx.save(gemm_model(kernel, size, size, size), str(path))
            a = (rng.integers(0, 256, (size, size)).astype(dtype) if dtype == np.uint8
                 else rng.standard_normal((size, size)).astype(dtype))
            for t in threads:
                runners[(kernel, t)] = ort_runner(path, (a,), t)
        timings = interleaved({f"{k}@{t}": fn for (k, t), fn in runners.items()}, warmup=warmup,
                              iterations=iterations, rounds=rounds)
    for (kernel, t) in runners:
        p50 = timings[f"{kernel}@{t}"].p50_ms
        peaks["gmacs"][kernel][thread_key(t)] = size ** 3 / (p50 / 1e3) / 1e9
    return peaks


def thread_key(threads: int | None) -> str:
    return "default" if threads is None else str(threads)


def efficiency(macs: float, latency_ms: float, peaks: dict[str, Any], kernel: str,
               threads: int | None) -> float | None:
    """``macs / latency / peak``: the share of the measured GEMM rate a model reaches."""
    peak = peaks.get("gmacs", {}).get(kernel, {}).get(thread_key(threads))
    if not peak or latency_ms <= 0:
        return None
    return macs / (latency_ms / 1e3) / (peak * 1e9)


def peaks_path() -> Path:
    return cache_dir() / "roofline.json"


def save_peaks(peaks: dict[str, Any], path: str | Path | None = None) -> Path:
    path = Path(path) if path else peaks_path()
    write_json(path, peaks)
    return path


def load_peaks(path: str | Path | None = None) -> dict[str, Any] | None:
    """The cached peaks, if measured on this CPU (a cache copied from another machine is ignored)."""
    path = Path(path) if path else peaks_path()
    if not path.is_file():
        return None
    peaks = json.loads(path.read_text())
    return peaks if peaks.get("cpu") == cpu_name() else None


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
