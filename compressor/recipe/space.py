"""The recipe's ``search`` section: which fields Optuna fills, over which domains, under which budget.

A recipe's ``search.space`` maps ``STAGE.FIELD`` (a stage name and a path into its params) to a
domain, sampled once for the stage (``value``), once per layer (``per_layer``) or once per named
group of layers (``per_group``)::

    space:
      prune.sparsity: {per_layer: [0.0, 0.7, 0.1]}            # float range with a step
      quantize.bits: {per_layer: {choices: [4, 8, 32]}}        # categorical
      lowrank.rank: {per_group: [8, 64, 8], groups: {attn: "*.attention.*", ffn: "*.intermediate.*"}}
      finetune.lr: {value: {low: 1.0e-4, high: 1.0e-2, log: true}}
      codebook.enabled: {value: {choices: [true, false]}}      # drops the stage when false
      quantize.weights.per_channel: {value: {choices: [true, false]}, when: {quantize.bits: [8]}}

Per-layer and per-group choices are written into the stage's ``per_layer: {LAYER: {field: v}}``
under exact layer names (see :mod:`compressor.layers`), so the emitted recipe says plainly what
each layer gets. ``when`` makes a field conditional on an earlier one (per layer when both are
per-layer); every field of a stage is conditional on ``STAGE.enabled`` when that is searched.

This module is the schema and its check against the recipe's stages; :mod:`compressor.search.space`
turns it into Optuna variables and writes sampled values back into a recipe.
"""
from __future__ import annotations

import math
import re
import types
import typing
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from pydantic import (BaseModel, ConfigDict, Field, NonNegativeInt, PositiveFloat, PositiveInt,
                      ValidationError, field_validator, model_validator)

from compressor.limits import MAX_TRIALS

if TYPE_CHECKING:
    import optuna

    from compressor.recipe.schema import StageSpec

Scalar = str | int | float | bool | None
Objective = Literal["quality", "latency", "size"]
_KEY = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)+$")
#: The pseudo-field that switches a whole stage on or off.
ENABLED = "enabled"
#: Marks a value that is not there (None is a valid choice).
MISSING = object()


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Domain(_Strict):
    """Values one variable may take: ``[low, high]``, ``[low, high, step]``, ``{low, high, step,
    log}`` (ints when the bounds and step are ints) or ``{choices: [...]}``."""

    low: int | float | None = None
    high: int | float | None = None
    step: int | float | None = None
    log: bool = False
    choices: list[Scalar] | None = None

    @classmethod
    def __get_pydantic_json_schema__(cls, core_schema: Any, handler: Any) -> dict[str, Any]:
        """Editors should accept the short ``[low, high, step]`` form too."""
        return {"anyOf": [{"type": "array", "items": {"type": "number"}, "minItems": 2, "maxItems": 3},
                          handler(core_schema)]}

    @model_validator(mode="before")
    @classmethod
    def _from_list(cls, data: Any) -> Any:
        if isinstance(data, (list, tuple)):
            if len(data) not in (2, 3) or not all(_is_number(v) for v in data):
                raise ValueError("a range is [low, high] or [low, high, step] of numbers; "
                                 "write {choices: [...]} for a set of values")
            return dict(zip(("low", "high", "step"), data))
        return data

    @model_validator(mode="after")
    def _check(self) -> "Domain":
        if self.choices is not None:
            if self.low is not None or self.high is not None or self.step is not None:
                raise ValueError("give either choices or low/high, not both")
            if not self.choices:
                raise ValueError("choices must not be empty")
            return self
        if self.low is None or self.high is None:
            raise ValueError("expected [low, high], [low, high, step], {low:, high:} or {choices: [...]}")
        if self.low > self.high:
            raise ValueError(f"low ({self.low}) is above high ({self.high})")
        if self.step is not None and self.step <= 0:
            raise ValueError(f"step must be positive (got {self.step})")
        if self.log and (self.low <= 0 or self.step is not None):
            raise ValueError("a log range needs low > 0 and no step")
        return self

    @property
    def is_int(self) -> bool:
        return self.choices is None and all(isinstance(v, int) for v in (self.low, self.high)) and (
            self.step is None or isinstance(self.step, int))

    def bounds(self) -> list[Scalar]:
        """The extreme values (what recipe validation checks against the field's type)."""
        return list(self.choices) if self.choices is not None else [self.low, self.high]

    def at(self, t: float) -> Scalar:
        """The value at position ``t`` in [0, 1] along the domain, in the order it is written."""
        if self.choices is not None:
            return self.choices[round(t * (len(self.choices) - 1))]
        if self.step is not None:
            value = self.low + round(t * (self._steps() - 1)) * self.step
        elif self.log:
            value = math.exp(math.log(self.low) + t * (math.log(self.high) - math.log(self.low)))
        else:
            value = self.low + t * (self.high - self.low)
        return int(round(value)) if self.is_int else round(float(value), 10)

    def grid(self, points: int = 5) -> list[Scalar]:
        """Every choice or step, or ``points`` values spread over a continuous range."""
        if self.choices is not None:
            return list(self.choices)
        count = self._steps() if self.step is not None else points
        return sorted({self.at(i / max(count - 1, 1)) for i in range(count)})

    def _steps(self) -> int:
        return int(math.floor((self.high - self.low) / self.step + 1e-9)) + 1

    def suggest(self, trial: "optuna.Trial", name: str) -> Scalar:
        if self.choices is not None:
            return trial.suggest_categorical(name, self.choices)
        if self.is_int:
            return trial.suggest_int(name, self.low, self.high, step=self.step or 1, log=self.log)
        return trial.suggest_float(name, float(self.low), float(self.high), step=self.step, log=self.log)


class ParamSpace(_Strict):
    """How one recipe field is searched: exactly one of ``value``, ``per_layer``, ``per_group``."""

    value: Domain | None = Field(None, description="One value for the whole stage.")
    per_layer: Domain | None = Field(None, description="One value per layer the stage selects.")
    per_group: Domain | None = Field(None, description="One value per group in 'groups'.")
    groups: dict[str, list[str]] | None = Field(
        None, description="Named groups of layer selectors (per_group only).")
    layers: list[str] | None = Field(
        None, description="Search only these layers (selectors; per_layer only). Default: all "
        "layers the stage selects.")
    when: dict[str, list[Scalar]] = Field(
        default_factory=dict, description="Sample only when each named earlier field has one of "
        "these values.")

    @field_validator("groups", mode="before")
    @classmethod
    def _group_lists(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {k: [v] if isinstance(v, str) else v for k, v in value.items()}
        return value

    @field_validator("layers", mode="before")
    @classmethod
    def _layer_list(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @model_validator(mode="after")
    def _one_form(self) -> "ParamSpace":
        forms = [k for k in ("value", "per_layer", "per_group") if getattr(self, k) is not None]
        if len(forms) != 1:
            raise ValueError("give exactly one of value, per_layer, per_group "
                             f"(got {', '.join(forms) or 'none'})")
        if (self.groups is not None) != (self.per_group is not None):
            raise ValueError("per_group needs 'groups: {NAME: [selectors]}', and groups need per_group")
        if self.layers is not None and self.per_layer is None:
            raise ValueError("'layers' restricts per_layer; use per_group with groups otherwise")
        return self

    @property
    def form(self) -> str:
        return next(k for k in ("value", "per_layer", "per_group") if getattr(self, k) is not None)

    @property
    def domain(self) -> Domain:
        return getattr(self, self.form)


class Budget(_Strict):
    """Hard limits a configuration must meet (Optuna constraints). Ratios are to the input model."""

    latency_ratio: PositiveFloat | None = Field(None, description="Latency / the input model's.")
    latency_ms: PositiveFloat | None = Field(None, description="Latency p50 in ms on the target.")
    size_ratio: PositiveFloat | None = Field(None, description="Storage size / the input model's.")
    size_bytes: PositiveInt | None = Field(None, description="Storage size in bytes.")

    @model_validator(mode="after")
    def _one_each(self) -> "Budget":
        if self.latency_ratio is not None and self.latency_ms is not None:
            raise ValueError("give latency_ratio or latency_ms, not both")
        if self.size_ratio is not None and self.size_bytes is not None:
            raise ValueError("give size_ratio or size_bytes, not both")
        if all(v is None for v in (self.latency_ratio, self.latency_ms, self.size_ratio, self.size_bytes)):
            raise ValueError("give at least one of latency_ratio, latency_ms, size_ratio, size_bytes")
        return self

    @property
    def limits_latency(self) -> bool:
        return self.latency_ratio is not None or self.latency_ms is not None


class CheapSpec(_Strict):
    """Caps applied to every trial so that it costs a fraction of a full run."""

    max_steps_per_epoch: PositiveInt | None = Field(
        None, description="Cap on optimizer steps per epoch of every training inside the stages.")
    epochs: PositiveInt | None = Field(None, description="Cap on epochs of every training.")
    eval_samples: PositiveInt | None = Field(None, description="Held-out samples for quality.")


class SearchSpec(_Strict):
    """``search:`` in a recipe: what `compressor search` explores and under which budget."""

    trials: PositiveInt = Field(40, le=MAX_TRIALS, description="Trials in the study (all workers together).")
    budget: Budget | None = None
    objectives: list[Objective] | None = Field(
        None, description="What Optuna optimises. Default: [quality] with a budget (constrained "
        "single objective), else [quality, latency] (Pareto front).")
    sampler: Literal["tpe", "nsga2", "random"] = "tpe"
    startup_trials: NonNegativeInt = Field(10, le=MAX_TRIALS, description="Random trials before TPE models the space.")
    population: PositiveInt = Field(16, description="NSGA-II population size.")
    pruner: Literal["median", "none"] = Field(
        "median", description="Stop trials whose quality after a stage is below the median of "
        "earlier trials at that stage (single objective only).")
    warm_start: NonNegativeInt | list[dict[str, Scalar]] = Field(
        3, description="Configurations enqueued first: N uniform ones spread over each domain in "
        "the order written, or a list of {KEY: value} applied to every layer.")
    sensitivity_seed: bool = Field(
        True, description="Also start with a configuration that keeps the layers most sensitive to "
        "quantization mildest (when a quantize stage's bits/act_bits/enabled are searched per layer).")
    cheap: CheapSpec = Field(default_factory=CheapSpec)
    latency_table: bool = Field(True, description="Measure a per-layer latency table (a cheap "
                                "predictor); its error against measured trials is reported.")
    latency_source: Literal["measure", "table"] = Field(
        "measure", description="Measure each trial on the target, or trust the table.")
    skip_infeasible: bool = Field(
        True, description="Stop a trial before training when its model already breaks the budget.")
    keep_checkpoints: bool = Field(False, description="Keep every trial's checkpoints.")
    seed: int | None = Field(None, description="Sampler seed (default: the recipe's seed).")
    space: dict[str, ParamSpace] = Field(min_length=1)

    @field_validator("space")
    @classmethod
    def _keys(cls, space: dict[str, ParamSpace]) -> dict[str, ParamSpace]:
        seen: list[str] = []
        for key, entry in space.items():
            if not _KEY.match(key):
                raise ValueError(f"{key!r}: expected STAGE.FIELD, e.g. prune.sparsity")
            if key.count(".") == 1 and key.endswith(f".{ENABLED}") and entry.form == "value" and entry.when:
                raise ValueError(f"{key}: a stage switch cannot have 'when'")
            for other in entry.when:
                if other not in seen:
                    raise ValueError(f"{key}: 'when' names {other!r}, which must be a field "
                                     "written earlier in the space")
            seen.append(key)
        return space

    @model_validator(mode="after")
    def _objectives(self) -> "SearchSpec":
        if self.objectives is None:
            self.objectives = ["quality"] if self.budget is not None else ["quality", "latency"]
        if not self.objectives or len(set(self.objectives)) != len(self.objectives):
            raise ValueError(f"objectives must be distinct and not empty (got {self.objectives})")
        if self.latency_source == "table" and not self.latency_table:
            raise ValueError("latency_source: table needs latency_table: true")
        return self

    @property
    def multi_objective(self) -> bool:
        return len(self.objectives or ()) > 1


# --------------------------------------------------------------------------- recipe checks
@dataclass(frozen=True)
class FieldRef:
    """Where a space key writes in a stage: ``params.<container>.per_layer[LAYER][field]`` or
    ``params.<path>`` for a stage-wide value."""

    key: str
    stage: str
    index: int
    path: tuple[str, ...]
    #: Path to the (nested) params object that holds ``per_layer``; None for stage-wide values.
    container: tuple[str, ...] | None = None
    #: Whether ``path`` is also a stage-wide field (else it exists only inside ``per_layer``).
    stage_field: bool = True
    #: ``STAGE.enabled`` of a stage without such a field: keeps or drops the whole stage.
    is_switch: bool = False

    @property
    def layer_field(self) -> str:
        """The name written inside ``per_layer[LAYER]``."""
        return ".".join(self.path[len(self.container or ()):])


def field_ref(key: str, entry: ParamSpace, stages: list["StageSpec"]) -> FieldRef:
    """Resolve ``STAGE.FIELD`` against the recipe's stages; ``ValueError`` says what is wrong.

    A per-layer key may also name a field that exists only inside ``per_layer`` (e.g. quantize's
    per-layer ``bits`` for its stage-wide ``weights.bits``): the stage validates those itself.
    """
    stage, *path = key.split(".")
    names = [s.name for s in stages]
    if stage not in names:
        raise ValueError(f"no stage named {stage!r}; stages: {', '.join(names) or 'none'}")
    index = names.index(stage)
    cls: Any = type(stages[index].params)
    if tuple(path) == (ENABLED,) and entry.form == "value" and ENABLED not in cls.model_fields:
        return FieldRef(key, stage, index, (ENABLED,), stage_field=False, is_switch=True)
    containers = [()] if "per_layer" in cls.model_fields else []
    stage_field = True
    for depth, part in enumerate(path):
        if not (isinstance(cls, type) and issubclass(cls, BaseModel)) or part not in cls.model_fields:
            if entry.form != "value" and containers:
                stage_field = False
                break
            known = ", ".join(cls.model_fields) if isinstance(cls, type) and issubclass(cls, BaseModel) else ""
            raise ValueError(f"stage {stage!r} ({stages[index].kind}) has no field "
                             f"{'.'.join(path[:depth + 1])!r}" + (f"; fields: {known}" if known else ""))
        cls = _model_in(cls.model_fields[part].annotation)
        if depth < len(path) - 1 and isinstance(cls, type) and issubclass(cls, BaseModel) \
                and "per_layer" in cls.model_fields:
            containers.append(tuple(path[:depth + 1]))
    if entry.form == "value":
        return FieldRef(key, stage, index, tuple(path))
    if not containers:
        raise ValueError(f"stage {stage!r} ({stages[index].kind}) has no per_layer overrides, so "
                         f"{'.'.join(path)!r} can only be searched as 'value'")
    return FieldRef(key, stage, index, tuple(path), containers[-1], stage_field)


def check_space(spec: SearchSpec, stages: list["StageSpec"]) -> list[tuple[tuple[Any, ...], str]]:
    """Problems of ``spec`` against the recipe's stages, as (key path under ``search``, message)."""
    problems: list[tuple[tuple[Any, ...], str]] = []
    for key, entry in spec.space.items():
        where = ("space", key)
        try:
            ref = field_ref(key, entry, stages)
        except ValueError as exc:
            problems.append((where, str(exc)))
            continue
        if ref.is_switch:
            if any(not isinstance(c, bool) for c in entry.domain.bounds()):
                problems.append((where + ("value",), "a stage switch takes choices of true/false"))
            continue
        for value in entry.domain.bounds():
            message = _field_accepts(stages[ref.index], ref, value)
            if message:
                problems.append((where + (entry.form,), f"value {value!r} is not valid for "
                                 f"{key}: {message}"))
                break
        for other in entry.when:
            parent = spec.space.get(other)
            if parent is not None and entry.form == "value" and parent.form != "value":
                problems.append((where + ("when",), f"a stage-wide value cannot depend on "
                                 f"{other}, which is searched {parent.form}"))
    for i, item in enumerate(spec.warm_start if isinstance(spec.warm_start, list) else []):
        for key in item:
            if key not in spec.space:
                problems.append((("warm_start", i, key), f"{key!r} is not a key of search.space"))
    return problems


def _field_accepts(stage: "StageSpec", ref: FieldRef, value: Any) -> str | None:
    """None when the stage's params validate with ``value`` written where ``ref`` points.

    Per-layer values are checked both as the stage-wide field (its type and range) and as a
    ``per_layer`` entry (the stage's own per-layer rules)."""
    attempts = []
    if ref.stage_field:
        attempts.append((ref.path, value))
    if ref.container is not None:
        attempts.append((ref.container + ("per_layer",), {"*": {ref.layer_field: value}}))
    for path, written in attempts:
        data = stage.params.model_dump()
        target = data
        for part in path[:-1]:
            if not isinstance(target.get(part), dict):
                target[part] = {}
            target = target[part]
        target[path[-1]] = written
        try:
            type(stage.params).model_validate(data)
        except ValidationError as exc:
            return "; ".join(e["msg"] for e in exc.errors(include_url=False))
    return None


def _model_in(annotation: Any) -> Any:
    """The pydantic model inside ``X | None``-style annotations (else the annotation itself)."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                return arg
    return annotation


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
