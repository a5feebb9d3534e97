r"""CMC's colour-channel views: one RGB image split into channel groups, each read by its own tower.

Channel groups (scaled to about unit range):

=========  ==========================================================  =========
group      values                                                      channels
=========  ==========================================================  =========
``L``      Lab lightness / 100, in [0, 1]                              1
``ab``     Lab a, b / 100, about [-1, 1]                               2
``Y``      YCbCr luma, in [0, 1]                                       1
``CbCr``   YCbCr chroma, in [0, 1]                                     2
``R``      red; ``G`` green; ``B`` blue, in [0, 1]                     1 each
``edges``  Sobel gradient magnitude of L / 100 (a "depth-free" extra)  1
=========  ==========================================================  =========

Presets (``space``): ``"lab"`` = (L, ab) and ``"ycbcr"`` = (Y, CbCr) as in CMC; ``"lab+edges"`` =
(L, ab, edges) and ``"lab+rgb"`` = (L, ab, R, G, B) give the 3+ views of CMC's multi-view recipe
(core view = the first). Any list of groups can be given as ``views``. During training one random
resized crop and flip is shared by all views of an item (they stay views of one scene).

References:
    Tian, Krishnan & Isola, "Contrastive Multiview Coding", ECCV 2020.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from contrastlab.data.base import Batch, Dataset
from contrastlab.views import augment as A
from contrastlab.views._common import ViewsBase, check_names, check_probability, check_range, require_modality
from contrastlab.views.colour import rgb_to_lab, rgb_to_ycbcr, sobel_magnitude

_LAB = lambda x: rgb_to_lab(x) / 100.0  # noqa: E731
_YCC = rgb_to_ycbcr
_RGB = lambda x: x  # noqa: E731

#: Group name -> (channel map of the RGB image, the channels it keeps).
GROUPS: dict[str, tuple[Callable[[Tensor], Tensor], slice]] = {
    "L": (_LAB, slice(0, 1)),
    "ab": (_LAB, slice(1, 3)),
    "Y": (_YCC, slice(0, 1)),
    "CbCr": (_YCC, slice(1, 3)),
    "R": (_RGB, slice(0, 1)),
    "G": (_RGB, slice(1, 2)),
    "B": (_RGB, slice(2, 3)),
    "edges": (lambda x: sobel_magnitude(_LAB(x)[:, 0:1]), slice(0, 1)),
}

SPACES: dict[str, tuple[str, ...]] = {
    "lab": ("L", "ab"),
    "ycbcr": ("Y", "CbCr"),
    "lab+edges": ("L", "ab", "edges"),
    "lab+rgb": ("L", "ab", "R", "G", "B"),
}


def split_channels(images: Tensor, groups: Sequence[str]) -> dict[str, Tensor]:
    """Channel groups of RGB images (N, 3, H, W): group -> (N, c, H, W); each colour map runs once.

    Example:
        >>> out = split_channels(torch.ones(2, 3, 4, 4), ["L", "ab"])
        >>> out["L"].shape, out["ab"].shape, round(float(out["L"].mean()), 4)
        (torch.Size([2, 1, 4, 4]), torch.Size([2, 2, 4, 4]), 1.0)
    """
    cache: dict[int, Tensor] = {}
    out = {}
    for g in groups:
        if g not in GROUPS:
            raise ValueError(f"unknown channel group {g!r}; known: {', '.join(GROUPS)}")
        fn, keep = GROUPS[g]
        if id(fn) not in cache:
            cache[id(fn)] = fn(images)
        out[g] = cache[id(fn)][:, keep]
    return out


class ColourSplitViews(ViewsBase):
    r"""Views ``{group: (N, c, H, W)}`` of RGB images split into channel groups (one tower per group).

    Args:
        dataset: A data set with 3-channel images.
        space: A preset of :data:`SPACES` (ignored when ``views`` is given).
        views: Channel groups of :data:`GROUPS`, at least two, in order (the first is the core view).
        augment: Share one random resized crop and horizontal flip between the views of an item.
        crop_scale: Range of the crop's area fraction.
        flip_p: Probability of a flip.

    Raises:
        ValueError: For non-RGB images, an unknown space or group, fewer than two views or a bad option.

    Example:
        >>> from contrastlab.data import build_dataset
        >>> ds = build_dataset("shapes", n_items=8)
        >>> views = ColourSplitViews(ds, space="lab+edges")
        >>> out = views(ds.get(torch.arange(4)), torch.Generator().manual_seed(0))
        >>> {k: tuple(v.shape) for k, v in out.items()}
        {'L': (4, 1, 32, 32), 'ab': (4, 2, 32, 32), 'edges': (4, 1, 32, 32)}
    """

    def __init__(self, dataset: Dataset, *, space: str = "lab", views: Sequence[str] | None = None,
                 augment: bool = True, crop_scale: Sequence[float] = (0.2, 1.0), flip_p: float = 0.5):
        shape = require_modality(dataset, "image", ndim=3)
        if shape[0] != 3:
            raise ValueError(f"colour_split views need RGB images, but {dataset.name!r} images have "
                             f"{shape[0]} channel(s)")
        if views is None:
            if not isinstance(space, str) or space not in SPACES:
                raise ValueError(f"space must be one of {', '.join(SPACES)}, got {space!r}")
            views = SPACES[space]
        views = check_names("views", views)
        unknown = [g for g in views if g not in GROUPS]
        if unknown:
            raise ValueError(f"unknown channel group {unknown[0]!r}; known: {', '.join(GROUPS)}")
        if len(views) < 2 or len(set(views)) != len(views):
            raise ValueError(f"views must be at least two distinct channel groups, got {list(views)}")
        self.augment = bool(augment)
        self.crop_scale = check_range("crop_scale", crop_scale, low=0.0, high=1.0, positive=True)
        self.flip_p = check_probability("flip_p", flip_p)
        self.view_names = views
        self.view_modalities = {v: v for v in views}
        self.view_shapes = {v: (GROUPS[v][1].stop - GROUPS[v][1].start, *shape[1:]) for v in views}
        self.view_sources = {v: "image" for v in views}

    def __call__(self, batch: Batch, generator: torch.Generator) -> dict[str, Tensor]:
        images = batch.inputs["image"]
        if self.augment:
            n, _, h, w = images.shape
            boxes = A.sample_crop_boxes(n, h, w, scale=self.crop_scale, ratio=(3 / 4, 4 / 3), generator=generator)
            flip = torch.rand(n, generator=generator) < self.flip_p
            boxes = torch.where(flip[:, None], boxes[:, [2, 1, 0, 3]], boxes)
            images = A.crop_resize(images, boxes.to(device=images.device, dtype=images.dtype), (h, w))
        return split_channels(images, self.view_names)

    def eval_views(self, batch: Batch) -> dict[str, Tensor]:
        return split_channels(batch.inputs["image"], self.view_names)
