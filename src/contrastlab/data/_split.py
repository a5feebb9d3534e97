"""Deterministic, disjoint train/test splits shared by every data set."""

from __future__ import annotations

import numpy as np

SPLITS: tuple[str, ...] = ("train", "test")

#: The seed of the fixed split of real data: the split never depends on a run's seed, so runs
#: with different seeds are evaluated on the same test items.
SPLIT_SEED = 20_231_031


def check_split(split: str) -> str:
    """Return ``split`` if it is ``"train"`` or ``"test"``; ``ValueError`` naming it otherwise."""
    if split not in SPLITS:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    return split


def check_fraction(test_fraction: float) -> float:
    """Return ``test_fraction`` if it lies in (0, 1); ``ValueError`` naming it otherwise."""
    if not isinstance(test_fraction, (int, float)) or not 0.0 < float(test_fraction) < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
    return float(test_fraction)


def split_indices(n: int, split: str, *, labels: np.ndarray | None = None,
                  test_fraction: float = 0.2) -> np.ndarray:
    r"""The sorted indices of ``split`` in a fixed train/test split of ``n`` items.

    With labels the split is stratified: each class contributes
    :math:`\lfloor f\, n_c \rceil` items to the test split (at least one when the class has two or more
    items), so both splits see every class. The permutation comes from a fixed seed, so the split
    is the same on every call and every machine, and the two splits are disjoint and cover all items.

    Args:
        n: Number of items.
        split: ``"train"`` or ``"test"``.
        labels: Optional class labels, shape (n,), for a stratified split.
        test_fraction: Fraction of items in the test split, in (0, 1).

    Returns:
        Sorted int64 indices, shape (n_split,).

    Raises:
        ValueError: For an unknown split, a fraction outside (0, 1) or labels of the wrong length.

    Example:
        >>> a, b = split_indices(10, "train"), split_indices(10, "test")
        >>> sorted(list(a) + list(b)) == list(range(10))
        True
    """
    check_split(split)
    test_fraction = check_fraction(test_fraction)
    rng = np.random.default_rng(SPLIT_SEED)
    if labels is None:
        groups = [np.arange(n)]
    else:
        labels = np.asarray(labels)
        if labels.shape != (n,):
            raise ValueError(f"labels must have shape ({n},), got {labels.shape}")
        groups = [np.flatnonzero(labels == c) for c in np.unique(labels)]
    test = []
    for members in groups:
        members = rng.permutation(members)
        k = int(round(test_fraction * len(members)))
        if len(members) >= 2:
            k = min(max(k, 1), len(members) - 1)
        test.append(members[:k])
    is_test = np.zeros(n, dtype=bool)
    if test:
        is_test[np.concatenate(test).astype(np.int64)] = True
    chosen = is_test if split == "test" else ~is_test
    return np.flatnonzero(chosen).astype(np.int64)
