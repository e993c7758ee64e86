"""Torch eager vs ONNX Runtime fp32 vs ONNX Runtime fp16 on the zoo models; writes docs/export_bench.md.

Every variant of a model runs in turns in one process (``compressor.export.bench.interleaved``)
on the same held-out inputs with the same thread count, so the ratios are what to read; parity is
the cosine to the torch output on those inputs.

    .venv/bin/python bench/export_latency.py                          # resnet18 mobilenet_v2 minilm
    .venv/bin/python bench/export_latency.py --models resnet18 --batch 8 --threads 2
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from datetime import date
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def bench_model(name: str, *, batch: int, threads: int, iterations: int, rounds: int,
                workdir: Path) -> list[dict]:
    from compressor.export.bench import interleaved, ort_runner
    from compressor.export.fp16 import convert_file
    from compressor.export.onnx import export_onnx
    from compressor.export.parity import compare, ort_outputs, torch_outputs
    from compressor.zoo import DATASETS, MODELS, build_model

    model = build_model(name).eval()
    task = DATASETS[MODELS[name].dataset].build(model=model)
    inputs = task.example_inputs(batch)
    axes = task.dynamic_axes or {n: {0: "batch"} for n in task.input_names + task.output_names}
    fp32 = export_onnx(model, task.example_inputs(2), workdir / f"{name}.onnx", input_names=task.input_names,
                       output_names=task.output_names, dynamic_axes=axes, simplify=True)
    fp16 = convert_file(fp32, workdir / f"{name}.fp16.onnx")
    reference = torch_outputs(model, inputs)

    def eager() -> None:
        with torch.inference_mode():
            model(*inputs)

    variants = {"torch eager": eager, "ORT fp32": ort_runner(fp32, inputs, threads),
                "ORT fp16": ort_runner(fp16, inputs, threads)}
    timings = interleaved(variants, batch=batch, warmup=3, iterations=iterations, rounds=rounds,
                          threads=threads)
    cosine = {"torch eager": 1.0, "ORT fp32": compare(reference, ort_outputs(fp32, inputs, threads)).cosine,
              "ORT fp16": compare(reference, ort_outputs(fp16, inputs, threads)).cosine}
    base = timings["torch eager"].p50_ms
    shape = " x ".join(str(tuple(x.shape)) for x in inputs)
    return [{"model": name, "inputs": shape, "variant": v, "p50": t.p50_ms, "p90": t.p90_ms,
             "speedup": base / t.p50_ms, "cosine": cosine[v]} for v, t in timings.items()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["resnet18", "mobilenet_v2", "minilm"])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1, help="torch and ONNX Runtime intra-op threads")
    parser.add_argument("--iterations", type=int, default=30, help="timed runs per variant")
    parser.add_argument("--rounds", type=int, default=5, help="turns per variant")
    parser.add_argument("--doc", type=Path, default=ROOT / "docs" / "export_bench.md")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            rows += bench_model(name, batch=args.batch, threads=args.threads, iterations=args.iterations,
                                rounds=args.rounds, workdir=Path(tmp))
            print(f"{name}: done", file=sys.stderr)
    table = ["| model | inputs | variant | p50 ms | p90 ms | speed-up vs eager | cosine vs eager |",
             "|---|---|---|---|---|---|---|"]
    table += [f"| {r['model']} | {r['inputs']} | {r['variant']} | {r['p50']:.2f} | {r['p90']:.2f} | "
              f"{r['speedup']:.2f}x | {r['cosine']:.6f} |" for r in rows]
    command = " ".join(["python bench/export_latency.py", *(sys.argv[1:] if argv is None else argv)])
    text = f"""# Export latency: torch eager vs ONNX Runtime fp32 vs fp16

Measured {date.today().isoformat()} on this machine's CPU with `{command}`
(batch {args.batch}, thread count {args.threads} for torch and ONNX Runtime, variants interleaved in one
process: {args.rounds} rounds, {args.iterations} timed runs each; medians).

{chr(10).join(table)}

- ONNX models come from `compressor.export.onnx.export_onnx` (TorchScript exporter, onnxslim) and
  `compressor.export.fp16.convert_file` (fp16 weights and activations, LayerNorm/Softmax/reductions
  kept fp32, fp32 inputs and outputs).
- This x86 CPU has no fp16 arithmetic: ONNX Runtime's CPU provider runs most fp16 nodes by casting
  back to fp32, so fp16 here only halves the file; it pays off on ARMv8.2+ CPUs and on GPUs.
- The machine is shared (2 cores, other jobs running): with two threads each, contention dominates
  the timings (torch eager's OpenMP threads wait on each other); `--threads 1` gives steadier
  ratios there. Absolute times move by up to +-25% between runs, the ratios within one run much less.
"""
    args.doc.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
