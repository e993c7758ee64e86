"""TensorRT engines from (Q/DQ) ONNX: the Python API where it runs, the ``trtexec`` line everywhere.

Engines are built strongly typed: every tensor's precision comes from the ONNX graph (fp16 graphs
run fp16, Q/DQ pairs run int8), which is how TensorRT 10 builds explicitly quantized networks and
the only mode TensorRT 11 keeps. Engines only run on the GPU model and TensorRT version that built
them, so the manifest records both. Where ``tensorrt`` does not import or no GPU is present, the
export writes the exact ``trtexec`` command that builds the same engine on the target.

Written against the TensorRT 10 Python API (``Builder``, ``NetworkDefinitionCreationFlag``,
``OnnxParser``, ``IBuilderConfig.set_memory_pool_limit``, timing caches, optimization profiles).
"""
from __future__ import annotations

import shlex
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from compressor.errors import ExportError
from compressor.io import atomic_path

#: {input name: (min, opt, max) shape} of one optimization profile.
Shapes = dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]


@dataclass(frozen=True)
class GPU:
    name: str
    compute_capability: str


def unavailable_reason() -> str | None:
    """Why engines cannot be built here (None: they can)."""
    try:
        import tensorrt  # noqa: F401
    except ImportError as exc:
        return f"tensorrt does not import ({exc}); on the target: pip install 'compressor[tensorrt]'"
    if gpu_info() is None:
        return "no CUDA GPU is visible"
    return None


def gpu_info() -> GPU | None:
    """The first CUDA GPU: through torch when it has CUDA, else ``nvidia-smi``."""
    import torch

    if torch.cuda.is_available():
        major, minor = torch.cuda.get_device_capability(0)
        return GPU(torch.cuda.get_device_name(0), f"{major}.{minor}")
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,compute_cap", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    first = out.strip().splitlines()[0] if out.strip() else ""
    name, _, cap = first.rpartition(",")
    return GPU(name.strip(), cap.strip()) if name else None


def profile_shapes(inputs: list[dict[str, Any]], example: dict[str, tuple[int, ...]], *,
                   max_batch: int, opt_batch: int = 1) -> Shapes:
    """One optimization profile from the ONNX inputs' (symbolic) shapes and example shapes.

    The batch axis (a symbolic first dimension) spans 1..``max_batch``, optimised for
    ``opt_batch``; other symbolic axes (sequence length) span 1..the example's size.
    """
    shapes: Shapes = {}
    for spec in inputs:
        name, ex = spec["name"], example[spec["name"]]
        ranges = []
        for axis, dim in enumerate(spec["shape"]):
            if isinstance(dim, int) and dim > 0:
                ranges.append((dim, dim, dim))
            elif axis == 0:
                ranges.append((1, min(opt_batch, max_batch), max_batch))
            else:
                ranges.append((1, ex[axis], ex[axis]))
        lo, opt, hi = (tuple(r[k] for r in ranges) for k in range(3))
        shapes[name] = (lo, opt, hi)
    return shapes


def trtexec_command(onnx_path: str, engine_path: str, shapes: Shapes, *, workspace_mb: int,
                    timing_cache: str = "timing.cache") -> list[str]:
    """The ``trtexec`` invocation (TensorRT >= 10) that builds the engine :func:`build_engine` builds."""
    cmd = ["trtexec", f"--onnx={onnx_path}", f"--saveEngine={engine_path}", "--stronglyTyped",
           f"--memPoolSize=workspace:{workspace_mb}", f"--timingCacheFile={timing_cache}"]
    if any(lo != hi for lo, _, hi in shapes.values()):
        for flag, k in (("--minShapes", 0), ("--optShapes", 1), ("--maxShapes", 2)):
            cmd.append(f"{flag}=" + ",".join(f"{n}:{'x'.join(map(str, s[k]))}" for n, s in shapes.items()))
    return cmd


def write_build_script(path: str | Path, command: list[str], *, reason: str) -> Path:
    """A shell script that runs ``command`` from its own directory (the deploy bundle)."""
    text = ("#!/bin/sh\n"
            f"# Builds the TensorRT engine on the target GPU (not built here: {reason}).\n"
            "# Needs TensorRT >= 10 (trtexec on PATH, e.g. /usr/src/tensorrt/bin on Jetson).\n"
            'cd "$(dirname "$0")"\n'
            + " \\\n    ".join(shlex.quote(c) for c in command) + "\n")
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    path.chmod(0o755)
    return path


def build_engine(onnx_path: str | Path, engine_path: str | Path, shapes: Shapes, *,
                 workspace_mb: int, timing_cache: str | Path | None = None) -> dict[str, Any]:
    """Build a strongly typed engine from ``onnx_path``; return its manifest entry.

    ``timing_cache`` is read if it exists and rewritten after the build, so rebuilding variants of
    one model (search trials, precisions) skips kernel timing already done.
    """
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ExportError(f"{onnx_path}: TensorRT's ONNX parser failed: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mb * 2**20)
    if any(lo != hi for lo, _, hi in shapes.values()):
        profile = builder.create_optimization_profile()
        for name, (lo, opt, hi) in shapes.items():
            profile.set_shape(name, lo, opt, hi)
        config.add_optimization_profile(profile)
    cache_path = Path(timing_cache) if timing_cache else None
    if cache_path is not None:
        cache = config.create_timing_cache(cache_path.read_bytes() if cache_path.exists() else b"")
        config.set_timing_cache(cache, ignore_mismatch=False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ExportError(f"{onnx_path}: TensorRT returned no engine (see the log above; a larger "
                          "workspace_mb helps when tactics ran out of memory)")
    with atomic_path(engine_path) as tmp:
        tmp.write_bytes(bytes(serialized))
    if cache_path is not None:
        with atomic_path(cache_path) as tmp:
            tmp.write_bytes(bytes(config.get_timing_cache().serialize()))
    gpu = gpu_info()
    return {"file": Path(engine_path).name, "tensorrt": trt.__version__, "strongly_typed": True,
            "gpu": asdict(gpu) if gpu else None, "workspace_mb": workspace_mb,
            "shapes": {n: {"min": s[0], "opt": s[1], "max": s[2]} for n, s in shapes.items()}}


def run_engine(engine_path: str | Path, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
    """Run a serialized engine once on ``inputs`` (on the GPU, through torch CUDA tensors)."""
    import tensorrt as trt
    import torch

    runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
    engine = runtime.deserialize_cuda_engine(Path(engine_path).read_bytes())
    context = engine.create_execution_context()
    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    keep: list[torch.Tensor] = []
    outputs: list[tuple[str, torch.Tensor]] = []
    for name in names:
        if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
            dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(name)))
            tensor = torch.from_numpy(np.ascontiguousarray(inputs[name], dtype=dtype)).cuda()
            context.set_input_shape(name, tuple(tensor.shape))
            keep.append(tensor)
            context.set_tensor_address(name, tensor.data_ptr())
    for name in names:
        if engine.get_tensor_mode(name) == trt.TensorIOMode.OUTPUT:
            dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(name)))
            shape = tuple(context.get_tensor_shape(name))
            tensor = torch.empty(shape, dtype=torch.from_numpy(np.empty(0, dtype)).dtype, device="cuda")
            outputs.append((name, tensor))
            context.set_tensor_address(name, tensor.data_ptr())
    stream = torch.cuda.current_stream()
    if not context.execute_async_v3(stream.cuda_stream):
        raise ExportError(f"{engine_path}: TensorRT execution failed")
    stream.synchronize()
    return [t.cpu().numpy() for _, t in outputs]
