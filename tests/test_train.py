"""The shared training loop."""
from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from compressor.task import Task
from compressor.train import TrainParams, train
from tiny_bert import tiny_embedder, token_inputs


@pytest.mark.parametrize("dropout", [True, False])
def test_dropout_can_be_off_while_training(dropout: bool) -> None:
    model = tiny_embedder()
    ids, mask = token_inputs(batch=8)
    with torch.no_grad():
        target = model(ids, mask)
    data = TensorDataset(ids, mask, target)
    task = Task(name="t", metric="fidelity", train=data, val=data, input_names=["ids", "mask"], batch_size=8)
    repeatable = []

    def loss_fn(m: nn.Module, inputs: tuple[torch.Tensor, ...], target: torch.Tensor) -> torch.Tensor:
        out = m(*inputs)
        repeatable.append(torch.equal(out, m(*inputs)))
        return task.loss(out, target)

    probabilities = [m.p for m in model.modules() if isinstance(m, nn.Dropout)]
    assert probabilities and all(p > 0 for p in probabilities)
    train(model, task, TrainParams(epochs=1, dropout=dropout), loss_fn=loss_fn)
    assert repeatable == [not dropout]
    assert [m.p for m in model.modules() if isinstance(m, nn.Dropout)] == probabilities


def _task(samples: int) -> Task:
    x = torch.randn(samples, 4)
    data = TensorDataset(x, (x.sum(1) > 0).long())
    return Task(name="t", metric="accuracy", train=data, val=data, input_names=["x"], batch_size=2)


@pytest.mark.parametrize("long_run_s,said", [(0.0, True), (1e9, False)])
def test_a_long_training_run_says_how_long_it_will_take(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture,
                                                        long_run_s: float, said: bool) -> None:
    monkeypatch.setattr("compressor.train.LONG_RUN_S", long_run_s)
    train(nn.Linear(4, 2), _task(40), TrainParams(epochs=3, keep_best=False), desc="finetune")
    err = capsys.readouterr().err
    assert ("finetune: 60 steps at " in err and "s/step take about 0 min (without evaluation)" in err) == said, err
