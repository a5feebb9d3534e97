import math

import pytest
import torch
from torch import nn

from contrastlab.encoders import ENCODERS, CifarResNet18, Conv1dEncoder, ConvNet, MLP, TextEncoder, build_encoder
from contrastlab.encoders.conv1d import conv_output_lengths, masked_max_pool
from contrastlab.encoders.text import token_mask


def test_convnet_matches_the_homework_layout():
    net = ConvNet((3, 32, 32))
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [32, 64, 128, 256]
    assert all(c.stride == (2, 2) for c in convs)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in net.modules()) == 4
    assert net.feature_map_shape == (256, 2, 2) and net.out_dim == 1024
    assert net(torch.randn(3, 3, 32, 32)).shape == (3, 1024)


def test_convnet_output_width_for_avg_pool_and_odd_sizes():
    net = ConvNet((1, 16, 16), widths=[4, 8], pool="avg").eval()
    assert net.out_dim == 8
    flat = ConvNet((1, 15, 15), widths=[4, 8])
    assert flat.out_dim == 8 * 4 * 4  # ceil(15 / 2) = 8, ceil(8 / 2) = 4
    assert flat(torch.randn(2, 1, 15, 15)).shape == (2, flat.out_dim)


def test_resnet18_has_a_small_stem_and_no_max_pool():
    net = CifarResNet18((3, 32, 32), width=8)
    assert not any(isinstance(m, nn.MaxPool2d) for m in net.modules())
    stem = net.stem[0]
    assert stem.kernel_size == (3, 3) and stem.stride == (1, 1)
    maps = {}
    net.stages.register_forward_hook(lambda m, i, o: maps.update(last=o.shape))
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 64)
    assert maps["last"] == (2, 64, 4, 4)  # 32 -> 32 -> 16 -> 8 -> 4: only three halvings
    blocks = sum(1 for m in net.modules() if type(m).__name__ == "BasicBlock")
    assert blocks == 8


def test_full_width_resnet18_parameter_count():
    # The CIFAR ResNet-18 has about 11.2 M parameters (no fully-connected layer here).
    n = sum(p.numel() for p in CifarResNet18((3, 32, 32)).parameters())
    assert 11.0e6 < n < 11.3e6


@pytest.mark.parametrize("length", [1, 2, 5, 9, 16, 33, 100])
def test_conv_output_lengths_match_real_convolutions(length):
    conv = nn.Conv1d(1, 1, 5, stride=2, padding=2)
    x = torch.randn(1, 1, length)
    for _ in range(3):
        x = conv(x)
    expected = x.shape[-1]
    got = conv_output_lengths(torch.tensor([length]), kernel_size=5, stride=2, padding=2, layers=3)
    assert int(got) == expected


def test_masked_max_pool_against_a_loop():
    h = torch.randn(4, 3, 7, dtype=torch.float64)
    lengths = torch.tensor([7, 1, 3, 5])
    out = masked_max_pool(h, lengths)
    for n in range(4):
        for c in range(3):
            assert out[n, c] == max(h[n, c, t] for t in range(int(lengths[n])))
    assert torch.equal(masked_max_pool(h, None), h.amax(dim=2))


def test_masked_max_pool_gradient():
    h = torch.randn(3, 2, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: masked_max_pool(t, torch.tensor([6, 2, 4])), (h,))


@pytest.mark.parametrize("input_shape", [(6, 40), (40,)])
def test_conv1d_output_ignores_padding_content_and_length(input_shape):
    torch.manual_seed(1)
    net = Conv1dEncoder(input_shape, widths=[8, 16, 16], kernel_size=5).eval()
    channels = () if len(input_shape) == 1 else (input_shape[0],)
    item = torch.randn(*channels, 23)
    alone = net(item[None], lengths=torch.tensor([23]))
    garbage = torch.randn(*channels, 40) * 50
    garbage[..., :23] = item
    padded = net(garbage[None], lengths=torch.tensor([23]))
    assert torch.allclose(alone, padded, atol=1e-5)
    # and it equals running the unpadded item without lengths at all
    assert torch.allclose(net(item[None]), alone, atol=1e-5)


def test_conv1d_rejects_wrong_channels_and_bad_lengths():
    net = Conv1dEncoder((6, 40), widths=[4])
    with pytest.raises(ValueError, match=r"\(N, 6, T\)"):
        net(torch.randn(2, 5, 40))
    with pytest.raises(ValueError, match="lengths"):
        net(torch.randn(2, 6, 40), lengths=torch.tensor([3, 0]))
    with pytest.raises(ValueError, match="kernel_size must be odd, got 4"):
        Conv1dEncoder((6, 40), kernel_size=4)


def test_text_bag_is_the_mean_of_real_token_embeddings():
    net = TextEncoder((5,), vocab_size=11, dim=4).double()
    tokens = torch.tensor([[3, 4, 5, 0, 0], [7, 0, 0, 0, 0], [1, 2, 3, 4, 5]])
    out = net(tokens)
    table = net.embed.weight
    for n, row in enumerate(tokens.tolist()):
        real = [t for t in row if t != 0]
        expected = sum(table[t] for t in real) / len(real)
        assert torch.allclose(out[n], expected)


def test_text_lengths_win_over_padding_ids_and_padding_is_ignored():
    torch.manual_seed(0)
    for layers in (0, 2):
        net = TextEncoder((8,), vocab_size=20, dim=16, layers=layers, heads=4).eval()
        short = torch.tensor([[3, 9, 4]])
        long = torch.tensor([[3, 9, 4, 17, 12, 5, 6, 2]])  # junk after the valid length
        a = net(short, torch.tensor([3]))
        b = net(long, torch.tensor([3]))
        assert torch.allclose(a, b, atol=1e-5), layers


def test_text_gradcheck_through_embeddings_and_transformer():
    from torch.func import functional_call

    tokens = torch.tensor([[1, 2, 0, 0], [3, 4, 5, 1]])
    for layers in (0, 1):
        net = TextEncoder((4,), vocab_size=6, dim=4, layers=layers, heads=2).double().eval()
        w = net.embed.weight.detach().clone().requires_grad_(True)
        assert torch.autograd.gradcheck(lambda w: functional_call(net, {"embed.weight": w}, (tokens,)), (w,))


def test_token_mask_keeps_at_least_one_position():
    mask = token_mask(torch.zeros(2, 3, dtype=torch.long), None, padding_idx=0)
    assert mask[:, 0].all() and not mask[:, 1:].any()


def test_text_errors_name_the_values():
    with pytest.raises(ValueError, match="heads must divide dim, got heads=3 and dim=16"):
        TextEncoder((4,), vocab_size=10, dim=16, layers=1, heads=3)
    net = TextEncoder((4,), vocab_size=10)
    with pytest.raises(ValueError, match=r"\[0, 10\), got range \[0, 12\]"):
        net(torch.tensor([[1, 12, 0, 0]]))


def test_mlp_shapes_and_errors():
    net = MLP((2, 3), hidden=[16, 8], dropout=0.1)
    assert net(torch.randn(4, 2, 3)).shape == (4, 8)
    with pytest.raises(ValueError, match=r"\(2, 3\)"):
        net(torch.randn(4, 6))
    with pytest.raises(ValueError, match=r"hidden must be a list of positive integers, got \[16, 0\]"):
        MLP((3,), hidden=[16, 0])
    with pytest.raises(ValueError, match="dropout must be a number in \\[0, 1\\), got 1.5"):
        MLP((3,), dropout=1.5)


def test_registry_builds_every_encoder_with_out_dim():
    shapes = {"mlp": (3, 8, 8), "convnet": (3, 16, 16), "resnet18": (3, 16, 16), "conv1d": (10, 30), "text": (6,),
              "late_fusion": (4, 8, 8)}
    options = {"resnet18": {"width": 4}, "text": {"vocab_size": 9}, "conv1d": {"widths": [8]},
               "late_fusion": {"layout": {"stacked": True, "parts": [["rgb", [3, 8, 8]], ["depth", [1, 8, 8]]]}}}
    assert set(shapes) == set(ENCODERS) - {"hf_text", "hf_vision"}  # tests/encoders/test_hf.py builds those
    for name, shape in shapes.items():
        net = build_encoder(name, shape, **options.get(name, {}))
        x = torch.randint(0, 9, (2, *shape)) if name == "text" else torch.randn(2, *shape)
        assert net(x).shape == (2, net.out_dim), name
        assert isinstance(net.uses_lengths, bool)


def test_registry_errors():
    with pytest.raises(ValueError, match="unknown encoder 'convent'; did you mean 'convnet'"):
        build_encoder("convent", (3, 8, 8))
    with pytest.raises(ValueError, match="bad options for encoder 'mlp'"):
        build_encoder("mlp", (3,), widths=[3])


def test_encoders_are_deterministic_functions_in_eval_mode():
    net = ConvNet((3, 32, 32)).eval()
    x = torch.randn(5, 3, 32, 32)
    full = net(x)
    one_by_one = torch.cat([net(x[i : i + 1]) for i in range(5)])
    assert torch.allclose(full, one_by_one, atol=1e-5)
    assert math.isfinite(float(full.detach().sum()))
