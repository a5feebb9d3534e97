"""ResNet-18 in its CIFAR form: a 3×3 stem without max-pooling, for small images."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from contrastlab.encoders._checks import check_int, check_shape


class BasicBlock(nn.Module):
    r"""Two 3×3 convolutions with batch norm and an identity (or 1×1 projection) shortcut.

    .. math::
        y = \operatorname{ReLU}\big(\operatorname{BN}(W_2 \ast \operatorname{ReLU}(\operatorname{BN}(W_1 \ast x)))
            + S x\big)

    Args:
        in_channels: channels of the input.
        out_channels: channels of the output.
        stride: stride of the first convolution (2 halves the spatial size).

    Shapes:
        forward: ``(N, in_channels, H, W)`` -> ``(N, out_channels, ceil(H / stride), ceil(W / stride))``.

    References:
        He, Zhang, Ren & Sun, "Deep residual learning for image recognition", CVPR 2016.

    Example:
        >>> import torch
        >>> BasicBlock(8, 16, stride=2)(torch.randn(2, 8, 8, 8)).shape
        torch.Size([2, 16, 4, 4])
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False), nn.BatchNorm2d(out_channels)
            )

    def forward(self, x: Tensor) -> Tensor:
        h = self.bn1(self.conv1(x)).relu()
        h = self.bn2(self.conv2(h))
        return (h + self.shortcut(x)).relu()


class CifarResNet18(nn.Module):
    r"""ResNet-18 for small images: a 3×3 stride-1 stem, no max-pool, four stages of two blocks.

    Stages have ``width``, ``2 width``, ``4 width``, ``8 width`` channels; stages 2–4 start with a
    stride-2 block. Global average pooling gives ``8 width`` features (512 for the default width).

    Args:
        input_shape: the per-item shape ``(C, H, W)``.
        width: channels of the stem and the first stage (64 in the paper).

    Shapes:
        forward: ``x`` of shape ``(N, C, H, W)`` -> ``(N, 8 * width)``.

    Raises:
        ValueError: a bad ``input_shape`` or ``width``, naming the value.

    References:
        He, Zhang, Ren & Sun, "Deep residual learning for image recognition", CVPR 2016 (the CIFAR
        stem: Chen, Kornblith, Norouzi & Hinton, "A simple framework for contrastive learning of
        visual representations", ICML 2020, appendix B.9).

    Example:
        >>> import torch
        >>> net = CifarResNet18((3, 16, 16), width=8)
        >>> net(torch.randn(2, 3, 16, 16)).shape
        torch.Size([2, 64])
    """

    uses_lengths = False

    def __init__(self, input_shape: Sequence[int], *, width: int = 64) -> None:
        super().__init__()
        channels = check_shape("input_shape", tuple(input_shape), ndim=3)[0]
        width = check_int("width", width)
        self.stem = nn.Sequential(
            nn.Conv2d(channels, width, 3, stride=1, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True)
        )
        stages: list[nn.Module] = []
        in_channels = width
        for i, mult in enumerate((1, 2, 4, 8)):
            out_channels = width * mult
            stride = 1 if i == 0 else 2
            stages.append(nn.Sequential(BasicBlock(in_channels, out_channels, stride), BasicBlock(out_channels, out_channels)))
            in_channels = out_channels
        self.stages = nn.Sequential(*stages)
        self.input_shape = tuple(int(s) for s in input_shape)
        self.out_dim = in_channels

    def forward(self, x: Tensor) -> Tensor:
        r"""Globally pooled features of a batch of images.

        Args:
            x: images of shape ``(N, C, H, W)``.

        Returns:
            Features of shape ``(N, out_dim)``.

        Raises:
            ValueError: when the number of channels differs from ``input_shape``.
        """
        if x.dim() != 4 or x.shape[1] != self.input_shape[0]:
            raise ValueError(f"CifarResNet18 expects images of shape (N, {self.input_shape[0]}, H, W), got {tuple(x.shape)}")
        return self.stages(self.stem(x)).mean(dim=(2, 3))
