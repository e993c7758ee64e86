"""The export flow shared by the ``export`` stage and ``compressor export``.

model -> deploy/model.onnx (fp32, or Q/DQ int8) [-> model.fp16.onnx] [-> model.engine or
build_engine.sh] -> parity per format on held-out inputs -> quality and latency per format ->
manifest.json + infer.py + sample.npz. Failures (parity, TensorRT rules) are collected, not raised,
so the bundle is always written and the caller decides.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from compressor.cache import cache_dir
from compressor.errors import StageError
from compressor.export import bundle
from compressor.export import tensorrt as trt
from compressor.export.bench import compare_onnx
from compressor.export.codebook_onnx import export_codebook_onnx
from compressor.export.fp16 import KEEP_FLOAT, convert_file
from compressor.export.onnx import export_onnx, io_specs, read_metadata
from compressor.export.ort_kernels import host_cpu
from compressor.export.params import ExportParams, Tolerance
from compressor.export.parity import Parity, engine_parity, onnx_parity, torch_outputs
from compressor.export.qdq_rules import check_trt
from compressor.export.roofline import efficiency, load_peaks
from compressor.export.runtime import ort_session, run_session
from compressor.export.targets import TARGETS, Target
from compressor.metrics import count_macs, count_params
from compressor.recipe.schema import ReportSpec
from compressor.task import Task

FILES = {"onnx": "model.onnx", "onnx-fp16": "model.fp16.onnx", "onnx-codebook": "model.codebook.onnx",
         "tensorrt": "model.engine"}


@dataclass
class Provenance:
    """Where the model came from, stamped into ONNX metadata and the manifest."""

    recipe_hash: str | None = None
    stages: list[dict[str, str]] = field(default_factory=list)
    recipe: str | None = None


@dataclass
class ExportResult:
    deploy_dir: Path
    artifacts: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def failure_message(self) -> str:
        return ("; ".join(self.failures)
                + f" (artifacts kept in {self.deploy_dir} for inspection; see manifest.json)")


def export_model(model: nn.Module, task: Task, target: Target, deploy_dir: str | Path,
                 params: ExportParams, *, provenance: Provenance | None = None,
                 report: ReportSpec | None = None) -> ExportResult:
    """Export ``model`` for ``target`` into ``deploy_dir`` (see the module docstring)."""
    deploy_dir = Path(deploy_dir)
    provenance = provenance or Provenance()
    _check_formats(params.formats, target)
    model = model.eval()
    res = ExportResult(deploy_dir)
    _clear(deploy_dir)
    axes = task.dynamic_axes or {n: {0: "batch"} for n in task.input_names + task.output_names}
    quality = task.evaluate(model) if params.evaluate else None
    summary = {"metric": task.metric, "quality": quality, "params": count_params(model),
               "macs": count_macs(model, task.example_inputs(1))}

    # ---- ONNX (fp32 or Q/DQ int8)
    onnx_path = deploy_dir / FILES["onnx"]
    export_onnx(model, task.example_inputs(2), onnx_path, input_names=task.input_names,
                output_names=task.output_names, dynamic_axes=axes, opset=export_opset(params, target),
                exporter=params.exporter, simplify=params.simplify,
                metadata={"recipe_hash": provenance.recipe_hash or "", "stages": provenance.stages,
                          "target": target.name, "metrics": summary},
                external_data_mb=params.external_data_mb, runtime=target.runtime, cpu=target.cpu,
                qdq_min_opset=target.rules.min_opset, narrow_weights=target.rules.narrow_range_weights)
    onnx_files = {"onnx": onnx_path}

    # ---- fp16; also the TensorRT input of float models where the target runs fp16. Q/DQ models
    # go to TensorRT as they are: the fp16 converter keeps Q/DQ fp32 behind Casts (fp16 scales need
    # opset 19), and a Cast between DequantizeLinear and Conv can stop TensorRT's int8 fusion.
    qdq = read_metadata(onnx_path)["precision"] == "int8"
    trt_fp16 = "tensorrt" in params.formats and target.allows("fp16") and not qdq
    if "onnx-fp16" in params.formats or trt_fp16:
        keep = params.fp16_keep_float if params.fp16_keep_float is not None else KEEP_FLOAT
        onnx_files["onnx-fp16"] = convert_file(onnx_path, deploy_dir / FILES["onnx-fp16"], keep_float=keep,
                                               external_data_mb=params.external_data_mb)
    if "onnx-codebook" in params.formats:
        compact = export_codebook_onnx(model, task.example_inputs(2), deploy_dir / FILES["onnx-codebook"],
                                       input_names=task.input_names, output_names=task.output_names,
                                       dynamic_axes=axes, opset=export_opset(params, target),
                                       exporter=params.exporter)
        onnx_files["onnx-codebook"] = compact.path
        res.metrics.update(onnx_codebook_bytes=compact.compact_bytes, onnx_dense_bytes=compact.dense_bytes)
    precision = {fmt: read_metadata(path).get("precision", "fp32") for fmt, path in onnx_files.items()}
    if qdq:
        _check_qdq(onnx_path, target, res)

    # ---- parity on held-out inputs
    inputs = task.example_inputs(params.parity.samples)
    reference = torch_outputs(model, inputs)
    parity: dict[str, Parity] = {}
    # A Q/DQ file for TensorRT, or for another CPU than this one (an arm64 file checked on x86), is
    # checked as the ONNX standard defines it: this machine's ONNX Runtime int8 kernels are not what
    # the target runs (x86's u8s8 ones saturate on 8-bit weights without VNNI; export/ort_kernels.py).
    as_specified = qdq and (target.runtime == "tensorrt" or target.cpu != host_cpu())
    if as_specified:
        res.notes.append("parity of the int8 ONNX file: every Q/DQ evaluated as the ONNX standard defines it "
                         f"(ONNX Runtime's graph optimizations off), as {target.name} reads it")
    for fmt, path in onnx_files.items():
        parity[fmt] = onnx_parity(model, path, inputs, target.threads, reference=reference,
                                  as_specified=as_specified and precision[fmt] == "int8")
        _judge(fmt, precision[fmt], parity[fmt], params, res)

    # ---- TensorRT
    trt_entry = None
    if "tensorrt" in params.formats:
        trt_onnx = onnx_files["onnx-fp16"] if trt_fp16 else onnx_path
        trt_entry = _tensorrt(trt_onnx, task, target, params, deploy_dir, res)
        if trt_entry.get("file"):
            precision["tensorrt"] = precision["onnx-fp16" if trt_onnx != onnx_path else "onnx"]
            parity["tensorrt"] = engine_parity(reference, deploy_dir / trt_entry["file"],
                                               task.input_names, inputs)
            _judge("tensorrt", precision["tensorrt"], parity["tensorrt"], params, res)

    # ---- quality and latency of what ships (ONNX Runtime on this CPU)
    ort_quality = {fmt: _ort_quality(path, task, target.threads) for fmt, path in onnx_files.items()
                   } if params.evaluate else {}
    latency = _latency(onnx_files, task, target, report) if params.latency else {}
    if latency and target.runtime != "onnxruntime":
        res.notes.append(f"latency is ONNX Runtime on this CPU; {target.name} runs TensorRT: "
                         "time the engine there (trtexec prints it after building)")

    models = {fmt: bundle.model_entry(path, precision=precision[fmt], parity=parity[fmt],
                                      tolerance=_tolerance(params, precision[fmt]).model_dump(),
                                      quality=ort_quality.get(fmt), latency=latency.get(fmt))
              for fmt, path in onnx_files.items()}
    if trt_entry is not None:
        models["tensorrt"] = {**trt_entry, "parity": parity["tensorrt"].as_dict() if "tensorrt" in parity else None}
    manifest = bundle.write_bundle(
        deploy_dir, task=task, target=target, io=io_specs(onnx_path), models=models,
        summary={**summary, "roofline": _roofline(summary["macs"], latency, precision) if latency else None},
        provenance=provenance.__dict__, sample_inputs=tuple(t[:4] for t in inputs),
        sample_outputs=reference[:4], failures=res.failures, notes=res.notes)

    res.artifacts = {fmt: str(deploy_dir / m["file"]) for fmt, m in models.items() if m.get("file")}
    if trt_entry is not None and trt_entry.get("build_script"):
        res.artifacts["tensorrt_build"] = str(deploy_dir / trt_entry["build_script"])
    res.artifacts["manifest"] = str(manifest)
    # ``parity`` is the main ONNX model's (the report's column); every format's is in ``parity_by_format``.
    res.metrics.update({"parity": parity["onnx"].as_dict(),
                   "parity_by_format": {f: p.as_dict() for f, p in parity.items()}})
    if latency:
        main = next(f for f in ("onnx", "onnx-fp16") if f in latency)
        res.metrics.update(latency_ms=latency[main]["p50_ms"], latency_p90_ms=latency[main]["p90_ms"],
                           latency=latency)
    if ort_quality:
        res.metrics["deployed_quality"] = ort_quality
    if res.notes:
        res.metrics["notes"] = list(res.notes)
    return res


def _clear(deploy_dir: Path) -> None:
    """Remove what an earlier export wrote here, so no stale variant ships with the new one."""
    names = [*FILES.values(), *(f + ".data" for f in FILES.values()), *bundle.FILES, "build_engine.sh"]
    for name in names:
        (deploy_dir / name).unlink(missing_ok=True)


def _check_formats(formats: list[str], target: Target) -> None:
    if "onnx-fp16" in formats and not target.allows("fp16"):
        allowed = ", ".join(n for n, t in TARGETS.items() if t.allows("fp16"))
        raise StageError(f"export.formats: target {target.name} does not run fp16 (precisions: "
                         f"{', '.join(target.precisions)}); drop onnx-fp16 or pick a target that does ({allowed})")
    if "tensorrt" in formats and target.runtime != "tensorrt":
        allowed = ", ".join(n for n, t in TARGETS.items() if t.runtime == "tensorrt")
        raise StageError(f"export.formats: tensorrt needs a TensorRT target ({allowed}); "
                         f"{target.name} runs {target.runtime}")


def export_opset(params: ExportParams, target: Target) -> int:
    """The recipe's opset, else the target's, raised to what its quantization rules need."""
    return params.opset or max(target.opset, target.rules.min_opset)


def _check_qdq(path: Path, target: Target, res: ExportResult) -> None:
    """TensorRT targets must obey TensorRT's Q/DQ rules (ONNX Runtime exports obey them too, but a
    CPU target's run should not fail on a rule of a runtime it does not use)."""
    if target.runtime != "tensorrt":
        return
    violations = check_trt(path)
    if not violations:
        return
    lines = "; ".join(str(v) for v in violations[:5]) + (f" (+{len(violations) - 5} more)" if len(violations) > 5 else "")
    res.failures.append(f"{path.name} breaks TensorRT's Q/DQ rules "
                        f"(`compressor check-trt {path}` lists all): {lines}")


def _tolerance(params: ExportParams, precision: str) -> Tolerance:
    """fp16 (alone or with int8) is held to the fp16 tolerance, pure Q/DQ to int8's, else fp32's."""
    return params.parity.tolerance("fp16" if "fp16" in precision else precision)


def _judge(fmt: str, precision: str, parity: Parity, params: ExportParams, res: ExportResult) -> None:
    tol = _tolerance(params, precision)
    broken = parity.failures(atol=tol.atol, min_cosine=tol.min_cosine, min_top1=tol.min_top1)
    if broken:
        res.failures.append(f"parity check failed for {fmt} ({precision}): " + ", ".join(broken))


def _tensorrt(onnx_path: Path, task: Task, target: Target, params: ExportParams, deploy_dir: Path,
              res: ExportResult) -> dict[str, Any]:
    p = params.tensorrt
    example = {n: tuple(x.shape) for n, x in zip(task.input_names, task.example_inputs(1))}
    shapes = trt.profile_shapes(io_specs(onnx_path)["inputs"], example,
                                max_batch=p.max_batch or target.max_batch, opt_batch=p.opt_batch)
    workspace = p.workspace_mb or target.workspace_mb
    command = trt.trtexec_command(onnx_path.name, FILES["tensorrt"], shapes, workspace_mb=workspace)
    entry: dict[str, Any] = {"onnx": onnx_path.name, "build_command": " ".join(command),
                             "expected_gpu": target.gpu, "compute_capability": target.compute_capability}
    reason = trt.unavailable_reason()
    if reason is None:
        cache = p.timing_cache or cache_dir() / "tensorrt-timing.cache"
        entry.update(trt.build_engine(onnx_path, deploy_dir / FILES["tensorrt"], shapes,
                                      workspace_mb=workspace, timing_cache=cache))
        return entry
    script = trt.write_build_script(deploy_dir / "build_engine.sh", command, reason=reason)
    res.notes.append(f"TensorRT engine not built here: {reason}; run deploy/{script.name} on the target")
    return {**entry, "build_script": script.name, "not_built": reason}


@torch.no_grad()
def _ort_quality(path: Path, task: Task, threads: int | None) -> float:
    """The task's quality metric computed with ONNX Runtime on the held-out split."""
    session = ort_session(path, threads)
    total, count = 0.0, 0
    for batch in task.loader("val"):
        inputs, target = task.split(batch)
        out = run_session(session, inputs, path)[0]
        total += task.score(torch.from_numpy(np.asarray(out, dtype=np.float32)), target).sum().item()
        count += len(target)
    return total / max(count, 1)


def _latency(files: dict[str, Path], task: Task, target: Target,
             report: ReportSpec | None) -> dict[str, dict[str, Any]]:
    batch, warmup, iterations = (report.latency_batch, report.warmup, report.iterations) if report else (1, 5, 30)
    timings = compare_onnx(files, task.example_inputs(batch), threads=target.threads,
                           warmup=warmup, iterations=iterations)
    return {fmt: lat.as_dict() for fmt, lat in timings.items()}


def _roofline(macs: int | None, latency: dict[str, dict[str, Any]],
              precision: dict[str, str]) -> dict[str, float] | None:
    """Share of this machine's measured GEMM peak each variant reaches (bench/roofline.py measures it).

    ONNX Runtime's CPU kernels compute fp16 graphs in fp32, so fp16 is held to the fp32 peak.
    """
    peaks = load_peaks()
    if not peaks or not macs:
        return None
    out = {}
    for fmt, lat in latency.items():
        value = efficiency(macs * lat["batch"], lat["p50_ms"], peaks,
                           "int8" if precision[fmt].startswith("int8") else "fp32", lat["threads"])
        if value is not None:
            out[fmt] = value
    return out or None
