import math

import pytest
import torch

from contrastlab.objectives.align_uniform import align_uniform
from contrastlab.objectives.combined import SPECS, ContrastiveAlignUniform, contrastive_align_uniform
from contrastlab.objectives.info_nce import info_nce
from contrastlab.objectives.registry import OBJECTIVES, build_objective

DT = torch.float64


def _unit(z):
    return z / torch.sqrt((z**2).sum(1, keepdim=True))


def ref_contrastive(u1, u2, tau):
    """One-way InfoNCE with in-batch negatives, written as the paper's sum over rows."""
    n = u1.shape[0]
    total = 0.0
    for i in range(n):
        logits = [float((u1[i] * u2[j]).sum()) / tau for j in range(n)]
        top = max(logits)
        total += -(logits[i] - top - math.log(sum(math.exp(v - top) for v in logits)))
    return total / n


def ref_align(u1, u2, alpha):
    return sum(float(((u1[i] - u2[i]) ** 2).sum()) ** (alpha / 2) for i in range(u1.shape[0])) / u1.shape[0]


def ref_uniform(u, t):
    n = u.shape[0]
    values = [math.exp(-t * float(((u[i] - u[j]) ** 2).sum())) for i in range(n) for j in range(i + 1, n)]
    return math.log(sum(values) / len(values))


def reference(z1, z2, wc, wa, wu, tau, alpha, t, symmetric=False):
    u1, u2 = _unit(z1), _unit(z2)
    contrastive = ref_contrastive(u1, u2, tau)
    if symmetric:
        contrastive = (contrastive + ref_contrastive(u2, u1, tau)) / 2
    return (wc * contrastive + wa * ref_align(u1, u2, alpha)
            + wu * (ref_uniform(u1, t) + ref_uniform(u2, t)) / 2)


@pytest.mark.parametrize("wc, wa, wu, tau, alpha, t, symmetric", [
    (1.0, 1.0, 1.0, 0.5, 2.0, 2.0, False),
    (1.0, 0.0, 0.0, 0.2, 2.0, 2.0, False),
    (0.0, 0.98, 0.96, 0.5, 2.0, 2.0, False),
    (0.5, 0.0, 1.0, 0.1, 1.0, 3.0, True),
    (0.0, 0.0, 1.0, 0.5, 2.0, 0.5, False),
])
def test_matches_a_loop_reference(wc, wa, wu, tau, alpha, t, symmetric):
    z1, z2 = torch.randn(7, 5, dtype=DT), torch.randn(7, 5, dtype=DT)
    got = contrastive_align_uniform(z1, z2, contrastive_weight=wc, align_weight=wa, uniform_weight=wu,
                                    temperature=tau, alpha=alpha, t=t, symmetric=symmetric)
    assert float(got) == pytest.approx(reference(z1, z2, wc, wa, wu, tau, alpha, t, symmetric), rel=1e-10, abs=1e-12)


def test_special_cases_equal_the_single_objectives():
    z1, z2 = torch.randn(9, 4, dtype=DT), torch.randn(9, 4, dtype=DT)
    only_c = contrastive_align_uniform(z1, z2, align_weight=0.0, uniform_weight=0.0, temperature=0.3)
    assert torch.allclose(only_c, info_nce(z1, z2, temperature=0.3))
    au = contrastive_align_uniform(z1, z2, contrastive_weight=0.0, align_weight=1.0, uniform_weight=0.7)
    assert torch.allclose(au, align_uniform(z1, z2, weight=0.7))
    total = contrastive_align_uniform(z1, z2, temperature=0.3)
    assert torch.allclose(total, only_c + align_uniform(z1, z2, weight=1.0))


def test_closed_form_on_orthonormal_pairs():
    # z1 = z2 = I_4: alignment 0; every distinct pair at squared distance 2, so uniformity is -2t;
    # InfoNCE: -log(e^{1/tau} / (e^{1/tau} + 3))
    z = torch.eye(4, dtype=DT)
    tau, t = 0.5, 2.0
    expected = -math.log(math.exp(1 / tau) / (math.exp(1 / tau) + 3)) + 0.0 - 2 * t
    assert float(contrastive_align_uniform(z, z, temperature=tau, t=t)) == pytest.approx(expected, rel=1e-12)


def test_gradcheck_and_invariances():
    z1 = torch.randn(6, 3, dtype=DT, requires_grad=True)
    z2 = torch.randn(6, 3, dtype=DT, requires_grad=True)
    def fn(a, b):
        return contrastive_align_uniform(a, b, align_weight=0.5, uniform_weight=2.0, temperature=0.4)

    assert torch.autograd.gradcheck(fn, (z1, z2))
    perm = torch.randperm(6)
    assert torch.allclose(fn(z1, z2), fn(z1[perm], z2[perm]))  # the batch order does not matter
    assert torch.allclose(fn(z1, z2), fn(3.0 * z1, 0.5 * z2))  # normalised inside: scale-free
    unnormalised = contrastive_align_uniform(3.0 * z1, z2, normalize=False)
    assert not torch.allclose(unnormalised, contrastive_align_uniform(3.0 * z1, z2))


@pytest.mark.parametrize("options, message", [
    ({"align_weight": -1.0}, "align_weight must be a finite number >= 0, got -1.0"),
    ({"contrastive_weight": 0.0, "align_weight": 0.0, "uniform_weight": 0.0},
     "at least one of contrastive_weight, align_weight and uniform_weight must be > 0"),
    ({"temperature": 0.0}, "temperature"),
    ({"alpha": 0}, "alpha must be a finite number > 0, got 0"),
    ({"t": -2.0}, "t must be a finite number > 0, got -2.0"),
])
def test_bad_options_are_named(options, message):
    with pytest.raises(ValueError, match=message):
        ContrastiveAlignUniform(**options)
    with pytest.raises(ValueError, match=message):
        contrastive_align_uniform(torch.randn(3, 2), torch.randn(3, 2), **options)


def test_bad_shapes_are_named():
    with pytest.raises(ValueError):
        contrastive_align_uniform(torch.randn(3, 2), torch.randn(4, 2))
    with pytest.raises(ValueError):
        contrastive_align_uniform(torch.randn(1, 2), torch.randn(1, 2))


def test_registered_and_built_from_options():
    assert [s.name for s in SPECS] == ["contrastive_align_uniform"]
    assert OBJECTIVES["contrastive_align_uniform"].kind == "pairwise"
    module = build_objective("contrastive_align_uniform", contrastive_weight=0.0, align_weight=0.98,
                             uniform_weight=0.96)
    z1, z2 = torch.randn(8, 4), torch.randn(8, 4)
    expected = contrastive_align_uniform(z1, z2, contrastive_weight=0.0, align_weight=0.98, uniform_weight=0.96)
    assert torch.allclose(module(z1, z2), expected)
    assert "align_weight=0.98" in repr(module)


@pytest.mark.parametrize("wc, wa, symmetric", [(1.0, 0.5, False), (0.7, 0.0, True), (0.0, 1.0, False)])
def test_reduction_without_uniformity_is_per_item(wc, wa, symmetric):
    z1, z2 = torch.randn(7, 5, dtype=DT), torch.randn(7, 5, dtype=DT)
    kw = dict(contrastive_weight=wc, align_weight=wa, uniform_weight=0.0, temperature=0.3, symmetric=symmetric)
    per_item = contrastive_align_uniform(z1, z2, reduction="none", **kw)
    assert per_item.shape == (7,)
    expected = torch.stack([
        wc * info_nce(z1, z2, temperature=0.3, symmetric=symmetric, reduction="none")[i]
        + wa * ((_unit(z1)[i] - _unit(z2)[i]) ** 2).sum()
        for i in range(7)
    ])
    torch.testing.assert_close(per_item, expected)
    torch.testing.assert_close(per_item.mean(), contrastive_align_uniform(z1, z2, **kw))
    torch.testing.assert_close(per_item.sum(), contrastive_align_uniform(z1, z2, reduction="sum", **kw))
    torch.testing.assert_close(ContrastiveAlignUniform(reduction="none", **kw)(z1, z2), per_item)


def test_reduction_with_uniformity_is_the_mean_only():
    z = torch.randn(4, 3)
    for reduction in ("sum", "none"):
        with pytest.raises(ValueError, match=f"uniform_weight > 0 is a statistic.*got '{reduction}'"):
            contrastive_align_uniform(z, z, reduction=reduction)
        with pytest.raises(ValueError, match="uniform_weight > 0"):
            ContrastiveAlignUniform(reduction=reduction)
    with pytest.raises(ValueError, match="'avg'"):
        contrastive_align_uniform(z, z, uniform_weight=0.0, reduction="avg")


def test_temperature_per_call():
    z1, z2 = torch.randn(6, 4, dtype=DT), torch.randn(6, 4, dtype=DT)
    tau = torch.tensor(0.3, dtype=DT, requires_grad=True)
    loss = ContrastiveAlignUniform(temperature=0.9)(z1, z2, temperature=tau)
    torch.testing.assert_close(loss, contrastive_align_uniform(z1, z2, temperature=0.3))
    loss.backward()
    assert tau.grad is not None and tau.grad != 0
