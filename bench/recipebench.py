"""Helpers for bench scripts that run recipes and write their figures into a doc section.

A doc keeps its prose; the script owns the text between ``<!-- bench:NAME -->`` and
``<!-- /bench:NAME -->`` (appended when the markers are missing), so figures are never typed by
hand and always sit next to the command that produced them.
"""
from __future__ import annotations

import argparse
import copy
import tempfile
from pathlib import Path
from typing import Callable, Sequence

import torch
import yaml

import compressor
from compressor.pipeline import Pipeline, build_task
from compressor.recipe.loader import load_recipe
from compressor.sources import load_model
from compressor.task import Task

ROOT = Path(__file__).resolve().parents[1]


def recipe(name: str) -> dict:
    """A recipe from recipes/ as a dict, with per-stage latency off (benches time interleaved)."""
    data = yaml.safe_load((ROOT / "recipes" / name).read_text())
    data["report"] = {"latency": "off"}
    return data


#: A recipe's input model and its task, built once and shared by the runs of a section.
Prepared = tuple[torch.nn.Module, Task]


def prepare(base: dict) -> Prepared:
    """The input model and task of recipe ``base`` (a text task embeds thousands of sentences:
    build it once per section, not once per run)."""
    recipe_ = load_recipe(base)
    original = load_model(recipe_.model)
    return original, build_task(recipe_, original)


def run(base: dict, stages: list[dict], out: Path, prepared: Prepared | None = None) -> compressor.Report:
    """Run ``base`` with its stages replaced by ``stages``, on ``prepared`` model and task if given."""
    recipe_ = {**copy.deepcopy(base), "stages": stages}
    if prepared is None:
        return compressor.run(recipe_, run_dir=out, overwrite=True)
    return Pipeline(load_recipe(recipe_), out, overwrite=True, base=prepared).run()


def last_checkpoint(report: compressor.Report, index: int = -1) -> Path:
    """A run's last checkpoint, or its ``index``-th."""
    return sorted((Path(report.run_dir) / "checkpoints").glob("*.pt"))[index]


@torch.no_grad()
def _scores(task: Task, model: torch.nn.Module, split: str) -> torch.Tensor:
    model.eval()
    return torch.cat([task.score(model(*inputs), target)
                      for inputs, target in map(task.split, task.loader(split))])


def fidelity_cells(task: Task, model: torch.nn.Module) -> dict[str, str]:
    """Fidelity of ``model`` on the task's held-out split and on its further held-out sets, each as
    "mean / 5th percentile", by column title."""
    splits = {f"{task.name} held-out": "val", **{f"{name} held-out": name for name in task.heldout}}
    cells = {}
    for title, split in splits.items():
        scores = _scores(task, model, split)
        cells[title] = f"{scores.mean():.4f} / {scores.quantile(0.05):.4f}"
    return cells


def heldout_fidelity(prepared: Prepared, models: dict[str, Path | None]) -> tuple[list[str], dict[str, list[str]]]:
    """:func:`fidelity_cells` of each checkpoint (``None``: the input model): (column titles, cells
    by model label)."""
    original, task = prepared
    cells = {label: fidelity_cells(task, original if checkpoint is None else compressor.load_model(checkpoint))
             for label, checkpoint in models.items()}
    columns = list(next(iter(cells.values())))
    return columns, {label: list(row.values()) for label, row in cells.items()}


def table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def write_section(path: Path, name: str, body: str) -> None:
    begin, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    text = path.read_text() if path.exists() else ""
    block = f"{begin}\n{body.strip()}\n{end}"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        text = head + block + rest.split(end, 1)[1]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text)


def main(doc: str, script: str, sections: dict[str, Callable[[Path], str]], description: str | None) -> None:
    """Command line of a bench script: run the chosen sections, each written to ``doc`` under its
    own markers together with the command that reproduces it."""
    parser = argparse.ArgumentParser(description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default=",".join(sections), help="comma-separated sections to run")
    args = parser.parse_args()
    stem = Path(script).stem
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.only.split(","):
            body = sections[name](Path(tmp))
            command = f".venv/bin/python bench/{stem}.py --only {name}"
            write_section(ROOT / doc, f"{stem}-{name}", f"{body}\n\nMeasured with `{command}`.")
            print(body, flush=True)
