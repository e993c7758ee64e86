"""FFN-width and attention-head pruning of a (tiny, random) BERT-style encoder."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.utils.data import TensorDataset
from transformers import BertModel

from compressor.errors import StageError
from compressor.export.onnx import export_onnx
from compressor.export.parity import onnx_parity
from compressor.transformer_layers import transformer_layers
from compressor.stages.prune import Prune
from compressor.stages.prune.importance import input_energy
from compressor.stages.prune.transformer import prune_transformer
from compressor.task import Task
from compressor.hf import SentenceEmbedder
from tiny_bert import prune_all, tiny_embedder, token_inputs


def test_ffn_pruning_keeps_config_consistent_and_round_trips_save_pretrained(tmp_path: Path) -> None:
    model = tiny_embedder()
    prune_all(model, "ffn", 0.6, round_to=8)
    assert [l.ffn_width for l in transformer_layers(model)] == [24, 24]  # 64 * 0.4 -> 24
    assert model.encoder.config.intermediate_size == 24
    x = token_inputs()
    model.encoder.save_pretrained(tmp_path / "hf")
    reloaded = SentenceEmbedder(BertModel.from_pretrained(tmp_path / "hf", attn_implementation="eager")).eval()
    assert torch.allclose(reloaded(*x), model(*x), atol=1e-6)


def test_head_pruning_updates_attention_modules_exports_and_replays(tmp_path: Path) -> None:
    model, x = tiny_embedder(), token_inputs()
    cuts = prune_all(model, "heads", 0.5)
    for layer in transformer_layers(model):
        attention = layer.attention
        assert (attention.num_attention_heads, attention.attention_head_size, attention.all_head_size) == (2, 8, 16)
        assert attention.key.out_features == attention.value.out_features == 16
        assert layer.attention_out.in_features == 16
    out = model(*x)
    assert out.shape == (3, 32)
    path = export_onnx(model, x, tmp_path / "m.onnx", input_names=["input_ids", "attention_mask"],
                       output_names=["embedding"],
                       dynamic_axes={"input_ids": {0: "b"}, "attention_mask": {0: "b"}})
    assert onnx_parity(model, path, x).cosine > 0.9999
    rebuilt = Prune.restore(tiny_embedder(), {"method": "heads", "cuts": cuts})
    rebuilt.load_state_dict(model.state_dict())
    assert torch.equal(rebuilt.eval()(*x), out)
    assert rebuilt.encoder.encoder.layer[0].attention.self.num_attention_heads == 2


def test_removed_heads_are_the_least_important() -> None:
    model = tiny_embedder()
    attention = transformer_layers(model)[0].attention
    with torch.no_grad():  # heads 1 and 3 of layer 0 get tiny weights
        for linear in (attention.query, attention.key, attention.value):
            linear.weight[8:16] *= 1e-3
            linear.weight[24:32] *= 1e-3
    kept = attention.value.weight[torch.cat([torch.arange(0, 8), torch.arange(16, 24)])].clone()
    prune_all(model, "heads", 0.5)
    assert torch.equal(attention.value.weight, kept)


def test_bn_scale_has_nothing_to_score_in_a_transformer() -> None:
    model = tiny_embedder()
    layers = {l.ffn_name: l for l in transformer_layers(model)}
    with pytest.raises(StageError, match="no score"):
        prune_transformer(model, unit="ffn", layers=layers, ratios={n: 0.5 for n in layers},
                          criterion="bn_scale", round_to=None, steps=1,
                          before_step=lambda: None, after_step=lambda step: None)


def test_activation_importance_removes_the_neurons_the_data_never_turns_on() -> None:
    """Neurons 0-31 of layer 0 get the largest down-projection weights but an input that GELU
    always zeroes: l2 keeps them for their weights, activation drops them for carrying nothing."""
    model = tiny_embedder()
    layer = transformer_layers(model)[0]
    up, down = layer.ffn_up[0], layer.ffn_down
    with torch.no_grad():
        up.weight[:32] = 0
        up.bias[:32] = -20.0  # GELU(-20) = 0 for every token
        down.weight[:, :32] *= 10
    ids, mask = token_inputs(batch=16)
    task = Task(name="t", metric="fidelity", train=TensorDataset(ids, mask, torch.zeros(16, 32)),
                val=TensorDataset(ids, mask, torch.zeros(16, 32)), input_names=["ids", "mask"], batch_size=8)
    energy = input_energy(model, task, batches=2, seed=0)
    assert torch.all(energy[down][:32] == 0) and torch.all(energy[down][32:] > 0)
    kept = {}
    for criterion in ("l2", "activation"):
        pruned = tiny_embedder()
        pruned.load_state_dict(model.state_dict())
        layers = {transformer_layers(pruned)[0].ffn_name: transformer_layers(pruned)[0]}
        scores = input_energy(pruned, task, batches=2, seed=0)
        prune_transformer(pruned, unit="ffn", layers=layers, ratios={n: 0.5 for n in layers}, criterion=criterion,
                          round_to=None, steps=1, before_step=lambda: None, after_step=lambda step: None,
                          energy=scores)
        kept[criterion] = transformer_layers(pruned)[0].ffn_down.weight
    assert torch.equal(kept["l2"], down.weight[:, :32])
    assert torch.equal(kept["activation"], down.weight[:, 32:])
