"""Where the attention and feed-forward blocks of a BERT-style Hugging Face encoder are.

Transformer pruning and MiniLM-style distillation both need these blocks; everything else in the
pipeline stays model-agnostic. Blocks are found by structure, not by class: a layer with
``attention.self.{query,key,value}``, ``attention.output.dense``, ``intermediate.dense`` and
``output.dense`` (BERT, RoBERTa, ELECTRA, MiniLM all name them so).
"""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn


@dataclass(frozen=True)
class EncoderLayer:
    """One transformer layer's prunable parts (names are qualified from the model root)."""

    name: str
    attention: nn.Module  # has query/key/value Linears and num_attention_heads, attention_head_size
    attention_out: nn.Linear  # consumes the concatenated heads
    ffn_up: nn.Linear  # hidden -> intermediate
    ffn_down: nn.Linear  # intermediate -> hidden

    @property
    def attention_name(self) -> str:
        return f"{self.name}.attention.self"

    @property
    def ffn_name(self) -> str:
        return f"{self.name}.intermediate.dense"

    @property
    def num_heads(self) -> int:
        return self.attention.query.out_features // self.attention.attention_head_size


def encoder_layers(model: nn.Module) -> list[EncoderLayer]:
    """The BERT-style layers of ``model`` in execution order (empty if it has none)."""
    layers = []
    for name, module in model.named_modules():
        attention = getattr(getattr(module, "attention", None), "self", None)
        attention_out = getattr(getattr(getattr(module, "attention", None), "output", None), "dense", None)
        up = getattr(getattr(module, "intermediate", None), "dense", None)
        down = getattr(getattr(module, "output", None), "dense", None)
        if (attention is not None and all(isinstance(getattr(attention, k, None), nn.Linear)
                                          for k in ("query", "key", "value"))
                and hasattr(attention, "attention_head_size")
                and all(isinstance(m, nn.Linear) for m in (attention_out, up, down))):
            layers.append(EncoderLayer(name, attention, attention_out, up, down))
    return layers


def sync_config(model: nn.Module) -> None:
    """Make the attention modules' head counts and the config's FFN width match the weights.

    Pruning whole heads keeps ``attention_head_size`` and shrinks ``query.out_features``; the
    modules' ``num_attention_heads``/``all_head_size`` must follow or shape logic using them
    breaks. ``config.intermediate_size`` is updated when every layer has the same FFN width, so
    ``save_pretrained``/``from_pretrained`` round-trips an FFN-pruned model. Head counts cannot be
    expressed in a BERT config (it derives the head size from ``hidden_size / num_attention_heads``);
    such models are rebuilt from compressor checkpoints instead.
    """
    layers = encoder_layers(model)
    for layer in layers:
        attention = layer.attention
        attention.all_head_size = attention.query.out_features
        attention.num_attention_heads = attention.all_head_size // attention.attention_head_size
    widths = {layer.ffn_up.out_features for layer in layers}
    config = next((m.config for m in model.modules() if hasattr(m, "config")), None)
    if config is not None and len(widths) == 1 and hasattr(config, "intermediate_size"):
        config.intermediate_size = widths.pop()
