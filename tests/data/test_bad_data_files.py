"""Bad data files, each built from a few bytes: every one is refused in one line that names the file (and the
member, line or value), as a UserError or ValueError, never another exception; the good cases a fix touched
read as a user expects."""

from __future__ import annotations

import io
import json
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from contrastlab import limits as _limits
from contrastlab.data._images import read_image
from contrastlab.data.arrays import load_npz
from contrastlab.data.audio import parse_wav, wav_length
from contrastlab.data.check import check_source
from contrastlab.data.factorcl_synthetic import FactorCLSynthetic
from contrastlab.data.manifest import load_manifest, read_manifest
from contrastlab.data.pack import pack
from contrastlab.data.shapes import ShapesDataset
from contrastlab.data.shards import load_shards, read_index
from contrastlab.data.user import load_image_folder
from contrastlab.errors import UserError


def _one_line(err: pytest.ExceptionInfo, *parts: str) -> str:
    """The error's message, checked to be one line holding every part."""
    text = str(err.value)
    assert "\n" not in text, text
    for part in parts:
        assert part in text, (part, text)
    return text


def _png(path: Path, value: int = 90) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((6, 6, 3), value, np.uint8)).save(path)


def _wav_bytes(*, channels: int = 1, rate: int = 16000, bits: int = 16, kind: int = 1, frames: int = 100) -> bytes:
    body = bytes(2 * channels * frames)
    fmt = struct.pack("<HHIIHH", kind, channels, rate, (rate * 2 * channels) % 2**32, 2 * channels, bits)
    return (b"RIFF" + struct.pack("<I", 36 + len(body)) + b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt
            + b"data" + struct.pack("<I", len(body)) + body)


# -- 1. images deeper than 8 bits --------------------------------------------------------------------------

def test_a_16_bit_png_reads_from_its_full_range(tmp_path):
    values = np.array([[0, 32768], [65535, 65535]], np.uint16)
    Image.fromarray(values).save(tmp_path / "a.png")
    assert Image.open(tmp_path / "a.png").mode == "I;16"
    x = read_image(tmp_path / "a.png", channels=1)
    assert x.dtype == np.float32 and x.shape == (1, 2, 2)
    assert x[0, 1, 0] == 1.0 and x[0, 0, 0] == 0.0  # 65535 is white, not clipped 255 of 65535
    assert abs(x[0, 0, 1] - 0.5) < 1 / 255


def test_a_big_endian_16_bit_tiff_reads_from_its_full_range(tmp_path):
    img = Image.new("I;16B", (2, 2))
    img.frombytes(np.array([[65535, 0], [257, 65535]], ">u2").tobytes())
    img.save(tmp_path / "b.tif")
    assert Image.open(tmp_path / "b.tif").mode == "I;16B"
    x = read_image(tmp_path / "b.tif", channels=1)[0]
    assert x[0, 0] == 1.0 and x[0, 1] == 0.0 and abs(x[1, 0] - 1 / 255) < 1e-6


def test_a_float_tiff_in_0_1_reads_as_it_is(tmp_path):
    Image.fromarray(np.array([[0.0, 0.25], [1.0, 0.5]], np.float32)).save(tmp_path / "f.tif")
    x = read_image(tmp_path / "f.tif", channels=3)
    assert x.shape == (3, 2, 2)
    np.testing.assert_allclose(x[0], [[0.0, 0.25], [1.0, 0.5]], atol=1 / 255)


@pytest.mark.parametrize("values, shown", [(np.full((3, 3), 3.5, np.float32), "[3.5, 3.5]"),
                                           (np.array([[-0.5, 0.2]], np.float32), "[-0.5, 0.2]"),
                                           (np.array([[np.nan, 0.2]], np.float32), "nan")])
def test_a_float_tiff_outside_0_1_is_refused_naming_the_file_and_the_range(tmp_path, values, shown):
    Image.fromarray(values).save(tmp_path / "f.tif")
    with pytest.raises(UserError) as err:
        read_image(tmp_path / "f.tif")
    _one_line(err, "f.tif", "Pillow mode F", shown, "must lie in [0, 1]")


def test_a_32_bit_integer_image_is_refused_naming_the_file_and_the_mode(tmp_path):
    Image.fromarray(np.full((3, 3), 70000, np.int32)).save(tmp_path / "i.tif")
    assert Image.open(tmp_path / "i.tif").mode == "I"
    with pytest.raises(UserError) as err:
        read_image(tmp_path / "i.tif")
    _one_line(err, "i.tif", "32-bit integer image (Pillow mode I)")


def test_an_image_folder_of_16_bit_pngs_gives_full_range_items(tmp_path):
    for i, value in enumerate((0, 65535, 0, 65535, 65535)):
        Image.fromarray(np.full((4, 4), value, np.uint16)).save(tmp_path / f"{i}.png")
    ds = load_image_folder(root=str(tmp_path), test_fraction=0.2)
    images = ds.get(torch.arange(len(ds))).inputs["image"]
    assert images.dtype == torch.uint8 and set(images.unique().tolist()) <= {0, 255} and images.max() == 255


# -- 2. damaged zip archives (.npz) --------------------------------------------------------------------------

def _flip(path: Path, member: str, after: int) -> None:
    """Flip one byte ``after`` bytes past the member's name in its local header (inside its data)."""
    data = bytearray(path.read_bytes())
    data[data.find(member.encode()) + after] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.fixture
def arrays():
    return {"x": np.random.default_rng(0).random((20, 16)), "y": np.arange(20) % 2}


@pytest.mark.parametrize("member", ["x", "y"])
def test_a_stored_member_with_a_bad_crc_is_refused_naming_the_file_and_member(tmp_path, arrays, member):
    f = tmp_path / "d.npz"
    np.savez(f, **arrays)
    _flip(f, f"{member}.npy", 200)  # past the .npy header: only the CRC-32 tells
    with pytest.raises(UserError) as err:
        load_npz(path=str(f))
    _one_line(err, f"member '{member}'", "d.npz", "is damaged", "CRC-32")


def test_a_large_mapped_member_with_a_bad_crc_is_refused(tmp_path, monkeypatch):
    from contrastlab.data import arrays as arrays_module

    monkeypatch.setattr(arrays_module, "CHUNK_BYTES", 4096)  # the check reads in several chunks
    monkeypatch.setattr(arrays_module, "IN_MEMORY_BYTES", 0)  # memory-mapped, never read through zipfile
    f = tmp_path / "big.npz"
    np.savez(f, x=np.zeros((100, 64), np.uint8))
    ds = load_npz(path=str(f), y=None)
    assert not ds.in_memory
    _flip(f, "x.npy", 5000)
    with pytest.raises(UserError) as err:
        load_npz(path=str(f), y=None)
    _one_line(err, "member 'x'", "big.npz", "CRC-32")


def test_a_damaged_compressed_member_is_refused_naming_the_file_and_member(tmp_path, arrays):
    f = tmp_path / "c.npz"
    np.savez_compressed(f, **arrays)
    _flip(f, "x.npy", 100)
    with pytest.raises(UserError) as err:
        load_npz(path=str(f))
    _one_line(err, "member 'x'", "c.npz", "is damaged")


@pytest.mark.parametrize("compression", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
def test_a_member_that_is_not_npy_is_refused_naming_it(tmp_path, compression):
    f = tmp_path / "n.npz"
    with zipfile.ZipFile(f, "w", compression=compression) as z:
        z.writestr("x.npy", b"this is not an array at all")
    with pytest.raises(UserError) as err:
        load_npz(path=str(f), y=None)
    _one_line(err, "'x'", "n.npz", "not a")


def test_an_object_member_is_refused_and_pickle_stays_off(tmp_path, monkeypatch):
    f = tmp_path / "o.npz"
    buf = io.BytesIO()
    np.save(buf, np.array([{"a": 1}] * 20, dtype=object), allow_pickle=True)
    with zipfile.ZipFile(f, "w") as z:
        z.writestr("x.npy", buf.getvalue())
    calls = []
    real = np.load
    monkeypatch.setattr(np, "load", lambda *a, **k: calls.append(k.get("allow_pickle")) or real(*a, **k))
    with pytest.raises(UserError) as err:
        load_npz(path=str(f), y=None)
    _one_line(err, "'x'", "o.npz", "pickle")
    assert calls and not any(calls)


@pytest.mark.parametrize("content", [b"hello", b"PK\x03\x04" + bytes(10), "half"])
def test_a_truncated_or_foreign_npz_is_refused_naming_it(tmp_path, arrays, content):
    f = tmp_path / "t.npz"
    if content == "half":
        np.savez(f, **arrays)
        content = f.read_bytes()[: f.stat().st_size // 2]
    f.write_bytes(content)
    with pytest.raises(UserError) as err:
        load_npz(path=str(f))
    _one_line(err, "t.npz", "not an .npz archive")


def test_a_npy_label_file_that_is_not_npy_is_refused_naming_it(tmp_path):
    np.save(tmp_path / "x.npy", np.random.default_rng(0).random((10, 4)))
    (tmp_path / "y.npy").write_text("0,1,0,1")
    with pytest.raises(UserError) as err:
        load_npz(path=str(tmp_path / "x.npy"))
    _one_line(err, "y.npy", "is not a .npy file")


def test_data_check_lists_damaged_members_and_refuses_foreign_files(tmp_path, arrays):
    f = tmp_path / "d.npz"
    np.savez(f, **arrays)
    _flip(f, "y.npy", 200)
    bad = tmp_path / "n.npz"
    with zipfile.ZipFile(bad, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("x.npy", b"not an array")
    assert [u["item"] for u in check_source(f, progress=False)["unreadable"]] == ["y"]
    assert check_source(bad, progress=False)["unreadable"] == [{"item": "x", "error": "not a .npy array"}]
    for name, text in (("t.npz", "not an .npz archive"), ("t.npy", "not a .npy file")):
        (tmp_path / name).write_bytes(b"hello")
        with pytest.raises(UserError) as err:
            check_source(tmp_path / name, progress=False)
        _one_line(err, name, text)


# -- 3. WAV headers ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("cut", [0, 4, 11, 12, 19, 20, 30, 35])
def test_a_wav_header_cut_short_is_a_value_error(tmp_path, cut):
    data = _wav_bytes()[:cut]
    (tmp_path / "a.wav").write_bytes(data)
    for read in (lambda: parse_wav(data), lambda: wav_length(tmp_path / "a.wav")):
        with pytest.raises(ValueError) as err:
            read()
        _one_line(err)


@pytest.mark.parametrize("fields, text", [({"channels": 0}, "0 channels"), ({"rate": 0}, "at 0 Hz"),
                                          ({"rate": 1}, "1 Hz is outside [1000, 768000]"),
                                          ({"rate": 2**32 - 1}, "4294967295 Hz is outside"),
                                          ({"bits": 8}, "with 8 bits"), ({"kind": 3, "bits": 32}, "format 3")])
def test_a_wav_header_with_impossible_fields_is_a_value_error(tmp_path, fields, text):
    data = _wav_bytes(**fields)
    with pytest.raises(ValueError) as err:
        parse_wav(data)
    _one_line(err, text)


def test_a_manifest_names_the_line_and_file_of_a_bad_wav(tmp_path):
    for i in range(5):
        _png(tmp_path / f"{i}.png")
        (tmp_path / f"{i}.wav").write_bytes(_wav_bytes(channels=0 if i == 2 else 1))
    (tmp_path / "m.csv").write_text("image,audio\n" + "".join(f"{i}.png,{i}.wav\n" for i in range(5)))
    with pytest.raises(UserError) as err:
        load_manifest(path=str(tmp_path / "m.csv"))
    _one_line(err, "m.csv line 4", "2.wav", "0 channels")


# -- 4. manifests and indexes that the parsers choke on ------------------------------------------------------

def test_a_jsonl_line_nested_100k_deep_is_refused_naming_the_line(tmp_path):
    f = tmp_path / "m.jsonl"
    f.write_text('{"image": "a.png", "caption": "x"}\n' + "[" * 100_000 + "]" * 100_000 + "\n")
    with pytest.raises(UserError) as err:
        read_manifest(f)
    _one_line(err, "m.jsonl line 2", "nested too deeply")


def test_a_jsonl_number_too_long_to_read_is_refused_naming_the_line(tmp_path):
    f = tmp_path / "m.jsonl"
    f.write_text('{"image": "a.png", "caption": ' + "9" * 5000 + "}\n")
    with pytest.raises(UserError) as err:
        read_manifest(f)
    _one_line(err, "m.jsonl line 1", "not valid JSON")


def test_a_csv_field_beyond_the_csv_limit_is_refused_naming_the_line(tmp_path):
    f = tmp_path / "m.csv"
    f.write_text('image,caption\na.png,fine\nb.png,"' + "x" * 200_000 + '"\n')
    with pytest.raises(UserError) as err:
        read_manifest(f)
    _one_line(err, "m.csv line 3", "longer than 131072 characters")


@pytest.mark.parametrize("name", ["m.csv", "m.jsonl"])
def test_non_utf8_bytes_are_refused_naming_the_line(tmp_path, name):
    f = tmp_path / name
    good = b"image,caption\na.png,ok\n" if name == "m.csv" else b'{"image": "a.png", "caption": "ok"}\n'
    bad = b"b.png,caf\xe9\n" if name == "m.csv" else b'{"image": "b.png", "caption": "caf\xe9"}\n'
    f.write_bytes(good + bad)
    with pytest.raises(UserError) as err:
        read_manifest(f)
    _one_line(err, f"{name} line {3 if name == 'm.csv' else 2}", "not UTF-8", "0xe9")


def test_a_csv_with_a_byte_order_mark_reads_its_header(tmp_path):
    f = tmp_path / "m.csv"
    f.write_bytes(b"\xef\xbb\xbfimage,caption\na.png,a red dot\n")
    assert read_manifest(f) == [(2, {"image": "a.png", "caption": "a red dot"})]


def test_a_jsonl_caption_may_hold_a_line_separator_character(tmp_path):
    f = tmp_path / "m.jsonl"
    f.write_text(json.dumps({"image": "a.png", "caption": "one\u2028two"}, ensure_ascii=False) + "\n",
                 encoding="utf-8")
    assert read_manifest(f) == [(1, {"image": "a.png", "caption": "one\u2028two"})]


def test_a_shard_index_nested_too_deep_is_refused_naming_it(tmp_path):
    (tmp_path / "shards.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(UserError) as err:
        read_index(tmp_path)
    _one_line(err, "shards.json", "nests arrays or objects too deeply")


# -- 5. sizes checked before allocating ----------------------------------------------------------------------

def test_check_fits_in_memory_names_the_key_and_sizes():
    _limits.check_fits_in_memory("data.options.n_items", 2**30, value=5, items=5, available=2**31)
    with pytest.raises(UserError) as err:
        _limits.check_fits_in_memory("data.options.image_size", 25 * 2**30, value=100000000, items=2000,
                                     available=12 * 2**30)
    assert str(err.value) == ("data.options.image_size: 100000000 would need 25.0 GiB for 2000 items; "
                              "at most 12.0 GiB is available")


def test_available_memory_reads_meminfo_and_a_cgroup_limit(tmp_path, monkeypatch):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       16000000 kB\nMemAvailable:    8000000 kB\n")
    assert _limits._meminfo_available(str(meminfo)) == 8_000_000 * 1024
    assert _limits._meminfo_available(str(tmp_path / "none")) is None
    (tmp_path / "memory.max").write_text("max\n")
    assert _limits._cgroup_available(str(tmp_path)) is None
    (tmp_path / "memory.max").write_text("1000\n")
    (tmp_path / "memory.current").write_text("400\n")
    assert _limits._cgroup_available(str(tmp_path)) == 600
    monkeypatch.setattr(_limits, "_meminfo_available", lambda: 5000)
    monkeypatch.setattr(_limits, "_cgroup_available", lambda: 600)
    assert _limits.available_memory() == 600  # the smaller of the two
    monkeypatch.setattr(_limits, "_cgroup_available", lambda: None)
    assert _limits.available_memory() == 5000
    monkeypatch.setattr(_limits, "_meminfo_available", lambda: None)
    assert _limits.available_memory() is None
    _limits.check_fits_in_memory("k", 10**30, value=1)  # unknown memory: no check


@pytest.fixture
def little_memory(monkeypatch):
    """A machine with 1 GiB available."""
    monkeypatch.setattr(_limits, "available_memory", lambda: 2**30)


def test_shapes_with_speech_beyond_memory_is_refused_before_synthesis(little_memory, monkeypatch):
    from contrastlab.data import speech

    monkeypatch.setattr(speech, "espeak_executable", lambda: pytest.fail("synthesis started"))
    with pytest.raises(UserError) as err:
        ShapesDataset(n_items=100_000, image_size=8, with_speech=True)
    _one_line(err, "data.options.n_items: 100000 would need", "for 100000 items", "at most 1.0 GiB is available")
    with pytest.raises(UserError) as err:
        ShapesDataset(n_items=10, n_test=100_000, split="test", with_speech=True)
    _one_line(err, "data.options.n_test: 100000")
    assert len(ShapesDataset(n_items=1000, image_size=8, with_captions=True)) == 1000  # well within


def test_shapes_bounds_its_options():
    for options, text in (({"image_size": 100_000_000}, "image_size must be an int in [8, 1024]"),
                          ({"n_items": 10**12}, "n_items must be an int in [1, 10000000]"),
                          ({"workers": 10**9}, "workers must be an int in [1, 1024]")):
        with pytest.raises(ValueError, match=text.replace("[", r"\[").replace("]", r"\]")):
            ShapesDataset(**options)


def test_factorcl_beyond_memory_is_refused_naming_the_larger_part(little_memory):
    with pytest.raises(UserError) as err:
        FactorCLSynthetic(n_samples=10_000_000, input_dim=100_000)
    _one_line(err, "data.options.n_samples: 10000000 (with input_dim 100000) would need", "GiB for 10000000 items")
    with pytest.raises(UserError) as err:
        FactorCLSynthetic(n_samples=2, shared_dim=100_000, unique_dims=[100_000, 100_000], input_dim=100_000)
    _one_line(err, "data.options.input_dim: 100000 (with shared_dim 100000")
    assert len(FactorCLSynthetic(n_samples=100)) == 80


def test_a_shuffle_buffer_beyond_memory_is_refused(tmp_path, monkeypatch):
    src = tmp_path / "src"
    for i in range(6):
        _png(src / f"{i}.png", value=10 * i)
    pack(src, tmp_path / "p", shard_items=2, test_fraction=0, progress=False)
    assert load_shards(root=str(tmp_path / "p"), shuffle_buffer=10**9).num_items == 6  # holds at most 6 items
    monkeypatch.setattr(_limits, "available_memory", lambda: 100)
    with pytest.raises(UserError) as err:
        load_shards(root=str(tmp_path / "p"), shuffle_buffer=10**9)
    _one_line(err, "data.options.shuffle_buffer: 1000000000 would need", "for 6 items")
    assert load_shards(root=str(tmp_path / "p"), shuffle_buffer=0).num_items == 6  # no buffer, no check
