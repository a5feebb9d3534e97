import doctest
import importlib
import math
import warnings

import pytest
import torch
import torch.nn.functional as F

import _peers
from _compare import assert_same
from contrastlab.objectives.decoupled import DCL, DCLW, dcl
from contrastlab.objectives.info_nce import nt_xent

DT = torch.float64


def _pair(n=6, d=5):
    z1 = torch.randn(n, d, dtype=DT)
    return z1, z1 + 0.8 * torch.randn(n, d, dtype=DT)


# ---------------------------------------------------------------- slow reference, loops over the batch


def _unit(v):
    return v / torch.sqrt((v * v).sum())


def ref_dcl(z1, z2, tau, sigma=None, normalize=True):
    """DCL's equation (6), summed over i and both views k, divided by 2N; DCLW's weights as in section 4."""
    f = _unit if normalize else (lambda v: v)
    n = z1.shape[0]
    views = ([f(z1[i]) for i in range(n)], [f(z2[i]) for i in range(n)])
    positive = [(views[0][i] * views[1][i]).sum() for i in range(n)]
    if sigma is None:
        weights = [1.0] * n
    else:
        mean_exp = sum(torch.exp(s.detach() / sigma) for s in positive) / n
        weights = [2 - torch.exp(s.detach() / sigma) / mean_exp for s in positive]
    total = 0.0
    for k in range(2):
        for i in range(n):
            negatives = [(views[k][i] * views[l][j]).sum() / tau for l in range(2) for j in range(n) if j != i]
            total = total - weights[i] * positive[i] / tau + torch.log(sum(torch.exp(s) for s in negatives))
    return total / (2 * n)


# ---------------------------------------------------------------- value and gradient vs the reference


@pytest.mark.parametrize("sigma", [None, 0.5, 2.0])
@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("tau", [0.1, 0.7])
def test_matches_loop_reference(sigma, normalize, tau):
    z1, z2 = _pair()
    if not normalize:
        z1, z2 = 0.4 * z1, 0.4 * z2
    assert_same(
        lambda a, b: dcl(a, b, temperature=tau, weight_sigma=sigma, normalize=normalize),
        lambda a, b: ref_dcl(a, b, tau, sigma, normalize),
        z1,
        z2,
    )


def test_tensor_temperature_matches_and_receives_gradient():
    z1, z2 = _pair()
    assert_same(
        lambda a, b, t: dcl(a, b, temperature=t, weight_sigma=0.5),
        lambda a, b, t: ref_dcl(a, b, t, 0.5),
        z1,
        z2,
        torch.tensor(0.3, dtype=DT),
    )
    tau = torch.tensor(0.3, dtype=DT, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: dcl(z1, z2, temperature=t), (tau,))


def test_reductions():
    z1, z2 = _pair()
    per_anchor = dcl(z1, z2, weight_sigma=0.5, reduction="none")
    assert per_anchor.shape == (12,)
    torch.testing.assert_close(per_anchor.mean(), dcl(z1, z2, weight_sigma=0.5))
    torch.testing.assert_close(per_anchor.sum(), dcl(z1, z2, weight_sigma=0.5, reduction="sum"))


# ---------------------------------------------------------------- closed forms


@pytest.mark.parametrize("n", [2, 5])
@pytest.mark.parametrize("tau", [0.1, 1.0])
def test_identical_positives_orthogonal_negatives(n, tau):
    z = torch.eye(n, dtype=DT)
    # every anchor: positive at cosine 1, 2N - 2 negatives at cosine 0
    expected = -1 / tau + math.log(2 * n - 2)
    assert dcl(z, z, temperature=tau).item() == pytest.approx(expected, rel=1e-12)
    # all positives equally similar: every DCLW weight is 2 - 1 = 1
    assert dcl(z, z, temperature=tau, weight_sigma=0.5).item() == pytest.approx(expected, rel=1e-12)


def test_all_equal_inputs_give_log_number_of_negatives():
    z = torch.ones(4, 3, dtype=DT)
    assert dcl(z, z, temperature=0.2).item() == pytest.approx(math.log(6), rel=1e-12)


def test_nt_xent_is_dcl_plus_the_coupling_term():
    # NT-Xent_k = -pos + log(e^pos + e^L) = DCL_k + softplus(-DCL_k), with L the log-sum-exp over the negatives
    z1, z2 = _pair(8, 4)
    per_anchor = dcl(z1, z2, temperature=0.3, reduction="none")
    torch.testing.assert_close((per_anchor + F.softplus(-per_anchor)).mean(), nt_xent(z1, z2, temperature=0.3))


def test_dclw_weights_flatten_to_dcl_for_a_large_sigma():
    z1, z2 = _pair()
    torch.testing.assert_close(dcl(z1, z2, weight_sigma=1e9), dcl(z1, z2), rtol=0, atol=1e-7)
    assert not torch.isclose(dcl(z1, z2, weight_sigma=0.2), dcl(z1, z2))


# ---------------------------------------------------------------- gradcheck, invariances, symmetry


@pytest.mark.parametrize(
    "fn",
    [
        lambda a, b, t: dcl(a, b, temperature=t),
        lambda a, b, t: dcl(a, b, temperature=t, normalize=False, reduction="none"),
    ],
    ids=["dcl", "dcl_raw"],
)
def test_gradcheck(fn):
    a, b = (torch.randn(4, 3, dtype=DT, requires_grad=True) for _ in range(2))
    assert torch.autograd.gradcheck(fn, (a, b, torch.tensor(0.3, dtype=DT, requires_grad=True)))


def test_dclw_weights_are_constants_to_autograd():
    # the weights are detached, so a finite difference in z (which moves them too) disagrees with autograd;
    # in the temperature, which the weights do not depend on, the two agree
    a, b = (torch.randn(4, 3, dtype=DT, requires_grad=True) for _ in range(2))
    tau = torch.tensor(0.3, dtype=DT, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: dcl(a, b, temperature=t, weight_sigma=0.5), (tau,))
    assert not torch.autograd.gradcheck(lambda x: dcl(x, b, weight_sigma=0.5), (a,), raise_exception=False)


@pytest.mark.parametrize("sigma", [None, 0.5])
def test_batch_permutation_view_swap_and_scale_invariance(sigma):
    z1, z2 = _pair(9, 4)
    perm = torch.randperm(9)
    value = dcl(z1, z2, weight_sigma=sigma)
    torch.testing.assert_close(dcl(z1[perm], z2[perm], weight_sigma=sigma), value)
    torch.testing.assert_close(dcl(z2, z1, weight_sigma=sigma), value)
    per_anchor = dcl(z1, z2, weight_sigma=sigma, reduction="none")
    torch.testing.assert_close(dcl(z2, z1, weight_sigma=sigma, reduction="none"), per_anchor.roll(9))
    torch.testing.assert_close(dcl(3 * z1, 0.2 * z2, weight_sigma=sigma), value)
    raw = dcl(z1, z2, weight_sigma=sigma, normalize=False)
    assert not torch.isclose(dcl(3 * z1, z2, weight_sigma=sigma, normalize=False), raw)


# ---------------------------------------------------------------- lightly


@pytest.mark.parametrize(("n", "d"), [(16, 8), (64, 32)])
@pytest.mark.parametrize("tau", [0.1, 0.5])
def test_agrees_with_lightly(n, d, tau):
    # lightly: 0.5 * (mean over z1 anchors + mean over z2 anchors) = our mean over the 2N anchors; both
    # normalise inside; DCLWLoss's weights are 2 - N softmax(<z1_i, z2_i> / sigma), detached, as ours.
    z1, z2 = _pair(n, d)
    peer = _peers.lightly("DCLLoss")(temperature=tau)
    assert_same(lambda a, b: dcl(a, b, temperature=tau), peer, z1, z2, atol=1e-10)
    peer = _peers.lightly("DCLWLoss")(temperature=tau, sigma=0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # lightly copies its weights with torch.tensor(tensor)
        assert_same(lambda a, b: dcl(a, b, temperature=tau, weight_sigma=0.5), peer, z1, z2, atol=1e-10)


# ---------------------------------------------------------------- bad options, modules, specs, docs


@pytest.mark.parametrize("tau", [0, -0.1, float("nan"), float("inf"), "0.1", True])
def test_bad_temperature(tau):
    z = torch.randn(4, 3)
    with pytest.raises(ValueError, match="temperature"):
        dcl(z, z, temperature=tau)
    for cls in (DCL, DCLW):
        with pytest.raises(ValueError, match="temperature"):
            cls(temperature=tau)
    with pytest.raises(ValueError, match=r"0-dim.*\(2,\)"):
        dcl(z, z, temperature=torch.ones(2))


def test_bad_sigma_reduction_shapes_and_batch():
    z = torch.randn(4, 3)
    for sigma in (0, -0.5, float("nan")):
        with pytest.raises(ValueError, match=f"weight_sigma.*{sigma}"):
            dcl(z, z, weight_sigma=sigma)
        with pytest.raises(ValueError, match="sigma"):
            DCLW(sigma=sigma)
    with pytest.raises(ValueError, match="'avg'"):
        dcl(z, z, reduction="avg")
    with pytest.raises(ValueError, match="'avg'"):
        DCL(reduction="avg")
    with pytest.raises(ValueError, match=r"\(4, 3\) and \(5, 3\)"):
        dcl(z, torch.randn(5, 3))
    with pytest.raises(ValueError, match="got 1"):
        dcl(torch.randn(1, 3), torch.randn(1, 3))


def test_modules_forward_options():
    z1, z2 = _pair()
    torch.testing.assert_close(DCL(temperature=0.2)(z1, z2), dcl(z1, z2, temperature=0.2))
    torch.testing.assert_close(DCLW()(z1, z2), dcl(z1, z2, temperature=0.1, weight_sigma=0.5))
    tau = torch.tensor(0.25, dtype=DT)
    torch.testing.assert_close(
        DCLW(temperature=0.9)(z1, z2, temperature=tau), dcl(z1, z2, temperature=tau, weight_sigma=0.5)
    )
    assert "sigma=0.5" in repr(DCLW())


def test_docstring_examples_run():
    module = importlib.import_module("contrastlab.objectives.decoupled")
    result = doctest.testmod(module, extraglobs={"torch": torch}, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted > 0
