"""ONNX Runtime-only rewrite of a Q/DQ graph: int8 MatMuls as ``com.microsoft.MatMulIntegerToFloat``.

ONNX Runtime fuses ``MatMul(DQ(x), DQ(W))`` into its MatMulIntegerToFloat kernel when a session
loads, but leaves the bias ``Add`` after it as a node of its own (its bias fusion matches only
the MatMulInteger -> Cast -> Mul pattern of dynamic quantization). The contrib kernel takes the
bias as an input and adds it while it writes the output, so writing the kernel in the file saves
one node and one pass over the output per Linear: 18 in MiniLM-L6 (bench/quantization.py).

Writing the kernel means doing what ORT's own Q/DQ fusion would have done around it:
- on x86 the activations become uint8 with zero point 128 (the same values: q + 128): ORT's x86
  GEMMs take uint8 activations (its s8s8 GEMM has no AVX2 kernel: MiniLM ran 2.5-4x slower than
  fp32 with it). ARM keeps int8. :func:`unsigned_activations` does the same for every other
  activation Q/DQ pair (convolutions), so that no Conv sees two types;
- on x86, 8-bit weights of those kernels become uint8 too (w + 128, zero point + 128: the same
  values), so ORT runs its u8u8 GEMM. Its u8s8 GEMM, what ORT picks for int8 weights, multiplies
  with ``vpmaddubsw`` on AVX2 and AVX-512 CPUs without VNNI, which adds two uint8 x int8 products
  in int16 and saturates (255 * 127 * 2 > 32767): outputs go wrong wherever large activations
  meet large weights (MiniLM's cosine to fp32 fell from 0.9969 to 0.9930 on an AVX2 EPYC). The
  u8u8 GEMM widens to int16 before multiplying and is exact on every x86-64 CPU, but slower
  (ResNet-18: 0.90x fp32 against 0.70x with u8s8, bench/int8_weights.py). Weights within
  [-64, 64] cannot saturate and stay int8: the quantize stage gives cpu-x86 targets 7-bit weights
  (ONNX Runtime's own ``reduce_range`` remedy), so their files run the fast u8s8 kernels exactly;
- the Q moves above Reshape/Transpose between it and the MatMul (exact for a per-tensor Q), so
  they move int8 data, as ORT's Q/DQ propagation arranges for graphs it fuses itself.

The result runs in ONNX Runtime only (TensorRT parses no contrib op), so only ``onnxruntime``
exports get it; TensorRT exports stay pure Q/DQ.
"""
from __future__ import annotations

import platform

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from compressor.export.qdq_graph import _axis, _readers, _replace_nodes, _topological

#: Ops that only move data: a per-tensor Q commutes with them.
DATA_MOVEMENT_OPS = ("Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten")
MS_DOMAIN = "com.microsoft"
EIGHT_BIT = (TensorProto.INT8, TensorProto.UINT8)
#: Largest int8 weight magnitude ORT's x86 u8s8 kernels multiply without saturating (see above).
EXACT_U8S8_WEIGHT = 64


def host_cpu() -> str:
    """``"arm64"`` on ARM machines, else ``"x86_64"``: the CPU a local latency measurement runs on."""
    return "arm64" if platform.machine().lower() in ("arm64", "aarch64") else "x86_64"


def integer_matmuls(model: onnx.ModelProto, *, unsigned_activations: bool = True) -> int:
    """``MatMul(DQ(x_q), DQ(W_int)) [+ bias]`` -> ``MatMulIntegerToFloat``; returns the count.

    A MatMul qualifies when its activation is dequantized per tensor, its weight is a 2-D
    integer initializer dequantized per tensor or per output column, and a bias (if any) is a
    1-D float initializer of the output width read by an Add that is the MatMul's only reader.
    ``unsigned_activations``: write the activations feeding the new kernels as uint8, and their
    weights as uint8 too (x86, :func:`unsigned_weights`).
    """
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    producers = {o: n for n in graph.node for o in n.output}
    readers = _readers(graph)
    replaced: dict[int, onnx.NodeProto] = {}
    drop: set[int] = set()
    for mm in graph.node:
        if mm.op_type != "MatMul":
            continue
        a, b = producers.get(mm.input[0]), producers.get(mm.input[1])
        if not (_dequantizes_activation(a, inits) and _dequantizes_weight(b, inits)):
            continue
        inputs = [a.input[0], b.input[0], a.input[1], b.input[1], a.input[2], b.input[2]]
        out, fused = mm.output[0], [mm]
        bias = _bias_add(mm, readers, inits)
        if bias is not None:
            add, name = bias
            inputs.append(name)
            out = add.output[0]
            fused.append(add)
        replaced[id(mm)] = helper.make_node("MatMulIntegerToFloat", inputs, [out], domain=MS_DOMAIN,
                                            name=(mm.name or out) + "_int8")
        drop.update(id(n) for n in fused)
    if not replaced:
        return 0
    _replace_nodes(graph, [replaced.get(id(n), n) for n in graph.node if id(n) not in drop or id(n) in replaced])
    _drop_dead_nodes(graph)
    _prepare_activations(model, unsigned_activations)
    if unsigned_activations:
        unsigned_weights(model.graph)
    if not any(o.domain == MS_DOMAIN for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))
    return len(replaced)


def _dequantizes_activation(node: onnx.NodeProto | None, inits: dict[str, onnx.TensorProto]) -> bool:
    return (node is not None and node.op_type == "DequantizeLinear" and len(node.input) == 3
            and node.input[0] not in inits and all(n in inits for n in node.input[1:])
            and inits[node.input[2]].data_type in EIGHT_BIT
            and numpy_helper.to_array(inits[node.input[1]]).size == 1)


def _dequantizes_weight(node: onnx.NodeProto | None, inits: dict[str, onnx.TensorProto]) -> bool:
    if node is None or node.op_type != "DequantizeLinear" or len(node.input) != 3 \
            or not all(n in inits for n in node.input) or len(inits[node.input[0]].dims) != 2 \
            or inits[node.input[0]].data_type not in EIGHT_BIT:
        return False
    per_column = numpy_helper.to_array(inits[node.input[1]]).size > 1
    return not per_column or _axis(node) in (1, -1)


def _bias_add(mm: onnx.NodeProto, readers: dict[str, list[onnx.NodeProto]],
              inits: dict[str, onnx.TensorProto]) -> tuple[onnx.NodeProto, str] | None:
    """The Add reading only ``mm``'s output and a 1-D float constant as wide as it, with that name."""
    adds = readers[mm.output[0]]
    if len(adds) != 1 or adds[0].op_type != "Add" or len(adds[0].input) != 2:
        return None
    other = adds[0].input[1] if adds[0].input[0] == mm.output[0] else adds[0].input[0]
    if other not in inits or inits[other].data_type != TensorProto.FLOAT or len(inits[other].dims) != 1:
        return None
    return adds[0], other


def _prepare_activations(model: onnx.ModelProto, unsigned: bool) -> None:
    """For each Q read (through data movement) only by the new kernels: move it up, then make it uint8."""
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    outputs = {o.name for o in graph.output}
    for q in [n for n in graph.node if n.op_type == "QuantizeLinear"]:
        producers = {o: n for n in graph.node for o in n.output}
        readers = _readers(graph)
        kernels = _kernels_reading(q.output[0], readers, outputs)
        if not kernels or numpy_helper.to_array(inits[q.input[1]]).size != 1:
            continue
        mover = producers.get(q.input[0])
        while mover is not None and mover.op_type in DATA_MOVEMENT_OPS and len(readers[mover.output[0]]) == 1 \
                and mover.output[0] not in outputs:
            # mover: x -> y, Q: y -> z  becomes  Q: x -> x_quantized, mover: x_quantized -> z
            x = mover.input[0]
            mover.output[0] = q.output[0]
            q.input[0], q.output[0] = x, x + "_quantized"
            mover.input[0] = q.output[0]
            mover = producers.get(x)
        zero = numpy_helper.to_array(inits[q.input[2]])
        if unsigned and zero.dtype == np.int8:
            name = q.output[0] + "_uint8_zero_point"
            graph.initializer.append(numpy_helper.from_array(
                (zero.astype(np.int16) + 128).astype(np.uint8), name))
            q.input[2] = name
            for kernel in kernels:
                kernel.input[4] = name
        _forget_types(graph, _quantized_path(q.output[0], _readers(graph)))
    _replace_nodes(graph, _topological(list(graph.node)))


def unsigned_weights(graph: onnx.GraphProto) -> int:
    """x86: int8 weights that could saturate become uint8 (+128, zero point + 128: the same values);
    returns the count.

    Covers the weights of ``MatMulIntegerToFloat`` kernels with uint8 activations and every int8
    weight a DequantizeLinear reads (Conv, Gemm): ONNX Runtime turns int8 activations into uint8
    when it fuses those, and its u8s8 kernels saturate on CPUs without VNNI (module docstring);
    with uint8 weights it runs the exact u8u8 ones (QLinearConv, QGemm, MatMulIntegerToFloat).
    Weights within [-64, 64] stay int8: two products then fit int16 (2 x 255 x 64 <= 32767), so
    the faster u8s8 kernels are exact for them (7-bit weights, the ``ort-x86`` rules).
    """
    inits = {i.name: i for i in graph.initializer}
    slots: list[tuple[onnx.NodeProto, int, int]] = []  # (node, weight input, its zero point input)
    for node in graph.node:
        if node.op_type == "MatMulIntegerToFloat" and len(node.input) >= 6 \
                and all(node.input[i] in inits for i in (1, 4, 5)) \
                and inits[node.input[4]].data_type == TensorProto.UINT8:
            slots.append((node, 1, 5))
        elif node.op_type == "DequantizeLinear" and len(node.input) == 3 \
                and all(n in inits for n in node.input) and len(inits[node.input[0]].dims) > 1:
            slots.append((node, 0, 2))
    converted: dict[str, str] = {}
    for node, *pair in slots:
        weight = inits[node.input[pair[0]]]
        if weight.data_type != TensorProto.INT8 or \
                np.abs(numpy_helper.to_array(weight).astype(np.int16)).max() <= EXACT_U8S8_WEIGHT:
            continue
        for slot in pair:
            name = node.input[slot]
            converted[name] = node.input[slot] = _shifted(graph, inits, name)
    read = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
    for init in [i for i in graph.initializer if i.name in converted and i.name not in read]:
        graph.initializer.remove(init)
    return sum(1 for name in converted if len(inits[name].dims) > 1)


def unsigned_activations(graph: onnx.GraphProto) -> int:
    """x86: every int8 activation Q and the DQs reading it become uint8 (zero point + 128: the same
    values); returns the count of Qs.

    ONNX Runtime converts int8 activations to uint8 itself when it fuses a Conv (its x86 kernels
    take uint8), but not where a Q feeds several DQs (a residual fork) or an unfused op, and a Conv
    whose input and output Q ended up with different types stays a float Conv between Q/DQ pairs:
    MobileNetV2 kept 16 of its 52 convs float that way. Written in the file, every pair has one type.
    """
    inits = {i.name: i for i in graph.initializer}
    readers = _readers(graph)
    shifted: dict[str, str] = {}
    nodes: list[onnx.NodeProto] = []
    for q in graph.node:
        if q.op_type != "QuantizeLinear" or q.input[0] in inits or len(q.input) < 3 \
                or q.input[2] not in inits or inits[q.input[2]].data_type != TensorProto.INT8:
            continue
        dqs = readers[q.output[0]]
        if not dqs or any(d.op_type != "DequantizeLinear" or d.input[0] != q.output[0] or len(d.input) < 3
                          or d.input[2] not in inits for d in dqs):
            continue
        for node in (q, *dqs):
            name = node.input[2]
            shifted[name] = node.input[2] = _shifted(graph, inits, name)
        nodes.append(q)
    _forget_types(graph, {q.output[0] for q in nodes})
    read = {i for n in graph.node for i in n.input}
    for init in [i for i in graph.initializer if i.name in shifted and i.name not in read]:
        graph.initializer.remove(init)
    return len(nodes)


def _shifted(graph: onnx.GraphProto, inits: dict[str, onnx.TensorProto], name: str) -> str:
    """The uint8 copy (+128) of the int8 initializer ``name``, added once: a scalar zero point may
    serve activations and weights alike."""
    target = name + "_uint8"
    if target not in inits:
        values = numpy_helper.to_array(inits[name]).astype(np.int16) + 128
        inits[target] = numpy_helper.from_array(values.astype(np.uint8), target)
        graph.initializer.append(inits[target])
    return target


def _quantized_path(tensor: str, readers: dict[str, list[onnx.NodeProto]]) -> set[str]:
    """``tensor`` and the outputs of the data movement below it: what a moved Q now types."""
    path = {tensor}
    for reader in readers[tensor]:
        if reader.op_type in DATA_MOVEMENT_OPS and reader.input[0] == tensor:
            path |= _quantized_path(reader.output[0], readers)
    return path


def _forget_types(graph: onnx.GraphProto, tensors: set[str]) -> None:
    """Drop the recorded types of ``tensors``: a simplified graph carries value_info from shape
    inference, and one saying int8 where the Q now writes uint8 (or float above a moved Q) makes
    ONNX Runtime refuse the file; it infers the types itself at load."""
    kept = [v for v in graph.value_info if v.name not in tensors]
    if len(kept) != len(graph.value_info):
        del graph.value_info[:]
        graph.value_info.extend(kept)


def _kernels_reading(tensor: str, readers: dict[str, list[onnx.NodeProto]], outputs: set[str]) -> list[onnx.NodeProto]:
    """The MatMulIntegerToFloat nodes reading ``tensor`` as activation, through data movement;
    empty when anything else (or the graph output) reads it."""
    found = []
    for reader in readers[tensor]:
        if reader.op_type == "MatMulIntegerToFloat" and reader.input[0] == tensor and tensor not in reader.input[1:]:
            found.append(reader)
        elif reader.op_type in DATA_MOVEMENT_OPS and reader.input[0] == tensor and reader.output[0] not in outputs:
            below = _kernels_reading(reader.output[0], readers, outputs)
            if not below:
                return []
            found += below
        else:
            return []
    return found if tensor not in outputs else []


def _drop_dead_nodes(graph: onnx.GraphProto) -> None:
    """Remove nodes none of whose outputs is read (the DQs the kernels replaced)."""
    outputs = {o.name for o in graph.output}
    while True:
        read = {i for n in graph.node for i in n.input} | outputs
        alive = [n for n in graph.node if any(o in read for o in n.output)]
        if len(alive) == len(graph.node):
            return
        _replace_nodes(graph, alive)
