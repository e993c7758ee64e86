"""Where quantizers go, per target.

Both runtimes fuse Q/DQ into int8 kernels only around the right ops, so placement decides speed:
- weighted layers (Conv2d, Linear): the weight (per channel, axis 0) and the input (per tensor);
  consumers of one tensor share one input quantizer, so the graph has one Q/DQ per tensor;
- residual Adds (models ``torch.fx`` can trace), by the target's ``QuantRules.residual_adds``:
  TensorRT wants the residual input quantized so Conv+Add fuses; ONNX Runtime fuses
  DQ->Conv->Q and DQ,DQ->Add->Q only when both Add inputs are quantized;
- everything else (LayerNorm, Softmax, GELU, pooling) stays float: they carry the activation
  outliers that break naive int8 of transformers, and cost little.
"""
from __future__ import annotations

import operator
from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn

from compressor.layers import LayerSelection, layer_value, select_layers
from compressor.stages.quantize.dataflow import trace_flow
from compressor.stages.quantize.quantizers import QuantMixin, TensorQuantizer, quantize_module

#: Bit widths that mean "keep this tensor in float".
FLOAT_BITS = (16, 32)
ResidualMode = Literal["none", "residual", "both"]


@dataclass(frozen=True)
class TensorPlan:
    bits: int
    fmt: str = "int"
    observer: str = "minmax"
    percentile: float = 99.99

    def build(self, *, axis: int | None = None, channels: int = 1, narrow: bool = False) -> TensorQuantizer:
        args = {"percentile": self.percentile} if self.observer == "percentile" else {}
        return TensorQuantizer(self.bits, axis=axis, channels=channels, fmt=self.fmt,  # type: ignore[arg-type]
                               narrow=narrow, observer=self.observer, **args)


@dataclass(frozen=True)
class LayerPlan:
    """What one weighted layer gets: a weight quantizer, an input quantizer, either, or none."""

    weight: TensorPlan | None
    inputs: TensorPlan | None
    per_channel: bool = True
    narrow: bool = True

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "LayerPlan":
        return cls(weight=TensorPlan(**d["weight"]) if d["weight"] else None,
                   inputs=TensorPlan(**d["inputs"]) if d["inputs"] else None,
                   per_channel=d["per_channel"], narrow=d.get("narrow", True))


#: The ONNX op types each quantizable layer exports as (a target's ``keep_float`` names these).
ONNX_OPS: dict[type[nn.Module], tuple[str, ...]] = {nn.Conv2d: ("Conv",), nn.Linear: ("Gemm", "MatMul")}


def plan_layers(model: nn.Module, selection: LayerSelection, weight: TensorPlan,
                inputs: TensorPlan | None, per_channel: bool, *, narrow: bool = True,
                keep_float: tuple[str, ...] = ()) -> dict[str, LayerPlan]:
    """The plan of every selected Conv2d/Linear, with ``per_layer`` overrides applied.

    Per-layer fields: ``bits`` (weight bits; 16/32 keeps the layer float), ``act_bits``
    (input bits; 16/32 keeps the input float) and ``enabled: false`` (keep the layer float).
    Layers whose ONNX op type is in ``keep_float`` stay float; ``narrow``: weights in [-127, 127].
    """
    plans = {}
    for name, m in select_layers(model, selection).items():
        pl = selection.per_layer
        ops = next((o for cls, o in ONNX_OPS.items() if isinstance(m, cls)), ())
        if not layer_value(name, m, "enabled", True, pl) or any(op in keep_float for op in ops):
            continue
        wbits = int(layer_value(name, m, "bits", weight.bits, pl))
        w = None if wbits in FLOAT_BITS else TensorPlan(wbits, weight.fmt, weight.observer)
        a = inputs
        if inputs is not None:
            abits = int(layer_value(name, m, "act_bits", inputs.bits, pl))
            a = None if abits in FLOAT_BITS else TensorPlan(abits, inputs.fmt, inputs.observer,
                                                           inputs.percentile)
        if w is None and a is None:
            continue
        plans[name] = LayerPlan(w, a, per_channel, narrow)
    return plans


def wrap_layers(model: nn.Module, plans: dict[str, LayerPlan]) -> None:
    """Give each planned layer its quantizers (class swap in place; names unchanged)."""
    for name, plan in plans.items():
        m = model.get_submodule(name)
        wq = None
        if plan.weight is not None:
            axis = 0 if plan.per_channel else None
            wq = plan.weight.build(axis=axis, channels=m.weight.shape[0] if axis == 0 else 1,
                                   narrow=plan.narrow)
        aq = plan.inputs.build() if plan.inputs is not None else None
        quantize_module(m, wq, aq)


# --------------------------------------------------------------------------- residual adds
def residual_adds(model: nn.Module, mode: ResidualMode) -> list[tuple[str, int]]:
    """(fx node name, argument index) of the residual-Add inputs to quantize; [] if untraceable."""
    if mode == "none":
        return []
    gm = _trace(model)
    if gm is None:
        return []
    modules = dict(gm.named_modules())
    weighted = (nn.Conv2d, nn.Linear, nn.BatchNorm2d, nn.BatchNorm1d, nn.Identity)
    out = []
    for node in gm.graph.nodes:
        if not _is_tensor_add(node):
            continue
        from_layer = [isinstance(a, torch.fx.Node) and a.op == "call_module"
                      and isinstance(modules.get(str(a.target)), weighted) for a in node.args[:2]]
        if mode == "both":
            out += [(node.name, 0), (node.name, 1)]
        else:  # the input that does not come straight from the branch's last layer
            out.append((node.name, from_layer.index(False) if False in from_layer else 1))
    return out


def insert_add_quantizers(model: nn.Module, sites: list[tuple[str, int]],
                          plan: TensorPlan) -> nn.Module:
    """A ``torch.fx.GraphModule`` with a quantizer on each listed Add input (``model`` if none)."""
    if not sites:
        return model
    gm = _trace(model)
    assert gm is not None, "residual-add sites were found on a traceable model"
    nodes = {n.name: n for n in gm.graph.nodes}
    for node_name, index in sites:
        node = nodes[node_name]
        qname = f"{node_name}_input{index}_quantizer"
        gm.add_submodule(qname, plan.build())
        with gm.graph.inserting_before(node):
            q = gm.graph.call_module(qname, (node.args[index],))
        args = list(node.args)
        args[index] = q
        node.args = tuple(args)
    gm.recompile()
    return gm


def _trace(model: nn.Module) -> torch.fx.GraphModule | None:
    if isinstance(model, torch.fx.GraphModule):
        return model
    try:
        return torch.fx.symbolic_trace(model)
    except Exception:  # dynamic control flow (e.g. Hugging Face models): no residual quantizers
        return None


def _is_tensor_add(node: torch.fx.Node) -> bool:
    is_add = ((node.op == "call_function" and node.target in (operator.add, torch.add))
              or (node.op == "call_method" and node.target == "add"))
    return is_add and len(node.args) >= 2 and all(isinstance(a, torch.fx.Node) for a in node.args[:2])


# --------------------------------------------------------------------------- shared inputs
def shared_quantizer_groups(model: nn.Module, inputs: tuple[Tensor, ...]) -> list[list[str]]:
    """Names of activation quantizers that see the same tensor (to be merged into one)."""
    acts = {n: q for n, q in model.named_modules(remove_duplicate=False)
            if isinstance(q, TensorQuantizer) and q.axis is None and q.enabled}
    flow = trace_flow(model, inputs, acts)
    return [g for g in flow.groups(list(acts)) if len(g) > 1]


def share_quantizers(model: nn.Module, groups: list[list[str]]) -> None:
    """Make every quantizer of a group the group's first one (one Q/DQ per tensor)."""
    for group in groups:
        first = model.get_submodule(group[0])
        for name in group[1:]:
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, child, first)


def quantized_layers(model: nn.Module) -> dict[str, QuantMixin]:
    return {n: m for n, m in model.named_modules() if isinstance(m, QuantMixin)}
