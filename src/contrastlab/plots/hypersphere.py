r"""Embeddings on the circle: where the points sit and how their angles are distributed, per class.

Wang & Isola (2020, Fig. 3) map CIFAR-10 to :math:`S^1` and plot, for all points and for each class,
a kernel density estimate of the angle :math:`\theta = \operatorname{atan2}(y, x)`; a uniform
representation gives a flat density, an aligned one a peak per class. The density here is a von
Mises kernel estimate,

.. math:: \hat p(\theta) = \frac{1}{N} \sum_{i=1}^{N} \frac{e^{\kappa \cos(\theta - \theta_i)}}{2\pi I_0(\kappa)} .
"""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Circle
from scipy.special import i0e

from contrastlab.plots._figure import PALETTE, as_numpy, class_name, new_figure


def circle_angles(embeddings) -> tuple[np.ndarray, str]:
    """Angles of the embeddings on the unit circle, and how they were obtained.

    2-D embeddings are used as they are; wider ones are first projected on their two leading
    principal components (then the plot shows a projection, and its title says so).

    Args:
        embeddings: (N, D) with D ≥ 2.

    Returns:
        ``(angles (N,) in (−π, π], description)``.

    Raises:
        ValueError: for D < 2.

    Example:
        >>> circle_angles(np.array([[1.0, 0.0], [0.0, 2.0]]))[0].round(4).tolist()
        [0.0, 1.5708]
    """
    x = as_numpy(embeddings).astype(np.float64)
    if x.ndim != 2 or x.shape[1] < 2:
        raise ValueError(f"embeddings must have shape (N, D) with D >= 2; got {x.shape}")
    if x.shape[1] == 2:
        return np.arctan2(x[:, 1], x[:, 0]), "2-D embeddings"
    centred = x - x.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    p = centred @ vt[:2].T
    return np.arctan2(p[:, 1], p[:, 0]), f"{x.shape[1]}-D embeddings, top-2 PCA projection"


def von_mises_density(angles, grid, *, kappa: float = 8.0) -> np.ndarray:
    r"""The von Mises kernel density of ``angles`` evaluated at ``grid`` (both in radians).

    Args:
        angles: (N,) angles of the points.
        grid: (G,) angles to evaluate the density at.
        kappa: the kernel concentration κ > 0 (larger is narrower).

    Returns:
        (G,) densities; they integrate to 1 over a period.

    Raises:
        ValueError: for κ ≤ 0.

    Example:
        >>> g = np.linspace(-np.pi, np.pi, 2001)
        >>> round(float(np.trapezoid(von_mises_density([0.3], g), g)), 4)
        1.0
    """
    if not kappa > 0:
        raise ValueError(f"kappa must be > 0; got {kappa!r}")
    a = np.asarray(angles, dtype=np.float64).reshape(-1, 1)
    g = np.asarray(grid, dtype=np.float64).reshape(1, -1)
    return (np.exp(kappa * (np.cos(g - a) - 1.0)) / (2 * np.pi * i0e(kappa))).mean(axis=0)


def hypersphere_plot(embeddings, labels=None, *, kappa: float = 8.0, max_classes: int = 10,
                     title: str = "Embeddings on the circle", class_names=None) -> Figure:
    r"""Points on :math:`S^1` and the density of their angles, overall and per class.

    Args:
        embeddings: (N, D) embeddings, D ≥ 2 (see :func:`circle_angles`).
        labels: optional (N,) class labels; one density panel per class (the first ``max_classes``).
        kappa: the von Mises kernel concentration.
        max_classes: at most this many per-class panels.
        title: the figure title.
        class_names: the class names in label order, for the panel titles (default: the labels).

    Returns:
        The matplotlib figure.

    Raises:
        ValueError: for D < 2 or mismatched labels.

    Example:
        >>> fig = hypersphere_plot(np.random.randn(50, 2), np.arange(50) % 3)
        >>> len(fig.axes)
        5
        >>> fig = hypersphere_plot(np.random.randn(50, 2), np.arange(50) % 2, class_names=["cat", "dog"])
        >>> [ax.get_title() for ax in fig.axes[2:]]
        ['cat', 'dog']
    """
    theta, how = circle_angles(embeddings)
    y = None if labels is None else as_numpy(labels).reshape(-1)
    if y is not None and y.shape[0] != theta.shape[0]:
        raise ValueError(f"labels must have shape ({theta.shape[0]},); got {y.shape}")
    classes = [] if y is None else list(np.unique(y))[:max_classes]
    grid = np.linspace(-np.pi, np.pi, 361)
    panels = 2 + len(classes)
    rows = 1 if panels <= 6 else 2
    cols = -(-panels // rows)
    fig = new_figure(2.3 * cols, 2.4 * rows + 0.4)
    fig.suptitle(f"{title} ({how})", fontsize=10)

    ax = fig.add_subplot(rows, cols, 1)
    colours = ["#1f77b4"] * len(theta) if y is None else [
        PALETTE[classes.index(v) % len(PALETTE)] if v in classes else "#bbbbbb" for v in y]
    ax.add_patch(Circle((0, 0), 1, fill=False, color="#999999"))
    ax.scatter(np.cos(theta), np.sin(theta), s=6, c=colours, alpha=0.5, linewidths=0)
    ax.set_xlim(-1.2, 1.2)
    ax.set_ylim(-1.2, 1.2)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title("points", fontsize=9)

    shared = {}

    def density_panel(position: int, angles: np.ndarray, name: str, colour: str) -> None:
        ax = fig.add_subplot(rows, cols, position, sharey=shared.get("ax"))
        shared.setdefault("ax", ax)
        ax.fill_between(grid, von_mises_density(angles, grid, kappa=kappa), color=colour, alpha=0.6)
        ax.axhline(1 / (2 * np.pi), color="#555555", lw=0.8, ls="--")  # the uniform density
        ax.set_xlim(-np.pi, np.pi)
        ax.set_xticks([-np.pi, 0, np.pi], ["−π", "0", "π"])
        ax.set_title(name, fontsize=9)
        ax.tick_params(labelsize=7)

    density_panel(2, theta, "all (density of angles)", "#555555")
    for i, c in enumerate(classes):
        name = class_name(c, class_names) if class_names is not None else f"class {class_name(c)}"
        density_panel(3 + i, theta[y == c], name, PALETTE[i % len(PALETTE)])
    return fig
