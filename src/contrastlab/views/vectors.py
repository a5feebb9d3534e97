r"""Augmentations of plain feature vectors, and views that pair each modality with an augmented copy of itself.

FactorCL's self-supervised objective replaces the label by augmentations (Liang et al. 2023, Section 3.4): each
modality :math:`x_m` is shown clean and once augmented, :math:`x_m'`. For vectors :math:`x \in \mathbb R^D` one
augmentation is one transform drawn uniformly per item from

* ``swap`` — exchange the two halves, :math:`x' = (x_{h:}, x_{:h})`, :math:`h = \lfloor D/2 \rfloor`;
* ``noise`` — :math:`x' = x + \sigma \varepsilon`, :math:`\varepsilon \sim \mathcal N(0, I)`;
* ``drop`` — set :math:`\lfloor p D \rfloor` coordinates, chosen uniformly without replacement, to 0;
* ``identity`` — :math:`x' = x`.

The four transforms and their settings (:math:`\sigma = 0.01`, :math:`p = 0.1`) are those of the authors' synthetic
experiment (``augment_single`` in their ``Synthetic/dataset.py``); drawing them batched from the run's generator
is ours.

References:
    Liang, Deng, Ma, Zou, Morency & Salakhutdinov, "Factorized Contrastive Learning: Going Beyond Multi-view
    Redundancy", NeurIPS 2023.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from contrastlab.data.base import Batch, Dataset
from contrastlab.views._common import ViewsBase, check_names, check_probability, require_modality

#: The transforms :func:`augment_vectors` draws from, in the order their codes are drawn.
TRANSFORMS: tuple[str, ...] = ("swap", "noise", "drop", "identity")


def _transforms(value) -> tuple[str, ...]:
    names = check_names("transforms", value)
    unknown = [t for t in names if t not in TRANSFORMS]
    if unknown or not names or len(set(names)) != len(names):
        raise ValueError(f"transforms must be distinct names from {', '.join(TRANSFORMS)}, got {list(names)}")
    return names


def augment_vectors(x: Tensor, generator: torch.Generator, *, transforms: Sequence[str] = TRANSFORMS,
                    noise: float = 0.01, drop: float = 0.1) -> Tensor:
    r"""One random augmentation of each row of ``x``: a transform drawn uniformly from ``transforms`` per item.

    Every random number is drawn on the CPU from ``generator`` (the same amount whatever the draws), so a run
    makes the same views on any device.

    Args:
        x: vectors, shape (N, D).
        generator: the source of randomness.
        transforms: names from :data:`TRANSFORMS`.
        noise: :math:`\sigma`, the standard deviation of ``noise`` (>= 0).
        drop: :math:`p`, the fraction of coordinates ``drop`` zeroes, in [0, 1].

    Returns:
        The augmented vectors, shape (N, D), ``x``'s dtype and device (``x`` is not modified).

    Raises:
        ValueError: for a bad option or ``x`` that is not (N, D).

    Example:
        >>> x = torch.arange(1.0, 5.0).repeat(3, 1)
        >>> augment_vectors(x, torch.Generator().manual_seed(0), transforms=["swap"])
        tensor([[3., 4., 1., 2.],
                [3., 4., 1., 2.],
                [3., 4., 1., 2.]])
        >>> (augment_vectors(x, torch.Generator(), transforms=["drop"], drop=0.5) == 0).sum(1).tolist()
        [2, 2, 2]
    """
    names = _transforms(transforms)
    if isinstance(noise, bool) or not isinstance(noise, (int, float)) or not 0 <= noise < math.inf:
        raise ValueError(f"noise must be a finite number >= 0, got {noise!r}")
    drop = check_probability("drop", drop)
    if x.dim() != 2:
        raise ValueError(f"augment_vectors takes vectors of shape (N, D), got shape {tuple(x.shape)}")
    n, d = x.shape
    choice = torch.randint(len(names), (n,), generator=generator).to(x.device)
    eps = torch.randn(n, d, generator=generator).to(device=x.device, dtype=x.dtype)
    order = torch.rand(n, d, generator=generator).argsort(dim=1).to(x.device)
    k = int(math.floor(drop * d + 1e-9))
    dropped = torch.zeros(n, d, dtype=torch.bool, device=x.device).scatter_(1, order[:, :k], True)
    made = {"swap": lambda: x.roll(-(d // 2), dims=1), "noise": lambda: x + noise * eps,
            "drop": lambda: x.masked_fill(dropped, 0.0), "identity": lambda: x}
    out = x
    for code, name in enumerate(names):  # a blend, not a boolean index: no host sync on an accelerator
        out = torch.where((choice == code)[:, None], made[name](), out)
    return out


class ModalityAugmentViews(ViewsBase):
    r"""Each modality clean and once augmented: views ``m`` and ``m_aug`` for every modality ``m``.

    The clean views come first, in modality order (``x1, x2, x1_aug, x2_aug``); both views of a modality are
    read by its tower. At evaluation every view is the clean input.

    Args:
        dataset: A data set whose modalities are vectors (per-item shape (D,)).
        modalities: The modalities, in order (default: all of the data set's).
        transforms: Transforms drawn from per item (names from :data:`TRANSFORMS`).
        noise: Standard deviation of the ``noise`` transform.
        drop: Fraction of coordinates the ``drop`` transform zeroes.

    Raises:
        ValueError: For a modality that is not a vector, or a bad option, naming the value.

    Example:
        >>> from contrastlab.data import build_dataset
        >>> ds = build_dataset("factorcl_synthetic", n_samples=50)
        >>> views = ModalityAugmentViews(ds)
        >>> out = views(ds.get(torch.arange(4)), torch.Generator().manual_seed(0))
        >>> views.view_names, views.view_modalities["x1_aug"], tuple(out["x2_aug"].shape)
        (('x1', 'x2', 'x1_aug', 'x2_aug'), 'x1', (4, 100))
    """

    def __init__(self, dataset: Dataset, *, modalities: Sequence[str] | None = None,
                 transforms: Sequence[str] = TRANSFORMS, noise: float = 0.01, drop: float = 0.1):
        modalities = tuple(dataset.modalities) if modalities is None else check_names("modalities", modalities)
        if not modalities or len(set(modalities)) != len(modalities):
            raise ValueError(f"modalities must be distinct names, got {list(modalities)}")
        shapes = {m: require_modality(dataset, m, ndim=1) for m in modalities}
        self.options = {"transforms": _transforms(transforms), "noise": noise, "drop": drop}
        augment_vectors(torch.zeros(1, 2), torch.Generator(), **self.options)  # checks the options now
        self.view_modalities = {**{m: m for m in modalities}, **{f"{m}_aug": m for m in modalities}}
        self.view_names = tuple(self.view_modalities)
        self.view_shapes = {v: shapes[self.view_modalities[v]] for v in self.view_names}
        self.view_sources = dict(self.view_modalities)

    def __call__(self, batch: Batch, generator: torch.Generator) -> dict[str, Tensor]:
        out = self.eval_views(batch)
        for v, m in self.view_modalities.items():
            if v != m:
                out[v] = augment_vectors(batch.inputs[m], generator, **self.options)
        return out

    def eval_views(self, batch: Batch) -> dict[str, Tensor]:
        return {v: batch.inputs[m] for v, m in self.view_modalities.items()}
