"""Data-parallel runs under ``torchrun``: the process group, rank-0-only work and cross-rank checks.

``torchrun --nproc-per-node N -m compressor.cli run RECIPE`` starts N processes that all run the same
pipeline. Training steps are split between them (``DistributedDataParallel``, each rank a share of
every global batch, BatchNorm statistics over the global batch); held-out evaluation is split and its
sums all-reduced. Everything else (pruning, calibration, PTQ) runs identically on every rank, and
after each stage the ranks check that they built the same architecture, then take rank 0's weights.
Rank 0 alone writes files (run.json, checkpoints, report, export); the others wait for its outcome,
so an error there stops every rank with the same message. See docs/scaling.md.

Outside torchrun (no ``RANK``/``WORLD_SIZE`` in the environment) every function here is a no-op for
one process.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import threading
from contextlib import contextmanager
from datetime import timedelta
from typing import Any, Callable, Iterator, Sequence, TypeVar

import torch
import torch.distributed as dist
import torch.distributed._functional_collectives as funcol
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.parallel import DistributedDataParallel

from compressor.errors import CompressorError

#: Seconds a rank waits for the others in one collective before it fails (rank 0's export and
#: latency measurements are the longest waits of the other ranks).
TIMEOUT_ENV = "COMPRESSOR_DIST_TIMEOUT"
DEFAULT_TIMEOUT_S = 1800
RESUME_HINT = ("finished stages are checkpointed: relaunch the same torchrun command with "
               "`run --resume RUN_DIR`")

T = TypeVar("T")
_solo_depth = 0  # > 0 inside main_only() on rank 0: collectives are off there
_failing = False  # a failure is being recorded: a SIGTERM must not cut rank 0's report short


class DistributedError(CompressorError):
    """Ranks disagree, or a rank was lost: every surviving rank stops with this message."""


# ---------------------------------------------------------------------- who am I
def launched() -> bool:
    """True in a process started by torchrun (or anything that sets the env:// variables)."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def active() -> bool:
    """True while collectives run: a process group is up and this is not a rank-0-only section."""
    return dist.is_available() and dist.is_initialized() and _solo_depth == 0


def rank() -> int:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return int(os.environ["RANK"]) if launched() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    return rank() == 0


# ---------------------------------------------------------------------- the process group
@contextmanager
def process_group() -> Iterator[None]:
    """Join torchrun's process group for the duration (nothing outside torchrun, or when the caller
    already joined one). Lost ranks and torchrun's SIGTERM become a :class:`DistributedError`."""
    global _failing
    if not launched() or dist.is_initialized():
        yield
        return
    timeout = _timeout_s()
    # CPU tensors go through gloo; CUDA tensors (once training moves to GPUs) through NCCL.
    backend = "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo"
    try:
        dist.init_process_group(backend, timeout=timedelta(seconds=timeout))
    except (RuntimeError, ValueError) as exc:
        raise DistributedError(f"rank {os.environ['RANK']}: could not join the torchrun process group: "
                               f"{_first_line(exc)}") from None
    _failing = False
    restore_handler = _stop_on_sigterm()
    try:
        with lost_ranks_named():
            yield
            dist.barrier()  # no rank closes its connections while another may still be reading from them
    finally:
        restore_handler()
        dist.destroy_process_group()


def _timeout_s() -> float:
    text = os.environ.get(TIMEOUT_ENV, str(DEFAULT_TIMEOUT_S))
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise CompressorError(f"{TIMEOUT_ENV}={text!r}: expected a number of seconds > 0")
    return value


def _stop_on_sigterm() -> Callable[[], None]:
    """torchrun stops the other ranks with SIGTERM when one fails: leave through the usual error
    path (rank 0 records the failed stage in run.json) instead of dying mid-write."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def stop(signum: int, frame: Any) -> None:
        if _failing:
            return
        failing()
        raise DistributedError(f"rank {rank()} of {dist.get_world_size()}: stopped by the launcher "
                               f"(SIGTERM), most likely because another rank failed (torchrun's summary "
                               f"names it); {RESUME_HINT}")

    previous = signal.signal(signal.SIGTERM, stop)
    return lambda: signal.signal(signal.SIGTERM, previous)


def failing() -> None:
    """This rank is recording a failure: torchrun's SIGTERM (sent when another rank exits first)
    no longer interrupts it (torchrun's SIGKILL follows 30 s later)."""
    global _failing
    _failing = True


@contextmanager
def lost_ranks_named() -> Iterator[None]:
    """A collective that failed because a peer is gone (gloo/NCCL error or timeout) becomes a
    :class:`DistributedError` (the pipeline records it as the stage's failure)."""
    try:
        yield
    except RuntimeError as exc:
        if not (dist.is_initialized() and (isinstance(exc, dist.DistError)
                                           or re.search(r"gloo|NCCL|c10d|ProcessGroup", str(exc)))):
            raise
        failing()
        raise DistributedError(f"rank {rank()} of {dist.get_world_size()}: lost contact with the other "
                               f"ranks ({_first_line(exc)}): a rank failed, was killed or did not answer "
                               f"within {TIMEOUT_ENV}={_timeout_s():g} s; {RESUME_HINT}") from None


def _first_line(exc: BaseException) -> str:
    """gloo's first sentence without its source location, e.g. 'Read error ...: Connection reset by peer'."""
    line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return re.sub(r"^\[[^\]]*\]\s*", "", line).split(". ")[0]


# ---------------------------------------------------------------------- agreement and rank 0's work
def share(value: T) -> T:
    """Rank 0's ``value`` on every rank (e.g. a default run directory named after the time)."""
    if not active():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def main_only(fn: Callable[[], T]) -> T | None:
    """``fn()`` on rank 0 alone, with collectives off inside; the other ranks wait and get None.

    If ``fn`` fails on rank 0, every rank raises: rank 0 its own error, the others a
    :class:`CompressorError` with the same message.
    """
    global _solo_depth
    if not active():
        return fn()
    result, failure = None, None
    if rank() == 0:
        _solo_depth += 1
        try:
            result = fn()
        except Exception as exc:
            failure = exc
        finally:
            _solo_depth -= 1
    message = share(None if failure is None else
                    str(failure) if isinstance(failure, CompressorError) else f"rank 0 failed: {failure!r}")
    if failure is not None:
        raise failure
    if message is not None:
        raise CompressorError(message)
    return result


def check_same(what: str, content: Any, remedy: str) -> None:
    """Raise on every rank unless all ranks hold the same ``content`` (JSON-able; tensors hashed);
    the error names the first differing key and ends with ``remedy``."""
    if not active():
        return
    text = json.dumps(content, sort_keys=True, default=_tensor_digest)
    digests: list[str] = [""] * dist.get_world_size()
    dist.all_gather_object(digests, hashlib.sha256(text.encode()).hexdigest())
    if len(set(digests)) == 1:
        return
    contents: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(contents, json.loads(text))
    other = next(r for r, d in enumerate(digests) if d != digests[0])
    where = _first_difference(contents[0], contents[other])
    raise DistributedError(f"torchrun ranks disagree on {what}: rank {other} differs from rank 0 at "
                           f"{where}; {remedy}")


def _tensor_digest(value: Any) -> str:
    if isinstance(value, Tensor):
        data = value.detach().cpu().contiguous().flatten().view(torch.uint8)  # any dtype, bf16 too
        return f"tensor{list(value.shape)}:{hashlib.sha256(data.numpy().tobytes()).hexdigest()[:16]}"
    return str(value)


def _first_difference(a: Any, b: Any, path: str = "") -> str:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b), key=str):
            if a.get(key) != b.get(key):
                return _first_difference(a.get(key), b.get(key), f"{path}.{key}" if path else str(key))
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b)):
            if x != y:
                return _first_difference(x, y, f"{path}[{i}]")
    return f"{path or '<top>'} ({json.dumps(a)[:80]} vs {json.dumps(b)[:80]})"


def sync_model(model: nn.Module, stage_state: dict[str, Any], what: str) -> None:
    """After a stage: check that every rank built the same architecture (stage state, tensor names
    and shapes), then give every rank rank 0's weights (float noise of a GPU kernel stays out)."""
    if not active():
        return
    layout = {name: [list(t.shape), str(t.dtype)] for name, t in model.state_dict().items()}
    check_same(what, {"stage_state": stage_state, "tensors": layout},
               "the stage computed differently on that rank (a nondeterministic kernel, or another "
               "library version on that host?)")
    for tensor in model.state_dict().values():
        buffer = tensor if tensor.is_contiguous() else tensor.contiguous()
        dist.broadcast(buffer, src=0)
        if buffer is not tensor:
            tensor.copy_(buffer)


# ---------------------------------------------------------------------- data and gradients
def local_batch(global_batch: int) -> int:
    """This rank's share of a global batch; the global batch must split evenly."""
    world = world_size()
    if global_batch % world:
        raise CompressorError(f"batch size {global_batch} is the global batch of all {world} torchrun "
                              f"ranks and must split evenly: set data.batch_size (or the stage's "
                              f"batch_size) to a multiple of {world}")
    return global_batch // world


def all_reduce_sum(values: list[float]) -> list[float]:
    """Element-wise sums over the ranks (float64)."""
    if not active():
        return values
    tensor = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(tensor)
    return tensor.tolist()


def average_gradients(parameters: list[nn.Parameter]) -> None:
    """Mean of the gradients over the ranks, for parameters trained outside the DDP module
    (e.g. distillation projections)."""
    if not active():
        return
    for p in parameters:
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad /= dist.get_world_size()


@contextmanager
def data_parallel(model: nn.Module, extra_parameters: Sequence[nn.Parameter] = ()) -> Iterator[nn.Module]:
    """``model`` wrapped in DistributedDataParallel for the duration, its BatchNorm layers computing
    statistics over the global batch, so a step equals one process's step on the global batch.
    ``model`` itself outside torchrun. Parameters and buffers start from rank 0's."""
    if not active():
        yield model
        return
    for p in extra_parameters:
        dist.broadcast(p.data, src=0)
    originals = {name: m for name, m in model.named_modules() if isinstance(m, _BatchNorm)}
    for name, bn in originals.items():
        model.set_submodule(name, GlobalBatchNorm.sharing(bn))
    try:
        # static_graph: the same parameters take part in every step, so DDP finds unused ones
        # (e.g. a pooler no loss reads) once instead of traversing the graph at every step.
        # No buffer broadcast before each forward: BatchNorm statistics are global, so buffers agree.
        ddp = DistributedDataParallel(model, static_graph=True, forward_sync_buffers=False)
        yield ddp
    finally:
        ddp = None  # the reducer's autograd hooks go with the wrapper
        for name, bn in originals.items():
            model.set_submodule(name, bn)


class GlobalBatchNorm(_BatchNorm):
    """BatchNorm whose training statistics span the samples of every rank (one global batch).

    ``torch.nn.SyncBatchNorm`` does this on GPUs only (it refuses CPU tensors); here the sums go
    through torch's functional all-reduce, which is differentiable, so gradients also flow through
    the global mean and variance. Holds the same parameter and buffer tensors as the layer it stands in for.
    """

    @classmethod
    def sharing(cls, bn: _BatchNorm) -> "GlobalBatchNorm":
        new = cls(bn.num_features, bn.eps, bn.momentum, bn.affine, bn.track_running_stats)
        new.weight, new.bias = bn.weight, bn.bias
        new.running_mean, new.running_var = bn.running_mean, bn.running_var
        new.num_batches_tracked = bn.num_batches_tracked
        new.train(bn.training)
        return new

    def _check_input_dim(self, x: Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected at least 2-D input (N, C, ...), got {x.dim()}-D")

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or not active():
            return super().forward(x)
        dims = [d for d in range(x.dim()) if d != 1]
        shape = [1, -1] + [1] * (x.dim() - 2)
        count = torch.tensor([x.numel() / x.shape[1]], dtype=x.dtype)
        sums = funcol.all_reduce(torch.cat([x.sum(dims), count]), "sum", dist.group.WORLD)
        n = sums[-1].detach()
        mean = sums[:-1] / n
        centred = x - mean.view(shape)
        var = funcol.all_reduce((centred * centred).sum(dims), "sum", dist.group.WORLD) / n
        y = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                self.running_mean.lerp_(mean.detach(), factor)
                self.running_var.lerp_(var.detach() * n / (n - 1), factor)
        return y
