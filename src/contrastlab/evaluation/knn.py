r"""k-nearest-neighbour search and classification on cosine similarity.

Two classification protocols share one neighbour search:

* **majority vote** over the k nearest neighbours (Wang & Isola report 5-NN);
* **weighted vote** of Wu et al. (2018): each of the k = 200 nearest training items votes for its
  class with weight :math:`\exp(s_j / \tau)`, :math:`s_j` its cosine similarity to the query and
  :math:`\tau = 0.07`.

The search runs in blocks of queries and keys, so memory stays at ``query_chunk × key_chunk``
similarities whatever the data size, or through faiss-cpu (``IndexFlatIP``, exact) when it is
installed. Both paths give the same neighbours.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from torch import Tensor

from contrastlab.evaluation._arrays import (
    as_features, as_labels, check_positive_float, check_positive_int, l2_normalize,
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
        import faiss  # noqa: F401
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


def _search_torch(q: Tensor, keys: Tensor, k: int, self_offset: int | None,
                  query_chunk: int, key_chunk: int) -> tuple[Tensor, Tensor]:
    n_q = q.shape[0]
    out_sim = torch.empty(n_q, k, dtype=q.dtype)
    out_idx = torch.empty(n_q, k, dtype=torch.int64)
    for start in range(0, n_q, query_chunk):
        qc = q[start:start + query_chunk]
        best_sim = torch.full((qc.shape[0], 0), float("-inf"), dtype=q.dtype)
        best_idx = torch.empty((qc.shape[0], 0), dtype=torch.int64)
        for kstart in range(0, keys.shape[0], key_chunk):
            block = qc @ keys[kstart:kstart + key_chunk].T
            if self_offset is not None:  # hide each query's own row
                rows = torch.arange(qc.shape[0])
                cols = rows + start + self_offset - kstart
                inside = (cols >= 0) & (cols < block.shape[1])
                block[rows[inside], cols[inside]] = float("-inf")
            local = torch.topk(block, min(k, block.shape[1]), dim=1)  # the block's best, then merge
            cand_sim = torch.cat([best_sim, local.values], dim=1)
            cand_idx = torch.cat([best_idx, local.indices + kstart], dim=1)
            top = torch.topk(cand_sim, min(k, cand_sim.shape[1]), dim=1)
            best_sim, best_idx = top.values, cand_idx.gather(1, top.indices)
        out_sim[start:start + qc.shape[0]] = best_sim
        out_idx[start:start + qc.shape[0]] = best_idx
    return out_sim, out_idx


def _search_faiss(q: Tensor, keys: Tensor, k: int, exclude_self: bool) -> tuple[Tensor, Tensor]:
    import faiss

    index = faiss.IndexFlatIP(keys.shape[1])
    index.add(np.ascontiguousarray(keys.numpy(), dtype=np.float32))
    extra = 1 if exclude_self else 0
    sim, idx = index.search(np.ascontiguousarray(q.numpy(), dtype=np.float32), k + extra)
    sim, idx = torch.from_numpy(sim), torch.from_numpy(idx).long()
    if exclude_self:  # drop the query itself, or the last candidate when it is not among them
        own = idx == torch.arange(q.shape[0]).unsqueeze(1)
        own[~own.any(dim=1), -1] = True
        keep = ~own
        sim = sim[keep].view(q.shape[0], k)
        idx = idx[keep].view(q.shape[0], k)
    return sim, idx


def nearest_neighbours(queries, keys=None, *, k: int = 5, backend: Backend = "auto",
                       query_chunk: int = 1024, key_chunk: int = 16384) -> tuple[Tensor, Tensor]:
    r"""The k keys most cosine-similar to each query, most similar first.

    .. math:: s_{ij} = \frac{q_i^\top x_j}{\lVert q_i \rVert \, \lVert x_j \rVert}

    Args:
        queries: (Q, D) query features (numpy or torch).
        keys: (N, D) features to search; ``None`` searches the queries themselves and excludes each
            query from its own neighbours (leave-one-out).
        k: neighbours per query, at most N (N − 1 for a self-search).
        backend: ``"torch"`` (blocked matrix products), ``"faiss"`` (exact inner-product index) or
            ``"auto"`` (faiss when installed).
        query_chunk: queries per block (torch backend).
        key_chunk: keys per block (torch backend); memory is about ``query_chunk × key_chunk``
            floats.

    Returns:
        ``(similarities, indices)``, both (Q, k): cosine similarities in descending order and the
        row indices of the keys.

    Raises:
        ValueError: for a bad option, mismatched widths, or k larger than the number of keys.

    Example:
        >>> import torch
        >>> x = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
        >>> nearest_neighbours(x, k=1)[1].flatten().tolist()
        [1, 0, 1]
    """
    k = check_positive_int(k, "k")
    query_chunk = check_positive_int(query_chunk, "query_chunk")
    key_chunk = check_positive_int(key_chunk, "key_chunk")
    backend = _resolve_backend(backend)
    q = l2_normalize(as_features(queries, name="queries"))
    exclude_self = keys is None
    x = q if exclude_self else l2_normalize(as_features(keys, name="keys"))
    if x.shape[1] != q.shape[1]:
        raise ValueError(f"queries and keys differ in width: {q.shape[1]} vs {x.shape[1]}")
    available = x.shape[0] - (1 if exclude_self else 0)
    if k > available:
        raise ValueError(f"k={k} is larger than the {available} keys available")
    if backend == "faiss":
        return _search_faiss(q, x, k, exclude_self)
    return _search_torch(q, x, k, 0 if exclude_self else None, query_chunk, key_chunk)


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
