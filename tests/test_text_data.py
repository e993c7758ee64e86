"""The text corpora, the held-out sets every text run reports, and the guard on fidelity scores."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

import compressor
from compressor.pipeline import Pipeline
from compressor.recipe.loader import load_recipe
from compressor.report import Report
from compressor.task import fidelity_baselines, near_baseline, randomized
from compressor.zoo.docstrings import docstring_split, docstrings_task
from compressor.zoo.english import english_corpus, english_task, plain_text, prose_sentences, sentence_case, wiki_text
from compressor.zoo.minilm import SentenceEmbedder
from compressor.zoo.sentences import everyday_sentences


class ConstantEmbedder(nn.Module):
    """A sentence embedder that ignores its input: what a collapsed compressed model does."""

    def __init__(self, value: torch.Tensor) -> None:
        super().__init__()
        self.value = value

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.value.expand(len(input_ids), -1)


def test_markup_is_reduced_to_prose_sentences() -> None:
    text = plain_text("Install it with `pip install x`. See [the guide](https://x.org) for **more**.\n\n"
                      "```python\nimport x\n```\n\n1. Redistributions of source code must retain the above "
                      "notice.\n\nUse :func:`numpy.sum` on e.g. arrays of any shape, or call f(x) = 2.")
    assert list(prose_sentences(text)) == [
        "Install it with pip install x.",
        "See the guide for more.",
        "Redistributions of source code must retain the above notice.",
    ]


def test_wikitext_is_reduced_to_its_prose() -> None:
    markup = ("{{Infobox|name={{lang|x}}}}'''Asphalt''' is a [[petroleum|liquid]] of [[road]]s.&lt;ref&gt;Smith, "
              "p. 2&lt;/ref&gt; It is [http://x.org used] very widely.\n== History ==\n* a list item\n"
              "[[Category:Materials]]The word comes from Greek.")
    assert list(prose_sentences(wiki_text(markup))) == [
        "Asphalt is a liquid of roads.", "It is used very widely.", "The word comes from Greek."]


def test_tokenized_lowercase_text_is_written_as_sentences() -> None:
    assert sentence_case("it 's so juvenile , i think . only teenage boys would n't mind .") == \
        "It's so juvenile, I think. Only teenage boys wouldn't mind."


def test_the_everyday_set_is_shipped_unique_and_not_technical() -> None:
    sentences = everyday_sentences()
    assert 300 <= len(sentences) <= 500 and len(set(sentences)) == len(sentences)
    assert all(s[0].isupper() and s[-1] in ".!?" for s in sentences)
    assert not any(word in s.lower() for s in sentences for word in ("python", "function", "software"))


@pytest.mark.slow
def test_english_corpus_mixes_registers_and_never_holds_a_held_out_sentence() -> None:
    corpus = english_corpus()
    assert set(corpus) == {"docstrings", "python reference", "package readmes", "licenses", "dataset descriptions",
                           "dialogues", "news", "encyclopedia", "reviews"}
    assert all(50 <= len(sentences) <= 5000 for sentences in corpus.values()), {k: len(v) for k, v in corpus.items()}
    everything = [s for sentences in corpus.values() for s in sentences]
    assert len(everything) == len(set(everything)) > 3000
    assert not set(everything) & (set(docstring_split()[1]) | set(everyday_sentences()))
    extracted = [s for register, sentences in corpus.items() if register != "docstrings" for s in sentences]
    assert all(s == " ".join(s.split()) and 5 <= len(s.split()) <= 40 for s in extracted)  # docstrings are whole


@pytest.mark.slow
def test_english_task_reports_both_held_out_sets(minilm: SentenceEmbedder) -> None:
    task = english_task(minilm, samples=30)
    assert (len(task.train), len(task.val)) == (27, 3)
    assert set(task.heldout) == {"docstrings", "everyday"}
    assert [len(d) for d in task.heldout.values()] == [30, 30]
    assert task.heldout["everyday"].tensors[0].shape[1] == 128
    assert task.evaluate(minilm, split="everyday") == pytest.approx(1.0, abs=1e-5)


def test_a_constant_output_is_flagged_on_the_text_task(minilm: SentenceEmbedder) -> None:
    task = docstrings_task(minilm, samples=40)
    baselines = fidelity_baselines(task, minilm)
    assert set(baselines) == {"constant output", "random weights"}
    assert all(-1 <= v < 0.9 for v in baselines.values()), baselines
    constant = ConstantEmbedder(task.train.tensors[-1].mean(0, keepdim=True))
    assert task.evaluate(constant) == pytest.approx(baselines["constant output"], abs=1e-5)
    assert near_baseline(task.evaluate(constant), baselines)
    assert not near_baseline(task.evaluate(minilm), baselines)
    assert task.evaluate(minilm, split="everyday") == pytest.approx(1.0, abs=1e-5)


def test_random_weights_change_every_parameter_and_leave_the_model_alone(minilm: SentenceEmbedder) -> None:
    before = {k: v.clone() for k, v in minilm.state_dict().items()}
    state = torch.random.get_rng_state()
    random = randomized(minilm)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert all(torch.equal(v, minilm.state_dict()[k]) for k, v in before.items())
    weights = {k: v for k, v in random.state_dict().items() if k.endswith("weight") and "LayerNorm" not in k}
    assert weights and all(not torch.equal(v, before[k]) for k, v in weights.items())


def _run(recipe: dict, run_dir: Path, base: tuple | None = None) -> compressor.Report:
    return Pipeline(load_recipe(recipe), run_dir, base=base).run()


GUARD_RECIPE = {"name": "guard", "model": {"zoo": "minilm"}, "report": {"latency": "off"},
                "data": {"dataset": "docstrings", "args": {"samples": 24}},
                "stages": [{"finetune": {"epochs": 0}}]}


def test_a_run_reports_held_out_columns_and_baselines_without_flagging_a_good_model(tmp_path: Path) -> None:
    report = _run(GUARD_RECIPE, tmp_path / "run")
    base, final = report.rows
    assert set(base["fidelity_baselines"]) == {"constant output", "random weights"}
    assert final["quality_heldout"]["everyday"] == pytest.approx(1.0, abs=1e-5)
    assert "quality (everyday)" in report.table()
    assert any(note.startswith("fidelity baselines on the held-out split: constant output")
               for note in report.notes)
    assert "near_baseline" not in final and not any("meaningless" in w for w in report.warnings)


def test_a_run_flags_a_model_whose_output_ignores_its_input(minilm: SentenceEmbedder, tmp_path: Path) -> None:
    constant = ConstantEmbedder(docstrings_task(minilm, samples=8).train.tensors[-1].mean(0, keepdim=True))
    report = _run(GUARD_RECIPE, tmp_path / "run", base=(constant, docstrings_task(constant, samples=24, tokenizer=minilm.source)))
    base, final = report.rows
    assert base["fidelity_baselines"]["constant output"] == pytest.approx(1.0)
    assert final["quality"] == pytest.approx(1.0) and final["near_baseline"]
    assert any("meaningless model" in w for w in report.warnings)
    assert "meaningless model" in (tmp_path / "run" / "report.md").read_text()


def test_the_table_has_a_column_per_held_out_set() -> None:
    rows = [{"stage": "input", "quality": 1.0, "quality_heldout": {"everyday": 1.0}},
            {"stage": "codebook", "quality": 0.5, "quality_heldout": {"everyday": 0.4}}]
    table = Report(run_dir="x", metric="fidelity", rows=rows).table(markdown=True)
    assert "| quality (everyday) |" in table and "| 0.4000 |" in table
