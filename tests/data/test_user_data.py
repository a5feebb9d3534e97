import json
import struct

import matplotlib.image
import numpy as np
import pytest
import torch

from contrastlab.data.manifest import load_manifest
from contrastlab.data.arrays import load_npz
from contrastlab.data.user import load_image_folder
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
    # read on demand, uint8 until the device
    assert batch.inputs["image"].shape == (8, 3, 6, 8) and batch.inputs["image"].dtype == torch.uint8
    assert batch.labels.tolist().count(0) == 4
    # The red channel carries the file's value, so images and labels stay paired.
    for img, label in zip(batch.inputs["image"], batch.labels):
        assert (float(img[0, 0, 0]) >= 127.5) == bool(label)
    grey = load_image_folder(root=str(root), channels=1, size=(4, 4))
    assert grey.modalities == {"image": (1, 4, 4)}


def test_image_folder_errors_name_the_problem(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_image_folder(root=str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no images .* found under '.*empty'"):  # a flat folder, but empty
        load_image_folder(root=str(tmp_path / "empty"))
    with pytest.raises(UserError, match="no class sub-folders"):
        load_image_folder(root=str(tmp_path / "empty"), labels="folders")
    (tmp_path / "noimg" / "a").mkdir(parents=True)
    with pytest.raises(UserError, match="no images"):
        load_image_folder(root=str(tmp_path / "noimg"))
    root = _folder(tmp_path / "mixed")
    _png(root / "dog" / "big.png", h=9, w=9)
    with pytest.raises(UserError, match=r"big\.png' is 9x9 but .* is 8x6") as err:  # from the headers, up front
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
    assert first.inputs["image"].dtype == torch.uint8  # images stay uint8 until the device
    own = load_npz(path=str(f), split="test", x_test="x_test", y_test="y_test")
    assert len(own) == 4 and torch.equal(own.get(torch.arange(4)).inputs["image"],
                                         torch.from_numpy(x[:4].transpose(0, 3, 1, 2).copy()))
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
        i = int(round(float(img[0, 0, 0]) / 255 * 10))
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


def _claim_size(path, width, height):
    """Rewrite a PNG's IHDR so its header claims ``width`` x ``height`` (CRC fixed; the file stays tiny)."""
    import zlib

    data = bytearray(path.read_bytes())
    assert data[12:16] == b"IHDR"
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    path.write_bytes(bytes(data))


def test_oversized_images_are_refused_naming_file_and_size(tmp_path, monkeypatch):
    import warnings

    from PIL import Image

    root = _folder(tmp_path / "imgs")
    for i in range(5):
        _claim_size(root / "dog" / f"{i}.png", 30000, 30000)
    for split in ("train", "test"):
        with pytest.raises(UserError, match=r"image '.*dog/\d\.png' claims 30000x30000 pixels") as err:
            folder = load_image_folder(root=str(root), split=split, test_fraction=0.5)
            folder.get(torch.arange(len(folder)))
        assert "\n" not in str(err.value) and "MAX_IMAGE_PIXELS" in str(err.value)
    assert Image.MAX_IMAGE_PIXELS is not None and Image.MAX_IMAGE_PIXELS > 48

    for i in range(4):
        _png(tmp_path / "m" / f"{i}.png")
    (tmp_path / "m" / "m.csv").write_text("image,caption\n" + "".join(f"{i}.png,a dot\n" for i in range(4)))
    # 8x6 = 48 pixels: over twice the limit (Pillow's error), then between the limit and twice it (Pillow's warning).
    for limit in (20, 40):
        monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", limit)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a DecompressionBombWarning must not escape either
            with pytest.raises(UserError, match=rf"^m\.csv line \d: image '.*\d\.png' claims 8x6 pixels .*than the "
                                                rf"{limit} pixels"):
                load_manifest(path=str(tmp_path / "m" / "m.csv"), test_fraction=0.5)
        assert Image.MAX_IMAGE_PIXELS == limit
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 48)
    assert len(load_manifest(path=str(tmp_path / "m" / "m.csv"), test_fraction=0.5)) == 2


def test_npz_values_beyond_float32_are_refused(tmp_path):
    x = np.random.default_rng(0).random((40, 16))
    x[5, 7] = -1e300
    x[9, 0] = 1e300
    np.savez(tmp_path / "big.npz", x=x, y=np.arange(40) % 2)
    with pytest.raises(UserError, match=r"array 'x' in '.*big\.npz' holds 2 values beyond float32's range "
                                        r"\(±3\.403e\+38\) \(the first at index \(5, 7\): -1e\+300\)"):
        load_npz(path=str(tmp_path / "big.npz"))
    np.savez(tmp_path / "full.npz", x=np.full((40, 16), 1e300), y=np.arange(40) % 2)
    with pytest.raises(UserError, match=r"'x' in '.*full\.npz' holds 640 values beyond .*index \(0, 0\)"):
        load_npz(path=str(tmp_path / "full.npz"), split="test")
    np.savez(tmp_path / "ok.npz", x=np.full((10, 4), 3e38), y=np.arange(10) % 2)  # large but fits float32
    assert torch.isfinite(load_npz(path=str(tmp_path / "ok.npz")).get(torch.arange(8)).inputs["signal"]).all()


def test_npz_empty_arrays_are_refused(tmp_path):
    np.savez(tmp_path / "empty.npz", x=np.zeros((0, 8, 8)), y=np.zeros(0, dtype=int))
    with pytest.raises(UserError, match=r"^array 'x' in '.*empty\.npz' has shape \(0, 8, 8\): it holds no items$"):
        load_npz(path=str(tmp_path / "empty.npz"))
    np.savez(tmp_path / "flat.npz", feats=np.zeros((10, 0)))
    with pytest.raises(UserError, match=r"array 'feats' in '.*flat\.npz' has shape \(10, 0\): its items hold no"):
        load_npz(path=str(tmp_path / "flat.npz"), x="feats", y=None)
    np.savez(tmp_path / "scalar.npz", x=np.float64(1.0), y=np.arange(3))
    with pytest.raises(UserError, match=r"array 'x' in '.*scalar\.npz' has shape \(\); a signal array"):
        load_npz(path=str(tmp_path / "scalar.npz"))


def test_npz_test_split_must_match_the_train_split(tmp_path):
    rng = np.random.default_rng(0)
    y = np.arange(40) % 2
    np.savez(tmp_path / "d.npz", x=rng.random((40, 16)), y=y, xt=rng.random((10, 12)), yt=np.arange(10) % 2,
             short=np.arange(7) % 2, names=np.array(["a", "b"] * 5), imgs=rng.random((10, 1, 4, 4)))
    for split in ("train", "test"):
        with pytest.raises(UserError, match=r"^arrays 'x' and 'xt' in '.*d\.npz' hold items of different shapes, "
                                            r"\(16,\) and \(12,\) \(array shapes \(40, 16\) and \(10, 12\)\)"):
            load_npz(path=str(tmp_path / "d.npz"), split=split, x_test="xt", y_test="yt")
        with pytest.raises(UserError, match=r"arrays 'x' and 'imgs' .* \(16,\) and \(1, 4, 4\)"):
            load_npz(path=str(tmp_path / "d.npz"), split=split, x_test="imgs")
        with pytest.raises(UserError, match=r"labels 'short' in '.*d\.npz' have shape \(7,\) but the inputs hold 10"):
            load_npz(path=str(tmp_path / "d.npz"), split=split, x="xt", y="yt", x_test="xt", y_test="short")
        with pytest.raises(UserError, match=r"labels 'yt' and 'names' in '.*d\.npz' must both be strings or both "
                                            r"numbers, got dtypes int64 and <U1"):
            load_npz(path=str(tmp_path / "d.npz"), split=split, x_test="xt", y_test="names", x="xt", y="yt")
    ok = load_npz(path=str(tmp_path / "d.npz"), split="test", x="xt", y="yt", x_test="xt", y_test="yt")
    assert len(ok) == 10 and ok.num_classes == 2


def test_npz_and_image_errors_from_the_command_line(tmp_path):
    """``contrastlab train`` on each fault above: exit 2 and one ``contrastlab: error:`` line naming it."""
    import os
    import subprocess
    import sys

    (tmp_path / "base.yaml").write_text("data: {name: digits}\nviews: {name: simclr}\nobjective: {name: nt_xent}\n"
                                        "batch_size: 8\nsteps: 1\nthreads: 1\ndevice: cpu\n")
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "big.npz", x=np.full((40, 16), 1e300), y=np.arange(40) % 2)
    np.savez(tmp_path / "empty.npz", x=np.zeros((0, 8, 8)), y=np.zeros(0, dtype=int))
    np.savez(tmp_path / "split.npz", x=rng.random((40, 16)), y=np.arange(40) % 2, x_test=rng.random((10, 12)),
             y_test=np.arange(10) % 2)
    root = _folder(tmp_path / "imgs")
    _claim_size(root / "cat" / "1.png", 30000, 30000)
    cases = {
        ("data.name=npz", "data.options.path=big.npz"): ("big.npz", "'x'", "beyond float32's range", "(0, 0)"),
        ("data.name=npz", "data.options.path=empty.npz"): ("empty.npz", "'x'", "no items"),
        ("data.name=npz", "data.options={path: split.npz, x_test: x_test, y_test: y_test}"):
            ("split.npz", "'x' and 'x_test'", "(40, 16) and (10, 12)"),
        ("data.name=image_folder", "data.options.root=imgs"): ("cat/1.png", "30000x30000"),
    }
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    for overrides, expect in cases.items():
        args = ["train", "base.yaml", "--out", "new", *(a for o in overrides for a in ("--set", o))]
        r = subprocess.run([sys.executable, "-m", "contrastlab", *args], cwd=tmp_path, env=env, capture_output=True,
                           text=True, timeout=120)
        lines = [line for line in r.stderr.splitlines() if line.strip()]
        assert r.returncode == 2 and "Traceback" not in r.stderr + r.stdout, r.stderr[-2000:]
        assert len(lines) == 1 and lines[0].startswith("contrastlab: error: "), r.stderr
        assert all(text in lines[0] for text in expect), (expect, lines[0])
        assert not (tmp_path / "new").exists()
