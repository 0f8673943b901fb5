"""Distances between sets of embeddings: Fréchet (FAD) and kernel (KAD, unbiased MMD^2).

FAD fits one Gaussian per set and is biased at small sample sizes (it grows as the
number of embeddings shrinks), so a score from 20 clips is not comparable with one from
1000. KAD is an unbiased U-statistic of the maximum mean discrepancy: its expectation is
zero when both sets come from the same distribution, whatever their sizes.
"""

from __future__ import annotations

import numpy as np
from scipy import linalg
from scipy.spatial.distance import cdist, pdist

KERNELS = ("rbf", "poly")


def _as_embeddings(emb: np.ndarray, name: str) -> np.ndarray:
    emb = np.asarray(emb, dtype=np.float64)
    if emb.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n, dim), got shape {emb.shape}")
    if emb.shape[0] < 2:
        raise ValueError(f"{name} needs at least 2 embeddings, got {emb.shape[0]}")
    if not np.isfinite(emb).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return emb


def gaussian_stats(emb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and unbiased (n-1) covariance, as the official DCASE tool computes them."""
    emb = _as_embeddings(emb, "embeddings")
    return emb.mean(axis=0), np.atleast_2d(np.cov(emb, rowvar=False))


def _trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """tr(sqrtm(sigma1 @ sigma2)) for symmetric PSD matrices, computed without complex numbers.

    sigma1 @ sigma2 is similar to S = sigma1^1/2 sigma2 sigma1^1/2, which is symmetric PSD, so
    the trace is the sum of the square roots of S's eigenvalues. Unlike ``scipy.linalg.sqrtm``
    of the non-symmetric product, this stays real and finite for singular covariances
    (fewer embeddings than dimensions), without the eps-offset retry FID/FAD code needs.
    """
    eigval, eigvec = linalg.eigh(sigma1)
    root1 = (eigvec * np.sqrt(np.clip(eigval, 0.0, None))) @ eigvec.T
    middle = root1 @ sigma2 @ root1
    middle = (middle + middle.T) / 2.0
    return float(np.sqrt(np.clip(linalg.eigvalsh(middle), 0.0, None)).sum())


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2) (Dowson & Landau 1982).

    d^2 = |mu1 - mu2|^2 + tr(sigma1) + tr(sigma2) - 2 tr(sqrt(sigma1 sigma2)).
    """
    mu1, mu2 = np.asarray(mu1, dtype=np.float64), np.asarray(mu2, dtype=np.float64)
    sigma1, sigma2 = np.atleast_2d(sigma1).astype(np.float64), np.atleast_2d(sigma2).astype(np.float64)
    if mu1.ndim != 1 or mu1.shape != mu2.shape:
        raise ValueError(f"means must be 1-D and of the same shape, got {mu1.shape} and {mu2.shape}")
    dim = mu1.shape[0]
    if sigma1.shape != (dim, dim) or sigma2.shape != (dim, dim):
        raise ValueError(f"covariances must be ({dim}, {dim}), got {sigma1.shape} and {sigma2.shape}")
    for name, arr in (("mu1", mu1), ("sigma1", sigma1), ("mu2", mu2), ("sigma2", sigma2)):
        if not np.isfinite(arr).all():
            raise ValueError(f"{name} contains NaN or infinite values")
    sigma1, sigma2 = (sigma1 + sigma1.T) / 2.0, (sigma2 + sigma2.T) / 2.0
    diff = mu1 - mu2
    value = float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * _trace_sqrt_product(sigma1, sigma2))
    # Rounding can leave -1e-12 where the true value is 0; anything larger would be a bug.
    return max(value, 0.0)


def fad(emb_a: np.ndarray, emb_b: np.ndarray) -> float:
    """Fréchet audio distance between two sets of embeddings (n_a, d) and (n_b, d)."""
    mu_a, sigma_a = gaussian_stats(emb_a)
    mu_b, sigma_b = gaussian_stats(emb_b)
    return frechet_distance(mu_a, sigma_a, mu_b, sigma_b)


def fad_against_stats(emb: np.ndarray, mu: np.ndarray, sigma: np.ndarray) -> float:
    """FAD of a set of embeddings against precomputed reference statistics (e.g. the official ones)."""
    mu_e, sigma_e = gaussian_stats(emb)
    return frechet_distance(mu_e, sigma_e, mu, sigma)


def median_bandwidth(emb: np.ndarray, max_points: int = 2000, seed: int = 0) -> float:
    """Median pairwise Euclidean distance (the median heuristic for an RBF kernel's width).

    Above ``max_points`` embeddings a seeded random subset is used (the median of a
    2000-point subset is stable and keeps memory at ~16 MB).
    """
    emb = _as_embeddings(emb, "embeddings")
    if emb.shape[0] > max_points:
        emb = emb[np.random.default_rng(seed).choice(emb.shape[0], max_points, replace=False)]
    bandwidth = float(np.median(pdist(emb, "euclidean")))
    if not bandwidth > 0:
        raise ValueError("median pairwise distance is 0 (at least half the embeddings are identical); pass a bandwidth")
    return bandwidth


def _kernel(x: np.ndarray, y: np.ndarray, kernel: str, bandwidth: float) -> np.ndarray:
    if kernel == "rbf":
        return np.exp(-cdist(x, y, "sqeuclidean") / (2.0 * bandwidth**2))
    # KID's cubic polynomial kernel (Binkowski et al. 2018): (x.y / d + 1)^3
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def kad(emb_a: np.ndarray, emb_b: np.ndarray, kernel: str = "rbf", bandwidth: float | None = None) -> float:
    """Kernel audio distance: the unbiased (U-statistic) estimate of MMD^2 between two sets.

    MMD^2_u = mean_{i!=j} k(a_i, a_j) + mean_{i!=j} k(b_i, b_j) - 2 mean_{i,j} k(a_i, b_j)

    ``kernel="rbf"``: Gaussian kernel exp(-|x-y|^2 / (2 bandwidth^2)); ``bandwidth=None`` takes
    the median heuristic over both sets pooled (keeps the distance symmetric). To compare
    several systems against one reference, pass ``median_bandwidth(reference)`` so every
    score uses the same kernel. ``kernel="poly"``: KID's cubic kernel (no bandwidth).
    Being unbiased, the value can be slightly negative when the sets match.
    """
    a = _as_embeddings(emb_a, "emb_a")
    b = _as_embeddings(emb_b, "emb_b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"embedding dimensions differ: {a.shape[1]} vs {b.shape[1]}")
    if kernel not in KERNELS:
        raise ValueError(f"unknown kernel {kernel!r}; choose one of {KERNELS}")
    if kernel == "rbf":
        if bandwidth is None:
            bandwidth = median_bandwidth(np.concatenate([a, b]))
        if not bandwidth > 0:
            raise ValueError(f"bandwidth must be > 0, got {bandwidth}")
    m, n = a.shape[0], b.shape[0]
    k_aa = _kernel(a, a, kernel, bandwidth)
    k_bb = _kernel(b, b, kernel, bandwidth)
    k_ab = _kernel(a, b, kernel, bandwidth)
    within_a = (k_aa.sum() - np.trace(k_aa)) / (m * (m - 1))
    within_b = (k_bb.sum() - np.trace(k_bb)) / (n * (n - 1))
    return float(within_a + within_b - 2.0 * k_ab.mean())
