"""Momentum target towers: the EMA against a float64 loop from the paper and against lightly's update_momentum."""

import math
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parents[1] / "objectives"))
import _peers  # noqa: E402

from contrastlab.encoders.momentum import MomentumTargets, check_momentum, momentum_at, update_momentum  # noqa: E402


def net():
    return nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 3)).double()


def test_update_is_the_papers_ema_for_every_parameter_and_copies_buffers():
    online, target = net(), net()
    online(torch.randn(8, 4, dtype=torch.float64))  # BatchNorm running statistics move
    expected = [0.9 * t.detach().clone() + 0.1 * o.detach() for t, o in zip(target.parameters(), online.parameters())]
    update_momentum(online, target, 0.9)
    for got, want in zip(target.parameters(), expected):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-15)
    for b_t, b_o in zip(target.buffers(), online.buffers()):
        assert torch.equal(b_t, b_o)


def test_momentum_zero_copies_and_momentum_near_one_barely_moves():
    online, target = net(), net()
    update_momentum(online, target, 0.0)
    assert all(torch.equal(a, b) for a, b in zip(online.parameters(), target.parameters()))
    with torch.no_grad():
        for p in online.parameters():
            p.add_(1.0)
    before = [p.clone() for p in target.parameters()]
    update_momentum(online, target, 0.999)
    assert all(torch.allclose(t, b + 0.001) for t, b in zip(target.parameters(), before))


def test_cosine_schedule_from_the_base_to_one():
    # BYOL section 3.2: tau = 1 - (1 - tau_base) (cos(pi k / K) + 1) / 2
    for k in range(0, 11):
        want = 1 - (1 - 0.99) * (math.cos(math.pi * k / 10) + 1) / 2
        assert momentum_at(0.99, k, 10) == pytest.approx(want, abs=1e-15)
    assert momentum_at(0.99, 7, 10, "constant") == 0.99
    with pytest.raises(ValueError, match="schedule must be one of 'cosine', 'constant', got 'linear'"):
        momentum_at(0.99, 1, 10, "linear")


@pytest.mark.parametrize("bad", [1.0, -0.1, 2, True, "0.9", float("nan")])
def test_a_momentum_outside_0_1_is_refused_naming_it(bad):
    with pytest.raises(ValueError, match=r"momentum must be a number in \[0, 1\), got"):
        check_momentum(bad)
    with pytest.raises(ValueError, match="momentum must be"):
        MomentumTargets(nn.ModuleDict({"x": net()}), momentum=bad)


def test_targets_are_frozen_copies():
    online = nn.ModuleDict({"x": net()})
    targets = MomentumTargets(online, momentum=0.5)
    assert all(not p.requires_grad for p in targets.parameters())
    assert all(torch.equal(a, b) for a, b in zip(online.parameters(), targets.towers.parameters()))
    assert targets.towers["x"] is not online["x"]


def test_agrees_with_lightly_update_momentum_and_cosine_schedule():
    peer_update = _peers.lightly("update_momentum", "lightly.models.utils")
    online, ours, theirs = net(), net(), net()
    theirs.load_state_dict(ours.state_dict())
    for m in (0.0, 0.5, 0.99):
        with torch.no_grad():
            for p in online.parameters():
                p.add_(torch.randn_like(p))
        update_momentum(online, ours, m)
        peer_update(online, theirs, m)
        for a, b in zip(ours.parameters(), theirs.parameters()):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-14)
    peer_schedule = _peers.lightly("cosine_schedule", "lightly.utils.scheduler")
    for k in (0, 3, 9):  # lightly's schedule reaches its end value at step max_steps - 1
        assert momentum_at(0.99, k, 9) == pytest.approx(peer_schedule(k, 10, 0.99, 1.0), abs=1e-12)
