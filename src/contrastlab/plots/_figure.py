"""Figures without pyplot: an Agg canvas per figure, so plotting never touches global backend state."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

#: Colours for classes and encoders (matplotlib's tab10, cycled).
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
           "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")


def new_figure(width: float, height: float) -> Figure:
    """A figure of ``width × height`` inches attached to an Agg canvas."""
    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def png_bytes(fig: Figure) -> bytes:
    """The figure encoded as PNG."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def save_png(fig: Figure, path: str | Path) -> Path:
    """Write the figure as a PNG file (the parent folder is created) and return its path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png_bytes(fig))
    return path


def class_colours(labels: np.ndarray) -> tuple[np.ndarray, list]:
    """The distinct labels and one colour per row of ``labels``."""
    classes, codes = np.unique(labels, return_inverse=True)
    return classes, [PALETTE[c % len(PALETTE)] for c in codes.reshape(-1)]


def as_numpy(x) -> np.ndarray:
    """A numpy copy of a tensor or array-like."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)
