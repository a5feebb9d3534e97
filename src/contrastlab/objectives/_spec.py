"""How an objective describes itself to the registry, the trainer and ``contrastlab objectives``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal

from torch import nn

#: How the trainer calls an objective's module:
#:  - "pairwise":       loss(z1, z2)                           two views' embeddings (N, D) each
#:  - "multiview":      loss(views)                            a sequence of M >= 2 embeddings (N, D)
#:  - "supervised":     loss(z, labels)                        z (N, V, D) views stacked, labels (N,)
#:  - "reconstruction": loss(reconstructions, targets)         dicts modality -> tensor, same keys
#:  - "cca":            loss(z1, z2)                           like pairwise, but a correlation objective
ObjectiveKind = Literal["pairwise", "multiview", "supervised", "reconstruction", "cca"]


@dataclass(frozen=True)
class ObjectiveSpec:
    name: str  #: registry name, e.g. "info_nce"
    factory: Callable[..., nn.Module]  #: builds the module from keyword options
    kind: ObjectiveKind
    formula: str  #: one line, plain text, e.g. "-log exp(s_ii/t) / sum_j exp(s_ij/t)"
    reference: str  #: "Oord et al. 2018, arXiv:1807.03748"
    uses_negatives: bool = True  #: needs a batch of >= 2 items (in-batch negatives)
    min_modalities: int = 1  #: distinct modalities the views must cover (a multimodal autoencoder fuses >= 2)
