"""The figures ``contrastlab eval`` and ``contrastlab analyze`` write next to ``metrics.json``.

Figure names (the file is the name with ``.png``; a ``:`` in a row name becomes ``-``):

* ``curves`` — training curves from the run's ``metrics.csv`` (when it has rows);
* ``neighbours_<row>_<split>`` — query images and their nearest neighbours in the same split, each captioned
  with its class name (when the items are images);
* ``hypersphere_<row>`` — the test features on the circle, with the density of angles per class;
* ``tsne_<row>`` — a t-SNE map of the test features, coloured and labelled by class;
* ``invariance`` — the invariance report of every row (data with generative factors).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from contrastlab.evaluation.knn import nearest_neighbours
from contrastlab.plots import (
    hypersphere_plot, invariance_bars, neighbour_grid, read_metrics_csv, save_png, training_curves, tsne_plot,
)


@dataclass
class FigureSample:
    """The sampled items of one split that the figures draw: features, labels and images of the same rows.

    Attributes:
        features: row name → (M, D) features of the sampled items.
        labels: (M,) int64 class labels, or ``None``.
        images: (M, C, H, W) floats in [0, 1], or ``None`` when the items are not images.

    Example:
        >>> s = FigureSample({"head": torch.randn(5, 4)}, torch.arange(5), None)
        >>> s.features["head"].shape[0]
        5
    """

    features: dict[str, Tensor]
    labels: Tensor | None
    images: Tensor | None


def figure_name(kind: str, row: str, split: str | None = None) -> str:
    """The name of a row's figure: ``figure_name("neighbours", "head:image", "test")`` → ``neighbours_head-image_test``.

    Args:
        kind: ``neighbours``, ``hypersphere`` or ``tsne``.
        row: the encoder row; ``:`` and any other character that is not a letter, digit, ``_``, ``.`` or ``-``
            becomes ``-`` (file names stay portable and inside the folder).
        split: ``train`` or ``test`` for neighbour grids.

    Returns:
        The figure name (its file is the name with ``.png``).

    Example:
        >>> figure_name("neighbours", "head:image", "test"), figure_name("tsne", "../x y")
        ('neighbours_head-image_test', 'tsne_..-x-y')
    """
    return "_".join([kind, re.sub(r"[^\w.-]", "-", row)] + ([split] if split else []))


def _grid(features: Tensor, images: Tensor, labels: Tensor | None, class_names, *, queries: int, k: int,
          seed: int, title: str):
    n = features.shape[0]
    k = min(k, n - 1)
    rows = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:min(queries, n)]
    sims, idx = nearest_neighbours(features, k=k, backend="torch")
    return neighbour_grid(images, rows, idx[rows], sims[rows], title=title, labels=labels, class_names=class_names)


def write_figures(out_dir: Path, *, metrics: dict, train: FigureSample, test: FigureSample, draw: Sequence[str],
                  class_names: Sequence[str] | None = None, metrics_csv: Path | None = None, seed: int = 0,
                  queries: int = 8, k: int = 8) -> dict[str, str]:
    """Write the evaluation's figures as PNG files into ``out_dir`` (see the module for the names).

    Rows in ``draw`` missing from a sample are passed over; without images there are no neighbour grids, with
    fewer than 4 items no t-SNE, with 1-D features no circle.

    Args:
        out_dir: the folder to write into.
        metrics: the metrics so far (the rows' ``invariance`` reports are drawn; ``run.class_names`` is the
            fallback for ``class_names``).
        train: the training split's figure sample.
        test: the test split's figure sample (circle and t-SNE draw it).
        draw: the rows to draw neighbour grids, circles and t-SNE maps for (the trained rows).
        class_names: the class names in label order (captions and legends); labels without a name are
            shown as numbers.
        metrics_csv: a training log to draw the curves of, or ``None``.
        seed: seeds the choice of query items and the t-SNE.
        queries: query rows per neighbour grid.
        k: neighbours per query.

    Returns:
        Figure name → file name (relative to ``out_dir``).

    Example:
        >>> import tempfile
        >>> sample = FigureSample({"head": torch.randn(12, 4)}, torch.arange(12) % 2, torch.rand(12, 3, 8, 8))
        >>> sorted(write_figures(Path(tempfile.mkdtemp()), metrics={"encoders": {}}, train=sample, test=sample,
        ...                      draw=["head"], class_names=["cat", "dog"]))
        ['hypersphere_head', 'neighbours_head_test', 'neighbours_head_train', 'tsne_head']
    """
    out_dir = Path(out_dir)
    written: dict[str, str] = {}
    if class_names is None:
        names = (metrics.get("run") or {}).get("class_names")
        class_names = names if isinstance(names, list) else None

    def save(name: str, fig) -> None:
        save_png(fig, out_dir / f"{name}.png")
        written[name] = f"{name}.png"

    if metrics_csv is not None and Path(metrics_csv).is_file():
        try:
            columns = read_metrics_csv(metrics_csv)
            save("curves", training_curves(columns, title=f"Training curves ({Path(metrics_csv).name})"))
        except ValueError:
            pass  # an empty metrics file (a run stopped before its first log row): nothing to draw
    for row in draw:
        for split, data in (("train", train), ("test", test)):
            features = data.features.get(row)
            if features is not None and data.images is not None and features.shape[0] >= 2:
                save(figure_name("neighbours", row, split),
                     _grid(features, data.images, data.labels, class_names, queries=queries, k=k, seed=seed,
                           title=f"{row} features, {split} split"))
        features = test.features.get(row)
        if features is None:
            continue
        labels = None if test.labels is None else test.labels.numpy()
        if features.shape[1] >= 2:
            save(figure_name("hypersphere", row), hypersphere_plot(features, labels, class_names=class_names,
                                                                   title=f"{row} features on the circle"))
        if features.shape[0] >= 4:
            save(figure_name("tsne", row), tsne_plot(features, labels, seed=seed, class_names=class_names,
                                                     title=f"t-SNE of the {row} features"))
    reports = {name: enc["invariance"] for name, enc in metrics.get("encoders", {}).items() if enc.get("invariance")}
    if reports:
        save("invariance", invariance_bars(reports))
    return written
