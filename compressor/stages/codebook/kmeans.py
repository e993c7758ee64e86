"""k-means on weight (sub-)vectors.

Vectors (``dim >= 2``) use scikit-learn's ``KMeans`` (or ``MiniBatchKMeans``, a few percent more
error for much less time on very large layers). Scalars use scikit-learn's k-means++ seeding and
then exact Lloyd iterations on the sorted values: in one dimension each cluster is a contiguous run
of sorted values, so an iteration is a binary search for the k-1 boundaries plus prefix sums,
O(k log n) instead of O(n k). ``bench/codebook.py`` measures both against ``KMeans`` (time and
error) and writes the comparison to docs/codebook.md.
"""
from __future__ import annotations

import warnings
from typing import Literal

import numpy as np
import torch
from torch import Tensor

Algorithm = Literal["kmeans", "minibatch"]


def kmeans(points: Tensor, k: int, *, weights: Tensor | None = None, algorithm: Algorithm = "kmeans",
           max_iter: int = 300, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Cluster ``points`` (n, d) into at most ``k`` centroids, each point counting ``weights`` (n,).

    Returns ``(codebook (k', d) float32, assignments (n,) int64)``. When the points hold at most
    ``k`` distinct values the codebook is exactly those values (k' <= k), so tiny layers stay exact.
    """
    points = points.detach().float().cpu()
    w = None if weights is None else weights.detach().double().cpu().numpy()
    if points.shape[1] == 1:
        codebook = torch.from_numpy(lloyd_1d(points[:, 0].numpy(), k, weights=w, seed=seed,
                                             max_iter=max_iter))
    elif len(points) <= k:
        codebook = points.double()
    else:
        codebook = _sklearn(points.numpy(), k, w, algorithm, max_iter, seed)
    codebook = codebook.float().reshape(len(codebook), -1)
    return codebook, nearest(points, codebook)


def lloyd_1d(values: np.ndarray, k: int, *, weights: np.ndarray | None = None, seed: int = 0,
             max_iter: int = 300, bins: int = 4096) -> np.ndarray:
    """Exact (weighted) scalar k-means; returns the sorted centroids (float64, at most ``k``).

    Seeds: k-means++ over a histogram of ``bins`` equal-width bins weighted by their mass
    (outliers keep their own bins, and seeding costs O(bins k) instead of O(n k)).
    """
    from sklearn.cluster import kmeans_plusplus

    order = np.argsort(values, kind="stable")
    x = values[order].astype(np.float64)
    w = np.ones_like(x) if weights is None else np.maximum(weights[order], 1e-12)
    distinct = x[np.concatenate([[True], np.diff(x) > 0])]
    if len(distinct) <= k:
        return distinct
    mass = np.concatenate([[0.0], np.cumsum(w)])
    moment = np.concatenate([[0.0], np.cumsum(w * x)])

    def means(bounds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Weighted mean and mass of each run x[bounds[i]:bounds[i+1]]."""
        m = mass[bounds[1:]] - mass[bounds[:-1]]
        return (moment[bounds[1:]] - moment[bounds[:-1]]) / np.maximum(m, 1e-300), m

    edges = np.searchsorted(x, np.linspace(x[0], x[-1], bins + 1)[1:-1])
    bin_means, bin_mass = means(np.concatenate([[0], edges, [len(x)]]))
    full = bin_mass > 0
    seeds, seed_mass = (bin_means[full], bin_mass[full]) if full.sum() >= k else (distinct, None)
    centers, _ = kmeans_plusplus(seeds[:, None], k, sample_weight=seed_mass, random_state=seed)
    centers = np.sort(centers[:, 0])
    for _ in range(max_iter):
        bounds = np.concatenate([[0], np.searchsorted(x, (centers[1:] + centers[:-1]) / 2), [len(x)]])
        cluster_means, cluster_mass = means(bounds)
        new = np.where(cluster_mass > 0, cluster_means, centers)
        if np.array_equal(new, centers):
            break
        centers = new
    return centers


def _sklearn(data: np.ndarray, k: int, weights: np.ndarray | None, algorithm: Algorithm,
             max_iter: int, seed: int) -> Tensor:
    from sklearn.cluster import KMeans, MiniBatchKMeans

    if algorithm == "minibatch":
        est = MiniBatchKMeans(k, n_init=1, random_state=seed, batch_size=4096, max_iter=max_iter)
    else:
        est = KMeans(k, n_init=1, random_state=seed, max_iter=max_iter)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning on near-duplicate points
        est.fit(data.astype(np.float64), sample_weight=weights)
    return torch.from_numpy(est.cluster_centers_)


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
