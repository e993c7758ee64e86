"""Run the exported model with ONNX Runtime; needs only `pip install onnxruntime numpy`.

    python infer.py                      # the bundled held-out samples, checked against PyTorch
    python infer.py --model onnx-fp16    # another exported variant (see manifest.json "models")
    python infer.py --inputs batch.npz   # your arrays, named like manifest.json "inputs"
    python infer.py --save out.npz       # also write the outputs, named like manifest.json "outputs"

Written by compressor into each deploy bundle (the file is compressor/export/infer_example.py);
it reads manifest.json beside it for file names, input names and the parity tolerance.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort

HERE = Path(__file__).resolve().parent


def load(kind: str, threads: int | None = None) -> tuple[dict, ort.InferenceSession]:
    manifest = json.loads((HERE / "manifest.json").read_text())
    models = {k: m for k, m in manifest["models"].items() if str(m.get("file", "")).endswith(".onnx")}
    if kind not in models:
        sys.exit(f"no ONNX model {kind!r} in this bundle; choose from {', '.join(models)}")
    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    session = ort.InferenceSession(str(HERE / models[kind]["file"]), opts,
                                   providers=["CPUExecutionProvider"])
    return manifest, session


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="onnx", help="which exported model to run (default: onnx)")
    parser.add_argument("--inputs", help=".npz file with one array per model input (default: sample.npz)")
    parser.add_argument("--threads", type=int, help="intra-op threads (default: ONNX Runtime's)")
    parser.add_argument("--save", help="write the outputs to this .npz file")
    args = parser.parse_args(argv)

    manifest, session = load(args.model, args.threads)
    data = np.load(args.inputs or HERE / manifest["sample"]["file"])
    feeds = {}
    for spec in manifest["inputs"]:
        if spec["name"] not in data:
            sys.exit(f"input {spec['name']!r} ({spec['dtype']}, shape {spec['shape']}) missing from the .npz")
        feeds[spec["name"]] = np.asarray(data[spec["name"]], dtype=spec["dtype"])
    outputs = session.run(None, feeds)
    for spec, out in zip(manifest["outputs"], outputs):
        print(f"{spec['name']}: shape {list(out.shape)}, dtype {out.dtype}")
    if args.save:
        np.savez(args.save, **{spec["name"]: out for spec, out in zip(manifest["outputs"], outputs)})
    if manifest["task"]["metric"] == "accuracy":
        print(f"predicted classes: {outputs[0].reshape(len(outputs[0]), -1).argmax(1).tolist()}")

    expected_key = manifest["sample"]["expected"]
    if args.inputs or expected_key not in data:
        return 0
    ref = data[expected_key].reshape(len(outputs[0]), -1).astype(np.float64)
    out = outputs[0].reshape(len(ref), -1).astype(np.float64)
    cosine = float(((ref * out).sum(1) / (np.linalg.norm(ref, axis=1) * np.linalg.norm(out, axis=1) + 1e-30)).mean())
    max_abs = float(np.abs(ref - out).max())
    tol = manifest["models"][args.model]["tolerance"]
    ok = cosine >= tol["min_cosine"] and (tol["atol"] is None or max_abs <= tol["atol"])
    print(f"vs PyTorch on the bundled samples: cosine {cosine:.6f}, max abs error {max_abs:.3g}"
          f" -> {'ok' if ok else 'MISMATCH'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
