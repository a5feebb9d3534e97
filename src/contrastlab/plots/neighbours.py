"""Nearest-neighbour grids: each query image followed by its k nearest neighbours, nearest first."""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from contrastlab.plots._figure import as_numpy, class_name, new_figure


def _displayable(images: np.ndarray) -> np.ndarray:
    """(N, C, H, W) or (N, H, W) to (N, H, W, 3) or (N, H, W) in [0, 1] for imshow."""
    a = images.astype(np.float64)
    if a.ndim == 4:
        if a.shape[1] not in (1, 3):
            raise ValueError(f"images must have 1 or 3 channels; got shape {images.shape}")
        a = a[:, 0] if a.shape[1] == 1 else a.transpose(0, 2, 3, 1)
    elif a.ndim != 3:
        raise ValueError(f"images must have shape (N, C, H, W) or (N, H, W); got {images.shape}")
    lo, hi = a.min(), a.max()
    if lo < 0 or hi > 1:  # not already in [0, 1]: one scale for all images keeps them comparable
        a = (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)
    return a


def neighbour_grid(images, queries, neighbours, similarities=None, *, title: str = "Nearest neighbours",
                   neighbour_images=None, labels=None, neighbour_labels=None, class_names=None) -> Figure:
    r"""A grid with one row per query: the query, then its neighbours from nearest to farthest.

    This is the figure of the homework's questions 7 and 8 ("near → far, NN 1 is closest").

    Args:
        images: (N, C, H, W) or (N, H, W) query images, C ∈ {1, 3}; values in [0, 1] are shown as
            they are, anything else is rescaled to [0, 1] by the overall minimum and maximum.
        queries: (Q,) row indices of the query images.
        neighbours: (Q, k) row indices of each query's neighbours, nearest first, into
            ``neighbour_images`` (or ``images`` when that is ``None``).
        similarities: optional (Q, k) cosine similarities, printed under each neighbour.
        title: the figure title.
        neighbour_images: the images the neighbours index, when they come from another set.
        labels: optional (N,) class labels of ``images``; each tile is then captioned with its class name,
            a neighbour's in green when it shares the query's class and in red when not.
        neighbour_labels: (N',) labels of ``neighbour_images`` (default ``labels``).
        class_names: the class names in label order; labels without a name are shown as numbers.

    Returns:
        The matplotlib figure.

    Raises:
        ValueError: for images that are not 1- or 3-channel, or mismatched index shapes.

    Example:
        >>> import numpy as np
        >>> fig = neighbour_grid(np.random.rand(6, 3, 8, 8), [0, 1], [[1, 2], [0, 3]])
        >>> len(fig.axes)  # one mosaic: a row per query, the query first
        1
        >>> fig = neighbour_grid(np.random.rand(6, 3, 8, 8), [0], [[1, 2]], labels=[0, 0, 1, 1, 0, 1],
        ...                      class_names=["cat", "dog"])
        >>> [t.get_text() for t in fig.axes[0].texts if t.get_text() in ("cat", "dog")]
        ['cat', 'cat', 'dog']
    """
    shown = _displayable(as_numpy(images))
    pool = shown if neighbour_images is None else _displayable(as_numpy(neighbour_images))
    q = as_numpy(queries).astype(np.int64).reshape(-1)
    nn = as_numpy(neighbours).astype(np.int64)
    if nn.ndim != 2 or nn.shape[0] != q.shape[0]:
        raise ValueError(f"neighbours must have shape (Q, k) with Q = {q.shape[0]}; got {nn.shape}")
    sims = None if similarities is None else as_numpy(similarities)
    names = None if labels is None else as_numpy(labels).reshape(-1)
    pool_names = names if neighbour_labels is None else as_numpy(neighbour_labels).reshape(-1)
    if names is not None and (names.shape[0] < shown.shape[0] or pool_names.shape[0] < pool.shape[0]):
        raise ValueError(f"labels must give one label per image; got {names.shape[0]} labels for "
                         f"{shown.shape[0]} images and {pool_names.shape[0]} for {pool.shape[0]} neighbour images")
    rows, cols = q.shape[0], nn.shape[1] + 1
    if shown.ndim == 3:  # grey: three equal channels, so one mosaic serves both
        shown, pool = (np.repeat(a[..., None], 3, axis=-1) for a in (shown, pool))
    h, w = shown.shape[1:3]
    under = (sims is not None) + (names is not None)  # text lines under a tile
    gap = max(1, h // 8) if not under else max(2, h // 3) if under == 1 else max(3, (7 * h) // 10)
    sep = max(2, h // 4)  # between the query column and the neighbours
    mosaic = np.ones((rows * (h + gap), cols * (w + gap) - gap + sep, 3))
    for r in range(rows):
        for c in range(cols):
            left = c * (w + gap) + (sep if c > 0 else 0)
            top = r * (h + gap)
            mosaic[top:top + h, left:left + w] = shown[q[r]] if c == 0 else pool[nn[r, c - 1]]
    width = 0.75 * cols + 0.3  # about 3/4 inch per tile
    fig = new_figure(width, width * mosaic.shape[0] / mosaic.shape[1] + 0.7)
    lines = [title, "near → far, NN 1 is closest"] + (["class: green, the query's; red, another"]
                                                      if names is not None else [])
    narrow = cols <= 5  # a short row of tiles: one idea per title line, smaller
    fig.suptitle("\n".join(lines) if narrow else f"{title} ({lines[1]})" + "".join(f"\n{x}" for x in lines[2:]),
                 fontsize=7 if narrow else 9)
    ax = fig.add_subplot(1, 1, 1)
    ax.imshow(mosaic, interpolation="nearest")
    ax.set_axis_off()

    def short(label) -> str:
        text = class_name(label, class_names)
        return text if len(text) <= 11 else text[:10] + "…"

    for c in range(cols):
        x = c * (w + gap) + (sep if c > 0 else 0) + w / 2
        ax.text(x, -0.5, "query" if c == 0 else f"NN {c}", ha="center", va="bottom", fontsize=7)
        for r in range(rows):
            below = r * (h + gap) + h + gap / 2
            if names is not None:
                query = names[q[r]]
                label = query if c == 0 else pool_names[nn[r, c - 1]]
                colour = "#1d2330" if c == 0 else "#1b7f3b" if label == query else "#b3261e"
                ax.text(x, below - (gap / 4 if under == 2 else 0), short(label), ha="center", va="center",
                        fontsize=6, color=colour, fontweight="bold" if c == 0 else "normal")
            if c > 0 and sims is not None:
                ax.text(x, below + (gap / 4 if under == 2 else 0), f"{sims[r, c - 1]:.2f}", ha="center",
                        va="center", fontsize=6, color="#333333")
    return fig
