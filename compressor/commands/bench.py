"""`compressor bench`: latency of ONNX models in ONNX Runtime on this machine."""
from __future__ import annotations

import argparse

from compressor.commands.common import formatter, int_in
from compressor.errors import CompressorError, ModelLoadError
from compressor.export.bench import interleaved, ort_runner, synthetic_inputs
from compressor.export.onnx_file import read_onnx
from compressor.limits import MAX_BATCH, MAX_ITERATIONS

HELP = """\
Time one or more ONNX models in ONNX Runtime on this CPU: warm-up, then p50/p90/p99
latency and throughput at the given batch. Several models are timed in turns in one
process (interleaved), so machine noise hits them alike; ratios are to the first.

Inputs are synthetic and follow each model's signature: floats are normal noise,
integer inputs named *mask* are ones, other integers token ids in [0, 10). Symbolic
dimensions take --dim values (e.g. --dim seq=128), the first one --batch.
"""

EPILOG = """\
examples:
  compressor bench runs/x/deploy/model.onnx
  compressor bench model.onnx model.fp16.onnx --batch 8 --threads 2
  compressor bench minilm.onnx --dim seq=128 --iterations 100 --json
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="time ONNX models in ONNX Runtime (interleaved)",
                       description=HELP, epilog=EPILOG, formatter_class=formatter())
    p.add_argument("models", nargs="+", help="ONNX files")
    p.add_argument("--batch", type=int_in(1, MAX_BATCH), default=1, help="batch size (default 1)")
    p.add_argument("--dim", action="append", default=[], metavar="NAME=SIZE",
                   help="size of a symbolic dimension, e.g. seq=128 (repeatable)")
    p.add_argument("--threads", type=int_in(1, 1024), help="ONNX Runtime intra-op threads (default: ONNX Runtime's)")
    p.add_argument("--warmup", type=int_in(0, MAX_ITERATIONS), default=5)
    p.add_argument("--iterations", type=int_in(1, MAX_ITERATIONS), default=50)
    p.add_argument("--rounds", type=int_in(1, MAX_ITERATIONS), default=5, help="turns per model when interleaving")
    p.add_argument("--max-input-mb", type=int_in(1, 1 << 20), default=1024,
                   help="memory budget of one model's synthetic inputs (default 1024 MiB)")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    import json

    dims = {}
    for item in args.dim:
        name, _, size = item.partition("=")
        if not name or not size.isdigit() or int(size) < 1:
            raise CompressorError(f"--dim {item!r}: expected NAME=SIZE with SIZE >= 1, e.g. seq=128")
        dims[name] = int(size)
    runners = {}
    for model in args.models:
        read_onnx(model, load_external_data=False)  # a clear error for files ONNX Runtime chokes on
        try:
            inputs = synthetic_inputs(model, batch=args.batch, dims=dims, max_bytes=args.max_input_mb << 20)
            runner = ort_runner(model, inputs, args.threads)
            runner()
        except CompressorError:
            raise
        except Exception as exc:  # onnxruntime's Fail, InvalidGraph, InvalidArgument; unknown dtypes
            first = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
            raise ModelLoadError(f"{model}: ONNX Runtime cannot run it ({first})") from None
        runners[model] = runner
    results = interleaved(runners, batch=args.batch, warmup=args.warmup, iterations=args.iterations,
                          rounds=args.rounds, threads=args.threads)
    if args.json:
        print(json.dumps({k: v.as_dict() for k, v in results.items()}, indent=2))
        return 0
    first = next(iter(results.values()))
    width = max(len(k) for k in results)
    print(f"{'model':<{width}}  {'p50 ms':>9}  {'p90 ms':>9}  {'p99 ms':>9}  {'samples/s':>10}  ratio")
    for name, lat in results.items():
        print(f"{name:<{width}}  {lat.p50_ms:9.3f}  {lat.p90_ms:9.3f}  {lat.p99_ms:9.3f}  "
              f"{lat.throughput:10.1f}  {lat.p50_ms / first.p50_ms:5.2f}x")
    print(f"batch {first.batch}, threads {args.threads or 'default'}, {first.iterations} timed runs each")
    return 0
