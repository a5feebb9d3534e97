r"""Redundancy reduction: Barlow Twins and VICReg, losses on the batch's second-order statistics.

Neither uses negatives or an asymmetric branch. Collapse is prevented by statistics over the batch: Barlow
Twins drives the cross-correlation matrix of the two views to the identity; VICReg keeps every dimension's
standard deviation above 1 and its covariances with the other dimensions near 0. Both are batch-level
losses: there is no per-item loss, hence no ``reduction`` option, and a batch needs at least 2 items.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from contrastlab.objectives._checks import check_non_negative, check_pair

__all__ = ["BarlowTwinsLoss", "VICRegLoss", "barlow_twins", "vicreg"]


def _check_batch(name: str, z1: Tensor, z2: Tensor) -> None:
    check_pair(z1, z2)
    if z1.shape[0] < 2:
        raise ValueError(f"{name} takes statistics over the batch and needs N >= 2 items, got N = {z1.shape[0]}")


def _off_diagonal_squares(m: Tensor) -> Tensor:
    """:math:`\\sum_{i \\ne j} m_{ij}^2` of a square matrix."""
    off = ~torch.eye(m.shape[0], dtype=torch.bool, device=m.device)
    return m[off].pow(2).sum()


def barlow_twins(
    z1: Tensor, z2: Tensor, *, off_diagonal_weight: float = 5e-3, eps: float = 1e-5, unbiased: bool = False
) -> Tensor:
    r"""Barlow Twins: make the two views' cross-correlation matrix the identity.

    Standardise every dimension over the batch, :math:`\tilde z_{b,i} = (z_{b,i} - \mu_i) /
    \sqrt{\sigma_i^2 + \epsilon}`, and take the :math:`D \times D` cross-correlation
    :math:`C = \tilde z^{(1)\top} \tilde z^{(2)} / N`. Then

    .. math::
        \mathcal{L} = \sum_{i} (1 - C_{ii})^2 + \lambda \sum_{i}\sum_{j \ne i} C_{ij}^2 .

    The first term makes the embedding invariant to the distortions, the second decorrelates its dimensions.

    Which standard deviation: the paper defines :math:`C` as the correlation coefficient (equation 2, in
    which the :math:`N` cancels), i.e. the *biased* variance :math:`\sigma_i^2 = \frac{1}{N}\sum_b (z_{b,i} -
    \mu_i)^2`; the authors' code standardises with ``BatchNorm1d(affine=False)`` (biased, :math:`\epsilon =
    10^{-5}` under the root), and lightly's ``BarlowTwinsLoss`` with ``F.batch_norm`` (the same). That is the
    default here: identical views give :math:`C_{ii} = 1` up to :math:`\epsilon`. The paper's pseudocode
    (algorithm 1) writes ``z.std(0)``, which in PyTorch is the unbiased one; ``unbiased=True`` reproduces it,
    and then identical views give :math:`C_{ii} = (N-1)/N`.

    A batch-level loss: the sum over dimensions of statistics over the batch, not a mean over items, so it
    has no per-item reduction.

    References:
        Zbontar, Jing, Misra, LeCun, Deny, "Barlow Twins: Self-Supervised Learning via Redundancy Reduction",
        ICML 2021, arXiv:2103.03230, equations (1)-(2) and algorithm 1.

    Args:
        z1: first view's embeddings, shape ``(N, D)``, ``N >= 2``.
        z2: second view's embeddings, shape ``(N, D)``.
        off_diagonal_weight: :math:`\lambda \ge 0` (the paper: :math:`5 \cdot 10^{-3}`).
        eps: :math:`\epsilon \ge 0`, added to the variance before the square root.
        unbiased: standardise with the unbiased variance (:math:`\frac{1}{N-1}`) instead of the biased one.

    Returns:
        The loss, a 0-dim tensor.

    Raises:
        ValueError: if ``off_diagonal_weight`` or ``eps`` is negative or not a finite number, the shapes
            differ, or ``N < 2``.

    Example:
        >>> z = torch.tensor([[1.0, 1.0], [-1.0, 1.0], [1.0, -1.0], [-1.0, -1.0]])   # uncorrelated columns
        >>> round(float(barlow_twins(z, z, eps=0.0)), 6)                             # C = I
        0.0
    """
    lam = check_non_negative("off_diagonal_weight", off_diagonal_weight)
    eps = check_non_negative("eps", eps)
    _check_batch("barlow_twins", z1, z2)

    def standardize(z: Tensor) -> Tensor:
        var = z.var(dim=0, correction=1 if unbiased else 0)
        return (z - z.mean(dim=0)) / torch.sqrt(var + eps)

    c = standardize(z1).T @ standardize(z2) / z1.shape[0]
    return (1 - c.diagonal()).pow(2).sum() + lam * _off_diagonal_squares(c)


def _variance_term(z: Tensor, eps: float) -> Tensor:
    std = torch.sqrt(z.var(dim=0) + eps)  # unbiased, as the paper
    return F.relu(1 - std).mean()


def _covariance_term(z: Tensor) -> Tensor:
    n, d = z.shape
    centred = z - z.mean(dim=0)
    cov = centred.T @ centred / (n - 1)
    return _off_diagonal_squares(cov) / d


def vicreg(
    z1: Tensor,
    z2: Tensor,
    *,
    invariance_weight: float = 25.0,
    variance_weight: float = 25.0,
    covariance_weight: float = 1.0,
    eps: float = 1e-4,
) -> Tensor:
    r"""VICReg: invariance between the views, variance of each dimension, no covariance between dimensions.

    .. math::
        \mathcal{L} = \lambda\, s(Z, Z') + \mu \big[v(Z) + v(Z')\big] + \nu \big[c(Z) + c(Z')\big],

    with, over a batch :math:`Z \in \mathbb{R}^{N \times D}`,

    .. math::
        s(Z, Z') = \frac{1}{ND}\sum_{b=1}^{N} \|z_b - z'_b\|_2^2, \qquad
        v(Z) = \frac{1}{D}\sum_{j=1}^{D} \max\Big(0,\, 1 - \sqrt{\operatorname{Var}(z^j) + \epsilon}\Big),

    .. math::
        c(Z) = \frac{1}{D}\sum_{i \ne j} \operatorname{Cov}(Z)_{ij}^2, \qquad
        \operatorname{Cov}(Z) = \frac{1}{N-1}\sum_{b=1}^{N} (z_b - \bar z)(z_b - \bar z)^\top,

    where :math:`z^j` is dimension :math:`j` over the batch and :math:`\operatorname{Var}` is unbiased
    (:math:`\frac{1}{N-1}`), as the covariance. The variance target :math:`\gamma` is 1.

    Normalisations, compared:

    * :math:`s` is the mean squared error over all :math:`N D` entries (``F.mse_loss``), as in the paper's
      algorithm 1, the authors' code and lightly. The paper's text defines :math:`s` with :math:`\frac{1}{N}`
      only (summing the :math:`D` dimensions), which would scale :math:`\lambda` by :math:`D`; the published
      :math:`\lambda = 25` goes with the mean.
    * :math:`\mu [v(Z) + v(Z')]` is the paper's loss and its algorithm 1. The authors' code and
      lightly's ``VICRegLoss`` *halve* the variance term, :math:`\mu \cdot \frac{1}{2}[v(Z) + v(Z')]`, so
      lightly's ``mu_param`` is twice this ``variance_weight``.

    A batch-level loss: the variance and covariance terms are statistics over the batch, so there is no
    per-item reduction.

    References:
        Bardes, Ponce, LeCun, "VICReg: Variance-Invariance-Covariance Regularization for Self-Supervised
        Learning", ICLR 2022, arXiv:2105.04906, section 3.2 and algorithm 1.

    Args:
        z1: first view's embeddings :math:`Z`, shape ``(N, D)``, ``N >= 2``.
        z2: second view's embeddings :math:`Z'`, shape ``(N, D)``.
        invariance_weight: :math:`\lambda \ge 0` (the paper: 25).
        variance_weight: :math:`\mu \ge 0` (the paper: 25).
        covariance_weight: :math:`\nu \ge 0` (the paper: 1).
        eps: :math:`\epsilon \ge 0` under the square root of the variance (the paper: :math:`10^{-4}`).

    Returns:
        The loss, a 0-dim tensor.

    Raises:
        ValueError: if a weight or ``eps`` is negative or not a finite number, the shapes differ, or
            ``N < 2``.

    Example:
        >>> z = 2 * torch.tensor([[1.0, 1.0], [-1.0, 1.0], [1.0, -1.0], [-1.0, -1.0]])   # std > 1, cov 0
        >>> float(vicreg(z, z))
        0.0
    """
    lam = check_non_negative("invariance_weight", invariance_weight)
    mu = check_non_negative("variance_weight", variance_weight)
    nu = check_non_negative("covariance_weight", covariance_weight)
    eps = check_non_negative("eps", eps)
    _check_batch("vicreg", z1, z2)
    invariance = F.mse_loss(z1, z2)
    variance = _variance_term(z1, eps) + _variance_term(z2, eps)
    covariance = _covariance_term(z1) + _covariance_term(z2)
    return lam * invariance + mu * variance + nu * covariance


class BarlowTwinsLoss(nn.Module):
    r"""Module form of :func:`barlow_twins`; ``forward(z1, z2)``.

    References:
        Zbontar et al. (Barlow Twins), ICML 2021, arXiv:2103.03230.

    Args:
        off_diagonal_weight: :math:`\lambda \ge 0`.
        eps: :math:`\epsilon \ge 0`.
        unbiased: standardise with the unbiased variance.

    Raises:
        ValueError: on a bad option (named in the message).

    Example:
        >>> BarlowTwinsLoss()(torch.randn(8, 4), torch.randn(8, 4)).shape
        torch.Size([])
    """

    def __init__(self, *, off_diagonal_weight: float = 5e-3, eps: float = 1e-5, unbiased: bool = False) -> None:
        super().__init__()
        self.off_diagonal_weight = check_non_negative("off_diagonal_weight", off_diagonal_weight)
        self.eps = check_non_negative("eps", eps)
        self.unbiased = bool(unbiased)

    def forward(self, z1: Tensor, z2: Tensor) -> Tensor:
        return barlow_twins(
            z1, z2, off_diagonal_weight=self.off_diagonal_weight, eps=self.eps, unbiased=self.unbiased
        )

    def extra_repr(self) -> str:
        return f"off_diagonal_weight={self.off_diagonal_weight:g}, eps={self.eps:g}, unbiased={self.unbiased}"


class VICRegLoss(nn.Module):
    r"""Module form of :func:`vicreg`; ``forward(z1, z2)``.

    References:
        Bardes, Ponce, LeCun (VICReg), ICLR 2022, arXiv:2105.04906.

    Args:
        invariance_weight: :math:`\lambda \ge 0`.
        variance_weight: :math:`\mu \ge 0` (the paper's; lightly's ``mu_param`` is twice it).
        covariance_weight: :math:`\nu \ge 0`.
        eps: :math:`\epsilon \ge 0`.

    Raises:
        ValueError: on a bad option (named in the message).

    Example:
        >>> VICRegLoss()(torch.randn(8, 4), torch.randn(8, 4)).shape
        torch.Size([])
    """

    def __init__(
        self,
        *,
        invariance_weight: float = 25.0,
        variance_weight: float = 25.0,
        covariance_weight: float = 1.0,
        eps: float = 1e-4,
    ) -> None:
        super().__init__()
        self.invariance_weight = check_non_negative("invariance_weight", invariance_weight)
        self.variance_weight = check_non_negative("variance_weight", variance_weight)
        self.covariance_weight = check_non_negative("covariance_weight", covariance_weight)
        self.eps = check_non_negative("eps", eps)

    def forward(self, z1: Tensor, z2: Tensor) -> Tensor:
        return vicreg(
            z1,
            z2,
            invariance_weight=self.invariance_weight,
            variance_weight=self.variance_weight,
            covariance_weight=self.covariance_weight,
            eps=self.eps,
        )

    def extra_repr(self) -> str:
        return (
            f"invariance_weight={self.invariance_weight:g}, variance_weight={self.variance_weight:g}, "
            f"covariance_weight={self.covariance_weight:g}, eps={self.eps:g}"
        )
