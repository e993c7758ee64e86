"""Low-rank stage: SVD factors, rank rules, activation-aware truncation, restore and export."""
from __future__ import annotations

from pathlib import Path

import onnx
import pytest
import torch
from torch import nn

import compressor
from compressor.errors import RecipeErrors, StageError
from compressor.recipe.loader import load_recipe
from compressor.stages.lowrank import pick_rank, svd_factors


def _recipe(**params) -> dict:
    params.setdefault("finetune", {"epochs": 1, "max_steps_per_epoch": 3})
    return {"name": "lr", "model": {"zoo": "digits_cnn"}, "data": {"batch_size": 128},
            "report": {"latency": "off"}, "stages": [{"lowrank": params}]}


@pytest.mark.parametrize("shape", [(20, 12), (8, 4, 3, 3)])
def test_full_rank_factors_rebuild_the_weight(shape: tuple[int, ...]) -> None:
    w = torch.randn(*shape)
    b, s, a = svd_factors(w)
    torch.testing.assert_close((b @ a).float().reshape(shape), w, rtol=0, atol=1e-5)


def test_activation_aware_factors_minimise_output_error() -> None:
    torch.manual_seed(0)
    w, x = torch.randn(32, 24), torch.randn(2000, 24) @ torch.randn(24, 24) * torch.linspace(0.05, 2, 24)
    gram = (x.T @ x).double()
    errors = {}
    for name, g in (("svd", None), ("activation", gram)):
        b, _, a = svd_factors(w, g)
        errors[name] = (x.double() @ (b[:, :8] @ a[:8]).T - x.double() @ w.double().T).norm()
    assert errors["activation"] < 0.9 * errors["svd"]


def test_rank_rules() -> None:
    s = torch.tensor([4.0, 2.0, 1.0, 1.0])   # energies 16, 4, 1, 1 of 22
    assert pick_rank(s, "energy", 0.9, 4) == 2
    assert pick_rank(s, "energy", 1.0, 4) == 4
    assert pick_rank(s, "rank_ratio", 0.5, 4) == 2
    assert pick_rank(s, "rank", 9, 4) == 4


def test_stage_factorises_restores_and_exports_plain_layers(tmp_path: Path) -> None:
    recipe = _recipe(rank_ratio=0.5, layers=["features.3.0", "classifier"],
                     per_layer={"classifier": {"rank": 3}})
    recipe["stages"].append({"export": {"simplify": False}})
    report = compressor.run(recipe, run_dir=tmp_path / "run")
    row = report.rows[1]
    assert row["ranks"] == {"features.3.0": 64, "classifier": 3}   # half of min(128, 64*3*3)
    assert row["params"] < report.rows[0]["params"]
    assert row["quality"] >= row["quality_factorized"] - 1e-5 and row["quality_factorized"] > 0.1  # metric rounded to 5 places
    ckpt = Path(report.run_dir) / "checkpoints" / "01-lowrank.pt"
    model = compressor.load_model(ckpt)
    assert isinstance(model.classifier, nn.Sequential) and model.classifier[0].out_features == 3
    weights = torch.load(ckpt, weights_only=True)["weights"]
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in weights.items())
    graph = onnx.load(report.artifacts["onnx"]).graph
    assert [n.op_type for n in graph.node].count("Conv") == 4   # 3 convs + the 1x1 channel mixer
    assert report.rows[-1]["parity"]["cosine"] > 0.9999


def test_unprofitable_rank_is_skipped(tmp_path: Path) -> None:
    report = compressor.run(_recipe(rank=8, layers=["features.*.0"], finetune={"epochs": 0}),
                            run_dir=tmp_path / "run")
    row = report.rows[1]
    assert row["skipped"] == ["features.0.0"]        # 32x9 weights: rank 8 would store 328
    assert set(row["ranks"]) == {"features.1.0", "features.3.0"}
    with pytest.raises(StageError, match="every selected layer would grow"):
        compressor.run(_recipe(rank=8, layers=["features.0.0"]), run_dir=tmp_path / "bad")


@pytest.mark.parametrize("params,words", [
    ({}, "exactly one of rank, rank_ratio, energy"),
    ({"rank": 4, "energy": 0.9}, "exactly one of"),
    ({"rank_ratio": 1.5}, "less than or equal to 1"),
    ({"rank": 4, "per_layer": {"fc": {"ranks": 2}}}, "unknown field 'ranks'"),
])
def test_rank_rule_validation(params: dict, words: str) -> None:
    with pytest.raises(RecipeErrors, match=words):
        load_recipe(_recipe(**params))
