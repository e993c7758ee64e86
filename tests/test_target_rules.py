"""Targets drive the code: each rule of a target's QuantRules changes the exported graph."""
from __future__ import annotations

import dataclasses
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper
from torch import nn
from torch.utils.data import TensorDataset

from compressor.errors import ExportError
from compressor.export.deploy import export_opset
from compressor.export.onnx import export_onnx, opset_of
from compressor.export.params import ExportParams
from compressor.export.targets import QUANT_RULES, TARGETS, QuantRules
from compressor.stages.quantize import QuantizeParams, quantize_model
from compressor.task import Task

BASE = QUANT_RULES["tensorrt"]


class ResidualNet(nn.Module):
    """A conv, a residual block (one Add) and a Linear head: every op placement could quantize."""

    def __init__(self) -> None:
        super().__init__()
        self.conv0 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv1 = nn.Conv2d(8, 8, 3, padding=1)
        self.head = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv0(x))
        x = torch.relu(self.conv1(x) + x)
        return self.head(x.mean((2, 3)))


def tiny_task() -> Task:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(64, 3, 8, 8, generator=gen)
    y = torch.randint(0, 4, (64,), generator=gen)
    return Task("tiny", "accuracy", TensorDataset(x, y), TensorDataset(x, y), ["x"], batch_size=16,
                calibration_samples=32)


def export_quantized(tmp_path: Path, rules: QuantRules, *, clip_weights: bool = False) -> onnx.ModelProto:
    """Quantize with ``rules`` and export as the pure Q/DQ graph (the TensorRT form, no ORT rewrite).
    ``clip_weights``: halve the weight scales, as a clipping observer would, so the grid's ends show."""
    torch.manual_seed(0)
    task = tiny_task()
    qmodel, _, _ = quantize_model(ResidualNet().eval(), task, QuantizeParams(), rules=rules, log=lambda _m: None)
    if clip_weights:
        for layer in (qmodel.conv0, qmodel.conv1, qmodel.head):
            layer.weight_quantizer.scale.data /= 2
    path = export_onnx(qmodel, task.example_inputs(2), tmp_path / f"{rules.name}.onnx", input_names=["x"],
                       output_names=["y"], runtime="tensorrt", simplify=True,
                       narrow_weights=rules.narrow_range_weights)
    return onnx.load(str(path))


def ops(graph: onnx.ModelProto) -> Counter:
    return Counter(n.op_type for n in graph.graph.node)


def dq_inputs_of(graph: onnx.ModelProto, op_type: str) -> list[int]:
    """For each ``op_type`` node: how many of its inputs come from a DequantizeLinear."""
    producers = {o: n.op_type for n in graph.graph.node for o in n.output}
    return [sum(producers.get(i) == "DequantizeLinear" for i in n.input)
            for n in graph.graph.node if n.op_type == op_type]


def int8_weights(graph: onnx.ModelProto) -> list[np.ndarray]:
    return [numpy_helper.to_array(i) for i in graph.graph.initializer
            if i.data_type == onnx.TensorProto.INT8 and len(i.dims) > 1]


def test_residual_adds_rule_sets_which_add_inputs_are_quantized(tmp_path: Path) -> None:
    counts = {mode: dq_inputs_of(export_quantized(tmp_path / mode, dataclasses.replace(BASE, residual_adds=mode)),
                                 "Add")
              for mode in ("none", "residual", "both")}
    assert counts == {"none": [0], "residual": [1], "both": [2]}


def test_keep_float_rule_leaves_those_ops_unquantized(tmp_path: Path) -> None:
    everything = export_quantized(tmp_path / "all", BASE)
    assert dq_inputs_of(everything, "Conv") == [2, 2] and dq_inputs_of(everything, "Gemm") == [2]
    no_conv = export_quantized(tmp_path / "conv", dataclasses.replace(BASE, keep_float=("Conv",)))
    assert dq_inputs_of(no_conv, "Conv") == [0, 0] and dq_inputs_of(no_conv, "Gemm") == [2]
    no_add = export_quantized(tmp_path / "add", dataclasses.replace(BASE, keep_float=("Add",)))
    assert dq_inputs_of(no_add, "Add") == [0]


def test_per_channel_weights_rule_gives_one_scale_per_tensor(tmp_path: Path) -> None:
    def weight_scales(graph: onnx.ModelProto) -> list[int]:
        inits = {i.name: i for i in graph.graph.initializer}
        return sorted(int(np.prod(inits[n.input[1]].dims)) for n in graph.graph.node
                      if n.op_type == "DequantizeLinear" and n.input[0] in inits and len(inits[n.input[0]].dims) > 1)

    assert weight_scales(export_quantized(tmp_path / "pc", BASE)) == [4, 8, 8]
    flat = dataclasses.replace(BASE, per_channel_weights=False)
    assert weight_scales(export_quantized(tmp_path / "pt", flat)) == [1, 1, 1]


def test_narrow_range_rule_decides_whether_minus_128_occurs(tmp_path: Path) -> None:
    narrow = export_quantized(tmp_path / "n", BASE, clip_weights=True)
    full = export_quantized(tmp_path / "f", dataclasses.replace(BASE, narrow_range_weights=False), clip_weights=True)
    assert min(int(w.min()) for w in int8_weights(narrow)) == -127
    assert min(int(w.min()) for w in int8_weights(full)) == -128


def test_min_opset_rule_raises_the_export_opset(tmp_path: Path) -> None:
    target = dataclasses.replace(TARGETS["jetson-orin"], rules=dataclasses.replace(BASE, min_opset=19))
    assert target.opset == 17 and export_opset(ExportParams(), target) == 19
    task = tiny_task()
    qmodel, _, _ = quantize_model(ResidualNet().eval(), task, QuantizeParams(), rules=target.rules,
                                  log=lambda _m: None)
    kwargs = dict(input_names=["x"], output_names=["y"], runtime="tensorrt", qdq_min_opset=target.rules.min_opset)
    path = export_onnx(qmodel, task.example_inputs(2), tmp_path / "q.onnx", opset=export_opset(ExportParams(), target),
                       **kwargs)
    assert opset_of(onnx.load(str(path))) == 19
    with pytest.raises(ExportError, match="opset >= 19"):  # an explicit lower opset is refused
        export_onnx(qmodel, task.example_inputs(2), tmp_path / "low.onnx", opset=17, **kwargs)
