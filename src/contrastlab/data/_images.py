"""Reading users' image files into one float32 (N, C, H, W) tensor in [0, 1] (Pillow, bundled with matplotlib)."""

from __future__ import annotations

import re
import warnings
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
    """One image as float32 (C, H, W) in [0, 1]; :class:`UserError` naming the file when unreadable or larger
    than ``PIL.Image.MAX_IMAGE_PIXELS`` (a decompression bomb)."""
    from PIL import Image, UnidentifiedImageError

    prefix = f"{where}: " if where else ""
    if not path.is_file():
        raise UserError(f"{prefix}image file '{path}' not found")
    try:
        with warnings.catch_warnings():
            # Pillow only warns between MAX_IMAGE_PIXELS and twice that: refuse those images too.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                img = img.convert("RGB" if channels == 3 else "L")
                if size is not None:
                    img = img.resize((size[1], size[0]), Image.Resampling.BILINEAR)
                arr = np.asarray(img, dtype=np.float32) / 255.0
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise UserError(f"{prefix}image '{path}' {_claimed_size(path, err)}, more than the "
                        f"{Image.MAX_IMAGE_PIXELS} pixels Pillow reads safely (PIL.Image.MAX_IMAGE_PIXELS); "
                        f"the file may be corrupt or a decompression bomb, or needs downscaling") from None
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise UserError(f"{prefix}cannot read image '{path}': {' '.join(str(err).split())}") from None
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)


def _claimed_size(path: Path, err: Exception) -> str:
    """What an image too large for Pillow's limit claims: "claims W x H pixels" (or the pixel count)."""
    from PIL import Image

    limit = Image.MAX_IMAGE_PIXELS
    try:  # Image.open reads only the header; the limit is lifted for that moment and restored at once
        Image.MAX_IMAGE_PIXELS = None
        with Image.open(path) as img:
            return f"claims {img.width}x{img.height} pixels (width x height)"
    except Exception:  # noqa: BLE001 - fall back on the count in Pillow's message
        found = re.search(r"\((\d+) pixels\)", str(err))
        return f"claims {found.group(1)} pixels" if found else "is too large"
    finally:
        Image.MAX_IMAGE_PIXELS = limit


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
