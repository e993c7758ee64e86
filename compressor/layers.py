"""Layer selection shared by stages: name globs, regexes, module types, ignore lists, per-layer values.

Selectors in recipes:
  "features.*"        glob on the module's qualified name
  "re:^blocks\\.\\d+$"  regular expression on the name
  "type:Conv2d"       module class name
Per-layer values (``per_layer: {SELECTOR: {field: value}}``) override a stage's defaults for the
layers they match; an exact name wins over a pattern, and later patterns win over earlier ones.
Search writes its per-layer choices there, under exact names.
"""
from __future__ import annotations

import fnmatch
import re
from typing import Annotated, Any, ClassVar, Iterable, Mapping

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator
from pydantic_core import PydanticCustomError
from torch import nn

DEFAULT_TYPES: tuple[type[nn.Module], ...] = (nn.Conv2d, nn.Linear)


class LayerSelection(BaseModel):
    """Recipe fields that pick layers; stages embed these."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    layers: list[str] = Field(default_factory=lambda: ["*"],
                              description="Selectors of layers to compress (glob, 're:REGEX', 'type:CLASS').")
    ignore: list[str] = Field(default_factory=list, description="Selectors of layers to leave alone.")
    per_layer: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="Per-layer overrides: {SELECTOR: {field: value}}.")
    #: What ``per_layer`` may set: field name -> its type (None: the type and bounds of the stage's
    #: own field of that name). Each stage's params declare theirs ({} for none) and the one check
    #: below serves all; a plain selection (None) leaves the values to whoever reads them.
    per_layer_fields: ClassVar[dict[str, Any] | None] = None

    @field_validator("per_layer")
    @classmethod
    def _check_per_layer(cls, per_layer: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        if cls.per_layer_fields is not None:
            check_per_layer(cls, per_layer, cls.per_layer_fields)
        return per_layer

    @field_validator("layers", "ignore", "per_layer")
    @classmethod
    def _regexes_compile(cls, selectors: Iterable[str]) -> Any:
        for selector in selectors:
            if selector.startswith("re:"):
                try:
                    re.compile(selector[3:])
                except re.error as exc:
                    raise ValueError(f"a valid regular expression after 're:', got {selector!r} ({exc})") from None
        return selectors


def matches(name: str, module: nn.Module, selector: str) -> bool:
    if selector.startswith("re:"):
        return re.search(selector[3:], name) is not None
    if selector.startswith("type:"):
        return type(module).__name__ == selector[5:]
    return fnmatch.fnmatchcase(name, selector)


def select_layers(model: nn.Module, selection: LayerSelection,
                  types: Iterable[type[nn.Module]] = DEFAULT_TYPES) -> dict[str, nn.Module]:
    """Modules of ``types`` matched by ``selection.layers`` and not by ``selection.ignore``."""
    types = tuple(types)
    return pick(((name, m) for name, m in model.named_modules() if name and isinstance(m, types)),
                selection)


def pick(candidates: Iterable[tuple[str, nn.Module]], selection: LayerSelection) -> dict[str, nn.Module]:
    """The named modules among ``candidates`` that ``selection`` picks (for non-default types)."""
    return {name: m for name, m in candidates
            if any(matches(name, m, s) for s in selection.layers)
            and not any(matches(name, m, s) for s in selection.ignore)}


def layer_value(name: str, module: nn.Module, field: str, default: Any,
                per_layer: Mapping[str, Mapping[str, Any]]) -> Any:
    """The value of ``field`` for layer ``name``: exact entry, else last matching pattern, else default."""
    if name in per_layer and field in per_layer[name]:
        return per_layer[name][field]
    value = default
    for selector, values in per_layer.items():
        if field in values and selector != name and matches(name, module, selector):
            value = values[field]
    return value


def materialize(model: nn.Module) -> nn.Module:
    """Replace, in place, every module that defines ``to_dense()`` (a layer storing its weights
    compactly, e.g. a codebook layer) by the plain layer it computes, with the same weights."""
    for name, module in list(model.named_modules()):
        if name and hasattr(module, "to_dense"):
            model.set_submodule(name, module.to_dense())
    return model


def check_per_layer(params_type: type[BaseModel], per_layer: Mapping[str, Mapping[str, Any]],
                    fields: Mapping[str, Any]) -> None:
    """Only ``fields`` may be set per layer, each value checked against its type (None: the type
    and bounds of ``params_type``'s field of that name).

    Raises a ``per_layer`` pydantic error whose context holds the key path below ``per_layer``
    (selector, field), so that the recipe loader points at the exact line.
    """
    for selector, values in per_layer.items():
        for name, value in values.items():
            if name not in fields:
                raise _per_layer_error((selector, name), f"unknown field {name!r}; {_settable(fields)}")
            kind = fields[name]
            if kind is None:
                info = params_type.model_fields[name]
                kind = Annotated[info.annotation, *info.metadata] if info.metadata else info.annotation
            try:
                TypeAdapter(kind).validate_python(value)
            except ValidationError as exc:
                raise _per_layer_error((selector, name), exc.errors()[0]["msg"]) from None


def _per_layer_error(path: tuple[str, str], message: str) -> PydanticCustomError:
    return PydanticCustomError("per_layer", "{text}", {"selector": path[0], "field": path[1], "message": message,
                                                       "text": f"per_layer[{path[0]!r}].{path[1]}: {message}"})


def _settable(fields: Mapping[str, Any]) -> str:
    names = [f"'{n}'" for n in fields]
    if not names:
        return "this stage takes no per-layer values"
    listed = names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"
    return f"only {listed} can be set per layer"
