r"""The user's own data: a folder of images with one sub-folder per class, or a ``.npz`` of arrays.

Both use a fixed stratified split (``test_fraction`` of each class in the test split, the same on
every call) unless the data name its test items. Problems with the data raise
:class:`~contrastlab.errors.UserError` with one line naming the file, key or value at fault.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import torch

from contrastlab.data._images import IMAGE_SUFFIXES, check_image_options, read_images
from contrastlab.data._split import check_fraction, check_split, split_indices
from contrastlab.data.tensor_dataset import TensorDataset
from contrastlab.errors import UserError

MODALITIES = ("image", "signal")


def load_image_folder(*, root: str, split: str = "train", seed: int = 0, channels: int = 3,
                      size: int | tuple[int, int] | None = None, test_fraction: float = 0.2) -> TensorDataset:
    r"""Images from ``root/<class name>/<image file>``; classes are the sorted sub-folder names.

    Args:
        root: Folder holding one sub-folder per class.
        split: ``"train"`` or ``"test"`` (fixed stratified split; ``seed`` does not change it).
        seed: Unused (the split is fixed).
        channels: 3 for RGB, 1 for grey levels (images are converted).
        size: Resize every image to this (int or (height, width)); by default all must match.
        test_fraction: Fraction of each class in the test split.

    Returns:
        A data set with ``"image"`` float32 (C, H, W) in [0, 1] and int64 labels.

    Raises:
        ValueError: For a bad option value.
        contrastlab.errors.UserError: For a missing or empty folder, an unreadable image or mixed sizes.

    Example:
        >>> import tempfile, matplotlib.image
        >>> root = Path(tempfile.mkdtemp())
        >>> for c in ("cat", "dog"):
        ...     (root / c).mkdir()
        ...     for i in range(5):
        ...         matplotlib.image.imsave(root / c / f"{i}.png", np.full((4, 6), i / 4.0), cmap="gray")
        >>> ds = load_image_folder(root=str(root))
        >>> len(ds), ds.modalities, ds.classes
        (8, {'image': (3, 4, 6)}, ('cat', 'dog'))
    """
    check_split(split)
    channels, hw = check_image_options(channels, size)
    check_fraction(test_fraction)
    base = Path(root).expanduser()
    if not base.is_dir():
        raise UserError(f"image folder '{base}' does not exist or is not a folder")
    classes = sorted(p.name for p in base.iterdir() if p.is_dir() and not p.name.startswith("."))
    files, labels = [], []
    for label, name in enumerate(classes):
        found = sorted(p for p in (base / name).rglob("*")
                       if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file() and not p.name.startswith("."))
        files += found
        labels += [label] * len(found)
    if not classes:
        raise UserError(f"image folder '{base}' has no class sub-folders (expected root/<class>/<image>)")
    if not files:
        raise UserError(f"no images ({', '.join(IMAGE_SUFFIXES)}) found under '{base}'")
    empty = [c for i, c in enumerate(classes) if i not in set(labels)]
    if empty:
        raise UserError(f"class folder '{base / empty[0]}' holds no images")
    y = np.asarray(labels, dtype=np.int64)
    keep = split_indices(len(y), split, labels=y, test_fraction=test_fraction)
    images = read_images([files[i] for i in keep], channels=channels, size=hw)
    return TensorDataset(f"image_folder:{base.name}", {"image": images}, torch.from_numpy(y[keep]),
                         classes=classes)


def _array(archive, key: str, path: Path) -> np.ndarray:
    if key not in archive.files:
        raise UserError(f"'{path}' has no array {key!r}; it holds: {', '.join(archive.files) or 'nothing'}")
    try:
        return archive[key]
    except ValueError as err:  # object arrays need pickle, which is never allowed
        raise UserError(f"array {key!r} in '{path}' cannot be read without pickle: {err}") from None


def _check_finite(x: np.ndarray, key: str, path: Path) -> None:
    """:class:`UserError` naming the first NaN, infinite or beyond-float32 value of a float array."""
    if not np.issubdtype(x.dtype, np.floating):
        return
    bad = ~np.isfinite(x)
    what = "NaN or infinite values"
    if not bad.any() and np.finfo(x.dtype).max > np.finfo(np.float32).max:
        bad = np.abs(x) > np.finfo(np.float32).max  # finite here, infinite once cast to float32
        what = f"values beyond float32's range (±{np.finfo(np.float32).max:.4g})"
    if bad.any():
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        raise UserError(f"array {key!r} in '{path}' holds {int(bad.sum())} {what} "
                        f"(the first at index {first}: {x[first]})")


def _as_inputs(x: np.ndarray, key: str, modality: str | None, path: Path) -> tuple[str, torch.Tensor]:
    if not np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.complexfloating):
        raise UserError(f"array {key!r} in '{path}' must be real numbers, got dtype {x.dtype}")
    if x.ndim > 0 and x.shape[0] == 0:
        raise UserError(f"array {key!r} in '{path}' has shape {x.shape}: it holds no items")
    if x.size == 0:
        raise UserError(f"array {key!r} in '{path}' has shape {x.shape}: its items hold no values")
    _check_finite(x, key, path)
    if modality is None:
        modality = "image" if x.ndim in (3, 4) else "signal"
    if modality not in MODALITIES:
        raise ValueError(f"modality must be one of {MODALITIES}, got {modality!r}")
    if modality == "signal":
        if x.ndim != 2:
            raise UserError(f"array {key!r} in '{path}' has shape {x.shape}; a signal array must be (N, L)")
        return modality, torch.from_numpy(x.astype(np.float32))
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4 and x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):
        x = x.transpose(0, 3, 1, 2)  # channels last -> channels first
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise UserError(f"array {key!r} in '{path}' has shape {x.shape}; images must be (N, H, W), (N, C, H, W) or "
                        f"(N, H, W, C) with C = 1 or 3")
    if x.dtype == np.uint8:
        return modality, torch.from_numpy(x.astype(np.float32) / 255.0)
    lo, hi = float(x.min()), float(x.max())
    if lo < 0.0 or hi > 1.0:
        raise UserError(f"array {key!r} in '{path}' holds images with values in [{lo:g}, {hi:g}]; "
                        f"images must be uint8 or floats in [0, 1]")
    return modality, torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))


def _labels(y: np.ndarray, key: str, n: int, path: Path) -> np.ndarray:
    if y.shape != (n,):
        raise UserError(f"labels {key!r} in '{path}' have shape {y.shape} but the inputs hold {n} items")
    if not (np.issubdtype(y.dtype, np.number) or np.issubdtype(y.dtype, np.str_) or y.dtype == np.bool_) \
            or np.issubdtype(y.dtype, np.complexfloating):
        raise UserError(f"labels {key!r} in '{path}' must be integers or strings, got dtype {y.dtype}")
    if np.issubdtype(y.dtype, np.floating):
        if not np.isfinite(y).all():
            raise UserError(f"labels {key!r} in '{path}' hold NaN or infinite values")
        if not np.all(y == np.round(y)):
            raise UserError(f"labels {key!r} in '{path}' must be integers or strings, got non-integer floats")
    return y


def load_npz(*, path: str, split: str = "train", seed: int = 0, x: str = "x", y: str | None = "y",
             x_test: str | None = None, y_test: str | None = None, modality: str | None = None,
             test_fraction: float = 0.2) -> TensorDataset:
    r"""Arrays from a ``.npz`` file: inputs under key ``x``, optional labels under key ``y``.

    Inputs of 3 or 4 dimensions are images ((N, H, W), (N, C, H, W) or (N, H, W, C); uint8 is
    divided by 255, floats must lie in [0, 1]); 2-D inputs are signals (N, L). Labels (ints or
    strings) are mapped to ``0..K-1`` in sorted order. With ``x_test`` (and ``y_test``) the file's own
    test arrays form the test split; otherwise a fixed stratified split is used.

    Raises:
        ValueError: For a bad option value.
        contrastlab.errors.UserError: For a missing file or key, NaN/inf values or values beyond
            float32's range (naming the key), an empty array, a shape that is not an image or signal,
            train and test inputs of different item shapes, or labels that do not match the inputs.

    Example:
        >>> import tempfile
        >>> f = Path(tempfile.mkdtemp()) / "d.npz"
        >>> np.savez(f, x=np.random.rand(10, 16), y=np.arange(10) % 2)
        >>> ds = load_npz(path=str(f), split="test")
        >>> len(ds), ds.modalities, ds.num_classes
        (2, {'signal': (16,)}, 2)
    """
    check_split(split)
    check_fraction(test_fraction)
    file = Path(path).expanduser()
    if not file.is_file():
        raise UserError(f"npz file '{file}' not found")
    if y_test is not None and x_test is None:
        raise ValueError("y_test needs x_test")
    if not zipfile.is_zipfile(file):
        raise UserError(f"'{file}' is not an .npz archive (numpy.savez writes one)")
    try:
        archive = np.load(file, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile) as err:
        raise UserError(f"cannot read npz file '{file}': {' '.join(str(err).split())}") from None
    with archive:
        use_file_split = x_test is not None
        x_key = x_test if (use_file_split and split == "test") else x
        y_key = (y_test if (use_file_split and split == "test") else y) if y is not None else None
        inputs = _array(archive, x_key, file)
        name, tensor = _as_inputs(inputs, x_key, modality, file)
        labels = None if y_key is None else _labels(_array(archive, y_key, file), y_key, len(tensor), file)
        all_labels = labels
        if use_file_split:  # both splits are checked on every call: a broken test split fails before training
            other_x = x if split == "test" else x_test
            other_inputs = _array(archive, other_x, file)
            other_name, other_tensor = _as_inputs(other_inputs, other_x, modality, file)
            if (other_name, other_tensor.shape[1:]) != (name, tensor.shape[1:]):
                a, b = (inputs, other_inputs) if split == "train" else (other_inputs, inputs)
                raise UserError(f"arrays {x!r} and {x_test!r} in '{file}' hold items of different shapes, "
                                f"{a.shape[1:]} and {b.shape[1:]} (array shapes {a.shape} and {b.shape}); "
                                f"the train and test inputs must match")
            if y is not None and y_test is not None:  # classes from both splits
                other_y = y if split == "test" else y_test
                other = _labels(_array(archive, other_y, file), other_y, len(other_tensor), file)
                a, b = (labels, other) if split == "train" else (other, labels)
                if np.issubdtype(a.dtype, np.str_) != np.issubdtype(b.dtype, np.str_):
                    raise UserError(f"labels {y!r} and {y_test!r} in '{file}' must both be strings or both "
                                    f"numbers, got dtypes {a.dtype} and {b.dtype}")
                all_labels = np.concatenate([labels, other])
    classes = None
    if labels is not None:
        classes, codes = np.unique(all_labels, return_inverse=True)
        labels = codes[:len(labels)]
    if not use_file_split:
        keep = split_indices(len(tensor), split, labels=labels, test_fraction=test_fraction)
        tensor = tensor[torch.from_numpy(keep)]
        labels = None if labels is None else labels[keep]
    return TensorDataset(f"npz:{file.stem}", {name: tensor},
                         None if labels is None else torch.from_numpy(labels.astype(np.int64)),
                         classes=None if classes is None else tuple(str(c) for c in classes))
