"""What the weight storage of x86 ONNX Runtime files costs in speed, for docs/quantization.md.

    .venv/bin/python bench/int8_weights.py

ResNet-18 (random weights, 224 px) quantized by the quantize stage for cpu-x86 (per-channel
weights, min-max activations, every layer int8: placement all), exported and timed in turns in
one process at batch 1 and 8: fp32; the default cpu-x86 file (7-bit weights kept int8: ONNX
Runtime's u8s8 kernels, exact on them); 8-bit weights as the x86 file stores them (uint8: the
exact u8u8 kernels); the same 8-bit weights kept int8 (u8s8 kernels, which saturate on x86 CPUs
without VNNI).
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
from recipebench import last_checkpoint, main, table  # noqa: E402

BATCHES = (1, 8)


def _quantized(tmp: Path, weights: dict) -> torch.nn.Module:
    recipe = {"name": "int8-weights", "model": {"zoo": "resnet18"}, "target": "cpu-x86",
              "data": {"calibration_samples": 64}, "report": {"latency": "off"},
              "stages": [{"quantize": {"weights": {**weights, "per_channel": True},
                                       "activations": {"observer": "minmax"}, "placement": "all"}}]}
    report = compressor.run(recipe, run_dir=tmp / f"run{weights.get('bits', 'default')}", overwrite=True)
    return compressor.load_model(last_checkpoint(report))


def weights(tmp: Path) -> str:
    seven, eight = _quantized(tmp, {}), _quantized(tmp, {"bits": 8})
    example = (torch.rand(2, 3, 224, 224),)
    names = {"input_names": ["image"], "output_names": ["logits"],
             "dynamic_axes": {"image": {0: "batch"}, "logits": {0: "batch"}}}
    files = {"fp32": export_onnx(build_model("resnet18").eval(), example, tmp / "fp32.onnx", **names),
             "7-bit int8 weights (the cpu-x86 default)": export_onnx(seven, example, tmp / "s7.onnx",
                                                                      cpu="x86_64", **names),
             "8-bit weights as uint8 (`weights: {bits: 8}`)": export_onnx(eight, example, tmp / "u8.onnx",
                                                                           cpu="x86_64", **names),
             "8-bit int8 weights (saturating here)": export_onnx(eight, example, tmp / "s8.onnx", cpu="arm64",
                                                                 **names)}
    columns = {}
    for batch in BATCHES:
        inputs = (torch.rand(batch, 3, 224, 224),)
        columns[batch] = interleaved({k: ort_runner(p, inputs) for k, p in files.items()},
                                     batch=batch, iterations=40, rounds=8)
    rows = [[label] + [f"{columns[b][label].p50_ms:.2f} ({columns[b][label].p50_ms / columns[b]['fp32'].p50_ms:.2f}x)"
                       for b in BATCHES] for label in files]
    return ("ResNet-18 (random weights), ONNX Runtime's default threads, median ms of 8 interleaved rounds "
            "(ratio to fp32).\n\n" + table(["file", *(f"batch {b}" for b in BATCHES)], rows))


if __name__ == "__main__":
    main("docs/quantization.md", __file__, {"int8-weights": weights}, __doc__)
