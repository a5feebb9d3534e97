"""Class names: every source says what its labels are called (``class_names``), in label order; wrappers pass
them through; the helpers fall back to the index."""

from __future__ import annotations

import pickle
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from contrastlab.data import Dataset, ShapesDataset, TensorDataset, class_name, label_names
from contrastlab.data.arrays import load_npz
from contrastlab.data.bundled import load_digits, load_mnist1d
from contrastlab.data.check import check_source
from contrastlab.data.manifest import load_manifest
from contrastlab.data.pack import pack
from contrastlab.data.shards import load_shards
from contrastlab.data.user import load_image_folder
from contrastlab.errors import UserError


def _consistent(ds) -> None:
    """The protocol's promise: ``None`` when unlabelled, else one name per class."""
    assert isinstance(ds, Dataset) or ds.streaming  # a stream has no get(index)
    if ds.num_classes is None:
        assert ds.class_names is None
    elif ds.class_names is not None:
        assert len(ds.class_names) == ds.num_classes and all(isinstance(c, str) for c in ds.class_names)


def _folder(root, classes=("b", "a"), n=5):
    """Images whose red value numbers the class in ``classes`` order (not the sorted order)."""
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(np.full((4, 4, 3), 50 * c, np.uint8)).save(root / name / f"{i}.png")
    return root


def _red_class(batch, classes):
    """The class folder each image came from, read back from its red value."""
    return [classes[int(v) // 50] for v in batch.inputs["image"][:, 0, 0, 0]]


# ------------------------------------------------------------------------------------------------ helpers

def test_helpers_use_the_names_and_fall_back_to_the_index():
    named = SimpleNamespace(num_classes=3, class_names=("cat", "dog", "owl"))
    assert label_names(named) == ["cat", "dog", "owl"] and class_name(named, 2) == "owl"
    assert class_name(named, torch.tensor(1)) == "dog" and class_name(named, np.int64(0)) == "cat"
    assert class_name(named, 7) == "7"  # outside the names: the index
    nameless = SimpleNamespace(num_classes=2, class_names=None)
    assert label_names(nameless) == ["0", "1"] and class_name(nameless, 1) == "1"
    own = SimpleNamespace(num_classes=2)  # a data set of one's own, without the attribute
    assert label_names(own) == ["0", "1"] and class_name(own, 0) == "0"
    assert label_names(SimpleNamespace(num_classes=None, class_names=None)) == []


# ------------------------------------------------------------------------------------------------ in memory

def test_shapes_names_are_the_shape_names_in_label_order():
    ds = ShapesDataset(n_items=40, seed=3, shapes=["star", "circle", "cross"])
    _consistent(ds)
    assert ds.class_names == ("star", "circle", "cross") == ds.shape_names
    batch = ds.get(torch.arange(40))
    assert torch.equal(batch.labels, batch.factors["shape"])
    assert [class_name(ds, y) for y in batch.labels] == [ds.shape_names[int(s)] for s in batch.factors["shape"]]
    captions = ShapesDataset(n_items=8, split="test", with_captions=True, shapes=["square", "triangle"])
    assert captions.class_names == ("square", "triangle")  # captioned (paired) items: the same labels


def test_bundled_digits_are_named_0_to_9():
    for ds in (load_digits(split="test"), load_mnist1d(split="test", n_samples=100)):
        _consistent(ds)
        assert ds.class_names == tuple(str(d) for d in range(10))


def test_tensor_dataset_names_its_classes_or_none():
    ds = TensorDataset("t", {"signal": torch.zeros(3, 2)}, torch.tensor([1, 0, 1]), classes=["x", "y"])
    assert ds.class_names == ("x", "y")
    assert TensorDataset("t", {"signal": torch.zeros(3, 2)}).class_names is None


# ------------------------------------------------------------------------------------------------ files

def test_image_folder_names_are_the_sorted_folders_matching_the_labels(tmp_path):
    root = _folder(tmp_path / "imgs", classes=("b", "a"))
    for split in ("train", "test"):
        ds = load_image_folder(root=str(root), split=split)
        _consistent(ds)
        assert ds.class_names == ("a", "b")
        batch = ds.get(torch.arange(len(ds)))
        assert [class_name(ds, y) for y in batch.labels] == _red_class(batch, ("b", "a"))
        assert pickle.loads(pickle.dumps(ds)).class_names == ("a", "b")  # as loader workers see it
    assert load_image_folder(root=str(root), labels="none").class_names is None


def test_manifest_names_are_its_label_strings(tmp_path):
    for i in range(6):
        Image.fromarray(np.full((4, 4, 3), 50 * (i % 2), np.uint8)).save(tmp_path / f"{i}.png")
    lines = "".join(f"{i}.png,a dot,{'zebra' if i % 2 else 'ant'}\n" for i in range(6))
    (tmp_path / "m.csv").write_text("image,caption,label\n" + lines)
    ds = load_manifest(path=str(tmp_path / "m.csv"))
    _consistent(ds)
    batch = ds.get(torch.arange(len(ds)))
    assert ds.class_names == ("ant", "zebra")
    assert [class_name(ds, y) for y in batch.labels] == _red_class(batch, ("ant", "zebra"))
    (tmp_path / "n.csv").write_text("image,caption\n" + "".join(f"{i}.png,a dot\n" for i in range(6)))
    assert load_manifest(path=str(tmp_path / "n.csv")).class_names is None


def test_shards_names_are_the_packs_classes(tmp_path):
    pack(_folder(tmp_path / "imgs", classes=("b", "a")), tmp_path / "p", shard_items=4, test_fraction=0,
         progress=False)
    ds = load_shards(root=str(tmp_path / "p"))
    _consistent(ds)
    batch = ds.head(len(ds))
    assert ds.class_names == ("a", "b")
    assert [class_name(ds, y) for y in batch.labels] == _red_class(batch, ("b", "a"))
    flat = tmp_path / "flat"
    flat.mkdir()
    for i in range(4):
        Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(flat / f"{i}.png")
    pack(flat, tmp_path / "q", test_fraction=0, progress=False)
    assert load_shards(root=str(tmp_path / "q")).class_names is None


# ------------------------------------------------------------------------------------------------ arrays

def _signals(n=30):
    """Signals whose first value numbers their row, so a batch says which rows it holds."""
    return np.arange(n, dtype=np.float64)[:, None].repeat(3, 1) / n


def _rows_of(batch, n=30):
    return (batch.inputs["signal"][:, 0] * n).round().long().numpy()


def test_npz_string_labels_are_their_own_names(tmp_path):
    y = np.array(["dog", "cat", "emu"] * 10)
    np.savez(tmp_path / "d.npz", x=_signals(), y=y)
    ds = load_npz(path=str(tmp_path / "d.npz"))
    _consistent(ds)
    batch = ds.get(torch.arange(len(ds)))
    assert ds.class_names == ("cat", "dog", "emu")
    assert [class_name(ds, v) for v in batch.labels] == y[_rows_of(batch)].tolist()


def test_npz_integer_labels_have_names_only_from_a_class_names_member(tmp_path):
    x, y = _signals(), np.arange(30) % 3
    np.savez(tmp_path / "plain.npz", x=x, y=y)
    plain = load_npz(path=str(tmp_path / "plain.npz"))
    assert plain.num_classes == 3 and plain.class_names is None and label_names(plain) == ["0", "1", "2"]
    names = np.array(["cat", "dog", "owl"])
    np.savez(tmp_path / "named.npz", x=x, y=y, class_names=names)
    for split in ("train", "test"):
        ds = load_npz(path=str(tmp_path / "named.npz"), split=split)
        _consistent(ds)
        batch = ds.get(torch.arange(len(ds)))
        assert ds.class_names == ("cat", "dog", "owl")
        assert [class_name(ds, v) for v in batch.labels] == names[y[_rows_of(batch)]].tolist()
        assert pickle.loads(pickle.dumps(ds)).class_names == ("cat", "dog", "owl")
    assert load_npz(path=str(tmp_path / "named.npz"), class_names=None).class_names is None  # not read
    assert load_npz(path=str(tmp_path / "named.npz"), y=None).class_names is None  # unlabelled
    np.savez(tmp_path / "other.npz", x=x, y=y, labels_named=names)  # under another key, named by the option
    assert load_npz(path=str(tmp_path / "other.npz"), class_names="labels_named").class_names == tuple(names)
    with pytest.raises(UserError, match="has no array 'nope'"):
        load_npz(path=str(tmp_path / "other.npz"), class_names="nope")
    np.savez(tmp_path / "bytes.npz", x=x, y=y, class_names=np.array([b"a", b"b", b"c"]))
    assert load_npz(path=str(tmp_path / "bytes.npz")).class_names == ("a", "b", "c")


def test_npz_file_split_reads_names_for_both_splits(tmp_path):
    np.savez(tmp_path / "d.npz", x=_signals(), y=np.arange(30) % 2, x_test=_signals(6), y_test=np.arange(6) % 2,
             class_names=np.array(["even", "odd"]))
    test = load_npz(path=str(tmp_path / "d.npz"), x_test="x_test", y_test="y_test", split="test")
    assert test.class_names == ("even", "odd") and label_names(test) == ["even", "odd"]
    assert [class_name(test, v) for v in test.get(torch.arange(6)).labels] == ["even", "odd"] * 3


def test_npz_names_in_a_given_order_for_string_labels_keep_the_split(tmp_path):
    x, y = _signals(), np.array(["dog", "cat", "cow"] * 10)
    np.savez(tmp_path / "a.npz", x=x, y=y)
    np.savez(tmp_path / "b.npz", x=x, y=y, class_names=np.array(["dog", "cow", "cat"]))
    for split in ("train", "test"):
        sorted_, ordered = load_npz(path=str(tmp_path / "a.npz"), split=split), load_npz(path=str(tmp_path / "b.npz"),
                                                                                          split=split)
        a, b = sorted_.get(torch.arange(len(sorted_))), ordered.get(torch.arange(len(ordered)))
        assert ordered.class_names == ("dog", "cow", "cat")
        assert torch.equal(a.inputs["signal"], b.inputs["signal"])  # naming moves no item between splits
        assert [class_name(ordered, v) for v in b.labels] == y[_rows_of(b)].tolist()


def test_npy_reads_a_class_names_file_beside_it(tmp_path):
    np.save(tmp_path / "x.npy", _signals())
    np.save(tmp_path / "y.npy", np.arange(30) % 2)
    assert load_npz(path=str(tmp_path / "x.npy")).class_names is None
    np.save(tmp_path / "class_names.npy", np.array(["no", "yes"]))
    assert load_npz(path=str(tmp_path / "x.npy")).class_names == ("no", "yes")


@pytest.mark.parametrize("y, names, problem", [
    (np.arange(30) % 3, np.array([1, 2, 3]), "must be strings"),
    (np.arange(30) % 3, np.array(["a", "b"]), "hold 2 names but the labels hold 3 classes"),
    (np.arange(30) % 3, np.array(["a", "b", "c", "d"]), "hold 4 names but the labels hold 3 classes"),
    (np.arange(30) % 3 + 1, np.array(["a", "b", "c"]), "name labels 0..2, but the labels are 1, 2, 3"),
    (np.arange(30) % 3, np.array([["a", "b", "c"]]), "must be a 1-D array"),
    (np.arange(30) % 3, np.array(["a", "b", "a"]), "name 'a' more than once"),
    (np.arange(30) % 3, np.array(["a", " ", "c"]), "empty name"),
    (np.arange(30) % 3, np.array(["a", None, "c"], dtype=object), "without pickle"),
    (np.array(["cat", "dog"] * 15), np.array(["cat", "cow"]), "do not name the label 'dog'"),
], ids=["numbers", "too-few", "too-many", "not-0-based", "2-d", "duplicate", "empty", "objects", "wrong-strings"])
def test_a_bad_class_names_member_is_a_one_line_value_error_naming_file_and_member(tmp_path, y, names, problem):
    file = tmp_path / "bad.npz"
    np.savez(file, x=_signals(), y=y, class_names=names)
    with pytest.raises(ValueError) as err:
        load_npz(path=str(file))
    message = str(err.value)
    assert problem in message and "'class_names'" in message and str(file) in message and "\n" not in message


def test_check_does_not_count_class_names_as_items(tmp_path):
    np.savez(tmp_path / "d.npz", x=_signals(4), y=np.arange(4) % 2, class_names=np.array(["a", "b"] * 5))
    assert check_source(tmp_path / "d.npz", progress=False)["items"] == 4


# ------------------------------------------------------------------------------------------------ Hugging Face

def test_hf_names_come_from_classlabel_or_strings_not_integers(tmp_path):
    datasets = pytest.importorskip("datasets")
    from contrastlab.data.hf import load_hf

    quiet = datasets.are_progress_bars_disabled()
    datasets.disable_progress_bars()
    try:
        rows = {"text": [f"a dot {i}" for i in range(12)], "label": [i % 3 for i in range(12)],
                "kind": ["b" if i % 2 else "a" for i in range(12)], "number": [i % 2 for i in range(12)]}
        features = datasets.Features({"text": datasets.Value("string"), "kind": datasets.Value("string"),
                                      "label": datasets.ClassLabel(names=["owl", "cat", "dog"]),
                                      "number": datasets.Value("int64")})
        datasets.Dataset.from_dict(rows, features=features).save_to_disk(str(tmp_path / "d"))
        ds = load_hf(path=str(tmp_path / "d"), image=None, text="text")
        _consistent(ds)
        assert ds.class_names == ("owl", "cat", "dog")  # the ClassLabel's order, not sorted
        batch = ds.get(torch.arange(len(ds)))
        assert [class_name(ds, v) for v in batch.labels] == [["owl", "cat", "dog"][int(r) % 3] for r in ds.rows]
        kind = load_hf(path=str(tmp_path / "d"), image=None, text="text", label="kind")
        assert kind.class_names == ("a", "b")
        number = load_hf(path=str(tmp_path / "d"), image=None, text="text", label="number")
        assert number.num_classes == 2 and number.class_names is None
        assert load_hf(path=str(tmp_path / "d"), image=None, text="text", label=None).class_names is None
    finally:
        if not quiet:
            datasets.enable_progress_bars()

