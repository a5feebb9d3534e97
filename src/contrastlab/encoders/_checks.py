"""Argument checks shared by the encoders: each raises ``ValueError`` naming the bad value."""

from __future__ import annotations

from collections.abc import Sequence


def check_int(name: str, value: object, *, minimum: int = 1) -> int:
    """``value`` must be an ``int`` (not a ``bool``) that is ``>= minimum``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def check_widths(name: str, value: object, *, allow_empty: bool = False) -> tuple[int, ...]:
    """A sequence of positive layer widths."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise ValueError(f"{name} must be a list of positive integers, got {value!r}")
    if not value and not allow_empty:
        raise ValueError(f"{name} must name at least one layer width, got {list(value)!r}")
    for w in value:
        if isinstance(w, bool) or not isinstance(w, int) or w < 1:
            raise ValueError(f"{name} must be a list of positive integers, got {list(value)!r}")
    return tuple(int(w) for w in value)


def check_probability(name: str, value: object) -> float:
    """A number in ``[0, 1)`` (dropout rates)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise ValueError(f"{name} must be a number in [0, 1), got {value!r}")
    return float(value)


def check_shape(name: str, shape: object, ndim: int | tuple[int, ...]) -> tuple[int, ...]:
    """A per-item input shape with one of the allowed numbers of dimensions."""
    allowed = (ndim,) if isinstance(ndim, int) else ndim
    if not isinstance(shape, (tuple, list)) or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in shape):
        raise ValueError(f"{name} must be a tuple of positive integers, got {shape!r}")
    if len(shape) not in allowed:
        dims = " or ".join(str(a) for a in allowed)
        raise ValueError(f"{name} must have {dims} dimension(s), got shape {tuple(shape)}")
    return tuple(int(s) for s in shape)
