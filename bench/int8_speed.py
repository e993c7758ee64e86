"""Is the int8 export faster than float on ONNX Runtime? Per model, for docs/quantization.md.

    .venv/bin/python bench/int8_speed.py [--only cnns,minilm,resnet18_pruned]

Each model goes through the quantize stage with the defaults of a cpu-x86 recipe (placement: auto,
which times int8 against float per group of layers on this machine; 7-bit weights) and is exported.
The int8 file and the fp32 file of the model before quantization are then timed interleaved in
one process at batch 1 and 8 with 1 and 2 ONNX Runtime threads, and the table gives the ratio
int8 / fp32 (< 1: int8 is faster) with the quality drop of the exported model.

- cnns: the quickstart (digits CNN pruned and distilled, then quantized: its fp32 row is the
  distilled model), MobileNetV2, MobileNetV3-Small and ResNet-18 (random weights, synthetic images).
- minilm: recipes/minilm_int8.yaml (SmoothQuant; placement auto quantizes all) at 128 tokens.
- resnet18_pruned: recipes/prune_int8_resnet18.yaml, against the unpruned fp32 ResNet-18, and its
  TensorRT twin (the same recipe for jetson-orin) through check-trt.
"""
from __future__ import annotations

import os

os.environ.setdefault("TQDM_DISABLE", "1")  # before anything imports tqdm

from pathlib import Path  # noqa: E402

import onnx  # noqa: E402

import compressor  # noqa: E402
from compressor.export.bench import compare_onnx  # noqa: E402
from compressor.export.onnx import export_onnx  # noqa: E402
from compressor.export.qdq_rules import check_trt  # noqa: E402
from compressor.task import Task  # noqa: E402
from recipebench import last_checkpoint, main, prepare, recipe, run, table  # noqa: E402

BATCHES = (1, 8)
THREADS = (1, 2)
#: A quantize stage with a cpu-x86 recipe's defaults, for the zoo CNNs without a recipe of their own.
#: int8 parity >= 0.99 (default 0.999): random-weight deep CNNs amplify the one-step rounding
#: differences of ORT's int8 kernels (ResNet-18 and MobileNetV3: cosine 0.998 to PyTorch).
CNN_RECIPE = {"name": "int8-speed", "target": "cpu-x86", "eval": {"max_drop": 0.02},
              "data": {"calibration_samples": 64}, "report": {"latency": "off"},
              "stages": [{"quantize": {}}, {"export": {"formats": ["onnx"], "simplify": False,
                                                       "parity": {"int8": {"min_cosine": 0.99}}}}]}


def _fp32(model: object, task: Task, path: Path) -> Path:
    axes = task.dynamic_axes or {n: {0: "batch"} for n in task.input_names + task.output_names}
    return export_onnx(model, task.example_inputs(2), path, input_names=task.input_names,
                       output_names=task.output_names, dynamic_axes=axes)


def _ratios(int8: str, fp32: Path, task: Task) -> list[str]:
    """int8 / fp32 median latency at each batch x threads, "ratio (fp32 ms)"."""
    cells = []
    for batch in BATCHES:
        for threads in THREADS:
            lat = compare_onnx({"int8": int8, "fp32": fp32}, task.example_inputs(batch), threads=threads,
                               iterations=40, rounds=8)
            cells.append(f"{lat['int8'].p50_ms / lat['fp32'].p50_ms:.2f}x ({lat['fp32'].p50_ms:.2f} ms)")
    return cells


def _placement(row: dict) -> str:
    chosen = row.get("placement", {}).get("chosen")
    return chosen if chosen is not None else "all int8 (placement: all)"


def _row(label: str, report: compressor.Report, fp32: Path, task: Task, max_drop: float | None) -> list[str]:
    final = report.rows[-2]  # the quantize row (the export row repeats it with parity)
    drop = report.rows[0]["quality"] - final["quality"]
    verdict = "" if max_drop is None else (" (within)" if drop <= max_drop else " (over)")
    return [label, _placement(final), *_ratios(report.artifacts["onnx"], fp32, task),
            f"{drop:+.4f}{verdict}"]


HEADER = ["model", "placement chose", *(f"batch {b}, {t} thr" for b in BATCHES for t in THREADS),
          "quality drop (max_drop)"]


def cnns(tmp: Path) -> str:
    rows = []
    quickstart = recipe("quickstart.yaml")
    prepared = prepare(quickstart)
    report = run(quickstart, quickstart["stages"], tmp / "quickstart", prepared)
    distilled = compressor.load_model(last_checkpoint(report, 1))
    rows.append(_row("quickstart digits_cnn (fp32: distilled)", report,
                     _fp32(distilled, prepared[1], tmp / "quickstart.onnx"), prepared[1],
                     quickstart["eval"]["max_drop"]))
    for name in ("mobilenet_v2", "mobilenet_v3_small", "resnet18"):
        base = {**CNN_RECIPE, "model": {"zoo": name}}
        prepared = prepare(base)
        report = run(base, base["stages"], tmp / name, prepared)
        rows.append(_row(f"{name} (random weights)", report, _fp32(prepared[0], prepared[1], tmp / f"{name}.onnx"),
                         prepared[1], base["eval"]["max_drop"]))
    return ("int8 / fp32 median latency in ONNX Runtime on this CPU (fp32 ms in brackets), the two files "
            "timed in turns in one process, 40 runs each; the int8 file is what the quantize stage and export "
            "of a cpu-x86 recipe write with their defaults. Quality: accuracy (digits) or fidelity to the "
            "fp32 model (random-weight CNNs, harsher than on trained ones).\n\n" + table(HEADER, rows))


def minilm(tmp: Path) -> str:
    base = recipe("minilm_int8.yaml")
    prepared = prepare(base)
    fp32 = _fp32(prepared[0], prepared[1], tmp / "minilm.onnx")
    rows = []
    for label, bits in (("MiniLM int8, 7-bit weights (cpu-x86 default)", None), ("MiniLM int8, 8-bit weights", 8)):
        stages = [dict(s) for s in base["stages"]]
        stages[0] = {"quantize": {**stages[0]["quantize"], "weights": {"bits": bits} if bits else {}}}
        report = run(base, stages, tmp / f"minilm{bits}", prepared)
        rows.append(_row(label, report, fp32, prepared[1], None) + [f"{report.rows[-2]['quality']:.4f}"])
    return ("all-MiniLM-L6-v2, `recipes/minilm_int8.yaml` (SmoothQuant, so placement auto quantizes every "
            "Linear) with the target's 7-bit weights and with 8-bit ones, 128 tokens; columns as above, "
            "quality: the drop in fidelity to the fp32 embeddings and the fidelity itself.\n\n"
            + table(HEADER + ["fidelity"], rows))


def resnet18_pruned(tmp: Path) -> str:
    base = recipe("prune_int8_resnet18.yaml")
    prepared = prepare(base)
    report = run(base, base["stages"], tmp / "pruned", prepared)
    fp32 = _fp32(prepared[0], prepared[1], tmp / "resnet18.onnx")
    row = _row("ResNet-18 pruned + int8 vs unpruned fp32", report, fp32, prepared[1], None)
    twin = run({**base, "target": "jetson-orin"}, base["stages"], tmp / "twin", prepared)
    violations = check_trt(onnx.load(twin.artifacts["onnx"]))
    return ("`recipes/prune_int8_resnet18.yaml` (ResNet-18, random weights: quality is fidelity to the "
            "unpruned model), the int8 file against the **unpruned** fp32 ResNet-18; columns as above.\n\n"
            + table(HEADER, [row]) + f"\n\nIts TensorRT twin (the same recipe with `target: jetson-orin`): "
            f"{len(violations)} check-trt violations, fidelity {twin.rows[-2]['quality']:.4f}.")


if __name__ == "__main__":
    main("docs/quantization.md", __file__, {"cnns": cnns, "minilm": minilm, "resnet18_pruned": resnet18_pruned},
         __doc__)
