r"""Alignment and uniformity on the hypersphere (Wang & Isola): losses and, under ``no_grad``, metrics.

Alignment has a value per positive pair; uniformity is a statistic of the whole batch (a log-mean over all
pairs of items) and has none, so it, and any loss containing it, accepts only ``reduction="mean"``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from contrastlab.objectives._checks import check_embeddings, check_non_negative, check_pair, check_positive
from contrastlab.objectives._reduction import check_batch_reduction, check_reduction, reduce
from contrastlab.objectives._spec import ObjectiveSpec

__all__ = [
    "AlignLoss",
    "AlignUniform",
    "UniformLoss",
    "align_loss",
    "uniform_loss",
    "align_uniform",
    "check_unit_norm",
    "SPECS",
]


def check_unit_norm(name: str, x: Tensor) -> None:
    r"""Raise if a row of ``x`` is not unit-norm, naming the worst row and its norm.

    The tolerance is :math:`\max(10^{-3}, 8\,\epsilon)` of the dtype, so float32 and half-precision
    embeddings that were normalised pass.

    Args:
        name: the argument's name, for the message.
        x: shape ``(N, D)``.

    Raises:
        ValueError: if :math:`\max_i |\,\|x_i\| - 1\,|` exceeds the tolerance.

    Example:
        >>> check_unit_norm("x", torch.eye(3))
    """
    with torch.no_grad():
        norms = torch.linalg.vector_norm(x.float() if x.dtype in (torch.float16, torch.bfloat16) else x, dim=1)
        deviation = (norms - 1).abs()
        if deviation.numel() == 0:
            return
        worst = int(deviation.argmax())
        tol = max(1e-3, 8 * torch.finfo(x.dtype).eps)
        if float(deviation[worst]) > tol:
            raise ValueError(
                f"{name} must have unit-norm rows (check_normalized=True), but row {worst} has norm "
                f"{float(norms[worst]):.6g}; L2-normalise the embeddings first"
            )


def align_loss(
    x: Tensor,
    y: Tensor,
    *,
    alpha: float = 2.0,
    normalize: bool = False,
    check_normalized: bool = False,
    reduction: str = "mean",
) -> Tensor:
    r"""Alignment: the expected distance between positive pairs, raised to :math:`\alpha`.

    .. math::
        \mathcal{L}_\text{align} = \frac{1}{N}\sum_{i=1}^{N} \|x_i - y_i\|_2^{\alpha}.

    Computed as :math:`(\|x_i - y_i\|^2)^{\alpha/2}`; a pair at distance 0 has gradient 0 for every
    :math:`\alpha` (its subgradient), so identical pairs never give NaN.

    References:
        Wang and Isola, "Understanding Contrastive Representation Learning through Alignment and Uniformity
        on the Hypersphere", ICML 2020, arXiv:2005.10242, section 4 (alignment loss).

    Args:
        x: embeddings of one view, shape ``(N, D)`` (meant to be unit-norm).
        y: embeddings of the other view, shape ``(N, D)``; row ``i`` pairs with ``x[i]``.
        alpha: :math:`\alpha > 0` (the paper uses 2).
        normalize: L2-normalise ``x`` and ``y`` inside. Off by default, unlike the contrastive losses: this
            is also the alignment *metric* of the embeddings as given.
        check_normalized: raise if a row of ``x`` or ``y`` is not unit-norm (after ``normalize``).
        reduction: ``"mean"`` over pairs, ``"sum"``, or ``"none"`` for each pair's
            :math:`\|x_i - y_i\|^\alpha`, shape ``(N,)``.

    Returns:
        A 0-dim tensor, or shape ``(N,)`` with ``reduction="none"``.

    Raises:
        ValueError: if ``alpha <= 0``, ``reduction`` is unknown, the shapes differ, or (when checking) a row
            is not unit-norm.

    Example:
        >>> x = torch.tensor([[1.0, 0.0]]); y = torch.tensor([[0.0, 1.0]])
        >>> round(float(align_loss(x, y)), 4)   # |x - y|^2 = 2
        2.0
    """
    alpha = check_positive("alpha", alpha)
    check_reduction(reduction)
    check_pair(x, y)
    if normalize:
        x, y = F.normalize(x, dim=-1), F.normalize(y, dim=-1)
    if check_normalized:
        check_unit_norm("x", x)
        check_unit_norm("y", y)
    squared = (x - y).square().sum(dim=1)
    if alpha == 2.0:
        return reduce(squared, reduction)
    nonzero = squared > 0
    safe = torch.where(nonzero, squared, torch.ones_like(squared))
    return reduce(torch.where(nonzero, safe.pow(alpha / 2), torch.zeros_like(squared)), reduction)


def uniform_loss(
    x: Tensor, *, t: float = 2.0, normalize: bool = False, check_normalized: bool = False, reduction: str = "mean"
) -> Tensor:
    r"""Uniformity: the log of the mean Gaussian potential over distinct pairs.

    .. math::
        \mathcal{L}_\text{uniform} = \log \frac{2}{N(N-1)} \sum_{i<j} e^{-t\,\|x_i - x_j\|_2^2}
        = \operatorname{logsumexp}_{i<j}\big(-t\,\|x_i - x_j\|^2\big) - \log\tbinom{N}{2}.

    Evaluated with ``logsumexp``, so it stays finite even when every pair is far apart (where
    ``exp().mean().log()`` underflows to :math:`-\infty`). Lower is more uniform; on the unit sphere it is at
    most 0 (all points equal) and at least :math:`-4t` (every pair antipodal). The log of a mean over all pairs
    is a statistic of the batch, not a mean of per-sample terms: there is no ``reduction="none"``.

    References:
        Wang and Isola, ICML 2020, arXiv:2005.10242, section 4 (uniformity loss).

    Args:
        x: embeddings, shape ``(N, D)`` with ``N >= 2`` (meant to be unit-norm).
        t: :math:`t > 0` (the paper uses 2).
        normalize: L2-normalise ``x`` inside (off by default: this is also the uniformity metric).
        check_normalized: raise if a row of ``x`` is not unit-norm (after ``normalize``).
        reduction: ``"mean"`` only (a batch statistic; ``"sum"`` and ``"none"`` raise).

    Returns:
        A 0-dim tensor.

    Raises:
        ValueError: if ``t <= 0``, ``reduction`` is not ``"mean"``, ``x`` is not ``(N, D)`` with ``N >= 2``,
            or (when checking) a row is not unit-norm.

    Example:
        >>> x = torch.tensor([[1.0, 0.0], [-1.0, 0.0]])
        >>> float(uniform_loss(x, t=2.0))   # one antipodal pair: -t * 4
        -8.0
    """
    t = check_positive("t", t)
    check_batch_reduction("uniform_loss", reduction)
    check_embeddings("x", x)
    n = x.shape[0]
    if n < 2:
        raise ValueError(f"uniform_loss needs at least 2 rows (distinct pairs), got {n}")
    if normalize:
        x = F.normalize(x, dim=-1)
    if check_normalized:
        check_unit_norm("x", x)
    if x.dtype in (torch.bfloat16, torch.float16):  # torch.pdist has no half-precision CPU kernel
        x = x.float()
    squared = torch.pdist(x, p=2).square()
    return torch.logsumexp(-t * squared, dim=0) - math.log(squared.numel())


def align_uniform(
    z1: Tensor,
    z2: Tensor,
    *,
    alpha: float = 2.0,
    t: float = 2.0,
    weight: float = 1.0,
    normalize: bool = True,
    reduction: str = "mean",
) -> Tensor:
    r"""Wang & Isola's objective: alignment plus weighted uniformity of both views.

    .. math::
        \mathcal{L} = \mathcal{L}_\text{align}(z^{(1)}, z^{(2)}; \alpha)
            + \frac{\lambda}{2}\big(\mathcal{L}_\text{uniform}(z^{(1)}; t)
            + \mathcal{L}_\text{uniform}(z^{(2)}; t)\big).

    References:
        Wang and Isola, ICML 2020, arXiv:2005.10242 (their experiments weight the two terms, e.g.
        :math:`0.98\,\mathcal{L}_\text{align} + 0.96\,\mathcal{L}_\text{uniform}` with :math:`\alpha = t = 2`).

    Args:
        z1: first view, shape ``(N, D)``.
        z2: second view, shape ``(N, D)``.
        alpha: :math:`\alpha > 0` of the alignment.
        t: :math:`t > 0` of the uniformity.
        weight: :math:`\lambda \ge 0`.
        normalize: L2-normalise inside (the losses are defined on the sphere).
        reduction: ``"mean"`` only: uniformity is a batch statistic (``"sum"`` and ``"none"`` raise; for
            per-pair values use :func:`align_loss`).

    Returns:
        A 0-dim tensor.

    Raises:
        ValueError: on a bad option (``reduction`` other than ``"mean"`` included), shapes that differ, or
            ``N < 2``.

    Example:
        >>> z = torch.eye(4)
        >>> round(float(align_uniform(z, z)), 4)   # aligned; every pair at squared distance 2: -2t
        -4.0
    """
    alpha = check_positive("alpha", alpha)
    t = check_positive("t", t)
    weight = check_non_negative("weight", weight)
    check_batch_reduction("align_uniform", reduction)
    check_pair(z1, z2, min_batch=2)
    if normalize:
        z1, z2 = F.normalize(z1, dim=-1), F.normalize(z2, dim=-1)
    uniform = (uniform_loss(z1, t=t) + uniform_loss(z2, t=t)) / 2
    return align_loss(z1, z2, alpha=alpha) + weight * uniform


class AlignLoss(nn.Module):
    r"""Module form of :func:`align_loss`; ``forward(x, y)``.

    References:
        Wang and Isola, ICML 2020, arXiv:2005.10242.

    Args:
        alpha: :math:`\alpha > 0`.
        normalize: L2-normalise inside (off by default, as :func:`align_loss`).
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` (per pair, ``(N,)``).

    Raises:
        ValueError: on a bad option (named in the message).

    Example:
        >>> AlignLoss(normalize=True)(torch.randn(8, 16), torch.randn(8, 16)).shape
        torch.Size([])
    """

    def __init__(self, *, alpha: float = 2.0, normalize: bool = False, reduction: str = "mean") -> None:
        super().__init__()
        self.alpha = check_positive("alpha", alpha)
        self.normalize = bool(normalize)
        self.reduction = check_reduction(reduction)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        return align_loss(x, y, alpha=self.alpha, normalize=self.normalize, reduction=self.reduction)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, normalize={self.normalize}, reduction={self.reduction!r}"


class UniformLoss(nn.Module):
    r"""Module form of :func:`uniform_loss`; ``forward(x)``.

    References:
        Wang and Isola, ICML 2020, arXiv:2005.10242.

    Args:
        t: :math:`t > 0`.
        normalize: L2-normalise inside (off by default, as :func:`uniform_loss`).
        reduction: ``"mean"`` only (a batch statistic).

    Raises:
        ValueError: on a bad option (named in the message).

    Example:
        >>> UniformLoss(normalize=True)(torch.randn(8, 16)).shape
        torch.Size([])
    """

    def __init__(self, *, t: float = 2.0, normalize: bool = False, reduction: str = "mean") -> None:
        super().__init__()
        self.t = check_positive("t", t)
        self.normalize = bool(normalize)
        self.reduction = check_batch_reduction("uniform_loss", reduction)

    def forward(self, x: Tensor) -> Tensor:
        return uniform_loss(x, t=self.t, normalize=self.normalize, reduction=self.reduction)

    def extra_repr(self) -> str:
        return f"t={self.t}, normalize={self.normalize}"


class AlignUniform(nn.Module):
    r"""Module form of :func:`align_uniform`; ``forward(z1, z2)``.

    References:
        Wang and Isola, ICML 2020, arXiv:2005.10242.

    Args:
        alpha: :math:`\alpha > 0`.
        t: :math:`t > 0`.
        weight: :math:`\lambda \ge 0`.
        normalize: L2-normalise inside.
        reduction: ``"mean"`` only (uniformity is a batch statistic).

    Raises:
        ValueError: on a bad option (named in the message).

    Example:
        >>> AlignUniform(weight=1.0)(torch.randn(8, 16), torch.randn(8, 16)).shape
        torch.Size([])
    """

    def __init__(
        self,
        *,
        alpha: float = 2.0,
        t: float = 2.0,
        weight: float = 1.0,
        normalize: bool = True,
        reduction: str = "mean",
    ) -> None:
        super().__init__()
        self.alpha = check_positive("alpha", alpha)
        self.t = check_positive("t", t)
        self.weight = check_non_negative("weight", weight)
        self.normalize = bool(normalize)
        self.reduction = check_batch_reduction("align_uniform", reduction)

    def forward(self, z1: Tensor, z2: Tensor) -> Tensor:
        return align_uniform(
            z1, z2, alpha=self.alpha, t=self.t, weight=self.weight, normalize=self.normalize, reduction=self.reduction
        )

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, t={self.t}, weight={self.weight}, normalize={self.normalize}"


SPECS: list[ObjectiveSpec] = [
    ObjectiveSpec(
        name="align_uniform",
        factory=AlignUniform,
        kind="pairwise",
        formula="mean_i |z1_i - z2_i|^a + w/2 * sum_v log mean_{i<j} exp(-t |zv_i - zv_j|^2)",
        reference="Wang & Isola 2020, ICML, arXiv:2005.10242",
    ),
]
