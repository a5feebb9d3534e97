import math

import pytest
import torch
from torch import nn

from contrastlab.training.optim import LARS, build_optimizer, lr_factor, param_groups


def lars_reference(w, grads, *, lr, momentum, weight_decay, eta):
    """LARS written element by element in float64 from You et al. (2017), SimCLR's variant."""
    w = [float(v) for v in w]
    buf = None
    for g in grads:
        u = [gi + weight_decay * wi for gi, wi in zip(g, w)]
        wn, un = math.sqrt(sum(v * v for v in w)), math.sqrt(sum(v * v for v in u))
        r = eta * wn / un if wn > 0 and un > 0 else 1.0
        u = [r * v for v in u]
        buf = u if buf is None else [momentum * b + v for b, v in zip(buf, u)]
        w = [wi - lr * b for wi, b in zip(w, buf)]
    return w


def test_lars_matches_the_reference():
    torch.manual_seed(0)
    w0 = torch.randn(6, dtype=torch.float64)
    grads = [torch.randn(6, dtype=torch.float64) for _ in range(4)]
    w = nn.Parameter(w0.clone())
    opt = LARS([w], lr=0.5, momentum=0.9, weight_decay=0.01, trust_coefficient=0.02)
    for g in grads:
        w.grad = g.clone()
        opt.step()
    expected = lars_reference(w0.tolist(), [g.tolist() for g in grads], lr=0.5, momentum=0.9, weight_decay=0.01, eta=0.02)
    assert torch.allclose(w.detach(), torch.tensor(expected, dtype=torch.float64), atol=1e-12)


def test_lars_plain_group_is_sgd_with_momentum():
    torch.manual_seed(0)
    a, b = nn.Parameter(torch.randn(5)), None
    b = nn.Parameter(a.detach().clone())
    lars = LARS([{"params": [a], "lars": False, "weight_decay": 0.0}], lr=0.1, momentum=0.9)
    sgd = torch.optim.SGD([b], lr=0.1, momentum=0.9)
    for _ in range(3):
        g = torch.randn(5)
        a.grad, b.grad = g.clone(), g.clone()
        lars.step()
        sgd.step()
    assert torch.allclose(a, b)


def test_lars_validates_options():
    with pytest.raises(ValueError, match="momentum must be in \\[0, 1\\), got 1.5"):
        LARS([nn.Parameter(torch.ones(1))], lr=0.1, momentum=1.5)
    with pytest.raises(ValueError, match="lr must be > 0, got 0"):
        LARS([nn.Parameter(torch.ones(1))], lr=0)


def test_param_groups_exclude_biases_and_norms_once():
    net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    groups = param_groups([net, net[0]], weight_decay=0.1, exclude_bias_and_norm=True)
    decay, plain = groups
    assert [p.shape for p in decay["params"]] == [(4, 3), (2, 4)]
    assert len(plain["params"]) == 4 and plain["weight_decay"] == 0.0 and not plain["lars"]
    (only,) = param_groups([net], weight_decay=0.1, exclude_bias_and_norm=False)
    assert len(only["params"]) == 6


def test_build_optimizer_kinds_and_errors():
    net = nn.Linear(3, 2)
    assert isinstance(build_optimizer("adamw", [net], lr=1e-3, weight_decay=0.1), torch.optim.AdamW)
    sgd = build_optimizer("sgd", [net], lr=0.1, momentum=0.8, nesterov=True)
    assert isinstance(sgd, torch.optim.SGD) and sgd.param_groups[0]["momentum"] == 0.8
    assert isinstance(build_optimizer("lars", [net], lr=0.1), LARS)
    with pytest.raises(ValueError, match="optimizer must be one of 'adamw', 'sgd', 'lars', got 'adam'"):
        build_optimizer("adam", [net], lr=0.1)


def test_warmup_then_cosine():
    f = [lr_factor(s, total_steps=110, warmup_steps=10, min_ratio=0.1) for s in range(110)]
    assert f[:10] == pytest.approx([(s + 1) / 10 for s in range(10)])
    assert f[10] == pytest.approx(1.0)
    assert f[60] == pytest.approx(0.1 + 0.9 * 0.5)  # half-way through the cosine
    assert all(a >= b for a, b in zip(f[10:], f[11:]))  # monotone after warm-up
    assert f[-1] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 99 / 100)))
    assert lr_factor(50, total_steps=100, schedule="constant") == 1.0
    with pytest.raises(ValueError, match="schedule must be one of 'cosine', 'constant', got 'step'"):
        lr_factor(0, total_steps=10, schedule="step")
