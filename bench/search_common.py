"""What the search benchmarks share: run a study, sweep uniform configurations the same way,
reproduce the best recipe with `compressor run`, and write the doc page with its figures.

Every latency here is a ratio to the input model timed in turns with it in one process
(``compressor.search.latency.relative_latency``), so figures taken minutes apart compare.
"""
from __future__ import annotations

import argparse
import itertools
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from compressor import api
from compressor.recipe.loader import load_recipe
from compressor.recipe.schema import Recipe
from compressor.search.latency import relative_latency
from compressor.search.report import SearchSummary
from compressor.search.study import Search

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("TQDM_DISABLE", "1")  # `compressor run` of the best recipe: no progress bars


def parse_args(doc: str, out: str, argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=None, help="default: the recipe's search.trials")
    parser.add_argument("--torch-threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / out)
    parser.add_argument("--resume", action="store_true",
                        help="continue the studies in --out (default: start them afresh, so the figures "
                             "describe this code, not a study stored by an earlier run)")
    args = parser.parse_args(argv)
    if not args.resume:
        shutil.rmtree(args.out, ignore_errors=True)
    return args


@dataclass
class Outcome:
    search: Search
    summary: SearchSummary
    seconds: float


def run_search(recipe: Recipe, out: Path, *, trials: int | None, threads: int | None,
               name: str | None = None) -> Outcome:
    start = time.perf_counter()
    search = Search(recipe, out, trials=trials, torch_threads=threads, study_name=name)
    summary = search.run()
    return Outcome(search, summary, time.perf_counter() - start)


def uniform_sweep(recipe: Recipe, out: Path, *, threads: int | None, limit: int = 40) -> Outcome:
    """Every uniform configuration of the space's grid (one value for all layers of a key),
    evaluated by the same objective as the search (a study of enqueued trials only)."""
    spec = recipe.search
    keys = list(spec.space)
    grids = [spec.space[k].domain.grid() for k in keys]
    configs = [dict(zip(keys, values)) for values in itertools.product(*grids)][:limit]
    data = recipe.to_dict()
    data["search"].update(warm_start=configs, trials=len(configs), latency_table=False, sensitivity_seed=False)
    return run_search(load_recipe(data), out, trials=None, threads=threads, name="uniform")


def reproduce(outcome: Outcome, out: Path) -> dict[str, Any]:
    """`compressor run best.yaml`: quality and latency (interleaved with the input model)."""
    summary = outcome.summary
    report = api.run(load_recipe(summary.files["best"]), run_dir=out, overwrite=True)
    search = outcome.search
    settings = search.settings
    ratio, _ = relative_latency({"run": Path(report.artifacts["onnx"])}, search.reference,
                                search.task.example_inputs(settings.batch), settings)["run"]
    trial = summary.row(summary.best)
    return {"quality": report.final["quality"], "latency_ratio": ratio,
            "trial_quality": trial["quality"], "trial_latency_ratio": trial["latency_ratio"]}


def batch_stability(outcome: Outcome, batches: tuple[int, ...] = (1, 16, 128), repeats: int = 2) -> str:
    """Speed-up of the best model over the input model at several batches, each timed twice:
    why the recipe's latency batch is where it is."""
    from dataclasses import replace

    search, best = outcome.search, outcome.summary.row(outcome.summary.best)
    settings = search.settings
    lines = ["| batch | " + " | ".join(f"speed-up, run {i + 1}" for i in range(repeats)) + " |",
             "|---|" + "---|" * repeats]
    for batch in batches:
        runs = [relative_latency({"best": Path(best["dir"]) / "model.onnx"}, search.reference,
                                 search.task.example_inputs(batch), replace(settings, batch=batch))["best"][0]
                for _ in range(repeats)]
        lines.append(f"| {batch} | " + " | ".join(f"{1 / r:.2f}x" for r in runs) + " |")
    return "\n".join(lines)


def nearest(rows: list[dict[str, Any]], latency: float) -> dict[str, Any] | None:
    done = [r for r in rows if r["quality"] is not None and r["latency_ratio"] is not None]
    return min(done, key=lambda r: abs(r["latency_ratio"] - latency), default=None)


def best_within(rows: list[dict[str, Any]], limit: float) -> dict[str, Any] | None:
    done = [r for r in rows if r["quality"] is not None and r["latency_ratio"] is not None
            and r["latency_ratio"] <= limit]
    return max(done, key=lambda r: r["quality"], default=None)


def describe_params(row: dict[str, Any]) -> str:
    """Per-layer values grouped by key, e.g. ``prune.sparsity [0.3, 0.6, 0.1]``."""
    by_key: dict[str, list[Any]] = {}
    for name, value in row["params"].items():
        by_key.setdefault(name.split("[")[0], []).append(round(value, 3) if isinstance(value, float) else value)
    return "; ".join(f"{k} {v if len(v) > 1 else v[0]}" for k, v in by_key.items())


def side_by_side(rows: list[tuple[str, dict[str, Any] | None]]) -> str:
    """Rows of (label, trial row); labels name the study, e.g. "search #12"."""
    lines = ["| configuration | quality | latency (x fp32) | size (x fp32) | settings |", "|---|---|---|---|---|"]
    for label, r in rows:
        if r is None:
            lines.append(f"| {label} | n/a | n/a | n/a | none met the budget |")
            continue
        lines.append(f"| {label} #{r['number']} | {r['quality']:.4f} | {r['latency_ratio']:.3f} | "
                     f"{r['size_ratio']:.3f} | {describe_params(r)} |")
    return "\n".join(lines)


def environment() -> str:
    import onnxruntime
    import optuna

    return (f"torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, optuna {optuna.__version__}, "
            f"{torch.get_num_threads()} torch thread(s)")


def copy_plot(summary: SearchSummary, name: str) -> str:
    target = ROOT / "docs" / name
    shutil.copyfile(summary.files["plot"], target)
    return name
