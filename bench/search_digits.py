"""Acceptance run: digits_cnn, per-layer channel sparsity and weight bits, latency <= 0.5x fp32.

1. `compressor search recipes/search_digits.yaml` (40 trials);
2. every uniform configuration of the same grid, evaluated by the same objective;
3. `compressor run best.yaml`, timed again against the fp32 model;
then writes docs/search_digits.md and docs/search_digits_pareto.png.

    .venv/bin/python bench/search_digits.py                 # ~10 min on 2 busy cores
    .venv/bin/python bench/search_digits.py --trials 20 --torch-threads 1
"""
from __future__ import annotations

import sys
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from search_common import (ROOT, batch_stability, best_within, copy_plot, environment, nearest,  # noqa: E402
                           parse_args, reproduce, run_search, side_by_side, uniform_sweep)

from compressor.io import write_text  # noqa: E402
from compressor.recipe.loader import load_recipe  # noqa: E402
from compressor.search.objective import counted  # noqa: E402

RECIPE = ROOT / "recipes" / "search_digits.yaml"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(__doc__, "bench-search-digits", argv)

    recipe = load_recipe(RECIPE)
    budget = recipe.search.budget.latency_ratio
    found = run_search(recipe, args.out / "search", trials=args.trials, threads=args.torch_threads)
    uniform = uniform_sweep(recipe, args.out / "uniform", threads=args.torch_threads)
    best = found.summary.row(found.summary.best) if found.summary.best is not None else None
    again = reproduce(found, args.out / "reproduce") if best else None

    rows = [("searched best: search", best),
            ("best uniform within the budget: uniform", best_within(uniform.summary.trials, budget))]
    if best:
        rows.append(("uniform of nearest latency: uniform", nearest(uniform.summary.trials, best["latency_ratio"])))
    trials = len(counted(found.search.study.get_trials(deepcopy=False)))
    command = "python bench/search_digits.py" + (f" --trials {args.trials}" if args.trials else "") + (
        f" --torch-threads {args.torch_threads}" if args.torch_threads else "")
    lines = [
        "# Search on digits_cnn: per-layer sparsity and bits under a latency budget", "",
        f"Measured {date.today().isoformat()} on this machine ({environment()}) with `{command}`; "
        f"recipe `recipes/search_digits.yaml`. Latency is ONNX Runtime p50 at batch "
        f"{recipe.report.latency_batch}, as a ratio to the fp32 input model timed in turns with it.", "",
        f"- budget: latency <= {budget}x fp32; {trials} trials in {found.seconds / 60:.1f} min "
        f"(set-up and latency table included), {len(found.summary.trials)} of them distinct configurations",
        f"- uniform sweep: {len(uniform.summary.trials)} configurations in {uniform.seconds / 60:.1f} min", "",
        side_by_side(rows), ""]
    if again:
        lines += ["`compressor run best.yaml` reproduces the trial:", "",
                  "| | quality | latency (x fp32) |", "|---|---|---|",
                  f"| trial | {again['trial_quality']:.4f} | {again['trial_latency_ratio']:.3f} |",
                  f"| compressor run | {again['quality']:.4f} | {again['latency_ratio']:.3f} |", ""]
    if best:
        lines += ["Speed-up of the best model over fp32 by batch (why the recipe times batch "
                  f"{recipe.report.latency_batch}):", "", batch_stability(found), ""]
    if found.summary.predictor:
        p = found.summary.predictor
        lines += [f"The per-layer latency table predicted the measured trials with a median error of "
                  f"{p['median_pct']:.1f}% (max {p['max_pct']:.1f}%, {p['trials']} trials).", ""]
    lines += [f"![Pareto front]({copy_plot(found.summary, 'search_digits_pareto.png')})", ""]
    write_text(ROOT / "docs" / "search_digits.md", "\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
