"""What every view generator shares: names, modalities, shapes, lengths and option checks."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from contrastlab.data.base import Batch, Dataset


class ViewsBase:
    """Bookkeeping for a view generator.

    Subclasses set ``view_names`` (ordered), ``view_modalities`` (view -> the modality/tower that reads
    it), ``view_shapes`` (view -> per-item shape) and ``view_sources`` (view -> the data modality it is
    made from), and implement ``__call__`` and ``eval_views``.
    """

    view_names: tuple[str, ...]
    view_modalities: dict[str, str]
    view_shapes: dict[str, tuple[int, ...]]
    view_sources: dict[str, str]

    def view_lengths(self, batch: Batch) -> dict[str, Tensor]:
        """Valid lengths (N,) of the views made from padded sequences (text, audio), by view name."""
        return {v: batch.lengths[src] for v, src in self.view_sources.items() if src in batch.lengths}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(views={self.view_names}, modalities={self.view_modalities})"


def check_name(name: str, value: object) -> str:
    """``value`` if it is a string; ``ValueError`` naming the option otherwise."""
    if not isinstance(value, str):
        raise ValueError(f"{name} must be a name (a string), got {value!r}")
    return value


def check_names(name: str, value: object) -> tuple[str, ...]:
    """One name or a list of names as a tuple of strings; ``ValueError`` naming the option otherwise.

    Example:
        >>> check_names("modalities", "image"), check_names("modalities", ["image", "text"])
        (('image',), ('image', 'text'))
    """
    if isinstance(value, str):
        return (value,)
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{name} must be a name or a list of names, got {value!r}")
    return tuple(value)


def require_modality(dataset: Dataset, modality: str, *, ndim: int | None = None) -> tuple[int, ...]:
    """The per-item shape of ``modality`` in ``dataset``; ``ValueError`` naming what is there otherwise."""
    check_name("modality", modality)
    if modality not in dataset.modalities:
        raise ValueError(f"data set {dataset.name!r} has no {modality!r} modality; it has "
                         f"{', '.join(dataset.modalities)}")
    shape = tuple(dataset.modalities[modality])
    if ndim is not None and len(shape) != ndim:
        raise ValueError(f"modality {modality!r} of {dataset.name!r} has per-item shape {shape}; "
                         f"expected {ndim} dimensions")
    return shape


def check_probability(name: str, value: float) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1], got {value!r}")
    return float(value)


def check_range(name: str, value: Sequence[float], *, low: float | None = None, high: float | None = None,
                positive: bool = False) -> tuple[float, float]:
    """A (min, max) pair with min <= max inside [low, high] (and > 0 when ``positive``)."""
    try:
        a, b = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a (min, max) pair, got {value!r}") from None
    if not (math.isfinite(a) and math.isfinite(b)):
        raise ValueError(f"{name} must be a (min, max) pair of finite numbers, got {value!r}")
    if a > b or (low is not None and a < low) or (high is not None and b > high) or (positive and a <= 0):
        bounds = f" within [{low}, {high}]" if low is not None or high is not None else ""
        raise ValueError(f"{name} must be (min, max) with min <= max{bounds}"
                         f"{' and min > 0' if positive else ''}, got {value!r}")
    return a, b


#: The largest output side of a view, in pixels, and the most views of one item: bounds checked when a
#: view generator is built, so that a typo (``size: 100000000``) is one line instead of a process the
#: kernel kills for memory. 4096 pixels is 201 MB per float32 RGB image.
MAX_SIDE, MAX_VIEWS = 4096, 64


def check_count(name: str, value: int, minimum: int, maximum: int | None = None) -> int:
    """An integer option in ``[minimum, maximum]``.

    Raises:
        ValueError: naming the option and the value.

    Example:
        >>> check_count("size[0]", 10**8, 2, MAX_SIDE)
        Traceback (most recent call last):
        ...
        ValueError: size[0] must be an int in [2, 4096], got 100000000
    """
    bad = not isinstance(value, int) or isinstance(value, bool) or value < minimum
    if bad or (maximum is not None and value > maximum):
        bounds = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
        raise ValueError(f"{name} must be an int {bounds}, got {value!r}")
    return value


def uniform(n: int, low: float, high: float, generator: torch.Generator) -> Tensor:
    """``n`` draws from U(low, high), float32."""
    return low + (high - low) * torch.rand(n, generator=generator)
