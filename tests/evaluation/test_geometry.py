import itertools
import math

import numpy as np
import pytest
import torch
from scipy.special import i0

from contrastlab.evaluation import alignment, effective_rank, feature_norms, uniformity
from contrastlab.evaluation.sets import set_geometry, tammes_reference, tammes_view


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


# Invariance sets: diameter, margin and the Tammes view (homework 4(b), 4(e)).

def brute_set_geometry(x, ids, normalize=True):
    """The homework's definitions, literally: the full distance matrix and loops over sets and pairs of sets."""
    x = np.asarray(x, dtype=np.float64)
    if normalize:
        x = x / np.linalg.norm(x, axis=1, keepdims=True)
    dist = np.sqrt(((x[:, None, :] - x[None, :, :]) ** 2).sum(-1))
    labels = sorted(set(int(i) for i in ids))
    members = {s: [k for k in range(len(ids)) if ids[k] == s] for s in labels}
    diameter, margin, nearest = [], [], []
    for s in labels:
        diameter.append(max(dist[a, b] for a in members[s] for b in members[s]))
        to = {t: min(dist[a, b] for a in members[s] for b in members[t]) for t in labels if t != s}
        best = min(to, key=lambda t: (to[t], t))
        margin.append(to[best])
        nearest.append(best)
    return labels, np.array(diameter), np.array(margin), nearest


def test_set_geometry_by_hand():
    x = torch.tensor([[0.0, 0.0], [0.0, 1.0], [3.0, 0.0], [3.0, 2.0], [0.0, 5.0]])
    geo = set_geometry(x, torch.tensor([5, 5, 9, 9, 2]), normalize=False)
    # sets in sorted order: 2 = {(0,5)}, 5 = {(0,0),(0,1)}, 9 = {(3,0),(3,2)}
    assert geo["set_labels"].tolist() == [2, 5, 9]
    assert geo["sizes"].tolist() == [1, 2, 2]
    assert geo["diameter"].tolist() == [0.0, 1.0, 2.0]  # a single row has diameter 0
    # 2: (0,5)-(0,1) = 4 < (0,5)-(3,2) = sqrt(18); 5 and 9 meet at (0,0)-(3,0) = 3
    assert geo["margin"].tolist() == [4.0, 3.0, 3.0]
    assert geo["nearest_set"].tolist() == [5, 9, 5]
    assert geo["separated_share"] == 1.0 and geo["median_diameter"] == 1.0 and geo["median_margin"] == 3.0
    assert geo["sets"] == 3 and geo["min_size"] == 1
    assert all(type(geo[k]) is float for k in ("median_diameter", "median_margin", "separated_share"))
    assert all(type(geo[k]) is int for k in ("sets", "min_size"))
    # (0,1) joins set 9: now 5 = {(0,0)} meets 9 at 1 < 9's diameter sqrt(10)
    geo = set_geometry(x.numpy(), [5, 9, 9, 9, 2], normalize=False)
    assert geo["diameter"] == pytest.approx([0.0, 0.0, math.sqrt(10)])
    assert geo["margin"] == pytest.approx([4.0, 1.0, 1.0])
    assert geo["separated_share"] == pytest.approx(2 / 3)


@pytest.mark.parametrize("normalize", [True, False])
def test_set_geometry_equals_the_definitions_by_loops(normalize):
    rng = np.random.default_rng(3)
    ids = rng.integers(0, 6, 53)
    ids[:2] = [17, 23]  # two sets of one row
    x = rng.standard_normal((53, 5)) + 2.0 * rng.standard_normal((24, 5))[ids]
    labels, diameter, margin, nearest = brute_set_geometry(x, ids, normalize)
    for chunk in (1, 7, 52, 53, 1000):  # blocks of one row, a ragged last block, one block
        geo = set_geometry(torch.from_numpy(x), ids, normalize=normalize, chunk=chunk)
        assert geo["set_labels"].tolist() == labels
        np.testing.assert_allclose(geo["diameter"], diameter, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(geo["margin"], margin, rtol=1e-12)
        assert geo["nearest_set"].tolist() == nearest
        assert geo["separated_share"] == pytest.approx(np.mean(margin > diameter))
        assert geo["median_margin"] == pytest.approx(np.median(margin), rel=1e-12)


def test_separated_share_for_clusters_and_for_interleaved_sets():
    g = torch.Generator().manual_seed(4)
    centres = torch.eye(8) * 10.0
    ids = torch.arange(80) % 8
    clusters = centres[ids] + 0.01 * torch.randn(80, 8, generator=g)
    assert set_geometry(clusters, ids)["separated_share"] == 1.0
    theta = torch.arange(60, dtype=torch.float64) * (2 * math.pi / 60)
    circle = torch.stack([theta.cos(), theta.sin()], dim=1)
    geo = set_geometry(circle, torch.arange(60) % 3)  # neighbours on the circle always belong to other sets
    assert geo["separated_share"] == 0.0
    assert geo["diameter"] == pytest.approx([2.0] * 3)
    assert geo["margin"] == pytest.approx([2 * math.sin(math.pi / 60)] * 3)


def test_set_geometry_ignores_row_order_and_set_names():
    rng = np.random.default_rng(5)
    ids = rng.integers(0, 7, 40)
    x = rng.standard_normal((40, 4))
    geo = set_geometry(x, ids, chunk=9)
    perm = rng.permutation(40)
    rename = {s: 100 - 3 * s for s in range(7)}  # reverses the sorted order of the sets
    moved = set_geometry(x[perm], np.array([rename[s] for s in ids[perm]]), chunk=9)
    back = np.argsort([rename[s] for s in geo["set_labels"]])  # position of each original set in `moved`
    order = np.argsort(back)
    np.testing.assert_allclose(moved["diameter"][order], geo["diameter"], rtol=1e-12)
    np.testing.assert_allclose(moved["margin"][order], geo["margin"], rtol=1e-12)
    assert moved["nearest_set"][order].tolist() == [rename[s] for s in geo["nearest_set"]]
    assert moved["separated_share"] == geo["separated_share"]


def test_set_geometry_scale_with_and_without_normalisation():
    rng = np.random.default_rng(6)
    ids, x = rng.integers(0, 4, 30), rng.standard_normal((30, 3))
    raw, scaled = set_geometry(x, ids, normalize=False), set_geometry(7.0 * x, ids, normalize=False)
    np.testing.assert_allclose(scaled["diameter"], 7.0 * raw["diameter"], rtol=1e-12)
    np.testing.assert_allclose(scaled["margin"], 7.0 * raw["margin"], rtol=1e-12)
    unit_geo, unit_scaled = set_geometry(x, ids), set_geometry(7.0 * x, ids)
    np.testing.assert_allclose(unit_scaled["margin"], unit_geo["margin"], rtol=1e-12)
    assert unit_geo["diameter"].max() <= 2.0 < raw["diameter"].max()


def test_set_geometry_errors():
    x = torch.randn(6, 3)
    with pytest.raises(ValueError, match="set_ids"):
        set_geometry(x, [0, 1, 0])
    with pytest.raises(ValueError, match="set_ids.*2 sets"):
        set_geometry(x, [4] * 6)
    with pytest.raises(ValueError, match="features.*NaN"):
        set_geometry(torch.tensor([[float("nan"), 1.0], [0.0, 1.0]]), [0, 1])
    with pytest.raises(ValueError, match="set_ids"):
        set_geometry(x, [0.5, 1, 0, 1, 0, 1])
    with pytest.raises(ValueError, match="chunk"):
        set_geometry(x, [0, 1] * 3, chunk=0)
    with pytest.raises(ValueError, match="features"):
        tammes_view(torch.randn(6), [0, 1] * 3)


def test_tammes_closed_forms():
    assert tammes_reference(1, 3) == (180.0, "exact")
    for d in range(2, 9):
        assert tammes_reference(2, d) == (180.0, "exact")
        for n in range(3, d + 2):
            assert tammes_reference(n, d) == (math.degrees(math.acos(-1.0 / (n - 1))), "exact")
        for n in range(d + 2, 2 * d + 1):
            assert tammes_reference(n, d) == (90.0, "exact")
    assert tammes_reference(4, 3)[0] == pytest.approx(109.4712206, abs=1e-6)  # tetrahedron
    assert tammes_reference(1000, 512) == (90.0, "exact")
    assert tammes_reference(3, 1) == (0.0, "exact")


@pytest.mark.parametrize("n", [3, 5, 7, 12, 40])
def test_tammes_on_the_circle(n):
    assert tammes_reference(n, 2) == (pytest.approx(360.0 / n, rel=1e-15), "exact")


@pytest.mark.parametrize("n, optimum", [(5, 90.0), (6, 90.0), (7, 77.8695), (8, 74.8585), (12, 63.4349),
                                        (24, 43.6908)])
def test_tammes_known_optima_in_three_dimensions(n, optimum):
    angle, how = tammes_reference(n, 3)
    assert how == ("exact" if n <= 6 else "best found")
    assert optimum - 0.3 <= angle <= optimum + 1e-3  # a found configuration never beats the optimum


def test_tammes_search_is_deterministic_and_below_rankins_bound():
    angle, how = tammes_reference(9, 4)  # n > 2d: strictly below 90 degrees (Rankin 1955)
    assert how == "best found" and 75.0 < angle < 90.0
    assert tammes_reference(9, 4) == (angle, how)
    with pytest.raises(ValueError, match="n must"):
        tammes_reference(0, 3)
    with pytest.raises(ValueError, match="d must"):
        tammes_reference(3, 2.5)
    with pytest.raises(ValueError, match="seed"):
        tammes_reference(9, 4, seed=-1)


def test_tammes_view_of_a_collapsed_simplex_is_optimal():
    k = 5
    vertices = unit(torch.eye(k) - 1.0 / k)  # n = d: the regular simplex in R^d
    ids = torch.arange(4 * k) % k
    view = tammes_view(vertices[ids], ids)
    simplex = math.degrees(math.acos(-1.0 / (k - 1)))
    assert view["reference_how"] == "exact" and view["reference_angle"] == pytest.approx(simplex, rel=1e-15)
    assert view["ratio"] == pytest.approx(1.0, rel=1e-12)
    assert view["min_angle"] == pytest.approx(simplex, rel=1e-12)
    assert view["mean_nearest_angle"] == pytest.approx(simplex, rel=1e-12)
    assert view["centre_norm_mean"] == pytest.approx(1.0, rel=1e-12)  # each set is one point
    np.testing.assert_allclose(view["centres"], vertices.numpy(), atol=1e-12)


def test_tammes_view_equals_the_definitions_by_loops():
    rng = np.random.default_rng(7)
    ids = rng.integers(0, 9, 70)
    x = rng.standard_normal((70, 4)) + 1.5 * rng.standard_normal((9, 4))[ids]
    view = tammes_view(x, ids)
    u = x / np.linalg.norm(x, axis=1, keepdims=True)
    means = [u[ids == s].mean(axis=0) for s in range(9)]
    c = [m / np.linalg.norm(m) for m in means]
    angle = [[math.degrees(math.acos(np.clip(c[a] @ c[b], -1, 1))) for b in range(9) if b != a] for a in range(9)]
    assert view["min_angle"] == pytest.approx(min(min(row) for row in angle), rel=1e-9)
    assert view["mean_nearest_angle"] == pytest.approx(np.mean([min(row) for row in angle]), rel=1e-9)
    assert view["centre_norm_mean"] == pytest.approx(np.mean([np.linalg.norm(m) for m in means]), rel=1e-12)
    assert view["centre_norm_mean"] < 1.0
    assert view["reference_how"] == "best found" and view["sets"] == 9
    assert view["ratio"] == pytest.approx(view["min_angle"] / tammes_reference(9, 4)[0])


def test_tammes_view_skips_a_search_that_would_take_minutes():
    ids = torch.arange(2 * 900) % 900  # 900 sets in 128-D: no closed form, 900² · 128 > 1e8
    view = tammes_view(torch.randn(1800, 128, dtype=torch.float64), ids)
    assert view["reference_how"] == "skipped" and math.isnan(view["reference_angle"]) and math.isnan(view["ratio"])
    assert 0.0 < view["min_angle"] <= view["mean_nearest_angle"] < 180.0


def test_tammes_view_rejects_a_set_without_direction():
    x = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0]])
    with pytest.raises(ValueError, match=r"\[0\]"):
        tammes_view(x, [0, 0, 1])
