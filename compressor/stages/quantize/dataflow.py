"""Which module feeds which, found by tensor identity in one forward pass.

Works on any model, traceable or not (Hugging Face models included): hooks record the id of each
module's first input and of its output while every tensor is kept alive, so an id names one tensor.
BN folding (Conv -> BatchNorm), SmoothQuant (LayerNorm/Linear -> Linear) and quantizer sharing
(several consumers of one tensor) are all questions about this flow.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable

import torch
from torch import Tensor, nn


@dataclass
class Flow:
    #: module name -> id of its first input tensor
    inputs: dict[str, int] = field(default_factory=dict)
    #: module name -> id of its output tensor
    outputs: dict[str, int] = field(default_factory=dict)

    def producer(self, name: str) -> str | None:
        """The module whose output is ``name``'s input, if a module made it."""
        tid = self.inputs.get(name)
        return next((n for n, o in self.outputs.items() if o == tid and n != name), None)

    def consumers(self, name: str) -> list[str]:
        """Modules whose input is ``name``'s output."""
        tid = self.outputs.get(name)
        return [n for n, i in self.inputs.items() if i == tid and n != name]

    def groups(self, names: list[str]) -> list[list[str]]:
        """``names`` grouped by shared input tensor, in first-seen order."""
        by_id: dict[int, list[str]] = {}
        for n in names:
            if n in self.inputs:
                by_id.setdefault(self.inputs[n], []).append(n)
        return list(by_id.values())


@torch.no_grad()
def run_hooked(model: nn.Module, batches: Iterable[tuple[Tensor, ...]],
               hooks: list[tuple[nn.Module, Callable]], *, pre: bool = False) -> None:
    """Run ``batches`` through ``model`` in eval mode with forward (or pre-forward) hooks attached."""
    register = (lambda m, fn: m.register_forward_pre_hook(fn)) if pre else (
        lambda m, fn: m.register_forward_hook(fn))
    handles = [register(m, fn) for m, fn in hooks]
    was_training = model.training
    model.eval()
    try:
        for inputs in batches:
            model(*inputs)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)


def trace_flow(model: nn.Module, inputs: tuple[Tensor, ...],
               modules: dict[str, nn.Module] | None = None) -> Flow:
    """Run ``model(*inputs)`` once and record input/output tensor ids of ``modules`` (default all)."""
    modules = modules if modules is not None else dict(model.named_modules())
    flow, alive = Flow(), []

    def hook(name: str):
        def fn(_m: nn.Module, args: tuple, out: object) -> None:
            if args and isinstance(args[0], Tensor):
                flow.inputs[name] = id(args[0])
                alive.append(args[0])
            if isinstance(out, Tensor):
                flow.outputs[name] = id(out)
                alive.append(out)
        return fn

    run_hooked(model, [inputs], [(m, hook(n)) for n, m in modules.items() if n])
    return flow
