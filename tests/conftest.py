import pytest
import torch

# Tests run two workers on two cores, and small linear algebra is faster on one thread anyway.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
