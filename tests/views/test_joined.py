"""Early fusion: the modalities of an item joined into one input (channels, or flattened with a bag of words)."""

from __future__ import annotations

import pytest
import torch

from contrastlab.data import build_dataset
from contrastlab.data.base import Batch
from contrastlab.views.fusion import JoinedViews, bag_of_words


def test_bag_of_words_counts_words_and_not_padding():
    ids = torch.tensor([[2, 3, 2, 0, 0], [1, 1, 4, 0, 0]])
    counts = bag_of_words(ids, 5)
    assert counts.tolist() == [[0, 0, 2, 1, 0], [0, 2, 0, 0, 1]]


def test_image_and_caption_are_flattened_and_counted():
    ds = build_dataset("shapes", n_items=6, with_captions=True, image_size=8)
    views = JoinedViews(ds)
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

    views = JoinedViews(Two(), modalities=["rgb", "depth"])
    assert views.view_shapes["joint"] == (4, 4, 4)
    joint = views.eval_views(Batch(ds_inputs))["joint"]
    torch.testing.assert_close(joint, torch.cat([ds_inputs["rgb"], ds_inputs["depth"]], dim=1))


def test_two_copies_differ_only_in_the_image_augmentation():
    ds = build_dataset("shapes", n_items=6, with_captions=True, image_size=16)
    views = JoinedViews(ds, copies=2)
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
        JoinedViews(ds, **kwargs)


def test_late_fusion_encodes_each_part_with_its_own_sub_encoder():
    from contrastlab.encoders.late_fusion import LateFusion

    ds = build_dataset("shapes", n_items=6, with_captions=True, image_size=8)
    views = JoinedViews(ds)
    batch = ds.get(torch.arange(4))
    joint = views.eval_views(batch)["joint"]
    net = LateFusion(views.view_shapes["joint"], layout=views.layout,
                     encoders={"image": {"name": "mlp", "options": {"hidden": [6], "batch_norm": False}},
                               "text": {"name": "mlp", "options": {"hidden": [3], "batch_norm": False}}})
    parts = net.split(joint)
    torch.testing.assert_close(parts["image"], batch.inputs["image"])
    torch.testing.assert_close(parts["text"], bag_of_words(batch.inputs["text"], len(ds.vocabulary)))
    out = net(joint)
    torch.testing.assert_close(out, torch.cat([net.sub["image"](batch.inputs["image"]), net.sub["text"](parts["text"])], 1))
    # late: changing the caption's words moves only the text features
    other = joint.clone()
    other[:, 192:] = 0.0
    moved = net(other)
    torch.testing.assert_close(moved[:, :6], out[:, :6])
    assert not torch.allclose(moved[:, 6:], out[:, 6:])


def test_late_fusion_needs_a_joined_view():
    from contrastlab.encoders.late_fusion import LateFusion

    with pytest.raises(ValueError, match="views: joined"):
        LateFusion((10,))
    with pytest.raises(ValueError, match="layout says"):
        LateFusion((11,), layout={"stacked": False, "parts": [["a", [10]]]})
    with pytest.raises(ValueError, match="not parts"):
        LateFusion((10,), layout={"stacked": False, "parts": [["a", [10]]]}, encoders={"b": {"name": "mlp"}})


_CONFIG = """
data: {name: shapes, options: {n_items: 96, n_test: 32, image_size: 16, with_captions: true}}
views: {name: joined, options: {copies: 2}}
model: {encoder: {name: late_fusion}, head: {name: linear}, dim: 8}
objective: {name: nt_xent}
batch_size: 32
steps: 2
threads: 1
checkpoint: {every: 0}
log: {every: 1, tensorboard: false, progress: false}
monitor: {every: 0}
"""


@pytest.mark.parametrize("encoder", ["late_fusion", "mlp"])
def test_early_and_late_fusion_train_from_yaml(tmp_path, encoder):
    import math

    from contrastlab.training import load_config, train

    config = tmp_path / "fusion.yaml"
    config.write_text(_CONFIG.replace("name: late_fusion", f"name: {encoder}"))
    result = train(load_config(config), tmp_path / "run")
    assert result.step == 2 and math.isfinite(result.loss)
