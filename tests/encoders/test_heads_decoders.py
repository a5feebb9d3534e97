import pytest
import torch
from torch import nn

from contrastlab.encoders import ConvDecoder, LinearHead, MLPDecoder, MLPHead, build_decoder, build_head, l2_normalize


def test_mlp_head_layout_and_shape():
    head = MLPHead(1024, 128, hidden=512)
    linears = [m for m in head.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(1024, 512), (512, 128)]
    assert any(isinstance(m, nn.BatchNorm1d) for m in head.modules())
    assert head(torch.randn(4, 1024)).shape == (4, 128)
    assert MLPHead(64, 16).net[0].out_features == 64  # hidden defaults to the input width


def test_linear_and_none_heads():
    assert LinearHead(8, 3)(torch.randn(2, 8)).shape == (2, 3)
    none = build_head("none", 8, 3)
    x = torch.randn(2, 8)
    assert none.out_dim == 8 and torch.equal(none(x), x)


def test_build_head_errors():
    with pytest.raises(ValueError, match="unknown head 'mpl'"):
        build_head("mpl", 8, 3)
    with pytest.raises(ValueError, match="bad options for head 'linear'"):
        build_head("linear", 8, 3, hidden=4)
    with pytest.raises(ValueError, match="out_dim must be an integer >= 1, got 0"):
        build_head("mlp", 8, 0)


def test_l2_normalize_rows_and_scale_invariance():
    z = torch.randn(5, 7, dtype=torch.float64)
    u = l2_normalize(z)
    assert torch.allclose(u.norm(dim=1), torch.ones(5, dtype=torch.float64))
    assert torch.allclose(l2_normalize(3.5 * z), u)
    assert torch.equal(l2_normalize(torch.zeros(1, 3)), torch.zeros(1, 3))
    assert torch.autograd.gradcheck(l2_normalize, (z.requires_grad_(True),))


@pytest.mark.parametrize("shape", [(3, 32, 32), (1, 28, 28), (1, 8, 8), (2, 20, 12)])
def test_conv_decoder_reaches_the_exact_shape(shape):
    dec = ConvDecoder(16, shape)
    out = dec(torch.randn(2, 16))
    assert out.shape == (2, *shape)
    assert any(isinstance(m, nn.ConvTranspose2d) for m in dec.modules())


def test_conv_decoder_can_fit_a_batch():
    torch.manual_seed(0)
    dec = ConvDecoder(8, (1, 16, 16), widths=[16, 8])
    z, target = torch.randn(4, 8), torch.rand(4, 1, 16, 16)
    opt = torch.optim.Adam(dec.parameters(), lr=1e-2)
    first = None
    for _ in range(100):
        loss = (dec(z) - target).pow(2).mean()
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.2 * first


def test_mlp_decoder_and_auto_choice():
    assert MLPDecoder(8, (40, 10), hidden=[])(torch.randn(3, 8)).shape == (3, 40, 10)
    assert isinstance(build_decoder("auto", 8, (3, 16, 16)), ConvDecoder)
    assert isinstance(build_decoder("auto", 8, (40, 10)), MLPDecoder)
    with pytest.raises(ValueError, match="unknown decoder 'cnn'"):
        build_decoder("cnn", 8, (3, 16, 16))
