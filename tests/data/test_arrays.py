""".npz / .npy arrays memory-mapped: rows read per batch, values checked at load in chunks."""

import pickle
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import torch

from contrastlab.data import arrays
from contrastlab.data.arrays import ArrayRef, load_npz
from contrastlab.errors import UserError


@pytest.fixture
def mapped(monkeypatch):
    """Every array memory-mapped (not read into memory, however small), scanned in 64-byte chunks."""
    monkeypatch.setattr(arrays, "IN_MEMORY_BYTES", 0)
    monkeypatch.setattr(arrays, "CHUNK_BYTES", 64)


def _images(n=20, channels_last=True):
    x = np.random.default_rng(0).integers(0, 256, size=(n, 5, 4, 3) if channels_last else (n, 3, 5, 4), dtype=np.uint8)
    return x, np.array(["b", "a", "c", "a"] * (n // 4))


def test_uncompressed_npz_members_are_memory_mapped_in_place(tmp_path, mapped):
    x, y = _images()
    np.savez(tmp_path / "d.npz", y=y, x=x)  # x is the second member: its offset is not the archive's start
    train, test = load_npz(path=str(tmp_path / "d.npz")), load_npz(path=str(tmp_path / "d.npz"), split="test")
    assert isinstance(train._source, ArrayRef) and not train.in_memory and train._values is None
    assert train.modalities == {"image": (3, 5, 4)} and train.classes == ("a", "b", "c") and (len(train), len(test)) == (16, 4)
    assert set(train.rows.tolist()).isdisjoint(test.rows.tolist()) and len({*train.rows, *test.rows}) == 20
    batch = train.get(torch.tensor([3, 0, 15]))
    assert isinstance(train._values, np.memmap) and batch.inputs["image"].dtype == torch.uint8
    expect = torch.from_numpy(x[train.rows[[3, 0, 15]]].transpose(0, 3, 1, 2).copy())
    assert torch.equal(batch.inputs["image"], expect) and batch.index.tolist() == [3, 0, 15]
    assert batch.labels.tolist() == [["a", "b", "c"].index(v) for v in y[train.rows[[3, 0, 15]]]]


@pytest.mark.parametrize("save", [np.savez, np.savez_compressed], ids=["stored", "compressed"])
@pytest.mark.parametrize("layout", ["nhw", "nchw", "nhwc", "nl", "fortran"])
def test_every_layout_equals_the_array_itself(tmp_path, mapped, save, layout):
    rng = np.random.default_rng(1)
    x = {"nhw": rng.random((12, 4, 5)), "nchw": rng.random((12, 1, 4, 5)).astype(np.float32),
         "nhwc": rng.integers(0, 256, (12, 4, 5, 3), dtype=np.uint8), "nl": rng.normal(size=(12, 7)),
         "fortran": np.asfortranarray(rng.random((12, 3, 4, 5)))}[layout]
    save(tmp_path / "d.npz", x=x, x_test=x[:3])
    ds = load_npz(path=str(tmp_path / "d.npz"), y=None, x_test="x_test", test_fraction=0.5)
    assert ds.in_memory == (save is np.savez_compressed) and len(ds) == 12 and ds.num_classes is None
    got = ds.get(torch.arange(12)).inputs["signal" if layout == "nl" else "image"]
    ref = x[:, None] if layout == "nhw" else x.transpose(0, 3, 1, 2) if layout == "nhwc" else x
    assert got.dtype == (torch.uint8 if x.dtype == np.uint8 else torch.float32) and got.is_contiguous()
    assert torch.equal(got, torch.from_numpy(np.ascontiguousarray(ref, dtype=got.numpy().dtype)))
    test = load_npz(path=str(tmp_path / "d.npz"), y=None, x_test="x_test", split="test")
    assert len(test) == 3 and torch.equal(test.get(torch.arange(3)).inputs[next(iter(ds.modalities))], got[:3])


def test_small_arrays_are_read_into_memory(tmp_path):
    from contrastlab.data._split import split_indices

    x, y = _images()
    np.savez(tmp_path / "d.npz", x=x, y=y)
    ds = load_npz(path=str(tmp_path / "d.npz"))
    assert ds.in_memory and isinstance(ds._source, np.ndarray) and ds._source.shape[0] == len(ds) == 16
    rows = split_indices(20, "train", labels=np.unique(y, return_inverse=True)[1])
    assert torch.equal(ds.get(torch.arange(16)).inputs["image"], torch.from_numpy(x[rows].transpose(0, 3, 1, 2).copy()))
    assert len(pickle.dumps(ds)) > x[rows].nbytes  # held whole: no loader workers for it (in_memory)


def test_npy_inputs_with_labels_and_test_split_beside_them(tmp_path, mapped):
    x, y = _images(channels_last=False)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    (tmp_path / "lab").mkdir()
    np.save(tmp_path / "lab" / "t.npy", np.arange(20) % 2)
    np.save(tmp_path / "xt.npy", x[:4])
    np.save(tmp_path / "yt.npy", np.arange(4) % 2)
    ds = load_npz(path=str(tmp_path / "x.npy"))
    assert ds.name == "npy:x" and ds.classes == ("a", "b", "c") and len(ds) == 16 and not ds.in_memory
    assert torch.equal(ds.get(torch.arange(16)).inputs["image"], torch.from_numpy(x[ds.rows]))
    assert load_npz(path=str(tmp_path / "x.npy"), y="lab/t.npy").classes == ("0", "1")
    assert load_npz(path=str(tmp_path / "x.npy"), y=None).num_classes is None
    own = load_npz(path=str(tmp_path / "x.npy"), y="lab/t.npy", x_test="xt", y_test="yt", split="test")
    assert len(own) == 4 and own.get(torch.arange(4)).labels.tolist() == [0, 1, 0, 1]
    with pytest.raises(UserError, match=r"^labels file '.*nolabels/y\.npy' not found \(pass y: null"):
        (tmp_path / "nolabels").mkdir()
        np.save(tmp_path / "nolabels" / "x.npy", x)
        load_npz(path=str(tmp_path / "nolabels" / "x.npy"))
    with pytest.raises(ValueError, match="a .npy path is itself the inputs"):
        load_npz(path=str(tmp_path / "x.npy"), x="feats")
    with pytest.raises(UserError, match=r"^npy file '.*nope\.npy' not found$"):
        load_npz(path=str(tmp_path / "nope.npy"))


def test_the_chunked_scan_finds_every_bad_value_and_the_first(tmp_path, mapped):
    x = np.random.default_rng(0).random((40, 16))
    x[3, 5], x[3, 6], x[30, 15] = np.nan, np.inf, -np.inf  # in different 64-byte chunks
    np.save(tmp_path / "nan.npy", x)
    with pytest.raises(UserError, match=r"^array '.*nan\.npy' holds 3 NaN or infinite values \(the first at "
                                        r"index \(3, 5\): nan\)$"):
        load_npz(path=str(tmp_path / "nan.npy"), y=None)
    f = np.asfortranarray(np.random.default_rng(0).random((10, 6)))
    f[7, 4] = np.nan
    np.savez(tmp_path / "f.npz", x=f)
    with pytest.raises(UserError, match=r"'x' in '.*f\.npz' holds 1 NaN .*index \(7, 4\): nan"):
        load_npz(path=str(tmp_path / "f.npz"), y=None)
    big = np.zeros((20, 8))
    big[19, 7], big[2, 3] = 1e300, -1e300
    np.savez(tmp_path / "big.npz", x=big)
    with pytest.raises(UserError, match=r"holds 2 values beyond float32's range .*index \(2, 3\): -1e\+300\)"):
        load_npz(path=str(tmp_path / "big.npz"), y=None)
    img = np.random.default_rng(0).random((20, 1, 4, 4))
    img[17, 0, 3, 3] = 1.5
    np.savez(tmp_path / "range.npz", x=img)
    with pytest.raises(UserError, match=r"holds images with values in \[\d.*, 1\.5\]; images must be uint8"):
        load_npz(path=str(tmp_path / "range.npz"), y=None)


def test_broken_files_are_refused_in_one_line(tmp_path, mapped):
    x = np.random.default_rng(0).random((50, 8))
    np.save(tmp_path / "x.npy", x)
    data = (tmp_path / "x.npy").read_bytes()
    (tmp_path / "cut.npy").write_bytes(data[:len(data) // 2])
    with pytest.raises(UserError, match=r"^array '.*cut\.npy' is truncated: its header promises \(50, 8\)"):
        load_npz(path=str(tmp_path / "cut.npy"), y=None)
    (tmp_path / "junk.npy").write_bytes(b"not an array at all")
    with pytest.raises(UserError, match=r"^array '.*junk\.npy' is not a readable \.npy array"):
        load_npz(path=str(tmp_path / "junk.npy"), y=None)
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    with pytest.raises(UserError, match="cannot be read without pickle"):
        load_npz(path=str(tmp_path / "obj.npy"), y=None)
    np.savez(tmp_path / "d.npz", feats=x)
    with pytest.raises(UserError, match=r"no array 'y'; it holds: feats; pass y: null for unlabelled inputs$"):
        load_npz(path=str(tmp_path / "d.npz"), x="feats")


def test_a_pickled_memory_map_is_small_and_maps_again(tmp_path, mapped):
    x = np.random.default_rng(0).integers(0, 256, size=(400, 3, 8, 8), dtype=np.uint8)
    np.savez(tmp_path / "d.npz", x=x, y=np.arange(400) % 4)
    ds = load_npz(path=str(tmp_path / "d.npz"))
    first = ds.get(torch.tensor([7, 1]))
    blob = pickle.dumps(ds)
    assert len(blob) < 10_000 < x.nbytes  # the path, offset and shape, the row numbers and labels
    copy = pickle.loads(blob)
    assert copy._values is None
    again = copy.get(torch.tensor([7, 1]))
    assert torch.equal(first.inputs["image"], again.inputs["image"]) and torch.equal(first.labels, again.labels)


def test_loader_workers_read_the_same_batches(tmp_path, mapped):
    from contrastlab.data.loading import _Items, _whole

    x = np.random.default_rng(0).random((64, 12)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    ds = load_npz(path=str(tmp_path / "x.npy"), y=None)
    ds.get(torch.arange(2))  # mapped in this process before the workers start
    order = [[5, 1, 9], [0, 2], [40, 41, 42, 43]]
    loader = torch.utils.data.DataLoader(_Items(ds), batch_sampler=order, collate_fn=_whole, num_workers=2)
    for idx, batch in zip(order, loader):
        assert torch.equal(batch.inputs["signal"], torch.from_numpy(x[ds.rows[idx]]))


_RSS = """
import resource, sys
import numpy as np, torch
from contrastlab.data.arrays import load_npz
for path in sys.argv[1:]:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    ds = load_npz(path=path, y=None, test_fraction=0.5)
    written = np.flatnonzero(ds.rows % 64 == 0)
    index = np.concatenate([written[:40], written[-10:], np.flatnonzero(ds.rows % 64 == 5)[:14]])
    batch = ds.get(torch.from_numpy(index))
    x = batch.inputs["image"]
    rows = ds.rows[index]
    per = int(np.prod(ds.modalities["image"]))
    expect = ((rows[:, None] * per + np.arange(per)) % 251 * (rows[:, None] % 64 == 0)).astype(x.numpy().dtype)
    if x.dtype == torch.float32:
        expect = expect / np.float32(250)
    assert not ds.in_memory and np.array_equal(x.reshape(len(rows), -1).numpy(), expect), path
    print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024)
"""


def _write_npy(f, n, item, dtype, *, sparse=False):
    """A large .npy written to the file object ``f`` (never held whole): row r holds (flat index % 251) when
    r % 64 == 0, divided by 250 for floats, zeros otherwise; ``sparse`` skips the zero rows (holes in the file)."""
    fmt = np.lib.format
    fmt.write_array_header_2_0(f, {"descr": fmt.dtype_to_descr(np.dtype(dtype)), "fortran_order": False,
                                   "shape": (n, *item)})
    per, size = int(np.prod(item)), np.dtype(dtype).itemsize

    def row(r):
        values = (np.arange(r * per, (r + 1) * per) % 251).astype(dtype)
        return (values / np.float32(250) if dtype == np.float32 else values).tobytes()

    if sparse:
        start = f.tell()
        for r in range(0, n, 64):
            f.seek(start + r * per * size)
            f.write(row(r))
        f.truncate(start + n * per * size)
        return
    zeros = bytes(per * size * 63)
    for r in range(0, n, 64):
        f.write(row(r) + zeros[:per * size * (min(n, r + 64) - r - 1)])


def test_a_large_file_is_not_read_into_memory(tmp_path):
    """~200 MB files: opening, checking and reading a batch leave the process's peak memory far below that
    (uint8 .npy, the same as a stored .npz member, and floats scanned for NaN and range at load). The .npy
    files are sparse (mostly holes, read as zeros) to keep the test fast; a read of the whole array would
    still hold 200 MB."""
    n, item = 16384, (3, 64, 64)  # 201 MB of uint8
    with open(tmp_path / "u8.npy", "wb") as f:
        _write_npy(f, n, item, np.uint8, sparse=True)
    with zipfile.ZipFile(tmp_path / "u8.npz", "w", compression=zipfile.ZIP_STORED) as z, \
            z.open("x.npy", "w", force_zip64=True) as member:  # as numpy.savez writes a member
        _write_npy(member, n, item, np.uint8)
    with open(tmp_path / "f32.npy", "wb") as f:
        _write_npy(f, n // 4, item, np.float32, sparse=True)
    files = [tmp_path / name for name in ("u8.npy", "u8.npz", "f32.npy")]
    assert all(f.stat().st_size > 200e6 for f in files)
    r = subprocess.run([sys.executable, "-c", _RSS, *map(str, files)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    grew = [float(v) for v in r.stdout.split()]
    assert len(grew) == 3 and max(grew) < 20e6, grew
