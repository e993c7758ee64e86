"""`compressor sensitivity`: quality drop per layer when that layer alone is quantized."""
from __future__ import annotations

import argparse
from pathlib import Path

from compressor.commands.common import add_recipe_args, add_trust_arg, formatter, int_in
from compressor.errors import CompressorError
from compressor.export.targets import get_target
from compressor.io import atomic_path, write_json, write_text
from compressor.limits import MAX_SAMPLES
from compressor.pipeline import build_task, seed_everything
from compressor.recipe.loader import load_recipe
from compressor.rundir import default_run_dir
from compressor.sources import load_model
from compressor.stages.quantize import QuantizeParams, layer_sensitivity

HELP = """\
Quantize the recipe's model with the settings of its quantize stage (int8
defaults when it has none), then measure the held-out quality drop when each
layer alone is quantized. Layers at the top of the table are the ones to keep
in float (quantize: {keep_float: N}) or give more bits (per_layer: {NAME: {bits: 8}}).

Writes sensitivity.json, sensitivity.md and sensitivity.png to --out.

examples:
  compressor sensitivity recipes/digits_int8.yaml
  compressor sensitivity recipes/minilm_int8.yaml --samples 64 --out runs/minilm-sens
  compressor sensitivity recipe.yaml --set quantize.weights.bits=4
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sensitivity", help="per-layer quantization sensitivity (table + plot)",
                       description=HELP, formatter_class=formatter())
    add_recipe_args(p)
    add_trust_arg(p)
    p.add_argument("--stage", help="name of the quantize stage to take settings from (default: the first)")
    p.add_argument("--samples", type=int_in(1, MAX_SAMPLES), default=128, help="held-out samples per evaluation (default 128)")
    p.add_argument("--out", metavar="DIR", help="output folder (default runs/<recipe>-sensitivity)")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    recipe = load_recipe(args.recipe, overrides=args.overrides, trust_code=args.trust_code)
    specs = [s for s in recipe.stages if s.kind == "quantize" and (args.stage in (None, s.name))]
    if args.stage and not specs:
        raise CompressorError(f"{args.recipe}: no quantize stage named {args.stage!r}")
    params = specs[0].params if specs else QuantizeParams()
    seed_everything(recipe.seed)
    model = load_model(recipe.model, trust_code=recipe.trust_code)
    task = build_task(recipe, model)
    drops = layer_sensitivity(model, task, params=params, rules=get_target(recipe.target).rules,
                              samples=args.samples)
    ranked = sorted(drops.items(), key=lambda kv: kv[1], reverse=True)
    out = Path(args.out) if args.out else default_run_dir(recipe.name or args.recipe.stem, "-sensitivity")
    table = sensitivity_table(ranked, task.metric)
    print(table)
    write_json(out / "sensitivity.json", {"metric": task.metric, "samples": args.samples, "drops": dict(ranked)})
    write_text(out / "sensitivity.md", f"# Per-layer quantization sensitivity\n\n{table}\n\n"
                                       "![sensitivity](sensitivity.png)\n")
    plot_sensitivity(ranked, out / "sensitivity.png", task.metric)
    print(f"\nwritten: {out}/sensitivity.{{json,md,png}}")
    return 0


def sensitivity_table(ranked: list[tuple[str, float]], metric: str) -> str:
    lines = [f"| layer | {metric} drop |", "|---|---|"]
    return "\n".join(lines + [f"| {name} | {drop:+.4f} |" for name, drop in ranked])


def plot_sensitivity(ranked: list[tuple[str, float]], path: Path, metric: str) -> None:
    import matplotlib  # heavy: loaded only when a plot is drawn

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 0.25 * len(ranked) + 1.2))
    names = [n for n, _ in ranked][::-1]
    ax.barh(names, [d for _, d in ranked][::-1], color="tab:red")
    ax.set_xlabel(f"{metric} drop when quantized alone")
    ax.tick_params(axis="y", labelsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
