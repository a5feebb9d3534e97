r"""CMC's multi-view objectives: a pairwise objective combined over M >= 2 views (core view, full graph).

Here ``reduction`` reduces over the *pairs of views* (``"sum"``, CMC's, or ``"mean"``), not over samples;
the per-sample reduction is the pairwise loss's own option (e.g. ``InfoNCE(reduction=...)``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from functools import partial

import torch
from torch import Tensor, nn

from contrastlab.objectives._checks import check_choice, check_views
from contrastlab.objectives._spec import ObjectiveSpec
from contrastlab.objectives.similarity import SimilaritySpec

__all__ = ["MODES", "MultiViewObjective", "core_view", "full_graph", "SPECS"]

MODES = ("core_view", "full_graph")
_REDUCTIONS = ("sum", "mean")

Pairwise = Callable[[Tensor, Tensor], Tensor]


def _reduce(losses: list[Tensor], reduction: str) -> Tensor:
    stacked = torch.stack(losses)
    return stacked.sum() if reduction == "sum" else stacked.mean()


def core_view(views: Sequence[Tensor], pairwise: Pairwise, *, reduction: str = "sum") -> Tensor:
    r"""Core view: view 1 is contrasted with every other view.

    .. math::
        \mathcal{L}_C = \sum_{j=2}^{M} \mathcal{L}(V_1, V_j)

    (the CMC slides' equation (9)); ``reduction="mean"`` divides by the :math:`M-1` pairs.

    References:
        Tian, Krishnan, Isola, "Contrastive Multiview Coding", ECCV 2020, arXiv:1906.05849, section 3.3.

    Args:
        views: :math:`M \ge 2` embeddings, each ``(N, D)``; ``views[0]`` is the core view.
        pairwise: any ``pairwise(z_a, z_b) -> 0-dim tensor`` (e.g. a symmetric InfoNCE for CMC's two-way
            :math:`\mathcal{L}(V_1, V_j)`).
        reduction: ``"sum"`` (CMC) or ``"mean"`` over the pairs.

    Returns:
        A 0-dim tensor.

    Raises:
        ValueError: with fewer than 2 views, views of different shapes, or an unknown ``reduction``.

    Example:
        >>> from contrastlab.objectives.info_nce import info_nce
        >>> views = [torch.randn(8, 16) for _ in range(3)]
        >>> core_view(views, lambda a, b: info_nce(a, b, symmetric=True)).shape
        torch.Size([])
    """
    check_choice("reduction", reduction, _REDUCTIONS)
    check_views(views)
    return _reduce([pairwise(views[0], views[j]) for j in range(1, len(views))], reduction)


def full_graph(views: Sequence[Tensor], pairwise: Pairwise, *, reduction: str = "sum") -> Tensor:
    r"""Full graph: every pair of views is contrasted.

    .. math::
        \mathcal{L}_F = \sum_{1 \le i < j \le M} \mathcal{L}(V_i, V_j)

    (the CMC slides' equation (10)); ``reduction="mean"`` divides by the :math:`M(M-1)/2` pairs.

    References:
        Tian, Krishnan, Isola, "Contrastive Multiview Coding", ECCV 2020, arXiv:1906.05849, section 3.3.

    Args:
        views: :math:`M \ge 2` embeddings, each ``(N, D)``.
        pairwise: any ``pairwise(z_a, z_b) -> 0-dim tensor``, called as ``pairwise(views[i], views[j])``
            with ``i < j``.
        reduction: ``"sum"`` (CMC) or ``"mean"`` over the pairs.

    Returns:
        A 0-dim tensor.

    Raises:
        ValueError: with fewer than 2 views, views of different shapes, or an unknown ``reduction``.

    Example:
        >>> views = [torch.randn(8, 16) for _ in range(4)]
        >>> full_graph(views, lambda a, b: (a - b).square().mean()).shape
        torch.Size([])
    """
    check_choice("reduction", reduction, _REDUCTIONS)
    check_views(views)
    m = len(views)
    return _reduce([pairwise(views[i], views[j]) for i in range(m) for j in range(i + 1, m)], reduction)


class MultiViewObjective(nn.Module):
    r"""A pairwise objective combined over views by :func:`core_view` or :func:`full_graph`.

    ``forward(views, temperature=None, similarity=None)`` takes a sequence of :math:`M \ge 2` embeddings
    ``(N, D)`` (or a mapping from view name to embeddings, in its insertion order; the first is the core
    view); a ``temperature`` (e.g. a model's learnable one) and a ``similarity`` (a learned coordination
    function) are passed on to every pairwise loss. A fixed similarity is a pairwise option:
    ``MultiViewObjective("clip", similarity={"name": "rbf", "sigma": 0.5})``. Pairwise losses are
    summed over the pairs of views, as in CMC, unless ``reduction="mean"``. The registry entries
    ``cmc_core_view`` / ``cmc_full_graph`` default to ``pairwise="clip"``: CMC's :math:`\mathcal{L}(V_i, V_j)` is two-way (the sum of both directions, the
    slides' eq. (8)), and CLIP's loss is its mean, so they differ by a constant factor 2.

    References:
        Tian, Krishnan, Isola, "Contrastive Multiview Coding", ECCV 2020, arXiv:1906.05849.

    Args:
        pairwise: a registry name of a pairwise objective (built with ``pairwise_options`` through
            :func:`contrastlab.objectives.registry.build_objective`), or any callable ``(z_a, z_b) -> loss``.
        mode: ``"core_view"`` or ``"full_graph"``.
        reduction: ``"sum"`` or ``"mean"`` over pairs of views (not over samples).
        **pairwise_options: options of the named pairwise objective (``temperature``, ``similarity``, …).

    Raises:
        ValueError: if ``mode`` or ``reduction`` is unknown, the name is not a pairwise objective, or
            options are given with a callable; in ``forward``, a ``similarity`` for a pairwise loss that
            takes none.

    Example:
        >>> from contrastlab.objectives.info_nce import InfoNCE
        >>> objective = MultiViewObjective(InfoNCE(symmetric=True), mode="full_graph")
        >>> objective([torch.randn(8, 16) for _ in range(3)]).shape
        torch.Size([])
    """

    def __init__(
        self,
        pairwise: str | Pairwise = "info_nce",
        *,
        mode: str = "core_view",
        reduction: str = "sum",
        **pairwise_options,
    ) -> None:
        super().__init__()
        self.mode = check_choice("mode", mode, MODES)
        self.reduction = check_choice("reduction", reduction, _REDUCTIONS)
        if isinstance(pairwise, str):
            from contrastlab.objectives.registry import build_objective, get_objective

            kind = get_objective(pairwise).kind
            if kind not in ("pairwise", "cca"):
                raise ValueError(f"pairwise must name a pairwise objective, got {pairwise!r} of kind {kind!r}")
            self.pairwise_name = pairwise
            self.pairwise = build_objective(pairwise, **pairwise_options)
        elif callable(pairwise):
            if pairwise_options:
                raise ValueError(
                    f"options are for a pairwise objective given by name; got a callable and {sorted(pairwise_options)}"
                )
            self.pairwise_name = getattr(pairwise, "__name__", type(pairwise).__name__)
            self.pairwise = pairwise
        else:
            raise ValueError(f"pairwise must be an objective name or a callable, got {pairwise!r}")

    def forward(
        self,
        views: Sequence[Tensor] | Mapping[str, Tensor],
        temperature: float | Tensor | None = None,
        similarity: SimilaritySpec | None = None,
    ) -> Tensor:
        if isinstance(views, Mapping):
            views = list(views.values())
        combine = core_view if self.mode == "core_view" else full_graph
        extra = {}
        if temperature is not None:
            extra["temperature"] = temperature
        if similarity is not None:
            from contrastlab.encoders.build import accepts

            if not accepts(getattr(self.pairwise, "forward", self.pairwise), "similarity"):
                raise ValueError(f"similarity: the pairwise loss {self.pairwise_name!r} takes no similarity")
            extra["similarity"] = similarity
        pairwise = partial(self.pairwise, **extra) if extra else self.pairwise
        return combine(views, pairwise, reduction=self.reduction)

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}, reduction={self.reduction!r}"


def _cmc_core_view(pairwise: str = "clip", *, reduction: str = "sum", **pairwise_options) -> MultiViewObjective:
    """CMC core view; the default pairwise loss is the two-way InfoNCE, as CMC's L(V_1, V_j)."""
    return MultiViewObjective(pairwise, mode="core_view", reduction=reduction, **pairwise_options)


def _cmc_full_graph(pairwise: str = "clip", *, reduction: str = "sum", **pairwise_options) -> MultiViewObjective:
    """CMC full graph; the default pairwise loss is the two-way InfoNCE."""
    return MultiViewObjective(pairwise, mode="full_graph", reduction=reduction, **pairwise_options)


SPECS: list[ObjectiveSpec] = [
    ObjectiveSpec(
        name="cmc_core_view",
        factory=_cmc_core_view,
        kind="multiview",
        formula="sum_{j=2..M} L(V_1, V_j),  L a pairwise objective (default clip)",
        reference="Tian et al. 2020 (CMC), ECCV, arXiv:1906.05849",
    ),
    ObjectiveSpec(
        name="cmc_full_graph",
        factory=_cmc_full_graph,
        kind="multiview",
        formula="sum_{1<=i<j<=M} L(V_i, V_j),  L a pairwise objective (default clip)",
        reference="Tian et al. 2020 (CMC), ECCV, arXiv:1906.05849",
    ),
]
