"""The ``similarity=`` option: each coordination function against its formula, and every pairwise objective
with each of them against a slow float64 reference of the paper's loss written with that similarity."""

import doctest
import importlib
import math

import pytest
import torch
import torch.nn.functional as F
import yaml
from torch import nn

from _compare import assert_same
from contrastlab.objectives import Similarity, parse_similarity
from contrastlab.objectives._tiled import tiled_info_nce, tiled_nt_xent
from contrastlab.objectives.decoupled import DCL, DCLW, dcl
from contrastlab.objectives.hinge import VSEHinge, vse_hinge
from contrastlab.objectives.info_nce import TILED_THRESHOLD, InfoNCE, NTXent, info_nce, nt_xent
from contrastlab.objectives.multiview import MultiViewObjective
from contrastlab.objectives.nce import NCE, nce
from contrastlab.objectives.registry import build_objective
from contrastlab.objectives.supcon import SupCon, supcon
from contrastlab.objectives.triplet import Triplet, triplet_margin

DT = torch.float64
N, M, D = 5, 3, 4
W = torch.tensor([[1.0, 0.5, 0.0, 0.0], [0.0, 1.0, -0.3, 0.0], [0.2, 0.0, 1.0, 0.1], [0.0, 0.0, 0.4, 1.0]], dtype=DT)


def _bilinear_form(a, b):
    """A callable coordination function, a W b^T (stands in for a learned one)."""
    return a @ W @ b.T


def _dot(a, b):
    return sum(a[k] * b[k] for k in range(a.shape[0]))


def _distance(a, b):
    return torch.sqrt(sum((a[k] - b[k]) ** 2 for k in range(a.shape[0])))


# (spec, scalar similarity of two 1-D vectors written from the formula)
KINDS = {
    "cosine": ("cosine", lambda a, b: _dot(a, b) / (torch.sqrt(_dot(a, a)) * torch.sqrt(_dot(b, b)))),
    "dot": ("dot", _dot),
    "linear": ("linear", _dot),
    "polynomial": ({"name": "polynomial", "degree": 3, "c": 0.5}, lambda a, b: (_dot(a, b) + 0.5) ** 3),
    "exponential": ({"name": "exponential", "sigma": 0.8}, lambda a, b: torch.exp(-_distance(a, b) / (2 * 0.8**2))),
    "rbf": ({"name": "rbf", "sigma": 0.6}, lambda a, b: torch.exp(-_distance(a, b) ** 2 / (2 * 0.6**2))),
    "callable": (_bilinear_form, lambda a, b: _dot(a, W @ b)),
}
KERNELS = [k for k in KINDS if k != "callable"]


def _randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=DT)


def _unit(v):
    return v / torch.sqrt((v * v).sum())


# ---------------------------------------------------------------- the similarities against their formulas


@pytest.mark.parametrize("kind", list(KINDS))
def test_matrix_paired_and_per_anchor_match_the_formula_by_loops(kind):
    spec, s = KINDS[kind]
    sim = parse_similarity(spec)
    a, b, c = _randn(N, D, seed=1), _randn(M, D, seed=2), _randn(N, M, D, seed=3)
    b_paired = _randn(N, D, seed=4)
    expected = torch.stack([torch.stack([s(a[i], b[j]) for j in range(M)]) for i in range(N)])
    torch.testing.assert_close(sim.matrix(a, b), expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(sim.paired(a, b_paired), torch.stack([s(a[i], b_paired[i]) for i in range(N)]),
                               rtol=1e-12, atol=1e-12)
    expected = torch.stack([torch.stack([s(a[i], c[i, m]) for m in range(M)]) for i in range(N)])
    torch.testing.assert_close(sim.per_anchor(a, c), expected, rtol=1e-12, atol=1e-12)


def test_known_values_and_the_linear_kernel_is_the_dot_product():
    a, b = torch.tensor([[0.0, 0.0]]), torch.tensor([[3.0, 4.0]])  # distance 5
    assert Similarity("rbf", sigma=1.0).paired(a, b).item() == pytest.approx(math.exp(-12.5))
    assert Similarity("exponential", sigma=1.0).paired(a, b).item() == pytest.approx(math.exp(-2.5))
    assert Similarity("polynomial", degree=2, c=1.0).matrix(b, b).item() == pytest.approx(26.0**2)
    assert Similarity("cosine").matrix(b, 2 * b).item() == pytest.approx(1.0)
    x, y = _randn(6, D, seed=5), _randn(7, D, seed=6)
    assert torch.equal(Similarity("linear").matrix(x, y), Similarity("dot").matrix(x, y))
    assert torch.equal(Similarity("linear").paired(x, x), Similarity("dot").paired(x, x))
    assert [Similarity(k).bilinear for k in ("cosine", "dot", "linear", "polynomial", "exponential", "rbf")] == [
        True, True, True, False, False, False]
    assert not parse_similarity(_bilinear_form).bilinear


@pytest.mark.parametrize("kind", KERNELS)
def test_gradcheck_of_every_kernel(kind):
    sim = parse_similarity(KINDS[kind][0])
    a, b = _randn(3, D, seed=7).requires_grad_(), _randn(4, D, seed=8).requires_grad_()
    c = _randn(3, 2, D, seed=9).requires_grad_()
    assert torch.autograd.gradcheck(sim.matrix, (a, b))
    assert torch.autograd.gradcheck(sim.paired, (a, b[:3]))
    assert torch.autograd.gradcheck(sim.per_anchor, (a, c))


@pytest.mark.parametrize("kind", ["exponential", "rbf"])
def test_gradcheck_at_coincident_points(kind):
    """Where a == b: |a - b| has no derivative; the (symmetric) finite difference and the gradient are 0.

    The matrix form's distances come from |a|^2 + |b|^2 - 2 a.b, whose rounding (~1e-16 |a|^2) is what a
    finite difference of step h sees near 0 divided by h^2: a step of 1e-4 keeps that below the tolerance.
    """
    sim = parse_similarity(KINDS[kind][0])
    a = _randn(3, D, seed=10)
    x, y = a.clone().requires_grad_(), a.clone().requires_grad_()
    assert torch.autograd.gradcheck(sim.matrix, (x, y), eps=1e-4, atol=1e-6)  # the diagonal pairs coincide
    assert torch.autograd.gradcheck(sim.paired, (x, y))
    assert torch.autograd.gradcheck(sim.per_anchor, (x, y[:, None, :]))


@pytest.mark.parametrize("form", ["matrix", "paired", "per_anchor"])
def test_exponential_gradient_is_zero_not_nan_where_points_coincide(form):
    sim = Similarity("exponential", sigma=0.5)
    a = _randn(4, D, seed=11).requires_grad_()
    if form == "matrix":
        value = sim.matrix(a, a).diagonal().sum()
    elif form == "paired":
        value = sim.paired(a, a.detach()).sum()
    else:
        value = sim.per_anchor(a, a.detach()[:, None, :]).sum()
    (grad,) = torch.autograd.grad(value, a)
    assert value.item() == pytest.approx(4.0)
    assert torch.isfinite(grad).all() and grad.abs().max() < 1e-6


def test_rbf_matrix_never_exceeds_one_even_with_rounding():
    z = F.normalize(torch.randn(64, 16), dim=-1)
    s = Similarity("rbf", sigma=0.3).matrix(z, z)
    assert s.max() <= 1.0 and torch.allclose(s.diagonal(), torch.ones(64))


# ---------------------------------------------------------------- parsing


def test_yaml_mapping_form_parses():
    options = yaml.safe_load("similarity: {name: rbf, sigma: 0.5}\nother: {name: polynomial, degree: 3, c: 0}")
    assert parse_similarity(options["similarity"]) == Similarity("rbf", sigma=0.5)
    poly = parse_similarity(options["other"])
    assert (poly.name, poly.params, repr(poly)) == ("polynomial", {"degree": 3, "c": 0.0},
                                                    "Similarity('polynomial', degree=3, c=0.0)")
    assert parse_similarity("rbf").params == {"sigma": 1.0}
    assert parse_similarity(None) is None
    sim = Similarity("cosine")
    assert parse_similarity(sim) is sim


@pytest.mark.parametrize("value, message", [
    ("rbg", r"unknown similarity 'rbg'; did you mean 'rbf'\?"),
    ({"name": "gaussian"}, r"unknown similarity 'gaussian'"),
    ({"name": "rbf", "sgima": 0.5}, r"similarity 'rbf': unknown option 'sgima' \(= 0.5\); did you mean 'sigma'\?"),
    ({"name": "rbf", "sigma": -1}, r"option 'sigma' must be > 0, got -1"),
    ({"name": "rbf", "sigma": "wide"}, r"option 'sigma' must be a finite number, got 'wide'"),
    ({"name": "exponential", "sigma": float("inf")}, r"option 'sigma' must be a finite number, got inf"),
    ({"name": "polynomial", "degree": 2.5}, r"option 'degree' must be an integer >= 1, got 2.5"),
    ({"name": "polynomial", "degree": 0}, r"option 'degree' must be an integer >= 1, got 0"),
    ({"name": "polynomial", "c": -1.0}, r"option 'c' must be >= 0.*got -1.0"),
    ({"name": "cosine", "sigma": 1.0}, r"similarity 'cosine': unknown option 'sigma' \(= 1.0\); it takes no options"),
    ({"sigma": 1.0}, r"needs a 'name'.*\{'sigma': 1.0\}"),
    ({"name": 3}, r"similarity name must be a string, got 3"),
    (3, r"similarity must be a name, a mapping.*got 3"),
    (True, r"similarity must be a name, a mapping.*got True"),
])
def test_bad_specs_raise_value_errors_naming_the_value(value, message):
    with pytest.raises(ValueError, match=message):
        parse_similarity(value)


def test_bad_specs_are_refused_by_the_losses_and_the_registry():
    with pytest.raises(ValueError, match="rbg"):
        InfoNCE(similarity="rbg")
    with pytest.raises(ValueError, match="sgima"):
        build_objective("clip", similarity={"name": "rbf", "sgima": 0.5})
    with pytest.raises(ValueError, match="rbg"):
        info_nce(_randn(3, D), _randn(3, D), similarity="rbg")
    with pytest.raises(ValueError, match=r"similarity 'rbf' takes 'sigma', got degree=2"):
        Similarity("rbf", degree=2)
    with pytest.raises(ValueError, match=r"must return shape \(3, 3\), got \(3,\)"):
        info_nce(_randn(3, D), _randn(3, D), similarity=lambda a, b: (a * b).sum(-1))


def test_registry_builds_the_option_from_its_yaml_form():
    loss = build_objective("clip", similarity={"name": "rbf", "sigma": 0.5})
    assert loss.similarity == Similarity("rbf", sigma=0.5) and "similarity=Similarity('rbf', sigma=0.5)" in repr(loss)
    cmc = build_objective("cmc_full_graph", similarity="polynomial")
    assert cmc.pairwise.similarity == Similarity("polynomial")
    assert build_objective("info_nce").similarity is None and "similarity" not in repr(build_objective("info_nce"))


# ---------------------------------------------------------------- references of the losses, with a similarity


def _nls_first(scores):
    """-log(exp(scores[0]) / sum(exp(scores))), written out."""
    return -scores[0] + torch.log(sum(torch.exp(x) for x in scores))


def _views(z, normalize):
    return [_unit(v) if normalize else v for v in z]


def ref_info_nce(s, z1, z2, tau, negatives=None, symmetric=False, normalize=True):
    """s is always called with a row of z1 first (the direction from z2 scores s(z1_j, z2_i))."""
    a_all, b_all = _views(z1, normalize), _views(z2, normalize)

    def one_way(a, b, s=s):
        losses = []
        for i in range(len(a)):
            if negatives is None:
                cands = [b[i]] + [b[j] for j in range(len(b)) if j != i]
            elif negatives.dim() == 2:
                cands = [b[i]] + _views(negatives, normalize)
            else:
                cands = [b[i]] + _views(negatives[i], normalize)
            losses.append(_nls_first([s(a[i], c) / tau for c in cands]))
        return sum(losses) / len(a)

    loss = one_way(a_all, b_all)
    return (loss + one_way(b_all, a_all, lambda x, y: s(y, x))) / 2 if symmetric else loss


def ref_nt_xent(s, z1, z2, tau):
    n = z1.shape[0]
    u = _views(z1, True) + _views(z2, True)
    losses = []
    for k in range(2 * n):
        p = (k + n) % (2 * n)
        negatives = [s(u[k], u[l]) / tau for l in range(2 * n) if l not in (k, p)]
        losses.append(_nls_first([s(u[k], u[p]) / tau] + negatives))
    return sum(losses) / (2 * n)


def ref_nce(s, z1, z2, tau, offset, negatives=None):
    a, b = _views(z1, True), _views(z2, True)
    log_sigmoid = lambda x: -torch.log(1 + torch.exp(-x))  # noqa: E731
    losses = []
    for i in range(len(a)):
        if negatives is None:
            negs = [b[j] for j in range(len(b)) if j != i]
        else:
            negs = _views(negatives if negatives.dim() == 2 else negatives[i], True)
        term = log_sigmoid(s(a[i], b[i]) / tau - offset) + sum(log_sigmoid(-(s(a[i], v) / tau - offset)) for v in negs)
        losses.append(-term)
    return sum(losses) / len(a)


def ref_dcl(s, z1, z2, tau, weight_sigma=None):
    n = z1.shape[0]
    a, b = _views(z1, True), _views(z2, True)
    u = a + b
    if weight_sigma is None:
        w = [1.0] * n
    else:
        e = [torch.exp(s(a[i], b[i]).detach() / weight_sigma) for i in range(n)]
        w = [2 - e[i] / (sum(e) / n) for i in range(n)]
    losses = []
    for k in range(2 * n):
        p = (k + n) % (2 * n)
        negative = torch.log(sum(torch.exp(s(u[k], u[l]) / tau) for l in range(2 * n) if l not in (k, p)))
        losses.append(-w[k % n] * s(u[k], u[p]) / tau + negative)
    return sum(losses) / (2 * n)


def ref_vse(s, z1, z2, margin, max_violation):
    a, b = _views(z1, True), _views(z2, True)
    n = len(a)
    pick = max if max_violation else sum
    losses = []
    for i in range(n):
        one = pick([torch.relu(margin - s(a[i], b[i]) + s(a[i], b[j])) for j in range(n) if j != i])
        other = pick([torch.relu(margin - s(a[i], b[i]) + s(a[j], b[i])) for j in range(n) if j != i])
        losses.append((one + other) / 2)
    return sum(losses) / n


def ref_triplet_all(s, z1, z2, margin):
    """Harwath et al.'s loss with every impostor averaged, both directions summed; embeddings as given."""
    n = z1.shape[0]

    def direction(a, b, s):
        return sum(sum(torch.relu(margin - s(a[i], b[i]) + s(a[i], b[j])) for j in range(n) if j != i) / (n - 1)
                   for i in range(n)) / n

    return direction(z1, z2, s) + direction(z2, z1, lambda x, y: s(y, x))


def ref_supcon(s, z, labels, tau):
    n, v, _ = z.shape
    rows = [_unit(z[i, k]) for i in range(n) for k in range(v)]
    y = [int(labels[i]) for i in range(n) for _ in range(v)]
    losses = []
    for i in range(n * v):
        positives = [p for p in range(n * v) if p != i and y[p] == y[i]]
        if not positives:
            continue
        log_z = torch.log(sum(torch.exp(s(rows[i], rows[a]) / tau) for a in range(n * v) if a != i))
        losses.append(-sum(s(rows[i], rows[p]) / tau - log_z for p in positives) / len(positives))
    return sum(losses) / len(losses)


Z1, Z2 = _randn(N, D, seed=20), _randn(N, D, seed=21)
QUEUE, PER_ANCHOR = _randn(M, D, seed=22), _randn(N, M, D, seed=23)
LABELS = torch.tensor([0, 1, 0, 2, 1])


def _case(name, spec, s):
    """(fast, slow, inputs) of one objective with one similarity."""
    tau = torch.tensor(0.4, dtype=DT)
    if name == "info_nce":
        return (lambda a, b, t: info_nce(a, b, temperature=t, similarity=spec),
                lambda a, b, t: ref_info_nce(s, a, b, t), (Z1, Z2, tau))
    if name == "info_nce/raw":
        return (lambda a, b, t: info_nce(a, b, temperature=t, normalize=False, similarity=spec),
                lambda a, b, t: ref_info_nce(s, a, b, t, normalize=False), (Z1 / 2, Z2 / 2, tau))
    if name == "clip":
        return (lambda a, b, t: info_nce(a, b, temperature=t, symmetric=True, similarity=spec),
                lambda a, b, t: ref_info_nce(s, a, b, t, symmetric=True), (Z1, Z2, tau))
    if name == "info_nce/queue":
        return (lambda a, b, q: info_nce(a, b, temperature=0.4, negatives=q, similarity=spec),
                lambda a, b, q: ref_info_nce(s, a, b, 0.4, negatives=q), (Z1, Z2, QUEUE))
    if name == "info_nce/per_anchor":
        return (lambda a, b, q: info_nce(a, b, temperature=0.4, negatives=q, similarity=spec),
                lambda a, b, q: ref_info_nce(s, a, b, 0.4, negatives=q), (Z1, Z2, PER_ANCHOR))
    if name == "nt_xent":
        return (lambda a, b, t: nt_xent(a, b, temperature=t, similarity=spec),
                lambda a, b, t: ref_nt_xent(s, a, b, t), (Z1, Z2, tau))
    if name == "nce":
        return (lambda a, b: nce(a, b, temperature=0.4, offset=0.3, similarity=spec),
                lambda a, b: ref_nce(s, a, b, 0.4, 0.3), (Z1, Z2))
    if name == "nce/symmetric":
        return (lambda a, b: nce(a, b, temperature=0.4, offset=0.3, symmetric=True, similarity=spec),
                lambda a, b: (ref_nce(s, a, b, 0.4, 0.3) + ref_nce(lambda x, y: s(y, x), b, a, 0.4, 0.3)) / 2, (Z1, Z2))
    if name == "nce/queue":
        return (lambda a, b, q: nce(a, b, temperature=0.4, offset=0.3, negatives=q, similarity=spec),
                lambda a, b, q: ref_nce(s, a, b, 0.4, 0.3, negatives=q), (Z1, Z2, QUEUE))
    if name == "nce/per_anchor":
        return (lambda a, b, q: nce(a, b, temperature=0.4, offset=0.3, negatives=q, similarity=spec),
                lambda a, b, q: ref_nce(s, a, b, 0.4, 0.3, negatives=q), (Z1, Z2, PER_ANCHOR))
    if name == "dcl":
        return (lambda a, b, t: dcl(a, b, temperature=t, similarity=spec),
                lambda a, b, t: ref_dcl(s, a, b, t), (Z1, Z2, tau))
    if name == "dclw":
        return (lambda a, b: dcl(a, b, temperature=0.4, weight_sigma=0.5, similarity=spec),
                lambda a, b: ref_dcl(s, a, b, 0.4, weight_sigma=0.5), (Z1, Z2))
    if name in ("vse", "vse++"):
        hardest = name == "vse++"
        return (lambda a, b: vse_hinge(a, b, margin=0.3, max_violation=hardest, similarity=spec),
                lambda a, b: ref_vse(s, a, b, 0.3, hardest), (Z1, Z2))
    if name == "triplet":
        return (lambda a, b: triplet_margin(a, b, margin=0.3, sampler="all", similarity=spec),
                lambda a, b: ref_triplet_all(s, a, b, 0.3), (Z1 / 2, Z2 / 2))
    if name == "supcon":
        return (lambda z, t: supcon(z, LABELS, temperature=t, similarity=spec),
                lambda z, t: ref_supcon(s, z, LABELS, t), (torch.stack([Z1, Z2], dim=1), tau))
    if name == "cmc_core_view":
        views = [Z1, Z2, _randn(N, D, seed=24)]
        objective = MultiViewObjective("clip", temperature=0.4, similarity=spec)
        return (lambda a, b, c: objective([a, b, c]),
                lambda a, b, c: ref_info_nce(s, a, b, 0.4, symmetric=True) + ref_info_nce(s, a, c, 0.4, symmetric=True),
                tuple(views))
    raise AssertionError(name)


OBJECTIVES = ["info_nce", "info_nce/raw", "clip", "info_nce/queue", "info_nce/per_anchor", "nt_xent", "nce",
              "nce/symmetric", "nce/queue", "nce/per_anchor", "dcl", "dclw", "vse", "vse++", "triplet", "supcon",
              "cmc_core_view"]


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("objective", OBJECTIVES)
def test_every_objective_with_every_similarity_equals_its_reference(objective, kind):
    """Value and gradients (embeddings, negatives and a tensor temperature) against the paper's loss with s."""
    spec, s = KINDS[kind]
    fast, slow, inputs = _case(objective, spec, s)
    assert_same(fast, slow, *inputs, atol=1e-9)


def test_the_temperature_divides_any_similarity():
    z1, z2 = Z1, Z2
    for spec in ("rbf", "polynomial", _bilinear_form):
        sim = parse_similarity(spec)
        logits = sim.matrix(F.normalize(z1, dim=-1), F.normalize(z2, dim=-1)) / 0.3
        expected = F.cross_entropy(logits, torch.arange(N))
        torch.testing.assert_close(info_nce(z1, z2, temperature=0.3, similarity=spec), expected)


# ---------------------------------------------------------------- the default is the old behaviour, bit for bit


def _legacy(name, z1, z2, extra):
    """The objectives' computations before the option existed (normalise, then raw dot products)."""
    u1, u2 = F.normalize(z1, dim=-1), F.normalize(z2, dim=-1)
    n = z1.shape[0]
    target = torch.arange(n)
    if name == "info_nce":
        logits = u1 @ u2.T / 0.2
        return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
    if name in ("info_nce/queue", "info_nce/per_anchor"):
        negatives = F.normalize(extra, dim=-1)
        positive = (u1 * u2).sum(dim=-1, keepdim=True)
        negative = u1 @ negatives.T if negatives.dim() == 2 else torch.bmm(negatives, u1.unsqueeze(-1)).squeeze(-1)
        return F.cross_entropy(torch.cat([positive, negative], dim=1) / 0.2, torch.zeros(n, dtype=torch.long))
    if name == "nt_xent":
        u = torch.cat([u1, u2])
        logits = (u @ u.T / 0.2).masked_fill(torch.eye(2 * n, dtype=torch.bool), float("-inf"))
        return F.cross_entropy(logits, torch.cat([target + n, target]))
    if name in ("nce", "nce/symmetric"):
        def one_way(logits):
            off = ~torch.eye(n, dtype=torch.bool)
            negative = torch.where(off, F.softplus(logits), torch.zeros_like(logits)).sum(1)
            return (F.softplus(-logits.diagonal()) + negative).mean()

        loss = one_way(u1 @ u2.T / 0.2)
        return (loss + one_way(u2 @ u1.T / 0.2)) / 2 if name == "nce/symmetric" else loss
    if name == "dcl":
        u = torch.cat([u1, u2])
        logits = u @ u.T / 0.2
        anchor = torch.arange(2 * n)
        partner = (anchor + n) % (2 * n)
        excluded = torch.eye(2 * n, dtype=torch.bool)
        excluded[anchor, partner] = True
        return (torch.logsumexp(logits.masked_fill(excluded, float("-inf")), dim=1) - logits[anchor, partner]).mean()
    if name == "vse":
        scores = u1 @ u2.T
        positive, negative = scores.diagonal(), ~torch.eye(n, dtype=torch.bool)
        cost_1 = torch.where(negative, F.relu(0.2 - positive[:, None] + scores), torch.zeros_like(scores))
        cost_2 = torch.where(negative, F.relu(0.2 - positive[None, :] + scores), torch.zeros_like(scores))
        return ((cost_1.sum(dim=1) + cost_2.sum(dim=0)) / 2).mean()
    if name == "supcon":
        u = torch.cat([u1, u2], dim=1).reshape(2 * n, -1)  # rows i * V + view of (N, V, D)
        y = torch.arange(n).repeat_interleave(2)
        self_mask = torch.eye(2 * n, dtype=torch.bool)
        positives = (y[:, None] == y[None, :]) & ~self_mask
        logits = (u @ u.T / 0.2).masked_fill(self_mask, float("-inf"))
        log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
        pos = torch.where(positives, log_prob, torch.zeros((), dtype=log_prob.dtype))
        return (-pos.sum(dim=1) / positives.sum(dim=1)).mean()
    raise AssertionError(name)


def _current(name, z1, z2, extra, **option):
    if name == "info_nce":
        return info_nce(z1, z2, temperature=0.2, symmetric=True, impl="naive", **option)
    if name in ("info_nce/queue", "info_nce/per_anchor"):
        return info_nce(z1, z2, temperature=0.2, negatives=extra, **option)
    if name == "nt_xent":
        return nt_xent(z1, z2, temperature=0.2, impl="naive", **option)
    if name in ("nce", "nce/symmetric"):
        return nce(z1, z2, temperature=0.2, symmetric=name == "nce/symmetric", **option)
    if name == "dcl":
        return dcl(z1, z2, temperature=0.2, **option)
    if name == "vse":
        return vse_hinge(z1, z2, margin=0.2, **option)
    if name == "supcon":
        return supcon(torch.stack([z1, z2], dim=1), temperature=0.2, **option)
    raise AssertionError(name)


LEGACY = ["info_nce", "info_nce/queue", "info_nce/per_anchor", "nt_xent", "nce", "nce/symmetric", "dcl", "vse",
          "supcon"]


def _value_and_grads(fn, z1, z2, extra):
    leaves = [t.clone().requires_grad_() for t in (z1, z2, extra)]
    value = fn(*leaves)
    return [value.detach(), *torch.autograd.grad(value, leaves[:2])]


@pytest.mark.parametrize("name", LEGACY)
def test_similarity_none_is_the_previous_behaviour_bit_for_bit(name):
    z1, z2 = torch.randn(6, 5), torch.randn(6, 5)
    extra = torch.randn(6, 3, 5) if name == "info_nce/per_anchor" else torch.randn(4, 5)
    old = _value_and_grads(lambda a, b, e: _legacy(name, a, b, e), z1, z2, extra)
    new = _value_and_grads(lambda a, b, e: _current(name, a, b, e), z1, z2, extra)
    explicit = _value_and_grads(lambda a, b, e: _current(name, a, b, e, similarity=None), z1, z2, extra)
    for o, n_, e in zip(old, new, explicit):
        assert torch.equal(o, n_) and torch.equal(o, e)


@pytest.mark.parametrize("name", LEGACY)
def test_cosine_similarity_equals_the_default(name):
    z1, z2 = torch.randn(6, 5, dtype=DT), torch.randn(6, 5, dtype=DT)
    extra = torch.randn(6, 3, 5, dtype=DT) if name == "info_nce/per_anchor" else torch.randn(4, 5, dtype=DT)
    default = _value_and_grads(lambda a, b, e: _current(name, a, b, e), z1, z2, extra)
    cosine = _value_and_grads(lambda a, b, e: _current(name, a, b, e, similarity="cosine"), z1, z2, extra)
    for d, c in zip(default, cosine):
        torch.testing.assert_close(c, d, rtol=0, atol=1e-12)
    # without normalize, cosine is still cosine: exactly the default's normalise-then-dot
    raw = _value_and_grads(lambda a, b, e: _current(name, a, b, e, similarity="cosine", normalize=False),
                           z1, z2, extra)
    for d, r in zip(default, raw):
        torch.testing.assert_close(r, d, rtol=0, atol=1e-12)


def test_triplet_metric_and_similarity_are_one_vocabulary():
    z1, z2, labels = Z1, Z2, LABELS
    for sampler in ("all", "hardest", "semi_hard"):
        base = triplet_margin(z1, z2, sampler=sampler)
        assert torch.equal(base, triplet_margin(z1, z2, sampler=sampler, metric="cosine"))
        assert torch.equal(base, triplet_margin(z1, z2, sampler=sampler, similarity="cosine"))
        assert torch.equal(base, triplet_margin(z1, z2, sampler=sampler, metric="cosine", similarity="cosine"))
        dot = triplet_margin(z1, z2, sampler=sampler, metric="dot")
        assert torch.equal(dot, triplet_margin(z1, z2, sampler=sampler, similarity="linear"))
        assert torch.equal(dot, triplet_margin(z1, z2, sampler=sampler, metric="dot", similarity="linear"))
    labelled = triplet_margin(z1, labels, sampler="all", similarity={"name": "rbf", "sigma": 0.6})
    s = KINDS["rbf"][1]
    expected = []
    for i in range(N):
        pos = [p for p in range(N) if p != i and labels[p] == labels[i]]
        neg = [j for j in range(N) if labels[j] != labels[i]]
        if pos and neg:
            expected.append(sum(sum(torch.relu(0.2 - s(z1[i], z1[p]) + s(z1[i], z1[j])) for j in neg) / len(neg)
                                for p in pos) / len(pos))
    torch.testing.assert_close(labelled, sum(expected) / len(expected))
    with pytest.raises(ValueError, match="metric='euclidean' and similarity=Similarity\\('rbf'.*give one of them"):
        triplet_margin(z1, z2, metric="euclidean", similarity="rbf")
    with pytest.raises(ValueError, match="metric='cosine' and similarity=Similarity\\('dot'\\)"):
        Triplet(metric="cosine", similarity="dot")
    assert "metric='cosine'" in repr(Triplet()) and "metric" not in repr(Triplet(similarity="rbf"))


# ---------------------------------------------------------------- the tiled kernels


def test_tiled_kernels_take_the_bilinear_similarities():
    z1, z2 = torch.randn(12, 6, dtype=DT), torch.randn(12, 6, dtype=DT)
    for spec in ("cosine", "dot", "linear"):
        for symmetric in (False, True):
            torch.testing.assert_close(
                info_nce(z1, z2, temperature=0.3, symmetric=symmetric, normalize=False, similarity=spec, impl="tiled"),
                info_nce(z1, z2, temperature=0.3, symmetric=symmetric, normalize=False, similarity=spec, impl="naive"))
        torch.testing.assert_close(nt_xent(z1, z2, normalize=False, similarity=spec, impl="tiled"),
                                   nt_xent(z1, z2, normalize=False, similarity=spec, impl="naive"))
    torch.testing.assert_close(tiled_info_nce(z1, z2, temperature=0.3, similarity="cosine", block_size=5),
                               info_nce(z1, z2, temperature=0.3, impl="naive"))


@pytest.mark.parametrize("spec", ["polynomial", "exponential", {"name": "rbf", "sigma": 0.5}, _bilinear_form])
def test_impl_tiled_refuses_other_similarities_and_says_why(spec):
    z = torch.randn(8, 4, dtype=DT)
    for call in (lambda: info_nce(z, z, similarity=spec, impl="tiled"),
                 lambda: InfoNCE(similarity=spec, impl="tiled", symmetric=True)(z, z),
                 lambda: nt_xent(z, z, similarity=spec, impl="tiled"),
                 lambda: tiled_info_nce(z, z, temperature=0.1, similarity=spec),
                 lambda: tiled_nt_xent(z, z, temperature=0.1, similarity=spec)):
        with pytest.raises(ValueError, match=r"impl='tiled' takes the bilinear similarities.*backward pass"):
            call()


def test_impl_auto_falls_back_to_naive_for_rbf_above_the_tiled_threshold(monkeypatch):
    import contrastlab.objectives._tiled as tiled

    def refuse(*args, **kwargs):
        raise AssertionError("the tiled kernel was called")

    monkeypatch.setattr(tiled, "tiled_info_nce", refuse)
    monkeypatch.setattr(tiled, "tiled_nt_xent", refuse)
    n = TILED_THRESHOLD
    z1, z2 = torch.randn(n, 8), torch.randn(n, 8)
    rbf = {"name": "rbf", "sigma": 0.5}
    assert torch.equal(info_nce(z1, z2, similarity=rbf, symmetric=True), info_nce(z1, z2, similarity=rbf, impl="naive",
                                                                                  symmetric=True))
    h1, h2 = z1[: n // 2], z2[: n // 2]  # NT-Xent's 2N rows reach the threshold
    assert torch.equal(nt_xent(h1, h2, similarity=rbf), nt_xent(h1, h2, similarity=rbf, impl="naive"))
    with pytest.raises(AssertionError, match="tiled kernel was called"):  # a bilinear one still takes it
        info_nce(z1, z2, similarity="cosine")


# ---------------------------------------------------------------- learned coordination functions


class Gated(nn.Module):
    """A tiny learned coordination function: s(a, b) = sigmoid(g) cos(a, b) + (1 - sigmoid(g)) a.W.b."""

    def __init__(self, dim):
        super().__init__()
        self.gate = nn.Parameter(torch.zeros((), dtype=DT))
        self.weight = nn.Parameter(torch.eye(dim, dtype=DT) + 0.1 * _randn(dim, dim, seed=30))

    def forward(self, a, b):
        g = torch.sigmoid(self.gate)
        return g * F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T + (1 - g) * a @ self.weight @ b.T


def test_a_learned_similarity_gets_gradients_through_info_nce():
    gated = Gated(D)
    for negatives in (None, QUEUE, PER_ANCHOR):
        gated.zero_grad()
        info_nce(Z1, Z2, negatives=negatives, similarity=gated).backward()
        assert all(p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0
                   for p in gated.parameters())
    # the module form, given at construction or per call (as a model hands its own to the reader)
    for loss in (InfoNCE(similarity=gated)(Z1, Z2), InfoNCE()(Z1, Z2, similarity=gated)):
        torch.testing.assert_close(loss, info_nce(Z1, Z2, similarity=gated))
    assert "similarity=Similarity(function=Gated)" in repr(InfoNCE(similarity=gated))


def test_a_function_with_its_own_paired_method_is_used_for_pairs():
    calls = []

    class WithPaired:
        def __call__(self, a, b):
            return a @ b.T

        def paired(self, a, b):
            calls.append(a.shape)
            return (a * b).sum(-1)

    sim = parse_similarity(WithPaired())
    assert sim.name == "WithPaired" and torch.equal(sim.paired(Z1, Z2), (Z1 * Z2).sum(-1))
    torch.testing.assert_close(info_nce(Z1, Z2, negatives=PER_ANCHOR, similarity=WithPaired()),
                               info_nce(Z1, Z2, negatives=PER_ANCHOR, similarity="dot"))
    assert (N * M, D) in calls  # per-anchor negatives as pairs, not N calls


def test_an_object_with_matrix_and_paired_methods_is_a_similarity():
    class Scaled:  # not callable: the similarity protocol of matrix / paired, and a name
        name = "scaled"

        def matrix(self, a, b):
            return 2 * a @ b.T

        def paired(self, a, b):
            return 2 * (a * b).sum(-1)

    sim = parse_similarity(Scaled())
    assert repr(sim) == "Similarity(function=scaled)" and not sim.bilinear
    for negatives in (None, QUEUE, PER_ANCHOR):
        torch.testing.assert_close(info_nce(Z1, Z2, temperature=0.2, negatives=negatives, similarity=Scaled()),
                                   info_nce(Z1, Z2, temperature=0.1, negatives=negatives))
    with pytest.raises(ValueError, match="similarity must be a name"):
        parse_similarity(object())


STACK = torch.stack([Z1, Z2], dim=1)
MODULES = {
    "InfoNCE": (lambda **k: InfoNCE(temperature=0.3, **k), lambda **k: info_nce(Z1, Z2, temperature=0.3, **k)),
    "NTXent": (lambda **k: NTXent(temperature=0.3, **k), lambda **k: nt_xent(Z1, Z2, temperature=0.3, **k)),
    "NCE": (lambda **k: NCE(temperature=0.3, **k), lambda **k: nce(Z1, Z2, temperature=0.3, **k)),
    "DCL": (lambda **k: DCL(temperature=0.3, **k), lambda **k: dcl(Z1, Z2, temperature=0.3, **k)),
    "DCLW": (lambda **k: DCLW(temperature=0.3, **k), lambda **k: dcl(Z1, Z2, temperature=0.3, weight_sigma=0.5, **k)),
    "VSEHinge": (lambda **k: VSEHinge(**k), lambda **k: vse_hinge(Z1, Z2, **k)),
    "Triplet": (lambda **k: Triplet(sampler="all", **k), lambda **k: triplet_margin(Z1, Z2, sampler="all", **k)),
    "SupCon": (lambda **k: SupCon(temperature=0.3, **k), lambda **k: supcon(STACK, temperature=0.3, **k)),
}


@pytest.mark.parametrize("name", list(MODULES))
def test_modules_store_the_option_and_forward_overrides_it(name):
    build, function = MODULES[name]
    call = (lambda module, **k: module(STACK, **k)) if name == "SupCon" else (lambda module, **k: module(Z1, Z2, **k))
    rbf = {"name": "rbf", "sigma": 0.6}
    module = build(similarity=rbf)
    assert module.similarity == Similarity("rbf", sigma=0.6) and "similarity=Similarity('rbf'" in repr(module)
    torch.testing.assert_close(call(module), function(similarity=rbf))
    torch.testing.assert_close(call(module, similarity="polynomial"), function(similarity="polynomial"))
    torch.testing.assert_close(call(build()), function())


def test_cmc_passes_the_similarity_to_every_pair_and_takes_it_per_call():
    views = [Z1, Z2, _randn(N, D, seed=25)]
    stored = MultiViewObjective("clip", mode="full_graph", similarity="rbf")
    pairs = [(0, 1), (0, 2), (1, 2)]
    expected = sum(info_nce(views[i], views[j], temperature=0.07, symmetric=True, similarity="rbf") for i, j in pairs)
    torch.testing.assert_close(stored(views), expected)
    override = MultiViewObjective("clip", mode="full_graph")(views, similarity="rbf")
    torch.testing.assert_close(override, expected)
    with pytest.raises(ValueError, match="takes no similarity"):
        MultiViewObjective(lambda a, b: (a - b).square().mean())(views, similarity="rbf")


# ---------------------------------------------------------------- docs and training


@pytest.mark.parametrize("module", ["similarity", "_tiled", "info_nce", "nce", "decoupled", "hinge", "triplet",
                                    "supcon", "multiview"])
def test_docstring_examples_run(module):
    mod = importlib.import_module(f"contrastlab.objectives.{module}")
    result = doctest.testmod(mod, extraglobs={"torch": torch}, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted > 0


def test_training_a_clip_run_with_an_rbf_similarity(tmp_path):
    from contrastlab.training import train
    from contrastlab.training.config import config_from_dict
    from contrastlab.training.logging import read_metrics

    raw = yaml.safe_load("""
data: {name: shapes, options: {n_items: 32, image_size: 8}}
views: {name: simclr}
model: {encoder: {name: mlp, options: {hidden: [16]}}, head: {name: linear}, dim: 8}
objective: {name: clip, options: {similarity: {name: rbf, sigma: 0.5}}}
batch_size: 8
steps: 3
threads: 1
device: cpu
log: {every: 1, progress: false, tensorboard: false}
""")
    result = train(config_from_dict(raw), tmp_path / "run")
    losses = [row["loss"] for row in read_metrics(tmp_path / "run" / "metrics.csv")]
    assert result.step == 3 and len(losses) == 3 and all(math.isfinite(x) for x in losses)
    assert "sigma: 0.5" in (tmp_path / "run" / "config.yaml").read_text()
