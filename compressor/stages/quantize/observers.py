"""Range observers: they watch a tensor during calibration and pick the clipping range (amax).

- ``minmax``: the largest magnitude seen. Exact for weights, fragile for activations with outliers.
- ``percentile``: the magnitude below which ``percentile`` % of the values fall (histogram).
- ``mse``: the amax that minimises the expected squared quantization error over the histogram
  (clipping error against rounding error).
- ``entropy``: TensorRT's KL-divergence calibration: the amax whose quantized distribution
  diverges least from the observed one.

Activations are observed per tensor through a magnitude histogram whose range grows as larger
values arrive; weights (per channel) are observed directly.
"""
from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import Tensor

OBSERVERS = ("minmax", "percentile", "mse", "entropy")


class Observer(ABC):
    def __init__(self, axis: int | None = None) -> None:
        self.axis = axis

    @property
    @abstractmethod
    def ready(self) -> bool:
        """Whether anything was observed."""

    @abstractmethod
    def update(self, x: Tensor) -> None: ...

    @abstractmethod
    def amax(self, qmax: float) -> Tensor:
        """The clipping range for a grid whose largest level is ``qmax``."""

    def _per_channel(self, x: Tensor) -> Tensor:
        """``x`` as (channels, values) with the quantization axis first."""
        return x.detach().float().movedim(self.axis, 0).reshape(x.shape[self.axis], -1)


class MinMaxObserver(Observer):
    def __init__(self, axis: int | None = None) -> None:
        super().__init__(axis)
        self._amax: Tensor | None = None

    @property
    def ready(self) -> bool:
        return self._amax is not None

    def update(self, x: Tensor) -> None:
        cur = (self._per_channel(x).abs().amax(1) if self.axis is not None
               else x.detach().abs().max().float())
        self._amax = cur if self._amax is None else torch.maximum(self._amax, cur)

    def amax(self, qmax: float) -> Tensor:
        assert self._amax is not None
        return self._amax


class ChannelMSEObserver(Observer):
    """Per-channel MSE-optimal clipping, searched over fractions of each channel's max (weights)."""

    def __init__(self, axis: int = 0, steps: int = 64, low: float = 0.3) -> None:
        super().__init__(axis)
        self.steps, self.low = steps, low
        self._x: Tensor | None = None

    @property
    def ready(self) -> bool:
        return self._x is not None

    def update(self, x: Tensor) -> None:
        self._x = self._per_channel(x)

    def amax(self, qmax: float) -> Tensor:
        assert self._x is not None
        x = self._x
        top = x.abs().amax(1).clamp_min(1e-8)
        best_err = torch.full_like(top, float("inf"))
        best = top.clone()
        for frac in torch.linspace(self.low, 1.0, self.steps):
            a = top * frac
            s = (a / qmax)[:, None]
            err = ((torch.clamp(torch.round(x / s), -qmax, qmax) * s - x) ** 2).sum(1)
            better = err < best_err
            best_err = torch.where(better, err, best_err)
            best = torch.where(better, a, best)
        return best


class HistogramObserver(Observer):
    """Magnitude histogram of a whole tensor (per-tensor activations) and the three methods on it."""

    def __init__(self, method: str = "percentile", percentile: float = 99.99, bins: int = 2048,
                 max_bins: int = 16384) -> None:
        super().__init__(None)
        self.method, self.percentile, self.bins, self.max_bins = method, percentile, bins, max_bins
        self.hist: Tensor | None = None
        self.width = 0.0

    @property
    def ready(self) -> bool:
        return self.hist is not None and float(self.hist.sum()) > 0

    def update(self, x: Tensor) -> None:
        x = x.detach().abs().float().flatten()
        top = float(x.max()) if x.numel() else 0.0
        if self.hist is None:
            self.width = max(top, 1e-8) / self.bins
            self.hist = torch.zeros(self.bins, dtype=torch.float64)
        needed = int(top / self.width) + 1
        if needed > len(self.hist):  # grow the range; merge bins (powers of 2) to stay <= max_bins
            factor = 1
            while needed > self.max_bins * factor:
                factor *= 2
            if factor > 1:
                merged = self.hist.new_zeros(-(-len(self.hist) // factor))
                self.hist = merged.index_add_(0, torch.arange(len(self.hist)) // factor, self.hist)
                self.width *= factor
                needed = int(top / self.width) + 1
            self.hist = torch.cat([self.hist, self.hist.new_zeros(max(0, needed - len(self.hist)))])
        idx = (x / self.width).long().clamp_(max=len(self.hist) - 1)
        self.hist += torch.bincount(idx, minlength=len(self.hist)).double()

    def amax(self, qmax: float) -> Tensor:
        assert self.hist is not None
        if self.method == "percentile":
            value = self._percentile()
        elif self.method == "mse":
            value = self._mse(qmax)
        elif self.method == "entropy":
            value = self._entropy(int(qmax) + 1)
        else:
            raise ValueError(f"unknown histogram method {self.method!r}")
        return torch.tensor(value, dtype=torch.float32)

    def _edges(self) -> Tensor:
        return torch.arange(1, len(self.hist) + 1, dtype=torch.float64) * self.width

    def _percentile(self) -> float:
        cdf = torch.cumsum(self.hist, 0) / self.hist.sum()
        i = int(torch.searchsorted(cdf, torch.tensor(self.percentile / 100, dtype=torch.float64)))
        return float(self._edges()[min(i, len(self.hist) - 1)])

    def _mse(self, qmax: float, candidates: int = 256) -> float:
        hist, edges = self.hist, self._edges()
        centers = edges - self.width / 2
        nz = hist > 0
        centers, counts = centers[nz], hist[nz]
        top = float(edges[nz.nonzero().max()])
        amaxes = torch.linspace(top / candidates, top, candidates, dtype=torch.float64)
        scales = (amaxes / qmax)[:, None]
        q = torch.clamp(torch.round(centers[None] / scales), max=qmax) * scales
        err = (((q - centers[None]) ** 2) * counts[None]).sum(1)
        return float(amaxes[int(err.argmin())])

    def _entropy(self, levels: int, stride: int = 16) -> float:
        """TensorRT's entropy calibration on the magnitude histogram."""
        hist = self.hist.clone()
        n = len(hist)
        if n <= levels:
            return float(self._edges()[-1])
        best_i, best_kl = n, float("inf")
        for i in range(levels, n + 1, stride):
            p = hist[:i].clone()
            p[-1] += hist[i:].sum()
            # Merge i bins into `levels` quantized bins, spread each back over its non-empty bins.
            chunks = torch.tensor_split(hist[:i], levels)
            q = torch.cat([torch.where(c > 0, c.sum() / (c > 0).sum().clamp_min(1), c.new_zeros(()))
                           for c in chunks])
            p, q = p / p.sum(), q / q.sum().clamp_min(1e-12)
            mask = p > 0
            kl = float((p[mask] * torch.log(p[mask] / q[mask].clamp_min(1e-12))).sum())
            if kl < best_kl:
                best_kl, best_i = kl, i
        return float(best_i * self.width)


def make_observer(name: str, axis: int | None = None, **args: float) -> Observer:
    """An observer by recipe name; per-channel (``axis`` set) supports ``minmax`` and ``mse``."""
    if name == "minmax":
        return MinMaxObserver(axis)
    if axis is not None:
        if name == "mse":
            return ChannelMSEObserver(axis)
        raise ValueError(f"observer {name!r} works per tensor only; use minmax or mse per channel")
    if name in ("percentile", "mse", "entropy"):
        return HistogramObserver(name, **{k: v for k, v in args.items() if k == "percentile"})
    raise ValueError(f"unknown observer {name!r}; known: {', '.join(OBSERVERS)}")
