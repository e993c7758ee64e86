"""The trust model (README, Trust model): a checkpoint never makes compressor import what its caller
did not name; a recipe's factory is user code, imported like Python imports, and refused from the
process/OS/IO/code-loading families unless trusted."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from search_toy import builtin_recipe

import compressor
from compressor.checkpoint import save_checkpoint
from compressor.cli import main
from compressor.errors import UntrustedCodeError
from compressor.pipeline import build_task
from compressor.recipe.loader import load_recipe
from compressor.recipe.schema import ModelSpec
from compressor.search.study import Search
from compressor.search.trial import for_trial
from compressor.sources import load_model
from compressor.zoo import build_model
from compressor.zoo.digits import DigitsCNN

FACTORY_MODULE = """\
from compressor.zoo import build_model
from compressor.zoo.digits import DigitsCNN


def build(width=8):
    return DigitsCNN(width=width)
"""


def _checkpoint(path: Path, spec: ModelSpec, model: torch.nn.Module | None = None) -> Path:
    save_checkpoint(path, model if model is not None else DigitsCNN(width=8), [], spec)
    return path


def _hostile_spec(tmp_path: Path, **fields: object) -> ModelSpec:
    """A model section as a hostile file would carry it (bypassing validation)."""
    return ModelSpec.model_construct(**{"zoo": None, "checkpoint": None, "factory": None, "torchscript": None,
                                        "huggingface": None, "import_path": None, "args": {},
                                        "unsafe_pickle": False, **fields})


def test_checkpoint_naming_os_system_runs_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    spec = _hostile_spec(tmp_path, factory="os:system", checkpoint=tmp_path / "w.pt",
                         args={"command": f"touch {marker}"})
    ckpt = _checkpoint(tmp_path / "c.pt", spec)
    for kwargs in ({}, {"factory": "os:system"}):
        with pytest.raises(UntrustedCodeError):
            compressor.load_model(ckpt, **kwargs)
    assert not marker.exists()


def test_checkpoint_factory_needs_the_callers_name(tmp_path: Path) -> None:
    module = tmp_path / "ckpt_factory_mod.py"
    module.write_text(FACTORY_MODULE)
    spec = _hostile_spec(tmp_path, factory="ckpt_factory_mod:build", checkpoint=tmp_path / "w.pt",
                         import_path=[tmp_path], args={"width": 8})
    ref = DigitsCNN(width=8).eval()
    ckpt = _checkpoint(tmp_path / "c.pt", spec, ref)
    with pytest.raises(UntrustedCodeError, match="which this checkpoint names but you did not"):
        compressor.load_model(ckpt)  # its recorded import folder is data: nothing imported from it
    assert "ckpt_factory_mod" not in sys.modules
    x = torch.randn(2, 1, 8, 8)
    assert torch.equal(compressor.load_model(ckpt, factory=lambda width: DigitsCNN(width=width))(x), ref(x))
    assert torch.equal(compressor.load_model(ckpt, base=DigitsCNN(width=8))(x), ref(x))
    torch.save(ref.state_dict(), tmp_path / "w.pt")
    assert torch.equal(compressor.load_model(ckpt, trust_code=True)(x), ref(x))


def test_checkpoint_torchscript_or_unsafe_pickle_is_refused(tmp_path: Path) -> None:
    torchscript = _checkpoint(tmp_path / "ts.pt", _hostile_spec(tmp_path, torchscript=tmp_path / "m.ts"))
    with pytest.raises(UntrustedCodeError, match="TorchScript file"):
        compressor.load_model(torchscript)
    pickled = _checkpoint(tmp_path / "p.pt", _hostile_spec(tmp_path, zoo="digits_cnn", checkpoint=tmp_path / "w.pt",
                                                            unsafe_pickle=True, args={"width": 8}))
    with pytest.raises(UntrustedCodeError, match="unsafe_pickle"):
        compressor.load_model(pickled)


def test_zoo_checkpoint_rebuilds_by_itself(tmp_path: Path) -> None:
    ref = DigitsCNN(width=8).eval()
    ckpt = _checkpoint(tmp_path / "c.pt", ModelSpec(zoo="digits_cnn", args={"width": 8, "pretrained": False}), ref)
    x = torch.randn(2, 1, 8, 8)
    assert torch.equal(compressor.load_model(ckpt)(x), ref(x))


@pytest.mark.parametrize("factory,args", [("os:system", "{command: 'true'}"), ("subprocess:getoutput", "{cmd: 'true'}"),
                                          ("builtins:print", "{}"), ("shutil:rmtree", "{path: /nonexistent}")])
def test_recipe_factory_from_denied_family_is_refused_unless_trusted(tmp_path: Path, factory: str, args: str,
                                                                     capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "w.pt").write_bytes(b"")
    path = tmp_path / "r.yaml"
    path.write_text(f"model:\n  factory: '{factory}'\n  checkpoint: w.pt\n  args: {args}\n")
    assert main(["validate", str(path)]) == 2
    assert f"{path}:2: model.factory: refused factory {factory!r}" in capsys.readouterr().err
    recipe = load_recipe(path, trust_code=True)  # imported and checked, never called by validate
    assert recipe.factories == [factory]
    with pytest.raises(UntrustedCodeError):
        load_model(recipe.model)  # trust is the caller's, not the spec's


def test_factory_beside_the_recipe_imports_without_pythonpath(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "beside_recipe_models.py").write_text(FACTORY_MODULE)
    torch.save(DigitsCNN(width=8).state_dict(), project / "w.pt")
    (project / "r.yaml").write_text("model:\n  factory: beside_recipe_models:build\n  checkpoint: w.pt\n"
                                    "data: {dataset: digits}\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    path_before = list(sys.path)
    assert main(["validate", str(project / "r.yaml")]) == 0
    assert "this recipe imports beside_recipe_models:build (user code)" in capsys.readouterr().out
    recipe = load_recipe(project / "r.yaml")
    assert recipe.model.import_path == [project.resolve()]
    assert isinstance(load_model(recipe.model), DigitsCNN)
    assert sys.path == path_before


def test_validate_locates_an_unimportable_factory(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "w.pt").write_bytes(b"")
    path = tmp_path / "r.yaml"
    path.write_text("name: x\nmodel:\n  checkpoint: w.pt\n  factory: unimportable_models_q:build\n")
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}:4: model.factory: cannot import 'unimportable_models_q': no such module in {tmp_path.resolve()}" in err


LOADER_MODULE = """\
import torch
from torch.utils.data import DataLoader, TensorDataset


def loader(n=12):
    return DataLoader(TensorDataset(torch.rand(n, 1, 8, 8), torch.arange(n) % 10), batch_size=4)
"""


def test_a_data_loader_beside_the_recipe_is_user_code_like_a_model_factory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "beside_recipe_data.py").write_text(LOADER_MODULE)
    path = tmp_path / "r.yaml"
    path.write_text("model: {zoo: digits_cnn}\ndata:\n  factory: beside_recipe_data:loader\n  args: {n: 12}\n")
    monkeypatch.chdir(tmp_path.parent)
    assert main(["validate", str(path)]) == 0
    assert "this recipe imports beside_recipe_data:loader (user code)" in capsys.readouterr().out
    recipe = load_recipe(path)
    task = build_task(recipe, build_model("digits_cnn"))
    assert len(task.train) + len(task.val) == 12

    path.write_text("model: {zoo: digits_cnn}\ndata:\n  factory: subprocess:getoutput\n  args: {cmd: id}\n")
    assert main(["validate", str(path)]) == 2
    assert f"{path}:3: data.factory: refused factory 'subprocess:getoutput'" in capsys.readouterr().err


def test_a_search_keeps_the_callers_trust_in_every_trial_recipe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spawned: list[list[str]] = []
    monkeypatch.setattr("compressor.search.study.subprocess.Popen", lambda cmd: spawned.append(cmd))
    for trust in (False, True):
        recipe = load_recipe(builtin_recipe(trials=2), trust_code=trust)
        search = Search(recipe, tmp_path / f"s{trust}")
        assert search.recipe.trust_code == for_trial(search.recipe).trust_code == trust
        search._spawn()
        assert ("--trust-code" in spawned[-1]) == trust
