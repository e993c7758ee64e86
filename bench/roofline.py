"""Measure ONNX Runtime's achievable GEMM rate on this CPU and write docs/roofline.md.

The peaks (GMAC/s of a large square matrix product in fp32 and int8) are cached where
reports find them (``~/.cache/compressor/roofline.json``): the export stage then reports each
exported model's ``MACs / latency / peak``, how close it runs to what the kernels can do.

    .venv/bin/python bench/roofline.py                   # 1024^3 GEMMs, 1 thread and default
    .venv/bin/python bench/roofline.py --size 512 --threads 1 2
"""
from __future__ import annotations

import argparse
import sys
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    from compressor.export.roofline import KERNELS, measure_peaks, save_peaks, thread_key

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=1024, help="M = K = N of the GEMM")
    parser.add_argument("--threads", type=int, nargs="*", default=[1, 0],
                        help="intra-op thread counts (0: ONNX Runtime's default)")
    parser.add_argument("--iterations", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--doc", type=Path, default=ROOT / "docs" / "roofline.md")
    args = parser.parse_args(argv)

    threads = [t or None for t in args.threads]
    peaks = measure_peaks(args.size, threads, iterations=args.iterations, rounds=args.rounds)
    cache = save_peaks(peaks)
    rows = ["| kernel | threads | GMAC/s | vs fp32 |", "|---|---|---|---|"]
    for t in threads:
        key = thread_key(t)
        base = peaks["gmacs"]["fp32"][key]
        for kernel in KERNELS:
            value = peaks["gmacs"][kernel][key]
            rows.append(f"| {kernel} | {key} | {value:.1f} | {value / base:.2f}x |")
    command = "  ".join(["python bench/roofline.py", *(sys.argv[1:] if argv is None else argv)]).strip()
    text = f"""# Roofline: achievable GEMM rate in ONNX Runtime on this machine

Measured {date.today().isoformat()} on `{peaks['cpu']}` with
`{command}`: a {args.size}x{args.size}x{args.size} matrix product, kernels interleaved in one
process ({args.rounds} rounds, {args.iterations} timed runs each), median latency.

{chr(10).join(rows)}

- `fp32`: ONNX `MatMul` (MLAS SGEMM). `int8`: `MatMul` between symmetric int8 Q/DQ pairs, which
  ONNX Runtime fuses into its int8 kernels as it does in a whole Q/DQ model (the quantization of
  A is included, O(n^2) against the GEMM's O(n^3)). `int8-u8s8`: the raw `MatMulInteger` kernel
  with uint8 activations, which x86 without VNNI multiplies fastest (`vpmaddubsw`).
- A model's share of the roof is `MACs / latency / peak` (`compressor.export.roofline.efficiency`);
  the export stage writes it to `manifest.json` (`metrics.roofline`) once these peaks are cached
  (`{cache.name}` in the compressor cache). Convolutions with few channels, depthwise layers and
  memory-bound ops sit far below the roof: the gap is what fusion and layout can still win.
- Timings on this shared 2-core machine vary by up to +-25% between processes; ratios within one
  run are the trustworthy part.
"""
    args.doc.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
