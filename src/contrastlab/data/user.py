r"""The user's own images: a folder with one sub-folder per class, or a flat folder (unlabelled).

Images are read from their files when a batch asks for them (:mod:`contrastlab.data.lazy`). A fixed
split (``test_fraction`` of each class in the test split, the same on every call) gives the test items.
Problems with the data raise :class:`~contrastlab.errors.UserError` with one line naming the file.
(Arrays in ``.npz`` / ``.npy`` files: :mod:`contrastlab.data.arrays`.)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from contrastlab.data._images import IMAGE_SUFFIXES, check_image_options, decode_image
from contrastlab.data.lazy import OnDemand, check_on_error
from contrastlab.data._split import check_fraction, check_split, split_indices
from contrastlab.errors import UserError

class ImageFolder(OnDemand):
    """Images read from their files when a batch asks for them (see :func:`load_image_folder`)."""

    def __init__(self, name: str, root: Path, files: list[str], labels: np.ndarray | None, classes: tuple[str, ...],
                 *, channels: int, size: tuple[int, int] | None, on_error: str) -> None:
        super().__init__(on_error=on_error)
        self.name, self.root, self.files = name, root, files
        self.labels, self.classes = labels, classes if labels is not None else ()
        self.channels, self.size = channels, size
        self.modalities = {"image": (channels, *(size or self._common_size()))}

    def _common_size(self) -> tuple[int, int]:
        """The one (height, width) of every image, from the files' headers (about 20 µs a file: no pixels are
        decoded); :class:`UserError` naming the first image of another size, or an unreadable header (with
        ``on_error="skip"`` those are left to be replaced when read)."""
        from PIL import Image

        first: tuple[str, tuple[int, int]] | None = None
        for name in self.files:
            try:
                with Image.open(self.root / name) as img:
                    hw = (img.height, img.width)
            except Exception:  # noqa: BLE001 - any header Pillow cannot parse: decode_image names the problem
                if self.on_error == "skip":
                    continue
                decode_image(self.root / name, channels=self.channels)  # raises the one-line UserError
                raise  # pragma: no cover - decode_image read what the header scan could not
            if first is None:
                first = (name, hw)
            elif hw != first[1]:
                raise UserError(f"image '{self.root / name}' is {hw[1]}x{hw[0]} but '{self.root / first[0]}' is "
                                f"{first[1][1]}x{first[1][0]} (width x height); pass size=... to resize all images")
        if first is None:
            raise UserError(f"none of the {len(self.files)} images under '{self.root}' can be read")
        return first[1]

    def __len__(self) -> int:
        return len(self.files)

    def describe(self, i: int) -> str:
        return f"image '{self.root / self.files[i]}'"

    def read(self, i: int) -> tuple[dict[str, np.ndarray], dict[str, int]]:
        image = decode_image(self.root / self.files[i], channels=self.channels, size=self.size)
        return {"image": image}, {}


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*")
                  if p.suffix.lower() in IMAGE_SUFFIXES and not any(part.startswith(".") for part in p.relative_to(folder).parts)
                  and p.is_file())


def list_images(base: Path, labels: str = "auto") -> tuple[list[Path], np.ndarray | None, list[str]]:
    """The image files under the folder ``base`` in a fixed order, their labels (int64, or ``None``) and the class
    names, by the rules of :func:`load_image_folder` (``labels``: ``"auto"``, ``"folders"`` or ``"none"``)."""
    classes = sorted(p.name for p in base.iterdir() if p.is_dir() and not p.name.startswith("."))
    loose = [p for p in base.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")]
    if labels == "auto":
        if classes and loose:
            raise UserError(f"image folder '{base}' holds images ('{loose[0].name}') beside sub-folders "
                            f"('{classes[0]}'); pass labels=folders (class sub-folders only) or labels=none "
                            f"(every image, unlabelled)")
        labels = "folders" if classes else "none"
    if labels == "folders" and not classes:
        raise UserError(f"image folder '{base}' has no class sub-folders (expected root/<class>/<image>)")
    if labels == "none":
        files, y, classes = _image_files(base), None, []
    else:
        files, found = [], []
        for label, name in enumerate(classes):
            members = _image_files(base / name)
            if not members:
                raise UserError(f"class folder '{base / name}' holds no images")
            files += members
            found += [label] * len(members)
        y = np.asarray(found, dtype=np.int64)
    if not files:
        raise UserError(f"no images ({', '.join(IMAGE_SUFFIXES)}) found under '{base}'")
    return files, y, classes


def load_image_folder(*, root: str, split: str = "train", seed: int = 0, channels: int = 3,
                      size: int | tuple[int, int] | None = None, test_fraction: float = 0.2,
                      labels: str = "auto", on_error: str = "fail") -> ImageFolder:
    r"""Images under ``root``, read from their files on demand; labelled by class sub-folder, or unlabelled.

    ``root/<class name>/<image file>`` gives labelled items (label ``i`` is the ``i``-th of the sorted sub-folder
    names, ``class_names[i]``);
    a flat folder of images (or ``labels="none"``: every image below ``root``) gives unlabelled items,
    the usual case for self-supervised learning.

    Args:
        root: The folder.
        split: ``"train"`` or ``"test"`` (fixed split, stratified by class; ``seed`` does not change it).
        seed: Unused (the split is fixed).
        channels: 3 for RGB, 1 for grey levels (images are converted).
        size: Resize every image to this (int or (height, width)); by default all must match the first.
        test_fraction: Fraction of the items (of each class) in the test split.
        labels: ``"auto"`` (class sub-folders when there are any, else unlabelled), ``"folders"`` or ``"none"``.
        on_error: An unreadable image stops the run (``"fail"``) or is replaced by the next readable one
            and counted (``"skip"``).

    Returns:
        A data set with ``"image"`` uint8 (C, H, W) and int64 labels (or none).

    Raises:
        ValueError: For a bad option value.
        contrastlab.errors.UserError: For a missing or empty folder or class folder, or images beside class
            folders (ambiguous: pass ``labels``).

    Example:
        >>> import tempfile, matplotlib.image, torch
        >>> root = Path(tempfile.mkdtemp())
        >>> for c in ("cat", "dog"):
        ...     (root / c).mkdir()
        ...     for i in range(5):
        ...         matplotlib.image.imsave(root / c / f"{i}.png", np.full((4, 6), i / 4.0), cmap="gray")
        >>> ds = load_image_folder(root=str(root))
        >>> len(ds), ds.modalities, ds.class_names, ds.get(torch.tensor([0])).inputs["image"].dtype
        (8, {'image': (3, 4, 6)}, ('cat', 'dog'), torch.uint8)
    """
    check_split(split)
    channels, hw = check_image_options(channels, size)
    check_fraction(test_fraction)
    check_on_error(on_error)
    if labels not in ("auto", "folders", "none"):
        raise ValueError(f"labels must be 'auto', 'folders' or 'none', got {labels!r}")
    base = Path(root).expanduser()
    if not base.is_dir():
        raise UserError(f"image folder '{base}' does not exist or is not a folder")
    files, y, classes = list_images(base, labels)
    keep = split_indices(len(files), split, labels=y, test_fraction=test_fraction)
    relative = [str(files[i].relative_to(base)) for i in keep]
    return ImageFolder(f"image_folder:{base.name}", base, relative, None if y is None else y[keep], tuple(classes),
                       channels=channels, size=hw, on_error=on_error)
