"""Manifests read on demand: captions tokenised at load, images and audio decoded per item."""

import json
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from contrastlab.data import manifest as manifest_module
from contrastlab.data._images import decode_image
from contrastlab.data.audio import MelConfig, parse_wav, wav_length
from contrastlab.data.manifest import frame_count, load_manifest, read_audio
from contrastlab.errors import UserError


def _png(path: Path, value: int, h: int = 6, w: int = 8) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = np.zeros((h, w, 3), np.uint8)
    img[..., 0], img[..., 1] = value, np.arange(w, dtype=np.uint8)[None] * 7
    Image.fromarray(img).save(path)


def _wav(path: Path, seconds: float, rate: int = 16000, channels: int = 1) -> None:
    t = np.arange(int(seconds * rate)) / rate
    s = np.repeat((0.5 * np.sin(2 * np.pi * 440 * t) * 32767).astype("<i2")[:, None], channels, axis=1).tobytes()
    fmt = struct.pack("<HHIIHH", 1, channels, rate, 2 * rate * channels, 2 * channels, 16)
    path.write_bytes(b"RIFF" + struct.pack("<I", 36 + len(s)) + b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt
                     + b"data" + struct.pack("<I", len(s)) + s)


@pytest.fixture
def captions(tmp_path):
    """Ten images, each with a distinct red value, a caption naming it and a parity label."""
    lines = ["image,caption,label"]
    for i in range(10):
        _png(tmp_path / "img" / f"{i}.png", value=20 * i)
        lines.append(f"img/{i}.png,a picture number {i}{' with more words' if i == 7 else ''},"
                     f"{'odd' if i % 2 else 'even'}")
    (tmp_path / "m.csv").write_text("\n".join(lines) + "\n")
    return tmp_path / "m.csv"


def test_captions_images_and_labels_equal_an_eager_read(captions):
    ds = load_manifest(path=str(captions))
    assert len(ds) == 8 and ds.classes == ("even", "odd") and ds.num_classes == 2
    assert ds.modalities == {"image": (3, 6, 8), "text": (7,)}  # the longest caption of either split
    batch = ds.get(torch.arange(len(ds)))
    assert batch.inputs["image"].dtype == torch.uint8 and batch.inputs["text"].dtype == torch.int64
    assert batch.skipped == 0 and batch.index.tolist() == list(range(8))
    for k, (img, ids, n, label) in enumerate(zip(batch.inputs["image"], batch.inputs["text"],
                                                 batch.lengths["text"], batch.labels)):
        i = int(img[0, 0, 0]) // 20
        expect = decode_image(captions.parent / "img" / f"{i}.png")
        assert torch.equal(img, torch.from_numpy(expect))
        text = f"a picture number {i}{' with more words' if i == 7 else ''}"
        assert ds.vocabulary.decode(ids) == text and int(n) == len(text.split()) and int(label) == i % 2
        assert ds.describe(k) == f"m.csv line {i + 2}"
    assert (batch.inputs["text"][torch.arange(7) >= batch.lengths["text"][:, None]] == 0).all()


def test_splits_are_disjoint_and_cover_every_line(captions):
    train, test = load_manifest(path=str(captions)), load_manifest(path=str(captions), split="test")
    assert set(train.lines) & set(test.lines) == set()
    assert sorted([*train.lines, *test.lines]) == list(range(2, 12))
    assert train.vocabulary.tokens == test.vocabulary.tokens and train.modalities == test.modalities
    rows = [json.dumps({"image": f"img/{i}.png", "caption": "a dot", "split": "test" if i in (2, 5) else "train"})
            for i in range(10)]
    (captions.parent / "s.jsonl").write_text("\n".join(rows) + "\n")
    given = load_manifest(path=str(captions.parent / "s.jsonl"), split="test")
    assert given.lines.tolist() == [3, 6] and given.labels is None and given.num_classes is None


def test_nothing_is_decoded_at_load_when_the_size_is_given(captions, monkeypatch):
    calls = []
    real = manifest_module.decode_image
    monkeypatch.setattr(manifest_module, "decode_image", lambda *a, **k: calls.append(a) or real(*a, **k))
    ds = load_manifest(path=str(captions), size=(3, 4), channels=1)
    assert calls == [] and ds.modalities["image"] == (1, 3, 4)
    assert ds.get(torch.tensor([5, 0])).inputs["image"].shape == (2, 1, 3, 4) and len(calls) == 2
    load_manifest(path=str(captions))  # without a size, only the first image is decoded (it sets the size)
    assert len(calls) == 3


def test_audio_is_decoded_per_item_and_padded_to_the_longest_header(tmp_path, monkeypatch):
    seconds = [0.3, 0.5, 0.45, 0.9]
    rows = []
    for i, s in enumerate(seconds):
        _png(tmp_path / f"{i}.png", value=i)
        _wav(tmp_path / f"{i}.wav", s, rate=8000 if i == 2 else 16000, channels=2 if i == 1 else 1)
        rows.append(json.dumps({"image": f"{i}.png", "audio": f"{i}.wav", "split": "test" if i == 3 else "train"}))
    (tmp_path / "a.jsonl").write_text("\n".join(rows) + "\n")
    calls = []
    monkeypatch.setattr(manifest_module, "read_audio",
                        lambda *a, **k: calls.append(a) or read_audio(*a, **k))
    train = load_manifest(path=str(tmp_path / "a.jsonl"))
    assert calls == [] and train.modalities["audio"] == (40, frame_count(8000, 16000, MelConfig()))  # 0.5 s: the longest
    batch = train.get(torch.arange(3))
    config = MelConfig()
    for k in range(3):
        ref = read_audio(tmp_path / f"{k}.wav", config, "")
        n = int(batch.lengths["audio"][k])
        assert n == ref.shape[1] and np.allclose(batch.inputs["audio"][k, :, :n].numpy(), ref)
        assert (batch.inputs["audio"][k, :, n:] == config.floor).all()
    assert int(batch.lengths["audio"][1]) == batch.inputs["audio"].shape[2]
    cropped = load_manifest(path=str(tmp_path / "a.jsonl"), split="test", max_seconds=0.25)
    one = cropped.get(torch.tensor([0]))
    frames = frame_count(4000, 16000, config)
    assert cropped.modalities["audio"] == (40, frames) and one.lengths["audio"].tolist() == [frames]
    assert np.allclose(one.inputs["audio"][0].numpy(), read_audio(tmp_path / "3.wav", config, "")[:, :frames])
    with pytest.raises(ValueError, match="max_seconds must be a positive number"):
        load_manifest(path=str(tmp_path / "a.jsonl"), max_seconds=0)


@pytest.mark.parametrize("rate, channels", [(16000, 1), (8000, 2), (22050, 1), (44100, 1)])
@pytest.mark.parametrize("seconds", [0.01, 0.3])
def test_wav_header_gives_the_samples_and_frames_of_a_full_read(tmp_path, rate, channels, seconds):
    _wav(tmp_path / "a.wav", seconds, rate=rate, channels=channels)
    x, r = parse_wav((tmp_path / "a.wav").read_bytes())
    assert wav_length(tmp_path / "a.wav") == (len(x), r)
    from contrastlab.data.audio import log_mel, resample

    config = MelConfig()
    assert frame_count(len(x), r, config) == log_mel(resample(x, r, config.sample_rate), config).shape[1]


def test_errors_name_the_line_and_file(tmp_path):
    for i in range(4):
        _png(tmp_path / f"{i}.png", value=i)
    (tmp_path / "m.csv").write_text("image,caption\n" + "".join(f"{i}.png,dot {i}\n" for i in range(4))
                                    + "missing.png,a lost dot\n")
    for split in ("train", "test"):  # every line is checked, whatever the split
        with pytest.raises(UserError, match=r"^m\.csv line 6: image file '.*missing\.png' not found$"):
            load_manifest(path=str(tmp_path / "m.csv"), split=split)
    (tmp_path / "wav.csv").write_text("image,audio\n0.png,0.png\n1.png,0.png\n")
    with pytest.raises(UserError, match=r"^wav\.csv line 2: cannot read audio '.*0\.png': not a RIFF/WAVE file$"):
        load_manifest(path=str(tmp_path / "wav.csv"), split="test")
    _wav(tmp_path / "empty.wav", 0.0)
    (tmp_path / "empty.csv").write_text("image,audio\n0.png,empty.wav\n")
    with pytest.raises(UserError, match=r"^empty\.csv line 2: audio file '.*empty\.wav' holds no samples$"):
        load_manifest(path=str(tmp_path / "empty.csv"))
    _png(tmp_path / "big.png", value=0, h=9, w=9)
    (tmp_path / "sizes.csv").write_text("image,caption,split\n0.png,a,train\nbig.png,b,train\n")
    ds = load_manifest(path=str(tmp_path / "sizes.csv"))
    with pytest.raises(UserError, match=r"^sizes\.csv line 3: image has shape \(3, 9, 9\).* \(3, 6, 8\) .*size="):
        ds.get(torch.tensor([0, 1]))
    assert load_manifest(path=str(tmp_path / "sizes.csv"), size=4).get(torch.tensor([0, 1])).inputs["image"].shape \
        == (2, 3, 4, 4)
    with pytest.raises(ValueError, match="on_error must be 'fail' or 'skip', got 'ignore'"):
        load_manifest(path=str(tmp_path / "m.csv"), on_error="ignore")


def test_unreadable_items_fail_naming_the_line_or_are_skipped_and_counted(tmp_path):
    for i in range(6):
        _png(tmp_path / f"{i}.png", value=10 * i)
    (tmp_path / "2.png").write_bytes(b"not a png")
    (tmp_path / "m.csv").write_text("image,caption,split\n" + "".join(f"{i}.png,dot {i},train\n" for i in range(6))
                                    + "gone.png,a lost dot,train\n")
    with pytest.raises(UserError, match="line 8: image file .*gone.png' not found"):
        load_manifest(path=str(tmp_path / "m.csv"))
    ds = load_manifest(path=str(tmp_path / "m.csv"), on_error="skip")
    assert len(ds) == 7
    batch = ds.get(torch.tensor([1, 2, 6]))
    assert batch.skipped == 2 and batch.index.tolist() == [1, 3, 0]  # 2 -> 3; the last line wraps to the first
    assert [int(v) for v in batch.inputs["image"][:, 0, 0, 0]] == [10, 30, 0]
    assert ds.vocabulary.decode(batch.inputs["text"][1]) == "dot 3"
    strict = load_manifest(path=str(tmp_path / "m.csv"), on_error="skip")
    strict.on_error = "fail"
    with pytest.raises(UserError, match=r"^m\.csv line 4: cannot read image '.*2\.png'"):
        strict.get(torch.tensor([2]))


def test_a_pickled_manifest_reads_the_same_items(captions):
    ds = load_manifest(path=str(captions), size=4)
    copy = pickle.loads(pickle.dumps(ds))
    a, b = ds.get(torch.tensor([3, 1])), copy.get(torch.tensor([3, 1]))
    assert all(torch.equal(a.inputs[k], b.inputs[k]) for k in a.inputs) and torch.equal(a.labels, b.labels)
    assert copy.vocabulary.tokens == ds.vocabulary.tokens
