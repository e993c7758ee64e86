"""Codebook compression figures; writes its sections of docs/codebook.md.

Every row is a real pipeline run (``compressor.run``): k-means, then centroid fine-tuning, with
quality before and after, storage counted tensor by tensor, the packed file reloaded and compared,
and the compact ONNX checked against the dense export. ``--kmeans`` times the k-means back-ends
on MiniLM's weights, interleaved in one process.

    .venv/bin/python bench/codebook.py --digits          # ~3 min on 2 cores
    .venv/bin/python bench/codebook.py --minilm          # ~10 min on 2 shared cores
    .venv/bin/python bench/codebook.py --kmeans          # ~2 min
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from recipebench import Prepared, fidelity_cells, prepare, recipe, run, table, write_section  # noqa: E402

DOC = ROOT / "docs" / "codebook.md"

#: (label, codebook stage parameters) for the digits CNN; its first conv has rows of 9 weights.
DIGITS = [
    ("scalar k=16 (4 bit)", {"clusters": 16}),
    ("scalar k=8 (3 bit)", {"clusters": 8}),
    ("scalar k=8, per-channel scale", {"clusters": 8, "per_channel_scale": True}),
    ("PQ d=4 k=256 (2 bit)", {"clusters": 256, "dim": 4,
                              "per_layer": {"features.0.0": {"dim": 1, "clusters": 8}}}),
    ("PQ d=4 k=256, refresh", {"clusters": 256, "dim": 4, "assignments": "refresh",
                               "per_layer": {"features.0.0": {"dim": 1, "clusters": 8}}}),
    ("PQ d=8 k=256 (1 bit)", {"clusters": 256, "dim": 8,
                              "per_layer": {"features.0.0": {"dim": 1, "clusters": 8}}}),
]
DIGITS_FINETUNE = {"epochs": 5, "lr": 1e-3}

_MINILM = {"clusters": 16, "weighting": "activation", "assignments": "refresh"}
MINILM = [
    ("all Linear k=16 (4 bit)", {**_MINILM, "layers": ["type:Linear"]}),
    ("all Linear + embeddings k=16 (4 bit)", {**_MINILM, "layers": ["type:Linear", "type:Embedding"]}),
]
#: Dropout off: the target is the original model's own (dropout-free) embedding.
MINILM_FINETUNE = {"epochs": 2, "lr": 1e-4, "dropout": False}


def run_config(prepared: Prepared, zoo: str, label: str, params: dict[str, Any], finetune: dict[str, Any],
               data: dict[str, Any], workdir: Path) -> dict[str, Any]:
    """One pipeline run (codebook + export of both ONNX forms) and every check on its output."""
    import compressor
    from compressor.export.parity import compare
    from compressor.export.runtime import feeds, ort_session
    from compressor.stages.codebook import load_packed, storage
    from compressor.zoo import build_model

    base = {"name": label, "model": {"zoo": zoo}, "data": data, "report": {"latency": "off"}}
    stages = [{"codebook": {**params, "finetune": finetune}},
              {"export": {"formats": ["onnx", "onnx-codebook"], "simplify": False}}]
    run_dir = workdir / f"{zoo}-{len(list(workdir.iterdir()))}"
    start = time.perf_counter()
    report = run(base, stages, run_dir, prepared)
    seconds = time.perf_counter() - start
    row, export = report.rows[1], report.rows[2]
    model = compressor.load_model(run_dir / "checkpoints" / "01-codebook.pt")
    packed = load_packed(report.artifacts["codebook"], build_model(zoo))
    exact = all(torch.equal(v, packed.state_dict()[k]) for k, v in model.state_dict().items())

    task = prepared[1]
    inputs = task.example_inputs(32)
    outs = {}
    for key in ("onnx", "onnx-codebook"):
        session = ort_session(report.artifacts[key])
        outs[key] = session.run(None, feeds(session, inputs))[0]
    s = row["storage"]
    return {
        "label": label, "fp32": report.rows[0]["quality"], "kmeans": row["quality_kmeans"],
        "finetuned": row["quality"], "bits": s["bits_per_weight"], "total": s["total_bytes"],
        "dense": s["dense_bytes"], "file": row["packed_file_bytes"], "index": s["index_bytes"],
        "lzma": storage(model, "lzma").coded_index_bytes, "zlib": storage(model, "zlib").coded_index_bytes,
        "entropy": s["entropy_bound_index_bytes"], "other": s["other_bytes"],
        "onnx_dense": export["onnx_dense_bytes"], "onnx_compact": export["onnx_codebook_bytes"],
        "onnx_diff": float(np.abs(outs["onnx"] - outs["onnx-codebook"]).max()),
        "onnx_cos": compare(outs["onnx"], outs["onnx-codebook"]).cosine,
        "exact_reload": exact, "seconds": seconds,
        "heldout": fidelity_cells(task, model) if task.metric == "fidelity" else {},
    }


def quality_table(rows: list[dict[str, Any]], metric: str) -> str:
    pct = metric == "accuracy"
    fmt = (lambda v: f"{100 * v:.2f}%") if pct else (lambda v: f"{v:.4f}")
    drop = (lambda r: f"{100 * (r['finetuned'] - r['fp32']):+.2f} pt") if pct else (
        lambda r: f"{r['finetuned'] - r['fp32']:+.4f}")
    return table(
        ["config", f"fp32 {metric}", "k-means only", "+ centroid fine-tune", "change",
         "bits/weight (clustered)", "storage (all tensors)", "packed file", "fp32 / packed file",
         "reload exact"],
        [[r["label"], fmt(r["fp32"]), fmt(r["kmeans"]), fmt(r["finetuned"]), drop(r), f"{r['bits']:.2f}",
          _kib(r["total"]), _kib(r["file"]), f"{r['dense'] / r['file']:.2f}x",
          "yes" if r["exact_reload"] else "NO"] for r in rows])


def heldout_table(rows: list[dict[str, Any]]) -> str:
    """Fidelity after fine-tuning on every held-out set (mean / 5th percentile)."""
    columns = list(rows[0]["heldout"])
    return table(["config", *columns], [[r["label"], *r["heldout"].values()] for r in rows])


def size_table(rows: list[dict[str, Any]]) -> str:
    return table(
        ["config", "indices bit-packed", "zlib", "lzma", "entropy bound", "unclustered tensors",
         "fp32 ONNX", "codebook ONNX", "ONNX ratio", "max abs diff vs dense ONNX"],
        [[r["label"], _kib(r["index"]), _kib(r["zlib"]), _kib(r["lzma"]), _kib(r["entropy"]),
          _kib(r["other"]), _kib(r["onnx_dense"]), _kib(r["onnx_compact"]),
          f"{r['onnx_dense'] / r['onnx_compact']:.2f}x", f"{r['onnx_diff']:.1e}"] for r in rows])


def _kib(n: int | None) -> str:
    if n is None:
        return "n/a"
    return f"{n / 2**20:.2f} MiB" if n >= 2**20 else f"{n / 1024:.1f} KiB"


def section(zoo: str, configs: list, finetune: dict[str, Any], metric: str, command: str,
            data: dict[str, Any] | None = None) -> str:
    """``data``: the recipes' data section (default: the zoo model's own dataset)."""
    data = data or {}
    prepared = prepare({"model": {"zoo": zoo}, "data": data})
    with tempfile.TemporaryDirectory() as tmp:
        rows = [run_config(prepared, zoo, label, params, finetune, data, Path(tmp)) for label, params in configs]
    for r in rows:
        print(r, flush=True)
    trained_on = f"; data: {data}" if data else ""
    return "\n\n".join([
        f"Measured by `{command}` (fine-tuning: {finetune}{trained_on}; storage counts every tensor of the "
        "model, fp32 where not clustered; `fp32 / packed file` divides the fp32 weight bytes by "
        "the size of the packed safetensors file, bit-packed indices without entropy coding, "
        "header included; the second table shows what zlib/lzma make of the indices and their "
        "order-0 entropy).",
        quality_table(rows, metric), *([heldout_table(rows)] if rows[0]["heldout"] else []), size_table(rows)])


# ---------------------------------------------------------------------- k-means back-ends
def torch_lloyd(points: torch.Tensor, k: int, iters: int = 100, seed: int = 0) -> torch.Tensor:
    """The candidate we did not keep: Lloyd's algorithm in torch, k-means++ seeds on 20k points."""
    gen = torch.Generator().manual_seed(seed)
    sub = points[torch.randperm(len(points), generator=gen)[:20000]]
    centers = sub[torch.randint(len(sub), (1,), generator=gen)]
    for _ in range(1, k):
        d = torch.cdist(sub, centers).min(1).values ** 2
        centers = torch.cat([centers, sub[torch.multinomial(d / d.sum(), 1, generator=gen)]])
    for _ in range(iters):
        assign = torch.cdist(points, centers).argmin(1)
        sums = torch.zeros_like(centers).index_add_(0, assign, points)
        new = sums / torch.bincount(assign, minlength=k).clamp_min(1)[:, None]
        if torch.equal(new, centers):
            break
        centers = new
    return centers


def kmeans_section(command: str) -> str:
    from compressor.stages.codebook.kmeans import _sklearn, kmeans, nearest
    from compressor.zoo import build_model

    encoder = build_model("minilm").encoder
    weights = {"FFN 1536x384": encoder.encoder.layer[0].intermediate.dense.weight,
               "attention 384x384": encoder.encoder.layer[0].attention.self.query.weight}
    cases = [(name, w, 1, 16) for name, w in weights.items()] + [("FFN 1536x384", weights["FFN 1536x384"], 4, 256)]
    rows = []
    for name, weight, dim, k in cases:
        points = weight.detach().float().reshape(-1, dim)
        backends = {"ours": lambda: kmeans(points, k)[0],
                    "sklearn KMeans": lambda: _sklearn(points.numpy(), k, None, "kmeans", 300, 0).float(),
                    "sklearn MiniBatchKMeans": lambda: _sklearn(points.numpy(), k, None, "minibatch", 300, 0).float(),
                    "torch Lloyd": lambda: torch_lloyd(points, k)}
        if dim > 1:
            del backends["ours"]   # vectors: ours *is* sklearn KMeans
        times: dict[str, list[float]] = {b: [] for b in backends}
        errors: dict[str, float] = {}
        for _ in range(2):   # interleaved rounds, median time
            for label, fn in backends.items():
                start = time.perf_counter()
                codebook = fn()
                times[label].append(time.perf_counter() - start)
                errors[label] = float(((points - codebook[nearest(points, codebook)]) ** 2).mean())
        ref = errors["sklearn KMeans"]
        rows += [[name, dim, k, label, f"{np.median(times[label]):.2f} s", f"{errors[label] / ref:.3f}"]
                 for label in backends]
    return "\n\n".join([f"Measured by `{command}` (median of 2 interleaved rounds; error = mean "
                        "squared quantization error relative to sklearn KMeans).",
                        table(["weight", "dim", "k", "back-end", "time", "relative error"], rows)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--digits", action="store_true")
    parser.add_argument("--minilm", action="store_true")
    parser.add_argument("--kmeans", action="store_true")
    parser.add_argument("--minilm-rows", type=int, default=len(MINILM),
                        help="measure only the first N MiniLM configurations (the first is the recipe's)")
    args = parser.parse_args()
    torch.set_num_threads(2)
    if args.kmeans:
        write_section(DOC, "codebook-kmeans", kmeans_section(".venv/bin/python bench/codebook.py --kmeans"))
    if args.digits:
        write_section(DOC, "codebook-digits", section(
            "digits_cnn", DIGITS, DIGITS_FINETUNE, "accuracy", ".venv/bin/python bench/codebook.py --digits"))
    if args.minilm:
        rows = "" if args.minilm_rows == len(MINILM) else f" --minilm-rows {args.minilm_rows}"
        write_section(DOC, "codebook-minilm", section(
            "minilm", MINILM[:args.minilm_rows], MINILM_FINETUNE, "fidelity",
            f".venv/bin/python bench/codebook.py --minilm{rows}", recipe("codebook_minilm.yaml")["data"]))


if __name__ == "__main__":
    main()
