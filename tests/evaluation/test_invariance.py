import numpy as np
import pytest
import torch

from contrastlab.data.base import Batch
from contrastlab.evaluation import default_groups, discretize, invariance_report

# ---- a hand-made world, independent of the data package: 3 shapes, 4 colours, a position -----------
PALETTE = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 1.0, 0.0]])
MASKS = [(slice(-1, 2), slice(-1, 2)), (slice(0, 1), slice(-2, 3)), (slice(-2, 3), slice(0, 1))]  # square, bars


def render(f):
    n = f["shape"].shape[0]
    img = torch.zeros(n, 3, 14, 14)
    for i in range(n):
        cy, cx = int(round(float(f["y"][i]) * 13)), int(round(float(f["x"][i]) * 13))
        rows, cols = MASKS[int(f["shape"][i])]
        img[i, :, cy + rows.start:cy + rows.stop, cx + cols.start:cx + cols.stop] = PALETTE[int(f["colour"][i])][:, None, None]
    return img


def world(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    f = {"shape": torch.randint(0, 3, (n,), generator=g), "colour": torch.randint(0, 4, (n,), generator=g),
         "x": 0.2 + 0.6 * torch.rand(n, generator=g), "y": 0.2 + 0.6 * torch.rand(n, generator=g)}
    return Batch({"image": render(f)}, labels=f["shape"].clone(), factors=f)


def resample(batch, names, generator):
    f = {k: v.clone() for k, v in batch.factors.items()}
    n = len(batch)
    for name in names:
        if name in ("shape", "colour"):
            k = 3 if name == "shape" else 4
            f[name] = (f[name] + torch.randint(1, k, (n,), generator=generator)) % k
        else:
            f[name] = 0.2 + 0.6 * torch.rand(n, generator=generator)
    return Batch({"image": render(f)}, labels=f["shape"].clone(), factors=f)


def silhouette(batch):  # sees only where the shape is: colour-blind by construction
    return (batch.inputs["image"].amax(dim=1) > 0).float().flatten(1)


def colour_only(batch):  # the mean colour of the shape's pixels
    img = batch.inputs["image"]
    mask = img.amax(dim=1, keepdim=True) > 0
    return (img * mask).sum(dim=(2, 3)) / mask.sum(dim=(2, 3))


def test_colour_blind_encoder_is_colour_invariant_and_shape_sensitive():
    report = invariance_report(world(300), silhouette, resample)
    assert list(report) == ["shape", "colour", "location"]
    assert report["colour"]["score"] == pytest.approx(0.0, abs=1e-12)
    assert report["colour"]["label"] == "invariant"
    assert report["colour"]["changed_fraction"] == 1.0
    assert report["shape"]["label"] == "sensitive" and report["shape"]["score"] > 0.6
    assert report["location"]["label"] == "sensitive" and report["location"]["score"] > 0.9
    assert report["colour"]["purity"] == pytest.approx(report["colour"]["chance"], abs=0.1)


def test_colour_only_encoder_is_the_mirror_image():
    batch = world(300, seed=1)
    report = invariance_report(batch, colour_only, resample, k=5)
    assert report["colour"]["label"] == "sensitive"
    # a new colour always differs; a random other item keeps its colour 1/4 of the time, so ≈ 4/3
    assert report["colour"]["score"] == pytest.approx(4 / 3, abs=0.15)
    assert report["shape"]["score"] == pytest.approx(0.0, abs=1e-12)
    assert report["location"]["label"] == report["shape"]["label"] == "invariant"
    assert report["colour"]["purity"] == 1.0  # neighbours share the exact colour
    counts = np.bincount(batch.factors["colour"].numpy())
    assert report["colour"]["chance"] == pytest.approx((counts * (counts - 1)).sum() / (300 * 299))


def test_collapsed_encoder_and_explicit_groups():
    batch = world(40)
    report = invariance_report(batch, lambda b: torch.ones(len(b), 3), resample, groups={"where": ("x", "y")})
    assert list(report) == ["where"] and report["where"]["label"] == "collapsed" and report["where"]["score"] is None


def silhouette_spectrum(batch):
    """|FFT| of the grey silhouette: blind to colour by construction, nearly blind to position."""
    a = batch.inputs["image"].amax(dim=1)  # coverage × the colour's largest channel
    a = a / a.flatten(1).amax(dim=1)[:, None, None]  # coverage alone
    return torch.fft.fft2(a).abs().flatten(1)


def test_real_shapes_world_with_hand_built_encoders():
    shapes = pytest.importorskip("contrastlab.data.shapes")
    ds = shapes.ShapesDataset(n_items=10, n_test=300, split="test", seed=3)
    batch = ds.get(torch.arange(300))
    report = invariance_report(batch, silhouette_spectrum, ds.resample)
    assert set(report) == {"shape", "colour", "location", "size"}
    assert report["colour"]["label"] == "invariant" and report["colour"]["score"] < 0.01
    assert report["shape"]["label"] == "sensitive" and report["shape"]["purity"] > 0.9
    assert report["location"]["label"] == "invariant"
    assert report["colour"]["purity"] < report["colour"]["chance"] + 0.1
    hue = invariance_report(batch, colour_only, ds.resample)
    assert hue["colour"]["label"] == "sensitive" and hue["colour"]["purity"] == 1.0
    assert hue["shape"]["label"] == hue["location"]["label"] == "invariant"


def test_discretize_and_default_groups():
    assert discretize(torch.tensor([0.1, 0.9, 0.5, 0.3, 0.7, 0.2, 0.8, 0.6]), bins=4).tolist() == [0, 3, 1, 1, 2, 0, 3, 2]  # 2 per bin
    assert discretize(torch.tensor([5, 2, 5, 9])).tolist() == [1, 0, 1, 2]
    assert discretize(torch.tensor([0.5, 1.5, 0.5]), bins=4).tolist() == [0, 1, 0]  # few floats: categories
    assert default_groups(["shape", "x", "colour", "y"]) == {"shape": ("shape",), "location": ("x", "y"),
                                                              "colour": ("colour",)}
    assert default_groups(["x", "size"]) == {"x": ("x",), "size": ("size",)}


def test_errors():
    batch = world(20)
    with pytest.raises(ValueError, match="'hue'"):
        invariance_report(batch, silhouette, resample, groups={"hue": ("hue",)})
    with pytest.raises(ValueError, match="0.6"):
        invariance_report(batch, silhouette, resample, invariant_below=0.6, sensitive_above=0.5)
    with pytest.raises(ValueError, match="k \\+ 2"):
        invariance_report(world(5), silhouette, resample, k=5)
    with pytest.raises(ValueError, match="rows"):
        invariance_report(batch, lambda b: torch.ones(3, 2), resample)
