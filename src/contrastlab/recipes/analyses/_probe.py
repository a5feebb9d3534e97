"""Linear and 5-NN accuracy of features the standard evaluation does not read: one tower of a multi-tower
model (CMC's core view), or an image encoded patch by patch (a patch encoder on the whole image).

The items are the same seeded subsets the evaluation used (``metrics.json`` records how many), so the
numbers sit beside the evaluation's own.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from contrastlab.data.base import Batch, Dataset
from contrastlab.evaluation.knn import knn_evaluate
from contrastlab.evaluation.probe import linear_probe
from contrastlab.evaluation.selection import subset
from contrastlab.views.patches import take_patches

#: Maps a batch of items to (N, D) features.
Features = Callable[[Batch], Tensor]


@torch.no_grad()
def features_of(dataset: Dataset, index: Tensor, features: Features, *, batch_size: int = 256) -> tuple[Tensor, Tensor]:
    """Features ``(N, D)`` and labels ``(N,)`` of the items ``index`` (N,) of ``dataset``."""
    feats, labels = [], []
    for start in range(0, len(index), batch_size):
        batch = dataset.get(index[start:start + batch_size])
        feats.append(features(batch).detach().float().cpu().reshape(len(batch), -1))
        labels.append(batch.labels)
    if any(y is None for y in labels):
        raise ValueError(f"data set {getattr(dataset, 'name', '?')!r} has no labels to probe")
    return torch.cat(feats), torch.cat(labels)


def probe_run(run, features: Features, *, n_train: int, n_test: int, seed: int = 0) -> dict[str, float]:
    """Linear-probe and 5-NN test accuracy of ``features`` on a loaded run's data.

    Args:
        run: a loaded run (``contrastlab.training.load_run``).
        features: ``batch -> (N, D)``.
        n_train: training items (the evaluation's ``items.train``).
        n_test: test items (the evaluation's ``items.test``).
        seed: the evaluation's seed (the test subset uses ``seed + 1``, as there).

    Returns:
        ``{"linear": ..., "knn5": ...}``.

    Raises:
        ValueError: when the data set has no labels.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the evaluation: the same numbers whatever the machine, and faster
    try:
        train, test = run.dataset("train"), run.dataset("test")
        x_tr, y_tr = features_of(train, subset(len(train), n_train, seed), features)
        x_te, y_te = features_of(test, subset(len(test), n_test, seed + 1), features)
        return {"linear": linear_probe(x_tr, y_tr, x_te, y_te)["test_accuracy"],
                "knn5": knn_evaluate(x_tr, y_tr, x_te, y_te, protocols={"knn5": (5, None)})["knn5"]}
    finally:
        torch.set_num_threads(threads)


def tower_features(model, views, towers: Sequence[str], *, stage: str) -> Features:
    """Features of chosen towers only: the evaluation views of the views those towers read, concatenated.

    Args:
        model: a ``MultiViewModel``.
        views: the run's view generator.
        towers: tower names (for CMC, the channel groups, e.g. ``["L"]``).
        stage: ``"head"`` or ``"backbone"``.

    Raises:
        ValueError: a tower the model does not have.
    """
    chosen = {}
    for tower in towers:
        view = next((v for v, t in model.view_towers.items() if t == tower), None)
        if view is None:
            raise ValueError(f"the model has no tower {tower!r}; towers: {sorted(set(model.view_towers.values()))}")
        chosen[tower] = view

    def encode(batch: Batch) -> Tensor:
        shown = views.eval_views(batch)
        out = model.encode({v: shown[v] for v in chosen.values()}, stage=stage)
        return torch.cat([out[chosen[t]] for t in towers], dim=1)

    return encode


def patch_grid_features(model, view: str, patch_size: int, *, grid: int = 3, stage: str = "backbone",
                        modality: str = "image") -> Features:
    r"""A patch encoder applied to the whole image: the mean of its features over a grid of patches.

    The patches start at :math:`\operatorname{round}(k (S - p) / (g - 1))`, :math:`k = 0..g-1`, in each
    direction (image side :math:`S`, patch side :math:`p`, ``grid`` :math:`g`), so they cover the image; the
    item's features are the mean over the :math:`g^2` patches. Every offset's encoder is read the same way.

    Args:
        model: a ``MultiViewModel`` whose view ``view`` reads patches.
        view: the view name its patches are given as (e.g. ``"patch1"``).
        patch_size: the patch side :math:`p`.
        grid: patches per side :math:`g \ge 1` (1: the centre patch only).
        stage: ``"head"`` or ``"backbone"``.
        modality: the image input of the items.

    Raises:
        ValueError: for ``grid < 1``.
    """
    if not isinstance(grid, int) or grid < 1:
        raise ValueError(f"grid must be an integer >= 1, got {grid!r}")

    def encode(batch: Batch) -> Tensor:
        images = batch.inputs[modality]
        n, _, h, w = images.shape
        starts = lambda side: ([(side - patch_size) // 2] if grid == 1 else  # noqa: E731
                               [round(k * (side - patch_size) / (grid - 1)) for k in range(grid)])
        total = None
        for y in starts(h):
            for x in starts(w):
                patches = take_patches(images, torch.full((n,), x), torch.full((n,), y), patch_size)
                f = model.encode({view: patches}, stage=stage)[view]
                total = f if total is None else total + f
        return total / (len(starts(h)) * len(starts(w)))

    return encode
