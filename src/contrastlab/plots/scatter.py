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

from contrastlab.plots._figure import new_figure


def alignment_uniformity_scatter(names: Sequence[str], alignment: Sequence[float], uniformity: Sequence[float],
                                 accuracy: Sequence[float | None] | None = None, *,
                                 title: str = "Alignment and uniformity") -> Figure:
    r"""One point per run at (uniformity, alignment), coloured by accuracy when given.

    Args:
        names: (R,) run names, written next to their points.
        alignment: (R,) :math:`\mathcal{L}_{\text{align}}` (α = 2) per run.
        uniformity: (R,) :math:`\mathcal{L}_{\text{uniform}}` (t = 2) per run.
        accuracy: (R,) accuracies in [0, 1] (``None`` for a run without one); runs without an
            accuracy are drawn grey.
        title: the figure title.

    Returns:
        The matplotlib figure.

    Raises:
        ValueError: for sequences of different lengths or no runs.

    Example:
        >>> fig = alignment_uniformity_scatter(["a", "b"], [0.5, 0.9], [-3.5, -2.0], [0.8, 0.6])
        >>> len(fig.axes)  # the scatter and its colour bar
        2
    """
    n = len(names)
    acc = [None] * n if accuracy is None else list(accuracy)
    if n == 0 or not (len(alignment) == len(uniformity) == len(acc) == n):
        raise ValueError(f"names, alignment, uniformity and accuracy must have the same non-zero length; "
                         f"got {n}, {len(alignment)}, {len(uniformity)}, {len(acc)}")
    fig = new_figure(5.2, 4.0)
    ax = fig.add_subplot(1, 1, 1)
    known = [a for a in acc if a is not None]
    cmap = colormaps["viridis"]
    norm = Normalize(min(known), max(known) if max(known) > min(known) else min(known) + 1e-6) if known else None
    for name, al, un, a in zip(names, alignment, uniformity, acc):
        colour = "#aaaaaa" if a is None else cmap(norm(a))
        ax.scatter([un], [al], s=70, color=colour, edgecolors="black", linewidths=0.6, zorder=3)
        ax.annotate(str(name), (un, al), textcoords="offset points", xytext=(6, 4), fontsize=8)
    if known:
        bar = fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=ax)
        bar.set_label("accuracy", fontsize=9)
    ax.set_xlabel(r"$\mathcal{L}_{\mathrm{uniform}}$ (t = 2), lower is more uniform", fontsize=9)
    ax.set_ylabel(r"$\mathcal{L}_{\mathrm{align}}$ (α = 2), lower is more aligned", fontsize=9)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.margins(0.2)
    return fig
