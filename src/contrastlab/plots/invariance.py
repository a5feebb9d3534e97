"""The invariance report as bars: distance score and k-NN purity per factor, one bar per encoder."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from matplotlib.figure import Figure

from contrastlab.plots._figure import PALETTE, new_figure


def invariance_bars(reports: Mapping[str, Mapping[str, Mapping]], *, invariant_below: float = 0.3,
                    sensitive_above: float = 0.5, title: str = "Invariance to each factor") -> Figure:
    """Grouped bars: for each factor, one bar per encoder (trained head, backbone, baselines).

    The left panel shows the distance score (0 = invariant, 1 = as far as a new item) with the
    label thresholds as dashed lines; the right panel shows the k-NN purity with a black tick at the
    purity random neighbours would give.

    Args:
        reports: encoder name → the report of
            :func:`contrastlab.evaluation.invariance.invariance_report`.
        invariant_below: the ``invariant`` threshold drawn on the score panel.
        sensitive_above: the ``sensitive`` threshold drawn on the score panel.
        title: the figure title.

    Returns:
        The matplotlib figure.

    Raises:
        ValueError: when there is no report.

    Example:
        >>> r = {"shape": {"score": 0.9, "purity": 0.6, "chance": 0.2}}
        >>> len(invariance_bars({"head": r, "raw": r}).axes)
        2
    """
    if not reports:
        raise ValueError("invariance_bars needs at least one report")
    encoders = list(reports)
    factors = list(dict.fromkeys(f for r in reports.values() for f in r))
    width = 0.8 / len(encoders)
    x = np.arange(len(factors))
    fig = new_figure(max(6.0, 1.6 * len(factors) * 2 + 1.5), 3.9)
    fig.suptitle(title, fontsize=10)
    score_ax, purity_ax = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    for e, name in enumerate(encoders):
        offset = x - 0.4 + width * (e + 0.5)
        colour = PALETTE[e % len(PALETTE)]
        rows = [reports[name].get(f, {}) for f in factors]
        scores = [np.nan if r.get("score") is None else r["score"] for r in rows]
        score_ax.bar(offset, scores, width, color=colour, label=name)
        purity_ax.bar(offset, [r.get("purity", np.nan) for r in rows], width, color=colour, label=name)
        purity_ax.scatter(offset, [r.get("chance", np.nan) for r in rows], marker="_", s=120, color="black",
                          zorder=3, label="chance" if e == 0 else None)
    for threshold in (invariant_below, sensitive_above):
        score_ax.axhline(threshold, color="#555555", ls="--", lw=0.8)
    score_ax.set_title("distance score (0 invariant, 1 like a new item)", fontsize=9)
    purity_ax.set_title("k-NN purity (fraction of neighbours sharing it)", fontsize=9)
    for ax in (score_ax, purity_ax):
        ax.set_xticks(x, factors, fontsize=8)
        ax.set_ylim(0, 1.15)
        ax.grid(axis="y", alpha=0.3)
        ax.tick_params(labelsize=8)
    fig.legend(*purity_ax.get_legend_handles_labels(), loc="outside lower center", ncols=len(encoders) + 1,
               fontsize=8, frameon=False)
    return fig
