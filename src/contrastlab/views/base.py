"""The contract between data and the model: a view generator.

A view generator turns a :class:`~contrastlab.data.base.Batch` of items into a mapping from a view
name to a tensor, ``{"view1": x1, "view2": x2}``. Row ``i`` of every view comes from item ``i``:
that is what makes a positive pair. Randomness comes only from the ``torch.Generator`` passed in,
so a run is reproducible from its seed and resumable from the generator's state.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
from torch import Tensor

from contrastlab.data.base import Batch


@runtime_checkable
class ViewGenerator(Protocol):
    #: The names of the views it makes, in order (the first is CMC's core view).
    view_names: tuple[str, ...]
    #: The modality each view belongs to (decides which encoder tower reads it).
    view_modalities: dict[str, str]

    def __call__(self, batch: Batch, generator: torch.Generator) -> dict[str, Tensor]:
        """Random views for training: ``{view name: (N, ...)}``, row i from item i."""
        ...

    def eval_views(self, batch: Batch) -> dict[str, Tensor]:
        """Deterministic views for evaluation (no augmentation): the same keys as ``__call__``.

        For augmentation views every view is the clean input; for channel splits (CMC) each view
        is its channel group; for modality pairs each view is its modality. Evaluation encodes
        these and concatenates the features of views read by *different* towers.
        """
        ...
