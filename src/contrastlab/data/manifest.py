r"""Paired multimodal data from a manifest: each line names an image and its caption text or audio.

A manifest is a CSV file with a header row, or a JSON-lines file (``.jsonl``, one object per line),
with the fields

* ``image`` — path of the image (relative paths are read from the manifest's folder), required;
* ``caption`` — caption text, and/or ``audio`` — path of a 16-bit PCM WAV file;
* ``label`` — optional class name; ``split`` — optional ``train`` / ``test`` per line.

Captions become token ids over a vocabulary of every word in the manifest (``"text"``, int64 (T,));
audio becomes a log-mel spectrogram (``"audio"``, float32 (40, T), trimmed and resampled to 16 kHz,
padded with the silence floor). Valid lengths are in ``Batch.lengths``. Without a ``split`` column
a fixed split puts ``test_fraction`` of the lines in the test split.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import torch

from contrastlab.data._images import check_image_options, read_images
from contrastlab.data._split import check_fraction, check_split, split_indices
from contrastlab.data.audio import MelConfig, log_mel, parse_wav, resample, trim_silence
from contrastlab.data.captions import Vocabulary
from contrastlab.data.speech import pad_spectrograms
from contrastlab.data.tensor_dataset import TensorDataset
from contrastlab.errors import UserError

FIELDS = ("image", "caption", "audio", "label", "split")


def read_manifest(path: Path) -> list[tuple[int, dict[str, str]]]:
    """The manifest's rows as (line number, fields); :class:`UserError` naming the line when malformed."""
    if not path.is_file():
        raise UserError(f"manifest '{path}' not found")
    rows: list[tuple[int, dict[str, str]]] = []
    try:
        with path.open(newline="", encoding="utf-8") as f:
            if path.suffix.lower() in (".jsonl", ".ndjson"):
                for number, line in enumerate(f, start=1):
                    if not line.strip():
                        continue
                    try:
                        obj = json.loads(line)
                    except json.JSONDecodeError as err:
                        raise UserError(f"{path.name} line {number}: not valid JSON ({err.msg})") from None
                    if not isinstance(obj, dict):
                        raise UserError(f"{path.name} line {number}: expected a JSON object, got "
                                        f"{type(obj).__name__}")
                    rows.append((number, {str(k): "" if v is None else str(v) for k, v in obj.items()}))
            else:
                reader = csv.DictReader(f)
                if not reader.fieldnames:
                    raise UserError(f"manifest '{path}' is empty (a CSV needs a header row)")
                for row in reader:
                    if None in row:
                        raise UserError(f"{path.name} line {reader.line_num}: more values than header columns")
                    rows.append((reader.line_num, {k.strip(): (v or "").strip() for k, v in row.items()}))
    except UnicodeDecodeError:
        raise UserError(f"manifest '{path}' is not UTF-8 text") from None
    except csv.Error as err:
        raise UserError(f"manifest '{path}': {err}") from None
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


def load_manifest(*, path: str, split: str = "train", seed: int = 0, channels: int = 3,
                  size: int | tuple[int, int] | None = None, test_fraction: float = 0.2) -> TensorDataset:
    r"""Image-caption or image-audio pairs from a CSV or JSONL manifest (see the module docstring).

    Args:
        path: The manifest file (``.csv`` or ``.jsonl``).
        split: ``"train"`` or ``"test"``.
        seed: Unused (the split is fixed or given by the manifest).
        channels: 3 (RGB) or 1 (grey).
        size: Resize every image (int or (height, width)); by default all must share one size.
        test_fraction: Fraction of lines in the test split when there is no ``split`` column.

    Returns:
        A data set with ``"image"`` (C, H, W) and ``"text"`` (T,) and/or ``"audio"`` (40, T); labels
        when a ``label`` column exists.

    Raises:
        ValueError: For a bad option value.
        contrastlab.errors.UserError: For a missing field, file or malformed line, naming the line and path.

    Example:
        >>> import tempfile, matplotlib.image
        >>> d = Path(tempfile.mkdtemp())
        >>> for i in range(5):
        ...     matplotlib.image.imsave(d / f"{i}.png", np.zeros((4, 4, 3)))
        >>> _ = (d / "m.csv").write_text("image,caption\n" + "".join(f"{i}.png,a red dot\n" for i in range(5)))
        >>> ds = load_manifest(path=str(d / "m.csv"))
        >>> len(ds), ds.modalities
        (4, {'image': (3, 4, 4), 'text': (3,)})
    """
    check_split(split)
    channels, hw = check_image_options(channels, size)
    check_fraction(test_fraction)
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

    for (_, row), w in zip(rows, where):  # every line, whatever the split: a broken manifest fails early
        for field, kind in (("image", "image"), ("audio", "audio")):
            if field in columns and not resolve(row[field]).is_file():
                raise UserError(f"{w}: {kind} file '{resolve(row[field])}' not found")

    inputs = {"image": read_images([resolve(rows[i][1]["image"]) for i in keep], channels=channels, size=hw,
                                   where=[where[i] for i in keep])}
    lengths = {}
    if "caption" in columns:
        vocab = Vocabulary.from_texts(r["caption"] for _, r in rows)
        longest = max(len(vocab.encode([r["caption"]])[0][0]) for _, r in rows)
        inputs["text"], lengths["text"] = vocab.encode([rows[i][1]["caption"] for i in keep], length=longest)
    if "audio" in columns:
        config = MelConfig()
        specs = [read_audio(resolve(rows[i][1]["audio"]), config, where[i]) for i in keep]
        inputs["audio"], lengths["audio"] = pad_spectrograms(specs, floor=config.floor)
    dataset = TensorDataset(f"manifest:{file.stem}", inputs,
                            None if labels is None else torch.from_numpy(labels[keep].astype(np.int64)),
                            lengths=lengths, classes=None if classes is None else tuple(str(c) for c in classes))
    if "caption" in columns:
        dataset.vocabulary = vocab
    return dataset
