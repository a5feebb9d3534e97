import numpy as np
import pytest
import torch

from contrastlab.data.base import Batch
from contrastlab.evaluation.decodability import factor_decodability
from contrastlab.evaluation.invariance import invariance_report
from contrastlab.evaluation.probe import fit_probe


def world(n, seed):
    """Factors like the Shapes world's: integer codes for shape and colour, floats for x, y and size."""
    rng = np.random.default_rng(seed)
    return {"shape": rng.integers(0, 5, n), "colour": rng.integers(0, 8, n),
            "x": rng.uniform(0.25, 0.75, n).astype(np.float32), "y": rng.uniform(0.25, 0.75, n).astype(np.float32),
            "size": rng.uniform(0.1, 0.23, n).astype(np.float32)}


def split(features, factors, n_train):
    return (features[:n_train], {k: v[:n_train] for k, v in factors.items()},
            features[n_train:], {k: v[n_train:] for k, v in factors.items()})


def test_features_that_are_the_factors_decode_them_exactly():
    f = world(900, 0)
    rng = np.random.default_rng(1)
    features = np.column_stack([np.eye(5)[f["shape"]], np.eye(8)[f["colour"]], f["x"], f["y"], f["size"],
                                rng.normal(size=(900, 6))])
    out = factor_decodability(*split(features, f, 600))
    assert list(out) == ["shape", "colour", "location", "size"]  # x and y reported together
    assert out["location"]["factors"] == ["x", "y"] and set(out["location"]["per_factor"]) == {"x", "y"}
    for name in ("shape", "colour"):
        assert out[name]["kind"] == "accuracy" and out[name]["score"] == 1.0
    for name in ("location", "size"):
        assert out[name]["kind"] == "r2" and out[name]["score"] > 0.999 and out[name]["chance"] == 0.0


def test_chance_is_the_test_frequency_of_the_most_common_training_class():
    f = {"colour": np.array([0, 0, 0, 1, 2, 1] * 50 + [1, 1, 2, 2, 0, 1] * 50)}
    features = np.random.default_rng(2).normal(size=(600, 3))
    out = factor_decodability(*split(features, f, 300))
    assert out["colour"]["chance"] == pytest.approx(np.mean(f["colour"][300:] == 0))  # 0: the training majority


def test_features_independent_of_the_factors_score_chance():
    f = world(1500, 3)
    features = np.random.default_rng(4).normal(size=(1500, 20))
    out = factor_decodability(*split(features, f, 1000))
    for name, classes in (("shape", 5), ("colour", 8)):
        # a probe on noise spreads its answers over the classes: about 1/K, at most the majority rate
        assert 1 / classes - 0.06 < out[name]["score"] < out[name]["chance"] + 0.03
    for name in ("location", "size"):
        assert -0.05 <= out[name]["score"] <= 0.05


def test_a_factor_held_only_non_linearly_is_not_linearly_decodable():
    rng = np.random.default_rng(5)
    x = rng.uniform(-1, 1, 1200)
    features = np.column_stack([x ** 2, rng.normal(size=(1200, 3))])  # x² keeps |x|, not its sign
    out = factor_decodability(*split(features, {"x": x, "x_squared": x ** 2}, 800))
    assert out["x"]["score"] < 0.05  # the information is there, but no linear read-out finds it
    assert out["x_squared"]["score"] > 0.999


def test_invariant_is_not_the_same_as_undecodable():
    # an encoder that barely moves when colour changes, yet keeps colour in a small consistent direction
    n = 400
    factors = {"shape": torch.arange(n) % 5, "colour": (torch.arange(n) // 5) % 4}

    def encode(batch):
        return torch.cat([10.0 * torch.eye(5)[batch.factors["shape"]], 0.01 * torch.eye(4)[batch.factors["colour"]]], 1)

    def resample(batch, names, generator):
        new = dict(batch.factors)
        for name in names:
            new[name] = (new[name] + torch.randint(1, 5 if name == "shape" else 4, (n,), generator=generator)) % (
                5 if name == "shape" else 4)
        return Batch(batch.inputs, factors=new)

    batch = Batch({"image": torch.zeros(n, 1)}, factors=factors)
    report = invariance_report(batch, encode, resample, groups={"colour": ("colour",)})
    assert report["colour"]["label"] == "invariant" and report["colour"]["score"] < 0.01
    features = encode(batch)
    out = factor_decodability(*split(features, factors, 300))
    assert out["colour"]["score"] == 1.0


def test_groups_torch_inputs_and_errors():
    f = {k: torch.as_tensor(v) for k, v in world(200, 6).items()}
    features = torch.randn(200, 4)
    x_tr, f_tr, x_te, f_te = split(features, f, 150)
    out = factor_decodability(x_tr, f_tr, x_te, f_te, groups={"where": ("x", "y"), "what": ("shape", "colour")})
    assert out["where"]["kind"] == "r2" and out["what"]["kind"] == "accuracy"
    assert out["what"]["score"] == pytest.approx(np.mean(list(out["what"]["per_factor"].values())))
    with pytest.raises(ValueError, match="mixes"):
        factor_decodability(x_tr, f_tr, x_te, f_te, groups={"bad": ("shape", "x")})
    with pytest.raises(ValueError, match="unknown factors"):
        factor_decodability(x_tr, f_tr, x_te, f_te, groups={"bad": ("hue",)})
    with pytest.raises(ValueError, match="width"):
        factor_decodability(x_tr, f_tr, x_te[:, :3], f_te)
    with pytest.raises(ValueError, match=r"\(150,\)"):
        factor_decodability(x_tr, {**f_tr, "x": f_tr["x"][:10]}, x_te, f_te)
    with pytest.raises(ValueError, match="no factors"):
        factor_decodability(x_tr, {}, x_te, {})


def test_edge_cases_one_class_and_a_constant_test_factor():
    features = np.random.default_rng(7).normal(size=(60, 3))
    f = {"colour": np.zeros(60, dtype=np.int64), "size": np.r_[np.linspace(0, 1, 40), np.full(20, 0.5)]}
    out = factor_decodability(*split(features, f, 40))
    assert out["colour"]["score"] == out["colour"]["chance"] == 1.0  # one class: nothing to learn
    assert np.isnan(out["size"]["score"])  # R² of a constant is undefined


def test_fit_probe_returns_the_same_fit_for_the_same_inputs():
    rng = np.random.default_rng(8)
    x, y = rng.normal(size=(80, 4)).astype(np.float32), rng.integers(0, 3, 80)
    a = fit_probe(x, y)
    assert fit_probe(x.copy(), y.copy()) is a
    assert fit_probe(x, y, C=0.5) is not a
    assert fit_probe(x.astype(np.float64), y) is not a
