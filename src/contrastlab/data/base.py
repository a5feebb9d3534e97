"""What a data set hands to a view generator.

A :class:`Batch` is a batch of *items*: row ``i`` of every field belongs to item ``i``.

* ``inputs`` maps a modality name to a tensor (``{"image": (N, C, H, W)}``,
  ``{"image": ..., "audio": (N, F, T)}``, ``{"signal": (N, L)}``, ``{"text": (N, T) int64}``).
* ``labels`` are class labels ``(N,)`` int64 when the data set has them.
* ``factors`` map a generative factor name to its values ``(N,)`` (Shapes world only).
* ``lengths`` map a modality name to valid lengths ``(N,)`` for padded sequences.
* ``index`` are the item indices in the data set ``(N,)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor


@dataclass
class Batch:
    inputs: dict[str, Tensor]
    labels: Tensor | None = None
    factors: dict[str, Tensor] = field(default_factory=dict)
    lengths: dict[str, Tensor] = field(default_factory=dict)
    index: Tensor | None = None

    def __len__(self) -> int:
        return next(iter(self.inputs.values())).shape[0]

    def to(self, device: torch.device | str) -> "Batch":
        move = lambda d: {k: v.to(device) for k, v in d.items()}  # noqa: E731
        return Batch(
            inputs=move(self.inputs),
            labels=None if self.labels is None else self.labels.to(device),
            factors=move(self.factors),
            lengths=move(self.lengths),
            index=None if self.index is None else self.index.to(device),
        )


from typing import Protocol, runtime_checkable  # noqa: E402


@runtime_checkable
class Dataset(Protocol):
    """An indexable set of items, all in memory (these data sets are small), fetched in batches.

    ``modalities`` maps each modality name to the per-item shape (``{"image": (3, 32, 32)}``);
    ``num_classes`` is ``None`` when there are no labels; ``factor_names`` is empty except for
    synthetic data with generative factors.
    """

    name: str
    modalities: dict[str, tuple[int, ...]]
    num_classes: int | None
    factor_names: tuple[str, ...]

    def __len__(self) -> int: ...

    def get(self, index: Tensor) -> Batch:
        """The items at ``index`` (int64, shape (B,)) as one :class:`Batch`."""
        ...
