"""The user's own data: image folders, tensors, text/JSONL and DataLoader factories (issue 13.2)."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from compressor.cli import main
from compressor.data import user_task
from compressor.errors import CompressorError, DataError
from compressor.hf import load_hf_model
from compressor.recipe.loader import load_recipe
from compressor.recipe.schema import DataSpec
from compressor.zoo.minilm import model_dir
from tiny_hf import save_tiny
from tiny_models import tiny_mobilenet_v3

RNG = np.random.default_rng(0)


def write_images(folder: Path, count: int, size: tuple[int, int] = (40, 50)) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        Image.fromarray(RNG.integers(0, 255, (*size, 3), dtype=np.uint8)).save(folder / f"{i}.png")


def task_for(model: torch.nn.Module, **data: object):  # noqa: ANN201
    return user_task(DataSpec(batch_size=4, **data), model)


def test_an_image_folder_with_class_subfolders_gives_labels(tmp_path: Path) -> None:
    write_images(tmp_path / "cat", 5)
    write_images(tmp_path / "dog", 5)
    task = task_for(tiny_mobilenet_v3(), images=tmp_path, args={"size": 32})
    assert task.metric == "accuracy" and (len(task.train), len(task.val)) == (8, 2)
    images, labels = task.train.tensors
    assert images.shape[1:] == (3, 32, 32) and set(labels.tolist()) <= {0, 1}
    assert task.preprocessing["classes"] == ["cat", "dog"]
    assert 0.0 <= task.evaluate(tiny_mobilenet_v3()) <= 1.0


def test_a_flat_image_folder_is_scored_against_the_original_model(tmp_path: Path) -> None:
    write_images(tmp_path, 6)
    model = tiny_mobilenet_v3()
    task = task_for(model, images=tmp_path, args={"size": [24, 32]})
    assert task.metric == "fidelity" and task.train.tensors[0].shape[1:] == (3, 24, 32)
    assert task.evaluate(model) == pytest.approx(1.0, abs=1e-5)


def test_a_hugging_face_vision_model_sets_the_image_size(tmp_path: Path) -> None:
    write_images(tmp_path / "images", 4)
    model = load_hf_model(save_tiny("vit", tmp_path / "vit"))
    task = task_for(model, images=tmp_path / "images")
    assert task.input_names == ["pixel_values"] and task.train.tensors[0].shape[1:] == (3, 32, 32)
    assert task.metric == "accuracy"  # a classifier: agreement with its own predictions
    assert task.evaluate(model) == 1.0


@pytest.mark.parametrize("suffix", [".npz", ".pt"])
def test_tensor_files_with_and_without_labels(tmp_path: Path, suffix: str) -> None:
    images, labels = RNG.standard_normal((10, 3, 32, 32)).astype(np.float32), RNG.integers(0, 10, 10)
    path = tmp_path / f"data{suffix}"
    if suffix == ".npz":
        np.savez(path, pixels=images, labels=labels)
    else:
        torch.save({"pixels": torch.from_numpy(images)}, path)
    task = task_for(tiny_mobilenet_v3(), tensors=path)
    assert task.metric == ("accuracy" if suffix == ".npz" else "fidelity")
    assert task.input_names == ["pixels"] and len(task.train) + len(task.val) == 10


def test_text_and_jsonl_use_the_models_tokenizer(tmp_path: Path) -> None:
    model = load_hf_model(save_tiny("bert", tmp_path / "bert"))  # a 3-class sequence classifier
    (tmp_path / "s.txt").write_text("the first sentence.\n\nthe second one.\na third, shorter.\nand four.\n")
    task = task_for(model, text=tmp_path / "s.txt")
    assert task.metric == "accuracy" and len(task.train) + len(task.val) == 4  # the blank line is skipped
    assert task.evaluate(model) == 1.0
    rows = [{"text": f"sentence number {i}", "label": i % 3} for i in range(6)]
    (tmp_path / "s.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    labelled = task_for(model, text=tmp_path / "s.jsonl")
    assert sorted(labelled.train.tensors[2].tolist() + labelled.val.tensors[2].tolist()) == [0, 0, 1, 1, 2, 2]


def build_loader(samples: int = 12, labelled: bool = True) -> torch.utils.data.DataLoader:
    """A data factory: what ``data: {factory: "test_user_data:build_loader"}`` calls."""
    tensors = [torch.randn(samples, 3, 32, 32)] + ([torch.randint(0, 10, (samples,))] if labelled else [])
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(*tensors), batch_size=5)


def test_a_factory_dataloader_is_collected_up_to_max_samples(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    task = task_for(tiny_mobilenet_v3(), factory="test_user_data:build_loader", max_samples=8)
    assert task.metric == "accuracy" and len(task.train) + len(task.val) == 8
    unlabelled = task_for(tiny_mobilenet_v3(), factory="test_user_data:build_loader", args={"labelled": False})
    assert unlabelled.metric == "fidelity"


def bad_data(tmp_path: Path) -> dict[str, tuple[dict, str]]:
    """Recipe data sections that must fail, each with the message it must give."""
    (tmp_path / "empty").mkdir()
    write_images(tmp_path / "classes" / "a", 2)
    (tmp_path / "classes" / "b").mkdir()
    np.savez(tmp_path / "shape.npz", x=RNG.standard_normal((6, 3, 8)).astype(np.float32))
    np.savez(tmp_path / "rows.npz", x=RNG.standard_normal((6, 3, 32, 32)).astype(np.float32), labels=np.zeros(5, int))
    np.savez(tmp_path / "dtype.npz", x=RNG.integers(0, 255, (6, 3, 32, 32), dtype=np.uint8))
    np.savez(tmp_path / "range.npz", x=RNG.standard_normal((6, 3, 32, 32)).astype(np.float32), labels=np.full(6, 12))
    (tmp_path / "s.txt").write_text("one sentence.\nanother one.\n")
    return {
        "empty": ({"images": "empty", "args": {"size": 32}}, "0 image"),
        "empty class": ({"images": "classes", "args": {"size": 32}}, "class folder 'b' holds no images"),
        "wrong shape": ({"tensors": "shape.npz"}, r"does not run on samples of \(3, 8\) float32"),
        "rows": ({"tensors": "rows.npz"}, "differ in their number of samples"),
        "wrong dtype": ({"tensors": "dtype.npz"}, "x is uint8; expected float"),
        "label range": ({"tensors": "range.npz"}, "labels range over 12..12; the model has 10 outputs"),
        "no tokenizer": ({"text": "s.txt"}, "text data needs a tokenizer.*data.tokenizer: DIR"),
        "factory": ({"factory": "test_user_data:no_such_loader"},
                    "data.factory: module 'test_user_data' .*has no 'no_such_loader'"),
        "os factory": ({"factory": "os:listdir"}, "data.factory: refused factory 'os:listdir'.*--trust-code"),
    }


def test_bad_data_exits_2_with_one_line_naming_the_key(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    torch.save(tiny_mobilenet_v3().state_dict(), tmp_path / "m.pt")
    for case, (data, message) in bad_data(tmp_path).items():
        recipe = {"model": {"factory": "tiny_models:tiny_mobilenet_v3", "checkpoint": "m.pt"},
                  "data": data, "report": {"latency": "off"}, "stages": []}
        (tmp_path / "r.yaml").write_text(json.dumps(recipe))
        assert main(["run", "r.yaml", "--out", f"run-{case.replace(' ', '-')}"]) == 2, case
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, (case, err)
        assert re.search(message, err), (case, err)


def test_bad_jsonl_and_a_missing_tokenizer_name_the_line_and_the_folder(tmp_path: Path) -> None:
    model = load_hf_model(save_tiny("bert", tmp_path / "bert"))
    (tmp_path / "bad.jsonl").write_text('{"text": "fine", "label": 1}\n\n{"txt": "typo"}\n')
    with pytest.raises(DataError, match=r"bad.jsonl:3: expected an object with a \"text\" string"):
        task_for(model, text=tmp_path / "bad.jsonl")
    (tmp_path / "s.txt").write_text("one sentence with words.\nanother sentence with words.\n")
    with pytest.raises(DataError, match="does not run on the token ids .* is it the model's own tokenizer"):
        task_for(model, text=tmp_path / "s.txt", tokenizer=model_dir())  # MiniLM's 30k tokens, a 128-token model
    for name in ("vocab.txt", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.json"):
        (tmp_path / "bert" / name).unlink(missing_ok=True)
    (tmp_path / "s.txt").write_text("one.\ntwo.\n")
    with pytest.raises(DataError, match="no tokenizer in .*bert"):
        task_for(load_hf_model(tmp_path / "bert"), text=tmp_path / "s.txt")


def test_the_recipe_resolves_data_files_and_takes_one_source(tmp_path: Path) -> None:
    (tmp_path / "s.txt").write_text("a.\nb.\n")
    recipe = load_recipe({"model": {"zoo": "digits_cnn"}, "data": {"text": str(tmp_path / "s.txt")}})
    assert recipe.data.text == tmp_path / "s.txt"
    with pytest.raises(CompressorError, match="data.images: no such directory: "):
        load_recipe({"model": {"zoo": "digits_cnn"}, "data": {"images": str(tmp_path / "nowhere")}})
    with pytest.raises(CompressorError, match="at most one of dataset, images, tensors, text, factory"):
        load_recipe({"model": {"zoo": "digits_cnn"}, "data": {"dataset": "digits", "text": str(tmp_path / "s.txt")}})
