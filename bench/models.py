"""The model-family support table of docs/models.md, every cell measured by running it.

    .venv/bin/python bench/models.py [--only support,pipeline]

- support: for each family of tests/model_matrix.py, each capability run alone (channel, FFN and
  head pruning, MiniLM relations, the int8 pipeline per target, save_pretrained after pruning);
  a cell is "yes" when it ran, else the one-line error compressor gave (exit code 2).
- pipeline: prune -> distill -> int8 PTQ -> export per family and target: parameters, quality after
  each stage, ONNX Runtime parity, and for TensorRT files check-trt and the Q/DQ reference parity.
"""
from __future__ import annotations

import os

os.environ.setdefault("TQDM_DISABLE", "1")  # before anything imports tqdm
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import json  # noqa: E402
import sys  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import torch  # noqa: E402
from recipebench import ROOT, main, table  # noqa: E402

sys.path.insert(0, str(ROOT / "tests"))  # the families are the test suite's tiny models

import compressor  # noqa: E402
from compressor.errors import CompressorError  # noqa: E402
from compressor.export.qdq_rules import check_trt  # noqa: E402
from compressor.hf import input_spec, load_hf_model, save_pretrained  # noqa: E402
from model_matrix import FAMILIES, QUICK, TARGETS, Family, pipeline, recipe, reference_parity  # noqa: E402

CAPABILITIES = ("channel", "ffn", "heads", "relations", *TARGETS, "save_pretrained")


def _attempt(family: Family, root: Path, target: str, stages: list[dict[str, Any]], out: Path) -> str | None:
    """None when the recipe runs, else the error compressor reports (what the CLI prints after 'error:')."""
    try:
        compressor.run(recipe(family, root, target, stages), run_dir=out, overwrite=True)
    except CompressorError as exc:
        return str(exc).split(" (artifacts kept")[0].replace(f"{out.parent}/", "")
    return None


def _probe(family: Family, capability: str, root: Path, tmp: Path) -> str | None:
    out = tmp / f"{family.name}-{capability}"
    if capability in ("channel", "ffn", "heads"):
        stage = {"sparsity": 0.5} if capability == "channel" else {"method": capability, "sparsity": 0.5}
        return _attempt(family, root, "cpu-x86", [{"prune": stage}], out)
    if capability == "relations":
        attention = {"weight": 1.0, "relations": family.relations or ["qk", "vv"], "relation_heads": 2}
        return _attempt(family, root, "cpu-x86", [{"distill": {"attention": attention, "finetune": QUICK}}], out)
    if capability in TARGETS:
        return _attempt(family, root, capability, pipeline(family), out)
    return _round_trip(family, root, out)


def _round_trip(family: Family, root: Path, out: Path) -> str | None:
    """save_pretrained after FFN and head pruning, read back as a Hugging Face folder."""
    if family.source == "hand":
        return "not a Hugging Face model: compressor checkpoints rebuild it (compressor.load_model)"
    error = _attempt(family, root, "cpu-x86", [s for s in family.prune if "prune" in s], out)
    if error:
        return error
    model = compressor.load_model(sorted((out / "checkpoints").glob("*.pt"))[-1])
    spec = input_spec(model)
    inputs = ((torch.randn(2, *spec.image_shape),) if spec.image_shape else
              (torch.randint(5, 100, (2, 8)), torch.ones(2, 8, dtype=torch.long)))
    try:
        save_pretrained(model, out / "hf")
        reloaded = load_hf_model(out / "hf")
        with torch.no_grad():
            same = torch.allclose(reloaded(*inputs), model(*inputs), atol=1e-4)
    except (CompressorError, RuntimeError, ValueError) as exc:  # the folder named relative to the bench's
        return f"{type(exc).__name__}: {str(exc).strip().splitlines()[0]}".replace(f"{out.parent}/", "")
    return None if same else "reloads with different outputs"


def support(tmp: Path) -> str:
    root = tmp / "families"
    notes: list[str] = []
    rows = []
    for family in FAMILIES.values():
        row: list[str] = [f"`{family.name}`", family.what]
        for capability in CAPABILITIES:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                error = _probe(family, capability, root, tmp)
            if error is None:
                row.append("yes")
            else:
                notes.append(f"{len(notes) + 1}. `{family.name}`, {capability}: {error}")
                row.append(f"no [{len(notes)}]")
            print(family.name, capability, row[-1], flush=True)
        rows.append(row)
    header = ["family", "model", "prune channel", "prune ffn", "prune heads", "MiniLM relations",
              "int8 cpu-x86", "int8 jetson-orin", "save_pretrained"]
    return table(header, rows) + "\n\nWhy a cell is not \"yes\" (the error compressor prints, exit code 2):\n\n" + \
        "\n".join(notes)


def pipeline_figures(tmp: Path) -> str:
    root = tmp / "families"
    rows = []
    for family in FAMILIES.values():
        for target in TARGETS:
            out = tmp / f"{family.name}-{target}"
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                error = _attempt(family, root, target, pipeline(family), out)
            state = json.loads((out / "run.json").read_text())
            stages = {s["name"]: s["metrics"] for s in state["stages"] if s.get("metrics")}
            base = state["baseline"]
            pruned = stages.get("heads") or stages.get("prune", {})
            export = stages.get("export", {})
            parity = export.get("parity", {}).get("cosine")
            deploy = out / "deploy"
            trt = (f"{len(check_trt(deploy / 'model.onnx'))} check-trt violations, Q/DQ reference parity "
                   f"{reference_parity(deploy):.6f}" if target != "cpu-x86" and (deploy / "model.onnx").exists() else "-")
            qualities = [f"{q:.3f}" if q is not None else "-" for q in
                         (base["quality"], pruned.get("quality"), stages.get("distill", {}).get("quality"),
                          stages.get("quantize", {}).get("quality"))]
            result = "ok" if error is None else error
            rows.append([f"`{family.name}`", target, f"{base['params'] / 1e3:.1f}k -> {pruned.get('params', 0) / 1e3:.1f}k",
                         *qualities, f"{parity:.6f}" if parity is not None else "-", trt, result])
            print(rows[-1], flush=True)
    header = ["family", "target", "params", "quality input", "pruned", "distilled", "int8 PTQ",
              "ONNX Runtime parity (cosine)", "TensorRT file", "stage result"]
    return table(header, rows)


if __name__ == "__main__":
    main("docs/models.md", __file__, {"support": support, "pipeline": pipeline_figures}, __doc__)
