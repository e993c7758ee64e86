"""Data-parallel training throughput on MiniLM for docs/scaling.md: samples/s with 1 and 2
processes, and what each step spends in DDP's gradient all-reduce.

    .venv/bin/python bench/distributed.py [--steps 20 --warmup 3 --batch 16 --rounds 3]

The loop is the finetune stage's (``compressor.train.train``: all-MiniLM-L6-v2 on the docstrings
task, cosine to the original embeddings, global batch ``--batch``) inside compressor's process
group (``compressor.distributed``, gloo on 127.0.0.1), in processes started like torchrun's
(env:// variables). Configurations, interleaved round by round:

- 1 process x 1 thread; 1 process x 2 threads; 2 processes x 1 thread (torchrun's default);
- 2 processes x 1 thread with DDP's all-reduce replaced by a hook that communicates nothing: the
  step without communication, so the difference to the row above is what the all-reduce costs.

A DDP communication hook times every bucket's all-reduce from launch to completion (the union of
those intervals per step: it includes waiting for the slower rank). The task is built once here
and handed to the workers, so their start-up stays out of the figures.
"""
from __future__ import annotations

import os

os.environ.setdefault("TQDM_DISABLE", "1")  # before anything imports tqdm

import argparse  # noqa: E402
import copy  # noqa: E402
import dataclasses  # noqa: E402
import json  # noqa: E402
import socket  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
import torch.multiprocessing as mp  # noqa: E402
from torch.nn.parallel import DistributedDataParallel  # noqa: E402

from compressor import distributed  # noqa: E402
from compressor.pipeline import build_task  # noqa: E402
from compressor.recipe.loader import load_recipe  # noqa: E402
from compressor.sources import load_model  # noqa: E402
from compressor.task import Task  # noqa: E402
from compressor.train import TrainParams, train  # noqa: E402
from recipebench import ROOT, table, write_section  # noqa: E402

#: (label, processes, threads per process, all-reduce on)
CONFIGS = (("1 process x 1 thread", 1, 1, True), ("1 process x 2 threads", 1, 2, True),
           ("2 processes x 1 thread", 2, 1, True), ("2 processes x 1 thread, no all-reduce", 2, 1, False))


# The hooks carry no annotations: DDP compares them with its own types, and this module's
# annotations are strings (``from __future__ import annotations``).
def _timed_allreduce(intervals: list[tuple[float, float]]):
    """DDP's default all-reduce (mean), recording when each bucket's all-reduce starts and ends."""

    def hook(state, bucket):
        start = time.perf_counter()
        buffer = bucket.buffer().div_(dist.get_world_size())
        future = dist.all_reduce(buffer, async_op=True).get_future()

        def done(f):
            intervals.append((start, time.perf_counter()))
            return f.value()[0]

        return future.then(done)

    return hook


def _no_allreduce(state, bucket):
    future = torch.futures.Future()
    future.set_result(bucket.buffer())
    return future


def _union(intervals: list[tuple[float, float]]) -> float:
    total, end = 0.0, float("-inf")
    for a, b in sorted(intervals):
        total += max(0.0, b - max(a, end))
        end = max(end, b)
    return total


def _worker(rank: int, world: int, threads: int, allreduce: bool, port: int, model: torch.nn.Module,
            task: Task, params: TrainParams, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.set_num_threads(threads)
    intervals: list[tuple[float, float]] = []
    ticks: list[tuple[float, int]] = []  # (end of step, intervals recorded so far)
    hooked: list[DistributedDataParallel] = []

    def loss_fn(net: torch.nn.Module, inputs: tuple[torch.Tensor, ...], target: torch.Tensor) -> torch.Tensor:
        if not hooked:  # before DDP's first forward, as register_comm_hook requires
            net.register_comm_hook(None, _timed_allreduce(intervals) if allreduce else _no_allreduce)
            hooked.append(net)
        return task.loss(net(*inputs), target)

    with distributed.process_group():
        ticks.append((time.perf_counter(), 0))
        train(model, task, params, loss_fn=loss_fn, after_step=lambda: ticks.append((time.perf_counter(),
                                                                                     len(intervals))))
    if rank == 0:
        step_s = [b[0] - a[0] for a, b in zip(ticks[1:], ticks[2:])]  # ticks[1] ends step 1
        comm_s = [_union(intervals[a[1]:b[1]]) for a, b in zip(ticks[1:], ticks[2:])]
        Path(out).write_text(json.dumps({"step_s": step_s, "comm_s": comm_s}))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def measure(model: torch.nn.Module, task: Task, params: TrainParams, world: int, threads: int,
            allreduce: bool, warmup: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        out = f"{tmp}/result.json"
        mp.spawn(_worker, args=(world, threads, allreduce, _free_port(), model, task, params, out),
                 nprocs=world, join=True)
        result = json.loads(Path(out).read_text())
    step = statistics.median(result["step_s"][warmup - 1:])
    return {"step_ms": step * 1e3, "samples_s": task.batch_size / step,
            "comm_ms": statistics.median(result["comm_s"][warmup - 1:]) * 1e3}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20, help="timed steps per run")
    parser.add_argument("--warmup", type=int, default=3, help="steps before timing")
    parser.add_argument("--batch", type=int, default=16, help="global batch size")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of all configurations")
    args = parser.parse_args()

    recipe = load_recipe({"model": {"zoo": "minilm"}, "data": {"dataset": "docstrings", "batch_size": args.batch},
                          "stages": [{"finetune": {}}]})
    model = load_model(recipe.model)
    # Held-out evaluation (before and after the loop) is not timed: 2 batches keep it short.
    task = dataclasses.replace(build_task(recipe, model), eval_samples=2 * args.batch)
    params = TrainParams(epochs=1, lr=5e-5, optimizer="adamw", max_steps_per_epoch=args.warmup + args.steps,
                         keep_best=False)
    load = os.getloadavg()
    runs: dict[str, list[dict[str, float]]] = {label: [] for label, *_ in CONFIGS}
    for _ in range(args.rounds):
        for label, world, threads, allreduce in CONFIGS:
            runs[label].append(measure(copy.deepcopy(model), task, params, world, threads, allreduce,
                                       args.warmup))
            print(label, runs[label][-1], flush=True)
    base = [r["samples_s"] for r in runs[CONFIGS[0][0]]]
    rows = []
    for label, world, threads, allreduce in CONFIGS:
        results = runs[label]
        speedup = statistics.median(r["samples_s"] / b for r, b in zip(results, base))
        rows.append([label, f"{args.batch // world}",
                     f"{statistics.median(r['samples_s'] for r in results):.1f}", f"{speedup:.2f}x",
                     f"{statistics.median(r['step_ms'] for r in results):.0f}",
                     f"{statistics.median(r['comm_ms'] for r in results):.0f}" if allreduce else "-"])
    body = (f"all-MiniLM-L6-v2 (22.7 M parameters), finetune loop on the docstrings task, global batch "
            f"{args.batch}, {args.steps} timed steps after {args.warmup}, median of {args.rounds} interleaved "
            f"rounds (speed-up: median of per-round ratios to the first row). Load average at the start: "
            f"{load[0]:.2f} on {os.cpu_count()} cores shared with other work.\n\n"
            + table(["processes x threads", "batch per rank", "samples/s", "speed-up", "step ms",
                     "all-reduce ms/step"], rows))
    command = f".venv/bin/python bench/distributed.py --steps {args.steps} --warmup {args.warmup} " \
              f"--batch {args.batch} --rounds {args.rounds}"
    write_section(ROOT / "docs" / "scaling.md", "distributed-minilm", f"{body}\n\nMeasured with `{command}`.")
    print(body)


if __name__ == "__main__":
    main()
