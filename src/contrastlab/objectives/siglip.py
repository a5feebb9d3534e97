r"""SigLIP: the pairwise sigmoid loss, every (z1, z2) pair an independent binary classification.

Where CLIP's softmax normalises each row over the batch, SigLIP asks of every pair :math:`(i, j)` alone
whether it is a positive (:math:`i = j`) or a negative, with a learnable scale and bias. The scale and bias
are parameters of the model (the loss is stateless) and are passed in as floats or 0-dim tensors.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from contrastlab.objectives._checks import check_pair
from contrastlab.objectives._reduction import check_reduction, reduce

__all__ = ["SigLIP", "siglip"]


def _check_scalar(name: str, value: float | Tensor, *, positive: bool) -> float | Tensor:
    """A finite number (``> 0`` if ``positive``) or a 0-dim floating tensor, whose value is not read."""
    if isinstance(value, Tensor):
        if value.dim() != 0 or not torch.is_floating_point(value):
            raise ValueError(
                f"{name} tensor must be 0-dim floating point, got shape {tuple(value.shape)} and dtype {value.dtype}"
            )
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number{' > 0' if positive else ''}, got {value!r}")
    if positive and not value > 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def siglip(
    z1: Tensor,
    z2: Tensor,
    *,
    logit_scale: float | Tensor,
    logit_bias: float | Tensor,
    normalize: bool = True,
    reduction: str = "mean",
) -> Tensor:
    r"""SigLIP's pairwise sigmoid loss.

    With logits :math:`\ell_{ij} = t\, z^{(1)\top}_i z^{(2)}_j + b` (cosines when ``normalize=True``) and
    labels :math:`y_{ij} = 1` if :math:`i = j`, else :math:`-1`,

    .. math::
        \mathcal{L} = -\frac{1}{N}\sum_{i=1}^{N}\sum_{j=1}^{N} \log \sigma\big(y_{ij}\, \ell_{ij}\big)
            = \frac{1}{N}\sum_{i,j} \operatorname{softplus}(-y_{ij}\, \ell_{ij}),

    computed with ``logsigmoid``, stable for large logits. The normalisation is the paper's: the sum over
    all :math:`N^2` pairs divided by the batch size. With :math:`N = 1` it is
    :math:`-\log\sigma(t \cos(z^{(1)}, z^{(2)}) + b)`.

    ``logit_scale`` is the scale :math:`t` itself, not its log. The paper learns :math:`t'` with
    :math:`t = \exp(t')`, initialised :math:`t' = \log 10`, :math:`b = -10` (so the many negatives start with
    a small loss); the model holds the parameters and passes ``t'.exp()`` here. open_clip's ``SigLipLoss``
    takes the scale the same way.

    References:
        Zhai, Mustafa, Kolesnikov, Beyer, "Sigmoid Loss for Language Image Pre-Training" (SigLIP), ICCV 2023,
        arXiv:2303.15343, equation (1) and algorithm 1.

    Args:
        z1: first modality's embeddings (images), shape ``(N, D)``.
        z2: second modality's embeddings (texts), shape ``(N, D)``; row ``i`` pairs with row ``i`` of ``z1``.
        logit_scale: :math:`t > 0`, a float or a 0-dim tensor (the gradient flows to it).
        logit_bias: :math:`b`, a float or a 0-dim tensor (the gradient flows to it).
        normalize: L2-normalise inside (as the paper); ``False`` uses raw dot products.
        reduction: ``"mean"`` (sum over pairs / :math:`N`, the paper's), ``"sum"`` (over all pairs), or
            ``"none"``: shape ``(N,)``, row :math:`i`'s sum over :math:`j`.

    Returns:
        A 0-dim tensor, or shape ``(N,)`` with ``reduction="none"``.

    Raises:
        ValueError: if ``logit_scale`` is not a finite number > 0 or a 0-dim floating tensor,
            ``logit_bias`` is not a finite number or a 0-dim floating tensor, ``reduction`` is unknown, or
            the shapes differ.

    Example:
        >>> z = torch.eye(3)
        >>> loss = siglip(z, z, logit_scale=10.0, logit_bias=-5.0)   # positives at logit 5, negatives at -5
        >>> round(float(loss), 4)                                    # 3 softplus(-5) = 3 * 0.006715
        0.0201
    """
    check_reduction(reduction)
    logit_scale = _check_scalar("logit_scale", logit_scale, positive=True)
    logit_bias = _check_scalar("logit_bias", logit_bias, positive=False)
    check_pair(z1, z2)
    if normalize:
        z1, z2 = F.normalize(z1, dim=-1), F.normalize(z2, dim=-1)
    logits = logit_scale * (z1 @ z2.T) + logit_bias
    n = z1.shape[0]
    labels = 2 * torch.eye(n, dtype=logits.dtype, device=logits.device) - 1
    per_row = -F.logsigmoid(labels * logits).sum(dim=1)
    return reduce(per_row, reduction)


class SigLIP(nn.Module):
    r"""Module form of :func:`siglip`; ``forward(z1, z2, logit_scale, logit_bias)``.

    The scale and bias are inputs, not state: they are parameters of the model (learned as
    :math:`t = \exp(t')` and :math:`b`).

    References:
        Zhai et al. (SigLIP), ICCV 2023, arXiv:2303.15343.

    Args:
        normalize: cosine similarity.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.

    Raises:
        ValueError: if ``reduction`` is unknown.

    Example:
        >>> t_prime, b = torch.tensor(2.3026, requires_grad=True), torch.tensor(-10.0, requires_grad=True)
        >>> SigLIP()(torch.randn(8, 16), torch.randn(8, 16), t_prime.exp(), b).shape
        torch.Size([])
    """

    def __init__(self, *, normalize: bool = True, reduction: str = "mean") -> None:
        super().__init__()
        self.normalize = bool(normalize)
        self.reduction = check_reduction(reduction)

    def forward(self, z1: Tensor, z2: Tensor, logit_scale: float | Tensor, logit_bias: float | Tensor) -> Tensor:
        return siglip(
            z1, z2, logit_scale=logit_scale, logit_bias=logit_bias, normalize=self.normalize, reduction=self.reduction
        )

    def extra_repr(self) -> str:
        return f"normalize={self.normalize}, reduction={self.reduction!r}"
