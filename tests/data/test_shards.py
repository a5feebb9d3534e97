"""Sharded tar streams: what `pack` writes, and the determinism contract of `Shards.epoch`."""

from __future__ import annotations

import json
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image

from contrastlab.data.manifest import load_manifest
from contrastlab.data.pack import pack
from contrastlab.data.shards import INDEX, load_shards, read_index
from contrastlab.data.user import load_image_folder
from contrastlab.errors import UserError


def make_folder(root, classes=("a", "b", "c"), n=8, size=(4, 5), seed=0):
    """Images whose red channel is 60 x their class and whose green pixel (0, 0) numbers them."""
    rng = np.random.default_rng(seed)
    for c, name in enumerate(classes or ("",)):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            img = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
            img[..., 0] = 60 * c
            img[0, 0, 1] = c * n + i
            Image.fromarray(img).save(root / name / f"{i:03d}.png")
    return root


def packed(tmp_path, *, n=8, classes=("a", "b", "c"), name="p", **options):
    options = {"shard_items": 3, "test_fraction": 0, "progress": False, **options}
    pack(make_folder(tmp_path / f"src-{name}", classes=classes, n=n), tmp_path / name, **options)
    return tmp_path / name


def batches(epoch_ds, workers=0):
    return list(torch.utils.data.DataLoader(epoch_ds, batch_size=None, num_workers=workers))


def same(a, b):
    return (a.index.tolist() == b.index.tolist() and torch.equal(a.inputs["image"], b.inputs["image"])
            and (a.labels is None or torch.equal(a.labels, b.labels)))


# ------------------------------------------------------------------------------------------------ pack


def test_pack_writes_shards_of_original_bytes_and_an_index(tmp_path):
    src = make_folder(tmp_path / "imgs")
    index = pack(src, tmp_path / "out", shard_items=4, progress=False)
    on_disk = json.loads((tmp_path / "out" / INDEX).read_text())
    assert on_disk == index and index["version"] == 1 and index["classes"] == ["a", "b", "c"]
    assert index["modalities"] == {"image": [3, 4, 5]} and index["image_sizes"] == {"5x4": 24}
    train, test = index["splits"]["train"], index["splits"]["test"]
    assert (train["items"], test["items"]) == (18, 6)  # load_image_folder's stratified 0.2
    assert [s["items"] for s in train["shards"]] == [4, 4, 4, 4, 2] and train["class_counts"] == [6, 6, 6]
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == [INDEX, "test-000000.tar", "test-000001.tar", *(f"train-00000{i}.tar" for i in range(5))]
    with tarfile.open(tmp_path / "out" / "train-000000.tar") as tar:
        members = tar.getnames()
        assert members[:4] == ["000000000.png", "000000000.cls", "000000001.png", "000000001.cls"]
        png = tar.extractfile(members[0]).read()
    originals = {p.read_bytes() for p in src.rglob("*.png")}
    assert png in originals  # copied, not re-encoded


def test_packing_twice_gives_identical_bytes(tmp_path):
    a, b = packed(tmp_path, name="a"), packed(tmp_path, name="b")
    files = sorted(p.name for p in a.iterdir())
    assert files == sorted(p.name for p in b.iterdir())
    for name in files:
        if name != INDEX:  # the index names its source folder
            assert (a / name).read_bytes() == (b / name).read_bytes()


def test_the_test_split_holds_the_image_folders_test_items(tmp_path):
    src = make_folder(tmp_path / "imgs", n=10)
    pack(src, tmp_path / "out", shard_items=4, progress=False)
    ds = load_shards(root=str(tmp_path / "out"), split="test")
    folder = load_image_folder(root=str(src), split="test")
    got, want = ds.head(len(ds)), folder.get(torch.arange(len(folder)))
    key = lambda b: sorted(zip(b.inputs["image"][:, 1, 0, 0].tolist(), b.labels.tolist()))  # noqa: E731
    assert len(ds) == len(folder) == 6 and key(got) == key(want)


def test_manifest_captions_become_the_manifests_tokens(tmp_path):
    make_folder(tmp_path, classes=("img",), n=6)
    words = ["a red dot", "two blue squares here", "a dot", "red", "blue dot", "squares"]
    lines = "".join(f"img/{i:03d}.png,{w},{'xy'[i % 2]},{'test' if i == 5 else 'train'}\n" for i, w in enumerate(words))
    (tmp_path / "m.csv").write_text("image,caption,label,split\n" + lines)
    pack(tmp_path / "m.csv", tmp_path / "out", shard_items=2, shuffle=False, progress=False)
    ds = load_shards(root=str(tmp_path / "out"))
    reference = load_manifest(path=str(tmp_path / "m.csv"))
    assert ds.vocabulary.tokens == reference.vocabulary.tokens and ds.modalities["text"] == reference.modalities["text"]
    batch = ds.head(5)
    assert [ds.vocabulary.decode(row) for row in batch.inputs["text"]] == words[:5]
    assert batch.lengths["text"].tolist() == [3, 4, 2, 1, 2] and batch.labels.tolist() == [0, 1, 0, 1, 0]
    assert ds.classes == ("x", "y") and len(load_shards(root=str(tmp_path / "out"), split="test")) == 1


def test_audio_manifests_are_refused(tmp_path):
    (tmp_path / "m.csv").write_text("image,audio\na.png,a.wav\n")
    with pytest.raises(UserError, match="audio"):
        pack(tmp_path / "m.csv", tmp_path / "out", progress=False)


def test_out_dir_rules_and_overwrite_replacing_a_previous_pack(tmp_path):
    out = packed(tmp_path, name="out", shard_items=2)
    assert len(list(out.glob("*.tar"))) == 12
    with pytest.raises(UserError, match="not empty.*--overwrite"):
        pack(tmp_path / "src-out", out, progress=False)
    pack(tmp_path / "src-out", out, shard_items=10, test_fraction=0, overwrite=True, progress=False)
    assert sorted(p.name for p in out.iterdir()) == [INDEX, *(f"train-00000{i}.tar" for i in range(3))]
    (out / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="notes.txt"):
        pack(tmp_path / "src-out", out, overwrite=True, progress=False)
    assert (out / "notes.txt").read_text() == "mine"
    other = tmp_path / "other"
    other.mkdir()
    (other / "x").write_text("")
    with pytest.raises(UserError, match="holds 'x', which is not part of a pack"):
        pack(tmp_path / "src-out", other, overwrite=True, progress=False)


def test_a_failure_leaves_no_stray_files_and_the_previous_pack_intact(tmp_path):
    src = make_folder(tmp_path / "imgs", classes=(), n=9)
    (src / "004.png").write_bytes(b"not a png")
    with pytest.raises(UserError, match="004.png"):
        pack(src, tmp_path / "new", progress=False)
    assert not (tmp_path / "new").exists()
    good = make_folder(tmp_path / "good", classes=(), n=5)
    pack(good, tmp_path / "out", shard_items=2, progress=False)
    before = {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()}
    with pytest.raises(UserError, match="004.png"):
        pack(src, tmp_path / "out", overwrite=True, progress=False)
    assert {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()} == before


def test_shard_size_in_megabytes_and_resizing(tmp_path):
    src = make_folder(tmp_path / "imgs", classes=(), n=6, size=(20, 20))
    index = pack(src, tmp_path / "mb", shard_mb=0.002, test_fraction=0, progress=False)
    assert len(index["splits"]["train"]["shards"]) > 1 and index["splits"]["train"]["items"] == 6
    pack(src, tmp_path / "small", size=(6, 8), channels=1, test_fraction=0, progress=False)
    ds = load_shards(root=str(tmp_path / "small"), channels=1)
    assert ds.modalities == {"image": (1, 6, 8)} and ds.head(6).inputs["image"].shape == (6, 1, 6, 8)


# ------------------------------------------------------------------------------------------------ reading


def test_load_shards_attributes_and_refusals(tmp_path):
    out = packed(tmp_path, name="out")
    ds = load_shards(root=str(out))
    assert (ds.num_items, len(ds), ds.num_classes, ds.streaming, ds.in_memory) == (24, 24, 3, True, False)
    assert ds.modalities == {"image": (3, 4, 5)} and ds.factor_names == () and ds.steps_per_epoch(5) == 4
    with pytest.raises(UserError, match="no test split"):
        load_shards(root=str(out), split="test")
    with pytest.raises(UserError, match="holds no shards.json"):
        load_shards(root=str(tmp_path))
    with pytest.raises(ValueError, match="on_error"):
        load_shards(root=str(out), on_error="ignore")
    (out / "train-000003.tar").unlink()
    with pytest.raises(UserError, match="train-000003.tar.*missing"):
        load_shards(root=str(out))
    mixed = make_folder(tmp_path / "mixed", classes=(), n=2, size=(4, 4))
    make_folder(mixed / "big", classes=(), n=2, size=(6, 6), seed=1)
    pack(mixed, tmp_path / "mixed-out", labels="none", test_fraction=0, progress=False)
    with pytest.raises(UserError, match="2 different sizes.*size="):
        load_shards(root=str(tmp_path / "mixed-out"))
    assert load_shards(root=str(tmp_path / "mixed-out"), size=4).head(4).inputs["image"].shape == (4, 3, 4, 4)


def test_every_rank_yields_exactly_the_positions_it_is_asked_for(tmp_path):
    ds = load_shards(root=str(packed(tmp_path, n=9)))  # 27 items: 9 shards of 3
    for world, b, lanes in ((1, 4, 1), (1, 5, 3), (2, 3, 2), (3, 2, 1)):
        steps = ds.steps_per_epoch(b * world)
        for rank in range(world):
            for start in (0, 2):
                got = list(ds.epoch(1, batch_size=b, seed=0, rank=rank, world_size=world, start=start, lanes=lanes))
                assert len(got) == steps - start == len(ds.epoch(1, batch_size=b, seed=0, start=start,
                                                                 rank=rank, world_size=world, lanes=lanes))
                assert all(len(x) == b and x.inputs["image"].dtype == torch.uint8 for x in got)
                for x in got:  # images stay paired with their labels (the red channel is 60 x the class)
                    assert torch.equal(x.inputs["image"][:, 0, 0, 0].long(), 60 * x.labels)


def test_unequal_shards_repeat_items_only_when_a_lane_runs_out(tmp_path):
    ds = load_shards(root=str(packed(tmp_path, n=10, shard_items=4)))  # 30 items: 7 shards of 4 and one of 2
    got = torch.cat([x.index for x in ds.epoch(0, batch_size=5, seed=0, lanes=2)])
    assert len(got) == 30 and len(set(got.tolist())) < 30  # some lane ran short and started over
    lone = torch.cat([x.index for x in ds.epoch(0, batch_size=5, seed=0, lanes=1)])
    assert sorted(lone.tolist()) == list(range(30))  # one lane holds every item: nothing repeats


@pytest.mark.parametrize("workers, lanes", [(0, 2), (2, 2), (2, 4)])
def test_resuming_at_a_position_gives_the_same_batches(tmp_path, workers, lanes):
    ds = load_shards(root=str(packed(tmp_path, n=8, shard_items=2)), shuffle_buffer=5)  # 12 shards
    full = batches(ds.epoch(2, batch_size=3, seed=7, lanes=lanes), workers)
    resumed = batches(ds.epoch(2, batch_size=3, seed=7, lanes=lanes, start=3), workers)
    assert len(full) == 8 and len(resumed) == 5
    assert all(same(a, b) for a, b in zip(full[3:], resumed))
    if workers:  # the workers, each serving its lanes, give what one process serving all lanes gives
        assert all(same(a, b) for a, b in zip(full, batches(ds.epoch(2, batch_size=3, seed=7, lanes=lanes), 0)))


def test_two_ranks_read_disjoint_shards_and_cover_the_epoch_once(tmp_path):
    ds = load_shards(root=str(packed(tmp_path, n=8)))  # 24 items: 8 shards of 3
    seen = []
    for rank in range(2):
        got = torch.cat([x.index for x in ds.epoch(4, batch_size=3, seed=1, rank=rank, world_size=2, lanes=2)])
        seen.append(set(got.tolist()))
        assert len(got) == 12 == len(seen[-1])
    assert not seen[0] & seen[1] and seen[0] | seen[1] == set(range(24))
    shards = [{i // 3 for i in s} for s in seen]
    assert not shards[0] & shards[1] and len(shards[0]) == 4


def test_epochs_and_seeds_change_the_order_and_the_buffer_mixes_within_lanes(tmp_path):
    ds = load_shards(root=str(packed(tmp_path, n=8)), shuffle_buffer=6)

    def order(e, s):
        return torch.cat([x.index for x in ds.epoch(e, batch_size=4, seed=s)]).tolist()

    assert order(0, 0) == order(0, 0) != order(1, 0) != order(1, 1)
    plain = load_shards(root=str(packed(tmp_path, n=8, name="q")), shuffle_buffer=0)
    flat = torch.cat([x.index for x in plain.epoch(0, batch_size=4, seed=0)]).tolist()
    runs = [flat[i:i + 3] for i in range(0, 24, 3)]  # no buffer: each shard's items in order, shards permuted
    assert all(r == list(range(r[0], r[0] + 3)) and r[0] % 3 == 0 for r in runs) and flat != sorted(flat)
    assert order(0, 0) != flat


def test_refusals_of_epoch(tmp_path):
    ds = load_shards(root=str(packed(tmp_path, n=3)))  # 9 items in 3 shards
    with pytest.raises(UserError, match="3 shard.*2 x 2"):
        ds.epoch(0, batch_size=1, seed=0, world_size=2, lanes=2)
    for kwargs, match in (({"batch_size": 0}, "batch_size"), ({"rank": 2, "world_size": 2}, "rank"),
                          ({"start": 5}, "start"), ({"batch_size": 10}, "larger than"),
                          ({"start": 1, "drop_last": False}, "start")):
        with pytest.raises(ValueError, match=match):
            ds.epoch(0, **{"batch_size": 2, "seed": 0, **kwargs})
    with pytest.raises(UserError, match="multiple of the 2 loader workers"):
        batches(ds.epoch(0, batch_size=2, seed=0, lanes=1), workers=2)


def test_evaluation_order_reads_every_item_once(tmp_path):
    ds = load_shards(root=str(packed(tmp_path, n=8)))
    got = list(ds.epoch(0, batch_size=5, seed=0, shuffle=False, drop_last=False))
    assert [len(x) for x in got] == [5, 5, 5, 5, 4]
    assert torch.cat([x.index for x in got]).tolist() == list(range(24))
    assert same(ds.head(7), ds.epoch(0, batch_size=7, seed=0, shuffle=False).__iter__().__next__())
    two = torch.cat([x.index for x in ds.epoch(0, batch_size=5, seed=0, shuffle=False, drop_last=False, lanes=2)])
    assert sorted(two.tolist()) == list(range(24))


def _corrupt_members(out, shard, positions):
    """Truncate the images of the items at ``positions`` of ``shard`` (keeping the tar well-formed)."""
    path = out / shard
    with tarfile.open(path) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for i, (m, data) in enumerate(members):
            if i // 2 in positions and i % 2 == 0:
                data = data[:60]
                m.size = len(data)
            tar.addfile(m, __import__("io").BytesIO(data))
    return members[2 * positions[0]][0].name


def test_unreadable_items_fail_with_their_names_or_are_replaced_without_shifting(tmp_path):
    out = packed(tmp_path, n=8)
    member = _corrupt_members(out, "train-000002.tar", [1, 2])  # items 7 and 8
    with pytest.raises(UserError, match=f"train-000002.tar.*{member}"):
        load_shards(root=str(out), shuffle_buffer=0).head(9)
    ds = load_shards(root=str(out), on_error="skip", shuffle_buffer=4)
    head = ds.head(9)
    # replacements are the next readable items after the batch (they stay in the stream for their own batch)
    assert head.skipped == 2 and head.index.tolist() == [0, 1, 2, 3, 4, 5, 6, 9, 10]
    full = list(ds.epoch(0, batch_size=4, seed=3, lanes=2))
    assert sum(x.skipped for x in full) == 2 and all(len(x) == 4 for x in full)
    assert not {7, 8} & set(torch.cat([x.index for x in full]).tolist())
    for start in (1, 3, 5):
        assert all(same(a, b) for a, b in zip(full[start:], ds.epoch(0, batch_size=4, seed=3, lanes=2, start=start)))


def test_a_damaged_tar_fails_with_its_name_or_loses_only_its_tail(tmp_path):
    out = packed(tmp_path, n=8)
    data = (out / "train-000001.tar").read_bytes()
    (out / "train-000001.tar").write_bytes(data[:2148])  # cut in the third member's header: item 3 survives
    with pytest.raises(UserError, match="train-000001.tar' ends after 1 of its 3 items"):
        load_shards(root=str(out)).head(24)
    ds = load_shards(root=str(out), on_error="skip", shuffle_buffer=0)
    got = torch.cat([x.index for x in ds.epoch(0, batch_size=3, seed=0, shuffle=False, drop_last=False)]).tolist()
    assert 3 in got and 4 not in got and 5 not in got and len(got) == 22
    assert len(list(ds.epoch(0, batch_size=3, seed=0))) == 8  # a training epoch still has all its positions


def test_indexes_that_are_not_ours_or_are_malformed_are_refused(tmp_path):
    (tmp_path / INDEX).write_text('{"format": "other"}')
    with pytest.raises(UserError, match="not a contrastlab shard index"):
        read_index(tmp_path)
    out = packed(tmp_path, n=2, classes=("a",))
    index = json.loads((out / INDEX).read_text())
    index["splits"]["train"]["shards"][0]["name"] = "../../elsewhere.tar"
    (out / INDEX).write_text(json.dumps(index))
    with pytest.raises(UserError, match="shard named '../../elsewhere.tar'"):
        load_shards(root=str(out))
    del index["splits"]["train"]["shards"][0]["name"]
    (out / INDEX).write_text(json.dumps(index))
    with pytest.raises(UserError, match="malformed"):
        load_shards(root=str(out))
