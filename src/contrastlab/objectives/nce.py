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
from contrastlab.objectives.similarity import (
    Similarity,
    SimilaritySpec,
    _repr_suffix,
    parse_similarity,
    resolve_similarity,
)
from contrastlab.objectives.temperature import check_temperature

__all__ = ["NCE", "nce", "SPECS"]


def _check_offset(offset: float) -> float:
    if isinstance(offset, bool) or not isinstance(offset, (int, float)) or not math.isfinite(offset):
        raise ValueError(f"offset must be a finite number, got {offset!r}")
    return float(offset)


# -log sigma(x) = softplus(-x);  -log sigma(-x) = softplus(x)


def _in_batch(scores: Tensor) -> Tensor:
    """Per anchor ``(N,)`` from the ``(N, N)`` scores: rows are the anchors, the positives on the diagonal."""
    off_diagonal = ~torch.eye(scores.shape[0], dtype=torch.bool, device=scores.device)
    negative = torch.where(off_diagonal, F.softplus(scores), torch.zeros_like(scores)).sum(dim=1)
    return F.softplus(-scores.diagonal()) + negative


def _explicit(
    anchors: Tensor, positives: Tensor, negatives: Tensor, temperature: float | Tensor, offset: float, sim: Similarity
) -> Tensor:
    """Per anchor ``(N,)`` with negatives ``(M, D)`` (shared) or ``(N, M, D)`` (per anchor)."""
    positive = sim.paired(anchors, positives) / temperature - offset
    if negatives.dim() == 2:
        neg_scores = sim.matrix(anchors, negatives) / temperature - offset
    else:
        neg_scores = sim.per_anchor(anchors, negatives) / temperature - offset
    return F.softplus(-positive) + F.softplus(neg_scores).sum(dim=1)


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
    similarity: SimilaritySpec | None = None,
) -> Tensor:
    r"""Binary NCE (logistic) loss of the CMC slides, equation (4), with the negatives summed.

    With the score :math:`g(u, v) = s(u, v)/\tau - b` (:math:`s` cosine when ``normalize=True``, or the
    coordination function ``similarity``) and
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
        similarity: the coordination function :math:`s` (``None``: dot products after ``normalize``; a name
            such as ``"rbf"``, a mapping ``{"name": "rbf", "sigma": 0.5}`` or a callable), see
            :class:`~contrastlab.objectives.similarity.Similarity`; applied after ``normalize``.

    Returns:
        A 0-dim tensor, or shape ``(N,)`` with ``reduction="none"``.

    Raises:
        ValueError: if ``temperature <= 0``, ``offset`` is not finite, shapes disagree, the batch has one item
            with in-batch negatives, ``symmetric=True`` with explicit negatives, ``reduction`` is unknown, or
            ``similarity`` is not a similarity.

    Example:
        >>> z = torch.eye(2)
        >>> loss = nce(z, z, temperature=1.0)   # softplus(-1) + softplus(0)
        >>> round(float(loss), 4)
        1.0064
    """
    temperature = check_temperature(temperature)
    offset = _check_offset(offset)
    check_reduction(reduction)
    sim = resolve_similarity(similarity)
    if negatives is None:
        check_pair(z1, z2, min_batch=2)
        z1, z2 = _unit(z1, normalize), _unit(z2, normalize)
        scores = sim.matrix(z1, z2) / temperature - offset
        loss = reduce(_in_batch(scores), reduction)
        if symmetric:
            # A function is always called as s(z1_i, z2_j), so the other direction reads its scores transposed;
            # the named similarities are symmetric and score z2 against z1 directly (as this loss always has).
            other = scores.T if sim.function is not None else sim.matrix(z2, z1) / temperature - offset
            loss = (loss + reduce(_in_batch(other), reduction)) / 2
        return loss
    if symmetric:
        raise ValueError(
            "symmetric=True needs in-batch negatives (negatives=None); with a queue per view, "
            f"call the loss once per direction; got negatives of shape {tuple(negatives.shape)}"
        )
    check_pair(z1, z2)
    _check_negatives(negatives, z1)
    z1, z2, negatives = _unit(z1, normalize), _unit(z2, normalize), _unit(negatives, normalize)
    per_anchor = _explicit(z1, z2, negatives, temperature, offset, sim)
    return reduce(per_anchor, reduction)


class NCE(nn.Module):
    r"""Module form of :func:`nce`; ``forward(z1, z2, negatives=None, temperature=None, similarity=None)``.

    ``temperature`` and ``similarity`` in ``forward`` override the stored ones for that call.

    References:
        Tian et al., "Contrastive Multiview Coding", ECCV 2020, arXiv:1906.05849.

    Args:
        temperature: :math:`\tau > 0`, a float or a 0-dim tensor.
        offset: :math:`b`, subtracted from every score.
        symmetric: the mean of both directions.
        normalize: cosine similarity.
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` (per anchor, ``(N,)``).
        similarity: the coordination function (``None``: dot products after ``normalize``), see :func:`nce`.

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
        similarity: SimilaritySpec | None = None,
    ) -> None:
        super().__init__()
        self.temperature = check_temperature(temperature)
        self.offset = _check_offset(offset)
        self.symmetric = bool(symmetric)
        self.normalize = bool(normalize)
        self.reduction = check_reduction(reduction)
        self.similarity = parse_similarity(similarity)

    def forward(
        self,
        z1: Tensor,
        z2: Tensor,
        negatives: Tensor | None = None,
        temperature: float | Tensor | None = None,
        similarity: SimilaritySpec | None = None,
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
            similarity=self.similarity if similarity is None else similarity,
        )

    def extra_repr(self) -> str:
        return (
            f"temperature={self.temperature}, offset={self.offset}, symmetric={self.symmetric}, "
            f"normalize={self.normalize}, reduction={self.reduction!r}{_repr_suffix(self.similarity)}"
        )


SPECS: list[ObjectiveSpec] = [
    ObjectiveSpec(
        name="nce",
        factory=NCE,
        kind="pairwise",
        formula="-mean_i [ log sig(s_ii/t - b) + sum_{j!=i} log sig(-(s_ij/t - b)) ],  s = cos or options.similarity",
        reference="Tian et al. 2020 (CMC), ECCV, arXiv:1906.05849; Gutmann & Hyvarinen 2010, AISTATS",
    ),
]
