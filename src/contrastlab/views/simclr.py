r"""SimCLR's augmentation views: each view is an independent random augmentation of the same image.

One augmentation, with per-sample random parameters (Chen et al. 2020, Appendix A):
random resized crop (area fraction :math:`s \sim U(\text{crop\_scale})`, aspect ratio log-uniform in
``crop_ratio``) resized back to ``size``; horizontal flip with probability ``flip_p``; with probability
``jitter_p`` a colour jitter with factors :math:`U(1-b, 1+b)` for brightness, contrast and saturation and
a hue shift :math:`U(-h, h)` turns, applied in one random order per batch; grey scale with probability
``gray_p``; Gaussian blur with :math:`\sigma \sim U(\text{blur\_sigma})` with probability ``blur_p``.
The defaults are SimCLR's with colour strength 0.5 (0.4, 0.4, 0.4, 0.1).

References:
    Chen, Kornblith, Norouzi & Hinton, "A Simple Framework for Contrastive Learning of Visual
    Representations", ICML 2020.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from contrastlab.data.base import Batch, Dataset
from contrastlab.views import augment as A
from contrastlab.views._common import MAX_SIDE, MAX_VIEWS, ViewsBase, check_count, check_probability, check_range, require_modality, uniform


class SimCLRAugment:
    r"""A random SimCLR augmentation of a batch of images, (N, C, H, W) -> (N, C, h, w).

    Args:
        size: Output ``(h, w)``.
        crop_scale: Range of the crop's area fraction, within (0, 1].
        crop_ratio: Range of the crop's aspect ratio (width / height).
        flip_p: Probability of a horizontal flip.
        jitter_p: Probability of the colour jitter.
        brightness, contrast, saturation: Jitter strengths b in [0, 1]: factors U(1 - b, 1 + b).
        hue: Hue jitter h in [0, 0.5] turns: shift U(-h, h).
        gray_p: Probability of grey scale (RGB only).
        blur_p: Probability of a Gaussian blur.
        blur_sigma: Range of the blur's sigma in pixels.
        blur_kernel: Odd kernel size (default: about 10% of the output side, at least 3).

    Raises:
        ValueError: For an option out of range, naming it and its value.
    """

    def __init__(self, *, size: tuple[int, int], crop_scale: Sequence[float] = (0.2, 1.0),
                 crop_ratio: Sequence[float] = (3 / 4, 4 / 3), flip_p: float = 0.5, jitter_p: float = 0.8,
                 brightness: float = 0.4, contrast: float = 0.4, saturation: float = 0.4, hue: float = 0.1,
                 gray_p: float = 0.2, blur_p: float = 0.5, blur_sigma: Sequence[float] = (0.1, 2.0),
                 blur_kernel: int | None = None):
        if not isinstance(size, (list, tuple)) or len(size) != 2:
            raise ValueError(f"size must be (height, width) in pixels, got {size!r}")
        self.size = (check_count("size[0]", size[0], 2, MAX_SIDE), check_count("size[1]", size[1], 2, MAX_SIDE))
        self.crop_scale = check_range("crop_scale", crop_scale, low=0.0, high=1.0, positive=True)
        self.crop_ratio = check_range("crop_ratio", crop_ratio, positive=True)
        self.flip_p, self.jitter_p = check_probability("flip_p", flip_p), check_probability("jitter_p", jitter_p)
        self.gray_p, self.blur_p = check_probability("gray_p", gray_p), check_probability("blur_p", blur_p)
        for name, value, top in (("brightness", brightness, 1.0), ("contrast", contrast, 1.0),
                                 ("saturation", saturation, 1.0), ("hue", hue, 0.5)):
            if not isinstance(value, (int, float)) or not 0.0 <= value <= top:
                raise ValueError(f"{name} must be in [0, {top}], got {value!r}")
        self.brightness, self.contrast, self.saturation, self.hue = map(float, (brightness, contrast, saturation, hue))
        self.blur_sigma = check_range("blur_sigma", blur_sigma, positive=True)
        k = A.default_blur_kernel(min(self.size)) if blur_kernel is None else blur_kernel
        if not isinstance(k, int) or k < 1 or k % 2 == 0 or k // 2 >= min(self.size):
            raise ValueError(f"blur_kernel must be a positive odd int smaller than the image, got {blur_kernel!r}")
        self.blur_kernel = k

    def __call__(self, images: Tensor, generator: torch.Generator) -> Tensor:
        n, c, h, w = images.shape
        # Every random number is drawn, in a fixed order, whatever the options: same seed, same stream.
        boxes = A.sample_crop_boxes(n, h, w, scale=self.crop_scale, ratio=self.crop_ratio, generator=generator)
        flip = torch.rand(n, generator=generator) < self.flip_p
        jitter = torch.rand(n, generator=generator) < self.jitter_p
        factors = [uniform(n, max(0.0, 1.0 - s), 1.0 + s, generator)
                   for s in (self.brightness, self.contrast, self.saturation)]
        shift = uniform(n, -self.hue, self.hue, generator)
        order = torch.randperm(4, generator=generator).tolist()
        gray = torch.rand(n, generator=generator) < self.gray_p
        blur = torch.rand(n, generator=generator) < self.blur_p
        sigma = uniform(n, *self.blur_sigma, generator)

        dev = images.device  # parameters come from the (CPU) generator, then follow the images
        # Which branches run is decided on the CPU copies: no wait for the device.
        any_jitter, any_gray, blurred = bool(jitter.any()), bool(gray.any()), torch.nonzero(blur).flatten()
        jitter, gray = jitter.to(dev), gray.to(dev)
        factors, shift, sigma = [f.to(dev) for f in factors], shift.to(dev), sigma.to(dev)
        boxes = torch.where(flip[:, None], boxes[:, [2, 1, 0, 3]], boxes)
        x = A.crop_resize(images, boxes.to(device=dev, dtype=images.dtype), self.size)
        if any_jitter:
            ops = [(A.adjust_brightness, factors[0], self.brightness),
                   (A.adjust_contrast, factors[1], self.contrast),
                   (A.adjust_saturation, factors[2], self.saturation if c == 3 else 0.0),
                   (A.adjust_hue, shift, self.hue if c == 3 else 0.0)]
            for k in order:
                op, value, strength = ops[k]
                if strength == 0.0:
                    continue
                neutral = 0.0 if op is A.adjust_hue else 1.0
                value = torch.where(jitter, value, torch.full_like(value, neutral)).to(x.dtype)
                x = op(x, value)
        if c == 3 and any_gray:
            x = A.grayscale(x, gray)
        if len(blurred):
            idx = blurred.to(dev)
            x = x.clone()
            x[idx] = A.gaussian_blur(x[idx], sigma[idx].to(x.dtype), self.blur_kernel)
        return x


def resize(images: Tensor, size: tuple[int, int]) -> Tensor:
    """Whole-image bilinear resize (identity when the size already matches)."""
    n, _, h, w = images.shape
    if (h, w) == tuple(size):
        return images
    box = torch.tensor([0.0, 0.0, w - 1.0, h - 1.0], dtype=images.dtype, device=images.device).expand(n, 4)
    return A.crop_resize(images, box, size)


class SimCLRViews(ViewsBase):
    r"""``n_views`` independent SimCLR augmentations of each image: views ``view1``, ``view2``, ...

    All views are read by one image tower (modality ``"image"``).

    Args:
        dataset: The data set (must have an image modality).
        n_views: Number of views, >= 1.
        modality: The image modality to augment.
        size: Output side (int) or ``(h, w)``; default the input size.
        **options: :class:`SimCLRAugment` options (crop_scale, crop_ratio, flip_p, jitter_p,
            brightness, contrast, saturation, hue, gray_p, blur_p, blur_sigma, blur_kernel).

    Raises:
        ValueError: For a data set without the modality or a bad option, naming the value.

    Example:
        >>> from contrastlab.data import build_dataset
        >>> ds = build_dataset("shapes", n_items=8)
        >>> views = SimCLRViews(ds)
        >>> out = views(ds.get(torch.arange(4)), torch.Generator().manual_seed(0))
        >>> {k: tuple(v.shape) for k, v in out.items()}
        {'view1': (4, 3, 32, 32), 'view2': (4, 3, 32, 32)}
    """

    def __init__(self, dataset: Dataset, *, n_views: int = 2, modality: str = "image",
                 size: int | Sequence[int] | None = None, **options):
        check_count("n_views", n_views, 1, MAX_VIEWS)
        shape = require_modality(dataset, modality, ndim=3)
        hw = tuple(shape[1:]) if size is None else ((size, size) if isinstance(size, int) else tuple(size))
        self.augment = SimCLRAugment(size=hw, **options)
        self.modality = modality
        self.view_names = tuple(f"view{i + 1}" for i in range(n_views))
        self.view_modalities = {v: modality for v in self.view_names}
        self.view_shapes = {v: (shape[0], *self.augment.size) for v in self.view_names}
        self.view_sources = {v: modality for v in self.view_names}

    def __call__(self, batch: Batch, generator: torch.Generator) -> dict[str, Tensor]:
        images = batch.inputs[self.modality]
        return {v: self.augment(images, generator) for v in self.view_names}

    def eval_views(self, batch: Batch) -> dict[str, Tensor]:
        images = resize(batch.inputs[self.modality], self.augment.size)
        return {v: images for v in self.view_names}
