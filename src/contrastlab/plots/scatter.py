r"""Alignment against uniformity over several runs, coloured by downstream accuracy.

Wang & Isola (2020, Fig. 7) place each encoder at :math:`(\mathcal{L}_{\text{uniform}},
\mathcal{L}_{\text{align}})`; the best encoders sit in the lower left (aligned and uniform).
"""

from __future__ import annotations

from collections.abc import Sequence

from matplotlib import colormaps
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from contrastlab.plots._figure import new_figure


def alignment_uniformity_scatter(names: Sequence[str], alignment: Sequence[float], uniformity: Sequence[float],
                                 accuracy: Sequence[float | None] | None = None, *,
                                 collapsed: Sequence[bool] | None = None,
                                 title: str = "Alignment and uniformity") -> Figure:
    r"""One point per run at (uniformity, alignment), coloured by accuracy when given.

    A collapsed encoder (its features near one point) has a near-zero alignment that means nothing: it would
    look like the best aligned point. Points marked ``collapsed`` are drawn as hollow grey circles labelled
    "(collapsed)", left out of the colour scale, and named in the legend.

    Args:
        names: (R,) run names, written next to their points.
        alignment: (R,) :math:`\mathcal{L}_{\text{align}}` (α = 2) per run.
        uniformity: (R,) :math:`\mathcal{L}_{\text{uniform}}` (t = 2) per run.
        accuracy: (R,) accuracies in [0, 1] (``None`` for a run without one); runs without an
            accuracy are drawn grey.
        collapsed: (R,) whether each run's features collapsed.
        title: the figure title.

    Returns:
        The matplotlib figure.

    Raises:
        ValueError: for sequences of different lengths or no runs.

    Example:
        >>> fig = alignment_uniformity_scatter(["a", "b"], [0.5, 0.9], [-3.5, -2.0], [0.8, 0.6])
        >>> len(fig.axes)  # the scatter and its colour bar
        2
        >>> fig = alignment_uniformity_scatter(["a", "b"], [0.5, 0.001], [-3.5, -0.01], collapsed=[False, True])
        >>> [t.get_text() for t in fig.axes[0].texts]
        ['a', 'b (collapsed)']
    """
    n = len(names)
    acc = [None] * n if accuracy is None else list(accuracy)
    flat = [False] * n if collapsed is None else [bool(c) for c in collapsed]
    if n == 0 or not (len(alignment) == len(uniformity) == len(acc) == len(flat) == n):
        raise ValueError(f"names, alignment, uniformity, accuracy and collapsed must have the same non-zero length; "
                         f"got {n}, {len(alignment)}, {len(uniformity)}, {len(acc)}, {len(flat)}")
    fig = new_figure(5.2, 4.0)
    ax = fig.add_subplot(1, 1, 1)
    known = [a for a, c in zip(acc, flat) if a is not None and not c]
    cmap = colormaps["viridis"]
    norm = Normalize(min(known), max(known) if max(known) > min(known) else min(known) + 1e-6) if known else None
    for name, al, un, a, c in zip(names, alignment, uniformity, acc, flat):
        if c:
            ax.scatter([un], [al], s=70, facecolors="none", edgecolors="#888888", linewidths=1.2, linestyle="--",
                       zorder=3)
            # collapsed rows sit at the right edge (uniformity near 0): their label goes to the left
            ax.annotate(f"{name} (collapsed)", (un, al), textcoords="offset points", xytext=(-6, 4), fontsize=8,
                        color="#777777", style="italic", ha="right").set_in_layout(False)
            continue
        colour = "#aaaaaa" if a is None else cmap(norm(a))
        ax.scatter([un], [al], s=70, color=colour, edgecolors="black", linewidths=0.6, zorder=3)
        ax.annotate(str(name), (un, al), textcoords="offset points", xytext=(6, 4), fontsize=8).set_in_layout(False)
    if known:
        bar = fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=ax)
        bar.set_label("accuracy", fontsize=9)
    if any(flat):
        marker = Line2D([], [], marker="o", linestyle="none", markerfacecolor="none", markeredgecolor="#888888",
                        markersize=8)
        fig.legend([marker], ["collapsed: features near one point, so a near-zero alignment is meaningless"],
                   fontsize=7, loc="outside lower center", frameon=False)
    ax.set_xlabel(r"$\mathcal{L}_{\mathrm{uniform}}$ (t = 2), lower is more uniform", fontsize=9)
    ax.set_ylabel(r"$\mathcal{L}_{\mathrm{align}}$ (α = 2), lower is more aligned", fontsize=9)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.margins(0.2)
    return fig
