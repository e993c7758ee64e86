"""A compact ONNX file for codebook models: weights stored as uint8 indices plus codebooks.

The model is exported dense by the normal path (``export_onnx``), then each clustered weight
initializer is replaced by a small subgraph that rebuilds it at load time::

    indices (uint8, two 4-bit indices per byte when k <= 16) -> Cast -> Gather(codebook)
        -> Reshape -> [Mul by row scales] -> [Transpose]  ==> the original initializer name

Initializers are found by content, not by name (exporters rename and fold them): the dense
weight itself, its transpose (Linear exported as MatMul), or the weight times a per-row factor
(Conv with BatchNorm folded in; the factor joins the row scales). ONNX Runtime constant-folds
the subgraph when the session starts, so inference runs the dense kernels at dense speed.
"""
from __future__ import annotations

import copy
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from torch import Tensor, nn

from compressor.errors import ExportError
from compressor.export.onnx import Exporter, export_onnx, save_onnx
from compressor.layers import materialize


@dataclass(frozen=True)
class CompactOnnx:
    path: Path
    dense_bytes: int
    compact_bytes: int
    layers: int

    @property
    def ratio(self) -> float:
        return self.dense_bytes / self.compact_bytes


@dataclass(frozen=True)
class _Match:
    name: str
    transpose: bool
    factor: np.ndarray | None      # per-row factor folded into the initializer (BatchNorm)


def export_codebook_onnx(model: nn.Module, example_inputs: tuple[Tensor, ...], path: str | Path, *,
                         input_names: list[str], output_names: list[str],
                         dynamic_axes: dict[str, dict[int, str]] | None = None, opset: int = 17,
                         exporter: Exporter = "torchscript") -> CompactOnnx:
    """Export ``model`` (with codebook layers) to ``path`` with its weights stored as indices."""
    layers = _indexed_layers(model)
    if not layers:
        raise ExportError("the model has no codebook layer: use the plain ONNX export")
    with tempfile.TemporaryDirectory() as tmp:
        dense_path = Path(tmp) / "dense.onnx"
        export_onnx(materialize(copy.deepcopy(model)), example_inputs, dense_path,
                    input_names=input_names, output_names=output_names,
                    dynamic_axes=dynamic_axes, opset=max(opset, 13), exporter=exporter)
        graph_model = onnx.load(str(dense_path))
        dense_bytes = dense_path.stat().st_size
    graph = graph_model.graph
    inits = {init.name: init for init in graph.initializer}
    arrays = {name: numpy_helper.to_array(init) for name, init in inits.items()}
    nodes, used, missing = [], set(), []
    for lname, layer in layers.items():
        weight = layer.weight.detach().float().cpu().numpy()
        match = _find(weight, arrays, used)
        if match is None:
            missing.append(lname)
            continue
        used.add(match.name)
        nodes += _rebuild(graph, match, lname, layer)
    if missing:
        raise ExportError(f"no initializer in the dense ONNX graph holds the weight of "
                          f"{', '.join(missing)}; the exporter changed it beyond a transpose or a "
                          "per-row factor")
    kept = [init for init in graph.initializer if init.name not in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    kept_inputs = [i for i in graph.input if i.name not in used]
    del graph.input[:]
    graph.input.extend(kept_inputs)
    rest = list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes + rest)
    path = save_onnx(graph_model, path)
    return CompactOnnx(path, dense_bytes, path.stat().st_size, len(layers))


def _indexed_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Modules that store their weight as indices into a codebook (the codebook stage's layers),
    recognised by what they hold, so that export depends on no stage."""
    return {n: m for n, m in model.named_modules()
            if all(hasattr(m, a) for a in ("indices", "codebook", "scale", "weight_shape", "clusters"))}


def _find(weight: np.ndarray, arrays: dict[str, np.ndarray], used: set[str]) -> _Match | None:
    candidates = [(n, a) for n, a in arrays.items() if n not in used and a.size == weight.size
                  and a.dtype == np.float32]
    for name, array in candidates:
        if array.shape == weight.shape and np.array_equal(array, weight):
            return _Match(name, False, None)
    if weight.ndim == 2:
        for name, array in candidates:
            if array.shape == weight.T.shape and np.array_equal(array, weight.T):
                return _Match(name, True, None)
    rows = weight.reshape(len(weight), -1).astype(np.float64)
    norm = (rows * rows).sum(1)
    for name, array in candidates:
        if array.shape != weight.shape:
            continue
        other = array.reshape(len(array), -1).astype(np.float64)
        factor = np.where(norm > 0, (other * rows).sum(1) / np.where(norm > 0, norm, 1), 1.0)
        if np.allclose(other, rows * factor[:, None], rtol=1e-5, atol=1e-6 * np.abs(other).max()):
            return _Match(name, False, factor)
    return None


def _rebuild(graph: onnx.GraphProto, match: _Match, layer_name: str, layer: nn.Module) -> list[onnx.NodeProto]:
    """Nodes (and new initializers) that recompute ``match.name`` from indices and codebook."""
    base = f"{layer_name}.codebook_weight"
    indices = layer.indices.cpu().numpy().astype(np.uint8)
    shape = np.asarray(layer.weight_shape, dtype=np.int64)
    scale = layer.scale.detach().cpu().numpy().astype(np.float64) if layer.scale is not None else None
    if match.factor is not None:
        scale = match.factor if scale is None else scale * match.factor
    new = {f"{base}.codebook": layer.codebook.detach().cpu().numpy().astype(np.float32),
           f"{base}.shape": shape}
    nodes = []
    if layer.clusters <= 16 and len(indices) % 2 == 0:
        half = len(indices) // 2
        new[f"{base}.packed"] = (indices[:half] | (indices[half:] << 4)).astype(np.uint8)
        new[f"{base}.four"] = np.array(4, dtype=np.uint8)
        nodes += [
            helper.make_node("BitShift", [f"{base}.packed", f"{base}.four"], [f"{base}.hi"], direction="RIGHT"),
            helper.make_node("BitShift", [f"{base}.hi", f"{base}.four"], [f"{base}.hi_up"], direction="LEFT"),
            helper.make_node("Sub", [f"{base}.packed", f"{base}.hi_up"], [f"{base}.lo"]),
            helper.make_node("Concat", [f"{base}.lo", f"{base}.hi"], [f"{base}.indices"], axis=0)]
    else:
        new[f"{base}.indices"] = indices
    nodes += [helper.make_node("Cast", [f"{base}.indices"], [f"{base}.idx"], to=TensorProto.INT32),
              helper.make_node("Gather", [f"{base}.codebook", f"{base}.idx"], [f"{base}.rows"], axis=0)]
    out = f"{base}.dense"
    last = match.name if not match.transpose and scale is None else out
    nodes.append(helper.make_node("Reshape", [f"{base}.rows", f"{base}.shape"], [last]))
    if scale is not None:
        bshape = (len(scale),) + (1,) * (len(shape) - 1)
        new[f"{base}.scale"] = scale.astype(np.float32).reshape(bshape)
        scaled = match.name if not match.transpose else f"{base}.scaled"
        nodes.append(helper.make_node("Mul", [last, f"{base}.scale"], [scaled]))
        last = scaled
    if match.transpose:
        nodes.append(helper.make_node("Transpose", [last], [match.name], perm=[1, 0]))
    graph.initializer.extend(numpy_helper.from_array(v, k) for k, v in new.items())
    return nodes
