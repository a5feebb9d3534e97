"""Which items each process reads at each step: a fresh permutation per epoch, sharded by rank.

The order is a pure function of ``(seed, epoch)``, so a resumed run reads exactly the items the
uninterrupted run would have read, and ``W`` processes together read exactly the global batch one
process would read (process ``r`` takes rows ``[r B / W, (r + 1) B / W)`` of it).
"""

from __future__ import annotations

import torch
from torch import Tensor

from contrastlab.seeds import derive_seed  # noqa: F401 - re-exported: the loop and tests take it from here
from contrastlab.training.distributed import local_batch_size


class ShardedBatches:
    """Global batches drawn without replacement within an epoch; this process's share of each.

    Args:
        num_items: the data set's size.
        batch_size: the global batch size (over all processes).
        seed: the run's seed.
        rank: this process's rank.
        world_size: the number of processes (must divide ``batch_size``).
        shuffle: a new permutation each epoch (``False``: items in order).

    Raises:
        ValueError: a batch larger than the data set, or a world size that does not divide it.

    Example:
        >>> s = ShardedBatches(10, 4, seed=0, rank=1, world_size=2)
        >>> s.steps_per_epoch, s.indices(0).shape
        (2, torch.Size([2]))
    """

    def __init__(self, num_items: int, batch_size: int, *, seed: int, rank: int = 0, world_size: int = 1, shuffle: bool = True):
        self.local = local_batch_size(batch_size, world_size)
        if batch_size > num_items:
            raise ValueError(f"batch_size {batch_size} is larger than the data set ({num_items} items)")
        self.num_items, self.batch_size, self.seed = num_items, batch_size, seed
        self.rank, self.world_size, self.shuffle = rank, world_size, shuffle
        self.steps_per_epoch = num_items // batch_size  # the incomplete last batch is dropped
        self._epoch: int | None = None
        self._order: Tensor | None = None

    def order(self, epoch: int) -> Tensor:
        """The item order of ``epoch`` (``(num_items,)`` int64)."""
        if self._epoch != epoch:
            if self.shuffle:
                g = torch.Generator().manual_seed(derive_seed(self.seed, epoch))
                self._order = torch.randperm(self.num_items, generator=g)
            else:
                self._order = torch.arange(self.num_items)
            self._epoch = epoch
        return self._order

    def global_indices(self, step: int) -> Tensor:
        """The whole global batch of ``step`` (``(batch_size,)`` int64)."""
        epoch, position = divmod(step, self.steps_per_epoch)
        start = position * self.batch_size
        return self.order(epoch)[start : start + self.batch_size]

    def indices(self, step: int) -> Tensor:
        """This process's rows of the global batch of ``step`` (``(batch_size / world_size,)`` int64)."""
        return self.global_indices(step)[self.rank * self.local : (self.rank + 1) * self.local]
