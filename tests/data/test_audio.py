import math
import struct

import numpy as np
import pytest
import torch

from contrastlab.data.audio import (MelConfig, hz_to_mel, log_mel, mel_filterbank, mel_to_hz, parse_wav,
                                    power_spectrogram, resample, trim_silence, wav_length)


def _wav(samples: np.ndarray, rate: int, channels: int = 1, data_size: int | None = None, bits: int = 16) -> bytes:
    body = samples.astype("<i2").tobytes()
    fmt = struct.pack("<HHIIHH", 1, channels, rate, rate * 2 * channels, 2 * channels, bits)
    size = len(body) if data_size is None else data_size
    return (b"RIFF" + struct.pack("<I", 36 + len(body)) + b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt
            + b"LIST" + struct.pack("<I", 3) + b"abc\x00" + b"data" + struct.pack("<I", size) + body)


def test_parse_wav_ignores_a_bogus_data_size_and_skips_odd_chunks():
    s = np.array([0, 1000, -32768, 32767, 5], dtype=np.int16)
    for size in (None, 0xFFFFFFFF, 0x7FFFFFFF):
        x, rate = parse_wav(_wav(s, 22050, data_size=size))
        assert rate == 22050 and np.allclose(x, s / 32768.0)


def test_parse_wav_mixes_stereo_and_rejects_what_it_cannot_read():
    stereo = np.array([100, 300, -200, 200], dtype=np.int16)
    x, _ = parse_wav(_wav(stereo, 8000, channels=2))
    assert np.allclose(x, [200 / 32768.0, 0.0])
    with pytest.raises(ValueError, match="RIFF"):
        parse_wav(b"not a wav file at all")
    with pytest.raises(ValueError, match="8 bits"):
        parse_wav(_wav(stereo, 8000, bits=8))


_RIFF = b"RIFF" + struct.pack("<I", 100) + b"WAVE"
_FMT = struct.pack("<HHIIHH", 1, 1, 8000, 16000, 2, 16)


@pytest.mark.parametrize("data, match", [
    (_RIFF + b"fmt ", "ends inside a chunk header"),
    (_RIFF + b"fmt " + struct.pack("<I", 16) + _FMT[:6], "fmt chunk is truncated"),
    (_RIFF + b"fmt " + struct.pack("<I", 16), "fmt chunk is truncated"),
    (_RIFF + b"fmt " + struct.pack("<I", 14) + _FMT[:14] + b"data" + struct.pack("<I", 2) + b"\0\0",
     "fmt chunk is 14 bytes"),
    (_RIFF + b"fmt " + struct.pack("<I", 16) + struct.pack("<HHIIHH", 1, 0, 8000, 0, 0, 16)
     + b"data" + struct.pack("<I", 2) + b"\0\0", "0 channels"),
    (_RIFF + b"fmt " + struct.pack("<I", 16) + struct.pack("<HHIIHH", 1, 1, 0, 0, 2, 16)
     + b"data" + struct.pack("<I", 2) + b"\0\0", "at 0 Hz"),
    (_RIFF + b"fmt " + struct.pack("<I", 16) + _FMT + b"LIST" + struct.pack("<I", 1000) + b"abc", "no data chunk"),
    (_RIFF + b"data" + struct.pack("<I", 2) + b"\0\0", "data chunk before its fmt chunk"),
    (_RIFF[:10], "RIFF"),
])
def test_a_cut_or_odd_header_is_a_value_error_saying_what_is_wrong(tmp_path, data, match):
    with pytest.raises(ValueError, match=match):
        parse_wav(data)
    (tmp_path / "a.wav").write_bytes(data)
    with pytest.raises(ValueError, match=match):
        wav_length(tmp_path / "a.wav")


def test_a_data_chunk_running_past_the_end_gives_the_whole_frames_there(tmp_path):
    stereo_fmt = struct.pack("<HHIIHH", 1, 2, 8000, 32000, 4, 16)
    samples = struct.pack("<5h", 100, 300, -200, 200, 7)  # two stereo frames and half of a third
    for fmt, body, expected in ((stereo_fmt, samples, [200 / 32768.0, 0.0]), (_FMT, b"\0", [])):
        data = _RIFF + b"fmt " + struct.pack("<I", 16) + fmt + b"data" + struct.pack("<I", 1000) + body
        x, rate = parse_wav(data)
        assert rate == 8000 and x.tolist() == expected
        (tmp_path / "a.wav").write_bytes(data)
        assert wav_length(tmp_path / "a.wav") == (len(expected), 8000)


def test_power_spectrogram_matches_torch_stft():
    rng = np.random.default_rng(0)
    x = rng.standard_normal(4000)
    ours = power_spectrogram(x, win_length=400, hop_length=160, n_fft=512)
    # torch frames span n_fft samples with the window centred in them; padding by (512 - 400) / 2
    # on both sides puts torch's window t exactly on our frame t, samples [160 t, 160 t + 400).
    padded = torch.nn.functional.pad(torch.from_numpy(x), (56, 56))
    ref = torch.stft(padded, n_fft=512, hop_length=160, win_length=400,
                     window=torch.hann_window(400, periodic=True, dtype=torch.float64), center=False,
                     return_complex=True).abs().pow(2).numpy()
    assert ours.shape == ref.shape == (257, 1 + (4000 - 400) // 160)
    assert np.allclose(ours, ref, rtol=1e-9, atol=1e-9)


def test_mel_scale_closed_forms():
    assert np.isclose(hz_to_mel(1000.0), 2595.0 * math.log10(17.0 / 7.0), rtol=1e-12)
    assert abs(hz_to_mel(1000.0) - 1000.0) < 0.02  # the HTK scale puts 1 kHz near 1000 mel
    assert np.allclose(mel_to_hz(hz_to_mel(np.array([0.0, 440.0, 7999.0]))), [0.0, 440.0, 7999.0])


def test_mel_filterbank_matches_the_triangle_formula_and_sums_to_one():
    sr, n_fft, n_mels = 16000, 512, 40
    bank = mel_filterbank(sample_rate=sr, n_fft=n_fft, n_mels=n_mels)
    edges = [mel_to_hz(m) for m in np.linspace(0.0, hz_to_mel(8000.0), n_mels + 2)]
    ref = np.zeros((n_mels, n_fft // 2 + 1))
    for m in range(n_mels):
        for k in range(n_fft // 2 + 1):
            f = k * sr / n_fft
            lo, mid, hi = edges[m], edges[m + 1], edges[m + 2]
            if lo <= f <= mid:
                ref[m, k] = (f - lo) / (mid - lo)
            elif mid < f <= hi:
                ref[m, k] = (hi - f) / (hi - mid)
    assert np.allclose(bank, ref, atol=1e-12)
    freqs = np.arange(n_fft // 2 + 1) * sr / n_fft
    inside = (freqs >= edges[1]) & (freqs <= edges[-2])
    assert np.allclose(bank[:, inside].sum(axis=0), 1.0)  # neighbouring triangles partition unity
    with pytest.raises(ValueError, match="f_max=9000"):
        mel_filterbank(sample_rate=sr, n_fft=n_fft, n_mels=n_mels, f_max=9000)


@pytest.mark.parametrize("freq", [300.0, 1000.0, 3000.0])
def test_a_tone_peaks_in_the_band_centred_nearest_its_frequency(freq):
    t = np.arange(16000) / 16000.0
    spec = log_mel(np.sin(2 * math.pi * freq * t))
    assert spec.shape == (40, 1 + (16000 - 400) // 160) and spec.dtype == np.float32
    centres = mel_to_hz(np.linspace(0.0, hz_to_mel(8000.0), 42))[1:-1]
    assert abs(int(np.argmax(spec.mean(axis=1))) - int(np.argmin(np.abs(centres - freq)))) <= 1


def test_silence_is_the_floor_and_short_signals_give_one_frame():
    cfg = MelConfig()
    assert np.allclose(log_mel(np.zeros(1600)), cfg.floor)
    assert log_mel(np.ones(100)).shape == (40, 1)


def test_trim_silence_keeps_the_sound_and_a_margin():
    rate = 16000
    tone = 0.5 * np.sin(2 * math.pi * 500 * np.arange(rate // 2) / rate)
    x = np.concatenate([np.zeros(rate // 4), tone, np.zeros(rate // 4)]).astype(np.float32)
    y = trim_silence(x, rate)
    assert abs(len(y) - (len(tone) + 2 * 320)) <= 160
    assert np.allclose(trim_silence(np.zeros(800, dtype=np.float32), rate), 0.0)


def test_resample_keeps_a_tone_and_the_duration():
    rate = 22050
    x = np.sin(2 * math.pi * 440 * np.arange(rate) / rate)
    y = resample(x, rate, 16000)
    assert len(y) == 16000
    ref = np.sin(2 * math.pi * 440 * np.arange(16000) / 16000)
    assert np.abs(y[200:-200] - ref[200:-200]).max() < 1e-2
