import math

import numpy as np
import pytest
import torch
from sklearn.neighbors import KNeighborsClassifier

from contrastlab.evaluation import faiss_available, knn_classify, knn_evaluate, nearest_neighbours, vote

BACKENDS = ["torch", pytest.param("faiss", marks=pytest.mark.skipif(not faiss_available(), reason="no faiss"))]


def brute_force(queries, keys, k, exclude_self=False):
    """Cosine neighbours by plain loops in float64."""
    q, x = queries.double().tolist(), keys.double().tolist()
    out_idx, out_sim = [], []
    for i, qi in enumerate(q):
        sims = []
        for j, xj in enumerate(x):
            if exclude_self and i == j:
                continue
            dot = sum(a * b for a, b in zip(qi, xj))
            sims.append((dot / (math.sqrt(sum(a * a for a in qi)) * math.sqrt(sum(b * b for b in xj))), j))
        sims.sort(key=lambda t: -t[0])
        out_sim.append([s for s, _ in sims[:k]])
        out_idx.append([j for _, j in sims[:k]])
    return torch.tensor(out_sim, dtype=torch.float64), torch.tensor(out_idx)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("k", [1, 4, 30])
def test_neighbours_equal_brute_force(backend, k):
    g = torch.Generator().manual_seed(k)
    keys, queries = torch.randn(90, 6, generator=g) * 3, torch.randn(23, 6, generator=g)
    ref_sim, ref_idx = brute_force(queries, keys, k)
    sim, idx = nearest_neighbours(queries, keys, k=k, backend=backend, query_chunk=5, key_chunk=17)
    assert torch.equal(idx, ref_idx)
    torch.testing.assert_close(sim.double(), ref_sim, atol=1e-6, rtol=0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_self_search_excludes_each_query(backend):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(40, 5, generator=g)
    ref_sim, ref_idx = brute_force(x, x, 7, exclude_self=True)
    sim, idx = nearest_neighbours(x, k=7, backend=backend, query_chunk=6, key_chunk=9)
    assert torch.equal(idx, ref_idx)
    assert not (idx == torch.arange(40)[:, None]).any()


@pytest.mark.skipif(not faiss_available(), reason="no faiss")
def test_faiss_and_torch_agree_on_a_larger_set():
    g = torch.Generator().manual_seed(1)
    x, q = torch.randn(3000, 32, generator=g), torch.randn(300, 32, generator=g)
    a = nearest_neighbours(q, x, k=50, backend="torch", query_chunk=128, key_chunk=700)
    b = nearest_neighbours(q, x, k=50, backend="faiss")
    assert torch.equal(a[1], b[1])
    torch.testing.assert_close(a[0], b[0], atol=1e-5, rtol=0)


def test_votes():
    assert vote(torch.tensor([[2, 2, 1], [0, 1, 1]]), num_classes=3).tolist() == [2, 1]
    assert vote(torch.tensor([[1, 0]]), num_classes=2).tolist() == [0]  # tie: smallest class
    # weighted: one very similar neighbour outweighs two less similar ones at a low temperature
    labels, sims = torch.tensor([[0, 1, 1]]), torch.tensor([[0.99, 0.80, 0.79]])
    assert vote(labels, sims, num_classes=2, temperature=0.07).tolist() == [0]
    assert vote(labels, sims, num_classes=2, temperature=10.0).tolist() == [1]
    with pytest.raises(ValueError, match="neighbour_sims"):
        vote(labels, num_classes=2, temperature=0.1)


def weighted_reference(train, y_train, test, k, tau):
    sims, idx = brute_force(test, train, k)
    preds = []
    for s_row, i_row in zip(sims.tolist(), idx.tolist()):
        scores = {}
        for s, i in zip(s_row, i_row):
            scores[int(y_train[i])] = scores.get(int(y_train[i]), 0.0) + math.exp(s / tau)
        preds.append(max(sorted(scores), key=lambda c: scores[c]))
    return np.array(preds)


@pytest.mark.parametrize("backend", BACKENDS)
def test_accuracies_equal_references(backend):
    g = torch.Generator().manual_seed(2)
    centres = torch.randn(4, 8, generator=g)
    y_train, y_test = torch.randint(0, 4, (300,), generator=g), torch.randint(0, 4, (60,), generator=g)
    train = centres[y_train] + 0.9 * torch.randn(300, 8, generator=g)
    test = centres[y_test] + 0.9 * torch.randn(60, 8, generator=g)
    out = knn_evaluate(train, y_train, test, y_test, backend=backend,
                       protocols={"knn5": (5, None), "knn200": (200, 0.07), "knn50": (50, 0.5)})
    sk = KNeighborsClassifier(n_neighbors=5, metric="cosine", algorithm="brute").fit(train.numpy(), y_train.numpy())
    assert out["knn5"] == pytest.approx(float((sk.predict(test.numpy()) == y_test.numpy()).mean()))
    for name, k, tau in (("knn200", 200, 0.07), ("knn50", 50, 0.5)):
        ref = weighted_reference(train, y_train, test, k, tau)
        assert out[name] == pytest.approx(float((ref == y_test.numpy()).mean()))
    assert out["knn5"] > 0.5  # well above chance (0.25)


def test_defaults_and_small_training_sets():
    x, y = torch.randn(50, 3), torch.randint(0, 3, (50,))
    out = knn_evaluate(x[:30], y[:30], x[30:], y[30:])  # 200 > 30 training items: k lowered to 30
    assert set(out) == {"knn5_accuracy", "knn200_accuracy"}
    assert knn_classify(x, y, x, y, k=1, backend="torch") == 1.0


def test_errors_name_the_bad_value():
    x = torch.randn(10, 3)
    with pytest.raises(ValueError, match="k=11"):
        nearest_neighbours(x, x, k=11)
    with pytest.raises(ValueError, match="k=10"):
        nearest_neighbours(x, k=10)  # only 9 others in a self-search
    with pytest.raises(ValueError, match="'annoy'"):
        nearest_neighbours(x, x, k=1, backend="annoy")
    with pytest.raises(ValueError, match="width"):
        nearest_neighbours(x, torch.randn(5, 4), k=1)
    with pytest.raises(ValueError, match="-1"):
        vote(torch.zeros(2, 2, dtype=torch.long), torch.zeros(2, 2), num_classes=2, temperature=-1)


# ---- the blocked search against the full similarity matrix ------------------------------------------------------

def exact_unit_rows(n, d, seed):
    """Rows with four entries of ±1/2 (unit norm): every cosine is a multiple of 1/4, computed exactly, so ties
    are real ties whatever the summation order."""
    rng = np.random.default_rng(seed)
    x = np.zeros((n, d), dtype=np.float32)
    for i in range(n):
        x[i, rng.choice(d, 4, replace=False)] = rng.choice([-0.5, 0.5], 4)
    return x


def full_matrix_reference(queries, keys, k, exclude_self=False):
    """Neighbours from the whole (Q, N) matrix: descending similarity, then ascending index."""
    q = queries / np.linalg.norm(queries, axis=1, keepdims=True).clip(1e-12)
    x = keys / np.linalg.norm(keys, axis=1, keepdims=True).clip(1e-12)
    sims = q.astype(np.float64) @ x.astype(np.float64).T
    if exclude_self:
        np.fill_diagonal(sims, -np.inf)
    order = np.lexsort((np.broadcast_to(np.arange(x.shape[0]), sims.shape), -sims), axis=1)[:, :k]
    return np.take_along_axis(sims, order, axis=1), order


@pytest.mark.parametrize("n_keys, n_queries, k, query_chunk, key_chunk", [
    (97, 31, 5, 7, 13),        # nothing a multiple of anything
    (97, 31, 97, 10, 40),      # k = N: every key, in order
    (97, 31, 96, None, None),  # k close to N, default blocks
    (300, 64, 200, 64, 64),    # k larger than a key block
    (1000, 3, 1, 2, 999),      # one key left over in the last block
    (50, 50, 30, 1, 1),        # one query and one key per block
])
def test_blocked_search_equals_the_full_matrix(n_keys, n_queries, k, query_chunk, key_chunk):
    keys, queries = exact_unit_rows(n_keys, 8, 0), exact_unit_rows(n_queries, 8, 1)
    ref_sim, ref_idx = full_matrix_reference(queries, keys, k)
    sim, idx = nearest_neighbours(queries, keys, k=k, backend="torch", query_chunk=query_chunk, key_chunk=key_chunk)
    np.testing.assert_array_equal(idx.numpy(), ref_idx)  # ties included: smaller index first
    np.testing.assert_array_equal(sim.double().numpy(), ref_sim)


@pytest.mark.parametrize("n, k, query_chunk, key_chunk", [(61, 5, 8, 16), (61, 60, 7, 9), (200, 199, None, None),
                                                           (130, 40, 64, 50)])
def test_blocked_self_search_equals_the_full_matrix(n, k, query_chunk, key_chunk):
    x = exact_unit_rows(n, 6, 2)
    x[10:20] = x[0]  # duplicate rows: their similarities tie exactly, also with their own copies
    ref_sim, ref_idx = full_matrix_reference(x, x, k, exclude_self=True)
    sim, idx = nearest_neighbours(x, k=k, backend="torch", query_chunk=query_chunk, key_chunk=key_chunk)
    np.testing.assert_array_equal(idx.numpy(), ref_idx)
    np.testing.assert_array_equal(sim.double().numpy(), ref_sim)
    assert not (idx == torch.arange(n)[:, None]).any()


def test_ties_are_resolved_by_index_whatever_the_blocks_and_threads():
    # 2,100 x 2,100 similarities: above the size at which the search runs query blocks on several threads
    keys = np.repeat(exact_unit_rows(300, 5, 3), 7, axis=0)  # every key 7 times
    keys[::50] = 0.0  # zero rows: similarity 0 to everything
    queries = exact_unit_rows(2100, 5, 4)
    ref_sim, ref_idx = full_matrix_reference(queries, keys, 20)
    before = torch.get_num_threads()
    try:
        for threads, query_chunk, key_chunk in ((1, None, None), (2, 100, 333), (2, 2100, 64)):
            torch.set_num_threads(threads)
            sim, idx = nearest_neighbours(queries, keys, k=20, backend="torch", query_chunk=query_chunk,
                                          key_chunk=key_chunk)
            np.testing.assert_array_equal(idx.numpy(), ref_idx)
            np.testing.assert_array_equal(sim.double().numpy(), ref_sim)
    finally:
        torch.set_num_threads(before)


def test_blocked_search_on_random_features_matches_float64_up_to_rounding():
    rng = np.random.default_rng(5)
    keys, queries = rng.normal(size=(5000, 24)).astype(np.float32), rng.normal(size=(900, 24)).astype(np.float32)
    for k in (5, 200):
        ref_sim, ref_idx = full_matrix_reference(queries, keys, k)
        sim, idx = nearest_neighbours(queries, keys, k=k, backend="torch")
        np.testing.assert_allclose(sim.numpy(), ref_sim, atol=2e-6, rtol=0)
        assert (idx.numpy() == ref_idx).mean() > 0.999  # float32 rounding may swap near-ties
        assert np.all(np.diff(sim.numpy(), axis=1) <= 0)


def test_chunk_options_are_checked():
    x = torch.randn(10, 3)
    with pytest.raises(ValueError, match="query_chunk"):
        nearest_neighbours(x, k=2, query_chunk=0)
    with pytest.raises(ValueError, match="key_chunk"):
        nearest_neighbours(x, k=2, key_chunk=-3)
