"""The user's own data as a Task: an image folder, ``.npz``/``.pt`` tensors, a text or JSONL file, or a
Python factory that returns a DataLoader (recipe ``data: {images|tensors|text|factory: ...}``).

Every source becomes the same kind of Task as the zoo's datasets: at most ``data.max_samples``
samples (a seeded random subset of more), split 80/20 after a seeded shuffle. With labels the
quality is accuracy; without, it is measured against the uncompressed model (fidelity for an
embedder or an unknown model, agreement with its predictions for a classifier or a language
model; :meth:`compressor.hf.InputSpec.targets`). Text is tokenized with the model's tokenizer
(:func:`compressor.zoo.text.text_task`). Before anything runs, the original model is run on two
samples, so data of the wrong shape or type fails with one :class:`DataError` that names the recipe
key and what the model expects, not with a traceback from inside a stage.
"""
from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import TensorDataset

from compressor.errors import DataError, ModelLoadError
from compressor.hf import InputSpec, input_spec
from compressor.recipe.schema import DataSpec
from compressor.task import Task, reference_outputs
from compressor.torchfile import load_torch_file
from compressor.trust import check_arguments, import_factory, importable_from
from compressor.zoo.text import TRAIN_FRACTION, text_task

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif", ".tif", ".tiff")
#: ImageNet statistics: the default normalisation of image folders (data.args mean/std override them).
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
LABELS = "labels"


def user_task(data: DataSpec, model: nn.Module, seed: int = 0, *, trust_code: bool = False) -> Task | None:
    """The Task of the user's data named in ``data`` (None when it names a dataset or nothing).

    ``trust_code``: allow a data factory from the modules :mod:`compressor.trust` refuses."""
    if data.text is not None:
        sentences, labels = read_text(data.text, data.max_samples, seed)
        return text_task(model, sentences, name=data.text.name, labels=labels, seed=seed,
                         max_length=int(data.args.get("max_length", 64)), batch_size=data.batch_size,
                         tokenizer=data.tokenizer, source=f"data.text {data.text}", augment=data.augment)
    spec = input_spec(model)
    if data.images is not None:
        key = f"data.images {data.images}"
        images, labels, preprocessing = read_images(data.images, data.args, spec, data.max_samples, seed)
        return tensor_task(model, {(spec.input_names[0] if spec else "image"): images}, labels, name=data.images.name,
                           key=key, batch_size=data.batch_size, seed=seed, preprocessing=preprocessing)
    if data.tensors is not None:
        arrays = read_tensors(data.tensors)
        labels = arrays.pop(LABELS, None)
        inputs = _subset(arrays, labels, data.max_samples, seed, f"data.tensors {data.tensors}")
        return tensor_task(model, inputs[0], inputs[1], name=data.tensors.name, key=f"data.tensors {data.tensors}",
                           batch_size=data.batch_size, seed=seed)
    if data.factory is not None:
        key = f"data.factory {data.factory!r}"
        loader = _call_data_factory(data, trust_code)
        arrays, labels = collect_batches(loader, spec, data.max_samples, key)
        return tensor_task(model, arrays, labels, name=data.factory, key=key, batch_size=data.batch_size, seed=seed)
    return None


def _call_data_factory(data: DataSpec, trust_code: bool) -> Any:
    """The DataLoader (or any iterable of batches) the user's ``data.factory`` returns."""
    key = f"data.factory {data.factory!r}"
    try:
        fn = import_factory(str(data.factory), data.args, search_path=data.import_path or (), trust_code=trust_code)
        check_arguments(fn, data.args, key)
    except ModelLoadError as exc:
        raise DataError(f"{key}: {exc}") from None
    with importable_from(data.import_path or ()):  # imports the factory makes while it runs
        try:
            return fn(**data.args)
        except Exception as exc:
            raise DataError(f"{key} raised {type(exc).__name__}: {exc}") from exc


# ---------------------------------------------------------------------- tensors -> Task
def tensor_task(model: nn.Module, inputs: dict[str, Tensor], labels: Tensor | None, *, name: str, key: str,
                batch_size: int, seed: int = 0, preprocessing: dict[str, Any] | None = None) -> Task:
    """A Task over ``inputs`` (name -> one row per sample), scored against ``labels`` or the original model."""
    spec = input_spec(model)
    names = list(inputs)
    if spec is not None:
        missing = [n for n in spec.input_names if n not in inputs]
        if missing and len(inputs) == len(spec.input_names):
            names = spec.input_names  # positional: the file's own names do not matter
            inputs = dict(zip(names, inputs.values()))
        elif missing:
            raise DataError(f"{key}: the model reads {', '.join(spec.input_names)}; the data has "
                            f"{', '.join(inputs) or 'no arrays'}")
    tensors = [inputs[n] for n in names]
    count = _check_rows(dict(zip(names, tensors)), labels, key)
    _check_runs(model, tensors, spec, key)
    if labels is not None:
        _check_labels(model, tensors, labels, key)
        targets, metric = labels.long(), "accuracy"
    else:
        mask = inputs.get("attention_mask")
        targets = (spec.targets(reference_outputs(model, tuple(tensors), batch_size), mask) if spec is not None
                   else reference_outputs(model, tuple(tensors), batch_size))
        metric = spec.metric if spec is not None else "fidelity"
    order = torch.randperm(count, generator=torch.Generator().manual_seed(seed))
    cut = max(1, int(count * TRAIN_FRACTION))
    splits = [TensorDataset(*(t[part] for t in tensors), targets[part]) for part in (order[:cut], order[cut:])]
    output = spec.output_name if spec is not None else "output"
    sequence = spec is not None and spec.modality == "text"
    axes = {n: ({0: "batch", 1: "sequence"} if sequence else {0: "batch"}) for n in names}
    axes[output] = {0: "batch", 1: "sequence"} if spec is not None and spec.per_token else {0: "batch"}
    described = {n: f"{tuple(t.shape[1:])} per sample, {str(t.dtype).removeprefix('torch.')}"
                 for n, t in zip(names, tensors)}
    return Task(name=name, metric=metric, train=splits[0], val=splits[1], input_names=names,
                output_names=[output], dynamic_axes=axes, preprocessing={**described, **(preprocessing or {})},
                batch_size=batch_size,
                note="" if labels is not None else "no labels: quality is measured against the original model")


def _check_rows(inputs: dict[str, Tensor], labels: Tensor | None, key: str) -> int:
    rows = {n: len(t) for n, t in inputs.items()} | ({LABELS: len(labels)} if labels is not None else {})
    if len(set(rows.values())) > 1:
        raise DataError(f"{key}: arrays differ in their number of samples ("
                        + ", ".join(f"{n}: {r}" for n, r in rows.items()) + ")")
    count = next(iter(rows.values()), 0)
    if count < 2:
        raise DataError(f"{key}: {count} sample(s); a task needs at least 2 (training and held-out)")
    for n, t in inputs.items():
        if not (t.is_floating_point() or t.dtype in (torch.int64, torch.int32, torch.bool)):
            raise DataError(f"{key}: {n} is {str(t.dtype).removeprefix('torch.')}; expected float "
                            "(images, features) or int64 (token ids, masks)")
    return count


def _check_runs(model: nn.Module, tensors: list[Tensor], spec: InputSpec | None, key: str) -> None:
    """Run the model on two samples: wrong shapes or dtypes fail here, named, not inside a stage."""
    shapes = ", ".join(f"{tuple(t.shape[1:])} {str(t.dtype).removeprefix('torch.')}" for t in tensors)
    if spec is not None and spec.image_shape is not None and tuple(tensors[0].shape[1:]) != spec.image_shape:
        raise DataError(f"{key}: samples of shape {tuple(tensors[0].shape[1:])}; the model reads images of "
                        f"{spec.image_shape} (channels, height, width)")
    if spec is not None and spec.modality == "text" and any(t.is_floating_point() for t in tensors):
        raise DataError(f"{key}: float arrays ({shapes}); the model reads token ids and an attention mask (int64)")
    try:
        with torch.no_grad():
            model.eval()(*(t[:2] for t in tensors))
    except (RuntimeError, ValueError, TypeError, IndexError) as exc:
        raise DataError(f"{key}: the model does not run on samples of {shapes} "
                        f"({str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__})") from None


def _check_labels(model: nn.Module, tensors: list[Tensor], labels: Tensor, key: str) -> None:
    if labels.dim() != 1 or labels.is_floating_point():
        raise DataError(f"{key}: labels must be one integer class per sample, got {str(labels.dtype).removeprefix('torch.')} "
                        f"of shape {tuple(labels.shape)}")
    with torch.no_grad():
        classes = model(*(t[:1] for t in tensors)).shape[-1]
    if int(labels.min()) < 0 or int(labels.max()) >= classes:
        raise DataError(f"{key}: labels range over {int(labels.min())}..{int(labels.max())}; the model has "
                        f"{classes} outputs (classes 0..{classes - 1})")


def _subset(arrays: dict[str, Tensor], labels: Tensor | None, limit: int, seed: int,
            key: str) -> tuple[dict[str, Tensor], Tensor | None]:
    """At most ``limit`` rows, a seeded random choice (the same rows from every array)."""
    if not arrays:
        raise DataError(f"{key}: no input arrays (only {LABELS!r})" if labels is not None else f"{key}: no arrays")
    count = len(next(iter(arrays.values())))
    if count <= limit:
        return arrays, labels
    keep = torch.from_numpy(np.sort(np.random.default_rng(seed).permutation(count)[:limit]))
    return ({n: t[keep] if len(t) == count else t for n, t in arrays.items()},
            labels[keep] if labels is not None and len(labels) == count else labels)


# ---------------------------------------------------------------------- readers
def read_tensors(path: Path) -> dict[str, Tensor]:
    """Named arrays from ``.npz`` (numpy) or ``.pt`` (a dict of tensors, or one tensor; loaded with
    ``weights_only=True``: data never runs code)."""
    key = f"data.tensors {path}"
    if path.suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as npz:
                arrays = {name: npz[name] for name in npz.files}
        except (OSError, ValueError, zipfile.BadZipFile) as exc:
            raise DataError(f"{key}: not a readable .npz file ({exc})") from None
        bad = [n for n, a in arrays.items() if a.dtype.kind not in "biuf"]
        if bad:
            raise DataError(f"{key}: {bad[0]} holds {arrays[bad[0]].dtype} values; expected numbers")
        return {n: torch.from_numpy(np.ascontiguousarray(a)) for n, a in arrays.items()}
    if path.suffix in (".pt", ".pth"):
        try:
            obj = load_torch_file(path)
        except ModelLoadError as exc:
            raise DataError(f"data.tensors {exc}") from None
        if isinstance(obj, Tensor):
            return {"input": obj}
        if isinstance(obj, dict) and obj and all(isinstance(v, Tensor) for v in obj.values()):
            return {str(n): v for n, v in obj.items()}
        raise DataError(f"{key}: expected a tensor or a dict of tensors, got {type(obj).__name__}")
    raise DataError(f"{key}: expected a .npz or .pt file")


def read_text(path: Path, limit: int, seed: int) -> tuple[list[str], list[int] | None]:
    """Sentences (and labels) from a text file (one per non-empty line) or JSONL ({"text", "label"})."""
    key = f"data.text {path}"
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{key}: cannot read it as UTF-8 text ({exc})") from None
    numbered = [(i + 1, line.strip()) for i, line in enumerate(lines) if line.strip()]
    if not numbered:
        raise DataError(f"{key}: no sentences (the file is empty)")
    if path.suffix != ".jsonl":
        sentences, labels = [line for _, line in numbered], None
    else:
        rows = [_json_row(path, n, line) for n, line in numbered]
        sentences = [text for text, _ in rows]
        given = [label is not None for _, label in rows]
        if any(given) and not all(given):
            missing = next(n for (n, _), g in zip(numbered, given) if not g)
            raise DataError(f"{path}:{missing}: no 'label' while other lines have one; label every line or none")
        labels = [int(label) for _, label in rows] if all(given) else None
    if len(sentences) > limit:
        keep = np.sort(np.random.default_rng(seed).permutation(len(sentences))[:limit])
        sentences = [sentences[i] for i in keep]
        labels = [labels[i] for i in keep] if labels is not None else None
    return sentences, labels


def _json_row(path: Path, number: int, line: str) -> tuple[str, int | None]:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}:{number}: not JSON ({exc.msg})") from None
    if not isinstance(row, dict) or not isinstance(row.get("text"), str):
        raise DataError(f"{path}:{number}: expected an object with a \"text\" string (and an optional integer \"label\")")
    label = row.get("label")
    if label is not None and (isinstance(label, bool) or not isinstance(label, int)):
        raise DataError(f"{path}:{number}: \"label\" must be an integer class, got {label!r}")
    return row["text"], label


def read_images(folder: Path, args: dict[str, Any], spec: InputSpec | None, limit: int,
                seed: int) -> tuple[Tensor, Tensor | None, dict[str, Any]]:
    """Images resized to the model's input size and normalised, with labels from class subfolders."""
    from PIL import Image, UnidentifiedImageError  # optional heavy import: only image folders need it

    key = f"data.images {folder}"
    if not folder.is_dir():
        raise DataError(f"{key}: not a folder")
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if classes:
        files = [(f, label) for label, c in enumerate(classes) for f in _images_in(folder / c)]
        empty = [c for c in classes if not _images_in(folder / c)]
        if empty:
            raise DataError(f"{key}: class folder {empty[0]!r} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    else:
        files = [(f, -1) for f in _images_in(folder)]
    if len(files) < 2:
        raise DataError(f"{key}: {len(files)} image(s) ({', '.join(IMAGE_SUFFIXES)}); expected at least 2, "
                        "in one subfolder per class or directly in the folder")
    if len(files) > limit:
        files = [files[i] for i in np.sort(np.random.default_rng(seed).permutation(len(files))[:limit])]
    channels, height, width = _image_size(args, spec, key)
    mean = np.asarray(args.get("mean", IMAGENET_MEAN if channels == 3 else (0.5,) * channels), np.float32)
    std = np.asarray(args.get("std", IMAGENET_STD if channels == 3 else (0.5,) * channels), np.float32)
    images = np.empty((len(files), channels, height, width), np.float32)
    for i, (file, _) in enumerate(files):
        try:
            with Image.open(file) as image:
                pixels = image.convert("RGB" if channels == 3 else "L").resize((width, height), Image.BILINEAR)
        except (OSError, UnidentifiedImageError) as exc:
            raise DataError(f"{key}: cannot read {file} as an image ({exc})") from None
        array = np.asarray(pixels, np.float32).reshape(height, width, channels) / 255.0
        images[i] = ((array - mean) / std).transpose(2, 0, 1)
    labels = torch.tensor([label for _, label in files]) if classes else None
    preprocessing = {"image": f"{'RGB' if channels == 3 else 'grey'}, resized to {height}x{width} (bilinear), "
                              f"scaled to [0, 1], normalised with mean {mean.tolist()} and std {std.tolist()}, NCHW float32",
                     **({"classes": classes} if classes else {})}
    return torch.from_numpy(images), labels, preprocessing


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _image_size(args: dict[str, Any], spec: InputSpec | None, key: str) -> tuple[int, int, int]:
    size = args.get("size")
    channels = int(args.get("channels", spec.image_shape[0] if spec is not None and spec.image_shape else 3))
    if size is None:
        if spec is None or spec.image_shape is None:
            raise DataError(f"{key}: give the model's input size with data.args: {{size: [HEIGHT, WIDTH]}} "
                            "(only Hugging Face folders state it)")
        return spec.image_shape
    height, width = (size, size) if isinstance(size, int) else tuple(size)
    return channels, int(height), int(width)


def collect_batches(loader: Iterable[Any], spec: InputSpec | None, limit: int,
                    key: str) -> tuple[dict[str, Tensor], Tensor | None]:
    """Up to ``limit`` samples from a factory's DataLoader, as arrays by input name (and labels)."""
    try:
        batches = iter(loader)
    except TypeError:
        raise DataError(f"{key} returned {type(loader).__name__}, expected a DataLoader (an iterable of batches)") from None
    columns: dict[str, list[Tensor]] = {}
    count = 0
    for batch in batches:
        named = _named(batch, spec, key)
        for name, value in named.items():
            columns.setdefault(name, []).append(value)
        count += len(next(iter(named.values())))
        if count >= limit:
            break
    if not columns:
        raise DataError(f"{key}: the DataLoader yielded no batches")
    try:
        arrays = {name: torch.cat(parts)[:limit] for name, parts in columns.items()}
    except RuntimeError as exc:
        raise DataError(f"{key}: batches differ in shape beyond the batch axis ({str(exc).splitlines()[0]})") from None
    labels = arrays.pop(LABELS, None)
    return arrays, labels


def _named(batch: Any, spec: InputSpec | None, key: str) -> dict[str, Tensor]:
    if isinstance(batch, Tensor):
        return {"input": batch}
    if isinstance(batch, dict) and batch and all(isinstance(v, Tensor) for v in batch.values()):
        return {str(k): v for k, v in batch.items()}
    if isinstance(batch, (tuple, list)) and batch and all(isinstance(v, Tensor) for v in batch):
        items = list(batch)
        labelled = len(items) >= 2 and items[-1].dim() == 1 and not items[-1].is_floating_point()
        inputs = items[:-1] if labelled else items
        names = spec.input_names if spec is not None and len(spec.input_names) == len(inputs) else \
            [f"input_{i}" if len(inputs) > 1 else "input" for i in range(len(inputs))]
        return dict(zip(names, inputs)) | ({LABELS: items[-1]} if labelled else {})
    raise DataError(f"{key}: a batch is a {type(batch).__name__}; expected a tensor, a tuple/list of tensors "
                    "(inputs..., labels) or a dict of tensors")
