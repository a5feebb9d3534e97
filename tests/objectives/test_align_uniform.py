import math

import pytest
import torch

from _compare import assert_same
from contrastlab.objectives.align_uniform import (
    SPECS,
    AlignLoss,
    AlignUniform,
    UniformLoss,
    align_loss,
    align_uniform,
    check_unit_norm,
    uniform_loss,
)

DT = torch.float64


def _sphere(n, d, dtype=DT):
    return torch.nn.functional.normalize(torch.randn(n, d, dtype=dtype), dim=1)


def ref_align(x, y, alpha):
    return sum(torch.sqrt(((x[i] - y[i]) ** 2).sum()) ** alpha for i in range(x.shape[0])) / x.shape[0]


def ref_uniform(x, t):
    n = x.shape[0]
    pairs = [torch.exp(-t * ((x[i] - x[j]) ** 2).sum()) for i in range(n) for j in range(i + 1, n)]
    return torch.log(sum(pairs) / len(pairs))


def ref_align_uniform(z1, z2, alpha, t, weight):
    u1 = z1 / torch.sqrt((z1**2).sum(1, keepdim=True))
    u2 = z2 / torch.sqrt((z2**2).sum(1, keepdim=True))
    return ref_align(u1, u2, alpha) + weight * (ref_uniform(u1, t) + ref_uniform(u2, t)) / 2


@pytest.mark.parametrize("alpha", [0.5, 1.0, 2.0, 3.0])
def test_align_matches_loop_reference(alpha):
    x, y = _sphere(6, 4), _sphere(6, 4)
    assert_same(lambda a, b: align_loss(a, b, alpha=alpha), lambda a, b: ref_align(a, b, alpha), x, y)


@pytest.mark.parametrize("t", [0.5, 2.0, 5.0])
def test_uniform_matches_loop_reference(t):
    assert_same(lambda a: uniform_loss(a, t=t), lambda a: ref_uniform(a, t), _sphere(7, 3))
    # and the paper's own one-liner, written from its formula
    x = _sphere(7, 3)
    torch.testing.assert_close(uniform_loss(x, t=t), torch.pdist(x).pow(2).mul(-t).exp().mean().log())


@pytest.mark.parametrize(("alpha", "t", "weight"), [(2.0, 2.0, 1.0), (1.0, 3.0, 0.5), (2.5, 1.0, 0.0)])
def test_align_uniform_matches_loop_reference(alpha, t, weight):
    z1, z2 = torch.randn(5, 4, dtype=DT), torch.randn(5, 4, dtype=DT)
    assert_same(
        lambda a, b: align_uniform(a, b, alpha=alpha, t=t, weight=weight),
        lambda a, b: ref_align_uniform(a, b, alpha, t, weight),
        z1,
        z2,
    )


def test_closed_forms():
    x = _sphere(5, 3)
    assert align_loss(x, x).item() == 0.0
    assert align_loss(x, -x).item() == pytest.approx(4.0)  # antipodal: |2x|^2
    assert align_loss(x, -x, alpha=1.0).item() == pytest.approx(2.0)
    # regular simplex of N points on the sphere: every squared distance is 2N/(N-1)
    n, t = 4, 2.0
    simplex = torch.nn.functional.normalize(torch.eye(n, dtype=DT) - 1.0 / n, dim=1)
    assert uniform_loss(simplex, t=t).item() == pytest.approx(-t * 2 * n / (n - 1), rel=1e-12)
    assert uniform_loss(x[:1].repeat(5, 1)).item() == pytest.approx(0.0, abs=1e-15)  # collapse: log 1
    eye = torch.eye(4, dtype=DT)
    assert align_uniform(eye, eye, weight=0.5, t=2.0).item() == pytest.approx(-0.5 * 2 * 2.0)


def test_uniform_is_stable_where_exp_mean_log_underflows():
    x = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0]], dtype=torch.float32)
    t = 100.0
    naive = torch.pdist(x).pow(2).mul(-t).exp().mean().log()
    assert torch.isinf(naive)  # exp(-200) underflows in float32
    expected = math.log((2 * math.exp(-200.0) + math.exp(-400.0)) / 3)  # two pairs at 2, one at 4
    assert uniform_loss(x, t=t).item() == pytest.approx(expected, rel=1e-6)


def test_gradients_finite_at_zero_distance_for_every_alpha():
    x = _sphere(4, 3, torch.float32)
    for alpha in (0.5, 1.0, 2.0):
        a = x.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(align_loss(a, x, alpha=alpha), a)
        assert torch.equal(grad, torch.zeros_like(grad))


def test_finite_for_degenerate_embeddings_float32():
    z = _sphere(6, 8, torch.float32)
    cases = {"identical": (z, z.clone()), "antipodal": (z, -z), "all_equal": (z[:1].repeat(6, 1), z[:1].repeat(6, 1))}
    for name, (a, b) in cases.items():
        for t in (2.0, 100.0):
            a_, b_ = a.clone().requires_grad_(True), b.clone().requires_grad_(True)
            loss = align_uniform(a_, b_, t=t, alpha=1.0)
            grads = torch.autograd.grad(loss, (a_, b_))
            assert torch.isfinite(loss) and all(torch.isfinite(g).all() for g in grads), name


def test_gradcheck():
    z1, z2 = torch.randn(4, 3, dtype=DT, requires_grad=True), torch.randn(4, 3, dtype=DT, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: align_uniform(a, b, alpha=1.5, t=2.0, weight=0.7), (z1, z2))
    assert torch.autograd.gradcheck(lambda a: uniform_loss(a, t=1.0), (z1,))
    assert torch.autograd.gradcheck(lambda a, b: align_loss(a, b, alpha=3.0), (z1, z2))


def test_invariances_and_symmetry():
    z1, z2 = torch.randn(8, 5, dtype=DT), torch.randn(8, 5, dtype=DT)
    p = torch.randperm(8)
    loss = align_uniform(z1, z2)
    torch.testing.assert_close(loss, align_uniform(z1[p], z2[p]))
    torch.testing.assert_close(loss, align_uniform(z2, z1))
    torch.testing.assert_close(loss, align_uniform(2 * z1, 0.3 * z2))
    torch.testing.assert_close(uniform_loss(z1), uniform_loss(z1[p]))
    torch.testing.assert_close(align_loss(z1, z2), align_loss(z2, z1))


def test_usable_as_metrics_under_no_grad():
    z1, z2 = _sphere(10, 4), _sphere(10, 4)
    with torch.no_grad():
        a = align_loss(z1, z2, check_normalized=True)
        u = uniform_loss(z1, check_normalized=True)
    assert not a.requires_grad and not u.requires_grad
    assert 0 <= a.item() <= 4 and -4 * 2.0 <= u.item() <= 0


def test_check_normalized_names_the_worst_row():
    x = _sphere(5, 3)
    x[3] *= 2.5
    x[1] *= 1.2
    with pytest.raises(ValueError, match=r"row 3 has norm 2\.5"):
        align_loss(x, _sphere(5, 3), check_normalized=True)
    with pytest.raises(ValueError, match=r"y must have unit-norm rows.*row 3 has norm 2\.5"):
        align_loss(_sphere(5, 3), x, check_normalized=True)
    with pytest.raises(ValueError, match=r"row 3 has norm 2\.5"):
        uniform_loss(x, check_normalized=True)
    assert torch.isfinite(uniform_loss(x))  # no check unless asked
    check_unit_norm("x", _sphere(5, 3, torch.float32))
    check_unit_norm("x", _sphere(5, 3).to(torch.bfloat16))


def test_bad_options():
    x = _sphere(4, 3)
    with pytest.raises(ValueError, match="alpha"):
        align_loss(x, x, alpha=0)
    with pytest.raises(ValueError, match="-1"):
        uniform_loss(x, t=-1.0)
    with pytest.raises(ValueError, match="weight"):
        align_uniform(x, x, weight=-0.5)
    with pytest.raises(ValueError, match="got 1"):
        uniform_loss(x[:1])
    with pytest.raises(ValueError, match="got 1"):
        align_uniform(x[:1], x[:1])
    with pytest.raises(ValueError, match=r"\(4, 3\) and \(3, 3\)"):
        align_loss(x, x[:3])
    with pytest.raises(ValueError, match="t must"):
        AlignUniform(t=0)


def test_module_and_specs():
    z1, z2 = torch.randn(6, 4, dtype=DT), torch.randn(6, 4, dtype=DT)
    torch.testing.assert_close(AlignUniform(weight=0.4, t=3.0)(z1, z2), align_uniform(z1, z2, weight=0.4, t=3.0))
    (spec,) = SPECS
    assert spec.name == "align_uniform" and spec.kind == "pairwise" and "\n" not in spec.formula
    module = spec.factory(alpha=2.0, t=2.0)
    assert isinstance(module, torch.nn.Module) and module(z1, z2).dim() == 0


@pytest.mark.parametrize("alpha", [1.0, 2.0, 3.0])
def test_align_reduction_is_per_pair(alpha):
    x, y = _sphere(6, 4), _sphere(6, 4)
    per_pair = align_loss(x, y, alpha=alpha, reduction="none")
    assert per_pair.shape == (6,)
    torch.testing.assert_close(per_pair, torch.stack([ref_align(x[i : i + 1], y[i : i + 1], alpha) for i in range(6)]))
    torch.testing.assert_close(per_pair.mean(), align_loss(x, y, alpha=alpha))
    torch.testing.assert_close(per_pair.sum(), align_loss(x, y, alpha=alpha, reduction="sum"))
    torch.testing.assert_close(AlignLoss(alpha=alpha, reduction="none")(x, y), per_pair)


def test_batch_statistics_have_only_the_mean():
    x = _sphere(6, 4)
    for call in (
        lambda r: uniform_loss(x, reduction=r),
        lambda r: align_uniform(x, x, reduction=r),
        lambda r: UniformLoss(reduction=r),
        lambda r: AlignUniform(reduction=r),
    ):
        for reduction in ("sum", "none"):
            with pytest.raises(ValueError, match=f"no per-sample losses, so reduction must be 'mean', got '{reduction}"):
                call(reduction)
        with pytest.raises(ValueError, match="'avg'"):
            call("avg")
    torch.testing.assert_close(uniform_loss(x, reduction="mean"), uniform_loss(x))
    with pytest.raises(ValueError, match="'avg'"):
        align_loss(x, x, reduction="avg")


def test_normalize_inside():
    z1, z2 = torch.randn(6, 4, dtype=DT), torch.randn(6, 4, dtype=DT)
    u1, u2 = torch.nn.functional.normalize(z1, dim=1), torch.nn.functional.normalize(z2, dim=1)
    torch.testing.assert_close(align_loss(z1, z2, normalize=True), align_loss(u1, u2))
    torch.testing.assert_close(uniform_loss(z1, normalize=True), uniform_loss(u1))
    align_loss(3 * z1, z2, normalize=True, check_normalized=True)  # checked after normalising: passes
    with pytest.raises(ValueError, match="unit-norm"):
        align_loss(3 * z1, z2, check_normalized=True)
    # off by default: these are also metrics of the points as given
    assert not torch.allclose(align_loss(z1, z2), align_loss(u1, u2))


def test_align_and_uniform_modules():
    z1, z2 = torch.randn(6, 4, dtype=DT), torch.randn(6, 4, dtype=DT)
    torch.testing.assert_close(AlignLoss(alpha=1.5)(z1, z2), align_loss(z1, z2, alpha=1.5))
    torch.testing.assert_close(AlignLoss(normalize=True)(z1, z2), align_loss(z1, z2, normalize=True))
    torch.testing.assert_close(UniformLoss(t=3.0)(z1), uniform_loss(z1, t=3.0))
    torch.testing.assert_close(UniformLoss(normalize=True)(z1), uniform_loss(z1, normalize=True))
    for bad in (dict(alpha=0), dict(reduction="avg")):
        with pytest.raises(ValueError):
            AlignLoss(**bad)
    with pytest.raises(ValueError, match="t must"):
        UniformLoss(t=0)
