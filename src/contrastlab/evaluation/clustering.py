r"""k-means clustering of embeddings, scored against labels or factor values by NMI and ARI.

k-means runs on one thread: on the few thousand items an evaluation clusters, extra OpenMP threads
gain little and, on a machine busy with other work, spend most of their time waiting for each other
(measured: 0.5 s on one thread against 0.8-14 s on two for the five encoders of a Shapes evaluation).
The scores of that evaluation came out identical on one and on two threads.
"""

from __future__ import annotations

import contextlib

import numpy as np

from contrastlab.evaluation._arrays import as_features, as_labels, check_positive_int, l2_normalize


def _one_thread():
    """scikit-learn's k-means on one OpenMP thread and one BLAS thread (threadpoolctl)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - scikit-learn brings it
        return contextlib.nullcontext()
    return threadpool_limits(limits=1)


def cluster_scores(features, labels, *, n_clusters: int | None = None, normalize: bool = True,
                   seed: int = 0, n_init: int = 4) -> dict[str, float]:
    r"""Cluster with k-means and compare the clusters with the labels.

    NMI uses the arithmetic mean of the entropies,
    :math:`\mathrm{NMI}(U, V) = \frac{I(U; V)}{(H(U) + H(V))/2}`; ARI is Hubert & Arabie's
    chance-adjusted Rand index. Both are 1 for clusters equal to the labels up to renaming and
    about 0 for clusters unrelated to them.

    References:
        Strehl & Ghosh, "Cluster Ensembles", JMLR 2002 (NMI); Hubert & Arabie, "Comparing
        Partitions", Journal of Classification 1985 (ARI).

    Args:
        features: (N, D) embeddings.
        labels: (N,) integer labels or factor values.
        n_clusters: the number of clusters; default the number of distinct labels.
        normalize: cluster unit-normalised rows (the geometry contrastive objectives shape).
        seed: seed of the k-means initialisation.
        n_init: k-means restarts.

    Returns:
        ``{"nmi": ..., "ari": ..., "n_clusters": ...}``.

    Raises:
        ValueError: for mismatched shapes or fewer items than clusters.

    Example:
        >>> import numpy as np
        >>> x = np.concatenate([np.tile([1.0, 0.0], (10, 1)), np.tile([0.0, 1.0], (10, 1))])
        >>> cluster_scores(x, np.repeat([0, 1], 10))["ari"]
        1.0
    """
    x = as_features(features)
    y = as_labels(labels, x.shape[0])
    k = len(np.unique(y)) if n_clusters is None else check_positive_int(n_clusters, "n_clusters")
    n_init = check_positive_int(n_init, "n_init")
    if k > x.shape[0]:
        raise ValueError(f"n_clusters={k} exceeds the {x.shape[0]} items")
    if normalize:
        x = l2_normalize(x)
    from sklearn.cluster import KMeans  # imported here: sklearn.cluster alone takes ~0.4 s to import
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    with _one_thread():  # a few thousand items: more threads only wait on each other on a busy machine
        assigned = KMeans(n_clusters=k, n_init=n_init, random_state=seed).fit_predict(x.double().numpy())
    return {"nmi": float(normalized_mutual_info_score(y, assigned)),
            "ari": float(adjusted_rand_score(y, assigned)), "n_clusters": int(k)}
