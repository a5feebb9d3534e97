"""A 1-D convolutional encoder for spectrograms and signals, pooled over the valid time steps only."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from contrastlab.encoders._checks import check_int, check_shape, check_widths


def conv_output_lengths(lengths: Tensor, *, kernel_size: int, stride: int, padding: int, layers: int) -> Tensor:
    r"""Valid lengths after ``layers`` identical 1-D convolutions.

    .. math:: L' = \max\big(1, \lfloor (L + 2p - k) / s \rfloor + 1\big)

    Args:
        lengths: valid input lengths, shape ``(N,)``, int64.
        kernel_size: ``k``.
        stride: ``s``.
        padding: ``p``.
        layers: how many convolutions are applied.

    Returns:
        Valid output lengths, shape ``(N,)``, int64 (at least 1: an empty item keeps one step).

    Example:
        >>> import torch
        >>> conv_output_lengths(torch.tensor([100, 7]), kernel_size=5, stride=2, padding=2, layers=2).tolist()
        [25, 2]
    """
    out = lengths.to(torch.int64)
    for _ in range(layers):
        out = torch.div(out + 2 * padding - kernel_size, stride, rounding_mode="floor") + 1
        out = out.clamp_min(1)
    return out


def masked_max_pool(h: Tensor, lengths: Tensor | None) -> Tensor:
    r"""Max over time of the valid steps of each item.

    .. math:: y_{n,c} = \max_{t < L_n} h_{n,c,t}

    Args:
        h: features of shape ``(N, C, T)``.
        lengths: valid lengths of shape ``(N,)`` (``None``: every step is valid); values above ``T``
            are read as ``T``.

    Returns:
        Pooled features of shape ``(N, C)``.

    Example:
        >>> import torch
        >>> h = torch.tensor([[[1.0, 5.0, 9.0]]])
        >>> masked_max_pool(h, torch.tensor([2])).tolist()
        [[5.0]]
    """
    if lengths is None:
        return h.amax(dim=2)
    steps = torch.arange(h.shape[2], device=h.device)
    valid = steps[None, :] < lengths.to(h.device)[:, None]
    return h.masked_fill(~valid[:, None, :], float("-inf")).amax(dim=2)


class Conv1dEncoder(nn.Module):
    r"""Strided 1-D convolutions over time, then max pooling over the valid steps (DAVEnet-like).

    A spectrogram item ``(F, T)`` enters with its ``F`` frequency bands as channels; a signal item
    ``(T,)`` enters as one channel. Each block is

    .. math::
        h_\ell = \operatorname{ReLU}\big(\operatorname{BN}(W_\ell \ast_{s} h_{\ell-1})\big),

    and the output is :math:`y_c = \max_{t < L'} h_{L, c, t}` where :math:`L'` is the item's valid
    length after the convolutions (:func:`conv_output_lengths`). Steps beyond an item's valid
    length are zeroed before every convolution (as if the item ended there, with the convolution's
    own zero padding), so what the padding holds and how long it is never change the output.

    Args:
        input_shape: per-item shape, ``(F, T)`` for a spectrogram or ``(T,)`` for a signal
            (``T`` is the padded length; any length works at run time).
        widths: output channels of each block.
        kernel_size: temporal kernel size (odd).
        stride: temporal stride of each block.
        batch_norm: use ``BatchNorm1d`` after each convolution. Padding frames enter its batch
            statistics; set ``False`` when items have very different lengths.

    Shapes:
        forward: ``x`` ``(N, F, T)`` or ``(N, T)``, ``lengths`` ``(N,)`` -> ``(N, widths[-1])``.

    Raises:
        ValueError: bad options, or inputs whose shape does not match ``input_shape``.

    References:
        Harwath, Recasens, Surís, Chuang, Torralba & Glass, "Jointly discovering visual objects and
        spoken words from raw sensory input", IJCV 2019 (DAVEnet).

    Example:
        >>> import torch
        >>> net = Conv1dEncoder((40, 200), widths=[16, 32])
        >>> net(torch.randn(3, 40, 200), lengths=torch.tensor([200, 120, 9])).shape
        torch.Size([3, 32])
    """

    uses_lengths = True

    def __init__(
        self,
        input_shape: Sequence[int],
        *,
        widths: Sequence[int] = (128, 256, 256, 512),
        kernel_size: int = 5,
        stride: int = 2,
        batch_norm: bool = True,
    ) -> None:
        super().__init__()
        shape = check_shape("input_shape", tuple(input_shape), ndim=(1, 2))
        widths = check_widths("widths", widths)
        kernel_size = check_int("kernel_size", kernel_size)
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd, got {kernel_size}")
        stride = check_int("stride", stride)
        channels = 1 if len(shape) == 1 else shape[0]
        blocks: list[nn.Module] = []
        for out_channels in widths:
            conv = nn.Conv1d(channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2, bias=not batch_norm)
            norm = nn.BatchNorm1d(out_channels) if batch_norm else nn.Identity()
            blocks.append(nn.Sequential(conv, norm, nn.ReLU(inplace=True)))
            channels = out_channels
        self.blocks = nn.ModuleList(blocks)
        self.input_shape = shape
        self.kernel_size, self.stride = kernel_size, stride
        self.out_dim = widths[-1]

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        r"""Pooled features of a batch of sequences.

        Args:
            x: ``(N, F, T)`` spectrograms or ``(N, T)`` signals, padded at the end.
            lengths: valid lengths in input steps, shape ``(N,)``; ``None`` when nothing is padded.

        Returns:
            Features of shape ``(N, out_dim)``.

        Raises:
            ValueError: a channel count that differs from ``input_shape`` or a bad ``lengths``.
        """
        if len(self.input_shape) == 1:
            if x.dim() != 2:
                raise ValueError(f"Conv1dEncoder expects signals of shape (N, T), got {tuple(x.shape)}")
            x = x.unsqueeze(1)
        elif x.dim() != 3 or x.shape[1] != self.input_shape[0]:
            raise ValueError(f"Conv1dEncoder expects inputs of shape (N, {self.input_shape[0]}, T), got {tuple(x.shape)}")
        if lengths is not None and (lengths.shape != (x.shape[0],) or bool((lengths < 1).any())):
            raise ValueError(f"lengths must be positive with shape ({x.shape[0]},), got {lengths.tolist()}")
        h = x
        for block in self.blocks:
            if lengths is not None:  # zero the padding so it cannot leak into valid steps
                h = _zero_beyond(h, lengths)
            h = block(h)
            if lengths is not None:
                lengths = conv_output_lengths(
                    lengths, kernel_size=self.kernel_size, stride=self.stride, padding=self.kernel_size // 2, layers=1
                )
        return masked_max_pool(h, lengths)


def _zero_beyond(h: Tensor, lengths: Tensor) -> Tensor:
    steps = torch.arange(h.shape[2], device=h.device)
    return h * (steps[None, :] < lengths.to(h.device)[:, None]).unsqueeze(1).to(h.dtype)
