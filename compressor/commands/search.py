"""`compressor search`: fill a recipe's searchable fields with Optuna under a budget."""
from __future__ import annotations

import argparse
import os

from compressor.commands.common import add_recipe_args, add_trust_arg, formatter, int_in
from compressor.limits import MAX_TRIALS
from compressor.recipe.loader import load_recipe
from compressor.search.report import describe
from compressor.search.study import Search, default_run_dir

HELP = """\
Search per-layer settings (sparsity, bits, codebook size, rank, ...) for the fields
listed under the recipe's `search.space`, maximising quality under `search.budget`
(latency measured with ONNX Runtime on this machine, size), or tracing the Pareto
front of quality against latency. Each trial runs the recipe cheaply (`search.cheap`)
into RUN_DIR/trials/NNNN; the study is stored in RUN_DIR/study.db (or --storage) and
resumes when the same command runs again.

writes (RUN_DIR, default runs/<recipe name>-search/):
  best.yaml            the best trial as a recipe: `compressor run best.yaml` reproduces it
  best-full.yaml       the same choices without the cheap caps (when search.cheap is set)
  pareto/trial-N.yaml  every trial on the Pareto front
  search_report.md     best trial, Pareto front, uniform warm-start trials, table error
  pareto.png           quality against latency of every trial

examples:
  compressor search recipes/search_digits.yaml
  compressor search recipe.yaml --workers 2                 # two processes, one study
  compressor search recipe.yaml --storage runs/s/journal.log  # journal file (NFS-safe sharing)
  compressor search recipe.yaml --storage postgresql+psycopg://user@db/optuna  # many machines
  compressor search recipe.yaml --trials 60                 # resume and extend to 60 trials
  compressor search recipe.yaml --report-only               # rewrite the report
  optuna-dashboard sqlite:///runs/NAME-search/study.db       # watch it live
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("search", help="search per-layer settings under a latency budget (Optuna)",
                       description=HELP, formatter_class=formatter())
    add_recipe_args(p)
    add_trust_arg(p)
    p.add_argument("--out", metavar="RUN_DIR", help="run directory (default runs/<name>-search)")
    p.add_argument("--storage", metavar="URL",
                   help="Optuna storage shared by workers: an RDB URL (sqlite:///f.db, "
                        "postgresql+psycopg://...) or a journal file path (default: RUN_DIR/study.db)")
    p.add_argument("--study-name", metavar="NAME", help="study name (default: the recipe's name)")
    p.add_argument("--trials", type=int_in(1, MAX_TRIALS), metavar="N", help="override search.trials")
    p.add_argument("--workers", type=int_in(1, 256), default=1, metavar="N",
                   help="worker processes on this machine (default 1)")
    p.add_argument("--torch-threads", type=int_in(1, 1024), metavar="N",
                   help="PyTorch threads per worker for the trials' training and evaluation "
                        "(default: cores / workers); ONNX Runtime latency uses the target's threads")
    p.add_argument("--heartbeat", type=int, metavar="S",
                   help="seconds between heartbeats of a running trial (RDB storages): a trial "
                        "silent for 3 heartbeats is taken for a dead worker's, failed and re-queued "
                        "(default 20)")
    p.add_argument("--report-only", action="store_true", help="write the report without new trials")
    p.add_argument("--no-report", action="store_true",
                   help="take trials but leave the report to another worker")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    recipe = load_recipe(args.recipe, overrides=args.overrides, trust_code=args.trust_code)
    threads = args.torch_threads or (max(1, (os.cpu_count() or 1) // args.workers) if args.workers > 1 else None)
    search = Search(recipe, args.out or default_run_dir(recipe), storage=args.storage,
                    study_name=args.study_name, trials=args.trials, torch_threads=threads,
                    heartbeat=args.heartbeat)
    if args.report_only:
        summary = search.report()
    else:
        summary = search.run(workers=args.workers, report=not args.no_report)
    if summary is None:
        return 0
    if summary.best is None:
        print("\nno trial met the budget yet")
    else:
        print(f"\nbest: trial {summary.best} ({describe(summary.row(summary.best))})")
    for name, path in summary.files.items():
        print(f"{name}: {path}")
    print(f"dashboard: optuna-dashboard {summary.storage}")
    return 0
