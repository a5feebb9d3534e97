r"""Spoken captions: text spoken by ``espeak-ng``, trimmed, resampled to 16 kHz, turned into log-mel
spectrograms and cached on disk so each (text, voice, speed, pitch) is synthesised once.

Synthesis runs several ``espeak-ng`` processes at once (one per worker thread; each thread waits on
its process and then computes the features). The cache lives under ``cache_dir/speech`` where
``cache_dir`` is the argument, else the ``CONTRASTLAB_CACHE`` environment variable, else
``~/.cache/contrastlab``; entries are ``.npy`` files named by a hash of the text, the voice and
every feature parameter, written atomically.

References:
    Harwath, Recasens, Surís, Chuang, Torralba & Glass, "Jointly Discovering Visual Objects and
    Spoken Words from Raw Sensory Input", IJCV 2019.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from contrastlab.progress import progress_off

from contrastlab.data.audio import MelConfig, log_mel, parse_wav, resample, trim_silence
from contrastlab.errors import UserError

#: English voices: three accents, each plain and with a female (+f3) and a male (+m3) variant.
VOICES: tuple[str, ...] = tuple(f"{accent}{variant}" for accent in ("en-us", "en-gb", "en-gb-scotland")
                                for variant in ("", "+f3", "+m3"))
SPEED_RANGE = (140, 180)  # words per minute
PITCH_RANGE = (40, 60)  # espeak-ng's 0-99 scale
_FORMAT_VERSION = 1
INSTALL_HINT = "install it with: apt-get install espeak-ng (macOS: brew install espeak-ng)"


@dataclass(frozen=True)
class Utterance:
    """One caption to speak: the text and the speaker's voice, speed (words/min) and pitch (0-99)."""

    text: str
    voice: str = "en-us"
    speed: int = 160
    pitch: int = 50


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """The cache folder: ``cache_dir``, else ``$CONTRASTLAB_CACHE``, else ``~/.cache/contrastlab``."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get("CONTRASTLAB_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "contrastlab"


def espeak_executable() -> str:
    """The path of ``espeak-ng``; :class:`UserError` saying how to install it when it is missing."""
    path = shutil.which("espeak-ng")
    if path is None:
        raise UserError(f"espeak-ng is needed for spoken captions but was not found on PATH; {INSTALL_HINT}")
    return path


def _run_espeak(executable: str, utterance: Utterance) -> bytes:
    """WAV bytes of one utterance (text on stdin, so no text is ever read as an option)."""
    cmd = [executable, "-v", utterance.voice, "-s", str(int(utterance.speed)), "-p",
           str(int(utterance.pitch)), "--stdout", "--stdin"]
    done = subprocess.run(cmd, input=utterance.text.encode("utf-8"), capture_output=True, timeout=60)
    if done.returncode != 0 or not done.stdout:
        err = " ".join(done.stderr.decode("utf-8", "replace").split())
        raise UserError(f"espeak-ng failed on {utterance.text!r} with voice {utterance.voice!r}: "
                        f"{err or 'no audio produced'}")
    return done.stdout


class SpeechSynthesizer:
    r"""Log-mel spectrograms of spoken text, synthesised once and cached.

    Args:
        cache_dir: Cache folder (see the module docstring for the default).
        mel: Log-mel parameters (16 kHz, 40 bands, 25 ms / 10 ms by default).
        workers: Parallel ``espeak-ng`` processes (default: the number of CPU cores).
        trim_db: Leading/trailing frames quieter than this (dB below the loudest frame) are cut.

    Raises:
        ValueError: For ``workers < 1``.

    Example:
        >>> import tempfile
        >>> synth = SpeechSynthesizer(cache_dir=tempfile.mkdtemp(), workers=2)
        >>> synth.path(Utterance("a red circle")).suffix  # where its spectrogram will be cached
        '.npy'
        >>> if shutil.which("espeak-ng"):  # synthesis needs espeak-ng
        ...     [spec] = synth([Utterance("a red circle")])
        ...     assert spec.shape[0] == 40 and synth.synthesised == 1
    """

    def __init__(self, *, cache_dir: str | os.PathLike | None = None, mel: MelConfig = MelConfig(),
                 workers: int | None = None, trim_db: float = -40.0):
        if workers is not None and int(workers) < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.root = cache_root(cache_dir) / "speech"
        self.mel = mel
        self.workers = int(workers) if workers is not None else max(1, os.cpu_count() or 1)
        self.trim_db = float(trim_db)
        self.synthesised = 0  # utterances spoken by espeak-ng through this object (cache misses)

    def key(self, utterance: Utterance) -> str:
        """The cache key: a hash of the utterance and every parameter that shapes its features."""
        spec = {"utterance": asdict(utterance), "mel": asdict(self.mel), "trim_db": self.trim_db,
                "version": _FORMAT_VERSION}
        return hashlib.sha256(json.dumps(spec, sort_keys=True).encode("utf-8")).hexdigest()

    def path(self, utterance: Utterance) -> Path:
        k = self.key(utterance)
        return self.root / k[:2] / f"{k}.npy"

    def features(self, wav: bytes) -> np.ndarray:
        """WAV bytes to a log-mel spectrogram, float32 (n_mels, T): mono, resampled, trimmed."""
        x, rate = parse_wav(wav)
        x = resample(x, rate, self.mel.sample_rate)
        x = trim_silence(x, self.mel.sample_rate, threshold_db=self.trim_db)
        return log_mel(x, self.mel)

    def __call__(self, utterances: Sequence[Utterance]) -> list[np.ndarray]:
        """Spectrograms, float32 (n_mels, T_i), one per utterance, from the cache where present.

        Raises:
            UserError: When a spectrogram must be synthesised and ``espeak-ng`` is missing or fails.
        """
        out: list[np.ndarray | None] = [None] * len(utterances)
        missing: dict[Utterance, list[int]] = {}
        for i, u in enumerate(utterances):
            cached = self._load(self.path(u))
            if cached is None:
                missing.setdefault(u, []).append(i)
            else:
                out[i] = cached
        if missing:
            executable = espeak_executable()

            def make(u: Utterance) -> np.ndarray:
                spec = self.features(_run_espeak(executable, u))
                self._store(self.path(u), spec)
                return spec

            todo = list(missing)
            with ThreadPoolExecutor(max_workers=min(self.workers, len(todo))) as pool, \
                    tqdm(total=len(todo), desc="espeak-ng", unit="caption", disable=len(todo) < 100 or progress_off()) as bar:
                for u, spec in zip(todo, pool.map(make, todo)):
                    for i in missing[u]:
                        out[i] = spec
                    bar.update(1)
            self.synthesised += len(todo)
        return out  # type: ignore[return-value]

    @staticmethod
    def _load(path: Path) -> np.ndarray | None:
        try:
            return np.load(path, allow_pickle=False)
        except (FileNotFoundError, ValueError, OSError):
            return None  # absent or torn: synthesise again

    @staticmethod
    def _store(path: Path, spec: np.ndarray) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                np.save(f, spec, allow_pickle=False)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def pad_spectrograms(specs: Sequence[np.ndarray], *, floor: float, length: int | None = None):
    """Stack spectrograms (F, T_i) into float32 (N, F, T) padded on the right with ``floor``.

    Returns the tensor and the valid lengths, int64 (N,). T is ``length`` or the longest T_i.
    """
    import torch

    lengths = torch.tensor([s.shape[1] for s in specs], dtype=torch.int64)
    width = int(lengths.max()) if len(specs) else 0
    width = max(width, length or 0)
    n_mels = specs[0].shape[0] if len(specs) else 0
    out = torch.full((len(specs), n_mels, width), float(floor), dtype=torch.float32)
    for i, s in enumerate(specs):
        out[i, :, :s.shape[1]] = torch.from_numpy(np.ascontiguousarray(s, dtype=np.float32))
    return out, lengths
