"""Reading users' image files into one float32 (N, C, H, W) tensor in [0, 1] (Pillow, bundled with matplotlib)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from contrastlab.errors import UserError

IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


#: The largest image side ``size=`` may ask for (larger would only exhaust memory).
MAX_SIDE = 4096


def check_image_options(channels: int, size) -> tuple[int, tuple[int, int] | None]:
    """Validate ``channels`` (1 or 3) and ``size`` (None, an int or (height, width) of ints in [1, 4096])."""
    if isinstance(channels, bool) or channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels!r}")
    if size is None:
        return channels, None
    hw = (size, size) if isinstance(size, int) else tuple(size) if isinstance(size, (list, tuple)) else ()
    if len(hw) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and 0 < v <= MAX_SIDE for v in hw):
        raise ValueError(f"size must be an int or (height, width) of ints in [1, {MAX_SIDE}], got {size!r}")
    return channels, hw


def read_image(path: Path, *, channels: int = 3, size: tuple[int, int] | None = None,
               where: str = "") -> np.ndarray:
    """One image as float32 (C, H, W) in [0, 1]; :class:`UserError` naming the file when unreadable."""
    from PIL import Image, UnidentifiedImageError

    prefix = f"{where}: " if where else ""
    if not path.is_file():
        raise UserError(f"{prefix}image file '{path}' not found")
    try:
        with Image.open(path) as img:
            img = img.convert("RGB" if channels == 3 else "L")
            if size is not None:
                img = img.resize((size[1], size[0]), Image.Resampling.BILINEAR)
            arr = np.asarray(img, dtype=np.float32) / 255.0
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise UserError(f"{prefix}cannot read image '{path}': {' '.join(str(err).split())}") from None
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)


def read_images(paths: Sequence[Path], *, channels: int = 3, size: tuple[int, int] | None = None,
                where: Sequence[str] | None = None) -> Tensor:
    """Images stacked to float32 (N, C, H, W); mixed sizes without ``size`` raise :class:`UserError`."""
    arrays, first = [], None
    for i, path in enumerate(paths):
        label = where[i] if where is not None else ""
        arr = read_image(path, channels=channels, size=size, where=label)
        if first is None:
            first = (path, arr.shape[1:])
        elif arr.shape[1:] != first[1]:
            prefix = f"{label}: " if label else ""
            raise UserError(f"{prefix}image '{path}' is {arr.shape[2]}x{arr.shape[1]} but '{first[0]}' is "
                            f"{first[1][1]}x{first[1][0]} (width x height); pass size=... to resize all images")
        arrays.append(arr)
    if not arrays:
        raise UserError("no images to read")
    return torch.from_numpy(np.stack(arrays))
