"""Stage checkpoints: weights plus the recorded stage states that rebuild the architecture.

A checkpoint never pickles modules and never makes compressor run code its caller did not name:
``restore`` builds the base model from the zoo or a Hugging Face folder recorded in it (or from
the caller's ``base`` / ``factory``), replays each stage's ``restore(model, state)`` and loads the
weights with ``torch.load(weights_only=True)``. See :mod:`compressor.trust`.
"""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

from pydantic import ValidationError
from torch import nn

from compressor.context import StageRecord
from compressor.errors import ModelLoadError, UntrustedCodeError
from compressor.io import save_torch
from compressor.recipe.schema import ModelSpec
from compressor.sources import call_builder, load_model
from compressor.stages import STAGES
from compressor.torchfile import check_model_finite, load_torch_file
from compressor.trust import import_factory

FORMAT = "compressor-checkpoint/1"
#: What a compressor checkpoint never needs: a pickle naming anything but tensors is not ours.
_UNSAFE_HINT = "a compressor checkpoint holds only tensors and plain data"


def save_checkpoint(path: Path, model: nn.Module, records: list[StageRecord], model_spec: ModelSpec) -> None:
    save_torch(path, {
        "format": FORMAT,
        "model": model_spec.model_dump(mode="json"),
        "records": [asdict(r) for r in records],
        "weights": model.state_dict(),
    })


def restore(path: str | Path, *, base: nn.Module | None = None,
            factory: str | Callable[..., nn.Module] | None = None, trust_code: bool = False) -> nn.Module:
    """Rebuild a compressed model from a checkpoint.

    The uncompressed model to start from is ``base`` if given, else the zoo model or Hugging Face
    folder the checkpoint records. A checkpoint that records a factory or TorchScript file needs
    the caller's ``factory`` (``"pkg.mod:build"`` or a callable; it gets the recorded arguments),
    or ``trust_code=True`` to use the recorded one: a file cannot make us import its code.
    """
    path = Path(path)
    ckpt = _read(path)
    records = [StageRecord(**r) for r in ckpt["records"]]
    unknown = [r.kind for r in records if r.kind not in STAGES]
    if unknown:
        raise ModelLoadError(f"{path}: records stage kind {unknown[0]!r}, which this version does not "
                             f"know (known: {', '.join(sorted(STAGES))})")
    model = base if base is not None else _base_model(path, read_model_spec(path, ckpt), factory, trust_code)
    try:
        for rec in records:
            model = STAGES[rec.kind].restore(model, rec.state)
        model.load_state_dict(ckpt["weights"])
    except (RuntimeError, KeyError, TypeError, ValueError) as exc:
        first = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
        raise ModelLoadError(f"{path}: does not fit the model it records ({first})") from None
    check_model_finite(model, source=path)
    return model.eval()


def _base_model(path: Path, spec: ModelSpec, factory: str | Callable[..., nn.Module] | None,
                trust_code: bool) -> nn.Module:
    """The uncompressed model a checkpoint starts from, built only from what the trust model allows."""
    hint = "pass factory= or base= naming the model's builder, or trust_code=True if you trust this file"
    if spec.zoo is not None or spec.huggingface is not None:
        if spec.unsafe_pickle and not trust_code:
            raise UntrustedCodeError(f"{path}: its model section sets unsafe_pickle for {spec.checkpoint}, "
                                     f"which would run code stored in that file; {hint}")
        return load_model(spec)
    if factory is not None:  # the caller's builder; the recorded import_path is data, not used
        fn = factory if callable(factory) else import_factory(factory, spec.args, trust_code=trust_code)
        return call_builder(fn, spec.args, f"factory {getattr(fn, '__qualname__', factory)!r}")
    if not trust_code:
        named = f"factory {spec.factory!r}" if spec.factory else f"TorchScript file {spec.torchscript}"
        raise UntrustedCodeError(f"{path}: its model is built by {named}, which this checkpoint names "
                                 f"but you did not; {hint}")
    return load_model(spec, trust_code=True)


def read_model_spec(path: Path, ckpt: dict[str, Any] | None = None) -> ModelSpec:
    """The model section recorded in a checkpoint (what its base model was built from)."""
    ckpt = ckpt if ckpt is not None else _read(path)
    try:
        return ModelSpec.model_validate(ckpt["model"])
    except ValidationError as exc:
        raise ModelLoadError(f"{path}: its recorded model section is invalid "
                             f"({exc.errors()[0]['msg']})") from None


def read_records(path: Path) -> list[StageRecord]:
    return [StageRecord(**r) for r in _read(path)["records"]]


def _read(path: Path) -> dict[str, Any]:
    ckpt = load_torch_file(path, unsafe_hint=_UNSAFE_HINT)
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise ModelLoadError(f"{path}: not a compressor checkpoint (expected format {FORMAT})")
    records = ckpt.get("records")
    if not (isinstance(ckpt.get("model"), dict) and isinstance(ckpt.get("weights"), dict)
            and isinstance(records, list) and all(_is_record(r) for r in records)):
        raise ModelLoadError(f"{path}: damaged compressor checkpoint (model, records or weights malformed)")
    return ckpt


def _is_record(r: Any) -> bool:
    return (isinstance(r, dict) and set(r) <= {"kind", "name", "state"} and isinstance(r.get("kind"), str)
            and isinstance(r.get("name"), str) and isinstance(r.get("state", {}), dict))
