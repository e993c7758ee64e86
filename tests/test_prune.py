"""The prune stage: structured channels on CNNs, unstructured and 2:4 sparsity, save and reload."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch_pruning as tp
from torch import nn

import compressor
from compressor.checkpoint import restore
from compressor.errors import RecipeErrors
from compressor.export.onnx import export_onnx
from compressor.export.sparsity import semi_structured_report
from compressor.metrics import count_macs, count_params, storage_bytes
from compressor.recipe.loader import load_recipe
from compressor.stages.prune import sparse
from compressor.stages.prune.structured import input_spec, prune_channels, replay, widths
from compressor.zoo.mobilenet import mobilenet_v2
from compressor.zoo.mobilenet_v3 import mobilenet_v3_small
from compressor.zoo.resnet import resnet18


def _prune(model: nn.Module, x: torch.Tensor, ratio: float = 0.5, *, ignore: tuple[str, ...] = (),
           ratios: dict[str, float] | None = None, round_to: int | None = None) -> list:
    selected = {n: m for n, m in model.named_modules()
                if isinstance(m, (nn.Conv2d, nn.Linear)) and n not in ignore}
    return prune_channels(model, (x,), importance=tp.importance.GroupMagnitudeImportance(p=2),
                          selected=selected, ratios=ratios or {}, default_ratio=ratio,
                          global_ranking=False, max_ratio=0.9, round_to=round_to, steps=1,
                          before_step=lambda: None, after_step=lambda step: None)


BUILDERS = {"resnet18": lambda: resnet18(num_classes=10, width=0.5),
            "mobilenet_v2": lambda: mobilenet_v2(num_classes=10, width_mult=0.5),
            "mobilenet_v3_small": lambda: mobilenet_v3_small(num_classes=10, width_mult=0.5, resolution=32)}


@pytest.mark.parametrize("name", BUILDERS)
def test_channel_pruning_shrinks_cnn_and_replays_from_history(name: str) -> None:
    model, x = BUILDERS[name](), torch.randn(2, 3, 32, 32)
    params, macs = count_params(model), count_macs(model, (x[:1],))
    history = _prune(model, x[:1], round_to=8)
    assert model(x).shape == (2, 10)  # residual adds and depthwise convs stayed consistent
    assert count_params(model) < 0.45 * params and count_macs(model, (x[:1],)) < 0.4 * macs
    pruned = {n: w for n, w in widths(model).items() if n not in ("fc", "classifier.1", "classifier.3")}
    assert all(w % 8 == 0 for w in pruned.values()), pruned
    rebuilt = replay(BUILDERS[name](), history, input_spec((x[:1],)))
    rebuilt.load_state_dict(model.state_dict())
    assert torch.equal(rebuilt.eval()(x), model.eval()(x))


def test_ignored_layer_keeps_its_whole_residual_group() -> None:
    model, x = resnet18(num_classes=10, width=0.5), torch.randn(1, 3, 32, 32)
    before = widths(model)
    _prune(model, x, ignore=("layer1.0.conv2",), ratios={"layer2.0.conv1": 0.25})
    after = widths(model)
    residual = ["conv1", "layer1.0.conv2", "layer1.1.conv2"]  # all add into the same stream
    assert all(after[n] == before[n] for n in residual)
    assert after["layer1.0.conv1"] == before["layer1.0.conv1"] // 2
    assert after["layer2.0.conv1"] == before["layer2.0.conv1"] * 3 // 4  # per-layer ratio
    assert after["fc"] == 10  # the output layer is never pruned


def _recipe(stages: list[dict], **extra) -> dict:
    return {"model": {"zoo": "digits_cnn"}, "data": {"batch_size": 128},
            "report": {"latency": "off"}, "stages": stages, **extra}


def _ckpt(report, index: int = -1) -> Path:
    return sorted((Path(report.run_dir) / "checkpoints").glob("*.pt"))[index]


def _same_outputs(a: nn.Module, b: nn.Module) -> bool:
    x = torch.rand(16, 1, 8, 8)
    return torch.equal(a.eval()(x), b.eval()(x))


def test_iterative_taylor_pruning_with_finetune_restores_identically(tmp_path: Path) -> None:
    report = compressor.run(_recipe([{"prune": {
        "importance": "taylor", "sparsity": 0.5, "steps": 2, "round_to": 8, "ignore": ["classifier"],
        "finetune": {"epochs": 1, "max_steps_per_epoch": 3}}}]), run_dir=tmp_path / "run")
    row = report.rows[-1]
    assert row["channels"] == {"features.0.0": [32, 16], "features.1.0": [64, 32], "features.3.0": [128, 64]}
    assert list(row["quality_per_step"]) == ["1", "2"]
    assert row["macs"] < 0.3 * report.rows[0]["macs"]
    ckpt = _ckpt(report)
    model = compressor.load_model(ckpt)
    again = restore(ckpt)
    assert _same_outputs(model, again)
    assert model.features[0][0].out_channels == 16


@pytest.mark.parametrize("importance", ["l1", "bn_scale", "random"])
def test_importance_criteria_prune_to_the_same_width(tmp_path: Path, importance: str) -> None:
    report = compressor.run(_recipe([{"prune": {"importance": importance, "sparsity": 0.25}}]),
                            run_dir=tmp_path / "run")
    assert report.rows[-1]["channels"]["features.1.0"] == [64, 48]


def test_unstructured_masks_persist_through_finetune_and_shrink_storage(tmp_path: Path) -> None:
    report = compressor.run(_recipe([
        {"prune": {"method": "unstructured", "sparsity": 0.7, "global_ranking": True,
                   "per_layer": {"classifier": {"sparsity": 0.2}}}},
        {"finetune": {"epochs": 1, "max_steps_per_epoch": 3, "lr": 1e-2}},
    ]), run_dir=tmp_path / "run")
    prune_row = report.rows[1]
    assert prune_row["layer_sparsity"]["classifier"] == pytest.approx(0.2, abs=0.01)
    assert prune_row["weight_sparsity"] == pytest.approx(0.7, abs=0.02)  # the global layers
    assert prune_row["size_bytes"] < 0.5 * report.rows[0]["size_bytes"]
    model = compressor.load_model(_ckpt(report))
    for name, layer in sparse.sparse_layers(model).items():
        assert sparse.layer_sparsity(layer) == pytest.approx(prune_row["layer_sparsity"][name], abs=1e-4), name
    assert isinstance(model.classifier, nn.Linear)
    assert report.rows[-1]["macs"] == report.rows[0]["macs"]  # dense kernels, same MACs


def test_2_4_holds_after_finetune_and_distill_and_in_onnx(tmp_path: Path) -> None:
    report = compressor.run(_recipe([
        {"prune": {"method": "2:4", "finetune": {"epochs": 1, "max_steps_per_epoch": 3, "lr": 1e-2}}},
        {"distill": {"finetune": {"epochs": 1, "max_steps_per_epoch": 3, "lr": 1e-2}}},
    ]), run_dir=tmp_path / "run")
    row = report.rows[1]
    assert row["skipped"] == ["features.0.0"]  # one input channel: no groups of 4
    assert row["onnx_2_4_weights"] == "3/4"
    assert set(row["encoding"].values()) == {"2:4"}
    model = compressor.load_model(_ckpt(report))
    layers = sparse.sparse_layers(model)
    assert len(layers) == 3 and all(sparse.is_2_4(m.weight) for m in layers.values())
    assert all(sparse.layer_sparsity(m) == 0.5 for m in layers.values())
    path = export_onnx(model, (torch.rand(2, 1, 8, 8),), tmp_path / "m.onnx", input_names=["image"],
                       output_names=["logits"])
    checked = semi_structured_report(path)
    assert sum(w.holds for w in checked) == 3
    assert [w.violations for w in checked if not w.holds] == [-1]


def test_onnx_checker_finds_dense_groups(tmp_path: Path) -> None:
    model = nn.Sequential(nn.Linear(8, 4), nn.ReLU(), nn.Linear(4, 4))
    sparse.make_sparse(model[0], sparse.semi_structured_mask(model[0].weight.detach()), "2:4")
    path = export_onnx(model, (torch.rand(2, 8),), tmp_path / "m.onnx", input_names=["x"], output_names=["y"])
    checked = {w.shape: w for w in semi_structured_report(path)}
    assert checked[(4, 8)].holds and checked[(4, 8)].groups == 8
    assert checked[(4, 4)].violations == 4  # dense: every group of 4 breaks the pattern


def test_2_4_storage_counts_values_and_two_bit_indices() -> None:
    layer = nn.Linear(16, 8, bias=False)
    sparse.make_sparse(layer, sparse.semi_structured_mask(layer.weight.detach()), "2:4")
    assert layer.storage_bits() == 16 * 8 // 2 * (32 + 2)
    assert storage_bytes(nn.Sequential(layer)) == 16 * 8 // 2 * 34 // 8


def test_bad_prune_params_are_recipe_errors() -> None:
    with pytest.raises(RecipeErrors, match="2:4.*always removes half"):
        load_recipe(_recipe([{"prune": {"method": "2:4", "sparsity": 0.7}}]))
    with pytest.raises(RecipeErrors, match="importance must be l1 or l2"):
        load_recipe(_recipe([{"prune": {"method": "unstructured", "importance": "taylor"}}]))
    with pytest.raises(RecipeErrors, match="'activation' ranks FFN neurons and heads .*not 'channel'"):
        load_recipe(_recipe([{"prune": {"importance": "activation"}}]))
    with pytest.raises(RecipeErrors, match="only 'sparsity' can be set per layer"):
        load_recipe(_recipe([{"prune": {"per_layer": {"fc": {"bits": 4}}}}]))
