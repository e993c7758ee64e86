"""Open an ONNX file a user hands us (`compressor bench`, `compressor check-trt`): one clear error
per problem, and external data only from files inside the model's folder."""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import onnx
from onnx.external_data_helper import ExternalDataInfo, uses_external_data

from compressor.errors import ModelLoadError


def read_onnx(path: str | Path, *, load_external_data: bool = True) -> onnx.ModelProto:
    """The model in ``path``; :class:`ModelLoadError` for a missing, empty, corrupt or non-ONNX
    file, or external data that is missing, truncated or outside the model's folder."""
    path = Path(path)
    if path.is_dir():
        raise ModelLoadError(f"{path}: is a directory, expected an ONNX file")
    if not path.is_file():
        raise ModelLoadError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise ModelLoadError(f"{path}: empty file (0 bytes), not an ONNX model")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf DecodeError, RuntimeError, ...
        raise ModelLoadError(f"{path}: not an ONNX model ({str(exc).splitlines()[0][:200]})") from None
    if proto.ir_version <= 0 or not proto.opset_import or not proto.graph.node:
        raise ModelLoadError(f"{path}: not an ONNX model (no IR version, opset or graph nodes)")
    check_external_data(proto, path)
    if load_external_data:
        try:
            onnx.load_external_data_for_model(proto, str(path.parent))
        except Exception as exc:
            raise ModelLoadError(f"{path}: cannot read its external data ({exc})") from None
    return proto


def check_external_data(proto: onnx.ModelProto, path: Path) -> None:
    """Every external-data reference names an existing file inside the model's folder, long
    enough for the offset and length it gives."""
    folder = path.parent.resolve()
    for tensor in _tensors(proto.graph):
        if not uses_external_data(tensor):
            continue
        info = ExternalDataInfo(tensor)
        target = (folder / info.location).resolve()
        if not target.is_relative_to(folder):
            raise ModelLoadError(f"{path}: tensor {tensor.name!r} points to external data outside the "
                                 f"model's folder ({info.location!r}); refused")
        if not target.is_file():
            raise ModelLoadError(f"{path}: tensor {tensor.name!r} needs external data file "
                                 f"{info.location!r}, which is missing")
        end = (info.offset or 0) + (info.length or 0)
        if end > target.stat().st_size:
            raise ModelLoadError(f"{path}: external data file {info.location!r} is shorter than tensor "
                                 f"{tensor.name!r} needs ({end} bytes)")


def _tensors(graph: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
    """Initializers and tensor attributes of ``graph`` and its subgraphs."""
    yield from graph.initializer
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            if attr.HasField("g"):
                yield from _tensors(attr.g)
            for sub in attr.graphs:
                yield from _tensors(sub)
