"""Optimisers (AdamW, SGD with momentum, LARS) and the warm-up + cosine learning-rate schedule."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import Tensor, nn

_OPTIMIZERS = ("adamw", "sgd", "lars")
_SCHEDULES = ("cosine", "constant")


class LARS(torch.optim.Optimizer):
    r"""SGD with momentum and a layer-wise trust ratio (LARS), as used by SimCLR.

    For each parameter :math:`w` with gradient :math:`g`, in groups with ``lars=True``:

    .. math::
        u = g + \lambda w, \qquad
        r = \begin{cases} \eta \lVert w \rVert / \lVert u \rVert & \lVert w \rVert > 0,\ \lVert u \rVert > 0 \\
            1 & \text{otherwise} \end{cases}, \qquad
        m \leftarrow \mu m + r u, \qquad w \leftarrow w - \alpha m

    Groups with ``lars=False`` (biases and norm parameters, by convention) skip the trust ratio
    and get their own ``weight_decay`` (usually 0): plain SGD with momentum.

    Args:
        params: parameters or parameter groups (a group may set ``lars``, ``weight_decay``).
        lr: learning rate :math:`\alpha > 0`.
        momentum: :math:`\mu \in [0, 1)`.
        weight_decay: :math:`\lambda \ge 0`.
        trust_coefficient: :math:`\eta > 0`.

    Raises:
        ValueError: an option out of range, naming the value.

    References:
        You, Gitman & Ginsburg, "Large batch training of convolutional networks", arXiv:1708.03888,
        2017; Chen et al., "A simple framework for contrastive learning of visual representations",
        ICML 2020.

    Example:
        >>> w = torch.nn.Parameter(torch.ones(3))
        >>> opt = LARS([w], lr=0.1)
        >>> w.grad = torch.ones(3); opt.step()
        >>> [round(v, 4) for v in w.tolist()]
        [0.9999, 0.9999, 0.9999]
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict],
        *,
        lr: float,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        trust_coefficient: float = 0.001,
    ) -> None:
        if not lr > 0:
            raise ValueError(f"lr must be > 0, got {lr!r}")
        if not 0 <= momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {momentum!r}")
        if not weight_decay >= 0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay!r}")
        if not trust_coefficient > 0:
            raise ValueError(f"trust_coefficient must be > 0, got {trust_coefficient!r}")
        defaults = dict(lr=lr, momentum=momentum, weight_decay=weight_decay, trust_coefficient=trust_coefficient, lars=True)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):  # noqa: D102 - documented on the class
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for w in group["params"]:
                if w.grad is None:
                    continue
                u = w.grad.add(w, alpha=group["weight_decay"]) if group["weight_decay"] else w.grad.clone()
                if group["lars"]:
                    w_norm, u_norm = torch.linalg.vector_norm(w), torch.linalg.vector_norm(u)
                    ratio = torch.where(
                        (w_norm > 0) & (u_norm > 0), group["trust_coefficient"] * w_norm / u_norm, torch.ones_like(w_norm)
                    )
                    u.mul_(ratio)
                state = self.state[w]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = u.clone()
                else:
                    state["momentum_buffer"].mul_(group["momentum"]).add_(u)
                w.add_(state["momentum_buffer"], alpha=-group["lr"])
        return loss


def param_groups(modules: Iterable[nn.Module], *, weight_decay: float, exclude_bias_and_norm: bool) -> list[dict]:
    """Split trainable parameters into a decayed group and (optionally) a group of biases and norms.

    A parameter with at most one dimension (a bias, a norm's scale or shift, a scalar temperature)
    goes to the second group, which gets no weight decay and no LARS trust ratio. Parameters
    reachable from several modules are listed once.

    Example:
        >>> groups = param_groups([nn.Linear(3, 2)], weight_decay=0.1, exclude_bias_and_norm=True)
        >>> [len(g["params"]) for g in groups], [g["weight_decay"] for g in groups]
        ([1, 1], [0.1, 0.0])
    """
    seen: set[int] = set()
    decay, plain = [], []
    for module in modules:
        for p in module.parameters():
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            (plain if exclude_bias_and_norm and p.dim() <= 1 else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay, "lars": True}]
    if plain:
        groups.append({"params": plain, "weight_decay": 0.0, "lars": False})
    return groups


def build_optimizer(
    name: str,
    modules: Iterable[nn.Module],
    *,
    lr: float,
    weight_decay: float = 0.0,
    momentum: float = 0.9,
    nesterov: bool = False,
    betas: tuple[float, float] = (0.9, 0.999),
    trust_coefficient: float = 0.001,
    exclude_bias_and_norm: bool = True,
) -> torch.optim.Optimizer:
    """Build ``"adamw"``, ``"sgd"`` (with momentum) or ``"lars"`` over the modules' parameters.

    Raises:
        ValueError: an unknown name or a module list without trainable parameters.

    Example:
        >>> type(build_optimizer("lars", [nn.Linear(2, 2)], lr=0.1)).__name__
        'LARS'
    """
    if name not in _OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {', '.join(map(repr, _OPTIMIZERS))}, got {name!r}")
    groups = param_groups(modules, weight_decay=weight_decay, exclude_bias_and_norm=exclude_bias_and_norm)
    if not any(g["params"] for g in groups):
        raise ValueError("there are no trainable parameters to optimise")
    if name == "adamw":
        for g in groups:
            g.pop("lars")
        return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas), weight_decay=weight_decay)
    if name == "sgd":
        for g in groups:
            g.pop("lars")
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay)
    return LARS(groups, lr=lr, momentum=momentum, weight_decay=weight_decay, trust_coefficient=trust_coefficient)


def lr_factor(step: int, *, total_steps: int, warmup_steps: int = 0, schedule: str = "cosine", min_ratio: float = 0.0) -> float:
    r"""The learning-rate multiplier at ``step`` (0-based): linear warm-up, then cosine or constant.

    .. math::
        f(s) = \begin{cases}
            (s + 1) / W & s < W \\
            r + (1 - r)\,\tfrac12\big(1 + \cos(\pi \tfrac{s - W}{\max(1, T - W)})\big) & \text{cosine} \\
            1 & \text{constant}
        \end{cases}

    Args:
        step: the optimisation step about to be taken, ``0 <= step``.
        total_steps: :math:`T`, the number of steps in the run.
        warmup_steps: :math:`W`.
        schedule: ``"cosine"`` or ``"constant"`` after warm-up.
        min_ratio: :math:`r`, where the cosine ends.

    Returns:
        The multiplier of the peak learning rate.

    Raises:
        ValueError: an unknown schedule.

    References:
        Loshchilov & Hutter, "SGDR: stochastic gradient descent with warm restarts", ICLR 2017;
        Goyal et al., "Accurate, large minibatch SGD: training ImageNet in 1 hour", arXiv:1706.02677.

    Example:
        >>> [round(lr_factor(s, total_steps=10, warmup_steps=2), 3) for s in (0, 1, 2, 6, 9)]
        [0.5, 1.0, 1.0, 0.5, 0.038]
    """
    if schedule not in _SCHEDULES:
        raise ValueError(f"schedule must be one of {', '.join(map(repr, _SCHEDULES))}, got {schedule!r}")
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set every parameter group's learning rate."""
    for group in optimizer.param_groups:
        group["lr"] = lr
