"""Pruning figures for docs/pruning.md, all measured in one run of this script.

    .venv/bin/python bench/pruning.py [--only digits,importance,ffn_importance,latency,sparse]

- digits: digits_cnn at 50% channels: pruned alone, then fine-tuning or distillation with the same
  epochs and learning rate (recipes/prune_distill_digits_cnn.yaml).
- importance: each criterion at 50% on digits_cnn, right after pruning and after 2 epochs.
- ffn_importance: MiniLM with half of every FFN removed by each criterion, before any training:
  fidelity on every held-out set.
- latency: resnet18 / mobilenet_v2 shapes at 50% channels: params, MACs and ONNX Runtime latency
  against the unpruned model, timed interleaved in this process (medians, ratios).
- sparse: unstructured and 2:4 sparsity on digits_cnn: accuracy, sparse storage, ONNX 2:4 check.
"""
from __future__ import annotations

import os

os.environ.setdefault("TQDM_DISABLE", "1")  # before anything imports tqdm

import copy  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402
from recipebench import heldout_fidelity, last_checkpoint, main, prepare, recipe, run, table  # noqa: E402

import compressor  # noqa: E402
from compressor.export.bench import compare_onnx  # noqa: E402
from compressor.export.onnx import export_onnx  # noqa: E402
from compressor.export.sparsity import semi_structured_report  # noqa: E402
from compressor.recipe.loader import load_recipe  # noqa: E402
from compressor.sources import load_model  # noqa: E402


def _ratio(value: float, base: float) -> str:
    return f"{value / base:.2f}x"


def digits(tmp: Path) -> str:
    base_recipe = recipe("prune_distill_digits_cnn.yaml")
    prune, distill = base_recipe["stages"][0], base_recipe["stages"][1]
    train = distill["distill"]["finetune"]
    hints = copy.deepcopy(distill)
    hints["distill"]["features"] = {"weight": 1.0, "layers": ["features.1", "features.3"]}
    variants = {"pruned, no training": [prune], "+ fine-tune (task loss)": [prune, {"finetune": train}],
                "+ distill (logit KD, T=4)": [prune, distill], "+ distill (KD + feature hints)": [prune, hints]}
    rows = []
    for i, (label, stages) in enumerate(variants.items()):
        report = run(base_recipe, stages, tmp / f"digits-{i}")
        base, last = report.rows[0], report.rows[-1]
        rows.append([label, f"{last['quality']:.4f}", f"{last['quality'] / base['quality']:.1%}",
                     _ratio(last["params"], base["params"]), _ratio(last["macs"], base["macs"])])
    rows.insert(0, ["fp32 (unpruned)", f"{base['quality']:.4f}", "100.0%", "1.00x", "1.00x"])
    return (f"digits_cnn, 50% of every conv's channels (`round_to: 8`), {train['epochs']} epochs at "
            f"lr {train['lr']} for both fine-tuning and distillation (teacher: the unpruned CNN); "
            "held-out accuracy on 360 images.\n\n"
            + table(["model", "accuracy", "of fp32", "params", "MACs"], rows))


def importance(tmp: Path) -> str:
    base_recipe = recipe("prune_distill_digits_cnn.yaml")
    rows = []
    for criterion in ("l1", "l2", "bn_scale", "taylor", "random"):
        stages = [{"prune": {"importance": criterion, "sparsity": 0.5, "round_to": 8}},
                  {"finetune": {"epochs": 2, "lr": 0.003}}]
        report = run(base_recipe, stages, tmp / f"importance-{criterion}")
        rows.append([criterion, f"{report.rows[1]['quality']:.4f}", f"{report.rows[2]['quality']:.4f}"])
    return ("Importance criteria on digits_cnn at 50% channels: accuracy right after pruning and "
            "after 2 fine-tuning epochs.\n\n" + table(["importance", "pruned", "+ 2 epochs"], rows))


def ffn_importance(tmp: Path) -> str:
    base_recipe = recipe("prune_distill_minilm.yaml")
    prepared = prepare(base_recipe)
    prune = base_recipe["stages"][0]["prune"]
    variants = {"l2": {"importance": "l2"}, "activation, 16 batches": {"importance": "activation", "taylor_batches": 16},
                "random": {"importance": "random"}}
    models: dict[str, Path | None] = {"original": None}
    for i, (label, params) in enumerate(variants.items()):
        report = run(base_recipe, [{"prune": {**prune, **params}}], tmp / f"ffn-{i}", prepared)
        models[label] = last_checkpoint(report)
    columns, cells = heldout_fidelity(prepared, models)
    return (f"all-MiniLM-L6-v2 with {prune['sparsity']:.0%} of every FFN's neurons removed by each criterion, "
            "no training after: fidelity (mean / 5th percentile of the cosine to the original embeddings) "
            "on each held-out set. Taylor is refused on this fidelity task (its loss is zero at the start).\n\n"
            + table(["importance", *columns], [[label, *row] for label, row in cells.items()]))


def latency(tmp: Path) -> str:
    rows = []
    for zoo, round_to in (("resnet18", None), ("mobilenet_v2", None), ("mobilenet_v2", 8)):
        base_recipe = recipe(f"prune_distill_{zoo}.yaml")
        prune = copy.deepcopy(base_recipe["stages"][0])
        prune["prune"]["round_to"] = round_to or prune["prune"]["round_to"]
        report = run(base_recipe, [prune], tmp / f"latency-{zoo}")
        base_row, pruned_row = report.rows
        models = {"unpruned": load_model(load_recipe(base_recipe).model),
                  "pruned": compressor.load_model(last_checkpoint(report))}
        paths = {label: export_onnx(model, (torch.randn(1, 3, 224, 224),), tmp / f"{zoo}-{label}.onnx",
                                    input_names=["image"], output_names=["logits"],
                                    dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}})
                 for label, model in models.items()}
        for threads, batch, spinning in ((1, 1, False), (2, 1, False), (2, 1, True), (2, 8, False), (2, 8, True)):
            lat = compare_onnx(paths, (torch.randn(batch, 3, 224, 224),), threads=threads, iterations=60,
                               rounds=6, spinning=spinning)
            rows.append([zoo, prune["prune"]["round_to"], f"{base_row['params'] / 1e6:.2f}M -> {pruned_row['params'] / 1e6:.2f}M",
                         f"{base_row['macs'] / 1e9:.2f}G -> {pruned_row['macs'] / 1e9:.2f}G", threads,
                         "on" if spinning else "off", batch,
                         f"{lat['unpruned'].p50_ms:.2f} -> {lat['pruned'].p50_ms:.2f}",
                         _ratio(lat["pruned"].p50_ms, lat["unpruned"].p50_ms)])
    return ("ImageNet shapes (3x224x224) at 50% channels (l2 importance), exported to "
            "ONNX and timed in ONNX Runtime on this CPU, both models in turns in one process (p50 of "
            "60 runs each). Spinning off: both sessions open, worker threads sleep between operators "
            "(`export/runtime.py`). Spinning on: ONNX Runtime's default, as one model per process runs "
            "it; each turn opens the session it times and closes it after "
            "(`compressor.export.bench.compare_onnx`). Without spinning, a 2-thread run pays a thread "
            "wake-up per operator, which the pruned MobileNet-V2 at batch 1 (about 1.5 ms for 170 "
            "nodes) feels most. MobileNet-V2 is shown with its recipe's `round_to: 16` and with 8: "
            "ORT's AVX-512 kernels block channels by 16, and 8-channel layers cost layout reorders.\n\n"
            + table(["model", "round_to", "params", "MACs", "threads", "spinning", "batch", "ORT p50 ms",
                     "latency ratio"], rows))


def sparse(tmp: Path) -> str:
    base_recipe = recipe("prune_distill_digits_cnn.yaml")
    train = {"epochs": 2, "lr": 0.001}
    variants = {"unstructured 50%": {"method": "unstructured", "sparsity": 0.5},
                "unstructured 80% (global)": {"method": "unstructured", "sparsity": 0.8, "global_ranking": True},
                "2:4": {"method": "2:4"}}
    rows = []
    for i, (label, params) in enumerate(variants.items()):
        report = run(base_recipe, [{"prune": {**params, "finetune": train}}], tmp / f"sparse-{i}")
        base, row = report.rows
        path = export_onnx(compressor.load_model(last_checkpoint(report)), (torch.rand(2, 1, 8, 8),),
                           tmp / f"sparse-{i}.onnx", input_names=["image"], output_names=["logits"])
        checked = semi_structured_report(path)
        rows.append([label, f"{row['quality']:.4f} ({base['quality']:.4f})", f"{row['weight_sparsity']:.2f}",
                     _ratio(row["size_bytes"], base["size_bytes"]), f"{row['sparse_weight_ratio']:.2f}x",
                     f"{sum(w.holds for w in checked)}/{len(checked)}"])
    return ("Weight sparsity on digits_cnn, 2 fine-tuning epochs inside the stage (masks held). Size: "
            "the whole model in its sparse encoding vs dense fp32; sparse weights: the pruned layers' "
            "weights alone; ONNX 2:4: weights of the exported file holding 2:4 (the first conv has "
            "one input channel and is skipped).\n\n"
            + table(["method", "accuracy (fp32)", "weight sparsity", "size", "sparse weights", "ONNX 2:4"], rows))


if __name__ == "__main__":
    main("docs/pruning.md", __file__,
         {"digits": digits, "importance": importance, "ffn_importance": ffn_importance, "latency": latency,
          "sparse": sparse}, __doc__)
