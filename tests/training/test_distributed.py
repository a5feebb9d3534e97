import pytest
import safetensors.torch
import torch
import torch.multiprocessing as mp

import _ddp_worker
from _ddp_worker import free_port
from contrastlab.training.distributed import DistInfo, all_gather_with_grad, all_reduce_mean, collective_device, detect


def test_two_gloo_processes_equal_one_process_with_the_whole_batch(tmp_path):
    """One step of each objective kind, then the whole loop (sharded sampling, gathered negatives,
    DDP, checkpoints) for 12 steps: two processes give what one process with the whole batch gives."""
    import numpy as np
    from PIL import Image

    (tmp_path / "imgs").mkdir()
    for i in range(36):
        Image.fromarray(np.full((4, 4, 3), i, dtype=np.uint8)).save(tmp_path / "imgs" / f"{i:02d}.png")
    mp.spawn(_ddp_worker.worker, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    check_epoch(tmp_path)
    for case in _ddp_worker.CASES:
        torch.set_num_threads(1)
        expected = _ddp_worker.single(case)
        got = safetensors.torch.load_file(tmp_path / f"{case}.safetensors")
        other = safetensors.torch.load_file(tmp_path / f"{case}.rank1.safetensors")
        # every process holds the same weights, target towers and queue after the steps (EMA and enqueue
        # run on the same gathered values in every process)
        assert all(torch.equal(got[k], other[k]) for k in got if k != "loss"), case
        assert set(got) == set(expected)
        assert torch.allclose(got["loss"], expected["loss"], atol=1e-5), case
        before = _ddp_worker.setup(case)[0].state_dict()
        for name, value in expected.items():
            assert torch.allclose(got[name], value, atol=1e-5), (case, name)
            if name != "loss" and name in before:  # and the update itself is real, not a no-op
                moved = (value - before[name]).abs().max()
                assert moved > 1e-4 or name.endswith("bias"), (case, name, moved)
    check_loop(tmp_path)


def check_epoch(tmp_path):
    """Under DDP, an image folder read through loader workers: the ranks read disjoint items and one epoch reads
    every item once (32 training items, global batches of 8: nothing is dropped)."""
    import json

    got = json.loads((tmp_path / "epoch.json").read_text())
    first, second = got["read"]
    assert got["items"] == 32 and len(first) == len(second) == 16
    assert not set(first) & set(second) and sorted(first + second) == list(range(32))


def check_loop(tmp_path):
    from _train_fixtures import Clusters, NoisyViews, ensure_objectives

    from contrastlab.training import train
    from contrastlab.training.checkpoint import read_checkpoint
    from contrastlab.training.logging import read_metrics

    ensure_objectives()
    train(_ddp_worker.train_config(), tmp_path / "single", dataset=Clusters(), views=NoisyViews(sigma=0.0))
    for step in ("step-00000006", "step-00000012"):
        two = read_checkpoint(tmp_path / "loop" / "checkpoints" / step)
        one = read_checkpoint(tmp_path / "single" / "checkpoints" / step)
        for name, value in one.model.items():
            assert torch.allclose(two.model[name], value, atol=1e-5), (step, name)
        assert two.meta["world_size"] == 2 and {"rng.views.0", "rng.views.1"} <= set(two.tensors)
        assert not torch.equal(two.tensors["rng.views.0"], two.tensors["rng.views.1"])
    losses = [r["loss"] for r in read_metrics(tmp_path / "loop" / "metrics.csv")]
    expected = [r["loss"] for r in read_metrics(tmp_path / "single" / "metrics.csv")]
    assert len(losses) == len(expected) == 3
    assert torch.allclose(torch.tensor(losses), torch.tensor(expected), atol=1e-5)


def test_gather_is_the_identity_without_a_process_group():
    x = torch.randn(3, 2, requires_grad=True)
    assert all_gather_with_grad(x) is x
    assert detect().world_size == 1


def test_without_a_process_group_the_collectives_are_identities():
    assert all_reduce_mean(2.5) == 2.5 and all_reduce_mean(torch.tensor([1.25])) == 1.25
    assert collective_device(torch.zeros(1)) == torch.device("cpu")


def test_detect_reads_torchrun_variables(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "2")
    monkeypatch.setenv("LOCAL_RANK", "0")
    info = detect()
    assert (info.rank, info.world_size, info.local_rank, info.enabled, info.is_main) == (2, 4, 0, True, False)
    monkeypatch.setenv("RANK", "4")
    with pytest.raises(ValueError, match="RANK must be in \\[0, WORLD_SIZE\\), got RANK=4 WORLD_SIZE=4"):
        detect()


def test_contrastlab_ddp_forces_a_process_group_of_one(monkeypatch):
    """Under ``torchrun --nproc-per-node 1`` (``WORLD_SIZE=1``) ``CONTRASTLAB_DDP=1`` turns the process group
    on; without ``WORLD_SIZE`` (no torchrun) it changes nothing, and one process stays without a group."""
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "CONTRASTLAB_DDP"):
        monkeypatch.delenv(key, raising=False)
    assert not detect().enabled
    monkeypatch.setenv("CONTRASTLAB_DDP", "1")
    assert detect() == DistInfo() and not detect().enabled  # no torchrun: as before
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setenv("RANK", "0")
    info = detect()
    assert (info.world_size, info.forced, info.enabled, info.is_main) == (1, True, True, True)
    monkeypatch.setenv("CONTRASTLAB_DDP", "0")
    assert not detect().enabled
    monkeypatch.delenv("CONTRASTLAB_DDP")
    assert not detect().enabled
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert detect().enabled and not detect().forced
    monkeypatch.setenv("CONTRASTLAB_DDP", "yes")
    with pytest.raises(ValueError, match="CONTRASTLAB_DDP must be 0 or 1, got CONTRASTLAB_DDP='yes'"):
        detect()
