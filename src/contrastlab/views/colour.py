r"""Colour spaces and channel maps, batched over (N, 3, H, W) RGB images in [0, 1].

* HSV with hue in *turns* :math:`h \in [0, 1)`:
  :math:`v = \max(r,g,b)`, :math:`s = (v - \min)/v`, and for the inverse
  :math:`c_n = v - v s \,\operatorname{clip}(\min(k_n, 4 - k_n), 0, 1)` with
  :math:`k_n = (n + 6h) \bmod 6`, :math:`n = 5, 3, 1` for R, G, B.
* CIE Lab (D65, 2° observer) from sRGB: linearise
  :math:`c \le 0.04045 ? c/12.92 : ((c+0.055)/1.055)^{2.4}`, map to XYZ with the sRGB matrix, divide
  by the white point, :math:`L = 116 f(Y) - 16`, :math:`a = 500 (f(X) - f(Y))`,
  :math:`b = 200 (f(Y) - f(Z))` with :math:`f(t) = t^{1/3}` above :math:`(6/29)^3` and
  :math:`t / (3 (6/29)^2) + 4/29` below.
* Full-range YCbCr (JPEG): :math:`Y = 0.299R + 0.587G + 0.114B`, :math:`C_b = 0.5 + 0.564 (B - Y)`,
  :math:`C_r = 0.5 + 0.713 (R - Y)`.

References:
    Smith, "Color Gamut Transform Pairs", SIGGRAPH 1978 (HSV).
    CIE 15:2004 Colorimetry; IEC 61966-2-1 (sRGB).
    ITU-T T.871 / JFIF (full-range YCbCr).
    Tian, Krishnan & Isola, "Contrastive Multiview Coding", ECCV 2020 (L vs ab and Y vs CbCr views).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

GRAY_WEIGHTS = (0.299, 0.587, 0.114)
_RGB_TO_XYZ = ((0.412453, 0.357580, 0.180423), (0.212671, 0.715160, 0.072169), (0.019334, 0.119193, 0.950227))
_WHITE_D65 = (0.95047, 1.0, 1.08883)


def _check_rgb(image: Tensor) -> None:
    if image.dim() != 4 or image.shape[1] != 3:
        raise ValueError(f"expected RGB images (N, 3, H, W), got shape {tuple(image.shape)}")


def rgb_to_gray(image: Tensor) -> Tensor:
    r"""Luma :math:`0.299R + 0.587G + 0.114B`, (N, 1, H, W) from (N, 3, H, W).

    Example:
        >>> rgb_to_gray(torch.ones(1, 3, 2, 2)).shape
        torch.Size([1, 1, 2, 2])
    """
    _check_rgb(image)
    r, g, b = image.unbind(1)
    return (GRAY_WEIGHTS[0] * r + GRAY_WEIGHTS[1] * g + GRAY_WEIGHTS[2] * b).unsqueeze(1)


def rgb_to_hsv(image: Tensor, eps: float = 1e-8) -> Tensor:
    """RGB (N, 3, H, W) to HSV with hue in turns [0, 1), saturation and value in [0, 1].

    Example:
        >>> rgb_to_hsv(torch.tensor([0.0, 1.0, 0.0]).view(1, 3, 1, 1)).flatten().tolist()
        [0.3333333432674408, 1.0, 1.0]
    """
    _check_rgb(image)
    r, g, b = image.unbind(1)
    v = image.amax(dim=1)
    delta = v - image.amin(dim=1)
    inv = 1.0 / delta.clamp(min=1e-12)
    h = torch.where(r == v, torch.remainder((g - b) * inv, 6.0),
                    torch.where(g == v, (b - r) * inv + 2.0, (r - g) * inv + 4.0))
    h = torch.where(delta > 0, h / 6.0, torch.zeros_like(h))
    s = delta / (v + eps)
    return torch.stack([torch.remainder(h, 1.0), s, v], dim=1)


def hsv_to_rgb(image: Tensor) -> Tensor:
    """HSV (hue in turns) (N, 3, H, W) to RGB.

    Example:
        >>> hsv_to_rgb(torch.tensor([2 / 3, 1.0, 1.0]).view(1, 3, 1, 1)).flatten().tolist()
        [0.0, 0.0, 1.0]
    """
    h, s, v = image[:, 0:1], image[:, 1:2], image[:, 2:3]
    n = torch.tensor([5.0, 3.0, 1.0], dtype=image.dtype, device=image.device).view(1, 3, 1, 1)
    k = torch.remainder(n + 6.0 * h, 6.0)
    return v - v * s * torch.minimum(k, 4.0 - k).clamp(0.0, 1.0)


def rgb_to_lab(image: Tensor) -> Tensor:
    """sRGB (N, 3, H, W) in [0, 1] to CIE Lab: L in [0, 100], a and b roughly in [-110, 110].

    Example:
        >>> [round(v, 2) for v in rgb_to_lab(torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1)).flatten().tolist()]
        [53.24, 80.09, 67.2]
    """
    _check_rgb(image)
    lin = torch.where(image > 0.04045, ((image + 0.055).clamp(min=0) / 1.055) ** 2.4, image / 12.92)
    m = torch.tensor(_RGB_TO_XYZ, dtype=image.dtype, device=image.device)
    xyz = torch.einsum("ij,njhw->nihw", m, lin)
    xyz = xyz / torch.tensor(_WHITE_D65, dtype=image.dtype, device=image.device).view(1, 3, 1, 1)
    delta = 6.0 / 29.0
    f = torch.where(xyz > delta ** 3, xyz.clamp(min=delta ** 3) ** (1.0 / 3.0),
                    xyz / (3 * delta ** 2) + 4.0 / 29.0)
    fx, fy, fz = f.unbind(1)
    return torch.stack([116.0 * fy - 16.0, 500.0 * (fx - fy), 200.0 * (fy - fz)], dim=1)


def rgb_to_ycbcr(image: Tensor) -> Tensor:
    """RGB (N, 3, H, W) to full-range YCbCr, every channel in [0, 1].

    Example:
        >>> rgb_to_ycbcr(torch.ones(1, 3, 1, 1)).flatten().tolist()
        [1.0, 0.5, 0.5]
    """
    y = rgb_to_gray(image)
    cb = (image[:, 2:3] - y) * 0.564 + 0.5
    cr = (image[:, 0:1] - y) * 0.713 + 0.5
    return torch.cat([y, cb, cr], dim=1)


def sobel_magnitude(image: Tensor) -> Tensor:
    r"""Gradient magnitude :math:`\sqrt{g_x^2 + g_y^2}` of each channel with the Sobel kernels / 8
    (replicated borders), which estimate the derivative per pixel: a ramp of slope 1 gives 1, a unit
    step 0.5 on each side of the edge. (N, C, H, W) -> (N, C, H, W).

    Example:
        >>> x = torch.zeros(1, 1, 4, 4); x[..., 2:] = 1.0
        >>> sobel_magnitude(x)[0, 0, 0].tolist()
        [0.0, 0.5, 0.5, 0.0]
    """
    n, c, h, w = image.shape
    kx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], dtype=image.dtype,
                      device=image.device) / 8.0
    kernels = torch.stack([kx, kx.t()]).unsqueeze(1)  # (2, 1, 3, 3)
    padded = F.pad(image.reshape(n * c, 1, h, w), (1, 1, 1, 1), mode="replicate")
    g = F.conv2d(padded, kernels)
    return torch.sqrt(g[:, 0] ** 2 + g[:, 1] ** 2).reshape(n, c, h, w)
