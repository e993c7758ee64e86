"""Quantization: fake-quant modules, observers, calibration, placement, SmoothQuant, COMQ, QAT.

Importing this package registers the ``quantize`` stage. See docs/quantization.md.
"""
from compressor.stages.quantize.quantizers import (QuantConv2d, QuantLinear, TensorQuantizer, quantize_module,
                                                   quantizers)
from compressor.stages.quantize.stage import (Quantize, QuantizeParams, layer_sensitivity, quantize_model,
                                              restore_quantized)

__all__ = ["Quantize", "QuantizeParams", "QuantConv2d", "QuantLinear", "TensorQuantizer",
           "layer_sensitivity", "quantize_model", "quantize_module", "quantizers", "restore_quantized"]
