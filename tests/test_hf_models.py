"""Hugging Face folders by task, transformer layers by family, and hand-written attention (issue 13.1)."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import transformers as T

import compressor
from compressor.errors import ModelLoadError, StageError
from compressor.export.onnx import export_onnx
from compressor.export.parity import onnx_parity
from compressor.hf import ImageModel, SentenceEmbedder, TextModel, input_spec, load_hf_model, save_pretrained
from compressor.stages.distill.losses import AttentionRelations
from compressor.stages.prune import Prune
from compressor.transformer_layers import transformer_layers
from compressor.zoo.docstrings import docstrings_task
from tiny_bert import prune_all
from tiny_hf import save_tiny
from tiny_models import tiny_vit

#: family -> (wrapper, task, output shape for a batch of 2 with 6 tokens / 32 px images)
EXPECTED = {"bert": (TextModel, "sequence-classification", (2, 3)),
            "distilbert": (SentenceEmbedder, "feature-extraction", (2, 32)),
            "roberta": (TextModel, "sequence-classification", (2, 2)),
            "gpt2": (TextModel, "causal-lm", (2, 6, 128)),
            "llama": (TextModel, "causal-lm", (2, 6, 128)),
            "vit": (ImageModel, "image-classification", (2, 5)),
            "convnext": (ImageModel, "image-classification", (2, 5)),
            "resnet": (ImageModel, "image-classification", (2, 5))}


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hf")
    return {family: save_tiny(family, root / family) for family in EXPECTED}


def inputs_for(model: torch.nn.Module, batch: int = 2) -> tuple[torch.Tensor, ...]:
    spec = input_spec(model)
    torch.manual_seed(1)
    if spec.modality == "image":
        return (torch.randn(batch, *spec.image_shape),)
    ids = torch.randint(5, 100, (batch, 6))
    mask = torch.ones_like(ids)
    mask[1:, 4:] = 0
    return ids, mask


@pytest.mark.parametrize("family", list(EXPECTED))
def test_a_folder_loads_with_the_head_its_config_names(folders: dict[str, Path], family: str) -> None:
    wrapper, kind, shape = EXPECTED[family]
    model = load_hf_model(folders[family])
    assert type(model) is wrapper and input_spec(model).kind == kind
    x = inputs_for(model)
    out = model(*x)
    assert out.shape == shape
    if wrapper is not SentenceEmbedder:  # the head is the one the folder's weights hold
        config = T.AutoConfig.from_pretrained(folders[family])
        reference = getattr(T, config.architectures[0]).from_pretrained(folders[family]).eval()
        names = input_spec(model).input_names
        assert torch.allclose(reference(**dict(zip(names, x))).logits, out, atol=1e-5)


def test_the_task_can_be_chosen_and_unknown_heads_are_refused(folders: dict[str, Path], tmp_path: Path) -> None:
    assert isinstance(load_hf_model(folders["bert"], task="feature-extraction"), SentenceEmbedder)
    with pytest.raises(ModelLoadError, match="has no causal-lm head"):
        load_hf_model(folders["bert"], task="causal-lm")
    config = T.BertConfig(vocab_size=128, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                          intermediate_size=64, architectures=["BertForQuestionAnswering"])
    T.BertForQuestionAnswering(config).save_pretrained(tmp_path / "qa")
    with pytest.raises(ModelLoadError, match="BertForQuestionAnswering.*model.args.task: feature-extraction"):
        load_hf_model(tmp_path / "qa")
    with pytest.raises(ModelLoadError, match="no config.json"):
        load_hf_model(tmp_path)


@pytest.mark.parametrize("family", ["bert", "distilbert", "gpt2", "llama", "vit"])
def test_ffn_and_head_pruning_keep_the_model_consistent(folders: dict[str, Path], family: str,
                                                        tmp_path: Path) -> None:
    model = load_hf_model(folders[family])
    x = inputs_for(model)
    layers = transformer_layers(model)
    assert len(layers) == 2
    heads, kv_heads = layers[0].num_heads, layers[0].num_kv_heads
    cuts = prune_all(model, "ffn", 0.5) + prune_all(model, "heads", 0.5)
    for layer in transformer_layers(model):
        assert (layer.num_heads, layer.num_kv_heads) == (heads // 2, kv_heads // 2)
        assert layer.query_width == heads // 2 * layer.head_size
        assert layer.ffn_width == layers[0].ffn_up[0].out_features
    out = model(*x)
    assert out.shape == EXPECTED[family][2]
    rebuilt = Prune.restore(load_hf_model(folders[family]), {"method": "heads", "cuts": cuts})
    rebuilt.load_state_dict(model.state_dict())
    assert torch.equal(rebuilt(*x), out)
    spec = input_spec(model)
    axes = {n: {0: "batch"} for n in spec.input_names}
    path = export_onnx(model, x, tmp_path / "m.onnx", input_names=spec.input_names, output_names=["out"],
                       dynamic_axes=axes)
    assert onnx_parity(model, path, x).cosine > 0.9999
    if family in ("vit", "llama"):  # configs that state the head size: the pruned model round-trips
        save_pretrained(model, tmp_path / "pruned")
        assert torch.allclose(load_hf_model(tmp_path / "pruned")(*x), out, atol=1e-5)
    else:  # the others derive it from hidden_size / heads: refused, nothing written
        with pytest.raises(ModelLoadError, match="config cannot state the pruned shapes.*compressor.load_model"):
            save_pretrained(model, tmp_path / "pruned")
        assert not (tmp_path / "pruned").exists()


@pytest.mark.parametrize("family", ["bert", "gpt2"])
def test_an_ffn_pruned_model_round_trips_save_pretrained(folders: dict[str, Path], family: str,
                                                         tmp_path: Path) -> None:
    """GPT-2's Conv1D projections were loaded as Linear: they are saved as Conv1D again."""
    model = load_hf_model(folders[family])
    prune_all(model, "ffn", 0.5)
    save_pretrained(model, tmp_path / "pruned")
    assert (tmp_path / "pruned" / "tokenizer_config.json").is_file()  # the tokenizer travels with it
    x = inputs_for(model)
    assert torch.allclose(load_hf_model(tmp_path / "pruned")(*x), model(*x), atol=1e-5)


def test_minilm_relations_on_fused_and_grouped_query_attention(folders: dict[str, Path]) -> None:
    for family, relations in (("gpt2", ["qk", "vv"]), ("llama", ["vv", "qq", "kk"])):
        teacher = load_hf_model(folders[family])
        student = copy.deepcopy(teacher)
        prune_all(student, "heads", 0.5)
        loss = AttentionRelations(transformer_layers(student), transformer_layers(teacher), {1: 1}, relations, 2)
        ids, mask = inputs_for(teacher)
        with torch.no_grad():
            teacher(ids, mask)
        student(ids, mask)
        value = loss.loss(mask)
        value.backward()
        assert value > 0 and transformer_layers(student)[1].qkv[0].weight.grad.abs().sum() > 0
        loss.remove()
    llama = transformer_layers(load_hf_model(folders["llama"]))
    with pytest.raises(StageError, match="grouped-query attention.*use relations \\[vv, qq, kk\\]"):
        AttentionRelations(llama, llama, {0: 0}, ["qk"], 2)


def test_a_language_model_task_measures_next_token_agreement(folders: dict[str, Path]) -> None:
    model = load_hf_model(folders["gpt2"])
    task = docstrings_task(model, samples=20, max_length=24, batch_size=8)
    assert task.metric == "accuracy" and task.output_names == ["logits"]
    assert task.dynamic_axes["logits"] == {0: "batch", 1: "sequence"}
    ids, mask, target = task.val.tensors
    assert target.shape == ids.shape and bool(((target == -100) == (mask == 0)).all())
    assert task.evaluate(model) == 1.0
    pruned = copy.deepcopy(model)
    prune_all(pruned, "ffn", 0.9)
    assert task.evaluate(pruned) < 1.0


# ---------------------------------------------------------------- hand-written attention
def vit_recipe(stage: dict) -> dict:
    return {"model": {"factory": "tiny_models:tiny_vit", "checkpoint": "vit.pt"},
            "data": {"dataset": "imagenet-synthetic", "batch_size": 8,
                     "args": {"resolution": 32, "train_samples": 16, "val_samples": 8}},
            "report": {"latency": "off"}, "stages": [stage]}


def test_hand_written_fused_attention_is_refused_with_the_layers_to_ignore(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    torch.save(tiny_vit().state_dict(), tmp_path / "vit.pt")
    with pytest.raises(StageError, match=r"method 'heads' needs transformer layers.*blocks\.0\.attn\.qkv, "
                                         r"blocks\.1\.attn\.qkv look like hand-written fused"):
        compressor.run(vit_recipe({"prune": {"method": "heads"}}), run_dir=tmp_path / "heads")
    with pytest.raises(StageError, match=r"cannot shrink .*blocks\.0\.attn\.qkv.*ignore: \[") as refused:
        compressor.run(vit_recipe({"prune": {"sparsity": 0.5}}), run_dir=tmp_path / "channel")
    ignore = str(refused.value).split("ignore: [")[1].split("]")[0].split(", ")
    report = compressor.run(vit_recipe({"prune": {"sparsity": 0.5, "ignore": ignore}}), run_dir=tmp_path / "ok")
    assert report.rows[-1]["params"] < report.rows[0]["params"]  # the FFNs shrank
    model = compressor.load_model(tmp_path / "ok" / "checkpoints" / "01-prune.pt", factory=tiny_vit)
    assert [b.mlp[0].out_features for b in model.blocks] == [32, 32]
