r"""Multi-crop views (SwAV): a few large *global* crops and several small, low-resolution *local* crops.

Every crop is an independent SimCLR augmentation (:class:`~contrastlab.views.simclr.SimCLRAugment`)
of the same image; global and local crops differ only in the crop's area fraction and output size.
The objective compares each global crop with every other view, so the local crops add positives
("local-to-global" correspondences) at a fraction of a global crop's cost.

SwAV's ImageNet recipe is 2 crops of :math:`224^2` with area fraction :math:`s \in [0.14, 1]` and
6 crops of :math:`96^2` with :math:`s \in [0.05, 0.14]`; DINO uses 8-10 local crops and
:math:`[0.4, 1]` / :math:`[0.05, 0.4]`. For the small images here the defaults keep SwAV's scale
ranges, make the global crops the data set's own size and the local crops half of it (32 -> 16;
SwAV's 96 / 224 is 0.43), and take 4 local crops.

References:
    Caron, Misra, Mairal, Goyal, Bojanowski & Joulin, "Unsupervised Learning of Visual Features by
    Contrasting Cluster Assignments", NeurIPS 2020 (SwAV; multi-crop, Section 3.2).
    Caron, Touvron, Misra, Jégou, Mairal, Bojanowski & Joulin, "Emerging Properties in
    Self-Supervised Vision Transformers", ICCV 2021 (DINO; local-to-global crops).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from contrastlab.data.base import Batch, Dataset
from contrastlab.views._common import ViewsBase, check_count, check_range, require_modality
from contrastlab.views.simclr import SimCLRAugment, resize

#: Largest crop side in pixels (a guard against a typo such as 2240 for 224).
MAX_SIZE = 1024
#: Largest number of global or of local crops.
MAX_CROPS = 16


def _check_size(name: str, value: object) -> tuple[int, int]:
    """An int side or an ``(h, w)`` pair as ``(h, w)``, each side in [4, MAX_SIZE]."""
    pair = (value, value) if isinstance(value, int) and not isinstance(value, bool) else value
    if (not isinstance(pair, (list, tuple)) or len(pair) != 2
            or not all(isinstance(s, int) and not isinstance(s, bool) and 4 <= s <= MAX_SIZE for s in pair)):
        raise ValueError(f"{name} must be an int or (height, width) with each side in [4, {MAX_SIZE}] pixels, "
                         f"got {value!r}")
    return int(pair[0]), int(pair[1])


def _check_crops(name: str, value: object, minimum: int) -> int:
    check_count(name, value, minimum)
    if value > MAX_CROPS:
        raise ValueError(f"{name} must be an int in [{minimum}, {MAX_CROPS}], got {value!r}")
    return value


def clean_resize(images: Tensor, size: tuple[int, int]) -> Tensor:
    """The whole image at ``size``: area averaging when it shrinks (no aliasing), else bilinear."""
    h, w = images.shape[-2:]
    if size[0] <= h and size[1] <= w and (h, w) != tuple(size):
        return F.interpolate(images, size=size, mode="area")
    return resize(images, size)


class MultiCropViews(ViewsBase):
    r"""``n_global`` global and ``n_local`` local random crops of each image.

    Views are named ``global1, global2, ..., local1, ..., localk`` in that order and all belong to
    one modality (one shared image tower). :attr:`global_views` names the global views: objectives
    are applied to (global view, other view) pairs, never to two local views.

    In training each crop is a random resized crop with the view's own area range and output size,
    followed by the same flip, colour jitter, grey and blur as SimCLR. The global crops are made one
    call each; the local crops of a batch are made in one batched call (``n_local * N`` rows, one
    random jitter order for all of them). Evaluation views are the clean image resized to each
    view's size (area averaging when shrinking, bilinear otherwise).

    Args:
        dataset: The data set (must have an image modality, per-item shape (C, H, W)).
        global_size: Side (int) or ``(h, w)`` of the global crops, in [4, 1024]; default the image size.
        local_size: Side (int) or ``(h, w)`` of the local crops, in [4, 1024] and no larger than
            ``global_size`` on either side; default half of ``global_size`` (at least 4).
        n_global: Number of global crops, in [1, 16] (2 is usual).
        n_local: Number of local crops, in [0, 16].
        global_scale: Range of a global crop's area fraction, within (0, 1].
        local_scale: Range of a local crop's area fraction, within (0, 1].
        modality: The image modality to crop.
        **options: The other :class:`~contrastlab.views.simclr.SimCLRAugment` options (crop_ratio,
            flip_p, jitter_p, brightness, contrast, saturation, hue, gray_p, blur_p, blur_sigma,
            blur_kernel), shared by all crops.

    Raises:
        ValueError: For a data set without the image modality (naming the data set) or a bad option
            (naming it and its value).

    Example:
        >>> from contrastlab.data import build_dataset
        >>> ds = build_dataset("shapes", n_items=8)
        >>> views = MultiCropViews(ds, n_local=2)
        >>> out = views(ds.get(torch.arange(4)), torch.Generator().manual_seed(0))
        >>> views.global_views
        ('global1', 'global2')
        >>> {k: tuple(v.shape) for k, v in out.items()}  # doctest: +NORMALIZE_WHITESPACE
        {'global1': (4, 3, 32, 32), 'global2': (4, 3, 32, 32),
         'local1': (4, 3, 16, 16), 'local2': (4, 3, 16, 16)}
    """

    def __init__(self, dataset: Dataset, *, global_size: int | Sequence[int] | None = None,
                 local_size: int | Sequence[int] | None = None, n_global: int = 2, n_local: int = 4,
                 global_scale: Sequence[float] = (0.14, 1.0), local_scale: Sequence[float] = (0.05, 0.14),
                 modality: str = "image", **options):
        for key, instead in (("size", "global_size and local_size"), ("crop_scale", "global_scale and local_scale")):
            if key in options:
                raise ValueError(f"multicrop views take {instead}, not {key} (got {key}={options[key]!r})")
        shape = require_modality(dataset, modality, ndim=3)
        if global_size is None:  # the images' own size
            global_hw = _check_size(f"global_size (default: the image size of data set {dataset.name!r})",
                                    tuple(shape[1:]))
        else:
            global_hw = _check_size("global_size", global_size)
        if local_size is None:
            local_hw = tuple(min(g, max(4, g // 2)) for g in global_hw)
        else:
            local_hw = _check_size("local_size", local_size)
            if local_hw[0] > global_hw[0] or local_hw[1] > global_hw[1]:
                raise ValueError(f"local_size must be no larger than global_size {global_hw}, got {local_size!r}")
        n_global = _check_crops("n_global", n_global, 1)
        n_local = _check_crops("n_local", n_local, 0)
        global_scale = check_range("global_scale", global_scale, low=0.0, high=1.0, positive=True)
        local_scale = check_range("local_scale", local_scale, low=0.0, high=1.0, positive=True)

        self.global_augment = SimCLRAugment(size=global_hw, crop_scale=global_scale, **options)
        self.local_augment = SimCLRAugment(size=local_hw, crop_scale=local_scale, **options)
        self.modality = modality
        self.global_views = tuple(f"global{i + 1}" for i in range(n_global))
        self.local_views = tuple(f"local{i + 1}" for i in range(n_local))
        self.view_names = self.global_views + self.local_views
        self.view_modalities = {v: modality for v in self.view_names}
        self.view_shapes = {**{v: (shape[0], *global_hw) for v in self.global_views},
                            **{v: (shape[0], *local_hw) for v in self.local_views}}
        self.view_sources = {v: modality for v in self.view_names}

    def __call__(self, batch: Batch, generator: torch.Generator) -> dict[str, Tensor]:
        images = batch.inputs[self.modality]
        out = {v: self.global_augment(images, generator) for v in self.global_views}
        if self.local_views:
            k, n = len(self.local_views), images.shape[0]
            # Copy j of the batch is rows j*N .. (j+1)*N - 1: row i of every local view is item i.
            crops = self.local_augment(images.repeat(k, 1, 1, 1), generator)
            out.update(zip(self.local_views, crops.unflatten(0, (k, n)).unbind(0)))
        return out

    def eval_views(self, batch: Batch) -> dict[str, Tensor]:
        images = batch.inputs[self.modality]
        full = clean_resize(images, self.global_augment.size)
        small = clean_resize(images, self.local_augment.size) if self.local_views else None
        return {v: full if v in self.global_views else small for v in self.view_names}
