"""Fake-quantization modules: a tensor quantizer and Conv/Linear layers that use it.

Int8 runs through ``torch.fake_quantize_per_tensor_affine`` / ``..._per_channel_affine`` (symmetric,
zero point 0), which the TorchScript ONNX exporter lowers to QuantizeLinear/DequantizeLinear pairs:
one Q/DQ model serves TensorRT and ONNX Runtime. Other widths (int4 weights) and simulated fp8
(E4M3) use a differentiable formula instead: the exporter has no Q/DQ for them at our opsets, so
their weights export as dequantized constants on the low-bit grid (see docs/quantization.md).

The layers keep their class's names and parameters: ``QuantConv2d`` *is* an ``nn.Conv2d`` (the
class is swapped in place, the way TensorRT Model Optimizer converts modules), so state-dict keys,
layer selectors and ``per_layer`` names stay the same; quantizers add ``input_quantizer.scale`` and
``weight_quantizer.scale`` entries.
"""
from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from compressor.stages.quantize.observers import Observer, make_observer

Format = Literal["int", "fp8"]
#: Largest finite value of float8 E4M3 (the "fn" variant TensorRT and ONNX use).
FP8_E4M3_MAX = 448.0


def round_ste(x: Tensor) -> Tensor:
    """Round with a straight-through gradient."""
    return (x.round() - x).detach() + x


class TensorQuantizer(nn.Module):
    """Quantizes one tensor: symmetric, per-tensor or per-channel along ``axis``.

    Life cycle: ``calibrating`` (the observer records ranges, the tensor passes through
    unchanged) -> ``load_calibration()`` (scale from the observer) -> quantizing. ``learnable()``
    turns the scale into a parameter trained with LSQ's gradient (Esser et al., 2020).
    """

    def __init__(self, bits: int = 8, *, axis: int | None = None, channels: int = 1,
                 fmt: Format = "int", narrow: bool = False, observer: str = "minmax",
                 **observer_args: float) -> None:
        super().__init__()
        if fmt == "int" and not 2 <= bits <= 8:
            raise ValueError(f"integer quantization supports 2..8 bits, got {bits}")
        self.bits, self.axis, self.fmt, self.narrow = bits, axis, fmt, narrow
        self.observer_name, self.observer_args = observer, dict(observer_args)
        shape = (channels,) if axis is not None else ()
        self.register_buffer("scale", torch.ones(shape))
        self.register_buffer("zero_point", torch.zeros(shape, dtype=torch.int32), persistent=False)
        self.calibrating = False
        self.enabled = True
        #: The unsigned grid [0, 2^bits - 1] (zero point 0): set by ``load_calibration`` for an
        #: activation that was never negative; exports as a uint8 Q/DQ pair.
        self.unsigned = False
        self._saw_negative = False
        self.observer: Observer | None = None
        #: Per-channel (last dim) factors applied before quantizing (SmoothQuant); None: off.
        self.register_buffer("smooth", None)

    def enable_smoothing(self, channels: int) -> None:
        """Add the SmoothQuant input factors (ones until set), a buffer so checkpoints keep it."""
        self.smooth = torch.ones(channels, device=self.scale.device)

    # ------------------------------------------------------------------ range
    @property
    def qmax(self) -> float:
        """Largest representable magnitude on the integer (or fp8) grid."""
        if self.fmt == "fp8":
            return FP8_E4M3_MAX
        return float(2 ** self.bits - 1) if self.unsigned else float(2 ** (self.bits - 1) - 1)

    @property
    def qmin(self) -> int:
        if self.unsigned:
            return 0
        return -int(self.qmax) if self.narrow else -int(self.qmax) - 1

    def set_amax(self, amax: Tensor) -> None:
        amax = amax.detach().float().reshape(self.scale.shape).clamp_min(1e-8)
        with torch.no_grad():
            self.scale.data.copy_(amax / self.qmax)

    def amax(self) -> Tensor:
        return self.scale.detach() * self.qmax

    def start_calibration(self) -> None:
        self.observer = make_observer(self.observer_name, self.axis, **self.observer_args)
        self.calibrating, self.unsigned, self._saw_negative = True, False, False

    def load_calibration(self, *, unsigned_if_nonnegative: bool = False) -> None:
        """Set the scale from what the observer saw and stop observing. ``unsigned_if_nonnegative``:
        a per-tensor 8-bit integer quantizer that saw no negative value takes the unsigned grid."""
        if self.observer is not None and self.observer.ready:
            self.unsigned = (unsigned_if_nonnegative and not self._saw_negative and self.axis is None
                             and self.fmt == "int" and self.bits == 8 and self.smooth is None)
            self.set_amax(self.observer.amax(self.qmax))
        self.observer, self.calibrating = None, False

    def learnable(self) -> nn.Parameter:
        """Make the scale trainable (LSQ); returns the new parameter."""
        if not isinstance(self.scale, nn.Parameter):
            value = self.scale.detach().clone()
            del self._buffers["scale"]
            self.scale = nn.Parameter(value)
        return self.scale

    def freeze(self) -> None:
        """Back to a fixed scale buffer (after QAT), so export uses the int8 Q/DQ path."""
        if isinstance(self.scale, nn.Parameter):
            value = self.scale.detach().clone()
            del self._parameters["scale"]
            self.register_buffer("scale", value)

    # ------------------------------------------------------------------ forward
    def _broadcast(self, t: Tensor, x: Tensor) -> Tensor:
        if self.axis is None:
            return t
        shape = [1] * x.dim()
        shape[self.axis] = -1
        return t.reshape(shape)

    def forward(self, x: Tensor) -> Tensor:
        if self.smooth is not None:  # the consumer's weights carry the inverse factors
            x = x * self.smooth
        if not self.enabled:
            return x
        if self.calibrating:
            assert self.observer is not None
            self.observer.update(x.detach())
            self._saw_negative = self._saw_negative or bool((x < 0).any())
            return x
        if self.bits <= 8 and self.fmt == "int" and not isinstance(self.scale, nn.Parameter):
            if self.bits < 8 or (self.narrow and not torch.onnx.is_in_onnx_export()):
                # Fewer bits: clip to the grid, so the int8 Q/DQ below exports and runs in int8
                # kernels. Narrow 8-bit: TensorRT wants weights in [-127, 127]; the ONNX pass that
                # folds weight Q nodes into int8 initializers clips them the same way (qdq_graph.py).
                scale = self._broadcast(self.scale, x)
                x = torch.maximum(torch.minimum(x, self.qmax * scale), self.qmin * scale)
            if self.axis is None:
                low, high = (0, 255) if self.unsigned else (-128, 127)
                return torch.fake_quantize_per_tensor_affine(
                    x, self.scale.reshape(()), self.zero_point.reshape(()), low, high)
            return torch.fake_quantize_per_channel_affine(
                x, self.scale, self.zero_point, self.axis, -128, 127)
        scale = self._broadcast(self.scale.clamp_min(1e-12), x)
        if self.fmt == "fp8":
            return _fake_fp8(x, scale)
        # Differentiable in x (STE) and in scale (LSQ); used for low bits and learnable scales.
        if isinstance(self.scale, nn.Parameter) and self.training:
            scale = _grad_scale(scale, (x.numel() / scale.numel() * self.qmax) ** -0.5)
        return torch.clamp(round_ste(x / scale), self.qmin, self.qmax) * scale

    def storage_bits(self) -> int:
        return self.scale.numel() * 32

    def extra_repr(self) -> str:
        kind = "fp8-e4m3" if self.fmt == "fp8" else f"{'u' if self.unsigned else ''}int{self.bits}"
        where = "per-tensor" if self.axis is None else f"per-channel(axis={self.axis})"
        state = " calibrating" if self.calibrating else ("" if self.enabled else " disabled")
        return f"{kind} {where}{' narrow' if self.narrow else ''}{state}"


def _grad_scale(x: Tensor, factor: float) -> Tensor:
    """Identity forward, gradient multiplied by ``factor`` (LSQ's step-size gradient scale)."""
    return (x - x * factor).detach() + x * factor


def _fake_fp8(x: Tensor, scale: Tensor) -> Tensor:
    """Simulated float8 E4M3: scale into range, round to the fp8 grid, scale back (STE)."""
    y = torch.clamp(x / scale, -FP8_E4M3_MAX, FP8_E4M3_MAX)
    rounded = y.to(torch.float8_e4m3fn).to(x.dtype)
    return ((rounded - y).detach() + y) * scale


class QuantMixin:
    """Forward of a quantized weighted layer: quantize the input and the weight, then compute."""

    input_quantizer: TensorQuantizer | None
    weight_quantizer: TensorQuantizer | None

    def quantized_weight(self) -> Tensor:
        w = self.weight  # type: ignore[attr-defined]
        return w if self.weight_quantizer is None else self.weight_quantizer(w)

    def _input(self, x: Tensor) -> Tensor:
        return x if self.input_quantizer is None else self.input_quantizer(x)

    def storage_bits(self) -> int:
        """Weights at their quantized width (fp32 when the weight stays float), scales and bias."""
        w = self.weight  # type: ignore[attr-defined]
        wq = self.weight_quantizer
        bits = w.numel() * (32 if wq is None or not wq.enabled else (8 if wq.fmt == "fp8" else wq.bits))
        bias = getattr(self, "bias", None)
        bits += 0 if bias is None else bias.numel() * 32
        for q in (self.input_quantizer, wq):
            bits += 0 if q is None else q.storage_bits()
        return bits


class QuantConv2d(QuantMixin, nn.Conv2d):
    def forward(self, x: Tensor) -> Tensor:
        return self._conv_forward(self._input(x), self.quantized_weight(), self.bias)


class QuantLinear(QuantMixin, nn.Linear):
    def forward(self, x: Tensor) -> Tensor:
        return F.linear(self._input(x), self.quantized_weight(), self.bias)


QUANT_CLASSES: dict[type[nn.Module], type[nn.Module]] = {nn.Conv2d: QuantConv2d, nn.Linear: QuantLinear}


def quantize_module(module: nn.Module, weight: TensorQuantizer | None,
                    inputs: TensorQuantizer | None) -> nn.Module:
    """Turn a Conv2d/Linear into its quantized class in place (same parameters and names)."""
    base = next((b for b in QUANT_CLASSES if type(module) is b), None)
    if base is None and not isinstance(module, QuantMixin):
        raise TypeError(f"cannot quantize {type(module).__name__}; supported: Conv2d, Linear")
    if base is not None:
        module.__class__ = QUANT_CLASSES[base]
    module.weight_quantizer = weight
    module.input_quantizer = inputs
    return module


@torch.no_grad()
def snap_biases(model: nn.Module) -> int:
    """Round the bias of every int8 Q/DQ layer to the int32 grid ONNX Runtime gives it; returns the count.

    ONNX Runtime stores a float bias beside Q/DQ inputs as int32 with scale input scale x weight
    scale when it loads the file (``WeightBiasQuantization``, export/qdq_graph.py). The rounded
    bias moves a few outputs across a rounding boundary of the next quantizer, and a deep random
    network amplifies each such flip (MobileNetV3: cosine 0.96 to PyTorch); on the grid the bias
    is the same number for PyTorch, ONNX Runtime and TensorRT.
    """
    done = 0
    for layer in model.modules():
        inp, wq = getattr(layer, "input_quantizer", None), getattr(layer, "weight_quantizer", None)
        bias = getattr(layer, "bias", None)
        if bias is None or not all(isinstance(q, TensorQuantizer) and q.enabled and q.bits <= 8
                                   and q.fmt == "int" for q in (inp, wq)) or inp.axis is not None:
            continue
        scale = inp.scale.reshape(()) * wq.scale.reshape(-1)
        bias.copy_(torch.round(bias / scale) * scale)
        done += 1
    return done


def quantizers(model: nn.Module) -> dict[str, TensorQuantizer]:
    """Every tensor quantizer in ``model`` by qualified name (shared ones once)."""
    return {name: m for name, m in model.named_modules() if isinstance(m, TensorQuantizer)}


def unsigned_quantizers(model: nn.Module) -> list[str]:
    """Names of the quantizers on the unsigned grid (a quantize stage's state, replayed by
    :func:`make_unsigned`)."""
    return [name for name, q in quantizers(model).items() if q.unsigned]


def make_unsigned(model: nn.Module, names: list[str]) -> None:
    """Put the named quantizers of a restored model back on the unsigned grid (before its scales load)."""
    found = quantizers(model)
    for name in names:
        found[name].unsigned = True


def _count_macs_like_base() -> None:
    """torch-pruning's MAC counter (compressor.metrics) finds modules by exact type: count the
    quantized layers like their base classes."""
    from torch_pruning.utils import op_counter

    for quant, base in ((QuantConv2d, nn.Conv2d), (QuantLinear, nn.Linear)):
        op_counter.MODULES_MAPPING.setdefault(quant, op_counter.MODULES_MAPPING[base])


_count_macs_like_base()
