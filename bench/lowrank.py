"""Low-rank factorisation of MiniLM's feed-forward layers at half rank; writes docs/lowrank.md.

Each method is a real pipeline run (``compressor.run``): factorise, fine-tune, export. The fp32
and factorised ONNX models are then timed in turns in one process (ONNX Runtime, batch 1,
2 threads), and the checkpoint is reloaded and compared tensor by tensor.

    .venv/bin/python bench/lowrank.py          # ~15 min on 2 cores
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from recipebench import table, write_section  # noqa: E402

DOC = ROOT / "docs" / "lowrank.md"
COMMAND = ".venv/bin/python bench/lowrank.py"
#: The two Linear layers of every feed-forward block (not the attention output projection).
FFN = ["*.intermediate.dense", r"re:layer\.\d+\.output\.dense$"]
FINETUNE = {"epochs": 1, "lr": 1e-4}


def run_method(method: str, workdir: Path) -> dict[str, Any]:
    import compressor

    recipe = {"name": f"lowrank-{method}", "model": {"zoo": "minilm"}, "report": {"latency": "off"},
              "stages": [{"lowrank": {"layers": FFN, "rank_ratio": 0.5, "method": method,
                                      "finetune": FINETUNE}},
                         {"export": {"simplify": False}}]}
    run_dir = workdir / method
    start = time.perf_counter()
    report = compressor.run(recipe, run_dir=run_dir)
    seconds = time.perf_counter() - start
    ckpt = run_dir / "checkpoints" / "01-lowrank.pt"
    weights = torch.load(ckpt, weights_only=True)["weights"]
    reloaded = compressor.load_model(ckpt).state_dict()
    row = report.rows[1]
    return {"method": method, "fp32": report.rows[0]["quality"], "factorized": row["quality_factorized"],
            "finetuned": row["quality"], "params": row["params"], "params_fp32": report.rows[0]["params"],
            "ranks": sorted(set(row["ranks"].values())), "layers": len(row["ranks"]),
            "onnx": report.artifacts["onnx"], "parity": report.rows[2]["parity"]["cosine"],
            "exact": all(torch.equal(v, reloaded[k]) for k, v in weights.items()), "seconds": seconds}


def latencies(paths: dict[str, str]) -> dict[str, float]:
    from compressor.export.bench import interleaved
    from compressor.export.runtime import feeds, ort_session
    from compressor.pipeline import build_task
    from compressor.recipe.loader import load_recipe
    from compressor.sources import load_model

    recipe = load_recipe({"model": {"zoo": "minilm"}})
    task = build_task(recipe, load_model(recipe.model))
    inputs = task.example_inputs(1)
    runners = {}
    for name, path in paths.items():
        session = ort_session(path, threads=2)
        feed = feeds(session, inputs)
        runners[name] = (lambda s=session, f=feed: s.run(None, f))
    return {k: v.p50_ms for k, v in interleaved(runners, iterations=100, rounds=10).items()}


def main() -> None:
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as tmp:
        rows = [run_method(m, Path(tmp)) for m in ("svd", "activation")]
        fp32_onnx = Path(tmp) / "fp32.onnx"
        _export_fp32(fp32_onnx)
        lat = latencies({"fp32": str(fp32_onnx), **{r["method"]: r["onnx"] for r in rows}})
    for r in rows:
        print(r, flush=True)
    print(lat)
    body = table(
        ["method", "ranks", "fidelity fp32", "factorised", "+ fine-tune", "params", "ORT p50 (batch 1)",
         "speed-up vs fp32", "ONNX parity (cos)", "reload exact"],
        [["fp32", "-", f"{rows[0]['fp32']:.4f}", "-", "-", f"{rows[0]['params_fp32'] / 1e6:.2f}M",
          f"{lat['fp32']:.2f} ms", "1.00x", "-", "-"]]
        + [[r["method"], f"{r['layers']} layers at {'/'.join(map(str, r['ranks']))}", f"{r['fp32']:.4f}",
            f"{r['factorized']:.4f}", f"{r['finetuned']:.4f}", f"{r['params'] / 1e6:.2f}M",
            f"{lat[r['method']]:.2f} ms", f"{lat['fp32'] / lat[r['method']]:.2f}x", f"{r['parity']:.6f}",
            "yes" if r["exact"] else "NO"] for r in rows])
    write_section(DOC, "lowrank-minilm", "\n\n".join([
        f"Measured by `{COMMAND}`: MiniLM's 12 feed-forward Linear layers at half rank "
        f"(`rank_ratio: 0.5`), fine-tuning {FINETUNE}; latency from ONNX Runtime, variants timed in "
        "turns in one process (2 threads; medians; read the ratios).", body]))


def _export_fp32(path: Path) -> None:
    from compressor.export.onnx import export_onnx
    from compressor.pipeline import build_task
    from compressor.recipe.loader import load_recipe
    from compressor.sources import load_model

    recipe = load_recipe({"model": {"zoo": "minilm"}})
    model = load_model(recipe.model)
    task = build_task(recipe, model)
    export_onnx(model, task.example_inputs(2), path, input_names=task.input_names,
                output_names=task.output_names, dynamic_axes=task.dynamic_axes)


if __name__ == "__main__":
    main()
