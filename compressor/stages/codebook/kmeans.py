"""k-means on weight (sub-)vectors: scikit-learn fits the codebook, torch assigns.

scikit-learn's ``KMeans`` was measured against a small torch Lloyd loop on MiniLM FFN weights
(scalars at k=16, 4-d sub-vectors at k=256): it was faster and reached the lower error
(``bench/codebook.py --kmeans`` writes the comparison to docs/codebook.md). ``MiniBatchKMeans``
trades a few percent of error for speed on very large tensors.
"""
from __future__ import annotations

import warnings
from typing import Literal

import numpy as np
import torch
from torch import Tensor

Algorithm = Literal["kmeans", "minibatch"]


def kmeans(points: Tensor, k: int, *, algorithm: Algorithm = "kmeans", max_iter: int = 100,
           seed: int = 0) -> tuple[Tensor, Tensor]:
    """Cluster ``points`` (n, d) into at most ``k`` centroids.

    Returns ``(codebook (k', d) float32, assignments (n,) int64)``. When the points hold at most
    ``k`` distinct values the codebook is exactly those values (k' <= k), so tiny layers stay exact.
    """
    points = points.detach().float().cpu()
    unique, inverse = torch.unique(points, dim=0, return_inverse=True)
    if len(unique) <= k:
        return unique.contiguous(), inverse
    from sklearn.cluster import KMeans, MiniBatchKMeans

    data = points.numpy().astype(np.float64)
    if algorithm == "minibatch":
        est = MiniBatchKMeans(k, n_init=1, random_state=seed, batch_size=4096, max_iter=max_iter)
    else:
        est = KMeans(k, n_init=1, random_state=seed, max_iter=max_iter)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning on near-duplicate points
        est.fit(data)
    codebook = torch.from_numpy(est.cluster_centers_).float()
    return codebook, nearest(points, codebook)


def nearest(points: Tensor, codebook: Tensor, chunk: int = 1 << 16) -> Tensor:
    """Index of the nearest codeword for each row of ``points`` (n, d); int64 (n,).

    Scalars use a sorted-midpoint search (O(n log k)); vectors squared distances in chunks.
    """
    if codebook.shape[1] == 1:
        values, order = codebook[:, 0].sort()
        mids = (values[1:] + values[:-1]) / 2
        return order[torch.bucketize(points[:, 0].contiguous(), mids)]
    out = torch.empty(len(points), dtype=torch.long, device=points.device)
    for start in range(0, len(points), chunk):
        out[start:start + chunk] = torch.cdist(points[start:start + chunk], codebook).argmin(1)
    return out
