"""Optuna variables of a recipe's search space, and how a trial's choices become a recipe.

The space itself (domains, budget, which ``STAGE.FIELD`` keys exist) is recipe schema:
:mod:`compressor.recipe.space`. Here it is expanded against the input model's layer names into
:class:`Variable` objects, sampled per trial, and written back into the recipe: per-layer and
per-group choices go into the stage's ``per_layer: {LAYER: {field: v}}`` under exact layer names
(see :mod:`compressor.layers`), so the emitted recipe says plainly what each layer gets.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from compressor.errors import CompressorError
from compressor.layers import LayerSelection, layer_value, matches, select_layers
from compressor.recipe.space import (ENABLED, MISSING, Domain, FieldRef, ParamSpace, Scalar, SearchSpec,
                                     field_ref)

if TYPE_CHECKING:
    import optuna
    from torch import nn

    from compressor.recipe.schema import Recipe


# --------------------------------------------------------------------------- variables
@dataclass(frozen=True)
class Variable:
    """One Optuna parameter: a space key for the whole stage, one layer, or one group."""

    name: str
    key: str
    domain: Domain
    ref: FieldRef
    #: Exact layer names the value is written for; empty for a stage-wide value.
    layers: tuple[str, ...] = ()
    #: Conditions: (variable name, allowed values); all must hold for this one to be sampled.
    when: tuple[tuple[str, tuple[Scalar, ...]], ...] = field(default=())


def resolve(spec: SearchSpec, recipe: "Recipe", model: "nn.Module") -> list[Variable]:
    """Expand the space into Optuna variables against the input model's layer names."""
    out: list[Variable] = []
    by_key: dict[str, list[Variable]] = {}
    for key, entry in spec.space.items():
        ref = field_ref(key, entry, recipe.stages)
        layer_sets = _layer_sets(key, entry, ref, recipe, model)
        variables = []
        for label, layers in layer_sets:
            name = key if label is None else f"{key}[{label}]"
            conditions = []
            switch = by_key.get(f"{ref.stage}.{ENABLED}")
            if switch and switch[0].ref.is_switch and not ref.is_switch:
                conditions.append((switch[0].name, (True,)))
            for other, allowed in entry.when.items():
                parent = _parent(by_key[other], layers)
                if parent is None:
                    raise CompressorError(f"search.space.{key}: 'when: {other}' covers none of "
                                          f"the layers {', '.join(layers)}")
                conditions.append((parent.name, tuple(allowed)))
            variables.append(Variable(name, key, entry.domain, ref, layers, tuple(conditions)))
        by_key[key] = variables
        out += variables
    return out


def _layer_sets(key: str, entry: ParamSpace, ref: FieldRef, recipe: "Recipe",
                model: "nn.Module") -> list[tuple[str | None, tuple[str, ...]]]:
    """(label, exact layer names) of each variable of ``key``.

    Layers are those the stage selects (its layers/ignore) among Conv/Linear modules; selectors
    under ``layers`` or ``groups`` that match none of those match any module instead (e.g.
    attention blocks for head pruning).
    """
    if entry.form == "value":
        return [(None, ())]
    container: Any = recipe.stages[ref.index].params
    for part in ref.container or ():
        container = getattr(container, part)
    selection = LayerSelection(layers=getattr(container, "layers", ["*"]),
                               ignore=getattr(container, "ignore", []))
    typed = select_layers(model, selection)

    def named(selectors: list[str]) -> tuple[str, ...]:
        found = tuple(n for n, m in typed.items() if any(matches(n, m, s) for s in selectors))
        return found or tuple(n for n, m in model.named_modules()
                              if n and any(matches(n, m, s) for s in selectors)
                              and not any(matches(n, m, s) for s in selection.ignore))

    if entry.form == "per_layer":
        names = tuple(typed) if entry.layers is None else named(entry.layers)
        if not names:
            raise CompressorError(f"search.space.{key}: no layer of the model matches the stage's "
                                  f"selection{' and ' + str(entry.layers) if entry.layers else ''}")
        return [(n, (n,)) for n in names]
    sets = []
    for group, selectors in (entry.groups or {}).items():
        names = named(selectors)
        if not names:
            raise CompressorError(f"search.space.{key}.groups.{group}: no layer matches {selectors}")
        sets.append((group, names))
    return sets


def _parent(candidates: list[Variable], layers: tuple[str, ...]) -> Variable | None:
    """The variable of a 'when' key that governs ``layers`` (a stage-wide one governs all)."""
    for var in candidates:
        if not var.layers or not layers or set(layers) <= set(var.layers):
            return var
    return None


def current_value(var: Variable, recipe: "Recipe", model: "nn.Module") -> Any:
    """The value the recipe as written gives ``var`` (``MISSING`` if its layers disagree)."""
    params: Any = recipe.stages[var.ref.index].params
    if var.ref.is_switch:
        return True
    if not var.layers:
        for part in var.ref.path:
            params = getattr(params, part)
        return params
    for part in var.ref.container or ():
        params = getattr(params, part)
    default: Any = params
    for part in var.ref.path[len(var.ref.container or ()):]:
        default = getattr(default, part, MISSING)
    found = [layer_value(n, model.get_submodule(n), var.ref.layer_field, default, params.per_layer)
             for n in var.layers]
    return found[0] if all(v == found[0] for v in found) else MISSING


def sample(trial: "optuna.Trial", variables: list[Variable]) -> dict[str, Scalar]:
    """Suggest every active variable, in order (conditions refer to earlier ones)."""
    values: dict[str, Scalar] = {}
    for var in variables:
        if all(values.get(name, MISSING) in allowed for name, allowed in var.when):
            values[var.name] = var.domain.suggest(trial, var.name)
    return values



def uniform(variables: list[Variable], by_key: dict[str, Scalar]) -> dict[str, Scalar]:
    """A configuration that gives every layer of a key the same value (keys not given: omitted)."""
    return {v.name: by_key[v.key] for v in variables if v.key in by_key}


def warm_start_configs(spec: SearchSpec, variables: list[Variable]) -> list[dict[str, Scalar]]:
    """The uniform configurations the study starts with (see ``SearchSpec.warm_start``)."""
    if isinstance(spec.warm_start, list):
        return [uniform(variables, item) for item in spec.warm_start]
    n = spec.warm_start
    points = [0.5] if n == 1 else [i / (n - 1) for i in range(n)]
    return [uniform(variables, {key: entry.domain.at(t) for key, entry in spec.space.items()})
            for t in points]


def apply(recipe: "Recipe", variables: list[Variable], values: dict[str, Scalar]) -> dict[str, Any]:
    """The recipe (as plain data, without ``search``) with a trial's values written in."""
    data = recipe.to_dict()
    data.pop("search", None)
    params = [next(iter(entry.values())) for entry in data["stages"]]
    dropped: set[int] = set()
    for var in variables:
        if var.name not in values:
            continue
        value, ref = values[var.name], var.ref
        if ref.is_switch:
            if not value:
                dropped.add(ref.index)
            continue
        if not var.layers:
            target = _dig(params[ref.index], ref.path[:-1])
            target[ref.path[-1]] = value
            continue
        per_layer = _dig(params[ref.index], ref.container or ()).setdefault("per_layer", {})
        for layer in var.layers:
            per_layer.setdefault(layer, {})[ref.layer_field] = value
    data["stages"] = [s for i, s in enumerate(data["stages"]) if i not in dropped]
    return data


def _dig(data: dict[str, Any], path: tuple[str, ...]) -> dict[str, Any]:
    for part in path:
        data = data.setdefault(part, {})
    return data
