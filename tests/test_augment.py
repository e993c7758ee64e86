"""Augmented training sentences for label-free text tasks (``data: {augment: ...}``, issue 18)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from pydantic import ValidationError

from compressor.errors import CompressorError, DataError
from compressor.hf import hf_tokenizer, load_hf_model
from compressor.pipeline import build_task
from compressor.recipe.loader import load_recipe
from compressor.recipe.schema import AugmentSpec, DataSpec
from compressor.zoo import build_model
from compressor.zoo.augment import augmented, vocabulary_words
from compressor.zoo.docstrings import docstrings_task
from compressor.zoo.minilm import SentenceEmbedder
from compressor.zoo.text import text_task
from tiny_hf import save_tiny

SENTENCES = ["The first sentence is about parsing files.", "A second one describes the license terms.",
             "Return the number of items in the queue.", "This package provides fast array operations."]
VOCABULARY = ["the", "house", "river", "song"]


def test_augmented_sentences_are_seeded_counted_and_made_of_known_words() -> None:
    spec = AugmentSpec(share=2.0, words=0.5, vocabulary=0.5, splice=0.5)
    out = augmented(SENTENCES, VOCABULARY, spec, seed=3)
    assert out == augmented(SENTENCES, VOCABULARY, spec, seed=3) != augmented(SENTENCES, VOCABULARY, spec, seed=4)
    assert len(out) == 8 and not set(out) & set(SENTENCES)
    known = set(VOCABULARY) | {w for s in SENTENCES for w in s.split()}
    assert all(set(s.split()) <= known for s in out)
    assert any(set(s.split()) & {"house", "river", "song"} for s in out)


def test_without_replacements_or_splices_the_copies_are_training_sentences() -> None:
    out = augmented(SENTENCES, VOCABULARY, AugmentSpec(share=0.5, words=0, splice=0))
    assert len(out) == 2 and set(out) <= set(SENTENCES)
    spliced = augmented(SENTENCES, [], AugmentSpec(share=1, words=0, splice=1))
    starts = {" ".join(s.split()[:len(s.split()) // 2]) for s in SENTENCES}
    assert all(any(s.startswith(start) for start in starts) for s in spliced)


def test_vocabulary_words_are_whole_words_in_vocabulary_order(minilm: SentenceEmbedder) -> None:
    words = vocabulary_words(hf_tokenizer(minilm.source, "model.huggingface"))
    assert words[:3] == ["the", "of", "and"] and len(words) > 20000
    assert all(w.isalpha() and len(w) > 1 for w in words)


def test_the_task_appends_augmented_sentences_with_the_original_outputs_as_targets(minilm: SentenceEmbedder) -> None:
    plain = docstrings_task(minilm, samples=20)
    task = docstrings_task(minilm, samples=20, augment=AugmentSpec(share=0.5))
    assert (len(plain.train), len(task.train)) == (16, 24)
    assert torch.equal(task.train.tensors[0][:16], plain.train.tensors[0])  # calibration reads these first
    assert torch.equal(task.val.tensors[0], plain.val.tensors[0])
    assert set(task.heldout) == set(plain.heldout)
    ids, mask, target = task.train.tensors
    with torch.no_grad():
        again = minilm.eval()(ids[16:], mask[16:])
    assert torch.nn.functional.cosine_similarity(again, target[16:]).min() > 0.9999


def test_labelled_text_refuses_augmentation(tmp_path: Path) -> None:
    model = load_hf_model(save_tiny("bert", tmp_path / "bert"))
    with pytest.raises(DataError, match="data.augment adds sentences without labels"):
        text_task(model, ["one two three.", "four five six.", "seven eight."], name="t", labels=[0, 1, 2],
                  augment=AugmentSpec())


def test_augmentation_of_data_that_is_not_text_is_refused() -> None:
    with pytest.raises(ValidationError, match="'augment' adds text sentences; it does not apply to tensors"):
        DataSpec(tensors=Path("x.npz"), augment={})
    recipe = load_recipe({"model": {"zoo": "digits_cnn"}, "data": {"augment": {"share": 0.5}}})
    with pytest.raises(CompressorError, match="data.augment: dataset 'digits' is not text"):
        build_task(recipe, build_model("digits_cnn"))
