"""The small image encoder of the contrastive-learning homework: stride-2 convolutions, then flatten."""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import Tensor, nn

from contrastlab.encoders._checks import check_shape, check_widths

_POOLS = ("flatten", "avg")


class ConvNet(nn.Module):
    r"""A stack of 3×3 stride-2 convolutions, each followed by batch norm and ReLU.

    Each block halves the spatial size (rounding up):

    .. math::
        h_\ell = \operatorname{ReLU}\big(\operatorname{BN}(W_\ell \ast_{2} h_{\ell-1})\big), \qquad
        H_\ell = \lceil H_{\ell-1} / 2 \rceil

    With the default widths 32-64-128-256 a 32×32 image ends as a 256×2×2 map; ``pool="flatten"``
    keeps where things are (1024 features), ``pool="avg"`` averages over positions (256 features) and
    so forgets absolute location.

    Args:
        input_shape: the per-item shape ``(C, H, W)``.
        widths: output channels of each block.
        batch_norm: use ``BatchNorm2d`` after each convolution.
        pool: ``"flatten"`` or ``"avg"`` (global average pooling).

    Shapes:
        forward: ``x`` of shape ``(N, C, H, W)`` -> ``(N, out_dim)``.

    Raises:
        ValueError: a bad ``input_shape``, ``widths`` or ``pool``, naming the value.

    References:
        The encoder of the homework's Shapes-world experiment (see ``reference/``); the layout follows
        Radford, Metz & Chintala, "Unsupervised representation learning with deep convolutional
        generative adversarial networks", ICLR 2016.

    Example:
        >>> import torch
        >>> net = ConvNet((3, 32, 32))
        >>> net.out_dim, net(torch.randn(2, 3, 32, 32)).shape
        (1024, torch.Size([2, 1024]))
    """

    uses_lengths = False

    def __init__(
        self,
        input_shape: Sequence[int],
        *,
        widths: Sequence[int] = (32, 64, 128, 256),
        batch_norm: bool = True,
        pool: str = "flatten",
    ) -> None:
        super().__init__()
        channels, height, width = check_shape("input_shape", tuple(input_shape), ndim=3)
        widths = check_widths("widths", widths)
        if pool not in _POOLS:
            raise ValueError(f"pool must be one of {', '.join(map(repr, _POOLS))}, got {pool!r}")
        layers: list[nn.Module] = []
        for out_channels in widths:
            layers.append(nn.Conv2d(channels, out_channels, 3, stride=2, padding=1, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm2d(out_channels))
            layers.append(nn.ReLU(inplace=True))
            channels = out_channels
            height, width = math.ceil(height / 2), math.ceil(width / 2)
        self.features = nn.Sequential(*layers)
        self.pool = pool
        self.input_shape = (int(input_shape[0]), int(input_shape[1]), int(input_shape[2]))
        self.feature_map_shape = (channels, height, width)
        self.out_dim = channels * height * width if pool == "flatten" else channels

    def forward(self, x: Tensor) -> Tensor:
        r"""Features of a batch of images.

        Args:
            x: images of shape ``(N, C, H, W)``.

        Returns:
            Features of shape ``(N, out_dim)``.

        Raises:
            ValueError: when the per-item shape differs from ``input_shape``.
        """
        same = tuple(x.shape[1:]) == self.input_shape
        if x.dim() != 4 or x.shape[1] != self.input_shape[0] or (self.pool == "flatten" and not same):
            wanted = self.input_shape if self.pool == "flatten" else (self.input_shape[0], "H", "W")
            raise ValueError(f"ConvNet expects images of shape {wanted}, got a batch of shape {tuple(x.shape)}"
                             + ("" if x.dim() != 4 or x.shape[1] != self.input_shape[0] else
                                " (pool: avg reads any size)"))
        h = self.features(x)
        return h.flatten(1) if self.pool == "flatten" else h.mean(dim=(2, 3))
