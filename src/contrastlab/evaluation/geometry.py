r"""The geometry of a representation: alignment, uniformity, feature norms and effective rank."""

from __future__ import annotations

import math

import torch

from contrastlab.evaluation._arrays import as_features, check_positive_float, check_positive_int, l2_normalize


def alignment(x, y, *, alpha: float = 2.0, normalize: bool = True) -> float:
    r"""Alignment of positive pairs (Wang & Isola, 2020): the mean distance between paired rows.

    .. math:: \mathcal{L}_{\text{align}} = \frac{1}{N} \sum_{i=1}^{N} \lVert f(x_i) - f(y_i) \rVert_2^{\alpha}

    Lower is better aligned; on the unit sphere with :math:`\alpha = 2` it lies in [0, 4].

    References:
        Wang & Isola, "Understanding Contrastive Representation Learning through Alignment and
        Uniformity on the Hypersphere", ICML 2020.

    Args:
        x: (N, D) embeddings of the first views.
        y: (N, D) embeddings of the second views, row i paired with ``x[i]``.
        alpha: the exponent α > 0.
        normalize: scale rows to unit norm first (the paper's setting).

    Returns:
        The alignment as a float.

    Raises:
        ValueError: for mismatched shapes or α ≤ 0.

    Example:
        >>> import torch
        >>> x = torch.tensor([[1.0, 0.0]])
        >>> alignment(x, -x)
        4.0
    """
    alpha = check_positive_float(alpha, "alpha")
    a = as_features(x, name="x", dtype=torch.float64)
    b = as_features(y, name="y", dtype=torch.float64)
    if a.shape != b.shape:
        raise ValueError(f"x and y must have the same shape (N, D); got {tuple(a.shape)} and {tuple(b.shape)}")
    if normalize:
        a, b = l2_normalize(a), l2_normalize(b)
    return float((a - b).norm(dim=1).pow(alpha).mean())


def uniformity(x, *, t: float = 2.0, normalize: bool = True, chunk: int = 2048) -> float:
    r"""Uniformity (Wang & Isola, 2020): the log mean Gaussian potential over all distinct pairs.

    .. math:: \mathcal{L}_{\text{uniform}} = \log \frac{2}{N(N-1)} \sum_{i<j} e^{-t \lVert f(x_i) - f(x_j) \rVert_2^2}

    Lower is more uniform; on the unit sphere it lies in [−4t, 0] (0 = all points equal). Computed
    with a running log-sum-exp over blocks of rows, never forming the full N × N matrix.

    References:
        Wang & Isola, "Understanding Contrastive Representation Learning through Alignment and
        Uniformity on the Hypersphere", ICML 2020.

    Args:
        x: (N, D) embeddings, N ≥ 2.
        t: the kernel's scale t > 0.
        normalize: scale rows to unit norm first (the paper's setting).
        chunk: rows per block.

    Returns:
        The uniformity as a float.

    Raises:
        ValueError: for fewer than two rows or a bad option.

    Example:
        >>> import torch
        >>> round(uniformity(torch.tensor([[1.0, 0.0], [-1.0, 0.0]]), t=2.0), 6)
        -8.0
    """
    t = check_positive_float(t, "t")
    chunk = check_positive_int(chunk, "chunk")
    a = as_features(x, name="x", dtype=torch.float64)
    n = a.shape[0]
    if n < 2:
        raise ValueError(f"uniformity needs at least 2 rows; got {n}")
    if normalize:
        a = l2_normalize(a)
    sq = a.pow(2).sum(dim=1)
    parts = []
    for start in range(0, n, chunk):
        rows = a[start:start + chunk]
        d2 = (sq[start:start + chunk, None] + sq[None, :] - 2.0 * rows @ a.T).clamp_min(0.0)
        upper = torch.arange(n)[None, :] > torch.arange(start, start + rows.shape[0])[:, None]  # pairs i < j
        parts.append(torch.logsumexp((-t * d2)[upper], dim=0))
    return float(torch.logsumexp(torch.stack(parts), dim=0) - math.log(n * (n - 1) / 2))


def feature_norms(x) -> dict[str, float]:
    r"""Summary of the row norms :math:`\lVert f(x_i) \rVert_2` before any normalisation.

    Args:
        x: (N, D) features.

    Returns:
        ``{"mean": ..., "std": ..., "min": ..., "max": ...}``.

    Raises:
        ValueError: for an input that is not (N, D).

    Example:
        >>> import torch
        >>> feature_norms(torch.tensor([[3.0, 4.0]]))["mean"]
        5.0
    """
    norms = as_features(x, dtype=torch.float64).norm(dim=1)
    return {"mean": float(norms.mean()), "std": float(norms.std(unbiased=False)),
            "min": float(norms.min()), "max": float(norms.max())}


def effective_rank(x, *, center: bool = False) -> float:
    r"""Effective rank (Roy & Vetterli, 2007): the exponential of the entropy of the singular values.

    .. math:: p_k = \frac{\sigma_k}{\sum_j \sigma_j}, \qquad
              \operatorname{erank}(X) = \exp\Big(-\sum_k p_k \log p_k\Big)

    It lies between 1 (one direction) and min(N, D) (all singular values equal).

    References:
        Roy & Vetterli, "The Effective Rank: A Measure of Effective Dimensionality", EUSIPCO 2007.

    Args:
        x: (N, D) features.
        center: subtract the column means first (measures the spread around the mean rather than
            the raw matrix of the paper).

    Returns:
        The effective rank as a float.

    Raises:
        ValueError: for an all-zero matrix or an input that is not (N, D).

    Example:
        >>> import torch
        >>> round(effective_rank(torch.eye(4)), 6)
        4.0
    """
    a = as_features(x, dtype=torch.float64)
    if center:
        a = a - a.mean(dim=0, keepdim=True)
    sigma = torch.linalg.svdvals(a)
    total = sigma.sum()
    if total <= 0:
        raise ValueError("effective_rank is undefined for an all-zero matrix")
    p = sigma[sigma > 0] / total
    return float(torch.exp(-(p * p.log()).sum()))
