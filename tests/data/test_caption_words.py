"""Captions that name only some factors (fission's set-up: the caption names the shape, the rest is the image's)."""

from __future__ import annotations

import pytest
import torch

from contrastlab.data import build_dataset
from contrastlab.data.captions import describe


def test_shape_only_captions_name_the_shape_and_nothing_else():
    ds = build_dataset("shapes", n_items=64, with_captions=True, caption_words=["shape"])
    texts = ds.captions(ds.factors, ds.nuisance["phrasing"])
    colours, sizes = set(ds.colour_names), {"small", "little", "tiny", "medium", "midsize", "large", "big", "huge"}
    for text, shape in zip(texts, ds.factors["shape"]):
        words = set(text.split())
        assert ds.shape_names[int(shape)] in words
        assert not words & colours and not words & sizes and "top" not in words and "left" not in words


def test_full_captions_are_unchanged_by_the_option():
    default = build_dataset("shapes", n_items=16, with_captions=True)
    named = build_dataset("shapes", n_items=16, with_captions=True, caption_words=["size", "colour", "shape", "position"])
    assert torch.equal(default.get(torch.arange(16)).inputs["text"], named.get(torch.arange(16)).inputs["text"])
    assert default.vocabulary.tokens == named.vocabulary.tokens


def test_colour_only_captions_say_shape_for_the_noun():
    out = describe(shape=["circle"], colour=["red"], size_level=[2], row=[1], column=[1], phrasing=[2],
                   named=["colour", "position"])
    assert out == ["you can see a red shape at the centre"]


def test_every_partial_caption_fits_the_vocabulary():
    ds = build_dataset("shapes", n_items=200, with_captions=True, caption_words=["colour"])
    ids = ds.get(torch.arange(200)).inputs["text"]
    assert int((ids == 1).sum()) == 0  # no unknown words


@pytest.mark.parametrize("bad", [[], ["shape", "texture"], "shape"])
def test_bad_caption_words(bad):
    with pytest.raises(ValueError, match="caption_words"):
        build_dataset("shapes", n_items=4, with_captions=True, caption_words=bad)
