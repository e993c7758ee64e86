"""Fidelity of a recipe's final model on every held-out set of its task; writes a doc section.

    .venv/bin/python bench/heldout.py recipes/minilm_int8.yaml --doc docs/quantization.md

Runs the recipe (per-stage latency off) and reports, for the input and the final model, the mean
and 5th percentile of the cosine to the original model on the task's own held-out split and on
each further held-out set (for MiniLM: held-out docstrings, everyday English; docs/text_data.md).
The section is named after the recipe (``<!-- bench:heldout-NAME -->``).
"""
from __future__ import annotations

import argparse
import os

os.environ.setdefault("TQDM_DISABLE", "1")  # before anything imports tqdm

import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

import yaml  # noqa: E402

from recipebench import ROOT, heldout_fidelity, last_checkpoint, prepare, run, table, write_section  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recipe", type=Path)
    parser.add_argument("--doc", type=Path, required=True, help="the doc whose section is (re)written")
    args = parser.parse_args()
    base = yaml.safe_load(args.recipe.read_text())
    base["report"] = {**base.get("report", {}), "latency": "off"}
    name = base.get("name") or args.recipe.stem
    prepared = prepare(base)
    with tempfile.TemporaryDirectory() as tmp:
        report = run(base, base["stages"], Path(tmp) / name, prepared)
        columns, cells = heldout_fidelity(prepared, {"fp32 (input)": None, name: last_checkpoint(report)})
    body = (f"`{args.recipe.as_posix()}` on the `{base['data']['dataset']}` task: fidelity (mean / 5th "
            "percentile of the cosine to the original model) on each held-out set.\n\n"
            + table(["model", *columns], [[label, *row] for label, row in cells.items()])
            + f"\n\nMeasured with `.venv/bin/python bench/heldout.py {args.recipe.as_posix()} "
            f"--doc {args.doc.as_posix()}`.")
    write_section(ROOT / args.doc, f"heldout-{name}", body)
    print(body, flush=True)


if __name__ == "__main__":
    main()
