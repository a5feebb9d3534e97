r"""Triplet margin loss with a negative (impostor) sampler: over pairs (both directions) or over labels.

Two ways to say which items belong together, one loss:

* pairs ``triplet_margin(z1, z2)``: row :math:`i` of ``z1`` and of ``z2`` are a positive pair, every other
  row of the other side is an impostor (cross-modal retrieval, Harwath et al.);
* labels ``triplet_margin(embeddings, labels)``: items with the same label are positives, items with another
  label negatives (metric learning, FaceNet; pytorch-metric-learning's convention).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from contrastlab.objectives._checks import check_choice, check_embeddings, check_non_negative, check_pair
from contrastlab.objectives._reduction import check_reduction, reduce
from contrastlab.objectives._spec import ObjectiveSpec
from contrastlab.objectives.similarity import Similarity, SimilaritySpec, _repr_suffix, parse_similarity
from contrastlab.objectives.supcon import _check_labels

__all__ = ["SAMPLERS", "METRICS", "Triplet", "triplet_margin", "pair_scores", "parse_sampler", "SPECS"]

#: One impostor per anchor: uniformly at random, the most similar impostor still below the positive, the
#: most similar impostor; or every impostor, averaged ("all").
SAMPLERS = ("random", "semi_hard", "hardest", "all")
#: "cosine" and "dot" are similarities; the Euclidean ones are distances, used as the score -d. Any other
#: similarity (a kernel, a learned function) is given as ``similarity=``, the option every pairwise loss has.
METRICS = ("cosine", "dot", "euclidean", "squared_euclidean")


def _score(metric: str | None, similarity: SimilaritySpec | None) -> str | Similarity:
    """The one score that ``metric`` and ``similarity`` name together; ``ValueError`` if they disagree."""
    if metric is not None:
        check_choice("metric", metric, METRICS)
    sim = parse_similarity(similarity)
    if sim is None:
        return "cosine" if metric is None else metric
    if metric is not None:
        names = {"cosine": ("cosine",), "dot": ("dot", "linear")}.get(metric, ())
        if sim.function is not None or sim.name not in names:
            raise ValueError(
                f"metric={metric!r} and similarity={sim!r} name different scores; give one of them "
                "(metric is this loss's older name for the score, similarity the option every pairwise loss has)"
            )
    return sim


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


def pair_scores(a: Tensor, b: Tensor, metric: str | Similarity) -> Tensor:
    r"""Scores :math:`S_{ij}` between rows of ``a`` and ``b``; higher means more alike.

    Cosine similarity, dot product, or the negated (squared) Euclidean distance :math:`-\|a_i - b_j\|`;
    or :math:`s(a_i, b_j)` for a :class:`~contrastlab.objectives.similarity.Similarity` (a kernel, a
    learned function).

    Args:
        a: shape ``(N, D)``.
        b: shape ``(K, D)``.
        metric: one of :data:`METRICS`, or a :class:`~contrastlab.objectives.similarity.Similarity`.

    Returns:
        Shape ``(N, K)``.

    Raises:
        ValueError: if ``metric`` is unknown.

    Example:
        >>> pair_scores(torch.eye(2), 3 * torch.eye(2), "cosine")
        tensor([[1., 0.],
                [0., 1.]])
    """
    if isinstance(metric, Similarity):
        return metric.matrix(a, b)
    check_choice("metric", metric, METRICS)
    if metric == "cosine":
        return F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T
    if metric == "dot":
        return a @ b.T
    # Exact differences (not the Gram-matrix identity), so near-identical pairs keep their precision.
    dist = torch.cdist(a, b, compute_mode="donot_use_mm_for_euclid_dist")
    return -(dist.square() if metric == "squared_euclidean" else dist)


def _hinges(
    positive: Tensor,
    scores: Tensor,
    negatives: Tensor,
    margin: float,
    samplers: tuple[str, ...],
    draw: Callable[[], Tensor],
) -> Tensor:
    """Loss of each (anchor, positive) pair, shape ``(P,)``, summed over the samplers.

    ``positive`` ``(P,)`` is the pair's score, ``scores`` ``(P, K)`` the anchor's scores against every
    candidate, ``negatives`` ``(P, K)`` which candidates are negatives (at least one per row), and ``draw()``
    the column of a uniformly random negative of each row.
    """
    total = torch.zeros_like(positive)
    for sampler in samplers:
        if sampler == "all":
            hinge = F.relu(margin - positive[:, None] + scores)
            total = total + torch.where(negatives, hinge, torch.zeros_like(hinge)).sum(dim=1) / negatives.sum(dim=1)
            continue
        if sampler == "random":
            negative = scores.gather(1, draw()[:, None]).squeeze(1)
        elif sampler == "hardest":
            negative = scores.masked_fill(~negatives, float("-inf")).amax(dim=1)
        else:  # semi_hard
            below = negatives & (scores < positive[:, None])
            best_below = scores.masked_fill(~below, float("-inf")).amax(dim=1)
            least_similar = scores.masked_fill(~negatives, float("inf")).amin(dim=1)
            negative = torch.where(below.any(dim=1), best_below, least_similar)
        total = total + F.relu(margin - positive + negative)
    return total


def _one_direction(
    scores: Tensor, margin: float, samplers: tuple[str, ...], generator: torch.Generator | None
) -> Tensor:
    """Per-anchor loss ``(N,)``: rows of ``scores`` are anchors, the diagonal holds the positives."""
    n = scores.shape[0]
    rows = torch.arange(n, device=scores.device)
    impostor = ~torch.eye(n, dtype=torch.bool, device=scores.device)

    def draw() -> Tensor:  # uniform over j != i
        j = torch.randint(0, n - 1, (n,), generator=generator, device=scores.device)
        return j + (j >= rows).long()

    return _hinges(scores.diagonal(), scores, impostor, margin, samplers, draw)


def _labelled(
    z: Tensor,
    labels: Tensor,
    margin: float,
    samplers: tuple[str, ...],
    metric: str | Similarity,
    generator: torch.Generator | None,
    reduction: str,
) -> Tensor:
    """The labels form of :func:`triplet_margin`: every (anchor, positive) pair of a class, per anchor."""
    check_embeddings("embeddings", z)
    n = z.shape[0]
    labels = _check_labels(labels, n).to(z.device)
    same = labels[:, None] == labels[None, :]
    positives = same & ~torch.eye(n, dtype=torch.bool, device=z.device)
    negatives = ~same
    usable = positives.any(dim=1) & negatives.any(dim=1)
    if not bool(usable.any()):
        raise ValueError(
            "no anchor has both a positive and an impostor: a batch needs some class at least twice and at least "
            f"two classes, got {n} items of {int(labels.unique().numel())} class(es)"
        )
    anchor, positive = (positives & usable[:, None]).nonzero(as_tuple=True)
    scores = pair_scores(z, z, metric)
    rows, pair_negatives = scores[anchor], negatives[anchor]

    def draw() -> Tensor:  # the k-th negative of each row, k uniform in [0, number of negatives)
        count = pair_negatives.sum(dim=1)
        u = torch.rand(anchor.shape[0], generator=generator, device=z.device, dtype=torch.float64)
        k = torch.minimum((u * count).long(), count - 1)
        return (pair_negatives.cumsum(dim=1) > k[:, None]).int().argmax(dim=1)

    per_pair = _hinges(scores[anchor, positive], rows, pair_negatives, margin, samplers, draw)
    n_pairs = (positives & usable[:, None]).sum(dim=1)
    per_anchor = torch.zeros(n, dtype=per_pair.dtype, device=z.device).index_add(0, anchor, per_pair)
    per_anchor = per_anchor / n_pairs.clamp(min=1)
    return per_anchor[usable].mean() if reduction == "mean" else reduce(per_anchor, reduction)


def triplet_margin(
    z1: Tensor,
    z2: Tensor,
    *,
    margin: float = 0.2,
    sampler: str = "semi_hard",
    metric: str | None = None,
    bidirectional: bool = True,
    reduction: str = "mean",
    generator: torch.Generator | None = None,
    similarity: SimilaritySpec | None = None,
) -> Tensor:
    r"""Triplet margin loss with sampled impostors: over pairs in both directions, or over labels.

    Let :math:`S_{ij}` score anchor :math:`z^{(1)}_i` against :math:`z^{(2)}_j` (cosine, dot,
    :math:`-d` for a Euclidean distance :math:`d`, or a coordination function :math:`s` such as an RBF
    kernel); row :math:`i`'s positive is :math:`S_{ii}`, every
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
    summed over directions and samplers. Cosine normalises inside (``metric="cosine"`` is this loss's
    ``normalize=True``); the other metrics and similarities use the raw embeddings.

    **metric and similarity.** ``similarity`` is the option every pairwise loss has (a name, a mapping
    ``{"name": "rbf", "sigma": 0.5}``, a :class:`~contrastlab.objectives.similarity.Similarity` or a
    callable); ``metric`` is this loss's older name for the score, kept, and the only way to score by a
    Euclidean distance. ``metric="cosine"`` and ``similarity="cosine"`` give the same loss (as do ``"dot"``
    and ``"dot"`` or ``"linear"``); giving both with different scores is an error. With neither, cosine.

    **Directions are summed, not averaged.** ``bidirectional=True`` is Harwath et al.'s
    :math:`\mathcal{L}(z^{(1)} \to z^{(2)}) + \mathcal{L}(z^{(2)} \to z^{(1)})`, and the audio-visual recipe's
    results in ``docs/RESULTS.md`` were trained with that sum. The option is therefore not called
    ``symmetric``, which in contrastlab always means the *mean* of the two directions (CLIP): ``bidirectional``
    is twice that mean.

    **Labels form.** Called as ``triplet_margin(embeddings, labels)`` with ``labels`` an integer ``(N,)``
    tensor, the positives of anchor :math:`i` are the other items of its class :math:`P(i)` and its
    impostors the items of other classes. Every (anchor, positive) pair gets an impostor from the sampler
    (semi-hard relative to that pair's score), and

    .. math::
        \ell_i = \frac{1}{|P(i)|}\sum_{p \in P(i)} \max\big(0,\; \eta - S_{ip} + S_{i\,j(i,p)}\big), \qquad
        \mathcal{L} = \frac{1}{|I'|}\sum_{i \in I'} \ell_i,

    over the anchors :math:`I'` that have a positive and an impostor (as :func:`~contrastlab.objectives.supcon.supcon`
    averages). Every item is an anchor, so there is no second direction. With two items per class and
    ``sampler="hardest"`` this is pytorch-metric-learning's batch-hard triplet loss; with ``"all"`` and
    classes of equal size, its ``TripletMarginLoss`` averaged over all triplets. Memory: the ``(P, N)``
    scores of the :math:`P` (anchor, positive) pairs.

    References:
        Harwath, Recasens, Surís, Chuang, Torralba, Glass, "Jointly Discovering Visual Objects and Spoken
        Words from Raw Sensory Input", IJCV 2019 (ECCV 2018), arXiv:1804.01452; Schroff, Kalenichenko,
        Philbin, "FaceNet", CVPR 2015 (semi-hard negatives).

    Args:
        z1: first modality / view, shape ``(N, D)``; in the labels form, the embeddings ``(N, D)``.
        z2: second modality / view, shape ``(N, D)``, row ``i`` pairing with ``z1[i]``; or integer labels
            ``(N,)`` for the labels form.
        margin: :math:`\eta \ge 0`, in the metric's units.
        sampler: one of ``"random"``, ``"semi_hard"``, ``"hardest"``, ``"all"`` or a ``+``-joined combination
            (pytorch-metric-learning calls this mining).
        metric: ``"cosine"``, ``"dot"``, ``"euclidean"`` or ``"squared_euclidean"``; ``None``: cosine unless
            ``similarity`` is given.
        bidirectional: pairs form: add (sum) the direction with ``z2`` as anchors. The labels form has one
            direction only and refuses ``False``.
        reduction: ``"mean"`` over anchors, ``"sum"``, or ``"none"`` for the per-anchor losses ``(N,)`` (pairs
            form with ``bidirectional``: :math:`\ell_i + \ell'_i`; labels form: 0 for an anchor without a
            positive or an impostor, which ``"mean"`` leaves out).
        generator: random source for ``"random"`` (on the embeddings' device); ``None`` uses torch's global one.
        similarity: the coordination function :math:`s` (see
            :class:`~contrastlab.objectives.similarity.Similarity`), on the embeddings as given (cosine
            normalises by definition); the margin is in its units.

    Returns:
        A 0-dim tensor, or shape ``(N,)`` with ``reduction="none"``.

    Raises:
        ValueError: if ``margin < 0``, ``sampler``, ``metric``, ``similarity`` or ``reduction`` is unknown,
            ``metric`` and ``similarity`` name different scores, the shapes differ,
            ``N < 2``, labels are not integer ``(N,)``, no anchor has both a positive and an impostor, or
            ``bidirectional=False`` with labels.

    Example:
        >>> z = torch.eye(3)
        >>> float(triplet_margin(z, z, margin=0.2, sampler="hardest"))   # orthogonal impostors: no violation
        0.0
        >>> emb, labels = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]]), torch.tensor([0, 0, 1, 1])
        >>> float(triplet_margin(emb, labels, margin=0.2, sampler="hardest"))   # classes well apart
        0.0
    """
    margin = check_non_negative("margin", margin)
    samplers = parse_sampler(sampler)
    score = _score(metric, similarity)
    check_reduction(reduction)
    if isinstance(z2, Tensor) and z2.dim() == 1:
        if not bidirectional:
            raise ValueError("bidirectional=False has no meaning with labels: every item is an anchor")
        return _labelled(z1, z2, margin, samplers, score, generator, reduction)
    check_pair(z1, z2, min_batch=2)
    scores = pair_scores(z1, z2, score)
    if reduction == "mean":  # the mean of each direction, summed
        loss = _one_direction(scores, margin, samplers, generator).mean()
        if bidirectional:
            loss = loss + _one_direction(scores.T, margin, samplers, generator).mean()
        return loss
    per_anchor = _one_direction(scores, margin, samplers, generator)
    if bidirectional:
        per_anchor = per_anchor + _one_direction(scores.T, margin, samplers, generator)
    return reduce(per_anchor, reduction)


class Triplet(nn.Module):
    r"""Module form of :func:`triplet_margin`; ``forward(z1, z2)`` or ``forward(embeddings, labels)``.

    ``forward(..., similarity=...)`` scores that call with the given similarity instead of the stored
    ``metric`` / ``similarity`` (a learned coordination function).

    References:
        Harwath et al., IJCV 2019, arXiv:1804.01452.

    Args:
        margin: :math:`\eta \ge 0`.
        sampler: a sampler or ``+``-joined combination (see :func:`triplet_margin`).
        metric: the score: ``"cosine"``, ``"dot"``, ``"euclidean"`` or ``"squared_euclidean"`` (``None``:
            cosine unless ``similarity`` is given).
        bidirectional: both directions, summed.
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` (per anchor, ``(N,)``).
        generator: random source for ``"random"``.
        similarity: the coordination function (a kernel such as ``"rbf"``, a mapping, or a callable); the
            same score as ``metric`` where both can say it, see :func:`triplet_margin`.

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
        metric: str | None = None,
        bidirectional: bool = True,
        reduction: str = "mean",
        generator: torch.Generator | None = None,
        similarity: SimilaritySpec | None = None,
    ) -> None:
        super().__init__()
        self.margin = check_non_negative("margin", margin)
        parse_sampler(sampler)
        self.sampler = sampler
        _score(metric, similarity)
        self.metric = metric
        self.bidirectional = bool(bidirectional)
        self.reduction = check_reduction(reduction)
        self.generator = generator
        self.similarity = parse_similarity(similarity)

    def forward(self, z1: Tensor, z2: Tensor, similarity: SimilaritySpec | None = None) -> Tensor:
        return triplet_margin(
            z1,
            z2,
            margin=self.margin,
            sampler=self.sampler,
            metric=self.metric if similarity is None else None,
            bidirectional=self.bidirectional,
            reduction=self.reduction,
            generator=self.generator,
            similarity=self.similarity if similarity is None else similarity,
        )

    def extra_repr(self) -> str:
        metric = "" if self.metric is None and self.similarity is not None else f", metric={self.metric or 'cosine'!r}"
        return (
            f"margin={self.margin}, sampler={self.sampler!r}{metric}, "
            f"bidirectional={self.bidirectional}, reduction={self.reduction!r}{_repr_suffix(self.similarity)}"
        )


SPECS: list[ObjectiveSpec] = [
    ObjectiveSpec(
        name="triplet",
        factory=Triplet,
        kind="pairwise",
        formula=(
            "mean_i max(0, m - S_ii + S_i,j(i)) + (same with z2 anchors),  j(i) from the sampler, "
            "S from metric or options.similarity"
        ),
        reference="Harwath et al. 2019, IJCV, arXiv:1804.01452; Schroff et al. 2015 (FaceNet), CVPR",
    ),
]
