"""Load a recipe: YAML (safe) -> overrides -> variables -> pydantic, with located errors."""
from __future__ import annotations

import copy
import difflib
import re
import types
import typing
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import yaml
from pydantic import BaseModel, ValidationError

from compressor.errors import CompressorError, RecipeError, RecipeErrors
from compressor.export.targets import TARGETS
from compressor.recipe.lines import KeyPath, format_path, nearest_line
from compressor.recipe.schema import DataSpec, ModelSpec, Recipe, StageSpec, model_sections
from compressor.recipe.space import check_space
from compressor.recipe.yamlfile import parse_yaml, read_recipe_text
from compressor.stages import STAGES  # late import: stages import the recipe package
from compressor.trust import check_arguments, import_factory
from compressor.zoo import MODELS

_VAR = re.compile(r"\$\{([A-Za-z_]\w*)\}")
#: Stage kinds that should come after these ones; a warning otherwise.


def load_recipe(source: str | Path | Mapping[str, Any], overrides: Sequence[str] = (), *,
                trust_code: bool = False) -> Recipe:
    """Read and validate a recipe from a file (a Path, or a string without a newline), YAML text
    or a dict.

    ``overrides`` are ``key.path=value`` strings (values parsed as YAML scalars, never
    evaluated); a first key that names a stage addresses that stage's parameters.
    Each ``factory:`` is import-checked (it is user code; see :mod:`compressor.trust`);
    ``trust_code`` allows factories from the modules refused by default.
    Raises :class:`RecipeErrors` listing every problem with file, key path and line.
    """
    path: Path | None = None
    if isinstance(source, Mapping):
        raw, lines = copy.deepcopy(dict(source)), {}
    else:
        if isinstance(source, Path) or "\n" not in source:
            path = Path(source)
            text = read_recipe_text(path)
        else:
            text = source
        raw, lines = parse_yaml(text, path)
    if not isinstance(raw, dict):
        raise RecipeErrors([RecipeError("expected a mapping of recipe keys at the top level",
                                        file=path, line=1)])
    raw = _apply_overrides(raw, overrides, path)
    raw = _substitute_variables(raw, path, lines)
    return _validate(raw, path, lines, trust_code=trust_code)


# --------------------------------------------------------------------------- overrides
def _apply_overrides(raw: dict[str, Any], overrides: Sequence[str], path: Path | None) -> dict:
    stage_names = _stage_names(raw.get("stages"))
    for item in overrides:
        key, sep, value_text = item.partition("=")
        if not sep or not key:
            raise RecipeErrors([RecipeError(f"override {item!r}: expected KEY.PATH=VALUE", file=path)])
        try:
            value = yaml.safe_load(value_text) if value_text.strip() else None
        except yaml.YAMLError as exc:
            raise RecipeErrors([RecipeError(f"override {item!r}: the value is not a YAML scalar "
                                            f"({getattr(exc, 'problem', None) or exc})", file=path,
                                            key="--set")]) from None
        parts = key.split(".")
        if parts[0] in stage_names:
            target = stage_names[parts[0]]
            parts = parts[1:]
            if not parts:
                raise RecipeErrors([RecipeError(
                    f"override {item!r}: {key!r} is a stage; name one of its parameters, e.g. "
                    f"{key}.{next(iter(target), 'PARAM')}={value_text or 'VALUE'}", file=path, key="--set")])
        elif parts[0] in Recipe.model_fields:
            target = raw
        else:
            known = sorted(set(Recipe.model_fields) | set(stage_names))
            raise RecipeErrors([RecipeError(
                f"override {item!r}: unknown key {parts[0]!r}{_did_you_mean(parts[0], known)}; "
                f"expected a recipe key or stage name ({', '.join(known)})", file=path, key="--set")])
        for part in parts[:-1]:
            nxt = target.get(part) if isinstance(target, dict) else None
            if nxt is None:
                nxt = target[part] = {}
            if not isinstance(nxt, dict):
                raise RecipeErrors([RecipeError(f"override {item!r}: {part!r} is not a mapping",
                                                file=path, key="--set")])
            target = nxt
        if parts:
            target[parts[-1]] = value
    return raw


def _stage_names(stages: Any) -> dict[str, dict[str, Any]]:
    """Map stage name -> its params dict in ``raw`` (creating the dict if the YAML had none)."""
    names: dict[str, dict[str, Any]] = {}
    if not isinstance(stages, list):
        return names
    for entry in stages:
        if isinstance(entry, dict) and len(entry) == 1:
            kind = next(iter(entry))
            if entry[kind] is None:
                entry[kind] = {}
            params = entry[kind]
            if isinstance(params, dict):
                names[_unique(str(params.get("name", kind)), names)] = params
    return names


def _unique(name: str, taken: Mapping[str, Any]) -> str:
    if name not in taken:
        return name
    i = 2
    while f"{name}_{i}" in taken:
        i += 1
    return f"{name}_{i}"


# --------------------------------------------------------------------------- variables
def _substitute_variables(raw: dict[str, Any], path: Path | None,
                          lines: dict[KeyPath, int]) -> dict[str, Any]:
    variables = raw.get("variables") or {}
    if not isinstance(variables, dict):
        return raw  # reported by validation

    def sub(value: Any, key: KeyPath) -> Any:
        if isinstance(value, dict):
            return {k: sub(v, key + (k,)) for k, v in value.items()}
        if isinstance(value, list):
            return [sub(v, key + (i,)) for i, v in enumerate(value)]
        if not isinstance(value, str) or "${" not in value:
            return value
        for name in _VAR.findall(value):
            if name not in variables:
                raise RecipeErrors([RecipeError(
                    f"undefined variable ${{{name}}}{_did_you_mean(name, list(variables))}; "
                    "define it under 'variables:'", file=path, key=format_path(key),
                    line=nearest_line(lines, key))])
        whole = _VAR.fullmatch(value)
        if whole:  # "${x}" keeps the variable's type
            return variables[whole.group(1)]
        return _VAR.sub(lambda m: str(variables[m.group(1)]), value)

    return {k: (v if k == "variables" else sub(v, (k,))) for k, v in raw.items()}


# --------------------------------------------------------------------------- validation
def _validate(raw: dict[str, Any], path: Path | None, lines: dict[KeyPath, int], *,
              trust_code: bool) -> Recipe:
    errors: list[RecipeError] = []
    stage_entries = raw.get("stages") or []
    top = {k: v for k, v in raw.items() if k != "stages"}
    recipe: Recipe | None = None
    try:
        recipe = Recipe.model_validate(top)
    except ValidationError as exc:
        errors += _convert(exc, Recipe, (), path, lines)

    specs: list[StageSpec] = []
    if not isinstance(stage_entries, list):
        errors.append(RecipeError("expected a list of stages, e.g. '- finetune: {epochs: 1}'",
                                  file=path, key="stages", line=nearest_line(lines, ("stages",))))
        stage_entries = []
    taken: dict[str, None] = {}
    for i, entry in enumerate(stage_entries):
        key = ("stages", i)
        if not isinstance(entry, dict) or len(entry) != 1:
            errors.append(RecipeError(
                "expected one mapping 'KIND: {params}', e.g. '- prune: {sparsity: 0.5}'",
                file=path, key=format_path(key), line=nearest_line(lines, key)))
            continue
        kind, params = next(iter(entry.items()))
        if kind not in STAGES:
            errors.append(RecipeError(
                f"unknown stage {kind!r}{_did_you_mean(str(kind), list(STAGES))}; "
                f"known stages: {', '.join(sorted(STAGES))}",
                file=path, key=format_path(key + (kind,)), line=nearest_line(lines, key + (kind,))))
            continue
        params = dict(params or {}) if isinstance(params, dict) or params is None else params
        if not isinstance(params, dict):
            errors.append(RecipeError(f"expected a mapping of {kind} parameters, got {params!r}",
                                      file=path, key=format_path(key + (kind,)),
                                      line=nearest_line(lines, key + (kind,))))
            continue
        name = params.pop("name", None)
        if name is not None and (not isinstance(name, str) or not re.fullmatch(r"[A-Za-z_]\w*", name)):
            errors.append(RecipeError(f"stage name must be an identifier, got {name!r}", file=path,
                                      key=format_path(key + (kind, "name")),
                                      line=nearest_line(lines, key + (kind, "name"))))
            continue
        name = _unique(name or kind, taken)
        taken[name] = None
        cls = STAGES[kind]
        try:
            specs.append(StageSpec(kind=kind, name=name, params=cls.Params.model_validate(params)))
        except ValidationError as exc:
            errors += _convert(exc, cls.Params, key + (kind,), path, lines)

    if recipe is not None:
        errors += _check_references(recipe, path, lines)
        errors += _check_models(model_sections(recipe.model, specs), path, lines, trust_code=trust_code)
        errors += _check_data(recipe.data, path, lines, trust_code=trust_code)
        if recipe.search is not None and len(specs) == len(stage_entries):
            errors += _check_search(recipe, specs, path, lines)
    if errors:
        raise RecipeErrors(errors)
    assert recipe is not None
    recipe.stages = specs
    recipe._source = path
    recipe._trust_code = trust_code
    recipe._warnings = _order_warnings(specs)
    return recipe


def _check_references(recipe: Recipe, path: Path | None, lines: dict[KeyPath, int]) -> list[RecipeError]:
    """Check the names of the zoo model and the target."""
    errors: list[RecipeError] = []
    if recipe.model.zoo is not None and recipe.model.zoo not in MODELS:
        errors.append(RecipeError(
            f"unknown zoo model {recipe.model.zoo!r}{_did_you_mean(recipe.model.zoo, list(MODELS))}; "
            f"known: {', '.join(sorted(MODELS))}", file=path, key="model.zoo",
            line=nearest_line(lines, ("model", "zoo"))))
    if recipe.target not in TARGETS:
        errors.append(RecipeError(
            f"unknown target {recipe.target!r}{_did_you_mean(recipe.target, list(TARGETS))}; "
            f"known: {', '.join(sorted(TARGETS))}", file=path, key="target",
            line=nearest_line(lines, ("target",))))
    return errors


#: What each file field of a model section must be.
_FILE_KINDS = {"checkpoint": "file", "torchscript": "file", "huggingface": "Hugging Face model folder"}


def _resolve_files(section: ModelSpec | DataSpec, kinds: dict[str, str], base: Path) -> Iterator[tuple[str, str]]:
    """Make the section's file fields absolute (relative to ``base``, the recipe's folder) and yield
    ``(field, problem)`` for each that is missing or of the wrong kind ("file", else a folder)."""
    for field, kind in kinds.items():
        value = getattr(section, field)
        if value is None:
            continue
        resolved = value if value.is_absolute() else base / value
        setattr(section, field, resolved)
        if not resolved.exists():
            yield field, f"no such {kind}: {resolved}"
        elif kind == "file" and not resolved.is_file():
            yield field, f"{resolved} is a directory, expected a file"
        elif kind != "file" and not resolved.is_dir():
            yield field, f"{resolved} is a file, expected a {kind}"


def _check_models(models: list[tuple[KeyPath, ModelSpec]], path: Path | None, lines: dict[KeyPath, int],
                  *, trust_code: bool) -> list[RecipeError]:
    """Resolve model files and import folders relative to the recipe and check them; import-check
    each factory (user code, refused from the families :mod:`compressor.trust` lists) and the
    arguments of factories and zoo builders."""
    errors: list[RecipeError] = []
    base = path.parent.resolve() if path else Path.cwd()

    def error(message: str, key: KeyPath) -> None:
        errors.append(RecipeError(message, file=path, key=format_path(key), line=nearest_line(lines, key)))

    for where, model in models:
        for field, problem in _resolve_files(model, _FILE_KINDS, base):
            error(problem, where + (field,))
        if model.zoo in MODELS:
            try:
                check_arguments(MODELS[model.zoo].build, model.args, f"zoo model {model.zoo!r}")
            except CompressorError as exc:
                error(str(exc), where + ("args",))
        if model.factory is None:
            continue
        model.import_path = [p if p.is_absolute() else base / p for p in model.import_path or [base]]
        try:
            fn = import_factory(model.factory, model.args, search_path=model.import_path, trust_code=trust_code)
            check_arguments(fn, model.args, f"factory {model.factory!r}")
        except CompressorError as exc:
            error(str(exc), where + ("factory",))
    return errors


#: What each file field of the data section must be.
_DATA_FILE_KINDS = {"images": "directory", "tensors": "file", "text": "file", "tokenizer": "directory"}


def _check_data(data: DataSpec, path: Path | None, lines: dict[KeyPath, int], *,
                trust_code: bool) -> list[RecipeError]:
    """Resolve the user's data files relative to the recipe and check them; import-check a data
    factory (user code, like ``model.factory``)."""
    errors: list[RecipeError] = []
    base = path.parent.resolve() if path else Path.cwd()

    def error(message: str, field: str) -> None:
        errors.append(RecipeError(message, file=path, key=f"data.{field}", line=nearest_line(lines, ("data", field))))

    for field, problem in _resolve_files(data, _DATA_FILE_KINDS, base):
        error(problem, field)
    if data.factory is not None:
        data.import_path = [p if p.is_absolute() else base / p for p in data.import_path or [base]]
        try:
            fn = import_factory(data.factory, data.args, search_path=data.import_path, trust_code=trust_code)
            check_arguments(fn, data.args, f"data factory {data.factory!r}")
        except CompressorError as exc:
            error(str(exc), "factory")
    return errors


def _check_search(recipe: Recipe, specs: list[StageSpec], path: Path | None,
                  lines: dict[KeyPath, int]) -> list[RecipeError]:
    """Search keys must name a stage and one of its fields, with values that field accepts."""
    return [RecipeError(message, file=path, key=format_path(("search",) + where),
                        line=nearest_line(lines, ("search",) + where))
            for where, message in check_space(recipe.search, specs)]


def _order_warnings(specs: list[StageSpec]) -> list[str]:
    warnings = []
    kinds = [s.kind for s in specs]
    for i, kind in enumerate(kinds):
        after = STAGES[kind].runs_after
        if "*" in after and i != len(kinds) - 1:
            warnings.append(f"stage '{specs[i].name}' ({kind}) is not last: what later stages do is not in its result")
        for later in (k for k in after if k in kinds[i + 1:]):
            warnings.append(f"stage '{specs[i].name}' ({kind}) runs before a {later} stage: "
                            f"{later} changes the weights that {kind} calibrated; put {kind} last")
    return warnings


def _convert(exc: ValidationError, model: type[BaseModel], prefix: KeyPath, path: Path | None,
             lines: dict[KeyPath, int]) -> list[RecipeError]:
    out = []
    for err in exc.errors(include_url=False):
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and "[" in p))  # drop union tags
        full = prefix + loc
        kind, msg = err["type"], err["msg"]
        if kind == "extra_forbidden":
            allowed = _fields_at(model, loc[:-1])
            hint = _did_you_mean(str(loc[-1]), allowed)
            msg = f"unknown key {loc[-1]!r}{hint}" + (f"; expected one of: {', '.join(allowed)}" if allowed else "")
        elif kind == "missing":
            msg = f"missing required key {loc[-1]!r}" if loc else "missing required key"
        elif kind == "per_layer":  # located below per_layer: the selector and the field
            full += (err["ctx"]["selector"], err["ctx"]["field"])
            msg = err["ctx"]["message"]
        else:
            msg = re.sub(r"^(Input should be|Value error,)\s*", "expected ", msg)
            msg = msg.replace("expected  ", "expected ")
            if kind != "value_error" and "input" in err:
                msg += f" (got {err['input']!r})"
        out.append(RecipeError(msg, file=path, key=format_path(full) or None,
                               line=nearest_line(lines, full)))
    return out


def _fields_at(model: type[BaseModel], loc: KeyPath) -> list[str]:
    """Names of the fields of the (nested) model found at ``loc``."""
    current: Any = model
    for part in loc:
        if typing.get_origin(current) is dict:  # ``part`` is a key of the mapping
            current = _model_in(typing.get_args(current)[1])
            continue
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return []
        field = current.model_fields.get(str(part))
        if field is None:
            return []
        current = _model_in(field.annotation)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return list(current.model_fields)
    return []


def _model_in(annotation: Any) -> Any:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                return arg
    return annotation


def _did_you_mean(word: str, options: Sequence[str]) -> str:
    match = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return f" (did you mean {match[0]!r}?)" if match else ""
