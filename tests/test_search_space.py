"""Search space: recipe syntax, located errors, expansion to per-layer variables, recipe writing."""
from __future__ import annotations

import optuna
import pytest
from search_toy import NoisyEnsemble  # noqa: F401  (registers the test-only 'ensemble' stage)

from compressor.errors import RecipeErrors
from compressor.recipe.loader import load_recipe
from compressor.search.predictor import LatencyTable
from compressor.search.space import Domain, apply, resolve, sample, warm_start_configs
from compressor.zoo.digits import DigitsCNN

RECIPE = """\
name: toy
model: {zoo: digits_cnn, args: {pretrained: false}}
stages:
  - ensemble: {noise: 0.5, ignore: [classifier]}
  - finetune: {epochs: 1}
search:
  trials: 4
  budget: {latency_ratio: 0.5}
  space:
%s
"""


def recipe_with(space: str):
    return load_recipe(RECIPE % space)


def errors_of(space: str) -> list[str]:
    with pytest.raises(RecipeErrors) as info:
        recipe_with(space)
    return [e.format() for e in info.value.errors]


@pytest.mark.parametrize("raw, is_int, grid", [
    ([1, 4], True, [1, 2, 3, 4]),
    ([0.0, 0.7, 0.1], False, [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7]),
    ({"low": 0.0, "high": 1.0}, False, [0.0, 0.25, 0.5, 0.75, 1.0]),
    ({"choices": [4, 8, 32]}, False, [4, 8, 32]),
])
def test_domain_forms(raw, is_int, grid):
    domain = Domain.model_validate(raw)
    assert domain.is_int is is_int
    assert domain.grid() == pytest.approx(grid)


@pytest.mark.parametrize("raw, message", [
    ([0.5, 0.1], "above high"),
    ([1, 2, 3, 4], "a range is"),
    ({"low": 0, "high": 1, "step": 0.1, "log": True}, "log range"),
    ({"choices": []}, "must not be empty"),
    ({"choices": [1], "low": 0}, "either choices"),
])
def test_domain_errors(raw, message):
    with pytest.raises(ValueError, match=message):
        Domain.model_validate(raw)


def test_recipe_errors_name_the_line_and_what_is_wrong():
    errors = errors_of("    prune.sparsity: {per_layer: [0.0, 0.7, 0.1]}\n"
                       "    finetune.lr: {per_layer: [0.1, 0.2]}\n"
                       "    finetune.optimizer: {value: {choices: [adam, lion]}}\n"
                       "    ensemble.nope: {value: [1, 2]}\n")
    assert any(":10: search.space.prune.sparsity: no stage named 'prune'" in e for e in errors)
    assert any(":11: " in e and "no per_layer overrides" in e for e in errors)
    assert any(":12: " in e and "'lion' is not valid" in e for e in errors)
    assert any(":13: " in e and "has no field 'nope'" in e and "repeat" in e for e in errors)


def test_per_layer_fields_are_checked_by_the_stage_itself():
    [error] = errors_of("    ensemble.copies: {per_layer: [1, 3]}\n")
    assert ":10: search.space.ensemble.copies.per_layer: " in error
    assert "only 'repeat' and 'noise' can be set per layer" in error


def test_schema_errors_are_located_and_suggest_keys():
    [error] = errors_of("    ensemble.repeat: {per_layr: [1, 3]}\n")
    assert ":10: search.space.ensemble.repeat.per_layr: unknown key 'per_layr' (did you mean 'per_layer'?)" in error
    [error] = errors_of("    ensemble.repeat: {per_layer: [1, 3], when: {ensemble.noise: [0.1]}}\n")
    assert "must be a field written earlier" in error
    [error] = errors_of("    ensemble.repeat: {per_layer: [1, 9]}\n")  # the stage allows 1..8
    assert "value 9 is not valid for ensemble.repeat" in error


def test_per_layer_and_groups_expand_to_exact_layer_names():
    recipe = recipe_with("    ensemble.repeat: {per_layer: [1, 3], layers: ['features.*']}\n"
                         "    ensemble.noise: {per_group: [0.0, 1.0], groups: {early: 'features.0.*', "
                         "late: ['features.1.*', 'features.3.*']}}\n"
                         "    finetune.lr: {value: {low: 1.0e-4, high: 1.0e-2, log: true}}\n")
    variables = resolve(recipe.search, recipe, DigitsCNN())
    assert [v.name for v in variables] == [
        "ensemble.repeat[features.0.0]", "ensemble.repeat[features.1.0]", "ensemble.repeat[features.3.0]",
        "ensemble.noise[early]", "ensemble.noise[late]", "finetune.lr"]
    values = {"ensemble.repeat[features.1.0]": 3, "ensemble.noise[late]": 0.25, "finetune.lr": 0.002}
    data = apply(recipe, variables, values)
    ensemble = data["stages"][0]["ensemble"]
    assert ensemble["per_layer"] == {"features.1.0": {"repeat": 3, "noise": 0.25},
                                     "features.3.0": {"noise": 0.25}}
    assert data["stages"][1]["finetune"]["lr"] == 0.002
    assert "search" not in data
    load_recipe(data)  # what a trial runs is a valid recipe


def test_stage_switch_and_when_make_fields_conditional():
    recipe = recipe_with("    ensemble.enabled: {value: {choices: [true, false]}}\n"
                         "    ensemble.repeat: {per_layer: {choices: [1, 2]}}\n"
                         "    ensemble.noise: {per_layer: [0.0, 1.0, 0.5], when: {ensemble.repeat: [2]}}\n")
    variables = resolve(recipe.search, recipe, DigitsCNN())
    off = sample(optuna.trial.FixedTrial({"ensemble.enabled": False}), variables)
    assert off == {"ensemble.enabled": False}
    assert [list(s) for s in apply(recipe, variables, off)["stages"]] == [["finetune"]]
    fixed = {"ensemble.enabled": True, "ensemble.repeat[features.0.0]": 2,
             "ensemble.repeat[features.1.0]": 1, "ensemble.repeat[features.3.0]": 1,
             "ensemble.noise[features.0.0]": 0.5}
    on = sample(optuna.trial.FixedTrial(fixed), variables)
    assert on == fixed  # noise sampled only where repeat == 2


def test_warm_start_spreads_uniform_configurations():
    recipe = recipe_with("    ensemble.repeat: {per_layer: [1, 4]}\n"
                         "    finetune.lr: {value: {choices: [0.001, 0.01]}}\n")
    variables = resolve(recipe.search, recipe, DigitsCNN())
    configs = warm_start_configs(recipe.search, variables)  # default: 3
    assert [sorted({v for k, v in c.items() if k.startswith("ensemble")}) for c in configs] == [[1], [2], [4]]
    assert [c["finetune.lr"] for c in configs] == [0.001, 0.001, 0.01]


def test_warm_start_list_must_use_space_keys():
    [error] = errors_of("    ensemble.repeat: {per_layer: [1, 4]}\n  warm_start: [{ensemble.repeats: 2}]\n")
    assert "search.warm_start[0].ensemble.repeats" in error


def test_latency_table_multiplies_factors_and_interpolates():
    table = LatencyTable(0.9, {"a": [(0.0, 1.0), (0.5, 0.6), (1.0, 0.2)], "b": [(4, 0.5), (32, 1.0)]})
    assert table.predict({"a": 0.5, "b": 4}) == pytest.approx(0.9 * 0.6 * 0.5)
    assert table.predict({"a": 0.75}) == pytest.approx(0.9 * 0.4)
    assert table.predict({"unknown": 3}) == pytest.approx(0.9)
    assert LatencyTable.from_dict(table.as_dict()).predict({"a": 1.0, "b": 4}) == pytest.approx(0.09)


def test_a_per_layer_enabled_field_is_not_the_stage_switch():
    """quantize has its own per-layer ``enabled``; ``bits`` exists only inside per_layer."""
    recipe = load_recipe(RECIPE.replace("  - ensemble: {noise: 0.5, ignore: [classifier]}\n", "  - quantize: {}\n") % (
        "    quantize.enabled: {per_layer: {choices: [true, false]}}\n"
        "    quantize.bits: {per_layer: {choices: [4, 8]}, when: {quantize.enabled: [true]}}\n"))
    variables = resolve(recipe.search, recipe, DigitsCNN())
    fixed = {f"quantize.enabled[{n}]": False for n in ("features.0.0", "features.3.0", "classifier")}
    values = sample(optuna.trial.FixedTrial({**fixed, "quantize.enabled[features.1.0]": True,
                                             "quantize.bits[features.1.0]": 4}), variables)
    stages = apply(recipe, variables, values)["stages"]
    assert [list(s) for s in stages] == [["quantize"], ["finetune"]]
    assert stages[0]["quantize"]["per_layer"]["features.0.0"] == {"enabled": False}
    assert stages[0]["quantize"]["per_layer"]["features.1.0"] == {"enabled": True, "bits": 4}


def test_sensitivity_seed_keeps_the_most_sensitive_layers_mildest():
    from compressor.pipeline import build_task
    from compressor.search.seeding import sensitivity_config
    from compressor.stages.quantize import layer_sensitivity

    recipe = load_recipe(RECIPE.replace("  - ensemble: {noise: 0.5, ignore: [classifier]}\n", "  - quantize: {}\n")
                         .replace("args: {pretrained: false}", "args: {pretrained: false, width: 8}")
                         % "    quantize.bits: {per_layer: {choices: [4, 8]}}\n")
    model = DigitsCNN(8).eval()
    recipe.data.eval_samples, recipe.data.calibration_samples = 64, 64
    task = build_task(recipe, model)
    variables = resolve(recipe.search, recipe, model)
    config = sensitivity_config(recipe, variables, (model, task), samples=64)
    drops = layer_sensitivity(model, task, params=recipe.stages[0].params, samples=64)
    order = sorted(drops, key=lambda n: -drops[n])
    assert config[f"quantize.bits[{order[0]}]"] == 8 and config[f"quantize.bits[{order[-1]}]"] == 4
