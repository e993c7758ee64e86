"""Toy search recipes, and a test-only stage with a real per-layer quality/latency trade-off, so
search tests need no other stage: each selected layer becomes the mean of ``repeat`` noisy copies
of itself. More copies average the noise away (quality up) and cost more compute (latency up).
Worker processes started from the CLI don't know the test-only stage: they run
:func:`builtin_recipe`."""
from __future__ import annotations

import copy
from typing import Any

import torch
from pydantic import Field
from torch import nn

from compressor.context import Context
from compressor.layers import LayerSelection, layer_value, select_layers
from compressor.stages.base import STAGES, Stage, StageParams, register_stage


class EnsembleParams(StageParams, LayerSelection):
    per_layer_fields = {"repeat": None, "noise": None}
    repeat: int = Field(1, ge=1, le=8, description="Noisy copies averaged per layer.")
    noise: float = Field(0.5, ge=0, description="Weight noise, in units of the weights' std.")


class NoisyEnsemble(nn.Module):
    def __init__(self, layer: nn.Module, repeat: int) -> None:
        super().__init__()
        self.copies = nn.ModuleList(copy.deepcopy(layer) for _ in range(repeat))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([c(x) for c in self.copies]).mean(0)


class Ensemble(Stage):
    Params = EnsembleParams

    def apply(self, ctx: Context) -> Context:
        p: EnsembleParams = self.params
        gen = torch.Generator().manual_seed(ctx.seed)
        repeats = {}
        for name, layer in select_layers(ctx.model, p).items():
            repeat = layer_value(name, layer, "repeat", p.repeat, p.per_layer)
            noise = layer_value(name, layer, "noise", p.noise, p.per_layer)
            ensemble = NoisyEnsemble(layer, repeat)
            with torch.no_grad():
                for c in ensemble.copies:
                    c.weight += noise * c.weight.std() * torch.randn(c.weight.shape, generator=gen)
            ctx.model.set_submodule(name, ensemble)
            repeats[name] = repeat
        self.record(repeats=repeats)
        ctx.stage_metrics["repeats"] = dict(repeats)
        return ctx

    @classmethod
    def restore(cls, model: nn.Module, state: dict[str, Any]) -> nn.Module:
        for name, repeat in state["repeats"].items():
            model.set_submodule(name, NoisyEnsemble(model.get_submodule(name), repeat))
        return model


if "ensemble" not in STAGES:
    register_stage("ensemble")(Ensemble)


def toy_recipe(**search) -> dict:
    """Random-init width-8 digits CNN: every trial takes a second or two."""
    spec = {"trials": 3, "warm_start": 1, "startup_trials": 2, "latency_table": False,
            "space": {"ensemble.repeat": {"per_layer": [1, 3]}}}
    spec.update(search)
    return {
        "name": "toy", "model": {"zoo": "digits_cnn", "args": {"pretrained": False, "width": 8}},
        "data": {"batch_size": 32, "eval_samples": 96},
        "report": {"latency_batch": 4, "iterations": 10, "warmup": 2},
        "stages": [{"ensemble": {"noise": 0.3, "ignore": ["classifier"]}},
                   {"finetune": {"epochs": 1, "max_steps_per_epoch": 8, "lr": 0.01}},
                   {"export": {}}],
        "search": spec,
    }


def builtin_recipe(**search) -> dict:
    """The toy recipe without the test-only stage, for worker processes started from the CLI."""
    recipe = toy_recipe(warm_start=0, space={"finetune.max_steps_per_epoch": {"value": [2, 12]},
                                             "finetune.lr": {"value": {"choices": [0.01, 0.02]}}}, **search)
    recipe["stages"] = recipe["stages"][1:]
    return recipe
