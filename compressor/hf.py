"""Hugging Face models by task: a local folder loads with the head its ``config.architectures`` names.

``model: {huggingface: DIR}`` reads ``DIR/config.json`` and picks the task from the architecture's
name (``args: {task: ...}`` overrides it):

| task | architectures | inputs | output |
|---|---|---|---|
| ``feature-extraction`` | ``*Model`` (no head), sentence-transformers folders | text or image | sentence embedding (mean-pooled, L2-normalised) or pooled image features |
| ``sequence-classification`` | ``*ForSequenceClassification`` | text | logits (batch, labels) |
| ``image-classification`` | ``*ForImageClassification`` | image | logits (batch, labels) |
| ``causal-lm``, ``fill-mask``, ``token-classification`` | ``*ForCausalLM``, ``*LMHeadModel``, ``*ForMaskedLM``, ``*ForTokenClassification`` | text | logits (batch, tokens, vocabulary or labels) |

Each model is wrapped as a plain module (tensors in, one tensor out) so that it traces, exports to
ONNX and prunes like any other; the Hugging Face model stays reachable (``encoder`` or ``model``
with its ``config``). Models load with eager attention (the only attention ONNX Runtime's
transformer optimizer fuses) and ``local_files_only`` (nothing is downloaded), and GPT-2's
``Conv1D`` projections become ``nn.Linear`` (the same arithmetic on transposed weights), which
the quantize, prune and low-rank stages handle. transformers is imported lazily: importing
compressor stays fast for models that never use it.
"""
from __future__ import annotations

import copy
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

import torch.nn.functional as F
from torch import Tensor, nn

from compressor.errors import DataError, ModelLoadError
from compressor.task import IGNORE, Metric

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

Kind = Literal["feature-extraction", "sequence-classification", "image-classification", "causal-lm",
               "fill-mask", "token-classification"]
KINDS: tuple[str, ...] = get_args(Kind)
#: Architecture name endings -> task (the head the architecture has).
HEADS: dict[str, Kind] = {"ForSequenceClassification": "sequence-classification",
                          "ForImageClassification": "image-classification",
                          "ForImageClassificationWithTeacher": "image-classification",
                          "ForCausalLM": "causal-lm", "LMHeadModel": "causal-lm", "ForMaskedLM": "fill-mask",
                          "ForTokenClassification": "token-classification"}
PER_TOKEN: tuple[Kind, ...] = ("causal-lm", "fill-mask", "token-classification")
#: Files a saved tokenizer has at least one of (transformers builds an empty tokenizer without them).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json", "tokenizer.model",
                   "spiece.model", "sentencepiece.bpe.model")


@dataclass(frozen=True)
class InputSpec:
    """What a wrapped model reads and writes: the task's data and the export's signature follow it."""

    kind: Kind
    modality: Literal["text", "image"]
    #: (channels, height, width) of image inputs.
    image_shape: tuple[int, int, int] | None = None

    @property
    def per_token(self) -> bool:
        """The output has one row per input token (language-model and token-classification logits)."""
        return self.kind in PER_TOKEN

    @property
    def classifies(self) -> bool:
        """The output is class (or token) logits whose arg-max is the prediction."""
        return self.kind != "feature-extraction"

    @property
    def input_names(self) -> list[str]:
        return ["input_ids", "attention_mask"] if self.modality == "text" else ["pixel_values"]

    @property
    def output_name(self) -> str:
        return "logits" if self.classifies else ("embedding" if self.modality == "text" else "features")

    @property
    def metric(self) -> Metric:
        return "accuracy" if self.classifies else "fidelity"

    def targets(self, outputs: Tensor, mask: Tensor | None = None) -> Tensor:
        """What quality is measured against on unlabelled data: the original model's ``outputs``
        (an embedder), its predicted class (a classifier), or its per-token arg-max with
        :data:`~compressor.task.IGNORE` where ``mask`` is 0 (padding)."""
        if not self.classifies:
            return outputs
        predicted = outputs.argmax(-1)
        if self.per_token and mask is not None:
            predicted = predicted.masked_fill(mask == 0, IGNORE)
        return predicted


class SentenceEmbedder(nn.Module):
    """A text encoder followed by masked mean pooling and L2 normalisation.

    This is sentence-transformers' pipeline for all-MiniLM-L6-v2 (Transformer, Pooling(mean),
    Normalize) as one plain module. The HF model stays reachable as ``encoder``.
    """

    def __init__(self, encoder: nn.Module, source: Path | None = None) -> None:
        super().__init__()
        self.encoder = encoder
        self.source = source
        self.spec = InputSpec("feature-extraction", "text")

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return F.normalize(pooled, p=2, dim=1)


class TextModel(nn.Module):
    """A text model with a head: token ids and attention mask in, logits out."""

    def __init__(self, model: nn.Module, spec: InputSpec, source: Path | None = None) -> None:
        super().__init__()
        self.model, self.spec, self.source = model, spec, source

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        extra = {"use_cache": False} if self.spec.kind == "causal-lm" else {}
        return self.model(input_ids=input_ids, attention_mask=attention_mask, **extra).logits


class ImageModel(nn.Module):
    """A vision model: pixel values in, logits (classifier) or pooled features (no head) out."""

    def __init__(self, model: nn.Module, spec: InputSpec, source: Path | None = None) -> None:
        super().__init__()
        self.model, self.spec, self.source = model, spec, source

    def forward(self, pixel_values: Tensor) -> Tensor:
        out = self.model(pixel_values=pixel_values)
        if self.spec.classifies:
            return out.logits
        pooled = getattr(out, "pooler_output", None)
        return (pooled if pooled is not None else out.last_hidden_state.mean(1)).flatten(1)


def input_spec(model: nn.Module) -> InputSpec | None:
    """The input spec of a model this module loaded (None for other models)."""
    spec = getattr(model, "spec", None)
    return spec if isinstance(spec, InputSpec) else None


def offline() -> None:
    """Keep huggingface_hub off the network; it reads this when first imported."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")


def load_hf_model(path: str | Path, pretrained: bool = True, task: Kind | None = None) -> nn.Module:
    """The model in the Hugging Face folder ``path`` for its task (see the module docstring), in eval mode.

    ``pretrained=False`` builds the architecture with random weights (for a checkpoint to fill).
    """
    path = Path(path)
    if not (path / "config.json").is_file():
        raise ModelLoadError(f"model.huggingface: {path} is not a Hugging Face model folder (no config.json)")
    offline()
    import transformers

    try:
        config = transformers.AutoConfig.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError, KeyError) as exc:
        raise ModelLoadError(f"{path / 'config.json'}: cannot read the config ({exc})") from None
    architecture, kind = _architecture(path, config, task)
    if kind == "feature-extraction" and hasattr(config, "vocab_size"):
        return load_sentence_embedder(path, pretrained)
    cls = transformers.AutoModel if kind == "feature-extraction" else getattr(transformers, architecture)
    model = _build(cls, path, config, pretrained)
    image = kind == "image-classification" or not hasattr(config, "vocab_size")
    if image:
        size = getattr(config, "image_size", 224)
        size = size if isinstance(size, int) else int(size[0])
        spec = InputSpec(kind, "image", (int(getattr(config, "num_channels", 3)), size, size))
        return ImageModel(model, spec, path).eval()
    return TextModel(model, InputSpec(kind, "text"), path).eval()


def load_sentence_embedder(path: str | Path, pretrained: bool = True) -> SentenceEmbedder:
    """A text encoder folder as a :class:`SentenceEmbedder` (mean pooling, L2-normalised).

    The pooler (a dense layer over [CLS]) is dropped: mean pooling never reads it, and pruning or
    export should not see it. A sentence-transformers folder must use mean pooling.
    """
    path = Path(path)
    pooling = path / "1_Pooling" / "config.json"
    if pooling.is_file() and not json.loads(pooling.read_text()).get("pooling_mode_mean_tokens", False):
        raise ModelLoadError(f"{pooling}: this sentence-transformers model does not use mean pooling, "
                             "the only pooling SentenceEmbedder implements")
    offline()
    import transformers

    config = transformers.AutoConfig.from_pretrained(path, local_files_only=True)
    encoder = _build(transformers.AutoModel, path, config, pretrained)
    if getattr(encoder, "pooler", None) is not None:
        encoder.pooler = None  # not add_pooling_layer=False: that reports the pooler's weights as unexpected
    return SentenceEmbedder(encoder, path).eval()


def hf_tokenizer(path: str | Path, what: str = "model.huggingface") -> PreTrainedTokenizerBase:
    """The tokenizer saved in the Hugging Face folder ``path``; a pad token is set if it has none
    (GPT-2 and Llama reuse their end-of-sequence token, as their own batching does)."""
    if not any((Path(path) / name).is_file() for name in TOKENIZER_FILES):
        raise DataError(f"{what}: no tokenizer in {path} (none of {', '.join(TOKENIZER_FILES)}); save one there "
                        "with tokenizer.save_pretrained(DIR), or give data.tokenizer: DIR")
    offline()
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise DataError(f"{what}: no tokenizer in {path} ({str(exc).splitlines()[0]}); save one there "
                        "with tokenizer.save_pretrained(DIR), or give data.tokenizer: DIR") from None
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise DataError(f"{what}: the tokenizer in {path} has neither a pad nor an end-of-sequence token "
                            "to pad batches with")
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"  # batches are cut to their longest sentence from the right
    return tokenizer


def _architecture(path: Path, config: Any, task: Kind | None) -> tuple[str, Kind]:
    """The architecture named by the config and the task its head does (``task`` overrides)."""
    names = list(getattr(config, "architectures", None) or [])
    architecture = names[0] if names else type(config).__name__.removesuffix("Config") + "Model"
    if task is not None:
        if task not in KINDS:
            raise ModelLoadError(f"model.args.task: unknown task {task!r}; known: {', '.join(KINDS)}")
        if task != "feature-extraction" and HEADS.get(_suffix(architecture)) != task:
            raise ModelLoadError(f"model.args.task: {path} holds {architecture}, which has no {task} head "
                                 f"(its task: {_kind(path, architecture)})")
        return architecture, task
    return architecture, _kind(path, architecture)


def _suffix(architecture: str) -> str:
    return next((s for s in HEADS if architecture.endswith(s)), "")


def _kind(path: Path, architecture: str) -> Kind:
    suffix = _suffix(architecture)
    if suffix:
        return HEADS[suffix]
    if architecture.endswith("Model"):
        return "feature-extraction"
    raise ModelLoadError(f"{path / 'config.json'}: architectures names {architecture}, a head compressor does "
                         f"not load (it loads *Model and {', '.join('*' + s for s in HEADS)}); set "
                         "model.args.task: feature-extraction to compress its encoder as an embedder")


def _build(cls: Any, path: Path, config: Any, pretrained: bool) -> PreTrainedModel:
    """``cls`` from ``path`` (or from its config with random weights), eager attention where the
    architecture has attention, GPT-2's Conv1D as Linear."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a bar per load on stderr would bury compressor's own lines
    try:
        if pretrained:
            model = cls.from_pretrained(path, local_files_only=True, attn_implementation="eager")
        else:  # the Auto classes build from a config with from_config, model classes with _from_config
            build = cls.from_config if hasattr(cls, "from_config") else cls._from_config
            model = build(config, attn_implementation="eager")
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"model.huggingface: cannot load {path} ({str(exc).splitlines()[0]})") from None
    linear_conv1d(model)
    return model.eval()


def linear_conv1d(model: nn.Module) -> int:
    """Replace transformers' ``Conv1D`` (GPT-2's projections: ``x @ W + b`` with W stored (in, out))
    by the equivalent ``nn.Linear``; returns how many were replaced."""
    from transformers.pytorch_utils import Conv1D

    found = [(name, m) for name, m in model.named_modules() if isinstance(m, Conv1D)]
    for name, conv in found:
        linear = nn.Linear(conv.weight.shape[0], conv.weight.shape[1])
        linear.weight.data = conv.weight.data.t().contiguous()
        linear.bias.data = conv.bias.data
        linear.was_conv1d = True  # read by save_pretrained
        _replace(model, name, linear)
    return len(found)


def save_pretrained(model: nn.Module, folder: str | Path) -> Path:
    """Save a model :func:`load_hf_model` built (pruned or not, not quantized) as a Hugging Face
    folder that ``from_pretrained`` and ``model: {huggingface: DIR}`` read back: its config as
    pruning left it, GPT-2's Linears as Conv1D again, and the source folder's tokenizer.

    The folder is staged and read back with ``from_pretrained`` first: where the config cannot
    state what pruning changed (fewer heads in BERT, DistilBERT and GPT-2 configs, which derive the
    head size from ``hidden_size / heads``; channel-pruned widths), :class:`ModelLoadError` says so
    and nothing is written.
    """
    from transformers.pytorch_utils import Conv1D

    inner = copy.deepcopy(getattr(model, "encoder", None) or getattr(model, "model"))
    for name, linear in list(inner.named_modules()):
        if getattr(linear, "was_conv1d", False):
            conv = Conv1D(linear.out_features, linear.in_features)
            conv.weight.data = linear.weight.data.t().contiguous()
            conv.bias.data = linear.bias.data
            _replace(inner, name, conv)
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder.parent, prefix=f".{folder.name}.") as tmp:
        inner.save_pretrained(tmp)
        try:
            type(inner).from_pretrained(tmp, local_files_only=True)
        except (RuntimeError, ValueError, OSError) as exc:
            raise ModelLoadError(
                f"{folder}: not written: {type(inner).__name__}'s config cannot state the pruned shapes, so "
                f"from_pretrained would not rebuild it ({str(exc).strip().splitlines()[0]}); reload the model "
                "from its compressor checkpoint (compressor.load_model)") from None
        source = getattr(model, "source", None)
        if source is not None and isinstance(getattr(model, "spec", None), InputSpec) and model.spec.modality == "text":
            hf_tokenizer(source).save_pretrained(tmp)
        folder.mkdir(exist_ok=True)
        for item in Path(tmp).iterdir():
            os.replace(item, folder / item.name)
    return folder


def _replace(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, attr = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, attr, module)
