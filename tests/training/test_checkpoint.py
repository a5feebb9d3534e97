import json
import re
from pathlib import Path

import pytest
import torch
from torch import nn

from contrastlab.errors import UserError
from contrastlab.files import atomic_write_bytes
from contrastlab.training.checkpoint import (
    CheckpointManager,
    _tensors_bytes,
    check_state_fits,
    flatten_optimizer,
    read_checkpoint,
    unflatten_optimizer,
    write_checkpoint,
)


def test_atomic_write_leaves_no_temporary_file(tmp_path):
    path = tmp_path / "f.bin"
    atomic_write_bytes(path, b"one")
    atomic_write_bytes(path, b"two")
    assert path.read_bytes() == b"two"
    assert [p.name for p in tmp_path.iterdir()] == ["f.bin"]


@pytest.mark.parametrize("name", ["adamw", "sgd", "lars"])
def test_optimizer_state_round_trip_gives_the_same_next_step(tmp_path, name):
    from contrastlab.training.optim import build_optimizer

    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 2))
    opt = build_optimizer(name, [net], lr=0.01, weight_decay=0.1)
    x = torch.randn(16, 4)
    for _ in range(3):
        opt.zero_grad()
        net(x).pow(2).mean().backward()
        opt.step()
    tensors, plain = flatten_optimizer(opt.state_dict())
    write_checkpoint(tmp_path / "ck", model=net.state_dict(), tensors=tensors, meta={"optimizer": plain, "step": 3})
    ck = read_checkpoint(tmp_path / "ck")
    assert ck.meta["step"] == 3

    torch.manual_seed(1)
    net2 = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 2))
    net2.load_state_dict(ck.model)
    opt2 = build_optimizer(name, [net2], lr=0.01, weight_decay=0.1)
    opt2.load_state_dict(unflatten_optimizer(ck.tensors, ck.meta["optimizer"]))
    for model, optimizer in ((net, opt), (net2, opt2)):
        optimizer.zero_grad()
        model(x).pow(2).mean().backward()
        optimizer.step()
    for a, b in zip(net.state_dict().values(), net2.state_dict().values()):
        assert torch.equal(a, b)


def test_checkpoint_files_are_safetensors_and_json_only(tmp_path):
    write_checkpoint(tmp_path / "ck", model={"w": torch.ones(2)}, objective={"c": torch.zeros(3)}, meta={"t": (1, 2)})
    names = sorted(p.name for p in (tmp_path / "ck").iterdir())
    assert names == ["model.safetensors", "objective.safetensors", "state.json", "state.safetensors"]
    assert json.loads((tmp_path / "ck" / "state.json").read_text()) == {"t": {"__tuple__": [1, 2]}}
    ck = read_checkpoint(tmp_path / "ck")
    assert ck.meta["t"] == (1, 2) and torch.equal(ck.objective["c"], torch.zeros(3))


def test_no_unsafe_torch_load_in_training_code():
    root = Path(__file__).parents[2] / "src" / "contrastlab" / "training"
    for path in root.glob("*.py"):
        for call in re.findall(r"torch\.load\([^)]*\)", path.read_text()):
            assert "weights_only=True" in call, (path, call)


def test_missing_or_corrupt_checkpoint_is_a_clear_error(tmp_path):
    path = write_checkpoint(tmp_path / "ck", model={"w": torch.ones(2)})
    (path / "state.json").unlink()
    with pytest.raises(FileNotFoundError, match="missing state.json"):
        read_checkpoint(path)
    path = write_checkpoint(tmp_path / "ck2", model={"w": torch.ones(2)})
    (path / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(UserError, match=r"model\.safetensors is not a readable safetensors file"):
        read_checkpoint(path)
    (path / "model.safetensors").write_bytes(_tensors_bytes({"w": torch.ones(2)}))
    (path / "state.json").write_text("[1, 2]")
    with pytest.raises(UserError, match=r"state\.json must hold a JSON object, got list"):
        read_checkpoint(path)


def test_state_that_does_not_fit_names_the_first_difference():
    model = {"head.weight": torch.zeros(8, 16), "head.bias": torch.zeros(8)}
    check_state_fits(dict(model), model, what="model", source="ck")
    with pytest.raises(UserError, match=r"'head.weight' is \(16, 16\) in the checkpoint but \(8, 16\) in the model"):
        check_state_fits({**model, "head.weight": torch.zeros(16, 16)}, model, what="model", source="ck")
    with pytest.raises(UserError, match=r"1 tensor\(s\) of the model are missing \(e.g. 'head.bias'\); 1 tensor\(s\) are not in"):
        check_state_fits({"head.weight": torch.zeros(8, 16), "other": torch.zeros(1)}, model, what="model", source="ck")


@pytest.mark.parametrize(
    "index, message",
    [
        ("{not json", "is not valid JSON"),
        ('["step-00000010"]', "must hold a JSON object, got list"),
        ('{"last": "../../elsewhere"}', "'last' must name a step-NNNNNNNN checkpoint, got '../../elsewhere'"),
        ('{"last": "step-00000010", "best": 7}', "'best' must name a step-NNNNNNNN checkpoint, got 7"),
        ('{"best_loss": "low"}', "'best_loss' must be a number, got 'low'"),
    ],
)
def test_an_index_is_checked_before_it_is_trusted(tmp_path, index, message):
    (tmp_path / "index.json").write_text(index)
    with pytest.raises(UserError, match=re.escape(message)):
        CheckpointManager(tmp_path)


def test_manager_keeps_last_k_and_the_best(tmp_path):
    m = CheckpointManager(tmp_path, keep_last=2)
    losses = {10: 3.0, 20: 1.0, 30: 2.0, 40: 2.5, 50: float("nan")}
    for step, loss in losses.items():
        m.save(step, model={"w": torch.full((1,), float(step))}, loss=loss)
    assert m.names() == ["step-00000020", "step-00000040", "step-00000050"]
    assert m.index["best"] == "step-00000020" and m.index["last"] == "step-00000050"
    assert read_checkpoint(m.path("best")).model["w"].item() == 20.0
    again = CheckpointManager(tmp_path, keep_last=2)
    assert again.path("last") == tmp_path / "step-00000050"
    no_best = CheckpointManager(tmp_path / "b", keep_last=1, keep_best=False)
    for step, loss in losses.items():
        no_best.save(step, model={"w": torch.ones(1)}, loss=loss)
    assert no_best.names() == ["step-00000050"]
    with pytest.raises(ValueError, match="keep_last must be an integer >= 1, got 0"):
        CheckpointManager(tmp_path, keep_last=0)


def test_leftovers_of_a_crash_are_replaced(tmp_path):
    m = CheckpointManager(tmp_path, keep_last=3)
    m.save(10, model={"w": torch.ones(1)}, loss=1.0)
    (tmp_path / "step-00000020.tmp").mkdir()  # died while assembling
    write_checkpoint(tmp_path / "step-00000020", model={"w": torch.zeros(1)})  # died before the index
    assert m.path("last").name == "step-00000010"
    m.save(20, model={"w": torch.full((1,), 2.0)}, loss=1.0)
    assert read_checkpoint(tmp_path / "step-00000020").model["w"].item() == 2.0
    assert not list(tmp_path.glob("*.tmp"))


def test_a_checkpoint_write_that_fails_midway_leaves_no_temporary_folder(tmp_path, monkeypatch):
    import errno

    from contrastlab.training import checkpoint as ckpt_module

    manager = CheckpointManager(tmp_path / "checkpoints", keep_last=2)
    manager.save(1, model={"w": torch.ones(2)}, loss=1.0)
    before = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    real = ckpt_module.atomic_write_bytes
    calls = []

    def full_disk(path, data):
        calls.append(path)
        if len(calls) == 2:  # the second file of the checkpoint: the disk is full
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path, data)

    monkeypatch.setattr(ckpt_module, "atomic_write_bytes", full_disk)
    with pytest.raises(OSError, match="No space left"):
        manager.save(2, model={"w": torch.zeros(2)}, loss=0.5)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == before
