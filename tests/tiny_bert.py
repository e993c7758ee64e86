"""A tiny random BERT wrapped like the zoo's MiniLM, for fast transformer pruning/distillation tests."""
from __future__ import annotations

import torch
from torch import nn
from transformers import BertConfig, BertModel

from compressor.transformer_layers import transformer_layers
from compressor.stages.prune.transformer import prune_transformer
from compressor.hf import SentenceEmbedder


def tiny_embedder() -> SentenceEmbedder:
    """2 layers, 4 heads of 8 dims, FFN 64: the MiniLM structure at a thousandth of the cost."""
    torch.manual_seed(0)
    config = BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=32)
    config._attn_implementation = "eager"
    return SentenceEmbedder(BertModel(config, add_pooling_layer=False)).eval()


def token_inputs(batch: int = 3, length: int = 12) -> tuple[torch.Tensor, torch.Tensor]:
    """Random token ids; every row but the first padded after half its length."""
    ids = torch.randint(1, 64, (batch, length))
    mask = torch.ones_like(ids)
    mask[1:, length // 2:] = 0
    return ids, mask


def prune_all(model: nn.Module, unit: str, ratio: float = 0.5, round_to: int | None = None) -> list:
    """Prune FFN neurons or heads of every layer by l2 importance; returns the cuts."""
    layers = {(l.ffn_name if unit == "ffn" else l.attention_name): l for l in transformer_layers(model)}
    return prune_transformer(model, unit=unit, layers=layers, ratios={n: ratio for n in layers}, criterion="l2",
                             round_to=round_to, steps=1, before_step=lambda: None,
                             after_step=lambda step: None)
