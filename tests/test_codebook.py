"""Codebook stage: k-means and product quantization, storage accounting, packing, compact ONNX."""
from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import compressor
from compressor.errors import RecipeErrors, StageError
from compressor.export.codebook_onnx import export_codebook_onnx
from compressor.export.onnx import export_onnx
from compressor.export.runtime import feeds, ort_session
from compressor.layers import materialize
from compressor.metrics import storage_bytes
from compressor.recipe.loader import load_recipe
from compressor.stages.codebook import CodebookLayer, load_packed, save_packed, storage
from compressor.stages.codebook.kmeans import kmeans, nearest
from compressor.stages.codebook.modules import codebook_layer
from compressor.stages.codebook.packing import pack_indices, unpack_indices
from compressor.stages.codebook.product import quantize
from compressor.zoo import build_model


def _codebook_recipe(**params) -> dict:
    return {
        "name": "cb", "model": {"zoo": "digits_cnn"}, "data": {"batch_size": 128},
        "report": {"latency": "off"},
        "stages": [{"codebook": {"clusters": 8, "finetune": {"epochs": 1, "max_steps_per_epoch": 3},
                                 **params}}],
    }


def _run(tmp_path: Path, **params):
    report = compressor.run(_codebook_recipe(**params), run_dir=tmp_path / "run")
    ckpt = Path(report.run_dir) / "checkpoints" / "01-codebook.pt"
    return report, compressor.load_model(ckpt)


def _onnx(path: Path, inputs: tuple[torch.Tensor, ...]) -> np.ndarray:
    session = ort_session(path)
    return session.run(None, feeds(session, inputs))[0]


# ---------------------------------------------------------------------- building blocks
def test_kmeans_keeps_few_distinct_values_exact() -> None:
    points = torch.tensor([[0.5], [-1.0], [0.5], [2.0]])
    codebook, assign = kmeans(points, 8)
    assert len(codebook) == 3
    assert torch.equal(codebook[assign], points)


@pytest.mark.parametrize("dim", [1, 2])
def test_weighted_kmeans_fits_the_heavy_points(dim: int) -> None:
    points = torch.cat([torch.randn(400, dim) - 3, torch.randn(400, dim) + 3])
    weights = torch.cat([torch.full((400,), 100.0), torch.ones(400)])
    codebook, _ = kmeans(points, 4, weights=weights)
    assert (codebook.mean(1) < 0).sum() >= 3   # most codewords go where the weight is


@pytest.mark.parametrize("dim", [1, 4])
def test_nearest_matches_brute_force(dim: int) -> None:
    points, codebook = torch.randn(500, dim), torch.randn(16, dim)
    brute = ((points[:, None] - codebook[None]) ** 2).sum(-1).argmin(1)
    assert torch.equal(nearest(points, codebook, chunk=64), brute)


@pytest.mark.parametrize("bits", range(1, 9))
def test_bit_packing_round_trips(bits: int) -> None:
    values = torch.randint(0, 2 ** bits, (1001,), dtype=torch.uint8)
    packed = pack_indices(values, bits)
    assert packed.nbytes == (1001 * bits + 7) // 8
    assert torch.equal(unpack_indices(packed, bits, 1001), values)


def test_product_quantization_shares_codewords_along_rows() -> None:
    weight = torch.randn(16, 12) * torch.logspace(-2, 0, 16)[:, None]
    q = quantize(weight, 32, dim=4, per_channel=True)
    assert q.codebook.shape == (32, 4) and q.indices.shape == (48,) and q.scale.shape == (16,)
    layer = codebook_layer(nn.Linear(12, 16), len(q.codebook), 4, True)
    layer.load_quantized(q)
    error = (layer.weight - weight).norm(dim=1) / weight.norm(dim=1)
    assert error.max() < 0.6   # per-row scales keep small rows as accurate as large ones
    with pytest.raises(ValueError, match="sub-vectors of 5"):
        quantize(weight, 8, dim=5)


@pytest.mark.parametrize("dense,x", [
    (nn.Linear(12, 6), torch.randn(3, 5, 12)),
    (nn.Conv2d(4, 8, 3, stride=2, padding=1), torch.randn(2, 4, 9, 9)),
    (nn.Embedding(20, 8, padding_idx=0), torch.randint(0, 20, (3, 7))),
])
def test_codebook_layer_computes_its_dense_twin(dense: nn.Module, x: torch.Tensor) -> None:
    q = quantize(dense.weight, 16, dim=2)
    layer = codebook_layer(dense, len(q.codebook), 2, False)
    layer.load_quantized(q)
    plain = layer.to_dense()
    assert type(plain) is type(dense)
    assert torch.equal(layer(x), plain(x))
    bias = dense.bias.numel() if getattr(dense, "bias", None) is not None else 0
    assert layer.storage_bits() == 4 * layer.indices.numel() + 32 * (layer.codebook.numel() + bias)


# ---------------------------------------------------------------------- the stage
def test_stage_compresses_restores_and_packs_exactly(tmp_path: Path) -> None:
    report, model = _run(tmp_path, per_channel_scale=True, entropy_coder="zlib", weighting="activation")
    row = report.rows[-1]
    assert row["quality"] > 0.9 and row["layers"] == 4
    s = row["storage"]
    assert s["total_bytes"] == row["size_bytes"] == storage_bytes(model)
    assert s["index_bytes"] + s["codebook_bytes"] + s["scale_bytes"] + s["other_bytes"] == s["total_bytes"]
    assert s["compression"] > 7   # 3-bit indices, fp32 everything else
    assert s["entropy_bound_index_bytes"] <= s["index_bytes"]
    assert 0 < s["coded_index_bytes"] < 1.2 * s["index_bytes"]
    assert row["macs"] == report.rows[0]["macs"]   # counted on the dense twin

    packed = Path(report.artifacts["codebook"])
    assert packed.stat().st_size == row["packed_file_bytes"]
    assert packed.stat().st_size < 1.1 * s["total_bytes"]   # the header is all the file adds
    reloaded = load_packed(packed, build_model("digits_cnn"))
    for key, value in model.state_dict().items():
        assert torch.equal(value, reloaded.state_dict()[key]), key
    assert sum(isinstance(m, CodebookLayer) for m in model.modules()) == 4


def test_refresh_learns_assignments_and_drops_latents(tmp_path: Path) -> None:
    base = build_model("digits_cnn")
    q = quantize(base.classifier.weight, 8)
    report, model = _run(tmp_path, assignments="refresh", layers=["classifier"],
                         finetune={"epochs": 1, "max_steps_per_epoch": 5, "lr": 0.01, "keep_best": False})
    assert not (model.classifier.indices == q.indices).all()
    assert all("latent" not in k for k in model.state_dict())
    assert report.rows[-1]["layers"] == 1


def test_joint_learning_leaves_the_dense_weight_alone() -> None:
    dense = nn.Linear(8, 4)
    before = dense.weight.detach().clone()
    layer = codebook_layer(dense, 4, 1, False)
    layer.load_quantized(quantize(dense.weight, 4))
    layer.begin_joint(dense.weight.detach())
    layer(torch.randn(2, 8)).square().sum().backward()
    torch.optim.SGD([layer.latent], lr=1.0).step()
    assert not torch.equal(layer.latent.detach().flatten(), before.flatten())
    assert torch.equal(dense.weight, before)


def test_int8_grid_survives_an_int8_weight_quantizer(tmp_path: Path) -> None:
    report, model = _run(tmp_path, int8_grid=True, clusters=16, materialize=True)
    assert not any(isinstance(m, CodebookLayer) for m in model.modules())   # plain layers for Q/DQ
    assert report.rows[-1]["storage"]["compression"] > 7                    # measured before
    for layer in (m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))):
        w = layer.weight.detach()
        assert len(torch.unique(w)) <= 16
        scale = float(w.abs().max() / 127)
        fq = torch.fake_quantize_per_tensor_affine(w, scale, 0, -127, 127)
        torch.testing.assert_close(fq, w, rtol=0, atol=scale * 1e-4)


def test_per_layer_overrides_and_indivisible_rows(tmp_path: Path) -> None:
    report, model = _run(tmp_path, clusters=64, dim=4, per_layer={"features.0.0": {"dim": 1, "clusters": 4}})
    assert model.features[0][0].clusters == 4 and model.features[0][0].dim == 1
    assert model.classifier.dim == 4
    with pytest.raises(StageError, match=r"'features.0.0'.*sub-vectors of 4.*per_layer"):
        compressor.run(_codebook_recipe(dim=4), run_dir=tmp_path / "bad")


@pytest.mark.parametrize("per_layer,words", [
    ({"fc": {"bits": 4}}, "unknown field 'bits'"),
    ({"fc": {"clusters": 1000}}, "less than or equal to 256"),
])
def test_per_layer_values_are_validated(per_layer: dict, words: str) -> None:
    with pytest.raises(RecipeErrors, match=words):
        load_recipe(_codebook_recipe(per_layer=per_layer))


# ---------------------------------------------------------------------- compact ONNX
class _TextModel(nn.Module):
    """Embedding + Linear on 3-d inputs: the exporter writes MatMul with a transposed weight."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(50, 16)
        self.proj = nn.Linear(16, 24)
        self.head = nn.Linear(24, 4)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.proj(self.embed(ids)))).mean(1)


@pytest.mark.parametrize("clusters,dim,per_channel", [(16, 1, False), (64, 2, True)])
def test_compact_onnx_matches_dense_export(tmp_path: Path, clusters: int, dim: int, per_channel: bool) -> None:
    torch.manual_seed(0)
    model = _TextModel().eval()
    for name in ("embed", "proj", "head"):
        dense = model.get_submodule(name)
        q = quantize(dense.weight, clusters, dim=dim, per_channel=per_channel)
        layer = codebook_layer(dense, len(q.codebook), dim, per_channel)
        layer.load_quantized(q)
        model.set_submodule(name, layer)
    ids = torch.randint(0, 50, (3, 7))
    kwargs = dict(input_names=["ids"], output_names=["out"], dynamic_axes={"ids": {0: "b", 1: "s"}})
    compact = export_codebook_onnx(model, (ids,), tmp_path / "compact.onnx", **kwargs)
    dense_path = export_onnx(materialize(copy.deepcopy(model)), (ids,), tmp_path / "dense.onnx", **kwargs)
    other = torch.randint(0, 50, (5, 11))
    np.testing.assert_allclose(_onnx(compact.path, (other,)), _onnx(dense_path, (other,)), rtol=0, atol=1e-5)
    assert compact.layers == 3 and compact.compact_bytes < compact.dense_bytes


def test_export_stage_writes_small_codebook_onnx(tmp_path: Path) -> None:
    recipe = _codebook_recipe(clusters=16)
    recipe["stages"].append({"export": {"formats": ["onnx", "onnx-codebook"], "simplify": False}})
    report = compressor.run(recipe, run_dir=tmp_path / "run")
    row = report.rows[-1]
    assert row["parity_by_format"]["onnx-codebook"]["max_abs"] < 1e-4   # conv + folded BatchNorm, fp32 rounding
    assert row["onnx_dense_bytes"] > 3 * row["onnx_codebook_bytes"]
    assert Path(report.artifacts["onnx-codebook"]).is_file()
