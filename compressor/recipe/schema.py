"""The recipe as typed pydantic models.

Stages are validated against their own ``Params`` class from the stage registry, so each
stage owns its schema (the llm-compressor pattern: recipe -> stages -> typed modifiers).
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, PrivateAttr, field_validator, model_validator

from compressor.limits import MAX_BATCH, MAX_ITERATIONS, MAX_SAMPLES, MAX_SEED
from compressor.recipe.space import SearchSpec

Scalar = str | int | float | bool | None


class Strict(BaseModel):
    """Base for recipe sections: unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=(), allow_inf_nan=False)


class ModelSpec(Strict):
    """Where the model comes from: a zoo name, a checkpoint, TorchScript or a Hugging Face folder."""

    zoo: str | None = Field(None, description="Name of a zoo builder (see `compressor zoo`).")
    checkpoint: Path | None = Field(
        None, description="A state_dict file; needs `factory` (or `zoo`) for the architecture.")
    factory: str | None = Field(
        None, description="'package.module:function' that builds the architecture. User code: it is "
        "imported from import_path, the working directory or the installed packages, and called "
        "with args.", pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
    import_path: list[Path] | None = Field(
        None, description="Folders searched first for the factory's module, relative to the recipe "
        "(default: the recipe's folder).")
    torchscript: Path | None = Field(None, description="A TorchScript file (torch.jit.save).")
    huggingface: Path | None = Field(None, description="A local Hugging Face model folder.")
    args: dict[str, Any] = Field(default_factory=dict, description="Keyword arguments for the builder.")
    unsafe_pickle: bool = Field(
        False, description="Load the checkpoint with torch.load(weights_only=False). This runs "
        "code stored in the file: only for files you trust.")

    @model_validator(mode="after")
    def _one_source(self) -> "ModelSpec":
        sources = [k for k in ("zoo", "factory", "torchscript", "huggingface")
                   if getattr(self, k) is not None]
        if len(sources) != 1:
            raise ValueError("give exactly one of zoo, factory (with checkpoint), torchscript, "
                             f"huggingface (got {', '.join(sources) or 'none'})")
        if self.factory is not None and self.checkpoint is None:
            raise ValueError("'factory' needs 'checkpoint' (the state_dict to load into it)")
        if self.checkpoint is not None and sources[0] in ("torchscript", "huggingface"):
            raise ValueError(f"'checkpoint' cannot be combined with '{sources[0]}'")
        return self


class AugmentSpec(Strict):
    """Extra training sentences for label-free text tasks, so that trained stages match the original
    model on more kinds of English than the corpus holds: copies of training sentences with words
    replaced by whole words of the tokenizer's vocabulary or of other sentences, some spliced from
    two sentences. Their targets are the original model's outputs, so any input is a valid one."""

    share: float = Field(1.0, gt=0, le=4, description=(
        "Augmented sentences per training sentence, added to the training split (1: twice the steps per epoch)."))
    words: float = Field(0.3, ge=0, le=1, description="Share of an augmented sentence's words replaced.")
    vocabulary: float = Field(0.5, ge=0, le=1, description=(
        "Share of the replacement words drawn from the tokenizer's vocabulary (frequent words more often); "
        "the rest come from other training sentences."))
    splice: float = Field(0.3, ge=0, le=1, description=(
        "Share of augmented sentences that join the start of one training sentence to the end of another."))


class DataSpec(Strict):
    """The data used for fine-tuning, calibration and evaluation: a named dataset or the user's own."""

    dataset: str | None = Field(None, description="Dataset name; default: the zoo model's own (or, for a Hugging "
                                                  "Face folder, docstrings for text and synthetic images).")
    images: Path | None = Field(None, description=(
        "A folder of images: one subfolder per class (labels: accuracy) or the images directly (no labels: "
        "quality against the original model). args: size (default: the model's), mean, std."))
    tensors: Path | None = Field(None, description=(
        "A .npz or .pt file of arrays with one row per sample: the model's inputs (by input name, or one "
        "array of any name) and optional 'labels'."))
    text: Path | None = Field(None, description=(
        "A text file (one sentence per line) or .jsonl ({\"text\": ..., \"label\": ...} per line), tokenized "
        "with the model's tokenizer. args: max_length (default 64)."))
    factory: str | None = Field(
        None, pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$", description=(
            "'package.module:function' returning a DataLoader (args: its keyword arguments) whose batches are "
            "a tensor, a tuple (inputs..., labels: a 1-D integer tensor) or a dict of input names and 'labels'. "
            "User code, imported like model.factory."))
    import_path: list[Path] | None = Field(
        None, description="Folders searched first for the factory's module, relative to the recipe "
        "(default: the recipe's folder).")
    tokenizer: Path | None = Field(None, description="A Hugging Face tokenizer folder for text data "
                                                     "(default: the model's folder).")
    augment: AugmentSpec | None = Field(None, description=(
        "Text data without labels: add augmented training sentences (see AugmentSpec); default: none."))
    max_samples: PositiveInt = Field(1024, le=MAX_SAMPLES, description=(
        "Samples read from images, tensors, text or a factory (a seeded random subset of larger data; "
        "bounds memory)."))
    batch_size: PositiveInt = Field(64, le=MAX_BATCH)
    calibration_samples: PositiveInt = Field(256, le=MAX_SAMPLES, description="Samples used by PTQ calibration.")
    eval_samples: PositiveInt | None = Field(None, le=MAX_SAMPLES,
                                             description="Cap on held-out samples (None: all).")
    args: dict[str, Any] = Field(default_factory=dict, description="Dataset (or data factory) options.")

    @model_validator(mode="after")
    def _one_source(self) -> "DataSpec":
        given = [k for k in DATA_SOURCES if getattr(self, k) is not None]
        if len(given) > 1:
            raise ValueError(f"give at most one of {', '.join(DATA_SOURCES)} (got {', '.join(given)})")
        if self.augment is not None and given and given[0] in ("images", "tensors", "factory"):
            raise ValueError(f"'augment' adds text sentences; it does not apply to {given[0]} data")
        return self


#: The DataSpec keys that name where the data comes from (at most one per recipe).
DATA_SOURCES = ("dataset", "images", "tensors", "text", "factory")


class EvalSpec(Strict):
    """The quality budget: the report flags stages whose drop exceeds it."""

    max_drop: float | None = Field(None, ge=0, description="Largest allowed quality drop (absolute).")


class ReportSpec(Strict):
    """What each stage measures."""

    latency: Literal["every_stage", "final", "off"] = "every_stage"
    latency_batch: PositiveInt = Field(1, le=MAX_BATCH)
    warmup: int = Field(5, ge=0, le=MAX_ITERATIONS)
    iterations: PositiveInt = Field(30, le=MAX_ITERATIONS)


class StageSpec(BaseModel):
    """One validated stage: its registry kind, unique name and typed params."""

    model_config = ConfigDict(arbitrary_types_allowed=True)
    kind: str
    name: str
    params: Any


def model_sections(model: ModelSpec, stages: list[StageSpec]) -> list[tuple[tuple[Any, ...], ModelSpec]]:
    """Every model section with its key path: the recipe's model and any stage parameter that is
    one (a distill teacher)."""
    found: list[tuple[tuple[Any, ...], ModelSpec]] = [(("model",), model)]
    for i, spec in enumerate(stages):
        for name in type(spec.params).model_fields:
            value = getattr(spec.params, name)
            if isinstance(value, ModelSpec):
                found.append((("stages", i, spec.kind, name), value))
    return found


class Recipe(Strict):
    """A whole recipe. Build it with :func:`compressor.load_recipe`, which reports line numbers."""

    name: str | None = None
    description: str | None = None
    variables: dict[str, Scalar] = Field(default_factory=dict,
                                         description="Values referenced as ${name} elsewhere.")
    seed: int = Field(0, ge=0, le=MAX_SEED)
    model: ModelSpec
    data: DataSpec = Field(default_factory=DataSpec)
    eval: EvalSpec = Field(default_factory=EvalSpec)
    target: str = Field("cpu-x86", description="Deployment target (see `compressor targets`).")
    report: ReportSpec = Field(default_factory=ReportSpec)
    stages: list[StageSpec] = Field(default_factory=list)
    search: SearchSpec | None = Field(None, description="Search space and budget (`compressor search`).")

    _warnings: list[str] = PrivateAttr(default_factory=list)
    _source: Path | None = PrivateAttr(None)
    _trust_code: bool = PrivateAttr(False)

    @field_validator("name")
    @classmethod
    def _name_is_a_file_name(cls, name: str | None) -> str | None:
        """The name becomes a folder under runs/: one path component, never '..' or absolute."""
        if name is not None and (not name.strip() or name.startswith(".") or any(c in name for c in "/\\\0")):
            raise ValueError(f"a name usable as a folder name: no '/', '\\' or leading '.' (got {name!r})")
        return name

    @property
    def source(self) -> Path | None:
        """The file this recipe was read from, if any (relative paths resolve against it)."""
        return self._source

    @property
    def factories(self) -> list[str]:
        """The ``pkg.mod:build`` factories this recipe imports (user code): its model's, any
        stage's model section (a distill teacher) and its data loader's."""
        models = [spec.factory for _, spec in model_sections(self.model, self.stages) if spec.factory]
        return list(dict.fromkeys(models + ([self.data.factory] if self.data.factory else [])))

    @property
    def trust_code(self) -> bool:
        """Whether the caller allowed factories that :mod:`compressor.trust` refuses by default."""
        return self._trust_code

    @property
    def warnings(self) -> list[str]:
        """Non-fatal advice found while loading (e.g. stage order)."""
        return self._warnings

    def stage(self, name: str) -> StageSpec:
        for spec in self.stages:
            if spec.name == name:
                return spec
        raise KeyError(name)

    def digest(self) -> str:
        """A short hash of :meth:`to_dict`: equal for recipes that run the same way (run
        directories check it on resume, search trials use it to spot repeated configurations)."""
        text = json.dumps(self.to_dict(), sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def to_dict(self) -> dict[str, Any]:
        """The recipe as plain data that :func:`load_recipe` reads back to an equal recipe."""
        data = self.model_dump(mode="json", exclude={"stages", "variables"},
                               exclude_none=True)
        data["stages"] = []
        for spec in self.stages:
            params = spec.params.model_dump(mode="json", exclude_defaults=True)
            if spec.name != spec.kind:
                params = {"name": spec.name, **params}
            data["stages"].append({spec.kind: params})
        return data
