"""Real English text without downloads: first sentences of Python standard-library docstrings.

Sentences come from the docstrings of public modules and of their top-level classes and functions,
read with ``ast`` from the interpreter's own stdlib sources (never imported, so no side effects).
There are no labels, so quality is measured against the uncompressed model (for an embedder: the
cosine between its sentence embeddings and the compressed model's; see :mod:`compressor.zoo.text`). The corpus is fixed for a given Python version; another
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
from torch import nn

from compressor.errors import CompressorError
from compressor.recipe.schema import AugmentSpec
from compressor.task import Task
from compressor.zoo.registry import register_dataset
from compressor.zoo.sentences import everyday_sentences
from compressor.zoo.text import TRAIN_FRACTION, split_text_task

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


def docstring_split(seed: int = 0, samples: int | None = None) -> tuple[list[str], list[str]]:
    """(training, held-out) sentences: 80/20 of a seeded shuffle, cut to its first ``samples``."""
    sentences = docstring_sentences()
    order = np.random.default_rng(seed).permutation(len(sentences))[:samples]
    cut = int(len(order) * TRAIN_FRACTION)
    return [sentences[i] for i in order[:cut]], [sentences[i] for i in order[cut:]]


@register_dataset("docstrings", description="~2k first sentences of Python stdlib docstrings "
                  "(80/20 split), tokenized with the model's tokenizer; targets: the original model's "
                  "outputs; also reports the everyday-English held-out set")
def docstrings_task(model: nn.Module | None = None, *, max_length: int = 64, samples: int | None = None,
                    seed: int = 0, batch_size: int = 64, tokenizer: str | None = None,
                    augment: AugmentSpec | None = None) -> Task:
    """The docstring sentences as a :func:`compressor.zoo.text.text_task` for ``model``.

    64 tokens hold all but one sentence (99% have at most 43 MiniLM tokens; the longer one is
    truncated identically for the reference and the compressed model) at half the cost of 128.
    ``samples`` keeps only the first sentences of the seeded shuffle (and of the held-out everyday
    set), for quick runs and tests; ``augment`` adds augmented training sentences.
    """
    if model is None:
        raise CompressorError("dataset 'docstrings' measures fidelity: it needs the uncompressed model")
    train, val = docstring_split(seed, samples)
    return split_text_task(model, train, val, name="docstrings", max_length=max_length, batch_size=batch_size,
                           tokenizer=tokenizer, source="dataset 'docstrings'",
                           heldout={"everyday": everyday_sentences()[:samples]}, augment=augment, seed=seed)
