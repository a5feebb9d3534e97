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


#: Columns drawn together in one ``accuracy`` panel (the training monitors' kNN and online-probe accuracies).
ACCURACY_COLUMNS = ("knn_acc", "probe_acc", "probe_train_acc")
#: Panels drawn first, in this order, when their columns have values: the loss, then the monitors.
FIRST_PANELS = ("loss", "accuracy", "rankme", "emb_std")
#: A 0/1 column marking rows (the training monitors' collapse warning): drawn as red marks on the
#: ``emb_std`` panel, not as a panel of its own.
FLAG_COLUMN = "collapse"


def _panels(columns: dict[str, np.ndarray], x_name: str | None) -> list[tuple[str, list[str]]]:
    """(title, columns) of every panel: the accuracies in one, a flag column in none, the others one each."""
    def has_values(c):
        return c in columns and c not in X_COLUMNS and not np.isnan(columns[c]).all()

    accuracy = [c for c in ACCURACY_COLUMNS if has_values(c)]
    panels: list[tuple[str, list[str]]] = []
    for name in columns:
        if not has_values(name) or name in ACCURACY_COLUMNS[1:] or (name == FLAG_COLUMN and has_values("emb_std")):
            continue
        if name in ACCURACY_COLUMNS:
            panels.append(("accuracy", accuracy))
        else:
            panels.append((name, [name]))
    if accuracy and not any(title == "accuracy" for title, _ in panels):
        panels.append(("accuracy", accuracy))
    rank = {title: i for i, title in enumerate(FIRST_PANELS)}
    return sorted(panels, key=lambda panel: rank.get(panel[0], len(rank)))  # stable: the rest in file order


def training_curves(columns: dict[str, np.ndarray], *, title: str = "Training curves", max_panels: int = 15) -> Figure:
    """Small multiples: one panel per metric, plotted against the step (or epoch, or row number).

    The loss comes first, then the training monitors when the file has them: held-out kNN and online-probe
    accuracies together in one ``accuracy`` panel, RankMe, and ``emb_std`` with the rows whose ``collapse``
    is 1 marked in red. Empty cells (rows that are not monitor steps) are skipped, so a monitor's points
    are joined across them.

    Args:
        columns: name → (rows,) values, as :func:`read_metrics_csv` returns.
        title: the figure title.
        max_panels: at most this many panels are drawn.

    Returns:
        The matplotlib figure.

    Raises:
        ValueError: when there is no metric besides the x column.

    Example:
        >>> nan = float("nan")
        >>> fig = training_curves({"step": np.arange(1.0, 5.0), "loss": np.linspace(2, 1, 4),
        ...                        "knn_acc": np.array([nan, 0.3, nan, 0.5]), "probe_acc": np.array([nan, 0.2, nan, 0.4])})
        >>> [ax.get_title() for ax in fig.axes]
        ['loss', 'accuracy']
    """
    x_name = next((c for c in X_COLUMNS if c in columns), None)
    panels = _panels(columns, x_name)[:max_panels]
    if not panels:
        raise ValueError(f"no metric to plot besides the x column; columns: {list(columns)}")
    n_rows = len(next(iter(columns.values())))
    x = columns[x_name] if x_name else np.arange(n_rows, dtype=np.float64)
    cols = min(len(panels), 3)
    rows = -(-len(panels) // cols)
    fig = new_figure(3.3 * cols, 2.4 * rows + 0.4)
    fig.suptitle(title, fontsize=10)
    for i, (name, drawn) in enumerate(panels):
        ax = fig.add_subplot(rows, cols, i + 1)
        for j, column in enumerate(drawn):
            y = columns[column]
            keep = ~np.isnan(y) & ~np.isnan(x)
            colour = PALETTE[(i + j) % len(PALETTE)]
            ax.plot(x[keep], y[keep], color=colour, lw=1.2, marker="." if keep.sum() < 30 else None,
                    label=column if len(drawn) > 1 else None)
        if name == "emb_std" and FLAG_COLUMN in columns:
            flagged = (columns[FLAG_COLUMN] == 1) & ~np.isnan(columns["emb_std"]) & ~np.isnan(x)
            if flagged.any():
                ax.plot(x[flagged], columns["emb_std"][flagged], "x", color="red", label="collapse")
                ax.legend(fontsize=7)
        if len(drawn) > 1:
            ax.legend(fontsize=7)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel(x_name or "row", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    return fig
