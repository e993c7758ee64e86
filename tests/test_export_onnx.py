"""torch -> ONNX: dynamic axes, metadata, external data, fp16 with sensitive ops kept fp32."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import torch

from export_helpers import export_tiny

from compressor.export.fp16 import KEEP_FLOAT, convert_file
from compressor.export.onnx import io_specs, model_files, read_metadata
from compressor.export.parity import compare, onnx_parity, ort_outputs, torch_outputs


def test_dynamic_batch_and_sequence_and_metadata(tmp_path: Path) -> None:
    model, path = export_tiny(tmp_path / "m.onnx", metadata={"recipe_hash": "abc", "stages": [{"name": "p"}],
                                                              "metrics": {"quality": 0.5}})
    specs = io_specs(path)
    assert specs["inputs"][0] == {"name": "ids", "dtype": "int64", "shape": ["batch", "seq"]}
    for batch, seq in ((1, 3), (5, 11)):
        ids, mask = torch.randint(0, 50, (batch, seq)), torch.ones(batch, seq, dtype=torch.long)
        parity = onnx_parity(model, path, (ids, mask))
        assert parity.cosine > 0.99999 and parity.samples == batch
    meta = read_metadata(path)
    assert meta == {"recipe_hash": "abc", "stages": [{"name": "p"}], "metrics": {"quality": 0.5},
                    "precision": "fp32"}


def test_large_weights_go_to_external_data(tmp_path: Path) -> None:
    model, path = export_tiny(tmp_path / "m.onnx", external_data_mb=1e-3)
    files = model_files(path)
    assert [f.name for f in files] == ["m.onnx", "m.onnx.data"]
    assert files[1].stat().st_size > files[0].stat().st_size
    proto = onnx.load(str(path), load_external_data=False)
    assert any(i.data_location == onnx.TensorProto.EXTERNAL for i in proto.graph.initializer)
    ids, mask = torch.randint(0, 50, (3, 5)), torch.ones(3, 5, dtype=torch.long)
    assert onnx_parity(model, path, (ids, mask)).max_abs < 1e-5
    # Re-exporting small drops the stale side file.
    export_tiny(path)
    assert model_files(path) == [path]


def test_fp16_keeps_io_fp32_and_sensitive_ops_fp32(tmp_path: Path) -> None:
    model, path = export_tiny(tmp_path / "m.onnx")
    dst = convert_file(path, tmp_path / "m16.onnx")
    proto = onnx.load(str(dst))
    assert read_metadata(dst)["precision"] == "fp16"
    assert io_specs(dst) == io_specs(path)  # same signature: callers feed the same arrays
    fp16_inits = [i for i in proto.graph.initializer if i.data_type == onnx.TensorProto.FLOAT16]
    assert fp16_inits, "weights should be stored in fp16"
    kept = {n.op_type for n in proto.graph.node if n.op_type in KEEP_FLOAT}
    assert {"LayerNormalization", "Softmax"} <= kept
    # Each kept op reads fp32: its first input is cast to fp32 or comes from another kept op.
    producer = {o: n for n in proto.graph.node for o in n.output}
    for node in (n for n in proto.graph.node if n.op_type in ("LayerNormalization", "Softmax")):
        src = producer[node.input[0]]
        assert src.op_type in KEEP_FLOAT or (
            src.op_type == "Cast" and src.attribute[0].i == onnx.TensorProto.FLOAT), node.name
    ids, mask = torch.randint(0, 50, (6, 9)), torch.ones(6, 9, dtype=torch.long)
    parity = compare(torch_outputs(model, (ids, mask)), ort_outputs(dst, (ids, mask)))
    assert parity.cosine > 0.999


def test_compare_metrics() -> None:
    ref = np.array([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0]])
    same = compare(ref, ref)
    assert same.max_abs == 0 and same.top1_agreement == 1.0 and abs(same.cosine - 1) < 1e-12
    flipped = compare(ref, ref[::-1].copy())
    assert flipped.top1_agreement == 0.0 and flipped.max_rel == 2 / 3
    assert flipped.failures(atol=1e-3, min_cosine=0.99, min_top1=0.5) == [
        "max abs error 2 > 0.001", f"cosine {flipped.cosine:.6f} < 0.99", "top-1 agreement 0.0000 < 0.5"]
    assert compare(ref[:, :1], ref[:, :1]).top1_agreement is None
