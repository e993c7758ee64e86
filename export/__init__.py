"""Exporters (ONNX, ONNX Runtime, TensorRT), parity and latency on the target."""
