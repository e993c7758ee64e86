"""Build the input model from a recipe's ``model:`` section (zoo, checkpoint, TorchScript, HF)."""
from __future__ import annotations

import importlib
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from compressor.errors import ModelLoadError
from compressor.recipe.schema import ModelSpec
from compressor.zoo import build_model
from compressor.zoo.minilm import load_sentence_embedder


def load_model(spec: ModelSpec) -> nn.Module:
    """The uncompressed model described by ``spec``, in eval mode."""
    if spec.torchscript is not None:
        model = _load_torchscript(spec.torchscript)
    elif spec.huggingface is not None:
        model = load_sentence_embedder(spec.huggingface, **spec.args)
    else:
        if spec.zoo is not None:
            args = dict(spec.args)
            if spec.checkpoint is not None:
                args.setdefault("pretrained", False)
            model = build_model(spec.zoo, **args)
        else:
            model = _call_factory(str(spec.factory), spec.args)
        if spec.checkpoint is not None:
            load_weights(model, read_checkpoint(spec.checkpoint, unsafe_pickle=spec.unsafe_pickle),
                         source=spec.checkpoint)
    return model.eval()


def read_checkpoint(path: Path, *, unsafe_pickle: bool = False) -> dict[str, torch.Tensor]:
    """A state_dict from ``path``; accepts {'state_dict': ...} and {'model': ...} wrappers.

    Uses ``torch.load(weights_only=True)``: a checkpoint cannot run code unless the recipe sets
    ``model.unsafe_pickle: true``.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"{path}: checkpoint file not found")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=not unsafe_pickle)
    except pickle.UnpicklingError as exc:
        if unsafe_pickle or "Unsupported global" not in str(exc):
            raise ModelLoadError(f"{path}: corrupt or not a PyTorch checkpoint") from None
        raise ModelLoadError(
            f"{path}: refused to unpickle objects other than tensors (torch.load weights_only=True). "
            "Save a state_dict instead, or, only if you trust this file, set "
            "'model.unsafe_pickle: true' in the recipe.") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as exc:
        raise ModelLoadError(f"{path}: corrupt or not a PyTorch checkpoint ({exc})") from None
    for key in ("state_dict", "model_state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if isinstance(obj, nn.Module):
        obj = obj.state_dict()
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ModelLoadError(f"{path}: expected a state_dict (a mapping of names to tensors), "
                             f"got {type(obj).__name__}")
    return obj


def load_weights(model: nn.Module, state: dict[str, torch.Tensor], *, source: Any = "checkpoint") -> None:
    """``load_state_dict(strict=True)`` with an error that names what does not match."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
              for k in own if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing key(s), first {missing[0]!r}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s), first {unexpected[0]!r}")
        if shapes:
            parts.append(f"{len(shapes)} shape mismatch(es), first {shapes[0]}")
        raise ModelLoadError(f"{source}: state_dict does not match {type(model).__name__}: "
                             + "; ".join(parts))
    model.load_state_dict(state)


def _call_factory(factory: str, args: dict[str, Any]) -> nn.Module:
    module_name, _, fn_name = factory.partition(":")
    try:
        fn = getattr(importlib.import_module(module_name), fn_name)
    except (ImportError, AttributeError) as exc:
        raise ModelLoadError(f"model.factory {factory!r}: cannot import ({exc})") from None
    model = fn(**args)
    if not isinstance(model, nn.Module):
        raise ModelLoadError(f"model.factory {factory!r} returned {type(model).__name__}, "
                             "expected a torch.nn.Module")
    return model


def _load_torchscript(path: Path) -> nn.Module:
    try:
        return torch.jit.load(str(path), map_location="cpu")
    except (RuntimeError, ValueError) as exc:
        raise ModelLoadError(f"{path}: not a TorchScript file ({str(exc).splitlines()[0]})") from None
