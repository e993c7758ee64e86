"""Tiny random Hugging Face models of several families, saved as folders with a tiny tokenizer.

Each config is the family's structure at a few thousand parameters (2 layers, 4 heads of 8 dims)
so a test loads, prunes, distills and exports it in seconds. The tokenizer is a character-level
WordPiece (BERT) tokenizer over lower-case letters, digits and punctuation: any text tokenizes
into ids below :data:`VOCAB`, and every family's folder can hold it.
"""
from __future__ import annotations

import string
from pathlib import Path
from typing import Callable

import torch
import transformers as T

VOCAB = 128
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
TEXT = dict(vocab_size=VOCAB, num_hidden_layers=2, num_attention_heads=4, hidden_size=32,
            intermediate_size=64, max_position_embeddings=80, pad_token_id=0)
IMAGE = dict(image_size=32, num_labels=5)

CONFIGS: dict[str, Callable[[], T.PretrainedConfig]] = {
    "bert": lambda: T.BertConfig(**TEXT, architectures=["BertForSequenceClassification"], num_labels=3),
    "distilbert": lambda: T.DistilBertConfig(vocab_size=VOCAB, dim=32, n_layers=2, n_heads=4, hidden_dim=64,
                                             max_position_embeddings=80, pad_token_id=0,
                                             architectures=["DistilBertModel"]),
    "roberta": lambda: T.RobertaConfig(**{**TEXT, "max_position_embeddings": 84, "pad_token_id": 1},
                                       architectures=["RobertaForSequenceClassification"], num_labels=2),
    "gpt2": lambda: T.GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4, n_positions=80,
                                 bos_token_id=2, eos_token_id=3, architectures=["GPT2LMHeadModel"]),
    "llama": lambda: T.LlamaConfig(**{k: v for k, v in TEXT.items() if k != "pad_token_id"}, num_key_value_heads=2,
                                   bos_token_id=2, eos_token_id=3, architectures=["LlamaForCausalLM"]),
    "vit": lambda: T.ViTConfig(**IMAGE, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                               intermediate_size=64, architectures=["ViTForImageClassification"]),
    "convnext": lambda: T.ConvNextConfig(**IMAGE, num_stages=2, hidden_sizes=[16, 32], depths=[1, 1],
                                         architectures=["ConvNextForImageClassification"]),
    "resnet": lambda: T.ResNetConfig(**IMAGE, embedding_size=16, hidden_sizes=[16, 32], depths=[1, 1],
                                     architectures=["ResNetForImageClassification"]),
}
TEXT_FAMILIES = ("bert", "distilbert", "roberta", "gpt2", "llama")


def save_tokenizer(folder: Path) -> None:
    chars = string.ascii_lowercase + string.digits
    vocab = SPECIAL + list(chars + string.punctuation) + ["##" + c for c in chars]
    assert len(vocab) <= VOCAB
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    T.BertTokenizer(str(folder / "vocab.txt"), do_lower_case=True).save_pretrained(folder)


def save_tiny(family: str, folder: Path) -> Path:
    """A seeded random ``family`` model (its config's architecture) saved in ``folder``."""
    torch.manual_seed(0)
    config = CONFIGS[family]()
    model = getattr(T, config.architectures[0])(config)
    model.save_pretrained(folder)
    if family in TEXT_FAMILIES:
        save_tokenizer(folder)
    return folder
