"""`compressor targets`: list deployment targets."""
from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("targets", help="list deployment targets",
                       description="List the targets a recipe can name with 'target: NAME': their "
                                   "runtime, precisions, opset and quantization rules.")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from compressor.export.targets import TARGETS

    for t in TARGETS.values():
        sparsity = f", sparsity {'/'.join(t.sparsity)}" if t.sparsity else ""
        print(f"{t.name:<12} {t.runtime:<12} {'/'.join(t.precisions):<20} opset {t.opset}, "
              f"rules {t.quant_rules}{sparsity}\n{'':<12} {t.description}")
    return 0
