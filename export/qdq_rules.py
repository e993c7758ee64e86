"""``check-trt``: does an explicitly quantized ONNX graph obey TensorRT's Q/DQ rules?

TensorRT builds int8 engines from QuantizeLinear/DequantizeLinear graphs only, and only from
symmetric signed int8 ones: zero point 0, constant scales, weights per channel on the output-channel
axis in [-127, 127], activations per tensor, opset >= 13 (NVIDIA's TensorRT developer guide,
"Working with Quantized Types", and onnx-tensorrt's operators.md). A graph that breaks them fails to
parse, or worse, builds and runs slowly or wrongly; this module names every offending node.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from compressor.export.onnx import QDQ_OPS, opset_of
from compressor.export.targets import QUANT_RULES, QuantRules

#: Integer-arithmetic ops of the "operator-oriented" quantization format: TensorRT parses none.
UNSUPPORTED_OPS = frozenset({
    "QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger", "DynamicQuantizeLinear",
    # ONNX Runtime's contrib (com.microsoft) quantized ops
    "QGemm", "QLinearAdd", "QLinearMul", "QLinearConcat", "QLinearAveragePool",
    "QLinearGlobalAveragePool", "QLinearSigmoid", "QLinearLeakyRelu", "QLinearSoftmax",
    "QLinearReduceMean", "QLinearWhere", "QAttention", "DynamicQuantizeMatMul",
    "MatMulIntegerToFloat", "DynamicQuantizeLSTM", "MatMulNBits",
})

#: Quantized element types and the opset that allows them in Q/DQ (int8: 13 for per-channel).
_QTYPE_OPSET = {TensorProto.INT8: 13, TensorProto.FLOAT8E4M3FN: 19, TensorProto.INT4: 21}

#: What each rule demands, for the report.
RULES: dict[str, str] = {
    "unsupported-op": "Q/DQ format only: integer ops (QLinear*, *Integer, DynamicQuantizeLinear) do not parse",
    "opset": "Q/DQ graphs need opset >= 13 (per-channel), FP8 >= 19, INT4 >= 21",
    "signed-int8": "quantized tensors are signed int8 (or FP8/INT4): uint8 is not supported",
    "zero-point": "zero points are 0 (symmetric quantization)",
    "constant-scale": "scales and zero points are constants (initializers), positive and finite",
    "qdq-pair": "every QuantizeLinear feeds DequantizeLinear with the same scale and zero point",
    "per-channel-axis": "per-channel weights are quantized on the output-channel axis",
    "per-tensor-activation": "activations are quantized per tensor",
    "narrow-range": "int8 weights lie in [-127, 127] (scale = amax / 127)",
}


@dataclass(frozen=True)
class Violation:
    rule: str
    node: str
    op_type: str
    message: str

    def __str__(self) -> str:
        return f"{self.node} ({self.op_type}): [{self.rule}] {self.message}"

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


def check_trt(model: onnx.ModelProto | str | Path,
              rules: QuantRules = QUANT_RULES["tensorrt"]) -> list[Violation]:
    """Every violation of TensorRT's explicit-quantization rules in ``model``, in graph order."""
    proto = model if isinstance(model, onnx.ModelProto) else onnx.load(str(model))
    return _Checker(proto, rules).run()


class _Checker:
    def __init__(self, proto: onnx.ModelProto, rules: QuantRules) -> None:
        self.graph = proto.graph
        self.rules = rules
        self.opset = opset_of(proto)
        # One list of node wrappers, so id() identifies a node everywhere below.
        self.nodes = list(self.graph.node)
        self.names = {id(n): n.name or f"{n.op_type}_{i}" for i, n in enumerate(self.nodes)}
        self.consts: dict[str, np.ndarray] = {i.name: numpy_helper.to_array(i)
                                              for i in self.graph.initializer}
        self.const_types = {i.name: i.data_type for i in self.graph.initializer}
        self.producer: dict[str, onnx.NodeProto] = {}
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        for node in self.nodes:
            for out in node.output:
                self.producer[out] = node
            for inp in node.input:
                self.consumers.setdefault(inp, []).append(node)
            if node.op_type == "Constant" and node.attribute:
                attr = node.attribute[0]
                if attr.name == "value":
                    self.consts[node.output[0]] = numpy_helper.to_array(attr.t)
                    self.const_types[node.output[0]] = attr.t.data_type
                else:
                    self.consts[node.output[0]] = np.asarray(onnx.helper.get_attribute_value(attr))
        self.found: list[Violation] = []

    def flag(self, rule: str, node: onnx.NodeProto | None, message: str) -> None:
        name, op = (self.names[id(node)], node.op_type) if node is not None else ("<graph>", "model")
        self.found.append(Violation(rule, name, op, message))

    def run(self) -> list[Violation]:
        qdq = [n for n in self.nodes if n.op_type in QDQ_OPS]
        if qdq and self.opset < self.rules.min_opset:
            self.flag("opset", None, f"opset {self.opset} < {self.rules.min_opset}: re-export with "
                                     f"opset >= {self.rules.min_opset}")
        for node in self.nodes:
            if node.op_type in UNSUPPORTED_OPS:
                hint = ("; compressor's ONNX Runtime exports write it, export for a TensorRT target "
                        "(--target jetson-orin, ...) instead" if node.op_type == "MatMulIntegerToFloat" else
                        "; export fake-quantized models as QuantizeLinear/DequantizeLinear")
                self.flag("unsupported-op", node, f"{node.op_type} is not parsed by TensorRT{hint}")
            elif node.op_type in QDQ_OPS:
                self.check_qdq(node)
        return self.found

    # ------------------------------------------------------------------ one Q or DQ node
    def check_qdq(self, node: onnx.NodeProto) -> None:
        scale = self.constant(node, 1, "scale")
        zp_type = self.zero_point(node)
        if zp_type is not None:
            allowed = _QTYPE_OPSET
            type_name = TensorProto.DataType.Name(zp_type)
            if zp_type not in allowed:
                self.flag("signed-int8", node, f"quantized type is {type_name}; use signed int8 "
                                               "(quant_min=-128, quant_max=127)")
            elif self.opset < allowed[zp_type] and allowed[zp_type] > self.rules.min_opset:
                self.flag("opset", node, f"{type_name} Q/DQ needs opset >= {allowed[zp_type]}")
        if node.op_type == "QuantizeLinear":
            self.check_pair(node)
        elif node.input[0] not in self.consts:
            src = self.producer.get(node.input[0])
            if src is None or src.op_type != "QuantizeLinear":
                self.flag("qdq-pair", node, f"input {node.input[0]!r} comes from "
                          f"{src.op_type if src is not None else 'a graph input'}, not from QuantizeLinear")
        if scale is not None and scale.size > 1:
            self.check_axis(node, scale)
        if scale is not None and self.rules.narrow_range_weights:
            self.check_narrow(node, scale)

    def constant(self, node: onnx.NodeProto, index: int, what: str) -> np.ndarray | None:
        name = node.input[index] if len(node.input) > index else ""
        if not name:
            return None
        value = self.consts.get(name)
        if value is None:
            src = self.producer.get(name)
            self.flag("constant-scale", node, f"{what} {name!r} is computed at run time"
                      + (f" by {src.op_type}" if src is not None else " (a graph input)")
                      + "; fold it into an initializer (export with simplify=True)")
        elif what == "scale" and not (np.all(np.isfinite(value)) and np.all(value > 0)):
            self.flag("constant-scale", node, f"scale {name!r} has non-positive or non-finite values")
        return value

    def zero_point(self, node: onnx.NodeProto) -> int | None:
        """Check the zero point; return the quantized element type."""
        zp = self.constant(node, 2, "zero point")
        if zp is None:
            if len(node.input) > 2 and node.input[2]:
                return None  # already flagged as not constant
            if node.op_type == "QuantizeLinear":
                self.flag("signed-int8", node, "no zero point: QuantizeLinear then outputs uint8; "
                                               "give an int8 zero point of 0")
                return None
            return self.const_types.get(node.input[0])  # DQ of a stored int8 weight
        if np.any(zp.astype(np.float64) != 0):
            self.flag("zero-point", node, f"zero point {node.input[2]!r} is "
                      f"{_short(zp)}; TensorRT needs symmetric quantization (zero point 0)")
        return self.const_types.get(node.input[2])

    def check_pair(self, q: onnx.NodeProto) -> None:
        for user in self.consumers.get(q.output[0], []):
            if user.op_type != "DequantizeLinear":
                self.flag("qdq-pair", q, f"output feeds {user.op_type} {self.names[id(user)]!r}; "
                                         "a QuantizeLinear must feed DequantizeLinear")
            elif not all(self.same(q, user, i) for i in (1, 2)):
                self.flag("qdq-pair", q, f"scale or zero point differs from its DequantizeLinear "
                                         f"{self.names[id(user)]!r}")

    def same(self, a: onnx.NodeProto, b: onnx.NodeProto, index: int) -> bool:
        x = a.input[index] if len(a.input) > index else ""
        y = b.input[index] if len(b.input) > index else ""
        if x == y:
            return True
        vx, vy = self.consts.get(x), self.consts.get(y)
        return vx is not None and vy is not None and vx.shape == vy.shape and bool(np.all(vx == vy))

    # ------------------------------------------------------------------ per-channel axis
    def check_axis(self, node: onnx.NodeProto, scale: np.ndarray) -> None:
        weight = self.weight_of(node)
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
        if weight is None:
            self.flag("per-tensor-activation", node, f"per-channel scale ({scale.size} values) on "
                                                     f"activation {node.input[0]!r}; use one scale")
            return
        rank = weight.ndim
        axis = axis + rank if axis < 0 else axis
        expected = self.output_channel_axis(node, rank)
        if expected is not None and axis != expected:
            self.flag("per-channel-axis", node, f"per-channel axis {axis}, but the output channels "
                                                f"of the consuming op are axis {expected}")

    def weight_of(self, node: onnx.NodeProto) -> np.ndarray | None:
        """The constant tensor this Q/DQ quantizes (for DQ: through its QuantizeLinear)."""
        src = node.input[0]
        if src in self.consts:
            return self.consts[src]
        prev = self.producer.get(src)
        if node.op_type == "DequantizeLinear" and prev is not None and prev.op_type == "QuantizeLinear":
            return self.consts.get(prev.input[0])
        return None

    def output_channel_axis(self, node: onnx.NodeProto, rank: int) -> int | None:
        """Axis of the weight that indexes the consuming op's output channels (None: unknown)."""
        dq_out = node.output[0] if node.op_type == "DequantizeLinear" else next(
            (u.output[0] for u in self.consumers.get(node.output[0], []) if u.op_type == "DequantizeLinear"),
            None)
        if dq_out is None:
            return None
        perm = list(range(rank))
        users = self.consumers.get(dq_out, [])
        while len(users) == 1 and users[0].op_type == "Transpose":
            t = users[0]
            p = next((list(a.ints) for a in t.attribute if a.name == "perm"), perm[::-1])
            perm = [perm[i] for i in p]
            users = self.consumers.get(t.output[0], [])
            dq_out = t.output[0]
        for user in users:
            slot = list(user.input).index(dq_out)
            if user.op_type == "Conv" and slot == 1:
                return perm[0]
            if user.op_type == "ConvTranspose" and slot == 1:
                return perm[1]
            if user.op_type == "Gemm" and slot == 1:
                trans_b = next((a.i for a in user.attribute if a.name == "transB"), 0)
                return perm[0] if trans_b else perm[-1]
            if user.op_type == "MatMul" and slot == 1:
                return perm[-1]
        return None

    # ------------------------------------------------------------------ narrow range
    def check_narrow(self, node: onnx.NodeProto, scale: np.ndarray) -> None:
        if node.op_type == "QuantizeLinear":
            weight = self.consts.get(node.input[0])
            if weight is None or not np.issubdtype(weight.dtype, np.floating):
                return
            axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
            q = np.round(weight / _broadcast(scale, weight.ndim, axis))  # round half to even, as ONNX
            lowest = float(q.min()) if q.size else 0.0
        else:
            stored = self.consts.get(node.input[0])
            if stored is None or stored.dtype != np.int8:
                return
            lowest = float(stored.min()) if stored.size else 0.0
        if lowest < -127:
            self.flag("narrow-range", node, f"weight {node.input[0]!r} quantizes to {lowest:.0f}; "
                                            "weights use [-127, 127]: scale = amax / 127")


def _broadcast(scale: np.ndarray, rank: int, axis: int) -> np.ndarray:
    if scale.size == 1:
        return scale.reshape(())
    axis = axis + rank if axis < 0 else axis
    shape = [1] * rank
    shape[axis] = scale.size
    return scale.reshape(shape)


def _short(values: np.ndarray) -> str:
    flat = values.reshape(-1)
    return str(flat.tolist()) if flat.size <= 4 else f"[{', '.join(map(str, flat[:4].tolist()))}, ...]"
