"""Run directories: where they go by default, and which ones the tool may replace.

Nothing is deleted that the tool did not write: a directory is replaced only when it holds this
tool's run marker (``run.json`` with the keys the pipeline writes). Names from recipes never
place a default run directory outside ``runs/``.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from compressor.errors import CompressorError
from compressor.io import is_partial_write

#: The run marker: progress and metrics per stage, written first into every run directory.
RUN_STATE = "run.json"
RUNS = Path("runs")


def default_run_dir(stem: str, suffix: str = "") -> Path:
    """``runs/<stem><suffix>``; refuses a stem that is not one plain folder name (``../..``,
    ``/abs``, ``a/b``) so a recipe's name cannot place it elsewhere."""
    name = f"{stem}{suffix}"
    if not stem or stem.startswith(".") or any(c in name for c in "/\\\0") or Path(name).name != name:
        raise CompressorError(f"name {stem!r} cannot name a folder under {RUNS}/: use letters, digits, "
                              "'-', '_' and '.', not a path (or give --out)")
    return RUNS / name


def read_run_state(run_dir: Path) -> dict[str, Any] | None:
    """The run marker's contents when ``run_dir`` is a run directory of this tool, else None."""
    try:
        state = json.loads((run_dir / RUN_STATE).read_text())
    except (OSError, ValueError):
        return None
    if isinstance(state, dict) and "recipe_hash" in state and isinstance(state.get("stages"), list):
        return state
    return None


def prepare_run_dir(run_dir: Path, *, overwrite: bool) -> str | None:
    """Make ``run_dir`` ready for a new run; returns a note when an earlier run was replaced.

    Missing or empty (files an interrupted atomic write left do not count): used as is. A run
    directory of this tool that never finished a stage (it failed while loading or in its first
    stage): replaced, ``overwrite`` or not. One with finished stages: replaced with ``overwrite``,
    else an error that suggests ``--resume``. Anything else: refused, ``overwrite`` or not.
    """
    if run_dir.exists() and not run_dir.is_dir():
        raise CompressorError(f"{run_dir}: exists and is not a directory; give another --out")
    if not run_dir.exists() or all(is_partial_write(p.name) for p in run_dir.iterdir()):
        run_dir.mkdir(parents=True, exist_ok=True)
        return None
    state = read_run_state(run_dir)
    if state is None:
        raise CompressorError(
            f"{run_dir}: exists and is not a compressor run directory (no {RUN_STATE} written by "
            f"compressor); refusing to {'delete' if overwrite else 'write into'} it: give another --out "
            "or empty it yourself")
    finished = [s for s in state["stages"] if isinstance(s, dict) and s.get("status") == "done"]
    if finished and not overwrite:
        raise CompressorError(f"{run_dir} already holds a run with {len(finished)} finished stage(s): "
                              f"resume it with `compressor run --resume {run_dir}` or pass --overwrite")
    if run_dir.is_symlink():
        raise CompressorError(f"{run_dir}: is a symbolic link; refusing to replace it, give another --out")
    shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    return None if finished else f"{run_dir}: replaced an earlier run that finished no stage"
