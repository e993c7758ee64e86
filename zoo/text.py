"""A Task on sentences for any text model: tokenized with the model's own tokenizer, quality from
labels or from the uncompressed model.

The tokenizer is the one saved in the model's Hugging Face folder (``data.tokenizer`` names
another folder, e.g. for a factory-built model). What the task measures follows the model's head
(:class:`compressor.hf.InputSpec`):

- an embedder: fidelity, the cosine between a compressed model's embeddings and the original's;
- a classifier: accuracy against the labels when the data has them, else agreement with the
  original model's predicted class;
- a language model or token classifier: per-token agreement with the original model's arg-max
  over the unpadded tokens (the next-token prediction of a causal LM); padded positions hold
  :data:`compressor.task.IGNORE` and count nowhere.

Sentences are padded to ``max_length`` so that they stack into a ``TensorDataset``; each batch is
cut to its longest sentence (:func:`trim_padding`), and the export keeps the sequence axis dynamic.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import TensorDataset, default_collate

from compressor.errors import DataError
from compressor.hf import InputSpec, hf_tokenizer, input_spec
from compressor.recipe.schema import AugmentSpec
from compressor.task import IGNORE, Task, reference_outputs
from compressor.zoo.augment import augmented, vocabulary_words

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

TRAIN_FRACTION = 0.8
#: Held-out sets of other kinds are padded (and truncated) to 128 tokens, as the latency benches feed the model.
HELDOUT_LENGTH = 128


def text_task(model: nn.Module, sentences: Sequence[str], *, name: str, labels: Sequence[int] | None = None,
              max_length: int = 64, samples: int | None = None, seed: int = 0, batch_size: int = 64,
              tokenizer: str | Path | None = None, source: str = "data",
              heldout: Mapping[str, Sequence[str]] | None = None, augment: AugmentSpec | None = None) -> Task:
    """``sentences`` (and ``labels``) split 80/20 after a seeded shuffle; ``samples`` keeps the first
    ones of the shuffle (quick runs). ``source`` names the data in errors."""
    if len(sentences) < 2:
        raise DataError(f"{source}: {len(sentences)} sentence(s); a task needs at least 2 (train and held-out)")
    order = np.random.default_rng(seed).permutation(len(sentences))[:samples]
    cut = max(1, int(len(order) * TRAIN_FRACTION))
    parts = [[sentences[i] for i in order[:cut]], [sentences[i] for i in order[cut:]]]
    label_parts = None if labels is None else [[int(labels[i]) for i in order[:cut]],
                                               [int(labels[i]) for i in order[cut:]]]
    return split_text_task(model, *parts, name=name, labels=label_parts, max_length=max_length,
                           batch_size=batch_size, tokenizer=tokenizer, source=source, heldout=heldout,
                           augment=augment, seed=seed)


def split_text_task(model: nn.Module, train: Sequence[str], val: Sequence[str], *, name: str,
                    labels: Sequence[Sequence[int]] | None = None, max_length: int = 64, batch_size: int = 64,
                    tokenizer: str | Path | None = None, source: str = "data",
                    heldout: Mapping[str, Sequence[str]] | None = None, augment: AugmentSpec | None = None,
                    seed: int = 0) -> Task:
    """A task on sentences already split into ``train`` and ``val`` (``labels``: one list per split).
    ``heldout`` names further sets of other kinds (``Task.heldout``), never trained on; they take the
    model's own outputs as targets, padded to :data:`HELDOUT_LENGTH` tokens. ``augment`` appends
    augmented sentences (:mod:`compressor.zoo.augment`) to the training split, after the given ones
    (calibration, which reads the first ones, is unchanged)."""
    spec = input_spec(model) or InputSpec("feature-extraction" if labels is None else "sequence-classification",
                                          "text")
    if spec.modality != "text":
        raise DataError(f"{source}: sentences, but the model reads images ({spec.kind})")
    folder = tokenizer or getattr(model, "source", None)
    if folder is None:
        raise DataError(f"{source}: text data needs a tokenizer; this model is not a Hugging Face folder, "
                        "so give one with data.tokenizer: DIR (a folder saved by tokenizer.save_pretrained)")
    if labels is not None and spec.kind != "sequence-classification":
        raise DataError(f"{source}: the data has labels, but the model is a {spec.kind} model, not a "
                        "sequence classifier; drop the labels to measure fidelity to the original model")
    if labels is not None and augment is not None:
        raise DataError(f"{source}: data.augment adds sentences without labels, but the data has labels; "
                        "drop data.augment (or the labels, to train towards the original model's outputs)")
    tok = hf_tokenizer(folder, "data.tokenizer" if tokenizer else "model.huggingface")
    if augment is not None:
        train = [*train, *augmented(train, vocabulary_words(tok), augment, seed)]

    def encode(sentences: Sequence[str], length: int, split_labels: Sequence[int] | None) -> TensorDataset:
        tokens = tok(list(sentences), padding="max_length", truncation=True, max_length=length,
                     return_tensors="pt")
        ids, mask = tokens["input_ids"], tokens["attention_mask"]
        targets = (torch.as_tensor(split_labels) if split_labels is not None
                   else _references(model, ids, mask, batch_size, spec))
        return TensorDataset(ids, mask, targets)

    _check_runs(model, tok, folder, train[:2], source)
    splits = [encode(part, max_length, None if labels is None else labels[i]) for i, part in enumerate((train, val))]
    others = {key: encode(part, HELDOUT_LENGTH, None) for key, part in (heldout or {}).items() if part}
    axes = {0: "batch", 1: "sequence"}
    out = spec.output_name
    if spec.per_token:
        meaning = "per-token logits; quality: agreement with the original model's arg-max on unpadded tokens"
    elif spec.classifies:
        meaning = ("class logits; quality: accuracy against the labels" if labels is not None
                   else "class logits; quality: agreement with the original model's predicted class")
    else:
        meaning = "embedding; quality: cosine to the original model's (fidelity)"
    return Task(name=name, metric=spec.metric,
                train=splits[0], val=splits[1], heldout=others, input_names=spec.input_names, output_names=[out],
                dynamic_axes={"input_ids": axes, "attention_mask": axes, out: axes if spec.per_token else {0: "batch"}},
                preprocessing={"input_ids": f"the tokenizer saved in {folder} ({type(tok).__name__}), padded "
                                            f"with {tok.pad_token_id} on the right (this task pads to {max_length}), int64",
                               "attention_mask": "1 for tokens, 0 for padding, int64",
                               out: meaning},
                batch_size=batch_size, collate=trim_padding)


def _check_runs(model: nn.Module, tok: PreTrainedTokenizerBase, folder: str | Path, sentences: Sequence[str],
                source: str) -> None:
    """Run the model on two sentences first: token ids beyond its vocabulary mean a foreign tokenizer."""
    tokens = tok(list(sentences), padding=True, return_tensors="pt")
    try:
        with torch.no_grad():
            model.eval()(tokens["input_ids"], tokens["attention_mask"])
    except (IndexError, RuntimeError) as exc:
        raise DataError(f"{source}: the model does not run on the token ids of the tokenizer in {folder} "
                        f"({str(exc).strip().splitlines()[0]}); is it the model's own tokenizer?") from None


def trim_padding(rows: list[tuple[Tensor, ...]]) -> list[Tensor]:
    """Stack a batch and cut ids, mask (and per-token targets) to its longest sentence: padding never
    changes an output of the unpadded tokens, and the median docstring has 14 of 64 tokens, so
    training and evaluation run ~2.5x faster."""
    ids, mask, target = default_collate(rows)
    n = int(mask.sum(1).max())
    if target.dim() == 2 and not target.is_floating_point():  # per-token labels, not embeddings
        target = target[:, :n]
    return [ids[:, :n], mask[:, :n], target]


def _references(model: nn.Module, ids: Tensor, mask: Tensor, batch_size: int, spec: InputSpec) -> Tensor:
    """The original model's targets (:meth:`InputSpec.targets`), computed in batches of similar
    length cut to their longest sentence (~2.5x faster than at full padding); per-token targets
    are padded back to the full length with :data:`IGNORE`."""
    lengths = mask.sum(1)
    order = lengths.argsort(stable=True)
    parts = []
    for chunk in order.split(batch_size):
        n = int(lengths[chunk].max())
        out = spec.targets(reference_outputs(model, (ids[chunk, :n], mask[chunk, :n]), batch_size), mask[chunk, :n])
        if spec.per_token:
            out = torch.cat([out, torch.full((len(chunk), ids.shape[1] - n), IGNORE, dtype=out.dtype)], dim=1)
        parts.append(out)
    return torch.cat(parts)[order.argsort()]
