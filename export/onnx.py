"""torch -> ONNX: export, check, optional simplification."""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Literal

import onnx
import torch
from torch import Tensor, nn

from compressor.errors import ExportError
from compressor.io import atomic_path

Exporter = Literal["torchscript", "dynamo"]


def export_onnx(model: nn.Module, example_inputs: tuple[Tensor, ...], path: str | Path, *,
                input_names: list[str], output_names: list[str],
                dynamic_axes: dict[str, dict[int, str]] | None = None, opset: int = 17,
                exporter: Exporter = "torchscript", simplify: bool = False,
                runtime: Literal["onnxruntime", "tensorrt"] = "onnxruntime") -> Path:
    """Export ``model`` to ``path`` and run ``onnx.checker`` on the result.

    The TorchScript exporter is the default: it is ~15x faster here and the only one whose
    transformer graphs ONNX Runtime's optimizer fuses. The dynamo exporter specialises a batch
    of 1, so pass examples with batch >= 2 when using it. A fake-quantized model's Q/DQ graph is
    cleaned up for ``runtime`` (see :mod:`compressor.export.qdq_graph`).
    """
    path = Path(path)
    model = model.eval()
    with atomic_path(path) as tmp, torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            if exporter == "dynamo":
                dims = {name: {ax: torch.export.Dim(label) for ax, label in axes.items()}
                        for name, axes in (dynamic_axes or {}).items() if name in input_names}
                torch.onnx.export(model, example_inputs, str(tmp), dynamo=True, opset_version=opset,
                                  input_names=input_names, output_names=output_names,
                                  dynamic_shapes=tuple(dims.get(n) for n in input_names),
                                  external_data=False)
            else:
                torch.onnx.export(model, example_inputs, str(tmp), dynamo=False, opset_version=opset,
                                  input_names=input_names, output_names=output_names,
                                  dynamic_axes=dynamic_axes or {}, do_constant_folding=True)
        except Exception as exc:  # torch raises many types; the message is what matters
            raise ExportError(f"ONNX export of {type(model).__name__} failed: {exc}") from exc
        _finish_qdq(tmp, runtime)
        if simplify:
            _simplify(tmp)
        onnx.checker.check_model(str(tmp))
    return path


def _finish_qdq(path: Path, runtime: str) -> None:
    from compressor.export.qdq_graph import has_qdq, optimize_qdq

    model = onnx.load(str(path))
    if has_qdq(model):
        onnx.save(optimize_qdq(model, runtime=runtime), str(path))


def _simplify(path: Path) -> None:
    import onnxslim

    model = onnxslim.slim(onnx.load(str(path)))
    onnx.save(model, str(path))
