r"""Writing a pack: :func:`pack` turns an image folder or an image-caption manifest into tar shards.

A *pack* is a folder::

    shards.json              the index: format version, source, classes, modalities, vocabulary, and
                             for each split its shard files and their item counts
    train-000000.tar         items 0 .. 999 of the train split
    train-000001.tar         ...
    test-000000.tar          the test split's items

Each shard is a plain tar archive of members ``KEY.EXT`` grouped by key, one group per item, in
order: ``000000012.png`` (the original encoded image bytes, not re-encoded), ``000000012.cls`` (the
class index as text), ``000000012.txt`` (the caption). ``KEY`` is the item's number in its split.
This is WebDataset's layout, written with :mod:`tarfile` (:mod:`contrastlab.data.shards` says why).
:mod:`contrastlab.data.shards` reads a pack as a stream (:func:`~contrastlab.data.shards.load_shards`)
and holds the names both sides share: the index's file name and format version, the shard names, and
the members that hold an image.

**Split.** The split is made when packing: an image folder or manifest is split exactly as
:func:`~contrastlab.data.user.load_image_folder` / :func:`~contrastlab.data.manifest.load_manifest`
split it (the same fixed, stratified ``test_fraction``, or the manifest's ``split`` column), so a pack's
test items are the source's test items. Cutting the last shards off instead would give a test split of
whatever classes sort last. ``test_fraction=0`` puts every item in the train split.

**Order.** Items are written in a fixed pseudo-random order (``seed``), so that every shard mixes the
classes: a stream's shuffle buffer only mixes nearby items. Packing twice gives identical bytes (tar
members have a fixed owner, mode and time).

**Writing.** Only each image's header is read (for its size) unless ``size`` asks for re-encoding. The
shards are written in ``.pack-partial`` inside the output folder and moved into place once complete, and
the index is written last: a failure leaves no stray files and a previous pack untouched.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from contrastlab.data._images import check_image_options, decode_image
from contrastlab.data._split import SPLITS, check_fraction
from contrastlab.data.captions import Vocabulary, words
from contrastlab.data.shards import FORMAT, INDEX, SHARD_NAME, VERSION
from contrastlab.errors import UserError, check_can_create, one_line
from contrastlab.files import atomic_write_text, fsync_dir
from contrastlab.progress import item_bar

_STAGING = ".pack-partial"  #: where a pack is written before it replaces the folder's contents
_GREY_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F")


@dataclass
class _Item:
    image: Path
    label: int | None
    caption: str | None
    where: str  #: names the item's origin in messages ("image 'a/1.png'", "m.csv line 3")


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


    staging, created = out / _STAGING, not out.exists()
    shutil.rmtree(staging, ignore_errors=True)  # left by a run that was killed
    staging.mkdir(parents=True)
    writers: list[_ShardWriter] = []
    try:
        seen: dict = {"first": None, "sizes": {}}  # the first image's (C, H, W); (H, W) -> count
        index_splits = {}
        total = sum(len(v) for v in splits.values())
        with item_bar(total, "pack", enabled=progress, unit="img") as bar:
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
