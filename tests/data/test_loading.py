"""Loading through torch's DataLoader: workers change nothing but speed; views run on the batch's device."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from contrastlab.data.base import Batch, to_device
from contrastlab.data.loading import Batches, LoaderOptions, default_workers, sample_batch
from contrastlab.data.registry import build_dataset
from contrastlab.data.user import load_image_folder
from contrastlab.errors import UserError
from contrastlab.training.sampler import ShardedBatches
from contrastlab.views.registry import VIEWS, build_views


def make_folder(root, classes=("a", "b"), n=12, size=(10, 12), seed=0):
    rng = np.random.default_rng(seed)
    for c in classes:
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(root / c / f"{i:03d}.png")
    return root


def collect(dataset, workers, start=0, stop=6, batch_size=4, rank=0, world=1):
    sampler = ShardedBatches(len(dataset), batch_size, seed=3, rank=rank, world_size=world)
    batches = Batches(dataset, sampler, start, stop, options=LoaderOptions(num_workers=workers), device=torch.device("cpu"),
                      seed=1, rank=rank, world_size=world)
    return [(step, b) for step, b in batches], sampler


def test_workers_read_exactly_the_batches_the_main_process_reads(tmp_path):
    ds = load_image_folder(root=str(make_folder(tmp_path)))
    assert default_workers(ds) >= 1 and default_workers(build_dataset("digits")) == 0
    alone, sampler = collect(ds, 0)
    two, _ = collect(ds, 2)
    assert [s for s, _ in alone] == [s for s, _ in two] == list(range(6))
    for (step, a), (_, b) in zip(alone, two):
        assert a.inputs["image"].dtype == torch.uint8
        assert torch.equal(a.inputs["image"], b.inputs["image"]) and torch.equal(a.labels, b.labels)
        assert torch.equal(a.index, sampler.indices(step)) and torch.equal(b.index, a.index)
        direct = ds.get(sampler.indices(step))
        assert torch.equal(direct.inputs["image"], a.inputs["image"])
    # starting at step 3 gives the batches of steps 3.. that a run from step 0 read (exact resume)
    later, _ = collect(ds, 2, start=3)
    assert [s for s, _ in later] == [3, 4, 5]
    assert all(torch.equal(b.index, dict(alone)[s].index) for s, b in later)


def test_two_ranks_read_disjoint_items_and_an_epoch_covers_every_item_once(tmp_path):
    ds = load_image_folder(root=str(make_folder(tmp_path)))  # 20 training items
    spe = len(ds) // 4
    seen = []
    for rank in (0, 1):
        got, _ = collect(ds, 1, stop=spe, rank=rank, world=2)
        seen.append(torch.cat([b.index for _, b in got]))
    assert not set(seen[0].tolist()) & set(seen[1].tolist())
    assert sorted(torch.cat(seen).tolist()) == list(range(spe * 4))  # 20 items, batch 4: nothing dropped


def test_images_stay_uint8_until_the_device_and_become_floats_there(tmp_path):
    ds = load_image_folder(root=str(make_folder(tmp_path)))
    raw = ds.get(torch.arange(3))
    assert raw.inputs["image"].dtype == torch.uint8
    moved = to_device(raw, "cpu")
    assert moved.inputs["image"].dtype == torch.float32
    assert torch.equal(moved.inputs["image"], raw.inputs["image"].float() / 255)
    assert torch.equal(sample_batch(ds, 3).inputs["image"], moved.inputs["image"])
    pinned = Batch({"x": torch.zeros(2, dtype=torch.uint8)}, skipped=2)
    assert pinned.apply(lambda t: t + 1).skipped == 2


VIEW_CASES = {
    "simclr": ("digits", {}, {}),
    "multicrop": ("shapes", {"n_items": 32}, {}),
    "factor_resample": ("shapes", {"n_items": 32}, {"preset": "A"}),
    "signal": ("mnist1d", {"n_samples": 200}, {}),
    "modality_pair": ("shapes", {"n_items": 32, "with_captions": True}, {}),
    "joined": ("shapes", {"n_items": 32, "with_captions": True}, {"copies": 2}),
    "modality_augment": ("factorcl_synthetic", {"n_samples": 64}, {}),
}


@pytest.mark.parametrize("name", sorted(VIEWS))
def test_every_view_generator_runs_on_the_batch_device_with_the_same_random_numbers(name):
    """The views of a batch on another device (``meta`` stands in for a GPU: an operation mixing devices, or
    a host sync such as ``.item()``, fails there) are made there, from the same random parameters."""
    data, options, view_options = VIEW_CASES.get(name, ("shapes", {"n_items": 32}, {}))
    ds = build_dataset(data, **options)
    views = build_views(name, ds, **view_options)
    batch = sample_batch(ds, 8)
    g_cpu, g_meta = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    on_cpu = views(batch, g_cpu)
    on_meta = views(to_device(batch, "meta"), g_meta)
    assert set(on_meta) == set(on_cpu)
    for key, value in on_meta.items():
        assert value.device.type == "meta" and value.shape == on_cpu[key].shape, key
    assert torch.equal(g_cpu.get_state(), g_meta.get_state())  # the same numbers were drawn
    assert all(v.device.type == "meta" for v in views.eval_views(to_device(batch, "meta")).values())


def test_sixteen_bit_and_float_images_are_scaled_from_their_range(tmp_path):
    root = tmp_path / "flat"
    root.mkdir()
    ramp = np.linspace(0, 65535, 64, dtype=np.uint16).reshape(8, 8)
    Image.fromarray(ramp).save(root / "a16.png")
    Image.fromarray((ramp / 65535.0).astype(np.float32)).save(root / "b.tif")
    Image.fromarray((ramp // 257).astype(np.uint8)).save(root / "c8.png")
    ds = load_image_folder(root=str(root), channels=1, test_fraction=0.34)
    every = ds.get(torch.arange(len(ds))).inputs["image"]
    for image in every:  # all three read as the same 8-bit ramp (to rounding)
        assert (image.int() - torch.from_numpy((ramp / 257.0).round().astype(np.int32))).abs().max() <= 1
        assert len(image.unique()) > 60
    bad = tmp_path / "bad"
    bad.mkdir()
    Image.fromarray(np.full((4, 4), 3.5, dtype=np.float32)).save(bad / "x.tif")
    with pytest.raises(UserError, match=r"x.tif.*values in \[3.5, 3.5\]"):
        load_image_folder(root=str(bad)).get(torch.tensor([0]))


def test_an_unreadable_image_fails_naming_it_or_is_replaced_and_counted(tmp_path):
    root = make_folder(tmp_path / "imgs", classes=("a",), n=10)
    files = sorted((root / "a").iterdir())
    files[3].write_bytes(files[3].read_bytes()[:60])  # truncated
    files[5].write_bytes(b"not an image at all")
    with pytest.raises(UserError, match="cannot read image .*005.png"):  # a header that does not parse: up front
        load_image_folder(root=str(root), labels="none", test_fraction=0.1)
    ds = load_image_folder(root=str(root), labels="none", test_fraction=0.1, size=(10, 12))  # no header scan
    names = [str(ds.root / f) for f in ds.files]
    bad = [i for i, f in enumerate(names) if f.endswith(("003.png", "005.png"))]
    with pytest.raises(UserError, match="cannot read image .*(003|005).png") as err:  # found when read
        ds.get(torch.arange(len(ds)))
    assert "\n" not in str(err.value)
    skipping = load_image_folder(root=str(root), labels="none", test_fraction=0.1, on_error="skip")
    batch = skipping.get(torch.arange(len(skipping)))
    assert batch.skipped == len(bad) and len(batch) == len(skipping)
    for i in bad:  # replaced by the next readable item, and the batch says which item it holds
        assert batch.index[i] == i + 1 + (i + 1 in bad)


def test_a_flat_folder_is_unlabelled_and_images_beside_class_folders_are_ambiguous(tmp_path):
    flat = tmp_path / "flat"
    flat.mkdir()
    for i in range(6):
        Image.fromarray(np.zeros((5, 5, 3), np.uint8)).save(flat / f"{i}.jpg")
    ds = load_image_folder(root=str(flat))
    assert ds.num_classes is None and ds.get(torch.arange(2)).labels is None
    assert len(ds) + len(load_image_folder(root=str(flat), split="test")) == 6
    make_folder(flat, classes=("c",), n=2)
    with pytest.raises(UserError, match="beside sub-folders.*labels"):
        load_image_folder(root=str(flat))
    assert load_image_folder(root=str(flat), labels="folders").classes == ("c",)
    with pytest.raises(UserError, match=r"c/000.png' is 12x10 but .*' is 5x5 .*pass size="):
        load_image_folder(root=str(flat), labels="none", test_fraction=0.1)
    assert len(load_image_folder(root=str(flat), labels="none", test_fraction=0.1, size=5)) == 7
