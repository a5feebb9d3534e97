r"""Bidirectional hinge ranking loss of visual-semantic embeddings: VSE (sum) and VSE++ (max violation).

``symmetric=True`` is the *mean* of the two directions (as CLIP, and as everywhere in contrastlab), where
Faghri et al. sum them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from contrastlab.objectives._checks import check_non_negative, check_pair
from contrastlab.objectives._reduction import check_reduction, reduce
from contrastlab.objectives._spec import ObjectiveSpec
from contrastlab.objectives.similarity import SimilaritySpec, _repr_suffix, parse_similarity, resolve_similarity

__all__ = ["VSEHinge", "vse_hinge", "SPECS"]


def vse_hinge(
    z1: Tensor,
    z2: Tensor,
    *,
    margin: float = 0.2,
    max_violation: bool = False,
    symmetric: bool = True,
    normalize: bool = True,
    reduction: str = "mean",
    similarity: SimilaritySpec | None = None,
) -> Tensor:
    r"""Bidirectional hinge loss over in-batch negatives (VSE), or over the hardest one (VSE++).

    With :math:`s_{ij} = s(z^{(1)}_i, z^{(2)}_j)` (cosine when ``normalize=True``, or the coordination function
    ``similarity``; the margin is in its units) and :math:`[x]_+ = \max(0, x)`,
    anchor :math:`i` of each side is pushed above every contrastive item of the other side by a margin
    :math:`\alpha`:

    .. math::
        \ell_i = \tfrac12\Big(\sum_{j \ne i} [\alpha - s_{ii} + s_{ij}]_+
            + \sum_{j \ne i} [\alpha - s_{ii} + s_{ji}]_+\Big),
        \qquad \mathcal{L} = \frac{1}{N}\sum_i \ell_i .

    The first sum has :math:`z^{(1)}_i` as the anchor (e.g. image to captions), the second :math:`z^{(2)}_i`
    (caption to images); ``symmetric=False`` keeps only the first, without the :math:`\frac12`. With
    ``max_violation=True`` (VSE++) each sum becomes a maximum over :math:`j \ne i` (the hardest negative).

    Faghri et al. (and their ``vsepp`` code) *sum* over the batch and over the two directions; this is the
    mean over anchors and over directions, i.e. theirs divided by :math:`2N`, so the loss neither grows with
    :math:`N` nor differs by a factor 2 from the one-way loss, and ``symmetric`` means what it means for
    :func:`~contrastlab.objectives.info_nce.info_nce`.

    References:
        Kiros, Salakhutdinov, Zemel, "Unifying Visual-Semantic Embeddings with Multimodal Neural Language
        Models", arXiv:1411.2539 (2014); Faghri, Fleet, Kiros, Fidler, "VSE++: Improving Visual-Semantic
        Embeddings with Hard Negatives", BMVC 2018, arXiv:1707.05612 (the sum-of-hinges and max-of-hinges
        losses).

    Args:
        z1: first modality (e.g. images), shape ``(N, D)``.
        z2: second modality (e.g. captions), shape ``(N, D)``; row ``i`` pairs with ``z1[i]``.
        margin: :math:`\alpha \ge 0`.
        max_violation: hardest negative only (VSE++) instead of the sum over negatives (VSE).
        symmetric: the mean of both directions; ``False``: ``z1`` anchors only.
        normalize: L2-normalise inside (cosine); ``False`` uses dot products.
        reduction: ``"mean"`` over anchors, ``"sum"``, or ``"none"`` for the per-anchor losses
            :math:`\ell_i`, shape ``(N,)``.
        similarity: the coordination function :math:`s` (``None``: dot products after ``normalize``; a name
            such as ``"rbf"``, a mapping ``{"name": "rbf", "sigma": 0.5}`` or a callable), see
            :class:`~contrastlab.objectives.similarity.Similarity`; applied after ``normalize``.

    Returns:
        A 0-dim tensor, or shape ``(N,)`` with ``reduction="none"``.

    Raises:
        ValueError: if ``margin < 0``, ``reduction`` is unknown, the shapes differ, ``N < 2``, or
            ``similarity`` is not a similarity.

    Example:
        >>> z = torch.eye(3)
        >>> float(vse_hinge(z, z, margin=1.5))   # mean of 2 directions, each 2 negatives x (1.5 - 1 + 0)
        1.0
    """
    margin = check_non_negative("margin", margin)
    check_reduction(reduction)
    sim = resolve_similarity(similarity)
    check_pair(z1, z2, min_batch=2)
    if normalize:
        z1, z2 = F.normalize(z1, dim=-1), F.normalize(z2, dim=-1)
    scores = sim.matrix(z1, z2)
    positive = scores.diagonal()
    negative = ~torch.eye(scores.shape[0], dtype=torch.bool, device=scores.device)
    # Row i: z1[i] is the anchor, z2[j] the negatives; column j: z2[j] is the anchor, z1[i] the negatives.
    cost_z1 = torch.where(negative, F.relu(margin - positive[:, None] + scores), torch.zeros_like(scores))
    cost_z2 = torch.where(negative, F.relu(margin - positive[None, :] + scores), torch.zeros_like(scores))
    reduce_negatives = torch.amax if max_violation else torch.sum
    per_anchor = reduce_negatives(cost_z1, dim=1)
    if symmetric:
        per_anchor = (per_anchor + reduce_negatives(cost_z2, dim=0)) / 2
    return reduce(per_anchor, reduction)


class VSEHinge(nn.Module):
    r"""Module form of :func:`vse_hinge`; ``forward(z1, z2, similarity=None)``.

    ``similarity`` in ``forward`` overrides the stored one for that call (a learned coordination function).

    References:
        Faghri et al., "VSE++", BMVC 2018, arXiv:1707.05612.

    Args:
        margin: :math:`\alpha \ge 0`.
        max_violation: VSE++ (hardest negative).
        symmetric: the mean of both directions (``False``: ``z1`` anchors only).
        normalize: cosine similarity.
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` (per anchor, ``(N,)``).
        similarity: the coordination function (``None``: dot products after ``normalize``), see
            :func:`vse_hinge`.

    Raises:
        ValueError: on a bad option (named in the message).

    Example:
        >>> VSEHinge(max_violation=True)(torch.randn(8, 16), torch.randn(8, 16)).shape
        torch.Size([])
    """

    def __init__(
        self,
        *,
        margin: float = 0.2,
        max_violation: bool = False,
        symmetric: bool = True,
        normalize: bool = True,
        reduction: str = "mean",
        similarity: SimilaritySpec | None = None,
    ) -> None:
        super().__init__()
        self.margin = check_non_negative("margin", margin)
        self.max_violation = bool(max_violation)
        self.symmetric = bool(symmetric)
        self.normalize = bool(normalize)
        self.reduction = check_reduction(reduction)
        self.similarity = parse_similarity(similarity)

    def forward(self, z1: Tensor, z2: Tensor, similarity: SimilaritySpec | None = None) -> Tensor:
        return vse_hinge(
            z1,
            z2,
            margin=self.margin,
            max_violation=self.max_violation,
            symmetric=self.symmetric,
            normalize=self.normalize,
            reduction=self.reduction,
            similarity=self.similarity if similarity is None else similarity,
        )

    def extra_repr(self) -> str:
        return (
            f"margin={self.margin}, max_violation={self.max_violation}, symmetric={self.symmetric}, "
            f"normalize={self.normalize}, reduction={self.reduction!r}{_repr_suffix(self.similarity)}"
        )


def _vse(*, margin: float = 0.2, normalize: bool = True, similarity: SimilaritySpec | None = None) -> VSEHinge:
    """VSE: the sum over negatives."""
    return VSEHinge(margin=margin, max_violation=False, normalize=normalize, similarity=similarity)


def _vse_plus_plus(
    *, margin: float = 0.2, normalize: bool = True, similarity: SimilaritySpec | None = None
) -> VSEHinge:
    """VSE++: the hardest negative."""
    return VSEHinge(margin=margin, max_violation=True, normalize=normalize, similarity=similarity)


SPECS: list[ObjectiveSpec] = [
    ObjectiveSpec(
        name="vse",
        factory=_vse,
        kind="pairwise",
        formula="mean_i sum_{j!=i} ( [m - s_ii + s_ij]_+ + [m - s_ii + s_ji]_+ ) / 2  (the mean of the two directions); s = cos or options.similarity",
        reference="Kiros et al. 2014, arXiv:1411.2539; Faghri et al. 2018 (VSE++), BMVC",
    ),
    ObjectiveSpec(
        name="vse++",
        factory=_vse_plus_plus,
        kind="pairwise",
        formula="mean_i ( max_{j!=i} [m - s_ii + s_ij]_+ + max_{j!=i} [m - s_ii + s_ji]_+ ) / 2  (the mean of the two directions); s = cos or options.similarity",
        reference="Faghri et al. 2018 (VSE++), BMVC, arXiv:1707.05612",
    ),
]
