"""The zoo's ImageNet-shaped CNNs, their synthetic fidelity task, MiniLM and the docstrings corpus."""
from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from compressor.errors import CompressorError, ModelLoadError
from compressor.zoo import DATASETS, MODELS, build_model
from compressor.zoo.docstrings import docstring_sentences, docstrings_task
from compressor.zoo.minilm import SentenceEmbedder, load_sentence_embedder, minilm_tokenizer
from compressor.zoo.mobilenet import MobileNetV2
from compressor.zoo.mobilenet_v3 import MobileNetV3
from compressor.zoo.resnet import ResNet
from compressor.zoo.synthetic import imagenet_synthetic_task, synthetic_images


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


class Constant(nn.Module):
    """Outputs the same vector for every input: what a collapsed compressed model does."""

    def __init__(self, value: torch.Tensor) -> None:
        super().__init__()
        self.value = value

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.value.expand(len(x), -1)


def test_registry_links_models_to_datasets() -> None:
    for name in ("resnet18", "mobilenet_v2", "mobilenet_v3_small", "minilm"):
        assert MODELS[name].dataset in DATASETS


# ---------------------------------------------------------------- CNNs with ImageNet shapes
# Built for 64 px images: the init's calibration pass is 12x cheaper than at 224 px.
@pytest.fixture(scope="module")
def resnet() -> nn.Module:
    return build_model("resnet18", resolution=64)


@pytest.fixture(scope="module")
def mobilenet() -> nn.Module:
    return build_model("mobilenet_v2", resolution=64)


@pytest.fixture(scope="module")
def mobilenet_v3() -> nn.Module:
    return build_model("mobilenet_v3_small", resolution=64)


@pytest.mark.parametrize("fixture, params", [("resnet", 11_689_512), ("mobilenet", 3_504_872),
                                             ("mobilenet_v3", 2_542_856)])
def test_cnn_imagenet_shapes_and_torchvision_parameter_counts(request: pytest.FixtureRequest, fixture: str,
                                                              params: int) -> None:
    model = request.getfixturevalue(fixture)
    assert n_params(model) == params
    assert not model.training
    with torch.no_grad():
        assert model(torch.randn(2, 3, 224, 224)).shape == (2, 1000)


@pytest.mark.parametrize("fixture, name", [("resnet", "resnet18"), ("mobilenet", "mobilenet_v2"),
                                           ("mobilenet_v3", "mobilenet_v3_small")])
def test_checkpoints_load_into_the_bare_architecture(request: pytest.FixtureRequest, fixture: str,
                                                     name: str) -> None:
    bare = build_model(name, pretrained=False)  # what `model: {zoo: NAME, checkpoint: ...}` builds
    bare.load_state_dict(request.getfixturevalue(fixture).state_dict())


def test_mobilenet_v3_has_torchvision_names_and_standard_onnx_activations(mobilenet_v3: nn.Module) -> None:
    keys = mobilenet_v3.state_dict().keys()
    assert len(keys) == 244  # torchvision's mobilenet_v3_small state dict
    assert {"features.1.block.1.fc1.weight", "features.4.block.2.fc2.bias", "features.12.1.running_var",
            "classifier.3.weight"} <= keys
    assert {type(m) for m in mobilenet_v3.modules()} >= {nn.Hardswish, nn.Hardsigmoid, nn.AdaptiveAvgPool2d}


def test_width_multipliers_scale_channels() -> None:
    assert n_params(ResNet(width=0.5)) < n_params(ResNet()) / 3
    assert n_params(MobileNetV2(width_mult=0.5)) < n_params(MobileNetV2()) / 1.5
    assert n_params(MobileNetV3(width_mult=0.5)) < n_params(MobileNetV3()) / 2
    with torch.no_grad():
        assert ResNet(num_classes=10, width=0.5)(torch.randn(1, 3, 64, 64)).shape == (1, 10)
        assert MobileNetV2(num_classes=10, width_mult=0.5)(torch.randn(1, 3, 64, 64)).shape == (1, 10)
        assert MobileNetV3(num_classes=10, width_mult=0.5)(torch.randn(1, 3, 64, 64)).shape == (1, 10)


def test_builders_are_deterministic_and_leave_global_rng_alone() -> None:
    torch.manual_seed(123)
    expected = torch.rand(1)
    torch.manual_seed(123)
    a, b = (build_model("mobilenet_v2", width_mult=0.25, resolution=32) for _ in range(2))
    assert torch.rand(1) == expected
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(x, y), name
    c = build_model("mobilenet_v2", width_mult=0.25, resolution=32, seed=1)
    assert not torch.equal(a.features[0][0].weight, c.features[0][0].weight)


def test_synthetic_images_are_seeded_and_normalised() -> None:
    a = synthetic_images(40, 32, seed=0)
    assert a.shape == (40, 3, 32, 32)
    assert torch.equal(a, synthetic_images(40, 32, seed=0))
    assert not torch.equal(a, synthetic_images(40, 32, seed=1))
    assert abs(a.mean()) < 0.3 and 0.5 < a.std() < 1.5


@pytest.mark.parametrize("fixture", ["resnet", "mobilenet", "mobilenet_v3"])
def test_synthetic_fidelity_task_is_not_degenerate(request: pytest.FixtureRequest, fixture: str) -> None:
    model = request.getfixturevalue(fixture)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        task = imagenet_synthetic_task(model, resolution=64, train_samples=16, val_samples=16)
    assert task.metric == "fidelity" and task.synthetic and "fidelity" in task.note
    assert task.val.tensors[0].shape == (16, 3, 64, 64)
    assert task.evaluate(model) == pytest.approx(1.0, abs=1e-5)
    # A model that ignores its input must score low (white noise + plain random init gave 0.999).
    assert task.evaluate(Constant(task.train.tensors[1].mean(0, keepdim=True))) < 0.5


def test_synthetic_task_warns_when_the_model_was_built_for_another_resolution(mobilenet: nn.Module) -> None:
    with pytest.warns(UserWarning, match="resolution=128"):
        imagenet_synthetic_task(mobilenet, resolution=128, train_samples=8, val_samples=8)


def test_fidelity_tasks_need_the_model() -> None:
    with pytest.raises(CompressorError, match="uncompressed model"):
        imagenet_synthetic_task(None)
    with pytest.raises(CompressorError, match="uncompressed model"):
        docstrings_task(None)


# ---------------------------------------------------------------- MiniLM and the docstrings corpus
def test_minilm_loads_offline_as_a_plain_module(minilm: SentenceEmbedder) -> None:
    assert 22.5e6 < n_params(minilm) < 22.6e6  # the unused BERT pooler is dropped
    assert minilm.encoder.config.num_hidden_layers == 6
    assert minilm.encoder.config._attn_implementation == "eager"
    tokens = minilm_tokenizer()(["A sentence."], return_tensors="pt")
    with torch.no_grad():
        embedding = minilm(tokens["input_ids"], tokens["attention_mask"])
    assert embedding.shape == (1, 384)
    assert embedding.norm() == pytest.approx(1.0, abs=1e-5)


def test_sentence_embedder_architecture_for_checkpoints_and_pooling_check(minilm: SentenceEmbedder,
                                                                          tmp_path: Path) -> None:
    bare = build_model("minilm", pretrained=False)
    assert bare.state_dict().keys() == minilm.state_dict().keys()
    (tmp_path / "1_Pooling").mkdir()
    (tmp_path / "1_Pooling" / "config.json").write_text('{"pooling_mode_cls_token": true}')
    with pytest.raises(ModelLoadError, match="mean pooling"):
        load_sentence_embedder(tmp_path)


def test_minilm_matches_sentence_transformers(minilm: SentenceEmbedder) -> None:
    sentence_transformers = pytest.importorskip("sentence_transformers")
    from compressor.zoo.minilm import model_dir

    sentences = ["Return the number of items in a container.",
                 "The quick brown fox jumps over the lazy dog while the cat watches it."]
    reference = sentence_transformers.SentenceTransformer(str(model_dir()), device="cpu").encode(
        sentences, convert_to_tensor=True)
    tokens = minilm_tokenizer()(sentences, padding="max_length", max_length=64, return_tensors="pt")
    with torch.no_grad():
        ours = minilm(tokens["input_ids"], tokens["attention_mask"])
    assert F.cosine_similarity(ours, reference).min() > 0.9999


def test_docstring_corpus_is_real_deterministic_text() -> None:
    sentences = docstring_sentences()
    assert 1000 < len(sentences) < 3000
    assert len(set(sentences)) == len(sentences) and list(sentences) == sorted(sentences)
    assert all(s[0].isupper() and s.endswith(".") and ">>>" not in s for s in sentences)
    assert "Heap queue algorithm (a.k.a. priority queue)." in sentences  # heapq's, "a.k.a." not an end


def test_docstrings_task_shapes_and_self_fidelity(minilm: SentenceEmbedder) -> None:
    task = docstrings_task(minilm, samples=40, max_length=48)
    assert (len(task.train), len(task.val)) == (32, 8)
    ids, mask, target = task.val.tensors
    assert ids.shape == mask.shape == (8, 48) and ids.dtype == torch.long
    assert target.shape == (8, 384)
    assert task.input_names == ["input_ids", "attention_mask"] and task.output_names == ["embedding"]
    assert task.dynamic_axes["input_ids"] == {0: "batch", 1: "sequence"}
    # The targets are computed without padding; the task evaluates with it: the same embeddings.
    assert task.evaluate(minilm) == pytest.approx(1.0, abs=1e-5)


@pytest.mark.slow
def test_docstrings_task_full_corpus(minilm: SentenceEmbedder) -> None:
    task = docstrings_task(minilm)
    total = len(docstring_sentences())
    assert len(task.train) == int(total * 0.8) and len(task.train) + len(task.val) == total
    assert task.val.tensors[0].shape[1] == 64
    assert task.evaluate(minilm) == pytest.approx(1.0, abs=1e-5)
