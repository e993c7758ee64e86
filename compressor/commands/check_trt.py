"""`compressor check-trt`: TensorRT's Q/DQ rules, checked node by node on an ONNX file."""
from __future__ import annotations

import argparse

from compressor.commands.common import formatter
from compressor.export.onnx import has_qdq
from compressor.export.onnx_file import read_onnx
from compressor.export.qdq_rules import check_trt

HELP = """\
Check an explicitly quantized ONNX model against TensorRT's rules and list every
violation with the node that breaks it:

  unsupported-op         QLinearConv, QLinearMatMul, ConvInteger, MatMulInteger,
                         DynamicQuantizeLinear (and ORT's contrib Q* ops) do not parse
  opset                  Q/DQ needs opset >= 13 (FP8 >= 19, INT4 >= 21)
  signed-int8            int8 (not uint8) quantized tensors
  zero-point             zero points are 0 (symmetric)
  constant-scale         scales and zero points are initializers, positive, finite
  qdq-pair               each QuantizeLinear feeds DequantizeLinear with the same scale
  per-channel-axis       weights per channel on the output-channel axis
  per-tensor-activation  activations per tensor
  narrow-range           int8 weights within [-127, 127]

Exit code 0 when the model passes, 1 when it breaks a rule, 2 on a bad file.
"""

EPILOG = """\
examples:
  compressor check-trt runs/x/deploy/model.onnx
  compressor check-trt model.onnx --json > violations.json
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("check-trt", help="check a Q/DQ ONNX model against TensorRT's rules",
                       description=HELP, epilog=EPILOG, formatter_class=formatter())
    p.add_argument("model", help="ONNX file")
    p.add_argument("--json", action="store_true", help="print the violations as JSON")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    path = Path(args.model)
    proto = read_onnx(path)
    violations = check_trt(proto)
    if args.json:
        print(json.dumps([v.as_dict() for v in violations], indent=2))
    elif violations:
        print(f"{path}: {len(violations)} violation(s) of TensorRT's Q/DQ rules")
        for v in violations:
            print(f"  {v}")
    else:
        kind = "Q/DQ model" if has_qdq(proto) else "model without Q/DQ (nothing quantized)"
        print(f"{path}: ok ({kind})")
    return 1 if violations else 0
