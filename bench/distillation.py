"""MiniLM pruning + distillation figures for docs/distillation.md, measured in one run.

    .venv/bin/python bench/distillation.py [--only ffn,heads,latency,curve]

- ffn: all-MiniLM-L6-v2 with every FFN halved (recipes/prune_distill_minilm.yaml): pruned alone,
  then distilled.
- heads: half of every layer's attention heads removed, then distilled
  (recipes/prune_heads_minilm.yaml).
- latency: ONNX Runtime latency of the unpruned, FFN-pruned and head-pruned encoders, interleaved
  in this process (batch 1, 64 tokens, medians and ratios).
- curve: fidelity against ONNX Runtime latency at 128 tokens for MiniLM int8 alone and the stages
  of recipes/prune_distill_int8_minilm.yaml (FFN cut, distilled, int8) with a quarter and half of
  every FFN removed, all files timed in turns.

Fidelity is the mean cosine between the compressed and the original model's sentence embeddings
on held-out sentences: the recipe dataset's own held-out split and, for the ``english`` corpus, the
held-out docstrings and the shipped everyday-English set (mean / 5th percentile), never trained on.
"""
from __future__ import annotations

import os

os.environ.setdefault("TQDM_DISABLE", "1")  # before anything imports tqdm

from pathlib import Path  # noqa: E402

import compressor  # noqa: E402
from compressor.export.bench import compare_onnx, interleaved  # noqa: E402
from compressor.export.onnx import export_onnx  # noqa: E402
from compressor.export.runtime import feeds, ort_session  # noqa: E402
from compressor.zoo import DATASETS, build_model  # noqa: E402
from recipebench import heldout_fidelity, last_checkpoint, main, prepare, recipe, run, table  # noqa: E402


def _size(row: dict, base: dict) -> str:
    return f"{row['params'] / base['params']:.2f}x / {row['macs'] / base['macs']:.2f}x"


def _epochs(row: dict) -> str:
    return " ".join(f"{q:.3f}" for q in row.get("quality_per_epoch", []))


def _augmented(recipe_: dict) -> str:
    augment = recipe_["data"].get("augment")
    return f" with augmented sentences (`data.augment: {augment}`)" if augment is not None else ""


def ffn(tmp: Path) -> str:
    base_recipe = recipe("prune_distill_minilm.yaml")
    prune, distill = base_recipe["stages"][0], base_recipe["stages"][1]
    train = distill["distill"]["finetune"]
    prepared = prepare(base_recipe)
    report = run(base_recipe, [prune, distill], tmp / "ffn-distill", prepared)
    labels = ["original", "FFN halved, no training", "+ distill (cosine + MiniLM relations + hidden-state hints)"]
    columns, fidelity = heldout_fidelity(prepared, dict(zip(labels, [None, last_checkpoint(report, 0),
                                                                      last_checkpoint(report)])))
    base = report.rows[0]
    rows = [[label, *fidelity[label], _size(row, base), _epochs(row)] for label, row in zip(labels, report.rows)]
    return (f"all-MiniLM-L6-v2, FFN 1536 -> 768 in all 6 layers (l2 importance), distilled for {train['epochs']} "
            f"epochs at lr {train['lr']} ({train.get('optimizer', 'adam')}) on the "
            f"`{base_recipe['data']['dataset']}` corpus{_augmented(base_recipe)}; fidelity (mean / 5th percentile "
            "of the cosine to the original embeddings) on each held-out set, per epoch on the corpus's own "
            "held-out split (index 0 is before training).\n\n"
            + table(["model", *columns, "params / MACs", "fidelity per epoch"], rows))


def heads(tmp: Path) -> str:
    base_recipe = recipe("prune_heads_minilm.yaml")
    train = base_recipe["stages"][1]["distill"]["finetune"]
    base, pruned, student = run(base_recipe, base_recipe["stages"][:2], tmp / "heads").rows
    rows = [["original", f"{base['quality']:.4f}", "1.00x / 1.00x", ""],
            ["half the heads removed, no training", f"{pruned['quality']:.4f}", _size(pruned, base), ""],
            ["+ distill", f"{student['quality']:.4f}", _size(student, base), _epochs(student)]]
    return (f"all-MiniLM-L6-v2, 12 -> 6 heads in all 6 layers (l2 importance, averaged per head), "
            f"distilled for {train['epochs']} epochs at lr {train['lr']}.\n\n"
            + table(["model", "fidelity", "params / MACs", "fidelity per epoch"], rows))


def latency(tmp: Path) -> str:
    models = {"original": build_model("minilm")}
    for label, name in (("FFN halved", "prune_distill_minilm.yaml"), ("heads halved", "prune_heads_minilm.yaml")):
        base_recipe = recipe(name)
        report = run(base_recipe, base_recipe["stages"][:1], tmp / label.replace(" ", "-"))
        models[label] = compressor.load_model(last_checkpoint(report))
    task = DATASETS["docstrings"].build(model=models["original"], samples=20)
    inputs, calls = task.example_inputs(1), {}
    for label, model in models.items():
        path = export_onnx(model, inputs, tmp / f"{label.replace(' ', '-')}.onnx", input_names=task.input_names,
                           output_names=task.output_names, dynamic_axes=task.dynamic_axes)
        session = ort_session(path)
        calls[label] = (lambda s=session, f=feeds(session, inputs): s.run(None, f))
    lat = interleaved(calls, warmup=5, iterations=60, rounds=6)
    base = lat["original"].p50_ms
    rows = [[label, f"{lat[label].p50_ms:.2f}", f"{lat[label].p50_ms / base:.2f}x"] for label in models]
    return (f"ONNX Runtime on this CPU, batch 1, {inputs[0].shape[1]} tokens, the three encoders "
            "interleaved in one process (p50 of 60 runs each).\n\n" + table(["model", "p50 ms", "ratio"], rows))


def curve(tmp: Path) -> str:
    base_recipe = recipe("prune_distill_int8_minilm.yaml")
    prepared = prepare(base_recipe)
    original, task = prepared
    stages = base_recipe["stages"]
    int8_only = run(base_recipe, stages[2:], tmp / "int8-only", prepared)
    checkpoints = {"original": None, "int8 alone": last_checkpoint(int8_only)}
    files = {"original": tmp / "original.onnx", "int8 alone": int8_only.artifacts["onnx"]}
    floats = {"original": original}
    for kept, sparsity in (("3/4", 0.25), ("1/2", 0.5)):
        pruned = [{"prune": {**stages[0]["prune"], "sparsity": sparsity}}, *stages[1:]]
        full = run(base_recipe, pruned, tmp / f"ffn-{sparsity}", prepared)
        label = f"FFN {kept} + distilled"
        checkpoints[label] = last_checkpoint(full, 1)  # after prune (0) and distill (1)
        checkpoints[f"{label} + int8"] = last_checkpoint(full)
        floats[label] = compressor.load_model(checkpoints[label])
        files[label], files[f"{label} + int8"] = tmp / f"ffn-{sparsity}.onnx", full.artifacts["onnx"]
    columns, fidelity = heldout_fidelity(prepared, checkpoints)
    for label, model in floats.items():
        export_onnx(model, task.example_inputs(2), files[label], input_names=task.input_names,
                    output_names=task.output_names, dynamic_axes=task.dynamic_axes)
    ratios: dict[str, list[str]] = {label: [] for label in checkpoints}
    timings = [(batch, threads) for batch in (1, 8) for threads in (1, 2)]
    for batch, threads in timings:
        lat = compare_onnx(files, task.example_inputs(batch), threads=threads, iterations=40, rounds=8)
        for label in checkpoints:
            ratios[label].append(f"{lat[label].p50_ms / lat['original'].p50_ms:.2f}x ({lat[label].p50_ms:.1f} ms)")
    rows = [[label, *fidelity[label], *ratios[label]] for label in checkpoints]
    seq = task.example_inputs(1)[0].shape[1]
    return (f"all-MiniLM-L6-v2 on this CPU at {seq} tokens: int8 alone (the recipe's quantize stage on the "
            "original) and the stages of `recipes/prune_distill_int8_minilm.yaml` with a quarter and with half "
            "of every FFN's neurons removed (the recipe: half). Fidelity as above, of the "
            "PyTorch model (int8: fake-quantized; the export's parity check holds the ONNX file to it); "
            "latency: ONNX Runtime median against the original fp32 file, all six files timed in turns "
            "in one process (40 runs each).\n\n"
            + table(["model", *columns, *(f"batch {b}, {t} thr" for b, t in timings)], rows))


if __name__ == "__main__":
    main("docs/distillation.md", __file__, {"ffn": ffn, "heads": heads, "latency": latency, "curve": curve},
         __doc__)
