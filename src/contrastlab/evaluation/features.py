r"""Features of a frozen encoder: one tensor per tower for every item of a data set.

An item's features are ``model.encode(views.eval_views(batch))``. Views read by the same tower
(SimCLR's two augmentations, identical at evaluation) give one set of features; views read by
different towers (CMC's channel groups, or image and caption) each give theirs, and the item's
features are their concatenation.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor, nn

from contrastlab.data.base import Batch, Dataset
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
    """Everything one pass over a split gathers."""

    #: Featurizer name -> tower name -> (N, D) features.
    features: dict[str, dict[str, Tensor]]
    #: (N,) class labels, or ``None``.
    labels: Tensor | None
    #: (N, C, H, W) images for figures, or ``None`` when the items have no image.
    images: Tensor | None


def image_input(batch: Batch) -> Tensor | None:
    """The first input that looks like an image batch, for figures.

    Args:
        batch: N items.

    Returns:
        The first floating (N, C, H, W) input with C in {1, 3}, or ``None``.
    """
    for x in batch.inputs.values():
        if x.ndim == 4 and x.shape[1] in (1, 3) and x.is_floating_point():
            return x
    return None


def collect(dataset: Dataset, indices: Tensor, featurizers: Mapping[str, Featurizer], *,
            batch_size: int = 256, keep_images: bool = False) -> Collected:
    """One pass over the items ``indices`` (N,) of ``dataset``: every featurizer's features, labels, images.

    Args:
        dataset: the data set (``get(index) -> Batch``).
        indices: (N,) int64 item indices.
        featurizers: name -> featurizer.
        batch_size: items per batch.
        keep_images: keep the image input (for neighbour grids).

    Returns:
        A :class:`Collected`.

    Example:
        >>> import torch
        >>> from types import SimpleNamespace
        >>> ds = SimpleNamespace(num_classes=2, get=lambda i: Batch({"x": i.float()[:, None]}, labels=i % 2))
        >>> got = collect(ds, torch.arange(5), {"raw": raw_featurizer}, batch_size=2)
        >>> got.features["raw"]["raw"].flatten().tolist(), got.labels.tolist()
        ([0.0, 1.0, 2.0, 3.0, 4.0], [0, 1, 0, 1, 0])
    """
    features: dict[str, dict[str, list[Tensor]]] = {name: {} for name in featurizers}
    labels, images = [], []
    for start in range(0, len(indices), batch_size):
        batch = dataset.get(indices[start:start + batch_size])
        for name, featurize in featurizers.items():
            for tower, f in featurize(batch).items():
                features[name].setdefault(tower, []).append(f.detach().float().cpu())
        labels.append(batch.labels)
        if keep_images:
            images.append(image_input(batch))
    have_labels = getattr(dataset, "num_classes", None) is not None and all(y is not None for y in labels)
    have_images = keep_images and bool(images) and all(x is not None for x in images)
    return Collected(
        features={n: {t: torch.cat(parts) for t, parts in towers.items()} for n, towers in features.items()},
        labels=torch.cat(labels) if have_labels and labels else None,
        images=torch.cat(images).float() if have_images else None,
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
