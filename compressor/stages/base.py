"""The stage contract and its registry.

A stage is a small class registered by name with typed ``Params``. ``apply`` transforms the
shared :class:`~compressor.context.Context`; ``state`` records what ``restore`` needs to rebuild the
compressed architecture from the base model (weights are saved separately), the way TensorRT
Model Optimizer saves each mode's state.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, Callable, ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict
from torch import nn

if TYPE_CHECKING:
    from compressor.context import Context


class StageParams(BaseModel):
    """Base for stage parameters: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=(), allow_inf_nan=False)


class Stage(ABC):
    kind: ClassVar[str]
    Params: ClassVar[type[StageParams]] = StageParams
    #: Stages whose result is a file rather than a new model (export) are not checkpointed.
    changes_model: ClassVar[bool] = True

    def __init__(self, params: StageParams, name: str | None = None) -> None:
        self.params = params
        self.name = name or self.kind

    @abstractmethod
    def apply(self, ctx: "Context") -> "Context":
        """Transform ``ctx`` (usually ``ctx.model``) and return it."""

    def state(self) -> dict[str, Any]:
        """What :meth:`restore` needs; tensors, numbers, strings, lists and dicts only."""
        return {}

    @classmethod
    def restore(cls, model: nn.Module, state: dict[str, Any]) -> nn.Module:
        """Re-apply this stage's architecture change to ``model`` (before its weights load)."""
        return model


STAGES: dict[str, type[Stage]] = {}
S = TypeVar("S", bound=type[Stage])


def register_stage(kind: str) -> Callable[[S], S]:
    """Class decorator: make a stage available to recipes under ``kind``."""

    def wrap(cls: S) -> S:
        if kind in STAGES and STAGES[kind] is not cls:
            raise ValueError(f"stage kind {kind!r} registered twice")
        cls.kind = kind
        STAGES[kind] = cls
        return cls

    return wrap
