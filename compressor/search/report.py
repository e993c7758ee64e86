"""The search report: best recipe(s) as YAML, the Pareto front as a table and a plot."""
from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
import yaml
from optuna.trial import TrialState

from compressor.io import atomic_path, write_json, write_text
from compressor.search.objective import configured
from compressor.search.storage import shown

if TYPE_CHECKING:
    from compressor.search.study import Search


@dataclass
class SearchSummary:
    run_dir: str
    study: str
    storage: str
    objectives: list[str]
    budget: dict[str, float]
    baseline: dict[str, float]
    #: One row per finished trial: number, state, quality, latency_ratio, ..., params.
    trials: list[dict[str, Any]]
    #: Trial numbers on the Pareto front (feasible, quality up, latency down).
    pareto: list[int]
    best: int | None
    #: Latency table error on measured trials: {"trials", "median_pct", "max_pct"}.
    predictor: dict[str, float] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)

    def row(self, number: int) -> dict[str, Any]:
        return next(r for r in self.trials if r["number"] == number)


def summarize(study: optuna.Study, search: "Search") -> SearchSummary:
    spec = search.spec
    rows = [_row(t) for t in study.get_trials(deepcopy=False)
            if t.state in (TrialState.COMPLETE, TrialState.PRUNED) and "duplicate_of" not in t.user_attrs]
    x_key = "latency_ratio" if any(r["latency_ratio"] is not None for r in rows) else "size_ratio"
    done = [r for r in rows if r["state"] == "COMPLETE" and r["feasible"] and r[x_key] is not None]
    front = pareto_front(done, x_key)
    candidates = front if spec.multi_objective or spec.budget is None else done
    best = max(candidates, key=lambda r: (r["quality"], -(r.get(x_key) or 0)), default=None)
    errors = [abs(r["latency_predicted"] / r["latency_ratio"] - 1) * 100 for r in rows
              if r.get("latency_predicted") is not None and r.get("latency_ratio") is not None
              and spec.latency_source == "measure"]
    predictor = ({"trials": len(errors), "median_pct": statistics.median(errors), "max_pct": max(errors)}
                 if errors else {})
    budget = spec.budget.model_dump(exclude_none=True) if spec.budget else {}
    return SearchSummary(str(search.run_dir), search.study_name, shown(search.url), list(spec.objectives or []),
                         budget, dict(study.user_attrs["baseline"]), rows, [r["number"] for r in front],
                         best["number"] if best else None, predictor)


def _row(t: optuna.trial.FrozenTrial) -> dict[str, Any]:
    a = t.user_attrs
    row = {"number": t.number, "state": t.state.name,
           "feasible": all(v <= 0 for v in t.constraints.values()),
           "warm_start": a.get("warm_start")}  # "uniform", "sensitivity" or None
    for key in ("quality", "latency_ratio", "latency_ms", "latency_predicted", "size_ratio", "size_bytes"):
        row[key] = a.get(key)
    row["params"] = dict(t.params)
    row["dir"] = a.get("dir")
    return row


def pareto_front(rows: list[dict[str, Any]], x_key: str) -> list[dict[str, Any]]:
    """Rows no other row beats on both quality (higher) and ``x_key`` (lower), by ``x_key``."""
    front = []
    for r in sorted(rows, key=lambda r: (r[x_key], -r["quality"])):
        if not front or r["quality"] > front[-1]["quality"]:
            front.append(r)
    return front


# --------------------------------------------------------------------------- writing
def write_report(search: "Search") -> SearchSummary:
    """Write best.yaml (+ best-full.yaml), pareto/*.yaml, search_report.{md,json}, pareto.png."""
    summary = summarize(search.study, search)
    out = Path(search.run_dir)
    if summary.best is not None:
        summary.files["best"] = str(_write_recipe(search, summary, summary.best, out / "best.yaml"))
        cheap = search.spec.cheap
        if any(v is not None for v in cheap.model_dump().values()):
            summary.files["best_full"] = str(
                _write_recipe(search, summary, summary.best, out / "best-full.yaml", full=True))
    for number in summary.pareto:
        _write_recipe(search, summary, number, out / "pareto" / f"trial-{number:04d}.yaml")
    summary.files["plot"] = str(plot(summary, out / "pareto.png"))
    summary.files["report"] = str(out / "search_report.md")
    write_json(out / "search_report.json", asdict(summary))
    write_text(out / "search_report.md", markdown(summary))
    return summary


def _write_recipe(search: "Search", summary: SearchSummary, number: int, path: Path,
                  full: bool = False) -> Path:
    row = summary.row(number)
    recipe = configured(search.recipe, search.variables, row["params"],
                        None if full else search.spec.cheap)
    head = [f"# {'Full-budget version of t' if full else 'T'}rial {number} of study "
            f"'{summary.study}' ({describe(row)})."]
    head.append("# Reproduce it: compressor run " + str(path) if not full else
                "# Same choices without the search's cheap caps (longer fine-tunes, full eval).")
    write_text(path, "\n".join(head) + "\n" + yaml.safe_dump(recipe.to_dict(), sort_keys=False))
    return path


def describe(row: dict[str, Any]) -> str:
    parts = [f"quality {row['quality']:.4f}"]
    if row.get("latency_ratio") is not None:
        parts.append(f"latency {row['latency_ratio']:.3f}x of the input model")
    if row.get("size_ratio") is not None:
        parts.append(f"size {row['size_ratio']:.3f}x")
    return ", ".join(parts)


def _fmt(value: Any, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def table(summary: SearchSummary, numbers: list[int]) -> str:
    """A markdown table of the given trials."""
    lines = ["| trial | quality | latency (x input) | latency ms | predicted (x) | size (x input) | note |",
             "|---|---|---|---|---|---|---|"]
    for n in numbers:
        r = summary.row(n)
        note = ", ".join(filter(None, ["best" if n == summary.best else "",
                                       f"{r['warm_start']} warm start" if r["warm_start"] else "",
                                       "" if r["feasible"] else "over budget"]))
        lines.append(f"| {n} | {_fmt(r['quality'], '.4f')} | {_fmt(r['latency_ratio'], '.3f')} | "
                     f"{_fmt(r['latency_ms'], '.4f')} | {_fmt(r['latency_predicted'], '.3f')} | "
                     f"{_fmt(r['size_ratio'], '.3f')} | {note} |")
    return "\n".join(lines)


def markdown(summary: SearchSummary) -> str:
    b = summary.baseline
    states = [r["state"] for r in summary.trials]
    lines = ["# compressor search report", "",
             f"- study `{summary.study}` in `{summary.storage}`",
             f"- objectives: {', '.join(summary.objectives)}; budget: "
             + (", ".join(f"{k} <= {v}" for k, v in summary.budget.items()) or "none"),
             f"- input model: quality {b['quality']:.4f}, latency {b['latency_ms']:.4f} ms, "
             f"size {b['size_bytes'] / 1024:.1f} KiB",
             f"- trials: {states.count('COMPLETE')} complete, {states.count('PRUNED')} pruned "
             "(over budget before training, or low quality after a stage)", ""]
    if summary.best is not None:
        lines += ["## Best", "", table(summary, [summary.best]), "",
                  f"Recipe: `{summary.files.get('best')}` (reproduces the trial with `compressor run`)"
                  + (f"; `{summary.files['best_full']}` lifts the cheap caps." if "best_full" in summary.files
                     else "."), ""]
    else:
        lines += ["No trial met the budget yet.", ""]
    lines += ["## Pareto front", "", table(summary, summary.pareto), "",
              "![Pareto front](pareto.png)", ""]
    warm = [r["number"] for r in summary.trials if r["warm_start"]]
    if warm:
        lines += ["## Warm-start configurations", "",
                  "Uniform: every layer of a key gets the same value; sensitivity: the layers most "
                  "sensitive to quantization get the mildest setting.", "", table(summary, warm), ""]
    if summary.predictor:
        p = summary.predictor
        lines += ["## Latency table", "",
                  f"The per-layer latency table predicted the {p['trials']} measured trials with a "
                  f"median error of {p['median_pct']:.1f}% (max {p['max_pct']:.1f}%).", ""]
    lines += ["## Open the study", "", "```", f"optuna-dashboard {summary.storage}", "```",
              "(`pip install 'compressor[dashboard]'`.)", ""]
    return "\n".join(lines)


def plot(summary: SearchSummary, path: Path) -> Path:
    """Quality against latency (or size) of every trial, the Pareto front, and the table's error."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in summary.trials if r["quality"] is not None]
    x_key = "latency_ratio" if any(r["latency_ratio"] is not None for r in rows) else "size_ratio"
    predicted = [r for r in summary.trials
                 if r["latency_predicted"] is not None and r["latency_ratio"] is not None]
    fig, axes = plt.subplots(1, 2 if predicted else 1, figsize=(11 if predicted else 6, 4.2), squeeze=False)
    ax = axes[0][0]
    for group, style in (([r for r in rows if r["feasible"]], dict(c="#8c8c8c", marker="o", label="trial")),
                         ([r for r in rows if not r["feasible"]], dict(c="#d62728", marker="x", label="over budget")),
                         ([r for r in rows if r["warm_start"] == "uniform"],
                          dict(c="#2ca02c", marker="^", s=60, label="uniform")),
                         ([r for r in rows if r["warm_start"] == "sensitivity"],
                          dict(c="#9467bd", marker="D", s=50, label="sensitivity seed"))):
        if group:
            ax.scatter([r[x_key] for r in group], [r["quality"] for r in group], **style)
    front = [summary.row(n) for n in summary.pareto]
    if front:
        ax.step([r[x_key] for r in front], [r["quality"] for r in front], where="post", c="#1f77b4",
                label="Pareto front")
    if summary.best is not None:
        best = summary.row(summary.best)
        ax.scatter([best[x_key]], [best["quality"]], marker="*", s=250, c="#ff7f0e", zorder=5, label="best")
    limit = summary.budget.get("latency_ratio" if x_key == "latency_ratio" else "size_ratio")
    if limit is not None:
        ax.axvline(limit, ls="--", c="k", lw=1, label="budget")
    ax.axhline(summary.baseline["quality"], ls=":", c="k", lw=1, label="input model")
    ax.set_xlabel(f"{x_key.replace('_', ' ')} (x input model)")
    ax.set_ylabel("quality")
    ax.set_title(f"study {summary.study}")
    ax.legend(fontsize=8)
    if predicted:
        ax = axes[0][1]
        xs = [r["latency_ratio"] for r in predicted]
        ax.scatter(xs, [r["latency_predicted"] for r in predicted], c="#1f77b4")
        lo, hi = min(xs + [r["latency_predicted"] for r in predicted]), max(xs + [r["latency_predicted"] for r in predicted])
        ax.plot([lo, hi], [lo, hi], c="k", lw=1)
        ax.set_xlabel("measured latency (x input)")
        ax.set_ylabel("latency table prediction (x input)")
        ax.set_title("per-layer latency table")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return path
