r"""Cross-modal (cross-view) retrieval: recall@K and median rank in both directions.

Row i of one tower's embeddings and row i of the other's come from the same item, so for a query
the one correct answer among the N candidates is the item with the same row index.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from contrastlab.evaluation._arrays import as_features, check_positive_int, l2_normalize


def match_ranks(queries, candidates, *, chunk: int = 1024, tie_tol: float = 1e-6,
                similarity=None) -> tuple[Tensor, Tensor]:
    r"""Where each query's own candidate lands when candidates are sorted by cosine similarity (or ``similarity``).

    For query i with :math:`g_i = |\{j : s_{ij} > s_{ii}\}|` better candidates and
    :math:`t_i = |\{j \ne i : s_{ij} = s_{ii}\}|` tied ones (within ``tie_tol``), ties are broken
    uniformly at random *in expectation*: the rank is uniform on :math:`g_i + 1, \dots, g_i + t_i + 1`.
    So an encoder that maps every item to one point scores chance (``K/N``), not 1.

    Args:
        queries: (N, D) embeddings of one tower.
        candidates: (N, D) embeddings of the other tower, row i paired with query row i.
        chunk: queries per block of similarities (memory ``chunk × N``).
        tie_tol: similarities within this distance of :math:`s_{ii}` count as ties.
        similarity: a learned coordination function ``similarity(queries, candidates) -> (n, N)`` to rank by
            instead of the cosine (e.g. a model's gated coordination); it gets the raw rows.

    Returns:
        ``(better, tied)``: :math:`g` and :math:`t`, both (N,) int64.

    Raises:
        ValueError: for a bad option or shapes that do not pair up.

    Example:
        >>> import torch
        >>> x = torch.eye(3)
        >>> match_ranks(x, x)[0].tolist()
        [0, 0, 0]
    """
    chunk = check_positive_int(chunk, "chunk")
    if tie_tol < 0:
        raise ValueError(f"tie_tol must be >= 0; got {tie_tol!r}")
    q, c = as_features(queries, name="queries"), as_features(candidates, name="candidates")
    if similarity is None:
        q, c = l2_normalize(q), l2_normalize(c)
    if q.shape != c.shape:
        raise ValueError(f"queries and candidates must have the same shape (N, D); got {tuple(q.shape)} and {tuple(c.shape)}")
    if similarity is None:
        return _ranks(lambda start, stop: q[start:stop] @ c.T, q.shape[0], chunk, tie_tol)
    with torch.no_grad():
        return _ranks(lambda start, stop: similarity(q[start:stop], c).float(), q.shape[0], chunk, tie_tol)


def _ranks(scores, n: int, chunk: int, tie_tol: float) -> tuple[Tensor, Tensor]:
    """``(better, tied)`` of :func:`match_ranks` from ``scores(start, stop)``: the queries' rows of similarities."""
    better = torch.empty(n, dtype=torch.int64)
    tied = torch.empty(n, dtype=torch.int64)
    for start in range(0, n, chunk):
        sims = scores(start, start + chunk)
        rows = torch.arange(sims.shape[0])
        own = sims[rows, rows + start].unsqueeze(1)
        better[start:start + sims.shape[0]] = (sims > own + tie_tol).sum(dim=1)
        tied[start:start + sims.shape[0]] = ((sims - own).abs() <= tie_tol).sum(dim=1) - 1
    return better, tied


def _direction_metrics(better: Tensor, tied: Tensor, ks: Sequence[int]) -> dict[str, float]:
    g, t = better.double(), tied.double()
    out = {f"R@{k}": float(((k - g) / (t + 1)).clamp(0.0, 1.0).mean()) for k in ks}
    out["median_rank"] = float(torch.quantile(g + 1 + t / 2, 0.5))  # the middle two averaged for even N
    out["mean_rank"] = float((g + 1 + t / 2).mean())
    return out


def retrieval_metrics(a, b, *, names: tuple[str, str] = ("a", "b"), ks: Sequence[int] = (1, 5, 10),
                      tie_tol: float = 1e-6, similarity=None) -> dict[str, dict[str, float]]:
    r"""Recall@K and median rank for retrieving b from a and a from b.

    With :math:`r_i` the rank of the correct candidate for query i (1 = first),

    .. math:: \mathrm{R@}K = \frac{1}{N} \sum_i \mathbb{1}[r_i \le K], \qquad
              \text{median rank} = \operatorname{median}_i r_i ,

    where ties are counted as in :func:`match_ranks` (expected recall under random tie-breaking,
    mid-rank for the median).

    References:
        Karpathy & Fei-Fei, "Deep Visual-Semantic Alignments for Generating Image Descriptions",
        CVPR 2015; Harwath et al., "Jointly Discovering Visual Objects and Spoken Words from Raw
        Sensory Input", ECCV 2018.

    Args:
        a: (N, D) embeddings of the first tower (e.g. images).
        b: (N, D) embeddings of the second tower (e.g. captions), row i paired with ``a[i]``.
        names: the two towers' names, used in the keys of the result.
        ks: the cut-offs K.
        tie_tol: see :func:`match_ranks`.
        similarity: a learned coordination function ``similarity(a_rows, b_rows) -> (n, m)`` to rank by instead
            of the cosine (its first argument is always a row of ``a``: b->a ranks by its transpose).

    Returns:
        ``{"a->b": {"R@1": ..., "R@5": ..., "R@10": ..., "median_rank": ..., "mean_rank": ...},
        "b->a": {...}}`` with the given names.

    Raises:
        ValueError: for mismatched shapes or a bad K.

    Example:
        >>> import torch
        >>> x = torch.randn(20, 8)
        >>> retrieval_metrics(x, x)["a->b"]["R@1"]
        1.0
    """
    if len(names) != 2 or names[0] == names[1]:
        raise ValueError(f"names must be two different tower names; got {names!r}")
    ks = [check_positive_int(k, "K") for k in ks]
    if similarity is None:
        fwd = match_ranks(a, b, tie_tol=tie_tol)
        bwd = match_ranks(b, a, tie_tol=tie_tol)
    else:  # a learned function costs far more than a product: score every pair once, read it both ways
        xa, xb = as_features(a, name="a"), as_features(b, name="b")
        if xa.shape != xb.shape:
            raise ValueError(f"a and b must have the same shape (N, D); got {tuple(xa.shape)} and {tuple(xb.shape)}")
        with torch.no_grad():
            scores = torch.cat([similarity(xa[s:s + 1024], xb).float() for s in range(0, xa.shape[0], 1024)])
        fwd = _ranks(lambda start, stop: scores[start:stop], scores.shape[0], 1024, tie_tol)
        bwd = _ranks(lambda start, stop: scores.T[start:stop], scores.shape[0], 1024, tie_tol)
    return {f"{names[0]}->{names[1]}": _direction_metrics(*fwd, ks),
            f"{names[1]}->{names[0]}": _direction_metrics(*bwd, ks)}
