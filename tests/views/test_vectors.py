"""Vector augmentations (FactorCL's swap, noise, drop, identity) and the clean + augmented modality views."""

import pytest
import torch

from contrastlab.data import build_dataset
from contrastlab.views import ViewGenerator, build_views
from contrastlab.views.vectors import TRANSFORMS, augment_vectors


@pytest.fixture(scope="module")
def data():
    return build_dataset("factorcl_synthetic", n_samples=200, seed=1)


def test_each_transform_does_what_its_name_says():
    x = torch.randn(50, 10, generator=torch.Generator().manual_seed(0)) + 5.0  # no zero coordinates
    g = lambda: torch.Generator().manual_seed(1)  # noqa: E731
    assert torch.equal(augment_vectors(x, g(), transforms=["identity"]), x)
    assert torch.equal(augment_vectors(x, g(), transforms=["swap"]), torch.cat([x[:, 5:], x[:, :5]], 1))
    noisy = augment_vectors(x, g(), transforms=["noise"], noise=0.01)
    assert 0.005 < float((noisy - x).std()) < 0.015
    dropped = augment_vectors(x, g(), transforms=["drop"], drop=0.3)
    assert ((dropped == 0).sum(1) == 3).all()
    kept = dropped != 0
    assert torch.equal(dropped[kept], x[kept])
    odd = torch.arange(1.0, 6.0)[None]  # D = 5: the halves are x[2:] and x[:2], as in the authors' swap
    assert augment_vectors(odd, g(), transforms=["swap"]).tolist() == [[3.0, 4.0, 5.0, 1.0, 2.0]]


def test_one_transform_per_item_drawn_uniformly_from_the_generator_alone():
    x = torch.randn(4000, 20, generator=torch.Generator().manual_seed(2)) + 5.0  # drop: 2 of 20 coordinates
    out = augment_vectors(x, torch.Generator().manual_seed(3))
    same = torch.equal(out, augment_vectors(x, torch.Generator().manual_seed(3)))
    assert same and not torch.equal(out, augment_vectors(x, torch.Generator().manual_seed(4)))
    kinds = {
        "identity": (out == x).all(1),
        "swap": (out == x.roll(-10, dims=1)).all(1),
        "drop": (out == 0).any(1),
    }
    kinds["noise"] = ~(kinds["identity"] | kinds["swap"] | kinds["drop"])
    for name in TRANSFORMS:
        assert 0.22 < float(kinds[name].float().mean()) < 0.28, name
    assert out.dtype == x.dtype and not torch.equal(out, x)


def test_modality_augment_views_are_clean_then_augmented_and_read_by_the_modalitys_tower(data):
    views = build_views("modality_augment", data)
    assert isinstance(views, ViewGenerator)
    assert views.view_names == ("x1", "x2", "x1_aug", "x2_aug")
    assert views.view_modalities == {"x1": "x1", "x2": "x2", "x1_aug": "x1", "x2_aug": "x2"}
    batch = data.get(torch.arange(16))
    out = views(batch, torch.Generator().manual_seed(0))
    clean = views.eval_views(batch)
    assert tuple(out) == tuple(clean) == views.view_names
    assert torch.equal(out["x1"], batch.inputs["x1"]) and torch.equal(clean["x2_aug"], batch.inputs["x2"])
    assert not torch.equal(out["x1_aug"], batch.inputs["x1"]) and out["x2_aug"].shape == (16, 100)
    again = views(batch, torch.Generator().manual_seed(0))
    assert all(torch.equal(out[v], again[v]) for v in views.view_names)


def test_bad_options_name_the_value(data):
    with pytest.raises(ValueError, match="transforms"):
        build_views("modality_augment", data, transforms=["rotate"])
    with pytest.raises(ValueError, match="noise"):
        build_views("modality_augment", data, noise=-1)
    with pytest.raises(ValueError, match="drop"):
        build_views("modality_augment", data, drop=2)
    with pytest.raises(ValueError, match="per-item shape"):
        build_views("modality_augment", build_dataset("digits", split="test"))
    with pytest.raises(ValueError, match=r"\(N, D\)"):
        augment_vectors(torch.zeros(2, 3, 4), torch.Generator())
