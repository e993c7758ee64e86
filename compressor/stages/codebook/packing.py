"""Bit-packed storage of codebook models and its size accounting.

The packed file is a safetensors file (a JSON header plus raw little-endian tensors): each codebook
layer stores its indices bit-packed (``ceil(log2 k)`` bits each, optionally entropy coded with a
stdlib coder), its codebook, scales and bias; every other tensor of the state dict is stored as is.
Loading unpacks the indices and rebuilds the codebook layers on the uncompressed architecture, so
the reloaded model has exactly the same weights.

zlib and lzma come from the standard library: on k-means indices they land within a few percent
of the order-0 entropy bound (``entropy_bound_bytes``), which the report shows beside them.
"""
from __future__ import annotations

import json
import lzma
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn

from compressor.errors import ModelLoadError
from compressor.io import atomic_path
from compressor.metrics import storage_bytes
from compressor.stages.codebook.modules import CodebookLayer, codebook_layer, index_bits

Coder = Literal["none", "zlib", "lzma"]
FORMAT = "compressor-codebook/1"


# ---------------------------------------------------------------------- bit packing
def pack_indices(indices: Tensor, bits: int) -> np.ndarray:
    """``indices`` (uint8, values < 2**bits) as a dense little-endian bit stream."""
    values = indices.cpu().numpy().astype(np.uint8)
    planes = (values[:, None] >> np.arange(bits, dtype=np.uint8)) & 1
    return np.packbits(planes.reshape(-1), bitorder="little")


def unpack_indices(data: np.ndarray, bits: int, count: int) -> Tensor:
    planes = np.unpackbits(data, count=count * bits, bitorder="little").reshape(count, bits)
    values = (planes.astype(np.uint8) << np.arange(bits, dtype=np.uint8)).sum(1, dtype=np.uint8)
    return torch.from_numpy(values)


def encode(data: bytes, coder: Coder) -> bytes:
    if coder == "zlib":
        return zlib.compress(data, 9)
    if coder == "lzma":
        return lzma.compress(data, preset=9 | lzma.PRESET_EXTREME)
    return data


def decode(data: bytes, coder: Coder) -> bytes:
    if coder == "zlib":
        return zlib.decompress(data)
    if coder == "lzma":
        return lzma.decompress(data)
    return data


def entropy_bits(indices: Tensor, clusters: int) -> float:
    """Order-0 Shannon bound of the index stream: what an ideal entropy coder would need."""
    counts = torch.bincount(indices.long(), minlength=clusters).double()
    p = counts[counts > 0] / counts.sum()
    return float(-(p * p.log2()).sum() * counts.sum())


# ---------------------------------------------------------------------- accounting
@dataclass
class Storage:
    """Bytes of the deployed weights, by kind; ``total_bytes`` counts every tensor."""

    index_bytes: int
    codebook_bytes: int
    scale_bytes: int
    other_bytes: int
    total_bytes: int
    dense_bytes: int
    compression: float
    bits_per_weight: float
    entropy_bound_index_bytes: int
    coded_index_bytes: int | None = None
    coder: str = "none"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def codebook_layers(model: nn.Module) -> dict[str, CodebookLayer]:
    return {n: m for n, m in model.named_modules() if isinstance(m, CodebookLayer)}


def storage(model: nn.Module, coder: Coder = "none") -> Storage:
    """Where the bytes go: bit-packed indices, codebooks, scales, everything else (fp32 as stored).

    ``dense_bytes`` is the same model with every tensor at its dtype's size (the fp32 reference).
    """
    layers = codebook_layers(model)
    index = sum(index_bits(m.clusters) * m.indices.numel() for m in layers.values())
    books = sum(32 * m.codebook.numel() for m in layers.values())
    scales = sum(32 * m.scale.numel() for m in layers.values() if m.scale is not None)
    clustered = sum(m.weight_shape.numel() for m in layers.values())
    total = storage_bytes(model)
    other = total - (index + books + scales + 7) // 8
    coded = (sum(len(encode(pack_indices(m.indices, index_bits(m.clusters)).tobytes(), coder))
                 for m in layers.values()) if coder != "none" else None)
    bound = sum(entropy_bits(m.indices, m.clusters) for m in layers.values())
    dense = other + 4 * clustered
    return Storage(
        index_bytes=(index + 7) // 8, codebook_bytes=books // 8, scale_bytes=scales // 8,
        other_bytes=other, total_bytes=total, dense_bytes=dense, compression=dense / max(total, 1),
        bits_per_weight=(index + books + scales) / max(clustered, 1),
        entropy_bound_index_bytes=int(np.ceil(bound / 8)), coded_index_bytes=coded, coder=coder)


# ---------------------------------------------------------------------- the packed file
def layer_specs(model: nn.Module) -> dict[str, dict[str, Any]]:
    """What rebuilds each codebook layer on the dense architecture (also the stage's state)."""
    return {name: {"clusters": m.clusters, "dim": m.dim, "per_channel": m.scale is not None}
            for name, m in codebook_layers(model).items()}


def convert(model: nn.Module, specs: dict[str, dict[str, Any]]) -> nn.Module:
    """Swap the named dense layers of ``model`` for (uninitialised) codebook layers, in place."""
    for name, spec in specs.items():
        model.set_submodule(name, codebook_layer(model.get_submodule(name), spec["clusters"],
                                                 spec["dim"], spec["per_channel"]))
    return model


def save_packed(model: nn.Module, path: str | Path, coder: Coder = "none") -> int:
    """Write ``model`` with bit-packed indices to ``path`` (safetensors); returns the file size."""
    from safetensors.torch import save_file

    specs = layer_specs(model)
    tensors: dict[str, Tensor] = {}
    for key, value in model.state_dict().items():
        owner, _, leaf = key.rpartition(".")
        if leaf == "indices" and owner in specs:
            bits = index_bits(specs[owner]["clusters"])
            data = encode(pack_indices(value, bits).tobytes(), coder)
            specs[owner]["count"] = value.numel()
            value = torch.frombuffer(bytearray(data), dtype=torch.uint8)
        tensors[key] = value.detach().cpu().contiguous().clone()
    path = Path(path)
    with atomic_path(path) as tmp:
        save_file(tensors, tmp, metadata={"format": FORMAT, "coder": coder, "layers": json.dumps(specs)})
    return path.stat().st_size


def load_packed(path: str | Path, model: nn.Module) -> nn.Module:
    """Rebuild the model saved by :func:`save_packed` on ``model``, its uncompressed architecture."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        if meta.get("format") != FORMAT:
            raise ModelLoadError(f"{path}: not a packed codebook file (expected format {FORMAT})")
        tensors = {key: f.get_tensor(key) for key in f.keys()}
    specs = json.loads(meta["layers"])
    coder = meta["coder"]
    for name, spec in specs.items():
        key = f"{name}.indices"
        data = np.frombuffer(decode(tensors[key].numpy().tobytes(), coder), dtype=np.uint8)
        tensors[key] = unpack_indices(data, index_bits(spec["clusters"]), spec["count"])
    convert(model, specs)
    model.load_state_dict(tensors)
    return model.eval()
