"""What the uint8 weights of x86 ONNX Runtime files cost in speed, for docs/quantization.md.

    .venv/bin/python bench/int8_weights.py

ResNet-18 (random weights, 224 px) quantized by the quantize stage (int8, per-channel weights,
min-max activations, ONNX Runtime placement), exported three ways and timed in turns in one
process at batch 1 and 8: fp32; the cpu-x86 file (uint8 weights: ONNX Runtime's exact u8u8
kernels); the same graph with int8 weights (u8s8 kernels, which saturate on x86 CPUs without VNNI).
"""
from __future__ import annotations

import os

os.environ.setdefault("TQDM_DISABLE", "1")  # before anything imports tqdm

from pathlib import Path  # noqa: E402

import torch  # noqa: E402

import compressor  # noqa: E402
from compressor.export.bench import interleaved, ort_runner  # noqa: E402
from compressor.export.onnx import export_onnx  # noqa: E402
from compressor.zoo import build_model  # noqa: E402
from recipebench import main, table  # noqa: E402

RECIPE = {"name": "int8-weights", "model": {"zoo": "resnet18"}, "target": "cpu-x86",
          "data": {"calibration_samples": 64}, "report": {"latency": "off"},
          "stages": [{"quantize": {"weights": {"bits": 8, "per_channel": True},
                                   "activations": {"bits": 8, "observer": "minmax"}}}]}
BATCHES = (1, 8)


def weights(tmp: Path) -> str:
    report = compressor.run(RECIPE, run_dir=tmp / "run")
    quantized = compressor.load_model(Path(report.run_dir) / "checkpoints" / "01-quantize.pt")
    example = (torch.rand(2, 3, 224, 224),)
    names = {"input_names": ["image"], "output_names": ["logits"],
             "dynamic_axes": {"image": {0: "batch"}, "logits": {0: "batch"}}}
    files = {"fp32": export_onnx(build_model("resnet18").eval(), example, tmp / "fp32.onnx", **names),
             "int8, uint8 weights (the cpu-x86 file)": export_onnx(quantized, example, tmp / "u8.onnx",
                                                                    cpu="x86_64", **names),
             "int8, int8 weights": export_onnx(quantized, example, tmp / "s8.onnx", cpu="arm64", **names)}
    columns = {}
    for batch in BATCHES:
        inputs = (torch.rand(batch, 3, 224, 224),)
        columns[batch] = interleaved({k: ort_runner(p, inputs) for k, p in files.items()},
                                     batch=batch, iterations=20, rounds=4)
    rows = [[label] + [f"{columns[b][label].p50_ms:.2f} ({columns[b][label].p50_ms / columns[b]['fp32'].p50_ms:.2f}x)"
                       for b in BATCHES] for label in files]
    return ("ResNet-18 (random weights), ONNX Runtime's default threads, median ms of 4 interleaved rounds "
            "(ratio to fp32).\n\n" + table(["file", *(f"batch {b}" for b in BATCHES)], rows))


if __name__ == "__main__":
    main("docs/quantization.md", __file__, {"int8-weights": weights}, __doc__)
