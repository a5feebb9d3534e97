r"""Entropy, mutual information and the partial information decomposition (PID) of discrete codes.

Discrete estimators (:func:`entropy`, :func:`conditional_entropy`, :func:`mutual_information`,
:func:`conditional_mutual_information`) read codes: a 1-D array of integer or string symbols, or a 2-D array
whose rows are the joint symbol of its columns. They are plug-in estimates (the empirical distribution's
value), in bits by default; plug-in entropies are biased low and plug-in mutual informations biased high
by about (number of cells) / (2N) nats, which ``correction="miller_madow"`` removes to first order.

:func:`pid_from_table`, :func:`pid` and :func:`representation_pid` split what two sources tell about a target
into redundant, unique and synergistic parts (Bertschinger et al.'s definition; the optimisation is in
``_broja.py``).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from contrastlab.evaluation._arrays import as_features, check_positive_float, check_positive_int, l2_normalize
from contrastlab.evaluation._broja import max_conditional_entropy
from contrastlab.evaluation.clustering import _one_thread


_CORRECTIONS = ("none", "miller_madow")


def _check_base(base) -> float:
    if (isinstance(base, bool) or not isinstance(base, (int, float, np.integer, np.floating))
            or not math.isfinite(base) or base <= 0 or base == 1):
        raise ValueError(f"base must be a finite number > 0 other than 1; got {base!r}")
    return float(base)


def _check_correction(correction) -> str:
    if correction not in _CORRECTIONS:
        raise ValueError(f"correction must be one of {', '.join(map(repr, _CORRECTIONS))}; got {correction!r}")
    return correction


def _codes(x, name: str) -> np.ndarray:
    """(N,) int64 codes 0..m-1 of a discrete variable given as (N,) symbols or (N, k) rows (their joint)."""
    a = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if a.ndim not in (1, 2):
        raise ValueError(f"{name} must have shape (N,) or (N, k); got shape {a.shape}")
    if a.size == 0:
        raise ValueError(f"{name} must be non-empty; got shape {a.shape}")
    if a.dtype == object:
        if not all(isinstance(v, str) for v in a.ravel()):
            raise ValueError(f"{name} must hold integer or string codes; got an object array of other values")
        a = a.astype(str)
    if a.dtype.kind == "f":
        if not np.isfinite(a).all():
            raise ValueError(f"{name} contains NaN or infinite values")
        fractional = a[a != np.round(a)]
        if fractional.size:
            raise ValueError(f"{name} must hold integer codes; got non-integer values such as {fractional[0]!r} "
                             "(discretise continuous values first, e.g. with representation_pid's k-means)")
    elif a.dtype.kind not in "biuUS":
        raise ValueError(f"{name} must hold integer or string codes; got dtype {a.dtype}")
    return np.unique(a, axis=0 if a.ndim == 2 else None, return_inverse=True)[1].reshape(-1).astype(np.int64)


def _all_codes(**arrays) -> list[np.ndarray]:
    """Codes of each named variable; ValueError naming them when their lengths differ."""
    codes = [_codes(a, name) for name, a in arrays.items()]
    lengths = [len(c) for c in codes]
    if len(set(lengths)) > 1:
        got = ", ".join(f"{name}: {n}" for name, n in zip(arrays, lengths))
        raise ValueError(f"{', '.join(arrays)} must have the same number of rows; got {got}")
    return codes


def _joint(*codes: np.ndarray) -> np.ndarray:
    out = codes[0]
    for c in codes[1:]:
        out = np.unique(out * (int(c.max()) + 1) + c, return_inverse=True)[1].reshape(-1)
    return out


def _plugin(codes: np.ndarray) -> tuple[float, int]:
    """The plug-in entropy in nats and the number of observed symbols."""
    counts = np.bincount(codes)
    counts = counts[counts > 0]
    n = codes.shape[0]
    return max(math.log(n) - float((counts * np.log(counts)).sum()) / n, 0.0), len(counts)


def _combine(terms: list[tuple[int, np.ndarray]], correction: str, base: float) -> float:
    """:math:`\\sum_i s_i \\hat H(V_i)` for signs s_i (clipped at 0: only rounding makes it negative), plus the
    Miller-Madow terms :math:`\\sum_i s_i (m_i - 1) / 2N` when asked for, in the given base."""
    plug, extra = 0.0, 0.0
    for sign, codes in terms:
        h, m = _plugin(codes)
        plug += sign * h
        extra += sign * (m - 1) / (2 * codes.shape[0])
    value = max(plug, 0.0) + (extra if correction == "miller_madow" else 0.0)
    return value / math.log(base)


def entropy(x, *, base: float = 2, correction: str = "none") -> float:
    r"""The entropy of a discrete variable from samples.

    .. math:: \hat H(X) = -\sum_x \hat p(x) \log \hat p(x), \qquad
              \hat H_{\mathrm{MM}}(X) = \hat H(X) + \frac{m - 1}{2N} \text{ nats},

    with :math:`\hat p` the empirical frequencies of the N samples and :math:`m` the number of symbols
    observed. The plug-in value is biased low (by about :math:`(m-1)/2N` nats); Miller and Madow's term
    removes that first-order bias.

    References:
        Shannon, "A Mathematical Theory of Communication", 1948 (CMU MMML lecture 4.1);
        Miller, "Note on the bias of information estimates", 1955; Paninski, "Estimation of Entropy and
        Mutual Information", Neural Computation 2003.

    Args:
        x: (N,) integer or string symbols, or (N, k) rows: the joint variable of the k columns. Floats are
            accepted when they hold integers.
        base: the logarithm's base: 2 for bits, ``math.e`` for nats.
        correction: ``"none"`` (plug-in) or ``"miller_madow"``.

    Returns:
        :math:`\hat H(X)` in units of ``base``.

    Raises:
        ValueError: for an empty or non-1-D/2-D ``x``, NaN or non-integer floats, or a bad option.

    Example:
        >>> entropy([0, 1, 2, 3])
        2.0
        >>> round(entropy([0, 0, 1, 1], correction="miller_madow"), 4)  # 1 bit + (2 - 1) / (2 * 4) nats
        1.1803
    """
    base, correction = _check_base(base), _check_correction(correction)
    return _combine([(1, _codes(x, "x"))], correction, base)


def conditional_entropy(y, x, *, base: float = 2, correction: str = "none") -> float:
    r"""The entropy left in Y once X is known, from paired samples.

    .. math:: \hat H(Y \mid X) = \hat H(X, Y) - \hat H(X) = -\sum_{x, y} \hat p(x, y) \log \hat p(y \mid x),

    each entropy Miller-Madow corrected when asked for (the correction is then
    :math:`(m_{XY} - m_X) / 2N` nats).

    References:
        Cover & Thomas, "Elements of Information Theory", 2006, §2.2 (CMU MMML lecture 4.1).

    Args:
        y: (N,) or (N, k) codes of the variable whose uncertainty is measured.
        x: (N,) or (N, k) codes of the conditioning variable, row i paired with ``y[i]``.
        base: the logarithm's base.
        correction: ``"none"`` or ``"miller_madow"``.

    Returns:
        :math:`\hat H(Y \mid X) \ge 0` in units of ``base``.

    Raises:
        ValueError: for mismatched lengths, bad codes (see :func:`entropy`) or a bad option.

    Example:
        >>> conditional_entropy([0, 1, 0, 1], [0, 0, 1, 1])  # y is a fair bit independent of x
        1.0
        >>> conditional_entropy([0, 1, 0, 1], [0, 1, 0, 1])
        0.0
    """
    base, correction = _check_base(base), _check_correction(correction)
    cy, cx = _all_codes(y=y, x=x)
    return _combine([(1, _joint(cx, cy)), (-1, cx)], correction, base)


def mutual_information(x, y, *, base: float = 2, correction: str = "none") -> float:
    r"""The mutual information of two discrete variables from paired samples.

    .. math:: \hat I(X; Y) = \hat H(X) + \hat H(Y) - \hat H(X, Y)
              = \sum_{x, y} \hat p(x, y) \log \frac{\hat p(x, y)}{\hat p(x) \hat p(y)}
              = D_{\mathrm{KL}}(\hat p_{XY} \,\|\, \hat p_X \hat p_Y).

    The plug-in value is never negative (rounding below 0 is clipped) and is biased high, by about
    :math:`(m_X - 1)(m_Y - 1) / 2N` nats for independent variables. With ``correction="miller_madow"`` the
    three entropies are corrected, which adds :math:`(m_X + m_Y - m_{XY} - 1) / 2N` nats; that estimate can be
    negative when the true value is near 0 and is not clipped.

    References:
        Shannon 1948; Cover & Thomas 2006, §2.3 (CMU MMML lecture 4.1); Miller 1955.

    Args:
        x: (N,) or (N, k) codes.
        y: (N,) or (N, k) codes, row i paired with ``x[i]``.
        base: the logarithm's base.
        correction: ``"none"`` or ``"miller_madow"``.

    Returns:
        :math:`\hat I(X; Y)` in units of ``base``.

    Raises:
        ValueError: for mismatched lengths, bad codes (see :func:`entropy`) or a bad option.

    Example:
        >>> mutual_information([0, 0, 1, 1], ["a", "a", "b", "b"])
        1.0
        >>> mutual_information([0, 0, 1, 1], [0, 1, 0, 1])
        0.0
    """
    base, correction = _check_base(base), _check_correction(correction)
    cx, cy = _all_codes(x=x, y=y)
    return _combine([(1, cx), (1, cy), (-1, _joint(cx, cy))], correction, base)


def conditional_mutual_information(x, y, z, *, base: float = 2, correction: str = "none") -> float:
    r"""What X and Y share once Z is known, from samples.

    .. math:: \hat I(X; Y \mid Z) = \hat H(X, Z) + \hat H(Y, Z) - \hat H(X, Y, Z) - \hat H(Z),

    never negative for the plug-in estimate (the Miller-Madow one adds
    :math:`(m_{XZ} + m_{YZ} - m_{XYZ} - m_Z) / 2N` nats and is not clipped).

    References:
        Cover & Thomas 2006, §2.5.

    Args:
        x: (N,) or (N, k) codes.
        y: (N,) or (N, k) codes.
        z: (N,) or (N, k) codes of the conditioning variable; row i of all three is one sample.
        base: the logarithm's base.
        correction: ``"none"`` or ``"miller_madow"``.

    Returns:
        :math:`\hat I(X; Y \mid Z)` in units of ``base``.

    Raises:
        ValueError: for mismatched lengths, bad codes (see :func:`entropy`) or a bad option.

    Example:
        >>> x, y = [0, 0, 1, 1], [0, 1, 0, 1]
        >>> conditional_mutual_information(x, y, [0, 1, 1, 0])  # independent bits, z = x XOR y
        1.0
    """
    base, correction = _check_base(base), _check_correction(correction)
    cx, cy, cz = _all_codes(x=x, y=y, z=z)
    terms = [(1, _joint(cx, cz)), (1, _joint(cy, cz)), (-1, _joint(cx, cy, cz)), (-1, cz)]
    return _combine(terms, correction, base)


def _as_table(p) -> np.ndarray:
    a = p.detach().cpu().numpy() if isinstance(p, torch.Tensor) else np.asarray(p)
    if a.ndim != 3 or a.size == 0:
        raise ValueError(f"p must be a non-empty table of shape (|X1|, |X2|, |Y|); got shape {a.shape}")
    if not np.issubdtype(a.dtype, np.number) or np.issubdtype(a.dtype, np.complexfloating):
        raise ValueError(f"p must hold real numbers; got dtype {a.dtype}")
    a = a.astype(np.float64)
    if not np.isfinite(a).all():
        raise ValueError("p contains NaN or infinite values")
    if (a < 0).any() or a.sum() <= 0:
        raise ValueError(f"p must be non-negative with a positive sum; got min {a.min()!r} and sum {a.sum()!r}")
    return a / a.sum()


def _table_entropy(p: np.ndarray) -> float:
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


def pid_from_table(p, *, base: float = 2, tol: float = 1e-7, max_iter: int = 200) -> dict:
    r"""The partial information decomposition of a joint distribution :math:`P(x_1, x_2, y)`.

    What two sources tell about a target, :math:`I(Y; X_1, X_2)`, is split into redundancy R (what either
    source tells), the unique informations :math:`U_1, U_2` (what only one tells) and synergy S (what only
    both together tell). With :math:`\Delta_P` the distributions that keep both source-target marginals,
    :math:`\Delta_P = \{Q \ge 0 : Q(x_1, y) = P(x_1, y),\ Q(x_2, y) = P(x_2, y)\}`, Bertschinger et al. define

    .. math::
        U_1 = \min_{Q \in \Delta_P} I_Q(Y; X_1 \mid X_2), \quad U_2 = \min_{Q \in \Delta_P} I_Q(Y; X_2 \mid X_1),

        R = I(Y; X_1) - U_1, \qquad S = I(Y; X_1, X_2) - R - U_1 - U_2,

    so that :math:`R + U_1 = I(Y; X_1)`, :math:`R + U_2 = I(Y; X_2)` and :math:`R + U_1 + U_2 + S = I(Y; X_1, X_2)`,
    all four non-negative. The marginals fix :math:`H(Y \mid X_1)` and :math:`H(Y \mid X_2)`, so both minima
    are reached by the one :math:`Q^\star` that maximises :math:`H_Q(Y \mid X_1, X_2)`:
    :math:`U_1 = H(Y \mid X_2) - H_{Q^\star}(Y \mid X_1, X_2)` and :math:`S = H_{Q^\star}(Y \mid X_1, X_2)
    - H_P(Y \mid X_1, X_2)`. That concave maximisation is solved through its dual by a barrier method
    (``_broja.py``), which returns a feasible :math:`Q` and a certified bound (``gap``) on how far it is from
    :math:`Q^\star`: each atom is within ``gap`` of its exact value (the uniques from above, R and S from below).

    Known answers: Y = X1 = X2 (a copied fair bit) is 1 bit of redundancy; Y = X1 XOR X2 is 1 bit of
    synergy; Y = (X1, X2) is 1 bit unique to each; Y = X1 AND X2 is R = 0.3113, S = 0.5, no uniqueness.

    References:
        Bertschinger, Rauh, Olbrich, Jost & Ay, "Quantifying Unique Information", Entropy 2014;
        Williams & Beer, "Nonnegative Decomposition of Multivariate Information", arXiv:1004.2515;
        Liang et al., "Quantifying & Modeling Multimodal Interactions: An Information Decomposition
        Framework", NeurIPS 2023 (the PID of multimodal data sets and models).

    Args:
        p: (|X1|, |X2|, |Y|) non-negative table (probabilities or counts; it is normalised).
        base: the logarithm's base: 2 for bits.
        tol: stop once every atom is certified within this many units of ``base`` of its exact value.
        max_iter: the most Newton steps (a 16 x 16 x 10 table takes about 50).

    Returns:
        ``{"redundancy", "unique_1", "unique_2", "synergy", "mi_1", "mi_2", "mi_joint", "gap", "iterations",
        "converged"}``: the four atoms, :math:`I(Y; X_1)`, :math:`I(Y; X_2)`, :math:`I(Y; X_1, X_2)` and the
        certified bound, in units of ``base``; Newton steps taken; whether ``gap <= tol``.

    Raises:
        ValueError: for a table that is not 3-D, has negative, NaN or infinite entries or sums to 0, or a bad
            option.

    Example:
        >>> import numpy as np
        >>> p = np.zeros((2, 2, 2))
        >>> for a in (0, 1):
        ...     for b in (0, 1):
        ...         p[a, b, a & b] = 0.25  # Y = X1 AND X2
        >>> out = pid_from_table(p)
        >>> {k: round(out[k], 4) for k in ("redundancy", "unique_1", "unique_2", "synergy")}
        {'redundancy': 0.3113, 'unique_1': 0.0, 'unique_2': 0.0, 'synergy': 0.5}
    """
    base = _check_base(base)
    tol = check_positive_float(tol, "tol")
    max_iter = check_positive_int(max_iter, "max_iter")
    p = _as_table(p)
    h_y = _table_entropy(p.sum(axis=(0, 1)))
    h_y_x1 = _table_entropy(p.sum(axis=1)) - _table_entropy(p.sum(axis=(1, 2)))
    h_y_x2 = _table_entropy(p.sum(axis=0)) - _table_entropy(p.sum(axis=(0, 2)))
    h_y_x12 = _table_entropy(p) - _table_entropy(p.sum(axis=2))
    best = max_conditional_entropy(p, tol=tol * math.log(base), max_iter=max_iter)
    h = best.value
    unique_1, unique_2 = h_y_x2 - h, h_y_x1 - h
    mi_1 = max(h_y - h_y_x1, 0.0)
    nats = {"redundancy": mi_1 - unique_1, "unique_1": unique_1, "unique_2": unique_2, "synergy": h - h_y_x12,
            "mi_1": mi_1, "mi_2": max(h_y - h_y_x2, 0.0), "mi_joint": max(h_y - h_y_x12, 0.0), "gap": best.gap}
    out = {k: v / math.log(base) + 0.0 for k, v in nats.items()}  # + 0.0: no -0.0 in reports
    return {**out, "iterations": best.iterations, "converged": best.converged}


def pid(x1, x2, y, *, base: float = 2, tol: float = 1e-7, max_iter: int = 200) -> dict:
    r"""The partial information decomposition of the empirical distribution of discrete samples.

    The plug-in estimate: :func:`pid_from_table` of the frequencies :math:`\hat p(x_1, x_2, y)`. Like every
    plug-in mutual information it is biased high at small N, and the bias lands mostly in the synergy (the
    joint :math:`(x_1, x_2)` has the most cells): about :math:`(m_1 m_2 - 1)(m_Y - 1) / 2N` nats of
    :math:`I(Y; X_1, X_2)` when the variables are unrelated. Compare with the same codes and a permuted y
    (:func:`representation_pid` reports that).

    References:
        Bertschinger, Rauh, Olbrich, Jost & Ay, "Quantifying Unique Information", Entropy 2014.

    Args:
        x1: (N,) or (N, k) codes of the first source.
        x2: (N,) or (N, k) codes of the second source.
        y: (N,) or (N, k) codes of the target; row i of all three is one sample.
        base: the logarithm's base.
        tol: the certified accuracy of each atom (see :func:`pid_from_table`).
        max_iter: the most Newton steps.

    Returns:
        the dict of :func:`pid_from_table`.

    Raises:
        ValueError: for mismatched lengths, bad codes (see :func:`entropy`) or a bad option.

    Example:
        >>> x1, x2 = [0, 0, 1, 1], [0, 1, 0, 1]
        >>> round(pid(x1, x2, [0, 1, 1, 0])["synergy"], 4)  # XOR
        1.0
    """
    c1, c2, cy = _all_codes(x1=x1, x2=x2, y=y)
    counts = np.zeros((c1.max() + 1, c2.max() + 1, cy.max() + 1))
    np.add.at(counts, (c1, c2, cy), 1.0)
    return pid_from_table(counts, base=base, tol=tol, max_iter=max_iter)


_ATOMS = ("redundancy", "unique_1", "unique_2", "synergy")
_NOISE_BUDGET_BITS = 0.1  #: the default cluster count keeps the plug-in bias of I(Y; X1, X2) near this


def default_clusters(n: int, classes: int) -> int:
    r"""The k-means cluster count :func:`representation_pid` uses by default.

    The plug-in :math:`I(Y; X_1, X_2)` of two unrelated k-cluster codes and an m-class target is biased up by
    about :math:`(k^2 - 1)(m - 1) / 2N` nats, and that bias is what the PID's atoms of pure noise add up to.
    The default is the largest k that keeps it at or below 0.1 bits, but never more than m (more clusters
    than classes only add bias) and never fewer than 2.

    Args:
        n: the number of test rows N.
        classes: the number of target classes m.

    Returns:
        k, an int in [2, max(m, 2)].

    Example:
        >>> default_clusters(1000, 10), default_clusters(2000, 10), default_clusters(1000, 4)
        (4, 5, 4)
    """
    n, classes = check_positive_int(n, "n"), check_positive_int(classes, "classes")
    if classes == 1:
        return 2
    k = int(math.isqrt(1 + int(_NOISE_BUDGET_BITS * math.log(2) * 2 * n / (classes - 1))))
    return max(2, min(classes, k))


def _kmeans_codes(train: torch.Tensor, test: torch.Tensor, *, k: int, normalize: bool, seed: int) -> np.ndarray:
    """Cluster indices of the ``test`` rows under k-means fitted on the ``train`` rows."""
    if normalize:
        train, test = l2_normalize(train), l2_normalize(test)
    from sklearn.cluster import KMeans  # imported here: sklearn.cluster alone takes ~0.4 s to import

    with _one_thread():  # a few thousand rows: more threads only wait on each other on a busy machine
        model = KMeans(n_clusters=k, n_init=4, random_state=seed).fit(train.numpy())
        return model.predict(test.numpy()).astype(np.int64)


def representation_pid(z1_train, z2_train, z1_test, z2_test, y_test, *, clusters: int | None = None,
                       normalize: bool = True, seed: int = 0, permutations: int = 5, base: float = 2,
                       tol: float = 1e-7) -> dict:
    r"""How two representations' information about a discrete target splits into R, U1, U2 and S.

    Each representation is discretised by k-means (``clusters`` centroids fitted on its train rows,
    unit-normalised when ``normalize``; each test row takes its nearest centroid), and :func:`pid` is
    estimated on the test codes with the plug-in distribution. It is the decomposition of the two *cluster
    codes*: what k-means discards is in none of the atoms, and two towers that both separate the classes
    can still look partly unique when there are fewer clusters than classes, because each tower's k-means
    groups the classes its own way (measured, two towers that both separate 10 classes, N = 1000: 4 clusters
    give R = 1.0 and U1 = U2 = 0.96 bits; 10 clusters give R = 3.32 bits and no uniqueness).

    More clusters raise the plug-in bias instead, and it lands mostly in the synergy. So the same codes are
    also decomposed against randomly permuted targets: whatever they show is estimation noise, what pure
    noise gives at this N with these codes (``noise_*``, the mean over ``permutations`` shuffles). By default
    the cluster count is :func:`default_clusters` (N, classes): for a 10-class target 4 clusters at
    N = 1000 and 5 at N = 2000. Measured there, with two unrelated codes (the worst case): noise atoms
    R, U1, U2, S = 0.005, 0.019, 0.014, 0.065 bits at N = 1000 (4 clusters) and 0.004, 0.011, 0.012, 0.063
    bits at N = 2000 (5 clusters); 8 clusters would give a noise synergy of 0.40 bits at N = 1000 and 0.18
    at N = 2000. An atom is worth reading only where it clearly exceeds its noise value.

    References:
        Bertschinger, Rauh, Olbrich, Jost & Ay, "Quantifying Unique Information", Entropy 2014;
        Liang et al., "Quantifying & Modeling Multimodal Interactions: An Information Decomposition
        Framework", NeurIPS 2023 (the PID of multimodal data sets and models).

    Args:
        z1_train: (N1, D1) features of the first representation, to fit its clusters.
        z2_train: (N2, D2) features of the second representation, to fit its clusters.
        z1_test: (N, D1) features of the first representation on the evaluated items.
        z2_test: (N, D2) features of the second representation, row i the same item as ``z1_test[i]``.
        y_test: (N,) target codes (integer or string labels) of the evaluated items.
        clusters: k-means centroids per representation; default :func:`default_clusters` (N, classes).
        normalize: cluster unit-normalised rows (the geometry contrastive objectives shape).
        seed: seed of k-means and of the permutations.
        permutations: shuffles of ``y_test`` averaged for the noise atoms (0 for none).
        base: the logarithm's base.
        tol: the certified accuracy of each atom (see :func:`pid_from_table`).

    Returns:
        the dict of :func:`pid_from_table` plus ``"clusters"``, ``"n"`` (test rows) and ``"noise_redundancy"``,
        ``"noise_unique_1"``, ``"noise_unique_2"``, ``"noise_synergy"`` (NaN when ``permutations`` is 0).

    Raises:
        ValueError: for mismatched rows or widths, NaN features, more clusters than train rows, bad labels or a
            bad option.

    Example:
        >>> import numpy as np
        >>> y = np.arange(800) % 4
        >>> z = np.eye(4)[y] + 0.05 * np.random.default_rng(0).normal(size=(800, 4))
        >>> out = representation_pid(z[:400], z[:400], z[400:], z[400:], y[400:])  # one tower, twice
        >>> out["clusters"], round(out["redundancy"], 4), out["mi_joint"] - out["redundancy"] < 1e-6
        (4, 2.0, True)
    """
    return representation_pids(z1_train, z2_train, z1_test, z2_test, {"y": y_test}, clusters=clusters,
                               normalize=normalize, seed=seed, permutations=permutations, base=base, tol=tol)["y"]


def _probe_codes(train: torch.Tensor, y_train: np.ndarray, test: torch.Tensor) -> np.ndarray:
    """What a linear probe fitted on the train rows predicts for the test rows: the target as the representation
    lets a linear readout tell it."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning

    from contrastlab.evaluation.probe import fit_probe

    if len(np.unique(y_train)) < 2:
        return np.zeros(test.shape[0], dtype=np.int64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return fit_probe(train.numpy(), y_train).predict(test.numpy())


#: How a representation becomes a discrete code for the PID (see :func:`representation_pids`).
DISCRETIZERS = ("kmeans", "probe")


def representation_pids(z1_train, z2_train, z1_test, z2_test, targets, *, train_targets=None,
                        discretize: str = "kmeans", clusters: int | None = None, normalize: bool = True,
                        seed: int = 0, permutations: int = 5, base: float = 2, tol: float = 1e-7) -> dict[str, dict]:
    r""":func:`representation_pid` about several targets of the same items.

    Two ways to make each representation a discrete code:

    * ``"kmeans"`` (as :func:`representation_pid`): k-means clusters, target-blind, one clustering per cluster count
      (the targets' default counts differ with their number of classes). What the clusters follow is the
      representation's largest variation, which need not be the target's.
    * ``"probe"``: each representation's code is what a linear probe fitted on its train rows
      (``train_targets``) predicts for the test rows — the target as a linear readout of that representation
      tells it. Redundancy and uniqueness then say which representation lets the target be read and which both
      do; synergy between two such readouts is underestimated (each probe sees one representation), so a
      representation's information that only matters jointly with the other's is not credited.

    Args:
        targets: target name -> (N,) codes of the evaluated items.
        train_targets: target name -> codes of the train rows (needed for ``"probe"``).
        discretize: ``"kmeans"`` or ``"probe"``.
        (the rest as in :func:`representation_pid`; ``clusters`` and ``normalize`` are k-means options)

    Returns:
        Target name -> the dict :func:`representation_pid` returns, with ``"discretize"``.

    Raises:
        ValueError: as :func:`representation_pid`; an unknown ``discretize``, or ``"probe"`` without the train
            targets of every target.

    Example:
        >>> import numpy as np
        >>> y = np.arange(800) % 4
        >>> z = np.eye(4)[y] + 0.05 * np.random.default_rng(0).normal(size=(800, 4))
        >>> out = representation_pids(z[:400], z[:400], z[400:], z[400:], {"y": y[400:], "parity": y[400:] % 2})
        >>> sorted(out), round(out["y"]["redundancy"], 4), out["y"]["clusters"], out["parity"]["clusters"]
        (['parity', 'y'], 2.0, 4, 2)
        >>> a, b = np.arange(800) % 2, (np.arange(800) // 2) % 2  # two independent bits, one per representation
        >>> za, zb = a[:, None] + 0.1 * np.random.default_rng(1).normal(size=(800, 1)), b[:, None] * 1.0
        >>> y2 = 2 * a + b
        >>> p = representation_pids(za[:400], zb[:400], za[400:], zb[400:], {"y": y2[400:]},
        ...                         train_targets={"y": y2[:400]}, discretize="probe")["y"]
        >>> round(p["unique_1"], 2), round(p["unique_2"], 2), round(p["redundancy"], 2)
        (1.0, 1.0, 0.0)
    """
    if discretize not in DISCRETIZERS:
        raise ValueError(f"discretize must be one of {', '.join(map(repr, DISCRETIZERS))}; got {discretize!r}")
    if isinstance(permutations, bool) or not isinstance(permutations, (int, np.integer)) or permutations < 0:
        raise ValueError(f"permutations must be an integer >= 0; got {permutations!r}")
    feats = {name: as_features(z, name=name, dtype=torch.float64) for name, z in
             (("z1_train", z1_train), ("z2_train", z2_train), ("z1_test", z1_test), ("z2_test", z2_test))}
    for tower in ("z1", "z2"):
        train, test = feats[f"{tower}_train"], feats[f"{tower}_test"]
        if train.shape[1] != test.shape[1]:
            raise ValueError(f"{tower}_train and {tower}_test must have the same width D; "
                             f"got {train.shape[1]} and {test.shape[1]}")
    if discretize == "probe":
        missing = sorted(set(targets) - set(train_targets or {}))
        if missing:
            raise ValueError(f"discretize='probe' needs train_targets for every target; missing {missing}")
        if feats["z1_train"].shape[0] != feats["z2_train"].shape[0]:
            raise ValueError("discretize='probe' needs the same train rows for both representations")
    codes: dict[object, tuple[np.ndarray, np.ndarray]] = {}
    results: dict[str, dict] = {}
    for target, y_test in targets.items():
        cy = _codes(y_test, "y_test")
        n = len(cy)
        if not feats["z1_test"].shape[0] == feats["z2_test"].shape[0] == n:
            raise ValueError(f"z1_test, z2_test and y_test must have the same number of rows; got z1_test: "
                             f"{feats['z1_test'].shape[0]}, z2_test: {feats['z2_test'].shape[0]}, y_test: {n}")
        if discretize == "probe":
            y_train = np.asarray(train_targets[target])
            if len(y_train) != feats["z1_train"].shape[0]:
                raise ValueError(f"train_targets[{target!r}] has {len(y_train)} rows, the train features "
                                 f"{feats['z1_train'].shape[0]}")
            c1, c2 = (_codes(_probe_codes(feats[f"{t}_train"], y_train, feats[f"{t}_test"]), "codes")
                      for t in ("z1", "z2"))
            extra = {"discretize": "probe"}
        else:
            k = default_clusters(n, int(cy.max()) + 1) if clusters is None else check_positive_int(clusters, "clusters")
            for tower in ("z1", "z2"):
                if k > feats[f"{tower}_train"].shape[0]:
                    raise ValueError(f"clusters={k} exceeds the {feats[f'{tower}_train'].shape[0]} rows of "
                                     f"{tower}_train")
            if k not in codes:
                codes[k] = tuple(_kmeans_codes(feats[f"{t}_train"], feats[f"{t}_test"], k=k, normalize=normalize,
                                               seed=seed) for t in ("z1", "z2"))
            c1, c2 = codes[k]
            extra = {"discretize": "kmeans", "clusters": k}
        out = {**pid(c1, c2, cy, base=base, tol=tol), **extra, "n": n}
        rng = np.random.default_rng(seed)
        noise = [pid(c1, c2, rng.permutation(cy), base=base, tol=tol) for _ in range(permutations)]
        for atom in _ATOMS:
            out[f"noise_{atom}"] = float(np.mean([result[atom] for result in noise])) if noise else math.nan
        results[target] = out
    return results
