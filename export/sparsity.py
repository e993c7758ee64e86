"""Check 2:4 semi-structured sparsity in an exported ONNX graph.

TensorRT accelerates only 2:4 sparsity (at most 2 nonzeros in every 4 consecutive weights along
the reduction, i.e. input, dimension), and only when the pattern holds exactly in the weights it
reads from the ONNX file. This reads the weight initializers of Conv, Gemm and MatMul nodes
(through a DequantizeLinear for Q/DQ graphs, whose int8 zeros stay zeros) and counts the groups
that break the pattern.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper


@dataclass(frozen=True)
class WeightPattern:
    """How one weight of a Conv/Gemm/MatMul node fares against N:M sparsity."""

    node: str
    op: str
    weight: str
    shape: tuple[int, ...]
    #: Axis of the weight that the node reduces over (its input dimension).
    axis: int
    groups: int
    #: Groups of M with more than N nonzeros (-1: the input dimension is not a multiple of M).
    violations: int

    @property
    def holds(self) -> bool:
        return self.violations == 0


def semi_structured_report(model: str | Path | onnx.ModelProto, n: int = 2, m: int = 4) -> list[WeightPattern]:
    """N:M status of every constant weight feeding a Conv, Gemm or MatMul in ``model``."""
    proto = model if isinstance(model, onnx.ModelProto) else onnx.load(str(model))
    graph = proto.graph
    constants = {init.name: init for init in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            constants[node.output[0]] = node.attribute[0].t
    producers = {out: node for node in graph.node for out in node.output}
    report = []
    for node in graph.node:
        for index, axis in _weight_inputs(node):
            if index >= len(node.input):
                continue
            name = _through_dequantize(node.input[index], producers)
            if name not in constants:
                continue
            weight = numpy_helper.to_array(constants[name])
            if weight.ndim < 2:
                continue
            axis = axis % weight.ndim
            report.append(WeightPattern(node.name, node.op_type, name, tuple(weight.shape), axis,
                                        *_count(weight, axis, n, m)))
    return report


def _weight_inputs(node: onnx.NodeProto) -> list[tuple[int, int]]:
    """(input index, reduction axis of that input) for the weight operands of ``node``."""
    if node.op_type == "Conv":
        return [(1, 1)]  # W: (out, in / groups, *kernel)
    if node.op_type == "Gemm":
        attrs = {a.name: a.i for a in node.attribute}
        return [(0, 0 if attrs.get("transA", 0) else 1), (1, 1 if attrs.get("transB", 0) else 0)]
    if node.op_type == "MatMul":
        return [(0, -1), (1, -2)]
    return []


def _through_dequantize(name: str, producers: dict[str, onnx.NodeProto]) -> str:
    node = producers.get(name)
    if node is not None and node.op_type == "DequantizeLinear":
        return node.input[0]
    return name


def _count(weight: np.ndarray, axis: int, n: int, m: int) -> tuple[int, int]:
    w = np.moveaxis(weight, axis, -1)
    if w.shape[-1] % m:
        return w.size // w.shape[-1], -1
    groups = (w.reshape(*w.shape[:-1], w.shape[-1] // m, m) != 0).sum(-1)
    return int(groups.size), int((groups > n).sum())
