"""Product quantization of a weight tensor: rows cut into sub-vectors of ``dim`` values, each
replaced by the nearest of ``k`` shared codewords (``dim=1`` is scalar weight clustering).

Sub-vectors run along a row (an output channel, or an embedding row), so an optional scale per
row can normalise rows before they share one codebook: ``w[r] = scale[r] * codebook[indices]``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from compressor.stages.codebook.kmeans import Algorithm, kmeans


@dataclass
class Quantized:
    codebook: Tensor          # (k, dim) float32
    indices: Tensor           # (numel / dim,) uint8
    scale: Tensor | None      # (rows,) float32, or None
    shape: torch.Size


def row_length(shape: torch.Size) -> int:
    return int(torch.Size(shape[1:]).numel())


def check_dim(shape: torch.Size, dim: int) -> None:
    """Sub-vectors must tile each row exactly."""
    if row_length(shape) % dim:
        raise ValueError(f"rows of {row_length(shape)} values cannot be cut into sub-vectors of {dim}")


def row_scales(weight: Tensor) -> Tensor:
    """Largest magnitude per row (1 for all-zero rows): rows then share one codebook in [-1, 1]."""
    scale = weight.detach().flatten(1).abs().amax(1).float()
    return torch.where(scale > 0, scale, torch.ones_like(scale))


def normalized_subvectors(weight: Tensor, dim: int, scale: Tensor | None) -> Tensor:
    """The (numel / dim, dim) points that k-means clusters."""
    check_dim(weight.shape, dim)
    rows = weight.detach().float().flatten(1)
    if scale is not None:
        rows = rows / scale[:, None]
    return rows.reshape(-1, dim)


def quantize(weight: Tensor, clusters: int, *, dim: int = 1, per_channel: bool = False,
             importance: Tensor | None = None, algorithm: Algorithm = "kmeans",
             seed: int = 0) -> Quantized:
    """k-means codebook and assignments of ``weight`` (rows along axis 0).

    ``importance`` (broadcastable to ``weight``) weights each value's squared error, e.g. the mean
    squared input activation it multiplies; a sub-vector counts the mean of its values'.
    """
    scale = row_scales(weight) if per_channel else None
    weights = None
    if importance is not None:
        weights = importance.detach().float().expand_as(weight).reshape(-1, dim).mean(1)
        if scale is not None:   # the error in normalised units is scaled back by the row scale
            weights = weights * (scale ** 2).repeat_interleave(weight[0].numel() // dim)
    codebook, assign = kmeans(normalized_subvectors(weight, dim, scale), clusters, weights=weights,
                              algorithm=algorithm, seed=seed)
    return Quantized(codebook, assign.to(torch.uint8), scale, weight.shape)


def dequantize(codebook: Tensor, indices: Tensor, shape: torch.Size, scale: Tensor | None) -> Tensor:
    """The dense weight (differentiable in ``codebook`` and ``scale``)."""
    rows = codebook[indices.long()].reshape(shape[0], -1)
    if scale is not None:
        rows = rows * scale[:, None]
    return rows.reshape(shape)


def snap_to_int8(codebook: Tensor) -> Tensor:
    """Codewords rounded to the symmetric int8 grid whose step is ``max|codebook| / 127``.

    The largest codeword stays put, so an absmax int8 quantizer of the dense weight picks the
    same step and reproduces every codeword exactly.
    """
    step = codebook.detach().abs().max() / 127
    if step == 0:
        return codebook.detach().clone()
    return (torch.round(codebook.detach() / step).clamp(-127, 127) * step)
