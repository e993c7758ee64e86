"""Test helpers for export: a tiny encoder, a minimal int8 fake-quant module, hand-made Q/DQ graphs.

The real quantizers (calibration, observers, QAT) live in the quantize stage; the one here only
exercises the lowering contract: torch.fake_quantize_per_{tensor,channel}_affine, symmetric int8,
zero point 0, weights per channel on axis 0 with scale = amax / 127 (narrow range).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import TensorProto, helper, numpy_helper
from torch import Tensor, nn

from compressor.export.onnx import export_onnx


class TinyEncoder(nn.Module):
    """Embedding + LayerNorm + softmax attention pooling: dynamic batch and sequence axes."""

    def __init__(self, vocab: int = 50, dim: int = 16) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.norm = nn.LayerNorm(dim)
        self.score = nn.Linear(dim, 1)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = self.norm(self.embed(ids))
        w = self.score(h).squeeze(-1).masked_fill(mask == 0, -1e4).softmax(-1)
        return (w.unsqueeze(-1) * h).sum(1)


def export_tiny(path: Path, **kwargs: object) -> tuple[nn.Module, Path]:
    """Export a seeded TinyEncoder with dynamic batch and sequence axes (kwargs: export_onnx's)."""
    torch.manual_seed(0)
    model = TinyEncoder().eval()
    ids, mask = torch.randint(0, 50, (2, 7)), torch.ones(2, 7, dtype=torch.long)
    axes = {"ids": {0: "batch", 1: "seq"}, "mask": {0: "batch", 1: "seq"}, "emb": {0: "batch"}}
    export_onnx(model, (ids, mask), path, input_names=["ids", "mask"], output_names=["emb"],
                dynamic_axes=axes, opset=17, simplify=True, **kwargs)
    return model, path


class FakeQuant(nn.Module):
    def __init__(self, amax: Tensor, axis: int | None = None) -> None:
        super().__init__()
        self.axis = axis
        self.register_buffer("scale", (amax.float().clamp(min=1e-8) / 127).reshape(-1 if axis is not None else ()))
        self.register_buffer("zero_point", torch.zeros_like(self.scale, dtype=torch.int32))

    def forward(self, x: Tensor) -> Tensor:
        if self.axis is None:
            return torch.fake_quantize_per_tensor_affine(x, self.scale, self.zero_point, -128, 127)
        return torch.fake_quantize_per_channel_affine(x, self.scale, self.zero_point, self.axis, -128, 127)


class QuantWrap(nn.Module):
    """Quantizes a Conv2d/Linear's input (per tensor) and weight (per output channel)."""

    def __init__(self, layer: nn.Conv2d | nn.Linear, input_amax: Tensor) -> None:
        super().__init__()
        self.layer = layer
        self.input_quant = FakeQuant(input_amax)
        w = layer.weight.detach()
        self.weight_quant = FakeQuant(w.abs().amax(dim=tuple(range(1, w.dim()))), axis=0)

    def forward(self, x: Tensor) -> Tensor:
        x, w = self.input_quant(x), self.weight_quant(self.layer.weight)
        if isinstance(self.layer, nn.Linear):
            return F.linear(x, w, self.layer.bias)
        return self.layer._conv_forward(x, w, self.layer.bias)


@torch.no_grad()
def fake_quantize(model: nn.Module, calibration: tuple[Tensor, ...]) -> nn.Module:
    """Wrap every Conv2d/Linear of ``model`` (in place), input ranges max-calibrated on ``calibration``."""
    layers = {n: m for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    amax: dict[str, Tensor] = {}
    hooks = [m.register_forward_pre_hook(lambda m, args, n=n: amax.__setitem__(n, args[0].abs().max()))
             for n, m in layers.items()]
    model.eval()(*calibration)
    for h in hooks:
        h.remove()
    for name, layer in layers.items():
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, attr, QuantWrap(layer, amax[name]))
    return model


def qdq_conv_graph(*, opset: int = 17, act_zero_point: int = 0, zp_type: int = TensorProto.INT8,
                   weight_axis: int = 0, weight_scale: np.ndarray | None = None,
                   conv_op: str = "Conv") -> onnx.ModelProto:
    """x -> Q/DQ -> Conv(W -> Q/DQ per channel) -> y, with knobs to break one rule at a time."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    channels = w.shape[weight_axis]
    w_scale = (weight_scale if weight_scale is not None
               else np.abs(w).reshape(4, -1).max(1) / 127 if weight_axis == 0
               else np.full(channels, np.abs(w).max() / 127)).astype(np.float32)
    np_zp = onnx.helper.tensor_dtype_to_np_dtype(zp_type)
    inits = [numpy_helper.from_array(w, "W"),
             numpy_helper.from_array(np.array(0.05, np.float32), "x_scale"),
             numpy_helper.from_array(np.array(act_zero_point, np_zp), "x_zp"),
             numpy_helper.from_array(w_scale, "w_scale"),
             numpy_helper.from_array(np.zeros(channels, np.int8), "w_zp")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "x_scale", "x_zp"], ["xq"], name="x_quant"),
             helper.make_node("DequantizeLinear", ["xq", "x_scale", "x_zp"], ["xd"], name="x_dequant")]
    if opset >= 13:
        nodes += [helper.make_node("QuantizeLinear", ["W", "w_scale", "w_zp"], ["wq"], name="w_quant", axis=weight_axis),
                  helper.make_node("DequantizeLinear", ["wq", "w_scale", "w_zp"], ["wd"], name="w_dequant",
                                   axis=weight_axis)]
        weight = "wd"
    else:  # no per-axis Q/DQ before opset 13: weights stay float
        weight = "W"
    nodes.append(helper.make_node(conv_op, ["xd", weight], ["y"], name="conv", pads=[1, 1, 1, 1]))
    graph = helper.make_graph(nodes, "qdq_conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def integer_graph(op: str) -> onnx.ModelProto:
    """A graph in the operator-oriented format (QLinearConv or MatMulInteger), which TensorRT rejects."""
    u8 = lambda name, v: numpy_helper.from_array(np.array(v, np.uint8), name)  # noqa: E731
    f32 = lambda name, v: numpy_helper.from_array(np.array(v, np.float32), name)  # noqa: E731
    if op == "QLinearConv":
        w = numpy_helper.from_array(np.ones((2, 1, 1, 1), np.int8), "w")
        inits = [w, f32("xs", 0.1), u8("xz", 128), f32("ws", 0.1),
                 numpy_helper.from_array(np.array(0, np.int8), "wz"), f32("ys", 0.1), u8("yz", 128)]
        node = helper.make_node("QLinearConv", ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz"], ["y"], name="qconv")
        x = helper.make_tensor_value_info("x", TensorProto.UINT8, [1, 1, 4, 4])
        y = helper.make_tensor_value_info("y", TensorProto.UINT8, [1, 2, 4, 4])
    else:
        inits = [numpy_helper.from_array(np.ones((4, 2), np.int8), "w")]
        node = helper.make_node("MatMulInteger", ["x", "w"], ["y"], name="mmi")
        x = helper.make_tensor_value_info("x", TensorProto.UINT8, [1, 4])
        y = helper.make_tensor_value_info("y", TensorProto.INT32, [1, 2])
    graph = helper.make_graph([node], op, [x], [y], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
