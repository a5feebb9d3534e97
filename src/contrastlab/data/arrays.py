r"""Arrays from ``.npz`` and ``.npy`` files, memory-mapped: a batch reads only its own rows.

* ``.npy``: the file is memory-mapped (the ``numpy.load(mmap_mode="r")`` way).
* ``.npz`` written by ``numpy.savez`` (members stored uncompressed): each member is memory-mapped in
  place, at its data offset in the zip file (local header offset + 30 + name length + extra length,
  then the member's own ``.npy`` header). Its CRC-32 is checked at load, in one streamed read, as
  :mod:`zipfile` would when reading it: a damaged member fails naming the file and member.
* ``.npz`` written by ``numpy.savez_compressed``: a compressed member cannot be mapped; it is loaded
  into memory (store large data with ``numpy.savez`` or as ``.npy`` files).

Arrays smaller than :data:`IN_MEMORY_BYTES` are read into memory at load instead (one read; the
data set is then ``in_memory`` and the training loop gives it no loader workers). Either way the
data set never converts the whole array: each :meth:`MappedArrays.get` slices its rows and converts
them (uint8 images stay uint8, channels-last images turn channels-first, other inputs become float32).

The values are checked at load, before training: NaN, infinite and beyond-float32 values, and images
of floats outside [0, 1], stop the load with one line naming the array and the first bad index. A
memory-mapped array is scanned in chunks read with plain file reads (:data:`CHUNK_BYTES` each): the
scan streams through the page cache at disk speed while the process's memory stays flat (mapped pages
would count as the process's own). uint8 arrays, and integer signals, need no scan.
"""

from __future__ import annotations

import struct
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from contrastlab.data._split import check_fraction, check_split, split_indices
from contrastlab.data.base import Batch
from contrastlab.errors import UserError, one_line

MODALITIES = ("image", "signal")

#: Arrays up to this size are read into memory at load; larger ones are memory-mapped.
IN_MEMORY_BYTES = 64 * 2**20

#: The size of each read of the load-time scan of a memory-mapped array.
CHUNK_BYTES = 16 * 2**20


@dataclass(frozen=True)
class ArrayRef:
    """Where an array's values lie in a file: all a process needs to memory-map it (pickles as a few values)."""

    file: str
    offset: int
    dtype: np.dtype
    shape: tuple[int, ...]
    fortran: bool

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize

    def open(self) -> np.ndarray:
        """The array, memory-mapped read-only."""
        return np.memmap(self.file, dtype=self.dtype, mode="r", offset=self.offset, shape=self.shape,
                         order="F" if self.fortran else "C")

    def chunks(self, chunk_bytes: int = CHUNK_BYTES) -> Iterator[np.ndarray]:
        """The values in file order, in chunks read into one reused buffer (not mapped)."""
        per = max(1, chunk_bytes // self.dtype.itemsize)
        total = int(np.prod(self.shape, dtype=np.int64))
        buffer = bytearray(min(per, max(total, 1)) * self.dtype.itemsize)
        with open(self.file, "rb") as f:
            f.seek(self.offset)
            for start in range(0, total, per):
                n = min(per, total - start)
                view = memoryview(buffer)[:n * self.dtype.itemsize]
                if f.readinto(view) != len(view):
                    raise UserError(f"'{self.file}' is truncated")
                yield np.frombuffer(view, dtype=self.dtype)


def _order(source: ArrayRef | np.ndarray) -> str:
    """The order the values lie in: ``"F"`` for a Fortran-ordered array, else ``"C"``."""
    if isinstance(source, ArrayRef):
        return "F" if source.fortran else "C"
    return "F" if source.flags.f_contiguous and not source.flags.c_contiguous else "C"


def _in_memory_chunks(x: np.ndarray, chunk_bytes: int = CHUNK_BYTES) -> Iterator[np.ndarray]:
    flat = x.ravel(order=_order(x))
    per = max(1, chunk_bytes // max(x.dtype.itemsize, 1))
    for start in range(0, flat.size, per):
        yield flat[start:start + per]


def is_npy(path: Path) -> bool:
    """Whether the file starts with the ``.npy`` magic string (``numpy.load`` takes any other file for a
    pickle, and refuses it as one)."""
    with path.open("rb") as f:
        return f.read(6) == b"\x93NUMPY"


def _ref_at(file: Path, start: int, what: str) -> ArrayRef | None:
    """The ``.npy`` array whose header starts at byte ``start`` of ``file`` (``None`` for a header version
    the public readers do not parse; the caller then loads the array)."""
    fmt = np.lib.format
    with file.open("rb") as f:
        f.seek(start)
        try:
            version = fmt.read_magic(f)
            if version not in ((1, 0), (2, 0)):
                return None
            read = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
            shape, fortran, dtype = read(f)
        except ValueError as err:
            raise UserError(f"{what} is not a readable .npy array: {one_line(err)}") from None
        ref = ArrayRef(str(file), f.tell(), np.dtype(dtype), tuple(int(s) for s in shape), bool(fortran))
    if ref.dtype.hasobject:
        raise UserError(f"{what} cannot be read without pickle: it holds Python objects (dtype {ref.dtype})")
    if ref.offset + ref.nbytes > file.stat().st_size:
        raise UserError(f"{what} is truncated: its header promises {ref.shape} values of {ref.dtype}")
    return ref


class _Npz:
    """The arrays of an ``.npz`` file, by key."""

    def __init__(self, file: Path) -> None:
        if not zipfile.is_zipfile(file):
            raise UserError(f"'{file}' is not an .npz archive (numpy.savez writes one)")
        self.file = file
        try:
            self.archive = np.load(file, allow_pickle=False)
        except (OSError, ValueError, zipfile.BadZipFile) as err:
            raise UserError(f"cannot read npz file '{file}': {one_line(err)}") from None

    def label(self, kind: str, key: str) -> str:
        return f"{kind} {key!r} in '{self.file}'"

    def pair(self, kind: str, a: str, b: str) -> str:
        return f"{kind} {a!r} and {b!r} in '{self.file}'"

    def has(self, key: str) -> bool:
        return key in self.archive.files

    def _check(self, key: str, kind: str) -> None:
        if key not in self.archive.files:
            hint = "; pass y: null for unlabelled inputs" if kind == "labels" else ""
            raise UserError(f"'{self.file}' has no array {key!r}; it holds: "
                            f"{', '.join(self.archive.files) or 'nothing'}{hint}")

    def load(self, key: str, kind: str = "array") -> np.ndarray:
        self._check(key, kind)
        try:
            value = self.archive[key]
        except ValueError as err:
            if "pickle" in str(err):  # object arrays need pickle, which is never allowed
                raise UserError(f"array {key!r} in '{self.file}' cannot be read without pickle: {err}") from None
            raise UserError(f"member {key!r} of '{self.file}' is not a readable .npy array: {one_line(err)}") \
                from None
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as err:  # a bad CRC-32, torn compressed data
            raise UserError(f"member {key!r} of '{self.file}' is damaged: {one_line(err)}") from None
        if not isinstance(value, np.ndarray):
            raise UserError(f"member {key!r} of '{self.file}' is not a .npy array")
        return value

    def _check_crc(self, key: str, info: zipfile.ZipInfo, start: int) -> None:
        """Compare the CRC-32 of a stored member's bytes (from ``start``, read in chunks) with the one its
        zip entry records: a mapped member is never read through :mod:`zipfile`, which would check it."""
        crc, left = 0, info.file_size
        with self.file.open("rb") as f:
            f.seek(start)
            while left:
                chunk = f.read(min(left, CHUNK_BYTES))
                if not chunk:
                    raise UserError(f"member {key!r} of '{self.file}' is truncated: the file ends {left} bytes "
                                    f"before the member's end")
                crc, left = zlib.crc32(chunk, crc), left - len(chunk)
        if crc != info.CRC:
            raise UserError(f"member {key!r} of '{self.file}' is damaged: its CRC-32 is {crc:08x} but the archive "
                            f"records {info.CRC:08x}")

    def source(self, key: str) -> ArrayRef | np.ndarray:
        """Member ``key`` memory-mappable in place when stored uncompressed, else loaded."""
        self._check(key, "array")
        info = self.archive.zip.getinfo(f"{key}.npy") if f"{key}.npy" in self.archive.zip.namelist() else None
        if info is None or info.compress_type != zipfile.ZIP_STORED:
            return self.load(key)
        with self.file.open("rb") as f:
            f.seek(info.header_offset)
            head = f.read(30)
        if len(head) < 30 or head[:4] != b"PK\x03\x04":
            raise UserError(f"cannot read npz file '{self.file}': member {key!r} has no local header")
        name_length, extra_length = struct.unpack("<HH", head[26:30])
        start = info.header_offset + 30 + name_length + extra_length
        ref = _ref_at(self.file, start, self.label("array", key))
        if ref is None:
            return self.load(key)
        if ref.offset + ref.nbytes > start + info.file_size:
            raise UserError(f"member {key!r} of '{self.file}' is truncated: its header promises {ref.shape} "
                            f"values of {ref.dtype}, more than the member holds")
        self._check_crc(key, info, start)
        return ref

    def close(self) -> None:
        self.archive.close()


class _Npy:
    """The inputs in one ``.npy`` file; the other arrays (labels, test split) named as files beside it:
    a key ``k`` is the file ``k.npy`` in the same folder, a key ending in ``.npy`` a path (relative to that folder)."""

    def __init__(self, file: Path) -> None:
        self.file = file

    def path(self, key: str) -> Path:
        if key == "x":
            return self.file
        p = Path(key if key.endswith(".npy") else f"{key}.npy").expanduser()
        return p if p.is_absolute() else self.file.parent / p

    def label(self, kind: str, key: str) -> str:
        return f"{kind} '{self.path(key)}'"

    def pair(self, kind: str, a: str, b: str) -> str:
        return f"{kind} '{self.path(a)}' and '{self.path(b)}'"

    def has(self, key: str) -> bool:
        return self.path(key).is_file()

    def _check(self, key: str, kind: str) -> Path:
        path = self.path(key)
        if not path.is_file():
            hint = " (pass y: null for unlabelled inputs)" if kind == "labels" else ""
            raise UserError(f"{kind} file '{path}' not found{hint}")
        return path

    def load(self, key: str, kind: str = "array") -> np.ndarray:
        path = self._check(key, kind)
        if not is_npy(path):  # else numpy takes it for a pickle and says so
            raise UserError(f"{self.label(kind, key)} is not a .npy file (it does not start with NumPy's header)")
        try:
            return np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError) as err:
            raise UserError(f"{self.label(kind, key)} cannot be read: {one_line(err)}") from None

    def source(self, key: str) -> ArrayRef | np.ndarray:
        ref = _ref_at(self._check(key, "array"), 0, self.label("array", key))
        return self.load(key) if ref is None else ref

    def close(self) -> None:
        pass


@dataclass
class _Scan:
    """What one pass over an array's values found."""

    nonfinite: int = 0
    first_nonfinite: tuple[int, object] | None = None  # (flat index, value)
    beyond: int = 0
    first_beyond: tuple[int, object] | None = None
    lo: float = float("inf")
    hi: float = float("-inf")


def _scan(source: ArrayRef | np.ndarray, *, extent: bool) -> _Scan:
    """Count the NaN / infinite and beyond-float32 values (floats) and find the extent (``extent``)."""
    dtype = source.dtype
    floating = np.issubdtype(dtype, np.floating)
    wide = floating and np.finfo(dtype).max > np.finfo(np.float32).max
    top = np.finfo(np.float32).max
    out, start = _Scan(), 0
    chunks = source.chunks() if isinstance(source, ArrayRef) else _in_memory_chunks(source)
    for chunk in chunks:
        if floating:
            bad = ~np.isfinite(chunk)
            count = int(bad.sum())
            if count:
                if out.first_nonfinite is None:
                    j = int(np.argmax(bad))
                    out.first_nonfinite = (start + j, chunk[j].copy())
                out.nonfinite += count
            if wide and not out.nonfinite:
                far = np.abs(chunk) > top
                count = int(far.sum())
                if count:
                    if out.first_beyond is None:
                        j = int(np.argmax(far))
                        out.first_beyond = (start + j, chunk[j].copy())
                    out.beyond += count
        if extent and not out.nonfinite and chunk.size:
            out.lo, out.hi = min(out.lo, float(chunk.min())), max(out.hi, float(chunk.max()))
        start += chunk.size
    return out


def _item_shape(shape: tuple[int, ...], layout: str) -> tuple[int, ...]:
    """An item's shape as a batch holds it (channels first) from the array's shape and layout."""
    item = tuple(int(s) for s in shape[1:])
    return {"nchw": item, "nhwc": (item[-1], *item[:2]), "nhw": (1, *item), "nl": item}[layout]


class MappedArrays:
    r"""Items that are rows of an array held in a file (memory-mapped) or in memory (the ``Dataset`` protocol).

    Built by :func:`load_npz`. Each process maps the file on first use (loader workers receive a copy
    holding only the file name, offset, shape and dtype, the split's row numbers and the labels).

    Args:
        name: Data set name.
        source: Where the values are (:class:`ArrayRef`) or the array itself.
        modality: ``"image"`` or ``"signal"``.
        layout: How an item lies in ``source``: ``"nchw"``, ``"nhwc"``, ``"nhw"`` (images) or ``"nl"`` (signals).
        rows: The rows of ``source`` in this data set (``None``: all), int64 (n,).
        labels: Class labels of the data set's items, int64 (n,), or ``None``.
        classes: What each label stands for, in label order (names, or the source's integer label values).
        named: Whether ``classes`` are names (string labels, or a ``class_names`` array); else
            ``class_names`` is ``None``.
    """

    factor_names: tuple[str, ...] = ()

    def __init__(self, name: str, source: ArrayRef | np.ndarray, *, modality: str, layout: str,
                 rows: np.ndarray | None = None, labels: np.ndarray | None = None,
                 classes: tuple[str, ...] = (), named: bool = True) -> None:
        self.name, self.modality, self.layout = name, modality, layout
        self.in_memory = isinstance(source, np.ndarray)
        if self.in_memory and rows is not None:  # hold only this split's rows
            source, rows = np.ascontiguousarray(source[rows]), None
        self._source, self._values, self.rows = source, source if self.in_memory else None, rows
        self.labels, self.classes = labels, classes if labels is not None else ()
        self.named = named
        self.modalities: dict[str, tuple[int, ...]] = {modality: _item_shape(source.shape, layout)}

    @property
    def num_classes(self) -> int | None:
        return len(self.classes) if self.labels is not None else None

    @property
    def class_names(self) -> tuple[str, ...] | None:
        """What label ``i`` is called (see :func:`load_npz`); ``None`` when unlabelled or for integer labels
        without a ``class_names`` array."""
        return tuple(self.classes) if self.labels is not None and self.named else None

    def __len__(self) -> int:
        return int(self._source.shape[0]) if self.rows is None else len(self.rows)

    def __repr__(self) -> str:
        return f"MappedArrays({self.name!r}, n={len(self)}, modalities={self.modalities})"

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        if not self.in_memory:
            state["_values"] = None  # a mapping does not cross processes: each maps the file again
        return state

    def get(self, index: torch.Tensor) -> Batch:
        """The items at ``index`` (int64, shape (B,)): their rows read and converted (see the module docstring)."""
        index = torch.as_tensor(index, dtype=torch.int64).reshape(-1)
        if self._values is None:
            self._values = self._source.open()
        where = index.numpy()
        rows = where if self.rows is None else self.rows[where]
        x = np.asarray(self._values)[rows]
        if self.layout == "nhw":
            x = x[:, None]
        elif self.layout == "nhwc":
            x = x.transpose(0, 3, 1, 2)
        x = np.ascontiguousarray(x, dtype=np.uint8 if x.dtype == np.uint8 and self.modality == "image" else np.float32)
        return Batch(inputs={self.modality: torch.from_numpy(x)},
                     labels=None if self.labels is None else torch.from_numpy(self.labels[where]),
                     index=index.clone())


def _check_inputs(source: ArrayRef | np.ndarray, key: str, modality: str | None, store) -> tuple[str, str]:
    """The modality and layout of an input array, after every check on its dtype, shape and values."""
    shape, dtype, what = tuple(source.shape), np.dtype(source.dtype), store.label("array", key)
    if not np.issubdtype(dtype, np.number) or np.issubdtype(dtype, np.complexfloating):
        raise UserError(f"{what} must be real numbers, got dtype {dtype}")
    if len(shape) > 0 and shape[0] == 0:
        raise UserError(f"{what} has shape {shape}: it holds no items")
    if int(np.prod(shape, dtype=np.int64)) == 0:
        raise UserError(f"{what} has shape {shape}: its items hold no values")
    if modality is None:
        modality = "image" if len(shape) in (3, 4) else "signal"
    if modality not in MODALITIES:
        raise ValueError(f"modality must be one of {MODALITIES}, got {modality!r}")
    image = modality == "image" and dtype != np.uint8
    scan = _scan(source, extent=image) if np.issubdtype(dtype, np.floating) or image else _Scan()
    for count, first, kind in ((scan.nonfinite, scan.first_nonfinite, "NaN or infinite values"),
                               (scan.beyond, scan.first_beyond,
                                f"values beyond float32's range (±{np.finfo(np.float32).max:.4g})")):
        if count:
            at = tuple(int(i) for i in np.unravel_index(first[0], shape, order=_order(source)))
            raise UserError(f"{what} holds {count} {kind} (the first at index {at}: {first[1]})")
    if modality == "signal":
        if len(shape) != 2:
            raise UserError(f"{what} has shape {shape}; a signal array must be (N, L)")
        return modality, "nl"
    if len(shape) == 3:
        layout = "nhw"
    elif len(shape) == 4 and shape[-1] in (1, 3) and shape[1] not in (1, 3):
        layout = "nhwc"
    elif len(shape) == 4 and shape[1] in (1, 3):
        layout = "nchw"
    else:
        raise UserError(f"{what} has shape {shape}; images must be (N, H, W), (N, C, H, W) or "
                        f"(N, H, W, C) with C = 1 or 3")
    if image and (scan.lo < 0.0 or scan.hi > 1.0):
        raise UserError(f"{what} holds images with values in [{scan.lo:g}, {scan.hi:g}]; "
                        f"images must be uint8 or floats in [0, 1]")
    return modality, layout


def _labels(y: np.ndarray, key: str, n: int, store) -> np.ndarray:
    what = store.label("labels", key)
    if y.shape != (n,):
        raise UserError(f"{what} have shape {y.shape} but the inputs hold {n} items")
    if not (np.issubdtype(y.dtype, np.number) or np.issubdtype(y.dtype, np.str_) or y.dtype == np.bool_) \
            or np.issubdtype(y.dtype, np.complexfloating):
        raise UserError(f"{what} must be integers or strings, got dtype {y.dtype}")
    if np.issubdtype(y.dtype, np.floating):
        if not np.isfinite(y).all():
            raise UserError(f"{what} hold NaN or infinite values")
        if not np.all(y == np.round(y)):
            raise UserError(f"{what} must be integers or strings, got non-integer floats")
    return y


def _read_names(store, key: str) -> np.ndarray:
    """The class names stored under ``key``, checked to be a non-empty 1-D array of distinct, non-empty strings;
    a one-line ``ValueError`` naming the file and member otherwise."""
    what = store.label("class names", key)
    try:
        names = store.load(key, "class names")
    except UserError as err:  # unreadable, or Python objects (pickle is never allowed)
        raise ValueError(f"{one_line(err)}; store class names as a string array, e.g. np.array(['cat', 'dog'])") \
            from None
    if np.issubdtype(names.dtype, np.bytes_):
        try:
            names = np.char.decode(names, "utf-8")
        except UnicodeDecodeError:
            raise ValueError(f"{what} hold bytes that are not UTF-8 text") from None
    if not np.issubdtype(names.dtype, np.str_):
        raise ValueError(f"{what} must be strings, e.g. np.array(['cat', 'dog']), got dtype {names.dtype}")
    if names.ndim != 1 or names.size == 0:
        raise ValueError(f"{what} must be a 1-D array of one name per class, got shape {names.shape}")
    empty = [i for i, n in enumerate(names.tolist()) if not n.strip()]
    if empty:
        raise ValueError(f"{what} hold an empty name (at index {empty[0]}); each class needs a name")
    unique, counts = np.unique(names, return_counts=True)
    if (counts > 1).any():
        raise ValueError(f"{what} name {str(unique[counts > 1][0])!r} more than once; each class needs its own name")
    return names


def _name_order(names: np.ndarray, values: np.ndarray, key: str, store) -> tuple[np.ndarray, tuple[str, ...]]:
    """Where each class goes, and the classes, once the ``class_names`` array ``names`` names the classes whose
    sorted distinct label values are ``values``: class ``j`` (``values[j]``) becomes label ``order[j]``. Integer
    labels ``0 .. K-1`` keep their place (label ``i`` is ``names[i]``); string labels must be the names
    themselves, and take the names' order."""
    what, k = store.label("class names", key), len(values)
    if len(names) != k:
        raise ValueError(f"{what} hold {len(names)} names but the labels hold {k} classes; give one name per class")
    if np.issubdtype(values.dtype, np.str_):
        missing = sorted(set(values.tolist()) - set(names.tolist()))
        if missing:
            raise ValueError(f"{what} do not name the label {missing[0]!r}; with string labels they must be the "
                             f"label strings (in the order the labels should take)")
        where = {n: i for i, n in enumerate(names.tolist())}
        return np.asarray([where[v] for v in values.tolist()], dtype=np.int64), tuple(names.tolist())
    if not np.array_equal(values.astype(np.float64), np.arange(k, dtype=np.float64)):
        shown = ", ".join(f"{v:g}" for v in values[:5].astype(np.float64)) + (", ..." if k > 5 else "")
        raise ValueError(f"{what} name labels 0..{k - 1}, but the labels are {shown}; label i must be called "
                         f"class_names[i]")
    return np.arange(k, dtype=np.int64), tuple(names.tolist())


def load_npz(*, path: str, split: str = "train", seed: int = 0, x: str = "x", y: str | None = "y",
             x_test: str | None = None, y_test: str | None = None, modality: str | None = None,
             test_fraction: float = 0.2, class_names: str | None = "class_names") -> MappedArrays:
    r"""Arrays from an ``.npz`` file (inputs under key ``x``, optional labels under key ``y``) or a ``.npy``
    file of inputs, memory-mapped (see the module docstring).

    With a ``.npy`` ``path``, the file holds the inputs and ``y``, ``x_test``, ``y_test`` name ``.npy``
    files beside it: ``y="y"`` is ``y.npy`` in the same folder, ``y="labels/train.npy"`` a path
    relative to that folder.

    Inputs of 3 or 4 dimensions are images ((N, H, W), (N, C, H, W) or (N, H, W, C); uint8 stays uint8
    (C, H, W), other types become float32 and must lie in [0, 1]); 2-D inputs are signals (N, L),
    float32. Labels (ints or strings) are mapped to ``0..K-1`` in sorted order. With ``x_test`` (and
    ``y_test``) the file's own test arrays form the test split; otherwise a fixed stratified split is used.

    Class names (``class_names`` of the data set): string labels are their own names; integer labels
    are named by an optional string array stored under the key ``class_names`` (``.npz``; a
    ``class_names.npy`` file beside a ``.npy`` path), one name per class: label ``i`` is called
    ``class_names[i]`` (e.g. ``np.savez(f, x=x, y=y, class_names=np.array(["cat", "dog"]))``). Beside
    string labels such an array must list the same names, and sets the label order. Integer labels
    without it have no names (``class_names`` is ``None``).

    Args:
        path: The ``.npz`` or ``.npy`` file.
        split: ``"train"`` or ``"test"``.
        seed: Unused (the split is fixed or given by the file).
        x: Key of the inputs (``.npz``; with a ``.npy`` path the file itself is the inputs).
        y: Key (or ``.npy`` file) of the labels; ``None`` for unlabelled inputs.
        x_test: Key (or file) of the test split's inputs, when the data name their test items.
        y_test: Key (or file) of the test split's labels.
        modality: ``"image"`` or ``"signal"``; by default 3-D and 4-D inputs are images.
        test_fraction: Fraction of the items (of each class) in the test split, without ``x_test``.
        class_names: Key (or ``.npy`` file) of the class names, read when present; ``None``: none read.

    Returns:
        A data set with ``"image"`` (C, H, W) (uint8, or float32 in [0, 1]) or ``"signal"`` float32 (L,),
        and int64 labels (or none).

    Raises:
        ValueError: For a bad option value, or class names that are not one distinct string per class
            (naming the file and key).
        contrastlab.errors.UserError: For a missing file or key, NaN/inf values or values beyond
            float32's range (naming the key), an empty array, a shape that is not an image or signal,
            train and test inputs of different item shapes, or labels that do not match the inputs.

    Example:
        >>> import tempfile
        >>> f = Path(tempfile.mkdtemp()) / "d.npz"
        >>> np.savez(f, x=np.random.rand(10, 16), y=np.arange(10) % 2)
        >>> ds = load_npz(path=str(f), split="test")
        >>> len(ds), ds.modalities, ds.num_classes, ds.class_names
        (2, {'signal': (16,)}, 2, None)
        >>> np.savez(f, x=np.random.rand(10, 16), y=np.arange(10) % 2, class_names=np.array(["even", "odd"]))
        >>> load_npz(path=str(f)).class_names
        ('even', 'odd')
    """
    check_split(split)
    check_fraction(test_fraction)
    file = Path(path).expanduser()
    npy = file.suffix.lower() == ".npy"
    if not file.is_file():
        raise UserError(f"{'npy' if npy else 'npz'} file '{file}' not found")
    if y_test is not None and x_test is None:
        raise ValueError("y_test needs x_test")
    if npy and x != "x":
        raise ValueError(f"x names an array inside an .npz file; a .npy path is itself the inputs (got x={x!r})")
    if class_names is not None and not isinstance(class_names, str):
        raise ValueError(f"class_names must name an array (a string) or be None, got {class_names!r}")
    store = _Npy(file) if npy else _Npz(file)
    try:
        use_file_split = x_test is not None
        x_key = x_test if (use_file_split and split == "test") else x
        y_key = (y_test if (use_file_split and split == "test") else y) if y is not None else None
        source = store.source(x_key)
        name, layout = _check_inputs(source, x_key, modality, store)
        n = int(source.shape[0])
        labels = None if y_key is None else _labels(store.load(y_key, "labels"), y_key, n, store)
        all_labels = labels
        if use_file_split:  # both splits are checked on every call: a broken test split fails before training
            other_x = x if split == "test" else x_test
            other = store.source(other_x)
            other_name, other_layout = _check_inputs(other, other_x, modality, store)
            if (other_name, _item_shape(other.shape, other_layout)) != (name, _item_shape(source.shape, layout)):
                a, b = (source, other) if split == "train" else (other, source)
                raise UserError(f"{store.pair('arrays', x, x_test)} hold items of different shapes, "
                                f"{tuple(a.shape[1:])} and {tuple(b.shape[1:])} (array shapes {tuple(a.shape)} and "
                                f"{tuple(b.shape)}); the train and test inputs must match")
            if y is not None and y_test is not None:  # classes from both splits
                other_y = y if split == "test" else y_test
                other_labels = _labels(store.load(other_y, "labels"), other_y, int(other.shape[0]), store)
                a, b = (labels, other_labels) if split == "train" else (other_labels, labels)
                if np.issubdtype(a.dtype, np.str_) != np.issubdtype(b.dtype, np.str_):
                    raise UserError(f"{store.pair('labels', y, y_test)} must both be strings or both "
                                    f"numbers, got dtypes {a.dtype} and {b.dtype}")
                all_labels = np.concatenate([labels, other_labels])
        names = None
        if labels is not None and class_names is not None:
            if store.has(class_names):
                names = _read_names(store, class_names)
            elif class_names != "class_names":  # named on purpose: it must be there
                store._check(class_names, "class names")
    finally:
        store.close()
    classes, named, order = None, False, None
    if labels is not None:
        classes, codes = np.unique(all_labels, return_inverse=True)
        labels = codes.reshape(-1)[:len(labels)].astype(np.int64)
        named = bool(np.issubdtype(classes.dtype, np.str_))
        if names is not None:
            order, classes = _name_order(names, classes, class_names, store)
            named = True
    rows = None
    if not use_file_split:  # split by the sorted classes: naming them does not move items between splits
        rows = split_indices(n, split, labels=labels, test_fraction=test_fraction)
        labels = None if labels is None else labels[rows]
    if order is not None:
        labels = order[labels]
    if isinstance(source, ArrayRef) and source.nbytes <= IN_MEMORY_BYTES:
        source = np.array(source.open())  # small: one read, then held in memory
    return MappedArrays(f"{'npy' if npy else 'npz'}:{file.stem}", source, modality=name, layout=layout, rows=rows,
                        labels=labels, classes=() if classes is None else tuple(str(c) for c in classes), named=named)
