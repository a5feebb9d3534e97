"""How an objective describes itself: which step outputs it reads, how, and what it needs of the model.

The training step hands every objective one :class:`~contrastlab.outputs.Outputs`; a *reader* turns
it into the objective module's call. Plain losses (``loss(z1, z2)``, ``loss(views)``,
``loss(z, labels)``, ``loss(reconstructions, clean)``) get one of the four readers below; a method
objective (BYOL, SimSiam, MoCo, SigLIP) reads the outputs itself. The reader is chosen once, when the
spec is written — the training loop never asks what kind of objective it runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Callable, Literal

import torch
from torch import Tensor, nn

from contrastlab.outputs import FIELDS, Outputs

#: How an objective's module is called (shown by ``contrastlab objectives``):
#:  - "pairwise":       loss(z1, z2)                       two views' embeddings (N, D) each (multi-crop: averaged over pairs)
#:  - "cca":            loss(z1, z2)                       like pairwise, a correlation objective
#:  - "multiview":      loss(views)                        a sequence of M >= 2 embeddings (N, D)
#:  - "supervised":     loss(z, labels)                    z (N, V, D) views stacked, labels (N,)
#:  - "reconstruction": loss(reconstructions, clean)       dicts modality -> tensor, same keys
#:  - "method":         loss(outputs)                      reads the step's Outputs itself (predictor, targets, ...)
ObjectiveKind = Literal["pairwise", "multiview", "supervised", "reconstruction", "cca", "method"]


def _extras(out: Outputs) -> dict:
    """A learned temperature, queued negatives and a learned coordination function (the model's similarity),
    for plain losses that take them as keywords."""
    extra = {}
    if out.temperature is not None:
        extra["temperature"] = out.temperature
    if out.negatives is not None:
        extra["negatives"] = out.negatives
    if out.similarity is not None:
        extra["similarity"] = out.similarity
    return extra


def mean_of(losses: list[Tensor]) -> Tensor:
    """The mean of a list of 0-dim losses (the one loss itself when there is one: no extra op)."""
    return losses[0] if len(losses) == 1 else torch.stack(losses).mean()


def _pairs(loss: nn.Module, out: Outputs) -> Tensor:
    z, extra = out.embeddings, _extras(out)
    return mean_of([loss(z[a], z[b], **extra) for a, b in out.pairs()])


def _views(loss: nn.Module, out: Outputs) -> Tensor:
    return loss([out.embeddings[v] for v in out.view_names], **_extras(out))


def _labelled(loss: nn.Module, out: Outputs) -> Tensor:
    if out.labels is None:
        raise ValueError("a supervised objective needs labels, and this batch has none")
    z = torch.stack([out.embeddings[v] for v in out.view_names], dim=1)
    return loss(z, out.labels, **_extras(out))


def _reconstructions(loss: nn.Module, out: Outputs) -> Tensor:
    recons = {out.modalities[v]: x for v, x in out.reconstructions.items()}
    clean = {out.modalities[v]: out.clean[v].to(x.dtype) for v, x in out.reconstructions.items()}
    return loss(recons, clean)


def _method(loss: nn.Module, out: Outputs) -> Tensor:
    return loss(out)


@dataclass(frozen=True)
class Reader:
    """How a kind of objective reads the step's outputs.

    Attributes:
        call: ``(objective module, outputs) -> 0-dim loss``.
        reads: the output fields it always reads.
        min_views / max_views: how many views it takes (``max_views`` None: no limit; pairwise
            objectives take more than two only as multi-crop, anchored on global views).
    """

    call: Callable[[nn.Module, Outputs], Tensor]
    reads: frozenset[str]
    min_views: int = 2
    max_views: int | None = None


READERS: dict[str, Reader] = {
    "pairwise": Reader(_pairs, frozenset({"embeddings"}), 2, 2),
    "cca": Reader(_pairs, frozenset({"embeddings"}), 2, 2),
    "multiview": Reader(_views, frozenset({"embeddings"}), 2),
    "supervised": Reader(_labelled, frozenset({"embeddings", "labels"}), 1),
    "reconstruction": Reader(_reconstructions, frozenset({"reconstructions", "clean"}), 1),
    "method": Reader(_method, frozenset(), 2),
}


@dataclass(frozen=True)
class ObjectiveSpec:
    """An objective's entry in the registry.

    ``reads`` adds to what the kind's reader always reads (a method declares its outputs here, e.g.
    ``{"predictions", "targets"}``); ``model`` gives defaults for the model parts it needs, used
    where the config leaves them unset: ``momentum`` (target towers), ``predictor`` (True),
    ``queue_size``, ``learnable_temperature``, ``logit_bias`` and ``normalize`` (the output space).
    """

    name: str  #: registry name, e.g. "info_nce"
    factory: Callable[..., nn.Module]  #: builds the module from keyword options
    kind: ObjectiveKind
    formula: str  #: one line, plain text, e.g. "-log exp(s_ii/t) / sum_j exp(s_ij/t)"
    reference: str  #: "Oord et al. 2018, arXiv:1807.03748"
    uses_negatives: bool = True  #: needs a batch of >= 2 items (in-batch negatives)
    min_modalities: int = 1  #: distinct modalities the views must cover (a multimodal autoencoder fuses >= 2)
    reads: frozenset[str] = frozenset()  #: outputs read beyond the kind's own
    model: Mapping[str, Any] = field(default_factory=dict)  #: defaults for model parts it needs

    def __post_init__(self) -> None:
        if self.kind not in READERS:
            raise ValueError(f"objective {self.name!r}: kind must be one of {', '.join(map(repr, READERS))}, got {self.kind!r}")
        unknown = sorted(set(self.reads) - set(FIELDS))
        if unknown:
            raise ValueError(f"objective {self.name!r} reads unknown outputs {unknown}; outputs: {', '.join(FIELDS)}")

    @property
    def reader(self) -> Reader:
        return READERS[self.kind]

    @property
    def needs(self) -> frozenset[str]:
        """Every output field the objective reads."""
        return self.reader.reads | frozenset(self.reads)
