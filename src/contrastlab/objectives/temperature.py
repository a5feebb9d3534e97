r"""The softmax temperature: a fixed number or CLIP's learnable, clamped logit scale.

Contrastive losses divide similarities by a temperature :math:`\tau`. A fixed :math:`\tau` is a plain
float argument of the loss. A *learned* :math:`\tau` is a parameter of the model, not of the loss (the
losses stay stateless): :class:`LearnableTemperature` lives next to the encoders, and its output, a 0-dim
tensor, is passed to the loss as ``temperature=``, so gradients reach it through the loss.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from contrastlab.objectives._checks import check_positive

__all__ = ["LearnableTemperature", "check_temperature"]


def check_temperature(temperature: float | Tensor) -> float | Tensor:
    r"""Validate a temperature given as a number or as a 0-dim tensor.

    A number must be finite and > 0. A tensor must be 0-dim and floating point; its value is not read
    (reading it would synchronise an accelerator), so a tensor from :class:`LearnableTemperature`, which is
    positive by construction, is the intended use.

    Args:
        temperature: :math:`\tau`, a float or a 0-dim floating tensor (gradients flow through it).

    Returns:
        The temperature, a float or the same tensor.

    Raises:
        ValueError: if a number is not finite and > 0, or a tensor is not 0-dim floating point.

    Example:
        >>> check_temperature(0.1)
        0.1
    """
    if isinstance(temperature, Tensor):
        if temperature.dim() != 0 or not torch.is_floating_point(temperature):
            raise ValueError(
                "temperature tensor must be 0-dim floating point, got shape "
                f"{tuple(temperature.shape)} and dtype {temperature.dtype}"
            )
        return temperature
    if isinstance(temperature, bool):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
    return check_positive("temperature", temperature)


class LearnableTemperature(nn.Module):
    r"""CLIP's learnable temperature: a logit scale stored as a log and clamped from above.

    The parameter is :math:`\theta = \log s` with the logit scale :math:`s = 1/\tau`. The forward pass
    returns :math:`\tau = e^{-\theta}` (always positive; storing the log makes multiplicative updates
    additive). The scale is kept at most ``max_scale`` (CLIP: 100, i.e. :math:`\tau \ge 0.01`) by
    :meth:`clamp_`, which clamps the *parameter in place after the optimiser step*,
    :math:`\theta \leftarrow \min(\theta, \log s_{\max})`. Clamping inside the forward pass instead
    would give :math:`\theta` a zero gradient forever once it passed the bound; clamped in place, the
    gradient still flows and the temperature can rise again. The training loop calls :meth:`clamp_` as
    an after-step hook; in your own loop, call it after ``optimizer.step()``.

    References:
        Radford et al., "Learning Transferable Visual Models From Natural Language Supervision" (CLIP),
        ICML 2021, arXiv:2103.00020, section 2.5.

    Args:
        init: initial temperature :math:`\tau_0` (CLIP: 0.07). Must be > 0 and
            :math:`1/\tau_0 \le` ``max_scale``.
        max_scale: largest logit scale :math:`s_{\max} = 1/\tau_{\min}`; must be > 0.

    Raises:
        ValueError: if ``init`` or ``max_scale`` is not a finite number > 0, or ``1/init > max_scale``.

    Example:
        >>> temp = LearnableTemperature(init=0.07)
        >>> tau = temp()
        >>> tau.shape, round(tau.item(), 4)
        (torch.Size([]), 0.07)
        >>> with torch.no_grad(): _ = temp.log_scale.fill_(10.0)
        >>> round(temp.clamp_()().item(), 4)
        0.01
    """

    def __init__(self, init: float = 0.07, max_scale: float = 100.0) -> None:
        super().__init__()
        init = check_positive("init", init)
        self.max_scale = check_positive("max_scale", max_scale)
        if 1.0 / init > self.max_scale:
            raise ValueError(
                f"init must be >= 1/max_scale = {1.0 / self.max_scale:g} so the clamp does not bind at the start, "
                f"got init={init!r}"
            )
        self.log_scale = nn.Parameter(torch.tensor(math.log(1.0 / init)))

    @property
    def scale(self) -> Tensor:
        r"""The clamped logit scale :math:`s = 1/\tau`, a 0-dim tensor."""
        return self.log_scale.clamp(max=math.log(self.max_scale)).exp()

    def forward(self) -> Tensor:
        r"""The temperature :math:`\tau`.

        Returns:
            A 0-dim tensor :math:`\tau > 0` that carries the gradient to ``log_scale``.
        """
        return torch.exp(-self.log_scale)

    @torch.no_grad()
    def clamp_(self) -> LearnableTemperature:
        r"""Clamp the parameter in place, :math:`\theta \leftarrow \min(\theta, \log s_{\max})`; returns ``self``."""
        self.log_scale.clamp_(max=math.log(self.max_scale))
        return self

    def extra_repr(self) -> str:
        return f"temperature={self().item():.4g}, max_scale={self.max_scale:g}"
