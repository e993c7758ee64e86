"""Where the attention and feed-forward blocks of a transformer are, through a small per-family map.

FFN and head pruning and MiniLM-style distillation need each layer's query/key/value projections,
the attention output projection, the FFN's up (and gate) projections and its down projection.
A layer is found by structure: a module whose children sit at the paths one :class:`Layout` names
(all ``nn.Linear``) and whose attention module has the layout's head-size attribute. Class names
are never read, so any model written like one of these families is found:

| layout | families | attention | FFN |
|---|---|---|---|
| ``bert`` | BERT, RoBERTa, ELECTRA, MiniLM | ``attention.self.{query,key,value}``, ``attention.output.dense`` | ``intermediate.dense`` -> ``output.dense`` |
| ``distilbert`` | DistilBERT | ``attention.{q_lin,k_lin,v_lin,out_lin}`` | ``ffn.lin1`` -> ``ffn.lin2`` |
| ``vit`` | ViT, DeiT (transformers >= 5) | ``attention.{q,k,v,o}_proj`` | ``mlp.fc1`` -> ``mlp.fc2`` |
| ``llama`` | Llama, Mistral, Qwen2 (grouped-query attention) | ``self_attn.{q,k,v,o}_proj`` | ``mlp.{gate,up}_proj`` -> ``mlp.down_proj`` |
| ``gpt2`` | GPT-2 (Conv1D loaded as Linear) | fused ``attn.c_attn``, ``attn.c_proj`` | ``mlp.c_fc`` -> ``mlp.c_proj`` |

These families split heads with ``view(..., -1, head_size)``, so removing whole heads from the
weights is enough for their forward; :func:`sync_config` then updates the bookkeeping attributes
and the config, so the model saves and reloads. Hand-written attention that computes its head size
from the input width cannot follow pruned weights and is not matched.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn


@dataclass(frozen=True)
class Layout:
    """Paths (from the layer module) of one family's blocks, and the attributes pruning keeps in sync."""

    name: str
    attention: str                     # the attention module
    qkv: tuple[str, ...]               # from the attention module: (q, k, v), or (fused,)
    out: str                           # attention output projection, from the layer
    ffn_up: tuple[str, ...]            # hidden -> intermediate (gate first where there is one)
    ffn_down: str                      # intermediate -> hidden
    head_size: str                     # attribute of the attention module
    head_counts: tuple[str, ...] = ()  # attention attributes holding the (query) head count
    width_attrs: tuple[str, ...] = ()  # attention attributes holding the query width
    config_ffn: str = "intermediate_size"
    #: The config can state fewer heads of the same size (it reads ``head_dim``).
    config_heads: bool = False


LAYOUTS: tuple[Layout, ...] = (
    Layout("bert", "attention.self", ("query", "key", "value"), "attention.output.dense",
           ("intermediate.dense",), "output.dense", "attention_head_size",
           head_counts=("num_attention_heads",), width_attrs=("all_head_size",)),
    Layout("distilbert", "attention", ("q_lin", "k_lin", "v_lin"), "attention.out_lin", ("ffn.lin1",),
           "ffn.lin2", "attention_head_size", head_counts=("n_heads",), config_ffn="hidden_dim"),
    Layout("vit", "attention", ("q_proj", "k_proj", "v_proj"), "attention.o_proj", ("mlp.fc1",), "mlp.fc2",
           "head_dim", head_counts=("num_attention_heads",), config_heads=True),
    Layout("llama", "self_attn", ("q_proj", "k_proj", "v_proj"), "self_attn.o_proj",
           ("mlp.gate_proj", "mlp.up_proj"), "mlp.down_proj", "head_dim", config_heads=True),
    Layout("gpt2", "attn", ("c_attn",), "attn.c_proj", ("mlp.c_fc",), "mlp.c_proj", "head_dim",
           head_counts=("num_heads",), width_attrs=("split_size",), config_ffn="n_inner"),
)


@dataclass(frozen=True)
class TransformerLayer:
    """One layer's prunable parts (names qualified from the model root)."""

    name: str
    layout: Layout
    attention: nn.Module
    qkv: tuple[nn.Linear, ...]  # (q, k, v) or (fused,)
    attention_out: nn.Linear
    ffn_up: tuple[nn.Linear, ...]
    ffn_down: nn.Linear

    @property
    def attention_name(self) -> str:
        return f"{self.name}.{self.layout.attention}"

    @property
    def ffn_name(self) -> str:
        return f"{self.name}.{self.layout.ffn_up[-1]}"

    @property
    def fused(self) -> bool:
        return len(self.qkv) == 1

    @property
    def head_size(self) -> int:
        return int(getattr(self.attention, self.layout.head_size))

    @property
    def query_width(self) -> int:
        return self.attention_out.in_features

    @property
    def kv_width(self) -> int:
        return self.query_width if self.fused else self.qkv[1].out_features

    @property
    def num_heads(self) -> int:
        return self.query_width // self.head_size

    @property
    def num_kv_heads(self) -> int:
        return self.kv_width // self.head_size

    @property
    def ffn_width(self) -> int:
        return self.ffn_down.in_features

    def split_qkv(self, outputs: tuple[Tensor, ...]) -> tuple[Tensor, Tensor, Tensor]:
        """Query, key and value activations from the projections' outputs (one fused tensor or three)."""
        if not self.fused:
            q, k, v = outputs
            return q, k, v
        q, k, v = outputs[0].split([self.query_width, self.kv_width, self.kv_width], dim=-1)
        return q, k, v


def _resolve(root: nn.Module, path: str) -> Any:
    module: Any = root
    for part in path.split("."):
        module = getattr(module, part, None)
        if module is None:
            return None
    return module


def _match(name: str, module: nn.Module, layout: Layout) -> TransformerLayer | None:
    attention = _resolve(module, layout.attention)
    if not isinstance(attention, nn.Module) or not hasattr(attention, layout.head_size):
        return None
    qkv = tuple(_resolve(attention, p) for p in layout.qkv)
    out, down = _resolve(module, layout.out), _resolve(module, layout.ffn_down)
    up = tuple(_resolve(module, p) for p in layout.ffn_up)
    if not all(isinstance(m, nn.Linear) for m in (*qkv, out, *up, down)):
        return None
    return TransformerLayer(name, layout, attention, qkv, out, up, down)


def transformer_layers(model: nn.Module) -> list[TransformerLayer]:
    """The layers of ``model`` that match a :data:`LAYOUTS` entry, in execution order (may be empty)."""
    layers = []
    for name, module in model.named_modules():
        for layout in LAYOUTS:
            layer = _match(name, module, layout)
            if layer is not None:
                layers.append(layer)
                break
    return layers


def fused_attention_candidates(model: nn.Module) -> list[str]:
    """Names of Linears that look like a hand-written fused q/k/v projection (3x as many outputs as
    inputs): attention no layout describes, named in errors so the user knows what to ignore."""
    return [n for n, m in model.named_modules()
            if isinstance(m, nn.Linear) and m.out_features == 3 * m.in_features]


def sync_config(model: nn.Module) -> None:
    """Make attention attributes and the config match the weights after FFN or head pruning.

    Head counts and query widths follow ``attention_out.in_features`` (the head size never
    changes). The config's FFN width is set when every layer has the same width, and its head
    count where the config can state it (``head_dim`` kept explicitly: ViT, Llama) and every layer
    agrees, so ``save_pretrained``/``from_pretrained`` round-trips the model. BERT, DistilBERT and
    GPT-2 configs derive the head size from ``hidden_size / heads``: head-pruned models of those
    families reload from compressor checkpoints instead.
    """
    layers = transformer_layers(model)
    for layer in layers:
        for attr in layer.layout.head_counts:
            setattr(layer.attention, attr, layer.num_heads)
        for attr in layer.layout.width_attrs:
            setattr(layer.attention, attr, layer.query_width)
    config = next((m.config for m in model.modules() if hasattr(m, "config")), None)
    if config is None or not layers:
        return
    ffn = {layer.ffn_width for layer in layers}
    if len(ffn) == 1 and hasattr(config, layers[0].layout.config_ffn):
        setattr(config, layers[0].layout.config_ffn, ffn.pop())
    heads = {(layer.num_heads, layer.num_kv_heads, layer.head_size) for layer in layers}
    if len(heads) == 1 and all(layer.layout.config_heads for layer in layers):
        config.num_attention_heads, kv_heads, config.head_dim = heads.pop()
        if hasattr(config, "num_key_value_heads"):
            config.num_key_value_heads = kv_heads
