r"""Figures that compare runs: their training curves overlaid, and grouped bars of one measure per run.

A recipe trains several runs on one question; these figures put them on shared axes so the difference the
question is about (a loss that goes to zero, a recall that stays at chance) is visible at a glance.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure

from contrastlab.plots._figure import PALETTE, as_numpy, new_figure


def run_curves(curves: Mapping[str, Mapping[str, Sequence[float]]], columns: Sequence[str], *, x: str = "step",
               title: str = "Training curves", symlog: Sequence[str] = ()) -> Figure:
    r"""One panel per column, one line per run, against ``x``.

    Args:
        curves: run name → column name → (T_r,) values (e.g. :func:`~contrastlab.plots.read_metrics_csv`
            of each run's ``metrics.csv``); a run without a column is left out of that panel.
        columns: (P,) the columns to draw, one panel each.
        x: the column used as the horizontal axis.
        title: the figure title.
        symlog: columns drawn on a symmetric-log vertical axis (a loss that falls to zero).

    Returns:
        The matplotlib figure (P axes).

    Raises:
        ValueError: for no runs, no columns, a run without ``x``, or a column no run has.

    Example:
        >>> fig = run_curves({"a": {"step": [1, 2], "loss": [2.0, 1.0]}, "b": {"step": [1, 2], "loss": [3.0, 0.0]}},
        ...                  ["loss"])
        >>> len(fig.axes), len(fig.axes[0].lines)
        (1, 2)
    """
    if not curves:
        raise ValueError("curves must hold at least one run")
    columns = list(columns)
    if not columns:
        raise ValueError("columns must name at least one column")
    for run, cols in curves.items():
        if x not in cols:
            raise ValueError(f"run {run!r} has no {x!r} column; it has {sorted(cols)}")
    for column in columns:
        if not any(column in cols for cols in curves.values()):
            raise ValueError(f"no run has the column {column!r}")
    fig = new_figure(3.6 * len(columns), 3.0)
    for p, column in enumerate(columns):
        ax = fig.add_subplot(1, len(columns), p + 1)
        for r, (run, cols) in enumerate(curves.items()):
            if column not in cols:
                continue
            xs, ys = as_numpy(cols[x]).astype(float), as_numpy(cols[column]).astype(float)
            keep = np.isfinite(xs) & np.isfinite(ys)
            ax.plot(xs[keep], ys[keep], color=PALETTE[r % len(PALETTE)], label=str(run), linewidth=1.4)
        if column in symlog:
            ax.set_yscale("symlog", linthresh=1e-2)
        ax.set_xlabel(x, fontsize=9)
        ax.set_title(column, fontsize=10)
        ax.grid(alpha=0.3)
        if p == 0:
            ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=11)
    return fig


def grouped_bars(groups: Sequence[str], series: Mapping[str, Sequence[float | None]], *, ylabel: str = "",
                 title: str = "", reference: float | None = None, reference_label: str = "chance") -> Figure:
    r"""Bars of several series side by side for each group (e.g. recall@1/5/10 for each run).

    Args:
        groups: (G,) group labels along the horizontal axis.
        series: series name → (G,) values; ``None`` leaves a gap.
        ylabel: the vertical axis label.
        title: the figure title.
        reference: draw a dashed horizontal line at this value (e.g. chance).
        reference_label: the legend entry of that line.

    Returns:
        The matplotlib figure.

    Raises:
        ValueError: for no groups or series, or a series whose length is not G.

    Example:
        >>> fig = grouped_bars(["run a", "run b"], {"R@1": [0.1, 0.5], "R@5": [0.3, None]}, reference=0.01)
        >>> len(fig.axes[0].patches)
        3
    """
    groups = [str(g) for g in groups]
    if not groups or not series:
        raise ValueError(f"need at least one group and one series; got {len(groups)} groups, {len(series)} series")
    for name, values in series.items():
        if len(values) != len(groups):
            raise ValueError(f"series {name!r} has {len(values)} values for {len(groups)} groups")
    fig = new_figure(max(4.0, 1.1 * len(groups) * max(1, len(series)) ** 0.5 + 1.5), 3.2)
    ax = fig.add_subplot(1, 1, 1)
    width = 0.8 / len(series)
    positions = np.arange(len(groups), dtype=float)
    for s, (name, values) in enumerate(series.items()):
        at = [(positions[g] - 0.4 + width * (s + 0.5), v) for g, v in enumerate(values) if v is not None]
        if at:
            ax.bar([a for a, _ in at], [float(v) for _, v in at], width=width * 0.95,
                   color=PALETTE[s % len(PALETTE)], label=str(name))
    if reference is not None:
        ax.axhline(float(reference), color="black", linestyle="--", linewidth=1.0, label=reference_label)
    ax.set_xticks(positions)
    ax.set_xticklabels(groups, fontsize=8)
    ax.set_ylabel(ylabel, fontsize=9)
    ax.set_title(title, fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7)
    return fig
