"""Every collective hands its backend tensors on the device the backend works on (NCCL: CUDA only), and
``CONTRASTLAB_DDP=1`` makes one process run them all.

Without a GPU the NCCL side is checked in two halves: :func:`collective_device` names the CUDA device
when the backend is NCCL, and every collective hands over its tensors on whatever device
:func:`collective_device` names (a stand-in device here, since this machine has no CUDA one). The tests
marked ``cuda`` run the real thing."""

import json
import types

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import _ddp_worker
from contrastlab.training import distributed
from contrastlab.training.distributed import (
    all_gather_no_grad,
    all_gather_with_grad,
    all_reduce_mean,
    barrier,
    collective_device,
)

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


class Handed(Exception):
    """Raised by a stand-in collective once it has recorded what it was handed."""


def pretend_group(monkeypatch, *, backend: str, rank: int = 0, size: int = 2) -> None:
    """Make this process look like ``rank`` of a ``backend`` process group of ``size``, without forming one."""
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_backend", lambda group=None: backend)
    monkeypatch.setattr(dist, "get_rank", lambda group=None: rank)
    monkeypatch.setattr(dist, "get_world_size", lambda group=None: size)


def test_collective_device_is_cuda_under_nccl_and_the_tensors_own_otherwise(monkeypatch):
    cpu, stand_in = torch.zeros(2), torch.zeros(2, device="meta")
    assert collective_device() == collective_device(cpu) == torch.device("cpu")  # no process group
    pretend_group(monkeypatch, backend="gloo")
    assert collective_device(cpu) == torch.device("cpu") and collective_device(stand_in) == torch.device("meta")
    pretend_group(monkeypatch, backend="nccl")
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 3)
    assert collective_device() == collective_device(cpu) == collective_device(stand_in) == torch.device("cuda", 3)


def test_every_collective_is_handed_its_tensors_on_the_collective_device(monkeypatch):
    """Rank 1 of two, the collective device a stand-in ('meta'): each function must hand over its tensors
    there, whatever device its input is on; the stand-in collectives record them and stop the call."""
    pretend_group(monkeypatch, backend="nccl", rank=1)
    monkeypatch.setattr(distributed, "collective_device", lambda tensor=None: torch.device("meta"))
    calls: list = []
    for name, spy in _ddp_worker.collective_spies(calls, stop=Handed).items():
        monkeypatch.setattr(dist, name, spy)
    attempts = {
        "all_reduce_mean(float)": lambda: all_reduce_mean(1.5),  # the loop's counts
        "all_reduce_mean(tensor)": lambda: all_reduce_mean(torch.tensor(1.5, dtype=torch.float64)),  # its losses
        "all_gather_no_grad": lambda: all_gather_no_grad(torch.arange(4)),
        "all_gather_with_grad": lambda: all_gather_with_grad(torch.randn(2, 3, requires_grad=True)),
        "all_gather_with_grad backward": lambda: distributed._AllGather.backward(
            types.SimpleNamespace(rank=1, rows=2, device=torch.device("cpu")), torch.ones(4, 3)),
    }  # fmt: skip
    for what, attempt in attempts.items():
        calls.clear()
        with pytest.raises(Handed):
            attempt()
        assert calls and all(set(devices) == {"meta"} for _, devices, _ in calls), (what, calls)


def test_barrier_runs_on_this_process_gpu_under_nccl(monkeypatch):
    pretend_group(monkeypatch, backend="nccl")
    calls: list = []
    for name, spy in _ddp_worker.collective_spies(calls, stop=Handed).items():
        monkeypatch.setattr(dist, name, spy)
    monkeypatch.setattr(dist, "destroy_process_group", lambda group=None: calls.append(("destroy", [], None)))
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 3)
    barrier()
    distributed.shutdown(together=True)
    assert calls == [("barrier", [], [3]), ("barrier", [], [3]), ("destroy", [], None)]
    pretend_group(monkeypatch, backend="gloo")
    calls.clear()
    barrier()
    assert calls == [("barrier", [], None)]


@pytest.fixture
def group_of_one(monkeypatch):
    """A process group of one formed as under ``CONTRASTLAB_DDP=1 torchrun --nproc-per-node 1``, its collectives
    spied on; yields the list of calls."""

    def form(device: torch.device) -> list:
        monkeypatch.setenv("CONTRASTLAB_DDP", "1")
        monkeypatch.setenv("WORLD_SIZE", "1")
        monkeypatch.setenv("RANK", "0")
        monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
        monkeypatch.setenv("MASTER_PORT", str(_ddp_worker.free_port()))
        info = distributed.detect()
        assert info.enabled and info.world_size == 1
        distributed.init(info, device)
        assert dist.is_initialized() and distributed.world() == (0, 1)
        calls: list = []
        for name, spy in _ddp_worker.collective_spies(calls).items():
            monkeypatch.setattr(dist, name, spy)
        return calls

    yield form
    distributed.shutdown()


def run_every_collective(device: torch.device, calls: list) -> None:
    """Each collective of distributed.py once in a group of one: the values come back unchanged, the
    gradient flows through the gather, every collective ran, on the collective device."""
    assert all_reduce_mean(2.5) == 2.5
    assert all_reduce_mean(torch.tensor(3.0, device=device)) == 3.0
    labels = torch.arange(6, device=device)
    assert torch.equal(all_gather_no_grad(labels), labels)
    state = torch.randint(0, 255, (1, 16), dtype=torch.uint8)  # a random state, held on the CPU
    gathered = all_gather_no_grad(state)
    assert gathered.device == state.device and torch.equal(gathered, state)
    x = torch.randn(4, 3, device=device, requires_grad=True)
    weight = torch.randn(4, 3, device=device)
    z = all_gather_with_grad(x)
    assert z.device == x.device and torch.equal(z, x)
    (z * weight).sum().backward()
    assert torch.equal(x.grad, weight)  # the sum over one process of the gradient of its rows
    barrier()
    ran = {name for name, _, _ in calls}
    assert {"all_reduce", "all_gather", "barrier"} <= ran, ran
    where = {str(collective_device(torch.zeros(1, device=device)))}
    assert all(set(devices) <= where for _, devices, _ in calls), calls


def test_a_gloo_group_of_one_runs_every_collective(group_of_one):
    device = torch.device("cpu")
    run_every_collective(device, group_of_one(device))


def test_forced_group_of_one_trains_like_one_process(tmp_path):
    """The whole loop under ``CONTRASTLAB_DDP=1`` with ``WORLD_SIZE=1`` (DDP, gathers, reductions, barriers,
    random states gathered into the checkpoint) gives the losses of a plain one-process run."""
    run_forced(tmp_path, world=1, device="cpu")


def run_forced(tmp_path, *, world: int, device: str, atol: float = 1e-6) -> None:
    from _train_fixtures import Clusters, NoisyViews, ensure_objectives

    from contrastlab.training import train
    from contrastlab.training.checkpoint import read_checkpoint
    from contrastlab.training.logging import read_metrics

    mp.spawn(_ddp_worker.forced_loop, args=(world, _ddp_worker.free_port(), str(tmp_path), device), nprocs=world)
    ensure_objectives()
    torch.set_num_threads(1)
    train(_ddp_worker.forced_config(device), tmp_path / "plain", dataset=Clusters(), views=NoisyViews(sigma=0.0))
    forced = [r["loss"] for r in read_metrics(tmp_path / "forced" / "metrics.csv")]
    plain = [r["loss"] for r in read_metrics(tmp_path / "plain" / "metrics.csv")]
    assert len(forced) == len(plain) == 3
    assert torch.allclose(torch.tensor(forced), torch.tensor(plain), atol=atol), (forced, plain)
    ckpt = read_checkpoint(tmp_path / "forced" / "checkpoints" / "step-00000003")
    assert ckpt.meta["world_size"] == world and {f"rng.views.{r}" for r in range(world)} <= set(ckpt.tensors)
    where = "cpu" if device == "cpu" else "cuda:{rank}"
    for rank in range(world):
        calls = json.loads((tmp_path / f"collectives.{rank}.json").read_text())
        ran = {name for name, _, _ in calls}
        assert {"all_reduce", "all_gather", "barrier"} <= ran, ran  # losses and counts, random states, barriers
        assert all(set(devices) <= {where.format(rank=rank)} for _, devices, _ in calls), calls


@pytest.mark.cuda
@needs_cuda
def test_an_nccl_group_of_one_runs_every_collective(group_of_one):
    device = torch.device("cuda", 0)
    run_every_collective(device, group_of_one(device))


@pytest.mark.cuda
@needs_cuda
def test_forced_nccl_group_of_one_trains_like_one_process(tmp_path):
    run_forced(tmp_path, world=1, device="cuda", atol=1e-5)


@pytest.mark.cuda
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
def test_two_nccl_processes_train_like_one_with_the_whole_batch(tmp_path):
    """Two GPUs, NCCL, SyncBatchNorm (the encoder's BatchNorm sees the global batch) and gathered negatives:
    the losses of one GPU holding the whole batch."""
    run_forced(tmp_path, world=2, device="cuda", atol=1e-4)
