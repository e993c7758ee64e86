"""Read ``torch.save`` files without running code, and check that a model's weights are finite."""
from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch
from torch import nn

from compressor.errors import ModelLoadError

UNSAFE_PICKLE = "refused: unsafe pickle"


def load_torch_file(path: str | Path, *, unsafe_pickle: bool = False,
                    unsafe_hint: str = "use unsafe_pickle: true only for files you trust") -> Any:
    """``torch.load(path, weights_only=not unsafe_pickle)`` with one clear error per failure.

    A pickle that torch's weights-only unpickler refuses (a global other than tensors and plain
    containers, such as ``os.system`` or a class; torch 2.13 says "unsupported GLOBAL", older
    versions "Unsupported global"; or an opcode it does not read) is refused with
    :data:`UNSAFE_PICKLE` and ``unsafe_hint``.
    """
    path = Path(path)
    if path.is_dir():
        raise ModelLoadError(f"{path}: is a directory, expected a checkpoint file")
    if not path.is_file():
        raise ModelLoadError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise ModelLoadError(f"{path}: empty file, not a PyTorch checkpoint")
    try:
        return torch.load(path, map_location="cpu", weights_only=not unsafe_pickle)
    except pickle.UnpicklingError as exc:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        detail = next((line for line in lines if line.lower().startswith(("unsupported", "trying to load"))),
                      None)
        if not unsafe_pickle and "Weights only load failed" in str(exc) and _is_pickle(path):
            raise ModelLoadError(f"{path}: {UNSAFE_PICKLE} ({unsafe_hint})"
                                 + (f"; {detail}" if detail else "")) from None
        raise ModelLoadError(f"{path}: corrupt or not a PyTorch checkpoint") from None
    except MemoryError:
        raise ModelLoadError(f"{path}: too large to load into memory") from None
    except Exception as exc:  # torch raises KeyError, IndexError, RuntimeError, EOFError... on junk
        first = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise ModelLoadError(f"{path}: corrupt or not a PyTorch checkpoint ({first})") from None


def _is_pickle(path: Path) -> bool:
    """Whether ``path`` is a pickle (protocol 2+ starts with the PROTO opcode) or a torch zip
    holding one, rather than bytes the unpickler merely failed on."""
    with path.open("rb") as f:
        head = f.read(2)
    return head[:1] == b"\x80" or head == b"PK"


def check_model_finite(model: nn.Module, *, source: Any) -> None:
    """Refuse a model whose parameters hold NaN or infinity, or whose buffers hold NaN (a mask
    buffer may legitimately hold -inf), naming the first such tensor: it would run every stage
    to the end and report a meaningless quality."""
    tensors = [(name, t, False) for name, t in model.named_parameters()]
    tensors += [(name, t, True) for name, t in model.named_buffers()]
    for name, tensor, is_buffer in tensors:
        if not tensor.is_floating_point():
            continue
        nan = torch.isnan(tensor)
        bad = nan if is_buffer else ~torch.isfinite(tensor)
        if bool(bad.any()):
            kind = "NaN" if bool(nan.any()) else "infinity"
            raise ModelLoadError(f"{source}: {'buffer' if is_buffer else 'tensor'} {name!r} holds {kind} "
                                 f"({int(bad.sum())} of {tensor.numel()} values); a model with "
                                 "non-finite weights cannot be compressed or evaluated")
