"""Malformed recipes: each gets one clear message with file, key path and line, exit code 2."""
from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from compressor.cli import main
from compressor.errors import RecipeErrors
from compressor.recipe.loader import load_recipe

GOOD = """\
model: {zoo: digits_cnn}
stages:
  - finetune: {epochs: 1}
"""

# (id, recipe text, expected key path in the message, expected line, expected words)
CASES = [
    ("unknown-top-key", "model: {zoo: digits_cnn}\nstagez: []\n", "stagez", 2, "did you mean 'stages'"),
    ("unknown-stage", "model: {zoo: digits_cnn}\nstages:\n  - prun: {}\n", "stages[0].prun", 3, "unknown stage 'prun'"),
    ("unknown-stage-param", "model: {zoo: digits_cnn}\nstages:\n  - finetune:\n      epoch: 2\n",
     "stages[0].finetune.epoch", 4, "did you mean 'epochs'"),
    ("wrong-type", "model: {zoo: digits_cnn}\nstages:\n  - finetune: {epochs: many}\n",
     "stages[0].finetune.epochs", 3, "valid integer"),
    ("negative-epochs", "model: {zoo: digits_cnn}\nstages:\n  - finetune: {epochs: -1}\n",
     "stages[0].finetune.epochs", 3, "greater than or equal to 0"),
    ("zero-lr", "model: {zoo: digits_cnn}\nstages:\n  - finetune:\n      lr: 0\n",
     "stages[0].finetune.lr", 4, "greater than 0"),
    ("bad-optimizer", "model: {zoo: digits_cnn}\nstages:\n  - finetune: {optimizer: rmsprop}\n",
     "stages[0].finetune.optimizer", 3, "'adam'"),
    ("missing-model", "stages: []\n", "model", 1, "missing required key 'model'"),
    ("no-model-source", "model: {args: {}}\n", "model", 1, "exactly one of"),
    ("two-model-sources", "model:\n  zoo: digits_cnn\n  torchscript: m.pt\n", "model", 1, "exactly one of"),
    ("factory-without-checkpoint", "model:\n  factory: 'pkg.mod:build'\n", "model", 1, "needs 'checkpoint'"),
    ("bad-factory-format", "model:\n  factory: not a factory\n  checkpoint: x.pt\n", "model.factory", 2, "pattern"),
    ("unknown-zoo-model", "model:\n  zoo: resnet1000\n", "model.zoo", 2, "unknown zoo model"),
    ("missing-checkpoint-file", "model:\n  zoo: digits_cnn\n  checkpoint: nowhere.pt\n",
     "model.checkpoint", 3, "no such file"),
    ("unknown-target", "model: {zoo: digits_cnn}\ntarget: cpu-x68\n", "target", 2, "did you mean 'cpu-x86'"),
    ("batch-size-zero", "model: {zoo: digits_cnn}\ndata:\n  batch_size: 0\n", "data.batch_size", 3, "greater than 0"),
    ("unknown-data-key", "model: {zoo: digits_cnn}\ndata:\n  batchsize: 8\n", "data.batchsize", 3, "did you mean 'batch_size'"),
    ("augment-share-zero", "model: {zoo: digits_cnn}\ndata:\n  augment: {share: 0}\n", "data.augment.share", 3,
     "greater than 0"),
    ("augment-unknown-key", "model: {zoo: digits_cnn}\ndata:\n  augment:\n    word: 0.2\n", "data.augment.word", 4,
     "did you mean 'words'"),
    ("stages-not-list", "model: {zoo: digits_cnn}\nstages: {finetune: {}}\n", "stages", 2, "expected a list of stages"),
    ("stage-two-keys", "model: {zoo: digits_cnn}\nstages:\n  - {finetune: {}, export: {}}\n", "stages[0]", 3, "one mapping"),
    ("stage-params-scalar", "model: {zoo: digits_cnn}\nstages:\n  - finetune: 3\n", "stages[0].finetune", 3, "mapping of finetune parameters"),
    ("undefined-variable", "variables: {e: 1}\nmodel: {zoo: digits_cnn}\nstages:\n  - finetune: {epochs: '${epochs}'}\n",
     "stages[0].finetune.epochs", 4, "undefined variable ${epochs}"),
    ("bad-stage-name", "model: {zoo: digits_cnn}\nstages:\n  - finetune: {name: 'my stage'}\n",
     "stages[0].finetune.name", 3, "identifier"),
    ("report-latency-choice", "model: {zoo: digits_cnn}\nreport: {latency: always}\n", "report.latency", 2, "'every_stage'"),
    ("max-drop-negative", "model: {zoo: digits_cnn}\neval: {max_drop: -0.1}\n", "eval.max_drop", 2, "greater than or equal to 0"),
    ("export-opset-too-old", "model: {zoo: digits_cnn}\nstages:\n  - export: {opset: 11}\n", "stages[0].export.opset", 3, "13"),
    ("export-parity-unknown", "model: {zoo: digits_cnn}\nstages:\n  - export:\n      parity: {atoll: 0.1}\n",
     "stages[0].export.parity.atoll", 4, "did you mean 'atol'"),
    ("invalid-yaml", "model: {zoo: digits_cnn\nstages: []\n", None, 2, "invalid YAML"),
    ("top-level-list", "- model\n", None, 1, "mapping of recipe keys"),
]


@pytest.mark.parametrize("text,key,line,words", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_malformed_recipe_is_located(tmp_path: Path, capsys: pytest.CaptureFixture,
                                     text: str, key: str | None, line: int | None, words: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(RecipeErrors) as info:
        load_recipe(path)
    err = next((e for e in info.value.errors if e.key == key), info.value.errors[0])
    assert err.key == key
    assert err.line == line
    assert words in err.message
    assert Path(err.file) == path

    assert main(["validate", str(path)]) == 2
    out = capsys.readouterr()
    assert "Traceback" not in out.err
    location = f"{path}:{line}:" if line else f"{path}:"
    assert location in out.err and words in out.err


def test_many_errors_reported_together(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("model: {zoo: digits_cnn}\ntarget: nowhere\nstages:\n  - finetune: {epochs: x}\n  - nope: {}\n")
    with pytest.raises(RecipeErrors) as info:
        load_recipe(path)
    assert {e.key for e in info.value.errors} == {"target", "stages[0].finetune.epochs", "stages[1].nope"}


def test_missing_recipe_file(capsys: pytest.CaptureFixture) -> None:
    assert main(["validate", "does/not/exist.yaml"]) == 2
    assert "does/not/exist.yaml: no such file" in capsys.readouterr().err


def test_override_of_unknown_key_is_explained(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(GOOD)
    with pytest.raises(RecipeErrors, match="unknown key 'finetun'.*did you mean 'finetune'"):
        load_recipe(path, overrides=["finetun.epochs=3"])
    with pytest.raises(RecipeErrors, match=r"expected KEY.PATH=VALUE"):
        load_recipe(path, overrides=["finetune.epochs"])


def test_override_value_error_names_the_key(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(GOOD)
    with pytest.raises(RecipeErrors) as info:
        load_recipe(path, overrides=["finetune.epochs=-2"])
    assert info.value.errors[0].key == "stages[0].finetune.epochs"


def test_debug_shows_traceback(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(textwrap.dedent(CASES[0][1]))
    with pytest.raises(RecipeErrors):
        main(["--debug", "validate", str(path)])
