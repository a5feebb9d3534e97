r"""The Shapes world: small RGB images of one shape, with named generative factors under full control.

Factors (``Batch.factors``): ``shape`` and ``colour`` (int64 codes into :attr:`ShapesDataset.shape_names`
and :attr:`ShapesDataset.colour_names`), ``x``, ``y`` (centre, in units of the image side, 0 = left /
top) and ``size`` (circumradius, same units), all float32; optionally ``rotation`` (radians) and
``background`` (int64 code into :attr:`ShapesDataset.background_names`). The class label is the
``shape`` code, so ``class_names`` (and ``classes``) are the shape names in code order. Each factor
is drawn independently and uniformly:

.. math::
    \text{shape} \sim \mathcal U\{1..K_s\},\ \text{colour} \sim \mathcal U\{1..K_c\},\
    x, y \sim \mathcal U[0.25, 0.75],\ \text{size} \sim \mathcal U[3/32, 7.5/32],\
    \theta \sim \mathcal U[0, 2\pi).

Items are stored as factors and rendered on the fly (deterministic), so any number of items costs
little memory. Train and test items come from independent random streams of one seed.

References:
    Wang & Isola, "Understanding Contrastive Representation Learning through Alignment and Uniformity
    on the Hypersphere", ICML 2020 (the invariance questions this world is built to answer).
    Tian, Sun, Poole, Krishnan, Schmid & Isola, "What Makes for Good Views for Contrastive Learning?",
    NeurIPS 2020 (views made by resampling chosen factors).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence

import torch
from torch import Tensor

from contrastlab.limits import check_fits_in_memory, option_key
from contrastlab.data._split import check_split
from contrastlab.data.base import Batch
from contrastlab.data.captions import CAPTION_WORDS, N_PHRASINGS, check_named, describe, level, shapes_vocabulary
from contrastlab.data.shapes_render import BACKGROUNDS, PALETTE, SHAPES, render_shapes

DEFAULT_SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "cross")
DEFAULT_COLOURS: tuple[str, ...] = ("red", "green", "blue", "yellow", "cyan", "magenta", "orange", "white")
#: Ranges of the continuous factors, in units of the image side (rotation in radians).
RANGES: dict[str, tuple[float, float]] = {"x": (0.25, 0.75), "y": (0.25, 0.75),
                                          "size": (3 / 32, 7.5 / 32), "rotation": (0.0, 2 * math.pi)}
#: Upper bounds on the size options: far above any experiment here. Images are rendered per batch, so
#: ``image_size`` costs memory per batch (3 x W x W float32 an item); what the items hold is estimated
#: up front instead (:data:`ITEM_BYTES`).
MAX_ITEMS, MAX_IMAGE_SIZE, MAX_WORKERS = 10_000_000, 1024, 1024
#: Bytes a split holds per item, measured (peak while building): factors and nuisances; with captions,
#: their text and token ids; with speech, the spectrograms of about 3 s of speech, (40, 300) float32,
#: held twice while they are padded into one tensor.
ITEM_BYTES: dict[str, int] = {"factors": 100, "captions": 1_000, "speech": 2 * 40 * 300 * 4}
#: Factor groups accepted by :meth:`ShapesDataset.resample` besides the factor names.
GROUPS: dict[str, tuple[str, ...]] = {"location": ("x", "y")}


def stream_seed(seed: int, *parts: object) -> int:
    """A 63-bit seed for one random stream of ``seed`` (e.g. the test split's factors)."""
    text = "/".join(str(p) for p in (seed, *parts)).encode("utf-8")
    return int.from_bytes(hashlib.sha256(text).digest()[:8], "little") & (2**63 - 1)


def _names(value: Sequence[str], known: dict, what: str) -> tuple[str, ...]:
    names = (value,) if isinstance(value, str) else tuple(value) if isinstance(value, (list, tuple)) else None
    if names is None or not all(isinstance(n, str) for n in names):
        raise ValueError(f"{what}s must be a list of names, got {value!r}")
    for n in names:
        if n not in known:
            raise ValueError(f"unknown {what} {n!r}; known: {', '.join(known)}")
    if len(set(names)) != len(names) or len(names) < 2:
        raise ValueError(f"{what}s must be at least two distinct names, got {list(names)}")
    return names


class ShapesDataset:
    r"""A seeded, factor-controlled set of Shapes items (implements the ``Dataset`` protocol).

    Args:
        n_items: Items in the training split, in [1, 10,000,000], and few enough for the split to fit in the
            memory available (an estimate from :data:`ITEM_BYTES` is checked before anything is made).
        n_test: Items in the test split (default ``max(1, n_items // 5)``), bounded as ``n_items``.
        split: ``"train"`` or ``"test"``.
        seed: Seed of every random draw (factors, phrasings, voices).
        image_size: Image height and width W in pixels, in [8, 1024].
        shapes: Shape names (keys of ``shapes_render.SHAPES``), at least two.
        colours: Colour names (keys of ``shapes_render.PALETTE``), at least two.
        rotation: Add a ``rotation`` factor.
        background: Add a ``background`` colour factor (else black).
        with_captions: Add a ``"text"`` modality: caption token ids, int64 (T,), lengths in ``Batch.lengths``.
        with_speech: Add an ``"audio"`` modality: the caption spoken by espeak-ng as a log-mel
            spectrogram, float32 (40, T), padded with the silence floor, lengths in ``Batch.lengths``.
        cache_dir: Speech cache folder (default ``$CONTRASTLAB_CACHE`` or ``~/.cache/contrastlab``).
        workers: Parallel espeak-ng processes, in [1, 1024].
        caption_words: What captions (and spoken captions) name: a subset of size, colour, shape and position
            (default all); ``[shape]`` leaves colour, size and position to the image alone (fission's private part).

    Raises:
        ValueError: For an unknown name, a split other than train/test or a size out of range.
        contrastlab.errors.UserError: With speech, when espeak-ng is missing; when the split's items would
            not fit in the memory available (naming ``data.options.n_items`` or ``data.options.n_test``).

    Example:
        >>> ds = ShapesDataset(n_items=8, seed=1)
        >>> batch = ds.get(torch.arange(4))
        >>> batch.inputs["image"].shape, sorted(batch.factors)
        (torch.Size([4, 3, 32, 32]), ['colour', 'shape', 'size', 'x', 'y'])
        >>> ds.class_names, torch.equal(batch.labels, batch.factors["shape"])
        (('circle', 'square', 'triangle', 'star', 'cross'), True)
        >>> moved = ds.resample(batch, ["colour"], torch.Generator().manual_seed(0))
        >>> bool((moved.factors["colour"] != batch.factors["colour"]).all())
        True
    """

    name = "shapes"

    def __init__(self, *, n_items: int = 10_000, n_test: int | None = None, split: str = "train",
                 seed: int = 0, image_size: int = 32, shapes: Sequence[str] = DEFAULT_SHAPES,
                 colours: Sequence[str] = DEFAULT_COLOURS, rotation: bool = False, background: bool = False,
                 with_captions: bool = False, with_speech: bool = False, cache_dir: str | None = None,
                 workers: int | None = None, caption_words: Sequence[str] = CAPTION_WORDS):
        check_split(split)
        for key, value, low, high in (("n_items", n_items, 1, MAX_ITEMS), ("n_test", n_test, 1, MAX_ITEMS),
                                      ("image_size", image_size, 8, MAX_IMAGE_SIZE)):
            if value is None and key == "n_test":
                continue
            if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
                raise ValueError(f"{key} must be an int in [{low}, {high}], got {value!r}")
        if workers is not None and (not isinstance(workers, int) or isinstance(workers, bool)
                                    or not 1 <= workers <= MAX_WORKERS):
            raise ValueError(f"workers must be an int in [1, {MAX_WORKERS}], got {workers!r}")
        if cache_dir is not None and not isinstance(cache_dir, str):
            raise ValueError(f"cache_dir must be a folder path, got {cache_dir!r}")
        for key, flag in (("rotation", rotation), ("background", background), ("with_captions", with_captions),
                          ("with_speech", with_speech)):
            if not isinstance(flag, bool):
                raise ValueError(f"{key} must be true or false, got {flag!r}")
        self.shape_names = _names(shapes, SHAPES, "shape")
        self.colour_names = _names(colours, PALETTE, "colour")
        self.background_names: tuple[str, ...] = tuple(BACKGROUNDS) if background else ()
        self.split, self.seed, self.image_size = split, int(seed), image_size
        self.rotation, self.background = bool(rotation), bool(background)
        self.with_captions, self.with_speech = bool(with_captions), bool(with_speech)
        self.caption_words = check_named(caption_words)
        self.factor_names: tuple[str, ...] = ("shape", "colour", "x", "y", "size") + (
            ("rotation",) if rotation else ()) + (("background",) if background else ())
        #: Categorical factor -> the names of its codes.
        self.categorical: dict[str, tuple[str, ...]] = {"shape": self.shape_names, "colour": self.colour_names}
        if background:
            self.categorical["background"] = self.background_names
        #: Continuous factor -> its (low, high) range.
        self.continuous = {k: RANGES[k] for k in self.factor_names if k in RANGES}
        self.classes = self.shape_names  # the label is the shape factor: label i is shape_names[i]
        self.num_classes: int | None = len(self.shape_names)
        self.class_names: tuple[str, ...] | None = self.shape_names
        self._colour_rgb = torch.tensor([PALETTE[c] for c in self.colour_names])
        self._background_rgb = torch.tensor([BACKGROUNDS[c] for c in self.background_names] or [[0.0] * 3])

        n = n_items if split == "train" else (n_test if n_test is not None else max(1, n_items // 5))
        per_item = ITEM_BYTES["factors"] + ITEM_BYTES["captions"] * (with_captions or with_speech) \
            + ITEM_BYTES["speech"] * with_speech
        check_fits_in_memory(option_key("n_test" if split == "test" and n_test is not None else "n_items"),
                             n * per_item, value=n_items if split == "train" or n_test is None else n_test, items=n)
        self.factors = self.sample_factors(n, torch.Generator().manual_seed(stream_seed(seed, split, "factors")))
        g = torch.Generator().manual_seed(stream_seed(seed, split, "nuisance"))
        from contrastlab.data.speech import PITCH_RANGE, SPEED_RANGE, VOICES

        self.voices = VOICES
        self.nuisance = {  # per-item ways of saying the caption; not factors
            "phrasing": torch.randint(0, N_PHRASINGS, (n,), generator=g),
            "voice": torch.randint(0, len(VOICES), (n,), generator=g),
            "speed": torch.randint(SPEED_RANGE[0], SPEED_RANGE[1] + 1, (n,), generator=g),
            "pitch": torch.randint(PITCH_RANGE[0], PITCH_RANGE[1] + 1, (n,), generator=g),
        }
        self.modalities: dict[str, tuple[int, ...]] = {"image": (3, image_size, image_size)}
        self._text = self._audio = None
        if self.with_captions:
            self.vocabulary, self.max_caption_tokens = shapes_vocabulary(
                self.shape_names, self.colour_names, self.background_names, self.caption_words)
            self._text = self._encode(self.captions(self.factors, self.nuisance["phrasing"]))
            self.modalities["text"] = (self.max_caption_tokens,)
        if self.with_speech:
            from contrastlab.data.speech import SpeechSynthesizer

            self.synthesizer = SpeechSynthesizer(cache_dir=cache_dir, workers=workers)
            self._audio = self._speak(self.factors, self.nuisance, length=None)
            self.modalities["audio"] = tuple(self._audio[0].shape[1:])

    def __len__(self) -> int:
        return int(self.factors["shape"].shape[0])

    def __repr__(self) -> str:
        return (f"ShapesDataset(split={self.split!r}, n={len(self)}, seed={self.seed}, "
                f"factors={self.factor_names}, modalities={self.modalities})")

    # ---- factors --------------------------------------------------------------------------------
    def sample_factors(self, n: int, generator: torch.Generator) -> dict[str, Tensor]:
        """Fresh factor values for ``n`` items: name -> (n,) (int64 codes or float32)."""
        out = {}
        for name in self.factor_names:
            if name in self.categorical:
                out[name] = torch.randint(0, len(self.categorical[name]), (n,), generator=generator)
            else:
                lo, hi = self.continuous[name]
                out[name] = lo + (hi - lo) * torch.rand(n, generator=generator)
        return out

    def expand(self, names: Sequence[str]) -> tuple[str, ...]:
        """Factor names with groups expanded (``"location"`` -> ``x``, ``y``); ``ValueError`` if unknown."""
        names = (names,) if isinstance(names, str) else tuple(names)
        out: list[str] = []
        for name in names:
            members = GROUPS.get(name, (name,))
            for m in members:
                if m not in self.factor_names:
                    known = ", ".join(self.factor_names + tuple(GROUPS))
                    raise ValueError(f"unknown factor {name!r} for this Shapes world; known: {known}")
                if m not in out:
                    out.append(m)
        if not out:
            raise ValueError("name at least one factor to resample")
        return tuple(out)

    def render(self, factors: dict[str, Tensor]) -> Tensor:
        """Images for factor values (name -> (N,)), float32 (N, 3, W, W) in [0, 1].

        ``rotation`` and ``background`` default to 0 (unrotated, black) when absent.
        """
        missing = [k for k in ("shape", "colour", "x", "y", "size") if k not in factors]
        if missing:
            raise ValueError(f"factors lack {missing}; need shape, colour, x, y, size")
        colour = factors["colour"].to(torch.int64)
        if colour.numel() and (colour.min() < 0 or colour.max() >= len(self.colour_names)):
            raise ValueError(f"colour codes must lie in [0, {len(self.colour_names)})")
        bg = factors.get("background")
        return render_shapes(
            factors["shape"], self._colour_rgb[colour], factors["x"], factors["y"], factors["size"],
            shape_names=self.shape_names, image_size=self.image_size, rotation=factors.get("rotation"),
            background=None if bg is None else self._background_rgb[bg.to(torch.int64)])

    # ---- captions and speech ----------------------------------------------------------------------
    def captions(self, factors: dict[str, Tensor], phrasing: Tensor) -> list[str]:
        """Caption texts for factor values (name -> (N,)) and phrasing codes (N,)."""
        bg = factors.get("background")
        return describe(
            shape=[self.shape_names[int(i)] for i in factors["shape"]],
            colour=[self.colour_names[int(i)] for i in factors["colour"]],
            size_level=level(factors["size"], *RANGES["size"]).tolist(),
            row=level(factors["y"], *RANGES["y"]).tolist(), column=level(factors["x"], *RANGES["x"]).tolist(),
            phrasing=phrasing.tolist(),
            background=None if bg is None else [self.background_names[int(i)] for i in bg], named=self.caption_words)

    def _encode(self, texts: list[str]) -> tuple[Tensor, Tensor]:
        return self.vocabulary.encode(texts, length=self.max_caption_tokens)

    def _speak(self, factors: dict[str, Tensor], nuisance: dict[str, Tensor], length: int | None):
        from contrastlab.data.speech import Utterance, pad_spectrograms

        texts = self.captions(factors, nuisance["phrasing"])
        utterances = [Utterance(t, self.voices[int(v)], int(s), int(p)) for t, v, s, p in
                      zip(texts, nuisance["voice"], nuisance["speed"], nuisance["pitch"])]
        return pad_spectrograms(self.synthesizer(utterances), floor=self.synthesizer.mel.floor, length=length)

    # ---- batches ------------------------------------------------------------------------------------
    def get(self, index: Tensor) -> Batch:
        """The items at ``index`` (int64, shape (B,)) as one :class:`Batch`, images rendered now."""
        index = torch.as_tensor(index, dtype=torch.int64)
        factors = {k: v[index] for k, v in self.factors.items()}
        inputs, lengths = {"image": self.render(factors)}, {}
        if self._text is not None:
            inputs["text"], lengths["text"] = self._text[0][index], self._text[1][index]
        if self._audio is not None:
            inputs["audio"], lengths["audio"] = self._audio[0][index], self._audio[1][index]
        return Batch(inputs=inputs, labels=factors["shape"].clone(), factors=factors, lengths=lengths,
                     index=index.clone())

    def replace(self, batch: Batch, values: dict[str, Tensor]) -> Batch:
        """The same items with the named factors set to ``values`` (name -> (N,)), every modality redone.

        Phrasings and voices stay those of the items (found through ``batch.index``; the first
        phrasing and voice, speed 160 and pitch 50 when the batch has no index).
        """
        unknown = [k for k in values if k not in self.factor_names]
        if unknown:
            raise ValueError(f"unknown factor {unknown[0]!r}; known: {', '.join(self.factor_names)}")
        n = len(batch)
        factors = {k: v.clone() for k, v in batch.factors.items()}
        for k, v in values.items():
            v = torch.as_tensor(v)
            if v.shape != (n,):
                raise ValueError(f"values for {k!r} must have shape ({n},), got {tuple(v.shape)}")
            factors[k] = v.to(factors[k].dtype) if k in factors else v
        inputs, lengths = dict(batch.inputs), dict(batch.lengths)
        inputs["image"] = self.render(factors)
        if self.with_captions or self.with_speech:
            if batch.index is not None:
                nuisance = {k: v[batch.index.cpu()] for k, v in self.nuisance.items()}  # the index may be on a GPU
            else:  # items made by hand: the first phrasing and voice, middle speed and pitch
                nuisance = {k: torch.full((n,), d, dtype=torch.int64) for k, d in
                            (("phrasing", 0), ("voice", 0), ("speed", 160), ("pitch", 50))}
            if self.with_captions:
                inputs["text"], lengths["text"] = self._encode(self.captions(factors, nuisance["phrasing"]))
            if self.with_speech:
                inputs["audio"], lengths["audio"] = self._speak(factors, nuisance,
                                                                length=self.modalities["audio"][1])
        return Batch(inputs=inputs, labels=factors["shape"].clone(), factors=factors, lengths=lengths,
                     index=None if batch.index is None else batch.index.clone())

    def resample(self, batch: Batch, factors: Sequence[str], generator: torch.Generator) -> Batch:
        r"""The same items with the named factors drawn afresh; every other factor unchanged.

        A categorical factor always moves to a *different* value, uniformly among the other
        :math:`K-1` (:math:`c' = (c + U\{1..K-1\}) \bmod K`); a continuous factor is redrawn from its
        range. ``"location"`` names ``x`` and ``y`` together.

        Args:
            batch: Items of this data set (its ``factors`` are read), N items.
            factors: Factor names or groups to resample.
            generator: The only source of randomness.

        Returns:
            A :class:`Batch` of N items: new factors, re-rendered images, captions and speech.

        Raises:
            ValueError: For an unknown factor name.
        """
        names = self.expand(factors)
        n = len(batch)
        values = {}
        for name in names:
            if name in self.categorical:
                k = len(self.categorical[name])
                step = torch.randint(1, k, (n,), generator=generator)
                values[name] = (batch.factors[name].to(torch.int64) + step) % k
            else:
                lo, hi = self.continuous[name]
                values[name] = lo + (hi - lo) * torch.rand(n, generator=generator)
        return self.replace(batch, values)
