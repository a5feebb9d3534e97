r"""A weighted sum of the contrastive loss, alignment and uniformity (Wang & Isola's Table 1 and Fig. 7).

One objective covers every row of their comparison: the contrastive loss alone (only
``contrastive_weight`` non-zero), :math:`\mathcal{L}_\text{align}` and :math:`\mathcal{L}_\text{uniform}`
with any weights (their Fig. 7 sweep, from alignment only to uniformity only), and the sum of all three.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from contrastlab.objectives._checks import check_non_negative, check_pair, check_positive
from contrastlab.objectives._reduction import check_batch_reduction, check_reduction
from contrastlab.objectives._spec import ObjectiveSpec
from contrastlab.objectives.align_uniform import align_loss, uniform_loss
from contrastlab.objectives.info_nce import info_nce
from contrastlab.objectives.temperature import check_temperature

__all__ = ["ContrastiveAlignUniform", "contrastive_align_uniform", "SPECS"]


def _check_weights(contrastive_weight: float, align_weight: float, uniform_weight: float) -> tuple[float, float, float]:
    weights = (check_non_negative("contrastive_weight", contrastive_weight),
               check_non_negative("align_weight", align_weight),
               check_non_negative("uniform_weight", uniform_weight))
    if not any(w > 0 for w in weights):
        raise ValueError("at least one of contrastive_weight, align_weight and uniform_weight must be > 0, "
                         f"got {weights[0]!r}, {weights[1]!r} and {weights[2]!r}")
    return weights


def contrastive_align_uniform(
    z1: Tensor,
    z2: Tensor,
    *,
    contrastive_weight: float = 1.0,
    align_weight: float = 1.0,
    uniform_weight: float = 1.0,
    temperature: float | Tensor = 0.5,
    alpha: float = 2.0,
    t: float = 2.0,
    symmetric: bool = False,
    normalize: bool = True,
    reduction: str = "mean",
) -> Tensor:
    r"""The weighted sum of InfoNCE, alignment and uniformity of two views.

    .. math::
        \mathcal{L} = w_c\,\mathcal{L}_\text{contrastive}(z^{(1)}, z^{(2)}; \tau)
            + w_a\,\mathcal{L}_\text{align}(z^{(1)}, z^{(2)}; \alpha)
            + \frac{w_u}{2}\big(\mathcal{L}_\text{uniform}(z^{(1)}; t) + \mathcal{L}_\text{uniform}(z^{(2)}; t)\big),

    with :math:`\mathcal{L}_\text{contrastive} = -\frac1N \sum_i \log \frac{e^{z^{(1)\top}_i z^{(2)}_i/\tau}}
    {\sum_j e^{z^{(1)\top}_i z^{(2)}_j/\tau}}` (in-batch negatives; the mean of both directions when
    ``symmetric``), :math:`\mathcal{L}_\text{align} = \frac1N \sum_i \lVert z^{(1)}_i - z^{(2)}_i \rVert_2^\alpha`
    and :math:`\mathcal{L}_\text{uniform}(z; t) = \log \frac{2}{N(N-1)} \sum_{i<j} e^{-t \lVert z_i - z_j \rVert_2^2}`.
    A term whose weight is 0 is not computed. The contrastive and alignment terms have a value per item;
    uniformity is a statistic of the batch, so ``reduction="sum"`` or ``"none"`` needs ``uniform_weight=0``.

    References:
        Wang and Isola, "Understanding Contrastive Representation Learning through Alignment and
        Uniformity on the Hypersphere", ICML 2020, arXiv:2005.10242 (Table 1: the contrastive loss, the
        weighted alignment and uniformity losses, and their combinations; Fig. 7: the weight sweep).

    Args:
        z1: first view, shape ``(N, D)``.
        z2: second view, shape ``(N, D)``; row ``i`` pairs with ``z1[i]``.
        contrastive_weight: :math:`w_c \ge 0`.
        align_weight: :math:`w_a \ge 0`.
        uniform_weight: :math:`w_u \ge 0` (at least one of the three weights must be positive).
        temperature: :math:`\tau > 0` of the contrastive term, a float or a 0-dim tensor.
        alpha: :math:`\alpha > 0` of the alignment.
        t: :math:`t > 0` of the uniformity.
        symmetric: the contrastive term in both directions, their mean (CLIP's form).
        normalize: L2-normalise ``z1`` and ``z2`` first (all three terms are defined on the sphere).
        reduction: ``"mean"`` over items, ``"sum"``, or ``"none"`` for each item's
            :math:`w_c \ell^\text{contrastive}_i + w_a \lVert z^{(1)}_i - z^{(2)}_i \rVert^\alpha`, shape ``(N,)``;
            the last two only with ``uniform_weight=0``.

    Returns:
        A 0-dim tensor, or shape ``(N,)`` with ``reduction="none"``.

    Raises:
        ValueError: a negative weight, all weights 0, a non-positive ``temperature``, ``alpha`` or ``t``,
            an unknown ``reduction`` (or ``"sum"`` / ``"none"`` with a uniformity term), shapes that differ,
            or ``N < 2``.

    Example:
        >>> import torch
        >>> z = torch.eye(4)
        >>> # aligned (0) and every pair at squared distance 2: uniformity -2t = -4
        >>> round(float(contrastive_align_uniform(z, z, contrastive_weight=0.0)), 4)
        -4.0
    """
    w_c, w_a, w_u = _check_weights(contrastive_weight, align_weight, uniform_weight)
    temperature = check_temperature(temperature)
    alpha, t = check_positive("alpha", alpha), check_positive("t", t)
    if w_u > 0:
        check_batch_reduction("contrastive_align_uniform with uniform_weight > 0", reduction)
    check_reduction(reduction)
    check_pair(z1, z2, min_batch=2)
    if normalize:
        z1, z2 = F.normalize(z1, dim=-1), F.normalize(z2, dim=-1)
    loss = z1.new_zeros(())
    if w_c > 0:
        contrastive = info_nce(
            z1, z2, temperature=temperature, symmetric=symmetric, normalize=False, reduction=reduction
        )
        loss = loss + w_c * contrastive
    if w_a > 0:
        loss = loss + w_a * align_loss(z1, z2, alpha=alpha, reduction=reduction)
    if w_u > 0:
        loss = loss + w_u * (uniform_loss(z1, t=t) + uniform_loss(z2, t=t)) / 2
    return loss


class ContrastiveAlignUniform(nn.Module):
    r"""Module form of :func:`contrastive_align_uniform`; ``forward(z1, z2)``.

    References:
        Wang and Isola, ICML 2020, arXiv:2005.10242.

    ``forward(z1, z2, temperature=None)``: ``temperature`` overrides the stored one for this call (a
    model's :class:`~contrastlab.objectives.temperature.LearnableTemperature`).

    Args:
        contrastive_weight: :math:`w_c \ge 0`.
        align_weight: :math:`w_a \ge 0`.
        uniform_weight: :math:`w_u \ge 0` (at least one weight positive).
        temperature: :math:`\tau > 0`, a float or a 0-dim tensor.
        alpha: :math:`\alpha > 0`.
        t: :math:`t > 0`.
        symmetric: two-way contrastive term (the mean of the directions).
        normalize: L2-normalise inside.
        reduction: ``"mean"``; ``"sum"`` or ``"none"`` (per item) only with ``uniform_weight=0``.

    Raises:
        ValueError: on a bad option (named in the message).

    Example:
        >>> import torch
        >>> ContrastiveAlignUniform(align_weight=0.5)(torch.randn(8, 16), torch.randn(8, 16)).shape
        torch.Size([])
    """

    def __init__(self, *, contrastive_weight: float = 1.0, align_weight: float = 1.0, uniform_weight: float = 1.0,
                 temperature: float | Tensor = 0.5, alpha: float = 2.0, t: float = 2.0, symmetric: bool = False,
                 normalize: bool = True, reduction: str = "mean") -> None:
        super().__init__()
        self.contrastive_weight, self.align_weight, self.uniform_weight = _check_weights(
            contrastive_weight, align_weight, uniform_weight)
        self.temperature = check_temperature(temperature)
        self.alpha, self.t = check_positive("alpha", alpha), check_positive("t", t)
        self.symmetric, self.normalize = bool(symmetric), bool(normalize)
        if self.uniform_weight > 0:
            check_batch_reduction("contrastive_align_uniform with uniform_weight > 0", reduction)
        self.reduction = check_reduction(reduction)

    def forward(self, z1: Tensor, z2: Tensor, temperature: float | Tensor | None = None) -> Tensor:
        return contrastive_align_uniform(
            z1, z2, contrastive_weight=self.contrastive_weight, align_weight=self.align_weight,
            uniform_weight=self.uniform_weight, temperature=self.temperature if temperature is None else temperature,
            alpha=self.alpha, t=self.t, symmetric=self.symmetric, normalize=self.normalize, reduction=self.reduction,
        )

    def extra_repr(self) -> str:
        return (f"contrastive_weight={self.contrastive_weight}, align_weight={self.align_weight}, "
                f"uniform_weight={self.uniform_weight}, temperature={self.temperature}, alpha={self.alpha}, "
                f"t={self.t}, symmetric={self.symmetric}, normalize={self.normalize}, reduction={self.reduction!r}")


SPECS: list[ObjectiveSpec] = [
    ObjectiveSpec(
        name="contrastive_align_uniform",
        factory=ContrastiveAlignUniform,
        kind="pairwise",
        formula="wc * info_nce(z1, z2; tau) + wa * mean_i |z1_i - z2_i|^a "
                "+ wu/2 * sum_v log mean_{i<j} exp(-t |zv_i - zv_j|^2)",
        reference="Wang & Isola 2020, ICML, arXiv:2005.10242 (Table 1, Fig. 7)",
    ),
]
