"""A 2-D t-SNE map of features, coloured by class."""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure
from sklearn.manifold import TSNE

from contrastlab.plots._figure import PALETTE, as_numpy, class_name, new_figure


def tsne_plot(features, labels=None, *, max_points: int = 600, perplexity: float = 30.0, seed: int = 0,
              title: str = "t-SNE of the features", class_names=None, max_iter: int = 500,
              pca_dims: int = 50) -> Figure:
    """Embed features in 2-D with t-SNE (scikit-learn, PCA initialisation) and scatter them.

    Wide features are first projected on their top ``pca_dims`` principal directions (the usual practice of
    van der Maaten & Hinton, §4.1): the map barely changes and the neighbour search gets several times cheaper.

    References:
        van der Maaten & Hinton, "Visualizing Data using t-SNE", JMLR 2008.

    Args:
        features: (N, D) features, N ≥ 4.
        labels: optional (N,) labels for the colours.
        max_points: a random subset of at most this many points is embedded.
        perplexity: t-SNE perplexity, lowered to (n − 1) / 3 for small n.
        seed: seeds the subset and t-SNE.
        title: the figure title.
        class_names: the class names in label order, for the legend (default: the labels).
        max_iter: t-SNE iterations (500 settle a map of a few hundred points).
        pca_dims: project wider features on this many principal directions first.

    Returns:
        The matplotlib figure.

    Raises:
        ValueError: for fewer than 4 points or mismatched labels.

    Example:
        >>> fig = tsne_plot(np.random.randn(30, 5), np.arange(30) % 2, perplexity=5)
        >>> len(fig.axes)
        1
        >>> fig = tsne_plot(np.random.randn(30, 5), np.arange(30) % 2, perplexity=5, class_names=["cat", "dog"])
        >>> [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
        ['cat', 'dog']
    """
    x = as_numpy(features).astype(np.float64)
    if x.ndim != 2 or x.shape[0] < 4:
        raise ValueError(f"features must have shape (N, D) with N >= 4; got {x.shape}")
    y = None if labels is None else as_numpy(labels).reshape(-1)
    if y is not None and y.shape[0] != x.shape[0]:
        raise ValueError(f"labels must have shape ({x.shape[0]},); got {y.shape}")
    rng = np.random.default_rng(seed)
    keep = np.sort(rng.choice(x.shape[0], size=min(max_points, x.shape[0]), replace=False))
    x = x[keep]
    if x.shape[1] > pca_dims:
        centred = x - x.mean(axis=0)
        _, _, vt = np.linalg.svd(centred, full_matrices=False)
        x = centred @ vt[:pca_dims].T
    perplexity = min(float(perplexity), (x.shape[0] - 1) / 3)
    xy = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed,
              max_iter=max_iter).fit_transform(x)
    fig = new_figure(5.0, 4.4)
    ax = fig.add_subplot(1, 1, 1)
    if y is None:
        ax.scatter(xy[:, 0], xy[:, 1], s=6, color=PALETTE[0], alpha=0.7, linewidths=0)
    else:
        y = y[keep]
        classes = np.unique(y)
        for i, c in enumerate(classes):
            ax.scatter(xy[y == c, 0], xy[y == c, 1], s=6, color=PALETTE[i % len(PALETTE)], alpha=0.7,
                       linewidths=0, label=class_name(c, class_names) if len(classes) <= 20 else None)
        if len(classes) <= 20:
            ax.legend(fontsize=7, markerscale=2, loc="best", ncols=2)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(f"{title} ({x.shape[0]} points)", fontsize=10)
    return fig
