import statistics

import pytest
import torch

from contrastlab.evaluation import match_ranks, retrieval_metrics


def loop_ranks(a, b):
    """Rank (1 = first) of each query's own candidate by plain loops, float64, no ties."""
    a = torch.nn.functional.normalize(a.double(), dim=1)
    b = torch.nn.functional.normalize(b.double(), dim=1)
    ranks = []
    for i in range(a.shape[0]):
        sims = [float(a[i] @ b[j]) for j in range(b.shape[0])]
        ranks.append(1 + sum(s > sims[i] for s in sims))
    return ranks


def test_identical_towers_recall_one():
    x = torch.randn(50, 16)
    out = retrieval_metrics(x, x, names=("image", "caption"))
    assert set(out) == {"image->caption", "caption->image"}
    for direction in out.values():
        assert direction["R@1"] == direction["R@5"] == direction["R@10"] == 1.0
        assert direction["median_rank"] == 1.0


def test_known_permutation():
    # 20 well separated pairs of near-identical items; b swaps the two members of the first 6 pairs.
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(20, 32, generator=g)
    a = torch.repeat_interleave(centres, 2, dim=0) + 0.01 * torch.randn(40, 32, generator=g)
    perm = torch.arange(40)
    for p in range(6):
        perm[2 * p], perm[2 * p + 1] = 2 * p + 1, 2 * p
    out = retrieval_metrics(a, a[perm])
    # 12 of 40 queries find their partner first and their own item second: rank 2.
    for direction in out.values():
        assert direction["R@1"] == pytest.approx(28 / 40)
        assert direction["R@5"] == direction["R@10"] == 1.0
        assert direction["median_rank"] == 1.0
        assert direction["mean_rank"] == pytest.approx((28 * 1 + 12 * 2) / 40)


def test_ranks_equal_a_loop():
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(60, 5, generator=g), torch.randn(60, 5, generator=g)
    ref = loop_ranks(a, b)
    better, tied = match_ranks(a, b, chunk=7)
    assert (tied == 0).all()
    assert (better + 1).tolist() == ref
    out = retrieval_metrics(a, b, ks=(1, 3, 10))["a->b"]
    for k in (1, 3, 10):
        assert out[f"R@{k}"] == pytest.approx(sum(r <= k for r in ref) / 60)
    assert out["median_rank"] == statistics.median(ref)


def test_collapsed_embeddings_score_chance_not_perfect():
    n = 40
    z = torch.ones(n, 8)
    out = retrieval_metrics(z, z)["a->b"]
    assert out["R@1"] == pytest.approx(1 / n)
    assert out["R@10"] == pytest.approx(10 / n)
    assert out["median_rank"] == pytest.approx((n + 1) / 2)


def test_partial_ties_count_in_expectation():
    # query 0's own candidate ties with one other (rank 1 or 2), query 1's with both others (1, 2 or 3).
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    b = torch.tensor([[1.0, 0.0], [1.0, 0.0], [-1.0, 0.0]])
    better, tied = match_ranks(a, b)
    assert better.tolist() == [0, 0, 0] and tied.tolist() == [1, 2, 0]
    out = retrieval_metrics(a, b, ks=(1, 2))["a->b"]
    assert out["R@1"] == pytest.approx((1 / 2 + 1 / 3 + 1) / 3)
    assert out["R@2"] == pytest.approx((1 + 2 / 3 + 1) / 3)
    assert out["mean_rank"] == pytest.approx((1.5 + 2 + 1) / 3)


def test_errors():
    with pytest.raises(ValueError, match=r"\(5, 3\)"):
        retrieval_metrics(torch.randn(4, 3), torch.randn(5, 3))
    with pytest.raises(ValueError, match="0"):
        retrieval_metrics(torch.randn(4, 3), torch.randn(4, 3), ks=(0,))
    with pytest.raises(ValueError, match="names"):
        retrieval_metrics(torch.randn(4, 3), torch.randn(4, 3), names=("x", "x"))


def test_retrieval_ranks_by_a_learned_similarity_in_both_directions():
    """A coordination function (here: the cosine of a fixed re-weighting of the features) ranks the candidates;
    b->a ranks by its transpose, with the arguments in the same (a, b) order."""
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(40, 6, generator=g), torch.randn(40, 6, generator=g)
    w_a, w_b = torch.rand(6, generator=g) + 0.1, torch.rand(6, generator=g) + 0.1
    calls = []

    def weighted(x, y):
        calls.append((x.shape[0], y.shape[0]))
        return F.normalize(x * w_a, dim=1) @ F.normalize(y * w_b, dim=1).T

    got = retrieval_metrics(a, b, similarity=weighted)
    want = retrieval_metrics(a * w_a, b * w_b)
    for direction in ("a->b", "b->a"):
        for key in ("R@1", "R@5", "median_rank"):
            assert got[direction][key] == pytest.approx(want[direction][key])
    assert got != retrieval_metrics(a, b)
