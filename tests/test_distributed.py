"""Data-parallel runs under torchrun (compressor/distributed.py): sharding, global BatchNorm, and
real 1- and 2-process gloo launches of `compressor run` (equivalence, mismatched recipes, a killed rank)."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import yaml
from torch import nn
from torch.utils.data import TensorDataset

from compressor import distributed
from compressor.errors import CompressorError
from compressor.task import Task
from compressor.zoo.digits import digits_cnn

#: Seconds any torchrun launch may take here (2 shared cores) before the test calls it a hang.
LAUNCH_TIMEOUT_S = 300


def _task(n: int = 50) -> Task:
    data = TensorDataset(torch.arange(n, dtype=torch.float32)[:, None], torch.zeros(n, dtype=torch.long))
    return Task(name="t", metric="accuracy", train=data, val=data, input_names=["x"])


def _as_rank(monkeypatch: pytest.MonkeyPatch, rank: int, world: int) -> None:
    monkeypatch.setattr(distributed, "active", lambda: True)
    monkeypatch.setattr(distributed, "rank", lambda: rank)
    monkeypatch.setattr(distributed, "world_size", lambda: world)


def _batches(task: Task, split: str, **kwargs) -> list[list[int]]:
    return [batch[0][:, 0].long().tolist() for batch in task.loader(split, shard=True, **kwargs)]


def test_ranks_split_each_global_batch_of_one_permutation(monkeypatch: pytest.MonkeyPatch) -> None:
    task = _task()
    _as_rank(monkeypatch, 0, 1)
    single = _batches(task, "train", batch_size=10, seed=3)
    shares = []
    for rank in (0, 1):
        _as_rank(monkeypatch, rank, 2)
        shares.append(_batches(task, "train", batch_size=10, seed=3))
    assert [len(b) for b in shares[0]] == [5] * 5
    assert [sorted(a + b) for a, b in zip(*shares)] == [sorted(b) for b in single]


def test_evaluation_shards_score_every_sample_once(monkeypatch: pytest.MonkeyPatch) -> None:
    task = _task(51)
    seen = []
    for rank in (0, 1):
        _as_rank(monkeypatch, rank, 2)
        seen += [i for b in _batches(task, "val") for i in b]
    assert sorted(seen) == list(range(51))


def test_global_batch_must_split_evenly(monkeypatch: pytest.MonkeyPatch) -> None:
    _as_rank(monkeypatch, 0, 2)
    with pytest.raises(CompressorError, match="batch size 9 is the global batch of all 2 torchrun ranks"):
        _task().loader("train", batch_size=9, shard=True)


def test_bad_timeout_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setenv(distributed.TIMEOUT_ENV, "soon")
    with pytest.raises(CompressorError, match="COMPRESSOR_DIST_TIMEOUT='soon': expected a number of seconds"):
        with distributed.process_group():
            pass


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_global_batchnorm_matches_batchnorm_in_one_process_group() -> None:
    """Same outputs, gradients and running statistics as BatchNorm2d (the cross-rank sums are
    covered by the 2-process equivalence test below)."""
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{_free_port()}", rank=0, world_size=1)
    try:
        reference = nn.BatchNorm2d(4, momentum=0.2)
        with torch.no_grad():
            reference.weight.uniform_(0.5, 1.5)
            reference.bias.uniform_(-1, 1)
        ours = distributed.GlobalBatchNorm.sharing(nn.BatchNorm2d(4, momentum=0.2).train())
        ours.load_state_dict(reference.state_dict())
        x = torch.randn(6, 4, 3, 3) * 3 + 1
        outputs = []
        for layer in (reference, ours):
            inp = x.clone().requires_grad_(True)
            out = layer(inp)
            (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
            outputs.append((out, inp.grad, layer.weight.grad, layer.running_mean, layer.running_var))
        for a, b in zip(*outputs):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    finally:
        dist.destroy_process_group()


# ---------------------------------------------------------------------- real torchrun launches
def _torchrun(nproc: int, *args: str, no_python: bool = False) -> list[str]:
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"]
    if no_python:
        return launcher + ["--no-python", *args]
    return launcher + ["-m", "compressor.cli", *args]


def _env() -> dict[str, str]:
    return {**os.environ, distributed.TIMEOUT_ENV: "120", "OMP_NUM_THREADS": "1"}


def _recipe(tmp_path: Path, name: str, stages: list[dict]) -> Path:
    digits_cnn()  # train and cache the zoo model here, not in both ranks at once
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"name": name, "model": {"zoo": "digits_cnn"},
                                    "data": {"dataset": "digits", "batch_size": 64},
                                    "report": {"latency": "off"}, "stages": stages}))
    return path


# SGD, not Adam: Adam divides by the root of the squared gradient, so a near-zero gradient that is
# summation-order noise (one process against two) still moves its weight by up to lr per step, and
# the two runs drifted 1e-3 apart; with SGD they agree to 1e-6.
PRUNE_DISTILL = [{"prune": {"method": "channel", "importance": "l2", "sparsity": 0.5, "round_to": 8}},
                 {"distill": {"kd": {"weight": 1.0}, "finetune": {"epochs": 2, "lr": 0.05, "optimizer": "sgd",
                                                                   "max_steps_per_epoch": 6}}}]


@pytest.mark.slow
def test_two_processes_distill_the_same_model_as_one(tmp_path: Path) -> None:
    recipe = _recipe(tmp_path, "ddp", PRUNE_DISTILL)
    weights, stdout = {}, {}
    for nproc in (1, 2):
        out = tmp_path / f"n{nproc}"
        proc = subprocess.run(_torchrun(nproc, "run", str(recipe), "--out", str(out)), env=_env(),
                              capture_output=True, text=True, timeout=LAUNCH_TIMEOUT_S)
        assert proc.returncode == 0, proc.stderr[-3000:]
        weights[nproc] = torch.load(out / "checkpoints" / "02-distill.pt", weights_only=True)["weights"]
        stdout[nproc] = proc.stdout
    assert stdout[2].count("report: ") == 1  # rank 1 prints no report
    for key, value in weights[1].items():
        torch.testing.assert_close(weights[2][key], value, rtol=0, atol=1e-4, msg=key)
    reports = [json.loads((tmp_path / f"n{n}" / "report.json").read_text()) for n in (1, 2)]
    assert [r["quality"] for r in reports[0]["rows"]] == pytest.approx([r["quality"] for r in reports[1]["rows"]],
                                                                       abs=1 / 360)


@pytest.mark.slow
def test_ranks_with_different_recipes_are_refused(tmp_path: Path) -> None:
    for rank, lr in ((0, 0.003), (1, 0.002)):
        stages = [dict(PRUNE_DISTILL[0]), {"distill": {"finetune": {"epochs": 1, "lr": lr}}}]
        _recipe(tmp_path, "mismatch", stages).rename(tmp_path / f"rank{rank}.yaml")
    script = f'exec "{sys.executable}" -m compressor.cli run "{tmp_path}/rank$LOCAL_RANK.yaml" --out "{tmp_path}/run"'
    proc = subprocess.run(_torchrun(2, "sh", "-c", script, no_python=True), env=_env(),
                          capture_output=True, text=True, timeout=LAUNCH_TIMEOUT_S)
    assert proc.returncode != 0
    line = ("error: torchrun ranks disagree on the recipe: rank 1 differs from rank 0 at "
            "stages[1].distill.finetune.lr (0.003 vs 0.002)")
    assert proc.stderr.count(line) == 2, proc.stderr[-3000:]  # every rank says so, exit code 2 each
    assert "exitcode  : 2" in proc.stderr
    assert not (tmp_path / "run").exists()


def _worker_pid(launcher: int, rank: int) -> int | None:
    """The pid of the torchrun worker with this RANK among the launcher's descendants (read from /proc)."""
    parents: dict[int, int] = {}
    ranks: dict[int, bool] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            ranks[int(entry.name)] = f"RANK={rank}".encode() in (entry / "environ").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue

    def descends(pid: int) -> bool:
        while pid > 1:
            pid = parents.get(pid, 0)
            if pid == launcher:
                return True
        return False

    workers = sorted(pid for pid, has_rank in ranks.items() if has_rank and descends(pid))
    return workers[0] if workers else None


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds the worker through /proc")
def test_a_killed_rank_stops_every_rank_and_the_run_resumes(tmp_path: Path) -> None:
    recipe = _recipe(tmp_path, "killed", [{"finetune": {"epochs": 1, "lr": 1e-4, "max_steps_per_epoch": 4}},
                                          {"distill": {"finetune": {"epochs": 4, "lr": 0.001}}}])
    run_dir = tmp_path / "run"
    proc = subprocess.Popen(_torchrun(2, "run", str(recipe), "--out", str(run_dir)), env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def done() -> list[str]:
        try:
            state = json.loads((run_dir / "run.json").read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return []
        return [s["name"] for s in state["stages"] if s["status"] == "done"]

    deadline = time.time() + LAUNCH_TIMEOUT_S
    while not done() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    victim = _worker_pid(proc.pid, 1)
    if victim is None or done() != ["finetune"]:
        proc.kill()
        pytest.fail(f"no rank 1 to kill after finetune (run.json: {done()}, exit {proc.poll()}):\n"
                    f"{proc.communicate()[1][-3000:]}")
    os.kill(victim, signal.SIGKILL)
    _, stderr = proc.communicate(timeout=LAUNCH_TIMEOUT_S)  # no hang: rank 0 stops too
    assert proc.returncode != 0
    assert "error: rank 0 of 2: " in stderr and "--resume" in stderr, stderr[-3000:]
    assert "Signal 9 (SIGKILL) received" in stderr  # torchrun names the killed rank
    assert done() == ["finetune"]

    resumed = subprocess.run(_torchrun(2, "run", "--resume", str(run_dir)), env=_env(),
                             capture_output=True, text=True, timeout=LAUNCH_TIMEOUT_S)
    assert resumed.returncode == 0, f"{resumed.stdout[-2000:]}\n{resumed.stderr[:4000]}"  # the rank's own lines first
    assert "finetune: done earlier, skipped" in resumed.stdout + resumed.stderr
    assert done() == ["finetune", "distill"]
