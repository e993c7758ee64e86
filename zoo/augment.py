"""Augmented training sentences for label-free text tasks (recipe ``data: {augment: ...}``).

A compressed sentence embedder trained to match the original on one kind of English keeps its
fidelity there and loses it elsewhere: distilled on technical and legal prose, FFN-halved MiniLM
kept 0.95 on held-out prose but 0.85 on everyday English. The targets of a fidelity task are the
original model's own outputs, so any input is a valid training example: sentences with words
replaced by other whole words (of the tokenizer's vocabulary or of other sentences) and sentences
spliced from two make the trained model match the original on word combinations the corpus never
holds (TinyBERT's data augmentation, without its masked-LM candidates). Deterministic for a seed.
"""
from __future__ import annotations

import re
from typing import TYPE_CHECKING, Sequence

import numpy as np

from compressor.recipe.schema import AugmentSpec

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

#: Vocabulary entries that are whole words once a BPE word-start marker is removed (WordPiece
#: continuations start with ##, special tokens with [ or <, and neither matches).
_WORD = re.compile(r"[A-Za-z]{2,}")


def vocabulary_words(tok: PreTrainedTokenizerBase) -> list[str]:
    """The tokenizer's whole alphabetic words in vocabulary order: WordPiece and BPE vocabularies
    list frequent words first, so the order ranks them by frequency."""
    words = sorted(tok.get_vocab().items(), key=lambda item: item[1])
    found = dict.fromkeys(w.lstrip("Ġ▁") for w, _ in words if _WORD.fullmatch(w.lstrip("Ġ▁")))
    return list(found)


def augmented(sentences: Sequence[str], vocabulary: Sequence[str], spec: AugmentSpec, seed: int = 0) -> list[str]:
    """``spec.share * len(sentences)`` new sentences: each a training sentence, or the start of one
    joined to the end of another (``spec.splice``), with ``spec.words`` of its words replaced, by
    vocabulary words (rank r drawn with weight 1/sqrt(r + 1): common words often, rare ones too)
    or by words of other sentences."""
    rng = np.random.default_rng(seed)
    split = [s.split() for s in sentences]
    pool = [w for words in split for w in words]
    cumulative = np.cumsum(1 / np.sqrt(np.arange(1, len(vocabulary) + 1)))
    out = []
    for _ in range(round(spec.share * len(sentences))):
        words = list(split[rng.integers(len(split))])
        if rng.random() < spec.splice:
            other = split[rng.integers(len(split))]
            words = words[:max(1, len(words) // 2)] + other[len(other) // 2:]
        for i in np.flatnonzero(rng.random(len(words)) < spec.words):
            if len(vocabulary) and rng.random() < spec.vocabulary:
                words[i] = vocabulary[int(np.searchsorted(cumulative, rng.random() * cumulative[-1]))]
            else:
                words[i] = pool[rng.integers(len(pool))]
        out.append(" ".join(words))
    return out
