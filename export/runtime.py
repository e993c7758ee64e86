"""ONNX Runtime sessions with controlled threading."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
from onnxruntime.capi import onnxruntime_pybind11_state as ort_state
from torch import Tensor

from compressor.errors import ExportError

#: What ONNX Runtime raises for a graph it cannot load or run (plain Exception subclasses).
ORT_ERRORS = (ort_state.Fail, ort_state.InvalidArgument, ort_state.InvalidGraph, ort_state.InvalidProtobuf,
              ort_state.NoSuchFile, ort_state.NoModel, ort_state.NotImplemented, ort_state.RuntimeException)


def ort_session(path: str | Path, threads: int | None = None,
                optimization: ort.GraphOptimizationLevel = ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
                spinning: bool = False) -> ort.InferenceSession:
    """A CPU session. Thread spinning is off by default: variants are timed in turns in one
    process, and an idle session whose pool keeps spinning steals cores from the one being timed
    (on 2 cores this more than doubled a pruned ResNet-18's latency; see docs/pruning.md)."""
    opts = ort.SessionOptions()
    opts.graph_optimization_level = optimization
    opts.log_severity_level = 3
    opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    if threads:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def check_loads(path: str | Path, *, shown_as: str | Path | None = None) -> None:
    """Raise :class:`ExportError` unless ONNX Runtime loads ``path`` (named ``shown_as`` in the error).

    The ONNX checker passes graphs that ONNX Runtime refuses (a stale value_info type, an op
    variant it lacks), so every file the exporter writes is loaded once before it is kept.
    """
    try:
        ort_session(path, threads=1)
    except ORT_ERRORS as exc:
        raise ExportError(f"{shown_as or path}: ONNX Runtime refuses the exported graph "
                          f"({_first_line(exc)}); this is an exporter bug, please report it "
                          "with the model") from None


def run_session(session: ort.InferenceSession, inputs: tuple[Tensor, ...] | tuple[np.ndarray, ...],
                path: str | Path) -> list[np.ndarray]:
    """``session.run`` on ``inputs`` with ONNX Runtime's failures as :class:`ExportError`."""
    try:
        return session.run(None, feeds(session, inputs))
    except ORT_ERRORS as exc:
        shapes = ", ".join(str(tuple(x.shape)) for x in inputs)
        raise ExportError(f"{path}: ONNX Runtime fails to run the exported model on inputs of shape "
                          f"{shapes} ({_first_line(exc)}); a size that tracing froze into a constant "
                          "(e.g. len(x) in forward instead of x.shape[0]) fails like this") from None


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def feeds(session: ort.InferenceSession, inputs: tuple[Tensor, ...] | tuple[np.ndarray, ...]
          ) -> dict[str, np.ndarray]:
    """Map positional inputs onto the session's input names."""
    names = [i.name for i in session.get_inputs()]
    return {n: (x.detach().cpu().numpy() if isinstance(x, Tensor) else x) for n, x in zip(names, inputs)}
