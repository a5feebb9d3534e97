import doctest
import importlib

import pytest
import torch

import _peers
from _compare import assert_same
from contrastlab.objectives.predictive import (
    BYOLLoss,
    NegativeCosine,
    SimSiamLoss,
    byol_loss,
    negative_cosine,
    simsiam_loss,
)

DT = torch.float64


def _four(n=6, d=5):
    return [torch.randn(n, d, dtype=DT) for _ in range(4)]


# ---------------------------------------------------------------- slow references, loops over the batch


def _unit(v):
    return v / torch.sqrt((v * v).sum())


def ref_negative_cosine(p, z, stop_gradient=True):
    """One D per row, as SimSiam's equation (1)."""
    rows = []
    for i in range(p.shape[0]):
        target = z[i].detach() if stop_gradient else z[i]
        rows.append(-(_unit(p[i]) * _unit(target)).sum())
    return torch.stack(rows)


def ref_byol(p1, p2, t1, t2):
    """BYOL's equation (2), ||p/|p| - t/|t|||^2 written as a squared distance, averaged over the two directions."""
    n = p1.shape[0]
    total = 0.0
    for i in range(n):
        for p, t in ((p1[i], t2[i]), (p2[i], t1[i])):
            total = total + ((_unit(p) - _unit(t.detach())) ** 2).sum() / 2
    return total / n


def ref_simsiam(p1, p2, z1, z2, stop_gradient=True):
    n = p1.shape[0]
    total = 0.0
    for i in range(n):
        a = z2[i].detach() if stop_gradient else z2[i]
        b = z1[i].detach() if stop_gradient else z1[i]
        total = total - (_unit(p1[i]) * _unit(a)).sum() / 2 - (_unit(p2[i]) * _unit(b)).sum() / 2
    return total / n


# ---------------------------------------------------------------- value and gradient vs the references


def test_byol_matches_loop_reference():
    p1, p2, t1, t2 = _four()
    # the targets get no gradient, so the gradients compared are those of the predictions
    assert_same(lambda a, b: byol_loss(a, b, t1, t2), lambda a, b: ref_byol(a, b, t1, t2), p1, p2)
    per_item = byol_loss(p1, p2, t1, t2, reduction="none")
    assert per_item.shape == (6,)
    torch.testing.assert_close(per_item.sum(), byol_loss(p1, p2, t1, t2, reduction="sum"))
    torch.testing.assert_close(per_item[2], ref_byol(p1[2:3], p2[2:3], t1[2:3], t2[2:3]))


@pytest.mark.parametrize("stop_gradient", [True, False])
def test_simsiam_matches_loop_reference(stop_gradient):
    p1, p2, z1, z2 = _four()
    if stop_gradient:
        assert_same(
            lambda a, b: simsiam_loss(a, b, z1, z2),
            lambda a, b: ref_simsiam(a, b, z1, z2),
            p1,
            p2,
        )
    else:
        assert_same(
            lambda *x: simsiam_loss(*x, stop_gradient=False),
            lambda *x: ref_simsiam(*x, stop_gradient=False),
            p1,
            p2,
            z1,
            z2,
        )
    per_item = simsiam_loss(p1, p2, z1, z2, reduction="none")
    torch.testing.assert_close(per_item.mean(), simsiam_loss(p1, p2, z1, z2))
    torch.testing.assert_close(per_item.sum(), simsiam_loss(p1, p2, z1, z2, reduction="sum"))


def test_negative_cosine_matches_loop_reference():
    p, z = torch.randn(7, 4, dtype=DT), torch.randn(7, 4, dtype=DT)
    torch.testing.assert_close(negative_cosine(p, z, reduction="none"), ref_negative_cosine(p, z))
    assert_same(
        lambda a, b: negative_cosine(a, b, stop_gradient=False, reduction="sum"),
        lambda a, b: ref_negative_cosine(a, b, stop_gradient=False).sum(),
        p,
        z,
    )


# ---------------------------------------------------------------- closed forms


def test_closed_forms_identical_orthogonal_antipodal():
    e = torch.eye(4, dtype=DT)
    other = e.roll(1, dims=1)  # row i is orthogonal to row i of e
    # identical: BYOL 0, SimSiam -1; orthogonal: 2 and 0; antipodal: 4 and 1
    for t, byol, simsiam in ((e, 0.0, -1.0), (other, 2.0, 0.0), (-e, 4.0, 1.0)):
        assert byol_loss(e, e, t, t).item() == pytest.approx(byol, abs=1e-12)
        assert simsiam_loss(e, e, t, t).item() == pytest.approx(simsiam, abs=1e-12)


def test_byol_is_two_plus_twice_the_negative_cosine():
    p1, p2, t1, t2 = _four()
    expected = 2 + (negative_cosine(p1, t2, reduction="none") + negative_cosine(p2, t1, reduction="none"))
    torch.testing.assert_close(byol_loss(p1, p2, t1, t2, reduction="none"), expected)


# ---------------------------------------------------------------- gradcheck, invariances, symmetry


def test_gradcheck():
    p1, p2, z1, z2 = (torch.randn(4, 3, dtype=DT, requires_grad=True) for _ in range(4))
    # with the stop-gradient the targets are constants to autograd (numerically they are not), so only the
    # predictions are checked there
    assert torch.autograd.gradcheck(lambda a, b: byol_loss(a, b, z1, z2), (p1, p2))
    assert torch.autograd.gradcheck(lambda a, b: simsiam_loss(a, b, z1, z2), (p1, p2))
    assert torch.autograd.gradcheck(lambda *x: simsiam_loss(*x, stop_gradient=False), (p1, p2, z1, z2))
    assert torch.autograd.gradcheck(
        lambda a, b: negative_cosine(a, b, stop_gradient=False, reduction="none"), (p1, z1)
    )


def test_batch_permutation_view_swap_and_scale_invariance():
    p1, p2, z1, z2 = _four(9, 6)
    perm = torch.randperm(9)
    scale = torch.rand(9, 1, dtype=DT) * 5 + 0.1  # a positive factor per row: the cosine does not see it
    for fn in (byol_loss, simsiam_loss):
        value = fn(p1, p2, z1, z2)
        torch.testing.assert_close(fn(p1[perm], p2[perm], z1[perm], z2[perm]), value)
        torch.testing.assert_close(fn(p2, p1, z2, z1), value)  # swapping the views
        torch.testing.assert_close(fn(scale * p1, p2, z1, 3 * z2), value)
        assert not torch.isclose(fn(p1, p2, z2, z1), value)  # ... but the pairing matters


def _grads(fn, *tensors):
    leaves = [t.detach().clone().requires_grad_(True) for t in tensors]
    return torch.autograd.grad(fn(*leaves), leaves, allow_unused=True, materialize_grads=True)


def test_stop_gradient_really_stops():
    p1, p2, z1, z2 = _four()
    g = _grads(simsiam_loss, p1, p2, z1, z2)
    assert g[0].abs().sum() > 0 and g[1].abs().sum() > 0
    assert torch.equal(g[2], torch.zeros_like(z1)) and torch.equal(g[3], torch.zeros_like(z2))
    g = _grads(lambda *x: simsiam_loss(*x, stop_gradient=False), p1, p2, z1, z2)
    assert all(gi.abs().sum() > 0 for gi in g)

    g = _grads(byol_loss, p1, p2, z1, z2)  # the targets t1, t2 never get a gradient
    assert g[0].abs().sum() > 0 and g[1].abs().sum() > 0
    assert torch.equal(g[2], torch.zeros_like(z1)) and torch.equal(g[3], torch.zeros_like(z2))

    gp, gz = _grads(negative_cosine, p1, z1)
    assert gp.abs().sum() > 0 and torch.equal(gz, torch.zeros_like(z1))
    gp, gz = _grads(lambda a, b: negative_cosine(a, b, stop_gradient=False), p1, z1)
    assert gz.abs().sum() > 0


# ---------------------------------------------------------------- lightly


@pytest.mark.parametrize(("n", "d"), [(8, 4), (64, 32)])
def test_agrees_with_lightly_negative_cosine_similarity(n, d):
    ncs = _peers.lightly("NegativeCosineSimilarity")()  # -mean_i cos(x0_i, x1_i), no stop-gradient of its own
    p1, p2, z1, z2 = (torch.randn(n, d, dtype=DT) for _ in range(4))
    # negative_cosine(stop_gradient=False) is lightly's loss itself, gradients to both sides
    assert_same(lambda a, b: negative_cosine(a, b, stop_gradient=False), lambda a, b: ncs(a, b), p1, z1, atol=1e-12)
    # SimSiam as lightly's examples write it: 0.5 * (ncs(p1, z2.detach()) + ncs(p2, z1.detach()))
    assert_same(
        lambda a, b: simsiam_loss(a, b, z1, z2),
        lambda a, b: 0.5 * (ncs(a, z2.detach()) + ncs(b, z1.detach())),
        p1,
        p2,
        atol=1e-12,
    )
    # BYOL: lightly writes it with the same criterion, 0.5 * (ncs(p1, t2) + ncs(p2, t1)) = -mean cos; ours is
    # the normalised squared error 2 - 2 cos averaged over the directions, i.e. 2 + 2 * lightly's.
    assert_same(
        lambda a, b: byol_loss(a, b, z1, z2),
        lambda a, b: 2 + 2 * 0.5 * (ncs(a, z2.detach()) + ncs(b, z1.detach())),
        p1,
        p2,
        atol=1e-12,
    )


# ---------------------------------------------------------------- bad options, modules, docs


def test_bad_reduction_and_shapes():
    z = torch.randn(4, 3)
    for call in (
        lambda r: negative_cosine(z, z, reduction=r),
        lambda r: byol_loss(z, z, z, z, reduction=r),
        lambda r: simsiam_loss(z, z, z, z, reduction=r),
        lambda r: NegativeCosine(reduction=r),
        lambda r: BYOLLoss(reduction=r),
        lambda r: SimSiamLoss(reduction=r),
    ):
        with pytest.raises(ValueError, match="'avg'"):
            call("avg")
    with pytest.raises(ValueError, match=r"t2 \(4, 2\)"):
        byol_loss(z, z, z, torch.randn(4, 2))
    with pytest.raises(ValueError, match=r"p1 \(4, 3\), p2 \(5, 3\)"):
        simsiam_loss(z, torch.randn(5, 3), z, z)
    with pytest.raises(ValueError, match=r"shape \(4,\)"):
        negative_cosine(torch.randn(4), torch.randn(4))
    with pytest.raises(ValueError, match="int64"):
        negative_cosine(z, torch.ones(4, 3, dtype=torch.long))


def test_modules_forward_options():
    p1, p2, z1, z2 = _four()
    torch.testing.assert_close(BYOLLoss()(p1, p2, z1, z2), byol_loss(p1, p2, z1, z2))
    torch.testing.assert_close(
        SimSiamLoss(stop_gradient=False, reduction="none")(p1, p2, z1, z2),
        simsiam_loss(p1, p2, z1, z2, stop_gradient=False, reduction="none"),
    )
    torch.testing.assert_close(NegativeCosine(reduction="sum")(p1, z1), negative_cosine(p1, z1, reduction="sum"))
    assert "stop_gradient=False" in repr(SimSiamLoss(stop_gradient=False))
    p = p1.clone().requires_grad_(True)
    z = z1.clone().requires_grad_(True)
    NegativeCosine()(p, z).backward()
    assert z.grad is None and p.grad is not None


def test_docstring_examples_run():
    module = importlib.import_module("contrastlab.objectives.predictive")
    result = doctest.testmod(module, extraglobs={"torch": torch}, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted > 0
