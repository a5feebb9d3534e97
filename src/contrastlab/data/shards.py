r"""A pack of tar shards (WebDataset layout) read as a stream: :func:`load_shards`.

A pack is written by :func:`~contrastlab.data.pack.pack` (``contrastlab data pack``), whose module
docstring describes its layout: an index, ``shards.json``, and ``{split}-NNNNNN.tar`` shards of members
``KEY.EXT`` grouped by key. This module holds the names of that layout which writing and reading share
(:data:`INDEX`, :data:`FORMAT` and :data:`VERSION`, :data:`SHARD_NAME`, :data:`IMAGE_MEMBERS`).

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

import json
import os
import re
import tarfile
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from contrastlab.data._images import IMAGE_SUFFIXES, check_image_options, decode_image
from contrastlab.limits import check_fits_in_memory, option_key
from contrastlab.data._split import check_split
from contrastlab.data.base import Batch
from contrastlab.data.captions import Vocabulary
from contrastlab.data.lazy import check_on_error
from contrastlab.errors import UserError, one_line
from contrastlab.seeds import derive_seed

INDEX = "shards.json"  #: the index's file name in a pack's folder
FORMAT, VERSION = "contrastlab.shards", 1  #: the index's ``format`` and ``version``
SHARD_NAME = re.compile(r"(train|test)-\d{6}\.tar")  #: a shard's file name (never a path)
IMAGE_MEMBERS = frozenset(s.lstrip(".") for s in IMAGE_SUFFIXES)  #: member extensions that hold an image


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
    except RecursionError:
        raise UserError(f"'{file}' is not valid JSON: it nests arrays or objects too deeply") from None
    except (UnicodeDecodeError, ValueError) as err:  # ValueError: JSONDecodeError, or an integer too long to read
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

    @property
    def class_names(self) -> tuple[str, ...] | None:
        """What label ``i`` is called: the ``classes`` list of ``shards.json`` (the source's class folder names or
        manifest labels); ``None`` for an unlabelled pack."""
        return tuple(str(c) for c in self.classes) if self.labelled else None

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
    r"""A split of a pack written by :func:`~contrastlab.data.pack.pack` (``contrastlab data pack``), read as a
    stream of tar shards.

    Args:
        root: The pack's folder (holding ``shards.json``).
        split: ``"train"`` or ``"test"`` (fixed when packing).
        seed: Unused (the split is fixed; :meth:`Shards.epoch` takes the run's seed).
        channels: 3 for RGB, 1 for grey levels (images are converted).
        size: Resize every image to this (int or (height, width)); needed when the images differ in size.
        on_error: An unreadable item stops the run with one line naming the shard and member (``"fail"``) or
            is replaced by the next readable one of its lane and counted (``"skip"``).
        shuffle_buffer: Records in each lane's shuffle buffer (0 or 1: no shuffling within lanes); the records
            it holds (at most the split's items, at their average size in the shards) must fit in the memory
            available.

    Returns:
        A :class:`Shards` stream with ``"image"`` uint8 (C, H, W), int64 labels when the source had classes,
        and ``"text"`` token ids (with ``lengths``) when it had captions.

    Raises:
        ValueError: For a bad option value.
        contrastlab.errors.UserError: For a folder that is not a pack, a malformed index, a missing shard, an
            empty split, images of several sizes without ``size``, or a shuffle buffer too large for memory.

    Example:
        >>> import tempfile
        >>> from PIL import Image
        >>> from contrastlab.data.pack import pack
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
        shards = Shards(base, index, split, channels=channels, size=hw, on_error=on_error,
                        shuffle_buffer=shuffle_buffer)
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as err:
        raise UserError(f"'{base / INDEX}' is malformed ({type(err).__name__}: {one_line(err)}); pack the source "
                        f"again") from None
    if shuffle_buffer > 1 and shards.num_items:  # a buffer holds undecoded records: the shards' bytes per item
        held = min(shuffle_buffer, shards.num_items)
        per_item = sum(p.stat().st_size for p in shards.shard_paths) / shards.num_items
        check_fits_in_memory(option_key("shuffle_buffer"), int(held * per_item), value=shuffle_buffer, items=held)
    return shards
