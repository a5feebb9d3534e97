r"""How alike are two representations of the same items? Linear CKA, mutual k-NN alignment and SVCCA.

All three take two feature matrices whose rows are the same N items (widths may differ) and are
invariant to an orthogonal transform and an isotropic rescaling of either representation; CKA and
SVCCA (and mutual k-NN with its default centring) are also invariant to a translation.

* :func:`linear_cka`: centred kernel alignment with a linear kernel, biased or debiased. Computed
  from :math:`D \times D` products in O(N·D²) time, never an N × N Gram matrix (unless D > N, when
  the Gram matrices are the smaller ones).
* :func:`mutual_knn`: the share of each item's k nearest neighbours that the two spaces agree on.
* :func:`svcca`: canonical correlations between the leading singular directions of each.
* :func:`compare_representations`: all three in one JSON-ready dict, on a seeded subset of rows
  when N is large.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from contrastlab.evaluation._arrays import as_features, check_positive_int
from contrastlab.evaluation.information import canonical_correlations
from contrastlab.evaluation.knn import nearest_neighbours


def _pair(x, y) -> tuple[np.ndarray, np.ndarray]:
    """``x`` and ``y`` as float64 numpy arrays with the same number of rows."""
    a = as_features(x, name="x", dtype=torch.float64).numpy()
    b = as_features(y, name="y", dtype=torch.float64).numpy()
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"x and y must have the same number of rows (items); got {a.shape[0]} and {b.shape[0]}")
    return a, b


def _center(a: np.ndarray) -> np.ndarray:
    return a - a.mean(axis=0, keepdims=True)


def _trace_kl(a: np.ndarray, b: np.ndarray) -> float:
    r""":math:`\operatorname{tr}(KL) = \lVert A^\top B \rVert_F^2` with K = AAᵀ, L = BBᵀ, by the cheaper route."""
    n, p, q = a.shape[0], a.shape[1], b.shape[1]
    if p * q <= n * (p + q):  # (p × q) cross-product: O(N p q)
        return float(np.square(a.T @ b).sum())
    return float(((a @ a.T) * (b @ b.T)).sum())  # D > N: the N × N Gram matrices are smaller


class _GramStats:
    r"""What the unbiased HSIC needs of :math:`K = AA^\top` without forming it.

    ``diag`` is :math:`\operatorname{diag}(K)` (squared row norms), ``row`` is :math:`\tilde K 1 =
    A(A^\top 1) - \operatorname{diag}(K)` and ``total`` is :math:`1^\top \tilde K 1 = \lVert A^\top 1
    \rVert^2 - \operatorname{tr} K`, with :math:`\tilde K` the Gram matrix with its diagonal set to 0.
    """

    def __init__(self, a: np.ndarray):
        s = a.sum(axis=0)
        self.diag = np.einsum("ij,ij->i", a, a)
        self.row = a @ s - self.diag
        self.total = float(s @ s - self.diag.sum())


def _hsic_unbiased(n: int, sa: _GramStats, sb: _GramStats, tr_kl: float) -> float:
    """Song et al.'s HSIC_1 from the closed-form Gram statistics (see :func:`linear_cka`)."""
    tr_tilde = tr_kl - float(sa.diag @ sb.diag)  # tr(K̃ L̃) = tr(KL) − Σ_i K_ii L_ii
    value = tr_tilde + sa.total * sb.total / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * float(sa.row @ sb.row)
    return value / (n * (n - 3))


def _cka_both(a: np.ndarray, b: np.ndarray, *, debiased: bool = True, biased: bool = True) -> dict[str, float]:
    """Debiased and/or biased linear CKA of two float64 arrays with equal row counts."""
    n = a.shape[0]
    if debiased and n < 4:
        raise ValueError(f"debiased linear CKA needs at least 4 items (rows); got {n}")
    if n < 2:
        raise ValueError(f"linear CKA needs at least 2 items (rows); got {n}")
    a, b = _center(a), _center(b)
    for name, m in (("x", a), ("y", b)):
        if not np.any(m):
            raise ValueError(f"{name} is the same for every item (zero after centring); CKA is undefined")
    kl, kk, ll = _trace_kl(a, b), _trace_kl(a, a), _trace_kl(b, b)
    out = {}
    if biased:  # centred features: tr(KHLH) = tr(KL), and the (N − 1)⁻² factors cancel
        out["biased"] = kl / math.sqrt(kk * ll)
    if debiased:
        sa, sb = _GramStats(a), _GramStats(b)
        hxy = _hsic_unbiased(n, sa, sb, kl)
        hxx = _hsic_unbiased(n, sa, sa, kk)
        hyy = _hsic_unbiased(n, sb, sb, ll)
        if hxx <= 0 or hyy <= 0:
            raise ValueError("debiased CKA is undefined: the unbiased HSIC of a representation with itself is 0 "
                             "(too few distinct items)")
        out["debiased"] = hxy / math.sqrt(hxx * hyy)
    return out


def linear_cka(x, y, *, debiased: bool = True) -> float:
    r"""Linear centred kernel alignment (CKA) between two representations of the same items.

    With column-centred :math:`X \in \mathbb{R}^{N \times p}`, :math:`Y \in \mathbb{R}^{N \times q}`
    and linear Gram matrices :math:`K = XX^\top`, :math:`L = YY^\top`,

    .. math:: \operatorname{CKA}(K, L) = \frac{\operatorname{HSIC}(K, L)}
              {\sqrt{\operatorname{HSIC}(K, K)\,\operatorname{HSIC}(L, L)}},
              \qquad \operatorname{HSIC}_0(K, L) = \frac{\operatorname{tr}(KHLH)}{(N-1)^2}
              = \frac{\lVert X^\top Y \rVert_F^2}{(N-1)^2}.

    ``debiased=True`` uses instead the unbiased estimator of Song et al., with :math:`\tilde K`,
    :math:`\tilde L` the Gram matrices with their diagonals set to zero:

    .. math:: \operatorname{HSIC}_1(K, L) = \frac{1}{N(N-3)} \Big[ \operatorname{tr}(\tilde K \tilde L)
              + \frac{1^\top \tilde K 1 \; 1^\top \tilde L 1}{(N-1)(N-2)}
              - \frac{2}{N-2} \, 1^\top \tilde K \tilde L 1 \Big].

    Every term has a closed form from the features, so no N × N matrix is needed:
    :math:`\operatorname{tr}(\tilde K \tilde L) = \lVert X^\top Y \rVert_F^2 - \sum_i \lVert x_i
    \rVert^2 \lVert y_i \rVert^2`, :math:`\tilde K 1 = X X^\top 1 - (\lVert x_i \rVert^2)_i` and
    :math:`1^\top \tilde K 1 = \lVert X^\top 1 \rVert^2 - \sum_i \lVert x_i \rVert^2`; the cost is
    O(N·p·q) (O(N²·(p + q)) through the Gram matrices when that is smaller, i.e. when p, q > N).

    The biased CKA of two independent representations is well above 0 when the width is not small
    next to N (about p/(N + p) for Gaussians); the debiased one is ≈ 0. Both are 1 for
    representations equal up to an orthogonal transform, an isotropic scale and a translation,
    symmetric in x and y, and *not* invariant to an invertible linear map in general.

    References:
        Kornblith, Norouzi, Lee & Hinton, "Similarity of Neural Network Representations
        Revisited", ICML 2019; Song, Smola, Gretton, Bedo & Borgwardt, "Feature Selection via
        Dependence Maximization", JMLR 2012; Nguyen, Raghu & Kornblith, "Do Wide and Deep Networks
        Learn the Same Things?", ICLR 2021.

    Args:
        x: (N, p) features of N items (numpy or torch).
        y: (N, q) features of the same N items, row i the same item as ``x[i]``.
        debiased: use the unbiased HSIC estimator (needs N ≥ 4); ``False`` gives the original,
            biased CKA of Kornblith et al.

    Returns:
        The CKA as a float: in [0, 1] when biased; the debiased one can dip slightly below 0.

    Raises:
        ValueError: for mismatched row counts, too few rows (N < 4 debiased, N < 2 biased), or a
            representation that is constant across items.

    Example:
        >>> import numpy as np
        >>> x = np.random.default_rng(0).normal(size=(100, 8))
        >>> q = np.linalg.qr(np.random.default_rng(1).normal(size=(8, 8)))[0]
        >>> round(linear_cka(x, 3.0 * x @ q + 1.0), 6)
        1.0
        >>> linear_cka(x, np.random.default_rng(2).normal(size=(100, 8)), debiased=False) > 0.03
        True
    """
    if not isinstance(debiased, (bool, np.bool_)):
        raise ValueError(f"debiased must be True or False; got {debiased!r}")
    a, b = _pair(x, y)
    out = _cka_both(a, b, debiased=bool(debiased), biased=not debiased)
    return float(out["debiased" if debiased else "biased"])


def _mutual_knn(a: np.ndarray, b: np.ndarray, k: int, center: bool, backend: str) -> float:
    n = a.shape[0]
    if k > n - 1:
        raise ValueError(f"k={k} must be at most N - 1 = {n - 1} (each item's neighbours exclude itself)")
    if center:
        a, b = _center(a), _center(b)
    ix = nearest_neighbours(a, k=k, backend=backend)[1].numpy()
    iy = nearest_neighbours(b, k=k, backend=backend)[1].numpy()
    rows = np.arange(n, dtype=np.int64)[:, None] * n  # (item, neighbour) pairs as single integers
    shared = np.isin(rows + ix, rows + iy)  # each row's neighbours are distinct, so this counts the overlap
    return float(shared.sum(axis=1).mean() / k)


def mutual_knn(x, y, *, k: int = 10, center: bool = True, backend: str = "auto") -> float:
    r"""Mutual k-nearest-neighbour alignment (Huh et al., 2024) of two representations of the same items.

    With :math:`\mathcal{N}^x_k(i)` the k items most cosine-similar to item i in x (i itself
    excluded), and likewise in y,

    .. math:: m_k(x, y) = \frac{1}{N} \sum_{i=1}^{N}
              \frac{\lvert \mathcal{N}^x_k(i) \cap \mathcal{N}^y_k(i) \rvert}{k}.

    It lies in [0, 1]: 1 when every item has the same k neighbours in both spaces. Two unrelated
    representations score about the chance level :math:`k / (N - 1)` (returned by
    :func:`compare_representations` as ``"mutual_knn_chance"``), so compare scores at equal N and k.
    Ties among neighbours are broken arbitrarily; the search is
    :func:`contrastlab.evaluation.knn.nearest_neighbours` (float32).

    References:
        Huh, Cheung, Wang & Isola, "The Platonic Representation Hypothesis", ICML 2024.

    Args:
        x: (N, p) features of N items (numpy or torch).
        y: (N, q) features of the same N items, row i the same item as ``x[i]``.
        k: neighbours per item, 1 ≤ k ≤ N − 1.
        center: subtract each representation's column means before the cosine search, which makes
            the score invariant to a translation like CKA and SVCCA; ``False`` searches the raw
            features (the paper normalises rows without centring).
        backend: the neighbour search's backend (``"auto"``, ``"torch"`` or ``"faiss"``).

    Returns:
        The mean neighbour overlap as a float in [0, 1].

    Raises:
        ValueError: for mismatched row counts, k < 1 or k > N − 1, or a bad backend.

    Example:
        >>> import numpy as np
        >>> x = np.random.default_rng(0).normal(size=(50, 4))
        >>> mutual_knn(x, 2.0 * x + 5.0, k=5)
        1.0
    """
    k = check_positive_int(k, "k")
    a, b = _pair(x, y)
    return _mutual_knn(a, b, k, bool(center), backend)


def _check_keep(keep) -> float:
    if isinstance(keep, bool) or not isinstance(keep, (int, float, np.integer, np.floating)) \
            or not math.isfinite(keep) or not 0 < keep <= 1:
        raise ValueError(f"keep must be a fraction of variance in (0, 1]; got {keep!r}")
    return float(keep)


def _svd_reduce(a: np.ndarray, keep: float, max_dims: int | None, name: str) -> np.ndarray:
    """Centred ``a`` projected on its fewest leading singular directions holding ``keep`` of the variance."""
    a = _center(a)
    u, s, _ = np.linalg.svd(a, full_matrices=False)
    rank = int(np.sum(s > s[0] * max(a.shape) * np.finfo(np.float64).eps)) if s.size and s[0] > 0 else 0
    if rank == 0:
        raise ValueError(f"{name} is the same for every item (zero after centring); SVCCA is undefined")
    var = np.square(s[:rank])
    frac = np.cumsum(var) / var.sum()
    d = min(int(np.searchsorted(frac, keep - 1e-12)) + 1, rank)  # tolerance: keep=1 stops at the rank
    if max_dims is not None:
        d = min(d, max_dims)
    return u[:, :d] * s[:d]


def _svcca_reduced(ra: np.ndarray, rb: np.ndarray) -> dict:
    rho = canonical_correlations(ra, rb)
    return {"mean": float(rho.mean()), "correlations": [float(r) for r in rho], "dims": (ra.shape[1], rb.shape[1])}


def svcca(x, y, *, keep: float = 0.99, max_dims: int | None = None) -> dict:
    r"""Singular vector canonical correlation analysis (SVCCA, Raghu et al., 2017).

    Each representation is centred and reduced by its SVD :math:`X = U S V^\top` to
    :math:`X' = U_{:, :d_x} S_{:d_x}`, with :math:`d_x` the fewest directions whose variance
    reaches the fraction ``keep``:

    .. math:: d_x = \min \Big\{ d : \frac{\sum_{j \le d} s_j^2}{\sum_j s_j^2} \ge \text{keep} \Big\},

    and likewise for y. The score is the mean of the :math:`\min(d_x, d_y)` canonical correlations
    :math:`\rho_1 \ge \rho_2 \ge \dots` between :math:`X'` and :math:`Y'`, computed by
    :func:`contrastlab.evaluation.information.canonical_correlations` (with its small ridge, so an
    exact match gives 1 to about 1e-6). Invariant to any invertible linear map of the directions
    kept, so to an orthogonal transform, scaling and translation of either representation.

    References:
        Raghu, Gilmer, Yosinski & Sohl-Dickstein, "SVCCA: Singular Vector Canonical Correlation
        Analysis for Deep Learning Dynamics and Interpretability", NeurIPS 2017.

    Args:
        x: (N, p) features of N items (numpy or torch).
        y: (N, q) features of the same N items, row i the same item as ``x[i]``.
        keep: the fraction of each representation's variance to keep, in (0, 1].
        max_dims: at most this many directions of each; ``None`` for no cap.

    Returns:
        ``{"mean": ..., "correlations": [...], "dims": (d_x, d_y)}``: the mean canonical
        correlation, all :math:`\min(d_x, d_y)` correlations (largest first), and the number of
        directions kept of each.

    Raises:
        ValueError: for mismatched row counts, a bad option, a constant representation, or
            N ≤ d_x + d_y (too few items for the canonical correlations to mean anything; lower
            ``keep`` or set ``max_dims``).

    Example:
        >>> import numpy as np
        >>> x = np.random.default_rng(0).normal(size=(200, 3))
        >>> out = svcca(x, x @ np.diag([1.0, 2.0, 3.0]) - 4.0)
        >>> round(out["mean"], 4), out["dims"]
        (1.0, (3, 3))
    """
    keep = _check_keep(keep)
    if max_dims is not None:
        max_dims = check_positive_int(max_dims, "max_dims")
    a, b = _pair(x, y)
    ra, rb = _svd_reduce(a, keep, max_dims, "x"), _svd_reduce(b, keep, max_dims, "y")
    n = a.shape[0]
    if n <= ra.shape[1] + rb.shape[1]:
        raise ValueError(f"SVCCA needs more items than the {ra.shape[1]} + {rb.shape[1]} directions kept; "
                         f"got N = {n} (lower keep or set max_dims)")
    return _svcca_reduced(ra, rb)


def compare_representations(x, y, *, k: int = 10, max_items: int | None = 5000, seed: int = 0) -> dict:
    r"""Linear CKA (debiased and biased), mutual k-NN alignment and SVCCA of two representations.

    .. math:: \text{chance}_{\text{mutual-}k\text{NN}} = \frac{k}{N - 1}

    When N > ``max_items`` all measures use the same seeded random subset of ``max_items`` rows
    of x and y (the mutual k-NN score depends on N, so compare runs at equal ``items``). SVCCA
    (``keep=0.99``) is left out, with the reason in ``"notes"``, when
    :math:`N \le 2 (d_x + d_y)`. See :func:`linear_cka`, :func:`mutual_knn` and :func:`svcca`.

    References:
        Kornblith et al., ICML 2019; Nguyen, Raghu & Kornblith, ICLR 2021; Huh et al., ICML 2024;
        Raghu et al., NeurIPS 2017.

    Args:
        x: (N, p) features of N items (numpy or torch).
        y: (N, q) features of the same N items, row i the same item as ``x[i]``; q may differ from p.
        k: neighbours per item for mutual k-NN; lowered to n − 1 (with a note) when n, the number
            of items used, is that small.
        max_items: use at most this many items (a seeded random subset); ``None`` for all.
        seed: the subset's random seed.

    Returns:
        A JSON-ready dict: ``"cka"`` (debiased), ``"cka_biased"``, ``"mutual_knn"``,
        ``"mutual_knn_chance"``, ``"k"`` (as used), ``"svcca"`` (mean canonical correlation) and
        ``"svcca_dims"`` ``[d_x, d_y]`` (both absent when skipped), ``"items"`` (rows used),
        ``"items_total"`` and ``"notes"`` (a list of strings, empty when nothing to say).

    Raises:
        ValueError: for mismatched row counts, fewer than 4 items, a bad k, ``max_items`` or
            ``seed``, or a representation that is constant across items.

    Example:
        >>> import numpy as np
        >>> x = np.random.default_rng(0).normal(size=(300, 6))
        >>> out = compare_representations(x, -2.0 * x, k=5)
        >>> round(out["cka"], 6), out["mutual_knn"], round(out["svcca"], 4), out["svcca_dims"]
        (1.0, 1.0, 1.0, [6, 6])
        >>> round(out["mutual_knn_chance"], 4), out["items"], out["notes"]
        (0.0167, 300, [])
    """
    k = check_positive_int(k, "k")
    if max_items is not None:
        max_items = check_positive_int(max_items, "max_items")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer; got {seed!r}")
    a, b = _pair(x, y)
    total = n = a.shape[0]
    notes: list[str] = []
    if max_items is not None and n > max_items:
        rows = np.sort(np.random.default_rng(int(seed)).choice(n, size=max_items, replace=False))
        a, b, n = a[rows], b[rows], max_items
        notes.append(f"used a random subset of {n} of {total} items (seed {int(seed)})")
    if n < 4:
        raise ValueError(f"compare_representations needs at least 4 items (rows); got {n}")
    if k > n - 1:
        notes.append(f"mutual_knn: k lowered from {k} to {n - 1}, the most that {n} items allow")
        k = n - 1
    cka = _cka_both(a, b)
    out: dict = {"cka": cka["debiased"], "cka_biased": cka["biased"],
                 "mutual_knn": _mutual_knn(a, b, k, True, "auto"), "mutual_knn_chance": k / (n - 1), "k": k}
    ra, rb = _svd_reduce(a, 0.99, None, "x"), _svd_reduce(b, 0.99, None, "y")
    dx, dy = ra.shape[1], rb.shape[1]
    if n <= 2 * (dx + dy):
        notes.append(f"svcca skipped: {n} items is too few for CCA on {dx} + {dy} directions "
                     f"(needs more than {2 * (dx + dy)})")
    else:
        res = _svcca_reduced(ra, rb)
        out["svcca"], out["svcca_dims"] = res["mean"], [dx, dy]
    out.update(items=n, items_total=total, notes=notes)
    return out
