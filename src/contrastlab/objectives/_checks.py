"""Argument checks shared by the objectives: each raises ``ValueError`` naming the bad value."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def check_positive(name: str, value: float) -> float:
    """``value`` must be a finite number > 0 (temperatures, scales)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (value > 0) or value == float("inf"):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def check_non_negative(name: str, value: float) -> float:
    """``value`` must be a finite number >= 0 (margins, weights)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (value >= 0) or value == float("inf"):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)


def check_choice(name: str, value: str, choices: Sequence[str]) -> str:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}")
    return value


def check_embeddings(name: str, z: Tensor) -> Tensor:
    """A 2-D floating tensor ``(N, D)``."""
    if not isinstance(z, Tensor):
        raise ValueError(f"{name} must be a tensor of shape (N, D), got {type(z).__name__}")
    if z.dim() != 2:
        raise ValueError(f"{name} must have shape (N, D), got shape {tuple(z.shape)}")
    if not torch.is_floating_point(z):
        raise ValueError(f"{name} must be floating point, got dtype {z.dtype}")
    return z


def check_pair(z1: Tensor, z2: Tensor, *, min_batch: int = 1) -> None:
    """Two views' embeddings with the same shape ``(N, D)``; ``N >= min_batch``.

    ``min_batch=2`` is the rule for in-batch negatives: with one item there is no negative.
    """
    check_embeddings("z1", z1)
    check_embeddings("z2", z2)
    if z1.shape != z2.shape:
        raise ValueError(
            f"the two views' embeddings must have the same shape (N, D), got {tuple(z1.shape)} and {tuple(z2.shape)}"
        )
    if z1.shape[0] < min_batch:
        raise ValueError(
            f"batch size must be >= {min_batch} for in-batch negatives, got {z1.shape[0]}"
            if min_batch > 1
            else f"batch size must be >= 1, got {z1.shape[0]}"
        )


def check_views(views: Sequence[Tensor], *, min_views: int = 2, min_batch: int = 1) -> None:
    """At least ``min_views`` embeddings of the same shape ``(N, D)``."""
    if len(views) < min_views:
        raise ValueError(f"need at least {min_views} views, got {len(views)}")
    for i, z in enumerate(views):
        check_embeddings(f"views[{i}]", z)
        if z.shape != views[0].shape:
            raise ValueError(
                f"every view must have the same shape (N, D), got {tuple(views[0].shape)} and {tuple(z.shape)} (view {i})"
            )
    if views[0].shape[0] < min_batch:
        raise ValueError(f"batch size must be >= {min_batch} for in-batch negatives, got {views[0].shape[0]}")
