"""ARM64 under emulation: do cpu-arm64 int8 bundles give the same outputs on arm64 as on x86?

    .venv/bin/python bench/arm64_check.py [--models digits_cnn,resnet18,minilm] [--cpu neoverse-n1]
    make arm64-check                      # the same; needs `apt-get install mmdebstrap qemu-user-static`

For each model: quantize (int8 PTQ, a small calibration set) and export a deploy bundle for the
``cpu-arm64`` target with the project's own recipe runner; run the bundle's ``infer.py`` on its
bundled samples with the host's ONNX Runtime and, under qemu-user, with the aarch64 wheels of the
same onnxruntime and numpy in an arm64 Debian tree (bench/arm64_tree.py); compare the two outputs.
It also saves the graph ONNX Runtime runs on each side (bench/arm64_probe.py) to record the int8
kernels each CPU gets. The tables go to docs/export.md ("ARM64 under emulation").

Emulation says nothing about ARM speed: qemu translates every instruction, so the wall times
printed are the emulator's, not an ARM CPU's.
"""
from __future__ import annotations

import os

os.environ.setdefault("TQDM_DISABLE", "1")  # before anything imports tqdm

import argparse  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections import Counter  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
from arm64_tree import (CORES, EmulatorUnavailable, Tree, build_tree, install_wheels,  # noqa: E402
                        requirements)
from onnx import TensorProto  # noqa: E402
from recipebench import ROOT, recipe, table, write_section  # noqa: E402

import compressor  # noqa: E402
from compressor.cache import cache_dir  # noqa: E402
from compressor.errors import ExportError  # noqa: E402
from compressor.export.parity import Parity, compare  # noqa: E402

DOC = ROOT / "docs" / "export.md"
SECTION = "arm64_check"
PROBE = Path(__file__).with_name("arm64_probe.py")
#: The int8 recipes each model's bundle is made with (target switched to cpu-arm64).
RECIPES = {"digits_cnn": "digits_int8.yaml", "resnet18": "resnet18_int8_tensorrt.yaml",
           "minilm": "minilm_int8.yaml"}
#: Where each int8 op reads its activation's zero point, whose type is the activation's type.
ZERO_POINT_INPUT = {"QuantizeLinear": 2, "DequantizeLinear": 2, "QLinearConv": 2, "QLinearMatMul": 2,
                    "QGemm": 2, "QLinearAdd": 2, "QLinearMul": 2, "QLinearGlobalAveragePool": 2,
                    "QLinearAveragePool": 2, "MatMulInteger": 2, "ConvInteger": 2, "MatMulIntegerToFloat": 4}
#: Float compute ops (what a layer runs when no int8 kernel took it).
FLOAT_COMPUTE = ("Conv", "MatMul", "Gemm", "FusedConv", "FusedMatMul", "FusedGemm")
EIGHT_BIT = {TensorProto.INT8: "s8", TensorProto.UINT8: "u8"}
#: ONNX Runtime's x86 graph rewrite that turns int8 Q/DQ activations into uint8 (for u8s8 kernels).
S8_TO_U8 = "QDQS8ToU8Transformer"
#: Per infer.py run; an emulated MiniLM on 4 samples takes minutes.
TIMEOUT_S = 3600


def bundle_recipe(name: str, calibration_samples: int) -> dict:
    """The model's int8 recipe for cpu-arm64: small calibration, no latency or quality passes."""
    data = recipe(RECIPES[name])
    data["target"] = "cpu-arm64"
    data["data"] = {**data.get("data", {}), "calibration_samples": calibration_samples}
    for stage in data["stages"]:
        if "export" in stage:
            stage["export"] = {**stage["export"], "latency": False, "evaluate": False}
    return data


def export_bundle(name: str, workdir: Path, calibration_samples: int) -> Path:
    """Quantize and export; a failed parity check on this x86 CPU is kept in the manifest, not raised
    (the bundle targets arm64, whose kernels the export's own check does not run)."""
    try:
        compressor.run(bundle_recipe(name, calibration_samples), run_dir=workdir / name, overwrite=True)
    except ExportError as exc:
        print(f"{name}: {exc}", file=sys.stderr)
    bundle = workdir / name / "deploy"
    if not (bundle / "manifest.json").is_file():
        raise RuntimeError(f"{name}: the export wrote no bundle in {bundle}")
    return bundle


def int8_ops(model: onnx.ModelProto) -> Counter:
    """Compute and Q/DQ nodes by op type, with the 8-bit activation type they read (``s8``/``u8``).

    DequantizeLinear nodes of stored weights are left out: they are storage, not a kernel.
    """
    inits = {i.name: i.data_type for i in model.graph.initializer}
    ops: Counter = Counter()
    for node in model.graph.node:
        if node.op_type == "DequantizeLinear" and node.input[0] in inits:
            continue
        index = ZERO_POINT_INPUT.get(node.op_type)
        if index is not None and index < len(node.input) and inits.get(node.input[index]) in EIGHT_BIT:
            ops[f"{node.op_type} {EIGHT_BIT[inits[node.input[index]]]}"] += 1
        elif node.op_type in FLOAT_COMPUTE:
            ops[node.op_type] += 1
    return ops


def describe(ops: Counter) -> str:
    return ", ".join(f"{op} ×{n}" for op, n in sorted(ops.items(), key=lambda kv: (-kv[1], kv[0])))


def activation_types(ops: Counter) -> set[str]:
    """The 8-bit activation types a graph's int8 ops read."""
    return {op.rsplit(" ", 1)[1] for op in ops if op.endswith((" s8", " u8"))}


def compare_outputs(reference: dict[str, np.ndarray], actual: dict[str, np.ndarray]) -> Parity:
    """The worst agreement over all outputs (largest max abs difference, lowest cosine)."""
    if reference.keys() != actual.keys():
        raise ValueError(f"outputs differ: {sorted(reference)} vs {sorted(actual)}")
    each = [compare(reference[k], actual[k]) for k in reference]
    worst = max(each, key=lambda p: p.max_abs)
    top1 = [p.top1_agreement for p in each if p.top1_agreement is not None]
    return Parity(worst.max_abs, max(p.max_rel for p in each), min(p.cosine for p in each),
                  min(top1) if top1 else None, worst.samples)


def run_infer(command: list[str], env: dict[str, str] | None, bundle: Path, out: Path) -> tuple[dict, float]:
    """Run the bundle's infer.py with the Python ``command`` (one thread, outputs saved to ``out``);
    returns the outputs and the wall time of the whole run."""
    start = time.perf_counter()
    done = subprocess.run([*command, str(bundle / "infer.py"), "--threads", "1", "--save", str(out)],
                          env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
    seconds = time.perf_counter() - start
    if done.returncode not in (0, 1):  # 1: infer.py ran and its check against PyTorch failed (reported)
        raise RuntimeError(f"{' '.join(command)} infer.py failed ({done.returncode}): {done.stderr[-2000:]}")
    with np.load(out) as data:
        return {k: data[k] for k in data.files}, seconds


def host_int8_outputs(bundle: Path) -> dict[str, np.ndarray]:
    """x86 ONNX Runtime on the bundle's samples with its S8->U8 rewrite off, so x86 runs int8 x int8
    kernels on int8 activations as ARM does (the rewrite feeds u8s8 kernels, which can saturate)."""
    manifest = json.loads((bundle / "manifest.json").read_text())
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    session = ort.InferenceSession(str(bundle / "model.onnx"), opts, providers=["CPUExecutionProvider"],
                                   disabled_optimizers=[S8_TO_U8])
    with np.load(bundle / manifest["sample"]["file"]) as data:
        feeds = {spec["name"]: np.asarray(data[spec["name"]], dtype=spec["dtype"]) for spec in manifest["inputs"]}
    return dict(zip([spec["name"] for spec in manifest["outputs"]], session.run(None, feeds)))


def pytorch_verdict(bundle: Path, outputs: dict[str, np.ndarray]) -> str:
    """infer.py's check, on any run's outputs: the first output against the PyTorch outputs in
    sample.npz, within the bundle's tolerance for its main model; e.g. ``ok (cosine 0.999873)``."""
    manifest = json.loads((bundle / "manifest.json").read_text())
    with np.load(bundle / manifest["sample"]["file"]) as data:
        expected = data[manifest["sample"]["expected"]]
    parity = compare(expected, outputs[manifest["outputs"][0]["name"]])
    tol = manifest["models"]["onnx"]["tolerance"]
    ok = parity.cosine >= tol["min_cosine"] and (tol["atol"] is None or parity.max_abs <= tol["atol"])
    return f"{'ok' if ok else 'MISMATCH'} (cosine {parity.cosine:.6f})"


def probe(command: list[str], env: dict[str, str] | None, model: Path, optimized: Path) -> tuple[dict, Counter]:
    """What the Python ``command`` reports about its CPU, and the int8 ops of the graph ORT runs there."""
    done = subprocess.run([*command, str(PROBE), str(model), str(optimized)], env=env, capture_output=True,
                          text=True, timeout=TIMEOUT_S)
    if done.returncode != 0:
        raise RuntimeError(f"{PROBE.name} failed ({done.returncode}): {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1]), int8_ops(onnx.load(str(optimized)))


@dataclass
class ModelCheck:
    """One model's bundle run on both CPUs."""

    model: str
    #: Outputs of infer.py on x86 and under qemu, and of x86 with int8 activations kept.
    x86: dict[str, np.ndarray]
    arm64: dict[str, np.ndarray]
    x86_int8: dict[str, np.ndarray]
    #: Each of those three against the bundled PyTorch outputs (infer.py's check), and its cosine bound.
    verdicts: dict[str, str]
    min_cosine: float
    #: Wall time of the infer.py runs, x86 and emulated arm64.
    seconds: tuple[float, float]
    #: int8 ops of the exported file and of the graphs ONNX Runtime runs on each CPU.
    exported: Counter
    ort_arm64: Counter
    ort_x86: Counter
    #: What each CPU reports (probe JSON: machine, onnxruntime version, int8-relevant features).
    arm64_cpu: dict
    x86_cpu: dict


def check_model(name: str, tree: Tree, workdir: Path, calibration_samples: int) -> ModelCheck:
    bundle = export_bundle(name, workdir, calibration_samples)
    model = bundle / "model.onnx"
    out = workdir / name / "arm64-check"
    out.mkdir(exist_ok=True)
    x86_cpu, x86_ops = probe([sys.executable], None, model, out / "ort-x86.onnx")
    arm_cpu, arm_ops = probe(tree.command(), tree.env(), model, out / "ort-arm64.onnx")
    print(f"{name}: bundle {bundle}; running infer.py on x86, then under qemu ({tree.core})", flush=True)
    x86, x86_s = run_infer([sys.executable], None, bundle, out / "outputs-x86.npz")
    arm, arm_s = run_infer(tree.command(), tree.env(), bundle, out / "outputs-arm64.npz")
    kept = host_int8_outputs(bundle)
    verdicts = {side: pytorch_verdict(bundle, outputs) for side, outputs in
                (("x86", x86), ("x86_int8", kept), ("arm64", arm))}
    tolerance = json.loads((bundle / "manifest.json").read_text())["models"]["onnx"]["tolerance"]
    return ModelCheck(name, x86, arm, kept, verdicts, tolerance["min_cosine"], (x86_s, arm_s),
                      int8_ops(onnx.load(str(model), load_external_data=False)), arm_ops, x86_ops, arm_cpu, x86_cpu)


def qemu_version(tree: Tree) -> str:
    first = subprocess.run([tree.qemu, "--version"], capture_output=True, text=True).stdout.splitlines()
    return first[0] if first else "unknown"


def _agreement(p: Parity) -> str:
    top1 = "" if p.top1_agreement is None else f", top-1 {p.top1_agreement:.2f}"
    return f"{p.max_abs:.3g} / {p.cosine:.6f}{top1}"


def _features(cpu: dict) -> str:
    return ", ".join(cpu["features"]) or "none of those checked"


def report(rows: list[ModelCheck], tree: Tree, calibration_samples: int) -> str:
    first = rows[0]
    agreement = table(
        ["model", "samples", "vs PyTorch: x86 infer.py", "x86, int8 kept", "arm64 infer.py",
         "arm64 vs x86 infer.py: max abs / cosine", "arm64 vs x86, int8 kept", "wall s, x86", "wall s, arm64 emulated"],
        [[r.model, len(next(iter(r.x86.values()))), r.verdicts["x86"], r.verdicts["x86_int8"], r.verdicts["arm64"],
          _agreement(compare_outputs(r.x86, r.arm64)), _agreement(compare_outputs(r.x86_int8, r.arm64)),
          f"{r.seconds[0]:.1f}", f"{r.seconds[1]:.1f}"] for r in rows])
    kernels = table(
        ["model", "int8 activations, arm64 / x86", "exported model.onnx (cpu-arm64)", "graph ORT runs on arm64",
         "graph ORT runs on x86"],
        [[r.model, " / ".join(",".join(sorted(activation_types(ops))) for ops in (r.ort_arm64, r.ort_x86)),
          describe(r.exported), describe(r.ort_arm64), describe(r.ort_x86)] for r in rows])
    return "\n".join([
        f"arm64: qemu-user (`{qemu_version(tree)}`) emulating `{tree.core}`, which reports "
        f"{_features(first.arm64_cpu)}; a Debian {tree.root.name} arm64 tree with Python {tree.python} and the "
        f"aarch64 wheels of {', '.join(requirements())}. x86: this machine ({_features(first.x86_cpu)}), "
        f"onnxruntime {first.x86_cpu['onnxruntime']}. Bundles quantized with {calibration_samples} calibration "
        "samples; each side runs the bundle's `infer.py --threads 1` on the bundle's samples. \"int8 kept\": "
        f"x86 ONNX Runtime with `{S8_TO_U8}` disabled. vs PyTorch: infer.py's check against the bundled "
        "PyTorch outputs, `ok` at cosine >= the bundle's int8 tolerance "
        f"({', '.join(sorted({f'{r.min_cosine:g}' for r in rows}))}).",
        "", agreement, "",
        "Wall times are whole `infer.py` runs (interpreter start, session, inference). The arm64 column "
        "is qemu translating ARM instructions on this x86 machine: it measures the emulator, not an ARM "
        "CPU, and says nothing about ARM speed.",
        "", "int8 kernels (op types with the 8-bit activation type they read; `s8` int8, `u8` uint8):",
        "", kernels])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(RECIPES), help="comma-separated, from: " + ", ".join(RECIPES))
    parser.add_argument("--cpu", default="neoverse-n1", choices=sorted(CORES), help="the core qemu emulates")
    parser.add_argument("--calibration-samples", type=int, default=32)
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "arm64-check",
                        help="where the runs and bundles go (default: runs/arm64-check)")
    parser.add_argument("--no-doc", action="store_true", help="print the tables, leave docs/export.md alone")
    args = parser.parse_args(argv)
    names = args.models.split(",")
    unknown = sorted(set(names) - set(RECIPES))
    if unknown:
        parser.error(f"--models: unknown {', '.join(unknown)}; known: {', '.join(RECIPES)}")
    try:
        tree = build_tree(core=args.cpu)
        install_wheels(tree)
    except EmulatorUnavailable as exc:
        print(f"arm64 check not run: {exc}", file=sys.stderr)
        return 2
    print(f"arm64 tree: {tree.root} (cache {cache_dir()})", flush=True)
    rows = [check_model(name, tree, args.work, args.calibration_samples) for name in names]
    body = report(rows, tree, args.calibration_samples)
    print(body)
    if not args.no_doc:
        command = ".venv/bin/python bench/arm64_check.py" + ("" if args.models == ",".join(RECIPES)
                                                             else f" --models {args.models}")
        write_section(DOC, SECTION, f"{body}\n\nMeasured with `{command}` (or `make arm64-check`).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
