r"""Canonical correlation analysis: a closed-form linear estimator and the deep CCA objective.

Both rest on the same quantity. For two views with covariances :math:`\Sigma_{11}, \Sigma_{22}` (regularised by
:math:`r I`) and cross-covariance :math:`\Sigma_{12}`, the canonical correlations are the singular values of the
whitened cross-covariance

.. math::

    T = \Sigma_{11}^{-1/2} \Sigma_{12} \Sigma_{22}^{-1/2}.

Any square root works in place of :math:`\Sigma^{1/2}`: with the Cholesky factor :math:`\Sigma = L L^\top`,
:math:`L^{-1} = Q \Sigma^{-1/2}` for an orthogonal :math:`Q`, so :math:`L_1^{-1} \Sigma_{12} L_2^{-\top}` has the
same singular values. :func:`dcca_loss` uses it because the eigendecomposition's backward divides by eigenvalue
gaps :math:`1/(\lambda_i - \lambda_j)` (infinite for whitened or duplicated views) and Cholesky's does not.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from contrastlab.objectives._checks import check_embeddings, check_positive
from contrastlab.objectives._reduction import check_batch_reduction
from contrastlab.objectives._spec import ObjectiveSpec

__all__ = ["SPECS", "DCCALoss", "LinearCCA", "dcca_loss"]


def __getattr__(name: str):
    # LinearCCA is a scikit-learn estimator: importing scikit-learn costs a second, so the objectives
    # (and every command line start) load it only when it is used.
    if name == "LinearCCA":
        from contrastlab.objectives.linear_cca import LinearCCA

        return LinearCCA
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _check_n_components(n_components: int | None, limit: int | None, *, allow_none: bool) -> int | None:
    """An integer in ``[1, limit]`` (no upper bound when ``limit`` is None); ``None`` means ``limit``."""
    if n_components is None and allow_none:
        return limit
    if isinstance(n_components, bool) or not isinstance(n_components, (int, np.integer)) or n_components < 1:
        raise ValueError(f"n_components must be an integer >= 1, got {n_components!r}")
    if limit is not None and n_components > limit:
        raise ValueError(f"n_components must be <= min(D1, D2) = {limit}, got {n_components}")
    return int(n_components)


def _cholesky(cov: Tensor, name: str, reg: float) -> Tensor:
    factor, info = torch.linalg.cholesky_ex(cov)
    if int(info) != 0:
        raise ValueError(
            f"the regularised covariance of {name} is not positive definite (reg={reg}); "
            "its embeddings contain NaN / infinity or reg is too small for their scale"
        )
    return factor


def dcca_loss(
    z1: Tensor, z2: Tensor, *, n_components: int | None = None, reg: float = 1e-3, reduction: str = "mean"
) -> Tensor:
    r"""Deep CCA objective: minus the sum of the top-:math:`k` canonical correlations of two batches.

    With centred batches :math:`\bar H_1 \in \mathbb{R}^{N \times D_1}`, :math:`\bar H_2 \in \mathbb{R}^{N \times D_2}`:

    .. math::

        \Sigma_{11} = \tfrac{1}{N-1} \bar H_1^\top \bar H_1 + r I, \quad
        \Sigma_{22} = \tfrac{1}{N-1} \bar H_2^\top \bar H_2 + r I, \quad
        \Sigma_{12} = \tfrac{1}{N-1} \bar H_1^\top \bar H_2,

    .. math::

        \mathcal{L} = -\sum_{j=1}^{k} \sigma_j\big(\Sigma_{11}^{-1/2} \Sigma_{12} \Sigma_{22}^{-1/2}\big),

    which for :math:`k = \min(D_1, D_2)` is minus the trace norm of Andrew et al. The whitening uses Cholesky
    factors and the singular values come from ``torch.linalg.svdvals``, whose backward is
    :math:`U_{:, :k} V_{:, :k}^\top` with no :math:`1/(\sigma_i^2 - \sigma_j^2)` terms, so gradients stay finite
    when the views are identical or linearly related (all correlations near 1) or collapsed. The linear algebra
    runs in float64 (the matrices are only :math:`D \times D`); the loss has the inputs' dtype.

    The correlations are statistics of the whole batch; there are no per-sample losses, so only
    ``reduction="mean"`` is accepted. CCA is invariant to an invertible linear map of each view, so there is
    no ``normalize`` option either.

    Args:
        z1: ``(N, D1)`` first view's embeddings.
        z2: ``(N, D2)`` second view's embeddings, row ``i`` paired with ``z1[i]``.
        n_components: :math:`k`, or ``None`` for all :math:`\min(D_1, D_2)`.
        reg: :math:`r > 0` added to both covariances' diagonals.
        reduction: ``"mean"`` only (``"sum"`` and ``"none"`` raise).

    Returns:
        The 0-dim loss, in :math:`[-k, 0]`.

    Raises:
        ValueError: if ``reg <= 0``, ``reduction`` is not ``"mean"``, ``n_components`` is not in
            ``[1, min(D1, D2)]``, the batches are not 2-D floating point with the same ``N``, or ``N < 2``.

    References:
        Andrew, Arora, Bilmes, Livescu, "Deep Canonical Correlation Analysis", ICML 2013.

    Example:
        >>> h = torch.randn(64, 4)
        >>> round(dcca_loss(h, 2 * h + 1, reg=1e-6).item(), 3)  # perfectly correlated: k = 4 correlations of 1
        -4.0
    """
    reg = check_positive("reg", reg)
    check_batch_reduction("dcca_loss", reduction)
    check_embeddings("z1", z1)
    check_embeddings("z2", z2)
    if z1.shape[0] != z2.shape[0]:
        raise ValueError(
            f"z1 and z2 must have the same batch size N, got shapes {tuple(z1.shape)} and {tuple(z2.shape)}"
        )
    n = z1.shape[0]
    if n < 2:
        raise ValueError(f"batch size must be >= 2 to estimate covariances, got {n}")
    k = _check_n_components(n_components, min(z1.shape[1], z2.shape[1]), allow_none=True)

    work = torch.promote_types(z1.dtype, torch.float64)
    h1, h2 = z1.to(work), z2.to(work)
    h1 = h1 - h1.mean(dim=0)
    h2 = h2 - h2.mean(dim=0)
    c11 = h1.T @ h1 / (n - 1) + reg * torch.eye(h1.shape[1], dtype=work, device=h1.device)
    c22 = h2.T @ h2 / (n - 1) + reg * torch.eye(h2.shape[1], dtype=work, device=h2.device)
    c12 = h1.T @ h2 / (n - 1)
    l1, l2 = _cholesky(c11, "z1", reg), _cholesky(c22, "z2", reg)
    t = torch.linalg.solve_triangular(l1, c12, upper=False)  # L1^{-1} S12
    t = torch.linalg.solve_triangular(l2, t.T, upper=False).T  # L1^{-1} S12 L2^{-T}
    correlations = torch.linalg.svdvals(t)
    return (-correlations[:k].sum()).to(torch.promote_types(z1.dtype, z2.dtype))


class DCCALoss(nn.Module):
    r"""Module form of :func:`dcca_loss`: ``loss(z1 (N, D1), z2 (N, D2))``.

    Args:
        n_components: :math:`k`, or ``None`` for all :math:`\min(D_1, D_2)`.
        reg: :math:`r > 0`.
        reduction: ``"mean"`` only (a batch statistic).

    Raises:
        ValueError: on a bad option (named in the message).

    Example:
        >>> DCCALoss(n_components=2)(torch.randn(32, 4), torch.randn(32, 3)).shape
        torch.Size([])
    """

    def __init__(self, *, n_components: int | None = None, reg: float = 1e-3, reduction: str = "mean") -> None:
        super().__init__()
        # the upper bound min(D1, D2) is only known from the batch
        self.n_components = _check_n_components(n_components, None, allow_none=True)
        self.reg = check_positive("reg", reg)
        self.reduction = check_batch_reduction("dcca_loss", reduction)

    def forward(self, z1: Tensor, z2: Tensor) -> Tensor:
        return dcca_loss(z1, z2, n_components=self.n_components, reg=self.reg)

    def extra_repr(self) -> str:
        return f"n_components={self.n_components}, reg={self.reg}"


SPECS: list[ObjectiveSpec] = [
    ObjectiveSpec(
        name="dcca",
        factory=DCCALoss,
        kind="cca",
        formula="-sum_{j<=k} sigma_j(S11^{-1/2} S12 S22^{-1/2}), S11 = cov(H1) + rI, S22 = cov(H2) + rI",
        reference="Andrew et al. 2013, Deep Canonical Correlation Analysis, ICML",
        uses_negatives=True,  # no negatives, but it needs a batch of >= 2 (in practice >> D) to estimate covariances
    ),
]
