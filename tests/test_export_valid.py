"""Export never writes a model ONNX Runtime cannot load or run (issue 13.3)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper
from torch import Tensor

from compressor.errors import ExportError
from compressor.export.onnx import export_onnx, save_onnx
from compressor.export.ort_kernels import integer_matmuls
from compressor.export.parity import onnx_parity
from compressor.export.runtime import ort_session
from compressor.export.targets import QUANT_RULES
from compressor.stages.quantize.stage import QuantizeParams, quantize_model
from compressor.zoo.synthetic import imagenet_synthetic_task
from test_ort_kernels import linear_graph
from tiny_models import TinyViT, tiny_vit


def test_int8_vit_simplified_for_x86_loads_in_onnx_runtime(tmp_path: Path) -> None:
    """The int8 hand-written ViT for cpu-x86 with simplify on: ONNX Runtime refused the file
    ("Type (tensor(int8)) of output arg (.../input_quantizer/QuantizeLinear_output_0)"), because
    onnxslim's value_info still typed the activations int8 after they became uint8."""
    model = tiny_vit()
    task = imagenet_synthetic_task(model, resolution=32, train_samples=32, val_samples=8, batch_size=16)
    qmodel, _, _ = quantize_model(model, task, QuantizeParams(activations={"observer": "minmax"}), rules=QUANT_RULES["ort-cpu"], log=lambda m: None)
    x = task.example_inputs(2)
    path = export_onnx(qmodel, x, tmp_path / "vit.onnx", input_names=["image"], output_names=["logits"],
                       dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}}, opset=17, simplify=True,
                       runtime="onnxruntime", cpu="x86_64")
    proto = onnx.load(str(path))
    kernels = [n for n in proto.graph.node if n.op_type == "MatMulIntegerToFloat"]
    assert kernels, "the int8 MatMuls should be ONNX Runtime's kernel"
    uint8_tensors = {k.input[0] for k in kernels}
    assert not [v.name for v in proto.graph.value_info if v.name in uint8_tensors]
    ort_session(path)  # loads


def stale_type_graph() -> onnx.ModelProto:
    """Valid to the ONNX checker, refused by ONNX Runtime: value_info types a float tensor int8."""
    nodes = [helper.make_node("Relu", ["x"], ["h"]), helper.make_node("Relu", ["h"], ["y"])]
    graph = helper.make_graph(nodes, "stale", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
                              value_info=[helper.make_tensor_value_info("h", TensorProto.INT8, [2])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_a_graph_onnx_runtime_refuses_is_never_written(tmp_path: Path) -> None:
    onnx.checker.check_model(stale_type_graph())  # the checker alone lets it through
    target = tmp_path / "model.onnx"
    with pytest.raises(ExportError, match="model.onnx: ONNX Runtime refuses the exported graph"):
        save_onnx(stale_type_graph(), target)
    assert list(tmp_path.iterdir()) == []  # neither the file nor a staging folder is left


class FrozenBatchViT(TinyViT):
    """``len(x)`` traces to a constant: the export only runs at the example's batch size."""

    def forward(self, x: Tensor) -> Tensor:
        x = self.patch(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls.expand(len(x), -1, -1), x], 1) + self.pos
        return self.head(self.norm(self.blocks(x))[:, 0])


def test_an_export_that_fails_at_run_time_is_an_export_error(tmp_path: Path) -> None:
    model = FrozenBatchViT().eval()
    path = export_onnx(model, (torch.randn(2, 3, 32, 32),), tmp_path / "m.onnx", input_names=["image"],
                       output_names=["logits"], dynamic_axes={"image": {0: "batch"}})
    assert onnx_parity(model, path, (torch.randn(2, 3, 32, 32),)).cosine > 0.9999
    with pytest.raises(ExportError, match=r"fails to run .* shape \(5, 3, 32, 32\).*len\(x\)"):
        onnx_parity(model, path, (torch.randn(5, 3, 32, 32),))


def test_the_int8_kernel_rewrite_drops_the_types_it_changes() -> None:
    """After shape inference the quantized activation is typed int8; the rewrite makes it uint8
    (x86) and moves the Q above the Transpose, so that record must go and the file must load."""
    model = onnx.shape_inference.infer_shapes(linear_graph())
    assert {v.name for v in model.graph.value_info} >= {"xt", "xq"}
    assert integer_matmuls(model) == 1
    typed = {v.name: v.type.tensor_type.elem_type for v in model.graph.value_info}
    assert "xq" not in typed and TensorProto.INT8 not in typed.values(), typed
    x = np.random.default_rng(0).standard_normal((2, 8, 4)).astype(np.float32)
    ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})
