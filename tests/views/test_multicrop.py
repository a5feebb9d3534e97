"""Multi-crop views: names, sizes, randomness from the generator only, row alignment, crop areas, options."""

import pytest
import torch
import torch.nn.functional as F

from contrastlab.data import build_dataset
from contrastlab.data.base import Batch
from contrastlab.views import ViewGenerator, build_views
from contrastlab.views.multicrop import MultiCropViews
from contrastlab.views.registry import view_options

STILL = {"jitter_p": 0.0, "gray_p": 0.0, "blur_p": 0.0}  # geometry only: crop, resize, flip


@pytest.fixture(scope="module")
def shapes():
    return build_dataset("shapes", n_items=16, seed=1)


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def test_names_shapes_and_dtypes(shapes):
    views = MultiCropViews(shapes)
    assert views.view_names == ("global1", "global2", "local1", "local2", "local3", "local4")
    assert views.global_views == ("global1", "global2")
    assert set(views.view_modalities.values()) == {"image"}
    batch = shapes.get(torch.arange(8))
    out = views(batch, _gen(0))
    assert tuple(out) == views.view_names
    for v in views.view_names:
        side = 32 if v.startswith("global") else 16
        assert out[v].shape == (8, 3, side, side) == (8, *views.view_shapes[v]), v
        assert out[v].dtype == torch.float32
        assert out[v].min() >= -1e-6 and out[v].max() <= 1 + 1e-6  # blur weights sum to 1 up to round-off
    odd = MultiCropViews(shapes, global_size=(24, 28), local_size=(12, 10), n_global=3, n_local=2)
    out = odd(batch, _gen(0))
    assert odd.global_views == ("global1", "global2", "global3") and tuple(out)[3:] == ("local1", "local2")
    assert out["global3"].shape == (8, 3, 24, 28) and out["local2"].shape == (8, 3, 12, 10)
    none = MultiCropViews(shapes, n_local=0)
    assert tuple(none(batch, _gen(0))) == none.view_names == none.global_views
    digits = build_dataset("digits", split="test")  # 1 x 8 x 8: local crops default to 4 x 4
    small = MultiCropViews(digits, n_local=2)(digits.get(torch.arange(5)), _gen(0))
    assert small["global1"].shape == (5, 1, 8, 8) and small["local1"].shape == (5, 1, 4, 4)


def test_randomness_comes_only_from_the_generator(shapes):
    views = MultiCropViews(shapes)
    batch = shapes.get(torch.arange(8))
    a, b, c = views(batch, _gen(0)), views(batch, _gen(0)), views(batch, _gen(1))
    for v in views.view_names:
        assert torch.equal(a[v], b[v]), v
        assert not torch.equal(a[v], c[v]), v
    # Every crop is drawn afresh: no two views of one kind are copies.
    assert not torch.equal(a["global1"], a["global2"])
    assert all(not torch.equal(a["local1"], a[v]) for v in ("local2", "local3", "local4"))


def test_rows_stay_with_their_items(shapes):
    """A crop of a constant image is that constant: row i of every view keeps item i's colour."""
    colours = torch.rand(12, 3, generator=_gen(3))
    images = colours.view(12, 3, 1, 1).expand(12, 3, 32, 32).contiguous()
    views = MultiCropViews(shapes, jitter_p=0.0, gray_p=0.0)  # blur keeps a constant image constant
    out = views(Batch(inputs={"image": images}), _gen(0))
    for v in views.view_names:
        assert torch.allclose(out[v], colours.view(12, 3, 1, 1).expand_as(out[v]), atol=1e-4), v


def _crop_areas(crops, height, width):
    """Area fractions of crops of the ramp image: channel 0 is x / (W - 1), channel 1 is y / (H - 1)."""
    span_x = crops[:, 0].amax(dim=(1, 2)) - crops[:, 0].amin(dim=(1, 2))
    span_y = crops[:, 1].amax(dim=(1, 2)) - crops[:, 1].amin(dim=(1, 2))
    # A box (x0, y0, x1, y1) of pixel centres covers (x1 - x0 + 1) x (y1 - y0 + 1) pixels.
    return (span_x * (width - 1) + 1) * (span_y * (height - 1) + 1) / (height * width)


def test_local_crops_cover_less_of_the_image_than_global_crops(shapes):
    n, h, w = 256, 32, 32
    ramp_x = torch.linspace(0, 1, w).expand(h, w)
    ramp_y = torch.linspace(0, 1, h)[:, None].expand(h, w)
    image = torch.stack([ramp_x, ramp_y, torch.full((h, w), 0.5)])
    batch = Batch(inputs={"image": image.expand(n, 3, h, w).contiguous()})
    views = MultiCropViews(shapes, **STILL)
    out = views(batch, _gen(0))
    areas = {v: _crop_areas(out[v], h, w) for v in views.view_names}
    for v in views.global_views:
        assert areas[v].min() >= 0.14 - 1e-3 and areas[v].max() <= 1 + 1e-3, v
        assert 0.45 < areas[v].mean() < 0.7, v  # E[s] = 0.57 for s ~ U(0.14, 1)
    for v in views.local_views:
        assert areas[v].min() >= 0.05 - 1e-3 and areas[v].max() <= 0.14 + 1e-3, v
        assert 0.08 < areas[v].mean() < 0.11, v  # E[s] = 0.095
    # The scale options reach the crops they name.
    swapped = MultiCropViews(shapes, global_scale=(0.05, 0.14), local_scale=(0.14, 1.0), **STILL)(batch, _gen(0))
    assert _crop_areas(swapped["global1"], h, w).mean() < 0.11 < 0.45 < _crop_areas(swapped["local1"], h, w).mean()


def test_eval_views_are_the_clean_image_at_each_size(shapes):
    views = MultiCropViews(shapes, n_local=3)
    batch = shapes.get(torch.arange(8))
    images = batch.inputs["image"]
    clean = views.eval_views(batch)
    again = views.eval_views(batch)
    assert tuple(clean) == views.view_names
    for v in views.view_names:
        assert torch.equal(clean[v], again[v]) and clean[v].shape == (8, *views.view_shapes[v]), v
    assert torch.equal(clean["global1"], images) and torch.equal(clean["global2"], images)
    assert torch.allclose(clean["local2"], F.avg_pool2d(images, 2))  # 32 -> 16 by area averaging
    tiny = MultiCropViews(shapes, local_size=8).eval_views(batch)["local1"]
    assert torch.allclose(tiny, F.avg_pool2d(images, 4))  # every pixel counts, not a few samples
    perm = torch.randperm(8, generator=_gen(0))
    moved = views.eval_views(shapes.get(perm))
    assert all(torch.equal(moved[v], clean[v][perm]) for v in views.view_names)
    bigger = MultiCropViews(shapes, global_size=40, local_size=(20, 12)).eval_views(batch)
    assert bigger["global1"].shape == (8, 3, 40, 40) and bigger["local1"].shape == (8, 3, 20, 12)
    constant = torch.full((2, 3, 32, 32), 0.3)
    for v, x in MultiCropViews(shapes, global_size=40).eval_views(Batch(inputs={"image": constant})).items():
        assert torch.allclose(x, torch.full_like(x, 0.3)), v


@pytest.mark.parametrize("kw,match", [
    ({"global_size": 3}, r"global_size .*\[4, 1024\].*got 3"),
    ({"global_size": 2048}, "global_size .*got 2048"),
    ({"global_size": (32,)}, r"global_size .*got \(32,\)"),
    ({"global_size": 32.0}, "global_size .*got 32.0"),
    ({"local_size": 2}, "local_size .*got 2"),
    ({"local_size": 40}, r"local_size must be no larger than global_size \(32, 32\), got 40"),
    ({"global_size": 16, "local_size": (8, 20)}, r"local_size .*got \(8, 20\)"),
    ({"n_global": 0}, "n_global .*got 0"),
    ({"n_local": -1}, "n_local .*got -1"),
    ({"n_local": 17}, r"n_local must be an int in \[0, 16\], got 17"),
    ({"n_local": True}, "n_local .*got True"),
    ({"global_scale": (0.5, 0.2)}, r"global_scale .*got \(0.5, 0.2\)"),
    ({"global_scale": (0.0, 1.0)}, "global_scale .*min > 0"),
    ({"local_scale": (0.05, 1.5)}, r"local_scale .*got \(0.05, 1.5\)"),
    ({"local_scale": "small"}, "local_scale .*got 'small'"),
    ({"crop_scale": (0.2, 1.0)}, "global_scale and local_scale, not crop_scale"),
    ({"size": 24}, "global_size and local_size, not size"),
    ({"flip_p": 1.5}, "flip_p .*got 1.5"),  # an augment option, checked by SimCLRAugment
])
def test_bad_options_are_named(shapes, kw, match):
    with pytest.raises(ValueError, match=match):
        MultiCropViews(shapes, **kw)


def test_a_data_set_without_images_is_named():
    signals = build_dataset("mnist1d", split="test", n_samples=20)
    with pytest.raises(ValueError, match="'mnist1d' has no 'image' modality"):
        MultiCropViews(signals)


def test_builds_through_the_registry(shapes):
    views = build_views("multicrop", shapes, n_local=2, local_size=12, local_scale=[0.1, 0.3], flip_p=0.0)
    assert isinstance(views, MultiCropViews) and isinstance(views, ViewGenerator)
    assert views.view_names == ("global1", "global2", "local1", "local2")
    out = views(shapes.get(torch.arange(4)), _gen(0))
    assert out["local2"].shape == (4, 3, 12, 12) and views.local_augment.crop_scale == (0.1, 0.3)
    options = view_options("multicrop")
    assert {"global_size", "local_size", "n_global", "n_local", "global_scale", "local_scale", "flip_p",
            "blur_kernel"} <= set(options)
    assert "crop_scale" not in options and "size" not in options
    with pytest.raises(ValueError, match="unknown option 'crop_scale' for views 'multicrop'"):
        build_views("multicrop", shapes, crop_scale=(0.2, 1.0))
    with pytest.raises(ValueError, match="n_local .*got 99"):
        build_views("multicrop", shapes, n_local=99)
