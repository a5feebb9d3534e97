"""Our batched augmentations against kornia (a development dependency) for the same parameters."""

import math

import pytest
import torch

from contrastlab.views import augment as A
from contrastlab.views.simclr import SimCLRAugment

kornia = pytest.importorskip("kornia")


def _images(n=6, c=3, h=16, w=20, seed=0):
    return torch.rand(n, c, h, w, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _factors(n, low, high, seed=1):
    return low + (high - low) * torch.rand(n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _kornia_boxes(b):
    x0, y0, x1, y1 = b.unbind(1)
    return torch.stack([torch.stack([x0, y0], 1), torch.stack([x1, y0], 1),
                        torch.stack([x1, y1], 1), torch.stack([x0, y1], 1)], 1)


def test_colour_ops_match_kornia():
    x = _images()
    f = _factors(6, 0.2, 1.8)
    enh = kornia.enhance
    assert torch.allclose(A.adjust_brightness(x, f), enh.adjust_brightness_accumulative(x, f), atol=1e-12)
    assert torch.allclose(A.adjust_contrast(x, f), enh.adjust_contrast_with_mean_subtraction(x, f), atol=1e-12)
    assert torch.allclose(A.adjust_saturation(x, f), enh.adjust_saturation_with_gray_subtraction(x, f), atol=1e-12)
    shift = _factors(6, -0.5, 0.5)
    # kornia's HSV keeps an epsilon in s = C / (v + eps), hence 1e-7 rather than round-off.
    assert torch.allclose(A.adjust_hue(x, shift), enh.adjust_hue(x, shift * 2 * math.pi), atol=1e-7)
    gray = torch.tensor([True, False, True, False, False, True])
    ref = torch.where(gray.view(-1, 1, 1, 1), kornia.color.rgb_to_grayscale(x).expand_as(x), x)
    assert torch.allclose(A.grayscale(x, gray), ref, atol=1e-12)


def test_hue_shift_closed_forms():
    red = torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1)
    assert torch.allclose(A.adjust_hue(red, torch.tensor([1 / 3])).flatten(), torch.tensor([0.0, 1.0, 0.0]), atol=1e-6)
    assert torch.allclose(A.adjust_hue(red, torch.tensor([-1 / 3])).flatten(), torch.tensor([0.0, 0.0, 1.0]), atol=1e-6)
    x = _images().float()
    assert torch.allclose(A.adjust_hue(x, torch.zeros(6)), x, atol=1e-6)
    grey = torch.full((2, 3, 4, 4), 0.3)
    assert torch.allclose(A.adjust_hue(grey, torch.tensor([0.2, -0.4])), grey)


def test_blur_with_per_sample_sigma_matches_kornia():
    x = _images()
    sigma = _factors(6, 0.1, 2.0)
    for k in (3, 5):
        ref = kornia.filters.gaussian_blur2d(x, (k, k), torch.stack([sigma, sigma], 1), border_type="reflect")
        assert torch.allclose(A.gaussian_blur(x, sigma, k), ref, atol=1e-12)
    with pytest.raises(ValueError, match="got 4"):
        A.gaussian_blur(x, sigma, 4)


def test_crop_resize_and_flip_match_kornia():
    x = _images()
    boxes = A.sample_crop_boxes(6, 16, 20, scale=(0.1, 1.0), ratio=(0.5, 2.0),
                                generator=torch.Generator().manual_seed(0)).double()
    ref = kornia.geometry.transform.crop_and_resize(x, _kornia_boxes(boxes), (12, 10))
    assert torch.allclose(A.crop_resize(x, boxes, (12, 10)), ref, atol=1e-12)
    flipped = A.crop_resize(x, boxes[:, [2, 1, 0, 3]], (12, 10))
    assert torch.allclose(flipped, kornia.geometry.transform.hflip(ref), atol=1e-12)
    whole = torch.tensor([0.0, 0.0, 19.0, 15.0], dtype=torch.float64).expand(6, 4)
    assert torch.allclose(A.crop_resize(x, whole, (16, 20)), x, atol=1e-12)


def test_crop_boxes_fit_and_follow_scale_and_ratio():
    b = A.sample_crop_boxes(4000, 32, 32, scale=(0.2, 1.0), ratio=(3 / 4, 4 / 3),
                            generator=torch.Generator().manual_seed(0))
    w, h = b[:, 2] - b[:, 0] + 1, b[:, 3] - b[:, 1] + 1
    assert b[:, :2].min() >= 0 and b[:, 2].max() <= 31 + 1e-4 and b[:, 3].max() <= 31 + 1e-4
    area = w * h / 1024
    assert area.min() >= 0.2 - 1e-4 and area.max() <= 1 + 1e-4
    assert area.min() < 0.21 and area.max() > 0.95  # the whole range is reached
    ratio = w / h
    assert ratio.min() >= 3 / 4 - 1e-4 and ratio.max() <= 4 / 3 + 1e-4


def test_simclr_augment_matches_kornia_composition_for_the_same_parameters():
    """One pipeline with every probability 1: replay its parameters through kornia's functions."""
    x = _images(n=5, h=12, w=12).float()
    aug = SimCLRAugment(size=(10, 10), flip_p=1.0, jitter_p=1.0, gray_p=0.0, blur_p=1.0, blur_kernel=3)
    out = aug(x, torch.Generator().manual_seed(7))
    # Draw the same numbers in the same order as SimCLRAugment does.
    g = torch.Generator().manual_seed(7)
    n = 5
    boxes = A.sample_crop_boxes(n, 12, 12, scale=aug.crop_scale, ratio=aug.crop_ratio, generator=g)
    torch.rand(n, generator=g), torch.rand(n, generator=g)
    b, c, s = (0.6 + 0.8 * torch.rand(n, generator=g) for _ in range(3))
    hue = -0.1 + 0.2 * torch.rand(n, generator=g)
    order = torch.randperm(4, generator=g).tolist()
    torch.rand(n, generator=g), torch.rand(n, generator=g)
    sigma = 0.1 + 1.9 * torch.rand(n, generator=g)
    ref = kornia.geometry.transform.hflip(
        kornia.geometry.transform.crop_and_resize(x, _kornia_boxes(boxes), (10, 10)))
    enh = kornia.enhance
    ops = [lambda y: enh.adjust_brightness_accumulative(y, b),
           lambda y: enh.adjust_contrast_with_mean_subtraction(y, c),
           lambda y: enh.adjust_saturation_with_gray_subtraction(y, s),
           lambda y: enh.adjust_hue(y, hue * 2 * math.pi)]
    for k in order:
        ref = ops[k](ref)
    ref = kornia.filters.gaussian_blur2d(ref, (3, 3), torch.stack([sigma, sigma], 1))
    assert torch.allclose(out, ref, atol=1e-5)


def test_simclr_augment_shapes_ranges_and_determinism():
    x = torch.rand(64, 3, 32, 32)
    aug = SimCLRAugment(size=(24, 24))
    a = aug(x, torch.Generator().manual_seed(0))
    assert a.shape == (64, 3, 24, 24) and a.dtype == torch.float32 and a.min() >= 0 and a.max() <= 1
    assert torch.equal(a, aug(x, torch.Generator().manual_seed(0)))
    assert not torch.equal(a, aug(x, torch.Generator().manual_seed(1)))
    gray = SimCLRAugment(size=(32, 32))(torch.rand(8, 1, 32, 32), torch.Generator())
    assert gray.shape == (8, 1, 32, 32) and gray.min() >= 0 and gray.max() <= 1


def test_simclr_augment_with_nothing_random_is_the_identity():
    x = torch.rand(8, 3, 16, 16)
    aug = SimCLRAugment(size=(16, 16), crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), flip_p=0.0, jitter_p=0.0,
                        gray_p=0.0, blur_p=0.0)
    assert torch.allclose(aug(x, torch.Generator()), x, atol=1e-5)  # float32 interpolation weights
    flip_only = SimCLRAugment(size=(16, 16), crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), flip_p=1.0,
                              jitter_p=0.0, gray_p=0.0, blur_p=0.0)
    assert torch.allclose(flip_only(x, torch.Generator()), x.flip(-1), atol=1e-5)


@pytest.mark.parametrize("kw,match", [({"flip_p": 1.5}, "flip_p"), ({"hue": 0.7}, "hue"),
                                      ({"crop_scale": (0.5, 0.2)}, "crop_scale"), ({"blur_kernel": 4}, "blur_kernel"),
                                      ({"crop_ratio": (0.0, 1.0)}, "crop_ratio")])
def test_simclr_augment_rejects_bad_options(kw, match):
    with pytest.raises(ValueError, match=match):
        SimCLRAugment(size=(32, 32), **kw)
