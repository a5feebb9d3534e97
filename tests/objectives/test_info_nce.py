import importlib
import math

import pytest
import torch
from pytorch_metric_learning import losses as pml_losses

from _compare import assert_same
from contrastlab.objectives.info_nce import SPECS, TILED_THRESHOLD, InfoNCE, NTXent, info_nce, nt_xent

DT = torch.float64


# ---------------------------------------------------------------- slow references, loops over the batch


def _unit(v):
    return v / torch.sqrt((v * v).sum())


def _neg_log_softmax_first(scores):
    """-log(exp(scores[0]) / sum(exp(scores))) for a 1-D list of scalar tensors, written out."""
    return -scores[0] + torch.log(sum(torch.exp(s) for s in scores))


def ref_info_nce(z1, z2, tau, negatives=None, symmetric=False, normalize=True, per_anchor=False):
    f = _unit if normalize else (lambda v: v)
    n = z1.shape[0]

    def one_way(a, b):
        losses = []
        for i in range(n):
            anchor = f(a[i])
            cands = [f(b[i])]
            if negatives is None:
                cands += [f(b[j]) for j in range(n) if j != i]
            elif negatives.dim() == 2:
                cands += [f(negatives[m]) for m in range(negatives.shape[0])]
            else:
                cands += [f(negatives[i, m]) for m in range(negatives.shape[1])]
            losses.append(_neg_log_softmax_first([(anchor * c).sum() / tau for c in cands]))
        return torch.stack(losses)

    loss = one_way(z1, z2)
    if symmetric:
        loss = (loss + one_way(z2, z1)) / 2
    return loss if per_anchor else loss.sum() / n


def ref_nt_xent(z1, z2, tau, normalize=True, per_anchor=False):
    f = _unit if normalize else (lambda v: v)
    n = z1.shape[0]
    u = [f(z1[i]) for i in range(n)] + [f(z2[i]) for i in range(n)]
    losses = []
    for k in range(2 * n):
        p = (k + n) % (2 * n)
        scores = [(u[k] * u[p]).sum() / tau] + [(u[k] * u[l]).sum() / tau for l in range(2 * n) if l not in (k, p)]
        losses.append(_neg_log_softmax_first(scores))
    losses = torch.stack(losses)
    return losses if per_anchor else losses.sum() / (2 * n)


# ---------------------------------------------------------------- value and gradient vs the references


@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("tau", [0.1, 0.7])
def test_in_batch_matches_loop_reference(symmetric, normalize, tau):
    z1, z2 = torch.randn(6, 5, dtype=DT), torch.randn(6, 5, dtype=DT)
    if not normalize:
        z1, z2 = z1 * 0.3, z2 * 0.3
    assert_same(
        lambda a, b: info_nce(a, b, temperature=tau, symmetric=symmetric, normalize=normalize, impl="naive"),
        lambda a, b: ref_info_nce(a, b, tau, symmetric=symmetric, normalize=normalize),
        z1,
        z2,
    )


@pytest.mark.parametrize("shape", [(7, 5), (4, 3, 5)], ids=["shared", "per_anchor"])
@pytest.mark.parametrize("normalize", [True, False])
def test_explicit_negatives_match_loop_reference(shape, normalize):
    z1, z2, neg = torch.randn(4, 5, dtype=DT), torch.randn(4, 5, dtype=DT), torch.randn(*shape, dtype=DT)
    assert_same(
        lambda a, b, c: info_nce(a, b, temperature=0.2, negatives=c, normalize=normalize),
        lambda a, b, c: ref_info_nce(a, b, 0.2, negatives=c, normalize=normalize),
        z1,
        z2,
        neg,
    )


@pytest.mark.parametrize("tau", [0.1, 0.5])
def test_nt_xent_matches_loop_reference(tau):
    z1, z2 = torch.randn(5, 4, dtype=DT), torch.randn(5, 4, dtype=DT)
    assert_same(lambda a, b: nt_xent(a, b, temperature=tau), lambda a, b: ref_nt_xent(a, b, tau), z1, z2)
    assert_same(
        lambda a, b: nt_xent(a, b, temperature=tau, normalize=False),
        lambda a, b: ref_nt_xent(a, b, tau, normalize=False),
        z1 * 0.5,
        z2 * 0.5,
    )


def test_tensor_temperature_matches_and_receives_gradient():
    z1, z2 = torch.randn(5, 4, dtype=DT), torch.randn(5, 4, dtype=DT)
    assert_same(
        lambda a, b, t: info_nce(a, b, temperature=t, symmetric=True),
        lambda a, b, t: ref_info_nce(a, b, t, symmetric=True),
        z1,
        z2,
        torch.tensor(0.3, dtype=DT),
    )
    tau = torch.tensor(0.3, dtype=DT, requires_grad=True)
    torch.autograd.gradcheck(lambda t: nt_xent(z1, z2, temperature=t), (tau,))


# ---------------------------------------------------------------- closed forms


@pytest.mark.parametrize("n", [2, 5])
@pytest.mark.parametrize("tau", [0.05, 1.0])
def test_identical_positives_orthogonal_negatives(n, tau):
    z = torch.eye(n, dtype=DT)
    expected = math.log(1 + (n - 1) * math.exp(-1 / tau))
    assert info_nce(z, z, temperature=tau).item() == pytest.approx(expected, rel=1e-12, abs=1e-15)
    assert info_nce(z, z, temperature=tau, symmetric=True).item() == pytest.approx(expected, rel=1e-12, abs=1e-15)
    # SimCLR: each of the 2N rows sees its positive at cosine 1 and 2N-2 orthogonal rows
    expected_nt = math.log(1 + (2 * n - 2) * math.exp(-1 / tau))
    assert nt_xent(z, z, temperature=tau).item() == pytest.approx(expected_nt, rel=1e-12, abs=1e-15)


def test_explicit_orthogonal_negatives_closed_form():
    n, m, tau = 3, 4, 0.2
    basis = torch.eye(n + m, dtype=DT)
    z = basis[:n]
    per_anchor = basis[n:].expand(n, m, n + m)
    expected = math.log(1 + m * math.exp(-1 / tau))
    assert info_nce(z, z, temperature=tau, negatives=per_anchor).item() == pytest.approx(expected, rel=1e-12)
    assert info_nce(z, z, temperature=tau, negatives=basis[n:]).item() == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("n", [2, 3, 8])
def test_all_equal_inputs_give_log_number_of_candidates(n):
    z = torch.ones(n, 6, dtype=DT)
    assert nt_xent(z, z, temperature=0.3).item() == pytest.approx(math.log(2 * n - 1), rel=1e-12)
    assert info_nce(z, z, temperature=0.3).item() == pytest.approx(math.log(n), rel=1e-12)
    assert info_nce(z, z, temperature=0.3, negatives=torch.ones(5, 6, dtype=DT)).item() == pytest.approx(
        math.log(6), rel=1e-12
    )


# ---------------------------------------------------------------- gradcheck, invariances, symmetry


@pytest.mark.parametrize(
    "fn",
    [
        lambda a, b: info_nce(a, b, temperature=0.3),
        lambda a, b: info_nce(a, b, temperature=0.3, symmetric=True, normalize=False),
        lambda a, b: info_nce(a, b, temperature=0.3, negatives=torch.linspace(-1, 1, 15, dtype=DT).view(5, 3)),
        lambda a, b: info_nce(a, b, temperature=0.3, negatives=torch.stack([b.roll(1, 0), a.roll(2, 0)], 1)),
        lambda a, b: nt_xent(a, b, temperature=0.4),
    ],
    ids=["in_batch", "clip_raw", "shared", "per_anchor", "nt_xent"],
)
def test_gradcheck(fn):
    a = torch.randn(4, 3, dtype=DT, requires_grad=True)
    b = torch.randn(4, 3, dtype=DT, requires_grad=True)
    assert torch.autograd.gradcheck(fn, (a, b))


def test_batch_permutation_invariance():
    z1, z2 = torch.randn(9, 6), torch.randn(9, 6)
    per_anchor, shared = torch.randn(9, 4, 6), torch.randn(11, 6)
    p = torch.randperm(9)
    for fn in (
        lambda a, b, c: info_nce(a, b),
        lambda a, b, c: info_nce(a, b, symmetric=True),
        lambda a, b, c: info_nce(a, b, negatives=c),
        lambda a, b, c: info_nce(a, b, negatives=shared[torch.randperm(11)]),
        lambda a, b, c: nt_xent(a, b),
    ):
        torch.testing.assert_close(fn(z1, z2, per_anchor), fn(z1[p], z2[p], per_anchor[p]))


def test_symmetric_variants_are_symmetric():
    z1, z2 = torch.randn(7, 5, dtype=DT), torch.randn(7, 5, dtype=DT)
    clip = info_nce(z1, z2, symmetric=True)
    torch.testing.assert_close(clip, info_nce(z2, z1, symmetric=True))
    torch.testing.assert_close(clip, (info_nce(z1, z2) + info_nce(z2, z1)) / 2)
    torch.testing.assert_close(nt_xent(z1, z2), nt_xent(z2, z1))
    assert not torch.isclose(info_nce(z1, z2), info_nce(z2, z1))  # one-way really is one-way


def test_normalize_makes_the_loss_scale_invariant():
    z1, z2 = torch.randn(6, 4, dtype=DT), torch.randn(6, 4, dtype=DT)
    torch.testing.assert_close(info_nce(3 * z1, 0.2 * z2), info_nce(z1, z2))
    torch.testing.assert_close(nt_xent(3 * z1, 0.2 * z2), nt_xent(z1, z2))
    assert not torch.isclose(info_nce(3 * z1, z2, normalize=False), info_nce(z1, z2, normalize=False))


# ---------------------------------------------------------------- pytorch-metric-learning


@pytest.mark.parametrize(("n", "tau"), [(16, 0.1), (16, 0.5), (128, 0.2)])
def test_nt_xent_equals_pml_ntxentloss(n, tau):
    z1, z2 = torch.randn(n, 32, dtype=DT), torch.randn(n, 32, dtype=DT)
    labels = torch.arange(n)
    pml = pml_losses.NTXentLoss(temperature=tau)
    assert_same(
        lambda a, b: nt_xent(a, b, temperature=tau),
        lambda a, b: pml(torch.cat([a, b]), torch.cat([labels, labels])),
        z1,
        z2,
    )
    # with z2 as the reference set, PML's NTXentLoss is the one-way in-batch InfoNCE
    assert_same(
        lambda a, b: info_nce(a, b, temperature=tau),
        lambda a, b: pml(a, labels, None, b, labels.clone()),
        z1,
        z2,
    )


# ---------------------------------------------------------------- small temperatures in float32


def _degenerate_pairs():
    z = torch.nn.functional.normalize(torch.randn(6, 8), dim=1)
    yield "identical", z, z.clone()
    yield "antipodal", z, -z
    yield "all_equal", z[:1].expand(6, 8).clone(), z[:1].expand(6, 8).clone()


@pytest.mark.parametrize(
    "fn",
    [
        lambda a, b: info_nce(a, b, temperature=0.01),
        lambda a, b: info_nce(a, b, temperature=0.01, symmetric=True),
        lambda a, b: info_nce(a, b, temperature=0.01, negatives=-b.detach()),
        lambda a, b: info_nce(a, b, temperature=0.01, negatives=torch.stack([a, -b], 1)),
        lambda a, b: nt_xent(a, b, temperature=0.01),
    ],
    ids=["in_batch", "clip", "shared", "per_anchor", "nt_xent"],
)
def test_finite_at_small_temperature_float32(fn):
    for name, a, b in _degenerate_pairs():
        a, b = a.requires_grad_(True), b.requires_grad_(True)
        loss = fn(a, b)
        ga, gb = torch.autograd.grad(loss, (a, b), allow_unused=True)
        assert torch.isfinite(loss), name
        assert all(g is None or torch.isfinite(g).all() for g in (ga, gb)), name


# ---------------------------------------------------------------- bad options


@pytest.mark.parametrize("tau", [0, -0.1, float("nan"), float("inf"), "0.1", True])
def test_bad_temperature(tau):
    z = torch.randn(4, 3)
    for fn in (info_nce, nt_xent):
        with pytest.raises(ValueError, match="temperature"):
            fn(z, z, temperature=tau)
    with pytest.raises(ValueError, match="temperature"):
        InfoNCE(temperature=tau)
    with pytest.raises(ValueError, match="temperature"):
        NTXent(temperature=tau)


def test_bad_tensor_temperature():
    z = torch.randn(4, 3)
    with pytest.raises(ValueError, match=r"0-dim.*\(2,\)"):
        info_nce(z, z, temperature=torch.ones(2))
    with pytest.raises(ValueError, match="int64"):
        info_nce(z, z, temperature=torch.tensor(1))


def test_bad_shapes_and_batches():
    with pytest.raises(ValueError, match=r"\(4, 3\) and \(5, 3\)"):
        info_nce(torch.randn(4, 3), torch.randn(5, 3))
    with pytest.raises(ValueError, match=r"\(4, 3\) and \(4, 2\)"):
        nt_xent(torch.randn(4, 3), torch.randn(4, 2))
    for fn in (info_nce, nt_xent):
        with pytest.raises(ValueError, match="got 1"):
            fn(torch.randn(1, 3), torch.randn(1, 3))
    # with explicit negatives one anchor is enough
    assert torch.isfinite(info_nce(torch.randn(1, 3), torch.randn(1, 3), negatives=torch.randn(2, 3)))
    z = torch.randn(4, 3)
    with pytest.raises(ValueError, match=r"\(4, 2, 2\)"):
        info_nce(z, z, negatives=torch.randn(4, 2, 2))
    with pytest.raises(ValueError, match=r"\(5, 2, 3\)"):
        info_nce(z, z, negatives=torch.randn(5, 2, 3))
    with pytest.raises(ValueError, match="M >= 1"):
        info_nce(z, z, negatives=torch.randn(0, 3))
    with pytest.raises(ValueError, match="float64"):
        info_nce(z, z, negatives=torch.randn(2, 3, dtype=DT))


def test_bad_combinations_and_impl():
    z = torch.randn(4, 3)
    with pytest.raises(ValueError, match="symmetric"):
        info_nce(z, z, negatives=torch.randn(2, 3), symmetric=True)
    with pytest.raises(ValueError, match="tiled"):
        info_nce(z, z, negatives=torch.randn(2, 3), impl="tiled")
    with pytest.raises(ValueError, match="'fast'"):
        info_nce(z, z, impl="fast")
    with pytest.raises(ValueError, match="'fast'"):
        NTXent(impl="fast")


def test_auto_takes_the_tiled_kernel_from_the_threshold_and_agrees_with_naive(monkeypatch):
    import contrastlab.objectives._tiled as tiled

    calls = []
    real = tiled.tiled_info_nce
    monkeypatch.setattr(tiled, "tiled_info_nce", lambda *a, **k: calls.append(a[0].shape[0]) or real(*a, **k))
    small, big = torch.randn(TILED_THRESHOLD - 1, 8), torch.randn(TILED_THRESHOLD, 8)
    info_nce(small, small.roll(1, 0), impl="auto")
    assert calls == []
    value = info_nce(big, big.roll(1, 0), impl="auto")
    assert calls == [TILED_THRESHOLD]
    torch.testing.assert_close(value, info_nce(big, big.roll(1, 0), impl="naive"), rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- reduction


@pytest.mark.parametrize("symmetric, negatives", [(False, None), (True, None), (False, (3, 4)), (False, (5, 3, 4))])
def test_info_nce_reduction(symmetric, negatives):
    z1, z2 = torch.randn(5, 4, dtype=DT), torch.randn(5, 4, dtype=DT)
    neg = None if negatives is None else torch.randn(*negatives, dtype=DT)
    kw = dict(temperature=0.3, negatives=neg, symmetric=symmetric)
    per_anchor = info_nce(z1, z2, reduction="none", **kw)
    assert per_anchor.shape == (5,)
    torch.testing.assert_close(per_anchor, ref_info_nce(z1, z2, 0.3, neg, symmetric, per_anchor=True))
    torch.testing.assert_close(per_anchor.mean(), info_nce(z1, z2, **kw))
    torch.testing.assert_close(per_anchor.sum(), info_nce(z1, z2, reduction="sum", **kw))
    module = InfoNCE(temperature=0.3, symmetric=symmetric, reduction="none")
    torch.testing.assert_close(module(z1, z2, neg), per_anchor)


def test_nt_xent_reduction_is_per_anchor_z1_rows_first():
    z1, z2 = torch.randn(5, 4, dtype=DT), torch.randn(5, 4, dtype=DT)
    per_anchor = nt_xent(z1, z2, temperature=0.3, reduction="none")
    assert per_anchor.shape == (10,)
    torch.testing.assert_close(per_anchor, ref_nt_xent(z1, z2, 0.3, per_anchor=True))
    torch.testing.assert_close(per_anchor[:5], nt_xent(z2, z1, temperature=0.3, reduction="none")[5:])
    torch.testing.assert_close(per_anchor.mean(), nt_xent(z1, z2, temperature=0.3))
    torch.testing.assert_close(per_anchor.sum(), nt_xent(z1, z2, temperature=0.3, reduction="sum"))
    torch.testing.assert_close(NTXent(temperature=0.3, reduction="none")(z1, z2), per_anchor)


def test_reduction_with_the_tiled_kernel(monkeypatch):
    """The tiled kernel gives the mean and the sum; "none" takes the naive path under "auto" and refuses "tiled"."""
    info_nce_module = importlib.import_module("contrastlab.objectives.info_nce")
    z1, z2 = torch.randn(6, 4, dtype=DT), torch.randn(6, 4, dtype=DT)
    for symmetric in (False, True):
        torch.testing.assert_close(
            info_nce(z1, z2, symmetric=symmetric, reduction="sum", impl="tiled"),
            info_nce(z1, z2, symmetric=symmetric, reduction="sum", impl="naive"),
        )
    torch.testing.assert_close(
        nt_xent(z1, z2, reduction="sum", impl="tiled"), nt_xent(z1, z2, reduction="sum", impl="naive")
    )
    for fn in (info_nce, nt_xent):
        with pytest.raises(ValueError, match="reduction='none'"):
            fn(z1, z2, reduction="none", impl="tiled")
    monkeypatch.setattr(info_nce_module, "TILED_THRESHOLD", 4)  # auto would tile these 6 rows
    torch.testing.assert_close(
        info_nce(z1, z2, reduction="none"), info_nce(z1, z2, reduction="none", impl="naive")
    )
    torch.testing.assert_close(nt_xent(z1, z2, reduction="none"), nt_xent(z1, z2, reduction="none", impl="naive"))


def test_bad_reduction():
    z = torch.randn(4, 3)
    for call in (lambda: info_nce(z, z, reduction="avg"), lambda: nt_xent(z, z, reduction="avg"),
                 lambda: InfoNCE(reduction="avg"), lambda: NTXent(reduction="avg")):
        with pytest.raises(ValueError, match="'avg'"):
            call()


# ---------------------------------------------------------------- modules and SPECS


def test_modules_forward_options():
    z1, z2 = torch.randn(5, 4, dtype=DT), torch.randn(5, 4, dtype=DT)
    neg = torch.randn(3, 4, dtype=DT)
    torch.testing.assert_close(InfoNCE(temperature=0.2)(z1, z2), info_nce(z1, z2, temperature=0.2))
    torch.testing.assert_close(InfoNCE()(z1, z2, neg), info_nce(z1, z2, negatives=neg))
    tau = torch.tensor(0.25, dtype=DT)
    torch.testing.assert_close(InfoNCE(temperature=0.9)(z1, z2, temperature=tau), info_nce(z1, z2, temperature=tau))
    torch.testing.assert_close(NTXent(temperature=0.3)(z1, z2), nt_xent(z1, z2, temperature=0.3))
    assert "symmetric=True" in repr(InfoNCE(symmetric=True))


def test_specs_build_working_pairwise_modules():
    specs = {s.name: s for s in SPECS}
    assert set(specs) == {"info_nce", "clip", "nt_xent"}
    z1, z2 = torch.randn(6, 4, dtype=DT), torch.randn(6, 4, dtype=DT)
    for spec in specs.values():
        assert spec.kind == "pairwise" and spec.uses_negatives
        assert "\n" not in spec.formula and spec.reference
        module = spec.factory(temperature=0.2)
        assert isinstance(module, torch.nn.Module)
        assert module(z1, z2).dim() == 0
    torch.testing.assert_close(specs["clip"].factory(temperature=0.2)(z1, z2), info_nce(z1, z2, temperature=0.2, symmetric=True))
    torch.testing.assert_close(specs["nt_xent"].factory(temperature=0.2)(z1, z2), nt_xent(z1, z2, temperature=0.2))
    with pytest.raises(TypeError):
        specs["clip"].factory(symmetric=False)
