r"""k-nearest-neighbour search and classification on cosine similarity.

Two classification protocols share one neighbour search:

* **majority vote** over the k nearest neighbours (Wang & Isola report 5-NN);
* **weighted vote** of Wu et al. (2018): each of the k = 200 nearest training items votes for its
  class with weight :math:`\exp(s_j / \tau)`, :math:`s_j` its cosine similarity to the query and
  :math:`\tau = 0.07`.

The search is exact, through faiss-cpu (``IndexFlatIP``) when it is installed, else through the
built-in blocked search (``backend="torch"``): blocks of queries × keys, one BLAS matrix product each
into a reused buffer, so memory stays at ``query_chunk × key_chunk`` similarities per thread whatever
the data size. Selecting the k best of a block costs little next to the product: each query keeps the
k-th best similarity seen so far as a threshold, the block's columns are cut into small groups whose
maxima take one vectorised pass, and only groups whose maximum beats the threshold are read again.
Its neighbours are those of the full similarity matrix, in descending similarity; equal similarities
rank by the smaller key index, whatever the block sizes or threads. On 100,000 keys × 10,000 queries
(D = 128) it runs within 1.2× of faiss's flat index (``benchmarks/knn.py``).
"""

from __future__ import annotations

import contextlib
import importlib
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from contrastlab.evaluation._arrays import (
    as_features, as_labels, check_positive_float, check_positive_int,
)

Backend = Literal["auto", "torch", "faiss"]


def faiss_available() -> bool:
    """Whether faiss-cpu can be imported (then ``backend="auto"`` uses it).

    Returns:
        ``True`` when ``import faiss`` works.

    Example:
        >>> faiss_available() in (True, False)
        True
    """
    try:
        importlib.import_module("faiss")
    except ImportError:
        return False
    return True


def _resolve_backend(backend: str) -> str:
    if backend not in ("auto", "torch", "faiss"):
        raise ValueError(f"backend must be 'auto', 'torch' or 'faiss'; got {backend!r}")
    if backend == "auto":
        return "faiss" if faiss_available() else "torch"
    if backend == "faiss" and not faiss_available():
        raise ValueError("backend='faiss' but faiss-cpu is not installed (pip install faiss-cpu)")
    return backend


# ---- the blocked exact search ------------------------------------------------------------------
#
# Per query chunk and key block: one BLAS product S = Q_c K_b^T into a reused buffer, then a cheap
# filter.  Every query keeps a running threshold t (the k-th best similarity among the keys already
# seen) and a pool of candidate keys.  The block's columns are split into ``group`` interleaved
# groups (column j belongs to group j mod (width / group)); their maxima come from ``group``
# elementwise maxima of contiguous slices (one pass over S, vectorised), and only groups whose
# maximum beats t are opened.  The first block of a chunk (t = -inf) gets a threshold from the k-th
# largest group maximum (k groups each hold an element at least that large).  A pool is cut back to
# its k best (``np.partition``) only when it overflows, and then t rises.
#
# Neighbours are ranked by the int64 key (sortable bits of the float32 similarity, then the
# complement of the key index): distinct keys for every candidate, so the selection is exact and
# equal similarities rank by the smaller key index, whatever the block sizes.

#: Default block shape: 256 queries x 16,384 keys = 16 MiB of float32 similarities per thread (twice the keys
#: for k > 16: fewer, wider blocks give the threshold a better start).
_QUERY_CHUNK, _KEY_CHUNK = 256, 16384
_I64_MIN = np.iinfo(np.int64).min
_LOW = np.int64(0xFFFFFFFF)
_NEG = np.float32(-np.inf)


def _to_keys(vals: np.ndarray, cols: np.ndarray) -> np.ndarray:
    bits = (vals + np.float32(0.0)).view(np.int32)  # + 0.0 turns -0.0 into +0.0
    order = np.where(bits < 0, bits ^ np.int32(0x7FFFFFFF), bits).astype(np.int64)
    return (order << 32) + (_LOW - cols)


def _from_keys(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = (keys >> 32).astype(np.int32)
    vals = np.where(order < 0, order ^ np.int32(0x7FFFFFFF), order).view(np.float32)
    return vals, _LOW - (keys & _LOW)


def _thresholds(kth_keys: np.ndarray) -> np.ndarray:
    vals = _from_keys(kth_keys)[0]
    return np.where(kth_keys == _I64_MIN, _NEG, vals)


def _group_size(k: int) -> int:
    return 32 if k <= 16 else 16


class _Chunk:
    """The scratch space of one worker: a similarity block and its group maxima."""

    def __init__(self, rows: int, width: int, group: int):
        self.sims = np.empty(rows * width, dtype=np.float32)
        self.gmax = np.empty(rows * (width // group), dtype=np.float32)


def _search_chunk(q: np.ndarray, keys: np.ndarray, k: int, start: int, self_search: bool,
                  key_chunk: int, group: int, spare: int, work: _Chunk) -> np.ndarray:
    """The k best keys (int64 ranking keys, unsorted) of queries ``q`` = rows ``start...`` of the queries."""
    r, n = q.shape[0], keys.shape[0]
    pool = np.full((r, k + spare), _I64_MIN, dtype=np.int64)
    fill = np.zeros(r, dtype=np.int64)
    t = np.full(r, _NEG, dtype=np.float32)
    for ks in range(0, n, key_chunk):
        w = min(key_chunk, n - ks)
        wp = -(-w // group) * group
        ng = wp // group
        s = work.sims[:r * wp].reshape(r, wp)
        g = work.gmax[:r * ng].reshape(r, ng)
        for i in range(group):  # slice i holds column i of every group: its maximum is taken while in cache
            c0, c1 = i * ng, min((i + 1) * ng, w)
            part = s[:, c0:c0 + ng]
            if c1 > c0:
                np.matmul(q, keys[ks + c0:ks + c1].T, out=part[:, :c1 - c0])
            if c1 - c0 < ng:
                part[:, max(c1 - c0, 0):] = _NEG
            if self_search:  # hide each query's own row
                lo, hi = max(start, ks + c0), min(start + r, ks + c1)
                if lo < hi:
                    s[np.arange(lo - start, hi - start), np.arange(lo - ks, hi - ks)] = _NEG
            if i == 1:
                np.maximum(s[:, :ng], part, out=g)
            elif i > 1:
                np.maximum(g, part, out=g)
        if group == 1:
            np.copyto(g, s)
        te = t
        hot = g > t[:, None]
        first = ks == 0
        if first or 2 * k * r < np.count_nonzero(hot):
            # a threshold from this block alone: k groups (or k elements) reach their k-th largest maximum
            boot = np.arange(r) if first else np.flatnonzero(hot.sum(axis=1) > 2 * k)
            src = g[boot] if ng >= k else s[boot] if wp >= k else None
            if boot.size and src is not None:
                kth = np.partition(src, src.shape[1] - k, axis=1)[:, src.shape[1] - k]
                te = t.copy()
                te[boot] = np.maximum(t[boot], np.nextafter(kth, _NEG))
                hot[boot] = g[boot] > te[boot, None]
        opened = np.flatnonzero(hot)
        if opened.size == 0:
            continue
        ri, gi = np.divmod(opened, ng)
        vals = s.reshape(r, group, ng)[ri, :, gi]  # (groups, group)
        e = np.flatnonzero(vals > te[ri, None])
        if e.size == 0:
            continue
        ci, tj = np.divmod(e, group)
        crow = ri[ci]  # sorted: groups in row-major order, elements in order within them
        ckey = _to_keys(vals.reshape(-1)[e], tj * ng + gi[ci] + ks)
        m = np.bincount(crow, minlength=r)
        over = fill + m > spare
        if over.any():
            orows = np.flatnonzero(over)
            sel = over[crow]
            ocrow, ockey = crow[sel], ckey[sel]
            mo = m[orows]
            local = np.empty(r, dtype=np.int64)
            local[orows] = np.arange(orows.size)
            li = local[ocrow]
            pos = np.arange(ocrow.size) - (np.cumsum(mo) - mo)[li]
            merged = np.full((orows.size, k + spare + int(mo.max())), _I64_MIN, dtype=np.int64)
            merged[:, :k + spare] = pool[orows]
            merged[li, k + spare + pos] = ockey
            width = merged.shape[1]
            top = np.partition(merged, width - k, axis=1)[:, width - k:]
            pool[orows, :k] = top
            pool[orows, k:] = _I64_MIN
            fill[orows] = 0
            t[orows] = _thresholds(top.min(axis=1))
            keep = ~sel
            crow, ckey = crow[keep], ckey[keep]
            m[orows] = 0
        if crow.size:
            pos = np.arange(crow.size) - (np.cumsum(m) - m)[crow]
            pool[crow, k + fill[crow] + pos] = ckey
            fill += m
    width = pool.shape[1]
    return np.partition(pool, width - k, axis=1)[:, width - k:] if width > k else pool


def _blas_threads(n: int):
    """Limit numpy's BLAS to ``n`` threads inside the block (threadpoolctl, a scikit-learn dependency)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - scikit-learn brings it
        return contextlib.nullcontext()
    return threadpool_limits(limits=n, user_api="blas")


#: Up to this many similarities a search runs on the calling thread with one BLAS thread; up to ``_TINY``, with the
#: BLAS as it is set (limiting it costs more than such a search).
_SMALL, _TINY = 1 << 22, 1 << 16


def _search_blocked(qn: np.ndarray, xn: np.ndarray, k: int, self_search: bool, query_chunk: int | None,
                    key_chunk: int | None) -> tuple[Tensor, Tensor]:
    nq, n = qn.shape[0], xn.shape[0]
    if n >= 2**32:
        raise ValueError(f"the torch backend searches at most 2**32 - 1 keys; got {n}")
    group = _group_size(k)
    spare = max(2 * k, 64)
    qc = query_chunk or _QUERY_CHUNK
    # >= 8k groups per block keeps the group filter selective
    kc = key_chunk or max(_KEY_CHUNK * (1 if k <= 16 else 2), 8 * group * k)
    starts = list(range(0, nq, qc))
    threads = max(1, torch.get_num_threads())
    small = nq * n <= _SMALL  # one worker and one BLAS thread: more would mostly wait on each other
    workers = 1 if small else min(threads, len(starts))
    out = np.empty((nq, k), dtype=np.int64)
    width = -(-min(kc, n) // group) * group
    lock = threading.Lock()
    todo = iter(starts)

    def worker() -> None:
        work = _Chunk(min(qc, nq), width, group)
        while True:
            with lock:
                start = next(todo, None)
            if start is None:
                return
            stop = min(start + qc, nq)
            out[start:stop] = _search_chunk(qn[start:stop], xn, k, start, self_search, kc, group, spare, work)

    with contextlib.nullcontext() if nq * n <= _TINY else _blas_threads(1 if small else max(1, threads // workers)):
        if workers == 1:
            worker()
        else:
            with ThreadPoolExecutor(workers) as pool:
                for f in [pool.submit(worker) for _ in range(workers)]:
                    f.result()
    sims, idx = _from_keys(np.sort(out, axis=1)[:, ::-1])
    return torch.from_numpy(np.ascontiguousarray(sims)), torch.from_numpy(np.ascontiguousarray(idx))


def _unit_rows(x: Tensor) -> np.ndarray:
    """Rows scaled to unit norm (rows of zeros stay zero), float32 C-contiguous, computed in numpy: one thread,
    no temporary the size of ``x``."""
    a = np.ascontiguousarray(x.numpy(), dtype=np.float32)
    norms = np.sqrt(np.einsum("ij,ij->i", a, a))
    return a / np.maximum(norms, np.float32(1e-12))[:, None]


def _search_faiss(q: np.ndarray, keys: np.ndarray, k: int, exclude_self: bool) -> tuple[Tensor, Tensor]:
    import faiss

    index = faiss.IndexFlatIP(keys.shape[1])
    index.add(keys)
    extra = 1 if exclude_self else 0
    sim, idx = index.search(q, k + extra)
    sim, idx = torch.from_numpy(sim), torch.from_numpy(idx).long()
    if exclude_self:  # drop the query itself, or the last candidate when it is not among them
        own = idx == torch.arange(q.shape[0]).unsqueeze(1)
        own[~own.any(dim=1), -1] = True
        keep = ~own
        sim = sim[keep].view(q.shape[0], k)
        idx = idx[keep].view(q.shape[0], k)
    return sim, idx


def nearest_neighbours(queries, keys=None, *, k: int = 5, backend: Backend = "auto",
                       query_chunk: int | None = None, key_chunk: int | None = None) -> tuple[Tensor, Tensor]:
    r"""The k keys most cosine-similar to each query, most similar first.

    .. math:: s_{ij} = \frac{q_i^\top x_j}{\lVert q_i \rVert \, \lVert x_j \rVert}

    Args:
        queries: (Q, D) query features (numpy or torch).
        keys: (N, D) features to search; ``None`` searches the queries themselves and excludes each
            query from its own neighbours (leave-one-out).
        k: neighbours per query, at most N (N − 1 for a self-search).
        backend: ``"torch"`` (the built-in blocked search), ``"faiss"`` (exact inner-product index) or
            ``"auto"`` (faiss when installed).
        query_chunk: queries per block (built-in search); ``None``: 256.
        key_chunk: keys per block (built-in search); ``None``: 16,384, 32,768 for k > 16. Memory is
            about ``query_chunk × key_chunk`` floats per thread; the built-in search runs query blocks
            on ``torch.get_num_threads()`` threads.

    Returns:
        ``(similarities, indices)``, both (Q, k): cosine similarities in descending order and the
        row indices of the keys. The built-in search ranks equal similarities by the smaller index.

    Raises:
        ValueError: for a bad option, mismatched widths, or k larger than the number of keys.

    Example:
        >>> import torch
        >>> x = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
        >>> nearest_neighbours(x, k=1)[1].flatten().tolist()
        [1, 0, 1]
    """
    k = check_positive_int(k, "k")
    query_chunk = None if query_chunk is None else check_positive_int(query_chunk, "query_chunk")
    key_chunk = None if key_chunk is None else check_positive_int(key_chunk, "key_chunk")
    backend = _resolve_backend(backend)
    q = _unit_rows(as_features(queries, name="queries"))
    exclude_self = keys is None
    x = q if exclude_self else _unit_rows(as_features(keys, name="keys"))
    if x.shape[1] != q.shape[1]:
        raise ValueError(f"queries and keys differ in width: {q.shape[1]} vs {x.shape[1]}")
    available = x.shape[0] - (1 if exclude_self else 0)
    if k > available:
        raise ValueError(f"k={k} is larger than the {available} keys available")
    if backend == "faiss":
        return _search_faiss(q, x, k, exclude_self)
    return _search_blocked(q, x, k, exclude_self, query_chunk, key_chunk)


def vote(neighbour_labels, neighbour_sims=None, *, num_classes: int, temperature: float | None = None) -> Tensor:
    r"""Class predictions from the labels of each query's neighbours.

    Majority vote when ``temperature`` is ``None``; otherwise neighbour j adds
    :math:`\exp(s_j / \tau)` to its class (Wu et al. 2018). Ties go to the smallest class index, as
    in scikit-learn's ``KNeighborsClassifier``.

    Args:
        neighbour_labels: (Q, k) int64 class indices in ``[0, num_classes)``.
        neighbour_sims: (Q, k) cosine similarities; needed with a temperature.
        num_classes: the number of classes C.
        temperature: τ of the weighted vote, or ``None`` for a majority vote.

    Returns:
        (Q,) int64 predicted class indices.

    Raises:
        ValueError: for a bad option or missing similarities.

    Example:
        >>> import torch
        >>> vote(torch.tensor([[1, 1, 0]]), num_classes=2).tolist()
        [1]
    """
    num_classes = check_positive_int(num_classes, "num_classes")
    labels = torch.as_tensor(neighbour_labels, dtype=torch.int64)
    if temperature is None:
        weights = torch.ones(labels.shape, dtype=torch.float64)
    else:
        temperature = check_positive_float(temperature, "temperature")
        if neighbour_sims is None:
            raise ValueError("a weighted vote (temperature set) needs neighbour_sims")
        sims = torch.as_tensor(neighbour_sims, dtype=torch.float64)
        weights = torch.exp((sims - 1.0) / temperature)  # shift by the largest possible cosine: no overflow
    scores = torch.zeros(labels.shape[0], num_classes, dtype=torch.float64)
    scores.scatter_add_(1, labels, weights)
    return scores.argmax(dim=1)  # first maximum = smallest class index on ties


def knn_classify(train_features, train_labels, test_features, test_labels, *, k: int = 5,
                 temperature: float | None = None, backend: Backend = "auto") -> float:
    r"""Accuracy of k-NN classification of the test items by the training items (cosine).

    Args:
        train_features: (N, D) features of the labelled training items.
        train_labels: (N,) integer labels.
        test_features: (M, D) features to classify.
        test_labels: (M,) integer labels.
        k: neighbours per query.
        temperature: ``None`` for a majority vote, τ for Wu et al.'s weighted vote.
        backend: see :func:`nearest_neighbours`.

    Returns:
        Accuracy in [0, 1].

    Raises:
        ValueError: for a bad option or mismatched shapes.

    Example:
        >>> import torch
        >>> x = torch.randn(30, 4); y = (x[:, 0] > 0).long()
        >>> knn_classify(x, y, x, y, k=1)
        1.0
    """
    return knn_evaluate(train_features, train_labels, test_features, test_labels,
                        protocols={"acc": (k, temperature)}, backend=backend)["acc"]


def knn_evaluate(train_features, train_labels, test_features, test_labels, *,
                 protocols: dict[str, tuple[int, float | None]] | None = None,
                 backend: Backend = "auto") -> dict[str, float]:
    r"""Several k-NN accuracies from one neighbour search (the largest k is searched once).

    The default protocols are ``{"knn5_accuracy": (5, None), "knn200_accuracy": (200, 0.07)}``: a
    5-NN majority vote and Wu et al.'s weighted 200-NN vote. A k larger than the training set is
    lowered to its size.

    Args:
        train_features: (N, D) features of the labelled training items.
        train_labels: (N,) integer labels.
        test_features: (M, D) features to classify.
        test_labels: (M,) integer labels.
        protocols: a name → ``(k, temperature or None)`` mapping.
        backend: see :func:`nearest_neighbours`.

    Returns:
        A name → accuracy mapping.

    Raises:
        ValueError: for a bad option or mismatched shapes.

    References:
        Wu, Xiong, Yu & Lin, "Unsupervised Feature Learning via Non-Parametric Instance
        Discrimination", CVPR 2018.

    Example:
        >>> import torch
        >>> x = torch.randn(300, 4); y = (x[:, 0] > 0).long()
        >>> sorted(knn_evaluate(x[:200], y[:200], x[200:], y[200:]))
        ['knn200_accuracy', 'knn5_accuracy']
    """
    protocols = protocols if protocols is not None else {"knn5_accuracy": (5, None), "knn200_accuracy": (200, 0.07)}
    if not protocols:
        raise ValueError("protocols must name at least one (k, temperature) pair; got {}")
    xtr = as_features(train_features, name="train_features")
    xte = as_features(test_features, name="test_features")
    ytr = as_labels(train_labels, xtr.shape[0], name="train_labels")
    yte = as_labels(test_labels, xte.shape[0], name="test_labels")
    classes, ytr_idx = np.unique(ytr, return_inverse=True)
    ks = {name: min(check_positive_int(k, f"k of {name!r}"), xtr.shape[0]) for name, (k, _) in protocols.items()}
    sims, idx = nearest_neighbours(xte, xtr, k=max(ks.values()), backend=backend)
    neighbour_labels = torch.from_numpy(ytr_idx)[idx]
    out = {}
    for name, (_, temperature) in protocols.items():
        k = ks[name]
        pred = vote(neighbour_labels[:, :k], sims[:, :k], num_classes=len(classes), temperature=temperature)
        out[name] = float(np.mean(classes[pred.numpy()] == yte))
    return out
