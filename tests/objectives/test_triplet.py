import pytest
import torch
from pytorch_metric_learning import distances, losses, miners, reducers

from _compare import assert_same
from contrastlab.objectives.triplet import SPECS, Triplet, pair_scores, triplet_margin

DT = torch.float64
METRICS = ["cosine", "dot", "euclidean", "squared_euclidean"]


def ref_score(u, v, metric):
    if metric == "cosine":
        return (u * v).sum() / torch.sqrt((u * u).sum() * (v * v).sum())
    if metric == "dot":
        return (u * v).sum()
    squared = ((u - v) ** 2).sum()
    return -(squared if metric == "squared_euclidean" else torch.sqrt(squared))


def ref_triplet(z1, z2, margin, sampler, metric, bidirectional=True):
    """Loops over anchors; deterministic samplers only."""
    n = z1.shape[0]

    def one_way(a, b):
        total = 0.0
        for i in range(n):
            pos = ref_score(a[i], b[i], metric)
            imp = [(j, ref_score(a[i], b[j], metric)) for j in range(n) if j != i]
            for part in sampler.split("+"):
                if part == "all":
                    total = total + sum(torch.clamp(margin - pos + s, min=0) for _, s in imp) / (n - 1)
                    continue
                if part == "hardest":
                    neg = max((s for _, s in imp), key=lambda v: v.item())
                else:  # semi_hard: most similar impostor below the positive, else the least similar one
                    below = [s for _, s in imp if s.item() < pos.item()]
                    neg = max(below, key=lambda v: v.item()) if below else min((s for _, s in imp), key=lambda v: v.item())
                total = total + torch.clamp(margin - pos + neg, min=0)
        return total / n

    loss = one_way(z1, z2)
    return loss + one_way(z2, z1) if bidirectional else loss


def _pairs(n=6, d=4):
    z1 = torch.randn(n, d, dtype=DT)
    return z1, z1 + 0.8 * torch.randn(n, d, dtype=DT)  # positives a bit closer than impostors


# ---------------------------------------------------------------- references


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("sampler", ["semi_hard", "hardest", "all", "hardest+all"])
@pytest.mark.parametrize("bidirectional", [True, False])
def test_deterministic_samplers_match_loop_reference(metric, sampler, bidirectional):
    z1, z2 = _pairs()
    margin = 0.3 if metric in ("cosine", "dot") else 1.0
    assert_same(
        lambda a, b: triplet_margin(a, b, margin=margin, sampler=sampler, metric=metric, bidirectional=bidirectional),
        lambda a, b: ref_triplet(a, b, margin, sampler, metric, bidirectional),
        z1,
        z2,
    )


def test_semi_hard_picks_below_positive_and_falls_back_to_least_similar():
    # one direction, scores given directly through unit vectors in 2-D
    angles = torch.tensor([0.0, 0.3, 1.0, 2.0], dtype=DT)
    z1 = torch.stack([torch.cos(angles), torch.sin(angles)], 1)
    z2 = z1.clone()
    z2[0] = torch.tensor([torch.cos(torch.tensor(0.5)), torch.sin(torch.tensor(0.5))], dtype=DT)
    s = pair_scores(z1, z2, "cosine")
    # anchor 0: positive at angle 0.5 (cos .878); impostors at 0.3 (.955, above), 1.0 (.540), 2.0 (-.416)
    # -> semi-hard is the impostor at angle 1.0; hardest is the one at 0.3
    margin = 0.5
    row0_semi = max(0.0, margin - s[0, 0].item() + s[0, 2].item())
    row0_hard = max(0.0, margin - s[0, 0].item() + s[0, 1].item())
    per_row = []
    for i in range(4):
        pos = s[i, i].item()
        imp = [s[i, j].item() for j in range(4) if j != i]
        below = [v for v in imp if v < pos]
        per_row.append(max(0.0, margin - pos + (max(below) if below else min(imp))))
    assert per_row[0] == pytest.approx(row0_semi)
    assert row0_semi < row0_hard
    got = triplet_margin(z1, z2, margin=margin, sampler="semi_hard", bidirectional=False)
    assert got.item() == pytest.approx(sum(per_row) / 4, rel=1e-12)
    # identical embeddings: every impostor ties or is below; with all rows equal none is below -> fallback
    same = torch.ones(3, 2, dtype=DT)
    assert triplet_margin(same, same, margin=0.2, sampler="semi_hard").item() == pytest.approx(0.4)


# ---------------------------------------------------------------- random sampler


def test_random_never_samples_the_positive():
    z = torch.eye(5, dtype=DT)  # positive scores 1, impostors 0; picking the positive would cost 0.5
    g = torch.Generator().manual_seed(3)
    for _ in range(50):
        assert triplet_margin(z, z, margin=0.5, sampler="random", generator=g).item() == 0.0


def test_random_is_reproducible_and_unbiased():
    z1, z2 = _pairs(n=4)
    a = triplet_margin(z1, z2, margin=1.0, sampler="random", generator=torch.Generator().manual_seed(7))
    b = triplet_margin(z1, z2, margin=1.0, sampler="random", generator=torch.Generator().manual_seed(7))
    assert a.item() == b.item()
    # its expectation over draws is the mean over impostors ("all")
    g = torch.Generator().manual_seed(0)
    draws = torch.stack([triplet_margin(z1, z2, margin=1.0, sampler="random", generator=g) for _ in range(4000)])
    expected = triplet_margin(z1, z2, margin=1.0, sampler="all")
    assert abs(draws.mean().item() - expected.item()) < 4 * draws.std().item() / 4000**0.5 + 1e-12
    assert draws.std().item() > 0


def test_combination_is_the_sum_of_its_parts():
    z1, z2 = _pairs()
    combo = triplet_margin(z1, z2, sampler="random+semi_hard", generator=torch.Generator().manual_seed(5))
    parts = triplet_margin(z1, z2, sampler="random", generator=torch.Generator().manual_seed(5)) + triplet_margin(
        z1, z2, sampler="semi_hard"
    )
    torch.testing.assert_close(combo, parts)


def test_random_gradcheck_with_fixed_draws():
    a = torch.randn(4, 3, dtype=DT, requires_grad=True)
    b = torch.randn(4, 3, dtype=DT, requires_grad=True)

    def fn(x, y):
        return triplet_margin(x, y, margin=1.0, sampler="random", generator=torch.Generator().manual_seed(1))

    assert torch.autograd.gradcheck(fn, (a, b))


# ---------------------------------------------------------------- closed forms, gradcheck, invariances


def test_closed_forms():
    z = torch.eye(3, dtype=DT)
    for sampler in ("random", "semi_hard", "hardest", "all"):
        assert triplet_margin(z, z, margin=0.2, sampler=sampler).item() == 0.0
    # cosine, margin 1.5: every impostor violates by 0.5, per direction
    assert triplet_margin(z, z, margin=1.5, sampler="hardest").item() == pytest.approx(1.0)
    # squared Euclidean on the basis: positives at 0, impostors at 2
    assert triplet_margin(z, z, margin=3.0, sampler="all", metric="squared_euclidean").item() == pytest.approx(2.0)
    assert triplet_margin(z, z, margin=3.0, metric="euclidean", bidirectional=False).item() == pytest.approx(
        3.0 - 2**0.5
    )


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("sampler", ["semi_hard", "hardest", "all"])
def test_gradcheck(metric, sampler):
    z1, z2 = _pairs(n=4, d=3)
    margin = 0.3 if metric in ("cosine", "dot") else 1.5
    assert torch.autograd.gradcheck(
        lambda a, b: triplet_margin(a, b, margin=margin, sampler=sampler, metric=metric),
        (z1.requires_grad_(True), z2.requires_grad_(True)),
    )


@pytest.mark.parametrize("sampler", ["semi_hard", "hardest", "all"])
def test_permutation_invariance_and_symmetry(sampler):
    z1, z2 = _pairs(n=8)
    p = torch.randperm(8)
    for metric in METRICS:
        loss = triplet_margin(z1, z2, sampler=sampler, metric=metric)
        torch.testing.assert_close(loss, triplet_margin(z1[p], z2[p], sampler=sampler, metric=metric))
        torch.testing.assert_close(loss, triplet_margin(z2, z1, sampler=sampler, metric=metric))


def test_finite_for_degenerate_embeddings_float32():
    z = torch.nn.functional.normalize(torch.randn(6, 8), dim=1)
    cases = {"identical": (z, z.clone()), "antipodal": (z, -z), "all_equal": (z[:1].repeat(6, 1), z[:1].repeat(6, 1))}
    for name, (a, b) in cases.items():
        for metric in METRICS:
            for sampler in ("random+semi_hard", "hardest", "all"):
                a_, b_ = a.clone().requires_grad_(True), b.clone().requires_grad_(True)
                loss = triplet_margin(a_, b_, sampler=sampler, metric=metric)
                grads = torch.autograd.grad(loss, (a_, b_))
                assert torch.isfinite(loss), (name, metric, sampler)
                assert all(torch.isfinite(g).all() for g in grads), (name, metric, sampler)


# ---------------------------------------------------------------- pytorch-metric-learning


_PML_DISTANCES = {
    "cosine": lambda: distances.CosineSimilarity(),
    "euclidean": lambda: distances.LpDistance(normalize_embeddings=False, p=2, power=1),
    "squared_euclidean": lambda: distances.LpDistance(normalize_embeddings=False, p=2, power=2),
}


def _pml(sampler, metric, margin):
    """PML's TripletMarginLoss with z2 as the reference set; mean over triplets (zeros included)."""
    distance = _PML_DISTANCES[metric]()
    loss = losses.TripletMarginLoss(margin=margin, distance=distance, reducer=reducers.MeanReducer())
    miner = miners.BatchHardMiner(distance=distance) if sampler == "hardest" else None

    def one_way(a, b):
        labels, ref_labels = torch.arange(a.shape[0]), torch.arange(b.shape[0])
        indices = miner(a, labels, b, ref_labels) if miner else None
        return loss(a, labels, indices, b, ref_labels)

    return lambda a, b: one_way(a, b) + one_way(b, a)


@pytest.mark.parametrize("metric", list(_PML_DISTANCES))
@pytest.mark.parametrize("sampler", ["all", "hardest"])
def test_agrees_with_pml_triplet_margin_loss(metric, sampler):
    z1, z2 = _pairs(n=10, d=6)
    margin = 0.2 if metric == "cosine" else 1.0
    assert_same(
        lambda a, b: triplet_margin(a, b, margin=margin, sampler=sampler, metric=metric),
        _pml(sampler, metric, margin),
        z1,
        z2,
    )


# ---------------------------------------------------------------- reduction


@pytest.mark.parametrize("bidirectional", [True, False])
@pytest.mark.parametrize("sampler", ["semi_hard", "hardest+all", "random"])
def test_pairs_reduction(bidirectional, sampler):
    z1, z2 = _pairs()

    def loss(reduction):
        g = torch.Generator().manual_seed(4)
        return triplet_margin(z1, z2, sampler=sampler, bidirectional=bidirectional, reduction=reduction, generator=g)

    per_anchor = loss("none")
    assert per_anchor.shape == (6,)
    torch.testing.assert_close(per_anchor.mean(), loss("mean"))
    torch.testing.assert_close(per_anchor.sum(), loss("sum"))
    g = torch.Generator().manual_seed(4)
    module = Triplet(sampler=sampler, bidirectional=bidirectional, reduction="none", generator=g)
    torch.testing.assert_close(module(z1, z2), per_anchor)


# ---------------------------------------------------------------- labels form


def ref_triplet_labels(z, labels, margin, sampler, metric, per_anchor=False):
    """Loops: every (anchor, positive) pair of a class gets an impostor; mean over positives, then anchors."""
    n = z.shape[0]
    losses = []
    for i in range(n):
        positives = [p for p in range(n) if p != i and labels[p] == labels[i]]
        impostors = [(j, ref_score(z[i], z[j], metric)) for j in range(n) if labels[j] != labels[i]]
        if not positives or not impostors:
            losses.append(None)
            continue
        total = 0.0
        for p in positives:
            pos = ref_score(z[i], z[p], metric)
            for part in sampler.split("+"):
                if part == "all":
                    total = total + sum(torch.clamp(margin - pos + s, min=0) for _, s in impostors) / len(impostors)
                    continue
                if part == "hardest":
                    neg = max((s for _, s in impostors), key=lambda v: v.item())
                else:
                    below = [s for _, s in impostors if s.item() < pos.item()]
                    pool, pick = (below, max) if below else ([s for _, s in impostors], min)
                    neg = pick(pool, key=lambda v: v.item())
                total = total + torch.clamp(margin - pos + neg, min=0)
        losses.append(total / len(positives))
    if per_anchor:
        return torch.stack([torch.zeros((), dtype=z.dtype) if v is None else v for v in losses])
    used = [v for v in losses if v is not None]
    return sum(used) / len(used)


LABELS = [0, 1, 0, 2, 1, 0, 2, 3]  # class 3 appears once: that anchor has no positive


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("sampler", ["semi_hard", "hardest", "all", "hardest+all"])
def test_labels_match_loop_reference(metric, sampler):
    z, y = torch.randn(8, 4, dtype=DT), torch.tensor(LABELS)
    margin = 0.3 if metric in ("cosine", "dot") else 1.5
    assert_same(
        lambda e: triplet_margin(e, y, margin=margin, sampler=sampler, metric=metric),
        lambda e: ref_triplet_labels(e, y, margin, sampler, metric),
        z,
    )
    per_anchor = triplet_margin(z, y, margin=margin, sampler=sampler, metric=metric, reduction="none")
    torch.testing.assert_close(per_anchor, ref_triplet_labels(z, y, margin, sampler, metric, per_anchor=True))
    assert per_anchor[7] == 0  # no positive
    mean = triplet_margin(z, y, margin=margin, sampler=sampler, metric=metric)
    torch.testing.assert_close(per_anchor.sum() / 7, mean)
    torch.testing.assert_close(
        per_anchor.sum(), triplet_margin(z, y, margin=margin, sampler=sampler, metric=metric, reduction="sum")
    )


def test_labels_random_draws_only_impostors_and_averages_to_all():
    z, y = torch.randn(8, 4, dtype=DT), torch.tensor(LABELS)
    g = torch.Generator().manual_seed(0)
    draws = torch.stack([triplet_margin(z, y, margin=1.0, sampler="random", generator=g) for _ in range(3000)])
    expected = triplet_margin(z, y, margin=1.0, sampler="all")
    assert abs(draws.mean().item() - expected.item()) < 4 * draws.std().item() / 3000**0.5 + 1e-12
    # a huge margin makes every triplet active: the random loss is then m - S_ap + S_an, and S_an of a
    # same-class item would show up as a value "all" never reaches
    same = torch.tensor([0, 0, 1, 1])
    e = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]], dtype=DT)
    for _ in range(20):
        assert triplet_margin(e, same, margin=5.0, sampler="random", generator=g).item() == pytest.approx(4.0)
    a = triplet_margin(z, y, sampler="random", generator=torch.Generator().manual_seed(7))
    b = triplet_margin(z, y, sampler="random", generator=torch.Generator().manual_seed(7))
    assert a.item() == b.item()


def test_labels_gradcheck_and_finite_when_degenerate():
    z, y = torch.randn(6, 3, dtype=DT, requires_grad=True), torch.tensor([0, 0, 1, 1, 2, 2])
    for metric in METRICS:
        assert torch.autograd.gradcheck(lambda e: triplet_margin(e, y, margin=0.5, sampler="all", metric=metric), (z,))
    same = torch.nn.functional.normalize(torch.randn(1, 8), dim=1).repeat(6, 1).requires_grad_(True)
    for metric in METRICS:
        for sampler in ("random+semi_hard", "hardest", "all"):
            loss = triplet_margin(same, y, sampler=sampler, metric=metric)
            (grad,) = torch.autograd.grad(loss, same)
            assert torch.isfinite(loss) and torch.isfinite(grad).all(), (metric, sampler)


@pytest.mark.parametrize("metric", list(_PML_DISTANCES))
def test_labels_agree_with_pml(metric):
    """PML's TripletMarginLoss over all triplets (MeanReducer), equal classes; BatchHardMiner at two per class."""
    z = torch.randn(12, 6, dtype=DT)
    margin = 0.2 if metric == "cosine" else 1.0
    distance = _PML_DISTANCES[metric]()
    pml = losses.TripletMarginLoss(margin=margin, distance=distance, reducer=reducers.MeanReducer())
    three = torch.arange(4).repeat_interleave(3)
    assert_same(
        lambda e: triplet_margin(e, three, margin=margin, sampler="all", metric=metric), lambda e: pml(e, three), z
    )
    two = torch.arange(6).repeat_interleave(2)
    miner = miners.BatchHardMiner(distance=distance)
    assert_same(
        lambda e: triplet_margin(e, two, margin=margin, sampler="hardest", metric=metric),
        lambda e: pml(e, two, miner(e, two)),
        z,
    )


def test_labels_bad_arguments():
    z = torch.randn(4, 3)
    for labels, match in (
        (torch.tensor([0, 1, 2, 3]), "no anchor has both a positive and an impostor"),
        (torch.tensor([1, 1, 1, 1]), "4 items of 1 class"),
        (torch.tensor([0.0, 0.0, 1.0, 1.0]), "integer"),
        (torch.tensor([0, 0, 1]), r"\(4,\)"),
    ):
        with pytest.raises(ValueError, match=match):
            triplet_margin(z, labels)
    with pytest.raises(ValueError, match="bidirectional"):
        triplet_margin(z, torch.tensor([0, 0, 1, 1]), bidirectional=False)
    with pytest.raises(ValueError, match="embeddings"):
        triplet_margin(torch.randn(4, 2, 3), torch.tensor([0, 0, 1, 1]))
    with pytest.raises(ValueError, match="'avg'"):
        triplet_margin(z, torch.tensor([0, 0, 1, 1]), reduction="avg")
    pairs = torch.tensor([0, 0, 1, 1])
    torch.testing.assert_close(Triplet(sampler="all")(z, pairs), triplet_margin(z, pairs, sampler="all"))


# ---------------------------------------------------------------- bad options, module, SPECS


def test_bad_options():
    z = torch.randn(4, 3)
    with pytest.raises(ValueError, match="-0.1"):
        triplet_margin(z, z, margin=-0.1)
    for sampler, match in (("semihard", "'semihard'"), ("random+hard", "'hard'"), ("random+random", "twice"), ("", "non-empty")):
        with pytest.raises(ValueError, match=match):
            triplet_margin(z, z, sampler=sampler)
    with pytest.raises(ValueError, match="'l1'"):
        triplet_margin(z, z, metric="l1")
    with pytest.raises(ValueError, match="got 1"):
        triplet_margin(torch.randn(1, 3), torch.randn(1, 3))
    with pytest.raises(ValueError, match=r"\(4, 3\) and \(3, 3\)"):
        triplet_margin(z, torch.randn(3, 3))
    for kwargs in ({"margin": -1.0}, {"sampler": "nope"}, {"metric": "nope"}):
        with pytest.raises(ValueError):
            Triplet(**kwargs)


def test_module_and_specs():
    z1, z2 = _pairs()
    torch.testing.assert_close(
        Triplet(margin=0.4, sampler="hardest", metric="euclidean")(z1, z2),
        triplet_margin(z1, z2, margin=0.4, sampler="hardest", metric="euclidean"),
    )
    module = Triplet(sampler="random", generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(
        module(z1, z2), triplet_margin(z1, z2, sampler="random", generator=torch.Generator().manual_seed(2))
    )
    (spec,) = SPECS
    assert spec.name == "triplet" and spec.kind == "pairwise" and "\n" not in spec.formula
    built = spec.factory(sampler="random+semi_hard", margin=0.2)
    assert isinstance(built, torch.nn.Module) and built(z1, z2).dim() == 0
