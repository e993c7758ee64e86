"""export/ort_kernels.py: Q/DQ MatMuls as ONNX Runtime's MatMulIntegerToFloat, bias inside."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from compressor.export.onnx import export_onnx
from compressor.export.ort_kernels import integer_matmuls
from compressor.export.qdq_rules import check_trt
from export_helpers import TinyEncoder, fake_quantize


def linear_graph(w: np.ndarray | None = None, *, second_reader: bool = False) -> onnx.ModelProto:
    """x -> Transpose -> Q/DQ -> MatMul(DQ(int8 W, per column)) -> Add(bias) -> y.

    ``w``: the int8 weights, (K, N) (default: random 8 x 6); x is (2, K, 4).
    ``second_reader``: the quantized tensor is also dequantized for a Relu (output ``z``).
    """
    rng = np.random.default_rng(0)
    w = rng.integers(-127, 128, (8, 6)).astype(np.int8) if w is None else w
    k, n = w.shape
    inits = [numpy_helper.from_array(w, "W"),
             numpy_helper.from_array(rng.uniform(0.01, 0.02, n).astype(np.float32), "w_scale"),
             numpy_helper.from_array(np.zeros(n, np.int8), "w_zp"),
             numpy_helper.from_array(np.array(0.03, np.float32), "x_scale"),
             numpy_helper.from_array(np.array(0, np.int8), "x_zp"),
             numpy_helper.from_array(rng.standard_normal(n).astype(np.float32), "bias")]
    nodes = [helper.make_node("Transpose", ["x"], ["xt"], perm=[0, 2, 1]),
             helper.make_node("QuantizeLinear", ["xt", "x_scale", "x_zp"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "x_scale", "x_zp"], ["xd"]),
             helper.make_node("DequantizeLinear", ["W", "w_scale", "w_zp"], ["wd"], axis=1),
             helper.make_node("MatMul", ["xd", "wd"], ["mm"]),
             helper.make_node("Add", ["mm", "bias"], ["y"])]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4, n])]
    if second_reader:
        nodes += [helper.make_node("DequantizeLinear", ["xq", "x_scale", "x_zp"], ["xd2"]),
                  helper.make_node("Relu", ["xd2"], ["z"])]
        outputs.append(helper.make_tensor_value_info("z", TensorProto.FLOAT, [2, 4, k]))
    graph = helper.make_graph(nodes, "linear", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, k, 4])],
                              outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def exact_output(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    """``y`` of :func:`linear_graph`'s Q/DQ graph in float64: integer products summed exactly."""
    inits = {i.name: numpy_helper.to_array(i).astype(np.float64) for i in model.graph.initializer}
    xq = np.clip(np.round(x.transpose(0, 2, 1) / inits["x_scale"]), -128, 127)  # round half to even, as ONNX
    return (xq @ inits["W"]) * inits["x_scale"] * inits["w_scale"] + inits["bias"]


def run(model: onnx.ModelProto, x: np.ndarray) -> list[np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})


def zero_point_type(model: onnx.ModelProto) -> int:
    q = next(n for n in model.graph.node if n.op_type == "QuantizeLinear")
    return next(i.data_type for i in model.graph.initializer if i.name == q.input[2])


def weight_types(model: onnx.ModelProto) -> tuple[int, int]:
    """Element types of the kernel's weights and weight zero point."""
    kernel = next(n for n in model.graph.node if n.op_type == "MatMulIntegerToFloat")
    types = {i.name: i.data_type for i in model.graph.initializer}
    return types[kernel.input[1]], types[kernel.input[5]]


def test_matmul_and_bias_become_one_int8_kernel_with_uint8_activations() -> None:
    x = np.random.default_rng(1).standard_normal((2, 8, 4)).astype(np.float32)
    model = linear_graph()
    expected = exact_output(model, x)
    np.testing.assert_allclose(run(model, x)[0], expected, rtol=1e-5, atol=1e-5)
    assert integer_matmuls(model) == 1
    onnx.checker.check_model(model)
    ops = Counter(n.op_type for n in model.graph.node)
    assert ops == Counter({"QuantizeLinear": 1, "Transpose": 1, "MatMulIntegerToFloat": 1}), ops
    kernel = next(n for n in model.graph.node if n.op_type == "MatMulIntegerToFloat")
    assert kernel.domain == "com.microsoft" and kernel.input[6] == "bias"
    # the Q moved above the Transpose (which now moves int8 data) and became uint8, zero point 128;
    # the weights became uint8 too (u8u8: exact on every x86 CPU), the int8 copies are gone
    assert model.graph.node[0].op_type == "QuantizeLinear" and model.graph.node[0].input[0] == "x"
    assert zero_point_type(model) == TensorProto.UINT8
    assert weight_types(model) == (TensorProto.UINT8, TensorProto.UINT8)
    assert not {"W", "w_zp"} & {i.name for i in model.graph.initializer}
    np.testing.assert_allclose(run(model, x)[0], expected, rtol=1e-5, atol=1e-5)
    # an ONNX Runtime-only file: check-trt says so and where to go instead
    kernel_flags = [v for v in check_trt(model) if v.rule == "unsupported-op"]
    assert len(kernel_flags) == 1 and "TensorRT target" in kernel_flags[0].message


@pytest.mark.parametrize("unsigned, magnitude, weight_type", [
    (True, 127, TensorProto.UINT8), (True, 64, TensorProto.INT8), (False, 127, TensorProto.INT8)],
    ids=["x86", "x86-7bit", "arm"])
def test_extreme_activations_and_weights_stay_exact(unsigned: bool, magnitude: int, weight_type: int) -> None:
    """Weights at +-127 and activations at the ends of the int8 range: the pairs of products
    reach 255 * 127 * 2 in uint8, which x86's u8s8 GEMM (vpmaddubsw, AVX2 without VNNI)
    saturates at 32767; the kernel must not. Weights within +-64 cannot saturate it (2 * 255 * 64
    <= 32767), so they keep int8 and the fast u8s8 kernel."""
    rng = np.random.default_rng(5)
    w = rng.choice(np.array([-magnitude, magnitude], np.int8), (64, 16))
    model = linear_graph(w)
    x_scale = float(numpy_helper.to_array(next(i for i in model.graph.initializer if i.name == "x_scale")))
    # int8 activations 127 / 126 / -128 / -127: uint8 255 / 254 / 0 / 1
    x = (rng.choice(np.array([127, 126, -128, -127]), (2, 64, 4)) * x_scale).astype(np.float32)
    expected = exact_output(model, x)
    assert integer_matmuls(model, unsigned_activations=unsigned) == 1
    assert weight_types(model) == (weight_type, weight_type)
    np.testing.assert_allclose(run(model, x)[0], expected, rtol=1e-5, atol=1e-4)


def test_arm_keeps_int8_activations() -> None:
    x = np.random.default_rng(2).standard_normal((2, 8, 4)).astype(np.float32)
    model = linear_graph()
    expected = run(model, x)
    assert integer_matmuls(model, unsigned_activations=False) == 1
    assert zero_point_type(model) == TensorProto.INT8
    assert weight_types(model) == (TensorProto.INT8, TensorProto.INT8)
    np.testing.assert_allclose(run(model, x)[0], expected[0], rtol=1e-5, atol=1e-5)


def test_a_quantized_tensor_read_elsewhere_keeps_its_q_and_type() -> None:
    x = np.random.default_rng(3).standard_normal((2, 8, 4)).astype(np.float32)
    model = linear_graph(second_reader=True)
    expected = run(model, x)
    assert integer_matmuls(model) == 1
    ops = Counter(n.op_type for n in model.graph.node)
    assert ops["MatMulIntegerToFloat"] == 1 and ops["DequantizeLinear"] == 1 and ops["Relu"] == 1, ops
    # the DQ still reads the Q's output, so neither moves nor changes type; int8 activations keep
    # int8 weights (s8s8 does not saturate)
    assert zero_point_type(model) == TensorProto.INT8
    assert weight_types(model) == (TensorProto.INT8, TensorProto.INT8)
    assert next(n for n in model.graph.node if n.op_type == "QuantizeLinear").input[0] == "xt"
    for got, want in zip(run(model, x), expected):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_float_matmuls_are_left_alone() -> None:
    w = numpy_helper.from_array(np.ones((4, 2), np.float32), "W")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "W"], ["y"])], "float",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    assert integer_matmuls(model) == 0
    assert [n.op_type for n in model.graph.node] == ["MatMul"]
    assert all(o.domain != "com.microsoft" for o in model.opset_import)


def test_fp16_conversion_keeps_the_int8_kernel_in_fp32() -> None:
    from compressor.export.fp16 import to_fp16

    x = np.random.default_rng(4).standard_normal((2, 8, 4)).astype(np.float32)
    model = linear_graph()
    integer_matmuls(model)
    expected = run(model, x)[0]
    half = to_fp16(model)
    np.testing.assert_allclose(run(half, x)[0], expected, rtol=1e-2, atol=1e-2)


@pytest.mark.parametrize("cpu, zero_point", [("x86_64", TensorProto.UINT8), ("arm64", TensorProto.INT8)])
def test_export_types_the_kernel_activations_for_the_cpu(tmp_path: Path, cpu: str, zero_point: int) -> None:
    torch.manual_seed(0)
    ids, mask = torch.randint(0, 50, (2, 7)), torch.ones(2, 7, dtype=torch.long)
    model = fake_quantize(TinyEncoder(), (ids, mask))
    path = export_onnx(model, (ids, mask), tmp_path / f"{cpu}.onnx", input_names=["ids", "mask"],
                       output_names=["emb"], cpu=cpu)
    proto = onnx.load(str(path))
    assert Counter(n.op_type for n in proto.graph.node)["MatMulIntegerToFloat"] == 1
    assert zero_point_type(proto) == zero_point and weight_types(proto) == (zero_point, zero_point)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out = session.run(None, {"ids": ids.numpy(), "mask": mask.numpy()})[0]
    np.testing.assert_allclose(out, model(ids, mask).detach().numpy(), rtol=1e-4, atol=1e-5)
