"""Latency measurement shared by reports, `compressor bench`, the export stage and search.

Timing noise between processes here is up to +-25% (shared cores), so comparisons run their
variants in turns inside one process (:func:`interleaved`) and report medians and ratios.
"""
from __future__ import annotations

import gc
import math
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Mapping

import numpy as np
from torch import nn

from compressor.errors import CompressorError
from compressor.export.onnx import export_onnx, io_specs
from compressor.export.runtime import feeds, ort_session
from compressor.task import Task


@dataclass(frozen=True)
class Latency:
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    batch: int
    iterations: int
    #: Intra-op threads the runtime used (None: its default).
    threads: int | None = None

    @property
    def throughput(self) -> float:
        """Samples per second at the median latency."""
        return self.batch / (self.p50_ms / 1e3)

    def as_dict(self) -> dict[str, float | None]:
        return {**asdict(self), "throughput": self.throughput}


def _summarise(ms: list[float] | np.ndarray, batch: int, threads: int | None) -> Latency:
    arr = np.asarray(ms, dtype=np.float64)
    p50, p90, p99 = np.percentile(arr, [50, 90, 99])
    return Latency(float(p50), float(p90), float(p99), float(arr.mean()), batch, len(arr), threads)


def measure_calls(fn: Callable[[], object], n: int) -> list[float]:
    """Milliseconds of each of ``n`` calls of ``fn``."""
    times = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return times


def measure(fn: Callable[[], object], *, batch: int = 1, warmup: int = 5, iterations: int = 30,
            threads: int | None = None) -> Latency:
    """Time ``fn`` after ``warmup`` calls: percentiles over ``iterations`` calls."""
    for _ in range(warmup):
        fn()
    return _summarise(measure_calls(fn, iterations), batch, threads)


def interleaved(fns: Mapping[str, Callable[[], object]], *, batch: int = 1, warmup: int = 5,
                iterations: int = 30, rounds: int = 5, threads: int | None = None) -> dict[str, Latency]:
    """Time several variants in turns within one process, so machine noise hits all alike."""
    samples: dict[str, list[float]] = {k: [] for k in fns}
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    per_round = max(1, iterations // rounds)
    for _ in range(rounds):
        for name, fn in fns.items():
            samples[name] += measure_calls(fn, per_round)
    return {name: _summarise(ms, batch, threads) for name, ms in samples.items()}


def ort_runner(path: str | Path, inputs: tuple, threads: int | None = None,
               spinning: bool = False) -> Callable[[], object]:
    """A zero-argument call that runs ``inputs`` through an ONNX Runtime session of ``path``."""
    session = ort_session(path, threads, spinning=spinning)
    feed = feeds(session, inputs)
    return lambda: session.run(None, feed)


def ort_latency(path: str | Path, inputs: tuple, *, threads: int | None = None, warmup: int = 5,
                iterations: int = 30) -> Latency:
    """Latency of an ONNX file in ONNX Runtime on this machine's CPU."""
    return measure(ort_runner(path, inputs, threads), batch=_batch(inputs), warmup=warmup,
                   iterations=iterations, threads=threads)


def compare_onnx(paths: Mapping[str, str | Path], inputs: tuple, *, threads: int | None = None,
                 warmup: int = 5, iterations: int = 30, rounds: int = 5,
                 spinning: bool = False) -> dict[str, Latency]:
    """Interleaved ONNX Runtime latency of several ONNX files on the same inputs.

    ``spinning=False``: all sessions open at once, thread spinning off (see
    :func:`compressor.export.runtime.ort_session`). ``spinning=True`` times ONNX Runtime's default,
    spinning threads, as a deployment with one model per process runs it: each turn opens the
    session being timed and closes it afterwards, so no idle spinning pool competes for the cores.
    Small models at batch 1 gain most from spinning (a worker wakes in microseconds, not a futex
    round trip per operator).
    """
    if not spinning:
        runners = {name: ort_runner(p, inputs, threads) for name, p in paths.items()}
        return interleaved(runners, batch=_batch(inputs), warmup=warmup, iterations=iterations,
                           rounds=rounds, threads=threads)
    samples: dict[str, list[float]] = {name: [] for name in paths}
    per_round = max(1, iterations // rounds)
    for _ in range(rounds):
        for name, path in paths.items():
            run = ort_runner(path, inputs, threads, spinning=True)
            for _ in range(warmup):
                run()
            samples[name] += measure_calls(run, per_round)
            del run
            gc.collect()
    return {name: _summarise(ms, _batch(inputs), threads) for name, ms in samples.items()}


#: Default cap on the memory of the synthetic inputs of one model.
MAX_INPUT_BYTES = 1 << 30


def synthetic_inputs(path: str | Path, *, batch: int = 1, dims: Mapping[str, int] | None = None,
                     seed: int = 0, max_bytes: int = MAX_INPUT_BYTES) -> tuple[np.ndarray, ...]:
    """Inputs matching an ONNX file's input signature, for timing.

    Symbolic dimensions take their value from ``dims`` (by dimension name, e.g. ``seq``), the
    first one defaults to ``batch``, others to 1. Floats are standard normal; integer inputs
    whose name mentions "mask" are ones, other integers (token ids) lie in [0, 10): valid for any
    embedding table, and timing does not depend on the ids. Inputs that would take more than
    ``max_bytes`` together are refused before anything is allocated.
    """
    dims = dict(dims or {})
    rng = np.random.default_rng(seed)
    shapes = []
    for spec in io_specs(path)["inputs"]:
        shape = []
        for axis, dim in enumerate(spec["shape"]):
            if isinstance(dim, int) and dim > 0:
                shape.append(dim)
            elif isinstance(dim, str) and dim in dims:
                shape.append(int(dims[dim]))
            else:
                shape.append(batch if axis == 0 else 1)
        dtype = np.dtype(spec["dtype"])
        shapes.append((spec, shape, dtype))
    sizes = [math.prod(shape) * dtype.itemsize for _, shape, dtype in shapes]
    total = sum(sizes)
    if total > max_bytes:
        spec, shape, dtype = shapes[sizes.index(max(sizes))]
        raise CompressorError(
            f"{path}: synthetic inputs would take {total / 2**30:.1f} GiB (largest: {spec['name']!r} of "
            f"shape {shape}, {dtype}), over the {max_bytes / 2**20:.0f} MiB budget; give smaller --dim "
            "or --batch values, or raise --max-input-mb")
    out = []
    for spec, shape, dtype in shapes:
        if np.issubdtype(dtype, np.floating):
            draw = np.float64 if dtype == np.float64 else np.float32  # no float64 copy of float32 inputs
            out.append(rng.standard_normal(shape, dtype=draw).astype(dtype, copy=False))
        elif "mask" in spec["name"].lower():
            out.append(np.ones(shape, dtype=dtype))
        else:
            out.append(rng.integers(0, 10, size=shape).astype(dtype))
    return tuple(out)


def _batch(inputs: tuple) -> int:
    return len(inputs[0]) if inputs and getattr(inputs[0], "ndim", 0) else 1


def onnx_latency(model: nn.Module, task: Task, *, batch: int = 1, threads: int | None = None,
                 warmup: int = 5, iterations: int = 30, opset: int = 17) -> dict[str, float]:
    """Export to a temporary ONNX file and time it in ONNX Runtime (the CPU target's runtime)."""
    inputs = task.example_inputs(batch)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        export_onnx(model, inputs, path, input_names=task.input_names,
                    output_names=task.output_names, dynamic_axes=task.dynamic_axes, opset=opset)
        lat = ort_latency(str(path), inputs, threads=threads, warmup=warmup, iterations=iterations)
    return {"latency_ms": lat.p50_ms, "latency_p90_ms": lat.p90_ms}
