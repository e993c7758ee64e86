"""The stage contract and its registry.

A stage is a small class registered by name with typed ``Params``. ``apply`` transforms the
shared :class:`~compressor.context.Context` and :meth:`Stage.record` keeps what ``restore`` needs to
rebuild the compressed architecture from the base model (weights are saved separately), the way
TensorRT Model Optimizer saves each mode's state. Per-layer values are declared on the params
(``per_layer_fields``, checked by :class:`~compressor.layers.LayerSelection` for every stage), and
ordering advice on the class (``runs_after``).
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
    #: Kinds this stage should run after ("*": every other kind); the recipe loader warns when
    #: one of them comes later (it would change what this stage calibrated or exported).
    runs_after: ClassVar[tuple[str, ...]] = ()

    def __init__(self, params: StageParams, name: str | None = None) -> None:
        self.params = params
        self.name = name or self.kind
        self._state: dict[str, Any] = {}

    @abstractmethod
    def apply(self, ctx: "Context") -> "Context":
        """Transform ``ctx`` (usually ``ctx.model``) and return it; :meth:`record` what
        :meth:`restore` will need."""

    def record(self, **values: Any) -> None:
        """Keep ``values`` in this stage's state: tensors, numbers, strings, lists and dicts only."""
        self._state.update(values)

    def state(self) -> dict[str, Any]:
        """Everything :meth:`record` kept; the pipeline saves it in each later checkpoint."""
        return dict(self._state)

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
