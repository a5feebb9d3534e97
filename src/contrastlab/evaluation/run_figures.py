"""The figures ``contrastlab eval`` writes next to ``metrics.json``."""

from __future__ import annotations

from pathlib import Path

import torch

from contrastlab.evaluation.features import Collected, concat_towers
from contrastlab.evaluation.knn import nearest_neighbours
from contrastlab.plots import (
    hypersphere_plot, invariance_bars, neighbour_grid, read_metrics_csv, save_png, training_curves, tsne_plot,
)


def _grid(features: torch.Tensor, images: torch.Tensor, *, queries: int, k: int, seed: int, title: str):
    n = features.shape[0]
    k = min(k, n - 1)
    rows = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:min(queries, n)]
    sims, idx = nearest_neighbours(features, k=k, backend="torch")
    return neighbour_grid(images, rows, idx[rows], sims[rows], title=title)


def write_figures(run, metrics: dict, train: Collected, test: Collected, out_dir: Path, *,
                  stages: tuple[str, ...], seed: int = 0, queries: int = 8, k: int = 8) -> dict[str, str]:
    """Write the run's figures as PNG files into ``out_dir``.

    * ``curves.png`` — training curves from the run's ``metrics.csv`` (when it has rows);
    * ``neighbours_<stage>_<split>.png`` — query images and their nearest neighbours in the same
      split, for train and test (when the items are images);
    * ``hypersphere_<stage>.png`` — the test embeddings on the circle, per class;
    * ``tsne_<stage>.png`` — a t-SNE map of the test features;
    * ``invariance.png`` — the invariance report of every encoder (Shapes-like data).

    Args:
        run: the loaded run (``metrics_path`` is read).
        metrics: the metrics computed so far (the invariance reports are read).
        train: the training split's collected features.
        test: the test split's collected features.
        out_dir: the folder to write into.
        stages: the trained stages to draw.
        seed: seeds the choice of query items and the t-SNE.
        queries: query rows per neighbour grid.
        k: neighbours per query.

    Returns:
        Figure name → file name (relative to ``out_dir``).
    """
    written: dict[str, str] = {}

    def save(name: str, fig) -> None:
        save_png(fig, out_dir / f"{name}.png")
        written[name] = f"{name}.png"

    metrics_path = Path(getattr(run, "metrics_path", "") or "")
    if metrics_path.is_file():
        try:
            columns = read_metrics_csv(metrics_path)
            save("curves", training_curves(columns, title=f"Training curves ({metrics_path.name})"))
        except ValueError:
            pass  # an empty metrics file (a run stopped before its first log row): nothing to draw
    for stage in stages:
        for split, data in (("train", train), ("test", test)):
            if data.images is not None and data.images.shape[0] >= 2:
                features = concat_towers(data.features[stage])
                save(f"neighbours_{stage}_{split}",
                     _grid(features, data.images, queries=queries, k=k, seed=seed,
                           title=f"{stage} features, {split} split"))
        features = concat_towers(test.features[stage])
        labels = None if test.labels is None else test.labels.numpy()
        if features.shape[1] >= 2:
            save(f"hypersphere_{stage}", hypersphere_plot(features, labels, title=f"{stage} features on the circle"))
        if features.shape[0] >= 4:
            save(f"tsne_{stage}", tsne_plot(features, labels, seed=seed, title=f"t-SNE of the {stage} features"))
    reports = {name: enc["invariance"] for name, enc in metrics["encoders"].items() if "invariance" in enc}
    if reports:
        save("invariance", invariance_bars(reports))
    return written
