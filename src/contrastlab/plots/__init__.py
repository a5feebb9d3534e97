"""Figures of what a representation learned (matplotlib, Agg canvas, PNG)."""

from contrastlab.plots._figure import png_bytes, save_png
from contrastlab.plots.compare import grouped_bars, run_curves
from contrastlab.plots.curves import read_metrics_csv, training_curves
from contrastlab.plots.hypersphere import circle_angles, hypersphere_plot, von_mises_density
from contrastlab.plots.invariance import invariance_bars
from contrastlab.plots.neighbours import neighbour_grid
from contrastlab.plots.scatter import alignment_uniformity_scatter
from contrastlab.plots.tsne import tsne_plot

__all__ = [
    "alignment_uniformity_scatter", "circle_angles", "grouped_bars", "hypersphere_plot", "invariance_bars",
    "neighbour_grid", "png_bytes", "read_metrics_csv", "run_curves", "save_png", "training_curves", "tsne_plot",
    "von_mises_density",
]
