"""The deploy bundle: manifest.json, infer.py and sample.npz beside the exported models.

Everything a deployment needs and nothing it does not: the example runs with onnxruntime and
numpy only, and checks itself against the PyTorch outputs stored in ``sample.npz``.
"""
from __future__ import annotations

import hashlib
import shutil
from datetime import datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor

from compressor.export.onnx import model_files, opset_of
from compressor.export.parity import Parity
from compressor.export.targets import Target
from compressor.io import atomic_path, write_json
from compressor.task import Task

FORMAT = "compressor-deploy/1"
EXAMPLE = Path(__file__).with_name("infer_example.py")
#: Files the bundle writes beside the models.
FILES = ("manifest.json", "infer.py", "sample.npz")
#: Prefix of the reference outputs in sample.npz.
EXPECTED = "expected."


def sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def model_entry(path: Path, *, precision: str, parity: Parity, tolerance: dict[str, Any],
                quality: float | None, latency: dict[str, Any] | None) -> dict[str, Any]:
    """The manifest's record of one exported ONNX file."""
    import onnx

    files = model_files(path)
    return {"file": path.name, "precision": precision,
            "opset": opset_of(onnx.load(str(path), load_external_data=False)),
            "files": {f.name: {"sha256": sha256(f), "bytes": f.stat().st_size} for f in files},
            "parity": parity.as_dict(), "tolerance": tolerance, "quality": quality, "latency": latency}


def write_bundle(deploy_dir: Path, *, task: Task, target: Target, io: dict[str, list[dict[str, Any]]],
                 models: dict[str, dict[str, Any]], summary: dict[str, Any], provenance: dict[str, Any],
                 sample_inputs: tuple[Tensor, ...], sample_outputs: np.ndarray,
                 failures: list[str], notes: list[str]) -> Path:
    """Write manifest.json, infer.py and sample.npz into ``deploy_dir``; return the manifest path."""
    deploy_dir.mkdir(parents=True, exist_ok=True)
    sample = {n: x.detach().cpu().numpy() for n, x in zip(task.input_names, sample_inputs)}
    with atomic_path(deploy_dir / "sample.npz") as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **sample, **{EXPECTED + task.output_names[0]: sample_outputs})
    with atomic_path(deploy_dir / "infer.py") as tmp:
        shutil.copyfile(EXAMPLE, tmp)
    manifest = {
        "format": FORMAT,
        "created": datetime.now().isoformat(timespec="seconds"),
        "compressor": version("compressor"),
        "status": "failed" if failures else "ok",
        "failures": failures,
        "notes": notes,
        "task": {"name": task.name, "metric": task.metric, "synthetic": task.synthetic},
        "target": target.as_dict(),
        "provenance": provenance,
        "inputs": io["inputs"],
        "outputs": io["outputs"],
        "preprocessing": task.preprocessing,
        "metrics": summary,
        "models": models,
        "sample": {"file": "sample.npz", "sha256": sha256(deploy_dir / "sample.npz"),
                   "inputs": list(sample), "expected": EXPECTED + task.output_names[0]},
        "example": "python infer.py [--model onnx|onnx-fp16] [--inputs FILE.npz]",
    }
    write_json(deploy_dir / "manifest.json", manifest)
    return deploy_dir / "manifest.json"
