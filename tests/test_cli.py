"""CLI surface: help, schema, listings, validation of every shipped recipe."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from compressor.cli import main
from compressor.recipe.loader import load_recipe

RECIPES = sorted((Path(__file__).resolve().parents[1] / "recipes").glob("*.yaml"))


@pytest.mark.parametrize("path", RECIPES, ids=[p.name for p in RECIPES])
def test_shipped_recipes_validate(path: Path) -> None:
    load_recipe(path)


def test_help_teaches(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "examples:" in out and "compressor run recipes/quickstart.yaml" in out
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    assert "run directory layout" in capsys.readouterr().out


def test_schema_covers_stages(capsys: pytest.CaptureFixture) -> None:
    assert main(["schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    kinds = {next(iter(v["properties"])) for v in schema["properties"]["stages"]["items"]["oneOf"]}
    assert {"finetune", "export"} <= kinds
    assert "model" in schema["required"]


def test_listings(capsys: pytest.CaptureFixture) -> None:
    assert main(["zoo"]) == 0
    assert "digits_cnn" in capsys.readouterr().out
    assert main(["targets"]) == 0
    out = capsys.readouterr().out
    assert "cpu-x86" in out and "jetson-orin" in out


def test_validate_ok(capsys: pytest.CaptureFixture) -> None:
    assert main(["validate", str(RECIPES[0]), "--set", "seed=3"]) == 0
    assert ": ok" in capsys.readouterr().out


def test_run_without_recipe_is_an_error(capsys: pytest.CaptureFixture) -> None:
    assert main(["run"]) == 2
    assert "give a recipe file" in capsys.readouterr().err
