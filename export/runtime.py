"""ONNX Runtime sessions with controlled threading."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
from torch import Tensor


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


def feeds(session: ort.InferenceSession, inputs: tuple[Tensor, ...] | tuple[np.ndarray, ...]
          ) -> dict[str, np.ndarray]:
    """Map positional inputs onto the session's input names."""
    names = [i.name for i in session.get_inputs()]
    return {n: (x.detach().cpu().numpy() if isinstance(x, Tensor) else x) for n, x in zip(names, inputs)}
