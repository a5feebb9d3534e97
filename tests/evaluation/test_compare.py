"""Representation comparison: linear CKA (biased / debiased), mutual k-NN and SVCCA."""

import json
import math

import numpy as np
import pytest
import torch

from contrastlab.evaluation.compare import compare_representations, linear_cka, mutual_knn, svcca


# ---- slow references, written literally from the papers (float64, N × N matrices) -------------------------

def _gram(x):
    return x @ x.T


def _hsic0(k, l):
    """Kornblith et al. (2019), eq. 3: tr(KHLH) / (n − 1)²."""
    n = k.shape[0]
    h = np.eye(n) - np.ones((n, n)) / n
    return np.trace(k @ h @ l @ h) / (n - 1) ** 2


def _hsic1(k, l):
    """Song et al. (2012), HSIC_1: the unbiased estimator, with the diagonals of K and L set to zero."""
    n = k.shape[0]
    kt, lt = k - np.diag(np.diag(k)), l - np.diag(np.diag(l))
    one = np.ones(n)
    return (np.trace(kt @ lt) + (one @ kt @ one) * (one @ lt @ one) / ((n - 1) * (n - 2))
            - 2.0 / (n - 2) * (one @ kt @ lt @ one)) / (n * (n - 3))


def _u_centre(k):
    """Székely & Rizzo's U-centring (the form Nguyen et al. use): <K̂, L̂> / (n(n − 3)) is HSIC_1."""
    n = k.shape[0]
    k = k - np.diag(np.diag(k))  # U-centring works on a matrix with a zero diagonal
    out = k - k.sum(0, keepdims=True) / (n - 2) - k.sum(1, keepdims=True) / (n - 2) + k.sum() / ((n - 1) * (n - 2))
    np.fill_diagonal(out, 0.0)
    return out


def _ref_cka(x, y, debiased):
    xc, yc = x - x.mean(0), y - y.mean(0)
    k, l = _gram(xc), _gram(yc)
    hsic = _hsic1 if debiased else _hsic0
    return hsic(k, l) / math.sqrt(hsic(k, k) * hsic(l, l))


def _ref_mutual_knn(x, y, k, center=True):
    def neighbours(a):
        if center:
            a = a - a.mean(0)
        a = a / np.linalg.norm(a, axis=1, keepdims=True)
        s = a @ a.T
        np.fill_diagonal(s, -np.inf)
        return [set(np.argsort(-row, kind="stable")[:k].tolist()) for row in s]
    nx, ny = neighbours(x), neighbours(y)
    return float(np.mean([len(a & b) / k for a, b in zip(nx, ny)]))


def _orthogonal(d, seed):
    return np.linalg.qr(np.random.default_rng(seed).normal(size=(d, d)))[0]


SHAPES = [(4, 2, 3), (6, 3, 5), (10, 40, 70), (12, 30, 5), (30, 50, 60), (200, 20, 9), (64, 64, 64)]


# ---- CKA: fast path equals the literal formulas -----------------------------------------------------------

@pytest.mark.parametrize("n,p,q", SHAPES)
def test_cka_equals_the_literal_gram_matrix_formulas(n, p, q):
    rng = np.random.default_rng(n * 1000 + p + q)
    x = rng.normal(size=(n, p)) * rng.exponential(size=p) + 3.0  # uneven columns, off-centre
    y = x[:, :1] * rng.normal(size=(1, q)) + rng.normal(size=(n, q))  # partly dependent on x
    assert linear_cka(x, y, debiased=False) == pytest.approx(_ref_cka(x, y, debiased=False), abs=1e-10)
    assert linear_cka(x, y) == pytest.approx(_ref_cka(x, y, debiased=True), abs=1e-10)


def test_the_unbiased_hsic_references_agree_and_ignore_translation():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(9, 3)), rng.normal(size=(9, 5))
    k, l = _gram(x - x.mean(0)), _gram(y - y.mean(0))
    assert _hsic1(k, l) == pytest.approx(np.sum(_u_centre(k) * _u_centre(l)) / (9 * 6), abs=1e-12)
    shifted = x + rng.normal(size=3) * 5.0  # HSIC_1 on the raw Gram is the same as on centred features
    assert _hsic1(_gram(shifted), _gram(y)) == pytest.approx(_hsic1(k, l), abs=1e-10)


def test_torch_and_numpy_inputs_agree():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(40, 5)), rng.normal(size=(40, 7))
    assert linear_cka(torch.from_numpy(x), y) == pytest.approx(linear_cka(x, y), abs=1e-12)


# ---- known answers ---------------------------------------------------------------------------------------

def test_an_orthogonal_map_isotropic_scale_and_translation_change_nothing():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(300, 12)) * np.linspace(0.5, 3.0, 12)
    y = 2.5 * x @ _orthogonal(12, 3) + rng.normal(size=12) * 4.0
    assert linear_cka(x, y) == pytest.approx(1.0, abs=1e-10)
    assert linear_cka(x, y, debiased=False) == pytest.approx(1.0, abs=1e-10)
    assert svcca(x, y)["mean"] == pytest.approx(1.0, abs=1e-5)
    assert mutual_knn(x, y, k=10) == 1.0
    out = compare_representations(x, y)
    assert out["cka"] == pytest.approx(1.0, abs=1e-10) and out["mutual_knn"] == 1.0
    assert out["svcca"] == pytest.approx(1.0, abs=1e-5)


def test_independent_representations():
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(500, 64)), rng.normal(size=(500, 64))
    assert abs(linear_cka(x, y)) < 0.02
    assert linear_cka(x, y, debiased=False) > 0.08  # the bias: about D / (N + D)
    out = compare_representations(x, y, k=10)
    assert out["mutual_knn_chance"] == pytest.approx(10 / 499)
    assert abs(out["mutual_knn"] - out["mutual_knn_chance"]) < 0.01
    assert out["cka"] == pytest.approx(linear_cka(x, y), abs=1e-12)
    assert out["cka_biased"] == pytest.approx(linear_cka(x, y, debiased=False), abs=1e-12)


def test_cka_changes_under_a_non_isotropic_scaling_and_is_symmetric():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(200, 8))
    z = x + rng.normal(size=(200, 8))
    stretched = x * np.array([1.0, 1.0, 1.0, 1.0, 5.0, 5.0, 0.2, 0.2])
    for debiased in (True, False):
        assert linear_cka(x, stretched, debiased=debiased) < 0.95
        assert abs(linear_cka(stretched, z, debiased=debiased) - linear_cka(x, z, debiased=debiased)) > 0.02
        assert linear_cka(x, z, debiased=debiased) == pytest.approx(linear_cka(z, x, debiased=debiased), abs=1e-12)
    assert svcca(x, stretched)["mean"] == pytest.approx(1.0, abs=1e-5)  # SVCCA is invariant to it
    assert mutual_knn(x, z, k=5) == mutual_knn(z, x, k=5)


# ---- mutual k-NN --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("center", [True, False])
def test_mutual_knn_equals_the_literal_definition(center):
    rng = np.random.default_rng(6)
    x = rng.normal(size=(60, 5)) + 1.0
    y = x @ rng.normal(size=(5, 7)) + 0.7 * rng.normal(size=(60, 7))
    for k in (1, 4, 59):
        assert mutual_knn(x, y, k=k, center=center, backend="torch") == pytest.approx(
            _ref_mutual_knn(x, y, k, center), abs=1e-12)
    assert mutual_knn(x, y, k=59) == 1.0  # every other item is a neighbour in both


# ---- SVCCA ------------------------------------------------------------------------------------------------

def test_svcca_keeps_the_directions_holding_the_variance():
    rng = np.random.default_rng(7)
    x = rng.normal(size=(400, 4)) @ rng.normal(size=(4, 10)) + 1e-3 * rng.normal(size=(400, 10))
    y = rng.normal(size=(400, 3)) @ rng.normal(size=(3, 6))
    out = svcca(x, y)
    assert out["dims"] == (4, 3) and len(out["correlations"]) == 3
    assert out["correlations"] == sorted(out["correlations"], reverse=True)
    assert out["mean"] == pytest.approx(np.mean(out["correlations"]))
    assert svcca(x, y, max_dims=2)["dims"] == (2, 2)
    s = np.linalg.svd(x - x.mean(0), compute_uv=False) ** 2
    d = svcca(x, y, keep=0.5)["dims"][0]
    assert s[:d].sum() / s.sum() >= 0.5 > s[:d - 1].sum() / s.sum()


def test_svcca_agrees_with_scikit_learn_cca():
    cross_decomposition = pytest.importorskip("sklearn.cross_decomposition")
    rng = np.random.default_rng(8)
    n = 2000
    s = rng.normal(size=(n, 2))
    x = np.hstack([s, rng.normal(size=(n, 2))]) @ rng.normal(size=(4, 4))
    y = np.hstack([s[:, :1] + 0.5 * rng.normal(size=(n, 1)), s[:, 1:] + 2.0 * rng.normal(size=(n, 1)),
                   rng.normal(size=(n, 1))]) @ rng.normal(size=(3, 3))
    out = svcca(x, y, keep=1.0)
    assert out["dims"] == (4, 3)
    cca = cross_decomposition.CCA(n_components=3, scale=False, max_iter=5000, tol=1e-12).fit(x, y)
    u, v = cca.transform(x, y)
    peer = sorted((abs(np.corrcoef(u[:, i], v[:, i])[0, 1]) for i in range(3)), reverse=True)
    np.testing.assert_allclose(out["correlations"], peer, atol=1e-4)


# ---- compare_representations -------------------------------------------------------------------------------

def test_compare_representations_subsets_the_same_rows_and_is_json_ready():
    rng = np.random.default_rng(9)
    x = rng.normal(size=(1500, 6))
    y = np.hstack([x @ _orthogonal(6, 10), np.zeros((1500, 2))]) * 0.3 - 1.0  # wider, same geometry
    out = compare_representations(x, y, k=5, max_items=400, seed=3)
    assert out["items"] == 400 and out["items_total"] == 1500
    assert out["cka"] == pytest.approx(1.0, abs=1e-10) and out["mutual_knn"] == 1.0  # rows stayed paired
    assert out["svcca_dims"] == [6, 6] and "subset" in out["notes"][0]
    assert json.loads(json.dumps(out)) == out
    z = rng.normal(size=(1500, 6))
    assert compare_representations(x, z, max_items=400, seed=3) == compare_representations(x, z, max_items=400, seed=3)
    assert compare_representations(x, z, max_items=400, seed=3)["cka"] != compare_representations(
        x, z, max_items=400, seed=4)["cka"]
    assert compare_representations(x, z, max_items=None)["items"] == 1500


def test_compare_representations_skips_svcca_when_items_are_few():
    rng = np.random.default_rng(11)
    out = compare_representations(rng.normal(size=(30, 10)), rng.normal(size=(30, 10)), k=3)
    assert "svcca" not in out and "svcca_dims" not in out
    assert any("svcca skipped" in note for note in out["notes"])
    assert {"cka", "cka_biased", "mutual_knn", "mutual_knn_chance", "items", "notes"} <= set(out)


# ---- input errors ---------------------------------------------------------------------------------------

def test_input_errors_name_the_problem():
    rng = np.random.default_rng(12)
    x, y = rng.normal(size=(10, 3)), rng.normal(size=(10, 4))
    for fn in (linear_cka, mutual_knn, svcca, compare_representations):
        with pytest.raises(ValueError, match="same number of rows"):
            fn(x, y[:9])
    with pytest.raises(ValueError, match="at least 4 items"):
        linear_cka(x[:3], y[:3])
    assert linear_cka(x[:3], y[:3], debiased=False) <= 1.0  # the biased one is defined from N = 2
    with pytest.raises(ValueError, match="at least 4 items"):
        compare_representations(x[:3], y[:3], k=1)
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="k must be a positive integer"):
            mutual_knn(x, y, k=bad)
        with pytest.raises(ValueError, match="k must be a positive integer"):
            compare_representations(x, y, k=bad)
    with pytest.raises(ValueError, match="k=10 must be at most N - 1 = 9"):
        mutual_knn(x, y, k=10)
    lowered = compare_representations(x, y, k=10)  # the summary lowers k to what N allows, and says so
    assert lowered["k"] == 9 and lowered["mutual_knn_chance"] == 1.0 and lowered["mutual_knn"] == 1.0
    assert any("k lowered from 10 to 9" in note for note in lowered["notes"])
    for bad in (0.0, 1.5, float("nan"), "all"):
        with pytest.raises(ValueError, match="keep"):
            svcca(x, y, keep=bad)
    with pytest.raises(ValueError, match="max_dims"):
        svcca(x, y, max_dims=0)
    with pytest.raises(ValueError, match=r"more items than the 6 \+ 4 directions"):
        svcca(rng.normal(size=(10, 6)), y, keep=1.0)
    with pytest.raises(ValueError, match="max_items"):
        compare_representations(x, y, max_items=0)
    with pytest.raises(ValueError, match="seed"):
        compare_representations(x, y, seed=-1)
    with pytest.raises(ValueError, match="same for every item"):
        linear_cka(np.ones((10, 3)), y)
    with pytest.raises(ValueError, match="same for every item"):
        svcca(x, np.ones((10, 2)))
    with pytest.raises(ValueError, match="shape"):
        linear_cka(np.ones(10), y)
