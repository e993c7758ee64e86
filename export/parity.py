"""Numerical parity between PyTorch and an exported model."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn


@dataclass(frozen=True)
class Parity:
    max_abs: float
    cosine: float
    top1_agreement: float | None
    samples: int

    def as_dict(self) -> dict[str, float | None]:
        return asdict(self)


def compare(reference: np.ndarray, actual: np.ndarray) -> Parity:
    ref = reference.reshape(len(reference), -1).astype(np.float64)
    act = actual.reshape(len(actual), -1).astype(np.float64)
    cos = (ref * act).sum(1) / (np.linalg.norm(ref, axis=1) * np.linalg.norm(act, axis=1) + 1e-12)
    top1 = float((ref.argmax(1) == act.argmax(1)).mean()) if ref.shape[1] > 1 else None
    return Parity(float(np.abs(ref - act).max()), float(cos.mean()), top1, len(ref))


@torch.no_grad()
def onnx_parity(model: nn.Module, onnx_path: str | Path, inputs: tuple[Tensor, ...],
                threads: int | None = None) -> Parity:
    """Run ``inputs`` through PyTorch and ONNX Runtime and compare the first outputs."""
    from compressor.export.runtime import feeds, ort_session

    model.eval()
    expected = model(*inputs)
    session = ort_session(onnx_path, threads)
    actual = session.run(None, feeds(session, inputs))[0]
    return compare(expected.float().cpu().numpy(), actual)
