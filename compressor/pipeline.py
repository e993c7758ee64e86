"""Run a recipe: stages in order, a checkpoint and a metrics row after each, resumable."""
from __future__ import annotations

import copy
import dataclasses
import inspect
import json
import random
import time
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import yaml
from tqdm.auto import tqdm

from compressor import distributed
from compressor.checkpoint import read_model_spec, read_records, restore, save_checkpoint
from compressor.context import Context, Restore, StageRecord
from compressor.data import user_task
from compressor.errors import CompressorError
from compressor.export.bench import onnx_latency
from compressor.export.targets import get_target
from compressor.hf import input_spec
from compressor.io import write_json, write_text
from compressor.metrics import count_macs, count_nonzero, count_params, storage_bytes
from compressor.recipe.loader import load_recipe
from compressor.recipe.schema import Recipe
from compressor.report import Report
from compressor.rundir import RUN_STATE, default_run_dir, prepare_run_dir
from compressor.sources import load_model
from compressor.stages import STAGES
from compressor.task import BASELINE_MARGIN, Task, fidelity_baselines, near_baseline
from compressor.zoo import DATASETS, MODELS

#: Called after each stage with (stage index, spec, metrics row, context); may raise to stop the run.
StageHook = Callable[[int, Any, dict[str, Any], Context], None]


def build_task(recipe: Recipe, original: torch.nn.Module) -> Task:
    """The recipe's data as a Task: the user's own (images, tensors, text, factory) or a named dataset."""
    own = user_task(recipe.data, original, recipe.seed, trust_code=recipe.trust_code)
    if own is not None:
        return configure_task(own, recipe)
    name = recipe.data.dataset or default_dataset(recipe, original)
    if name is None:
        raise CompressorError("data: give the data (dataset, images, tensors, text or factory); only zoo models "
                              f"and Hugging Face folders have a default. Known datasets: {', '.join(sorted(DATASETS))}")
    if name not in DATASETS:
        raise CompressorError(f"data.dataset: unknown dataset {name!r}; known: {', '.join(sorted(DATASETS))}")
    args = dict(recipe.data.args)
    if recipe.data.tokenizer is not None:
        if "tokenizer" not in inspect.signature(DATASETS[name].build).parameters:
            raise CompressorError(f"data.tokenizer: dataset {name!r} does not tokenize text")
        args["tokenizer"] = recipe.data.tokenizer
    if recipe.data.augment is not None:
        if "augment" not in inspect.signature(DATASETS[name].build).parameters:
            raise CompressorError(f"data.augment: dataset {name!r} is not text without labels; augmentation "
                                  "applies to the text datasets (english, docstrings) and data.text")
        args["augment"] = recipe.data.augment
    return configure_task(DATASETS[name].build(model=original, **args), recipe)


def default_dataset(recipe: Recipe, original: torch.nn.Module) -> str | None:
    """The zoo model's own dataset; for a Hugging Face model, docstrings (text) or synthetic images."""
    if recipe.model.zoo:
        return MODELS[recipe.model.zoo].dataset
    spec = input_spec(original)
    if spec is None:
        return None
    return "docstrings" if spec.modality == "text" else "imagenet-synthetic"


def configure_task(task: Task, recipe: Recipe) -> Task:
    """``task`` with the recipe's batch size and sample counts (a copy: the data is shared)."""
    return dataclasses.replace(task, batch_size=recipe.data.batch_size, eval_samples=recipe.data.eval_samples,
                               calibration_samples=recipe.data.calibration_samples)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class Pipeline:
    """Executes a recipe into a run directory (its layout: README.md, "What the demo does").

    Under torchrun every rank runs it (compressor/distributed.py, docs/scaling.md): the ranks check
    they read the same recipe, train data-parallel, agree on each stage's result; rank 0 alone
    writes the run directory and runs the export.
    """

    def __init__(self, recipe: Recipe, run_dir: str | Path | None = None, *, overwrite: bool = False,
                 on_stage: StageHook | None = None, light: bool = False,
                 base: tuple[torch.nn.Module, Task] | None = None) -> None:
        """For callers that run many pipelines on one model, such as search trials: ``light``
        skips what only a person reads (MACs, the plot, further held-out sets, fidelity baselines);
        ``base`` is the input model (left unchanged) and its task, already built from the same
        model and dataset."""
        self.recipe = recipe
        self.run_dir = Path(run_dir) if run_dir else _default_run_dir(recipe)
        self.overwrite = overwrite
        self.on_stage = on_stage
        self.light = light
        self.base = base

    @classmethod
    def resume(cls, run_dir: str | Path, *, trust_code: bool = False) -> "Pipeline":
        """Continue the run in ``run_dir`` with its saved recipe; finished stages are skipped."""
        run_dir = Path(run_dir)
        if not (run_dir / RUN_STATE).is_file():
            raise CompressorError(f"{run_dir}: not a run directory (no {RUN_STATE}); nothing to resume")
        pipe = cls(load_recipe(run_dir / "recipe.yaml", trust_code=trust_code), run_dir)
        pipe._resuming = True
        return pipe

    _resuming = False

    # ------------------------------------------------------------------ main loop
    def run(self) -> Report:
        with distributed.process_group():
            return self._run()

    def _run(self) -> Report:
        recipe = self.recipe
        distributed.check_same("the recipe", recipe.to_dict(),
                               "launch every rank with the same recipe file and --set overrides")
        self.run_dir = distributed.share(self.run_dir)  # the default one is named after rank 0's clock
        seed_everything(recipe.seed)
        if self.base is not None:
            original, task = self.base[0], configure_task(self.base[1], recipe)
        else:  # before the run directory exists: a model that does not load leaves nothing behind
            original = load_model(recipe.model, trust_code=recipe.trust_code)
            task = build_task(recipe, original)
        state = distributed.share(distributed.main_only(self._prepare_run_dir))  # rank 0 alone writes
        for p in original.parameters():
            p.requires_grad_(False)
        target = get_target(recipe.target)
        model = copy.deepcopy(original)
        for p in model.parameters():
            p.requires_grad_(True)
        ctx = Context(model=model, task=task, recipe=recipe, target=target, run_dir=self.run_dir,
                      original=original, restore=_checkpoint_loader(recipe, original))
        if state.get("baseline") is None:
            state["baseline"] = self._measure(ctx, "input", "input", 0.0,
                                              latency=recipe.report.latency != "off")
            if not self.light:
                state["baseline"]["fidelity_baselines"] = fidelity_baselines(task, original)
            self._save_state(state)
        baseline = state["baseline"]
        ctx.baseline_quality = baseline["quality"]

        finished = {s["name"]: s for s in state["stages"] if s["status"] == "done"}
        last_ckpt = None
        for spec in recipe.stages:
            if spec.name in finished and finished[spec.name].get("checkpoint"):
                ckpt = self.run_dir / finished[spec.name]["checkpoint"]
                ctx.checkpoints[spec.name] = ckpt
                last_ckpt = ckpt
        if last_ckpt is not None:
            ctx.model = restore(last_ckpt, base=copy.deepcopy(original))
            for p in ctx.model.parameters():
                p.requires_grad_(True)
            ctx.records = read_records(last_ckpt)

        n = len(recipe.stages)
        for index, spec in enumerate(recipe.stages):
            if spec.name in finished:
                ctx.artifacts.update(finished[spec.name].get("artifacts", {}))
                ctx.log(f"[{index + 1}/{n}] {spec.name}: done earlier, skipped")
                continue
            ctx.log(f"[{index + 1}/{n}] {spec.name} ({spec.kind})")
            ctx.seed = recipe.seed * 1000 + index + 1
            seed_everything(ctx.seed)
            ctx.stage_metrics = {}
            stage = STAGES[spec.kind](spec.params, spec.name)
            start = time.perf_counter()
            try:
                with distributed.lost_ranks_named():
                    if stage.changes_model:
                        ctx = stage.apply(ctx)
                        distributed.sync_model(ctx.model, stage.state(), f"the result of stage {spec.name}")
                    else:  # export: files only, written by rank 0; the other ranks wait for its outcome
                        ctx = distributed.main_only(lambda: stage.apply(ctx)) or ctx
            except CompressorError as exc:
                distributed.failing()
                state["stages"].append({"name": spec.name, "kind": spec.kind, "status": "failed",
                                        "error": str(exc), "metrics": dict(ctx.stage_metrics),
                                        "artifacts": dict(ctx.artifacts)})
                self._save_state(state)
                if distributed.is_main():
                    self._report(state, baseline, ctx, status="failed", error=f"{spec.name}: {exc}").write()
                raise
            entry: dict[str, Any] = {"name": spec.name, "kind": spec.kind, "status": "done"}
            if stage.changes_model:
                ctx.records.append(StageRecord(spec.kind, spec.name, stage.state()))
                rel = Path("checkpoints") / f"{index + 1:02d}-{spec.name}.pt"
                if distributed.is_main():
                    save_checkpoint(self.run_dir / rel, ctx.model, ctx.records, recipe.model)
                ctx.checkpoints[spec.name] = self.run_dir / rel
                entry["checkpoint"] = str(rel)
            last = index == n - 1
            measure_latency = recipe.report.latency == "every_stage" or (
                recipe.report.latency == "final" and last)
            entry["metrics"] = self._measure(ctx, spec.name, spec.kind, time.perf_counter() - start,
                                             latency=measure_latency and stage.changes_model,
                                             baseline=baseline)
            entry["metrics"].update(ctx.stage_metrics)
            entry["artifacts"] = dict(ctx.artifacts)
            state["stages"] = [s for s in state["stages"] if s["name"] != spec.name] + [entry]
            self._save_state(state)
            if self.on_stage is not None:
                self.on_stage(index, spec, entry["metrics"], ctx)

        report = self._report(state, baseline, ctx)
        distributed.main_only(lambda: report.write(plot=not self.light))
        return report

    # ------------------------------------------------------------------ helpers
    def _measure(self, ctx: Context, name: str, kind: str, seconds: float, *, latency: bool,
                 baseline: dict[str, Any] | None = None) -> dict[str, Any]:
        model, task, rep = ctx.model, ctx.task, ctx.recipe.report
        quality = task.evaluate(model)  # on every rank: each scores its share of the held-out split
        if not distributed.is_main():  # the rest is for rank 0's report (latency on a quiet machine)
            return {"stage": name, "kind": kind, "quality": quality}
        row: dict[str, Any] = {
            "stage": name, "kind": kind, "quality": quality,
            "quality_drop": (quality - baseline["quality"]) if baseline else 0.0,
            "params": count_params(model), "nonzero_params": count_nonzero(model),
            "macs": None if self.light else count_macs(model, task.example_inputs(1)),
            "size_bytes": storage_bytes(model),
            "seconds": seconds,
        }
        if task.heldout and not self.light:
            row["quality_heldout"] = {name: task.evaluate(model, split=name) for name in task.heldout}
        if latency and ctx.target.runtime == "onnxruntime":
            row.update(onnx_latency(model, task, batch=rep.latency_batch, threads=ctx.target.threads,
                                    warmup=rep.warmup, iterations=rep.iterations,
                                    opset=ctx.target.opset))
        max_drop = ctx.recipe.eval.max_drop
        if baseline and max_drop is not None and baseline["quality"] - quality > max_drop:
            row["over_budget"] = True
        if baseline and near_baseline(quality, baseline.get("fidelity_baselines", {})):
            row["near_baseline"] = True
        return row

    def _report(self, state: dict[str, Any], baseline: dict[str, Any], ctx: Context,
                status: str = "ok", error: str | None = None) -> Report:
        rows = [baseline] + [s["metrics"] for s in state["stages"] if s.get("metrics") and "stage" in s["metrics"]]
        notes = [ctx.task.note] if ctx.task.note else []
        if ctx.target.runtime != "onnxruntime":
            notes.append(f"latency is measured with ONNX Runtime on this CPU; target {ctx.target.name} "
                         "runs TensorRT: build and time the engine there")
        warnings = list(self.recipe.warnings)
        if rows[-1].get("over_budget"):  # intermediate stages (e.g. prune before distill) may drop
            warnings.append(f"final quality drop {rows[-1]['quality_drop']:+.4f} exceeds eval.max_drop "
                            f"({ctx.recipe.eval.max_drop})")
        floors = baseline.get("fidelity_baselines", {})
        if floors:
            notes.append("fidelity baselines on the held-out split: " + ", ".join(
                f"{name} {value:.4f}" for name, value in floors.items()) + "; a score that closes less than "
                f"{BASELINE_MARGIN:.0%} of the gap from the best of them to 1 is flagged")
        flagged = [row["stage"] for row in rows if row.get("near_baseline")]
        if flagged:
            warnings.append(f"fidelity of {', '.join(flagged)} is near what a meaningless model scores "
                            f"({', '.join(f'{n} {v:.4f}' for n, v in floors.items())}): the metric cannot "
                            "tell this model from a broken one")
        return Report(run_dir=str(self.run_dir), metric=ctx.task.metric, rows=rows, status=status,
                      error=error, artifacts=dict(ctx.artifacts), warnings=warnings, notes=notes)

    def _prepare_run_dir(self) -> dict[str, Any]:
        state_path = self.run_dir / RUN_STATE
        digest = self.recipe.digest()
        if self._resuming:
            state = json.loads(state_path.read_text())
            if state.get("recipe_hash") != digest:
                raise CompressorError(f"{self.run_dir}: recipe.yaml changed since the run started; "
                                      "start a new run instead of resuming")
            return state
        note = prepare_run_dir(self.run_dir, overwrite=self.overwrite)
        if note:
            tqdm.write(note)
        state = {"recipe_hash": digest, "created": datetime.now().isoformat(timespec="seconds"),
                 "baseline": None, "stages": []}
        self._save_state(state)  # the run marker first: from here on the directory is ours to replace
        write_text(self.run_dir / "recipe.yaml", yaml.safe_dump(self.recipe.to_dict(), sort_keys=False))
        return state

    def _save_state(self, state: dict[str, Any]) -> None:
        if distributed.is_main():
            write_json(self.run_dir / RUN_STATE, state)


def _default_run_dir(recipe: Recipe) -> Path:
    stem = recipe.name or (recipe.source.stem if recipe.source else "run")
    return default_run_dir(stem, f"-{datetime.now().strftime('%Y%m%d-%H%M%S')}")


def _checkpoint_loader(recipe: Recipe, original: torch.nn.Module) -> Restore:
    """``ctx.restore``: a checkpoint of this recipe's own model starts from ``original``; any other
    is rebuilt under the recipe's trust setting (a teacher checkpoint from elsewhere)."""
    def load(path: str | Path, base: torch.nn.Module | None = None) -> torch.nn.Module:
        if base is None and read_model_spec(Path(path)) == recipe.model:
            base = copy.deepcopy(original)
        return restore(path, base=base, trust_code=recipe.trust_code)

    return load
