"""Q/DQ lowering of fake-quant modules and `check-trt` on our exports and on hand-made bad graphs."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto
from export_helpers import fake_quantize, integer_graph, qdq_conv_graph
from torch import nn

from compressor.cli import main
from compressor.errors import ExportError
from compressor.export.onnx import export_onnx, read_metadata
from compressor.export.parity import onnx_parity
from compressor.export.qdq_rules import RULES, check_trt
from compressor.zoo.resnet import BasicBlock


class Net(nn.Module):
    """Conv + residual block + linear head: the shapes Q/DQ placement meets in ResNets."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU())
        self.block = BasicBlock(16, 16)
        self.head = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.block(self.stem(x)).mean((2, 3)))


@pytest.fixture(scope="module")
def qdq_export(tmp_path_factory: pytest.TempPathFactory) -> tuple[nn.Module, Path, torch.Tensor]:
    torch.manual_seed(0)
    x = torch.randn(8, 3, 16, 16)
    model = fake_quantize(Net().eval(), (x,))
    path = export_onnx(model, (x[:2],), tmp_path_factory.mktemp("qdq") / "q.onnx", input_names=["image"],
                       output_names=["logits"], dynamic_axes={"image": {0: "batch"}}, opset=17, simplify=True,
                       runtime="tensorrt")
    return model, path, x


def test_fake_quant_lowers_to_qdq_pairs_that_pass_check_trt(qdq_export) -> None:
    model, path, x = qdq_export
    proto = onnx.load(str(path))
    ops = [n.op_type for n in proto.graph.node]
    n_layers = sum(isinstance(m, (nn.Conv2d, nn.Linear)) for m in model.modules())
    # Weights are stored pre-quantized (int8 initializer -> DequantizeLinear), activations as Q/DQ.
    assert ops.count("QuantizeLinear") == n_layers
    assert ops.count("DequantizeLinear") == 2 * n_layers
    inits = {i.name for i in proto.graph.initializer}
    weight_dq = [n for n in proto.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits]
    assert len(weight_dq) == n_layers and all(any(a.name == "axis" for a in n.attribute) for n in weight_dq)
    assert read_metadata(path)["precision"] == "int8"
    assert check_trt(path) == []
    parity = onnx_parity(model, path, (x,))
    assert parity.cosine > 0.999 and parity.top1_agreement == 1.0


def test_opset_below_13_refuses_qdq(tmp_path: Path) -> None:
    x = torch.randn(2, 3, 8, 8)
    model = fake_quantize(nn.Sequential(nn.Conv2d(3, 4, 3)), (x,))
    with pytest.raises(ExportError, match="opset >= 13"):
        export_onnx(model, (x,), tmp_path / "m.onnx", input_names=["x"], output_names=["y"], opset=12)


@pytest.mark.parametrize("graph, rule, node", [
    (qdq_conv_graph(act_zero_point=3), "zero-point", "x_quant"),
    (integer_graph("QLinearConv"), "unsupported-op", "qconv"),
    (integer_graph("MatMulInteger"), "unsupported-op", "mmi"),
    (qdq_conv_graph(weight_axis=1), "per-channel-axis", "w_quant"),
    (qdq_conv_graph(opset=12), "opset", "<graph>"),
    (qdq_conv_graph(zp_type=TensorProto.UINT8, act_zero_point=128), "signed-int8", "x_quant"),
    (qdq_conv_graph(weight_scale=np.full(4, 1e-3, np.float32)), "narrow-range", "w_quant"),
], ids=["zero-point", "qlinearconv", "matmulinteger", "wrong-axis", "opset12", "uint8", "narrow-range"])
def test_check_trt_names_each_broken_rule(graph: onnx.ModelProto, rule: str, node: str) -> None:
    onnx.checker.check_model(graph)
    violations = check_trt(graph)
    assert any(v.rule == rule and v.node == node for v in violations), [str(v) for v in violations]
    assert all(v.rule in RULES for v in violations)


def test_check_trt_accepts_the_reference_graph_and_flags_runtime_scales() -> None:
    assert check_trt(qdq_conv_graph()) == []
    graph = qdq_conv_graph()
    # Make the activation scale a computed value instead of an initializer.
    graph.graph.node.insert(0, onnx.helper.make_node("Identity", ["x_scale"], ["x_scale_rt"], name="calc"))
    for n in graph.graph.node[1:3]:
        n.input[1] = "x_scale_rt"
    rules = {(v.rule, v.node) for v in check_trt(graph)}
    assert ("constant-scale", "x_quant") in rules and ("constant-scale", "x_dequant") in rules


def test_check_trt_cli_exit_codes(tmp_path: Path, qdq_export, capsys: pytest.CaptureFixture) -> None:
    _, good, _ = qdq_export
    assert main(["check-trt", str(good)]) == 0
    assert "ok (Q/DQ model)" in capsys.readouterr().out
    bad = tmp_path / "bad.onnx"
    onnx.save(qdq_conv_graph(act_zero_point=3, weight_axis=1), str(bad))
    assert main(["check-trt", str(bad)]) == 1
    out = capsys.readouterr().out
    assert "x_quant (QuantizeLinear): [zero-point]" in out and "[per-channel-axis]" in out
    assert main(["check-trt", str(tmp_path / "missing.onnx")]) == 2
