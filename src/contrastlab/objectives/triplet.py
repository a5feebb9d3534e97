r"""Triplet margin loss with a negative (impostor) sampler, both directions for cross-modal pairs."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from contrastlab.objectives._checks import check_choice, check_non_negative, check_pair
from contrastlab.objectives._spec import ObjectiveSpec

__all__ = ["SAMPLERS", "METRICS", "Triplet", "triplet_margin", "pair_scores", "parse_sampler", "SPECS"]

#: One impostor per anchor: uniformly at random, the most similar impostor still below the positive, the
#: most similar impostor; or every impostor, averaged ("all").
SAMPLERS = ("random", "semi_hard", "hardest", "all")
#: "cosine" and "dot" are similarities; the Euclidean ones are distances, used as the score -d.
METRICS = ("cosine", "dot", "euclidean", "squared_euclidean")


def parse_sampler(sampler: str) -> tuple[str, ...]:
    """Split ``"random+semi_hard"`` into its samplers; each must be known and appear once."""
    if not isinstance(sampler, str) or not sampler:
        raise ValueError(
            f"sampler must be a non-empty string such as 'semi_hard' or 'random+semi_hard', got {sampler!r}"
        )
    parts = tuple(sampler.split("+"))
    for part in parts:
        if part not in SAMPLERS:
            raise ValueError(f"sampler {sampler!r} has unknown part {part!r}; known: {', '.join(map(repr, SAMPLERS))}")
    if len(set(parts)) != len(parts):
        raise ValueError(f"sampler {sampler!r} names a sampler twice")
    return parts


def pair_scores(a: Tensor, b: Tensor, metric: str) -> Tensor:
    r"""Scores :math:`S_{ij}` between rows of ``a`` and ``b``; higher means more alike.

    Cosine similarity, dot product, or the negated (squared) Euclidean distance :math:`-\|a_i - b_j\|`.

    Args:
        a: shape ``(N, D)``.
        b: shape ``(K, D)``.
        metric: one of :data:`METRICS`.

    Returns:
        Shape ``(N, K)``.

    Raises:
        ValueError: if ``metric`` is unknown.

    Example:
        >>> pair_scores(torch.eye(2), 3 * torch.eye(2), "cosine")
        tensor([[1., 0.],
                [0., 1.]])
    """
    check_choice("metric", metric, METRICS)
    if metric == "cosine":
        return F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T
    if metric == "dot":
        return a @ b.T
    # Exact differences (not the Gram-matrix identity), so near-identical pairs keep their precision.
    dist = torch.cdist(a, b, compute_mode="donot_use_mm_for_euclid_dist")
    return -(dist.square() if metric == "squared_euclidean" else dist)


def _one_direction(
    scores: Tensor, margin: float, samplers: tuple[str, ...], generator: torch.Generator | None
) -> Tensor:
    """Per-anchor loss ``(N,)``: rows of ``scores`` are anchors, the diagonal holds the positives."""
    n = scores.shape[0]
    rows = torch.arange(n, device=scores.device)
    positive = scores.diagonal()
    impostor = ~torch.eye(n, dtype=torch.bool, device=scores.device)
    total = torch.zeros_like(positive)
    for sampler in samplers:
        if sampler == "all":
            hinge = F.relu(margin - positive[:, None] + scores)
            total = total + torch.where(impostor, hinge, torch.zeros_like(hinge)).sum(dim=1) / (n - 1)
            continue
        if sampler == "random":
            draw = torch.randint(0, n - 1, (n,), generator=generator, device=scores.device)
            negative = scores[rows, draw + (draw >= rows).long()]  # uniform over j != i
        elif sampler == "hardest":
            negative = scores.masked_fill(~impostor, float("-inf")).amax(dim=1)
        else:  # semi_hard
            below = impostor & (scores < positive[:, None])
            best_below = scores.masked_fill(~below, float("-inf")).amax(dim=1)
            least_similar = scores.masked_fill(~impostor, float("inf")).amin(dim=1)
            negative = torch.where(below.any(dim=1), best_below, least_similar)
        total = total + F.relu(margin - positive + negative)
    return total


def triplet_margin(
    z1: Tensor,
    z2: Tensor,
    *,
    margin: float = 0.2,
    sampler: str = "semi_hard",
    metric: str = "cosine",
    bidirectional: bool = True,
    generator: torch.Generator | None = None,
) -> Tensor:
    r"""Triplet margin loss over a batch of pairs, with sampled impostors, in both directions.

    Let :math:`S_{ij}` score anchor :math:`z^{(1)}_i` against :math:`z^{(2)}_j` (cosine, dot, or
    :math:`-d` for a Euclidean distance :math:`d`); row :math:`i`'s positive is :math:`S_{ii}`, every
    :math:`j \ne i` is an impostor. For one sampler that picks impostor :math:`j(i)`,

    .. math::
        \ell_i = \max\big(0,\; \eta - S_{ii} + S_{i\,j(i)}\big), \qquad
        \mathcal{L} = \frac{1}{N}\sum_i \ell_i \;+\; \frac{1}{N}\sum_i \ell'_i,

    where :math:`\ell'` is the same with the roles swapped (:math:`z^{(2)}` anchors, :math:`z^{(1)}`
    impostors; dropped when ``bidirectional=False``). Samplers:

    * ``random``: :math:`j(i)` uniform over :math:`j \ne i` (Harwath et al.'s :math:`\mathcal{L}_s`);
    * ``semi_hard``: the most similar impostor that still scores below the positive,
      :math:`j(i) = \arg\max_{j \ne i,\, S_{ij} < S_{ii}} S_{ij}` (Harwath et al.'s :math:`\mathcal{L}_h`).
      If no impostor scores below the positive, the least similar impostor is used (as in FaceNet's
      semi-hard loss), so the anchor still gets the mildest available violation, never the hardest;
    * ``hardest``: :math:`j(i) = \arg\max_{j \ne i} S_{ij}`;
    * ``all``: :math:`\ell_i = \frac{1}{N-1}\sum_{j \ne i} \max(0, \eta - S_{ii} + S_{ij})`.

    A combination such as ``"random+semi_hard"`` sums the samplers' losses
    (:math:`\mathcal{L}_s + \mathcal{L}_h`, as Harwath et al. train). Losses are averaged over anchors and
    summed over directions and samplers. Cosine normalises inside; the other metrics use the raw embeddings.

    References:
        Harwath, Recasens, Surís, Chuang, Torralba, Glass, "Jointly Discovering Visual Objects and Spoken
        Words from Raw Sensory Input", IJCV 2019 (ECCV 2018), arXiv:1804.01452; Schroff, Kalenichenko,
        Philbin, "FaceNet", CVPR 2015 (semi-hard negatives).

    Args:
        z1: first modality / view, shape ``(N, D)``.
        z2: second modality / view, shape ``(N, D)``; row ``i`` pairs with ``z1[i]``.
        margin: :math:`\eta \ge 0`, in the metric's units.
        sampler: one of ``"random"``, ``"semi_hard"``, ``"hardest"``, ``"all"`` or a ``+``-joined combination.
        metric: ``"cosine"``, ``"dot"``, ``"euclidean"`` or ``"squared_euclidean"``.
        bidirectional: add the direction with ``z2`` as anchors.
        generator: random source for ``"random"`` (on the embeddings' device); ``None`` uses torch's global one.

    Returns:
        A 0-dim tensor.

    Raises:
        ValueError: if ``margin < 0``, ``sampler`` or ``metric`` is unknown, the shapes differ, or ``N < 2``.

    Example:
        >>> z = torch.eye(3)
        >>> float(triplet_margin(z, z, margin=0.2, sampler="hardest"))   # orthogonal impostors: no violation
        0.0
    """
    margin = check_non_negative("margin", margin)
    samplers = parse_sampler(sampler)
    check_choice("metric", metric, METRICS)
    check_pair(z1, z2, min_batch=2)
    scores = pair_scores(z1, z2, metric)
    loss = _one_direction(scores, margin, samplers, generator).mean()
    if bidirectional:
        loss = loss + _one_direction(scores.T, margin, samplers, generator).mean()
    return loss


class Triplet(nn.Module):
    r"""Module form of :func:`triplet_margin`; ``forward(z1, z2)``.

    References:
        Harwath et al., IJCV 2019, arXiv:1804.01452.

    Args:
        margin: :math:`\eta \ge 0`.
        sampler: a sampler or ``+``-joined combination (see :func:`triplet_margin`).
        metric: the score.
        bidirectional: both directions.
        generator: random source for ``"random"``.

    Raises:
        ValueError: on a bad option (named in the message).

    Example:
        >>> Triplet(sampler="random+semi_hard")(torch.randn(8, 16), torch.randn(8, 16)).shape
        torch.Size([])
    """

    def __init__(
        self,
        *,
        margin: float = 0.2,
        sampler: str = "semi_hard",
        metric: str = "cosine",
        bidirectional: bool = True,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self.margin = check_non_negative("margin", margin)
        parse_sampler(sampler)
        self.sampler = sampler
        self.metric = check_choice("metric", metric, METRICS)
        self.bidirectional = bool(bidirectional)
        self.generator = generator

    def forward(self, z1: Tensor, z2: Tensor) -> Tensor:
        return triplet_margin(
            z1,
            z2,
            margin=self.margin,
            sampler=self.sampler,
            metric=self.metric,
            bidirectional=self.bidirectional,
            generator=self.generator,
        )

    def extra_repr(self) -> str:
        return (
            f"margin={self.margin}, sampler={self.sampler!r}, metric={self.metric!r}, "
            f"bidirectional={self.bidirectional}"
        )


SPECS: list[ObjectiveSpec] = [
    ObjectiveSpec(
        name="triplet",
        factory=Triplet,
        kind="pairwise",
        formula="mean_i max(0, m - S_ii + S_i,j(i)) + (same with z2 anchors),  j(i) from the sampler",
        reference="Harwath et al. 2019, IJCV, arXiv:1804.01452; Schroff et al. 2015 (FaceNet), CVPR",
    ),
]
