"""Decoders for autoencoders: from an embedding back to an input's shape."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from torch import Tensor, nn

from contrastlab.encoders._checks import check_int, check_shape, check_widths


class ConvDecoder(nn.Module):
    r"""Mirror of :class:`~contrastlab.encoders.convnet.ConvNet`: a linear map to a small feature map,
    then 4×4 stride-2 transposed convolutions that double the size at each block.

    .. math::
        h_0 = \operatorname{reshape}(W_0 z), \qquad
        h_\ell = \operatorname{ReLU}\big(\operatorname{BN}(W_\ell \ast^{\top}_{2} h_{\ell-1})\big), \qquad
        \hat x = \operatorname{crop}(V \ast h_L)

    The starting map is :math:`\lceil H / 2^L \rceil \times \lceil W / 2^L \rceil`; the output is
    cropped to ``(H, W)``. The last layer is a linear 3×3 convolution (no activation), so the
    decoder can reach any target range.

    Args:
        latent_dim: width of the embedding ``z``.
        output_shape: per-item output shape ``(C, H, W)``.
        widths: channels of the starting map and after each upsampling block. The default mirrors
            the conv net's four stride-2 blocks (a 2×2 map at 32×32) and halves the width at each
            block, so decoding costs about as much as a few encoder passes rather than 25 of them.

    Shapes:
        forward: ``z`` ``(N, latent_dim)`` -> ``(N, C, H, W)``.

    Raises:
        ValueError: bad options, naming the value.

    References:
        Hinton & Salakhutdinov, "Reducing the dimensionality of data with neural networks",
        Science 2006; transposed convolutions as in Radford, Metz & Chintala, ICLR 2016.

    Example:
        >>> import torch
        >>> ConvDecoder(16, (3, 32, 32))(torch.randn(2, 16)).shape
        torch.Size([2, 3, 32, 32])
    """

    def __init__(self, latent_dim: int, output_shape: Sequence[int], *, widths: Sequence[int] = (256, 128, 64, 32, 16)) -> None:
        super().__init__()
        latent_dim = check_int("latent_dim", latent_dim)
        channels, height, width = check_shape("output_shape", tuple(output_shape), ndim=3)
        widths = check_widths("widths", widths)
        blocks = len(widths) - 1
        self.start = (widths[0], math.ceil(height / 2**blocks), math.ceil(width / 2**blocks))
        self.project = nn.Linear(latent_dim, math.prod(self.start))
        layers: list[nn.Module] = [nn.Unflatten(1, self.start), nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=True)]
        for c_in, c_out in zip(widths[:-1], widths[1:]):
            layers += [nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
        layers.append(nn.Conv2d(widths[-1], channels, 3, padding=1))
        self.net = nn.Sequential(*layers)
        self.output_shape = (channels, height, width)

    def forward(self, z: Tensor) -> Tensor:
        r"""Reconstructions of a batch of embeddings.

        Args:
            z: embeddings of shape ``(N, latent_dim)``.

        Returns:
            Reconstructions of shape ``(N, C, H, W)``.
        """
        x = self.net(self.project(z))
        return x[:, :, : self.output_shape[1], : self.output_shape[2]]


class MLPDecoder(nn.Module):
    r"""An MLP from the embedding to a flattened input, reshaped to the input's shape.

    .. math:: \hat x = \operatorname{reshape}\big(W_{L+1} \operatorname{ReLU}(\ldots \operatorname{ReLU}(W_1 z))\big)

    Args:
        latent_dim: width of the embedding ``z``.
        output_shape: the per-item output shape (any number of dimensions).
        hidden: widths of the hidden layers (may be empty: a linear decoder).

    Shapes:
        forward: ``z`` ``(N, latent_dim)`` -> ``(N, *output_shape)``.

    Raises:
        ValueError: bad options, naming the value.

    References:
        Hinton & Salakhutdinov, "Reducing the dimensionality of data with neural networks", Science 2006.

    Example:
        >>> import torch
        >>> MLPDecoder(8, (40, 10), hidden=[32])(torch.randn(2, 8)).shape
        torch.Size([2, 40, 10])
    """

    def __init__(self, latent_dim: int, output_shape: Sequence[int], *, hidden: Sequence[int] = (512,)) -> None:
        super().__init__()
        width = check_int("latent_dim", latent_dim)
        shape = check_shape("output_shape", tuple(output_shape), ndim=(1, 2, 3, 4))
        layers: list[nn.Module] = []
        for h in check_widths("hidden", hidden, allow_empty=True):
            layers += [nn.Linear(width, h), nn.ReLU(inplace=True)]
            width = h
        layers += [nn.Linear(width, math.prod(shape)), nn.Unflatten(1, shape)]
        self.net = nn.Sequential(*layers)
        self.output_shape = shape

    def forward(self, z: Tensor) -> Tensor:
        r"""Reconstructions of a batch of embeddings.

        Args:
            z: embeddings of shape ``(N, latent_dim)``.

        Returns:
            Reconstructions of shape ``(N, *output_shape)``.
        """
        return self.net(z)


def _auto(latent_dim: int, output_shape: Sequence[int], **options) -> nn.Module:
    return (ConvDecoder if len(output_shape) == 3 else MLPDecoder)(latent_dim, output_shape, **options)


#: Decoder name -> factory ``(latent_dim, output_shape, **options) -> nn.Module``. ``"auto"`` picks
#: the transposed-convolution decoder for images ``(C, H, W)`` and the MLP otherwise.
DECODERS: dict[str, Callable[..., nn.Module]] = {"auto": _auto, "conv": ConvDecoder, "mlp": MLPDecoder}


def build_decoder(name: str, latent_dim: int, output_shape: Sequence[int], **options) -> nn.Module:
    """Build the decoder registered as ``name``.

    Args:
        name: ``"auto"``, ``"conv"`` or ``"mlp"``.
        latent_dim: width of the embedding.
        output_shape: the per-item shape to reconstruct.
        **options: the decoder's keyword options.

    Returns:
        The decoder module.

    Raises:
        ValueError: an unknown name or option.

    Example:
        >>> type(build_decoder("auto", 8, (1, 16, 16))).__name__
        'ConvDecoder'
    """
    if name not in DECODERS:
        raise ValueError(f"unknown decoder {name!r}; known: {', '.join(sorted(DECODERS))}")
    try:
        return DECODERS[name](latent_dim, output_shape, **options)
    except TypeError as err:
        raise ValueError(f"bad options for decoder {name!r}: {err}") from None

