import doctest
import importlib
import math

import pytest
import torch
import torch.nn.functional as F

import _peers
from _compare import assert_same
from contrastlab.objectives.siglip import SigLIP, siglip

DT = torch.float64
T0, B0 = 10.0, -10.0  # the paper's initial scale exp(log 10) and bias


def _pair(n=6, d=5):
    z1 = torch.randn(n, d, dtype=DT)
    return z1, z1 + 0.7 * torch.randn(n, d, dtype=DT)


# ---------------------------------------------------------------- slow reference, loops over the pairs


def _unit(v):
    return v / torch.sqrt((v * v).sum())


def ref_siglip_rows(z1, z2, scale, bias, normalize=True):
    """Row i's part of SigLIP's equation (1): -sum_j log 1 / (1 + exp(-y_ij (t x_i . y_j + b)))."""
    f = _unit if normalize else (lambda v: v)
    n = z1.shape[0]
    rows = []
    for i in range(n):
        total = 0.0
        for j in range(n):
            y = 1.0 if i == j else -1.0
            logit = scale * (f(z1[i]) * f(z2[j])).sum() + bias
            total = total - torch.log(1 / (1 + torch.exp(-y * logit)))
        rows.append(total)
    return torch.stack(rows)


def ref_siglip(z1, z2, scale, bias, normalize=True):
    """SigLIP's equation (1): the sum over all N^2 pairs divided by N."""
    return ref_siglip_rows(z1, z2, scale, bias, normalize).sum() / z1.shape[0]


# ---------------------------------------------------------------- value and gradient vs the reference


@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize(("scale", "bias"), [(T0, B0), (1.0, 0.0), (3.0, 1.5)])
def test_matches_loop_reference(normalize, scale, bias):
    z1, z2 = _pair()
    if not normalize:
        z1, z2 = 0.4 * z1, 0.4 * z2
    assert_same(
        lambda a, b: siglip(a, b, logit_scale=scale, logit_bias=bias, normalize=normalize),
        lambda a, b: ref_siglip(a, b, scale, bias, normalize),
        z1,
        z2,
    )


def test_gradients_reach_the_scale_and_bias():
    z1, z2 = _pair()
    scale, bias = torch.tensor(T0, dtype=DT), torch.tensor(B0, dtype=DT)
    assert_same(
        lambda a, b, t, c: siglip(a, b, logit_scale=t, logit_bias=c),
        lambda a, b, t, c: ref_siglip(a, b, t, c),
        z1,
        z2,
        scale,
        bias,
    )
    # as the model holds them: t = exp(t'), b
    t_prime = torch.tensor(math.log(T0), dtype=DT, requires_grad=True)
    b = torch.tensor(B0, dtype=DT, requires_grad=True)
    SigLIP()(z1, z2, t_prime.exp(), b).backward()
    assert t_prime.grad.abs() > 0 and b.grad.abs() > 0


def test_reductions():
    z1, z2 = _pair()
    per_row = siglip(z1, z2, logit_scale=T0, logit_bias=B0, reduction="none")
    assert per_row.shape == (6,)
    torch.testing.assert_close(per_row.mean(), siglip(z1, z2, logit_scale=T0, logit_bias=B0))
    torch.testing.assert_close(per_row.sum(), siglip(z1, z2, logit_scale=T0, logit_bias=B0, reduction="sum"))
    torch.testing.assert_close(per_row, ref_siglip_rows(z1, z2, T0, B0))


# ---------------------------------------------------------------- closed forms


@pytest.mark.parametrize(("scale", "bias"), [(T0, B0), (2.0, 0.5), (50.0, -3.0)])
def test_one_pair_is_a_logistic_loss_on_the_cosine(scale, bias):
    z1, z2 = torch.randn(1, 7, dtype=DT), torch.randn(1, 7, dtype=DT)
    cos = F.cosine_similarity(z1, z2).item()
    expected = -math.log(1 / (1 + math.exp(-(scale * cos + bias))))
    assert siglip(z1, z2, logit_scale=scale, logit_bias=bias).item() == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("n", [2, 5])
def test_identical_positives_orthogonal_negatives(n):
    z = torch.eye(n, dtype=DT)
    t, b = 4.0, -2.0
    # positives at logit t + b, the N - 1 negatives of each row at logit b
    expected = math.log1p(math.exp(-(t + b))) + (n - 1) * math.log1p(math.exp(b))
    assert siglip(z, z, logit_scale=t, logit_bias=b).item() == pytest.approx(expected, rel=1e-12)


# ---------------------------------------------------------------- gradcheck, invariances, symmetry


@pytest.mark.parametrize("normalize", [True, False])
def test_gradcheck(normalize):
    a, b = (torch.randn(4, 3, dtype=DT, requires_grad=True) for _ in range(2))
    t = torch.tensor(3.0, dtype=DT, requires_grad=True)
    c = torch.tensor(-1.0, dtype=DT, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda *x: siglip(x[0], x[1], logit_scale=x[2], logit_bias=x[3], normalize=normalize), (a, b, t, c)
    )


def test_batch_permutation_swap_and_scale_invariance():
    z1, z2 = _pair(9, 4)
    perm = torch.randperm(9)
    value = siglip(z1, z2, logit_scale=T0, logit_bias=B0)
    torch.testing.assert_close(siglip(z1[perm], z2[perm], logit_scale=T0, logit_bias=B0), value)
    # the labels are symmetric, so swapping the modalities transposes the logits and keeps the sum
    torch.testing.assert_close(siglip(z2, z1, logit_scale=T0, logit_bias=B0), value)
    torch.testing.assert_close(siglip(3 * z1, 0.2 * z2, logit_scale=T0, logit_bias=B0), value)
    assert not torch.isclose(siglip(z1, z2[perm], logit_scale=T0, logit_bias=B0), value)
    raw = siglip(z1, z2, logit_scale=T0, logit_bias=B0, normalize=False)
    assert not torch.isclose(siglip(3 * z1, z2, logit_scale=T0, logit_bias=B0, normalize=False), raw)


def test_finite_for_large_logits_in_float32():
    z = F.normalize(torch.randn(6, 8), dim=1)
    for a, b in ((z, z.clone()), (z, -z), (z[:1].expand(6, 8).clone(), z[:1].expand(6, 8).clone())):
        a, b = a.requires_grad_(True), b.requires_grad_(True)
        loss = siglip(a, b, logit_scale=200.0, logit_bias=-50.0)
        ga, gb = torch.autograd.grad(loss, (a, b))
        assert torch.isfinite(loss) and torch.isfinite(ga).all() and torch.isfinite(gb).all()


# ---------------------------------------------------------------- open_clip


@pytest.mark.parametrize(("n", "d"), [(16, 8), (64, 32)])
def test_agrees_with_open_clip_siglip_loss(n, d):
    # open_clip's SigLipLoss takes already normalised features and the scale itself (its model passes
    # logit_scale.exp()); its loss is -sum_ij logsigmoid(y_ij * logits_ij) / N, our reduction="mean".
    peer = _peers.open_clip("SigLipLoss")()
    z1, z2 = _pair(n, d)
    assert_same(
        lambda a, b, t, c: siglip(a, b, logit_scale=t, logit_bias=c),
        lambda a, b, t, c: peer(F.normalize(a, dim=-1), F.normalize(b, dim=-1), t, c),
        z1,
        z2,
        torch.tensor(T0, dtype=DT),
        torch.tensor(B0, dtype=DT),
        atol=1e-10,
    )
    # without normalize=True ours takes the features as they come, like the peer
    assert_same(
        lambda a, b: siglip(a, b, logit_scale=2.0, logit_bias=0.3, normalize=False),
        lambda a, b: peer(a, b, 2.0, 0.3),
        0.3 * z1,
        0.3 * z2,
        atol=1e-10,
    )


# ---------------------------------------------------------------- bad options, module, docs


@pytest.mark.parametrize("scale", [0, -1.0, float("nan"), float("inf"), "10", True, None])
def test_bad_logit_scale(scale):
    z = torch.randn(4, 3)
    with pytest.raises(ValueError, match="logit_scale"):
        siglip(z, z, logit_scale=scale, logit_bias=0.0)


@pytest.mark.parametrize("bias", [float("nan"), float("-inf"), "-10", False, None])
def test_bad_logit_bias(bias):
    z = torch.randn(4, 3)
    with pytest.raises(ValueError, match="logit_bias"):
        siglip(z, z, logit_scale=1.0, logit_bias=bias)


def test_bad_tensors_reduction_and_shapes():
    z = torch.randn(4, 3)
    with pytest.raises(ValueError, match=r"logit_scale.*0-dim.*\(1,\)"):
        siglip(z, z, logit_scale=torch.ones(1), logit_bias=0.0)
    with pytest.raises(ValueError, match="logit_bias.*int64"):
        siglip(z, z, logit_scale=1.0, logit_bias=torch.tensor(-10))
    with pytest.raises(ValueError, match="'avg'"):
        siglip(z, z, logit_scale=1.0, logit_bias=0.0, reduction="avg")
    with pytest.raises(ValueError, match="'avg'"):
        SigLIP(reduction="avg")
    with pytest.raises(ValueError, match=r"\(4, 3\) and \(4, 2\)"):
        siglip(z, torch.randn(4, 2), logit_scale=1.0, logit_bias=0.0)


def test_module_forward_options():
    z1, z2 = _pair()
    torch.testing.assert_close(
        SigLIP(normalize=False, reduction="sum")(z1, z2, 2.0, -1.0),
        siglip(z1, z2, logit_scale=2.0, logit_bias=-1.0, normalize=False, reduction="sum"),
    )
    assert "normalize=False" in repr(SigLIP(normalize=False))


def test_docstring_examples_run():
    module = importlib.import_module("contrastlab.objectives.siglip")
    result = doctest.testmod(module, extraglobs={"torch": torch}, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted > 0
