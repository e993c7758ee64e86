"""A broad English corpus without downloads: text that ships with Python and the project's dependencies.

The docstrings corpus alone teaches a compressed sentence embedder one register, and trained stages
learn it: distillation on docstrings kept 0.95 fidelity there but 0.87 on everyday English. This
corpus mixes registers found on any machine that runs the project: the Python language reference
(``pydoc_data``, technical prose), the READMEs (package descriptions) and license texts (legal prose)
of every installed distribution the project depends on, scikit-learn's descriptions of its bundled
data sets (scientific prose), the English dialogues of the ChatterBot corpus (``chatterbot-corpus``,
BSD-3: conversation, questions and answers on everyday topics), the English text gensim ships as
test data (LGPL-2.1: news stories of the Lee corpus, Wikipedia articles, movie reviews) and the
training part of the docstrings split. A register keeps at most ``_MAX_PER_REGISTER`` sentences
(a seeded sample), so the Wikipedia articles do not outweigh the rest. Sentences of the
held-out sets (the docstrings' held-out split and the shipped everyday-English set, see
:mod:`compressor.zoo.sentences`) are removed, so both stay unseen. The corpus is deterministic for
given versions of Python and of the dependencies; other versions give a slightly different one.
"""
from __future__ import annotations

import bz2
import html
import importlib.metadata as metadata
import importlib.resources
import re
from functools import lru_cache
from typing import Iterable, Iterator

import numpy as np
import yaml
from torch import nn

from compressor.errors import CompressorError
from compressor.recipe.schema import AugmentSpec
from compressor.task import Task
from compressor.zoo.docstrings import docstring_split
from compressor.zoo.registry import register_dataset
from compressor.zoo.sentences import everyday_sentences
from compressor.zoo.text import split_text_task

_VAL_FRACTION = 0.1
_MAX_PER_REGISTER = 5000
#: Sentence ends: . ! or ? after a lowercase letter, digit, bracket or quote, before a capital.
_END = re.compile(r"(?<=[a-z0-9)\]\"'][.!?])\s+(?=[A-Z\"'(])")
#: Periods of abbreviations, which do not end a sentence.
_ABBREVIATION = re.compile(r"\b(?:e\.g|i\.e|etc|vs|cf|al|Dr|Mr|Mrs|Ms|Inc|Ltd|Co|No|Fig|Sec|approx)\.$",
                           re.IGNORECASE)
#: Signs of code, markup, paths or addresses: such a "sentence" is not prose.
_NOT_PROSE = re.compile(r"[{}<>|=\\_#*`~^$@]|://|www\.|\.\.\.|--|\w\(|\w\.\w+\(|\[\d|\S+\.(?:py|txt|h|c)\b")
#: Markup reduced to its text: fenced code (dropped), images, links, inline code, rst roles, emphasis, HTML tags.
_MARKUP = ((re.compile(r"```.*?```", re.DOTALL), " "),
           (re.compile(r"!\[[^\]]*\]\([^)]*\)"), " "),
           (re.compile(r"\[([^\]]+)\]\([^)]*\)"), r"\1"),
           (re.compile(r":[\w:]+:`([^`<]+?)\s*(?:<[^>]*>)?`"), r"\1"),
           (re.compile(r"`{1,2}([^`]+)`{1,2}_?"), r"\1"),
           (re.compile(r"\*{1,2}([^*\n]+)\*{1,2}"), r"\1"),
           (re.compile(r"<[^>\n]+>"), " "))
#: Wikipedia markup reduced to its text (nested templates are removed before these, innermost first):
#: references, comments, tables, files and categories dropped, links to their label, emphasis
#: quotes removed, headings, lists and indented lines made paragraph breaks.
_TEMPLATE = re.compile(r"\{\{[^{}]*\}\}")
_WIKI = ((re.compile(r"<ref[^>]*/>|<ref[^>]*>.*?</ref>", re.DOTALL), " "),
         (re.compile(r"<!--.*?-->", re.DOTALL), " "),
         (re.compile(r"\{\|.*?\|\}", re.DOTALL), "\n\n"),
         (re.compile(r"\[\[(?:File|Image|Category|[a-z]{2,3}(?:-[a-z]+)?):[^\[\]]*(?:\[\[[^\]]*\]\][^\[\]]*)*\]\]"), " "),
         (re.compile(r"\[\[(?:[^|\]]*\|)?([^\]]*)\]\]"), r"\1"),
         (re.compile(r"\[https?://\S+ ([^\]]*)\]"), r"\1"),
         (re.compile(r"'{2,}"), ""),
         (re.compile(r"^[=*#:;].*$", re.MULTILINE), "\n\n"))
#: A list item's bullet or number at the start of a sentence.
_BULLET = re.compile(r"^(?:[-*+•]|\(?\d{1,2}[.)]|\(?[a-z][.)])\s+")


def plain_text(markup: str) -> str:
    """Markdown, reStructuredText or HTML reduced to its words (code blocks dropped)."""
    for pattern, replacement in _MARKUP:
        markup = pattern.sub(replacement, markup)
    return markup


def wiki_text(markup: str) -> str:
    """A Wikipedia article's wikitext (as in an XML dump, entities escaped) reduced to its prose."""
    text = html.unescape(markup)
    while (reduced := _TEMPLATE.sub(" ", text)) != text:
        text = reduced
    for pattern, replacement in _WIKI:
        text = pattern.sub(replacement, text)
    return text


def sentence_case(tokenized: str) -> str:
    """Lowercased, tokenized text (``it 's fine , i think .``) as it would be written, so that the
    prose filter reads it: punctuation and clitics joined, ``i`` and sentence starts capitalised."""
    text = re.sub(r" ([,.!?;:)])", r"\1", " ".join(tokenized.split()))
    text = re.sub(r" (n't|'s|'re|'ve|'ll|'d|'m)\b", r"\1", text)
    text = re.sub(r"\bi\b", "I", text)
    return re.sub(r"(^|[.!?] )([a-z])", lambda m: m.group(1) + m.group(2).upper(), text)


def prose_sentences(text: str) -> Iterator[str]:
    """The sentences of ``text`` that read as prose: 5 to 40 words, capitalised, ended by . ! or ?,
    mostly letters, without code or markup. Paragraphs (blank-line separated) never share one."""
    for paragraph in re.split(r"\n\s*\n", text):
        pending = ""
        for piece in _END.split(" ".join(paragraph.split())):
            pending = f"{pending} {piece}".strip()
            if _ABBREVIATION.search(pending):
                continue
            sentence = _BULLET.sub("", pending)
            pending = ""
            if _is_prose(sentence):
                yield sentence


def _is_prose(sentence: str) -> bool:
    if not 5 <= len(sentence.split()) <= 40 or not sentence[0].isupper() or sentence[-1] not in ".!?":
        return False
    letters = sum(c.isalpha() or c.isspace() for c in sentence)
    return letters >= 0.9 * len(sentence) and not _NOT_PROSE.search(sentence)


def _dependencies(root: str = "compressor") -> list[metadata.Distribution]:
    """Installed distributions ``root`` requires, directly or not (extras excluded), sorted by name."""
    found: dict[str, metadata.Distribution] = {}
    pending = [root]
    while pending:
        name = re.sub(r"[-_.]+", "-", pending.pop()).lower()
        if name in found:
            continue
        try:
            found[name] = dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            if name == root:
                raise CompressorError(f"dataset 'english' reads the texts of {root}'s dependencies, "
                                      f"but {root} is not installed (pip install -e .)") from None
            continue  # an optional or platform-specific requirement
        pending += [re.match(r"[A-Za-z0-9._-]+", r).group(0) for r in dist.requires or []
                    if "extra ==" not in r]
    return [found[name] for name in sorted(found) if name != root]


def _readmes(dists: Iterable[metadata.Distribution]) -> Iterator[str]:
    for dist in dists:
        yield plain_text(dist.metadata.get_payload() or dist.metadata.get("Description") or "")


def _licenses(dists: Iterable[metadata.Distribution]) -> Iterator[str]:
    for dist in dists:
        for file in dist.files or []:
            if re.search(r"LICEN[CS]E|COPYING|NOTICE", file.name, re.IGNORECASE) and \
                    file.suffix.lower() in ("", ".txt", ".md", ".rst"):
                yield plain_text(file.read_text() or "")


def _python_reference() -> Iterator[str]:
    from pydoc_data.topics import topics  # ~0.5 MB of text: imported only to build the corpus

    yield from topics.values()


def _dataset_descriptions() -> Iterator[str]:
    """scikit-learn's descriptions of its bundled data sets (iris, wine, diabetes, ...)."""
    for file in sorted(importlib.resources.files("sklearn.datasets.descr").iterdir(), key=lambda f: f.name):
        if file.name.endswith(".rst"):
            yield plain_text(file.read_text(encoding="utf-8"))


def _dialogues() -> Iterator[str]:
    """The utterances of chatterbot-corpus's English dialogues, one paragraph each; a chat line often
    lacks its final stop, so one is added (the prose filter wants a sentence's end)."""
    folder = importlib.resources.files("chatterbot_corpus") / "data" / "english"
    for file in sorted(folder.iterdir(), key=lambda f: f.name):
        if file.name.endswith(".yml"):
            for dialogue in yaml.safe_load(file.read_text(encoding="utf-8")).get("conversations") or []:
                for line in dialogue:
                    line = " ".join(str(line).split())
                    yield f"{line}." if line[-1:].isalnum() else line


def _gensim_text(name: str, encoding: str = "utf-8") -> str:
    """A text file of gensim's test data, read without importing gensim."""
    try:
        path = metadata.distribution("gensim").locate_file(f"gensim/test/test_data/{name}")
    except metadata.PackageNotFoundError:
        raise CompressorError("dataset 'english' reads text that gensim ships, but gensim is not installed "
                              "(pip install -e .)") from None
    if name.endswith(".bz2"):
        return bz2.decompress(path.read_bytes()).decode(encoding)
    return path.read_text(encoding=encoding)


def _news() -> Iterator[str]:
    """The Lee corpus: Australian news stories (2001), one per line."""
    for name in ("lee_background.cor", "lee.cor"):
        yield from _gensim_text(name, encoding="cp1252").splitlines()


def _encyclopedia() -> Iterator[str]:
    """Wikipedia articles (an early part of an English dump) and two paragraphs' worth of article text."""
    dump = _gensim_text("enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2")
    for article in re.findall(r"<text[^>]*>(.*?)</text>", dump, re.DOTALL):
        yield wiki_text(article)
    for name in ("para2para_text1.txt", "para2para_text2.txt"):
        yield _gensim_text(name)


def _reviews() -> Iterator[str]:
    """Movie reviews: Pang and Lee's polarity sentences and IMDB reviews, lowercased and tokenized."""
    for line in _gensim_text("pang_lee_polarity.cor", encoding="cp1252").splitlines():
        yield sentence_case(re.sub(r"^__label__\w+ ", "", line))
    for line in _gensim_text("alldata-id-10.txt").splitlines():
        yield sentence_case(re.sub(r"^_\*\d+ ", "", line))


@lru_cache(maxsize=1)
def english_corpus() -> dict[str, tuple[str, ...]]:
    """Unique prose sentences per register, sorted; none from the held-out sets, none in two registers."""
    dists = _dependencies()
    texts = {"python reference": _python_reference(), "package readmes": _readmes(dists),
             "licenses": _licenses(dists), "dataset descriptions": _dataset_descriptions(),
             "dialogues": _dialogues(), "news": _news(), "encyclopedia": _encyclopedia(), "reviews": _reviews()}
    seen = set(docstring_split()[1]) | set(everyday_sentences())
    corpus = {"docstrings": tuple(sorted(set(docstring_split()[0]) - seen))}
    seen |= set(corpus["docstrings"])
    for register, parts in texts.items():
        sentences = sorted({s for text in parts for s in prose_sentences(text)} - seen)
        if len(sentences) > _MAX_PER_REGISTER:
            keep = np.random.default_rng(0).choice(len(sentences), _MAX_PER_REGISTER, replace=False)
            sentences = [sentences[i] for i in sorted(keep)]
        corpus[register] = tuple(sentences)
        seen |= set(sentences)
    return corpus


@register_dataset("english", description="~12.8k English sentences of several registers that ship with "
                  "Python and the dependencies (language reference, READMEs, licenses, data set "
                  "descriptions, dialogues, news, Wikipedia, movie reviews, docstrings), 90/10 split per "
                  "register; also reports the held-out "
                  "docstrings and everyday-English sets; targets: the original model's sentence "
                  "embeddings (fidelity)")
def english_task(model: nn.Module | None = None, *, max_length: int = 128, samples: int | None = None,
                 seed: int = 0, batch_size: int = 64, tokenizer: str | None = None,
                 augment: AugmentSpec | None = None) -> Task:
    """Sentences of every register, 10% of each held out, with the original model's embeddings as
    targets. ``samples`` keeps the first sentences of a seeded shuffle of the corpus (and of each
    held-out set), for quick runs and tests; ``augment`` adds augmented training sentences."""
    rng = np.random.default_rng(seed)
    train: list[str] = []
    val: list[str] = []
    for sentences in english_corpus().values():
        order = rng.permutation(len(sentences))
        cut = int(round(len(order) * _VAL_FRACTION))
        val += [sentences[i] for i in order[:cut]]
        train += [sentences[i] for i in order[cut:]]
    train = [train[i] for i in rng.permutation(len(train))]
    val = [val[i] for i in rng.permutation(len(val))]
    if samples is not None:
        cut = int(samples * (1 - _VAL_FRACTION))
        train, val = train[:cut], val[:samples - cut]
    heldout = {"docstrings": docstring_split()[1][:samples], "everyday": everyday_sentences()[:samples]}
    if model is None:
        raise CompressorError("dataset 'english' measures fidelity: it needs the uncompressed model")
    return split_text_task(model, train, val, name="english", max_length=max_length, batch_size=batch_size,
                           tokenizer=tokenizer, source="dataset 'english'", heldout=heldout, augment=augment,
                           seed=seed)
