"""fp32 ONNX -> fp16 ONNX with numerically sensitive ops kept in fp32.

Uses ONNX Runtime's own converter (``onnxruntime.transformers.float16``, shipped inside the
onnxruntime wheel). Inputs and outputs stay fp32 (``keep_io_types``) so callers, parity checks and
the deploy example feed the same arrays to both variants.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

import onnx

from compressor.export.onnx import EXTERNAL_DATA_MB, has_qdq, save_onnx, set_metadata

#: Ops kept in fp32, and why: variance and mean reductions square or sum activations past fp16's
#: 65504 (LayerNorm written out as ReduceMean/Pow/Sqrt by older opsets), Softmax and Exp overflow,
#: and Q/DQ scales must stay fp32 below opset 19 (TensorRT's strongly typed mode reads the types),
#: as must ONNX Runtime's int8 MatMul kernel (its CPU version has fp32 scales, bias and output).
KEEP_FLOAT: tuple[str, ...] = ("LayerNormalization", "Softmax", "ReduceMean", "ReduceSum", "Pow",
                               "Sqrt", "Exp", "QuantizeLinear", "DequantizeLinear", "MatMulIntegerToFloat")


def to_fp16(proto: onnx.ModelProto, *, keep_float: Iterable[str] = KEEP_FLOAT) -> onnx.ModelProto:
    """An fp16 copy of ``proto``; ops in ``keep_float`` (plus ORT's defaults) run in fp32."""
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16
    from onnxruntime.transformers.onnx_model import OnnxModel

    block = sorted(set(DEFAULT_OP_BLOCK_LIST) | set(keep_float))
    converted = convert_float_to_float16(proto, keep_io_types=True, op_block_list=block)
    # The converter appends the Casts it inserts at the end of the node list; the checker and
    # TensorRT's parser need topological order.
    OnnxModel.graph_topological_sort(converted.graph)
    return converted


def convert_file(src: str | Path, dst: str | Path, *, keep_float: Iterable[str] = KEEP_FLOAT,
                 external_data_mb: float = EXTERNAL_DATA_MB) -> Path:
    """Write the fp16 version of the ONNX file ``src`` to ``dst`` and check it.

    Q/DQ pairs stay fp32 (see :data:`KEEP_FLOAT`), so an int8 model becomes int8 + fp16: the mix
    TensorRT runs fastest.
    """
    source = onnx.load(str(src))
    precision = "int8+fp16" if has_qdq(source) else "fp16"
    proto = to_fp16(source, keep_float=keep_float)
    set_metadata(proto, {"precision": precision})
    return save_onnx(proto, dst, external_data_mb=external_data_mb)
