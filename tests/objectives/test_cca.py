"""Linear CCA (closed form) against scikit-learn and planted correlations; deep CCA against a float64 reference."""

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.cross_decomposition import CCA
from sklearn.exceptions import NotFittedError

from contrastlab.objectives._spec import ObjectiveSpec
from contrastlab.objectives.cca import SPECS, DCCALoss, LinearCCA, dcca_loss

PLANTED = np.array([0.9, 0.6, 0.3])


def planted_views(n=400, seed=0):
    """Two views whose *sample* canonical correlations are exactly ``PLANTED`` (then zeros).

    Centred, exactly orthonormal columns u (3), e (3) and noise (2 + 1) make u_j and
    v_j = rho_j u_j + sqrt(1 - rho_j^2) e_j correlate at exactly rho_j and nothing else correlate;
    random invertible mixings hide the structure.
    """
    rng = np.random.default_rng(seed)
    g = rng.normal(size=(n, 9))
    q, _ = np.linalg.qr(g - g.mean(axis=0))
    cols = q * np.sqrt(n - 1)  # sample covariance exactly I
    u, e, noise_x, noise_y = cols[:, :3], cols[:, 3:6], cols[:, 6:8], cols[:, 8:9]
    v = PLANTED * u + np.sqrt(1 - PLANTED**2) * e
    a, b = rng.normal(size=(5, 5)), rng.normal(size=(4, 4))
    return np.hstack([u, noise_x]) @ a + 3.0, np.hstack([v, noise_y]) @ b - 1.0


def cca_reference(x, y, reg):
    """Canonical correlations of two views, float64 numpy, symmetric inverse square roots by eigh."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    n = x.shape[0]
    xc, yc = x - x.mean(axis=0), y - y.mean(axis=0)

    def inv_sqrt(c):
        w, v = np.linalg.eigh(c)
        return v @ np.diag(w**-0.5) @ v.T

    c11 = xc.T @ xc / (n - 1) + reg * np.eye(x.shape[1])
    c22 = yc.T @ yc / (n - 1) + reg * np.eye(y.shape[1])
    c12 = xc.T @ yc / (n - 1)
    return np.linalg.svd(inv_sqrt(c11) @ c12 @ inv_sqrt(c22), compute_uv=False)


def dcca_reference(x, y, k, reg):
    return -cca_reference(x, y, reg)[:k].sum()


# --------------------------------------------------------------------------- LinearCCA


def test_linear_cca_recovers_the_planted_correlations():
    X, Y = planted_views()
    cca = LinearCCA(n_components=3, reg=0.0).fit(X, Y)
    np.testing.assert_allclose(cca.correlations_, PLANTED, atol=1e-10)
    full = LinearCCA(n_components=4, reg=0.0).fit(X, Y)
    np.testing.assert_allclose(full.correlations_, [*PLANTED, 0.0], atol=1e-10)


def test_linear_cca_agrees_with_scikit_learn():
    rng = np.random.default_rng(1)
    s = rng.normal(size=(600, 3))
    X = np.hstack([s, rng.normal(size=(600, 3))]) @ rng.normal(size=(6, 6))
    Y = np.hstack([s * [1.0, 0.5, 0.2] + rng.normal(size=(600, 3)), rng.normal(size=(600, 1))])
    ours = LinearCCA(n_components=3, reg=0.0).fit(X, Y)
    peer = CCA(n_components=3, max_iter=5000, tol=1e-12).fit(X, Y)
    xs, ys = peer.transform(X, Y)
    peer_corr = [np.corrcoef(xs[:, j], ys[:, j])[0, 1] for j in range(3)]
    np.testing.assert_allclose(ours.correlations_, peer_corr, rtol=1e-6)
    # same directions up to sign: our scores correlate +-1 with scikit-learn's
    ox, _ = ours.transform(X, Y)
    for j in range(3):
        assert abs(np.corrcoef(ox[:, j], xs[:, j])[0, 1]) == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("reg", [0.0, 1e-4])
def test_linear_cca_components_are_uncorrelated_with_unit_variance(reg):
    X, Y = planted_views(seed=2)
    cca = LinearCCA(n_components=3, reg=reg).fit(X, Y)
    xs, ys = cca.transform(X, Y)
    # U^T (S11 + r I) U = I exactly: unit variance and uncorrelated when r = 0, up to the ridge term otherwise
    u, v = cca.x_weights_, cca.y_weights_
    np.testing.assert_allclose(np.cov(xs.T) + reg * u.T @ u, np.eye(3), atol=1e-10)
    np.testing.assert_allclose(np.cov(ys.T) + reg * v.T @ v, np.eye(3), atol=1e-10)
    np.testing.assert_allclose(np.cov(xs.T, ys.T)[:3, 3:], np.diag(cca.correlations_), atol=1e-10)
    np.testing.assert_allclose(xs.mean(axis=0), 0.0, atol=1e-10)


def test_linear_cca_learned_attributes_and_invariance():
    X, Y = planted_views(seed=3)
    cca = LinearCCA(n_components=2, reg=0.0).fit(X, Y)
    assert cca.x_weights_.shape == (5, 2) and cca.y_weights_.shape == (4, 2) and cca.correlations_.shape == (2,)
    np.testing.assert_allclose(cca.means_[0], X.mean(axis=0))
    np.testing.assert_allclose(cca.means_[1], Y.mean(axis=0))
    assert cca.n_features_in_ == 5 and cca.transform(X[:7]).shape == (7, 2)
    mixed = LinearCCA(n_components=2, reg=0.0).fit(X @ np.random.default_rng(4).normal(size=(5, 5)), 2 * Y)
    np.testing.assert_allclose(mixed.correlations_, cca.correlations_, atol=1e-9)
    torch_input = LinearCCA(n_components=2, reg=0.0).fit(torch.tensor(X), torch.tensor(Y))
    np.testing.assert_allclose(torch_input.correlations_, cca.correlations_)


def test_linear_cca_regularisation_matches_reference():
    X, Y = planted_views(n=60, seed=5)
    cca = LinearCCA(n_components=4, reg=0.5).fit(X, Y)
    np.testing.assert_allclose(cca.correlations_, cca_reference(X, Y, 0.5)[:4], rtol=1e-10, atol=1e-12)
    assert (cca.correlations_ < LinearCCA(n_components=4, reg=0.0).fit(X, Y).correlations_ + 1e-12).all()


def test_linear_cca_is_a_scikit_learn_estimator():
    cca = LinearCCA(n_components=-5, reg="bad")  # __init__ only stores
    assert cca.get_params() == {"n_components": -5, "reg": "bad"}
    copy = clone(LinearCCA(3, reg=0.1))
    assert copy.get_params() == {"n_components": 3, "reg": 0.1} and not hasattr(copy, "x_weights_")
    X, Y = planted_views(seed=6)
    xs, ys = LinearCCA(2).fit_transform(X, Y)
    assert xs.shape == ys.shape == (400, 2)


@pytest.mark.parametrize(
    "estimator, X, Y, match",
    [
        (LinearCCA(0), np.ones((5, 3)), np.ones((5, 2)), "n_components must be an integer >= 1, got 0"),
        (LinearCCA(3), np.random.rand(5, 3), np.random.rand(5, 2), r"min\(D1, D2\) = 2, got 3"),
        (LinearCCA(1.5), np.random.rand(5, 3), np.random.rand(5, 2), "1.5"),
        (LinearCCA(1, reg=-1.0), np.random.rand(5, 3), np.random.rand(5, 2), "reg"),
        (LinearCCA(1), np.random.rand(5), np.random.rand(5, 2), r"X must have shape.*\(5,\)"),
        (LinearCCA(1), np.random.rand(5, 3), np.random.rand(4, 2), r"got shapes: \[\(5, 3\), \(4, 2\)\]"),
        (LinearCCA(1), np.random.rand(1, 3), np.random.rand(1, 2), "n_samples >= 2 to estimate covariances, got 1"),
        (LinearCCA(1), np.full((5, 3), np.nan), np.random.rand(5, 2), "NaN"),
        (LinearCCA(1, reg=0.0), np.ones((5, 3)), np.random.rand(5, 2), "singular"),
    ],
)
def test_linear_cca_bad_input(estimator, X, Y, match):
    with pytest.raises(ValueError, match=match):
        estimator.fit(X, Y)


def test_linear_cca_transform_checks():
    with pytest.raises(NotFittedError):
        LinearCCA().transform(np.ones((3, 2)))
    assert issubclass(NotFittedError, ValueError)
    cca = LinearCCA(2).fit(*planted_views(seed=7))
    with pytest.raises(ValueError, match="X has 3 features, but LinearCCA was fitted with 5"):
        cca.transform(np.ones((2, 3)))
    with pytest.raises(ValueError, match="Y has 5 features"):
        cca.transform(np.ones((2, 5)), np.ones((2, 5)))


# --------------------------------------------------------------------------- deep CCA objective


@pytest.mark.parametrize("d1, d2, k", [(4, 4, None), (5, 3, None), (5, 3, 2), (3, 6, 1)])
def test_dcca_matches_reference(d1, d2, k):
    z1 = torch.randn(40, d1, dtype=torch.float64)
    z2 = z1[:, :1] @ torch.randn(1, d2, dtype=torch.float64) + torch.randn(40, d2, dtype=torch.float64)
    ours = dcca_loss(z1, z2, n_components=k, reg=1e-3)
    ref = dcca_reference(z1.numpy(), z2.numpy(), k or min(d1, d2), 1e-3)
    assert ours.item() == pytest.approx(ref, rel=1e-10)


def test_dcca_gradient_matches_finite_differences_of_the_reference():
    z1, z2 = torch.randn(12, 3, dtype=torch.float64), torch.randn(12, 2, dtype=torch.float64)
    z2 = z2 + z1[:, :2]
    a, b = z1.clone().requires_grad_(), z2.clone().requires_grad_()
    g1, g2 = torch.autograd.grad(dcca_loss(a, b, n_components=2, reg=1e-2), [a, b])
    for z, g, which in ((z1, g1, 0), (z2, g2, 1)):
        expected = np.zeros(z.shape)
        for idx in np.ndindex(*z.shape):
            values = []
            for step in (1e-6, -1e-6):
                moved = [z1.numpy().copy(), z2.numpy().copy()]
                moved[which][idx] += step
                values.append(dcca_reference(*moved, 2, 1e-2))
            expected[idx] = (values[0] - values[1]) / 2e-6
        np.testing.assert_allclose(g.numpy(), expected, rtol=1e-6, atol=1e-8)


def test_dcca_gradcheck():
    z1 = torch.randn(10, 3, dtype=torch.float64, requires_grad=True)
    z2 = torch.randn(10, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: dcca_loss(a, b, reg=1e-2), (z1, z2))
    assert torch.autograd.gradcheck(lambda a, b: dcca_loss(a, b, n_components=1, reg=1e-2), (z1, z2))


def whitened(n=64, d=4):
    h = torch.randn(n, d, dtype=torch.float64)
    q, _ = torch.linalg.qr(h - h.mean(dim=0))
    return q * (n - 1) ** 0.5  # covariance exactly I: every eigenvalue repeated


def test_dcca_gradients_with_identical_whitened_views():
    w = whitened(n=16)
    evals = torch.linalg.eigvalsh(w.T @ w / 15)
    assert (evals - 1).abs().max() < 1e-12  # the degenerate case: eigh's backward would divide by 0
    loss = dcca_loss(w, w, reg=1e-3)
    assert loss.item() == pytest.approx(-4 / (1 + 1e-3), rel=1e-10)  # each correlation lambda / (lambda + r)
    assert torch.autograd.gradcheck(lambda a: dcca_loss(a, a, reg=1e-3), (w.clone().requires_grad_(),))
    assert torch.autograd.gradcheck(lambda a, b: dcca_loss(a, b, reg=1e-3), (w.clone().requires_grad_(),) * 2)


@pytest.mark.parametrize("case", ["identical", "linear_map", "antipodal", "collapsed", "near_one"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("k", [None, 2])
def test_dcca_finite_on_degenerate_views(case, dtype, k):
    h = torch.randn(32, 4, dtype=dtype) if case != "identical" else whitened(32).to(dtype)
    second = {
        "identical": h,
        "linear_map": h @ torch.tensor([[2.0, 1, 0, 0], [0, 1, 0, 0], [0, 0, 3, 0], [0, 0, 1, -1]], dtype=dtype),
        "antipodal": -h,
        "collapsed": torch.ones_like(h),
        "near_one": h + 1e-4 * torch.randn_like(h),
    }[case]
    first = torch.ones_like(h) if case == "collapsed" else h
    a, b = first.clone().requires_grad_(), second.clone().requires_grad_()
    loss = dcca_loss(a, b, n_components=k, reg=1e-3)
    ga, gb = torch.autograd.grad(loss, [a, b])
    assert loss.dtype == dtype and ga.dtype == dtype
    assert torch.isfinite(loss) and torch.isfinite(ga).all() and torch.isfinite(gb).all()
    kk = k or 4
    if case == "collapsed":
        assert loss.item() == 0.0
    else:  # perfectly (or nearly) correlated: every correlation is close to 1
        assert loss.item() == pytest.approx(-kk, abs=0.01 * kk)


def test_dcca_is_invariant_to_invertible_linear_maps_and_shifts():
    z1 = torch.randn(50, 4, dtype=torch.float64)
    z2 = z1[:, :2] @ torch.randn(2, 3, dtype=torch.float64) + torch.randn(50, 3, dtype=torch.float64)
    base = dcca_loss(z1, z2, reg=1e-10)
    a, b = torch.randn(4, 4, dtype=torch.float64), torch.randn(3, 3, dtype=torch.float64)
    torch.testing.assert_close(dcca_loss(z1 @ a + 5.0, z2, reg=1e-10), base, rtol=1e-7, atol=1e-9)
    torch.testing.assert_close(dcca_loss(z1, z2 @ b - 2.0, reg=1e-10), base, rtol=1e-7, atol=1e-9)
    perm = torch.randperm(50)
    torch.testing.assert_close(dcca_loss(z1[perm], z2[perm], reg=1e-10), base)
    torch.testing.assert_close(dcca_loss(z2, z1, reg=1e-10), base)  # symmetric


def test_dcca_agrees_with_linear_cca_and_orders_components():
    X, Y = planted_views(seed=8)
    tx, ty = torch.tensor(X), torch.tensor(Y)
    corr = LinearCCA(n_components=4, reg=1e-3).fit(X, Y).correlations_
    for k in range(1, 5):
        assert -dcca_loss(tx, ty, n_components=k, reg=1e-3).item() == pytest.approx(corr[:k].sum(), rel=1e-10)
    assert -dcca_loss(tx, ty, n_components=3, reg=1e-12).item() == pytest.approx(PLANTED.sum(), rel=1e-9)


def test_dcca_trains_linear_encoders_to_the_top_correlation():
    X, Y = planted_views(n=256, seed=9)
    x, y = torch.tensor(X, dtype=torch.float32), torch.tensor(Y, dtype=torch.float32)
    f, g = torch.nn.Linear(5, 1), torch.nn.Linear(4, 1)
    opt = torch.optim.Adam([*f.parameters(), *g.parameters()], lr=0.05)
    for _ in range(150):
        opt.zero_grad()
        loss = dcca_loss(f(x), g(y), reg=1e-4)
        loss.backward()
        opt.step()
    assert -loss.item() == pytest.approx(PLANTED[0], abs=0.01)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda a, b: dcca_loss(a, b, reg=0.0), "reg must be a finite number > 0, got 0.0"),
        (lambda a, b: dcca_loss(a, b, n_components=0), "got 0"),
        (lambda a, b: dcca_loss(a, b, n_components=4), r"min\(D1, D2\) = 3, got 4"),
        (lambda a, b: dcca_loss(a, b, n_components=1.0), "got 1.0"),
        (lambda a, b: dcca_loss(a[:1], b[:1]), "got 1"),
        (lambda a, b: dcca_loss(a, b[:5]), r"\(6, 3\) and \(5, 3\)"),
        (lambda a, b: dcca_loss(a[:, 0], b), r"z1 must have shape \(N, D\)"),
        (lambda a, b: DCCALoss(n_components=-2), "got -2"),
        (lambda a, b: DCCALoss(reg=-1e-3), "-0.001"),
        (lambda a, b: dcca_loss(a * float("nan"), b), "not positive definite"),
        (lambda a, b: dcca_loss(a, b, reduction="none"), "no per-sample losses, so reduction must be 'mean'"),
        (lambda a, b: dcca_loss(a, b, reduction="sum"), "got 'sum'"),
        (lambda a, b: dcca_loss(a, b, reduction="avg"), "'avg'"),
        (lambda a, b: DCCALoss(reduction="none"), "got 'none'"),
    ],
)
def test_dcca_bad_arguments(call, match):
    with pytest.raises(ValueError, match=match):
        call(torch.randn(6, 3), torch.randn(6, 3))


def test_dcca_spec_and_module():
    (spec,) = SPECS
    assert isinstance(spec, ObjectiveSpec) and spec.name == "dcca" and spec.kind == "cca"
    assert spec.formula and "\n" not in spec.formula and "Andrew" in spec.reference
    module = spec.factory(n_components=2, reg=1e-2)
    z1, z2 = torch.randn(20, 3), torch.randn(20, 5)
    torch.testing.assert_close(module(z1, z2), dcca_loss(z1, z2, n_components=2, reg=1e-2))
    with pytest.raises(ValueError, match="got 4"):
        DCCALoss(n_components=4)(z1, z2)
