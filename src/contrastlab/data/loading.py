r"""Loading batches through torch's ``DataLoader``: worker processes decode, the main process trains.

Every source goes one way (DESIGN.md, "The one path data takes"):

* **map-style** data sets (in memory, or read on demand) receive whole batches of indices from a
  batch sampler that yields this process's rows of each step's global batch
  (:class:`~contrastlab.training.sampler.ShardedBatches`), from the step a run starts or resumes at.
  The order is a pure function of ``(seed, step)``, and items are read without randomness (the views'
  random numbers are drawn in the main process), so which worker reads a batch changes nothing: a run
  resumed from its checkpoint's step reads exactly the batches the uninterrupted run read, whatever
  ``num_workers``. Workers call the data set's ``__getitems__``-style batched ``get`` (one call per batch).
* **streams** (sharded tar files, :mod:`contrastlab.data.shards`) hand over one ``IterableDataset``
  per epoch that yields whole batches; the stream itself splits its shards by rank and by lane
  (one lane per worker) and skips to the step a run resumes at.

In-memory data sets default to no workers (their ``get`` is one indexing operation: a worker would only add
a copy through shared memory); sources read on demand default to ``min(4, cores - 1)`` workers, at
least 1. The main process measures how long it waits for each batch (``data_wait``).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader

from contrastlab.data.base import Batch, Dataset, to_device
from contrastlab.errors import UserError

#: The most loader workers a run may ask for (each is a process holding a copy of the data set's index).
MAX_WORKERS = 64


def _from_worker(err: Exception) -> Exception:
    """A user's error raised in a loader worker, as the worker raised it: ``DataLoader`` re-raises it in the
    main process with the worker's traceback prepended, which would not read as one line."""
    text = str(err)
    if "Original Traceback" not in text:
        return err
    last = text.rstrip().splitlines()[-1]
    prefix = f"{type(err).__module__}.{type(err).__qualname__}: "
    message = last[len(prefix):] if last.startswith(prefix) else last.split(": ", 1)[-1]
    return type(err)(message)


def _reading(batches: Iterator[Batch]) -> Iterator[Batch]:
    """``batches``, with errors from workers re-raised as their workers raised them."""
    try:
        yield from batches
    except (UserError, ValueError) as err:
        raise _from_worker(err) from None


def _whole(batch: Batch) -> Batch:
    """The collate function: a worker already returns one whole :class:`Batch` (module level so it pickles)."""
    return batch


class _Items(torch.utils.data.Dataset):
    """A contrastlab data set seen by ``DataLoader``: a list of indices in, one batch out."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitems__(self, indices: list[int]) -> Batch:
        index = torch.as_tensor(indices, dtype=torch.int64)
        batch = self.dataset.get(index)
        if batch.index is None:  # a user's data set that does not say which items it returned
            batch.index = index
        return batch


class _Steps(torch.utils.data.Sampler):
    """This process's indices of the global batch of every step in ``[start, stop)``."""

    def __init__(self, sampler, start: int, stop: int) -> None:
        self.sampler, self.start, self.stop = sampler, start, stop

    def __iter__(self) -> Iterator[list[int]]:
        for step in range(self.start, self.stop):
            yield self.sampler.indices(step).tolist()

    def __len__(self) -> int:
        return max(0, self.stop - self.start)


def is_stream(dataset) -> bool:
    """True for a data set read as a stream of batches (no random access)."""
    return bool(getattr(dataset, "streaming", False))


def cores() -> int:
    """The CPU cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def default_workers(dataset) -> int:
    """No workers for in-memory data; ``min(4, cores - 1)`` (at least 1) for data read on demand."""
    if getattr(dataset, "in_memory", True) and not is_stream(dataset):
        return 0
    return max(1, min(4, cores() - 1))


def trainer_threads(workers: int, current: int, available: int | None = None) -> int:
    """Intra-op threads for a process training on the CPU beside ``workers`` loader workers: one core left per
    worker (at least one thread). Measured on 2 cores (docs/PERFORMANCE.md, data loading): 2 trainer threads
    beside 2 workers ran at 0.27x the in-memory speed — spinning OpenMP threads and decoding workers took
    turns on the cores — and 1 thread at 0.98x.

    Example:
        >>> trainer_threads(2, 2, available=2), trainer_threads(0, 8, available=8), trainer_threads(4, 16, available=16)
        (1, 8, 12)
    """
    if workers <= 0:
        return current
    return max(1, min(current, (cores() if available is None else available) - workers))


@dataclass
class LoaderOptions:
    """How batches are loaded: worker processes, prefetching, pinned memory.

    ``num_workers=None`` chooses :func:`default_workers`; ``pin_memory=None`` pins when training on CUDA.
    """

    num_workers: int | None = None
    prefetch: int = 2  #: batches each worker prepares ahead
    pin_memory: bool | None = None

    def workers(self, dataset) -> int:
        return default_workers(dataset) if self.num_workers is None else self.num_workers

    def kwargs(self, dataset, device: torch.device) -> dict:
        w = self.workers(dataset)
        pin = device.type == "cuda" if self.pin_memory is None else bool(self.pin_memory and torch.cuda.is_available())
        extra = {"prefetch_factor": self.prefetch, "persistent_workers": False} if w > 0 else {}
        return {"num_workers": w, "pin_memory": pin, **extra}


def _trim_heap() -> None:
    """Hand the heap's free pages back to the system before loader workers fork (glibc's ``malloc_trim``; nothing
    elsewhere): pages a forked worker inherits are counted again in its resident memory. Measured on 60,000
    64x64 PNGs with 2 workers (docs/PERFORMANCE.md): the peak summed RSS fell from 2.2 to 1.9 GiB, and PSS
    from 1.33 to 1.14 GiB."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        if libc is not None and hasattr(libc, "malloc_trim"):
            libc.malloc_trim(0)
    except OSError:  # no C library to ask: nothing to trim
        pass


def map_loader(dataset: Dataset, sampler, start: int, stop: int, *, options: LoaderOptions,
               device: torch.device, seed: int = 0) -> DataLoader:
    """A ``DataLoader`` yielding this process's :class:`Batch` of every step in ``[start, stop)``.

    The whole run is one pass of the loader (its batch sampler spans all remaining steps), so worker
    processes start once and live until the run ends. ``seed`` fixes the workers' base seed.
    """
    if options.workers(dataset) > 0:
        _trim_heap()
    return DataLoader(_Items(dataset), batch_sampler=_Steps(sampler, start, stop), collate_fn=_whole,
                      generator=torch.Generator().manual_seed(seed), **options.kwargs(dataset, device))


def stream_lanes(stream, options: LoaderOptions) -> int:
    """The lanes a stream is split into on each rank: one per loader worker (at least one). The batches depend on
    it, so a resumed run keeps the lanes it started with (:class:`Batches` takes them from the checkpoint)."""
    return max(1, options.workers(stream))


def stream_loader(stream, epoch: int, *, batch_size: int, seed: int, rank: int, world_size: int, start: int,
                  lanes: int, options: LoaderOptions, device: torch.device) -> DataLoader:
    """A ``DataLoader`` over one epoch of a stream from position ``start``, split into ``lanes`` lanes; the
    workers are as many as asked for that divide ``lanes`` (each serves ``lanes / workers`` lanes in turn)."""
    kwargs = options.kwargs(stream, device)
    if kwargs["num_workers"] > 0:
        kwargs["num_workers"] = max(w for w in range(1, min(kwargs["num_workers"], lanes) + 1) if lanes % w == 0)
    part = stream.epoch(epoch, batch_size=batch_size, seed=seed, rank=rank, world_size=world_size, start=start,
                        lanes=lanes)
    if kwargs["num_workers"] > 0:
        _trim_heap()
    return DataLoader(part, batch_size=None, collate_fn=_whole, **kwargs)


class Batches:
    """The batches of steps ``[start, stop)`` for this process, with the time spent waiting for each.

    Map-style data sets are read through one :func:`map_loader`; streams through one
    :func:`stream_loader` per epoch. Iterating yields ``(step, batch)``; :attr:`wait` is the time the last
    ``next`` waited for its batch (the data loading the step did not hide).
    """

    def __init__(self, dataset, sampler, start: int, stop: int, *, options: LoaderOptions, device: torch.device,
                 seed: int, rank: int = 0, world_size: int = 1, lanes: int | None = None) -> None:
        """``seed``: this process's seed for the loader's workers (a pure function of the run's seed and the rank)."""
        self.dataset, self.sampler, self.start, self.stop = dataset, sampler, start, stop
        self.options, self.device, self.seed, self.rank, self.world_size = options, device, seed, rank, world_size
        #: a stream's lanes per rank (None for map-style data): recorded in checkpoints, kept on resume
        self.lanes = (lanes or stream_lanes(dataset, options)) if is_stream(dataset) else None
        self.wait = 0.0

    def _stream(self) -> Iterator[tuple[int, Batch]]:
        spe = self.sampler.steps_per_epoch
        step = self.start
        while step < self.stop:
            epoch, position = divmod(step, spe)
            count = min(spe - position, self.stop - step)
            loader = stream_loader(self.dataset, epoch, batch_size=self.sampler.local, seed=self.seed, rank=self.rank,
                                   world_size=self.world_size, start=position, lanes=self.lanes, options=self.options,
                                   device=self.device)
            it = _reading(iter(loader))
            try:
                for _ in range(count):
                    yield step, next(it)
                    step += 1
            finally:
                del it  # stops this epoch's workers

    def __iter__(self) -> Iterator[tuple[int, Batch]]:
        if is_stream(self.dataset):
            source = self._stream()
        else:
            loader = map_loader(self.dataset, self.sampler, self.start, self.stop, options=self.options,
                                device=self.device, seed=self.seed)
            source = zip(range(self.start, self.stop), _reading(iter(loader)))
        while True:
            t0 = time.perf_counter()
            try:
                step, batch = next(source)
            except StopIteration:
                return
            self.wait = time.perf_counter() - t0
            yield step, batch


def sample_batch(dataset, n: int) -> Batch:
    """The first ``n`` items (fewer if the data set is smaller) on the CPU with images as floats: what sizes a
    model and checks a config before training."""
    if is_stream(dataset):
        batch = dataset.head(n)
    else:
        batch = dataset.get(torch.arange(min(n, len(dataset))))
    return to_device(batch, "cpu")


class _Chunks(torch.utils.data.Sampler):
    """Fixed indices in order, ``batch_size`` at a time (the last chunk may be shorter)."""

    def __init__(self, indices: torch.Tensor, batch_size: int) -> None:
        self.indices, self.batch_size = indices, batch_size

    def __iter__(self) -> Iterator[list[int]]:
        for start in range(0, len(self.indices), self.batch_size):
            yield self.indices[start:start + self.batch_size].tolist()

    def __len__(self) -> int:
        return -(-len(self.indices) // self.batch_size)


def ordered_batches(dataset, indices: torch.Tensor | None, *, batch_size: int,
                    options: LoaderOptions = LoaderOptions(), limit: int | None = None) -> Iterator[Batch]:
    """Batches of ``dataset`` in a fixed order, every item once, for evaluation (images as the source gives them).

    Map-style data sets read ``indices`` (all items when ``None``) through workers; a stream is read from its
    first shard in order, without shuffling, up to ``limit`` items (all when ``None``), and ``indices``
    must be ``None`` (a stream has no random access).
    """
    if is_stream(dataset):
        if indices is not None:
            raise ValueError(f"data set {dataset.name!r} is a stream: it is read in order, not by index")
        kwargs = options.kwargs(dataset, torch.device("cpu"))
        kwargs["num_workers"] = min(kwargs["num_workers"], 1)  # one lane keeps the shards' order
        part = dataset.epoch(0, batch_size=batch_size, seed=0, shuffle=False, drop_last=False)
        seen = 0
        for batch in _reading(iter(DataLoader(part, batch_size=None, collate_fn=_whole, **kwargs))):
            if limit is not None and seen + len(batch) > limit:
                batch = batch.apply(lambda t: t[:limit - seen])
            seen += len(batch)
            yield batch
            if limit is not None and seen >= limit:
                return
        return
    chosen = torch.arange(len(dataset)) if indices is None else torch.as_tensor(indices, dtype=torch.int64)
    yield from _reading(iter(DataLoader(_Items(dataset), batch_sampler=_Chunks(chosen, batch_size), collate_fn=_whole,
                                        **options.kwargs(dataset, torch.device("cpu")))))
