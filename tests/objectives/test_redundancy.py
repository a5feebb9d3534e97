import doctest
import importlib

import pytest
import torch

import _peers
from _compare import assert_same
from contrastlab.objectives.redundancy import BarlowTwinsLoss, VICRegLoss, barlow_twins, vicreg

DT = torch.float64


def _pair(n=8, d=4):
    """Two correlated views whose dimensions have standard deviations on both sides of 1."""
    spread = torch.linspace(0.3, 2.0, d, dtype=DT)
    z1 = torch.randn(n, d, dtype=DT) * spread
    return z1, 0.7 * z1 + 0.5 * torch.randn(n, d, dtype=DT) * spread


# ---------------------------------------------------------------- slow references, loops over the batch


def _column_stats(z, j, ddof):
    n = z.shape[0]
    mean = sum(z[b, j] for b in range(n)) / n
    var = sum((z[b, j] - mean) ** 2 for b in range(n)) / (n - ddof)
    return mean, var


def ref_barlow_standardised(z1, z2, lam, eps, unbiased=False):
    """Barlow Twins' algorithm 1: standardise each dimension over the batch, C = z1~^T z2~ / N."""
    n, d = z1.shape

    def standardised(z):
        cols = []
        for j in range(d):
            mean, var = _column_stats(z, j, 1 if unbiased else 0)
            cols.append([(z[b, j] - mean) / torch.sqrt(var + eps) for b in range(n)])
        return cols

    a, b = standardised(z1), standardised(z2)
    loss = 0.0
    for i in range(d):
        for j in range(d):
            c = sum(a[i][k] * b[j][k] for k in range(n)) / n
            loss = loss + ((1 - c) ** 2 if i == j else lam * c**2)
    return loss


def ref_barlow_equation_2(z1, z2, lam):
    """Barlow Twins' equation (2), the correlation coefficient of mean-centred outputs, no epsilon."""
    n, d = z1.shape
    m1 = [sum(z1[b, i] for b in range(n)) / n for i in range(d)]
    m2 = [sum(z2[b, i] for b in range(n)) / n for i in range(d)]
    loss = 0.0
    for i in range(d):
        for j in range(d):
            num = sum((z1[b, i] - m1[i]) * (z2[b, j] - m2[j]) for b in range(n))
            den1 = torch.sqrt(sum((z1[b, i] - m1[i]) ** 2 for b in range(n)))
            den2 = torch.sqrt(sum((z2[b, j] - m2[j]) ** 2 for b in range(n)))
            c = num / (den1 * den2)
            loss = loss + ((1 - c) ** 2 if i == j else lam * c**2)
    return loss


def ref_vicreg(z1, z2, lam, mu, nu, eps):
    """VICReg's loss (its algorithm 1): MSE invariance, hinge on the unbiased std, off-diagonal covariance / D."""
    n, d = z1.shape
    invariance = sum((z1[b, j] - z2[b, j]) ** 2 for b in range(n) for j in range(d)) / (n * d)

    def variance(z):
        total = 0.0
        for j in range(d):
            _, var = _column_stats(z, j, 1)
            total = total + torch.clamp(1 - torch.sqrt(var + eps), min=0)
        return total / d

    def covariance(z):
        means = [_column_stats(z, j, 1)[0] for j in range(d)]
        total = 0.0
        for i in range(d):
            for j in range(d):
                if i != j:
                    cov = sum((z[b, i] - means[i]) * (z[b, j] - means[j]) for b in range(n)) / (n - 1)
                    total = total + cov**2
        return total / d

    return lam * invariance + mu * (variance(z1) + variance(z2)) + nu * (covariance(z1) + covariance(z2))


# ---------------------------------------------------------------- value and gradient vs the references


@pytest.mark.parametrize("unbiased", [False, True])
@pytest.mark.parametrize(("lam", "eps"), [(5e-3, 1e-5), (0.5, 0.1)])
def test_barlow_matches_loop_reference(unbiased, lam, eps):
    z1, z2 = _pair()
    assert_same(
        lambda a, b: barlow_twins(a, b, off_diagonal_weight=lam, eps=eps, unbiased=unbiased),
        lambda a, b: ref_barlow_standardised(a, b, lam, eps, unbiased),
        z1,
        z2,
    )


def test_barlow_default_is_the_papers_correlation_coefficient():
    # the biased standardisation is equation (2) exactly when eps = 0; the unbiased one is not
    z1, z2 = _pair()
    assert_same(
        lambda a, b: barlow_twins(a, b, off_diagonal_weight=0.3, eps=0.0),
        lambda a, b: ref_barlow_equation_2(a, b, 0.3),
        z1,
        z2,
    )
    assert abs(barlow_twins(z1, z2, eps=0.0, unbiased=True) - ref_barlow_equation_2(z1, z2, 5e-3)) > 1e-3


@pytest.mark.parametrize(("lam", "mu", "nu", "eps"), [(25.0, 25.0, 1.0, 1e-4), (1.0, 3.0, 0.5, 0.2)])
def test_vicreg_matches_loop_reference(lam, mu, nu, eps):
    z1, z2 = _pair()
    assert_same(
        lambda a, b: vicreg(a, b, invariance_weight=lam, variance_weight=mu, covariance_weight=nu, eps=eps),
        lambda a, b: ref_vicreg(a, b, lam, mu, nu, eps),
        z1,
        z2,
        atol=1e-10,
    )


# ---------------------------------------------------------------- closed forms


def _orthogonal_columns(n=8, d=3, scale=1.0):
    """Centred columns, orthogonal to each other, biased variance ``scale**2`` (rows of a Hadamard-like matrix)."""
    signs = torch.tensor([[(-1) ** ((b >> j) & 1) for j in range(d)] for b in range(n)], dtype=DT)
    return scale * signs


def test_barlow_closed_forms():
    n, d = 8, 3
    z = _orthogonal_columns(n, d)
    assert barlow_twins(z, z, eps=0.0).item() == pytest.approx(0.0, abs=1e-12)  # C = I
    # identical views: the on-diagonal term vanishes whatever the data (C_ii = 1) ...
    z1, _ = _pair(n, d)
    assert barlow_twins(z1, z1, off_diagonal_weight=0.0, eps=0.0).item() == pytest.approx(0.0, abs=1e-12)
    # ... up to eps: C_ii = var / (var + eps) (biased variance)
    var = z1.var(dim=0, correction=0)
    expected = ((1 - var / (var + 1e-2)) ** 2).sum().item()
    assert barlow_twins(z1, z1, off_diagonal_weight=0.0, eps=1e-2).item() == pytest.approx(expected, rel=1e-10)
    # with the unbiased standardisation C_ii = (N-1)/N
    assert barlow_twins(z1, z1, off_diagonal_weight=0.0, eps=0.0, unbiased=True).item() == pytest.approx(d / n**2)
    # opposite views: C_ii = -1
    assert barlow_twins(z1, -z1, off_diagonal_weight=0.0, eps=0.0).item() == pytest.approx(4.0 * d)
    # two identical dimensions: C_01 = C_10 = 1, the rest of C is the identity
    dup = torch.stack([z[:, 0], z[:, 0], z[:, 1]], dim=1)
    assert barlow_twins(dup, dup, off_diagonal_weight=0.25, eps=0.0).item() == pytest.approx(0.25 * 2)


def test_vicreg_closed_forms():
    n, d = 8, 3
    eps = 1e-4
    big = _orthogonal_columns(n, d, scale=1.5)
    # every std >= 1 and no covariance: the variance and covariance terms are 0; a shift only adds invariance
    assert vicreg(big, big).item() == 0.0
    assert vicreg(big, big + 0.2).item() == pytest.approx(25.0 * 0.04, rel=1e-12)
    assert vicreg(big * torch.tensor([1.0, 3.0, 10.0], dtype=DT), big, invariance_weight=0.0).item() == 0.0
    # collapsed (constant) views: std = sqrt(eps) in every dimension, covariance 0
    const = torch.full((n, d), 0.7, dtype=DT)
    assert vicreg(const, const).item() == pytest.approx(25.0 * 2 * (1 - eps**0.5), rel=1e-12)
    # two equal dimensions of unbiased variance s2: Cov_01 = Cov_10 = s2, c = 2 s2^2 / D
    a = _orthogonal_columns(n, 1)[:, 0]
    s2 = (a.var()).item()
    dup = torch.stack([a, a, _orthogonal_columns(n, 2)[:, 1]], dim=1)
    got = vicreg(dup, dup, invariance_weight=0.0, variance_weight=0.0, covariance_weight=1.0).item()
    assert got == pytest.approx(2 * (2 * s2**2 / 3), rel=1e-12)


# ---------------------------------------------------------------- gradcheck, invariances, symmetry


@pytest.mark.parametrize(
    "fn",
    [
        lambda a, b: barlow_twins(a, b),
        lambda a, b: barlow_twins(a, b, off_diagonal_weight=0.5, unbiased=True),
        lambda a, b: vicreg(a, b),
    ],
    ids=["barlow", "barlow_unbiased", "vicreg"],
)
def test_gradcheck(fn):
    a, b = _pair(6, 3)
    assert torch.autograd.gradcheck(fn, (a.requires_grad_(True), b.requires_grad_(True)))


def test_batch_permutation_and_view_swap():
    z1, z2 = _pair(16, 6)
    perm = torch.randperm(16)
    for fn in (barlow_twins, vicreg):
        value = fn(z1, z2)
        torch.testing.assert_close(fn(z1[perm], z2[perm]), value)
        torch.testing.assert_close(fn(z2, z1), value)
        assert not torch.isclose(fn(z1, z2[perm]), value)  # the pairing matters


def test_barlow_is_invariant_to_affine_maps_of_each_dimension():
    z1, z2 = _pair(16, 6)
    scale, shift = torch.rand(6, dtype=DT) * 4 + 0.2, torch.randn(6, dtype=DT)
    torch.testing.assert_close(barlow_twins(scale * z1 + shift, z2, eps=0.0), barlow_twins(z1, z2, eps=0.0))
    # VICReg is not: scaling changes every one of its terms
    assert not torch.isclose(vicreg(scale * z1, z2), vicreg(z1, z2))


# ---------------------------------------------------------------- lightly


@pytest.mark.parametrize(("n", "d"), [(16, 8), (64, 32)])
def test_barlow_agrees_with_lightly(n, d):
    # lightly standardises with F.batch_norm: biased variance, eps = 1e-5 under the root, as our default
    z1, z2 = _pair(n, d)
    for lam in (5e-3, 0.2):
        peer = _peers.lightly("BarlowTwinsLoss")(lambda_param=lam)
        assert_same(lambda a, b: barlow_twins(a, b, off_diagonal_weight=lam), peer, z1, z2, atol=1e-10)


@pytest.mark.parametrize(("n", "d"), [(16, 8), (64, 32)])
def test_vicreg_agrees_with_lightly(n, d):
    # lightly (like the authors' code) halves the variance term: mu_param * (v(z1) + v(z2)) / 2. Ours is the
    # paper's mu * (v(z1) + v(z2)), so mu_param = 2 * variance_weight. The other terms map one to one.
    cls = _peers.lightly("VICRegLoss")
    z1, z2 = _pair(n, d)
    for lam, mu, nu, eps in ((25.0, 25.0, 1.0, 1e-4), (1.0, 3.0, 0.5, 0.2)):
        peer = cls(lambda_param=lam, mu_param=2 * mu, nu_param=nu, eps=eps)
        assert_same(
            lambda a, b: vicreg(a, b, invariance_weight=lam, variance_weight=mu, covariance_weight=nu, eps=eps),
            peer,
            z1,
            z2,
            atol=1e-9,
        )
    # the factor of 2 is real: with the same mu the two differ (the variance term is active in _pair)
    assert not torch.isclose(vicreg(z1, z2), cls()(z1, z2))


# ---------------------------------------------------------------- bad options, modules, specs, docs


@pytest.mark.parametrize("bad", [-1e-3, float("nan"), float("inf"), "0.1", True, None])
def test_bad_weights(bad):
    z = torch.randn(4, 3)
    for name in ("off_diagonal_weight", "eps"):
        with pytest.raises(ValueError, match=name):
            barlow_twins(z, z, **{name: bad})
        with pytest.raises(ValueError, match=name):
            BarlowTwinsLoss(**{name: bad})
    for name in ("invariance_weight", "variance_weight", "covariance_weight", "eps"):
        with pytest.raises(ValueError, match=name):
            vicreg(z, z, **{name: bad})
        with pytest.raises(ValueError, match=name):
            VICRegLoss(**{name: bad})


def test_bad_shapes_and_batches():
    for fn in (barlow_twins, vicreg):
        with pytest.raises(ValueError, match=r"\(4, 3\) and \(4, 2\)"):
            fn(torch.randn(4, 3), torch.randn(4, 2))
        with pytest.raises(ValueError, match="N >= 2"):
            fn(torch.randn(1, 3), torch.randn(1, 3))
        with pytest.raises(ValueError, match=r"shape \(4, 3, 1\)"):
            fn(torch.randn(4, 3, 1), torch.randn(4, 3, 1))


def test_modules_forward_options():
    z1, z2 = _pair()
    torch.testing.assert_close(
        BarlowTwinsLoss(off_diagonal_weight=0.1, unbiased=True)(z1, z2),
        barlow_twins(z1, z2, off_diagonal_weight=0.1, unbiased=True),
    )
    torch.testing.assert_close(VICRegLoss(variance_weight=2.0)(z1, z2), vicreg(z1, z2, variance_weight=2.0))
    assert "variance_weight=2" in repr(VICRegLoss(variance_weight=2.0))


def test_docstring_examples_run():
    module = importlib.import_module("contrastlab.objectives.redundancy")
    result = doctest.testmod(module, extraglobs={"torch": torch}, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted > 0
