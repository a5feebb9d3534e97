"""Which items of a split are evaluated, and batches cut and joined along their items.

A map-style data set is evaluated on a seeded random subset of its indices (:func:`subset`); a stream
on its first ``max_items`` items in shard order (its length is known only once it is read).
:class:`Selection` records the choice, reads the first selected items as one batch and describes the
choice for ``metrics.json``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from contrastlab.data.base import Batch
from contrastlab.data.loading import LoaderOptions, is_stream, ordered_batches


def subset(n: int, limit: int | None, seed: int) -> Tensor:
    """All of ``range(n)``, or a sorted seeded random subset of ``limit`` of them, int64 (min(n, limit),).

    Example:
        >>> subset(5, None, 0).tolist(), subset(5, 9, 0).tolist(), len(subset(100, 10, 0))
        ([0, 1, 2, 3, 4], [0, 1, 2, 3, 4], 10)
    """
    if limit is None or limit >= n:
        return torch.arange(n)
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:limit].sort().values


@dataclass(frozen=True)
class Selection:
    """The items of a split that are evaluated: ``indices`` of a map-style data set, or a stream's first
    ``limit`` items (all when ``None``) in shard order."""

    indices: Tensor | None
    limit: int | None = None
    seed: int = 0

    @classmethod
    def of(cls, dataset, max_items: int | None, seed: int) -> "Selection":
        """At most ``max_items`` items of ``dataset`` (``None``: all): a subset drawn with ``seed``, or a
        stream's first items."""
        if is_stream(dataset):
            return cls(None, max_items, seed)
        return cls(subset(len(dataset), max_items, seed), None, seed)

    def describe(self, dataset, count: int) -> str:
        """How the ``count`` items were chosen, for ``metrics.json``."""
        if self.indices is None:
            first = self.limit is not None and count >= self.limit
            return f"{'first' if first else 'all'} {count} in stream order"
        n = len(dataset)
        return f"all {count}" if count == n else f"a random {count} of {n} (seed {self.seed})"

    def first(self, dataset, n: int, loader: LoaderOptions, batch_size: int) -> Batch:
        """The first ``n`` selected items as one batch, as the source gives them (uint8 images from files)."""
        if self.indices is not None:
            parts = ordered_batches(dataset, self.indices[:n], batch_size=batch_size, options=loader)
        else:
            limit = n if self.limit is None else min(n, self.limit)
            parts = ordered_batches(dataset, None, batch_size=batch_size, options=loader, limit=limit)
        return cat_batches(list(parts))


def cat_batches(batches: list[Batch]) -> Batch:
    """One batch of the items of ``batches``, in order (labels and indices only when every batch has them).

    Args:
        batches: batches of N_i items with the same inputs, factors and lengths.

    Returns:
        A :class:`Batch` of sum N_i items.

    Raises:
        ValueError: for no batches.

    Example:
        >>> b = cat_batches([Batch({"x": torch.zeros(2, 3)}, labels=torch.tensor([0, 1])),
        ...                  Batch({"x": torch.ones(1, 3)}, labels=torch.tensor([1]))])
        >>> b.inputs["x"].shape, b.labels.tolist()
        (torch.Size([3, 3]), [0, 1, 1])
    """
    if not batches:
        raise ValueError("no batches to concatenate")
    first = batches[0]
    join = lambda get, keys: {k: torch.cat([get(b)[k] for b in batches]) for k in keys}  # noqa: E731
    whole = lambda get: None if any(get(b) is None for b in batches) else torch.cat([get(b) for b in batches])  # noqa: E731
    return Batch(inputs=join(lambda b: b.inputs, first.inputs), labels=whole(lambda b: b.labels),
                 factors=join(lambda b: b.factors, first.factors), lengths=join(lambda b: b.lengths, first.lengths),
                 index=whole(lambda b: b.index), skipped=sum(b.skipped for b in batches))


def slice_batch(batch: Batch, rows: slice | Tensor) -> Batch:
    """The items ``rows`` of a batch, every field sliced alike.

    Args:
        batch: N items.
        rows: a slice or an index tensor.

    Returns:
        A :class:`Batch` of the chosen items.

    Example:
        >>> b = Batch({"x": torch.arange(4)}, labels=torch.arange(4) * 10)
        >>> slice_batch(b, slice(1, 3)).labels.tolist()
        [10, 20]
    """
    return batch.apply(lambda t: t[rows])
