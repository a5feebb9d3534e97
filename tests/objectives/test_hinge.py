import pytest
import torch

from _compare import value_and_grads
from contrastlab.objectives.hinge import SPECS, VSEHinge, vse_hinge
from contrastlab.objectives.triplet import triplet_margin

DT = torch.float64


def ref_vse(z1, z2, margin, max_violation, normalize=True, symmetric=True, per_anchor=False):
    """Faghri et al. eq. (4)/(5) with loops; averaged over anchors and (when symmetric) over the two directions."""
    n = z1.shape[0]

    def s(u, v):
        dot = (u * v).sum()
        return dot / torch.sqrt((u * u).sum() * (v * v).sum()) if normalize else dot

    losses = []
    for i in range(n):
        pos = s(z1[i], z2[i])
        to_z2 = [torch.clamp(margin - pos + s(z1[i], z2[j]), min=0) for j in range(n) if j != i]
        to_z1 = [torch.clamp(margin - pos + s(z1[j], z2[i]), min=0) for j in range(n) if j != i]
        pick = (lambda costs: max(costs, key=lambda v: v.item())) if max_violation else sum
        losses.append((pick(to_z2) + pick(to_z1)) / 2 if symmetric else pick(to_z2))
    return torch.stack(losses) if per_anchor else sum(losses) / n


def _pairs(n=6, d=4):
    z1 = torch.randn(n, d, dtype=DT)
    return z1, z1 + 0.8 * torch.randn(n, d, dtype=DT)


@pytest.mark.parametrize("max_violation", [False, True])
@pytest.mark.parametrize("normalize", [True, False])
def test_matches_loop_reference(max_violation, normalize):
    z1, z2 = _pairs()
    margin = 0.3 if normalize else 2.0
    v1, g1 = value_and_grads(lambda a, b: vse_hinge(a, b, margin=margin, max_violation=max_violation, normalize=normalize), z1, z2)
    v2, g2 = value_and_grads(lambda a, b: ref_vse(a, b, margin, max_violation, normalize), z1, z2)
    torch.testing.assert_close(v1, v2, atol=1e-6, rtol=0)
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)
    assert v1.item() > 0  # the margin is active, so the check compares non-trivial values


def test_closed_form_and_relations_to_triplet():
    z = torch.eye(3, dtype=DT)
    assert vse_hinge(z, z, margin=1.5).item() == pytest.approx(1.0)  # mean of 2 directions, each 2 negatives x 0.5
    assert vse_hinge(z, z, margin=1.5, symmetric=False).item() == pytest.approx(1.0)
    assert vse_hinge(z, z, margin=1.5, max_violation=True).item() == pytest.approx(0.5)
    assert vse_hinge(z, z, margin=0.5).item() == 0.0
    z1, z2 = _pairs(n=7)
    # VSE++ is the hardest-negative triplet loss on cosine similarity; the triplet loss sums the directions
    torch.testing.assert_close(
        2 * vse_hinge(z1, z2, max_violation=True), triplet_margin(z1, z2, sampler="hardest", metric="cosine")
    )
    torch.testing.assert_close(
        vse_hinge(z1, z2, max_violation=True, symmetric=False),
        triplet_margin(z1, z2, sampler="hardest", metric="cosine", bidirectional=False),
    )
    # VSE sums over the 6 negatives what the "all" triplet loss averages
    torch.testing.assert_close(2 * vse_hinge(z1, z2), 6 * triplet_margin(z1, z2, sampler="all", metric="cosine"))
    # with two items there is a single negative: sum == max
    torch.testing.assert_close(vse_hinge(z1[:2], z2[:2]), vse_hinge(z1[:2], z2[:2], max_violation=True))
    assert vse_hinge(z1, z2, max_violation=True) <= vse_hinge(z1, z2)


@pytest.mark.parametrize("max_violation", [False, True])
def test_gradcheck(max_violation):
    z1, z2 = _pairs(n=4, d=3)
    assert torch.autograd.gradcheck(
        lambda a, b: vse_hinge(a, b, margin=0.5, max_violation=max_violation),
        (z1.requires_grad_(True), z2.requires_grad_(True)),
    )


@pytest.mark.parametrize("max_violation", [False, True])
def test_permutation_invariance_and_symmetry(max_violation):
    z1, z2 = _pairs(n=8)
    p = torch.randperm(8)
    loss = vse_hinge(z1, z2, max_violation=max_violation)
    torch.testing.assert_close(loss, vse_hinge(z1[p], z2[p], max_violation=max_violation))
    torch.testing.assert_close(loss, vse_hinge(z2, z1, max_violation=max_violation))
    torch.testing.assert_close(loss, vse_hinge(3 * z1, 0.5 * z2, max_violation=max_violation))


def test_finite_for_degenerate_embeddings_float32():
    z = torch.nn.functional.normalize(torch.randn(6, 8), dim=1)
    cases = {"identical": (z, z.clone()), "antipodal": (z, -z), "all_equal": (z[:1].repeat(6, 1), z[:1].repeat(6, 1))}
    for name, (a, b) in cases.items():
        for max_violation in (False, True):
            a_, b_ = a.clone().requires_grad_(True), b.clone().requires_grad_(True)
            loss = vse_hinge(a_, b_, max_violation=max_violation)
            grads = torch.autograd.grad(loss, (a_, b_))
            assert torch.isfinite(loss) and all(torch.isfinite(g).all() for g in grads), name


def test_bad_options():
    z = torch.randn(4, 3)
    with pytest.raises(ValueError, match="-0.2"):
        vse_hinge(z, z, margin=-0.2)
    with pytest.raises(ValueError, match="margin"):
        VSEHinge(margin=float("nan"))
    with pytest.raises(ValueError, match="got 1"):
        vse_hinge(torch.randn(1, 3), torch.randn(1, 3))
    with pytest.raises(ValueError, match=r"\(4, 3\) and \(4, 5\)"):
        vse_hinge(z, torch.randn(4, 5))


def test_module_and_specs():
    z1, z2 = _pairs()
    torch.testing.assert_close(VSEHinge(margin=0.1)(z1, z2), vse_hinge(z1, z2, margin=0.1))
    specs = {s.name: s for s in SPECS}
    assert set(specs) == {"vse", "vse++"}
    for spec in specs.values():
        assert spec.kind == "pairwise" and "\n" not in spec.formula and spec.reference
        module = spec.factory(margin=0.3)
        assert isinstance(module, torch.nn.Module) and module(z1, z2).dim() == 0
    torch.testing.assert_close(specs["vse"].factory()(z1, z2), vse_hinge(z1, z2))
    torch.testing.assert_close(specs["vse++"].factory()(z1, z2), vse_hinge(z1, z2, max_violation=True))
    with pytest.raises(TypeError):
        specs["vse"].factory(max_violation=True)


@pytest.mark.parametrize("max_violation", [False, True])
def test_symmetric_is_the_mean_of_the_two_directions(max_violation):
    z1, z2 = _pairs()
    both = vse_hinge(z1, z2, max_violation=max_violation)
    one = vse_hinge(z1, z2, max_violation=max_violation, symmetric=False)
    other = vse_hinge(z2, z1, max_violation=max_violation, symmetric=False)
    torch.testing.assert_close(both, (one + other) / 2)
    v1, g1 = value_and_grads(lambda a, b: vse_hinge(a, b, margin=0.3, symmetric=False), z1, z2)
    v2, g2 = value_and_grads(lambda a, b: ref_vse(a, b, 0.3, False, symmetric=False), z1, z2)
    torch.testing.assert_close(v1, v2)
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("max_violation", [False, True])
@pytest.mark.parametrize("symmetric", [True, False])
def test_reduction(max_violation, symmetric):
    z1, z2 = _pairs()
    kw = dict(margin=0.3, max_violation=max_violation, symmetric=symmetric)
    per_anchor = vse_hinge(z1, z2, reduction="none", **kw)
    assert per_anchor.shape == (6,)
    torch.testing.assert_close(per_anchor, ref_vse(z1, z2, 0.3, max_violation, symmetric=symmetric, per_anchor=True))
    torch.testing.assert_close(per_anchor.mean(), vse_hinge(z1, z2, **kw))
    torch.testing.assert_close(per_anchor.sum(), vse_hinge(z1, z2, reduction="sum", **kw))
    torch.testing.assert_close(VSEHinge(reduction="none", **kw)(z1, z2), per_anchor)
    with pytest.raises(ValueError, match="'avg'"):
        vse_hinge(z1, z2, reduction="avg")
    with pytest.raises(ValueError, match="'avg'"):
        VSEHinge(reduction="avg")
