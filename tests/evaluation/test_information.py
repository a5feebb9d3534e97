import math

import numpy as np
import pytest
import torch
from sklearn.cross_decomposition import CCA

from contrastlab.evaluation import canonical_correlations, info_nce_bound, mi_lower_bound


def test_mi_lower_bound():
    assert mi_lower_bound(0.0, 256) == pytest.approx(math.log(256))
    assert mi_lower_bound(math.log(256), 256) == pytest.approx(0.0)
    with pytest.raises(ValueError, match="k must be at least 2"):
        mi_lower_bound(1.0, 1)
    with pytest.raises(ValueError, match="-0.5"):
        mi_lower_bound(-0.5, 8)


def test_info_nce_bound_equals_the_formula_by_loops():
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(12, 4, generator=g).double(), torch.randn(12, 4, generator=g).double()
    tau, k = 0.3, 4
    a = z1 / z1.norm(dim=1, keepdim=True)
    b = z2 / z2.norm(dim=1, keepdim=True)
    losses = []
    for start in range(0, 12, k):
        total = 0.0
        for i in range(start, start + k):
            row = [float(a[i] @ b[j]) / tau for j in range(start, start + k)]
            col = [float(a[j] @ b[i]) / tau for j in range(start, start + k)]
            own = float(a[i] @ b[i]) / tau
            total += 0.5 * (-own + math.log(sum(map(math.exp, row)))) + 0.5 * (-own + math.log(sum(map(math.exp, col))))
        losses.append(total / k)
    out = info_nce_bound(z1, z2, temperature=tau, k=k)
    assert out["loss"] == pytest.approx(sum(losses) / len(losses), rel=1e-12)
    assert out["mi_lower_bound"] == pytest.approx(math.log(k) - out["loss"])


def test_info_nce_bound_limits():
    z = torch.eye(16)
    assert info_nce_bound(z, z, temperature=0.01, k=16)["mi_lower_bound"] == pytest.approx(math.log(16), abs=1e-6)
    same = torch.ones(16, 3)  # nothing tells items apart: loss = log k, bound 0
    assert info_nce_bound(same, same, k=16)["mi_lower_bound"] == pytest.approx(0.0, abs=1e-12)
    assert info_nce_bound(torch.randn(5, 2), torch.randn(5, 2), k=64)["k"] == 5


def test_cca_of_an_invertible_linear_map_is_all_ones():
    x = np.random.default_rng(0).normal(size=(500, 4))
    a = np.random.default_rng(1).normal(size=(4, 4))
    np.testing.assert_allclose(canonical_correlations(x, x @ a + 3.0), np.ones(4), atol=1e-5)


def test_cca_recovers_a_planted_correlation():
    rng = np.random.default_rng(2)
    n, rho = 20_000, 0.6
    s, n1, n2 = rng.normal(size=(3, n))
    x = np.stack([s, rng.normal(size=n), rng.normal(size=n)], 1) @ rng.normal(size=(3, 3))
    y = np.stack([rho * s + math.sqrt(1 - rho**2) * n2, n1 * 0 + rng.normal(size=n)], 1) @ rng.normal(size=(2, 2))
    r = canonical_correlations(x, y)
    assert r.shape == (2,)
    assert r[0] == pytest.approx(rho, abs=0.02)
    assert r[1] < 0.05
    # scikit-learn's iterative CCA finds the same first correlation
    u, v = CCA(n_components=1, max_iter=2000, tol=1e-10).fit(x, y).transform(x, y)
    assert r[0] == pytest.approx(abs(np.corrcoef(u[:, 0], v[:, 0])[0, 1]), abs=1e-3)


def test_cca_of_independent_towers_is_small_and_options():
    rng = np.random.default_rng(3)
    r = canonical_correlations(rng.normal(size=(5000, 3)), rng.normal(size=(5000, 5)))
    assert r.shape == (3,) and (r < 0.1).all() and (np.diff(r) <= 0).all()
    assert canonical_correlations(rng.normal(size=(50, 3)), rng.normal(size=(50, 3)), n_components=2).shape == (2,)
    with pytest.raises(ValueError, match="n_components=4"):
        canonical_correlations(rng.normal(size=(50, 3)), rng.normal(size=(50, 3)), n_components=4)
    with pytest.raises(ValueError, match="rows"):
        canonical_correlations(rng.normal(size=(50, 3)), rng.normal(size=(40, 3)))
    with pytest.raises(ValueError, match="-1"):
        canonical_correlations(rng.normal(size=(50, 3)), rng.normal(size=(50, 3)), reg=-1)
