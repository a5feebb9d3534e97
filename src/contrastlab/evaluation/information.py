r"""How much two views share: the contrastive MI bound and canonical correlations.

Entropy, mutual information and the partial information decomposition of discrete codes are in
:mod:`contrastlab.evaluation.pid`.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.linalg
import torch
import torch.nn.functional as F

from contrastlab.evaluation._arrays import as_features, check_positive_float, check_positive_int, l2_normalize


def mi_lower_bound(loss: float, k: int) -> float:
    r"""The lower bound on the mutual information that a contrastive loss certifies.

    .. math:: I(z_1; z_2) \ge \log k - \mathcal{L}_{\text{contrast}}

    with :math:`k` the number of candidates each positive competes with (the positive and its
    :math:`k - 1` negatives, a batch of :math:`k` pairs for in-batch InfoNCE), in nats. The bound can
    never exceed :math:`\log k`; a negative value (a loss above chance, :math:`\log k`) says nothing.

    References:
        Tian, Krishnan & Isola, "Contrastive Multiview Coding", ECCV 2020; Oord, Li & Vinyals,
        "Representation Learning with Contrastive Predictive Coding", arXiv:1807.03748.

    Args:
        loss: the InfoNCE loss value (nats), ≥ 0.
        k: the number of candidates per positive, ≥ 2.

    Returns:
        :math:`\log k - \mathcal{L}` in nats.

    Raises:
        ValueError: for k < 2 or a negative or non-finite loss.

    Example:
        >>> round(mi_lower_bound(1.0, 256), 4)
        4.5452
    """
    k = check_positive_int(k, "k")
    if k < 2:
        raise ValueError(f"k must be at least 2 (one positive and one negative); got {k}")
    if not math.isfinite(loss) or loss < 0:
        raise ValueError(f"loss must be a finite non-negative number; got {loss!r}")
    return math.log(k) - float(loss)


def info_nce_bound(z1, z2, *, temperature: float = 0.1, k: int = 256) -> dict[str, float]:
    r"""InfoNCE on held-out positive pairs in groups of ``k`` and the MI bound it gives.

    Within each group the cosine similarities :math:`s_{ij} = z_{1i}^\top z_{2j}` (rows normalised)
    give the symmetric loss

    .. math:: \mathcal{L} = \frac{1}{2k} \sum_{i} \Big[-\log \frac{e^{s_{ii}/\tau}}{\sum_j e^{s_{ij}/\tau}}
              - \log \frac{e^{s_{ii}/\tau}}{\sum_j e^{s_{ji}/\tau}}\Big],

    averaged over groups; each direction bounds the MI, so their mean does too:
    :math:`I \ge \log k - \mathcal{L}`. Leftover rows that do not fill a group are dropped.

    References:
        Tian, Krishnan & Isola, "Contrastive Multiview Coding", ECCV 2020.

    Args:
        z1: (N, D) embeddings of one view.
        z2: (N, D) embeddings of the other view, row i paired with ``z1[i]``.
        temperature: τ > 0.
        k: pairs per group (candidates per positive); lowered to N when N < k.

    Returns:
        ``{"loss": ..., "k": ..., "mi_lower_bound": ...}``.

    Raises:
        ValueError: for mismatched shapes, fewer than 2 pairs, or a bad option.

    Example:
        >>> import torch
        >>> z = torch.eye(8)
        >>> info_nce_bound(z, z, temperature=0.01, k=8)["mi_lower_bound"] > 2.0
        True
    """
    temperature = check_positive_float(temperature, "temperature")
    k = check_positive_int(k, "k")
    a = l2_normalize(as_features(z1, name="z1", dtype=torch.float64))
    b = l2_normalize(as_features(z2, name="z2", dtype=torch.float64))
    if a.shape != b.shape:
        raise ValueError(f"z1 and z2 must have the same shape (N, D); got {tuple(a.shape)} and {tuple(b.shape)}")
    k = min(k, a.shape[0])
    if k < 2:
        raise ValueError(f"info_nce_bound needs at least 2 pairs; got {a.shape[0]}")
    losses = []
    target = torch.arange(k)
    for start in range(0, a.shape[0] - k + 1, k):
        logits = a[start:start + k] @ b[start:start + k].T / temperature
        losses.append(0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)))
    loss = float(torch.stack(losses).mean())
    return {"loss": loss, "k": k, "mi_lower_bound": mi_lower_bound(loss, k)}


def _inverse_sqrt(cov: np.ndarray) -> np.ndarray:
    values, vectors = scipy.linalg.eigh(cov)
    return (vectors / np.sqrt(np.clip(values, 1e-12, None))) @ vectors.T


def canonical_correlations(x, y, *, reg: float = 1e-6, n_components: int | None = None) -> np.ndarray:
    r"""Canonical correlations between two sets of embeddings of the same items.

    With centred :math:`X \in \mathbb{R}^{N \times p}`, :math:`Y \in \mathbb{R}^{N \times q}`,
    :math:`\Sigma_{xx} = \frac{X^\top X}{N-1} + r I`, :math:`\Sigma_{yy} = \frac{Y^\top Y}{N-1} + r I`,
    :math:`\Sigma_{xy} = \frac{X^\top Y}{N-1}`, the canonical correlations are the singular values of

    .. math:: T = \Sigma_{xx}^{-1/2} \, \Sigma_{xy} \, \Sigma_{yy}^{-1/2},

    in decreasing order (Hotelling's CCA; the ridge :math:`r` keeps rank-deficient towers finite).
    Needs N well above p + q: with N ≤ max(p, q) every correlation is trivially ≈ 1.

    References:
        Hotelling, "Relations Between Two Sets of Variates", Biometrika 1936; Andrew et al.,
        "Deep Canonical Correlation Analysis", ICML 2013.

    Args:
        x: (N, p) embeddings from one tower.
        y: (N, q) embeddings from the other tower, row i the same item.
        reg: the ridge r ≥ 0 added to both covariances (relative to their mean variance).
        n_components: keep the largest this many; default min(p, q).

    Returns:
        (min(p, q),) or (n_components,) float64 correlations in [0, 1], largest first.

    Raises:
        ValueError: for mismatched row counts, N < 2, or a bad option.

    Example:
        >>> import numpy as np
        >>> x = np.random.default_rng(0).normal(size=(200, 3))
        >>> np.round(canonical_correlations(x, x @ np.diag([1.0, 2.0, 3.0])), 4).tolist()
        [1.0, 1.0, 1.0]
    """
    if not (isinstance(reg, (int, float)) and math.isfinite(reg) and reg >= 0):
        raise ValueError(f"reg must be a finite number >= 0; got {reg!r}")
    a = as_features(x, name="x", dtype=torch.float64).numpy()
    b = as_features(y, name="y", dtype=torch.float64).numpy()
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"x and y must have the same number of rows; got {a.shape[0]} and {b.shape[0]}")
    n = a.shape[0]
    if n < 2:
        raise ValueError(f"canonical_correlations needs at least 2 rows; got {n}")
    limit = min(a.shape[1], b.shape[1])
    if n_components is not None:
        n_components = check_positive_int(n_components, "n_components")
        if n_components > limit:
            raise ValueError(f"n_components={n_components} exceeds min(p, q) = {limit}")
    a = a - a.mean(axis=0)
    b = b - b.mean(axis=0)
    cxx = a.T @ a / (n - 1)
    cyy = b.T @ b / (n - 1)
    cxy = a.T @ b / (n - 1)
    cxx += reg * max(np.trace(cxx) / cxx.shape[0], 1e-12) * np.eye(cxx.shape[0])
    cyy += reg * max(np.trace(cyy) / cyy.shape[0], 1e-12) * np.eye(cyy.shape[0])
    t = _inverse_sqrt(cxx) @ cxy @ _inverse_sqrt(cyy)
    rho = np.clip(scipy.linalg.svdvals(t), 0.0, 1.0)[:limit]
    return rho[: n_components or limit]
