r"""Which generative factors does an encoder ignore? The invariance report for the Shapes world.

For a factor (or a group of factors changed together, such as ``location`` = x and y) two numbers:

* the **distance score** — how far the embedding moves when only that factor is resampled,
  relative to moving to a different random item:

  .. math:: S_g = \frac{\frac1N \sum_i \lVert e(x_i) - e(x_i^{(g)}) \rVert_2}
                       {\frac1N \sum_i \lVert e(x_i) - e(x_{\pi(i)}) \rVert_2},

  with :math:`x_i^{(g)}` item i with factor group g resampled and :math:`\pi(i) \ne i` a random
  other item. :math:`S_g \approx 0`: invariant; :math:`S_g \approx 1`: as sensitive as a new item.
* the **k-NN purity** — the mean fraction of each item's k nearest neighbours (cosine, among the
  other items) that share its value of the factor (continuous factors binned at quantiles),
  next to the purity random neighbours would give,
  :math:`\text{chance} = \sum_v \frac{n_v (n_v - 1)}{N (N - 1)}`.

The two can disagree (an encoder can move a lot when a factor changes without clustering items by
it), so the report keeps both. Labels come from the score: ``invariant`` below
``invariant_below`` (0.3), ``sensitive`` at or above ``sensitive_above`` (0.5), ``partial`` between.
Measured on trained Shapes encoders, invariant factors score 0.03–0.17 and sensitive ones 0.6–0.99.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from contrastlab.data.base import Batch
from contrastlab.evaluation._arrays import as_features, check_positive_int, l2_normalize
from contrastlab.evaluation.knn import nearest_neighbours

Encode = Callable[[Batch], Tensor]
Resample = Callable[[Batch, Sequence[str], torch.Generator], Batch]

#: Factors reported together under one name when all of them are present.
DEFAULT_GROUPS: dict[str, tuple[str, ...]] = {"location": ("x", "y")}


def default_groups(factor_names: Sequence[str]) -> dict[str, tuple[str, ...]]:
    """Each factor on its own, except those of :data:`DEFAULT_GROUPS`, which are reported together.

    Args:
        factor_names: the data set's factors.

    Returns:
        Report name → the factors it changes, in the order of ``factor_names``.

    Example:
        >>> default_groups(["shape", "colour", "x", "y"])
        {'shape': ('shape',), 'colour': ('colour',), 'location': ('x', 'y')}
    """
    grouped = {name: members for name, members in DEFAULT_GROUPS.items() if all(m in factor_names for m in members)}
    taken = {m for members in grouped.values() for m in members}
    out: dict[str, tuple[str, ...]] = {}
    for f in factor_names:
        if f in taken:
            for name, members in grouped.items():
                if members[0] == f:
                    out[name] = members
        else:
            out[f] = (f,)
    return out


def discretize(values, *, bins: int = 4) -> np.ndarray:
    """Integer codes for a factor: categories as they are, continuous values in quantile bins.

    A floating-point factor with more than ``bins`` distinct values is cut at its
    ``1/bins, 2/bins, ...`` quantiles; anything else keeps one code per distinct value.

    Args:
        values: (N,) factor values.
        bins: the number of bins for continuous factors.

    Returns:
        (N,) int64 codes.

    Example:
        >>> discretize([0.1, 0.2, 0.8, 0.9], bins=2).tolist()
        [0, 0, 1, 1]
    """
    bins = check_positive_int(bins, "bins")
    a = values.detach().cpu().numpy() if isinstance(values, Tensor) else np.asarray(values)
    a = a.reshape(a.shape[0], -1)
    if a.shape[1] == 1 and np.issubdtype(a.dtype, np.floating) and len(np.unique(a)) > bins:
        edges = np.quantile(a[:, 0], np.linspace(0, 1, bins + 1)[1:-1])
        return np.searchsorted(edges, a[:, 0], side="right").astype(np.int64)
    return np.unique(a, axis=0, return_inverse=True)[1].reshape(-1).astype(np.int64)


def _joint_codes(batch: Batch, members: Sequence[str], bins: int) -> np.ndarray:
    codes = np.stack([discretize(batch.factors[m], bins=bins) for m in members], axis=1)
    return np.unique(codes, axis=0, return_inverse=True)[1].reshape(-1)


def _label(score: float, invariant_below: float, sensitive_above: float) -> str:
    if score < invariant_below:
        return "invariant"
    return "sensitive" if score >= sensitive_above else "partial"


def invariance_report(batch: Batch, encode: Encode, resample: Resample, *,
                      groups: Mapping[str, Sequence[str]] | None = None, k: int = 5, bins: int = 4,
                      normalize: bool = True, invariant_below: float = 0.3, sensitive_above: float = 0.5,
                      seed: int = 0) -> dict[str, dict]:
    r"""Distance score, k-NN purity and a label for every factor group (see the module docstring).

    Args:
        batch: N items with ``factors`` (name → (N,) values), N ≥ k + 2.
        encode: maps a batch of N items to embeddings (N, D).
        resample: ``resample(batch, factor_names, generator)`` returns the same N items with only
            the named factors drawn anew (``ShapesDataset.resample``).
        groups: report name → factor names changed together; default :func:`default_groups`.
        k: neighbours per item for the purity.
        bins: quantile bins for continuous factors.
        normalize: measure distances between unit-normalised embeddings.
        invariant_below: scores below this are labelled ``invariant``.
        sensitive_above: scores at or above this are labelled ``sensitive``.
        seed: seeds the resampling and the choice of random other items.

    Returns:
        Report name → ``{"factors", "score", "distance_changed", "distance_random",
        "changed_fraction", "purity", "chance", "label"}``. For an encoder that maps every item to
        one point, ``score`` is ``None`` and ``label`` is ``"collapsed"``.

    Raises:
        ValueError: an unknown factor, too few items, or thresholds out of order.

    Example:
        >>> import torch
        >>> from contrastlab.data.base import Batch
        >>> b = Batch({"image": torch.randn(12, 3)}, factors={"colour": torch.arange(12) % 3})
        >>> def resample(batch, names, g):  # a new colour, same image
        ...     return Batch(batch.inputs, factors={"colour": torch.randint(0, 3, (len(batch),), generator=g)})
        >>> invariance_report(b, lambda b: b.inputs["image"], resample, k=2)["colour"]["label"]
        'invariant'
    """
    k = check_positive_int(k, "k")
    if not 0 < invariant_below <= sensitive_above:
        raise ValueError(f"need 0 < invariant_below <= sensitive_above; got {invariant_below!r} and {sensitive_above!r}")
    n = len(batch)
    if n < k + 2:
        raise ValueError(f"the invariance report needs at least k + 2 = {k + 2} items; got {n}")
    groups = dict(groups) if groups is not None else default_groups(list(batch.factors))
    if not groups:
        raise ValueError("the batch has no factors to report on (batch.factors is empty)")
    for name, members in groups.items():
        missing = [m for m in members if m not in batch.factors]
        if missing:
            raise ValueError(f"factor group {name!r} names unknown factors {missing}; known: {sorted(batch.factors)}")

    def embed(b: Batch) -> Tensor:
        e = as_features(encode(b), name="encode(batch)", dtype=torch.float64)
        if e.shape[0] != n:
            raise ValueError(f"encode returned {e.shape[0]} rows for {n} items")
        return l2_normalize(e) if normalize else e

    generator = torch.Generator().manual_seed(seed)
    base = embed(batch)
    other = (torch.arange(n) + torch.randint(1, n, (n,), generator=generator)) % n  # never the item itself
    d_random = float((base - base[other]).norm(dim=1).mean())
    neighbours = nearest_neighbours(base, k=k, backend="torch")[1].numpy()

    report = {}
    for name, members in groups.items():
        changed = resample(batch, tuple(members), generator)
        d_changed = float((base - embed(changed)).norm(dim=1).mean())
        moved = np.zeros(n, dtype=bool)
        for m in members:
            old_values = torch.as_tensor(batch.factors[m]).double().reshape(n, -1)
            new_values = torch.as_tensor(changed.factors.get(m, batch.factors[m])).double().reshape(n, -1)
            moved |= ~torch.isclose(old_values, new_values).all(dim=1).numpy()
        codes = _joint_codes(batch, members, bins)
        purity = float((codes[neighbours] == codes[:, None]).mean())
        counts = np.bincount(codes).astype(np.float64)
        chance = float((counts * (counts - 1)).sum() / (n * (n - 1)))
        score = d_changed / d_random if d_random > 1e-12 else None
        report[name] = {
            "factors": list(members), "score": score, "distance_changed": d_changed,
            "distance_random": d_random, "changed_fraction": float(moved.mean()),
            "purity": purity, "chance": chance,
            "label": "collapsed" if score is None else _label(score, invariant_below, sensitive_above),
        }
    return report
