"""``reduction``, the same for every loss: the mean or sum of the per-sample losses, or the losses themselves.

A loss with a value per sample (per anchor) takes ``reduction`` in ``{"mean", "sum", "none"}``, as PyTorch's
losses do, and ``"none"`` returns those values, so ``loss(reduction="none").mean()`` is the ``"mean"`` loss
and ``.sum()`` the ``"sum"`` loss. A loss that is a statistic of the whole batch (a correlation, a
uniformity) has no per-sample values: it takes ``reduction`` for a uniform signature but accepts only
``"mean"``.
"""

from __future__ import annotations

from torch import Tensor

from contrastlab.objectives._checks import check_choice

__all__ = ["REDUCTIONS", "check_batch_reduction", "check_reduction", "reduce"]

REDUCTIONS = ("mean", "sum", "none")


def check_reduction(reduction: str) -> str:
    """``reduction`` must be ``"mean"``, ``"sum"`` or ``"none"``; ``ValueError`` naming the value otherwise."""
    return check_choice("reduction", reduction, REDUCTIONS)


def check_batch_reduction(loss: str, reduction: str) -> str:
    """For a loss with no per-sample values: ``reduction`` must be ``"mean"``.

    Raises:
        ValueError: naming the loss and the value (``"sum"`` and ``"none"`` need per-sample losses).
    """
    check_reduction(reduction)
    if reduction != "mean":
        raise ValueError(
            f"{loss} is a statistic of the whole batch and has no per-sample losses, so reduction must be "
            f"'mean', got {reduction!r}"
        )
    return reduction


def reduce(per_sample: Tensor, reduction: str) -> Tensor:
    """The mean or sum of ``per_sample`` (any shape), or ``per_sample`` itself for ``"none"``."""
    if reduction == "mean":
        return per_sample.mean()
    if reduction == "sum":
        return per_sample.sum()
    return per_sample
