"""`compressor export`: the deploy bundle for a run, a recipe's model or a zoo model."""
from __future__ import annotations

import argparse

from compressor.api import deploy
from compressor.commands.common import add_trust_arg, formatter, int_in
from compressor.limits import MAX_SAMPLES

HELP = """\
Export a model for a target and check it: ONNX (fp32, or Q/DQ int8 when the model
carries fake-quant modules), fp16 ONNX, a TensorRT engine (or, where TensorRT or a
GPU is missing, the exact trtexec command that builds it on the target), parity
against PyTorch on held-out inputs, quality and latency of every exported model.

SOURCE is one of
  a run directory      its last checkpoint, with its recipe's data and target
  a recipe file        the recipe's input model (no stages are run)
  a zoo model name     e.g. resnet18 (see `compressor zoo`)

The bundle (--out, default RUN_DIR/deploy or runs/<name>-export/deploy):
  model.onnx, model.fp16.onnx      exported models (+ model.onnx.data above 1 GiB)
  model.engine | build_engine.sh   TensorRT engine, or the trtexec command for the target
  manifest.json                    inputs, outputs, shapes, dtypes, preprocessing,
                                   parity, quality, latency, hashes, provenance
  infer.py, sample.npz             example that needs only onnxruntime and numpy

A parity failure exits with code 2 and says why; the bundle is kept.
"""

EPILOG = """\
examples:
  compressor export runs/quickstart                       # the run's compressed model
  compressor export resnet18 --formats onnx,onnx-fp16 --target cpu-arm64
  compressor export recipes/quickstart.yaml --target jetson-orin --formats onnx,tensorrt
  compressor export runs/x --out /tmp/bundle --opset 19 --samples 128
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export ONNX / fp16 / TensorRT with parity and latency checks",
                       description=HELP, epilog=EPILOG, formatter_class=formatter())
    p.add_argument("source", help="run directory, recipe file or zoo model name")
    p.add_argument("--target", help="deployment target (default: the recipe's; see `compressor targets`)")
    p.add_argument("--formats", help="comma-separated: onnx, onnx-fp16, tensorrt (default: the "
                                     "recipe's export stage, else onnx)")
    p.add_argument("--out", metavar="DIR", help="deploy directory to write")
    p.add_argument("--opset", type=int, help="ONNX opset (default: the target's)")
    p.add_argument("--exporter", choices=["torchscript", "dynamo"], help="torch.onnx exporter")
    p.add_argument("--no-simplify", action="store_true", help="skip onnxslim")
    p.add_argument("--samples", type=int_in(1, MAX_SAMPLES), help="held-out samples for the parity check")
    p.add_argument("--no-latency", action="store_true", help="skip timing the exported models")
    p.add_argument("--no-evaluate", action="store_true", help="skip measuring quality")
    add_trust_arg(p)
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    overrides: dict = {}
    if args.formats:
        overrides["formats"] = [f.strip() for f in args.formats.split(",") if f.strip()]
    for key, value in (("opset", args.opset), ("exporter", args.exporter)):
        if value is not None:
            overrides[key] = value
    if args.no_simplify:
        overrides["simplify"] = False
    if args.no_latency:
        overrides["latency"] = False
    if args.no_evaluate:
        overrides["evaluate"] = False
    if args.samples:
        overrides["parity"] = {"samples": args.samples}
    result = deploy(args.source, target=args.target, out=args.out, trust_code=args.trust_code, **overrides)
    for fmt, m in result.metrics.get("parity_by_format", {}).items():
        top1 = f", top-1 {m['top1_agreement']:.4f}" if m["top1_agreement"] is not None else ""
        lat = result.metrics.get("latency", {}).get(fmt)
        timing = f", p50 {lat['p50_ms']:.3f} ms (batch {lat['batch']})" if lat else ""
        print(f"{fmt:<10} cosine {m['cosine']:.6f}, max abs {m['max_abs']:.3g}{top1}{timing}")
    for note in result.notes:
        print(f"note: {note}")
    for name, path in result.artifacts.items():
        print(f"{name}: {path}")
    return 0
