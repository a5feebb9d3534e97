import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.utils.estimator_checks import parametrize_with_checks

from contrastlab.evaluation import LinearProbe, linear_probe


def blobs(n_per_class, centres, scale, seed):
    rng = np.random.default_rng(seed)
    x = np.concatenate([rng.normal(c, scale, size=(n_per_class, len(c))) for c in centres])
    y = np.repeat(np.arange(len(centres)), n_per_class)
    return x, y


@parametrize_with_checks([LinearProbe()])
def test_scikit_learn_estimator_conventions(estimator, check):
    check(estimator)


def test_linearly_separable_blobs_reach_100_percent():
    centres = [[6, 0, 0, 0], [0, 6, 0, 0], [0, 0, 6, 0], [0, 0, 0, 6]]
    x_train, y_train = blobs(60, centres, 0.5, seed=0)
    x_test, y_test = blobs(40, centres, 0.5, seed=1)
    out = linear_probe(torch.from_numpy(x_train).float(), torch.from_numpy(y_train), x_test, y_test)
    assert out == {"train_accuracy": 1.0, "test_accuracy": 1.0}


def test_chance_on_random_labels():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 5))
    out = linear_probe(x[:200], rng.integers(0, 4, 200), x[200:], rng.integers(0, 4, 200))
    assert out["test_accuracy"] < 0.4  # chance is 0.25


@pytest.mark.parametrize("C", [0.01, 1.0, 50.0])
def test_same_optimum_as_scikit_learn_logistic_regression(C):
    # The objective is strictly convex, so both solvers must land on the same weights.
    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 6)) * rng.uniform(0.5, 3.0, size=6) + 2.0
    y = np.argmax(x @ rng.normal(size=(6, 4)) + rng.normal(size=(300, 4)), axis=1)
    probe = LinearProbe(C=C, tol=1e-10).fit(x, y)
    standardised = (x - x.mean(0)) / x.std(0)
    ref = LogisticRegression(C=C, tol=1e-12, max_iter=10_000).fit(standardised, y)
    np.testing.assert_allclose(probe.coef_, ref.coef_, atol=2e-3, rtol=1e-3)
    np.testing.assert_allclose(probe.predict_proba(x), ref.predict_proba(standardised), atol=1e-4)

    def objective(coef, intercept):  # the documented objective, written out in float64
        scores = standardised @ coef.T + intercept
        log_z = np.log(np.exp(scores - scores.max(1, keepdims=True)).sum(1)) + scores.max(1)
        return np.mean(log_z - scores[np.arange(len(y)), y]) + (coef**2).sum() / (2 * C * len(y))

    assert objective(probe.coef_, probe.intercept_) <= objective(ref.coef_, ref.intercept_) + 1e-9


def test_standardisation_makes_the_probe_scale_free():
    x, y = blobs(50, [[1, 0, 0], [0, 1, 0], [0, 0, 1]], 0.7, seed=2)
    scaled = x * np.array([1e-3, 1.0, 1e3]) + np.array([5.0, -3.0, 100.0])
    a = LinearProbe(tol=1e-10).fit(x, y).predict_proba(x)
    b = LinearProbe(tol=1e-10).fit(scaled, y).predict_proba(scaled)
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_constant_feature_and_string_labels():
    x, y = blobs(30, [[3, 0], [-3, 0]], 0.5, seed=3)
    x = np.concatenate([x, np.ones((len(x), 1))], axis=1)
    names = np.array(["cat", "dog"])[y]
    probe = LinearProbe().fit(x, names)
    assert probe.scale_[2] == 1.0
    assert list(probe.classes_) == ["cat", "dog"]
    assert probe.score(x, names) == 1.0
    assert probe.decision_function(x).shape == (60,)  # binary: the margin of classes_[1]


@pytest.mark.parametrize("options, bad", [({"C": 0.0}, "0.0"), ({"max_iter": 0}, "0"), ({"tol": -1.0}, "-1.0")])
def test_bad_options_name_the_value(options, bad):
    x, y = blobs(10, [[1, 0], [0, 1]], 0.1, seed=0)
    with pytest.raises(ValueError, match=bad):
        LinearProbe(**options).fit(x, y)


def test_one_class_and_shape_errors():
    with pytest.raises(ValueError, match="class"):
        LinearProbe().fit(np.zeros((5, 2)), np.zeros(5, dtype=int))
    with pytest.raises(ValueError, match="width"):
        linear_probe(np.zeros((4, 2)), [0, 1, 0, 1], np.zeros((4, 3)), [0, 1, 0, 1])
    with pytest.raises(ValueError, match=r"\(4,\)"):
        linear_probe(np.zeros((4, 2)), [0, 1, 0], np.zeros((4, 2)), [0, 1, 0, 1])


def test_features_wider_than_the_items_fit_in_their_row_space(monkeypatch):
    # D > 1.25 N: the fit runs on R of x^T = QR; the optimum, mapped back by Q, is the same
    rng = np.random.default_rng(4)
    x = rng.normal(size=(500, 2200)) + rng.normal(size=(1, 2200))
    y = np.argmax(x[:, :3] + 0.5 * rng.normal(size=(500, 3)), axis=1)
    reduced = LinearProbe(tol=1e-8).fit(x, y)
    import contrastlab.evaluation.probe as module

    monkeypatch.setattr(module, "_REDUCE_RATIO", float("inf"))
    dense = LinearProbe(tol=1e-8).fit(x, y)
    assert reduced.coef_.shape == dense.coef_.shape == (3, 2200)
    np.testing.assert_allclose(reduced.coef_, dense.coef_, atol=1e-5)
    np.testing.assert_allclose(reduced.intercept_, dense.intercept_, atol=1e-5)
    x_new = rng.normal(size=(50, 2200))
    np.testing.assert_allclose(reduced.predict_proba(x_new), dense.predict_proba(x_new), atol=2e-4)
