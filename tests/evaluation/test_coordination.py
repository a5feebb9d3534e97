import numpy as np
import pytest
import torch

from contrastlab.evaluation.coordination import coordination_report, pca_fit
from contrastlab.evaluation.information import canonical_correlations


def _pairs(n, noise, seed=0):
    """Two views sharing two latent signals; view a also holds 3 noise dims, view b 2.

    Column j of a is s_j + noise_a * e, column j of b is s_j + noise_b * e', so the population canonical
    correlations are 1 / sqrt((1 + noise_a^2)(1 + noise_b^2)) for both shared signals and 0 beyond.
    """
    g = np.random.default_rng(seed)
    s = g.normal(size=(n, 2))
    a = np.hstack([s + noise[0] * g.normal(size=(n, 2)), g.normal(size=(n, 3))])
    b = np.hstack([s + noise[1] * g.normal(size=(n, 2)), g.normal(size=(n, 2))])
    return a, b


def test_held_out_correlations_match_the_closed_form():
    a, b = _pairs(6000, (0.5, 1.0))
    r = coordination_report(a[:4000], b[:4000], a[4000:], b[4000:], n_components=3, reg=0.0)
    expected = 1.0 / np.sqrt((1 + 0.25) * (1 + 1.0))
    np.testing.assert_allclose(r["test_correlations"][:2], [expected, expected], atol=0.03)
    assert abs(r["test_correlations"][2]) < 0.08  # nothing shared beyond the two signals
    assert r["n_components"] == 3 and r["dims"] == [5, 4]
    assert r["mean_test_correlation"] == pytest.approx(np.mean(r["test_correlations"]))


def test_in_sample_correlations_agree_with_the_independent_implementation():
    a, b = _pairs(500, (0.3, 0.3), seed=1)
    r = coordination_report(a[:400], b[:400], a[400:], b[400:], n_components=4, reg=0.0)
    np.testing.assert_allclose(r["train_correlations"], canonical_correlations(a[:400], b[:400], reg=0.0), atol=1e-8)


def test_invariant_to_invertible_linear_maps_of_each_view():
    a, b = _pairs(800, (0.5, 0.5), seed=2)
    g = np.random.default_rng(3)
    ma, mb = g.normal(size=(5, 5)) + 3 * np.eye(5), g.normal(size=(4, 4)) + 3 * np.eye(4)
    base = coordination_report(a[:600], b[:600], a[600:], b[600:], n_components=2, reg=0.0)
    moved = coordination_report(a[:600] @ ma, b[:600] @ mb, a[600:] @ ma, b[600:] @ mb, n_components=2, reg=0.0)
    np.testing.assert_allclose(np.abs(moved["test_correlations"]), np.abs(base["test_correlations"]), atol=1e-6)
    assert moved["retrieval"]["a->b"]["R@1"] == pytest.approx(base["retrieval"]["a->b"]["R@1"], abs=1e-9)


def test_identical_views_retrieve_perfectly_and_labels_give_a_probe():
    g = np.random.default_rng(4)
    x = g.normal(size=(300, 6))
    y = (x[:, 0] > 0).astype(np.int64)
    r = coordination_report(x[:200], x[:200], x[200:], x[200:], n_components=6, train_labels=y[:200],
                            test_labels=y[200:], names=("L", "ab"))
    assert set(r["retrieval"]) == {"L->ab", "ab->L"}
    assert r["retrieval"]["L->ab"]["R@1"] == 1.0 and r["retrieval"]["ab->L"]["R@1"] == 1.0
    assert r["probe"]["test_accuracy"] > 0.9


def test_independent_views_are_not_coordinated():
    g = np.random.default_rng(5)
    a, b = g.normal(size=(1500, 4)), g.normal(size=(1500, 4))
    r = coordination_report(a[:1000], b[:1000], a[1000:], b[1000:], n_components=4)
    assert max(abs(c) for c in r["test_correlations"]) < 0.15
    assert r["retrieval"]["a->b"]["R@10"] < 0.06  # chance is 10/500 = 0.02


def test_max_dim_keeps_the_leading_principal_directions():
    g = np.random.default_rng(6)
    x = g.normal(size=(400, 3)) @ np.diag([10.0, 3.0, 0.1])
    mean, w = pca_fit(x, 2)
    np.testing.assert_allclose(w.T @ w, np.eye(2), atol=1e-10)
    assert abs(w[0, 0]) > 0.99 and abs(w[1, 1]) > 0.99  # the two widest axes, in order
    a = np.hstack([x, g.normal(size=(400, 40))])
    r = coordination_report(a[:300], a[:300], a[300:], a[300:], n_components=2, max_dim=5)
    assert r["dims"] == [5, 5]


def test_rank_deficient_features_keep_only_their_rank():
    x = np.repeat(np.random.default_rng(7).normal(size=(50, 1)), 4, axis=1)
    _, w = pca_fit(x, 4)
    assert w.shape == (4, 1)


def test_bad_inputs_name_the_problem():
    a, b = _pairs(100, (0.5, 0.5))
    with pytest.raises(ValueError, match="same items"):
        coordination_report(a[:60], b[:50], a[60:], b[60:])
    with pytest.raises(ValueError, match="differ in width"):
        coordination_report(a[:60], b[:60], a[60:, :3], b[60:])
    with pytest.raises(ValueError, match="n_components"):
        coordination_report(a[:60], b[:60], a[60:], b[60:], n_components=0)
    with pytest.raises(ValueError, match="reg"):
        coordination_report(a[:60], b[:60], a[60:], b[60:], reg=-1.0)
    with pytest.raises(ValueError, match="NaN"):
        bad = a[:60].copy()
        bad[0, 0] = np.nan
        coordination_report(bad, b[:60], a[60:], b[60:])


def test_tensors_are_accepted():
    a, b = _pairs(200, (0.5, 0.5))
    r = coordination_report(torch.from_numpy(a[:150]).float(), torch.from_numpy(b[:150]).float(),
                            torch.from_numpy(a[150:]).float(), torch.from_numpy(b[150:]).float(), n_components=2)
    assert len(r["test_correlations"]) == 2
