r"""Hugging Face ``datasets``: a folder written by ``save_to_disk``, or parquet files, read on demand.

``path`` is

* a folder written by ``Dataset.save_to_disk`` or ``DatasetDict.save_to_disk`` (opened with
  ``datasets.load_from_disk``: the Arrow files are memory-mapped, nothing is read into memory), or
* a ``.parquet`` file or a folder of them (opened with ``datasets.load_dataset("parquet", ...)``, which
  converts them once into Arrow files in the Hugging Face cache, ``HF_DATASETS_CACHE``).

Columns are named by options: ``image`` (an ``Image`` feature, encoded image bytes or image file
paths), decoded per item to uint8 (C, H, W); ``text``, tokenised at load over a vocabulary of every
text of the data set (the vocabulary needs them all), int64 (T,) padded, lengths in
``Batch.lengths["text"]``; ``label``, class labels whose names (``class_names``) come from a ``ClassLabel``
feature, else are the sorted distinct strings of a string column; an integer column without a
``ClassLabel`` names no classes (``class_names`` is ``None``; ``classes`` holds the sorted values).

Splits: a ``DatasetDict`` holding both ``train`` and ``test`` gives them as they are; otherwise the
``train`` split (or the only one) is split with the fixed stratified split (``test_fraction``), and any
other split is not used.

Each loader worker opens the data set itself on first use: the data set pickles as its path, column
names, row numbers, labels and token ids.

``datasets`` is an optional dependency (``pip install 'contrastlab[hf]'``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from contrastlab.data._images import check_image_options, decode_image
from contrastlab.data._split import check_fraction, check_split, split_indices
from contrastlab.data.captions import TokenRows, Vocabulary
from contrastlab.data.lazy import OnDemand, check_on_error
from contrastlab.errors import UserError, one_line

INSTALL_HINT = "pip install 'contrastlab[hf]' (or: pip install datasets)"


def _datasets():
    """The ``datasets`` module; :class:`UserError` saying how to install it when it is missing."""
    try:
        import datasets
    except ImportError:
        raise UserError(f"reading Hugging Face data sets needs the 'datasets' package; {INSTALL_HINT}") from None
    return datasets


def _parquet_files(path: Path) -> list[str]:
    if path.is_file():
        return [str(path)] if path.suffix.lower() == ".parquet" else []
    return sorted(str(p) for p in path.rglob("*.parquet") if p.is_file())


def open_hf(path: Path):
    """A ``Dataset`` or ``DatasetDict`` from a ``save_to_disk`` folder, or a ``Dataset`` of parquet files."""
    datasets = _datasets()
    if not path.exists():
        raise UserError(f"Hugging Face data set '{path}' not found")
    try:
        if path.is_dir() and ((path / "state.json").is_file() or (path / "dataset_dict.json").is_file()):
            return datasets.load_from_disk(str(path))
        files = _parquet_files(path)
        if files:
            return datasets.load_dataset("parquet", data_files=files, split="train")
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise UserError(f"cannot read Hugging Face data set '{path}': {one_line(err)}") from None
    raise UserError(f"'{path}' is neither a folder written by save_to_disk (it has no state.json or "
                    f"dataset_dict.json) nor a .parquet file or a folder of them")


def _parts(opened, path: Path, split: str) -> tuple[str | None, str | None]:
    """The ``DatasetDict`` split this data set reads (``None`` for a plain ``Dataset``), and the other split
    when the data name their test items (``None`` when the fixed split divides one part)."""
    if not hasattr(opened, "keys"):
        return None, None
    names = list(opened.keys())
    if "train" in names and "test" in names:
        return split, "test" if split == "train" else "train"
    if "train" in names or len(names) == 1:
        return ("train" if "train" in names else names[0]), None
    raise UserError(f"Hugging Face data set '{path}' holds the splits {', '.join(names) or 'none'}; contrastlab "
                    f"reads 'train' and 'test', or 'train' alone (split by test_fraction)")


def _column(table, name: str, path: Path, option: str):
    if name not in table.column_names:
        hint = "; pass label: null for unlabelled data" if option == "label" else ""
        raise UserError(f"Hugging Face data set '{path}' has no column {name!r} (option {option}); its columns: "
                        f"{', '.join(table.column_names)}{hint}")
    return table.with_format("arrow")[name]


def _labels(tables, parts, name: str, path: Path) -> tuple[list[np.ndarray], tuple[str, ...], bool]:
    """Every table's labels as int64 codes, the classes (a ``ClassLabel``'s names, else the sorted values) and
    whether those are names (a ``ClassLabel``, or strings) rather than label values (integers)."""
    datasets = _datasets()
    values = [_column(t, name, path, "label").to_numpy(zero_copy_only=False) for t in tables]
    feature = tables[0].features[name]
    if isinstance(feature, datasets.ClassLabel):
        classes = tuple(feature.names)
        for part, v in zip(parts, values):
            bad = np.flatnonzero((v < 0) | (v >= len(classes)))
            if bad.size:
                at = f"split {part!r} row" if part is not None else "row"
                raise UserError(f"column {name!r} of '{path}' holds {v[bad[0]]} at {at} {bad[0]}, not one of its "
                                f"{len(classes)} classes (-1 marks a missing label); pass label: null for unlabelled data")
        return [v.astype(np.int64) for v in values], classes, True
    joined = np.concatenate(values)
    if joined.dtype == object and all(isinstance(v, str) for v in joined):
        joined = joined.astype(str)
    if joined.dtype == object or not (np.issubdtype(joined.dtype, np.integer) or np.issubdtype(joined.dtype, np.str_)
                                      or joined.dtype == np.bool_):
        kinds = sorted({type(v).__name__ for v in joined[:1000]}) if joined.dtype == object else [str(joined.dtype)]
        raise UserError(f"column {name!r} of '{path}' must hold integers or strings to be class labels, got "
                        f"{', '.join(kinds)}")
    classes, codes = np.unique(joined, return_inverse=True)
    ends = np.cumsum([len(v) for v in values])[:-1]
    return ([c.astype(np.int64) for c in np.split(codes.reshape(-1), ends)], tuple(str(c) for c in classes),
            bool(np.issubdtype(joined.dtype, np.str_)))


class HFRows(OnDemand):
    r"""Rows of a Hugging Face data set, their images decoded when a batch asks (see :func:`load_hf`)."""

    def __init__(self, name: str, path: str, part: str | None, rows: np.ndarray, *, image: str | None,
                 channels: int, size: tuple[int, int] | None, on_error: str, labels: np.ndarray | None = None,
                 classes: tuple[str, ...] = (), named: bool = True, text: TokenRows | None = None) -> None:
        super().__init__(on_error=on_error)
        self.name, self.path, self.part, self.rows = name, path, part, rows
        self.image, self.channels, self.size = image, channels, size
        self.labels, self.classes, self.named = labels, classes if labels is not None else (), named
        self.text, self.vocabulary = text, None if text is None else text.vocabulary
        self._table = None
        self.modalities: dict[str, tuple[int, ...]] = {}
        if image is not None:
            self.modalities["image"] = (channels, *(size or self.first_image_size(self._image, f"'{path}'")))
        if text is not None:
            self.modalities["text"] = (text.width,)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_table": None}  # each process opens the (memory-mapped) data set itself

    def __len__(self) -> int:
        return len(self.rows)

    def describe(self, i: int) -> str:
        part = f" split {self.part!r}" if self.part is not None else ""
        return f"Hugging Face data set '{self.path}'{part} row {int(self.rows[i])}"

    def _images(self):
        if self._table is None:
            opened = open_hf(Path(self.path))
            table = opened[self.part] if self.part is not None else opened
            if isinstance(table.features[self.image], _datasets().Image):
                table = table.cast_column(self.image, _datasets().Image(decode=False))  # bytes: we decode
            self._table = table.select_columns([self.image])
        return self._table

    def _image(self, i: int) -> np.ndarray:
        where = self.describe(i)
        value = self._images()[int(self.rows[i])][self.image]
        if isinstance(value, dict):
            data, file = value.get("bytes"), value.get("path")
        else:
            data, file = (value, None) if isinstance(value, (bytes, bytearray)) else (None, value)
        if data:
            return decode_image(bytes(data), channels=self.channels, size=self.size, where=where, name=file or None)
        if isinstance(file, str) and file:
            p = Path(file).expanduser()
            base = Path(self.path) if Path(self.path).is_dir() else Path(self.path).parent
            return decode_image(p if p.is_absolute() else base / p, channels=self.channels, size=self.size,
                                where=where)
        raise UserError(f"{where}: column {self.image!r} holds {type(value).__name__} {str(value)[:40]!r}, not an "
                        f"image (an Image feature, image bytes or a file path)")

    def read(self, i: int) -> tuple[dict[str, np.ndarray], dict[str, int]]:
        inputs, lengths = {}, {}
        if self.image is not None:
            inputs["image"] = self._image(i)
        if self.text is not None:
            inputs["text"], lengths["text"] = self.text.row(i)
        return inputs, lengths


def load_hf(*, path: str, split: str = "train", seed: int = 0, image: str | None = "image", text: str | None = None,
            label: str | None = "label", channels: int = 3, size: int | tuple[int, int] | None = None,
            test_fraction: float = 0.2, on_error: str = "fail") -> HFRows:
    r"""A Hugging Face data set saved on disk or in parquet files, images read on demand (see the module docstring).

    Args:
        path: A folder written by ``save_to_disk``, a ``.parquet`` file or a folder of them.
        split: ``"train"`` or ``"test"``.
        seed: Unused (the split is fixed or given by the data).
        image: The image column (``None``: no images, e.g. text with labels).
        text: A text column to tokenise (``None``: no text).
        label: The class-label column (``None``: unlabelled).
        channels: 3 (RGB) or 1 (grey).
        size: Resize every image (int or (height, width)); by default all must share the first one's size.
        test_fraction: Fraction of the rows (of each class) in the test split, without a ``test`` split.
        on_error: An unreadable image stops the run (``"fail"``) or is replaced by the next readable one and
            counted (``"skip"``).

    Returns:
        A data set with ``"image"`` uint8 (C, H, W) and/or ``"text"`` int64 (T,) (its ``vocabulary``), and
        int64 labels (or none) with their ``class_names`` (see the module docstring).

    Raises:
        ValueError: For a bad option value.
        contrastlab.errors.UserError: When ``datasets`` is not installed, the path is not a data set, a
            column is missing or is not what its option needs, naming the path and column.

    Example:
        >>> import importlib.util, tempfile
        >>> if importlib.util.find_spec("datasets"):  # the optional dependency
        ...     import datasets
        ...     d = tempfile.mkdtemp()
        ...     rows = {"text": ["a red dot", "a blue dot"] * 5, "label": [0, 1] * 5}
        ...     datasets.Dataset.from_dict(rows).save_to_disk(d)
        ...     ds = load_hf(path=d, image=None, text="text")
        ...     assert (len(ds), ds.modalities, ds.classes, ds.class_names) == (8, {"text": (3,)}, ("0", "1"), None)
    """
    check_split(split)
    channels, hw = check_image_options(channels, size)
    check_fraction(test_fraction)
    check_on_error(on_error)
    if image is None and text is None:
        raise ValueError("load_hf needs an image or a text column (image=..., text=...)")
    for option, value in (("image", image), ("text", text), ("label", label)):
        if value is not None and not isinstance(value, str):
            raise ValueError(f"{option} must name a column (a string) or be None, got {value!r}")
    file = Path(path).expanduser()
    opened = open_hf(file)
    part, other = _parts(opened, file, split)
    tables = [opened if part is None else opened[part]] + ([] if other is None else [opened[other]])
    if len(tables[0]) == 0:
        raise UserError(f"Hugging Face data set '{file}'{'' if part is None else f' split {part!r}'} has no rows")
    if image is not None:
        _column(tables[0], image, file, "image")
    labels, classes, named = (None, (), False) if label is None else _labels(tables, [part, other], label, file)
    tokens = None
    if text is not None:
        texts = [t for table in tables for t in _column(table, text, file, "text").to_pylist()]
        if any(not isinstance(t, str) for t in texts):
            bad = next(t for t in texts if not isinstance(t, str))
            raise UserError(f"column {text!r} of '{file}' must hold strings, got {type(bad).__name__} {bad!r}")
        tokens = TokenRows.encode(Vocabulary.from_texts(texts), texts)
    n = len(tables[0])
    rows = np.arange(n, dtype=np.int64) if other is not None else \
        split_indices(n, split, labels=None if labels is None else labels[0], test_fraction=test_fraction)
    return HFRows(f"hf:{file.name}", str(file), part, rows, image=image, channels=channels, size=hw,
                    on_error=on_error, labels=None if labels is None else labels[0][rows], classes=classes,
                    named=named, text=None if tokens is None else tokens.select(rows))
