import math

import pytest
import torch

from contrastlab.data.captions import POSITION_WORDS, SIZE_WORDS, TEMPLATES, level, words
from contrastlab.data.shapes import RANGES, ShapesDataset
from contrastlab.data.shapes_render import BACKGROUNDS, PALETTE, SHAPES, render_shapes


def _world(**kw):
    kw.setdefault("n_items", 64)
    return ShapesDataset(**kw)


def test_same_seed_same_items_and_other_seed_or_split_differs():
    a, b = _world(seed=3), _world(seed=3)
    idx = torch.arange(len(a))
    for k in a.factor_names:
        assert torch.equal(a.factors[k], b.factors[k])
    assert torch.equal(a.get(idx).inputs["image"], b.get(idx).inputs["image"])
    c = _world(seed=4)
    assert not torch.equal(a.factors["x"], c.factors["x"])
    test = _world(seed=3, split="test", n_test=64)
    rows_train = {tuple(float(a.factors[k][i]) for k in a.factor_names) for i in range(len(a))}
    rows_test = {tuple(float(test.factors[k][i]) for k in a.factor_names) for i in range(len(test))}
    assert not rows_train & rows_test


def test_sizes_names_dtypes_and_ranges():
    ds = _world(n_items=500, rotation=True, background=True, image_size=24)
    assert len(ds) == 500 and len(_world(n_items=500, split="test")) == 100
    assert ds.factor_names == ("shape", "colour", "x", "y", "size", "rotation", "background")
    assert ds.modalities == {"image": (3, 24, 24)} and ds.num_classes == 5
    batch = ds.get(torch.arange(500))
    img = batch.inputs["image"]
    assert img.dtype == torch.float32 and img.shape == (500, 3, 24, 24)
    assert img.min() >= 0 and img.max() <= 1
    assert torch.equal(batch.labels, batch.factors["shape"]) and torch.equal(batch.index, torch.arange(500))
    for name, names in ds.categorical.items():
        v = batch.factors[name]
        assert v.dtype == torch.int64 and set(v.tolist()) == set(range(len(names)))
    for name, (lo, hi) in ds.continuous.items():
        v = batch.factors[name]
        assert v.dtype == torch.float32 and lo <= v.min() and v.max() <= hi
    assert ds.background_names == tuple(BACKGROUNDS)


def test_render_closed_form_pixels():
    ds = _world(colours=("red", "blue"), background=True)
    f = {"shape": torch.tensor([0]), "colour": torch.tensor([1]), "x": torch.tensor([0.5]),
         "y": torch.tensor([0.5]), "size": torch.tensor([0.2]), "background": torch.tensor([2])}
    img = ds.render(f)[0]
    assert torch.allclose(img[:, 16, 16], torch.tensor(PALETTE["blue"]))  # centre of the circle
    assert torch.allclose(img[:, 0, 0], torch.tensor(BACKGROUNDS["navy"]))  # corner
    # Coverage: about pi r^2 pixels of the circle (r = 0.2 * 32 = 6.4 px).
    coverage = ((img - torch.tensor(BACKGROUNDS["navy"]).view(3, 1, 1)).abs().sum(0) > 0).float()
    assert abs(float((img[2] - BACKGROUNDS["navy"][2]).sum() / (PALETTE["blue"][2] - BACKGROUNDS["navy"][2]))
               - math.pi * 6.4**2) < 2.0
    assert coverage.sum() > 100


@pytest.mark.parametrize("name,angle", [("square", math.pi / 2), ("cross", math.pi / 2), ("star", 2 * math.pi / 5),
                                        ("hexagon", math.pi / 3), ("circle", 1.234)])
def test_rotation_by_a_symmetry_of_the_shape_changes_nothing(name, angle):
    def img(theta):
        return render_shapes(torch.tensor([0]), torch.ones(1, 3), torch.tensor([0.5]), torch.tensor([0.5]),
                             torch.tensor([0.3]), shape_names=(name,), rotation=torch.tensor([theta]))
    assert (img(angle) - img(0.0)).abs().max() < 1e-4
    if name != "circle":
        assert (img(angle / 2) - img(0.0)).abs().max() > 0.5


def test_no_shape_is_clipped_at_the_extremes_whatever_its_rotation():
    n, names = 4 * len(SHAPES), tuple(SHAPES)
    shape = torch.arange(len(SHAPES)).repeat(4)
    rotation = torch.linspace(0.0, 2 * math.pi, n)
    size = torch.full((n,), RANGES["size"][1])

    def area(x, y):
        img = render_shapes(shape, torch.ones(n, 3), torch.full((n,), x), torch.full((n,), y), size,
                            shape_names=names, rotation=rotation, image_size=64)
        return img[:, 0].sum(dim=(1, 2))

    middle = area(0.5, 0.5)
    for x, y in ((0.25, 0.25), (0.75, 0.75), (0.25, 0.75)):
        assert ((area(x, y) - middle).abs() / middle).max() < 0.01


@pytest.mark.parametrize("factors", [["shape"], ["colour"], ["x"], ["y"], ["size"], ["location"],
                                     ["rotation"], ["background"], ["shape", "location"]])
def test_resample_changes_exactly_the_named_factors(factors):
    ds = _world(n_items=200, rotation=True, background=True)
    batch = ds.get(torch.arange(200))
    new = ds.resample(batch, factors, torch.Generator().manual_seed(0))
    changed = set(ds.expand(factors))
    for k in ds.factor_names:
        if k in changed:
            assert (new.factors[k] != batch.factors[k]).all(), k  # categorical: always; continuous: a.s.
        else:
            assert torch.equal(new.factors[k], batch.factors[k]), k
    # Exact factor control: the changed item is a fresh render of its factor values.
    assert torch.equal(new.inputs["image"], ds.render(new.factors))
    assert torch.equal(new.index, batch.index) and torch.equal(new.labels, new.factors["shape"])
    assert torch.equal(batch.inputs["image"], ds.render(batch.factors))  # the input batch is untouched


def test_resampling_colour_keeps_the_mask_and_location_keeps_the_colour():
    ds = _world(n_items=100)
    batch = ds.get(torch.arange(100))
    recoloured = ds.resample(batch, ["colour"], torch.Generator().manual_seed(1)).inputs["image"]
    mask = lambda img: img.amax(1) > 0  # noqa: E731  (black background)
    assert torch.equal(mask(recoloured), mask(batch.inputs["image"]))
    moved = ds.resample(batch, ["location"], torch.Generator().manual_seed(1)).inputs["image"]
    assert torch.allclose(moved.amax(dim=(2, 3)), batch.inputs["image"].amax(dim=(2, 3)), atol=1e-6)


def test_categorical_resample_is_uniform_over_the_other_values():
    ds = _world(n_items=1)
    k = len(ds.colour_names)
    batch = ds.replace(ds.get(torch.zeros(7000, dtype=torch.int64)), {"colour": torch.zeros(7000, dtype=torch.int64)})
    new = ds.resample(batch, ["colour"], torch.Generator().manual_seed(0)).factors["colour"]
    counts = torch.bincount(new, minlength=k)
    assert counts[0] == 0
    expected = 7000 / (k - 1)
    chi2 = float(((counts[1:] - expected) ** 2 / expected).sum())
    assert chi2 < 24.3  # 99.9% quantile of chi-square with 6 degrees of freedom


def test_replace_sets_values_and_validates():
    ds = _world()
    batch = ds.get(torch.arange(4))
    out = ds.replace(batch, {"x": torch.full((4,), 0.3)})
    assert torch.equal(out.factors["x"], torch.full((4,), 0.3))
    assert torch.equal(out.inputs["image"], ds.render(out.factors))
    with pytest.raises(ValueError, match="'rotation'"):
        ds.replace(batch, {"rotation": torch.zeros(4)})
    with pytest.raises(ValueError, match=r"shape \(4,\)"):
        ds.replace(batch, {"x": torch.zeros(3)})
    with pytest.raises(ValueError, match="'hue'"):
        ds.resample(batch, ["hue"], torch.Generator())
    with pytest.raises(ValueError, match="'rotation'"):
        ds.resample(batch, ["rotation"], torch.Generator())


@pytest.mark.parametrize("kw,match", [({"shapes": ["circle", "blob"]}, "'blob'"), ({"colours": ["red"]}, "two"),
                                      ({"n_items": 0}, "n_items"), ({"image_size": 4}, "image_size"),
                                      ({"split": "val"}, "'val'")])
def test_bad_options_name_the_value(kw, match):
    with pytest.raises(ValueError, match=match):
        ShapesDataset(**kw)


def test_captions_describe_the_factors():
    ds = _world(n_items=300, with_captions=True, background=True)
    batch = ds.get(torch.arange(300))
    texts = ds.captions(batch.factors, ds.nuisance["phrasing"])
    size_level = level(batch.factors["size"], *RANGES["size"])
    row, col = level(batch.factors["y"], *RANGES["y"]), level(batch.factors["x"], *RANGES["x"])
    used_templates = set()
    for i, text in enumerate(texts):
        w = words(text)
        assert ds.shape_names[batch.factors["shape"][i]] in w
        assert ds.colour_names[batch.factors["colour"][i]] in w
        assert [s for s in w if any(s in group for group in SIZE_WORDS)] == [
            s for s in w if s in SIZE_WORDS[size_level[i]]] != []
        position = POSITION_WORDS[row[i]][col[i]]
        assert f" {position} " in f" {text} ".replace(" on a ", " ")
        assert text.endswith(f"on a {ds.background_names[batch.factors['background'][i]]} background")
        used_templates.add(int(ds.nuisance["phrasing"][i]) % len(TEMPLATES))
        # The tokens decode back to the caption; no unknown words; lengths are right.
        ids, n = batch.inputs["text"][i], int(batch.lengths["text"][i])
        assert ds.vocabulary.decode(ids) == text and n == len(w) and (ids[n:] == 0).all() and 1 not in ids.tolist()
    assert used_templates == set(range(len(TEMPLATES)))
    assert ds.modalities["text"] == (ds.max_caption_tokens,)


def test_caption_vocabulary_is_shared_by_splits_and_follows_resampling():
    train = _world(with_captions=True)
    test = _world(with_captions=True, split="test")
    assert train.vocabulary.tokens == test.vocabulary.tokens
    batch = train.get(torch.arange(16))
    new = train.resample(batch, ["colour"], torch.Generator().manual_seed(0))
    for i in range(16):
        before, after = train.vocabulary.decode(batch.inputs["text"][i]), train.vocabulary.decode(new.inputs["text"][i])
        assert before.replace(train.colour_names[batch.factors["colour"][i]],
                              train.colour_names[new.factors["colour"][i]]) == after
