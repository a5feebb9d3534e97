r"""The geometry of a representation: alignment, uniformity, feature norms and effective rank.

Alignment and uniformity are the losses of :mod:`contrastlab.objectives.align_uniform` evaluated under
``no_grad`` in float64 (uniformity over blocks of rows when N is large): one implementation for the
objective, evaluation and the training monitors.

The geometry of sets of items (classes, invariance sets) is in :mod:`contrastlab.evaluation.sets`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from contrastlab.evaluation._arrays import (
    as_features, check_positive_float, check_positive_int, l2_normalize,
)
from contrastlab.objectives.align_uniform import align_loss, uniform_loss


def _float64_rows(x, name: str) -> Tensor:
    """``x`` as (N, D) float64 rows, checked as :func:`as_features` checks them; a CUDA tensor stays on its GPU
    (the training loop measures its batch where it lives, without a copy to the host)."""
    if not (isinstance(x, Tensor) and x.is_cuda):
        return as_features(x, name=name, dtype=torch.float64)
    t = x.detach().to(torch.float64)
    if t.ndim != 2:
        raise ValueError(f"{name} must have shape (N, D); got shape {tuple(t.shape)}")
    if t.shape[0] == 0 or t.shape[1] == 0:
        raise ValueError(f"{name} must be non-empty; got shape {tuple(t.shape)}")
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} contains NaN or infinite values")
    return t


def alignment(x, y, *, alpha: float = 2.0, normalize: bool = True) -> float:
    r"""Alignment of positive pairs (Wang & Isola, 2020): the mean distance between paired rows.

    .. math:: \mathcal{L}_{\text{align}} = \frac{1}{N} \sum_{i=1}^{N} \lVert f(x_i) - f(y_i) \rVert_2^{\alpha}

    Lower is better aligned; on the unit sphere with :math:`\alpha = 2` it lies in [0, 4]. Computed in float64
    (on the GPU for a CUDA tensor).

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
    a, b = _float64_rows(x, "x"), _float64_rows(y, "y")
    if a.shape != b.shape:
        raise ValueError(f"x and y must have the same shape (N, D); got {tuple(a.shape)} and {tuple(b.shape)}")
    if normalize:
        a, b = l2_normalize(a), l2_normalize(b)
    with torch.no_grad():
        return float(align_loss(a, b, alpha=alpha))


def uniformity(x, *, t: float = 2.0, normalize: bool = True, chunk: int = 2048) -> float:
    r"""Uniformity (Wang & Isola, 2020): the log mean Gaussian potential over all distinct pairs.

    .. math:: \mathcal{L}_{\text{uniform}} = \log \frac{2}{N(N-1)} \sum_{i<j} e^{-t \lVert f(x_i) - f(x_j) \rVert_2^2}

    Lower is more uniform; on the unit sphere it lies in [−4t, 0] (0 = all points equal). In float64 (on the GPU
    for a CUDA tensor):
    up to ``chunk`` rows by :func:`~contrastlab.objectives.align_uniform.uniform_loss`, beyond that with a
    running log-sum-exp over blocks of rows, never forming the full N × N matrix.

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
    a = _float64_rows(x, "x")
    n = a.shape[0]
    if n < 2:
        raise ValueError(f"uniformity needs at least 2 rows; got {n}")
    if normalize:
        a = l2_normalize(a)
    if n <= chunk:
        with torch.no_grad():
            return float(uniform_loss(a, t=t))
    sq = a.pow(2).sum(dim=1)
    parts = []
    for start in range(0, n, chunk):
        rows = a[start:start + chunk]
        d2 = (sq[start:start + chunk, None] + sq[None, :] - 2.0 * rows @ a.T).clamp_min(0.0)
        cols = torch.arange(n, device=a.device)
        upper = cols[None, :] > torch.arange(start, start + rows.shape[0], device=a.device)[:, None]  # pairs i < j
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


def effective_rank(x, *, center: bool = False, eps: float = 0.0) -> float:
    r"""Effective rank (Roy & Vetterli, 2007): the exponential of the entropy of the singular values.

    .. math:: p_k = \frac{\sigma_k}{\sum_j \sigma_j} + \varepsilon, \qquad
              \operatorname{erank}(X) = \exp\Big(-\sum_{k=1}^{\min(N, D)} p_k \log p_k\Big)

    It lies between 1 (one direction) and min(N, D) (all singular values equal). With
    :math:`\varepsilon = 0` (Roy & Vetterli) zero singular values add nothing; RankMe (Garrido et al.)
    is this measure of a representation's embedding matrix with a small :math:`\varepsilon` (``1e-7``)
    added to every :math:`p_k`, zeros included.

    References:
        Roy & Vetterli, "The Effective Rank: A Measure of Effective Dimensionality", EUSIPCO 2007.
        Garrido, Balestriero, Najman & LeCun, "RankMe: Assessing the Downstream Performance of
        Pretrained Self-Supervised Representations by Their Rank", ICML 2023.

    Args:
        x: (N, D) features.
        center: subtract the column means first (measures the spread around the mean rather than
            the raw matrix of the paper; RankMe does not centre).
        eps: :math:`\varepsilon \ge 0` added to every normalised singular value (RankMe: ``1e-7``).

    Returns:
        The effective rank as a float.

    Raises:
        ValueError: for an all-zero matrix, an input that is not (N, D), or a negative ``eps``.

    Example:
        >>> import torch
        >>> round(effective_rank(torch.eye(4)), 6)
        4.0
        >>> round(effective_rank(torch.ones(5, 3), eps=1e-7), 4)   # one direction: RankMe just above 1
        1.0
    """
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0.0 <= eps < 1.0:
        raise ValueError(f"eps must be a number in [0, 1); got {eps!r}")
    a = as_features(x, dtype=torch.float64)
    if center:
        a = a - a.mean(dim=0, keepdim=True)
    sigma = torch.linalg.svdvals(a)
    total = sigma.sum()
    if total <= 0:
        raise ValueError("effective_rank is undefined for an all-zero matrix")
    p = sigma / total + eps if eps > 0 else sigma[sigma > 0] / total
    return float(torch.exp(-(p * p.log()).sum()))
