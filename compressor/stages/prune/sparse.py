"""Unstructured and 2:4 semi-structured weight sparsity: masks that persist, and sparse storage.

A sparse layer keeps its class (``isinstance(m, nn.Conv2d)`` still holds) and its name: it becomes a
``Sparse<Class>`` subclass, the way ``torch.nn.utils.parametrize`` specialises a module in place,
with a boolean ``weight_mask`` buffer. The mask is applied to the weight before every forward, so
it persists through any later training (fine-tune, distillation, QAT) without those stages knowing
about it, and the exported weights hold exact zeros. ``storage_bits`` counts the weight in the
encoding a deployment would use: a bitmask or CSR for unstructured sparsity, and for 2:4 the kept
values plus a 2-bit position each, as TensorRT/cuSPARSELt store it.
"""
from __future__ import annotations

from typing import Iterable, Literal

import torch
from torch import Tensor, nn

Pattern = Literal["unstructured", "2:4"]
#: 2:4 semi-structured sparsity: in every group of GROUP weights along the input dimension, KEEP stay.
GROUP, KEEP = 4, 2


class SparseWeight:
    """Mixin for ``nn.Conv*d``/``nn.Linear``: a fixed weight mask and sparse storage accounting."""

    weight: nn.Parameter
    bias: nn.Parameter | None
    weight_mask: Tensor
    sparsity_pattern: Pattern

    def forward(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        if not (torch.jit.is_tracing() or torch.compiler.is_compiling()):
            apply_mask(self)
        return super().forward(*args, **kwargs)  # type: ignore[misc]

    def storage_encoding(self) -> str:
        if self.sparsity_pattern == "2:4":
            return "2:4"
        return "bitmask" if self._bitmask_bits() <= self._csr_bits() else "csr"

    def storage_bits(self) -> int:
        """Bits of the weight in its sparse encoding, plus a dense bias (the mask is not stored)."""
        value_bits = self.weight.element_size() * 8
        if self.sparsity_pattern == "2:4":
            bits = self.weight.numel() // GROUP * KEEP * (value_bits + 2)
        else:
            bits = min(self._bitmask_bits(), self._csr_bits())
        if self.bias is not None:
            bits += self.bias.numel() * self.bias.element_size() * 8
        return bits

    def _bitmask_bits(self) -> int:
        """One presence bit per weight plus the nonzero values."""
        return self.weight.numel() + _nonzero(self.weight) * self.weight.element_size() * 8

    def _csr_bits(self) -> int:
        """Compressed sparse rows over (output channel, flattened input): values, column indices, row pointers."""
        rows = self.weight.shape[0]
        cols = self.weight.numel() // rows
        index_bits = 16 if cols <= 2**16 else 32
        return _nonzero(self.weight) * (self.weight.element_size() * 8 + index_bits) + (rows + 1) * 32


_CLASSES: dict[type[nn.Module], type[nn.Module]] = {}


def make_sparse(module: nn.Module, mask: Tensor, pattern: Pattern) -> None:
    """Turn ``module`` into its sparse subclass in place with ``mask`` (1 = keep) and zero the rest."""
    if not isinstance(module, SparseWeight):
        base = type(module)
        if base not in _CLASSES:
            _CLASSES[base] = type(f"Sparse{base.__name__}", (SparseWeight, base), {})
        module.__class__ = _CLASSES[base]
        module.register_buffer("weight_mask", mask.to(torch.bool))
    else:
        module.weight_mask = mask.to(torch.bool) & module.weight_mask
    module.sparsity_pattern = pattern
    apply_mask(module)


@torch.no_grad()
def apply_mask(module: nn.Module) -> None:
    module.weight.mul_(module.weight_mask)


def sparse_layers(model: nn.Module) -> dict[str, nn.Module]:
    return {name: m for name, m in model.named_modules() if isinstance(m, SparseWeight)}


def layer_sparsity(module: nn.Module) -> float:
    """Fraction of exactly-zero weights."""
    return 1.0 - _nonzero(module.weight) / module.weight.numel()


# ---------------------------------------------------------------------------------------- masks
def magnitude_masks(weights: dict[str, Tensor], sparsity: dict[str, float],
                    global_names: Iterable[str] = ()) -> dict[str, Tensor]:
    """Keep the largest-magnitude weights: per layer, or ranked jointly over ``global_names``.

    Layers ranked globally share one threshold chosen so that their combined sparsity is the
    (common) target of those layers; the others get their own ``sparsity[name]``.
    """
    masks: dict[str, Tensor] = {}
    global_names = [n for n in global_names if n in weights]
    if global_names:
        scores = torch.cat([weights[n].abs().flatten() for n in global_names])
        threshold = _kth_smallest(scores, int(sparsity[global_names[0]] * scores.numel()))
        masks.update({n: weights[n].abs() > threshold for n in global_names})
    for name, w in weights.items():
        if name not in masks:
            k = int(sparsity[name] * w.numel())
            masks[name] = w.abs() > _kth_smallest(w.abs().flatten(), k)
    return masks


def _kth_smallest(values: Tensor, k: int) -> Tensor:
    """The k-th smallest value (k = 0: below every value, so nothing is pruned)."""
    if k <= 0:
        return values.min() - 1
    return values.kthvalue(k).values


def semi_structured_mask(weight: Tensor) -> Tensor:
    """The 2:4 mask keeping the two largest magnitudes of every 4 consecutive input channels.

    The groups run along the input dimension (columns of a Linear weight; input channels at each
    kernel position of a convolution), the layout sparse tensor cores consume.
    """
    w = _input_last(weight)
    groups = w.reshape(*w.shape[:-1], w.shape[-1] // GROUP, GROUP).abs()
    keep = groups.topk(KEEP, dim=-1).indices
    mask = torch.zeros_like(groups, dtype=torch.bool).scatter_(-1, keep, True)
    return _input_back(mask.reshape(w.shape), weight)


def supports_2_4(module: nn.Module) -> bool:
    """True when the layer's input dimension (per group) splits into groups of 4."""
    return module.weight.dim() >= 2 and module.weight.shape[1] % GROUP == 0


def is_2_4(weight: Tensor) -> bool:
    """Every group of 4 along the input dimension holds at most 2 nonzeros."""
    w = _input_last(weight)
    groups = w.reshape(*w.shape[:-1], w.shape[-1] // GROUP, GROUP)
    return bool(((groups != 0).sum(-1) <= KEEP).all())


def _input_last(weight: Tensor) -> Tensor:
    """(out, in, *kernel) -> (out, *kernel, in): input channels last."""
    return weight.movedim(1, -1) if weight.dim() > 2 else weight


def _input_back(mask: Tensor, like: Tensor) -> Tensor:
    return mask.movedim(-1, 1) if like.dim() > 2 else mask


def _nonzero(t: Tensor) -> int:
    return int(torch.count_nonzero(t))


def storage_summary(model: nn.Module) -> dict[str, object]:
    """Per-layer sparsity and encodings of the sparse layers (for the report)."""
    layers = sparse_layers(model)
    total = sum(m.weight.numel() for m in layers.values())
    zeros = sum(m.weight.numel() - _nonzero(m.weight) for m in layers.values())
    dense_bits = sum(m.weight.numel() * m.weight.element_size() * 8 for m in layers.values())
    sparse_bits = sum(m.storage_bits() - (m.bias.numel() * m.bias.element_size() * 8
                                          if m.bias is not None else 0) for m in layers.values())
    return {
        "layer_sparsity": {n: round(layer_sparsity(m), 4) for n, m in layers.items()},
        "encoding": {n: m.storage_encoding() for n, m in layers.items()},
        "weight_sparsity": round(zeros / max(total, 1), 4),
        "sparse_weight_ratio": round(sparse_bits / max(dense_bits, 1), 4),
    }
