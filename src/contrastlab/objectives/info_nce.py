r"""InfoNCE / k-pair (one-way and symmetric CLIP) and NT-Xent (SimCLR).

Both are a cross-entropy over similarities divided by a temperature: the anchor must pick its own positive
among a set of candidates. They differ only in who the candidates are.

``symmetric=True`` is the *mean* of the two directions (CLIP), as everywhere in contrastlab.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from contrastlab.objectives._checks import check_choice, check_pair
from contrastlab.objectives._reduction import check_reduction
from contrastlab.objectives._spec import ObjectiveSpec
from contrastlab.objectives.similarity import (
    Similarity,
    SimilaritySpec,
    _repr_suffix,
    parse_similarity,
    resolve_similarity,
)
from contrastlab.objectives.temperature import check_temperature

__all__ = ["TILED_THRESHOLD", "InfoNCE", "NTXent", "info_nce", "nt_xent", "SPECS"]

#: ``impl="auto"`` switches to the row-blocked (tiled) kernel when the number of anchor rows reaches this.
TILED_THRESHOLD = 2048

_IMPLS = ("auto", "naive", "tiled")


def _unit(z: Tensor, normalize: bool) -> Tensor:
    return F.normalize(z, dim=-1) if normalize else z


def _tiled(impl: str, rows: int, reduction: str, similarity: Similarity) -> bool:
    """Whether to use the tiled kernel; it gives the mean (and so the sum), not the per-anchor losses.

    The tiled kernel takes bilinear similarities only (cosine, dot, linear); ``"auto"`` falls back to the
    naive path for any other, ``"tiled"`` refuses it.
    """
    if impl == "tiled" and reduction == "none":
        raise ValueError("impl='tiled' gives the mean or sum only; use impl='naive' or 'auto' for reduction='none'")
    if impl == "tiled":
        from contrastlab.objectives._tiled import check_tiled_similarity

        check_tiled_similarity(similarity)
    return impl == "tiled" or (
        impl == "auto" and reduction != "none" and rows >= TILED_THRESHOLD and similarity.bilinear
    )


def _check_negatives(negatives: Tensor, z1: Tensor) -> None:
    n, d = z1.shape
    if not isinstance(negatives, Tensor) or not torch.is_floating_point(negatives):
        raise ValueError(f"negatives must be a floating tensor of shape (M, D) or (N, M, D), got {negatives!r}")
    if negatives.dtype != z1.dtype:
        raise ValueError(f"negatives must have the embeddings' dtype {z1.dtype}, got {negatives.dtype}")
    shape = tuple(negatives.shape)
    ok = (negatives.dim() == 2 and shape[1] == d) or (negatives.dim() == 3 and shape[0] == n and shape[2] == d)
    if not ok:
        raise ValueError(f"negatives must have shape (M, {d}) or ({n}, M, {d}) for z1 of shape {(n, d)}, got {shape}")
    if shape[-2] < 1:
        raise ValueError(f"negatives must hold at least one negative (M >= 1), got shape {shape}")


def info_nce(
    z1: Tensor,
    z2: Tensor,
    *,
    temperature: float | Tensor = 0.1,
    negatives: Tensor | None = None,
    symmetric: bool = False,
    normalize: bool = True,
    reduction: str = "mean",
    impl: str = "auto",
    similarity: SimilaritySpec | None = None,
) -> Tensor:
    r"""InfoNCE (k-pair) loss: anchor :math:`i` must pick its positive among its candidates.

    With similarities :math:`s(u, v) = u^\top v` (cosine when ``normalize=True``; or the coordination
    function ``similarity``, e.g. an RBF kernel) and candidates :math:`C_i` that contain the positive
    :math:`z^{(2)}_i`,

    .. math::
        \mathcal{L} = -\frac{1}{N}\sum_{i=1}^{N}
            \log \frac{\exp\big(s(z^{(1)}_i, z^{(2)}_i)/\tau\big)}{\sum_{c \in C_i} \exp\big(s(z^{(1)}_i, c)/\tau\big)}.

    * ``negatives=None`` (in-batch): :math:`C_i = \{z^{(2)}_j\}_{j=1}^N`, the other rows of ``z2`` are the
      negatives. With ``symmetric=True`` the loss is CLIP's, the mean of this direction and the one with
      ``z2`` as anchors and ``z1`` as candidates.
    * ``negatives`` of shape ``(M, D)``: shared negatives (a queue or memory bank, MoCo / CMC),
      :math:`C_i = \{z^{(2)}_i\} \cup \{n_m\}_{m=1}^M`.
    * ``negatives`` of shape ``(N, M, D)``: per-anchor negatives, the homework's equation (1),
      :math:`C_i = \{z^{(2)}_i\} \cup \{n_{i,m}\}_{m=1}^M`; the anchor is compared with its negatives,
      :math:`s(z^{(1)}_i, n_{i,m})`.

    Computed with ``cross_entropy`` (log-sum-exp), so small temperatures do not overflow.

    References:
        van den Oord, Li, Vinyals, "Representation Learning with Contrastive Predictive Coding",
        arXiv:1807.03748 (2018); Sohn, "Improved Deep Metric Learning with Multi-class N-pair Loss
        Objective", NeurIPS 2016; Radford et al., "Learning Transferable Visual Models From Natural Language
        Supervision" (CLIP), ICML 2021.

    Args:
        z1: anchors, shape ``(N, D)``.
        z2: positives, shape ``(N, D)``; row ``i`` is the positive of anchor ``i``.
        temperature: :math:`\tau > 0`, a float or a 0-dim tensor (e.g. from
            :class:`~contrastlab.objectives.temperature.LearnableTemperature`; the gradient flows to it).
        negatives: ``None`` for in-batch negatives, or explicit negatives of shape ``(M, D)`` (shared) or
            ``(N, M, D)`` (per anchor). Normalised like the embeddings when ``normalize=True``.
        symmetric: the *mean* of both directions (CLIP): item :math:`i`'s loss is the average of its loss as
            an anchor in ``z1`` and as an anchor in ``z2``. Only with in-batch negatives: for a queue per
            view, call the loss once per direction with that view's queue.
        normalize: L2-normalise every embedding inside (cosine similarity); ``False`` uses raw dot products.
        reduction: ``"mean"`` over anchors, ``"sum"``, or ``"none"`` for the per-anchor losses ``(N,)``
            (with ``symmetric=True``, the mean of item :math:`i`'s two directions).
        impl: ``"naive"`` (the full ``(N, N)`` logit matrix), ``"tiled"`` (row-blocked, in-batch negatives
            and a bilinear similarity only; not with ``reduction="none"``) or ``"auto"`` (tiled when
            ``negatives is None``, ``N >= TILED_THRESHOLD``, ``reduction`` is not ``"none"`` and the
            similarity is bilinear, i.e. ``None``, cosine, dot or linear).
        similarity: the coordination function :math:`s` (see
            :class:`~contrastlab.objectives.similarity.Similarity`): ``None`` (dot products of the
            embeddings after ``normalize``: cosine by default), ``"cosine"``, ``"dot"``, ``"linear"``,
            ``"polynomial"``, ``"exponential"``, ``"rbf"``, a mapping ``{"name": "rbf", "sigma": 0.5}``, or a
            callable ``(a, b) -> (N, M)``; applied after ``normalize``. The logits are :math:`s/\tau`.

    Returns:
        A 0-dim tensor, or shape ``(N,)`` with ``reduction="none"``.

    Raises:
        ValueError: if ``temperature <= 0``, the shapes of ``z1``/``z2``/``negatives`` disagree, the batch
            has one item with in-batch negatives, ``symmetric=True`` with explicit negatives, ``reduction`` is
            unknown, ``similarity`` is not a similarity, or ``impl`` is unknown or ``"tiled"`` with explicit
            negatives, ``reduction="none"`` or a similarity that is not bilinear.

    Example:
        >>> z = torch.eye(4)
        >>> loss = info_nce(z, z, temperature=1.0)   # identical positives, orthogonal negatives
        >>> round(float(loss), 4)                    # log(1 + 3 e^{-1})
        0.7437
    """
    check_choice("impl", impl, _IMPLS)
    check_reduction(reduction)
    temperature = check_temperature(temperature)
    sim = resolve_similarity(similarity)
    if negatives is None:
        check_pair(z1, z2, min_batch=2)
        z1, z2 = _unit(z1, normalize), _unit(z2, normalize)
        n = z1.shape[0]
        if _tiled(impl, n, reduction, sim):
            from contrastlab.objectives._tiled import tiled_info_nce

            loss = tiled_info_nce(z1, z2, temperature=temperature, symmetric=symmetric, similarity=sim)
            return loss if reduction == "mean" else loss * n
        logits = sim.matrix(z1, z2) / temperature
        target = torch.arange(n, device=z1.device)
        loss = F.cross_entropy(logits, target, reduction=reduction)
        if symmetric:
            loss = (loss + F.cross_entropy(logits.T, target, reduction=reduction)) / 2
        return loss

    if impl == "tiled":
        raise ValueError(
            f"impl='tiled' supports in-batch negatives only, got negatives of shape {tuple(negatives.shape)}"
        )
    if symmetric:
        raise ValueError(
            "symmetric=True needs in-batch negatives (negatives=None); with a queue per view, "
            f"call the loss once per direction; got negatives of shape {tuple(negatives.shape)}"
        )
    check_pair(z1, z2)
    _check_negatives(negatives, z1)
    z1, z2, negatives = _unit(z1, normalize), _unit(z2, normalize), _unit(negatives, normalize)
    positive = sim.paired(z1, z2).unsqueeze(-1)
    negative = sim.matrix(z1, negatives) if negatives.dim() == 2 else sim.per_anchor(z1, negatives)
    logits = torch.cat([positive, negative], dim=1) / temperature
    target = torch.zeros(z1.shape[0], dtype=torch.long, device=z1.device)
    return F.cross_entropy(logits, target, reduction=reduction)


def nt_xent(
    z1: Tensor,
    z2: Tensor,
    *,
    temperature: float | Tensor = 0.5,
    normalize: bool = True,
    reduction: str = "mean",
    impl: str = "auto",
    similarity: SimilaritySpec | None = None,
) -> Tensor:
    r"""NT-Xent, SimCLR's normalised temperature-scaled cross-entropy.

    Stack the two views into :math:`2N` rows :math:`u = [z^{(1)}; z^{(2)}]`; the positive of row :math:`k` is
    the other view of the same item, :math:`p(k) = k \pm N`. Every other row is a negative, so each anchor has
    :math:`2N-1` candidates:

    .. math::
        \mathcal{L} = -\frac{1}{2N}\sum_{k=1}^{2N}
            \log \frac{\exp\big(s(u_k, u_{p(k)})/\tau\big)}{\sum_{l \ne k} \exp\big(s(u_k, u_l)/\tau\big)}.

    :math:`s` is cosine similarity (``normalize=True``), the dot product, or the coordination function
    ``similarity``. If all :math:`2N` embeddings are equal, every logit is equal and the loss is :math:`\log(2N-1)`.
    Both views are anchors, so the loss is symmetric by construction (it has no ``symmetric`` option); its
    per-sample losses are the :math:`2N` anchors' (``reduction="none"``).

    References:
        Chen, Kornblith, Norouzi, Hinton, "A Simple Framework for Contrastive Learning of Visual
        Representations" (SimCLR), ICML 2020, arXiv:2002.05709, equation (1).

    Args:
        z1: first view's embeddings, shape ``(N, D)``.
        z2: second view's embeddings, shape ``(N, D)``.
        temperature: :math:`\tau > 0`, a float or a 0-dim tensor.
        normalize: L2-normalise inside (cosine similarity, as SimCLR); ``False`` uses dot products.
        reduction: ``"mean"`` over the :math:`2N` anchors, ``"sum"``, or ``"none"`` for the per-anchor losses
            ``(2N,)``: rows ``0..N-1`` are the anchors of ``z1``, rows ``N..2N-1`` those of ``z2``.
        impl: ``"naive"``, ``"tiled"`` (bilinear similarities only, not with ``reduction="none"``) or
            ``"auto"`` (tiled when ``2N >= TILED_THRESHOLD``, ``reduction`` is not ``"none"`` and the
            similarity is bilinear).
        similarity: the coordination function :math:`s`, as in :func:`info_nce` (``None``: dot products
            after ``normalize``); applied after ``normalize``.

    Returns:
        A 0-dim tensor, or shape ``(2N,)`` with ``reduction="none"``.

    Raises:
        ValueError: if ``temperature <= 0``, the shapes differ, ``N < 2``, ``reduction`` is unknown,
            ``similarity`` is not a similarity, or ``impl`` is unknown or ``"tiled"`` with
            ``reduction="none"`` or a similarity that is not bilinear.

    Example:
        >>> z = torch.ones(3, 8)
        >>> round(float(nt_xent(z, z)), 4)   # all equal: log(2N - 1) = log 5
        1.6094
    """
    check_choice("impl", impl, _IMPLS)
    check_reduction(reduction)
    temperature = check_temperature(temperature)
    sim = resolve_similarity(similarity)
    check_pair(z1, z2, min_batch=2)
    z1, z2 = _unit(z1, normalize), _unit(z2, normalize)
    n = z1.shape[0]
    if _tiled(impl, 2 * n, reduction, sim):
        from contrastlab.objectives._tiled import tiled_nt_xent

        loss = tiled_nt_xent(z1, z2, temperature=temperature, similarity=sim)
        return loss if reduction == "mean" else loss * (2 * n)
    u = torch.cat([z1, z2], dim=0)
    logits = sim.matrix(u, u) / temperature
    self_mask = torch.eye(2 * n, dtype=torch.bool, device=u.device)
    logits = logits.masked_fill(self_mask, float("-inf"))
    idx = torch.arange(n, device=u.device)
    target = torch.cat([idx + n, idx])
    return F.cross_entropy(logits, target, reduction=reduction)


class InfoNCE(nn.Module):
    r"""Module form of :func:`info_nce`; options are fixed at construction.

    ``forward(z1, z2, negatives=None, temperature=None, similarity=None)``: ``negatives`` as in
    :func:`info_nce` (e.g. from a :class:`~contrastlab.objectives.queue.NegativeQueue`); ``temperature``
    overrides the stored one for this call, which is how a model's
    :class:`~contrastlab.objectives.temperature.LearnableTemperature` is used, and ``similarity`` the stored
    similarity (a model's learned coordination function).

    References:
        van den Oord et al., arXiv:1807.03748 (2018); Radford et al. (CLIP), ICML 2021.

    Args:
        temperature: :math:`\tau > 0`, a float or a 0-dim tensor.
        symmetric: CLIP's two-way loss, the mean of the two directions.
        normalize: cosine similarity.
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` (per anchor, ``(N,)``).
        impl: ``"auto"``, ``"naive"`` or ``"tiled"``.
        similarity: the coordination function (``None``: dot products after ``normalize``; a name such
            as ``"rbf"``, a mapping ``{name: rbf, sigma: 0.5}``, or a callable), see :func:`info_nce`.

    Raises:
        ValueError: on a bad option (named in the message).

    Example:
        >>> loss = InfoNCE(temperature=0.1, symmetric=True)(torch.randn(8, 16), torch.randn(8, 16))
        >>> loss.shape
        torch.Size([])
    """

    def __init__(
        self,
        *,
        temperature: float | Tensor = 0.1,
        symmetric: bool = False,
        normalize: bool = True,
        reduction: str = "mean",
        impl: str = "auto",
        similarity: SimilaritySpec | None = None,
    ) -> None:
        super().__init__()
        self.temperature = check_temperature(temperature)
        self.symmetric = bool(symmetric)
        self.normalize = bool(normalize)
        self.reduction = check_reduction(reduction)
        self.impl = check_choice("impl", impl, _IMPLS)
        self.similarity = parse_similarity(similarity)

    def forward(
        self,
        z1: Tensor,
        z2: Tensor,
        negatives: Tensor | None = None,
        temperature: float | Tensor | None = None,
        similarity: SimilaritySpec | None = None,
    ) -> Tensor:
        return info_nce(
            z1,
            z2,
            temperature=self.temperature if temperature is None else temperature,
            negatives=negatives,
            symmetric=self.symmetric,
            normalize=self.normalize,
            reduction=self.reduction,
            impl=self.impl,
            similarity=self.similarity if similarity is None else similarity,
        )

    def extra_repr(self) -> str:
        return (
            f"temperature={self.temperature}, symmetric={self.symmetric}, normalize={self.normalize}, "
            f"reduction={self.reduction!r}, impl={self.impl!r}{_repr_suffix(self.similarity)}"
        )


class NTXent(nn.Module):
    r"""Module form of :func:`nt_xent` (SimCLR); ``forward(z1, z2, temperature=None, similarity=None)``.

    References:
        Chen et al. (SimCLR), ICML 2020, arXiv:2002.05709.

    Args:
        temperature: :math:`\tau > 0`, a float or a 0-dim tensor.
        normalize: cosine similarity.
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` (per anchor, ``(2N,)``).
        impl: ``"auto"``, ``"naive"`` or ``"tiled"``.
        similarity: the coordination function (``None``: dot products after ``normalize``), see
            :func:`info_nce`.

    Raises:
        ValueError: on a bad option (named in the message).

    Example:
        >>> NTXent(temperature=0.5)(torch.randn(8, 16), torch.randn(8, 16)).shape
        torch.Size([])
    """

    def __init__(
        self,
        *,
        temperature: float | Tensor = 0.5,
        normalize: bool = True,
        reduction: str = "mean",
        impl: str = "auto",
        similarity: SimilaritySpec | None = None,
    ) -> None:
        super().__init__()
        self.temperature = check_temperature(temperature)
        self.normalize = bool(normalize)
        self.reduction = check_reduction(reduction)
        self.impl = check_choice("impl", impl, _IMPLS)
        self.similarity = parse_similarity(similarity)

    def forward(
        self,
        z1: Tensor,
        z2: Tensor,
        temperature: float | Tensor | None = None,
        similarity: SimilaritySpec | None = None,
    ) -> Tensor:
        return nt_xent(
            z1,
            z2,
            temperature=self.temperature if temperature is None else temperature,
            normalize=self.normalize,
            reduction=self.reduction,
            impl=self.impl,
            similarity=self.similarity if similarity is None else similarity,
        )

    def extra_repr(self) -> str:
        return (
            f"temperature={self.temperature}, normalize={self.normalize}, reduction={self.reduction!r}, "
            f"impl={self.impl!r}{_repr_suffix(self.similarity)}"
        )


def _clip(
    *,
    temperature: float = 0.07,
    normalize: bool = True,
    impl: str = "auto",
    similarity: SimilaritySpec | None = None,
) -> InfoNCE:
    """CLIP: the symmetric InfoNCE (its fixed default is CLIP's initial temperature, 0.07)."""
    return InfoNCE(temperature=temperature, symmetric=True, normalize=normalize, impl=impl, similarity=similarity)


SPECS: list[ObjectiveSpec] = [
    ObjectiveSpec(
        name="info_nce",
        factory=InfoNCE,
        kind="pairwise",
        formula="-mean_i log( exp(s_ii/t) / sum_j exp(s_ij/t) ),  s_ij = cos(z1_i, z2_j) or options.similarity",
        reference="van den Oord et al. 2018, arXiv:1807.03748; Sohn 2016 (N-pair), NeurIPS",
    ),
    ObjectiveSpec(
        name="clip",
        factory=_clip,
        kind="pairwise",
        formula="( info_nce(z1 -> z2) + info_nce(z2 -> z1) ) / 2,  s = cos or options.similarity (e.g. rbf)",
        reference="Radford et al. 2021 (CLIP), ICML, arXiv:2103.00020",
    ),
    ObjectiveSpec(
        name="nt_xent",
        factory=NTXent,
        kind="pairwise",
        formula=(
            "-mean_k log( exp(s(u_k, u_p(k))/t) / sum_{l!=k} exp(s(u_k, u_l)/t) ),  u = [z1; z2], "
            "s = cos or options.similarity"
        ),
        reference="Chen et al. 2020 (SimCLR), ICML, arXiv:2002.05709",
    ),
]
