r"""Batched image augmentations with one parameter per sample: a whole batch in a few tensor passes.

Every function takes images (N, C, H, W) float in [0, 1] and per-sample parameters (N, ...) and
returns new images; nothing draws random numbers here (see :mod:`contrastlab.views.simclr`).
The conventions are torchvision's (used by SimCLR), which kornia's functions of the same name also follow:

.. math::
    \text{brightness: } x f, \quad \text{contrast: } f x + (1 - f)\,\overline{\mathrm{gray}(x)}, \quad
    \text{saturation: } f x + (1 - f)\,\mathrm{gray}(x), \quad
    \text{hue: } \mathrm{HSV}^{-1}(h + \delta \bmod 1, s, v),

each clipped to [0, 1]. The crop samples output pixel :math:`(i, j)` of an :math:`h \times w` crop of box
:math:`(x_0, y_0, x_1, y_1)` (inclusive pixel centres) at
:math:`x = x_0 + j (x_1 - x_0)/(w - 1)`, :math:`y = y_0 + i (y_1 - y_0)/(h - 1)` by bilinear interpolation;
a horizontal flip is the same box with :math:`x_0` and :math:`x_1` swapped, so crop and flip cost one pass.
Hue is rotated in closed form from max, min and chroma (no HSV tensor, no arg-max).

References:
    Chen, Kornblith, Norouzi & Hinton, "A Simple Framework for Contrastive Learning of Visual
    Representations", ICML 2020, Appendix A (the augmentation family and its parameters).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from contrastlab.views.colour import rgb_to_gray


def _per_sample(factor: Tensor, image: Tensor) -> Tensor:
    factor = torch.as_tensor(factor, dtype=image.dtype, device=image.device)
    if factor.shape != (image.shape[0],):
        raise ValueError(f"expected one factor per image, shape ({image.shape[0]},), got {tuple(factor.shape)}")
    return factor.view(-1, 1, 1, 1)


def _gray(image: Tensor) -> Tensor:
    return rgb_to_gray(image) if image.shape[1] == 3 else image


def interpolation_matrix(coords: Tensor, n_in: int) -> Tensor:
    r"""Linear-interpolation weights :math:`M_{j,i} = \max(0, 1 - |u_j - i|)`, (N, n_out, n_in).

    Row j reads source position :math:`u_j` (N, n_out) as a blend of its two neighbouring samples;
    positions outside ``[0, n_in - 1]`` lose the missing neighbour's weight (zero padding).
    """
    grid = torch.arange(n_in, dtype=coords.dtype, device=coords.device)
    return (1.0 - (coords.unsqueeze(-1) - grid).abs()).clamp_(min=0.0)


def crop_resize(image: Tensor, boxes: Tensor, size: tuple[int, int]) -> Tensor:
    r"""Crop each image to its box and resize to ``size`` by bilinear interpolation (zeros outside).

    The crop is axis-aligned, so bilinear sampling separates into two batched matrix products,
    :math:`M_y\, X\, M_x^\top` with :func:`interpolation_matrix` weights (the same values as
    ``grid_sample(..., align_corners=True)``, several times faster).

    Args:
        image: (N, C, H, W).
        boxes: (N, 4) as ``(x0, y0, x1, y1)``, inclusive pixel-centre coordinates (``(0, 0, W-1, H-1)``
            is the whole image); ``x0 > x1`` flips horizontally, ``y0 > y1`` vertically.
        size: Output ``(h, w)``, each >= 2.

    Returns:
        (N, C, h, w).

    Example:
        >>> x = torch.arange(16.0).view(1, 1, 4, 4)
        >>> crop_resize(x, torch.tensor([[1.0, 1.0, 2.0, 2.0]]), (2, 2))[0, 0].tolist()
        [[5.0, 6.0], [9.0, 10.0]]
    """
    n, c, h_in, w_in = image.shape
    h, w = size
    if h < 2 or w < 2:
        raise ValueError(f"size must be at least (2, 2), got {size}")
    boxes = boxes.to(image.dtype)
    x0, y0, x1, y1 = boxes.unbind(1)
    tx = torch.linspace(0.0, 1.0, w, dtype=image.dtype, device=image.device)
    ty = torch.linspace(0.0, 1.0, h, dtype=image.dtype, device=image.device)
    mx = interpolation_matrix(x0[:, None] + (x1 - x0)[:, None] * tx, w_in)  # (N, w, W)
    my = interpolation_matrix(y0[:, None] + (y1 - y0)[:, None] * ty, h_in)  # (N, h, H)
    # Two plain bmm calls with the channels folded in (broadcast matmul would copy the weights C times).
    rows = torch.bmm(image.reshape(n, c * h_in, w_in), mx.transpose(1, 2))  # (N, C*H, w)
    rows = rows.view(n, c, h_in, w).transpose(1, 2).reshape(n, h_in, c * w)
    return torch.bmm(my, rows).view(n, h, c, w).transpose(1, 2).contiguous()


def adjust_brightness(image: Tensor, factor: Tensor) -> Tensor:
    """Multiply by ``factor`` (N,) and clip (1 leaves the image unchanged)."""
    return (image * _per_sample(factor, image)).clamp(0.0, 1.0)


def adjust_contrast(image: Tensor, factor: Tensor) -> Tensor:
    """Blend with the mean grey level of each image by ``factor`` (N,) and clip."""
    f = _per_sample(factor, image)
    mean = _gray(image).mean(dim=(1, 2, 3), keepdim=True)
    return (f * image + (1.0 - f) * mean).clamp(0.0, 1.0)


def adjust_saturation(image: Tensor, factor: Tensor) -> Tensor:
    """Blend with the grey image by ``factor`` (N,) and clip (0 gives grey; RGB only)."""
    f = _per_sample(factor, image)
    return (f * image + (1.0 - f) * rgb_to_gray(image)).clamp(0.0, 1.0)


def adjust_hue(image: Tensor, shift: Tensor) -> Tensor:
    r"""Rotate the hue by ``shift`` (N,) turns (in [-0.5, 0.5]; 0 leaves the image unchanged; RGB only).

    Computed without forming HSV: with :math:`v = \max`, chroma :math:`C = v - \min` and hue
    :math:`H` in sixths, channel :math:`n \in (5, 3, 1)` of the result is
    :math:`v - C \operatorname{clip}(\min(k, 4 - k), 0, 1)`, :math:`k = (n + H + 6\delta) \bmod 6`
    (the HSV round trip, since :math:`v s = C`).
    """
    r, g, b = image[:, 0], image[:, 1], image[:, 2]
    v = image.amax(dim=1)
    chroma = v - image.amin(dim=1)
    # Masks times values instead of torch.where (several times faster on CPU); ties go to r, then g.
    is_r = r == v
    is_g = (g == v) & ~is_r
    is_b = ~(is_r | is_g)
    hue_c = is_r * (g - b) + is_g * (b - r + 2.0 * chroma) + is_b * (r - g + 4.0 * chroma)
    hue = hue_c / chroma.clamp(min=1e-12) + 6.0 * _per_sample(shift, image).view(-1, 1, 1)
    hue = hue - 6.0 * torch.floor(hue / 6.0)  # grey pixels (C = 0) get any hue: the result is v
    out = []
    for n in (5.0, 3.0, 1.0):
        k = hue + n
        k = k - 6.0 * (k >= 6.0)
        out.append(v - chroma * torch.minimum(k, 4.0 - k).clamp_(0.0, 1.0))
    return torch.stack(out, dim=1).clamp_(0.0, 1.0)


def grayscale(image: Tensor, mask: Tensor) -> Tensor:
    """Replace the images where ``mask`` (N,) bool is true by their grey level, kept in 3 channels."""
    gray = rgb_to_gray(image).expand_as(image)
    return torch.where(mask.view(-1, 1, 1, 1), gray, image)


def gaussian_kernels(sigma: Tensor, kernel_size: int) -> Tensor:
    r"""Normalised 1-D Gaussian kernels :math:`\propto e^{-t^2 / 2\sigma^2}`, :math:`t = -k/2..k/2`, (N, k)."""
    t = torch.arange(kernel_size, dtype=sigma.dtype, device=sigma.device) - (kernel_size - 1) / 2.0
    k = torch.exp(-(t[None] ** 2) / (2.0 * sigma[:, None] ** 2))
    return k / k.sum(dim=1, keepdim=True)


def gaussian_blur(image: Tensor, sigma: Tensor, kernel_size: int) -> Tensor:
    """Separable Gaussian blur with one ``sigma`` (N,) per image, reflected borders; odd ``kernel_size``.

    All images go through two grouped convolutions (one kernel per image and channel).

    Example:
        >>> gaussian_blur(torch.ones(2, 3, 8, 8), torch.tensor([0.5, 2.0]), 3).allclose(torch.ones(2, 3, 8, 8))
        True
    """
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be a positive odd int, got {kernel_size}")
    n, c, h, w = image.shape
    pad = kernel_size // 2
    if pad >= min(h, w):
        raise ValueError(f"kernel_size {kernel_size} is too large for {h}x{w} images")
    k = gaussian_kernels(torch.as_tensor(sigma, dtype=image.dtype, device=image.device), kernel_size)
    k = k.repeat_interleave(c, dim=0)  # (N*C, k)
    x = F.pad(image.reshape(1, n * c, h, w), (pad, pad, pad, pad), mode="reflect")
    x = F.conv2d(x, k.view(n * c, 1, 1, kernel_size), groups=n * c)
    x = F.conv2d(x, k.view(n * c, 1, kernel_size, 1), groups=n * c)
    return x.view(n, c, h, w)


def default_blur_kernel(size: int) -> int:
    """About a tenth of the image side, odd and at least 3 (SimCLR's choice)."""
    k = max(3, int(round(0.1 * size)))
    return k if k % 2 else k + 1


def sample_crop_boxes(n: int, height: int, width: int, *, scale: tuple[float, float],
                      ratio: tuple[float, float], generator: torch.Generator, tries: int = 10) -> Tensor:
    r"""Random-resized-crop boxes, (n, 4) ``(x0, y0, x1, y1)`` inclusive pixel centres.

    For each sample, ``tries`` candidates draw an area fraction :math:`s \sim U(\text{scale})` and an
    aspect ratio :math:`r` log-uniform in ``ratio``, giving :math:`w = \sqrt{s r}\,W`,
    :math:`h = \sqrt{s / r}\,H`; the first that fits is kept (else the last, shrunk to fit), and its
    position is uniform inside the image. All in continuous coordinates.
    """
    area = height * width
    s = scale[0] + (scale[1] - scale[0]) * torch.rand(n, tries, generator=generator)
    log_r = math.log(ratio[0]) + (math.log(ratio[1]) - math.log(ratio[0])) * torch.rand(n, tries, generator=generator)
    r = torch.exp(log_r)
    w = torch.sqrt(s * area * r)
    h = torch.sqrt(s * area / r)
    fits = (w <= width) & (h <= height)
    first = torch.where(fits.any(dim=1), fits.to(torch.int8).argmax(dim=1), torch.full((n,), tries - 1))
    rows = torch.arange(n)
    w = w[rows, first].clamp(2.0, width)
    h = h[rows, first].clamp(2.0, height)
    x0 = (width - w) * torch.rand(n, generator=generator)
    y0 = (height - h) * torch.rand(n, generator=generator)
    return torch.stack([x0, y0, x0 + w - 1.0, y0 + h - 1.0], dim=1)
