"""Training curves from a run's ``metrics.csv``: every numeric column against the step."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from contrastlab.plots._figure import PALETTE, new_figure

#: Columns tried, in order, for the x axis.
X_COLUMNS = ("step", "global_step", "iteration", "iter", "epoch")


def read_metrics_csv(path: str | Path) -> dict[str, np.ndarray]:
    """Columns of a metrics CSV as float arrays (non-numeric cells become NaN, text columns are dropped).

    Args:
        path: a CSV file with a header row.

    Returns:
        Column name → (rows,) float64 values, in the file's column order.

    Raises:
        FileNotFoundError: when the file does not exist.
        ValueError: when the file has no header or no numeric column.

    Example:
        >>> import tempfile, os
        >>> p = os.path.join(tempfile.mkdtemp(), "m.csv")
        >>> _ = open(p, "w").write("step,loss\\n1,2.0\\n2,1.5\\n")
        >>> read_metrics_csv(p)["loss"].tolist()
        [2.0, 1.5]
    """
    path = Path(path)
    with path.open(newline="") as handle:
        rows = list(csv.reader(handle))
    if not rows or not any(cell.strip() for cell in rows[0]):
        raise ValueError(f"{path} has no header row")
    header, body = rows[0], rows[1:]

    def number(cell: str) -> float:
        try:
            return float(cell)
        except ValueError:
            return math.nan

    columns = {}
    for j, name in enumerate(header):
        values = np.array([number(r[j]) if j < len(r) else math.nan for r in body], dtype=np.float64)
        text = [r[j] for r in body if j < len(r) and r[j].strip()]
        if body and text and np.isnan(values).all():
            continue  # a text column (a phase name, a timestamp string)
        columns[name.strip()] = values
    if not columns:
        raise ValueError(f"{path} has no numeric column")
    return columns


def training_curves(columns: dict[str, np.ndarray], *, title: str = "Training curves", max_panels: int = 12) -> Figure:
    """Small multiples: one panel per metric, plotted against the step (or epoch, or row number).

    Args:
        columns: name → (rows,) values, as :func:`read_metrics_csv` returns.
        title: the figure title.
        max_panels: at most this many metrics are drawn.

    Returns:
        The matplotlib figure.

    Raises:
        ValueError: when there is no metric besides the x column.

    Example:
        >>> fig = training_curves({"step": np.arange(5.0), "loss": np.linspace(2, 1, 5)})
        >>> len(fig.axes)
        1
    """
    x_name = next((c for c in X_COLUMNS if c in columns), None)
    metrics = [c for c in columns if c not in X_COLUMNS and not np.isnan(columns[c]).all()][:max_panels]
    if not metrics:
        raise ValueError(f"no metric to plot besides the x column; columns: {list(columns)}")
    n_rows = len(next(iter(columns.values())))
    x = columns[x_name] if x_name else np.arange(n_rows, dtype=np.float64)
    cols = min(len(metrics), 3)
    rows = -(-len(metrics) // cols)
    fig = new_figure(3.3 * cols, 2.4 * rows + 0.4)
    fig.suptitle(title, fontsize=10)
    for i, name in enumerate(metrics):
        ax = fig.add_subplot(rows, cols, i + 1)
        y = columns[name]
        keep = ~np.isnan(y) & ~np.isnan(x)
        ax.plot(x[keep], y[keep], color=PALETTE[i % len(PALETTE)], lw=1.2, marker="." if keep.sum() < 30 else None)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel(x_name or "row", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    return fig
