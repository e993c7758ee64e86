"""Build the input model from a recipe's ``model:`` section (zoo, checkpoint, TorchScript, HF),
and import the Python functions recipes name (``model.factory``, ``data.factory``)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from torch import nn

from compressor.errors import ModelLoadError
from compressor.hf import load_hf_model
from compressor.recipe.schema import ModelSpec
from compressor.torchfile import check_model_finite, load_torch_file
from compressor.trust import check_arguments, import_factory, importable_from
from compressor.zoo import MODELS


def load_model(spec: ModelSpec, *, trust_code: bool = False) -> nn.Module:
    """The uncompressed model described by ``spec``, in eval mode.

    ``trust_code``: allow a factory from the modules :mod:`compressor.trust` refuses.
    Weights holding NaN or infinity are refused here, before any stage spends time on them.
    """
    if spec.torchscript is not None:
        model = _load_torchscript(spec.torchscript)
    elif spec.huggingface is not None:
        model = call_builder(load_hf_model, spec.args, "model.args (huggingface)", spec.huggingface)
    else:
        if spec.zoo is not None:
            if spec.zoo not in MODELS:
                raise ModelLoadError(f"unknown zoo model {spec.zoo!r}; known: {', '.join(sorted(MODELS))}")
            args = dict(spec.args)
            if spec.checkpoint is not None:
                args.setdefault("pretrained", False)
            model = call_builder(MODELS[spec.zoo].build, args, f"zoo model {spec.zoo!r}")
        else:
            factory = str(spec.factory)
            fn = import_factory(factory, spec.args, search_path=spec.import_path or (),
                                trust_code=trust_code)
            with importable_from(spec.import_path or ()):  # imports the factory makes while it runs
                model = call_builder(fn, spec.args, f"model.factory {factory!r}")
        if spec.checkpoint is not None:
            load_weights(model, read_checkpoint(spec.checkpoint, unsafe_pickle=spec.unsafe_pickle),
                         source=spec.checkpoint)
    check_model_finite(model, source=spec.checkpoint or spec.torchscript or spec.huggingface
                       or spec.factory or f"zoo model {spec.zoo!r}")
    return model.eval()


def call_builder(fn: Callable[..., Any], args: Mapping[str, Any], what: str, *positional: Any) -> nn.Module:
    """``fn(*positional, **args)``, which must return a module; wrong arguments and the builder's
    own exceptions become one :class:`ModelLoadError` line (``--debug`` shows the traceback)."""
    check_arguments(fn, args, what, *positional)
    try:
        model = fn(*positional, **args)
    except ModelLoadError:
        raise
    except Exception as exc:
        raise ModelLoadError(f"{what} raised {type(exc).__name__}: {exc}") from exc
    if not isinstance(model, nn.Module):
        raise ModelLoadError(f"{what} returned {type(model).__name__}, expected a torch.nn.Module")
    return model


def read_checkpoint(path: Path, *, unsafe_pickle: bool = False) -> dict[str, torch.Tensor]:
    """A state_dict from ``path``; accepts {'state_dict': ...} and {'model': ...} wrappers.

    Uses ``torch.load(weights_only=True)``: a checkpoint cannot run code unless the recipe sets
    ``model.unsafe_pickle: true``.
    """
    path = Path(path)
    obj = load_torch_file(path, unsafe_pickle=unsafe_pickle)
    for key in ("state_dict", "model_state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if isinstance(obj, nn.Module):
        obj = obj.state_dict()
    if not isinstance(obj, dict):
        raise ModelLoadError(f"{path}: expected a state_dict (a mapping of names to tensors), "
                             f"got {type(obj).__name__}")
    odd = next((k for k, v in obj.items() if not isinstance(v, torch.Tensor)), None)
    if odd is not None:
        raise ModelLoadError(f"{path}: expected a state_dict (a mapping of names to tensors), but "
                             f"{odd!r} holds a {type(obj[odd]).__name__}")
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


def _load_torchscript(path: Path) -> nn.Module:
    if not path.is_file():
        raise ModelLoadError(f"{path}: {'is a directory, expected' if path.is_dir() else 'no such'} "
                             "TorchScript file")
    try:
        return torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:  # RuntimeError, ValueError, zip errors on junk
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ModelLoadError(f"{path}: not a TorchScript file ({first})") from None
