import itertools
import math

import numpy as np
import pytest
import torch
from scipy.special import i0

from contrastlab.evaluation import alignment, effective_rank, feature_norms, uniformity


def unit(x):
    return x / x.norm(dim=1, keepdim=True)


def test_alignment_equals_the_formula_by_loops():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(30, 4, generator=g).double(), torch.randn(30, 4, generator=g).double()
    for alpha in (1.0, 2.0, 0.5):
        ref = sum(float((unit(x)[i] - unit(y)[i]).norm()) ** alpha for i in range(30)) / 30
        assert alignment(x, y, alpha=alpha) == pytest.approx(ref, rel=1e-12)
    raw = sum(float((x[i] - y[i]).norm()) ** 2 for i in range(30)) / 30
    assert alignment(x, y, normalize=False) == pytest.approx(raw, rel=1e-12)


def test_alignment_closed_forms():
    x = unit(torch.randn(10, 6))
    assert alignment(x, x) == pytest.approx(0.0, abs=1e-12)
    assert alignment(x, -x, alpha=2.0) == pytest.approx(4.0)
    assert alignment(x, -x, alpha=3.0) == pytest.approx(8.0)


def test_uniformity_equals_the_formula_by_loops():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(25, 3, generator=g).double()
    u = unit(x)
    for t in (0.5, 2.0):
        pairs = [math.exp(-t * float((u[i] - u[j]).pow(2).sum())) for i, j in itertools.combinations(range(25), 2)]
        ref = math.log(sum(pairs) / len(pairs))
        assert uniformity(x, t=t) == pytest.approx(ref, rel=1e-12)
        assert uniformity(x, t=t, chunk=4) == pytest.approx(ref, rel=1e-12)


@pytest.mark.parametrize("t", [0.5, 2.0, 5.0])
def test_uniformity_of_evenly_spaced_points_on_the_circle(t):
    # For N evenly spaced points, sum_j exp(-t |u_i - u_j|^2) = N e^{-2t} I_0(2t) up to Bessel terms
    # I_{mN}(2t) that vanish for large N; without the j = i term, the mean over j != i follows.
    n = 400
    theta = 2 * np.pi * np.arange(n) / n
    x = torch.from_numpy(np.stack([np.cos(theta), np.sin(theta)], axis=1))
    closed = math.log((n * math.exp(-2 * t) * i0(2 * t) - 1) / (n - 1))
    assert uniformity(x, t=t) == pytest.approx(closed, rel=1e-10)


def test_uniformity_limits():
    assert uniformity(torch.ones(5, 3)) == pytest.approx(0.0, abs=1e-12)  # collapse
    two = torch.tensor([[0.0, 1.0], [0.0, -1.0]])
    assert uniformity(two, t=2.0) == pytest.approx(-8.0)  # antipodal: -4t


def test_matches_the_objectives_module_when_present():
    objectives = pytest.importorskip("contrastlab.objectives.align_uniform")
    g = torch.Generator().manual_seed(2)
    x, y = unit(torch.randn(40, 8, generator=g).double()), unit(torch.randn(40, 8, generator=g).double())
    assert alignment(x, y) == pytest.approx(float(objectives.align_loss(x, y)), rel=1e-9)
    assert uniformity(x) == pytest.approx(float(objectives.uniform_loss(x)), rel=1e-9)


def test_effective_rank_closed_forms():
    assert effective_rank(torch.eye(5)) == pytest.approx(5.0)
    assert effective_rank(torch.randn(20, 1) @ torch.randn(1, 7)) == pytest.approx(1.0, abs=1e-6)
    p = np.array([3.0, 1.0]) / 4  # singular values 3 and 1
    assert effective_rank(torch.diag(torch.tensor([3.0, 1.0]))) == pytest.approx(math.exp(-(p * np.log(p)).sum()))
    # invariant to rotations on either side
    x = torch.randn(30, 6, dtype=torch.float64)
    q1, _ = torch.linalg.qr(torch.randn(30, 30, dtype=torch.float64))
    q2, _ = torch.linalg.qr(torch.randn(6, 6, dtype=torch.float64))
    assert effective_rank(q1 @ x @ q2) == pytest.approx(effective_rank(x), rel=1e-9)
    # centring removes a dominant mean direction
    shifted = x + 100.0
    assert effective_rank(shifted) < 1.5 < effective_rank(shifted, center=True)
    with pytest.raises(ValueError, match="all-zero"):
        effective_rank(torch.zeros(3, 3))


def test_feature_norms():
    out = feature_norms(np.array([[3.0, 4.0], [0.0, 1.0]]))
    assert out == pytest.approx({"mean": 3.0, "std": 2.0, "min": 1.0, "max": 5.0})


def test_errors():
    with pytest.raises(ValueError, match=r"\(3, 2\)"):
        alignment(torch.randn(3, 2), torch.randn(3, 3))
    with pytest.raises(ValueError, match="-1"):
        alignment(torch.randn(3, 2), torch.randn(3, 2), alpha=-1)
    with pytest.raises(ValueError, match="1"):
        uniformity(torch.randn(1, 4))
    with pytest.raises(ValueError, match="NaN"):
        uniformity(torch.tensor([[float("nan"), 1.0], [0.0, 1.0]]))
