import pytest
import torch

from contrastlab.training.distributed import local_batch_size
from contrastlab.training.sampler import ShardedBatches


def test_an_epoch_reads_items_without_replacement():
    s = ShardedBatches(100, 10, seed=3)
    seen = torch.cat([s.indices(i) for i in range(s.steps_per_epoch)])
    assert sorted(seen.tolist()) == list(range(100))
    other_epoch = torch.cat([s.indices(10 + i) for i in range(10)])
    assert not torch.equal(seen, other_epoch)


def test_drop_last_and_determinism():
    a, b = ShardedBatches(105, 10, seed=1), ShardedBatches(105, 10, seed=1)
    assert a.steps_per_epoch == 10
    assert all(torch.equal(a.indices(i), b.indices(i)) for i in (0, 7, 13, 29))
    assert not torch.equal(a.indices(0), ShardedBatches(105, 10, seed=2).indices(0))


def test_shards_are_the_global_batch_in_rank_order():
    one = ShardedBatches(64, 16, seed=0)
    shards = [ShardedBatches(64, 16, seed=0, rank=r, world_size=4) for r in range(4)]
    for step in (0, 3, 9):
        joined = torch.cat([s.indices(step) for s in shards])
        assert torch.equal(joined, one.indices(step))


def test_uneven_world_and_oversized_batch_are_one_line_errors():
    with pytest.raises(ValueError, match="batch_size 10 does not split evenly over 3 processes; use a multiple of 3"):
        ShardedBatches(100, 10, seed=0, rank=0, world_size=3)
    with pytest.raises(ValueError, match="batch_size 20 is larger than the data set \\(5 items\\)"):
        ShardedBatches(5, 20, seed=0)
    assert local_batch_size(12, 3) == 4
