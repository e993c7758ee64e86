"""Pruning figures for docs/pruning.md, all measured in one run of this script.

    .venv/bin/python bench/pruning.py [--only digits,importance,latency,sparse]

- digits: digits_cnn at 50% channels: pruned alone, then fine-tuning or distillation with the same
  epochs and learning rate (recipes/prune_distill_digits_cnn.yaml).
- importance: each criterion at 50% on digits_cnn, right after pruning and after 2 epochs.
- latency: resnet18 / mobilenet_v2 shapes at 50% channels: params, MACs and ONNX Runtime latency
  against the unpruned model, timed interleaved in this process (medians, ratios).
- sparse: unstructured and 2:4 sparsity on digits_cnn: accuracy, sparse storage, ONNX 2:4 check.
"""
from __future__ import annotations

import os

os.environ.setdefault("TQDM_DISABLE", "1")  # before anything imports tqdm

import argparse  # noqa: E402
import copy  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402
import yaml  # noqa: E402

import compressor  # noqa: E402
from compressor.export.bench import interleaved  # noqa: E402
from compressor.export.onnx import export_onnx  # noqa: E402
from compressor.export.runtime import feeds, ort_session  # noqa: E402
from compressor.export.sparsity import semi_structured_report  # noqa: E402
from compressor.recipe import load_recipe  # noqa: E402
from compressor.sources import load_model  # noqa: E402
from docsection import table, write_section  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "pruning.md"
COMMAND = ".venv/bin/python bench/pruning.py"
SECTIONS = ("digits", "importance", "latency", "sparse")


def _recipe(name: str) -> dict:
    data = yaml.safe_load((ROOT / "recipes" / name).read_text())
    data["report"] = {"latency": "off"}
    return data


def _run(recipe: dict, stages: list[dict], out: Path) -> compressor.Report:
    recipe = {**copy.deepcopy(recipe), "stages": stages}
    return compressor.run(recipe, run_dir=out, overwrite=True)


def _ratio(value: float, base: float) -> str:
    return f"{value / base:.2f}x"


def digits(tmp: Path) -> str:
    recipe = _recipe("prune_distill_digits_cnn.yaml")
    prune, distill = recipe["stages"][0], recipe["stages"][1]
    train = distill["distill"]["finetune"]
    hints = copy.deepcopy(distill)
    hints["distill"]["features"] = {"weight": 1.0, "layers": ["features.1", "features.3"]}
    variants = {"pruned, no training": [prune], "+ fine-tune (task loss)": [prune, {"finetune": train}],
                "+ distill (logit KD, T=4)": [prune, distill], "+ distill (KD + feature hints)": [prune, hints]}
    rows, base = [], None
    for label, stages in variants.items():
        report = _run(recipe, stages, tmp / f"digits-{len(rows)}")
        base = report.rows[0]
        last = report.rows[-1]
        rows.append([label, f"{last['quality']:.4f}", f"{last['quality'] / base['quality']:.1%}",
                     _ratio(last["params"], base["params"]), _ratio(last["macs"], base["macs"])])
    rows.insert(0, ["fp32 (unpruned)", f"{base['quality']:.4f}", "100.0%", "1.00x", "1.00x"])
    return (f"digits_cnn, 50% of every conv's channels (`round_to: 8`), {train['epochs']} epochs at "
            f"lr {train['lr']} for both fine-tuning and distillation (teacher: the unpruned CNN); "
            "held-out accuracy on 360 images.\n\n"
            + table(["model", "accuracy", "of fp32", "params", "MACs"], rows))


def importance(tmp: Path) -> str:
    recipe = _recipe("prune_distill_digits_cnn.yaml")
    rows = []
    for criterion in ("l1", "l2", "bn_scale", "taylor", "random"):
        stages = [{"prune": {"importance": criterion, "sparsity": 0.5, "round_to": 8}},
                  {"finetune": {"epochs": 2, "lr": 0.003}}]
        report = _run(recipe, stages, tmp / f"importance-{criterion}")
        rows.append([criterion, f"{report.rows[1]['quality']:.4f}", f"{report.rows[2]['quality']:.4f}"])
    return ("Importance criteria on digits_cnn at 50% channels: accuracy right after pruning and "
            "after 2 fine-tuning epochs.\n\n" + table(["importance", "pruned", "+ 2 epochs"], rows))


def latency(tmp: Path) -> str:
    rows = []
    for zoo in ("resnet18", "mobilenet_v2"):
        recipe = _recipe(f"prune_distill_{zoo}.yaml")
        prune = copy.deepcopy(recipe["stages"][0])
        prune["prune"].pop("finetune", None)
        report = _run(recipe, [prune], tmp / f"latency-{zoo}")
        base_row, pruned_row = report.rows[0], report.rows[-1]
        base = load_model(load_recipe(recipe).model)
        pruned = compressor.load_model(sorted((Path(report.run_dir) / "checkpoints").glob("*.pt"))[-1])
        x, sessions = (torch.randn(1, 3, 224, 224),), {}
        for label, model in (("unpruned", base), ("pruned", pruned)):
            path = export_onnx(model, x, tmp / f"{zoo}-{label}.onnx", input_names=["image"], output_names=["logits"])
            session = ort_session(path)
            feed = feeds(session, x)
            sessions[label] = (lambda s=session, f=feed: s.run(None, f))
        lat = interleaved(sessions, warmup=5, iterations=60, rounds=6)
        rows.append([zoo, f"{base_row['params'] / 1e6:.2f}M -> {pruned_row['params'] / 1e6:.2f}M",
                     f"{base_row['macs'] / 1e9:.2f}G -> {pruned_row['macs'] / 1e9:.2f}G",
                     f"{lat['unpruned'].p50_ms:.2f} -> {lat['pruned'].p50_ms:.2f}",
                     _ratio(lat["pruned"].p50_ms, lat["unpruned"].p50_ms)])
    return ("ImageNet shapes (3x224x224, batch 1) at 50% channels (`round_to: 8`, l2 importance), "
            "exported to ONNX and timed in ONNX Runtime on this CPU, both models interleaved in one "
            "process (p50 of 60 runs each).\n\n"
            + table(["model", "params", "MACs", "ORT p50 ms", "latency ratio"], rows))


def sparse(tmp: Path) -> str:
    recipe = _recipe("prune_distill_digits_cnn.yaml")
    train = {"epochs": 2, "lr": 0.001}
    variants = {"unstructured 50%": {"method": "unstructured", "sparsity": 0.5},
                "unstructured 80% (global)": {"method": "unstructured", "sparsity": 0.8, "global_ranking": True},
                "2:4": {"method": "2:4"}}
    rows = []
    for label, params in variants.items():
        report = _run(recipe, [{"prune": {**params, "finetune": train}}], tmp / f"sparse-{len(rows)}")
        base, row = report.rows[0], report.rows[-1]
        model = compressor.load_model(sorted((Path(report.run_dir) / "checkpoints").glob("*.pt"))[-1])
        path = export_onnx(model, (torch.rand(2, 1, 8, 8),), tmp / f"sparse-{len(rows)}.onnx",
                           input_names=["image"], output_names=["logits"])
        checked = semi_structured_report(path)
        rows.append([label, f"{row['quality']:.4f} ({base['quality']:.4f})", f"{row['weight_sparsity']:.2f}",
                     _ratio(row["size_bytes"], base["size_bytes"]), f"{row['sparse_weight_ratio']:.2f}x",
                     f"{sum(w.holds for w in checked)}/{len(checked)}"])
    return ("Weight sparsity on digits_cnn, 2 fine-tuning epochs inside the stage (masks held). Size: "
            "the whole model in its sparse encoding vs dense fp32; sparse weights: the pruned layers' "
            "weights alone; ONNX 2:4: weights of the exported file holding 2:4 (the first conv has "
            "one input channel and is skipped).\n\n"
            + table(["method", "accuracy (fp32)", "weight sparsity", "size", "sparse weights", "ONNX 2:4"], rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default=",".join(SECTIONS), help="comma-separated sections to run")
    args = parser.parse_args()
    funcs = {"digits": digits, "importance": importance, "latency": latency, "sparse": sparse}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.only.split(","):
            body = funcs[name](Path(tmp))
            write_section(DOC, f"pruning-{name}", f"{body}\n\nMeasured with `{COMMAND} --only {name}`.")
            print(body, flush=True)


if __name__ == "__main__":
    main()
