r"""Factor-resampling views for the Shapes world: a positive pair shares every factor but the resampled ones.

View 1 is the item as it is; every further view is the same item with the named factors drawn afresh
(:meth:`~contrastlab.data.shapes.ShapesDataset.resample`: categorical factors always change). What the
encoder must ignore is exactly what differs between the views, so after training it should be
invariant to those factors and sensitive to the rest. The homework's three augmentations are presets:

* ``"A"`` resamples the colour,
* ``"B"`` resamples the location (x and y),
* ``"C"`` resamples the shape and the location.

References:
    Tian, Sun, Poole, Krishnan, Schmid & Isola, "What Makes for Good Views for Contrastive
    Learning?", NeurIPS 2020 (views that share only chosen information).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from contrastlab.data.base import Batch
from contrastlab.views._common import MAX_VIEWS, ViewsBase, check_count, check_names

PRESETS: dict[str, tuple[str, ...]] = {"A": ("colour",), "B": ("location",), "C": ("shape", "location")}


class FactorResampleViews(ViewsBase):
    r"""Views that differ only in the resampled factors: ``view1`` (the item), ``view2``, ...

    Args:
        dataset: A Shapes data set (anything with ``resample(batch, factors, generator)``).
        resample: Factor names to resample (``"location"`` = x and y); or give ``preset``.
        preset: ``"A"`` (colour), ``"B"`` (location) or ``"C"`` (shape and location).
        n_views: Number of views, >= 2; views 2.. are independent resamples of view 1.

    Raises:
        ValueError: For a data set without factors, an unknown factor or preset, or both/neither of
            ``resample`` and ``preset``.

    Example:
        >>> from contrastlab.data import build_dataset
        >>> ds = build_dataset("shapes", n_items=8)
        >>> views = FactorResampleViews(ds, preset="A")
        >>> out = views(ds.get(torch.arange(4)), torch.Generator().manual_seed(0))
        >>> sorted(out), views.factors
        (['view1', 'view2'], ('colour',))
    """

    def __init__(self, dataset, *, resample: Sequence[str] | None = None, preset: str | None = None,
                 n_views: int = 2):
        if not callable(getattr(dataset, "resample", None)) or not getattr(dataset, "factor_names", ()):
            raise ValueError(f"factor_resample views need a data set with factors (shapes), got {dataset.name!r}")
        if (resample is None) == (preset is None):
            raise ValueError("give exactly one of resample=[factor names] or preset='A'|'B'|'C'")
        if preset is not None and (not isinstance(preset, str) or preset not in PRESETS):
            raise ValueError(f"preset must be one of {', '.join(PRESETS)}, got {preset!r}")
        if preset is not None:
            names = PRESETS[preset]
        else:
            names = check_names("resample", resample)
        dataset.expand(names)  # validates the names against this data set
        check_count("n_views", n_views, 2, MAX_VIEWS)
        self.dataset, self.preset = dataset, preset
        #: The factor names (or groups) resampled between views.
        self.factors: tuple[str, ...] = tuple(names)
        shape = tuple(dataset.modalities["image"])
        self.view_names = tuple(f"view{i + 1}" for i in range(n_views))
        self.view_modalities = {v: "image" for v in self.view_names}
        self.view_shapes = {v: shape for v in self.view_names}
        self.view_sources = {v: "image" for v in self.view_names}

    def __call__(self, batch: Batch, generator: torch.Generator) -> dict[str, Tensor]:
        image = batch.inputs["image"]
        out = {self.view_names[0]: image}
        # The world renders on the CPU from the factors (which to_device leaves there); the new views follow the images.
        for v in self.view_names[1:]:
            out[v] = self.dataset.resample(batch, self.factors, generator).inputs["image"].to(image.device)
        return out

    def eval_views(self, batch: Batch) -> dict[str, Tensor]:
        return {v: batch.inputs["image"] for v in self.view_names}
