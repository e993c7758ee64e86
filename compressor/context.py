"""The state that stages share: the model being compressed and everything around it."""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from torch import nn
from tqdm.auto import tqdm

from compressor import distributed
from compressor.export.targets import Target
from compressor.recipe.schema import Recipe
from compressor.task import Task


@dataclass
class StageRecord:
    """What a finished stage leaves behind for checkpoints: its kind, name and ``state()``."""

    kind: str
    name: str
    state: dict[str, Any] = field(default_factory=dict)


#: Rebuilds a model from a stage checkpoint path (``base``: the uncompressed model to start from).
Restore = Callable[..., nn.Module]


@dataclass
class Context:
    model: nn.Module
    task: Task
    recipe: Recipe
    target: Target
    run_dir: Path
    #: The uncompressed input model (kept frozen; teacher "original").
    original: nn.Module
    #: ``compressor.checkpoint.restore``, handed in by the pipeline: checkpoints replay stages, so
    #: stages reach them through the context rather than by import.
    restore: Restore = field(repr=False)
    #: States of the stages applied so far, in order (saved in every checkpoint).
    records: list[StageRecord] = field(default_factory=list)
    #: Checkpoint path of each finished stage, by stage name.
    checkpoints: dict[str, Path] = field(default_factory=dict)
    #: Files produced so far (e.g. {"onnx": ".../deploy/model.onnx"}).
    artifacts: dict[str, str] = field(default_factory=dict)
    #: Extra metrics the current stage reports (merged into its row of the report).
    stage_metrics: dict[str, Any] = field(default_factory=dict)
    #: Seed of the current stage (derived from the recipe seed and the stage index).
    seed: int = 0
    #: Quality of the uncompressed model (the report's first row): what ``eval.max_drop`` counts from.
    baseline_quality: float | None = None

    def model_before(self, stage_name: str) -> nn.Module:
        """A fresh copy of the model as it was before stage ``stage_name`` ran."""
        names = [s.name for s in self.recipe.stages]
        if stage_name not in names:
            raise KeyError(f"no stage named {stage_name!r}; stages: {', '.join(names)}")
        for previous in reversed(names[:names.index(stage_name)]):
            if previous in self.checkpoints:
                return self.restore(self.checkpoints[previous], base=copy.deepcopy(self.original))
        return copy.deepcopy(self.original)

    def log(self, message: str) -> None:
        if distributed.is_main():  # one copy of each line under torchrun
            tqdm.write(message)
