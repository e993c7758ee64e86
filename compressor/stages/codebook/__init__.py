"""Codebook quantization: k-means weight clustering, product quantization, packed storage."""
from compressor.layers import materialize
from compressor.stages.codebook.modules import CodebookLayer
from compressor.stages.codebook.packing import load_packed, save_packed, storage
from compressor.stages.codebook.stage import Codebook, CodebookParams

__all__ = ["Codebook", "CodebookLayer", "CodebookParams", "load_packed", "materialize",
           "save_packed", "storage"]
