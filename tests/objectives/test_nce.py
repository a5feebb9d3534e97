import math

import pytest
import torch

from _compare import assert_same
from contrastlab.objectives.nce import NCE, SPECS, nce

DT = torch.float64


def _unit(v):
    return v / torch.sqrt((v * v).sum())


def _neg_log_sigmoid(x):
    return torch.log(1 + torch.exp(-x))


def ref_nce(z1, z2, tau, negatives=None, offset=0.0, symmetric=False, normalize=True, per_anchor=False):
    """Slides' eq. (4) with the negatives summed, loops over anchors and negatives."""
    f = _unit if normalize else (lambda v: v)
    n = z1.shape[0]

    def one_way(a, b):
        losses = []
        for i in range(n):
            if negatives is None:
                negs = [b[j] for j in range(n) if j != i]
            elif negatives.dim() == 2:
                negs = list(negatives)
            else:
                negs = list(negatives[i])
            term = _neg_log_sigmoid((f(a[i]) * f(b[i])).sum() / tau - offset)
            for neg in negs:
                term = term + _neg_log_sigmoid(-((f(a[i]) * f(neg)).sum() / tau - offset))
            losses.append(term)
        return torch.stack(losses)

    loss = one_way(z1, z2)
    loss = (loss + one_way(z2, z1)) / 2 if symmetric else loss
    return loss if per_anchor else loss.sum() / n


@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("offset", [0.0, 1.3])
def test_in_batch_matches_loop_reference(symmetric, normalize, offset):
    z1, z2 = torch.randn(5, 4, dtype=DT), torch.randn(5, 4, dtype=DT)
    assert_same(
        lambda a, b: nce(a, b, temperature=0.3, offset=offset, symmetric=symmetric, normalize=normalize),
        lambda a, b: ref_nce(a, b, 0.3, offset=offset, symmetric=symmetric, normalize=normalize),
        z1,
        z2,
    )


@pytest.mark.parametrize("shape", [(6, 4), (3, 5, 4)], ids=["shared", "per_anchor"])
def test_explicit_negatives_match_loop_reference(shape):
    z1, z2, neg = torch.randn(3, 4, dtype=DT), torch.randn(3, 4, dtype=DT), torch.randn(*shape, dtype=DT)
    assert_same(
        lambda a, b, c: nce(a, b, temperature=0.2, negatives=c, offset=0.5),
        lambda a, b, c: ref_nce(a, b, 0.2, negatives=c, offset=0.5),
        z1,
        z2,
        neg,
    )


def test_offset_reproduces_cmc_nce_posterior():
    """CMC: P(D=1|v) = p_d / (p_d + m p_n), p_d = exp(s/tau)/Z; the loss is -log P(pos) - sum log(1 - P(neg))."""
    n, tau, p_n, big_z = 5, 0.2, 1 / 100, 3.7
    m = n - 1
    z1 = torch.nn.functional.normalize(torch.randn(n, 4, dtype=DT), dim=1)
    z2 = torch.nn.functional.normalize(torch.randn(n, 4, dtype=DT), dim=1)
    s = z1 @ z2.T
    p_d = torch.exp(s / tau) / big_z
    posterior = p_d / (p_d + m * p_n)
    expected = 0.0
    for i in range(n):
        expected -= math.log(posterior[i, i])
        expected -= sum(math.log(1 - posterior[i, j]) for j in range(n) if j != i)
    expected /= n
    got = nce(z1, z2, temperature=tau, offset=math.log(m * p_n * big_z))
    assert got.item() == pytest.approx(expected, rel=1e-10)


def test_closed_form_identical_and_orthogonal():
    n, tau = 4, 0.5
    z = torch.eye(n, dtype=DT)
    softplus = lambda x: math.log1p(math.exp(x))  # noqa: E731
    expected = softplus(-1 / tau) + (n - 1) * softplus(0.0)
    assert nce(z, z, temperature=tau).item() == pytest.approx(expected, rel=1e-12)
    # all pairs equal: every score is 1/tau; one positive, N-1 negatives
    same = torch.ones(n, 3, dtype=DT)
    expected_same = softplus(-1 / tau) + (n - 1) * softplus(1 / tau)
    assert nce(same, same, temperature=tau).item() == pytest.approx(expected_same, rel=1e-12)


@pytest.mark.parametrize(
    "fn",
    [
        lambda a, b: nce(a, b, temperature=0.3),
        lambda a, b: nce(a, b, temperature=0.3, symmetric=True, normalize=False, offset=0.2),
        lambda a, b: nce(a, b, temperature=0.3, negatives=torch.stack([b.roll(1, 0), a.roll(1, 0)], 1)),
    ],
    ids=["in_batch", "symmetric_raw", "per_anchor"],
)
def test_gradcheck(fn):
    a = torch.randn(4, 3, dtype=DT, requires_grad=True)
    b = torch.randn(4, 3, dtype=DT, requires_grad=True)
    assert torch.autograd.gradcheck(fn, (a, b))


def test_tensor_temperature_gradcheck():
    z1, z2 = torch.randn(4, 3, dtype=DT), torch.randn(4, 3, dtype=DT)
    tau = torch.tensor(0.4, dtype=DT, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: nce(z1, z2, temperature=t), (tau,))


def test_permutation_invariance_and_symmetry():
    z1, z2, neg = torch.randn(8, 5), torch.randn(8, 5), torch.randn(8, 3, 5)
    p = torch.randperm(8)
    torch.testing.assert_close(nce(z1, z2), nce(z1[p], z2[p]))
    torch.testing.assert_close(nce(z1, z2, negatives=neg), nce(z1[p], z2[p], negatives=neg[p]))
    torch.testing.assert_close(nce(z1, z2, symmetric=True), nce(z2, z1, symmetric=True))
    torch.testing.assert_close(nce(z1, z2, symmetric=True), (nce(z1, z2) + nce(z2, z1)) / 2)


def test_finite_at_small_temperature_float32():
    z = torch.nn.functional.normalize(torch.randn(6, 8), dim=1)
    cases = {"identical": (z, z.clone()), "antipodal": (z, -z), "all_equal": (z[:1].repeat(6, 1), z[:1].repeat(6, 1))}
    for name, (a, b) in cases.items():
        for kwargs in ({}, {"symmetric": True}, {"negatives": -b}):
            a_, b_ = a.clone().requires_grad_(True), b.clone().requires_grad_(True)
            loss = nce(a_, b_, temperature=0.01, **kwargs)
            grads = torch.autograd.grad(loss, (a_, b_))
            assert torch.isfinite(loss), name
            assert all(torch.isfinite(g).all() for g in grads), name


def test_bad_options():
    z = torch.randn(4, 3)
    for tau in (0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="temperature"):
            nce(z, z, temperature=tau)
    with pytest.raises(ValueError, match="offset"):
        nce(z, z, offset=float("inf"))
    with pytest.raises(ValueError, match="offset"):
        NCE(offset="1")
    with pytest.raises(ValueError, match="got 1"):
        nce(torch.randn(1, 3), torch.randn(1, 3))
    with pytest.raises(ValueError, match=r"\(4, 3\) and \(4, 2\)"):
        nce(z, torch.randn(4, 2))
    with pytest.raises(ValueError, match="symmetric"):
        nce(z, z, negatives=torch.randn(2, 3), symmetric=True)
    with pytest.raises(ValueError, match=r"\(7, 3, 3\)"):
        nce(z, z, negatives=torch.randn(7, 3, 3))


def test_module_and_specs():
    z1, z2, neg = torch.randn(5, 4, dtype=DT), torch.randn(5, 4, dtype=DT), torch.randn(2, 4, dtype=DT)
    module = NCE(temperature=0.2, offset=0.1)
    torch.testing.assert_close(module(z1, z2), nce(z1, z2, temperature=0.2, offset=0.1))
    torch.testing.assert_close(module(z1, z2, neg), nce(z1, z2, negatives=neg, temperature=0.2, offset=0.1))
    (spec,) = SPECS
    assert spec.name == "nce" and spec.kind == "pairwise" and "\n" not in spec.formula
    built = spec.factory(temperature=0.3)
    assert isinstance(built, torch.nn.Module) and built(z1, z2).dim() == 0


@pytest.mark.parametrize("symmetric, negatives", [(False, None), (True, None), (False, (3, 4)), (False, (5, 3, 4))])
def test_reduction(symmetric, negatives):
    z1, z2 = torch.randn(5, 4, dtype=DT), torch.randn(5, 4, dtype=DT)
    neg = None if negatives is None else torch.randn(*negatives, dtype=DT)
    kw = dict(temperature=0.3, negatives=neg, offset=0.5, symmetric=symmetric)
    per_anchor = nce(z1, z2, reduction="none", **kw)
    assert per_anchor.shape == (5,)
    torch.testing.assert_close(per_anchor, ref_nce(z1, z2, 0.3, neg, 0.5, symmetric, per_anchor=True))
    torch.testing.assert_close(per_anchor.mean(), nce(z1, z2, **kw))
    torch.testing.assert_close(per_anchor.sum(), nce(z1, z2, reduction="sum", **kw))
    module = NCE(temperature=0.3, offset=0.5, symmetric=symmetric, reduction="none")
    torch.testing.assert_close(module(z1, z2, neg), per_anchor)
    with pytest.raises(ValueError, match="'avg'"):
        nce(z1, z2, reduction="avg")
    with pytest.raises(ValueError, match="'avg'"):
        NCE(reduction="avg")
