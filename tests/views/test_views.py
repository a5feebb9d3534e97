import pytest
import torch

from contrastlab.data import build_dataset
from contrastlab.data.base import Batch
from contrastlab.views import VIEWS, ViewGenerator, build_views
from contrastlab.views.colour import rgb_to_lab, rgb_to_ycbcr
from contrastlab.views.signal import warp_signal


@pytest.fixture(scope="module")
def shapes():
    return build_dataset("shapes", n_items=32, seed=2, with_captions=True)


@pytest.fixture(scope="module")
def signals():
    return build_dataset("mnist1d", split="test", n_samples=100)


CASES = [
    ("simclr", {}), ("simclr", {"n_views": 3, "size": 24}), ("multicrop", {"n_local": 2}),
    ("factor_resample", {"preset": "B"}),
    ("factor_resample", {"resample": ["size"], "n_views": 3}), ("colour_split", {"space": "lab"}),
    ("colour_split", {"space": "ycbcr", "augment": False}), ("colour_split", {"views": ["L", "ab", "edges", "R"]}),
    ("patches", {"offset": 6}), ("modality_pair", {}), ("modality_pair", {"augment_image": True}), ("identity", {}),
]


@pytest.mark.parametrize("name,options", CASES)
def test_views_contract(shapes, name, options):
    views = build_views(name, shapes, **options)
    assert isinstance(views, ViewGenerator)
    batch = shapes.get(torch.arange(8))
    out = views(batch, torch.Generator().manual_seed(0))
    clean = views.eval_views(batch)
    assert tuple(out) == tuple(clean) == views.view_names
    assert set(views.view_modalities) == set(views.view_names)
    for v in views.view_names:
        assert out[v].shape == clean[v].shape == (8, *views.view_shapes[v])
        assert out[v].dtype == clean[v].dtype
        if out[v].is_floating_point() and views.view_modalities[v] != "ab":
            assert out[v].min() >= -1e-6 and out[v].max() <= 1 + 1e-6
    # Randomness only from the generator; evaluation views are deterministic and row-aligned.
    again = views(batch, torch.Generator().manual_seed(0))
    assert all(torch.equal(out[v], again[v]) for v in views.view_names)
    perm = torch.randperm(8)
    moved = views.eval_views(shapes.get(perm))
    assert all(torch.equal(moved[v], clean[v][perm]) for v in views.view_names)


def test_every_registered_view_is_covered():
    # signal, modality_augment and joined need other data (signals, vectors, two modalities): covered in
    # this file's signal test, test_vectors.py and test_joined.py
    assert {name for name, _ in CASES} | {"signal", "modality_augment", "joined"} == set(VIEWS)


def test_unknown_views_and_options(shapes):
    with pytest.raises(ValueError, match="unknown views 'simcl'; did you mean 'simclr'"):
        build_views("simcl", shapes)
    with pytest.raises(ValueError, match="unknown option 'prest' for views 'factor_resample'; did you mean 'preset'"):
        build_views("factor_resample", shapes, prest="A")
    with pytest.raises(ValueError, match="preset must be one of A, B, C, got 'D'"):
        build_views("factor_resample", shapes, preset="D")
    with pytest.raises(ValueError, match="exactly one"):
        build_views("factor_resample", shapes, preset="A", resample=["colour"])
    with pytest.raises(ValueError, match="factors"):
        build_views("factor_resample", build_dataset("digits", split="test"), preset="A")
    with pytest.raises(ValueError, match="RGB"):
        build_views("colour_split", build_dataset("digits", split="test"))
    with pytest.raises(ValueError, match="'hsv'"):
        build_views("colour_split", shapes, space="hsv")
    with pytest.raises(ValueError, match="does not fit"):
        build_views("patches", shapes, patch_size=16, offset=17)
    with pytest.raises(ValueError, match="two distinct modalities"):
        build_views("modality_pair", build_dataset("digits", split="test"))


def test_simclr_rows_stay_with_their_items(shapes):
    """Without colour changes, a crop of a constant image is that constant: row i keeps item i's value."""
    values = torch.linspace(0.1, 0.9, 8)
    batch = Batch(inputs={"image": values.view(8, 1, 1, 1).expand(8, 3, 32, 32).contiguous()})
    views = build_views("simclr", shapes, jitter_p=0.0, gray_p=0.0)
    out = views(batch, torch.Generator().manual_seed(0))
    for v in views.view_names:
        inner = out[v][:, :, 4:-4, 4:-4]
        assert torch.allclose(inner, values.view(8, 1, 1, 1).expand_as(inner), atol=1e-5)
    real = views(shapes.get(torch.arange(8)), torch.Generator().manual_seed(0))
    assert not torch.equal(real["view1"], real["view2"])


@pytest.mark.parametrize("preset,changed", [("A", {"colour"}), ("B", {"x", "y"}), ("C", {"shape", "x", "y"})])
def test_presets_change_exactly_the_factors_they_name(shapes, preset, changed):
    views = build_views("factor_resample", shapes, preset=preset)
    batch = shapes.get(torch.arange(32))
    out = views(batch, torch.Generator().manual_seed(5))
    twin = shapes.resample(batch, views.factors, torch.Generator().manual_seed(5))
    assert torch.equal(out["view1"], batch.inputs["image"]) and torch.equal(out["view2"], twin.inputs["image"])
    for k in shapes.factor_names:
        same = torch.equal(twin.factors[k], batch.factors[k])
        assert same == (k not in changed), k
    for k in changed & set(shapes.categorical):
        assert (twin.factors[k] != batch.factors[k]).all()


def test_colour_split_views_are_channel_groups_of_one_shared_crop(shapes):
    batch = shapes.get(torch.arange(8))
    clean = build_views("colour_split", shapes, space="lab+rgb").eval_views(batch)
    lab = rgb_to_lab(batch.inputs["image"]) / 100
    assert torch.allclose(clean["L"], lab[:, :1]) and torch.allclose(clean["ab"], lab[:, 1:])
    ycc = build_views("colour_split", shapes, space="ycbcr").eval_views(batch)
    assert torch.allclose(torch.cat([ycc["Y"], ycc["CbCr"]], 1), rgb_to_ycbcr(batch.inputs["image"]))
    out = build_views("colour_split", shapes, space="lab+rgb")(batch, torch.Generator().manual_seed(3))
    rgb = torch.cat([out["R"], out["G"], out["B"]], dim=1)
    assert not torch.allclose(rgb, batch.inputs["image"])  # augmented ...
    assert torch.allclose(out["L"], rgb_to_lab(rgb)[:, :1] / 100, atol=1e-5)  # ... with one crop for all views


def test_patches_sit_at_the_offset(shapes):
    torch.manual_seed(0)
    images = torch.rand(6, 3, 32, 32)
    batch = Batch(inputs={"image": images})
    views = build_views("patches", shapes, patch_size=10, offset=7)
    out = views(batch, torch.Generator().manual_seed(1))
    for i in range(6):
        hits = [(y, x) for y in range(23) for x in range(23)
                if torch.equal(images[i, :, y:y + 10, x:x + 10], out["patch1"][i])]
        assert len(hits) == 1
        y, x = hits[0]
        assert torch.equal(out["patch2"][i], images[i, :, y + 7:y + 17, x + 7:x + 17])
    clean = views.eval_views(batch)
    assert torch.equal(clean["patch1"], images[:, :, 7:17, 7:17])
    assert torch.equal(clean["patch2"], images[:, :, 14:24, 14:24])
    horizontal = build_views("patches", shapes, patch_size=8, offset=20, direction="horizontal").eval_views(batch)
    assert torch.equal(horizontal["patch2"], images[:, :, 12:20, 22:30])


def test_modality_pair_and_identity_pass_inputs_through(shapes):
    batch = shapes.get(torch.arange(5))
    pair = build_views("modality_pair", shapes)
    out = pair(batch, torch.Generator())
    assert torch.equal(out["image"], batch.inputs["image"]) and torch.equal(out["text"], batch.inputs["text"])
    assert torch.equal(pair.view_lengths(batch)["text"], batch.lengths["text"])
    digits = build_dataset("digits", split="test")
    ident = build_views("identity", digits)
    b = digits.get(torch.arange(3))
    assert ident.view_names == ("input",) and torch.equal(ident(b, torch.Generator())["input"], b.inputs["image"])


def test_warp_signal_closed_forms():
    x = torch.arange(10.0).view(1, 10)
    assert torch.allclose(warp_signal(x, torch.zeros(1), torch.ones(1)), x)
    shifted = warp_signal(x, torch.tensor([2.0]), torch.ones(1))
    assert torch.allclose(shifted, torch.tensor([[0.0, 0.0, 0.0, 1, 2, 3, 4, 5, 6, 7]]))
    stretched = warp_signal(x, torch.zeros(1), torch.tensor([2.0]))
    assert torch.allclose(stretched[0, 3:7], 4.5 + (torch.arange(3.0, 7.0) - 4.5) / 2)


def test_signal_views(signals):
    batch = signals.get(torch.arange(20))
    views = build_views("signal", signals, noise=0.0)
    out = views(batch, torch.Generator().manual_seed(0))
    assert out["view1"].shape == (20, 40) and not torch.allclose(out["view1"], out["view2"])
    still = build_views("signal", signals, max_shift=0.0, stretch=(1.0, 1.0), gain=(1.0, 1.0), noise=0.0)
    assert torch.allclose(still(batch, torch.Generator())["view1"], batch.inputs["signal"], atol=1e-6)
    noisy = build_views("signal", signals, max_shift=0.0, stretch=(1.0, 1.0), gain=(1.0, 1.0), noise=0.3)
    diff = noisy(batch, torch.Generator().manual_seed(0))["view1"] - batch.inputs["signal"]
    assert abs(float(diff.std()) - 0.3) < 0.03
    assert torch.equal(views.eval_views(batch)["view2"], batch.inputs["signal"])
    with pytest.raises(ValueError, match="max_shift must be in \\[0, 1\\), got 1.5"):
        build_views("signal", signals, max_shift=1.5)
    with pytest.raises(ValueError, match="'signal'"):
        build_views("signal", build_dataset("digits", split="test"))
