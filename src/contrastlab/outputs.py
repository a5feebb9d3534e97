r"""The step contract: what the model hands an objective in one training step.

The model maps a batch of views to one :class:`Outputs`; an objective declares which of its fields it
reads (``ObjectiveSpec.reads``) and turns them into a 0-dim loss. A new method adds outputs (a
predictor, momentum targets, a learned logit bias), never a new branch in the training loop.

=================  =============================================================  =========================
field              what                                                           made when
=================  =============================================================  =========================
``embeddings``     view -> ``(N, D)`` head outputs in the model's output space    always
``predictions``    view -> ``(N, D)`` predictor outputs (BYOL, SimSiam, MoCo v3)  the model has a predictor
``targets``        view -> ``(N, D)`` momentum-target embeddings, no gradient     the model has targets
``temperature``    0-dim learned temperature :math:`\tau` (logit scale ``1/τ``)   learnable temperature
``logit_bias``     0-dim learned bias (SigLIP)                                    learnable bias
``negatives``      ``(K, D)`` keys of earlier batches (MoCo's queue)              the model has a queue
``reconstructions`` view -> ``(N, ...)`` decoded inputs                           the model has decoders
``clean``          view -> ``(N, ...)`` un-augmented inputs to reconstruct        reconstruction objectives
``labels``         ``(N,)`` class labels                                          the data has labels
``features``       view -> ``(N, F)`` backbone features (before the head), this   always (not for
                   process's rows only: for monitors such as the online probe     autoencoders)
``similarity``     the model's learned coordination function (``matrix(a, b)``,   ``model.coordination``
                   ``paired(a, b)``), handed to pairwise losses as ``similarity=``  is ``gated``
=================  =============================================================  =========================

Under data parallelism the training step gathers ``embeddings``, ``predictions``, ``targets``,
``labels`` and ``index`` from every process before the objective reads them, so negatives and batch
statistics span the global batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from itertools import combinations
from typing import Any

from torch import Tensor

#: Every field an objective may declare that it reads.
FIELDS: tuple[str, ...] = (
    "embeddings", "predictions", "targets", "temperature", "logit_bias", "negatives",
    "reconstructions", "clean", "labels",
)  # fmt: skip


@dataclass
class Outputs:
    """One step's outputs (see the module docstring for every field).

    ``view_names`` are in order (the first is CMC's core view); ``global_views`` are the views that
    anchor pairs (multi-crop's global crops; by default every view); ``modalities`` maps a view to its
    modality.
    """

    embeddings: dict[str, Tensor]
    view_names: tuple[str, ...]
    modalities: dict[str, str]
    global_views: tuple[str, ...] = ()
    predictions: dict[str, Tensor] = field(default_factory=dict)
    targets: dict[str, Tensor] = field(default_factory=dict)
    temperature: Tensor | None = None
    logit_bias: Tensor | None = None
    negatives: Tensor | None = None
    reconstructions: dict[str, Tensor] = field(default_factory=dict)
    clean: dict[str, Tensor] = field(default_factory=dict)
    labels: Tensor | None = None
    index: Tensor | None = None
    features: dict[str, Tensor] = field(default_factory=dict)
    similarity: Any = None

    def __post_init__(self) -> None:
        if not self.global_views:
            self.global_views = tuple(self.view_names)

    def pairs(self) -> list[tuple[str, str]]:
        r"""The view pairs a pairwise objective is averaged over.

        Two views give one pair. With multi-crop (global views a subset of the views), every pair of a
        global view with another view, each unordered pair once:
        :math:`\{(g, v) : g \in G,\ v \ne g\}` (Caron et al., SwAV, NeurIPS 2020).

        Example:
            >>> import torch
            >>> z = {v: torch.zeros(1, 2) for v in ("g1", "g2", "l1")}
            >>> Outputs(z, ("g1", "g2", "l1"), {}, global_views=("g1", "g2")).pairs()
            [('g1', 'g2'), ('g1', 'l1'), ('g2', 'l1')]
        """
        views, anchors = self.view_names, set(self.global_views)
        return [(a, b) for a, b in combinations(views, 2) if a in anchors or b in anchors]

    def ordered_pairs(self) -> list[tuple[str, str]]:
        r"""``(source, global)`` pairs for predict-the-target methods: every view predicts every *other*
        global view's target, :math:`\{(v, g) : g \in G,\ v \ne g\}` (BYOL, SimSiam, DINO's multi-crop)."""
        return [(v, g) for g in self.global_views for v in self.view_names if v != g]

    def replace(self, **changes) -> Outputs:
        """A copy with some fields replaced."""
        return replace(self, **changes)
