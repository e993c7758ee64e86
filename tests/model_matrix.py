"""The generality matrix: model families x what compressor does to them (issue 13.4).

Shared by tests/test_model_matrix.py (asserts every cell) and bench/models.py (writes the
support table in docs/models.md). Each family is a tiny random model (seconds per run) that a user
would bring: two hand-written ones (a MobileNetV3-like CNN, a ViT with fused q/k/v) through
``model: {factory, checkpoint}``, and Hugging Face folders built from configs through
``model: {huggingface: DIR}``. A *pipeline* is prune -> distill -> int8 PTQ -> export for one target;
a *refusal* is a recipe the family cannot run, which must stop with exit code 2 and a message
naming the module and the recipe key.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch

from compressor.export.runtime import ort_session
from tiny_hf import save_tiny
from tiny_models import tiny_mobilenet_v3, tiny_vit

TARGETS = ("cpu-x86", "jetson-orin")
QUICK = {"epochs": 1, "max_steps_per_epoch": 2}
FFN_AND_HEADS = [{"prune": {"method": "ffn", "sparsity": 0.5}},
                 {"prune": {"name": "heads", "method": "heads", "sparsity": 0.5}}]


@dataclass(frozen=True)
class Family:
    name: str
    what: str
    source: str                        # "hand" (factory + checkpoint) or an HF family of tiny_hf
    prune: list[dict[str, Any]]        # the prune stages of its pipeline
    relations: list[str] | None = None  # MiniLM relations its distill stage uses (None: output KD only)
    #: name -> (stages, pattern the exit-2 message must match): recipes it must refuse.
    refusals: dict[str, tuple[list[dict[str, Any]], str]] = field(default_factory=dict)


def _cnn_refusals(model: str) -> dict[str, tuple[list[dict[str, Any]], str]]:
    return {"prune ffn/heads": ([{"prune": {"method": "heads"}}],
                                rf"method 'heads' needs transformer layers .*; {model} has none"),
            "attention relations": ([{"distill": {"attention": {"weight": 1.0}, "finetune": QUICK}}],
                                    rf"attention.weight > 0 needs transformer layers .*\({model}\) has none: "
                                    "set attention.weight: 0")}


FAMILIES: dict[str, Family] = {f.name: f for f in (
    Family("mobilenet_v3", "hand-written MobileNetV3-like CNN (depthwise, squeeze-excitation, hard-swish)", "hand",
           [{"prune": {"sparsity": 0.5}}], refusals=_cnn_refusals("TinyMobileNetV3")),
    Family("vit_hand", "hand-written ViT, fused q/k/v Linear", "hand",
           [{"prune": {"sparsity": 0.5, "layers": ["blocks.*.mlp.0"]}}],
           refusals={"prune channel (all layers)": (
                         [{"prune": {"sparsity": 0.5}}],
                         r"channel pruning cannot shrink .*blocks\.0\.attn\.qkv.*ignore: \["),
                     "prune heads": ([{"prune": {"method": "heads"}}],
                                     r"blocks\.0\.attn\.qkv, blocks\.1\.attn\.qkv look like hand-written fused q/k/v "
                                     r"projections.*ignore: \["),
                     "attention relations": ([{"distill": {"attention": {"weight": 1.0}, "finetune": QUICK}}],
                                             r"\(TinyViT\) has none: set attention.weight: 0")}),
    Family("bert", "HF BertForSequenceClassification", "bert", FFN_AND_HEADS, ["qk", "vv"]),
    Family("distilbert", "HF DistilBertModel (sentence embedder)", "distilbert", FFN_AND_HEADS, ["qk", "vv"]),
    Family("roberta", "HF RobertaForSequenceClassification", "roberta", FFN_AND_HEADS, ["qk", "vv"]),
    Family("gpt2", "HF GPT2LMHeadModel (fused c_attn)", "gpt2", FFN_AND_HEADS, ["qk", "vv"]),
    Family("llama", "HF LlamaForCausalLM (grouped-query attention)", "llama", FFN_AND_HEADS, ["vv", "qq", "kk"],
           refusals={"relation qk on grouped-query attention": (
               [{"distill": {"attention": {"weight": 1.0, "relations": ["qk"]}, "finetune": QUICK}}],
               r"self_attn has grouped-query attention .*use relations \[vv, qq, kk\]"),
               "channel pruning": ([{"prune": {"sparsity": 0.5}}],
                                   r"method 'channel' on Llama-style layers \(model.model.layers.0, .*use method: ffn or heads")}),
    Family("vit", "HF ViTForImageClassification", "vit", FFN_AND_HEADS, ["qk", "vv"]),
    Family("convnext", "HF ConvNextForImageClassification", "convnext", [{"prune": {"sparsity": 0.5}}],
           refusals=_cnn_refusals("ImageModel")),
    Family("resnet", "HF ResNetForImageClassification", "resnet", [{"prune": {"sparsity": 0.5}}],
           refusals=_cnn_refusals("ImageModel")),
)}
HAND = {"mobilenet_v3": ("tiny_models:tiny_mobilenet_v3", tiny_mobilenet_v3),
        "vit_hand": ("tiny_models:tiny_vit", tiny_vit)}


def model_section(family: Family, root: Path) -> dict[str, Any]:
    """The recipe's model section for ``family``, writing its files under ``root`` once."""
    folder = root / family.name
    if family.source == "hand":
        factory, build = HAND[family.name]
        if not (folder / "weights.pt").is_file():
            folder.mkdir(parents=True, exist_ok=True)
            torch.save(build().state_dict(), folder / "weights.pt")
        return {"factory": factory, "checkpoint": str(folder / "weights.pt")}
    if not (folder / "config.json").is_file():
        save_tiny(family.source, folder)
    return {"huggingface": str(folder)}


def recipe(family: Family, root: Path, target: str, stages: list[dict[str, Any]]) -> dict[str, Any]:
    image = family.source not in ("bert", "distilbert", "roberta", "gpt2", "llama")
    data = ({"dataset": "imagenet-synthetic", "args": {"resolution": 32, "train_samples": 16, "val_samples": 8}}
            if image else {"args": {"samples": 24, "max_length": 16}})
    return {"name": family.name, "model": model_section(family, root), "target": target,
            "data": {**data, "batch_size": 8, "calibration_samples": 16},
            "report": {"latency": "off"}, "stages": stages}


def pipeline(family: Family) -> list[dict[str, Any]]:
    """prune -> distill (output KD, plus MiniLM relations for transformers) -> int8 PTQ -> export."""
    distill: dict[str, Any] = {"finetune": QUICK}
    if family.relations:
        distill["attention"] = {"weight": 1.0, "relations": family.relations, "relation_heads": 2}
    # placement: all: the matrix checks that every layer exports as int8, whatever pays on this CPU
    quantize = {"activations": {"observer": "minmax"}, "placement": "all"}
    return [*family.prune, {"distill": distill}, {"quantize": quantize},
            {"export": {"formats": ["onnx"], "latency": False, "parity": {"samples": 8}}}]


def reference_parity(deploy: Path) -> float:
    """Mean cosine of the exported file against PyTorch's outputs in sample.npz, with ONNX Runtime's
    graph optimizations off: every QuantizeLinear/DequantizeLinear runs as the ONNX standard defines
    it, so this checks the file, not the int8 kernels ONNX Runtime fuses it into."""
    session = ort_session(deploy / "model.onnx", threads=1, optimization=ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    with np.load(deploy / "sample.npz") as sample:
        feeds = {i.name: sample[i.name] for i in session.get_inputs()}
        expected = next(sample[k] for k in sample.files if k.startswith("expected."))
    actual = session.run(None, feeds)[0]
    ref, act = expected.reshape(len(expected), -1), actual.reshape(len(actual), -1)
    return float(((ref * act).sum(1) / (np.linalg.norm(ref, axis=1) * np.linalg.norm(act, axis=1) + 1e-30)).mean())
