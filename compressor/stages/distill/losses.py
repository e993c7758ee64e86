"""Distillation losses: outputs (logit KD, embedding cosine/MSE), feature hints, MiniLM relations.

All losses compare a student with a frozen teacher on the same batch. Intermediate tensors are
captured with forward hooks, so any ``nn.Module`` works as student or teacher without changes to
its ``forward``.
"""
from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from compressor.errors import StageError
from compressor.transformer_layers import TransformerLayer

OutputLoss = Literal["kl", "cosine", "mse"]
Relation = Literal["qk", "vv", "qq", "kk"]


def output_loss(student: Tensor, teacher: Tensor, kind: OutputLoss, temperature: float = 1.0) -> Tensor:
    """Logit KD (Hinton et al.: KL of temperature-softened distributions, scaled by T^2 so its
    gradients keep their size as T changes) or, for embeddings, 1 - cosine or MSE."""
    if kind == "kl":
        return F.kl_div(F.log_softmax(student / temperature, -1), F.log_softmax(teacher / temperature, -1),
                        reduction="batchmean", log_target=True) * temperature ** 2
    if kind == "cosine":
        return (1 - F.cosine_similarity(student.flatten(1), teacher.flatten(1), dim=1)).mean()
    return F.mse_loss(student, teacher)


class Recorder:
    """Keeps the latest output of each hooked module (the first tensor of tuple outputs)."""

    def __init__(self, modules: dict[str, nn.Module]) -> None:
        self.outputs: dict[str, Tensor] = {}
        self._handles = [m.register_forward_hook(self._hook(name)) for name, m in modules.items()]

    def _hook(self, name: str):  # type: ignore[no-untyped-def]
        def hook(module: nn.Module, args: object, output: object) -> None:
            self.outputs[name] = output[0] if isinstance(output, (tuple, list)) else output
        return hook

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self.outputs.clear()


class FeatureHints(nn.Module):
    """FitNets-style hints: student features, projected to the teacher's width where they differ,
    regress onto the teacher's features of the mapped layers.

    The channel dimension is dim 1 of 4-D (N, C, H, W) maps and the last dim otherwise; a 1x1 conv
    or a linear layer projects it. The projections are trained with the student.
    """

    def __init__(self, student: nn.Module, teacher: nn.Module, layer_map: dict[str, str],
                 inputs: tuple[Tensor, ...], loss: Literal["mse", "cosine"] = "mse") -> None:
        super().__init__()
        self.layer_map, self.kind = layer_map, loss
        s_modules, t_modules = dict(student.named_modules()), dict(teacher.named_modules())
        for side, names, modules in (("student", layer_map.keys(), s_modules),
                                     ("teacher", layer_map.values(), t_modules)):
            missing = [n for n in names if n not in modules]
            if missing:
                raise StageError(f"features.layers: the {side} has no layer {missing[0]!r}")
        self._student = Recorder({n: s_modules[n] for n in layer_map})
        self._teacher = Recorder({n: t_modules[n] for n in set(layer_map.values())})
        was_training = student.training
        with torch.no_grad():  # one pass to learn the feature shapes
            student.eval()(*inputs)
            teacher(*inputs)
        student.train(was_training)
        self.projections = nn.ModuleDict()
        for s_name, t_name in layer_map.items():
            s_shape, t_shape = self._student.outputs[s_name].shape, self._teacher.outputs[t_name].shape
            conv = len(s_shape) == 4
            s_width, t_width = (s_shape[1], t_shape[1]) if conv else (s_shape[-1], t_shape[-1])
            if _spatial(s_shape, conv) != _spatial(t_shape, conv):
                raise StageError(f"features: {s_name} {tuple(s_shape)} and {t_name} {tuple(t_shape)} "
                                 "differ beyond their channel width; map layers of equal resolution")
            if s_width != t_width:
                self.projections[_key(s_name)] = (nn.Conv2d(s_width, t_width, 1, bias=False) if conv
                                                  else nn.Linear(s_width, t_width, bias=False))

    def loss(self, mask: Tensor | None = None) -> Tensor:
        """The hint loss of the last student and teacher forward passes.

        ``mask`` (batch, tokens), e.g. an attention mask, keeps padded tokens of (batch, tokens,
        width) features out of the loss: they never reach a pooled embedding.
        """
        losses = []
        for s_name, t_name in self.layer_map.items():
            s = self._student.outputs[s_name]
            if _key(s_name) in self.projections:
                s = self.projections[_key(s_name)](s)
            t = self._teacher.outputs[t_name].detach()
            if mask is not None and s.dim() == 3 and s.shape[:2] == mask.shape:
                s, t = s[mask.bool()], t[mask.bool()]  # (tokens, width)
            losses.append(F.mse_loss(s, t) if self.kind == "mse"
                          else (1 - F.cosine_similarity(s.flatten(1), t.flatten(1), dim=1)).mean())
        return torch.stack(losses).mean()

    def remove(self) -> None:
        self._student.remove()
        self._teacher.remove()


def _spatial(shape: torch.Size, conv: bool) -> tuple[int, ...]:
    return tuple(shape[2:]) if conv else tuple(shape[:-1])


def _key(name: str) -> str:
    return name.replace(".", "/")  # ModuleDict keys cannot hold dots


class AttentionRelations:
    """MiniLM self-attention distillation (Wang et al. 2020, 2021) on transformer layers.

    For each mapped layer pair and relation (``qk``: the attention distribution; ``vv``, ``qq``,
    ``kk``: scaled dot-product self-relations of values, queries, keys), the concatenated head
    vectors are split into ``heads`` relation heads, turned into softmax(x y^T / sqrt(d)) over the
    unpadded keys, and the student's rows are pulled onto the teacher's with KL divergence. Using
    relation heads of the concatenated vectors (MiniLMv2) makes the loss independent of how many
    attention heads each model has, so a head-pruned student learns from its unpruned teacher.
    Fused q/k/v projections (GPT-2) are split into their three parts.
    """

    def __init__(self, student: list[TransformerLayer], teacher: list[TransformerLayer],
                 layer_map: dict[int, int], relations: list[Relation], heads: int) -> None:
        self.layer_map, self.relations, self.heads = layer_map, relations, heads
        self.layers = {"student": student, "teacher": teacher}
        for i, j in layer_map.items():
            for side, layers, k in (("student", student, i), ("teacher", teacher, j)):
                if not 0 <= k < len(layers):
                    raise StageError(f"attention.layers: {side} has {len(layers)} layers, no layer {k}")
                layer = layers[k]
                for width in {layer.query_width, layer.kv_width}:
                    if width % heads:
                        raise StageError(f"attention.relation_heads={heads} does not divide the {side}'s "
                                         f"{width} attention dims of layer {k} ({layer.attention_name})")
                if "qk" in relations and layer.query_width != layer.kv_width:
                    raise StageError(f"attention.relations: 'qk' compares queries with keys, but the {side}'s "
                                     f"{layer.attention_name} has grouped-query attention ({layer.query_width} "
                                     f"query and {layer.kv_width} key dims); use relations [vv, qq, kk]")
        self.student = Recorder(_projections(student, layer_map.keys()))
        self.teacher = Recorder(_projections(teacher, layer_map.values()))

    def loss(self, mask: Tensor | None) -> Tensor:
        losses = []
        for i, j in self.layer_map.items():
            s_qkv = self._qkv("student", self.student, i)
            t_qkv = {k: v.detach() for k, v in self._qkv("teacher", self.teacher, j).items()}
            for rel in self.relations:
                x, y = rel[0], rel[1]
                s = _relation(s_qkv[x], s_qkv[y], self.heads, mask)
                t = _relation(t_qkv[x], t_qkv[y], self.heads, mask)
                losses.append(_row_kl(s, t, mask))
        return torch.stack(losses).mean()

    def _qkv(self, side: str, recorder: Recorder, index: int) -> dict[str, Tensor]:
        layer = self.layers[side][index]
        q, k, v = layer.split_qkv(tuple(recorder.outputs[f"{index}.{n}"] for n in range(len(layer.qkv))))
        return {"q": q, "k": k, "v": v}

    def remove(self) -> None:
        self.student.remove()
        self.teacher.remove()


def _projections(layers: list[TransformerLayer], indices: object) -> dict[str, nn.Module]:
    return {f"{i}.{n}": module for i in indices for n, module in enumerate(layers[i].qkv)}


def _relation(x: Tensor, y: Tensor, heads: int, mask: Tensor | None) -> Tensor:
    """log softmax(x y^T / sqrt(d)) per relation head: (batch, heads, L, L); padded keys excluded."""
    b, length, width = x.shape
    d = width // heads
    xh = x.view(b, length, heads, d).transpose(1, 2)
    yh = y.view(b, length, heads, d).transpose(1, 2)
    scores = xh @ yh.transpose(-1, -2) / math.sqrt(d)
    if mask is not None:
        scores = scores.masked_fill(~mask.bool()[:, None, None, :], torch.finfo(scores.dtype).min)
    return F.log_softmax(scores, dim=-1)


def _row_kl(student: Tensor, teacher: Tensor, mask: Tensor | None) -> Tensor:
    """KL(teacher || student) per query row, averaged over heads and unpadded rows."""
    kl = (teacher.exp() * (teacher - student)).sum(-1)  # (batch, heads, L)
    if mask is None:
        return kl.mean()
    rows = mask.bool()[:, None, :].expand_as(kl)
    return kl[rows].mean()
