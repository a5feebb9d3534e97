r"""Paired multimodal data from a manifest: each line names an image and its caption text or audio.

A manifest is a CSV file with a header row, or a JSON-lines file (``.jsonl``, one object per line),
with the fields

* ``image`` — path of the image (relative paths are read from the manifest's folder), required;
* ``caption`` — caption text, and/or ``audio`` — path of a 16-bit PCM WAV file;
* ``label`` — optional class name; ``split`` — optional ``train`` / ``test`` per line.

The manifest's lines are read when the data set is built, images and audio when a batch asks for them
(by loader workers, :mod:`contrastlab.data.lazy`):

* captions become token ids over a vocabulary of every word in the manifest, at load (the vocabulary
  needs them all): ``"text"``, int64 (T,), T the longest caption;
* images are decoded per item to uint8 (C, H, W) (``channels``, ``size``; without ``size`` every image
  must have the size of the split's first readable image);
* audio becomes a log-mel spectrogram per item (``"audio"``, float32 (40, T), trimmed of silence and
  resampled to 16 kHz). T is fixed at load without decoding any audio: the frame count of the
  split's longest WAV file, read from the files' headers (a few bytes each), capped at
  ``max_seconds``. Trimming only shortens, so a spectrogram is padded on the right with the silence
  floor; one longer than ``max_seconds`` is cropped to its first T frames.

Valid lengths of text and audio are in ``Batch.lengths``. Without a ``split`` column a fixed split puts
``test_fraction`` of the lines in the test split.

With ``on_error="fail"`` (the default) every line is checked at load, whatever the split: each named
file must exist and each WAV header must parse, so a broken manifest fails before training, naming
the line. With ``on_error="skip"`` those lines stay and are replaced, when a batch asks for them, by
the next readable item (and counted in ``Batch.skipped``).
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np

from contrastlab.data._images import check_image_options, decode_image
from contrastlab.data._split import check_fraction, check_split, split_indices
from contrastlab.data.audio import MelConfig, log_mel, parse_wav, resample, trim_silence, wav_length
from contrastlab.data.captions import TokenRows, Vocabulary
from contrastlab.data.lazy import OnDemand, check_on_error
from contrastlab.errors import UserError, one_line

FIELDS = ("image", "caption", "audio", "label", "split")


def _line_of(data: bytes, offset: int) -> int:
    """The 1-based line number of byte ``offset`` of ``data``."""
    return data.count(b"\n", 0, offset) + 1


def read_manifest(path: Path) -> list[tuple[int, dict[str, str]]]:
    """The manifest's rows as (line number, fields); :class:`UserError` naming the file and line when malformed.

    The file must be UTF-8 text (a byte-order mark, as spreadsheet programs write, is skipped). A JSON line
    nested too deeply to parse, a number too long to read, or a CSV field longer than the csv module's limit
    (:func:`csv.field_size_limit`, 131,072 characters) is refused naming the line.
    """
    if not path.is_file():
        raise UserError(f"manifest '{path}' not found")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        start = err.start + (3 if data.startswith(b"\xef\xbb\xbf") else 0)
        raise UserError(f"{path.name} line {_line_of(data, start)}: the manifest '{path}' is not UTF-8 text "
                        f"(byte 0x{data[start]:02x} at offset {start})") from None
    rows: list[tuple[int, dict[str, str]]] = []
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        for number, line in enumerate(text.split("\n"), start=1):  # not splitlines: JSON strings may hold U+2028
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except RecursionError:
                raise UserError(f"{path.name} line {number}: not valid JSON (arrays or objects nested too "
                                f"deeply)") from None
            except ValueError as err:  # JSONDecodeError, or an integer too long to convert
                reason = err.msg if isinstance(err, json.JSONDecodeError) else one_line(err)
                raise UserError(f"{path.name} line {number}: not valid JSON ({reason})") from None
            if not isinstance(obj, dict):
                raise UserError(f"{path.name} line {number}: expected a JSON object, got "
                                f"{type(obj).__name__}")
            rows.append((number, {str(k): "" if v is None else str(v) for k, v in obj.items()}))
    else:
        reader = csv.DictReader(io.StringIO(text, newline=""))
        try:
            if not reader.fieldnames:
                raise UserError(f"manifest '{path}' is empty (a CSV needs a header row)")
            for row in reader:
                if None in row:
                    raise UserError(f"{path.name} line {reader.line_num}: more values than header columns")
                rows.append((reader.line_num, {k.strip(): (v or "").strip() for k, v in row.items()}))
        except csv.Error as err:
            line = reader.reader.line_num  # DictReader.line_num is that of the last row it returned
            if "field limit" in str(err):
                raise UserError(f"{path.name} line {line}: a field is longer than {csv.field_size_limit()} "
                                f"characters, the CSV reader's limit (an unclosed quote?)") from None
            raise UserError(f"{path.name} line {line}: not a valid CSV line ({one_line(err)})") from None
    if not rows:
        raise UserError(f"manifest '{path}' has no entries")
    return rows


def read_audio(path: Path, config: MelConfig, where: str) -> np.ndarray:
    """A WAV file as a log-mel spectrogram (n_mels, T); :class:`UserError` naming ``where`` and the file."""
    if not path.is_file():
        raise UserError(f"{where}: audio file '{path}' not found")
    try:
        x, rate = parse_wav(path.read_bytes())
    except ValueError as err:
        raise UserError(f"{where}: cannot read audio '{path}': {err}") from None
    if x.size == 0:
        raise UserError(f"{where}: audio file '{path}' holds no samples")
    x = trim_silence(resample(x, rate, config.sample_rate), config.sample_rate)
    return log_mel(x, config)


def frame_count(samples: int, rate: int, config: MelConfig) -> int:
    """The frames of :func:`~contrastlab.data.audio.log_mel` for ``samples`` at ``rate`` Hz, resampled to
    ``config.sample_rate`` (polyphase resampling gives :math:`\\lceil L\\, r'/r \\rceil` samples)."""
    n = samples if rate == config.sample_rate else -(-samples * config.sample_rate // rate)
    return 1 + (max(n, config.win_length) - config.win_length) // config.hop_length


class Manifest(OnDemand):
    r"""The lines of one split of a manifest, their images and audio read on demand (see the module
    docstring and :func:`load_manifest`).

    Holds, per item, the file paths, the line number, the label and the caption's token ids
    (:class:`~contrastlab.data.captions.TokenRows`, with the ``vocabulary``); nothing decoded.
    """

    def __init__(self, name: str, manifest: str, lines: np.ndarray, images: list[str], *,
                 channels: int, size: tuple[int, int] | None, on_error: str,
                 labels: np.ndarray | None = None, classes: tuple[str, ...] = (),
                 text: TokenRows | None = None,
                 audio: tuple[list[str], int] | None = None) -> None:
        super().__init__(on_error=on_error)
        self.name, self.manifest, self.lines, self.images = name, manifest, lines, images
        self.channels, self.size = channels, size
        self.labels, self.classes = labels, classes if labels is not None else ()
        self.mel = MelConfig()
        self.modalities = {"image": (channels, *(size or self.first_image_size(self._image, f"manifest '{manifest}'")))}
        self.text, self.vocabulary = text, None if text is None else text.vocabulary
        if text is not None:
            self.modalities["text"] = (text.width,)
        self.audio = None
        if audio is not None:
            self.audio, frames = audio
            self.modalities["audio"] = (self.mel.n_mels, frames)

    def __len__(self) -> int:
        return len(self.images)

    def describe(self, i: int) -> str:
        return f"{Path(self.manifest).name} line {int(self.lines[i])}"

    def _image(self, i: int) -> np.ndarray:
        return decode_image(Path(self.images[i]), channels=self.channels, size=self.size, where=self.describe(i))

    def read(self, i: int) -> tuple[dict[str, np.ndarray], dict[str, int]]:
        inputs, lengths = {"image": self._image(i)}, {}
        if self.text is not None:
            inputs["text"], lengths["text"] = self.text.row(i)
        if self.audio is not None:
            spec = read_audio(Path(self.audio[i]), self.mel, self.describe(i))
            n_mels, frames = self.modalities["audio"]
            kept = min(spec.shape[1], frames)
            padded = np.full((n_mels, frames), self.mel.floor, dtype=np.float32)
            padded[:, :kept] = spec[:, :kept]
            inputs["audio"], lengths["audio"] = padded, kept
        return inputs, lengths


def load_manifest(*, path: str, split: str = "train", seed: int = 0, channels: int = 3,
                  size: int | tuple[int, int] | None = None, test_fraction: float = 0.2,
                  max_seconds: float | None = 10.0, on_error: str = "fail") -> Manifest:
    r"""Image-caption or image-audio pairs from a CSV or JSONL manifest, read on demand (see the module
    docstring).

    Args:
        path: The manifest file (``.csv`` or ``.jsonl``).
        split: ``"train"`` or ``"test"``.
        seed: Unused (the split is fixed or given by the manifest).
        channels: 3 (RGB) or 1 (grey).
        size: Resize every image (int or (height, width)); by default all must share one size.
        test_fraction: Fraction of lines in the test split when there is no ``split`` column.
        max_seconds: The longest audio kept (longer spectrograms are cropped); ``None``: no limit.
        on_error: An unreadable line stops the run at load or when read (``"fail"``), or is replaced by the
            next readable one and counted (``"skip"``).

    Returns:
        A data set with ``"image"`` uint8 (C, H, W) and ``"text"`` int64 (T,) and/or ``"audio"`` float32
        (40, T); labels when a ``label`` column exists (``class_names``: the sorted label names, label ``i``
        is ``class_names[i]``); its ``vocabulary`` when there are captions.

    Raises:
        ValueError: For a bad option value.
        contrastlab.errors.UserError: For a missing field, file or malformed line, naming the line and path.

    Example:
        >>> import tempfile, matplotlib.image, torch
        >>> d = Path(tempfile.mkdtemp())
        >>> for i in range(5):
        ...     matplotlib.image.imsave(d / f"{i}.png", np.zeros((4, 4, 3)))
        >>> _ = (d / "m.csv").write_text("image,caption\n" + "".join(f"{i}.png,a red dot\n" for i in range(5)))
        >>> ds = load_manifest(path=str(d / "m.csv"))
        >>> len(ds), ds.modalities, ds.get(torch.tensor([0])).inputs["image"].dtype
        (4, {'image': (3, 4, 4), 'text': (3,)}, torch.uint8)
    """
    check_split(split)
    channels, hw = check_image_options(channels, size)
    check_fraction(test_fraction)
    check_on_error(on_error)
    if max_seconds is not None and (isinstance(max_seconds, bool) or not isinstance(max_seconds, (int, float))
                                    or not 0.0 < max_seconds < float("inf")):
        raise ValueError(f"max_seconds must be a positive number of seconds or None, got {max_seconds!r}")
    file = Path(path).expanduser()
    rows = read_manifest(file)
    folder = file.parent
    columns = set().union(*(r.keys() for _, r in rows))
    if "image" not in columns or not {"caption", "audio"} & columns:
        raise UserError(f"manifest '{file}' needs an 'image' field and a 'caption' or 'audio' field; "
                        f"found: {', '.join(sorted(columns)) or 'none'}")
    where = [f"{file.name} line {n}" for n, _ in rows]
    for (n, row), w in zip(rows, where):
        for field in ("image", *(f for f in ("caption", "audio", "label") if f in columns)):
            if not row.get(field):
                raise UserError(f"{w}: empty or missing '{field}'")
        if "split" in columns and row.get("split") not in ("train", "test"):
            raise UserError(f"{w}: split must be 'train' or 'test', got {row.get('split')!r}")

    labels = classes = None
    if "label" in columns:
        classes, labels = np.unique([r["label"] for _, r in rows], return_inverse=True)
    if "split" in columns:
        keep = np.flatnonzero([r["split"] == split for _, r in rows])
        if keep.size == 0:
            raise UserError(f"manifest '{file}' has no lines with split '{split}'")
    else:
        keep = split_indices(len(rows), split, labels=labels, test_fraction=test_fraction)

    def resolve(value: str) -> Path:
        p = Path(value).expanduser()
        return p if p.is_absolute() else folder / p

    images = [resolve(r["image"]) for _, r in rows]
    sounds = [resolve(r["audio"]) for _, r in rows] if "audio" in columns else None
    if on_error == "fail":  # every line, whatever the split: a broken manifest fails early
        for i, w in enumerate(where):
            for kind, paths in (("image", images), ("audio", sounds)):
                if paths is not None and not paths[i].is_file():
                    raise UserError(f"{w}: {kind} file '{paths[i]}' not found")

    text = audio = None
    if "caption" in columns:
        captions = [r["caption"] for _, r in rows]
        text = TokenRows.encode(Vocabulary.from_texts(captions), captions).select(keep)
    if sounds is not None:
        config, longest, in_split = MelConfig(), 1, set(keep.tolist())
        for i, w in enumerate(where):  # headers only: cheap, and a broken file fails at load
            try:
                samples, rate = wav_length(sounds[i])
            except (OSError, ValueError) as err:
                if on_error == "fail":
                    raise UserError(f"{w}: cannot read audio '{sounds[i]}': {err}") from None
                continue
            if samples == 0 and on_error == "fail":
                raise UserError(f"{w}: audio file '{sounds[i]}' holds no samples")
            if i in in_split and samples > 0:
                longest = max(longest, frame_count(samples, rate, config))
        if max_seconds is not None:
            longest = min(longest, frame_count(int(round(max_seconds * config.sample_rate)), config.sample_rate,
                                               config))
        audio = ([str(sounds[i]) for i in keep], longest)
    return Manifest(f"manifest:{file.stem}", str(file), np.asarray([rows[i][0] for i in keep], dtype=np.int64),
                    [str(images[i]) for i in keep], channels=channels, size=hw, on_error=on_error,
                    labels=None if labels is None else labels[keep].astype(np.int64),
                    classes=() if classes is None else tuple(str(c) for c in classes), text=text, audio=audio)
