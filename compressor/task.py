"""A Task bundles a model's data splits with its quality metric and training loss.

Every stage trains, calibrates and evaluates through the Task, so stages never need to know
whether the model classifies digits or embeds sentences. Datasets are ``TensorDataset``s whose
last tensor is the target: class labels (metric ``accuracy``; per token for language models, with
:data:`IGNORE` at padded positions) or the original model's outputs (metric ``fidelity``: mean
cosine similarity to the uncompressed model, used when there are no labels, e.g. sentence
embeddings or randomly initialised ImageNet shapes).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, DistributedSampler, Subset, TensorDataset

from compressor import distributed

Metric = Literal["accuracy", "fidelity"]
#: A fidelity score is flagged when it closes less than this part of the gap between the best
#: meaningless baseline (constant output, random weights) and a perfect 1.
BASELINE_MARGIN = 0.5
#: Per-token label of a position that counts nowhere (padding), as in ``F.cross_entropy``.
IGNORE = -100


@dataclass
class Task:
    name: str
    metric: Metric
    train: TensorDataset
    val: TensorDataset
    input_names: list[str]
    output_names: list[str] = field(default_factory=lambda: ["output"])
    #: ONNX dynamic axes per input/output name, e.g. {"input": {0: "batch"}}.
    dynamic_axes: dict[str, dict[int, str]] = field(default_factory=dict)
    #: How raw data becomes the inputs (e.g. scaling, layout, tokenizer), for the deploy manifest.
    preprocessing: dict[str, Any] = field(default_factory=dict)
    #: True when the data or weights are synthetic; reports say so.
    synthetic: bool = False
    note: str = ""
    batch_size: int = 64
    eval_samples: int | None = None
    calibration_samples: int = 256
    #: Optional DataLoader collate_fn (e.g. cut token batches to their longest sentence).
    collate: Callable[[list[Any]], Any] | None = None
    #: Further held-out sets by name, of other kinds than the training data (never trained on):
    #: every measured row reports the quality on each next to the quality on ``val``.
    heldout: dict[str, TensorDataset] = field(default_factory=dict)

    @property
    def n_inputs(self) -> int:
        return len(self.input_names)

    # ------------------------------------------------------------------ data
    def loader(self, split: str = "train", *, batch_size: int | None = None,
               shuffle: bool | None = None, seed: int = 0, limit: int | None = None,
               shard: bool = False) -> DataLoader:
        """A deterministic loader over ``train``, ``val`` or a ``heldout`` set: the same seed gives
        the same batches (resume relies on it).

        ``shard`` under torchrun: this rank's share. Shuffled (training): ``batch_size`` is the
        global batch, every rank takes its slice of the same permutation (DistributedSampler), so
        the global batches are the same for any number of ranks. In order (evaluation): every
        sample once, on one rank.
        """
        data = self.train if split == "train" else self.val if split == "val" else self.heldout[split]
        if split == "val" and limit is None:
            limit = self.eval_samples
        if limit is not None and limit < len(data):
            data = Subset(data, range(limit))
        shuffle = split == "train" if shuffle is None else shuffle
        batch_size = batch_size or self.batch_size
        if shard and distributed.active():
            rank, world = distributed.rank(), distributed.world_size()
            if shuffle:
                sampler = DistributedSampler(data, world, rank, shuffle=True, seed=seed)
                return DataLoader(data, batch_size=distributed.local_batch(batch_size), sampler=sampler,
                                  collate_fn=self.collate)
            data = Subset(data, range(rank, len(data), world))
        gen = torch.Generator().manual_seed(seed)
        return DataLoader(data, batch_size=batch_size, shuffle=shuffle, generator=gen,
                          collate_fn=self.collate)

    def calibration_batches(self, samples: int | None = None,
                            batch_size: int | None = None) -> Iterator[tuple[Tensor, ...]]:
        """Model inputs for PTQ calibration, drawn from the training split."""
        samples = samples or self.calibration_samples
        for batch in self.loader("train", batch_size=batch_size, shuffle=False,
                                 limit=samples):
            yield self.split(batch)[0]

    def example_inputs(self, batch: int = 1) -> tuple[Tensor, ...]:
        """Held-out inputs of the given batch size (for export and latency)."""
        rows = [self.val[i % len(self.val)] for i in range(batch)]
        return tuple(torch.stack([r[k] for r in rows]) for k in range(self.n_inputs))

    def split(self, batch: tuple[Tensor, ...] | list[Tensor]) -> tuple[tuple[Tensor, ...], Tensor]:
        return tuple(batch[: self.n_inputs]), batch[self.n_inputs]

    # ------------------------------------------------------------------ loss and metric
    def loss(self, outputs: Tensor, target: Tensor) -> Tensor:
        if self.metric == "accuracy":
            return F.cross_entropy(outputs.flatten(0, -2), target.flatten(), ignore_index=IGNORE)
        return (1 - F.cosine_similarity(outputs.flatten(1), target.flatten(1), dim=1)).mean()

    def score(self, outputs: Tensor, target: Tensor) -> Tensor:
        """Per-sample quality: 1/0 for a correct/incorrect class (the share of correct tokens for
        per-token labels), else cosine to the reference."""
        if self.metric == "accuracy":
            hits = (outputs.argmax(-1) == target).float()
            if hits.dim() == 1:
                return hits
            counted = (target != IGNORE).float()
            return (hits * counted).sum(1) / counted.sum(1).clamp(min=1)
        return F.cosine_similarity(outputs.flatten(1).float(), target.flatten(1).float(), dim=1)

    @torch.no_grad()
    def evaluate(self, model: nn.Module, limit: int | None = None, split: str = "val") -> float:
        """Mean quality over a held-out set (accuracy or fidelity, in [0, 1]): ``val`` or a
        ``heldout`` name; under torchrun each rank scores its share and the sums are all-reduced."""
        was_training = model.training
        model.eval()
        total, count = 0.0, 0
        for batch in self.loader(split, limit=limit, shard=True):
            inputs, target = self.split(batch)
            total += self.score(model(*inputs), target).sum().item()
            count += len(target)
        model.train(was_training)
        total, count = distributed.all_reduce_sum([total, count])
        return total / max(count, 1)


@torch.no_grad()
def reference_outputs(model: nn.Module, inputs: tuple[Tensor, ...], batch_size: int = 64) -> Tensor:
    """The model's outputs on ``inputs`` in batches: the targets of a fidelity task."""
    model.eval()
    n = len(inputs[0])
    outs = [model(*(t[i:i + batch_size] for t in inputs)) for i in range(0, n, batch_size)]
    return torch.cat(outs).float()


def constant_output_fidelity(train: TensorDataset, val: TensorDataset) -> float:
    """The fidelity of a model that outputs the mean training target for every input."""
    mean = train.tensors[-1].float().flatten(1).mean(0, keepdim=True)
    return F.cosine_similarity(val.tensors[-1].float().flatten(1), mean, dim=1).mean().item()


def randomized(model: nn.Module, seed: int = 0) -> nn.Module:
    """A copy of ``model`` with every module's parameters freshly initialised (``reset_parameters``)."""
    model = copy.deepcopy(model)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for module in model.modules():
            if callable(getattr(module, "reset_parameters", None)):
                module.reset_parameters()
    return model


def fidelity_baselines(task: Task, original: nn.Module) -> dict[str, float]:
    """What two meaningless models score on ``task``'s held-out split: a constant output (the mean
    training target) and the original architecture with random weights. A compressed model that
    scores near them is broken, whatever the number looks like (a random-weight BERT's sentence
    embeddings are so alike that any near-constant output scores 0.97). Empty for accuracy tasks."""
    if task.metric != "fidelity":
        return {}
    val = task.val if task.eval_samples is None else TensorDataset(*(t[:task.eval_samples] for t in task.val.tensors))
    return {"constant output": constant_output_fidelity(task.train, val),
            "random weights": task.evaluate(randomized(original))}


def near_baseline(quality: float, baselines: dict[str, float], margin: float = BASELINE_MARGIN) -> bool:
    """Whether ``quality`` closes less than ``margin`` of the gap between the best baseline and 1."""
    if not baselines:
        return False
    best = max(baselines.values())
    return quality <= best + margin * (1 - best)
