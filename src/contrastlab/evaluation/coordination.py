r"""How well two towers (or two raw modalities) are coordinated, measured on held-out items through CCA.

Coordination methods (CMU MMML lecture 4.1) learn one representation per modality, tied by a coordination
function: correlation (CCA, deep CCA), similarity (a contrastive dual encoder), or a shared code they must both
reconstruct from (a multimodal autoencoder). To compare them on one scale, :func:`coordination_report` fits
linear CCA on the *training* items' features of the two modalities and measures, on *held-out* items,

* the canonical correlations :math:`\rho_j = \operatorname{corr}(X u_j, Y v_j)` of the top :math:`k` pairs
  (in-sample correlations of high-dimensional features are trivially near 1, held-out ones are not);
* cross-modal retrieval in the canonical space: cosine similarity between the two modalities' canonical
  variates, recall@K in both directions;
* downstream accuracy: a linear probe on both modalities' canonical variates side by side.

This is how Andrew et al. (2013) read out deep CCA (linear CCA on the networks' outputs), and it applies
unchanged to linear CCA on raw inputs (the networks are the identity) and to any other pair of towers.

References:
    Hotelling, "Relations between two sets of variates", Biometrika 1936.
    Andrew, Arora, Bilmes & Livescu, "Deep Canonical Correlation Analysis", ICML 2013.
"""

from __future__ import annotations

import numpy as np
import torch

from contrastlab.evaluation._arrays import as_features, check_positive_int
from contrastlab.evaluation.probe import linear_probe
from contrastlab.evaluation.retrieval import retrieval_metrics


def pca_fit(x: np.ndarray, n_components: int) -> tuple[np.ndarray, np.ndarray]:
    r"""Principal directions of the rows of ``x``: the mean ``(D,)`` and the top directions ``(D, k)``.

    With :math:`X_c = U S V^\top` the centred data, the directions are the first
    :math:`k = \min(\text{n\_components}, \operatorname{rank})` columns of :math:`V`.

    Args:
        x: (N, D) float64 data.
        n_components: the most directions to keep.

    Returns:
        ``(mean, directions)``; project with ``(x - mean) @ directions``.

    Example:
        >>> x = np.array([[0.0, 0.0], [2.0, 0.0], [4.0, 0.1]])
        >>> mean, w = pca_fit(x, 1)
        >>> w.shape, bool(abs(w[0, 0]) > 0.99)
        ((2, 1), True)
    """
    mean = x.mean(axis=0)
    _, s, vt = np.linalg.svd(x - mean, full_matrices=False)
    rank = int((s > s[0] * 1e-10).sum()) if s.size and s[0] > 0 else 0
    k = max(1, min(int(n_components), rank))
    return mean, vt[:k].T


def _prepare(train, test, max_dim: int | None, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Both splits projected on the training split's principal directions, scaled to unit mean variance."""
    xtr = as_features(train, name=f"train_{name}", dtype=torch.float64).numpy()
    xte = as_features(test, name=f"test_{name}", dtype=torch.float64).numpy()
    if xtr.shape[1] != xte.shape[1]:
        raise ValueError(f"train_{name} and test_{name} differ in width: {xtr.shape[1]} vs {xte.shape[1]}")
    mean, directions = pca_fit(xtr, max_dim if max_dim is not None else xtr.shape[1])
    ptr, pte = (xtr - mean) @ directions, (xte - mean) @ directions
    scale = np.sqrt(max(float(ptr.var(axis=0).mean()), 1e-300))
    return ptr / scale, pte / scale


def _column_correlations(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation of column j of ``a`` with column j of ``b``, for every j: (k,)."""
    a = a - a.mean(axis=0)
    b = b - b.mean(axis=0)
    denom = np.sqrt((a * a).sum(axis=0) * (b * b).sum(axis=0))
    return np.where(denom > 0, (a * b).sum(axis=0) / np.where(denom > 0, denom, 1.0), 0.0)


def coordination_report(train_a, train_b, test_a, test_b, *, n_components: int = 10, reg: float = 1e-3,
                        max_dim: int | None = None, train_labels=None, test_labels=None,
                        names: tuple[str, str] = ("a", "b")) -> dict:
    r"""Linear CCA fitted on training pairs, measured on held-out pairs.

    Each modality's features are first projected on their top ``max_dim`` principal directions (training
    split; none when ``None``) and scaled to unit mean variance, so ``reg`` is relative to the data. Then
    :class:`~contrastlab.objectives.cca.LinearCCA` with :math:`k` components gives projections :math:`U, V`
    and the held-out canonical variates :math:`X_{te} U, Y_{te} V`.

    Args:
        train_a: (N, p) training features of modality a.
        train_b: (N, q) training features of modality b, row i the same item as ``train_a[i]``.
        test_a: (M, p) held-out features of modality a.
        test_b: (M, q) held-out features of modality b.
        n_components: :math:`k`, the canonical pairs kept (at most the smaller reduced width).
        reg: ridge added to both covariances (after the scaling).
        max_dim: reduce each modality to this many principal directions first (needed when p or q is not
            well below N).
        train_labels: (N,) class labels for the downstream probe, or ``None``.
        test_labels: (M,) class labels, or ``None``.
        names: the two modalities' names, used in the retrieval keys.

    Returns:
        ``{"n_components", "dims", "train_correlations", "test_correlations", "mean_test_correlation",
        "retrieval": {"a->b": {...}, "b->a": {...}}, "probe": {...}}`` (``probe`` only with labels).

    Raises:
        ValueError: for mismatched rows or widths, too few items, or a bad option.

    Example:
        >>> g = np.random.default_rng(0)
        >>> s = g.normal(size=(400, 2))
        >>> a = np.hstack([s, g.normal(size=(400, 3))])
        >>> b = np.hstack([s @ [[1.0, 1.0], [0.0, 1.0]], g.normal(size=(400, 2))])
        >>> r = coordination_report(a[:300], b[:300], a[300:], b[300:], n_components=2)
        >>> [round(c, 2) for c in r["test_correlations"]], r["retrieval"]["a->b"]["R@10"] > 0.5
        ([1.0, 1.0], True)
    """
    from contrastlab.objectives.cca import LinearCCA

    n_components = check_positive_int(n_components, "n_components")
    if max_dim is not None:
        max_dim = check_positive_int(max_dim, "max_dim")
    if not (isinstance(reg, (int, float)) and reg >= 0):
        raise ValueError(f"reg must be a number >= 0; got {reg!r}")
    xtr, xte = _prepare(train_a, test_a, max_dim, "a")
    ytr, yte = _prepare(train_b, test_b, max_dim, "b")
    if xtr.shape[0] != ytr.shape[0] or xte.shape[0] != yte.shape[0]:
        raise ValueError(f"the two modalities must have the same items; got {xtr.shape[0]} and {ytr.shape[0]} "
                         f"training rows, {xte.shape[0]} and {yte.shape[0]} held-out rows")
    if xte.shape[0] < 2:
        raise ValueError(f"need at least 2 held-out items; got {xte.shape[0]}")
    k = min(n_components, xtr.shape[1], ytr.shape[1])
    cca = LinearCCA(n_components=k, reg=reg).fit(xtr, ytr)
    ate, bte = cca.transform(xte, yte)
    test_rho = _column_correlations(ate, bte)
    out = {
        "n_components": int(k),
        "dims": [int(xtr.shape[1]), int(ytr.shape[1])],
        "train_correlations": [float(r) for r in cca.correlations_],
        "test_correlations": [float(r) for r in test_rho],
        "mean_test_correlation": float(test_rho.mean()),
        "retrieval": retrieval_metrics(torch.from_numpy(ate), torch.from_numpy(bte), names=names),
    }
    if train_labels is not None and test_labels is not None:
        atr, btr = cca.transform(xtr, ytr)
        out["probe"] = linear_probe(np.hstack([atr, btr]), train_labels, np.hstack([ate, bte]), test_labels)
    return out
