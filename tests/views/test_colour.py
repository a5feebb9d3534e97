import pytest
import torch

from contrastlab.views.colour import hsv_to_rgb, rgb_to_gray, rgb_to_hsv, rgb_to_lab, rgb_to_ycbcr, sobel_magnitude

kornia = pytest.importorskip("kornia")


def _px(*rgb):
    return torch.tensor(rgb, dtype=torch.float64).view(1, 3, 1, 1)


# Reference Lab values (D65) of the sRGB primaries, as printed by scikit-image's rgb2lab.
@pytest.mark.parametrize("rgb,lab", [((1, 1, 1), (100.0, 0.0, 0.0)), ((0, 0, 0), (0.0, 0.0, 0.0)),
                                     ((1, 0, 0), (53.2408, 80.0925, 67.2032)),
                                     ((0, 1, 0), (87.7347, -86.1827, 83.1793)),
                                     ((0, 0, 1), (32.2970, 79.1875, -107.8602)),
                                     ((0.5, 0.5, 0.5), (53.3890, 0.0, 0.0))])
def test_lab_known_values(rgb, lab):
    assert torch.allclose(rgb_to_lab(_px(*rgb)).flatten(), torch.tensor(lab, dtype=torch.float64), atol=5e-3)


@pytest.mark.parametrize("rgb,ycc", [((1, 1, 1), (1.0, 0.5, 0.5)), ((0, 0, 0), (0.0, 0.5, 0.5)),
                                     ((1, 0, 0), (0.299, 0.5 - 0.564 * 0.299, 0.5 + 0.713 * 0.701)),
                                     ((0, 0, 1), (0.114, 0.5 + 0.564 * 0.886, 0.5 - 0.713 * 0.114))])
def test_ycbcr_known_values(rgb, ycc):
    assert torch.allclose(rgb_to_ycbcr(_px(*rgb)).flatten(), torch.tensor(ycc, dtype=torch.float64), atol=1e-12)


def test_conversions_match_kornia_and_hsv_round_trips():
    x = torch.rand(4, 3, 9, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(rgb_to_lab(x), kornia.color.rgb_to_lab(x), atol=1e-9)
    assert torch.allclose(rgb_to_ycbcr(x), kornia.color.rgb_to_ycbcr(x), atol=1e-12)
    assert torch.allclose(rgb_to_gray(x), kornia.color.rgb_to_grayscale(x), atol=1e-12)
    hsv = rgb_to_hsv(x)
    ref = kornia.color.rgb_to_hsv(x)
    ref[:, 0] /= 2 * torch.pi
    assert torch.allclose(hsv, ref, atol=1e-12)
    assert torch.allclose(hsv_to_rgb(hsv), x, atol=1e-7)
    assert torch.allclose(rgb_to_hsv(_px(0, 0, 1)).flatten(), torch.tensor([2 / 3, 1.0, 1.0], dtype=torch.float64))
    assert rgb_to_hsv(_px(0.4, 0.4, 0.4)).flatten().tolist() == [0.0, 0.0, 0.4]


def test_sobel_closed_form():
    step = torch.zeros(1, 1, 5, 6)
    step[..., 3:] = 1.0
    g = sobel_magnitude(step)
    assert torch.allclose(g[0, 0, 2], torch.tensor([0.0, 0.0, 0.5, 0.5, 0.0, 0.0]))
    ramp = torch.arange(6.0).view(1, 1, 1, 6).expand(1, 1, 5, 6)
    assert torch.allclose(sobel_magnitude(ramp)[0, 0, :, 1:-1], torch.ones(5, 4))  # the slope
    with pytest.raises(ValueError, match=r"\(2, 3, 4\)"):
        rgb_to_lab(torch.zeros(2, 3, 4))
