r"""Augmentation views for 1-D signals (MNIST-1D): random time shift and stretch, gain and noise.

For a signal :math:`x` of length :math:`L` (sample :math:`t` at :math:`u_t = t - (L-1)/2` from the
centre), one augmentation with per-sample parameters is

.. math::
    \tilde x_t = a\, x\!\left(\frac{u_t}{s} + \frac{L-1}{2} - \delta\right) + \sigma \varepsilon_t,
    \quad s \sim U(\text{stretch}),\ \delta \sim U(-\text{max\_shift}, \text{max\_shift})\,L,\
    a \sim U(\text{gain}),\ \varepsilon_t \sim \mathcal N(0, 1),

with linear interpolation between samples and the edge values repeated outside the signal.
MNIST-1D's own generator makes digits by similar shifts, scalings and noise, so these views ask the
encoder to be invariant to the nuisances the data set was built from.

References:
    Greydanus & Kobak, "Scaling Down Deep Learning with MNIST-1D", ICML 2024.
    Um et al., "Data Augmentation of Wearable Sensor Data for Parkinson's Disease Monitoring using
    Convolutional Neural Networks", ICMI 2017 (jitter, scaling and time-warping of 1-D signals).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from contrastlab.data.base import Batch, Dataset
from contrastlab.views._common import MAX_VIEWS, ViewsBase, check_count, check_range, require_modality, uniform


def warp_signal(x: Tensor, shift: Tensor, stretch: Tensor) -> Tensor:
    r"""Resample signals (N, L) at :math:`u_t / s + (L-1)/2 - \delta` (shift :math:`\delta` in samples,
    stretch :math:`s`, both (N,)) by linear interpolation with repeated edges.

    Example:
        >>> warp_signal(torch.tensor([[0.0, 1.0, 2.0, 3.0]]), torch.tensor([1.0]), torch.tensor([1.0])).tolist()
        [[0.0, 0.0, 1.0, 2.0]]
    """
    length = x.shape[1]
    if length < 2:
        raise ValueError(f"signals need at least 2 samples, got length {length}")
    centre = (length - 1) / 2.0
    t = torch.arange(length, dtype=x.dtype, device=x.device) - centre
    src = (t[None] / stretch.to(x.dtype)[:, None] + centre - shift.to(x.dtype)[:, None]).clamp(0.0, length - 1.0)
    left = src.floor().to(torch.int64).clamp(max=length - 2)
    frac = src - left.to(x.dtype)
    return x.gather(1, left) * (1.0 - frac) + x.gather(1, left + 1) * frac


class SignalViews(ViewsBase):
    r"""``n_views`` independent augmentations of 1-D signals (N, L): views ``view1``, ``view2``, ...

    Args:
        dataset: A data set with a 1-D modality (per-item shape (L,)).
        n_views: Number of views, >= 1.
        modality: The signal modality.
        max_shift: Largest time shift, as a fraction of L, in [0, 1).
        stretch: Range of the time-stretch factor s (> 0); (1, 1) for none.
        gain: Range of the amplitude factor a; (1, 1) for none.
        noise: Standard deviation of the added Gaussian noise (>= 0), in the signal's units.

    Raises:
        ValueError: For a data set without a 1-D modality or a bad option, naming the value.

    Example:
        >>> from contrastlab.data import build_dataset
        >>> ds = build_dataset("mnist1d", split="test", n_samples=100)
        >>> out = SignalViews(ds)(ds.get(torch.arange(4)), torch.Generator().manual_seed(0))
        >>> {k: tuple(v.shape) for k, v in out.items()}
        {'view1': (4, 40), 'view2': (4, 40)}
    """

    def __init__(self, dataset: Dataset, *, n_views: int = 2, modality: str = "signal", max_shift: float = 0.1,
                 stretch: Sequence[float] = (0.8, 1.25), gain: Sequence[float] = (0.8, 1.2), noise: float = 0.05):
        shape = require_modality(dataset, modality, ndim=1)
        check_count("n_views", n_views, 1, MAX_VIEWS)
        if not isinstance(max_shift, (int, float)) or not 0.0 <= max_shift < 1.0:
            raise ValueError(f"max_shift must be in [0, 1), got {max_shift!r}")
        if not isinstance(noise, (int, float)) or noise < 0:
            raise ValueError(f"noise must be >= 0, got {noise!r}")
        self.max_shift, self.noise = float(max_shift), float(noise)
        self.stretch = check_range("stretch", stretch, positive=True)
        self.gain = check_range("gain", gain)
        self.modality = modality
        self.view_names = tuple(f"view{i + 1}" for i in range(n_views))
        self.view_modalities = {v: modality for v in self.view_names}
        self.view_shapes = {v: shape for v in self.view_names}
        self.view_sources = {v: modality for v in self.view_names}

    def augment(self, x: Tensor, generator: torch.Generator) -> Tensor:
        """One random augmentation of signals (N, L)."""
        n, length = x.shape
        shift = uniform(n, -self.max_shift, self.max_shift, generator).to(x.device) * length
        stretch = uniform(n, *self.stretch, generator).to(x.device)
        gain = uniform(n, *self.gain, generator).to(device=x.device, dtype=x.dtype)
        eps = torch.randn(n, length, generator=generator).to(device=x.device, dtype=x.dtype)
        return gain[:, None] * warp_signal(x, shift, stretch) + self.noise * eps

    def __call__(self, batch: Batch, generator: torch.Generator) -> dict[str, Tensor]:
        x = batch.inputs[self.modality]
        return {v: self.augment(x, generator) for v in self.view_names}

    def eval_views(self, batch: Batch) -> dict[str, Tensor]:
        return {v: batch.inputs[self.modality] for v in self.view_names}
