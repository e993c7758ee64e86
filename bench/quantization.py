"""Quantization benchmark: our PTQ/QAT against fp32 and ONNX Runtime's own quantizers, one run.

    .venv/bin/python bench/quantization.py            # all three models, writes docs/quantization.md
    .venv/bin/python bench/quantization.py --only minilm

Every variant of a model is timed in the same process, interleaved (export/bench.py), and
reported as medians and ratios; quality is measured on held-out data against the fp32 model.
Each model's results replace its block between the BENCH markers in docs/quantization.md
(``<!-- BENCH:digits:BEGIN -->`` ...), so ``--only`` refreshes one model and keeps the others.
"""
from __future__ import annotations

import argparse
import copy
import platform
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import torch

from compressor.export.bench import compare_onnx
from compressor.export.onnx import export_onnx
from compressor.export.qdq_rules import check_trt
from compressor.export.runtime import feeds, ort_session
from compressor.export.targets import QUANT_RULES
from compressor.io import write_text
from compressor.recipe.loader import load_recipe
from compressor.stages.quantize import QuantizeParams, quantize_model
from compressor.stages.quantize.qat import quantization_aware_training
from compressor.task import Task
from compressor.train import TrainParams

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "quantization.md"
THREADS = 2


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.reshape(len(a), -1).astype(np.float64), b.reshape(len(b), -1).astype(np.float64)
    return float(((a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))).mean())


def export(model: torch.nn.Module, task: Task, path: Path, runtime: str = "onnxruntime") -> Path:
    return export_onnx(model, task.example_inputs(2), path, input_names=task.input_names,
                       output_names=task.output_names, dynamic_axes=task.dynamic_axes, runtime=runtime)


def ort_outputs(path: Path, inputs: tuple[torch.Tensor, ...], batch: int = 32) -> np.ndarray:
    session = ort_session(path, THREADS)
    n = len(inputs[0])
    return np.concatenate([session.run(None, feeds(session, tuple(t[i:i + batch] for t in inputs)))[0]
                           for i in range(0, n, batch)])


class OrtReader:
    """onnxruntime.quantization calibration reader over the task's calibration batches."""

    def __init__(self, task: Task, names: list[str], samples: int) -> None:
        self.batches = iter([{n: t.numpy() for n, t in zip(names, b)}
                             for b in task.calibration_batches(samples, batch_size=8)])

    def get_next(self) -> dict | None:
        return next(self.batches, None)


def ort_static(src: Path, dst: Path, task: Task, samples: int, transformer: bool) -> Path:
    from onnxruntime.quantization import CalibrationDataReader, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    pre = dst.with_suffix(".pre.onnx")
    quant_pre_process(str(src), str(pre), skip_symbolic_shape=transformer)
    reader = type("Reader", (OrtReader, CalibrationDataReader), {})(task, task.input_names, samples)
    quantize_static(str(pre), str(dst), reader)
    return dst


def ort_dynamic(src: Path, dst: Path) -> Path:
    from onnxruntime.quantization import quantize_dynamic

    quantize_dynamic(str(src), str(dst))
    return dst


def int8_convs(path: Path) -> str:
    """How many convs ONNX Runtime runs as QLinearConv after its graph optimizations."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.optimized_model_filepath = str(path.with_suffix(".opt.onnx"))
    opts.log_severity_level = 3
    ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    ops = [n.op_type for n in onnx.load(opts.optimized_model_filepath).graph.node]
    return f"{ops.count('QLinearConv')} / {ops.count('QLinearConv') + ops.count('Conv') + ops.count('FusedConv')}"


def latencies(paths: dict[str, Path], inputs: tuple[torch.Tensor, ...], iterations: int,
              threads: int = THREADS, spinning: bool = False, rounds: int = 5) -> dict[str, float]:
    """p50 ms per model, interleaved (``spinning``: ONNX Runtime's default threading, see compare_onnx)."""
    arrays = tuple(t.numpy() for t in inputs)
    result = compare_onnx(paths, arrays, threads=threads, warmup=3, iterations=iterations, rounds=rounds,
                          spinning=spinning)
    return {name: lat.p50_ms for name, lat in result.items()}


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


# --------------------------------------------------------------------------- models
def bench_digits(tmp: Path) -> str:
    from compressor.zoo import DATASETS, build_model

    model = build_model("digits_cnn")
    task = DATASETS["digits"].build(model=model)
    fp32 = task.evaluate(model)
    int8, _, _ = quantize_model(copy.deepcopy(model), task, QuantizeParams())
    int8_acc = task.evaluate(int8)
    w4 = QuantizeParams(weights={"bits": 4}, rounding={"method": "comq"})
    w4a8, _, _ = quantize_model(copy.deepcopy(model), task, w4)
    ptq4 = task.evaluate(w4a8)
    history = quantization_aware_training(w4a8, task, TrainParams(epochs=3, lr=1e-4), teacher=model,
                                          distill=0.5)
    qat4 = task.evaluate(w4a8)
    onnx_acc = float((ort_outputs(export(int8, task, tmp / "digits.onnx"), task.val.tensors[:1]).argmax(1)
                      == task.val.tensors[1].numpy()).mean())
    rows = [["fp32", f"{fp32:.4f}", "", ""],
            ["int8 PTQ (W8A8, per-channel weights, MSE activations)", f"{int8_acc:.4f}",
             f"{(fp32 - int8_acc) * 100:+.2f}", f"{onnx_acc:.4f}"],
            ["int4 weights / int8 activations, PTQ + COMQ rounding", f"{ptq4:.4f}", f"{(fp32 - ptq4) * 100:+.2f}", ""],
            [f"... + QAT (LSQ scales, distillation, {len(history) - 1} epochs, best kept)", f"{qat4:.4f}",
             f"{(fp32 - qat4) * 100:+.2f}", ""]]
    return ("### digits_cnn (sklearn digits, 360 held-out images)\n\n"
            + table(["model", "accuracy (PyTorch)", "drop (pt)", "accuracy (ONNX Runtime)"], rows))


def bench_minilm(tmp: Path, samples: int) -> str:
    from compressor.zoo import DATASETS, build_model

    model = build_model("minilm")
    task = DATASETS["docstrings"].build(model=model, max_length=128)
    task.batch_size = 32
    recipe = load_recipe(ROOT / "recipes" / "minilm_int8.yaml")
    params = recipe.stage("quantize").params.model_copy(update={"calibration_samples": samples})
    ours, _, metrics = quantize_model(copy.deepcopy(model), task, params)
    paths = {"fp32": export(model, task, tmp / "minilm.onnx")}
    paths["ours (static int8)"] = export(ours, task, tmp / "minilm_ours.onnx")
    paths["ours, pure Q/DQ (TensorRT export)"] = export(ours, task, tmp / "minilm_qdq.onnx", runtime="tensorrt")
    paths["ORT quantize_static"] = ort_static(paths["fp32"], tmp / "minilm_static.onnx", task, samples, True)
    paths["ORT quantize_dynamic"] = ort_dynamic(paths["fp32"], tmp / "minilm_dynamic.onnx")
    val_inputs, reference = task.val.tensors[:2], task.val.tensors[2].numpy()
    cos = {name: cosine(ort_outputs(p, val_inputs), reference) for name, p in paths.items()}
    settings = [(b, t, spin) for b in (1, 8) for t, spin in ((1, False), (THREADS, False), (THREADS, True))]
    lat = {(b, t, spin): latencies(paths, task.example_inputs(b), 120 if b == 1 else 40, threads=t,
                                   spinning=spin, rounds=20)
           for b, t, spin in settings}
    rows = [[name, f"{cos[name]:.4f}"] + [f"{lat[k][name]:.1f} ({lat[k][name] / lat[k]['fp32']:.2f}x)"
                                         for k in settings] for name in paths]
    headers = [f"batch {b}, {t} thread{'s' * (t > 1)}{', spinning' * spin}" for b, t, spin in settings]
    return (f"### MiniLM (all-MiniLM-L6-v2), seq 128, {len(reference)} held-out sentences, "
            f"{metrics['calibration_samples']} calibration sentences\n\n"
            f"Ours (`recipes/minilm_int8.yaml`): SmoothQuant (alpha {params.smoothquant.alpha}) on the "
            f"{metrics['smoothed_tensors']} tensors with outlier channels (`min_outlier_ratio: "
            f"{params.smoothquant.min_outlier_ratio:g}`), {params.activations.observer.upper()}-calibrated per-tensor activations, "
            "per-channel weights, LayerNorm/Softmax/GELU float; at export Q/K/V packed into one int8 MatMul "
            "per layer and every int8 MatMul written as ONNX Runtime's MatMulIntegerToFloat with its bias "
            "inside; the pure Q/DQ row is the same model exported for TensorRT (no ORT-specific step), "
            "run in ONNX Runtime. Cosine is ONNX Runtime's output against the fp32 PyTorch embedding. "
            "Latency: p50 ms (ratio to fp32) at each batch size and ORT thread count, the models "
            "interleaved in 20 rounds; `spinning` is ONNX Runtime's default thread pool (workers spin "
            "between operators; only the session being timed is open), the other columns have spinning "
            "off and all sessions open.\n\n"
            + table(["model", "cosine vs fp32"] + headers, rows))


def bench_resnet(tmp: Path, samples: int) -> str:
    from compressor.zoo import DATASETS, build_model

    model = build_model("resnet18")
    task = DATASETS["imagenet-synthetic"].build(model=model)
    params = QuantizeParams(calibration_samples=samples)
    ours, _, _ = quantize_model(copy.deepcopy(model), task, params, rules=QUANT_RULES["ort-cpu"])
    trt, _, _ = quantize_model(copy.deepcopy(model), task, params, rules=QUANT_RULES["tensorrt"])
    paths = {"fp32": export(model, task, tmp / "r18.onnx")}
    paths["ours, ORT placement"] = export(ours, task, tmp / "r18_ours.onnx")
    paths["ours, TensorRT placement"] = export(trt, task, tmp / "r18_trt.onnx", runtime="tensorrt")
    paths["ORT quantize_static"] = ort_static(paths["fp32"], tmp / "r18_static.onnx", task, samples, False)
    val_inputs, reference = task.val.tensors[:1], task.val.tensors[1].numpy()
    cos = {name: cosine(ort_outputs(p, val_inputs), reference) for name, p in paths.items()}
    lat = latencies(paths, task.example_inputs(1), 30)
    rules = {name: check_trt(onnx.load(str(p))) for name, p in paths.items()}
    fused = {name: int8_convs(p) for name, p in paths.items()}
    base = lat["ORT quantize_static"]
    rows = [[name, f"{cos[name]:.4f}", f"{lat[name]:.1f}", f"{lat[name] / lat['fp32']:.2f}x",
             f"{lat[name] / base:.2f}x", fused[name], "n/a (float)" if name == "fp32" else
             ("pass" if not rules[name] else f"fail ({len(rules[name])})")] for name in paths]
    return (f"### ResNet-18 shape (random weights, synthetic 224 px images), batch 1, {samples} calibration images\n\n"
            "Ours, two placements (same settings): the ONNX Runtime one quantizes both inputs "
            "of each residual Add and its export adds private Q/DQ pairs per reader (what ORT needs to "
            "fuse every conv; biases stay float, ORT makes them int32 at load); the TensorRT one "
            "quantizes only the residual input of each Add (Conv+Add fusion in TensorRT). "
            "`TensorRT rules` is `compressor check-trt` on the exported file.\n\n"
            + table(["model", "cosine vs fp32", "p50 ms", "vs fp32", "vs ORT quantize_static",
                     "QLinearConv / convs after ORT optimization", "TensorRT rules"], rows))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default="digits,minilm,resnet", help="comma-separated subset")
    parser.add_argument("--samples", type=int, default=128, help="calibration samples (MiniLM, ResNet)")
    parser.add_argument("--no-write", action="store_true", help="print, do not update the doc")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    torch.set_num_threads(THREADS)
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.only.split(","):
            start = time.time()
            fn = {"digits": lambda: bench_digits(Path(tmp)),
                  "minilm": lambda: bench_minilm(Path(tmp), args.samples),
                  "resnet": lambda: bench_resnet(Path(tmp), args.samples)}[name]
            section = fn()
            command = f"python bench/quantization.py --only {name} --samples {args.samples}"
            block = (f"{section}\n\nMeasured with `{command}` ({time.time() - start:.0f} s; "
                     f"{platform.machine()}, {THREADS} ORT threads unless the table says otherwise, torch {torch.__version__}; "
                     "medians of interleaved runs).")
            print(block + "\n", flush=True)
            if not args.no_write:  # per model, re-reading the doc: edits made during the run survive
                begin, end = f"<!-- BENCH:{name}:BEGIN -->", f"<!-- BENCH:{name}:END -->"
                write_text(DOC, re.sub(f"{re.escape(begin)}.*{re.escape(end)}", lambda _m: f"{begin}\n{block}\n{end}",
                                       DOC.read_text(), flags=re.S))
                print(f"updated {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
