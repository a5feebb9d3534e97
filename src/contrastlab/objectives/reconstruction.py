r"""Reconstruction objectives: the autoencoder's mean squared error and its multimodal form.

A multimodal autoencoder encodes every modality, fuses the codes into one (with modality dropout, see
:mod:`contrastlab.encoders.fusion`) and decodes *every* modality from the fused code. Its objective is the
weighted mean of the per-modality errors, computed for all modalities whether or not they were dropped at the
input: reconstructing a dropped modality from the others is what teaches one modality to stand in for another.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from contrastlab.objectives._checks import check_non_negative
from contrastlab.objectives._reduction import check_reduction, reduce
from contrastlab.objectives._spec import ObjectiveSpec

__all__ = [
    "SPECS",
    "AutoencoderLoss",
    "MultimodalReconstruction",
    "multimodal_reconstruction",
    "reconstruction_loss",
]

def _check_same(recon: Tensor, target: Tensor, where: str) -> None:
    for name, t in (("reconstruction", recon), ("target", target)):
        if not isinstance(t, Tensor):
            raise ValueError(f"{name}{where} must be a tensor, got {type(t).__name__}")
        if not torch.is_floating_point(t):
            raise ValueError(f"{name}{where} must be floating point, got dtype {t.dtype}")
    if recon.shape != target.shape:
        raise ValueError(
            f"reconstruction{where} and target must have the same shape, got {tuple(recon.shape)} "
            f"and {tuple(target.shape)}"
        )


def _per_item_mse(recon: Tensor, target: Tensor) -> Tensor:
    """Each item's mean squared error over its own elements, shape ``(N,)``."""
    return F.mse_loss(recon, target, reduction="none").reshape(recon.shape[0], -1).mean(dim=1)


def reconstruction_loss(recon: Tensor, target: Tensor, *, reduction: str = "mean") -> Tensor:
    r"""Autoencoder reconstruction error, the squared error between a reconstruction and its input.

    .. math::

        \ell_i = \frac{1}{|x_i|} \sum_{j} (\hat x_{ij} - x_{ij})^2, \qquad
        \mathcal{L} = \frac{1}{N} \sum_i \ell_i \quad \text{(reduction="mean", the mean over every element)}

    The per-sample loss :math:`\ell_i` is item :math:`i`'s mean squared error, so ``"sum"`` is
    :math:`\sum_i \ell_i` and ``"none"`` returns :math:`\ell`, shape ``(N,)``, as for every loss in
    contrastlab (not ``F.mse_loss``'s element-wise sum and ``(N, *)``). Shapes must match exactly; there is no
    broadcasting (a broadcast ``(N, 1)`` against ``(N,)`` silently computes the wrong error).

    Args:
        recon: ``(N, *)`` the decoder's output :math:`\hat x`.
        target: ``(N, *)`` the input :math:`x`, same shape.
        reduction: ``"mean"`` (over every element), ``"sum"`` over items of :math:`\ell_i`, or ``"none"``
            for :math:`\ell`, shape ``(N,)``.

    Returns:
        A 0-dim tensor, or ``(N,)`` with ``reduction="none"``.

    Raises:
        ValueError: on an unknown ``reduction``, non-floating input, mismatched shapes, or a 0-dim input
            with ``"sum"`` / ``"none"`` (no items).

    References:
        Hinton & Salakhutdinov, "Reducing the Dimensionality of Data with Neural Networks", Science 313, 2006.

    Example:
        >>> x = torch.zeros(2, 3)
        >>> reconstruction_loss(x + 1.0, x)
        tensor(1.)
    """
    check_reduction(reduction)
    _check_same(recon, target, "")
    if reduction == "mean":
        return F.mse_loss(recon, target)
    if recon.dim() == 0:
        raise ValueError(f"reduction={reduction!r} needs a batch dimension (N, *), got 0-dim tensors")
    return reduce(_per_item_mse(recon, target), reduction)


def _check_weights(weights: Mapping[str, float] | None) -> dict[str, float] | None:
    if weights is None:
        return None
    if not isinstance(weights, Mapping) or not weights:
        raise ValueError(f"weights must be a non-empty mapping modality -> weight, got {weights!r}")
    checked = {str(k): check_non_negative(f"weights[{k!r}]", w) for k, w in weights.items()}
    if sum(checked.values()) <= 0:
        raise ValueError(f"weights must not all be zero, got {dict(weights)!r}")
    return checked


def _check_keys(what: str, keys, expected, expected_what: str) -> None:
    missing = sorted(set(expected) - set(keys))
    extra = sorted(set(keys) - set(expected))
    if missing or extra:
        parts = ([f"missing {missing}"] if missing else []) + ([f"unexpected {extra}"] if extra else [])
        raise ValueError(f"{what} must have the same modalities as {expected_what}: {'; '.join(parts)}")


def multimodal_reconstruction(
    recons: Mapping[str, Tensor],
    targets: Mapping[str, Tensor],
    *,
    weights: Mapping[str, float] | None = None,
    reduction: str = "mean",
) -> Tensor:
    r"""Weighted mean of the per-modality reconstruction errors of a multimodal autoencoder.

    .. math::

        \mathcal{L} = \frac{\sum_m w_m \, \mathrm{MSE}(\hat x_m, x_m)}{\sum_m w_m}, \qquad
        \mathrm{MSE}(\hat x_m, x_m) = \frac{1}{|x_m|} \sum_j (\hat x_{m,j} - x_{m,j})^2,

    with :math:`w_m = 1` when ``weights`` is None. Each modality's error is a mean over its own elements, so a
    large modality (an image) does not drown a small one (a label vector) unless the weights say so. Item
    :math:`i`'s loss is the same weighted mean of its own errors, and :math:`\mathcal{L}` is their mean.

    Args:
        recons: modality name -> ``(N, *)`` reconstruction decoded from the fused code.
        targets: modality name -> ``(N, *)`` input, same keys and shapes.
        weights: modality name -> :math:`w_m \geq 0` (not all zero), same keys; ``None`` for equal weights.
        reduction: ``"mean"``, ``"sum"`` over items, or ``"none"`` for each item's loss, shape ``(N,)``.

    Returns:
        A 0-dim tensor, or ``(N,)`` with ``reduction="none"``.

    Raises:
        ValueError: if the keys of ``recons``, ``targets`` and ``weights`` differ (naming the modalities), a
            modality's shapes differ (naming it), the batch sizes differ between modalities, a weight is
            negative or all are zero, or ``reduction`` is unknown.

    References:
        Ngiam et al., "Multimodal Deep Learning", ICML 2011.

    Example:
        >>> x = {"image": torch.zeros(4, 8), "audio": torch.zeros(4, 2)}
        >>> r = {"image": torch.ones(4, 8), "audio": torch.zeros(4, 2)}
        >>> multimodal_reconstruction(r, x), multimodal_reconstruction(r, x, weights={"image": 1.0, "audio": 3.0})
        (tensor(0.5000), tensor(0.2500))
    """
    check_reduction(reduction)
    for name, d in (("recons", recons), ("targets", targets)):
        if not isinstance(d, Mapping) or not d:
            raise ValueError(f"{name} must be a non-empty mapping modality -> tensor, got {type(d).__name__}")
    _check_keys("recons", recons.keys(), targets.keys(), "targets")
    weights = _check_weights(weights)
    if weights is not None:
        _check_keys("weights", weights.keys(), targets.keys(), "targets")
    batch = None
    for m in targets:
        _check_same(recons[m], targets[m], f" of modality {m!r}")
        if targets[m].dim() == 0:
            raise ValueError(f"target of modality {m!r} must have a batch dimension (N, *), got a 0-dim tensor")
        if batch is not None and targets[m].shape[0] != batch[1]:
            raise ValueError(
                f"every modality must have the same batch size, got {batch[1]} for {batch[0]!r} and "
                f"{targets[m].shape[0]} for {m!r}"
            )
        batch = batch or (m, targets[m].shape[0])

    total = None
    norm = 0.0
    for m in targets:
        w = 1.0 if weights is None else weights[m]
        if w == 0.0:
            continue
        error = F.mse_loss(recons[m], targets[m]) if reduction == "mean" else _per_item_mse(recons[m], targets[m])
        term = w * error
        total = term if total is None else total + term
        norm += w
    return total / norm if reduction == "mean" else reduce(total / norm, reduction)


class AutoencoderLoss(nn.Module):
    r"""Module form of :func:`reconstruction_loss` for the ``"reconstruction"`` calling convention.

    ``loss(recons, targets)`` takes two tensors, or two one-entry mappings with the same key (a single modality);
    for several modalities use :class:`MultimodalReconstruction`.

    Args:
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` (per item, ``(N,)``), as :func:`reconstruction_loss`.

    Raises:
        ValueError: on an unknown ``reduction``.

    Example:
        >>> AutoencoderLoss()({"image": torch.ones(2, 3)}, {"image": torch.zeros(2, 3)})
        tensor(1.)
    """

    def __init__(self, *, reduction: str = "mean") -> None:
        super().__init__()
        self.reduction = check_reduction(reduction)

    def forward(self, recons: Tensor | Mapping[str, Tensor], targets: Tensor | Mapping[str, Tensor]) -> Tensor:
        if isinstance(recons, Mapping) or isinstance(targets, Mapping):
            if not (isinstance(recons, Mapping) and isinstance(targets, Mapping)):
                raise ValueError("recons and targets must both be tensors or both be mappings modality -> tensor")
            if len(targets) != 1:
                raise ValueError(
                    f"the autoencoder loss reconstructs one modality, got {sorted(targets)}; "
                    "use 'multimodal_autoencoder' for several"
                )
            _check_keys("recons", recons.keys(), targets.keys(), "targets")
            (key,) = targets
            recons, targets = recons[key], targets[key]
        return reconstruction_loss(recons, targets, reduction=self.reduction)

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}"


class MultimodalReconstruction(nn.Module):
    r"""Module form of :func:`multimodal_reconstruction`: ``loss(recons: dict, targets: dict)``.

    Args:
        weights: modality name -> :math:`w_m \geq 0`, or ``None`` for equal weights.
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` (per item, ``(N,)``).

    Raises:
        ValueError: on bad weights or an unknown ``reduction``.

    Example:
        >>> loss = MultimodalReconstruction(weights={"image": 1.0, "text": 0.5})
        >>> loss({"image": torch.ones(2, 4), "text": torch.ones(2, 3)},
        ...      {"image": torch.zeros(2, 4), "text": torch.ones(2, 3)})
        tensor(0.6667)
    """

    def __init__(self, *, weights: Mapping[str, float] | None = None, reduction: str = "mean") -> None:
        super().__init__()
        self.weights = _check_weights(weights)
        self.reduction = check_reduction(reduction)

    def forward(self, recons: Mapping[str, Tensor], targets: Mapping[str, Tensor]) -> Tensor:
        return multimodal_reconstruction(recons, targets, weights=self.weights, reduction=self.reduction)

    def extra_repr(self) -> str:
        return f"weights={self.weights}, reduction={self.reduction!r}"


SPECS: list[ObjectiveSpec] = [
    ObjectiveSpec(
        name="autoencoder",
        factory=AutoencoderLoss,
        kind="reconstruction",
        formula="mean_j (x_hat_j - x_j)^2",
        reference="Hinton & Salakhutdinov 2006, Reducing the Dimensionality of Data with Neural Networks, Science",
        uses_negatives=False,
    ),
    ObjectiveSpec(
        name="multimodal_autoencoder",
        factory=MultimodalReconstruction,
        kind="reconstruction",
        formula="sum_m w_m mean_j (x_hat_mj - x_mj)^2 / sum_m w_m, every modality decoded from the fused code",
        reference="Ngiam et al. 2011, Multimodal Deep Learning, ICML",
        uses_negatives=False,
        min_modalities=2,
    ),
]
