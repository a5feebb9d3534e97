import pytest
import torch

# Tests run two workers on two cores, and small linear algebra is faster on one thread anyway.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def held_by_another():
    """A context manager holding a run directory's lock as another process would (a second open file
    description: a process's own ``contrastlab.rundir.hold`` is re-entrant and never conflicts with itself)."""
    import contextlib

    from contrastlab import rundir

    @contextlib.contextmanager
    def hold(path):
        fd = rundir._flock(path)
        assert fd is not None, f"{path} is already locked"
        try:
            yield
        finally:
            rundir._release(fd)

    return hold
