"""Early fusion: the modalities of an item joined into one input (channels, or flattened with a bag of words)."""

from __future__ import annotations

import pytest
import torch

from contrastlab.data import build_dataset
from contrastlab.data.base import Batch
from contrastlab.views.fusion import EarlyFusionViews, bag_of_words


def test_bag_of_words_counts_words_and_not_padding():
    ids = torch.tensor([[2, 3, 2, 0, 0], [1, 1, 4, 0, 0]])
    counts = bag_of_words(ids, 5)
    assert counts.tolist() == [[0, 0, 2, 1, 0], [0, 2, 0, 0, 1]]


def test_image_and_caption_are_flattened_and_counted():
    ds = build_dataset("shapes", n_items=6, with_captions=True, image_size=8)
    views = EarlyFusionViews(ds)
    batch = ds.get(torch.arange(4))
    joint = views.eval_views(batch)["joint"]
    assert joint.shape == (4, 3 * 8 * 8 + len(ds.vocabulary))
    torch.testing.assert_close(joint[:, :192], batch.inputs["image"].flatten(1))
    words = joint[:, 192:]
    assert torch.equal(words.sum(1), batch.lengths["text"].float())  # every word of the caption counted once


def test_images_of_one_size_are_stacked_along_channels():
    ds_inputs = {"rgb": torch.rand(3, 3, 4, 4), "depth": torch.rand(3, 1, 4, 4)}

    class Two:
        name, modalities = "two", {"rgb": (3, 4, 4), "depth": (1, 4, 4)}

    views = EarlyFusionViews(Two(), modalities=["rgb", "depth"])
    assert views.view_shapes["joint"] == (4, 4, 4)
    joint = views.eval_views(Batch(ds_inputs))["joint"]
    torch.testing.assert_close(joint, torch.cat([ds_inputs["rgb"], ds_inputs["depth"]], dim=1))


def test_two_copies_differ_only_in_the_image_augmentation():
    ds = build_dataset("shapes", n_items=6, with_captions=True, image_size=16)
    views = EarlyFusionViews(ds, copies=2)
    out = views(ds.get(torch.arange(4)), torch.Generator().manual_seed(0))
    assert set(out) == {"joint1", "joint2"}
    image = 3 * 16 * 16
    assert not torch.equal(out["joint1"][:, :image], out["joint2"][:, :image])
    assert torch.equal(out["joint1"][:, image:], out["joint2"][:, image:])


@pytest.mark.parametrize("kwargs, message", [({"modalities": ["image"]}, "at least two"),
                                             ({"copies": 3}, "copies"), ({"modalities": ["image", "sound"]}, "sound")])
def test_bad_options(kwargs, message):
    ds = build_dataset("shapes", n_items=4, with_captions=True, image_size=8)
    with pytest.raises(ValueError, match=message):
        EarlyFusionViews(ds, **kwargs)
