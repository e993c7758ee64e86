"""Layers whose weight is stored as a codebook plus small-integer indices (and row scales).

Each layer computes its dense ``weight`` on the fly (``codebook[indices] * scale``), so the forward
pass, ONNX export and fine-tuning of the codewords all go through ordinary torch ops, while
``storage_bits()`` counts what is actually stored: ``ceil(log2 k)`` bits per index, the codebook,
scales and bias at 32 bits.
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from compressor.stages.codebook.kmeans import nearest
from compressor.stages.codebook.product import (Quantized, dequantize, normalized_subvectors,
                                                snap_to_int8)

#: Dense layer types that have a codebook counterpart.
DENSE_TYPES: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv2d, nn.Embedding)


def index_bits(clusters: int) -> int:
    """Bits of one index into a codebook of ``clusters`` entries (at least 1)."""
    return max(1, math.ceil(math.log2(clusters)))


class CodebookLayer(nn.Module):
    """Shared storage and bookkeeping; subclasses define ``forward`` (with ``self.weight``) and
    ``to_dense()`` (the plain layer holding the same weights)."""

    def __init__(self, shape: torch.Size, clusters: int, dim: int, per_channel: bool,
                 bias: Tensor | None) -> None:
        super().__init__()
        self.weight_shape = torch.Size(shape)
        self.codebook = nn.Parameter(torch.zeros(clusters, dim))
        self.register_buffer("indices", torch.zeros(self.weight_shape.numel() // dim, dtype=torch.uint8))
        self.scale = nn.Parameter(torch.ones(shape[0])) if per_channel else None
        self.bias = nn.Parameter(bias.detach().clone()) if bias is not None else None
        #: Continuous sub-vectors while assignments are learned jointly (see ``begin_joint``).
        self.latent: nn.Parameter | None = None

    # ------------------------------------------------------------------ the weight
    @property
    def clusters(self) -> int:
        return self.codebook.shape[0]

    @property
    def dim(self) -> int:
        return self.codebook.shape[1]

    @property
    def weight(self) -> Tensor:
        if self.latent is None:
            return dequantize(self.codebook, self.indices, self.weight_shape, self.scale)
        with torch.no_grad():
            self.indices.copy_(nearest(self.latent, self.codebook))
        chosen = self.codebook[self.indices.long()]
        # Straight-through: the value is the codeword, the gradient also reaches the latent
        # sub-vector, which crosses to a neighbouring codeword only when it nears it.
        chosen = chosen + self.latent - self.latent.detach()
        rows = chosen.reshape(self.weight_shape[0], -1)
        if self.scale is not None:
            rows = rows * self.scale[:, None]
        return rows.reshape(self.weight_shape)

    def load_quantized(self, q: Quantized) -> None:
        with torch.no_grad():
            self.codebook.copy_(q.codebook)
            self.indices.copy_(q.indices)
            if self.scale is not None and q.scale is not None:
                self.scale.copy_(q.scale)

    # ------------------------------------------------------------------ joint learning
    def begin_joint(self, dense: Tensor) -> None:
        """Learn assignments too: keep ``dense`` (normalised) as latent sub-vectors that follow
        the gradient, each mapped to its nearest codeword in every forward pass."""
        scale = self.scale.detach() if self.scale is not None else None
        # A copy: without a per-row scale the sub-vectors are a view of ``dense``, which
        # training would otherwise overwrite in place.
        self.latent = nn.Parameter(normalized_subvectors(dense, self.dim, scale).clone())

    def end_joint(self) -> None:
        """Fix the final assignments and drop the latent sub-vectors."""
        if self.latent is not None:
            with torch.no_grad():
                self.indices.copy_(nearest(self.latent, self.codebook))
            self.latent = None

    @torch.no_grad()
    def snap_to_int8(self) -> None:
        self.codebook.copy_(snap_to_int8(self.codebook))

    # ------------------------------------------------------------------ accounting
    def storage_bits(self) -> int:
        floats = self.codebook.numel() + sum(t.numel() for t in (self.scale, self.bias) if t is not None)
        return index_bits(self.clusters) * self.indices.numel() + 32 * floats

    def extra_repr(self) -> str:
        scale = ", per_channel" if self.scale is not None else ""
        return f"weight={tuple(self.weight_shape)}, clusters={self.clusters}, dim={self.dim}{scale}"


class CodebookLinear(CodebookLayer):
    def __init__(self, dense: nn.Linear, clusters: int, dim: int, per_channel: bool) -> None:
        super().__init__(dense.weight.shape, clusters, dim, per_channel, dense.bias)
        self.in_features, self.out_features = dense.in_features, dense.out_features

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight, self.bias)

    def to_dense(self) -> nn.Linear:
        layer = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None)
        return _fill(layer, self)


class CodebookConv2d(CodebookLayer):
    def __init__(self, dense: nn.Conv2d, clusters: int, dim: int, per_channel: bool) -> None:
        if dense.padding_mode != "zeros":
            raise ValueError(f"padding_mode={dense.padding_mode!r} is not supported (only 'zeros')")
        super().__init__(dense.weight.shape, clusters, dim, per_channel, dense.bias)
        self.conv_args: dict[str, Any] = dict(
            in_channels=dense.in_channels, out_channels=dense.out_channels,
            kernel_size=dense.kernel_size, stride=dense.stride, padding=dense.padding,
            dilation=dense.dilation, groups=dense.groups)

    def forward(self, x: Tensor) -> Tensor:
        a = self.conv_args
        return F.conv2d(x, self.weight, self.bias, a["stride"], a["padding"], a["dilation"], a["groups"])

    def to_dense(self) -> nn.Conv2d:
        return _fill(nn.Conv2d(**self.conv_args, bias=self.bias is not None), self)


class CodebookEmbedding(CodebookLayer):
    def __init__(self, dense: nn.Embedding, clusters: int, dim: int, per_channel: bool) -> None:
        if dense.max_norm is not None:
            raise ValueError("embeddings with max_norm rewrite their weight in forward; not supported")
        super().__init__(dense.weight.shape, clusters, dim, per_channel, None)
        self.padding_idx, self.scale_grad_by_freq, self.sparse = (
            dense.padding_idx, dense.scale_grad_by_freq, dense.sparse)

    def forward(self, x: Tensor) -> Tensor:
        return F.embedding(x, self.weight, self.padding_idx, None, 2.0, self.scale_grad_by_freq, self.sparse)

    def to_dense(self) -> nn.Embedding:
        num, dim = self.weight_shape
        layer = nn.Embedding(num, dim, padding_idx=self.padding_idx,
                             scale_grad_by_freq=self.scale_grad_by_freq, sparse=self.sparse)
        return _fill(layer, self)


_CODEBOOK_TYPES: dict[type[nn.Module], type[CodebookLayer]] = {
    nn.Linear: CodebookLinear, nn.Conv2d: CodebookConv2d, nn.Embedding: CodebookEmbedding}


def codebook_layer(dense: nn.Module, clusters: int, dim: int, per_channel: bool) -> CodebookLayer:
    """An (uninitialised) codebook layer with the shape, bias and hyper-parameters of ``dense``."""
    for cls in type(dense).__mro__:
        if cls in _CODEBOOK_TYPES:
            return _CODEBOOK_TYPES[cls](dense, clusters, dim, per_channel)
    raise TypeError(f"{type(dense).__name__} has no codebook form; "
                    f"supported: {', '.join(t.__name__ for t in _CODEBOOK_TYPES)}")


def _fill(layer: nn.Module, source: CodebookLayer) -> nn.Module:
    with torch.no_grad():
        layer.weight.copy_(source.weight)
        if source.bias is not None:
            layer.bias.copy_(source.bias)
    return layer

