"""Registries of zoo model builders and datasets (timm-style: one file per family)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from torch import nn

from compressor.task import Task


@dataclass(frozen=True)
class ZooModel:
    name: str
    build: Callable[..., nn.Module]
    dataset: str
    description: str
    #: How the weights are obtained: "trained on first use", "pretrained (package)", "random".
    weights: str


@dataclass(frozen=True)
class ZooDataset:
    name: str
    #: build(model, **args) -> Task. ``model`` is the uncompressed model (fidelity targets).
    build: Callable[..., Task]
    description: str


MODELS: dict[str, ZooModel] = {}
DATASETS: dict[str, ZooDataset] = {}


def register_model(name: str, *, dataset: str, description: str, weights: str) -> Callable:
    def wrap(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        MODELS[name] = ZooModel(name, fn, dataset, description, weights)
        return fn
    return wrap


def register_dataset(name: str, *, description: str) -> Callable:
    def wrap(fn: Callable[..., Task]) -> Callable[..., Task]:
        DATASETS[name] = ZooDataset(name, fn, description)
        return fn
    return wrap


def build_model(name: str, **args: Any) -> nn.Module:
    return MODELS[name].build(**args)
