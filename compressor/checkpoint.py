"""Stage checkpoints: weights plus the recorded stage states that rebuild the architecture.

A checkpoint never pickles modules: ``restore`` builds the base model from the recipe's model
section, replays each stage's ``restore(model, state)`` and loads the weights, so it loads with
``torch.load(weights_only=True)``.
"""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import torch
from torch import nn

from compressor.context import StageRecord
from compressor.errors import ModelLoadError
from compressor.io import save_torch
from compressor.recipe.schema import ModelSpec
from compressor.sources import load_model
from compressor.stages import STAGES

FORMAT = "compressor-checkpoint/1"


def save_checkpoint(path: Path, model: nn.Module, records: list[StageRecord], model_spec: ModelSpec) -> None:
    save_torch(path, {
        "format": FORMAT,
        "model": model_spec.model_dump(mode="json"),
        "records": [asdict(r) for r in records],
        "weights": model.state_dict(),
    })


def restore(path: str | Path, *, base: nn.Module | None = None) -> nn.Module:
    """Rebuild a compressed model from a checkpoint (``base``: the uncompressed model to start from)."""
    path = Path(path)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ModelLoadError(f"{path}: checkpoint not found") from None
    except Exception as exc:  # corrupt zip, truncated file, unpickling refusal
        raise ModelLoadError(f"{path}: unreadable checkpoint ({exc})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise ModelLoadError(f"{path}: not a compressor checkpoint (expected format {FORMAT})")
    model = base if base is not None else load_model(ModelSpec.model_validate(ckpt["model"]))
    for rec in ckpt["records"]:
        model = STAGES[rec["kind"]].restore(model, rec["state"])
    model.load_state_dict(ckpt["weights"])
    return model.eval()


def read_records(path: Path) -> list[StageRecord]:
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    return [StageRecord(**r) for r in ckpt["records"]]
