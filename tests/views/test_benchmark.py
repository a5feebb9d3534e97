"""The augmentation benchmark runs at any image size and reports every case it times."""

import pytest

from contrastlab.views import benchmark


@pytest.mark.parametrize("size", [32, 96])
def test_every_case_is_timed_at_any_image_size(size):
    results = benchmark.run(batch=4, size=size, threads=1, repeats=1)
    assert "ours: SimCLR augmentation (one view)" in results and "small CNN training step on two views" in results
    assert all(0 < best <= median for best, median in results.values())
