"""MiniLM (all-MiniLM-L6-v2): per-group int8-or-float and FFN width under a latency budget.

Runs `compressor search recipes/search_minilm.yaml` end to end (set-up, latency table, trials,
report) and writes docs/search_minilm.md and docs/search_minilm_pareto.png. The acceptance bound
is 30 minutes of wall time on this machine.

    .venv/bin/python bench/search_minilm.py
    .venv/bin/python bench/search_minilm.py --trials 8 --torch-threads 2
"""
from __future__ import annotations

import sys
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from search_common import ROOT, copy_plot, environment, parse_args, run_search, side_by_side  # noqa: E402

from compressor.io import write_text  # noqa: E402
from compressor.recipe.loader import load_recipe  # noqa: E402
from compressor.search.report import table  # noqa: E402

RECIPE = ROOT / "recipes" / "search_minilm.yaml"
LIMIT_MIN = 30


def main(argv: list[str] | None = None) -> int:
    args = parse_args(__doc__, "bench-search-minilm", argv)

    recipe = load_recipe(RECIPE)
    found = run_search(recipe, args.out, trials=args.trials, threads=args.torch_threads)
    summary = found.summary
    minutes = found.seconds / 60
    warm = [(f"{r['warm_start']} warm start: search", r) for r in summary.trials
            if r["warm_start"] and r["quality"] is not None]
    best = [("searched best: search", summary.row(summary.best))] if summary.best is not None else []
    command = "python bench/search_minilm.py" + (f" --trials {args.trials}" if args.trials else "") + (
        f" --torch-threads {args.torch_threads}" if args.torch_threads else "")
    budget = ", ".join(f"{k} <= {v}" for k, v in summary.budget.items())
    lines = [
        "# Search on MiniLM: int8 or float per group, FFN width, under a latency budget", "",
        f"Measured {date.today().isoformat()} on this machine ({environment()}) with `{command}`; "
        f"recipe `recipes/search_minilm.yaml`. Quality is the embedding fidelity (cosine to the fp32 "
        f"model); latency is ONNX Runtime p50 at batch {recipe.report.latency_batch}, as a ratio to "
        "the fp32 input model timed in turns with it.", "",
        f"- budget: {budget}; {len(summary.trials)} finished trials",
        f"- wall time, set-up and latency table included: {minutes:.1f} min "
        f"({'within' if minutes <= LIMIT_MIN else 'OVER'} the {LIMIT_MIN}-minute bound)", "",
        side_by_side(best + warm), "", "Pareto front (feasible trials):", "",
        table(summary, summary.pareto), ""]
    if summary.predictor:
        p = summary.predictor
        lines += [f"The per-group latency table predicted the measured trials with a median error of "
                  f"{p['median_pct']:.1f}% (max {p['max_pct']:.1f}%, {p['trials']} trials).", ""]
    lines += [f"![Pareto front]({copy_plot(summary, 'search_minilm_pareto.png')})", ""]
    write_text(ROOT / "docs" / "search_minilm.md", "\n".join(lines))
    print("\n".join(lines))
    return 0 if minutes <= LIMIT_MIN else 1


if __name__ == "__main__":
    sys.exit(main())
