r"""Two patches of one image at a chosen spatial offset: the views of CMC's "mutual information vs
accuracy" experiment.

Patch 1 starts at a random :math:`(x, y)` and patch 2 at :math:`(x + d_x, y + d_y)`, where the offset
is :math:`(d, d)` (``direction="diagonal"``, as on the CMC slides), :math:`(d, 0)` or :math:`(0, d)`.
A larger :math:`d` leaves less shared content, so less mutual information between the views; the
experiment sweeps :math:`d` and reads off downstream accuracy.

References:
    Tian, Sun, Poole, Krishnan, Schmid & Isola, "What Makes for Good Views for Contrastive
    Learning?", NeurIPS 2020, Sec. 3 (patches at growing distance).
"""

from __future__ import annotations

import torch
from torch import Tensor

from contrastlab.data.base import Batch, Dataset
from contrastlab.views._common import MAX_SIDE, ViewsBase, check_count, require_modality

DIRECTIONS = {"diagonal": (1, 1), "horizontal": (1, 0), "vertical": (0, 1)}


def take_patches(images: Tensor, x: Tensor, y: Tensor, size: int) -> Tensor:
    """Square patches with top-left corners ``(x, y)`` (int64 (N,)), (N, C, H, W) -> (N, C, size, size).

    Example:
        >>> img = torch.arange(16.0).view(1, 1, 4, 4)
        >>> take_patches(img, torch.tensor([1]), torch.tensor([2]), 2)[0, 0].tolist()
        [[9.0, 10.0], [13.0, 14.0]]
    """
    n = images.shape[0]
    offsets = torch.arange(size, device=images.device)
    rows = (y.view(n, 1) + offsets).view(n, size, 1)
    cols = (x.view(n, 1) + offsets).view(n, 1, size)
    batch = torch.arange(n, device=images.device).view(n, 1, 1)
    return images.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2)


class PatchViews(ViewsBase):
    r"""Views ``patch1`` and ``patch2``: two ``patch_size`` patches of one image at offset ``offset``.

    Both are read by one image tower. Evaluation places the pair in the middle of the image.

    Args:
        dataset: A data set with images (N, C, H, W).
        patch_size: Side of the square patches (default half the shorter image side).
        offset: The distance d in pixels, >= 0, with ``patch_size + d`` no larger than the image.
        direction: ``"diagonal"`` (d, d), ``"horizontal"`` (d, 0) or ``"vertical"`` (0, d).

    Raises:
        ValueError: For a patch or offset that does not fit the image, or an unknown direction.

    Example:
        >>> from contrastlab.data import build_dataset
        >>> ds = build_dataset("shapes", n_items=8)
        >>> views = PatchViews(ds, patch_size=12, offset=8)
        >>> out = views(ds.get(torch.arange(4)), torch.Generator().manual_seed(0))
        >>> {k: tuple(v.shape) for k, v in out.items()}
        {'patch1': (4, 3, 12, 12), 'patch2': (4, 3, 12, 12)}
    """

    def __init__(self, dataset: Dataset, *, patch_size: int | None = None, offset: int = 0,
                 direction: str = "diagonal"):
        c, h, w = require_modality(dataset, "image", ndim=3)
        if not isinstance(direction, str) or direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {', '.join(DIRECTIONS)}, got {direction!r}")
        size = check_count("patch_size", min(h, w) // 2 if patch_size is None else patch_size, 1, MAX_SIDE)
        check_count("offset", offset, 0, MAX_SIDE)
        ux, uy = DIRECTIONS[direction]
        self.dx, self.dy = ux * offset, uy * offset
        if size + self.dx > w or size + self.dy > h:
            limit = min(h, w) if ux and uy else (w if ux else h)
            raise ValueError(f"patch_size {size} with offset {offset} ({direction}) does not fit "
                             f"{h}x{w} images; need patch_size + offset <= {limit}")
        self.patch_size, self.offset, self.direction = size, offset, direction
        self._h, self._w = h, w
        self.view_names = ("patch1", "patch2")
        self.view_modalities = {v: "image" for v in self.view_names}
        self.view_shapes = {v: (c, size, size) for v in self.view_names}
        self.view_sources = {v: "image" for v in self.view_names}

    def _pair(self, images: Tensor, x: Tensor, y: Tensor) -> dict[str, Tensor]:
        return {"patch1": take_patches(images, x, y, self.patch_size),
                "patch2": take_patches(images, x + self.dx, y + self.dy, self.patch_size)}

    def __call__(self, batch: Batch, generator: torch.Generator) -> dict[str, Tensor]:
        images = batch.inputs["image"]
        n = images.shape[0]
        x = torch.randint(0, self._w - self.patch_size - self.dx + 1, (n,), generator=generator)
        y = torch.randint(0, self._h - self.patch_size - self.dy + 1, (n,), generator=generator)
        return self._pair(images, x.to(images.device), y.to(images.device))

    def eval_views(self, batch: Batch) -> dict[str, Tensor]:
        images = batch.inputs["image"]
        n = images.shape[0]
        x = torch.full((n,), (self._w - self.patch_size - self.dx) // 2, dtype=torch.int64, device=images.device)
        y = torch.full((n,), (self._h - self.patch_size - self.dy) // 2, dtype=torch.int64, device=images.device)
        return self._pair(images, x, y)
