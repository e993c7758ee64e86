"""Numerical parity between PyTorch and an exported model (ONNX Runtime or a TensorRT engine)."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from torch import Tensor, nn

from compressor.export.runtime import ort_session, run_session
from compressor.export.tensorrt import run_engine


@dataclass(frozen=True)
class Parity:
    max_abs: float
    #: ``max_abs`` relative to the largest reference magnitude (scale-free, unlike ``max_abs``).
    max_rel: float
    cosine: float
    #: Share of samples whose arg-max agrees (None for one-value outputs).
    top1_agreement: float | None
    samples: int

    def as_dict(self) -> dict[str, float | None]:
        return asdict(self)

    def failures(self, *, atol: float | None, min_cosine: float,
                 min_top1: float | None = None) -> list[str]:
        """What breaks the tolerance, in words (empty: within tolerance)."""
        out = []
        if atol is not None and self.max_abs > atol:
            out.append(f"max abs error {self.max_abs:.3g} > {atol:g}")
        if self.cosine < min_cosine:
            out.append(f"cosine {self.cosine:.6f} < {min_cosine:g}")
        if min_top1 is not None and self.top1_agreement is not None and self.top1_agreement < min_top1:
            out.append(f"top-1 agreement {self.top1_agreement:.4f} < {min_top1:g}")
        return out


def compare(reference: np.ndarray, actual: np.ndarray) -> Parity:
    """Per-sample cosine (mean), max abs/rel error and top-1 agreement of two output batches."""
    ref = reference.reshape(len(reference), -1).astype(np.float64)
    act = actual.reshape(len(actual), -1).astype(np.float64)
    cos = (ref * act).sum(1) / (np.linalg.norm(ref, axis=1) * np.linalg.norm(act, axis=1) + 1e-30)
    top1 = float((ref.argmax(1) == act.argmax(1)).mean()) if ref.shape[1] > 1 else None
    max_abs = float(np.abs(ref - act).max())
    return Parity(max_abs, max_abs / (float(np.abs(ref).max()) or 1.0), float(cos.mean()), top1, len(ref))


@torch.no_grad()
def torch_outputs(model: nn.Module, inputs: tuple[Tensor, ...]) -> np.ndarray:
    """The first output of ``model`` on ``inputs`` as float32 numpy."""
    model.eval()
    out = model(*inputs)
    out = out[0] if isinstance(out, (tuple, list)) else out
    return out.float().cpu().numpy()


def ort_outputs(onnx_path: str | Path, inputs: tuple[Tensor, ...] | tuple[np.ndarray, ...],
                threads: int | None = None, *, as_specified: bool = False) -> np.ndarray:
    """The file's first output in ONNX Runtime. ``as_specified``: graph optimizations off, so each
    QuantizeLinear/DequantizeLinear runs as the ONNX standard defines it instead of being fused
    into ONNX Runtime's int8 kernels (what a file for another runtime, such as TensorRT, means)."""
    level = ort.GraphOptimizationLevel
    session = ort_session(onnx_path, threads, optimization=level.ORT_DISABLE_ALL if as_specified else level.ORT_ENABLE_ALL)
    return np.asarray(run_session(session, inputs, onnx_path)[0], dtype=np.float32)


def onnx_parity(model: nn.Module, onnx_path: str | Path, inputs: tuple[Tensor, ...],
                threads: int | None = None, *, reference: np.ndarray | None = None,
                as_specified: bool = False) -> Parity:
    """Run ``inputs`` through PyTorch (or take ``reference``) and ONNX Runtime; compare first outputs
    (``as_specified``: see :func:`ort_outputs`)."""
    expected = torch_outputs(model, inputs) if reference is None else reference
    return compare(expected, ort_outputs(onnx_path, inputs, threads, as_specified=as_specified))


def engine_parity(reference: np.ndarray, engine_path: str | Path, input_names: list[str],
                  inputs: tuple[Tensor, ...]) -> Parity:
    """Compare ``reference`` with a TensorRT engine's first output (needs a GPU)."""
    feed = {n: x.detach().cpu().numpy() for n, x in zip(input_names, inputs)}
    return compare(reference, np.asarray(run_engine(engine_path, feed)[0], dtype=np.float32))
