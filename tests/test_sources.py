"""Model sources: zoo, checkpoint + factory, TorchScript; clear errors for bad files."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from compressor.errors import ModelLoadError, RecipeErrors
from compressor.recipe.loader import load_recipe
from compressor.sources import load_model
from compressor.zoo.digits import DigitsCNN


def _spec(tmp_path: Path, model: dict):
    return load_recipe({"model": model}).model


def test_checkpoint_with_factory(tmp_path: Path) -> None:
    ref = DigitsCNN(width=8)
    torch.save({"state_dict": ref.state_dict()}, tmp_path / "w.pt")
    spec = _spec(tmp_path, {"factory": "compressor.zoo.digits:DigitsCNN", "args": {"width": 8},
                            "checkpoint": str(tmp_path / "w.pt")})
    model = load_model(spec)
    x = torch.randn(2, 1, 8, 8)
    assert torch.equal(model(x), ref.eval()(x))


def test_zoo_architecture_with_user_weights(tmp_path: Path) -> None:
    ref = DigitsCNN()
    torch.save(ref.state_dict(), tmp_path / "w.pt")
    model = load_model(_spec(tmp_path, {"zoo": "digits_cnn", "checkpoint": str(tmp_path / "w.pt")}))
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), ref.state_dict().values()))


def test_torchscript(tmp_path: Path) -> None:
    ref = DigitsCNN(width=8).eval()
    torch.jit.save(torch.jit.script(ref), tmp_path / "m.ts")
    model = load_model(_spec(tmp_path, {"torchscript": str(tmp_path / "m.ts")}))
    x = torch.randn(2, 1, 8, 8)
    assert torch.allclose(model(x), ref(x))


def test_state_dict_mismatch_names_first_keys(tmp_path: Path) -> None:
    state = DigitsCNN(width=8).state_dict()
    state["extra.weight"] = torch.zeros(1)
    del state["classifier.bias"]
    torch.save(state, tmp_path / "w.pt")
    spec = _spec(tmp_path, {"factory": "compressor.zoo.digits:DigitsCNN", "checkpoint": str(tmp_path / "w.pt")})
    with pytest.raises(ModelLoadError) as info:
        load_model(spec)
    msg = str(info.value)
    assert "missing key(s), first 'classifier.bias'" in msg
    assert "unexpected key(s), first 'extra.weight'" in msg
    assert "shape mismatch" in msg  # width 8 vs default 32


def test_corrupt_checkpoint(tmp_path: Path) -> None:
    (tmp_path / "w.pt").write_bytes(b"not a checkpoint at all")
    spec = _spec(tmp_path, {"zoo": "digits_cnn", "checkpoint": str(tmp_path / "w.pt")})
    with pytest.raises(ModelLoadError, match="corrupt or not a PyTorch checkpoint"):
        load_model(spec)


class _Payload:
    """A pickled object other than tensors: refused by weights_only=True."""


def test_pickled_objects_need_explicit_opt_out(tmp_path: Path) -> None:
    torch.save({"state_dict": DigitsCNN().state_dict(), "extra": _Payload()}, tmp_path / "w.pt")
    spec = _spec(tmp_path, {"zoo": "digits_cnn", "checkpoint": str(tmp_path / "w.pt")})
    with pytest.raises(ModelLoadError, match="unsafe_pickle: true"):
        load_model(spec)
    spec = _spec(tmp_path, {"zoo": "digits_cnn", "checkpoint": str(tmp_path / "w.pt"), "unsafe_pickle": True})
    assert isinstance(load_model(spec), DigitsCNN)


def test_bad_factory_import(tmp_path: Path) -> None:
    torch.save(DigitsCNN().state_dict(), tmp_path / "w.pt")
    with pytest.raises(RecipeErrors, match="model.factory: cannot import 'no_such_pkg.mod'"):
        _spec(tmp_path, {"factory": "no_such_pkg.mod:build", "checkpoint": str(tmp_path / "w.pt")})


def test_not_torchscript(tmp_path: Path) -> None:
    (tmp_path / "m.ts").write_bytes(b"junk")
    with pytest.raises(ModelLoadError, match="not a TorchScript file"):
        load_model(_spec(tmp_path, {"torchscript": str(tmp_path / "m.ts")}))
