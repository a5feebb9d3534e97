"""Figures without pyplot: an Agg canvas per figure, so plotting never touches global backend state."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from contrastlab.files import atomic_write_bytes

#: Colours for classes and encoders (matplotlib's tab10, cycled).
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
           "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")


def new_figure(width: float, height: float) -> Figure:
    """A figure of ``width × height`` inches attached to an Agg canvas."""
    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def png_bytes(fig: Figure) -> bytes:
    """The figure encoded as PNG.

    Args:
        fig: a figure made by this package.

    Returns:
        The PNG file's bytes.

    Example:
        >>> png_bytes(new_figure(1, 1))[:4]
        b'\x89PNG'
    """
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def save_png(fig: Figure, path: str | Path) -> Path:
    """Write the figure as a PNG file, creating the parent folder.

    Args:
        fig: a figure made by this package.
        path: the file to write.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Example:
        >>> import tempfile, os
        >>> save_png(new_figure(1, 1), os.path.join(tempfile.mkdtemp(), "a", "f.png")).name
        'f.png'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_bytes(path, png_bytes(fig))


def class_name(label, class_names=None) -> str:
    """The name of class ``label``: ``class_names[label]`` when there is one, else the label as text.

    Args:
        label: a class label (an integer, or anything else shown as it is).
        class_names: the class names in label order, or ``None``.

    Returns:
        The text to show.

    Example:
        >>> class_name(1, ["cat", "dog"]), class_name(5, ["cat", "dog"]), class_name(3)
        ('dog', '5', '3')
    """
    if hasattr(label, "item"):
        label = label.item()
    if class_names is not None and isinstance(label, (int, np.integer)) and 0 <= label < len(class_names):
        return str(class_names[int(label)])
    return str(label)


def as_numpy(x) -> np.ndarray:
    """A numpy copy of a tensor or array-like."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)
