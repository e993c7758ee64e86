"""`compressor targets`: list deployment targets."""
from __future__ import annotations

import argparse

from compressor.export.targets import TARGETS


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("targets", help="list deployment targets",
                       description="List the targets a recipe can name with 'target: NAME' (and "
                                   "`compressor export --target NAME`): their runtime, precisions "
                                   "(fastest first), opset, quantization rules and, for TensorRT "
                                   "targets, the GPU an engine is built for.")
    p.add_argument("--json", action="store_true", help="print every field as JSON")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    import json


    if args.json:
        print(json.dumps({name: t.as_dict() for name, t in TARGETS.items()}, indent=2))
        return 0
    for t in TARGETS.values():
        sparsity = f", sparsity {'/'.join(t.sparsity)}" if t.sparsity else ""
        print(f"{t.name:<12} {t.runtime:<12} {'/'.join(t.precisions):<20} opset {t.opset}, "
              f"rules {t.rules.name}{sparsity}\n{'':<12} {t.description}")
        r = t.rules
        adds = {"none": "none", "residual": "the skip input", "both": "both inputs"}[r.residual_adds]
        print(f"{'':<12} quantization: symmetric int8, weights "
              f"{'per channel' if r.per_channel_weights else 'per tensor'}"
              f"{' in [-127, 127]' if r.narrow_range_weights else ''}"
              f"{f', {r.weight_bits}-bit by default' if r.weight_bits != 8 else ''}, opset >= {r.min_opset}, "
              f"float: {', '.join(r.keep_float)}; Q/DQ on residual Adds: {adds}")
        if t.cpu:
            print(f"{'':<12} int8 kernels: ONNX Runtime MatMulIntegerToFloat, "
                  f"{'uint8' if t.cpu == 'x86_64' else 'int8'} activations ({t.cpu})")
        if t.runtime == "tensorrt":
            print(f"{'':<12} engine: {t.gpu} (sm {t.compute_capability}), TensorRT {t.tensorrt}, "
                  f"workspace {t.workspace_mb} MiB, batch 1..{t.max_batch}")
    return 0
