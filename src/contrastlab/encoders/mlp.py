"""A multi-layer perceptron over flattened inputs."""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import Tensor, nn

from contrastlab.encoders._checks import check_probability, check_shape, check_widths


class MLP(nn.Module):
    r"""Flatten each item, then hidden layers of affine map, batch norm and ReLU.

    .. math::
        h_0 = \operatorname{vec}(x), \qquad
        h_\ell = \operatorname{ReLU}\big(\operatorname{BN}(W_\ell h_{\ell-1} + b_\ell)\big), \quad \ell = 1..L

    The features are :math:`h_L`; their size is ``hidden[-1]`` (``out_dim``).

    Args:
        input_shape: the per-item shape, e.g. ``(D,)`` or ``(C, H, W)``; items are flattened.
        hidden: widths of the hidden layers, at least one.
        batch_norm: put a ``BatchNorm1d`` after every affine map.
        dropout: dropout rate after every activation, in ``[0, 1)``.

    Shapes:
        forward: ``x`` of shape ``(N, *input_shape)`` -> ``(N, hidden[-1])``.

    Raises:
        ValueError: a bad ``input_shape``, ``hidden`` or ``dropout``, naming the value.

    References:
        Rumelhart, Hinton & Williams, "Learning representations by back-propagating errors", Nature 1986.

    Example:
        >>> import torch
        >>> net = MLP((2, 3), hidden=[16, 8])
        >>> net(torch.randn(4, 2, 3)).shape
        torch.Size([4, 8])
    """

    uses_lengths = False

    def __init__(
        self, input_shape: Sequence[int], *, hidden: Sequence[int] = (512, 512), batch_norm: bool = True, dropout: float = 0.0
    ) -> None:
        super().__init__()
        shape = check_shape("input_shape", tuple(input_shape), ndim=(1, 2, 3, 4))
        widths = check_widths("hidden", hidden)
        rate = check_probability("dropout", dropout)
        layers: list[nn.Module] = [nn.Flatten()]
        width_in = math.prod(shape)
        for width in widths:
            layers.append(nn.Linear(width_in, width, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm1d(width))
            layers.append(nn.ReLU(inplace=True))
            if rate > 0:
                layers.append(nn.Dropout(rate))
            width_in = width
        self.net = nn.Sequential(*layers)
        self.input_shape = shape
        self.out_dim = widths[-1]

    def forward(self, x: Tensor) -> Tensor:
        r"""Features of a batch.

        Args:
            x: inputs of shape ``(N, *input_shape)``.

        Returns:
            Features of shape ``(N, out_dim)``.

        Raises:
            ValueError: when the per-item shape differs from ``input_shape``.
        """
        if tuple(x.shape[1:]) != self.input_shape:
            raise ValueError(f"MLP expects items of shape {self.input_shape}, got a batch of shape {tuple(x.shape)}")
        return self.net(x)
