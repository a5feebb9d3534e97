r"""FactorCL's synthetic two-modality data: vectors built from shared and modality-unique latent parts.

Each item has three independent Gaussian latent parts: a part :math:`w_s` seen by both modalities and a part
:math:`w_1`, :math:`w_2` seen by one modality only,

.. math::
    w_s \sim \mathcal N(0, v I_{d_s}), \quad w_1 \sim \mathcal N(0, v I_{d_1}), \quad w_2 \sim \mathcal N(0, v I_{d_2}),

and each modality is a fixed random linear map of the parts it sees into a wider space:

.. math::
    x_1 = [w_s; w_1]\, T_1, \qquad x_2 = [w_s; w_2]\, T_2, \qquad (T_m)_{kj} \sim \mathcal U[0, 1),

with :math:`T_1 \in \mathbb R^{(d_s + d_1) \times D}` drawn once per data set (train and test share them). The
binary label reads the first :math:`k_s, k_1, k_2` coordinates of the parts (all of them by default):

.. math::
    y = \mathbb 1\Big[\operatorname{mean}\big(w_s[{:}k_s],\ w_1[{:}k_1],\ w_2[{:}k_2]\big) \ge 0\Big],

which is FactorCL's :math:`\sigma(\operatorname{mean}(\cdot)) \ge 1/2`. The label therefore needs the shared part
*and* both unique parts: from :math:`x_1` alone (which holds :math:`w_s, w_1`) the best accuracy is
:math:`\tfrac12 + \tfrac1\pi \arcsin\sqrt{(k_s + k_1)/(k_s + k_1 + k_2)}` (0.825 at the defaults), from both
modalities it is 1. :func:`bayes_accuracy` gives these numbers for any choice of parts.

Generative factors (``Batch.factors``, float32): ``shared``, ``unique1``, ``unique2`` are the sums of the
label-relevant coordinates of each part, so the label is ``shared + unique1 + unique2 >= 0`` (a factor whose
part does not enter the label is left out). The latent vectors themselves are :attr:`FactorCLSynthetic.latents`.

Defaults are the values of FactorCL's synthetic notebook: 30,000 items split 80 / 20, :math:`d_s = 10`,
:math:`d_1 = d_2 = 6`, :math:`D = 100`, :math:`v = 0.5`, every latent coordinate in the label.

What is taken from the source and what is our own: the generative process above, its sizes and the label rule
are read from the authors' generator (``Synthetic/dataset.py`` and the notebook's settings); the items are drawn
in one vectorised pass from numpy's ``default_rng(seed)`` instead of item by item, and the 80 / 20 split is the
library's fixed stratified split (:func:`~contrastlab.data._split.split_indices`) instead of a random one.

References:
    Liang, Deng, Ma, Zou, Morency & Salakhutdinov, "Factorized Contrastive Learning: Going Beyond Multi-view
    Redundancy", NeurIPS 2023 (Section 4.1, controlled experiments on synthetic data).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from contrastlab.limits import check_fits_in_memory, option_key
from contrastlab.data._split import check_fraction, check_split, split_indices
from contrastlab.data.base import Batch
from contrastlab.data.tensor_dataset import TensorDataset

#: The parts of the latent, in order: seen by both modalities, by x1 only, by x2 only.
PARTS: tuple[str, ...] = ("shared", "unique1", "unique2")
CLASSES: tuple[str, ...] = ("negative", "positive")
MAX_SAMPLES, MAX_DIM = 10_000_000, 100_000


def _int(name: str, value, low: int, high: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ValueError(f"{name} must be an int in [{low}, {high}], got {value!r}")
    return value


def _dims(name: str, value, n: int) -> tuple[int, ...]:
    if not isinstance(value, (list, tuple)) or len(value) != n:
        raise ValueError(f"{name} must be a list of {n} ints, got {value!r}")
    return tuple(_int(f"{name}[{i}]", v, 0, MAX_DIM) for i, v in enumerate(value))


def bayes_accuracy(label_dims: Sequence[int], parts: Sequence[str]) -> float:
    r"""The best accuracy any classifier reaches from the latent ``parts`` alone.

    The label is the sign of :math:`a + b`, with :math:`a` the sum of the label coordinates of the known parts and
    :math:`b` the sum over the unknown ones, independent zero-mean Gaussians with variances proportional to their
    coordinate counts; the best guess is the sign of :math:`a`, right with probability
    :math:`\tfrac12 + \tfrac1\pi \arcsin \rho`, :math:`\rho = \sqrt{\operatorname{var} a / \operatorname{var}(a + b)}`.

    Args:
        label_dims: label coordinates of each part, ``(k_s, k_1, k_2)``.
        parts: the known parts, names from :data:`PARTS` (what a modality sees: ``x1`` sees shared and unique1).

    Returns:
        The accuracy, in [0.5, 1].

    Raises:
        ValueError: for an unknown part or no label coordinates at all.

    Example:
        >>> round(bayes_accuracy((10, 6, 6), ["shared", "unique1"]), 3), bayes_accuracy((10, 6, 6), PARTS)
        (0.825, 1.0)
    """
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        raise ValueError(f"unknown latent parts {unknown}; parts: {', '.join(PARTS)}")
    total = sum(label_dims)
    if total <= 0:
        raise ValueError(f"the label reads no latent coordinate (label_dims={list(label_dims)})")
    known = sum(k for p, k in zip(PARTS, label_dims) if p in parts)
    return 0.5 + math.asin(math.sqrt(known / total)) / math.pi


def _check_memory(n: int, sizes: tuple[int, int, int], width: int, read: int) -> None:
    """Refuse, before drawing, sizes whose arrays would not fit in memory: the peak of the draw is about
    ``n`` rows of the float64 latents (twice: parts and their concatenation), the two float64 inputs, the
    split's rows of each (one at a time) and their float32 copies, and the two float64 maps (measured:
    within 10% of the peak at 200,000 x 1,000)."""
    shared, d1, d2 = sizes
    latent = shared + d1 + d2
    rows = n * (8 * (latent + shared + max(d1, d2) + read) + 32 * width + 4 * latent + 16)
    maps = 8 * width * (2 * shared + d1 + d2)
    if maps > rows:  # the maps dominate: the widths are at fault, not the number of items
        value = f"{width} (with shared_dim {shared} and unique_dims [{d1}, {d2}])"
        check_fits_in_memory(option_key("input_dim"), rows + maps, value=value)
    else:
        check_fits_in_memory(option_key("n_samples"), rows + maps, value=f"{n} (with input_dim {width})", items=n)


class FactorCLSynthetic(TensorDataset):
    r"""FactorCL's synthetic data (see the module docstring): modalities ``x1`` and ``x2``, float32 (D,), labels
    0/1, factors ``shared``, ``unique1``, ``unique2``.

    Args:
        split: ``"train"`` or ``"test"``.
        seed: Seed of every draw (latents and the two maps); both splits of one seed come from one draw.
        n_samples: Items generated in all, split ``1 - test_fraction`` / ``test_fraction``.
        shared_dim: :math:`d_s`, coordinates of the shared part.
        unique_dims: :math:`(d_1, d_2)`, coordinates of the part unique to x1 and to x2.
        input_dim: :math:`D`, the width of each modality's vectors.
        variance: :math:`v`, the variance of every latent coordinate (> 0).
        label_dims: :math:`(k_s, k_1, k_2)`, how many leading coordinates of each part the label reads
            (at most the part's size, at least one in all); ``None``: every coordinate.
        test_fraction: Fraction of the items (of each class) in the test split.

    Attributes:
        latents: Part name -> (N, d) float32 latent vectors of this split's items.
        transforms: ``(T_1, T_2)``, the (d_s + d_m, D) float32 maps (the same for both splits).
        label_dims: :math:`(k_s, k_1, k_2)` as used.

    Bounds: ``n_samples`` in [2, 10,000,000], each width in [0, 100,000] (``input_dim`` >= 1), and the
    arrays of the draw must fit in the memory available (estimated before anything is drawn).

    Raises:
        ValueError: For a bad option, naming the value.
        contrastlab.errors.UserError: When the arrays would not fit in memory, naming
            ``data.options.n_samples`` (or ``data.options.input_dim`` when the maps are the larger part).

    Example:
        >>> ds = FactorCLSynthetic(n_samples=100, seed=1)
        >>> b = ds.get(torch.arange(4))
        >>> len(ds), ds.modalities, b.labels.dtype, sorted(b.factors)
        (80, {'x1': (100,), 'x2': (100,)}, torch.int64, ['shared', 'unique1', 'unique2'])
        >>> bool(torch.equal(b.labels, (sum(b.factors.values()) >= 0).long()))
        True
    """

    def __init__(self, *, split: str = "train", seed: int = 0, n_samples: int = 30_000, shared_dim: int = 10,
                 unique_dims: Sequence[int] = (6, 6), input_dim: int = 100, variance: float = 0.5,
                 label_dims: Sequence[int] | None = None, test_fraction: float = 0.2):
        check_split(split)
        check_fraction(test_fraction)
        _int("n_samples", n_samples, 2, MAX_SAMPLES)
        _int("shared_dim", shared_dim, 0, MAX_DIM)
        _int("input_dim", input_dim, 1, MAX_DIM)
        d1, d2 = _dims("unique_dims", unique_dims, 2)
        if shared_dim + d1 == 0 or shared_dim + d2 == 0:
            raise ValueError(f"each modality needs at least one latent coordinate, got shared_dim={shared_dim} and "
                             f"unique_dims={list(unique_dims)}")
        if isinstance(variance, bool) or not isinstance(variance, (int, float)) or not 0 < variance < math.inf:
            raise ValueError(f"variance must be a finite number > 0, got {variance!r}")
        sizes = (shared_dim, d1, d2)
        labels_read = sizes if label_dims is None else _dims("label_dims", label_dims, 3)
        if any(k > d for k, d in zip(labels_read, sizes)) or sum(labels_read) == 0:
            raise ValueError(f"label_dims must read at most each part's size {list(sizes)} and at least one coordinate "
                             f"in all, got {list(labels_read)}")

        _check_memory(n_samples, sizes, input_dim, sum(labels_read))

        rng = np.random.default_rng(seed)
        scale = math.sqrt(variance)
        parts = {p: rng.standard_normal((n_samples, d)) * scale for p, d in zip(PARTS, sizes)}
        t1 = rng.uniform(0.0, 1.0, (shared_dim + d1, input_dim))
        t2 = rng.uniform(0.0, 1.0, (shared_dim + d2, input_dim))
        x1 = np.concatenate([parts["shared"], parts["unique1"]], axis=1) @ t1
        x2 = np.concatenate([parts["shared"], parts["unique2"]], axis=1) @ t2
        relevant = np.concatenate([parts[p][:, :k] for p, k in zip(PARTS, labels_read)], axis=1)
        y = (relevant.mean(axis=1) >= 0).astype(np.int64)
        factors = {p: parts[p][:, :k].sum(axis=1) for p, k in zip(PARTS, labels_read) if k > 0}

        rows = split_indices(n_samples, split, labels=y, test_fraction=test_fraction)
        as_tensor = lambda a: torch.from_numpy(np.ascontiguousarray(a[rows], dtype=np.float32))  # noqa: E731
        super().__init__("factorcl_synthetic", {"x1": as_tensor(x1), "x2": as_tensor(x2)},
                         torch.from_numpy(y[rows]), classes=CLASSES)
        self.split, self.seed = split, seed
        self.label_dims: tuple[int, ...] = labels_read
        self.latents: dict[str, Tensor] = {p: as_tensor(v) for p, v in parts.items()}
        self.transforms: tuple[Tensor, Tensor] = (torch.from_numpy(t1.astype(np.float32)),
                                                  torch.from_numpy(t2.astype(np.float32)))
        self._factors = {p: as_tensor(v) for p, v in factors.items()}
        self.factor_names: tuple[str, ...] = tuple(self._factors)

    def __repr__(self) -> str:
        return f"FactorCLSynthetic(split={self.split!r}, n={len(self)}, seed={self.seed})"

    def get(self, index: Tensor) -> Batch:
        """The items at ``index`` (int64, shape (B,)) as one :class:`Batch`, with their factors."""
        batch = super().get(index)
        index = torch.as_tensor(index, dtype=torch.int64)
        batch.factors = {k: v[index] for k, v in self._factors.items()}
        return batch
