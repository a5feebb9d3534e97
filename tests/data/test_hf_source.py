"""Hugging Face data sets (save_to_disk folders, parquet files): images decoded on demand."""

import io
import pickle
import sys

import numpy as np
import pytest
import torch

datasets = pytest.importorskip("datasets")

from PIL import Image  # noqa: E402

from contrastlab.data.hf import load_hf  # noqa: E402
from contrastlab.errors import UserError  # noqa: E402

N = 12


def _pixels(i: int, h: int = 5, w: int = 7) -> np.ndarray:
    img = np.zeros((h, w, 3), np.uint8)
    img[..., 0], img[..., 1], img[..., 2] = 20 * i, np.arange(w)[None] * 9, np.arange(h)[:, None] * 11
    return img


def _rows(n: int = N) -> dict:
    return {"image": [Image.fromarray(_pixels(i)) for i in range(n)], "label": [i % 3 for i in range(n)],
            "caption": [f"a dot number {i}" for i in range(n)], "kind": ["b" if i % 2 else "a" for i in range(n)]}


FEATURES = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["cat", "dog", "owl", "emu"]),
                              "caption": datasets.Value("string"), "kind": datasets.Value("string")})


@pytest.fixture(autouse=True)
def _quiet_and_local(tmp_path, monkeypatch):
    quiet = datasets.are_progress_bars_disabled()
    datasets.disable_progress_bars()
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")  # parquet conversions
    yield
    if not quiet:
        datasets.enable_progress_bars()


@pytest.fixture
def saved(tmp_path):
    path = tmp_path / "saved"
    datasets.Dataset.from_dict(_rows(), features=FEATURES).save_to_disk(str(path))
    return path


def test_images_labels_and_text_equal_the_saved_rows(saved):
    ds = load_hf(path=str(saved), text="caption")
    assert len(ds) == 9 and ds.classes == ("cat", "dog", "owl", "emu") and ds.num_classes == 4  # ClassLabel's names
    assert ds.modalities == {"image": (3, 5, 7), "text": (4,)} and ds.in_memory is False
    batch = ds.get(torch.arange(len(ds)))
    assert batch.inputs["image"].dtype == torch.uint8 and batch.inputs["text"].dtype == torch.int64
    for k, (img, ids, label) in enumerate(zip(batch.inputs["image"], batch.inputs["text"], batch.labels)):
        i = int(ds.rows[k])
        assert torch.equal(img, torch.from_numpy(_pixels(i).transpose(2, 0, 1).copy()))
        assert ds.vocabulary.decode(ids) == f"a dot number {i}" and int(label) == i % 3
    assert batch.lengths["text"].tolist() == [4] * 9
    grey = load_hf(path=str(saved), channels=1, size=(3, 4), label="kind")
    assert grey.modalities == {"image": (1, 3, 4)} and grey.classes == ("a", "b")  # sorted values of a plain column
    assert grey.get(torch.arange(4)).labels.tolist() == [int(r) % 2 for r in grey.rows[:4]]


def test_splits_are_disjoint_or_the_data_sets_own(saved, tmp_path):
    train, test = load_hf(path=str(saved)), load_hf(path=str(saved), split="test")
    assert set(train.rows.tolist()).isdisjoint(test.rows.tolist()) and len({*train.rows, *test.rows}) == N
    assert set(int(v) for v in test.labels) == {0, 1, 2}  # stratified: every class in the test split
    rows = _rows()
    both = datasets.DatasetDict({"train": datasets.Dataset.from_dict({k: v[:9] for k, v in rows.items()}, features=FEATURES),
                                 "test": datasets.Dataset.from_dict({k: v[9:] for k, v in rows.items()}, features=FEATURES)})
    both.save_to_disk(str(tmp_path / "dict"))
    own_train = load_hf(path=str(tmp_path / "dict"), text="caption", label="kind")
    own_test = load_hf(path=str(tmp_path / "dict"), split="test", text="caption", label="kind")
    assert (len(own_train), len(own_test)) == (9, 3) and own_train.modalities == own_test.modalities
    batch = own_test.get(torch.arange(3))
    assert [int(v) // 20 for v in batch.inputs["image"][:, 0, 0, 0]] == [9, 10, 11]
    assert [own_test.vocabulary.decode(t) for t in batch.inputs["text"]] == [f"a dot number {i}" for i in (9, 10, 11)]
    assert own_test.describe(0).endswith("split 'test' row 0")


def test_parquet_files_are_read_too(tmp_path):
    datasets.Dataset.from_dict(_rows(), features=FEATURES).to_parquet(str(tmp_path / "pq" / "part-0.parquet"))
    for path in (tmp_path / "pq", tmp_path / "pq" / "part-0.parquet"):
        ds = load_hf(path=str(path), split="test")
        batch = ds.get(torch.arange(len(ds)))
        assert len(ds) == 3 and ds.classes == ("cat", "dog", "owl", "emu")
        for img, r in zip(batch.inputs["image"], ds.rows):
            assert torch.equal(img, torch.from_numpy(_pixels(int(r)).transpose(2, 0, 1).copy()))


def test_image_bytes_and_paths_columns(tmp_path):
    png = []
    for i in range(6):
        buf = io.BytesIO()
        Image.fromarray(_pixels(i)).save(buf, format="PNG")
        png.append(buf.getvalue())
        Image.fromarray(_pixels(i)).save(tmp_path / f"{i}.png")
    datasets.Dataset.from_dict({"data": png, "file": [str(tmp_path / f"{i}.png") for i in range(6)]}).save_to_disk(
        str(tmp_path / "raw"))
    for column in ("data", "file"):
        ds = load_hf(path=str(tmp_path / "raw"), image=column, label=None)
        assert ds.num_classes is None and ds.labels is None
        for img, r in zip(ds.get(torch.arange(len(ds))).inputs["image"], ds.rows):
            assert torch.equal(img, torch.from_numpy(_pixels(int(r)).transpose(2, 0, 1).copy()))


def test_bad_input_is_one_line_naming_the_path_and_column(saved, tmp_path, monkeypatch):
    with pytest.raises(UserError, match=r"has no column 'photo' \(option image\); its columns: image, label, caption, kind$"):
        load_hf(path=str(saved), image="photo")
    with pytest.raises(UserError, match=r"has no column 'y' \(option label\).*; pass label: null for unlabelled data$"):
        load_hf(path=str(saved), label="y")
    datasets.Dataset.from_dict({"score": [0.5] * 4, "image": _rows(4)["image"]}).save_to_disk(str(tmp_path / "f"))
    with pytest.raises(UserError, match=r"^column 'score' of '.*f' must hold integers or strings .*, got float64$"):
        load_hf(path=str(tmp_path / "f"), label="score")
    rows = _rows(6)
    rows["label"][4] = -1
    datasets.Dataset.from_dict(rows, features=FEATURES).save_to_disk(str(tmp_path / "missing"))
    with pytest.raises(UserError, match=r"column 'label' .* holds -1 at row 4.*pass label: null"):
        load_hf(path=str(tmp_path / "missing"))
    part = datasets.Dataset.from_dict(_rows(4), features=FEATURES)
    datasets.DatasetDict({"validation": part, "extra": part}).save_to_disk(str(tmp_path / "parts"))
    with pytest.raises(UserError, match=r"holds the splits validation, extra; contrastlab reads 'train' and 'test'"):
        load_hf(path=str(tmp_path / "parts"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match=r"'.*empty' is neither a folder written by save_to_disk"):
        load_hf(path=str(tmp_path / "empty"))
    with pytest.raises(UserError, match=r"Hugging Face data set '.*nowhere' not found"):
        load_hf(path=str(tmp_path / "nowhere"))
    with pytest.raises(ValueError, match="needs an image or a text column"):
        load_hf(path=str(saved), image=None)
    monkeypatch.setitem(sys.modules, "datasets", None)  # as if it were not installed
    with pytest.raises(UserError, match=r"needs the 'datasets' package; pip install 'contrastlab\[hf\]'"):
        load_hf(path=str(saved))


def test_unreadable_images_fail_naming_the_row_or_are_skipped(tmp_path):
    rows = _rows(10)
    rows["image"] = [{"bytes": b"not an image" if i in (3, 4) else _png(i), "path": None} for i in range(10)]
    datasets.Dataset.from_dict(rows, features=FEATURES).save_to_disk(str(tmp_path / "bad"))
    strict = load_hf(path=str(tmp_path / "bad"), test_fraction=0.1, size=(5, 7))
    where = int(np.flatnonzero(strict.rows == 3)[0])
    with pytest.raises(UserError, match=r"^Hugging Face data set '.*bad' row 3: cannot read image '<bytes>'"):
        strict.get(torch.tensor([where]))
    ds = load_hf(path=str(tmp_path / "bad"), test_fraction=0.1, size=(5, 7), on_error="skip")
    after = [int(r) for r in ds.rows[where:]]
    good = next(r for r in after if r not in (3, 4))
    last = len(ds) - 1
    assert int(ds.rows[last]) not in (3, 4)
    batch = ds.get(torch.tensor([where, last]))
    assert batch.skipped == after.index(good) >= 1 and ds.rows[batch.index].tolist() == [good, int(ds.rows[last])]
    assert int(batch.inputs["image"][0, 0, 0, 0]) == 20 * good


def _png(i: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(_pixels(i)).save(buf, format="PNG")
    return buf.getvalue()


def test_a_pickled_data_set_is_small_and_reads_the_same(saved):
    ds = load_hf(path=str(saved), text="caption")
    first = ds.get(torch.tensor([4, 1]))
    blob = pickle.dumps(ds)
    assert len(blob) < 5_000  # path, row numbers, labels and token ids; no table, no images
    copy = pickle.loads(blob)
    assert copy._table is None
    again = copy.get(torch.tensor([4, 1]))
    assert all(torch.equal(first.inputs[k], again.inputs[k]) for k in first.inputs)
    assert torch.equal(first.labels, again.labels)
