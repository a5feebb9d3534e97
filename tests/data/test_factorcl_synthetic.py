"""FactorCL's synthetic data: deterministic, the paper's sizes, a label that needs the shared and both unique parts."""

import numpy as np
import pytest
import torch

from contrastlab.data import Dataset, build_dataset
from contrastlab.data.factorcl_synthetic import PARTS, FactorCLSynthetic, bayes_accuracy
from contrastlab.evaluation.probe import linear_probe


@pytest.fixture(scope="module")
def pair():
    return (FactorCLSynthetic(split="train", seed=3, n_samples=6000),
            FactorCLSynthetic(split="test", seed=3, n_samples=6000))


def _all(ds):
    return ds.get(torch.arange(len(ds)))


def test_the_papers_sizes_by_default():
    train, test = build_dataset("factorcl_synthetic"), build_dataset("factorcl_synthetic", split="test")
    assert isinstance(train, Dataset) and (len(train), len(test)) == (24_000, 6_000)
    assert train.modalities == {"x1": (100,), "x2": (100,)} and train.num_classes == 2
    assert train.class_names == ("negative", "positive") and train.label_dims == (10, 6, 6)
    assert {p: tuple(v.shape) for p, v in train.latents.items()} == {"shared": (24_000, 10), "unique1": (24_000, 6),
                                                                      "unique2": (24_000, 6)}
    assert [tuple(t.shape) for t in train.transforms] == [(16, 100), (16, 100)]
    batch = train.get(torch.tensor([5, 0]))
    assert batch.inputs["x1"].dtype == torch.float32 and batch.labels.dtype == torch.int64
    assert batch.index.tolist() == [5, 0] and set(batch.factors) == {"shared", "unique1", "unique2"}
    assert 0.45 < float(_all(test).labels.float().mean()) < 0.55  # the mean of symmetric latents: balanced


def test_deterministic_from_the_seed_and_different_across_seeds(pair):
    train, _ = pair
    again = FactorCLSynthetic(split="train", seed=3, n_samples=6000)
    other = FactorCLSynthetic(split="train", seed=4, n_samples=6000)
    a, b, c = _all(train), _all(again), _all(other)
    assert all(torch.equal(a.inputs[m], b.inputs[m]) for m in ("x1", "x2")) and torch.equal(a.labels, b.labels)
    assert not torch.equal(a.inputs["x1"], c.inputs["x1"])
    assert not torch.equal(train.transforms[0], other.transforms[0])


def test_splits_are_disjoint_cover_every_item_and_share_the_maps(pair):
    train, test = pair
    assert len(train) + len(test) == 6000 and len(test) == 1200
    assert all(torch.equal(a, b) for a, b in zip(train.transforms, test.transforms))
    x_tr, x_te = _all(train).inputs["x1"], _all(test).inputs["x1"]
    assert torch.cdist(x_te, x_tr).min() > 0  # no test item is a training item
    for ds in pair:  # stratified: both classes in the same proportion
        assert abs(float(_all(ds).labels.float().mean()) - float(_all(train).labels.float().mean())) < 0.01


def test_each_modality_is_its_parts_through_its_map(pair):
    train, _ = pair
    b, lat = _all(train), train.latents
    t1, t2 = (t.double() for t in train.transforms)
    x1 = torch.cat([lat["shared"], lat["unique1"]], 1).double() @ t1
    x2 = torch.cat([lat["shared"], lat["unique2"]], 1).double() @ t2
    torch.testing.assert_close(b.inputs["x1"].double(), x1, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(b.inputs["x2"].double(), x2, atol=1e-4, rtol=1e-5)

    def residual(x, parts):  # how much of x the latent parts leave unexplained (least squares)
        a = torch.cat([lat[p] for p in parts], 1).double()
        fit = a @ torch.linalg.lstsq(a, x.double()).solution
        return float((x.double() - fit).pow(2).mean() / x.double().var())

    assert residual(b.inputs["x2"], ["shared", "unique2"]) < 1e-8
    assert residual(b.inputs["x2"], ["shared", "unique1"]) > 0.1  # x2 holds nothing of unique1
    assert residual(b.inputs["x1"], ["shared", "unique2"]) > 0.1


def test_the_label_is_the_sign_of_the_shared_and_both_unique_parts(pair):
    train, _ = pair
    b, lat = _all(train), train.latents
    expected = (torch.cat([lat[p] for p in PARTS], 1).double().mean(1) >= 0).long()
    assert torch.equal(b.labels, expected)
    assert torch.equal(b.labels, (sum(b.factors[p].double() for p in PARTS) >= 0).long())
    for p in PARTS:  # every part moves the label: flipping it alone changes many labels
        flipped = (sum((-1 if q == p else 1) * b.factors[q].double() for q in PARTS) >= 0).long()
        assert (flipped != b.labels).float().mean() > 0.1, p
    # Bayes accuracy from one modality's parts, in closed form and measured
    guess = ((b.factors["shared"] + b.factors["unique1"]) >= 0).long()
    assert float((guess == b.labels).float().mean()) == pytest.approx(bayes_accuracy((10, 6, 6), ["shared", "unique1"]),
                                                                      abs=0.015)


def test_label_dims_choose_which_coordinates_the_label_reads():
    ds = FactorCLSynthetic(n_samples=500, seed=0, label_dims=(10, 0, 0))
    b = _all(ds)
    assert ds.factor_names == ("shared",) and torch.equal(b.labels, (b.factors["shared"] >= 0).long())
    part = FactorCLSynthetic(n_samples=500, seed=0, label_dims=(2, 1, 0))
    lat = part.latents
    expected = (torch.cat([lat["shared"][:, :2], lat["unique1"][:, :1]], 1).double().mean(1) >= 0).long()
    assert torch.equal(_all(part).labels, expected)
    assert bayes_accuracy((10, 0, 0), ["shared"]) == 1.0 and bayes_accuracy((1, 1, 0), []) == 0.5


def test_raw_inputs_need_both_modalities_for_a_linear_probe(pair):
    """The label is linear in the latents and the latents are linear in the inputs: both modalities side by side
    are linearly separable, one alone stops near its closed-form ceiling."""
    train, test = pair
    a, b = _all(train), _all(test)
    both = linear_probe(torch.cat([a.inputs["x1"], a.inputs["x2"]], 1), a.labels,
                        torch.cat([b.inputs["x1"], b.inputs["x2"]], 1), b.labels)["test_accuracy"]
    one = linear_probe(a.inputs["x1"], a.labels, b.inputs["x1"], b.labels)["test_accuracy"]
    ceiling = bayes_accuracy(train.label_dims, ["shared", "unique1"])
    assert both > 0.95 and one < ceiling + 0.03 and both > one + 0.1


@pytest.mark.parametrize("options,match", [
    ({"n_samples": 1}, "n_samples"), ({"unique_dims": [6]}, "unique_dims"), ({"shared_dim": -1}, "shared_dim"),
    ({"variance": 0}, "variance"), ({"label_dims": [11, 6, 6]}, "label_dims"), ({"label_dims": [0, 0, 0]}, "label_dims"),
    ({"shared_dim": 0, "unique_dims": [0, 3]}, "at least one latent"), ({"test_fraction": 1.5}, "test_fraction"),
])
def test_bad_options_name_the_value(options, match):
    with pytest.raises(ValueError, match=match):
        build_dataset("factorcl_synthetic", **options)
    with pytest.raises(ValueError, match="unknown latent parts"):
        bayes_accuracy((1, 1, 1), ["shared", "colour"])


def test_float32_inputs_are_finite_and_factors_match_the_latents(pair):
    train, _ = pair
    b = _all(train)
    assert all(torch.isfinite(b.inputs[m]).all() for m in ("x1", "x2"))
    np.testing.assert_allclose(b.factors["unique2"].numpy(), train.latents["unique2"].sum(1).numpy(), atol=1e-5)
