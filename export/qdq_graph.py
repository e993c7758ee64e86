"""Clean-up passes for Q/DQ graphs exported from fake-quantized PyTorch models.

The TorchScript exporter writes each quantizer as QuantizeLinear -> DequantizeLinear, weights
included, and one pair per *call* (a quantizer shared by three Linears gives three pairs). These
passes turn that into the graph ONNX Runtime's own quantizer writes and TensorRT expects:
- ``fold_weight_quantizers``: Q(constant float weight) becomes an int8 initializer (4x smaller
  file, no Q at run time) read by its DequantizeLinear, clipped to the narrow range [-127, 127]
  that TensorRT requires of weights (the fake quantizer clips the same way in PyTorch);
- ``dedupe_qdq``: identical Q (and DQ) nodes on the same tensor become one;
- ``quantize_biases`` (ONNX Runtime): a Conv/Gemm fuses into QLinearConv/QGemm only when every
  input comes from a DequantizeLinear, so float biases become int32 with scale
  input_scale * weight_scale, as ONNX Runtime's own quantizer writes them;
- ``requantize_before`` (ONNX Runtime): with zero point 0, Q(Relu(x)) == Q(Relu(DQ(Q(x)))), so a
  copy of the Q/DQ pair above each Relu/MaxPool changes no value and gives the Conv/Add before it
  the output Q that fusion needs (TensorRT fuses Conv+Relu itself; not applied there);
- ``split_shared_qdq`` (ONNX Runtime): a tensor read by several ops (a residual fork) gets one
  Q/DQ pair per reader, each with its own copy of the scale: ONNX Runtime fuses a Conv into
  QLinearConv only when its input pair is private, and merges pairs with the same scale
  initializer. On ResNet-18 this turns 9 of 20 convs into QLinearConv -> all 20
  (bench/quantization.py measures the latency).
"""
from __future__ import annotations

from collections import defaultdict

import numpy as np
import onnx
from onnx import helper, numpy_helper

#: Ops that commute with symmetric (zero point 0) quantization.
COMMUTING_OPS = ("Relu", "MaxPool")


def optimize_qdq(model: onnx.ModelProto, *, runtime: str = "onnxruntime") -> onnx.ModelProto:
    """All passes for ``runtime`` ("onnxruntime" or "tensorrt"), in order; changes ``model``."""
    _constants_to_initializers(model)
    fold_weight_quantizers(model)
    dedupe_qdq(model)
    if runtime == "onnxruntime":
        quantize_biases(model)
        requantize_before(model)
        split_shared_qdq(model)
    _drop_unused_initializers(model)
    return model


def fold_weight_quantizers(model: onnx.ModelProto) -> int:
    """Replace QuantizeLinear of constant inputs by their integer initializers; returns the count."""
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    folded, keep = 0, []
    renames: dict[str, str] = {}
    for node in graph.node:
        if node.op_type == "QuantizeLinear" and all(name in inits for name in node.input[:3]) \
                and len(node.input) >= 3:
            x = numpy_helper.to_array(inits[node.input[0]]).astype(np.float32)
            scale = numpy_helper.to_array(inits[node.input[1]]).astype(np.float32)
            zp = numpy_helper.to_array(inits[node.input[2]])
            axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
            if scale.ndim == 1 and scale.size > 1:
                shape = [1] * x.ndim
                shape[axis] = -1
                scale, zp_b = scale.reshape(shape), zp.reshape(shape)
            else:
                zp_b = zp
            info = np.iinfo(zp.dtype)
            low = info.min + 1 if zp.dtype == np.int8 else info.min  # narrow range for weights
            q = np.clip(np.rint(x / scale) + zp_b.astype(np.int32), low, info.max).astype(zp.dtype)
            name = node.output[0] + "_int"
            graph.initializer.append(numpy_helper.from_array(q, name))
            renames[node.output[0]] = name
            folded += 1
        else:
            keep.append(node)
    _replace_nodes(graph, keep)
    _rename_inputs(graph, renames)
    return folded


def dedupe_qdq(model: onnx.ModelProto) -> int:
    """Merge QuantizeLinear/DequantizeLinear nodes with identical inputs and attributes."""
    graph = model.graph
    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}

    def value(name: str) -> object:  # equal constants under different names compare equal
        return (inits[name].dtype.str, inits[name].shape, inits[name].tobytes()) if name in inits else name

    removed = 0
    changed = True
    while changed:
        changed = False
        seen: dict[tuple, str] = {}
        renames: dict[str, str] = {}
        keep = []
        for node in graph.node:
            if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
                key = (node.op_type, tuple(value(i) for i in node.input), _attrs(node))
                if key in seen:
                    renames[node.output[0]] = seen[key]
                    removed += 1
                    changed = True
                    continue
                seen[key] = node.output[0]
            keep.append(node)
        if changed:
            _replace_nodes(graph, keep)
            _rename_inputs(graph, renames)
    return removed


def quantize_biases(model: onnx.ModelProto) -> int:
    """Float Conv/Gemm biases -> int32 initializer + DequantizeLinear (scale = s_input * s_weight)."""
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    producers = {o: n for n in graph.node for o in n.output}
    done, new_nodes = 0, []
    for node in graph.node:
        if node.op_type in ("Conv", "Gemm") and len(node.input) == 3 and node.input[2] in inits:
            dq_x, dq_w = producers.get(node.input[0]), producers.get(node.input[1])
            if not all(d is not None and d.op_type == "DequantizeLinear" and d.input[1] in inits
                       for d in (dq_x, dq_w)):
                continue
            if node.op_type == "Gemm" and any(a.name == "transB" and a.i == 0 for a in node.attribute):
                continue  # weight scales are per input column then; leave the bias float
            s_x = numpy_helper.to_array(inits[dq_x.input[1]]).astype(np.float64)
            s_w = numpy_helper.to_array(inits[dq_w.input[1]]).astype(np.float64)
            bias = numpy_helper.to_array(inits[node.input[2]]).astype(np.float64)
            scale = np.broadcast_to(s_x * s_w, bias.shape).astype(np.float32)
            q = np.clip(np.rint(bias / scale), -2**31, 2**31 - 1).astype(np.int32)
            base = node.input[2] + f"_{node.name or done}"
            graph.initializer.extend([numpy_helper.from_array(q, base + "_int32"),
                                      numpy_helper.from_array(scale, base + "_scale"),
                                      numpy_helper.from_array(np.zeros_like(q), base + "_zp")])
            new_nodes.append(helper.make_node("DequantizeLinear", [base + "_int32", base + "_scale",
                                                                   base + "_zp"], [base + "_dq"], axis=0))
            node.input[2] = base + "_dq"
            done += 1
    if new_nodes:
        _replace_nodes(graph, new_nodes + list(graph.node))
    return done


def requantize_before(model: onnx.ModelProto) -> int:
    """Give each Relu/MaxPool that feeds a QuantizeLinear (zero point 0) a Q/DQ pair on its input.

    With zero point 0, Q(Relu(x)) == Q(Relu(DQ(Q(x)))) exactly (same for MaxPool), so the copy
    changes no value; it gives the producing Conv/Add the output Q that ONNX Runtime needs to fuse
    QLinearConv/QLinearAdd, as ONNX Runtime's own quantizer places them.
    """
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    done = 0
    while True:
        producers = {o: n for n in graph.node for o in n.output}
        consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
        for n in graph.node:
            for i in n.input:
                consumers[i].append(n)
        for q in graph.node:
            if q.op_type != "QuantizeLinear" or not _zero(inits, q):
                continue
            op = producers.get(q.input[0])
            if op is None or op.op_type not in COMMUTING_OPS or len(op.output) != 1:
                continue
            src = producers.get(op.input[0])
            if src is not None and src.op_type == "DequantizeLinear":
                continue  # already requantized
            base = f"{op.input[0]}_requant"
            q2 = helper.make_node("QuantizeLinear", [op.input[0], *q.input[1:]], [base + "_q"],
                                  name=base + "_Q")
            dq2 = helper.make_node("DequantizeLinear", [base + "_q", *q.input[1:]], [base + "_dq"],
                                   name=base + "_DQ")
            q2.attribute.extend(q.attribute)
            dq2.attribute.extend(q.attribute)
            op.input[0] = base + "_dq"
            nodes = list(graph.node)
            i = nodes.index(op)
            _replace_nodes(graph, nodes[:i] + [q2, dq2] + nodes[i:])
            done += 1
            break
        else:
            return done


def split_shared_qdq(model: onnx.ModelProto) -> int:
    """One private Q/DQ pair (with its own scale/zero-point initializers) per reader of a tensor."""
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    producers = {o: n for n in graph.node for o in n.output}
    consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
    for n in graph.node:
        for i in n.input:
            consumers[i].append(n)
    nodes, added = [], 0
    for dq in graph.node:
        nodes.append(dq)
        q = producers.get(dq.input[0]) if dq.op_type == "DequantizeLinear" else None
        if q is None or q.op_type != "QuantizeLinear":
            continue
        for reader in consumers[dq.output[0]][1:]:
            added += 1
            tag = f"_split{added}"
            params = []
            for name in q.input[1:3]:
                copy = onnx.TensorProto()
                copy.CopyFrom(inits[name])
                copy.name = name + tag
                graph.initializer.append(copy)
                params.append(copy.name)
            q2 = helper.make_node("QuantizeLinear", [q.input[0], *params], [q.output[0] + tag],
                                  name=(q.name or "Q") + tag)
            dq2 = helper.make_node("DequantizeLinear", [q2.output[0], *params], [dq.output[0] + tag],
                                   name=(dq.name or "DQ") + tag)
            q2.attribute.extend(q.attribute)
            dq2.attribute.extend(dq.attribute)
            for k, name in enumerate(reader.input):
                if name == dq.output[0]:
                    reader.input[k] = dq2.output[0]
            nodes += [q2, dq2]
    _replace_nodes(graph, nodes)
    return added


# --------------------------------------------------------------------------- helpers
def _zero(inits: dict[str, onnx.TensorProto], q: onnx.NodeProto) -> bool:
    if len(q.input) < 3 or q.input[2] not in inits:
        return False
    return not np.any(numpy_helper.to_array(inits[q.input[2]]))


def _attrs(node: onnx.NodeProto) -> tuple:
    return tuple(sorted((a.name, helper.get_attribute_value(a)) for a in node.attribute))


def _constants_to_initializers(model: onnx.ModelProto) -> None:
    """Constant nodes (and Identity copies of initializers) become initializers, so passes look
    constants up in one place."""
    graph = model.graph
    keep = []
    inits = {i.name: i for i in graph.initializer}
    for node in graph.node:
        if node.op_type == "Identity" and node.input[0] in inits:
            tensor = onnx.TensorProto()
            tensor.CopyFrom(inits[node.input[0]])
            tensor.name = node.output[0]
            graph.initializer.append(tensor)
            continue
        if node.op_type == "Constant" and len(node.attribute) == 1 and node.attribute[0].name == "value":
            tensor = onnx.TensorProto()
            tensor.CopyFrom(node.attribute[0].t)
            tensor.name = node.output[0]
            graph.initializer.append(tensor)
        else:
            keep.append(node)
    _replace_nodes(graph, keep)


def _drop_unused_initializers(model: onnx.ModelProto) -> None:
    graph = model.graph
    used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
    keep = [i for i in graph.initializer if i.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep)


def _replace_nodes(graph: onnx.GraphProto, nodes: list[onnx.NodeProto]) -> None:
    nodes = list(nodes)
    del graph.node[:]
    graph.node.extend(nodes)


def _rename_inputs(graph: onnx.GraphProto, renames: dict[str, str]) -> None:
    if not renames:
        return
    for node in graph.node:
        for k, name in enumerate(node.input):
            if name in renames:
                node.input[k] = renames[name]
    for out in graph.output:
        if out.name in renames:
            raise ValueError(f"cannot rename graph output {out.name}")
