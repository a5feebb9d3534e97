r"""Sharded tar streams in the WebDataset layout: :func:`pack` writes them, :func:`load_shards` reads them.

A *pack* is a folder::

    shards.json              the index: format version, source, classes, modalities, vocabulary, and
                             for each split its shard files and their item counts
    train-000000.tar         items 0 .. 999 of the train split
    train-000001.tar         ...
    test-000000.tar          the test split's items

Each shard is a plain tar archive of members ``KEY.EXT`` grouped by key, one group per item, in
order: ``000000012.png`` (the original encoded image bytes, not re-encoded), ``000000012.cls`` (the
class index as text), ``000000012.txt`` (the caption). ``KEY`` is the item's number in its split.

**Split.** The split is made when packing: an image folder or manifest is split exactly as
:func:`~contrastlab.data.user.load_image_folder` / :func:`~contrastlab.data.manifest.load_manifest`
split it (the same fixed, stratified ``test_fraction``, or the manifest's ``split`` column), so a pack's
test items are the source's test items. Cutting the last shards off instead would give a test split of
whatever classes sort last. ``test_fraction=0`` puts every item in the train split.

**Order.** Items are written in a fixed pseudo-random order (``seed``), so that every shard mixes the
classes: a stream's shuffle buffer only mixes nearby items. Packing twice gives identical bytes.

**Reading as a stream.** :meth:`Shards.epoch` reads each tar from start to end, never seeking (see its
docstring for the determinism contract that makes exact resume and DDP work); :meth:`Shards.head`
gives the first items for checks.

Why the standard library's :mod:`tarfile` and not the ``webdataset`` package: the layout is simple
(members grouped by key, read in order), so reading and writing it takes a few dozen lines with no
dependency; the determinism contract (shards permuted by epoch, split by rank and loader lane, a seeded
buffer of undecoded records, resuming at a batch without decoding what it skips, corrupt items replaced
without shifting later batches) would otherwise have to be rebuilt around ``webdataset``'s pipeline
stages anyway. The shards follow WebDataset's conventions (an item's key is its members' names up to
the first dot), so ``webdataset`` can read them too, and any tar tool lists them.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import sys
import tarfile
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from contrastlab.data._images import IMAGE_SUFFIXES, check_image_options, decode_image
from contrastlab.data._split import SPLITS, check_fraction, check_split
from contrastlab.data.base import Batch
from contrastlab.data.captions import Vocabulary, words
from contrastlab.data.lazy import check_on_error
from contrastlab.errors import UserError, check_can_create, one_line
from contrastlab.files import atomic_write_text, fsync_dir
from contrastlab.seeds import derive_seed

INDEX = "shards.json"
FORMAT, VERSION = "contrastlab.shards", 1
SHARD_NAME = re.compile(r"(train|test)-\d{6}\.tar")
_STAGING = ".pack-partial"  #: where a pack is written before it replaces the folder's contents
IMAGE_MEMBERS = frozenset(s.lstrip(".") for s in IMAGE_SUFFIXES)
_GREY_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F")


# ---------------------------------------------------------------------------------------------- writing


@dataclass
class _Item:
    image: Path
    label: int | None
    caption: str | None
    where: str  #: names the item's origin in messages ("image 'a/1.png'", "m.csv line 3")


def _progress_enabled(progress: bool) -> bool | None:
    """tqdm's ``disable``: off when asked or under ``CONTRASTLAB_NO_PROGRESS``, else only on a terminal."""
    return True if not progress or os.environ.get("CONTRASTLAB_NO_PROGRESS") else None


def _folder_source(base: Path, labels: str, test_fraction: float):
    from contrastlab.data._split import split_indices
    from contrastlab.data.user import list_images

    # the image folder's own listing and split (load_image_folder's); no image is opened here
    if not base.is_dir():
        raise UserError(f"image folder '{base}' does not exist or is not a folder")
    files, y, classes = list_images(base, labels)

    def items(keep):
        return [_Item(files[i], None if y is None else int(y[i]), None, f"image '{files[i]}'") for i in keep]

    if test_fraction:
        splits = {s: items(split_indices(len(files), s, labels=y, test_fraction=test_fraction)) for s in SPLITS}
    else:  # every image in the train split, in the folder's order (by class, then path)
        splits = {"train": items(range(len(files))), "test": []}
    return splits, list(classes), None, {"kind": "image_folder", "path": str(base.resolve()), "labelled": y is not None}


def _manifest_source(file: Path, test_fraction: float):
    from contrastlab.data._split import split_indices
    from contrastlab.data.manifest import read_manifest

    rows = read_manifest(file)
    columns = set().union(*(r.keys() for _, r in rows))
    if "audio" in columns:
        raise UserError(f"manifest '{file}' has an 'audio' field; packing audio is not supported (read the "
                        f"manifest directly with the data set 'manifest')")
    if "image" not in columns or "caption" not in columns:
        raise UserError(f"manifest '{file}' needs an 'image' and a 'caption' field to pack; "
                        f"found: {', '.join(sorted(columns)) or 'none'}")
    for n, row in rows:
        for field in ("image", "caption", *(("label",) if "label" in columns else ())):
            if not row.get(field):
                raise UserError(f"{file.name} line {n}: empty or missing '{field}'")
        if "split" in columns and row.get("split") not in SPLITS:
            raise UserError(f"{file.name} line {n}: split must be 'train' or 'test', got {row.get('split')!r}")
    classes, codes = (), None
    if "label" in columns:
        names, codes = np.unique([r["label"] for _, r in rows], return_inverse=True)
        classes = tuple(str(c) for c in names)
    if "split" in columns:
        test = {i for i, (_, r) in enumerate(rows) if r["split"] == "test"}
    elif test_fraction:
        test = set(split_indices(len(rows), "test", labels=codes, test_fraction=test_fraction).tolist())
    else:
        test = set()

    def item(i: int) -> _Item:
        n, row = rows[i]
        path = Path(row["image"]).expanduser()
        path = path if path.is_absolute() else file.parent / path
        return _Item(path, None if codes is None else int(codes[i]), row["caption"], f"{file.name} line {n}")

    splits = {"train": [item(i) for i in range(len(rows)) if i not in test],
              "test": [item(i) for i in range(len(rows)) if i in test]}
    vocab = Vocabulary.from_texts(r["caption"] for _, r in rows)  # as load_manifest: every line, both splits
    text = {"vocabulary": list(vocab.tokens), "text_length": max(len(words(r["caption"])) for _, r in rows)}
    return splits, classes, text, {"kind": "manifest", "path": str(file.resolve()), "labelled": codes is not None}


def _image_bytes(item: _Item, size, channels: int) -> tuple[bytes, str, tuple[int, int, int]]:
    """The bytes to store, their extension, and the image's (C, H, W) read from its header only."""
    from PIL import Image, UnidentifiedImageError

    try:
        data = item.image.read_bytes()
    except OSError as err:
        raise UserError(f"{item.where}: cannot read image '{item.image}': {err.strerror or one_line(err)}") from None
    if size is not None:  # resized and re-encoded as PNG
        arr = decode_image(data, channels=channels, size=size, where=item.where, name=str(item.image))
        buf = io.BytesIO()
        Image.fromarray(arr[0] if channels == 1 else arr.transpose(1, 2, 0)).save(buf, "PNG")
        return buf.getvalue(), "png", tuple(arr.shape)
    try:
        with Image.open(io.BytesIO(data)) as img:
            width, height, mode = img.width, img.height, img.mode
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError) as err:
        raise UserError(f"{item.where}: cannot read image '{item.image}': {one_line(err)} (`contrastlab data "
                        f"check` lists every unreadable file)") from None
    return data, item.image.suffix.lower().lstrip("."), (1 if mode in _GREY_MODES else 3, height, width)


def _member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)  # fixed owner, mode and time: packing twice gives identical bytes
    info.size, info.mode, info.mtime = len(data), 0o644, 0
    tar.addfile(info, io.BytesIO(data))


class _ShardWriter:
    """Items of one split into ``{split}-NNNNNN.tar`` files of at most ``shard_items`` items / ``shard_bytes``."""

    def __init__(self, folder: Path, split: str, shard_items: int, shard_bytes: int | None) -> None:
        self.folder, self.split, self.shard_items, self.shard_bytes = folder, split, shard_items, shard_bytes
        self.shards: list[dict] = []
        self._file = self._tar = None
        self.count = 0

    def add(self, members: Sequence[tuple[str, bytes]]) -> None:
        if self._tar is None:
            name = f"{self.split}-{len(self.shards):06d}.tar"
            self.shards.append({"name": name, "items": 0})
            self._file = open(self.folder / name, "wb")  # noqa: SIM115 - closed in _close
            self._tar = tarfile.open(fileobj=self._file, mode="w", format=tarfile.USTAR_FORMAT)
        key = f"{self.count:09d}"
        for ext, data in members:
            _member(self._tar, f"{key}.{ext}", data)
        self.count += 1
        self.shards[-1]["items"] += 1
        if self.shards[-1]["items"] >= self.shard_items or (
                self.shard_bytes is not None and self._file.tell() >= self.shard_bytes):
            self._close()

    def _close(self) -> None:
        if self._tar is not None:
            self._tar.close()
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            self._tar = self._file = None

    def finish(self) -> list[dict]:
        self._close()
        return self.shards

    def abort(self) -> None:
        if self._file is not None:
            self._file.close()


def _write_split(writer: _ShardWriter, items: Sequence[_Item], n_classes: int, size, channels: int,
                 seen: dict, bar) -> list[int]:
    """Write ``items`` in order, note their sizes in ``seen``, and return the number of items per class."""
    counts = [0] * n_classes
    for item in items:
        data, ext, shape = _image_bytes(item, size, channels)
        seen["first"] = seen["first"] or shape
        seen["sizes"][shape[1:]] = seen["sizes"].get(shape[1:], 0) + 1
        members = [(ext, data)]
        if item.label is not None:
            members.append(("cls", str(item.label).encode()))
            counts[item.label] += 1
        if item.caption is not None:
            members.append(("txt", item.caption.encode("utf-8")))
        writer.add(members)
        bar.update(1)
    return counts


def _check_out(out: Path, overwrite: bool) -> list[Path]:
    """The previous pack's files in ``out`` (to replace), after refusing anything else in the way."""
    if out.exists() and not out.is_dir():
        raise UserError(f"output folder '{out}' is a file")
    check_can_create(out, "output folder")
    entries = [p for p in out.iterdir() if p.name != _STAGING] if out.is_dir() else []
    if not entries:
        return []
    ours = [p for p in entries if p.name == INDEX or SHARD_NAME.fullmatch(p.name)]
    if not overwrite:
        what = "a previous pack" if (out / INDEX).is_file() else f"'{entries[0].name}'"
        raise UserError(f"output folder '{out}' is not empty (it holds {what}); choose a new folder, or pass "
                        f"--overwrite to replace a previous pack")
    if len(ours) < len(entries):
        stranger = next(p for p in entries if p not in ours)
        raise UserError(f"output folder '{out}' holds '{stranger.name}', which is not part of a pack; --overwrite "
                        f"replaces only a previous pack (shards.json and its .tar shards): choose another folder")
    return ours


def pack(source: str | os.PathLike, out_dir: str | os.PathLike, *, shard_items: int = 1000,
         shard_mb: float | None = None, test_fraction: float = 0.2, labels: str = "auto",
         size: int | tuple[int, int] | None = None, channels: int = 3, shuffle: bool = True, seed: int = 0,
         overwrite: bool = False, progress: bool = True) -> dict:
    r"""Write an image folder or an image-caption manifest as tar shards and an index (see the module docstring).

    Image bytes are copied as they are (only each image's header is read, for its size); ``.cls``
    members hold class indices, ``.txt`` members captions, and the index holds the vocabulary of the
    captions. The pack is written in ``out_dir/.pack-partial`` and moved into place once complete, so a
    failure leaves no stray files and leaves a previous pack in ``out_dir`` untouched.

    Args:
        source: An image folder (``root/<class>/<image>`` or a flat folder) or a ``.csv`` / ``.jsonl``
            manifest with ``image`` and ``caption`` fields (optional ``label`` and ``split``).
        out_dir: The folder to write (new, empty, or holding a previous pack with ``overwrite``).
        shard_items: Items per shard (the last shard of a split may hold fewer).
        shard_mb: Also start a new shard once one reaches this many megabytes (10^6 bytes).
        test_fraction: Fraction of the items (of each class) in the test split, as the source's own data
            set splits it; 0 puts every item in the train split. A manifest's ``split`` column wins.
        labels: For an image folder: ``"auto"``, ``"folders"`` or ``"none"`` (as ``load_image_folder``).
        size: Resize every image to this (int or (height, width)) and store it as PNG; by default the
            original bytes are stored.
        channels: 3 or 1: the channels of the re-encoded images (only with ``size``).
        shuffle: Write the items in a fixed pseudo-random order (``seed``) instead of the source's order.
        seed: The seed of that order.
        overwrite: Replace a previous pack in ``out_dir``.
        progress: A progress bar on stderr (on a terminal only; ``CONTRASTLAB_NO_PROGRESS`` turns it off).

    Returns:
        The index written to ``out_dir/shards.json``.

    Raises:
        ValueError: For a bad option value.
        contrastlab.errors.UserError: For a missing or unusable source, an image whose header cannot be
            read (naming it), or an ``out_dir`` that is not empty.

    Example:
        >>> import tempfile
        >>> from PIL import Image
        >>> d = Path(tempfile.mkdtemp())
        >>> for c in ("cat", "dog"):
        ...     (d / "imgs" / c).mkdir(parents=True)
        ...     for i in range(5):
        ...         Image.new("RGB", (6, 4)).save(d / "imgs" / c / f"{i}.png")
        >>> index = pack(d / "imgs", d / "packed", shard_items=4)
        >>> [(s["name"], s["items"]) for s in index["splits"]["train"]["shards"]], index["modalities"]
        ([('train-000000.tar', 4), ('train-000001.tar', 4)], {'image': [3, 4, 6]})
    """
    if isinstance(shard_items, bool) or not isinstance(shard_items, int) or shard_items < 1:
        raise ValueError(f"shard_items must be a positive integer, got {shard_items!r}")
    if shard_mb is not None and not (isinstance(shard_mb, (int, float)) and shard_mb > 0):
        raise ValueError(f"shard_mb must be a positive number, got {shard_mb!r}")
    if test_fraction != 0:
        check_fraction(test_fraction)
    if labels not in ("auto", "folders", "none"):
        raise ValueError(f"labels must be 'auto', 'folders' or 'none', got {labels!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    channels, hw = check_image_options(channels, size)
    src, out = Path(source).expanduser(), Path(out_dir).expanduser()
    if src.is_dir():
        if (src / INDEX).is_file():
            raise UserError(f"'{src}' is already a pack (it holds {INDEX}); read it with the data set 'shards'")
        splits, classes, text, origin = _folder_source(src, labels, test_fraction)
    elif src.suffix.lower() in (".csv", ".jsonl", ".ndjson"):
        splits, classes, text, origin = _manifest_source(src, test_fraction)
    elif not src.exists():
        raise UserError(f"source '{src}' not found (give an image folder or a .csv / .jsonl manifest)")
    else:
        raise UserError(f"source '{src}' is neither an image folder nor a .csv / .jsonl manifest")
    if out.resolve() == src.resolve() or (src.is_dir() and src.resolve() in out.resolve().parents):
        raise UserError(f"output folder '{out}' lies inside the source folder '{src}'; write the pack elsewhere")
    previous = _check_out(out, overwrite)

    from tqdm.auto import tqdm

    staging, created = out / _STAGING, not out.exists()
    shutil.rmtree(staging, ignore_errors=True)  # left by a run that was killed
    staging.mkdir(parents=True)
    writers: list[_ShardWriter] = []
    try:
        seen: dict = {"first": None, "sizes": {}}  # the first image's (C, H, W); (H, W) -> count
        index_splits = {}
        total = sum(len(v) for v in splits.values())
        with tqdm(total=total, desc="pack", unit="img", file=sys.stderr, mininterval=0.5,
                  disable=_progress_enabled(progress)) as bar:
            for number, split in enumerate(SPLITS):
                items = splits[split]
                order = np.random.default_rng([seed, number]).permutation(len(items)) if shuffle \
                    else np.arange(len(items))
                writers.append(_ShardWriter(staging, split, shard_items,
                                            None if shard_mb is None else int(shard_mb * 1e6)))
                counts = _write_split(writers[-1], [items[i] for i in order.tolist()], len(classes), hw, channels,
                                      seen, bar)
                index_splits[split] = {"items": len(items), "shards": writers[-1].finish(),
                                       "class_counts": counts if origin["labelled"] else None}
        first_shape, sizes = seen["first"], seen["sizes"]
        if first_shape is None:
            raise UserError(f"source '{src}' holds no items")
        index = {
            "format": FORMAT, "version": VERSION, "source": origin,
            "classes": list(classes) if origin["labelled"] else [],
            "modalities": {"image": list(first_shape), **({"text": [text["text_length"]]} if text else {})},
            "image_sizes": {f"{w}x{h}": n for (h, w), n in sorted(sizes.items(), key=lambda kv: -kv[1])[:20]},
            "image_sizes_distinct": len(sizes),
            **(text or {}),
            "splits": index_splits,
            "options": {"shard_items": shard_items, "shard_mb": shard_mb, "test_fraction": test_fraction,
                        "shuffle": shuffle, "seed": seed, "size": None if hw is None else list(hw)},
        }
        written = {s["name"] for part in index_splits.values() for s in part["shards"]}
        (out / INDEX).unlink(missing_ok=True)  # from here until the new index exists, out_dir is no pack
        for name in sorted(written):
            os.replace(staging / name, out / name)
        for path in previous:
            if path.name not in written and path.name != INDEX:
                path.unlink(missing_ok=True)
        atomic_write_text(out / INDEX, json.dumps(index, indent=1) + "\n")
        staging.rmdir()
        fsync_dir(out)
    except BaseException:
        for writer in writers:
            writer.abort()
        shutil.rmtree(staging, ignore_errors=True)
        if created and out.is_dir() and not any(out.iterdir()):
            out.rmdir()
        raise
    return index


# ---------------------------------------------------------------------------------------------- reading


def read_index(root: str | os.PathLike) -> dict:
    """A pack's ``shards.json``; :class:`UserError` naming the folder when it is not a pack."""
    base = Path(root).expanduser()
    if not base.is_dir():
        raise UserError(f"shard folder '{base}' does not exist or is not a folder")
    file = base / INDEX
    if not file.is_file():
        raise UserError(f"'{base}' holds no {INDEX}: not a folder written by `contrastlab data pack` "
                        f"(or an interrupted one: pack it again with --overwrite)")
    try:
        index = json.loads(file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UserError(f"'{file}' is not valid JSON: {one_line(err)}") from None
    if not isinstance(index, dict) or index.get("format") != FORMAT:
        raise UserError(f"'{file}' is not a contrastlab shard index (no \"format\": \"{FORMAT}\")")
    if index.get("version") != VERSION:
        raise UserError(f"'{file}' has format version {index.get('version')!r}; this contrastlab reads "
                        f"version {VERSION} (pack the source again)")
    return index


@dataclass
class Record:
    """One item of a shard as stored: its members' undecoded bytes by extension."""

    shard: Path
    index: int  #: the item's number in its split (the shard's offset + its position in the shard)
    key: str
    fields: dict[str, bytes]
    item: tuple | None = None  #: decoded (index, image, label, caption), once it has been
    error: UserError | None = None


def shard_records(path: Path, *, offset: int = 0, expected: int | None = None,
                  on_error: str = "fail") -> Iterator[Record]:
    """The items of one tar shard in order, read as a stream (never seeking).

    A damaged tar, or one that holds fewer than the ``expected`` items (a tar cut at a member boundary
    reads as a shorter archive), raises :class:`UserError` naming it (``on_error="fail"``); with
    ``"skip"`` the shard's remaining items are lost (the readable ones before the damage are kept).
    """
    position, key, fields = 0, None, {}
    try:
        with tarfile.open(path, mode="r|") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                folder, _, base = member.name.rpartition("/")
                stem, _, ext = base.partition(".")
                k = f"{folder}/{stem}" if folder else stem
                if key is not None and k != key:
                    yield Record(path, offset + position, key, fields)
                    position, fields = position + 1, {}
                key = k
                fields[ext.lower()] = tar.extractfile(member).read()
    except (tarfile.TarError, OSError, EOFError) as err:
        if on_error == "fail":
            raise UserError(f"shard '{path}': cannot read the tar archive after {position} item(s): "
                            f"{one_line(err)}") from None
        return
    found = position + (key is not None)
    if expected is not None and found < expected and on_error == "fail":
        raise UserError(f"shard '{path}' ends after {found} of its {expected} items (a truncated file?)")
    if key is not None:
        yield Record(path, offset + position, key, fields)


def _buffered(records: Iterator[Record], size: int, rng: np.random.Generator) -> Iterator[Record]:
    """A shuffle buffer: each record leaves at a random time within ``size`` records of arriving."""
    if size <= 1:
        yield from records
        return
    buf: list[Record] = []
    for record in records:
        buf.append(record)
        if len(buf) >= size:
            k = int(rng.integers(len(buf)))
            buf[k], buf[-1] = buf[-1], buf[k]
            yield buf.pop()
    while buf:
        k = int(rng.integers(len(buf)))
        buf[k], buf[-1] = buf[-1], buf[k]
        yield buf.pop()


class _Lane:
    r"""A sequence of shards read in order (over and over when ``cycle``), through a shuffle buffer, cut into
    batches. An unreadable item is replaced by the next readable one *after* its batch, which is peeked at
    and stays in the stream: every batch is cut from the same records whatever is unreadable, so skipping
    batches without decoding them (:meth:`skip`) lands where decoding them would have."""

    def __init__(self, ds: "Shards", shards: Sequence[int], *, rng: np.random.Generator | None, buffer: int,
                 cycle: bool) -> None:
        self.ds, self.shards, self.cycle = ds, list(shards), cycle
        self.size = sum(ds.shard_items[s] for s in self.shards)
        self.stream = self._passes(rng, buffer)
        self.ahead: deque[Record] = deque()

    def _pass(self) -> Iterator[Record]:
        for s in self.shards:
            yield from shard_records(self.ds.shard_paths[s], offset=self.ds.offsets[s],
                                     expected=self.ds.shard_items[s], on_error=self.ds.on_error)

    def _passes(self, rng: np.random.Generator | None, buffer: int) -> Iterator[Record]:
        """The lane's records, pass after pass when ``cycle``; each pass goes through the buffer and drains
        it before the next begins (so no item comes twice within a pass)."""
        while True:
            seen = 0
            for record in (self._pass() if rng is None else _buffered(self._pass(), buffer, rng)):
                seen += 1
                yield record
            if not self.cycle:
                return
            if seen == 0:
                names = ", ".join(self.ds.shard_paths[s].name for s in self.shards)
                raise UserError(f"no item of the shards {names} in '{self.ds.root}' can be read")

    def _pull(self) -> Record | None:
        return self.ahead.popleft() if self.ahead else next(self.stream, None)

    def skip(self, n: int) -> None:
        """Pass over ``n`` records without decoding them."""
        for _ in range(n):
            if self._pull() is None:
                return

    def _decoded(self, record: Record) -> tuple | None:
        if record.item is None and record.error is None:
            try:
                record.item = self.ds.decode(record)
            except UserError as err:
                if self.ds.on_error == "fail":
                    raise
                record.error = err
        return record.item

    def _replacement(self, taken: list[tuple], start: int) -> tuple[tuple, int]:
        """The first readable record at or after ``ahead[start]`` (read into ``ahead`` as needed), and where
        the search for the batch's next replacement starts."""
        for i in range(start, start + self.size + 1):
            if i == len(self.ahead):
                record = next(self.stream, None)
                if record is None:
                    break
                self.ahead.append(record)
            item = self._decoded(self.ahead[i])
            if item is not None:
                return item, i + 1
        if taken:  # the stream ended: repeat a readable item of this batch
            return taken[0], start
        raise UserError(f"none of the items of the shards read after an unreadable one in '{self.ds.root}' can "
                        f"be read (on_error: skip)")

    def batch(self, n: int) -> Batch | None:
        """The next ``n`` records decoded into a :class:`Batch` (fewer at the end of a finite lane; ``None``
        when it has ended)."""
        records = []
        for _ in range(n):
            record = self._pull()
            if record is None:
                break
            records.append(record)
        if not records:
            return None
        items, skipped, cursor = [], 0, 0
        for record in records:
            item = self._decoded(record)
            if item is None:
                (item, cursor), skipped = self._replacement(items, cursor), skipped + 1
            items.append(item)
        return self.ds.collate(items, skipped)


class ShardEpoch(torch.utils.data.IterableDataset):
    """One epoch of one rank's batches (made by :meth:`Shards.epoch`; iterate it, or hand it to a DataLoader)."""

    def __init__(self, ds: "Shards", lanes: list[list[int]], *, batch_size: int, steps: int | None, start: int,
                 seeds: list[int] | None, buffer: int) -> None:
        super().__init__()
        self.ds, self.lanes, self.batch_size, self.steps, self.start = ds, lanes, batch_size, steps, start
        self.seeds, self.buffer = seeds, buffer

    def __len__(self) -> int:
        if self.steps is not None:
            return self.steps - self.start
        return sum(-(-sum(self.ds.shard_items[s] for s in lane) // self.batch_size) for lane in self.lanes)

    def _lane(self, lane: int) -> _Lane:
        rng = None if self.seeds is None else np.random.default_rng(self.seeds[lane])
        return _Lane(self.ds, self.lanes[lane], rng=rng, buffer=self.buffer, cycle=self.steps is not None)

    def __iter__(self) -> Iterator[Batch]:
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        n_lanes = len(self.lanes)
        if n_lanes % workers:
            raise UserError(f"lanes={n_lanes} must be a multiple of the {workers} loader workers")
        b = self.batch_size
        if self.steps is None:  # every item once: this worker's lanes in turn until each has ended
            lanes = [self._lane(lane) for lane in range(n_lanes) if lane % workers == worker]
            while lanes:
                for lane in list(lanes):
                    batch = lane.batch(b)
                    if batch is None:
                        lanes.remove(lane)
                    else:
                        yield batch
            return
        # position p comes from lane p % lanes; the loader takes batch k from worker k % workers
        open_lanes: dict[int, _Lane] = {}
        for p in range(self.start + worker, self.steps, workers):
            lane = p % n_lanes
            if lane not in open_lanes:
                open_lanes[lane] = self._lane(lane)
                open_lanes[lane].skip(len(range(lane, self.start, n_lanes)) * b)
            yield open_lanes[lane].batch(b)


class Shards:
    r"""A pack's split read as a stream of batches (see :func:`load_shards` and the module docstring).

    There is no random access (``get``): :meth:`epoch` streams the items, :meth:`head` gives the first ones.
    """

    factor_names: tuple[str, ...] = ()
    in_memory = False  #: read by loader workers
    streaming = True  #: batches come from :meth:`epoch`, not from ``get(index)``

    def __init__(self, root: Path, index: dict, split: str, *, channels: int, size: tuple[int, int] | None,
                 on_error: str, shuffle_buffer: int) -> None:
        self.root, self.split, self.channels, self.size = root, split, channels, size
        self.on_error, self.shuffle_buffer = on_error, shuffle_buffer
        self.name = f"shards:{root.name}"
        part = index["splits"][split]
        self.shard_paths = [root / s["name"] for s in part["shards"]]
        self.shard_items = [int(s["items"]) for s in part["shards"]]
        self.offsets = np.concatenate([[0], np.cumsum(self.shard_items)[:-1]]).astype(int).tolist()
        self.num_items = int(sum(self.shard_items))
        self.labelled = bool(index["source"].get("labelled"))
        self.classes: tuple[str, ...] = tuple(index["classes"]) if self.labelled else ()
        self.vocabulary = Vocabulary(index["vocabulary"]) if "vocabulary" in index else None
        self.text_length = index.get("text_length")
        height_width = size or tuple(int(v) for v in index["modalities"]["image"][1:])
        self.modalities: dict[str, tuple[int, ...]] = {"image": (channels, *height_width)}
        if self.vocabulary is not None:
            self.modalities["text"] = (int(self.text_length),)

    @property
    def num_classes(self) -> int | None:
        return len(self.classes) if self.labelled else None

    def __len__(self) -> int:
        return self.num_items

    def __repr__(self) -> str:
        return (f"Shards({self.name!r}, split={self.split!r}, n={self.num_items}, shards={len(self.shard_paths)}, "
                f"modalities={self.modalities})")

    def steps_per_epoch(self, global_batch: int) -> int:
        """Full global batches in one epoch: ``num_items // global_batch``."""
        if isinstance(global_batch, bool) or not isinstance(global_batch, int) or global_batch < 1:
            raise ValueError(f"global_batch must be a positive integer, got {global_batch!r}")
        return self.num_items // global_batch

    def decode(self, record: Record) -> tuple:
        """A record's (index, image uint8 (C, H, W), label or None, caption or None); :class:`UserError`
        naming the shard and member when it cannot be read."""
        where = f"shard '{record.shard}'"
        ext = next((e for e in record.fields if e in IMAGE_MEMBERS), None)
        if ext is None:
            raise UserError(f"{where}: item '{record.key}' has no image member (it has: "
                            f"{', '.join(sorted(record.fields)) or 'nothing'})")
        name = f"{record.key}.{ext}"
        image = decode_image(record.fields[ext], channels=self.channels, size=self.size, where=where, name=name)
        if image.shape != self.modalities["image"]:
            raise UserError(f"{where}: image '{name}' is {image.shape[2]}x{image.shape[1]} (width x height) but the "
                            f"data set's items are {self.modalities['image'][2]}x{self.modalities['image'][1]}; "
                            f"pass size=... to resize every image")
        label = caption = None
        try:
            if self.labelled:
                label = int(record.fields["cls"].decode("ascii"))
                if not 0 <= label < len(self.classes):
                    raise ValueError(f"class index {label} outside [0, {len(self.classes)})")
            if self.vocabulary is not None:
                caption = record.fields["txt"].decode("utf-8")
        except KeyError as err:
            raise UserError(f"{where}: item '{record.key}' has no .{err.args[0]} member") from None
        except (UnicodeDecodeError, ValueError) as err:
            raise UserError(f"{where}: item '{record.key}': bad .cls or .txt member ({one_line(err)})") from None
        return record.index, image, label, caption

    def collate(self, items: list[tuple], skipped: int = 0) -> Batch:
        """Decoded items stacked into one :class:`Batch`."""
        inputs = {"image": torch.from_numpy(np.stack([it[1] for it in items]))}
        lengths = {}
        if self.vocabulary is not None:
            inputs["text"], lengths["text"] = self.vocabulary.encode([it[3] for it in items], length=self.text_length)
        labels = torch.tensor([it[2] for it in items], dtype=torch.int64) if self.labelled else None
        return Batch(inputs=inputs, labels=labels, lengths=lengths,
                     index=torch.tensor([it[0] for it in items], dtype=torch.int64), skipped=skipped)

    def head(self, n: int) -> Batch:
        """The first ``n`` items in shard order, decoded (unreadable ones follow ``on_error``)."""
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= self.num_items:
            raise ValueError(f"n must be in [1, {self.num_items}], got {n!r}")
        return _Lane(self, range(len(self.shard_paths)), rng=None, buffer=0, cycle=False).batch(n)

    def epoch(self, epoch: int, *, batch_size: int, seed: int, rank: int = 0, world_size: int = 1, start: int = 0,
              lanes: int = 1, shuffle: bool = True, drop_last: bool = True) -> ShardEpoch:
        r"""The batches of one rank for one epoch, as a stream (``DataLoader(it, batch_size=None, num_workers=W)``).

        The contract, which makes exact resume and data-parallel training work:

        * There are ``S = steps_per_epoch(batch_size * world_size)`` positions; every rank yields batches of
          exactly ``batch_size`` items for positions ``start .. S - 1``.
        * The shards are permuted by a generator seeded from ``(seed, epoch)`` (not with ``shuffle=False``);
          rank ``r`` reads ``perm[r::world_size]``, and splits them into ``lanes`` lanes: lane ``l`` reads
          ``rank_shards[l::lanes]``, each tar from start to end.
        * Lane ``l`` makes the batches of positions ``l, l + lanes, l + 2 lanes, ...`` in order, from its
          records through a shuffle buffer of ``shuffle_buffer`` undecoded records seeded from
          ``(seed, epoch, rank, l)``; records are decoded only into batches. A lane that runs out of items
          starts over at its first shard, so items repeat only when shards are unequal.
        * A loader with ``W`` workers takes batch ``k`` from worker ``k % W``; worker ``w`` makes positions
          ``start + w, start + w + W, ...`` (``W = 0``: the one process makes all). So ``lanes`` must be a
          multiple of ``max(W, 1)`` (``lanes = max(W, 1)`` gives each worker one lane). A lane first passes over
          its positions before ``start`` without decoding them: the batches of positions ``start ..`` are the
          same whatever ``start`` is.
        * An unreadable item (``on_error="skip"``) is replaced by the next readable record of its lane, which
          stays in the lane for its own batch: later batches do not shift. ``Batch.skipped`` counts them.

        With ``drop_last=False`` (evaluation: use ``shuffle=False``) each lane yields each of its items once,
        the last batch of a lane possibly smaller, and nothing repeats; lanes take turns, and ranks may yield
        different numbers of batches. ``start`` must then be 0.

        Args:
            epoch: The epoch (seeds the shard permutation and the buffers).
            batch_size: Items per batch on this rank (the global batch is ``batch_size * world_size``).
            seed: The run's seed.
            rank: This process's rank, in ``[0, world_size)``.
            world_size: The number of processes.
            start: The first position to yield (resuming within the epoch).
            lanes: Independent streams on this rank; a multiple of the loader's workers.
            shuffle: Permute the shards and shuffle within lanes (``False``: shard and item order).
            drop_last: Yield exactly the full batches of the contract (``False``: every item once).

        Returns:
            A :class:`torch.utils.data.IterableDataset` of :class:`~contrastlab.data.base.Batch` objects.

        Raises:
            ValueError: For a bad argument (naming it).
            contrastlab.errors.UserError: When the split has fewer shards than ``world_size * lanes``.
        """

        for name, value, low in (("epoch", epoch, 0), ("batch_size", batch_size, 1), ("seed", seed, None),
                                 ("world_size", world_size, 1), ("lanes", lanes, 1), ("start", start, 0)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or (low is not None and value < low):
                raise ValueError(f"{name} must be an integer{f' >= {low}' if low is not None else ''}, got {value!r}")
        if not (isinstance(rank, int) and 0 <= rank < world_size):
            raise ValueError(f"rank must be in [0, {world_size}), got {rank!r}")
        n = len(self.shard_paths)
        if n < world_size * lanes:
            raise UserError(f"the {self.split} split of '{self.root}' has {n} shard(s), fewer than world_size x "
                            f"lanes = {world_size} x {lanes}; pack it with a smaller --shard-items, or use fewer "
                            f"processes or loader workers")
        steps = None
        if drop_last:
            steps = self.steps_per_epoch(batch_size * world_size)
            if steps == 0:
                raise ValueError(f"batch_size {batch_size} x world_size {world_size} is larger than the {self.split} "
                                 f"split ({self.num_items} items)")
            if start > steps:
                raise ValueError(f"start must be in [0, {steps}] (steps per epoch), got {start}")
        elif start:
            raise ValueError(f"start must be 0 with drop_last=False, got {start}")
        order = np.random.default_rng(derive_seed(seed, epoch)).permutation(n) if shuffle else np.arange(n)
        rank_shards = order[rank::world_size].tolist()
        seeds = [derive_seed(seed, epoch, rank, lane) for lane in range(lanes)] if shuffle else None
        return ShardEpoch(self, [rank_shards[lane::lanes] for lane in range(lanes)], batch_size=batch_size,
                          steps=steps, start=start, seeds=seeds, buffer=self.shuffle_buffer)


def load_shards(*, root: str, split: str = "train", seed: int = 0, channels: int = 3,
                size: int | tuple[int, int] | None = None, on_error: str = "fail",
                shuffle_buffer: int = 1000) -> Shards:
    r"""A split of a pack written by :func:`pack` (``contrastlab data pack``), read as a stream of tar shards.

    Args:
        root: The pack's folder (holding ``shards.json``).
        split: ``"train"`` or ``"test"`` (fixed when packing).
        seed: Unused (the split is fixed; :meth:`Shards.epoch` takes the run's seed).
        channels: 3 for RGB, 1 for grey levels (images are converted).
        size: Resize every image to this (int or (height, width)); needed when the images differ in size.
        on_error: An unreadable item stops the run with one line naming the shard and member (``"fail"``) or
            is replaced by the next readable one of its lane and counted (``"skip"``).
        shuffle_buffer: Records in each lane's shuffle buffer (0 or 1: no shuffling within lanes).

    Returns:
        A :class:`Shards` stream with ``"image"`` uint8 (C, H, W), int64 labels when the source had classes,
        and ``"text"`` token ids (with ``lengths``) when it had captions.

    Raises:
        ValueError: For a bad option value.
        contrastlab.errors.UserError: For a folder that is not a pack, a missing shard, an empty split, or
            images of several sizes without ``size``.

    Example:
        >>> import tempfile
        >>> from PIL import Image
        >>> d = Path(tempfile.mkdtemp())
        >>> (d / "imgs").mkdir()
        >>> for i in range(10):
        ...     Image.new("L", (5, 5), color=i).save(d / "imgs" / f"{i}.png")
        >>> _ = pack(d / "imgs", d / "packed", shard_items=2, test_fraction=0, progress=False)
        >>> ds = load_shards(root=str(d / "packed"))
        >>> ds.num_items, ds.steps_per_epoch(4), ds.modalities
        (10, 2, {'image': (3, 5, 5)})
        >>> [tuple(b.inputs["image"].shape) for b in ds.epoch(0, batch_size=4, seed=0)]
        [(4, 3, 5, 5), (4, 3, 5, 5)]
    """
    check_split(split)
    channels, hw = check_image_options(channels, size)
    check_on_error(on_error)
    if isinstance(shuffle_buffer, bool) or not isinstance(shuffle_buffer, int) or shuffle_buffer < 0:
        raise ValueError(f"shuffle_buffer must be a non-negative integer, got {shuffle_buffer!r}")
    base = Path(root).expanduser()
    index = read_index(base)
    part = index.get("splits", {}).get(split) if isinstance(index.get("splits"), dict) else None
    if not isinstance(part, dict) or not part.get("shards"):
        raise UserError(f"pack '{base}' holds no {split} split (it was packed with test_fraction 0?)")
    try:
        for shard in part["shards"]:
            if not SHARD_NAME.fullmatch(str(shard["name"])):  # a name, never a path out of the folder
                raise UserError(f"'{base / INDEX}' lists a shard named {shard['name']!r}; shard names look like "
                                f"train-000000.tar")
            if not (base / shard["name"]).is_file():
                raise UserError(f"pack '{base}': shard '{shard['name']}' listed in {INDEX} is missing")
        if hw is None and index.get("image_sizes_distinct", 1) > 1:
            seen = ", ".join(index.get("image_sizes", {}))
            raise UserError(f"the images of pack '{base}' have {index['image_sizes_distinct']} different sizes "
                            f"({seen}, width x height); pass size=... to resize every image")
        return Shards(base, index, split, channels=channels, size=hw, on_error=on_error,
                      shuffle_buffer=shuffle_buffer)
    except (KeyError, TypeError, ValueError, IndexError) as err:
        raise UserError(f"'{base / INDEX}' is malformed ({type(err).__name__}: {one_line(err)}); pack the source "
                        f"again") from None
