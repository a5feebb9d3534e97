r"""Waveforms to log-mel spectrograms, written out with numpy (no audio library).

The features follow the usual speech front end (Harwath et al. use the same for spoken captions):

.. math::
    X_t(k) = \sum_{n=0}^{N-1} w(n)\, x(tH + n)\, e^{-2\pi i kn/K}, \qquad
    S_{m,t} = \log\Big(\sum_k M_{m,k}\, |X_t(k)|^2 + \epsilon\Big),

with a periodic Hann window :math:`w` of :math:`N` = 25 ms, hop :math:`H` = 10 ms, an FFT of
:math:`K \ge N` points and :math:`M` the triangular mel filterbank on the HTK mel scale
:math:`\mathrm{mel}(f) = 2595 \log_{10}(1 + f/700)`.

References:
    Davis & Mermelstein, "Comparison of parametric representations for monosyllabic word recognition
    in continuously spoken sentences", IEEE TASSP 1980 (mel filterbank features).
    Harwath, Recasens, Surís, Chuang, Torralba & Glass, "Jointly Discovering Visual Objects and
    Spoken Words from Raw Sensory Input", IJCV 2019 (log-mel spectrograms of spoken captions).
"""

from __future__ import annotations

import math
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class MelConfig:
    """Log-mel parameters: sample rate (Hz), window and hop (s), FFT size, bands, band edges (Hz), floor."""

    sample_rate: int = 16_000
    window_s: float = 0.025
    hop_s: float = 0.010
    n_fft: int = 512
    n_mels: int = 40
    f_min: float = 0.0
    f_max: float | None = None
    eps: float = 1e-6

    @property
    def win_length(self) -> int:
        return int(round(self.window_s * self.sample_rate))

    @property
    def hop_length(self) -> int:
        return int(round(self.hop_s * self.sample_rate))

    @property
    def floor(self) -> float:
        """The value of a silent frame: :math:`\\log \\epsilon` (also used to pad spectrograms)."""
        return math.log(self.eps)


#: The sample rates a WAV file may have, in Hz: from below telephone speech to above studio rates. A rate
#: outside is a damaged header; resampling from it to 16 kHz would multiply the samples (1 Hz: 16,000 times).
MIN_RATE, MAX_RATE = 1_000, 768_000


@dataclass(frozen=True)
class _WavLayout:
    """Where the samples of a 16-bit PCM WAV file are: ``frames`` whole frames of ``channels`` samples
    each, at ``rate`` Hz, starting at byte ``start``."""

    channels: int
    rate: int
    start: int
    frames: int


def _wav_layout(read: Callable[[int, int], bytes], total: int) -> _WavLayout:
    """Walk the RIFF chunks of a WAV file of ``total`` bytes up to its data chunk; ``read(pos, n)`` gives
    at most ``n`` bytes from ``pos``.

    Only the chunk headers and the fmt chunk are read. The data chunk's declared size is not trusted:
    a WAV written to a pipe (``espeak-ng --stdout``) carries a placeholder size, so the samples run to
    the end of the file when the size is too large (a partial last frame is dropped).

    Raises:
        ValueError: When the file is not a RIFF/WAVE file with 16-bit PCM samples, or its header is
            cut short or inconsistent (0 channels, a sample rate outside [:data:`MIN_RATE`, :data:`MAX_RATE`]).
    """
    head = read(0, 12)
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        raise ValueError("not a RIFF/WAVE file")
    pos, channels, rate = 12, None, None
    while pos < total:
        chunk = read(pos, 8)
        if len(chunk) < 8:
            raise ValueError(f"WAV file is truncated: it ends inside a chunk header at byte {pos}, before "
                             "its data chunk")
        tag, size = chunk[:4], struct.unpack("<I", chunk[4:])[0]
        body = pos + 8
        if tag == b"fmt ":
            if size < 16:
                raise ValueError(f"WAV fmt chunk is {size} bytes long, a PCM fmt chunk needs at least 16")
            fmt = read(body, 16)
            if len(fmt) < 16:
                raise ValueError(f"WAV fmt chunk is truncated: the file ends {len(fmt)} bytes into it, "
                                 "before its 16 bytes")
            kind, channels, rate, _, _, bits = struct.unpack("<HHIIHH", fmt)
            if kind != 1 or bits != 16:
                raise ValueError(f"only 16-bit PCM WAV is supported, got format {kind} with {bits} bits")
            if channels == 0 or rate == 0:
                raise ValueError(f"WAV fmt chunk gives {channels} channels at {rate} Hz; both must be positive")
            if not MIN_RATE <= rate <= MAX_RATE:
                raise ValueError(f"WAV sample rate {rate} Hz is outside [{MIN_RATE}, {MAX_RATE}] Hz")
        elif tag == b"data":
            if channels is None:
                raise ValueError("WAV data chunk before its fmt chunk")
            return _WavLayout(channels, rate, body, max(0, min(size, total - body)) // (2 * channels))
        pos = body + size + (size & 1)
    raise ValueError("WAV file has no data chunk")


def parse_wav(data: bytes) -> tuple[np.ndarray, int]:
    """Decode 16-bit PCM WAV bytes to a mono float32 waveform in [-1, 1] and its sample rate.

    The data chunk's declared size is not trusted: a WAV written to a pipe (``espeak-ng --stdout``)
    carries a placeholder size, so the samples run to the end of the bytes when the size is too large.

    Raises:
        ValueError: When the bytes are not a RIFF/WAVE file with 16-bit PCM samples, or its header is
            cut short or inconsistent.

    Example:
        >>> body = struct.pack("<4h", 0, 16384, -16384, 32767)
        >>> fmt = struct.pack("<HHIIHH", 1, 1, 8000, 16000, 2, 16)
        >>> wav = b"RIFF" + struct.pack("<I", 0xFFFFFFFF) + b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt
        >>> wav += b"data" + struct.pack("<I", 0xFFFFFFFF) + body
        >>> x, rate = parse_wav(wav)
        >>> rate, x.tolist()
        (8000, [0.0, 0.5, -0.5, 0.999969482421875])
    """
    wav = _wav_layout(lambda pos, n: data[pos:pos + n], len(data))
    end = wav.start + 2 * wav.channels * wav.frames
    samples = np.frombuffer(data[wav.start:end], dtype="<i2").astype(np.float32) / 32768.0
    return samples.reshape(-1, wav.channels).mean(axis=1), wav.rate


def wav_length(path: str | Path) -> tuple[int, int]:
    """The number of samples per channel and the sample rate of a 16-bit PCM WAV file, from its header
    alone (the chunks before the samples; a placeholder data size is bounded by the file's size, as
    :func:`parse_wav` does).

    Raises:
        ValueError: When the file is not a RIFF/WAVE file with 16-bit PCM samples, or its header is
            cut short or inconsistent.
        OSError: When the file cannot be read.
    """
    with open(path, "rb") as f:
        def read(pos: int, n: int) -> bytes:
            f.seek(pos)
            return f.read(n)

        wav = _wav_layout(read, os.fstat(f.fileno()).st_size)
    return wav.frames, wav.rate


def resample(x: np.ndarray, rate: int, target: int) -> np.ndarray:
    """Polyphase resampling of a 1-D waveform from ``rate`` to ``target`` Hz (scipy's anti-aliased filter)."""
    if rate == target:
        return x.astype(np.float32)
    from scipy.signal import resample_poly

    g = math.gcd(rate, target)
    return resample_poly(x, target // g, rate // g).astype(np.float32)


def trim_silence(x: np.ndarray, rate: int, *, threshold_db: float = -40.0, frame_s: float = 0.010,
                 margin_s: float = 0.020) -> np.ndarray:
    r"""Cut leading and trailing silence: keep from the first to the last 10 ms frame whose RMS is
    within ``threshold_db`` of the loudest frame, plus ``margin_s`` on each side.

    Returns the input unchanged when it is all silence.
    """
    frame = max(1, int(round(frame_s * rate)))
    n = len(x) // frame
    if n == 0:
        return x
    rms = np.sqrt(np.mean(x[:n * frame].reshape(n, frame).astype(np.float64) ** 2, axis=1))
    peak = rms.max()
    if peak <= 0:
        return x
    loud = np.flatnonzero(rms >= peak * 10.0 ** (threshold_db / 20.0))
    margin = int(round(margin_s * rate))
    start = max(0, loud[0] * frame - margin)
    stop = min(len(x), (loud[-1] + 1) * frame + margin)
    return x[start:stop]


def hann(n: int) -> np.ndarray:
    r"""The periodic Hann window :math:`w(j) = \tfrac12 - \tfrac12\cos(2\pi j / n)`, (n,)."""
    return (0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n) / n)).astype(np.float64)


def power_spectrogram(x: np.ndarray, *, win_length: int, hop_length: int, n_fft: int) -> np.ndarray:
    r"""Framed, windowed power spectrum :math:`|X_t(k)|^2`, (n_fft // 2 + 1, T).

    Frames start at :math:`tH` with no centre padding, so :math:`T = 1 + \lfloor (L - N)/H \rfloor`;
    a signal shorter than one window is zero-padded to one frame. Each windowed frame is zero-padded
    to ``n_fft`` points on the right.
    """
    if n_fft < win_length:
        raise ValueError(f"n_fft must be >= win_length ({win_length}), got {n_fft}")
    x = np.asarray(x, dtype=np.float64)
    if len(x) < win_length:
        x = np.pad(x, (0, win_length - len(x)))
    frames = np.lib.stride_tricks.sliding_window_view(x, win_length)[::hop_length]
    spec = np.fft.rfft(frames * hann(win_length), n=n_fft, axis=1)
    return (spec.real ** 2 + spec.imag ** 2).T


def hz_to_mel(f):
    """HTK mel scale: :math:`2595 \\log_{10}(1 + f / 700)`."""
    return 2595.0 * np.log10(1.0 + np.asarray(f, dtype=np.float64) / 700.0)


def mel_to_hz(m):
    """Inverse of :func:`hz_to_mel`."""
    return 700.0 * (10.0 ** (np.asarray(m, dtype=np.float64) / 2595.0) - 1.0)


def mel_filterbank(*, sample_rate: int, n_fft: int, n_mels: int, f_min: float = 0.0,
                   f_max: float | None = None) -> np.ndarray:
    r"""Triangular filters, (n_mels, n_fft // 2 + 1).

    Band :math:`m` rises linearly from edge :math:`f_{m}` to 1 at its centre :math:`f_{m+1}` and
    falls to 0 at :math:`f_{m+2}`, where the :math:`n_{mels} + 2` edges are equally spaced in mel
    between ``f_min`` and ``f_max`` (default: the Nyquist frequency). Peaks are 1 (no area
    normalisation).

    Raises:
        ValueError: For band edges outside ``[0, sample_rate / 2]`` or ``n_mels < 1``.
    """
    nyquist = sample_rate / 2.0
    f_max = nyquist if f_max is None else float(f_max)
    if n_mels < 1 or not 0.0 <= f_min < f_max <= nyquist:
        raise ValueError(f"need n_mels >= 1 and 0 <= f_min < f_max <= {nyquist}, got n_mels={n_mels}, "
                         f"f_min={f_min}, f_max={f_max}")
    edges = mel_to_hz(np.linspace(hz_to_mel(f_min), hz_to_mel(f_max), n_mels + 2))
    freqs = np.linspace(0.0, nyquist, n_fft // 2 + 1)
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (freqs[None] - lo) / (mid - lo)
    falling = (hi - freqs[None]) / (hi - mid)
    return np.clip(np.minimum(rising, falling), 0.0, None)


def log_mel(x: np.ndarray, config: MelConfig = MelConfig()) -> np.ndarray:
    r"""Log-mel spectrogram of a waveform sampled at ``config.sample_rate``, float32 (n_mels, T).

    Example:
        >>> t = np.arange(16000) / 16000.0
        >>> S = log_mel(np.sin(2 * np.pi * 1000.0 * t))
        >>> S.shape
        (40, 98)
    """
    power = power_spectrogram(x, win_length=config.win_length, hop_length=config.hop_length,
                              n_fft=config.n_fft)
    return np.log(_bank(config) @ power + config.eps).astype(np.float32)


@lru_cache(maxsize=8)
def _bank(config: MelConfig) -> np.ndarray:
    return mel_filterbank(sample_rate=config.sample_rate, n_fft=config.n_fft, n_mels=config.n_mels,
                          f_min=config.f_min, f_max=config.f_max)
