r"""Binary NCE: a logistic classifier tells the positive pair (label 1) from each negative pair (label 0)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from contrastlab.objectives._checks import check_pair
from contrastlab.objectives._reduction import check_reduction, reduce
from contrastlab.objectives._spec import ObjectiveSpec
from contrastlab.objectives.info_nce import _check_negatives, _unit
from contrastlab.objectives.temperature import check_temperature

__all__ = ["NCE", "nce", "SPECS"]


def _check_offset(offset: float) -> float:
    if isinstance(offset, bool) or not isinstance(offset, (int, float)) or not math.isfinite(offset):
        raise ValueError(f"offset must be a finite number, got {offset!r}")
    return float(offset)


def _one_way(
    anchors: Tensor, positives: Tensor, negatives: Tensor | None, temperature: float | Tensor, offset: float
) -> Tensor:
    """Per anchor ``(N,)``: the positive term plus the sum of the negative terms."""
    if negatives is None:
        logits = anchors @ positives.T / temperature - offset
        positive = logits.diagonal()
        off_diagonal = ~torch.eye(logits.shape[0], dtype=torch.bool, device=logits.device)
        negative = torch.where(off_diagonal, F.softplus(logits), torch.zeros_like(logits)).sum(dim=1)
    else:
        positive = (anchors * positives).sum(dim=-1) / temperature - offset
        if negatives.dim() == 2:
            neg_logits = anchors @ negatives.T / temperature - offset
        else:
            neg_logits = torch.bmm(negatives, anchors.unsqueeze(-1)).squeeze(-1) / temperature - offset
        negative = F.softplus(neg_logits).sum(dim=1)
    # -log sigma(x) = softplus(-x);  -log sigma(-x) = softplus(x)
    return F.softplus(-positive) + negative


def nce(
    z1: Tensor,
    z2: Tensor,
    *,
    temperature: float | Tensor = 0.1,
    negatives: Tensor | None = None,
    offset: float = 0.0,
    symmetric: bool = False,
    normalize: bool = True,
    reduction: str = "mean",
) -> Tensor:
    r"""Binary NCE (logistic) loss of the CMC slides, equation (4), with the negatives summed.

    With the score :math:`g(u, v) = s(u, v)/\tau - b` (:math:`s` cosine when ``normalize=True``) and
    :math:`\sigma` the logistic function, each anchor contributes the log-likelihood of labelling its positive
    pair 1 and each of its negative pairs 0:

    .. math::
        \mathcal{L} = -\frac{1}{N}\sum_{i=1}^{N}\Big[\log\sigma\big(g(z^{(1)}_i, z^{(2)}_i)\big)
            + \sum_{n \in \mathcal{N}_i} \log\sigma\big(-g(z^{(1)}_i, n)\big)\Big].

    The negatives :math:`\mathcal{N}_i` are the other rows of ``z2`` (in-batch), a shared set ``(M, D)`` (a
    queue or memory bank) or a per-anchor set ``(N, M, D)``. ``offset`` :math:`b = 0` is the slides'
    equation (4). In the CMC paper's NCE the posterior is
    :math:`P(D{=}1 \mid v) = p_d/(p_d + m\,p_n)` with :math:`p_d = e^{s/\tau}/Z` and :math:`m` noise samples from
    :math:`p_n`, which is :math:`\sigma(s/\tau - b)` with :math:`b = \log(m\,p_n Z)`; pass that ``offset``
    (e.g. uniform noise :math:`p_n = 1/\text{dataset size}` and :math:`Z` estimated once) to reproduce it.
    Computed with ``softplus`` (:math:`-\log\sigma(x) = \operatorname{softplus}(-x)`), stable at small
    :math:`\tau`.

    References:
        Tian, Krishnan, Isola, "Contrastive Multiview Coding", ECCV 2020, arXiv:1906.05849, section 3.4;
        Gutmann and Hyvärinen, "Noise-contrastive estimation: A new estimation principle for unnormalized
        statistical models", AISTATS 2010; the CMC slides in ``reference/``, equation (4).

    Args:
        z1: anchors, shape ``(N, D)``.
        z2: positives, shape ``(N, D)``.
        temperature: :math:`\tau > 0`, a float or a 0-dim tensor.
        negatives: ``None`` (in-batch), ``(M, D)`` shared or ``(N, M, D)`` per anchor.
        offset: :math:`b`, subtracted from every score (0: slides' eq. 4; :math:`\log(m p_n Z)`: CMC's NCE).
        symmetric: the *mean* of both directions (``z2`` as anchors against ``z1``, as CLIP); in-batch
            negatives only.
        normalize: L2-normalise inside.
        reduction: ``"mean"`` over anchors, ``"sum"``, or ``"none"`` for the per-anchor losses ``(N,)`` (with
            ``symmetric=True``, the mean of item :math:`i`'s two directions).

    Returns:
        A 0-dim tensor, or shape ``(N,)`` with ``reduction="none"``.

    Raises:
        ValueError: if ``temperature <= 0``, ``offset`` is not finite, shapes disagree, the batch has one item
            with in-batch negatives, ``symmetric=True`` with explicit negatives, or ``reduction`` is unknown.

    Example:
        >>> z = torch.eye(2)
        >>> loss = nce(z, z, temperature=1.0)   # softplus(-1) + softplus(0)
        >>> round(float(loss), 4)
        1.0064
    """
    temperature = check_temperature(temperature)
    offset = _check_offset(offset)
    check_reduction(reduction)
    if negatives is None:
        check_pair(z1, z2, min_batch=2)
        z1, z2 = _unit(z1, normalize), _unit(z2, normalize)
        loss = reduce(_one_way(z1, z2, None, temperature, offset), reduction)
        if symmetric:
            loss = (loss + reduce(_one_way(z2, z1, None, temperature, offset), reduction)) / 2
        return loss
    if symmetric:
        raise ValueError(
            "symmetric=True needs in-batch negatives (negatives=None); with a queue per view, "
            f"call the loss once per direction; got negatives of shape {tuple(negatives.shape)}"
        )
    check_pair(z1, z2)
    _check_negatives(negatives, z1)
    per_anchor = _one_way(_unit(z1, normalize), _unit(z2, normalize), _unit(negatives, normalize), temperature, offset)
    return reduce(per_anchor, reduction)


class NCE(nn.Module):
    r"""Module form of :func:`nce`; ``forward(z1, z2, negatives=None, temperature=None)``.

    References:
        Tian et al., "Contrastive Multiview Coding", ECCV 2020, arXiv:1906.05849.

    Args:
        temperature: :math:`\tau > 0`, a float or a 0-dim tensor.
        offset: :math:`b`, subtracted from every score.
        symmetric: the mean of both directions.
        normalize: cosine similarity.
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` (per anchor, ``(N,)``).

    Raises:
        ValueError: on a bad option (named in the message).

    Example:
        >>> NCE(temperature=0.1)(torch.randn(8, 16), torch.randn(8, 16)).shape
        torch.Size([])
    """

    def __init__(
        self,
        *,
        temperature: float | Tensor = 0.1,
        offset: float = 0.0,
        symmetric: bool = False,
        normalize: bool = True,
        reduction: str = "mean",
    ) -> None:
        super().__init__()
        self.temperature = check_temperature(temperature)
        self.offset = _check_offset(offset)
        self.symmetric = bool(symmetric)
        self.normalize = bool(normalize)
        self.reduction = check_reduction(reduction)

    def forward(
        self, z1: Tensor, z2: Tensor, negatives: Tensor | None = None, temperature: float | Tensor | None = None
    ) -> Tensor:
        return nce(
            z1,
            z2,
            temperature=self.temperature if temperature is None else temperature,
            negatives=negatives,
            offset=self.offset,
            symmetric=self.symmetric,
            normalize=self.normalize,
            reduction=self.reduction,
        )

    def extra_repr(self) -> str:
        return (
            f"temperature={self.temperature}, offset={self.offset}, symmetric={self.symmetric}, "
            f"normalize={self.normalize}, reduction={self.reduction!r}"
        )


SPECS: list[ObjectiveSpec] = [
    ObjectiveSpec(
        name="nce",
        factory=NCE,
        kind="pairwise",
        formula="-mean_i [ log sig(s_ii/t - b) + sum_{j!=i} log sig(-(s_ij/t - b)) ]",
        reference="Tian et al. 2020 (CMC), ECCV, arXiv:1906.05849; Gutmann & Hyvarinen 2010, AISTATS",
    ),
]
