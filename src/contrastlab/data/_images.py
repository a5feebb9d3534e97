"""Reading users' image files into one float32 (N, C, H, W) tensor in [0, 1] (Pillow, bundled with matplotlib)."""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from contrastlab.errors import UserError, one_line

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


def _to_uint8(img, where: str):
    """A Pillow image of any depth as an 8-bit one (Pillow's own conversion clips deeper values to 0..255, so
    a 16-bit PNG would read as nearly all white):

    * 16-bit integers (modes ``I;16``, ``I;16B``, ...; a 16-bit PNG that an older Pillow opens as mode ``I``)
      are scaled from [0, 65535];
    * 32-bit integers (mode ``I`` from any other format) are refused: their range is not known, and
      scaling from [0, 2**31 - 1] would turn any real image black;
    * floats (mode ``F``, e.g. a float TIFF) must already lie in [0, 1], else they are refused with the
      range found.

    Raises:
        UserError: naming ``where``, the mode and the values found.
    """
    from PIL import Image

    if img.mode.startswith("I;16") or (img.mode == "I" and img.format == "PNG"):  # PNG holds at most 16 bits
        arr = np.asarray(img, dtype=np.int64)
        if arr.min(initial=0) < 0 or arr.max(initial=0) > 65535:
            raise UserError(f"{where} is a 16-bit image (Pillow mode {img.mode}) with values in "
                            f"[{int(arr.min())}, {int(arr.max())}]; 16-bit images must lie in [0, 65535]")
        return Image.fromarray(np.round(arr * (255.0 / 65535.0)).astype(np.uint8), "L")
    if img.mode == "I":
        raise UserError(f"{where} is a 32-bit integer image (Pillow mode I), whose range is not known; save it "
                        f"as 8 or 16 bits, or as floats in [0, 1]")
    if img.mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = (float(arr.min()), float(arr.max())) if arr.size else (0.0, 0.0)
        if not (np.isfinite(lo) and np.isfinite(hi)) or lo < 0.0 or hi > 1.0:
            raise UserError(f"{where} is a floating-point image (Pillow mode F) with values in [{lo:g}, {hi:g}]; "
                            f"float images must lie in [0, 1]")
        return Image.fromarray(np.round(arr * 255.0).astype(np.uint8), "L")
    return img


def decode_image(source: Path | bytes, *, channels: int = 3, size: tuple[int, int] | None = None,
                 where: str = "", name: str | None = None) -> np.ndarray:
    """One image file (a path, or its bytes from an archive) as uint8 (C, H, W).

    8-bit images are read as they are; 16-bit images (e.g. a 16-bit PNG) are scaled from [0, 65535], so
    65535 reads as 255; float images (e.g. a float TIFF) must lie in [0, 1] and are scaled from it;
    32-bit integer images, whose range is not known, are refused (see :func:`_to_uint8`).
    :class:`UserError` names the file when it is missing, unreadable, truncated, of such a depth or
    range, or larger than ``PIL.Image.MAX_IMAGE_PIXELS`` (a decompression bomb).
    """
    import io

    from PIL import Image, UnidentifiedImageError

    prefix = f"{where}: " if where else ""
    label = name if name is not None else str(source) if isinstance(source, Path) else "<bytes>"
    try:
        with warnings.catch_warnings():
            # Pillow only warns between MAX_IMAGE_PIXELS and twice that: refuse those images too.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as img:
                img.load()
                img = _to_uint8(img, f"{prefix}image '{label}'")
                mode = "RGB" if channels == 3 else "L"
                if img.mode != mode:  # an image already in the mode is not copied
                    img = img.convert(mode)
                if size is not None:
                    img = img.resize((size[1], size[0]), Image.Resampling.BILINEAR)
                arr = np.asarray(img, dtype=np.uint8)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        claimed = _claimed_size(source, err) if isinstance(source, Path) else "is too large"
        raise UserError(f"{prefix}image '{label}' {claimed}, more than the "
                        f"{Image.MAX_IMAGE_PIXELS} pixels Pillow reads safely (PIL.Image.MAX_IMAGE_PIXELS); "
                        f"the file may be corrupt or a decompression bomb, or needs downscaling") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError) as err:
        if isinstance(source, Path) and not source.is_file():  # looked for only when reading failed
            raise UserError(f"{prefix}image file '{source}' not found") from None
        raise UserError(f"{prefix}cannot read image '{label}': {one_line(err)}") from None
    return np.ascontiguousarray(arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1))


def read_image(path: Path, *, channels: int = 3, size: tuple[int, int] | None = None,
               where: str = "") -> np.ndarray:
    """One image as float32 (C, H, W) in [0, 1] (see :func:`decode_image`)."""
    return decode_image(path, channels=channels, size=size, where=where).astype(np.float32) / 255.0


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
