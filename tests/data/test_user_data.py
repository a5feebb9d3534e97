import json
import struct

import matplotlib.image
import numpy as np
import pytest
import torch

from contrastlab.data.manifest import load_manifest
from contrastlab.data.user import load_image_folder, load_npz
from contrastlab.errors import UserError


def _png(path, h=6, w=8, value=0.5):
    path.parent.mkdir(parents=True, exist_ok=True)
    img = np.zeros((h, w, 3))
    img[..., 0] = value
    matplotlib.image.imsave(path, img)


def _folder(root, n=5, classes=("cat", "dog")):
    for c, name in enumerate(classes):
        for i in range(n):
            _png(root / name / f"{i}.png", value=(c * n + i) / (2 * n))
    return root


def test_image_folder_loads_classes_and_splits(tmp_path):
    root = _folder(tmp_path / "imgs")
    train, test = load_image_folder(root=str(root)), load_image_folder(root=str(root), split="test")
    assert (len(train), len(test)) == (8, 2) and train.classes == ("cat", "dog")
    batch = train.get(torch.arange(8))
    assert batch.inputs["image"].shape == (8, 3, 6, 8) and batch.inputs["image"].dtype == torch.float32
    assert batch.labels.tolist().count(0) == 4
    # The red channel carries the file's value, so images and labels stay paired.
    for img, label in zip(batch.inputs["image"], batch.labels):
        assert (float(img[0, 0, 0]) >= 0.5) == bool(label)
    grey = load_image_folder(root=str(root), channels=1, size=(4, 4))
    assert grey.modalities == {"image": (1, 4, 4)}


def test_image_folder_errors_name_the_problem(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_image_folder(root=str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no class sub-folders"):
        load_image_folder(root=str(tmp_path / "empty"))
    (tmp_path / "noimg" / "a").mkdir(parents=True)
    with pytest.raises(UserError, match="no images"):
        load_image_folder(root=str(tmp_path / "noimg"))
    root = _folder(tmp_path / "mixed")
    _png(root / "dog" / "big.png", h=9, w=9)
    with pytest.raises(UserError, match=r"big\.png' is 9x9 but .* is 8x6") as err:
        load_image_folder(root=str(root), split="test", test_fraction=0.5)
    assert "\n" not in str(err.value)
    root = _folder(tmp_path / "broken")
    for i in range(5):
        (root / "cat" / f"{i}.png").write_bytes(b"not a png")
    for split in ("train", "test"):
        with pytest.raises(UserError, match=r"cannot read image .*cat/\d\.png"):
            load_image_folder(root=str(root), split=split)
    with pytest.raises(ValueError, match="channels must be 1 or 3, got 2"):
        load_image_folder(root=str(root), channels=2)


def test_npz_images_signals_and_labels(tmp_path):
    f = tmp_path / "d.npz"
    x = np.random.default_rng(0).integers(0, 256, size=(20, 5, 5, 3), dtype=np.uint8)  # channels last
    y = np.array(["b", "a"] * 10)
    np.savez(f, x=x, y=y, x_test=x[:4], y_test=y[:4])
    ds = load_npz(path=str(f))
    assert ds.modalities == {"image": (3, 5, 5)} and ds.classes == ("a", "b") and len(ds) == 16
    first = load_npz(path=str(f), x="x_test", y="y_test", test_fraction=0.5).get(torch.arange(2))
    assert first.inputs["image"].max() <= 1.0
    own = load_npz(path=str(f), split="test", x_test="x_test", y_test="y_test")
    assert len(own) == 4 and torch.allclose(own.get(torch.arange(4)).inputs["image"],
                                             torch.from_numpy(x[:4].transpose(0, 3, 1, 2) / 255.0).float())
    assert own.get(torch.arange(4)).labels.tolist() == [1, 0, 1, 0]
    np.savez(tmp_path / "s.npz", signals=np.zeros((10, 7)))
    sig = load_npz(path=str(tmp_path / "s.npz"), x="signals", y=None)
    assert sig.modalities == {"signal": (7,)} and sig.num_classes is None and len(sig) == 8


def test_npz_errors_name_the_key(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_npz(path=str(tmp_path / "missing.npz"))
    bad = np.zeros((10, 4))
    bad[3, 1] = np.nan
    np.savez(tmp_path / "nan.npz", feats=bad, y=np.arange(10))
    with pytest.raises(UserError, match=r"array 'feats' in '.*nan\.npz' holds 1 NaN or infinite values \(the first at index \(3, 1\): nan\)"):
        load_npz(path=str(tmp_path / "nan.npz"), x="feats")
    with pytest.raises(UserError, match="no array 'x'; it holds: feats, y"):
        load_npz(path=str(tmp_path / "nan.npz"))
    np.savez(tmp_path / "range.npz", x=np.full((4, 3, 2, 2), 3.0), y=np.arange(4))
    with pytest.raises(UserError, match=r"\[3, 3\]"):
        load_npz(path=str(tmp_path / "range.npz"))
    np.savez(tmp_path / "len.npz", x=np.zeros((4, 3)), y=np.arange(5))
    with pytest.raises(UserError, match="shape \\(5,\\) but the inputs hold 4"):
        load_npz(path=str(tmp_path / "len.npz"))
    (tmp_path / "text.npz").write_text("x: [1, 2]\n")
    with pytest.raises(UserError, match="is not an .npz archive"):
        load_npz(path=str(tmp_path / "text.npz"))
    np.savez(tmp_path / "complex.npz", x=np.zeros((4, 3)), y=np.ones(4, dtype=complex))
    with pytest.raises(UserError, match="must be integers or strings, got dtype complex128"):
        load_npz(path=str(tmp_path / "complex.npz"))


def _pcm_wav(path, seconds=0.5, rate=16000):
    t = np.arange(int(seconds * rate)) / rate
    s = (0.5 * np.sin(2 * np.pi * 440 * t) * 32767).astype("<i2").tobytes()
    fmt = struct.pack("<HHIIHH", 1, 1, rate, 2 * rate, 2, 16)
    path.write_bytes(b"RIFF" + struct.pack("<I", 36 + len(s)) + b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt
                     + b"data" + struct.pack("<I", len(s)) + s)


def test_manifest_csv_with_captions_and_jsonl_with_audio(tmp_path):
    lines = ["image,caption,label"]
    for i in range(10):
        _png(tmp_path / "img" / f"{i}.png", value=i / 10)
        lines.append(f"img/{i}.png,a picture number {i % 3},{'odd' if i % 2 else 'even'}")
    (tmp_path / "m.csv").write_text("\n".join(lines) + "\n")
    ds = load_manifest(path=str(tmp_path / "m.csv"))
    assert len(ds) == 8 and ds.classes == ("even", "odd") and ds.modalities["text"] == (4,)
    batch = ds.get(torch.arange(8))
    for img, ids, label in zip(batch.inputs["image"], batch.inputs["text"], batch.labels):
        i = int(round(float(img[0, 0, 0]) * 10))
        assert ds.vocabulary.decode(ids) == f"a picture number {i % 3}" and int(label) == i % 2
    assert batch.lengths["text"].tolist() == [4] * 8

    rows = []
    for i in range(4):
        _pcm_wav(tmp_path / f"{i}.wav", seconds=0.3 + 0.1 * i)
        rows.append(json.dumps({"image": f"img/{i}.png", "audio": f"{i}.wav", "split": "test" if i == 3 else "train"}))
    (tmp_path / "a.jsonl").write_text("\n".join(rows) + "\n")
    train = load_manifest(path=str(tmp_path / "a.jsonl"))
    audio = train.get(torch.arange(3))
    assert len(train) == 3 and audio.inputs["audio"].shape[:2] == (3, 40)
    assert audio.lengths["audio"].tolist() == sorted(audio.lengths["audio"].tolist())
    assert int(audio.lengths["audio"][2]) == audio.inputs["audio"].shape[2]
    assert len(load_manifest(path=str(tmp_path / "a.jsonl"), split="test")) == 1


def test_manifest_errors_name_the_line_and_path(tmp_path):
    _png(tmp_path / "a.png")
    (tmp_path / "m.csv").write_text("image,caption\na.png,one\nmissing.png,two\n")
    with pytest.raises(UserError, match=r"^m\.csv line 3: image file '.*missing\.png' not found$"):
        load_manifest(path=str(tmp_path / "m.csv"), test_fraction=0.5)
    (tmp_path / "bad.jsonl").write_text('{"image": "a.png", "caption": "x"}\n{"image": "a.png", caption}\n')
    with pytest.raises(UserError, match=r"bad\.jsonl line 2: not valid JSON"):
        load_manifest(path=str(tmp_path / "bad.jsonl"))
    (tmp_path / "cols.csv").write_text("picture,caption\na.png,one\n")
    with pytest.raises(UserError, match="needs an 'image' field .* found: caption, picture"):
        load_manifest(path=str(tmp_path / "cols.csv"))
    (tmp_path / "empty.csv").write_text("image,caption\na.png,\n")
    with pytest.raises(UserError, match=r"empty\.csv line 2: empty or missing 'caption'"):
        load_manifest(path=str(tmp_path / "empty.csv"))
    (tmp_path / "wav.csv").write_text("image,audio\na.png,a.png\na.png,a.png\n")
    with pytest.raises(UserError, match=r"wav\.csv line \d: cannot read audio .*a\.png.*RIFF"):
        load_manifest(path=str(tmp_path / "wav.csv"))
    with pytest.raises(UserError, match="manifest '.*nope.csv' not found"):
        load_manifest(path=str(tmp_path / "nope.csv"))
