"""Shared input checks: features and labels arrive as numpy arrays or torch tensors."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


def as_features(x, *, name: str = "features", dtype: torch.dtype = torch.float32) -> Tensor:
    """A 2-D floating CPU tensor from a numpy array or tensor of shape (N, D).

    Raises:
        ValueError: if ``x`` is not 2-D, is empty, or holds NaN or infinite values.
    """
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, Tensor) else x.detach())
    t = t.to("cpu", dtype)
    if t.ndim != 2:
        raise ValueError(f"{name} must have shape (N, D); got shape {tuple(t.shape)}")
    if t.shape[0] == 0 or t.shape[1] == 0:
        raise ValueError(f"{name} must be non-empty; got shape {tuple(t.shape)}")
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return t


def as_labels(y, n: int, *, name: str = "labels") -> np.ndarray:
    """A 1-D integer numpy array of length ``n`` (class labels, any integer values).

    Raises:
        ValueError: if ``y`` is not 1-D of length ``n`` or is not integer-valued.
    """
    a = y.detach().cpu().numpy() if isinstance(y, Tensor) else np.asarray(y)
    if a.ndim != 1 or a.shape[0] != n:
        raise ValueError(f"{name} must have shape ({n},); got shape {a.shape}")
    if not np.issubdtype(a.dtype, np.integer):
        if np.issubdtype(a.dtype, np.floating) and np.all(a == np.round(a)):
            a = a.astype(np.int64)
        else:
            raise ValueError(f"{name} must be integer class labels; got dtype {a.dtype}")
    return a.astype(np.int64, copy=False)


def l2_normalize(x: Tensor, eps: float = 1e-12) -> Tensor:
    """Rows scaled to unit Euclidean norm (rows of zeros stay zero)."""
    return x / x.norm(dim=1, keepdim=True).clamp_min(eps)


def check_positive_int(value, name: str) -> int:
    """``value`` as an int if it is an integer >= 1; ``ValueError`` naming ``name`` and the value otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer; got {value!r}")
    return int(value)


def check_positive_float(value, name: str) -> float:
    """``value`` as a float if it is a finite number > 0; ``ValueError`` naming it otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise ValueError(f"{name} must be a positive number; got {value!r}")
    if not np.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive number; got {value!r}")
    return float(value)
