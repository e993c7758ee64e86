"""The training loop shared by fine-tuning, pruning, distillation, QAT, codebooks and low-rank.

Under torchrun it runs data-parallel (compressor/distributed.py): ``batch_size`` stays the global
batch, each rank trains on its share and DDP averages the gradients, so a step is the step one
process would take on the whole batch.
"""
from __future__ import annotations

import copy
import sys
import time
from contextlib import contextmanager
from typing import Callable, Iterable, Iterator, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, PositiveFloat, PositiveInt
from torch import Tensor, nn
from tqdm.auto import tqdm

from compressor import distributed
from compressor.limits import MAX_BATCH, MAX_EPOCHS, MAX_STEPS
from compressor.task import Task

#: A training run projected to take longer than this (seconds) says so once, after its first steps.
LONG_RUN_S = 600.0
#: Steps timed before the projection (the first one, which warms up, is not counted).
TIMED_STEPS = 5

#: loss(model, inputs, target) -> scalar loss
LossFn = Callable[[nn.Module, tuple[Tensor, ...], Tensor], Tensor]


class TrainParams(BaseModel):
    """Fine-tuning settings; embedded by every stage that trains.

    A plain pydantic model (not ``StageParams``) so this module imports without the stage registry.
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    epochs: NonNegativeInt = Field(1, le=MAX_EPOCHS, description="Passes over the training split (0: no training).")
    lr: PositiveFloat = 1e-3
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    weight_decay: float = Field(0.0, ge=0)
    schedule: Literal["cosine", "constant"] = "cosine"
    batch_size: PositiveInt | None = Field(None, le=MAX_BATCH, description="Default: the recipe's data.batch_size. "
                                           "Under torchrun the global batch, split between the ranks.")
    max_steps_per_epoch: PositiveInt | None = Field(None, le=MAX_STEPS, description="Cap for quick runs and search.")
    dropout: bool = Field(True, description="False: dropout probability 0 while training. Where the "
                          "target is the original model's own output (fidelity), dropout only adds "
                          "noise to a deterministic target.")
    keep_best: bool = Field(True, description="Restore the weights of the best epoch (the starting "
                                              "weights count as epoch 0).")


def train(model: nn.Module, task: Task, params: TrainParams, *, loss_fn: LossFn | None = None,
          after_step: Callable[[], None] | None = None, extra_parameters: Iterable[nn.Parameter] = (),
          seed: int = 0, desc: str = "finetune") -> list[float]:
    """Train ``model`` in place; returns the held-out quality after each epoch (index 0 = before).

    ``after_step`` runs after every optimizer step (e.g. to re-apply pruning masks);
    ``extra_parameters`` are trained alongside (e.g. distillation projections).
    """
    history = [task.evaluate(model)]
    if params.epochs == 0:
        return history
    # Distinct random streams per rank (dropout masks); one process keeps ``seed``.
    torch.manual_seed(seed * distributed.world_size() + distributed.rank())
    loss_fn = loss_fn or (lambda m, inputs, target: task.loss(m(*inputs), target))
    extra = list(extra_parameters)
    trainable = [p for p in model.parameters() if p.requires_grad] + extra
    opt = _optimizer(params, trainable)
    steps_per_epoch = len(task.loader("train", batch_size=params.batch_size, shard=True))
    if params.max_steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, params.max_steps_per_epoch)
    total = params.epochs * steps_per_epoch
    sched = (torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total)
             if params.schedule == "cosine" else None)
    best_quality, best_state = history[0], copy.deepcopy(model.state_dict())
    quiet = {} if distributed.is_main() else {"disable": True}  # no kwarg: TQDM_DISABLE still applies
    bar = tqdm(total=total, desc=desc, unit="step", leave=False, **quiet)
    with _dropout(model, params.dropout), distributed.data_parallel(model, extra) as net:
        for epoch in range(params.epochs):
            net.train()
            loader = task.loader("train", batch_size=params.batch_size, seed=seed + epoch, shard=True)
            loss_sum = 0.0
            for step, batch in enumerate(loader):
                if step >= steps_per_epoch:
                    break
                if epoch == 0 and step == 1:
                    started = time.perf_counter()
                elif epoch == 0 and step == 1 + TIMED_STEPS:
                    _say_duration(desc, (time.perf_counter() - started) / TIMED_STEPS, total)
                inputs, target = task.split(batch)
                loss = loss_fn(net, inputs, target)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                distributed.average_gradients(extra)
                opt.step()
                if sched is not None:
                    sched.step()
                if after_step is not None:
                    after_step()
                value = loss.item()
                loss_sum += value
                bar.update()
                bar.set_postfix(loss=f"{value:.4f}")
            # The bar shows this rank's loss per step and the mean over every rank per epoch.
            epoch_loss = distributed.all_reduce_sum([loss_sum])[0] / (steps_per_epoch * distributed.world_size())
            quality = task.evaluate(model)
            history.append(quality)
            bar.set_postfix(loss=f"{epoch_loss:.4f}", quality=f"{quality:.4f}")
            if quality > best_quality:
                best_quality, best_state = quality, copy.deepcopy(model.state_dict())
    bar.close()
    if params.keep_best:
        model.load_state_dict(best_state)
    model.eval()
    return history


def _say_duration(desc: str | None, seconds_per_step: float, total: int) -> None:
    """One line on stderr when ``total`` steps at this pace exceed :data:`LONG_RUN_S` (evaluation
    after each epoch comes on top), so that a long run is a choice, not a surprise."""
    projected = seconds_per_step * total
    if projected > LONG_RUN_S and distributed.is_main():
        hours, rest = divmod(round(projected), 3600)
        tqdm.write(f"{desc or 'training'}: {total} steps at {seconds_per_step:.2f} s/step take about "
                   f"{f'{hours} h ' if hours else ''}{rest // 60} min (without evaluation); "
                   "lower epochs or max_steps_per_epoch for a shorter run", file=sys.stderr)


def _optimizer(params: TrainParams, parameters: list[nn.Parameter]) -> torch.optim.Optimizer:
    if params.optimizer == "sgd":
        return torch.optim.SGD(parameters, lr=params.lr, momentum=0.9, weight_decay=params.weight_decay)
    cls = torch.optim.AdamW if params.optimizer == "adamw" else torch.optim.Adam
    return cls(parameters, lr=params.lr, weight_decay=params.weight_decay)


@contextmanager
def _dropout(model: nn.Module, enabled: bool) -> Iterator[None]:
    """Dropout as the model has it, or probability 0 for the duration (restored afterwards).

    Sets ``p`` rather than switching the modules to eval: attention implementations (e.g. Hugging
    Face BERT) read ``self.dropout.p`` under their own ``training`` flag.
    """
    layers = [] if enabled else [m for m in model.modules() if isinstance(m, nn.modules.dropout._DropoutNd)]
    saved = [m.p for m in layers]
    for m in layers:
        m.p = 0.0
    try:
        yield
    finally:
        for m, p in zip(layers, saved):
            m.p = p
