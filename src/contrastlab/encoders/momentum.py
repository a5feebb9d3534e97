r"""Momentum-updated target towers (MoCo, BYOL): a frozen copy and one update function.

The target tower :math:`\xi` follows the online tower :math:`\theta` by an exponential moving average,
applied after each optimiser step,

.. math:: \xi \leftarrow m\,\xi + (1 - m)\,\theta ,

with :math:`m` constant (MoCo) or raised from :math:`m_0` towards 1 by a cosine over training (BYOL):
:math:`m_k = 1 - (1 - m_0)\,\frac{\cos(\pi k / K) + 1}{2}`. Buffers (BatchNorm's running statistics)
are copied, not averaged. The target never receives gradients; its outputs are computed under
``torch.no_grad``.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

__all__ = ["MOMENTUM_SCHEDULES", "MomentumTargets", "check_momentum", "momentum_at", "update_momentum"]

MOMENTUM_SCHEDULES = ("cosine", "constant")


def check_momentum(momentum: float) -> float:
    """``momentum`` must be a number in ``[0, 1)``.

    Raises:
        ValueError: naming the value.
    """
    if isinstance(momentum, bool) or not isinstance(momentum, (int, float)) or not 0 <= momentum < 1:
        raise ValueError(f"momentum must be a number in [0, 1), got {momentum!r}")
    return float(momentum)


def momentum_at(base: float, step: int, total: int, schedule: str = "cosine") -> float:
    r"""The momentum after ``step`` of ``total`` optimiser steps.

    Args:
        base: :math:`m_0 \in [0, 1)`.
        step: steps completed, :math:`k`.
        total: :math:`K \ge 1`.
        schedule: ``"cosine"`` (BYOL: :math:`m_0 \to 1`) or ``"constant"`` (MoCo).

    Returns:
        :math:`m_k`.

    References:
        Grill et al., "Bootstrap your own latent", NeurIPS 2020, section 3.2;
        He et al., "Momentum Contrast for Unsupervised Visual Representation Learning", CVPR 2020.

    Example:
        >>> momentum_at(0.99, 0, 100), momentum_at(0.99, 100, 100), momentum_at(0.99, 50, 100, "constant")
        (0.99, 1.0, 0.99)
    """
    if schedule == "constant":
        return base
    if schedule != "cosine":
        raise ValueError(f"schedule must be one of {', '.join(map(repr, MOMENTUM_SCHEDULES))}, got {schedule!r}")
    return 1.0 - (1.0 - base) * (math.cos(math.pi * min(step, total) / max(total, 1)) + 1.0) / 2.0


@torch.no_grad()
def update_momentum(online: nn.Module, target: nn.Module, momentum: float) -> None:
    r"""One EMA step, :math:`\xi \leftarrow m\,\xi + (1-m)\,\theta` for every parameter; buffers copied.

    Example:
        >>> a, b = nn.Linear(2, 2), nn.Linear(2, 2)
        >>> update_momentum(a, b, 0.0)
        >>> bool(torch.equal(a.weight, b.weight))
        True
    """
    targets, onlines = list(target.parameters()), [p.detach() for p in online.parameters()]
    if len(targets) != len(onlines):
        raise ValueError(f"target and online modules differ: {len(targets)} and {len(onlines)} parameters")
    if targets:
        torch._foreach_lerp_(targets, onlines, 1.0 - momentum)  # one fused update, not one kernel per tensor
    buffers_t, buffers_o = list(target.buffers()), list(online.buffers())
    if len(buffers_t) != len(buffers_o):
        raise ValueError(f"target and online modules differ: {len(buffers_t)} and {len(buffers_o)} buffers")
    if buffers_t:
        torch._foreach_copy_(buffers_t, buffers_o)


class MomentumTargets(nn.Module):
    r"""Frozen copies of the online towers, one per tower, updated by :func:`update_momentum`.

    Args:
        towers: the online towers (tower name -> module); each is deep-copied.
        momentum: the base momentum :math:`m_0 \in [0, 1)`.
        schedule: ``"cosine"`` or ``"constant"`` (see :func:`momentum_at`).

    Raises:
        ValueError: a momentum outside ``[0, 1)`` or an unknown schedule.

    Example:
        >>> online = nn.ModuleDict({"x": nn.Linear(3, 2)})
        >>> targets = MomentumTargets(online, momentum=0.5, schedule="constant")
        >>> with torch.no_grad(): _ = online["x"].weight.add_(1.0)
        >>> before = targets.towers["x"].weight.clone()
        >>> targets.update(online, step=1, total=10)
        >>> bool(torch.allclose(targets.towers["x"].weight, before + 0.5))
        True
    """

    def __init__(self, towers: nn.ModuleDict, *, momentum: float, schedule: str = "cosine") -> None:
        super().__init__()
        self.momentum = check_momentum(momentum)
        momentum_at(self.momentum, 0, 1, schedule)  # checks the schedule's name
        self.schedule = schedule
        self.towers = copy.deepcopy(towers)
        for p in self.towers.parameters():
            p.requires_grad_(False)

    def update(self, online: nn.ModuleDict, *, step: int, total: int) -> None:
        """Move every target tower towards its online tower (call after the optimiser step ``step``)."""
        m = momentum_at(self.momentum, step, total, self.schedule)
        for name, tower in self.towers.items():
            update_momentum(online[name], tower, m)

    def extra_repr(self) -> str:
        return f"momentum={self.momentum:g}, schedule={self.schedule!r}"
