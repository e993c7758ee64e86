"""Latency measurement shared by reports, `compressor bench` and search."""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np


@dataclass(frozen=True)
class Latency:
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    batch: int
    iterations: int

    @property
    def throughput(self) -> float:
        """Samples per second at the median latency."""
        return self.batch / (self.p50_ms / 1e3)

    def as_dict(self) -> dict[str, float]:
        return {**asdict(self), "throughput": self.throughput}


def measure(fn: Callable[[], object], *, batch: int = 1, warmup: int = 5,
            iterations: int = 30) -> Latency:
    """Time ``fn`` after ``warmup`` calls: percentiles over ``iterations`` calls."""
    for _ in range(warmup):
        fn()
    times = np.empty(iterations)
    for i in range(iterations):
        start = time.perf_counter()
        fn()
        times[i] = time.perf_counter() - start
    ms = times * 1e3
    return Latency(float(np.percentile(ms, 50)), float(np.percentile(ms, 90)),
                   float(np.percentile(ms, 99)), float(ms.mean()), batch, iterations)


def interleaved(fns: dict[str, Callable[[], object]], *, batch: int = 1, warmup: int = 5,
                iterations: int = 30, rounds: int = 5) -> dict[str, Latency]:
    """Time several variants in turns within one process, so machine noise hits all alike."""
    samples: dict[str, list[float]] = {k: [] for k in fns}
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    per_round = max(1, iterations // rounds)
    for _ in range(rounds):
        for name, fn in fns.items():
            for _ in range(per_round):
                start = time.perf_counter()
                fn()
                samples[name].append((time.perf_counter() - start) * 1e3)
    out = {}
    for name, ms in samples.items():
        arr = np.asarray(ms)
        out[name] = Latency(float(np.percentile(arr, 50)), float(np.percentile(arr, 90)),
                            float(np.percentile(arr, 99)), float(arr.mean()), batch, len(arr))
    return out


def ort_latency(path: str, inputs: tuple, *, threads: int | None = None, warmup: int = 5,
                iterations: int = 30) -> Latency:
    """Latency of an ONNX file in ONNX Runtime on this machine's CPU."""
    from compressor.export.runtime import feeds, ort_session

    session = ort_session(path, threads)
    feed = feeds(session, inputs)
    return measure(lambda: session.run(None, feed), batch=len(next(iter(feed.values()))),
                   warmup=warmup, iterations=iterations)
