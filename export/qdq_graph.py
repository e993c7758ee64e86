"""Clean-up passes for Q/DQ graphs exported from fake-quantized PyTorch models.

The TorchScript exporter writes each quantizer as QuantizeLinear -> DequantizeLinear, weights
included, and one pair per *call* (a quantizer shared by three Linears gives three pairs). These
passes turn that into one graph that TensorRT parses and ONNX Runtime runs as int8 kernels:
- ``fold_weight_clips``: weights of fewer than 8 bits are clipped to their grid (Min/Max with the
  per-channel bounds) before their int8 Q; the clip of a constant becomes a constant, so the
  next pass sees a constant weight and the layer runs in int8 kernels;
- ``fold_weight_quantizers``: Q(constant float weight) becomes an int8 initializer (4x smaller
  file, no Q at run time) read by its DequantizeLinear, clipped to the narrow range [-127, 127]
  when the target's rules ask for it
  that TensorRT requires of weights (the fake quantizer clips the same way in PyTorch);
- ``dedupe_qdq``: identical Q (and DQ) nodes on the same tensor become one;
- ``fold_weight_transposes``: a Linear exports as DQ(int8 weight) -> Transpose -> MatMul; the
  initializer is stored transposed instead (per-channel axis swapped), one node less per layer;
- ``pack_parallel_matmuls`` (ONNX Runtime): MatMuls that read one tensor (a transformer's Q, K
  and V projections) become one MatMul on the concatenated int8 weights, one bias Add and a
  Split: one Q, one int8 kernel and one Add instead of three of each (ORT's Attention fusion does
  the same for fp32 graphs but does not match Q/DQ ones; bench/quantization.py measures it);
- ``move_float_gemm_bias`` (ONNX Runtime): the bias of a Gemm whose output is not quantized (a
  classifier's logits) moves to an Add after it. ONNX Runtime turns float biases into int32 only
  where the output is quantized, and a Gemm with a float bias input never fuses, which left the
  classifier dequantizing its whole weight matrix at every run; without the bias it runs as
  QGemm with float output;
- ``requantize_before`` (ONNX Runtime): with zero point 0, Q(Relu(x)) == Q(Relu(DQ(Q(x)))), so a
  copy of the Q/DQ pair above each Relu/Clip/MaxPool changes no value and gives the Conv/Add before
  it the output Q that fusion needs (TensorRT fuses Conv+Relu itself; not applied there). Without
  it a Conv -> ReLU6 (Clip) -> Q kept float weights, which ONNX Runtime requantized per tensor:
  MobileNetV2's depthwise convs lost the int8 parity (cosine 0.86);
- ``split_shared_qdq`` (ONNX Runtime): a tensor read by several ops (a residual fork) keeps one
  Q and gets one DQ per reader, each with its own copy of the scale: ONNX Runtime fuses a Conv
  into QLinearConv only when its input DQ is private, and its producer only when one Q reads it
  (a Q per reader left MobileNetV2's project convs, whose outputs fork, in float);
- ``dequantize_unfused_conv_weights`` (ONNX Runtime): a Conv whose output is not quantized (the
  last conv before a float pooling) cannot become QLinearConv, and ONNX Runtime does not
  constant-fold a DequantizeLinear, so it dequantized and repacked that conv's weights at every
  run (0.57 of 1.26 ms in digits_cnn at batch 32). Its weights are stored dequantized instead:
  the same float values, so the same output, with a larger file for that layer. Not where only
  QuantizeLinears read the output (a residual fork): ORT requantizes such float weights per tensor.

Biases stay float on purpose. ONNX Runtime fuses a Conv/Gemm only when its bias comes from an
int32 DequantizeLinear, but since 1.21 its ``WeightBiasQuantization`` graph transformer writes that
int32 bias itself when the session loads (scale = input scale x weight scale, as its own quantizer
would); TensorRT's parser refuses an int32 DequantizeLinear ("only activation types allowed as
input to this layer"). Float biases serve both, so every pass here is within TensorRT's rules
and ``runtime`` only decides whether the ORT-specific (value-preserving) passes run.
"""
from __future__ import annotations

from collections import defaultdict

import numpy as np
import onnx
from onnx import helper, numpy_helper

#: Ops that commute with symmetric (zero point 0) quantization: monotone and, where they clamp, by
#: constant bounds (round(min(q, b)) == min(q, round(b)) for an integer q).
COMMUTING_OPS = ("Relu", "Clip", "MaxPool")


def optimize_qdq(model: onnx.ModelProto, *, runtime: str = "onnxruntime",
                 narrow_weights: bool = True) -> onnx.ModelProto:
    """All passes for ``runtime`` ("onnxruntime" or "tensorrt"), in order; changes ``model``.
    ``narrow_weights``: int8 weights in [-127, 127] (the target's ``narrow_range_weights``)."""
    _constants_to_initializers(model)
    fold_weight_clips(model)
    fold_weight_quantizers(model, narrow=narrow_weights)
    dedupe_qdq(model)
    fold_weight_transposes(model)
    if runtime == "onnxruntime":
        pack_parallel_matmuls(model)
        move_float_gemm_bias(model)
        requantize_before(model)
        split_shared_qdq(model)
        dequantize_unfused_conv_weights(model)
    _drop_unused_initializers(model)
    return model


#: Elementwise ops :func:`fold_weight_clips` evaluates on constants.
_CONSTANT_OPS = {"Min": np.minimum, "Max": np.maximum, "Mul": np.multiply}


def fold_weight_clips(model: onnx.ModelProto) -> int:
    """Replace Min/Max/Mul nodes whose inputs are all initializers by their result; returns the count.

    The TorchScript exporter folds few ops, and a clipped weight left as Min(Max(W, lo), hi) would
    keep its QuantizeLinear from folding, so the layer would run in float."""
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    folded, keep = 0, []
    for node in graph.node:
        fn = _CONSTANT_OPS.get(node.op_type)
        if fn is not None and len(node.input) == 2 and all(n in inits for n in node.input):
            a, b = (numpy_helper.to_array(inits[n]) for n in node.input)
            result = numpy_helper.from_array(np.asarray(fn(a, b), dtype=a.dtype), node.output[0])
            graph.initializer.append(result)
            inits[result.name] = result
            folded += 1
        else:
            keep.append(node)
    _replace_nodes(graph, keep)
    return folded


def fold_weight_quantizers(model: onnx.ModelProto, *, narrow: bool = True) -> int:
    """Replace QuantizeLinear of constant inputs by their integer initializers; returns the count.
    ``narrow``: int8 values in [-127, 127], never -128."""
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
            scale, zp_b = _along_axis(node, x.ndim, scale, zp)
            info = np.iinfo(zp.dtype)
            low = info.min + 1 if narrow and zp.dtype == np.int8 else info.min
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


def fold_weight_transposes(model: onnx.ModelProto) -> int:
    """Transpose(DQ(2-D integer initializer)) -> DQ(transposed initializer); returns the count."""
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    producers = {o: n for n in graph.node for o in n.output}
    readers = _readers(graph)
    renames, drop = {}, set()
    for t in graph.node:
        dq = producers.get(t.input[0]) if t.op_type == "Transpose" else None
        if dq is None or dq.op_type != "DequantizeLinear" or dq.input[0] not in inits \
                or len(inits[dq.input[0]].dims) != 2 or len(readers[dq.output[0]]) != 1 \
                or next((list(a.ints) for a in t.attribute if a.name == "perm"), [1, 0]) != [1, 0]:
            continue
        weight = numpy_helper.to_array(inits[dq.input[0]])
        stored = numpy_helper.from_array(np.ascontiguousarray(weight.T), dq.input[0] + "_T")
        graph.initializer.append(stored)
        dq.input[0] = stored.name
        _set_attribute(dq, "axis", 1 - _axis(dq) % 2)
        renames[t.output[0]] = dq.output[0]
        drop.add(id(t))
    _replace_nodes(graph, [n for n in graph.node if id(n) not in drop])
    _rename_inputs(graph, renames)
    return len(drop)


def pack_parallel_matmuls(model: onnx.ModelProto) -> int:
    """Merge MatMul(x, DQ(W_i)) + b_i that share ``x`` into one MatMul, Add and Split.

    Exact: the columns of the packed product are the members' columns, with their own per-channel
    scales. Members need a 2-D integer weight read only by them, dequantized per output channel
    (axis 1) or per tensor, and a 1-D constant bias; returns the number of packed groups.
    """
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    producers = {o: n for n in graph.node for o in n.output}
    readers = _readers(graph)
    groups: dict[str, list[tuple[onnx.NodeProto, ...]]] = defaultdict(list)
    for mm in graph.node:
        member = _packable(mm, inits, producers, readers) if mm.op_type == "MatMul" else None
        if member is not None:
            groups[mm.input[0]].append(member)
    replaced: dict[int, list[onnx.NodeProto]] = {}
    drop: set[int] = set()
    for x, members in groups.items():
        if len(members) < 2 or len({inits[dq.input[0]].data_type for _, dq, _, _ in members}) > 1:
            continue
        widths = [int(inits[dq.input[0]].dims[1]) for _, dq, _, _ in members]
        base = members[0][0].output[0] + "_packed"

        def packed(names: list[str], suffix: str) -> str:
            """Per-column constants of the members side by side (per-tensor ones repeated)."""
            parts = [np.broadcast_to(numpy_helper.to_array(inits[n]).reshape(-1), (w,)) for n, w in zip(names, widths)]
            graph.initializer.append(numpy_helper.from_array(np.concatenate(parts), f"{base}_{suffix}"))
            return f"{base}_{suffix}"

        weight = np.concatenate([numpy_helper.to_array(inits[dq.input[0]]) for _, dq, _, _ in members], axis=1)
        graph.initializer.extend([numpy_helper.from_array(weight, base + "_weight"),
                                  numpy_helper.from_array(np.array(widths, dtype=np.int64), base + "_split")])
        scale = packed([dq.input[1] for _, dq, _, _ in members], "scale")
        zero = packed([dq.input[2] for _, dq, _, _ in members], "zero_point")
        bias = packed([b for *_, b in members], "bias")
        replaced[id(members[0][0])] = [
            helper.make_node("DequantizeLinear", [base + "_weight", scale, zero], [base + "_dq"], axis=1,
                             name=base + "_DQ"),
            helper.make_node("MatMul", [x, base + "_dq"], [base + "_mm"], name=base + "_MatMul"),
            helper.make_node("Add", [base + "_mm", bias], [base + "_add"], name=base + "_Add"),
            helper.make_node("Split", [base + "_add", base + "_split"], [add.output[0] for *_, add, _ in members],
                             axis=-1, name=base + "_Split")]
        drop.update(id(n) for mm, dq, add, _ in members for n in (mm, dq, add))
    if replaced:
        nodes = [new for n in graph.node for new in replaced.get(id(n), [n] if id(n) not in drop else [])]
        _replace_nodes(graph, _topological(nodes))
    return len(replaced)


def _packable(mm: onnx.NodeProto, inits: dict[str, onnx.TensorProto], producers: dict[str, onnx.NodeProto],
              readers: dict[str, list[onnx.NodeProto]]) -> tuple[onnx.NodeProto, ...] | None:
    """(MatMul, weight DQ, bias Add, bias name) when ``mm`` may join a packed group, else None."""
    dq = producers.get(mm.input[1])
    if dq is None or dq.op_type != "DequantizeLinear" or dq.input[0] not in inits or len(dq.input) < 3 \
            or len(inits[dq.input[0]].dims) != 2 or len(readers[dq.output[0]]) != 1 \
            or not all(name in inits for name in dq.input[1:3]):
        return None
    per_channel = numpy_helper.to_array(inits[dq.input[1]]).size > 1
    if per_channel and _axis(dq) not in (1, -1):
        return None
    adds = readers[mm.output[0]]
    if len(adds) != 1 or adds[0].op_type != "Add":
        return None
    bias = [name for name in adds[0].input if name != mm.output[0]]
    if len(bias) != 1 or bias[0] not in inits or list(inits[bias[0]].dims) != [inits[dq.input[0]].dims[1]]:
        return None
    return mm, dq, adds[0], bias[0]


def move_float_gemm_bias(model: onnx.ModelProto) -> int:
    """Gemm(DQ(a), DQ(b), float c) not read by a QuantizeLinear -> Gemm(DQ(a), DQ(b)) + c."""
    graph = model.graph
    inits = {i.name for i in graph.initializer}
    producers = {o: n for n in graph.node for o in n.output}
    readers = _readers(graph)
    nodes, moved = [], 0
    for node in graph.node:
        nodes.append(node)
        if node.op_type != "Gemm" or len(node.input) < 3 or node.input[2] not in inits \
                or any(a.name == "beta" and a.f != 1.0 for a in node.attribute) \
                or any(r.op_type == "QuantizeLinear" for r in readers[node.output[0]]) \
                or not all(getattr(producers.get(i), "op_type", "") == "DequantizeLinear" for i in node.input[:2]):
            continue
        bias, out = node.input[2], node.output[0]
        del node.input[2]
        node.output[0] = out + "_unbiased"
        nodes.append(helper.make_node("Add", [node.output[0], bias], [out], name=(node.name or "Gemm") + "_bias"))
        moved += 1
    _replace_nodes(graph, nodes)
    return moved


def dequantize_unfused_conv_weights(model: onnx.ModelProto) -> int:
    """Conv(x, DQ(W_int)) whose output is not quantized -> Conv(x, W as float)."""
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    producers = {o: n for n in graph.node for o in n.output}
    readers = _readers(graph)
    drop, done = set(), 0
    for conv in graph.node:
        dq = producers.get(conv.input[1]) if conv.op_type == "Conv" and len(conv.input) > 1 else None
        if dq is None or dq.op_type != "DequantizeLinear" or not all(n in inits for n in dq.input) \
                or len(readers[dq.output[0]]) != 1:
            continue
        out = readers[conv.output[0]]
        if out and all(r.op_type == "QuantizeLinear" for r in out):
            # One Q: ONNX Runtime fuses it into QLinearConv. Several (a residual fork, each reader
            # with its own pair): its WeightBiasQuantization would quantize float weights again,
            # per tensor, so they must stay the per-channel int8 ones.
            continue
        weight = numpy_helper.to_array(inits[dq.input[0]]).astype(np.float32)
        scale, zero = _along_axis(dq, weight.ndim, *(numpy_helper.to_array(inits[n]).astype(np.float32)
                                                     for n in dq.input[1:3]))
        name = dq.output[0] + "_float"
        graph.initializer.append(numpy_helper.from_array(((weight - zero) * scale).astype(np.float32), name))
        conv.input[1] = name
        drop.add(id(dq))
        done += 1
    _replace_nodes(graph, [n for n in graph.node if id(n) not in drop])
    return done


def requantize_before(model: onnx.ModelProto) -> int:
    """Give each Relu/Clip/MaxPool that feeds a QuantizeLinear (zero point 0) a Q/DQ pair on its input.

    With zero point 0, Q(Relu(x)) == Q(Relu(DQ(Q(x)))) exactly (same for Clip and MaxPool), so the copy
    changes no value; it gives the producing Conv/Add the output Q that ONNX Runtime needs to fuse
    QLinearConv/QLinearAdd, as ONNX Runtime's own quantizer places them.
    """
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    done = 0
    while True:
        producers = {o: n for n in graph.node for o in n.output}
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
    """One private DQ (with its own scale/zero-point initializers) per reader of a quantized tensor."""
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    producers = {o: n for n in graph.node for o in n.output}
    consumers = _readers(graph)
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
            dq2 = helper.make_node("DequantizeLinear", [q.output[0], *params], [dq.output[0] + tag],
                                   name=(dq.name or "DQ") + tag)
            dq2.attribute.extend(dq.attribute)
            for k, name in enumerate(reader.input):
                if name == dq.output[0]:
                    reader.input[k] = dq2.output[0]
            nodes.append(dq2)
    _replace_nodes(graph, nodes)
    return added


# --------------------------------------------------------------------------- helpers
def _readers(graph: onnx.GraphProto) -> dict[str, list[onnx.NodeProto]]:
    readers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
    for n in graph.node:
        for i in n.input:
            readers[i].append(n)
    return readers


def _axis(node: onnx.NodeProto) -> int:
    """A Q/DQ node's quantization axis (ONNX default 1)."""
    return next((a.i for a in node.attribute if a.name == "axis"), 1)


def _along_axis(node: onnx.NodeProto, ndim: int, *params: np.ndarray) -> tuple[np.ndarray, ...]:
    """A Q/DQ node's scale and zero point, shaped to broadcast over an ``ndim``-d tensor."""
    if params[0].ndim != 1 or params[0].size == 1:
        return params
    shape = [1] * ndim
    shape[_axis(node)] = -1
    return tuple(p.reshape(shape) for p in params)


def _set_attribute(node: onnx.NodeProto, name: str, value: int) -> None:
    kept = [a for a in node.attribute if a.name != name]
    del node.attribute[:]
    node.attribute.extend(kept + [helper.make_attribute(name, value)])


def _topological(nodes: list[onnx.NodeProto]) -> list[onnx.NodeProto]:
    """``nodes`` reordered so each comes after the producers of its inputs (stable otherwise)."""
    made = {o for n in nodes for o in n.output}
    ready: set[str] = set()
    done, pending = [], list(nodes)
    while pending:
        rest = []
        for n in pending:
            if all(i not in made or i in ready for i in n.input):
                done.append(n)
                ready.update(n.output)
            else:
                rest.append(n)
        if len(rest) == len(pending):
            raise ValueError("graph has a cycle")
        pending = rest
    return done


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
