r"""Losses that compare a prediction with a target: SimSiam's negative cosine and BYOL's normalised MSE.

Both methods are asymmetric and use no negatives. One branch adds a predictor head and gives the prediction
:math:`p`; the other gives the target (SimSiam: the same encoder's projection :math:`z`; BYOL: the projection
:math:`t` of a momentum-updated target network). The target gets no gradient, :math:`\operatorname{sg}(\cdot)`.
Together with the predictor, that asymmetry is what keeps the representation from collapsing to a constant.

For unit vectors the two per-pair losses differ only by an affine map:
:math:`\|\bar p - \bar t\|_2^2 = 2 - 2\cos(p, t) = 2 + 2 D(p, t)`.

A symmetric loss (``simsiam_loss``, ``byol_loss``) is the *mean* of its two directions, everywhere in
contrastlab.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from contrastlab.objectives._checks import check_embeddings
from contrastlab.objectives._reduction import check_reduction, reduce

__all__ = ["BYOLLoss", "NegativeCosine", "SimSiamLoss", "byol_loss", "negative_cosine", "simsiam_loss"]


def _check_same_shape(**tensors: Tensor) -> None:
    """Each tensor is ``(N, D)`` floating point, and they all have the same shape."""
    for name, t in tensors.items():
        check_embeddings(name, t)
    shapes = {name: tuple(t.shape) for name, t in tensors.items()}
    if len(set(shapes.values())) > 1:
        got = ", ".join(f"{name} {shape}" for name, shape in shapes.items())
        raise ValueError(f"{', '.join(shapes)} must have the same shape (N, D), got {got}")


def _cosine(p: Tensor, z: Tensor) -> Tensor:
    """Row-wise cosine similarity, shape ``(N,)``."""
    return (F.normalize(p, dim=-1) * F.normalize(z, dim=-1)).sum(dim=-1)


def negative_cosine(p: Tensor, z: Tensor, *, stop_gradient: bool = True, reduction: str = "mean") -> Tensor:
    r"""SimSiam's :math:`D`: the negative cosine similarity of a prediction and its (stopped) target.

    .. math::
        D(p_i, z_i) = -\frac{p_i}{\|p_i\|_2} \cdot \frac{\operatorname{sg}(z_i)}{\|\operatorname{sg}(z_i)\|_2},

    in :math:`[-1, 1]`. Both inputs are L2-normalised inside. BYOL's normalised squared error is
    :math:`2 + 2D`.

    References:
        Chen & He, "Exploring Simple Siamese Representation Learning" (SimSiam), CVPR 2021,
        arXiv:2011.10566, equation (1).

    Args:
        p: predictions, shape ``(N, D)``.
        z: targets, shape ``(N, D)``; row ``i`` is the target of prediction ``i``.
        stop_gradient: detach ``z`` (:math:`\operatorname{sg}`); ``False`` lets the gradient reach it.
        reduction: ``"mean"`` or ``"sum"`` over the :math:`N` rows, or ``"none"`` for shape ``(N,)``.

    Returns:
        A 0-dim tensor, or shape ``(N,)`` with ``reduction="none"``.

    Raises:
        ValueError: if ``reduction`` is unknown or ``p`` and ``z`` are not floating ``(N, D)`` of one shape.

    Example:
        >>> p = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
        >>> negative_cosine(p, torch.tensor([[3.0, 0.0], [2.0, 0.0]]), reduction="none")   # -cos 0, -cos 45°
        tensor([-1.0000, -0.7071])
    """
    check_reduction(reduction)
    _check_same_shape(p=p, z=z)
    return reduce(-_cosine(p, z.detach() if stop_gradient else z), reduction)


def byol_loss(p1: Tensor, p2: Tensor, t1: Tensor, t2: Tensor, *, reduction: str = "mean") -> Tensor:
    r"""BYOL: the squared distance between the normalised prediction and the normalised target, both ways.

    The online network predicts, from view 1, the target network's projection :math:`t_2` of view 2, and
    the other way round. Per direction, with :math:`\bar x = x / \|x\|_2`,

    .. math::
        \ell(p, t) = \big\|\bar p - \overline{\operatorname{sg}(t)}\big\|_2^2 = 2 - 2\cos(p, t),
        \qquad
        \mathcal{L} = \frac{1}{N}\sum_{i=1}^{N} \tfrac{1}{2}\big[\ell(p^{(1)}_i, t^{(2)}_i)
            + \ell(p^{(2)}_i, t^{(1)}_i)\big].

    The targets are always detached: they come from the momentum (EMA) target network, which is updated
    after the optimizer step, not by gradients.

    The paper's total loss :math:`\mathcal{L}^{\mathrm{BYOL}}_{\theta,\xi} = \mathcal{L}_{\theta,\xi} +
    \widetilde{\mathcal{L}}_{\theta,\xi}` *sums* the two directions; this one averages them (the house rule
    for ``symmetric``), so it is the paper's loss divided by 2. With the paper's learning rate, double it.

    References:
        Grill et al., "Bootstrap Your Own Latent: A New Approach to Self-Supervised Learning" (BYOL),
        NeurIPS 2020, arXiv:2006.07733, equation (2) and section 3.1.

    Args:
        p1: online predictions from view 1, shape ``(N, D)``.
        p2: online predictions from view 2, shape ``(N, D)``.
        t1: target projections of view 1, shape ``(N, D)`` (detached inside).
        t2: target projections of view 2, shape ``(N, D)`` (detached inside).
        reduction: ``"mean"`` or ``"sum"`` over items, or ``"none"`` for shape ``(N,)`` (each item's
            average of its two directions).

    Returns:
        A 0-dim tensor in :math:`[0, 4]`, or shape ``(N,)`` with ``reduction="none"``.

    Raises:
        ValueError: if ``reduction`` is unknown or the four tensors are not floating ``(N, D)`` of one shape.

    Example:
        >>> p = torch.eye(3)
        >>> float(byol_loss(p, p, p, p)), float(byol_loss(p, p, p.roll(1, 1), p.roll(1, 1)))
        (0.0, 2.0)
    """
    check_reduction(reduction)
    _check_same_shape(p1=p1, p2=p2, t1=t1, t2=t2)
    per_item = 2 - _cosine(p1, t2.detach()) - _cosine(p2, t1.detach())  # (1/2)[(2 - 2cos) + (2 - 2cos)]
    return reduce(per_item, reduction)


def simsiam_loss(
    p1: Tensor, p2: Tensor, z1: Tensor, z2: Tensor, *, stop_gradient: bool = True, reduction: str = "mean"
) -> Tensor:
    r"""SimSiam's symmetrised loss: each view's prediction against the other view's stopped projection.

    .. math::
        \mathcal{L} = \frac{1}{N}\sum_{i=1}^{N}
            \tfrac{1}{2} D\big(p^{(1)}_i, \operatorname{sg}(z^{(2)}_i)\big)
            + \tfrac{1}{2} D\big(p^{(2)}_i, \operatorname{sg}(z^{(1)}_i)\big),

    with :math:`D` the negative cosine (:func:`negative_cosine`); the minimum is :math:`-1`. Without the
    stop-gradient (``stop_gradient=False``, the paper's ablation in figure 2) SimSiam collapses.

    References:
        Chen & He, "Exploring Simple Siamese Representation Learning" (SimSiam), CVPR 2021,
        arXiv:2011.10566, equations (2)-(3) and algorithm 1.

    Args:
        p1: predictions from view 1, shape ``(N, D)``.
        p2: predictions from view 2, shape ``(N, D)``.
        z1: projections of view 1, shape ``(N, D)``.
        z2: projections of view 2, shape ``(N, D)``.
        stop_gradient: detach ``z1`` and ``z2``; ``False`` is the collapse ablation (gradients reach them).
        reduction: ``"mean"`` or ``"sum"`` over items, or ``"none"`` for shape ``(N,)``.

    Returns:
        A 0-dim tensor in :math:`[-1, 1]`, or shape ``(N,)`` with ``reduction="none"``.

    Raises:
        ValueError: if ``reduction`` is unknown or the four tensors are not floating ``(N, D)`` of one shape.

    Example:
        >>> z = torch.randn(4, 8)
        >>> round(float(simsiam_loss(z, 2 * z, z, z)), 6)   # predictions parallel to the targets
        -1.0
    """
    check_reduction(reduction)
    _check_same_shape(p1=p1, p2=p2, z1=z1, z2=z2)
    if stop_gradient:
        z1, z2 = z1.detach(), z2.detach()
    per_item = -(_cosine(p1, z2) + _cosine(p2, z1)) / 2
    return reduce(per_item, reduction)


class NegativeCosine(nn.Module):
    r"""Module form of :func:`negative_cosine`; ``forward(p, z)``.

    References:
        Chen & He (SimSiam), CVPR 2021, arXiv:2011.10566.

    Args:
        stop_gradient: detach the target ``z``.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.

    Raises:
        ValueError: if ``reduction`` is unknown.

    Example:
        >>> NegativeCosine()(torch.randn(4, 8), torch.randn(4, 8)).shape
        torch.Size([])
    """

    def __init__(self, *, stop_gradient: bool = True, reduction: str = "mean") -> None:
        super().__init__()
        self.stop_gradient = bool(stop_gradient)
        self.reduction = check_reduction(reduction)

    def forward(self, p: Tensor, z: Tensor) -> Tensor:
        return negative_cosine(p, z, stop_gradient=self.stop_gradient, reduction=self.reduction)

    def extra_repr(self) -> str:
        return f"stop_gradient={self.stop_gradient}, reduction={self.reduction!r}"


class BYOLLoss(nn.Module):
    r"""Module form of :func:`byol_loss` (the mean of the two directions); ``forward(p1, p2, t1, t2)``.

    References:
        Grill et al. (BYOL), NeurIPS 2020, arXiv:2006.07733.

    Args:
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.

    Raises:
        ValueError: if ``reduction`` is unknown.

    Example:
        >>> p1, p2, t1, t2 = torch.randn(4, 4, 8).unbind(0)
        >>> BYOLLoss()(p1, p2, t1, t2).shape
        torch.Size([])
    """

    def __init__(self, *, reduction: str = "mean") -> None:
        super().__init__()
        self.reduction = check_reduction(reduction)

    def forward(self, p1: Tensor, p2: Tensor, t1: Tensor, t2: Tensor) -> Tensor:
        return byol_loss(p1, p2, t1, t2, reduction=self.reduction)

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}"


class SimSiamLoss(nn.Module):
    r"""Module form of :func:`simsiam_loss`; ``forward(p1, p2, z1, z2)``.

    References:
        Chen & He (SimSiam), CVPR 2021, arXiv:2011.10566.

    Args:
        stop_gradient: detach the projections (``False``: the collapse ablation).
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.

    Raises:
        ValueError: if ``reduction`` is unknown.

    Example:
        >>> p1, p2, z1, z2 = torch.randn(4, 4, 8).unbind(0)
        >>> SimSiamLoss()(p1, p2, z1, z2).shape
        torch.Size([])
    """

    def __init__(self, *, stop_gradient: bool = True, reduction: str = "mean") -> None:
        super().__init__()
        self.stop_gradient = bool(stop_gradient)
        self.reduction = check_reduction(reduction)

    def forward(self, p1: Tensor, p2: Tensor, z1: Tensor, z2: Tensor) -> Tensor:
        return simsiam_loss(p1, p2, z1, z2, stop_gradient=self.stop_gradient, reduction=self.reduction)

    def extra_repr(self) -> str:
        return f"stop_gradient={self.stop_gradient}, reduction={self.reduction!r}"
