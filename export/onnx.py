"""torch -> ONNX: export, Q/DQ lowering checks, simplification, metadata, external data, checker.

Fake-quant modules built on ``torch.fake_quantize_per_{tensor,channel}_affine`` are lowered by the
TorchScript exporter to QuantizeLinear/DequantizeLinear pairs; onnxslim's constant folding then turns
scales computed in the graph into initializers (TensorRT wants constant scales). Whether the result
obeys TensorRT's rules is :func:`compressor.export.qdq_rules.check_trt`'s job.
"""
from __future__ import annotations

import json
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any, Literal, Mapping

import numpy as np
import onnx
import torch
from torch import Tensor, nn

from compressor.errors import ExportError
from compressor.export.ort_kernels import host_cpu, integer_matmuls, unsigned_activations, unsigned_weights
from compressor.export.qdq_graph import optimize_qdq
from compressor.export.runtime import check_loads

Exporter = Literal["torchscript", "dynamo"]

#: Initializers larger than this (in total) go to a side file: protobuf caps a file at 2 GiB.
EXTERNAL_DATA_MB = 1024.0
#: The opset that introduced per-axis QuantizeLinear/DequantizeLinear.
QDQ_MIN_OPSET = 13
QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")


def export_onnx(model: nn.Module, example_inputs: tuple[Tensor, ...], path: str | Path, *,
                input_names: list[str], output_names: list[str],
                dynamic_axes: dict[str, dict[int, str]] | None = None, opset: int = 17,
                exporter: Exporter = "torchscript", simplify: bool = False,
                metadata: Mapping[str, Any] | None = None,
                external_data_mb: float = EXTERNAL_DATA_MB,
                runtime: Literal["onnxruntime", "tensorrt"] = "onnxruntime",
                cpu: Literal["x86_64", "arm64"] | None = None, qdq_min_opset: int = QDQ_MIN_OPSET,
                narrow_weights: bool = True) -> Path:
    """Export ``model`` to ``path``, optionally simplify it, stamp ``metadata`` and check it.

    ``compressor.precision`` in the metadata says ``int8`` for Q/DQ graphs, else ``fp32``.
    The TorchScript exporter is the default: it is ~15x faster here and the only one whose
    transformer graphs ONNX Runtime's optimizer fuses. The dynamo exporter specialises a batch
    of 1, so pass examples with batch >= 2 when using it. Models whose initializers exceed
    ``external_data_mb`` are saved with their weights in ``<path>.data``. A fake-quantized
    model's Q/DQ graph is cleaned up for ``runtime`` (see :mod:`compressor.export.qdq_graph`);
    for ``onnxruntime`` its int8 MatMuls then become ONNX Runtime's MatMulIntegerToFloat kernel
    with the bias inside, with activations typed for ``cpu`` (default: this machine's CPU;
    :mod:`compressor.export.ort_kernels`). A Q/DQ graph below ``qdq_min_opset`` (the target's
    ``QuantRules.min_opset``) is refused; ``narrow_weights``: int8 weights in [-127, 127]
    (``QuantRules.narrow_range_weights``).
    """
    path = Path(path)
    model = model.eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=f".{path.name}.") as tmp:
        raw = Path(tmp) / path.name
        _torch_export(model, example_inputs, raw, input_names=input_names, output_names=output_names,
                      dynamic_axes=dynamic_axes or {}, opset=opset, exporter=exporter)
        proto = onnx.load(str(raw))
        if has_qdq(proto) and opset_of(proto) < qdq_min_opset:
            raise ExportError(f"{path}: the model has fake-quant modules; Q/DQ export needs "
                              f"opset >= {qdq_min_opset} (got {opset_of(proto)})")
        if has_qdq(proto):
            proto = optimize_qdq(proto, runtime=runtime, narrow_weights=narrow_weights)
        if simplify:
            proto = _simplify(proto)
        if has_qdq(proto) and runtime == "onnxruntime":
            x86 = (cpu or host_cpu()) == "x86_64"
            integer_matmuls(proto, unsigned_activations=x86)
            if x86:
                unsigned_activations(proto.graph)
                unsigned_weights(proto.graph)
        set_metadata(proto, {**(metadata or {}), "precision": "int8" if has_qdq(proto) else "fp32"})
        save_onnx(proto, path, external_data_mb=external_data_mb)
    return path


def _torch_export(model: nn.Module, example_inputs: tuple[Tensor, ...], path: Path, *,
                  input_names: list[str], output_names: list[str],
                  dynamic_axes: dict[str, dict[int, str]], opset: int, exporter: Exporter) -> None:
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            if exporter == "dynamo":
                dims = {name: {ax: torch.export.Dim(label) for ax, label in axes.items()}
                        for name, axes in dynamic_axes.items() if name in input_names}
                torch.onnx.export(model, example_inputs, str(path), dynamo=True, opset_version=opset,
                                  input_names=input_names, output_names=output_names,
                                  dynamic_shapes=tuple(dims.get(n) for n in input_names))
            else:
                torch.onnx.export(model, example_inputs, str(path), dynamo=False, opset_version=opset,
                                  input_names=input_names, output_names=output_names,
                                  dynamic_axes=dynamic_axes, do_constant_folding=True)
        except Exception as exc:  # torch raises many types; the message is what matters
            hint = (f" (fake-quant modules need opset >= {QDQ_MIN_OPSET})" if opset < QDQ_MIN_OPSET else "")
            raise ExportError(f"ONNX export of {type(model).__name__} failed: {exc}{hint}") from exc


def _simplify(proto: onnx.ModelProto) -> onnx.ModelProto:
    import onnxslim

    try:
        return onnxslim.slim(proto)
    except Exception as exc:  # onnxslim fails on rare graphs; an unsimplified model still works
        warnings.warn(f"onnxslim could not simplify the graph ({exc}); kept it as exported")
        return proto


def save_onnx(proto: onnx.ModelProto, path: str | Path, *,
              external_data_mb: float = EXTERNAL_DATA_MB) -> Path:
    """Save ``proto`` atomically; weights go to ``<name>.data`` beside it above ``external_data_mb``.

    The staged file must pass the ONNX checker and load in ONNX Runtime before it replaces
    ``path``: an invalid model is never written (:class:`ExportError` says why).
    """
    path = Path(path)
    side = path.with_name(path.name + ".data")
    external = initializer_bytes(proto) > external_data_mb * 2**20
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=f".{path.name}.") as tmp:
        staged = Path(tmp) / path.name
        onnx.save_model(proto, str(staged), save_as_external_data=external,
                        all_tensors_to_one_file=True, location=side.name, size_threshold=1024)
        try:
            onnx.checker.check_model(str(staged))
        except onnx.checker.ValidationError as exc:
            raise ExportError(f"{path}: the exported graph is not valid ONNX "
                              f"({str(exc).strip().splitlines()[0]}); nothing was written") from None
        check_loads(staged, shown_as=path)
        if external:
            os.replace(staged.with_name(side.name), side)
        elif side.exists():
            side.unlink()
        os.replace(staged, path)
    return path


def initializer_bytes(proto: onnx.ModelProto) -> int:
    total = 0
    for init in proto.graph.initializer:
        itemsize = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(init.data_type)).itemsize
        total += int(np.prod(init.dims, dtype=np.int64)) * itemsize
    return total


def opset_of(proto: onnx.ModelProto) -> int:
    """The default (ai.onnx) domain's opset version."""
    return next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 0)


def has_qdq(proto: onnx.ModelProto) -> bool:
    return any(n.op_type in QDQ_OPS for n in proto.graph.node)


# ---------------------------------------------------------------------- metadata
#: Prefix of our keys in ``metadata_props`` (values are strings; structured ones are JSON).
META_PREFIX = "compressor."


def set_metadata(proto: onnx.ModelProto, values: Mapping[str, Any]) -> None:
    """Write ``values`` into ``metadata_props`` as ``compressor.<key>`` (non-strings as JSON)."""
    existing = {p.key: p for p in proto.metadata_props}
    for key, value in values.items():
        text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
        full = META_PREFIX + key
        if full in existing:
            existing[full].value = text
        else:
            proto.metadata_props.add(key=full, value=text)


def read_metadata(path: str | Path) -> dict[str, Any]:
    """Our ``metadata_props`` of an ONNX file, JSON values decoded (weights are not loaded)."""
    proto = onnx.load(str(path), load_external_data=False)
    out: dict[str, Any] = {}
    for prop in proto.metadata_props:
        if prop.key.startswith(META_PREFIX):
            try:
                out[prop.key[len(META_PREFIX):]] = json.loads(prop.value)
            except json.JSONDecodeError:
                out[prop.key[len(META_PREFIX):]] = prop.value
    return out


def model_files(path: str | Path) -> list[Path]:
    """The ONNX file and its external-data file, if any (what a bundle must ship)."""
    path = Path(path)
    side = path.with_name(path.name + ".data")
    return [path, side] if side.exists() else [path]


def io_specs(path: str | Path) -> dict[str, list[dict[str, Any]]]:
    """Names, dtypes and shapes (symbolic dims as names) of the graph's inputs and outputs."""
    proto = onnx.load(str(path), load_external_data=False)
    init = {i.name for i in proto.graph.initializer}

    def spec(value: onnx.ValueInfoProto) -> dict[str, Any]:
        t = value.type.tensor_type
        dims = [d.dim_param or (d.dim_value if d.HasField("dim_value") else "?") for d in t.shape.dim]
        return {"name": value.name, "dtype": str(onnx.helper.tensor_dtype_to_np_dtype(t.elem_type)),
                "shape": dims}

    return {"inputs": [spec(v) for v in proto.graph.input if v.name not in init],
            "outputs": [spec(v) for v in proto.graph.output]}

