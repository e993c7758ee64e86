"""The shipped everyday-English sentences: a held-out set of another kind for every text task.

Text tasks (:mod:`compressor.zoo.text`) carry held-out sets besides their own split
(``Task.heldout``), never used for training, so that every run reports how well a compressed model
keeps working on text unlike its training data. This set was written for the project: conversation,
short stories, news, errands, nature, opinions.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

EVERYDAY_FILE = Path(__file__).resolve().parent / "data" / "everyday_english.txt"


@lru_cache(maxsize=1)
def everyday_sentences() -> tuple[str, ...]:
    """The shipped everyday-English held-out set (374 sentences), in file order."""
    lines = EVERYDAY_FILE.read_text(encoding="utf-8").splitlines()
    return tuple(line.strip() for line in lines if line.strip() and not line.startswith("#"))
