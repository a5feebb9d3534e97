r"""Features of a frozen encoder: one tensor per tower for every item of a data set.

An item's features are ``model.encode(views.eval_views(batch))``. Views read by the same tower
(SimCLR's two augmentations, identical at evaluation) give one set of features; views read by
different towers (CMC's channel groups, or image and caption) each give theirs, and the item's
features are their concatenation.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch
from torch import Tensor, nn

from contrastlab.progress import item_bar
from contrastlab.data.base import Batch, Dataset, to_device
from contrastlab.data.loading import LoaderOptions, ordered_batches
from contrastlab.views.base import ViewGenerator


class Encoder(Protocol):
    """What evaluation needs from a model: ``encode(views, *, stage, lengths) -> {view: (N, D)}``."""

    def encode(self, views: Mapping[str, Tensor], *, stage: str = "head",
               lengths: Mapping[str, Tensor] | None = None) -> dict[str, Tensor]: ...


def view_towers(model: Encoder, views: ViewGenerator) -> dict[str, str]:
    """Which tower reads each view: the model's ``view_towers`` map when it has one, else the view's modality.

    Args:
        model: the model (``MultiViewModel`` has ``view_towers``).
        views: the run's view generator.

    Returns:
        View name → tower name, in view order.

    Example:
        >>> from types import SimpleNamespace
        >>> views = SimpleNamespace(view_names=("L", "ab"), view_modalities={"L": "image", "ab": "image"})
        >>> view_towers(SimpleNamespace(view_towers={"L": "L", "ab": "ab"}), views)
        {'L': 'L', 'ab': 'ab'}
    """
    towers = getattr(model, "view_towers", None)
    if isinstance(towers, Mapping) and all(v in towers for v in views.view_names):
        return {v: str(towers[v]) for v in views.view_names}
    return {v: str(views.view_modalities.get(v, v)) for v in views.view_names}


def _lengths(batch: Batch, views: ViewGenerator, names: Sequence[str]) -> dict[str, Tensor] | None:
    out = {v: batch.lengths[views.view_modalities[v]] for v in names
           if views.view_modalities.get(v) in batch.lengths}
    return out or None


@torch.no_grad()
def encode_towers(model: Encoder, views: ViewGenerator, batch: Batch, *, stage: str) -> dict[str, Tensor]:
    """Tower name → features (N, D) of one batch of items, from the deterministic evaluation views.

    Args:
        model: the frozen model.
        views: the run's view generator (its ``eval_views`` are used).
        batch: N items.
        stage: ``"head"`` or ``"backbone"``.

    Returns:
        Tower name → (N, D_tower) float32 CPU features, towers in view order.

    Example:
        >>> import torch
        >>> from types import SimpleNamespace
        >>> views = SimpleNamespace(view_names=("v1", "v2"), view_modalities={"v1": "image", "v2": "image"},
        ...                         eval_views=lambda b: {"v1": b.inputs["image"], "v2": b.inputs["image"]})
        >>> model = SimpleNamespace(encode=lambda v, stage, lengths: {k: x.flatten(1) for k, x in v.items()})
        >>> {t: tuple(f.shape) for t, f in encode_towers(model, views, Batch({"image": torch.ones(2, 1, 2, 2)}),
        ...                                               stage="head").items()}
        {'image': (2, 4)}
    """
    towers = view_towers(model, views)
    shown = views.eval_views(batch)
    first = {}
    for view in shown:
        first.setdefault(towers.get(view, view), view)
    chosen = {first[t]: shown[first[t]] for t in first}
    out = model.encode(chosen, stage=stage, lengths=_lengths(batch, views, list(chosen)))
    return {t: out[v].detach().float().cpu().reshape(len(batch), -1) for t, v in first.items()}


@torch.no_grad()
def encode_pairs(model: Encoder, views: ViewGenerator, batch: Batch, generator: torch.Generator, *,
                 stage: str) -> dict[str, Tensor]:
    """The embeddings of every *training* view of a batch: rows of two views are positive pairs.

    Args:
        model: the frozen model.
        views: the run's view generator, called with ``generator`` (random augmentations).
        batch: N items.
        generator: the source of the views' randomness.
        stage: ``"head"`` or ``"backbone"``.

    Returns:
        View name → (N, D) float32 CPU embeddings.
    """
    shown = views(batch, generator)
    out = model.encode(shown, stage=stage, lengths=_lengths(batch, views, list(shown)))
    return {v: out[v].detach().float().cpu().reshape(len(batch), -1) for v in shown}


def raw_inputs(batch: Batch) -> Tensor | None:
    """The "raw pixels" baseline: the item's fixed-size floating inputs, flattened and concatenated.

    Modalities with lengths (padded sequences) and integer inputs (token ids) are left out.

    Args:
        batch: N items.

    Returns:
        (N, D) float features, or ``None`` when no input qualifies.

    Example:
        >>> import torch
        >>> b = Batch({"image": torch.zeros(2, 3, 4, 4), "text": torch.zeros(2, 5, dtype=torch.long)})
        >>> raw_inputs(b).shape
        torch.Size([2, 48])
    """
    parts = [x.reshape(len(batch), -1).float() for name, x in batch.inputs.items()
             if x.is_floating_point() and name not in batch.lengths]
    return torch.cat(parts, dim=1) if parts else None


def random_init_copy(model: nn.Module, *, seed: int = 0) -> nn.Module:
    """The "randomly initialised encoder" baseline: the same architecture, no training.

    Every module with ``reset_parameters`` draws its weights anew (and normalisation layers forget
    their running statistics) under ``seed``; the global random state is left as it was.

    Args:
        model: the trained model (not modified).
        seed: seeds the new weights.

    Returns:
        A new model in eval mode.

    Example:
        >>> net = nn.Linear(3, 2)
        >>> fresh = random_init_copy(net, seed=1)
        >>> bool((fresh.weight != net.weight).all()), fresh.training
        (True, False)
    """
    fresh = copy.deepcopy(model)
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        for module in fresh.modules():
            if hasattr(module, "reset_parameters") and callable(module.reset_parameters):
                module.reset_parameters()
            if hasattr(module, "reset_running_stats") and callable(module.reset_running_stats):
                module.reset_running_stats()
    finally:
        torch.random.set_rng_state(state)
    return fresh.eval()


#: Maps a batch of N items to tower name -> features (N, D).
Featurizer = Callable[[Batch], dict[str, Tensor]]


def trained_featurizer(model: Encoder, views: ViewGenerator, *, stage: str) -> Featurizer:
    """The featurizer of a model at one stage: ``batch -> {tower: (N, D)}`` (see :func:`encode_towers`).

    Args:
        model: the frozen model.
        views: the run's view generator.
        stage: ``"head"`` or ``"backbone"``.

    Returns:
        A callable taking a :class:`Batch`.
    """
    return lambda batch: encode_towers(model, views, batch, stage=stage)


def raw_featurizer(batch: Batch) -> dict[str, Tensor]:
    """The featurizer of the raw-input baseline: ``{"raw": (N, D)}`` (see :func:`raw_inputs`).

    Args:
        batch: N items.

    Returns:
        ``{"raw": features}``.

    Raises:
        ValueError: when no input qualifies as raw features.
    """
    raw = raw_inputs(batch)
    if raw is None:
        raise ValueError("the items have no fixed-size floating-point input to use as raw features")
    return {"raw": raw}


@dataclass
class Collected:
    """Everything one pass over a split gathers.

    Features and labels cover every item read; images only a seeded random sample of them (``image_rows``),
    kept as the source gave them (uint8 for files read on demand): a split's images are never all held.
    """

    #: Featurizer name -> tower name -> (N, D) features.
    features: dict[str, dict[str, Tensor]]
    #: (N,) class labels, or ``None``.
    labels: Tensor | None
    #: (M, C, H, W) images of the rows ``image_rows`` (M ≤ the ``keep_images`` of :func:`collect`), or ``None``
    #: when the items have no image or none were kept.
    images: Tensor | None
    #: (M,) sorted rows of ``features`` that ``images`` show (the figure sample), or ``None`` for none kept.
    image_rows: Tensor | None = None
    #: Generative factor name -> (N,) values of every item read (synthetic worlds); empty otherwise.
    factors: dict[str, Tensor] = field(default_factory=dict)

    def __len__(self) -> int:
        """The number of items read (rows of the features)."""
        for towers in self.features.values():
            for f in towers.values():
                return int(f.shape[0])
        return 0 if self.labels is None else int(self.labels.shape[0])

    def figure_sample(self) -> "Collected":
        """The rows of the figure sample only, images as floats in [0, 1]: what the figures draw.

        Features, labels and images then index the same M items (a neighbour grid looks up an item's
        image by its row). Without a sample (``image_rows is None``) this is the collection itself.

        Example:
            >>> c = Collected({"raw": {"raw": torch.arange(4.0)[:, None]}}, None,
            ...               torch.full((2, 1, 2, 2), 255, dtype=torch.uint8), image_rows=torch.tensor([1, 3]))
            >>> s = c.figure_sample()
            >>> s.features["raw"]["raw"].flatten().tolist(), float(s.images.max()), len(s)
            ([1.0, 3.0], 1.0, 2)
        """
        if self.image_rows is None:
            return self
        rows = self.image_rows
        images = self.images
        if images is not None:
            images = images.float().div_(255.0) if images.dtype == torch.uint8 else images.float()
        return Collected(features={n: {t: f[rows] for t, f in towers.items()} for n, towers in self.features.items()},
                         labels=None if self.labels is None else self.labels[rows], images=images,
                         image_rows=torch.arange(len(rows)), factors={k: v[rows] for k, v in self.factors.items()})


def image_input(batch: Batch) -> Tensor | None:
    """The first input that looks like an image batch, for figures.

    Args:
        batch: N items.

    Returns:
        The first (N, C, H, W) input with C in {1, 3}, floating or uint8, or ``None``.

    Example:
        >>> image_input(Batch({"signal": torch.zeros(2, 8), "image": torch.zeros(2, 3, 4, 4, dtype=torch.uint8)})).shape
        torch.Size([2, 3, 4, 4])
    """
    for x in batch.inputs.values():
        if x.ndim == 4 and x.shape[1] in (1, 3) and (x.is_floating_point() or x.dtype == torch.uint8):
            return x
    return None


def _row_keys(rows: np.ndarray, seed: int) -> np.ndarray:
    """Pseudo-random uint64 keys of rows: splitmix64 (Steele et al. 2014) of the seed and the row, so a row's
    key does not depend on how the pass was cut into batches."""
    z = (rows.astype(np.uint64) + np.uint64(1)) * np.uint64(0x9E3779B97F4A7C15) \
        + np.full(rows.shape, seed & 0xFFFFFFFFFFFFFFFF, dtype=np.uint64)  # the (row + 1)-th state
    for shift, factor in ((30, 0xBF58476D1CE4E5B9), (27, 0x94D049BB133111EB)):
        z = (z ^ (z >> np.uint64(shift))) * np.uint64(factor)
    return z ^ (z >> np.uint64(31))


class _Sample:
    """A seeded uniform random sample of at most ``size`` rows of a pass read batch by batch: the rows with the
    smallest keys (:func:`_row_keys`), each with its image copied out of its batch (so the batch can be freed)."""

    def __init__(self, size: int, seed: int) -> None:
        self.size, self.seed, self.seen = size, seed, 0
        self.rows = np.empty(0, dtype=np.int64)
        self.keys = np.empty(0, dtype=np.uint64)
        self.images: dict[int, Tensor | None] = {}

    def add(self, images: Tensor | None, n: int) -> None:
        rows = np.arange(self.seen, self.seen + n, dtype=np.int64)
        all_rows = np.concatenate([self.rows, rows])
        all_keys = np.concatenate([self.keys, _row_keys(rows, self.seed)])
        keep = np.argsort(all_keys, kind="stable")[:self.size]
        self.rows, self.keys = all_rows[keep], all_keys[keep]
        kept = {}
        for row in self.rows.tolist():
            if row >= self.seen:  # a view would keep the whole batch alive
                kept[row] = None if images is None else images[row - self.seen].clone()
            else:
                kept[row] = self.images[row]
        self.images = kept
        self.seen += n

    def result(self) -> tuple[Tensor, Tensor | None]:
        rows = sorted(self.rows.tolist())
        chosen = [self.images[r] for r in rows]
        stacked = torch.stack(chosen) if chosen and all(x is not None for x in chosen) else None
        return torch.tensor(rows, dtype=torch.int64), stacked


def collect(dataset: Dataset, indices: Tensor | None, featurizers: Mapping[str, Featurizer], *,
            batch_size: int = 256, keep_images: int = 0, seed: int = 0, loader: LoaderOptions = LoaderOptions(),
            limit: int | None = None, device: torch.device | str = "cpu", progress: bool = False,
            desc: str = "features") -> Collected:
    """One pass over the items ``indices`` (N,) of ``dataset``: every featurizer's features, labels, a few images.

    Batches are read in order through :func:`~contrastlab.data.loading.ordered_batches` (loader workers
    for sources read on demand, none for in-memory data by default) and turned into floats on ``device``
    by :func:`~contrastlab.data.base.to_device` before any featurizer sees them. A stream is read in
    shard order: its first ``limit`` items (all when ``None``), with ``indices=None``.

    Args:
        dataset: the data set (``get(index) -> Batch``), or a stream (``streaming = True``).
        indices: (N,) int64 item indices, or ``None`` for every item (a stream: must be ``None``).
        featurizers: name -> featurizer.
        batch_size: items per batch.
        keep_images: keep the images of a seeded random sample of at most this many items (for figures;
            0 keeps none), as the source gives them (uint8 for files).
        seed: seeds that sample.
        loader: the loader's workers and prefetching.
        limit: read at most this many items of a stream.
        device: where the featurizers run.
        progress: show a progress bar over the items on stderr (only on a terminal).
        desc: the bar's label.

    Returns:
        A :class:`Collected`.

    Raises:
        ValueError: for a negative or boolean ``keep_images``, or ``indices`` given for a stream.

    Example:
        >>> import torch
        >>> from types import SimpleNamespace
        >>> ds = SimpleNamespace(num_classes=2, get=lambda i: Batch({"x": i.float()[:, None]}, labels=i % 2))
        >>> got = collect(ds, torch.arange(5), {"raw": raw_featurizer}, batch_size=2)
        >>> got.features["raw"]["raw"].flatten().tolist(), got.labels.tolist()
        ([0.0, 1.0, 2.0, 3.0, 4.0], [0, 1, 0, 1, 0])
    """
    if isinstance(keep_images, bool) or not isinstance(keep_images, int) or keep_images < 0:
        raise ValueError(f"keep_images must be a number of items >= 0, got {keep_images!r}")
    if indices is not None:
        total = len(indices)
    elif hasattr(dataset, "__len__"):
        total = len(dataset) if limit is None else min(limit, len(dataset))
    else:
        total = limit
    features: dict[str, dict[str, list[Tensor]]] = {name: {} for name in featurizers}
    labels = []
    factors: dict[str, list[Tensor]] = {}
    sample = _Sample(keep_images, seed) if keep_images else None
    with closing(ordered_batches(dataset, indices, batch_size=batch_size, options=loader, limit=limit)) as batches, \
            item_bar(total, desc, enabled=progress) as bar:
        for raw in batches:
            batch = to_device(raw, device)
            for name, featurize in featurizers.items():
                for tower, f in featurize(batch).items():
                    features[name].setdefault(tower, []).append(f.detach().float().cpu())
            labels.append(batch.labels)
            for name, values in batch.factors.items():
                factors.setdefault(name, []).append(torch.as_tensor(values).cpu())
            if sample is not None:
                sample.add(image_input(raw), len(raw))
            bar.update(len(raw))
    have_labels = getattr(dataset, "num_classes", None) is not None and bool(labels) \
        and all(y is not None for y in labels)
    rows, images = sample.result() if sample is not None and sample.seen else (None, None)
    return Collected(
        features={n: {t: torch.cat(parts) for t, parts in towers.items()} for n, towers in features.items()},
        labels=torch.cat(labels).cpu() if have_labels else None,
        images=images,
        image_rows=rows,
        factors={name: torch.cat(parts) for name, parts in factors.items() if len(parts) == len(labels)},
    )


def concat_towers(features: Mapping[str, Tensor]) -> Tensor:
    """An item's features: the towers' features side by side.

    Args:
        features: tower name → (N, D_tower).

    Returns:
        (N, sum of D_tower).

    Example:
        >>> import torch
        >>> concat_towers({"L": torch.zeros(4, 2), "ab": torch.ones(4, 3)}).shape
        torch.Size([4, 5])
    """
    return torch.cat(list(features.values()), dim=1)
