"""`compressor` command line: one module per command under compressor/commands/."""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import warnings

from compressor.errors import CompressorError

#: Command modules, in the order `--help` lists them; each defines ``register(subparsers)``.
COMMANDS = ("run", "search", "export", "check_trt", "bench", "sensitivity", "validate", "schema", "zoo",
            "targets")

DESCRIPTION = """\
Compress PyTorch models for edge targets and export them.

A recipe (YAML) names a model, its data, a target and a list of stages
(finetune, prune, distill, quantize, codebook, lowrank, export). `compressor run`
executes it into a run directory with a checkpoint and a metrics row per stage.
"""

EPILOG = """\
examples:
  compressor run recipes/quickstart.yaml            # compress + export the demo model
  compressor run recipe.yaml --set prune.sparsity=0.3 --out runs/try1
  compressor run --resume runs/try1                 # continue after an interruption
  compressor search recipes/search_digits.yaml      # per-layer settings under a latency budget
  compressor export runs/try1 --formats onnx,onnx-fp16 --target cpu-arm64
  compressor check-trt runs/try1/deploy/model.onnx  # TensorRT's Q/DQ rules, node by node
  compressor bench a.onnx b.onnx --batch 8          # interleaved ONNX Runtime latency
  compressor validate recipe.yaml                   # check a recipe without running it
  compressor schema > recipe.schema.json            # JSON Schema for editor completion
  compressor sensitivity recipes/minilm_int8.yaml   # per-layer quantization sensitivity

Add --debug to any command for a full traceback on errors.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="compressor", description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--debug", action="store_true", help="show tracebacks and library warnings")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        importlib.import_module(f"compressor.commands.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    debug = "--debug" in argv
    if not debug:
        warnings.filterwarnings("ignore")
        logging.getLogger("torch").setLevel(logging.ERROR)
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except CompressorError as exc:
        if debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted: finished stages are checkpointed; continue with --resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
