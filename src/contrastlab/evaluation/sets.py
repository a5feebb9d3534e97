r"""The geometry of sets of items: the similarity-learning homework's invariance sets, 4(b) and 4(e).

:func:`set_geometry` measures each set's diameter (its largest inner distance) and margin (its smallest distance
to another set); :func:`tammes_view` compares the spread of the set centres with the best spread possible on the
sphere, :func:`tammes_reference` (the Tammes problem).
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch

from contrastlab.evaluation._arrays import (
    as_features, as_labels, check_positive_int, l2_normalize,
)

def _invariance_sets(features, set_ids, normalize: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Checked float64 rows (normalised when asked), the sorted distinct set ids, each row's set as 0..S-1, and
    the sets' sizes."""
    x = as_features(features, name="features", dtype=torch.float64)
    ids = as_labels(set_ids, x.shape[0], name="set_ids")
    labels, which, sizes = np.unique(ids, return_inverse=True, return_counts=True)
    if labels.size < 2:
        raise ValueError(f"set_ids must name at least 2 sets; got {labels.size} ({labels.tolist()})")
    if normalize:
        x = l2_normalize(x)
    return x.numpy(), labels, which.reshape(-1), sizes


def _extreme_partners(x: np.ndarray, which: np.ndarray, chunk: int) -> tuple[np.ndarray, ...]:
    """For every row i: the farthest row of its own set and the nearest row of any other set, as
    ``(far_index, far_distance, near_index, near_distance)``.

    Squared distances come from one (chunk, N) block of rows at a time (``|a|² + |b|² − 2 a·b``, so nothing of
    size N × N is ever held); the chosen partner's distance is then recomputed as ``‖x_i − x_j‖`` so that it
    carries no cancellation error. Assumes every row has a partner outside its set (two sets or more).
    """
    n = x.shape[0]
    sq = np.einsum("ij,ij->i", x, x)
    far = np.empty(n, dtype=np.int64)
    near = np.empty(n, dtype=np.int64)
    far_d = np.empty(n)
    near_d = np.empty(n)
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        d2 = x[start:stop] @ x.T
        d2 *= -2.0
        d2 += sq[start:stop, None]
        d2 += sq[None, :]
        own = which[start:stop, None] == which[None, :]
        far[start:stop] = np.where(own, d2, -np.inf).argmax(axis=1)
        np.putmask(d2, own, np.inf)
        near[start:stop] = d2.argmin(axis=1)
        far_d[start:stop] = np.linalg.norm(x[start:stop] - x[far[start:stop]], axis=1)
        near_d[start:stop] = np.linalg.norm(x[start:stop] - x[near[start:stop]], axis=1)
    return far, far_d, near, near_d


def set_geometry(features, set_ids, *, normalize: bool = True, chunk: int = 256) -> dict:
    r"""Diameter and margin of every invariance set: is each set tighter than its distance to the others?

    An *invariance set* :math:`S_i` is a group of rows an encoder :math:`f` should treat alike: the
    augmentations of one item, or every item of one class. For disjoint sets (homework 4(b)):

    .. math:: \operatorname{diameter}_i(f) = \max_{x, y \in S_i} \lVert f(x) - f(y) \rVert_2, \qquad
              \operatorname{margin}_{i \to j}(f) = \min_{x \in S_i,\, y \in S_j} \lVert f(x) - f(y) \rVert_2,
              \qquad \operatorname{margin}_i = \min_{j \ne i} \operatorname{margin}_{i \to j}

    A set is *separated* when :math:`\operatorname{margin}_i > \operatorname{diameter}_i`: then the nearest
    neighbour of every member lies in its own set. A set of one row has diameter 0 (and is separated unless
    another set holds the same point).

    In float64 and O(``chunk`` · N) memory: distances are formed one block of ``chunk`` rows against all N
    rows at a time, keeping per row only its farthest own-set row and its nearest other-set row (the margin
    of a set is the smallest distance from one of its rows to any row outside it). The chosen distances are
    recomputed as differences, so they carry no cancellation error; only partners whose squared distances
    agree to rounding (about 1e-16 times the squared norms) can be confused. With N = 20,000 rows in D = 512
    and the default ``chunk`` the peak is under 200 MB beyond the input (two float64 copies of the rows while
    normalising, then one copy and two blocks).

    References:
        Homework "Similarity learning", question 4(b): diameter and margin of invariance sets.
        Wang & Isola, "Understanding Contrastive Representation Learning through Alignment and
        Uniformity on the Hypersphere", ICML 2020.

    Args:
        features: (N, D) features.
        set_ids: (N,) integer set of every row (any integer values; a set is all rows with one value).
        normalize: scale rows to unit norm first (distances on the sphere, in [0, 2]); ``False`` measures
            the raw features.
        chunk: rows per block.

    Returns:
        A dict. Per set, ordered as ``set_labels`` (the sorted distinct ``set_ids``), numpy arrays:
        ``diameter``, ``margin``, ``nearest_set`` (the id of the set j that attains the margin) and ``sizes``.
        Summaries: ``median_diameter`` and ``median_margin`` (floats), ``separated_share`` (the fraction of
        sets with margin > diameter), ``sets`` (how many) and ``min_size`` (the smallest set's size).

    Raises:
        ValueError: for features that are not (N, D) or hold NaN or infinite values, ``set_ids`` of another
            length or not integer, fewer than 2 sets, or a ``chunk`` that is not a positive integer.

    Example:
        >>> import torch
        >>> x = torch.tensor([[0.0, 0.0], [0.0, 1.0], [3.0, 0.0], [3.0, 2.0]])
        >>> geo = set_geometry(x, [0, 0, 1, 1], normalize=False)
        >>> geo["diameter"].tolist(), geo["margin"].tolist(), geo["separated_share"]
        ([1.0, 2.0], [3.0, 3.0], 1.0)
    """
    chunk = check_positive_int(chunk, "chunk")
    x, labels, which, sizes = _invariance_sets(features, set_ids, normalize)
    _, far_d, near, near_d = _extreme_partners(x, which, chunk)
    diameter = np.zeros(labels.size)
    np.maximum.at(diameter, which, far_d)
    # Per set, its row closest to another set (ties: the lowest row index) gives the margin and the set it meets.
    order = np.lexsort((np.arange(which.size), near_d, which))
    closest = order[np.concatenate(([0], np.cumsum(sizes)[:-1]))]
    margin = near_d[closest]
    return {
        "set_labels": labels,
        "sizes": sizes,
        "diameter": diameter,
        "margin": margin,
        "nearest_set": labels[which[near[closest]]],
        "median_diameter": float(np.median(diameter)),
        "median_margin": float(np.median(margin)),
        "separated_share": float(np.mean(margin > diameter)),
        "sets": int(labels.size),
        "min_size": int(sizes.min()),
    }


def _angles(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Angles in degrees between paired unit rows, as 2·atan2(‖a − b‖, ‖a + b‖): accurate near 0° and 180°."""
    return np.degrees(2.0 * np.arctan2(np.linalg.norm(a - b, axis=1), np.linalg.norm(a + b, axis=1)))


def _closed_form_tammes(n: int, d: int) -> float | None:
    """The Tammes angle where it is known in closed form, else ``None``."""
    if n == 1:
        return 180.0  # a convention: no pair to be close; keeps the value in [0°, 180°]
    if n <= d + 1:
        return math.degrees(math.acos(-1.0 / (n - 1)))  # the regular simplex
    if d == 1:
        return 0.0  # three or more points on {-1, +1}: two coincide
    if d == 2:
        return 360.0 / n  # the regular polygon
    if n <= 2 * d:
        return 90.0  # Rankin (1955); the cross-polytope's vertices reach it
    return None


_VIEW_SEARCH_LIMIT = 1e8  # n² d beyond which tammes_view skips the search (it would take minutes)
_SPREAD_STEPS = 800  # annealed soft-min ascent, per restart
_POLISH_STEPS = 300  # at most; the polish stops once its step size is negligible
_POLISH_SHARPNESS = 2.0e4


def _soft_min_ascent(x: np.ndarray, sharpness: float) -> tuple[np.ndarray, float]:
    r"""The direction (tangent to the sphere, its longest row of length 1) that raises the soft minimum
    :math:`-\frac{1}{s}\log\sum_{i<j} e^{-s \log d_{ij}}` of the unit rows' pairwise distances, and the
    smallest distance. The soft-min of log-distances makes ``sharpness`` independent of the scale of the distances."""
    d2 = np.maximum(2.0 - 2.0 * (x @ x.T), 1e-300)
    np.fill_diagonal(d2, np.inf)
    log_d = 0.5 * np.log(d2)
    low = float(log_d.min())
    w = np.exp(-sharpness * (log_d - low)) / d2  # pair weight times the 1/d² of d(log d_ij)/dx_i
    step = w.sum(axis=1)[:, None] * x - w @ x  # sum_j w_ij (x_i - x_j)
    step -= np.einsum("ij,ij->i", step, x)[:, None] * x
    longest = float(np.linalg.norm(step, axis=1).max())
    return (step / longest if longest > 0 else step), math.exp(low)


def _unit_rows(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@functools.lru_cache(maxsize=256)
def _tammes_search(n: int, d: int, seed: int) -> float:
    """The best smallest angle (degrees) found for n points on S^{d-1}; cached, as it depends only on its
    arguments."""
    rng = np.random.default_rng(seed)
    restarts = int(min(4, max(1, 6e8 // (n * n * d * _SPREAD_STEPS))))  # fewer restarts for large n² d
    best, best_low = None, -1.0
    for _ in range(restarts):
        x = _unit_rows(rng.standard_normal((n, d)))
        for t in range(_SPREAD_STEPS):
            f = t / (_SPREAD_STEPS - 1)
            step, low = _soft_min_ascent(x, 8.0 * 250.0 ** f)  # sharpness 8 → 2000
            x = _unit_rows(x + 0.2 * 0.01 ** f * low * step)  # a move of 20% → 0.2% of the smallest distance
        _, low = _soft_min_ascent(x, 1.0)
        if low > best_low:
            best, best_low = x, low
    # Polish: climb the exact smallest distance along the sharp soft-min direction, keeping only improvements.
    x, low = best, best_low
    step, _ = _soft_min_ascent(x, _POLISH_SHARPNESS)
    rate = 1e-3
    for _ in range(_POLISH_STEPS):
        y = _unit_rows(x + rate * low * step)
        y_step, y_low = _soft_min_ascent(y, _POLISH_SHARPNESS)
        if y_low > low:
            x, step, low, rate = y, y_step, y_low, min(1.5 * rate, 0.05)
        else:
            rate *= 0.5
            if rate < 1e-9:
                break
    _, _, near, _ = _extreme_partners(x, np.arange(n), chunk=256)
    return float(_angles(x, x[near]).min())


def tammes_reference(n: int, d: int, *, seed: int = 0) -> tuple[float, str]:
    r"""The Tammes angle: the largest possible smallest angle between n points on the sphere :math:`S^{d-1}`.

    .. math:: \theta^*(n, d) = \max_{u_1, \dots, u_n \in S^{d-1}} \; \min_{i < j} \angle(u_i, u_j)

    Closed forms (``how == "exact"``): for :math:`n \le d + 1` the regular simplex,
    :math:`\arccos(-1/(n-1))` (180° for n = 2); for :math:`d + 1 < n \le 2d`, 90° (Rankin 1955; the
    cross-polytope's vertices reach it); on the circle (d = 2) the regular polygon, 360°/n; for d = 1 and
    n ≥ 3, 0°. By convention n = 1 gives 180°: a single point has no neighbour to be close to, and the value
    stays in [0°, 180°].

    Otherwise (``how == "best found"``) a deterministic search: from several starts drawn from
    ``numpy.random.default_rng(seed)`` (fewer when :math:`n^2 d` is large), projected ascent on the soft
    minimum of the log pairwise distances with an annealed sharpness, then a polish that climbs the exact
    smallest distance and keeps only improvements. The result is the angle of an actual configuration, so a
    lower bound on :math:`\theta^*` (in 3-D within 0.01° of the known optima for n = 7, 8, 12, 24); it is
    cached per (n, d, seed). The search costs :math:`O(n^2 d)` per step: about a second for n = 100 in
    d = 16, minutes for thousands of points beyond 2d.

    References:
        Tammes, "On the origin of number and arrangement of the places of exit on the surface of pollen-grains",
        Recueil des travaux botaniques néerlandais 27, 1930.
        Rankin, "The closest packing of spherical caps in n dimensions", Proc. Glasgow Math. Assoc. 2, 1955.
        Homework "Similarity learning", question 4(e): uniformity as a Tammes-like spread.

    Args:
        n: the number of points, n ≥ 1.
        d: the dimension of the space around the sphere, d ≥ 1 (:math:`S^{d-1} \subset \mathbb{R}^d`).
        seed: seeds the search's starts (unused by the closed forms).

    Returns:
        ``(angle_in_degrees, how)`` with ``how`` either ``"exact"`` or ``"best found"``.

    Raises:
        ValueError: if n or d is not a positive integer, or seed is not a non-negative integer.

    Example:
        >>> angle, how = tammes_reference(4, 3)   # the tetrahedron
        >>> round(angle, 2), how
        (109.47, 'exact')
        >>> tammes_reference(6, 3)   # the octahedron
        (90.0, 'exact')
    """
    n = check_positive_int(n, "n")
    d = check_positive_int(d, "d")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer; got {seed!r}")
    exact = _closed_form_tammes(n, d)
    if exact is not None:
        return exact, "exact"
    return _tammes_search(n, d, int(seed)), "best found"


def tammes_view(features, set_ids, *, normalize: bool = True) -> dict:
    r"""How far apart the invariance sets' centres are, compared with the best spread possible on the sphere.

    The homework's 4(e): an optimal encoder collapses each invariance set :math:`S_i` to one point, and those
    points spread over the sphere like a solution of the Tammes problem. With the rows :math:`u_x` on the
    sphere, the centre of a set and its direction are

    .. math:: m_i = \frac{1}{|S_i|} \sum_{x \in S_i} u_x, \qquad c_i = \frac{m_i}{\lVert m_i \rVert_2},

    and the spread is :math:`\min_{i \ne j} \angle(c_i, c_j)`, compared with
    :func:`tammes_reference` for as many points in the features' dimension D (a search of seconds, up to tens
    of seconds, where no closed form applies). Where none applies (S > 2D) and :math:`S^2 D > 10^8` (e.g.
    more than about 880 sets in D = 128), the search would take minutes, so the reference is skipped:
    ``reference_how`` is ``"skipped"`` and the reference and ratio are NaN. :math:`\lVert m_i \rVert_2` is 1
    exactly when every member of :math:`S_i` sits on one point, and falls towards 0 as the set spreads out.
    Angles are computed as :math:`2 \operatorname{atan2}(\lVert a - b \rVert, \lVert a + b \rVert)`, accurate at
    every angle, in float64, over blocks of centres (never an S × S matrix).

    References:
        Homework "Similarity learning", question 4(e).
        Wang & Isola, "Understanding Contrastive Representation Learning through Alignment and
        Uniformity on the Hypersphere", ICML 2020.
        Tammes, 1930; Rankin, 1955 (see :func:`tammes_reference`).

    Args:
        features: (N, D) features.
        set_ids: (N,) integer set of every row.
        normalize: scale rows to unit norm first. With ``False`` the rows are averaged as given (they should
            already lie on the unit sphere for ``centre_norm_mean`` to mean anything).

    Returns:
        A dict: ``set_labels`` (sorted distinct ids), ``centres`` ((S, D) numpy array of the unit directions
        :math:`c_i`), ``sets``, ``min_angle`` (degrees, the smallest angle between two centres),
        ``mean_nearest_angle`` (the mean over centres of the angle to the nearest other centre),
        ``reference_angle`` and ``reference_how`` (from :func:`tammes_reference` (S, D), or NaN and
        ``"skipped"``, see above), ``ratio`` =
        min_angle / reference_angle (NaN when the reference is 0°; it can pass 1 slightly when the reference
        is only "best found") and ``centre_norm_mean`` (the mean of :math:`\lVert m_i \rVert_2`).

    Raises:
        ValueError: as :func:`set_geometry` does, and when a set's rows cancel out (its mean is the origin,
            so it has no direction).

    Example:
        >>> import math, torch
        >>> angles = torch.tensor([0.0, 0.0, 120.0, 120.0, 240.0, 240.0], dtype=torch.float64) * math.pi / 180
        >>> x = torch.stack([angles.cos(), angles.sin()], dim=1)   # three sets, each collapsed to a point
        >>> view = tammes_view(x, [0, 0, 1, 1, 2, 2])
        >>> round(view["min_angle"], 6), round(view["ratio"], 6), round(view["centre_norm_mean"], 6)
        (120.0, 1.0, 1.0)
    """
    x, labels, which, sizes = _invariance_sets(features, set_ids, normalize)
    sums = torch.zeros(labels.size, x.shape[1], dtype=torch.float64)
    sums.index_add_(0, torch.from_numpy(which), torch.from_numpy(x))
    means = sums.numpy() / sizes[:, None]
    norms = np.linalg.norm(means, axis=1)
    if (norms <= 1e-12).any():
        bad = labels[norms <= 1e-12][:5].tolist()
        raise ValueError(f"features of set(s) {bad} cancel out: their mean is the origin, so they have no direction")
    centres = means / norms[:, None]
    _, _, near, _ = _extreme_partners(centres, np.arange(labels.size), chunk=256)
    nearest = _angles(centres, centres[near])
    n, d = int(labels.size), int(x.shape[1])
    if _closed_form_tammes(n, d) is None and n * n * d > _VIEW_SEARCH_LIMIT:
        reference, how = float("nan"), "skipped"
    else:
        reference, how = tammes_reference(n, d)
    min_angle = float(nearest.min())
    return {
        "set_labels": labels,
        "centres": centres,
        "sets": int(labels.size),
        "min_angle": min_angle,
        "mean_nearest_angle": float(nearest.mean()),
        "reference_angle": float(reference),
        "reference_how": how,
        "ratio": min_angle / reference if reference > 0 else float("nan"),  # NaN for a skipped or 0° reference
        "centre_norm_mean": float(norms.mean()),
    }
