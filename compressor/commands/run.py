"""`compressor run`: execute a recipe."""
from __future__ import annotations

import argparse

from compressor.api import resume, run
from compressor.commands.common import add_recipe_args, add_trust_arg, formatter
from compressor.distributed import is_main
from compressor.errors import CompressorError

HELP = """\
Run a recipe's stages on its model. After each stage the run directory gets a
checkpoint and a metrics row (quality, params, MACs, size, latency); at the end
report.md, report.json and report.png. Interrupted runs continue with --resume.

run directory layout (default runs/<recipe>-<timestamp>/):
  recipe.yaml          the resolved recipe (overrides and variables applied)
  run.json             progress and metrics per stage (what --resume reads)
  checkpoints/NN-*.pt  weights + stage states after each stage
  deploy/model.onnx    the exported model (export stage)
  report.{md,json,png} the per-stage report

data-parallel training (see docs/scaling.md): the same command under torchrun,
  torchrun --standalone --nproc-per-node 2 -m compressor.cli run RECIPE --out RUN_DIR
trains finetune/distill/QAT/codebook/prune/lowrank steps on every process, with
data.batch_size the global batch; rank 0 writes the run directory.
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run a recipe (compress, fine-tune, export)", description=HELP,
                       formatter_class=formatter())
    add_recipe_args(p, required=False)
    p.add_argument("--out", metavar="RUN_DIR", help="run directory (default runs/<name>-<time>)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run in RUN_DIR")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing run in --out (only a directory holding a compressor run)")
    add_trust_arg(p)
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    if args.resume:
        if args.recipe or args.overrides:
            raise CompressorError("--resume uses the recipe saved in the run directory; "
                                  "drop the recipe argument and --set")
        report = resume(args.resume, trust_code=args.trust_code)
    elif args.recipe:
        report = run(args.recipe, overrides=args.overrides, run_dir=args.out, overwrite=args.overwrite,
                     trust_code=args.trust_code)
    else:
        raise CompressorError("give a recipe file, or --resume RUN_DIR")
    if not is_main():  # under torchrun rank 0 prints the report
        return 0
    print()
    print(report.table())
    for warning in report.warnings:
        print(f"warning: {warning}")
    for note in report.notes:
        print(f"note: {note}")
    print(f"\nreport: {report.run_dir}/report.md")
    for name, path in report.artifacts.items():
        print(f"{name}: {path}")
    return 0
