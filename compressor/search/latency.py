"""Latency of trial models: measured in ONNX Runtime relative to the input model, cached by graph.

Latency on a CPU runtime depends on the graph, not on the numbers in it, so trials that build the
same graph share one measurement (:class:`LatencyCache`, a study attribute every worker reads).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import onnx
import optuna
import torch
from torch import nn

from compressor.export.bench import interleaved
from compressor.export.onnx import export_onnx
from compressor.export.runtime import feeds, ort_session
from compressor.export.targets import Target
from compressor.recipe.schema import Recipe
from compressor.task import Task


def graph_key(path: str | Path) -> str:
    """Hash of an ONNX graph's structure (ops, wiring, tensor shapes and types, not weight values).

    Latency on a CPU runtime depends on the graph, not on the numbers in it, so trials that build
    the same graph share one measurement.
    """
    graph = onnx.load(str(path), load_external_data=False).graph
    h = hashlib.sha256()
    for init in graph.initializer:
        h.update(f"I{init.name}:{init.data_type}:{tuple(init.dims)}".encode())
    for value in list(graph.input) + list(graph.output):
        h.update(f"V{value.name}:{value.type.SerializeToString().hex()}".encode())
    for node in graph.node:
        h.update(f"N{node.op_type}:{node.domain}:{list(node.input)}:{list(node.output)}".encode())
        for attr in node.attribute:
            payload = (f"{attr.t.data_type}:{tuple(attr.t.dims)}" if attr.HasField("t")
                       else attr.SerializeToString().hex())
            h.update(f"A{attr.name}:{payload}".encode())
    return h.hexdigest()[:16]


@dataclass(frozen=True)
class LatencySettings:
    """How latency is measured: the recipe's ``report`` batch and iterations, ORT on the target."""

    batch: int
    warmup: int
    iterations: int
    threads: int | None
    opset: int
    rounds: int = 5

    @classmethod
    def of(cls, recipe: Recipe, target: Target) -> "LatencySettings":
        return cls(recipe.report.latency_batch, recipe.report.warmup, recipe.report.iterations,
                   target.threads, target.opset)


def export_for_latency(model: nn.Module, task: Task, path: Path, settings: LatencySettings) -> Path:
    return export_onnx(model, task.example_inputs(settings.batch), path, input_names=task.input_names,
                       output_names=task.output_names, dynamic_axes=task.dynamic_axes,
                       opset=settings.opset)


def relative_latency(paths: dict[str, Path], reference: Path, inputs: tuple[torch.Tensor, ...],
                     settings: LatencySettings) -> dict[str, tuple[float, float]]:
    """(latency / reference latency, p50 ms) of each ONNX file, timed in turns with the reference.

    Interleaving in one process makes the ratio robust to the machine getting busier or quieter
    between trials (workers, other jobs), which absolute milliseconds are not.
    """
    sessions = {name: ort_session(p, settings.threads) for name, p in paths.items()}
    sessions["__reference__"] = ort_session(reference, settings.threads)
    fns = {}
    for name, session in sessions.items():
        feed = feeds(session, inputs)
        fns[name] = lambda session=session, feed=feed: session.run(None, feed)
    lat = interleaved(fns, batch=settings.batch, warmup=settings.warmup,
                      iterations=settings.iterations, rounds=settings.rounds)
    ref = lat.pop("__reference__").p50_ms
    return {name: (v.p50_ms / ref, v.p50_ms) for name, v in lat.items()}


class LatencyCache:
    """Measured latency ratios by graph key, kept in one study attribute that every worker reads.

    Two workers writing at once can drop one entry; that only costs a measurement later.
    """

    KEY = "latency_cache"

    def __init__(self, study: optuna.Study) -> None:
        self.study = study

    def get(self, key: str) -> float | None:
        return self.study.user_attrs.get(self.KEY, {}).get(key)

    def put(self, key: str, ratio: float) -> None:
        self.study.set_user_attr(self.KEY, {**self.study.user_attrs.get(self.KEY, {}), key: ratio})
