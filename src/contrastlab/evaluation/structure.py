"""What the structure of collected features says: the geometry of sets of items (classes, an item's augmentations,
an item's views across towers) and what two towers' codes share about the label and each factor.

The measures themselves are :mod:`contrastlab.evaluation.sets` and :mod:`contrastlab.evaluation.pid`; this module
forms their sets and targets from what evaluation collected and keeps their cost bounded.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor

from contrastlab.evaluation.features import Collected
from contrastlab.evaluation.invariance import default_groups, discretize
from contrastlab.evaluation.pid import representation_pids
from contrastlab.evaluation.sets import set_geometry, tammes_view

__all__ = ["PID_MAX_CLASSES", "TAMMES_MAX_SETS", "augmentation_sets", "modality_sets", "pid_targets", "set_summary",
           "tower_pid"]


#: The Tammes view compares the set centres with the best spread of that many points: exact (closed form) for up to
#: twice the dimension, a numerical search beyond, which costs up to seconds per row; classes are searched up to this
#: many, other sets (one per item for invariance sets) only where the closed form applies.
TAMMES_MAX_SETS = 64


def set_summary(features: Tensor, set_ids, *, search: bool = True) -> dict[str, Any]:
    """The homework's geometry of a family of sets (4(b), 4(e)): diameters, margins, the share of sets whose margin
    exceeds their diameter, and the Tammes view of the set centres (with ``search``, up to :data:`TAMMES_MAX_SETS`
    sets; without, only where the best spread is known in closed form) — summary numbers only, no per-set arrays."""
    ids = torch.as_tensor(set_ids).reshape(-1)
    n_sets = len(torch.unique(ids))
    if n_sets < 2:
        return {}
    geometry = set_geometry(features, ids)
    out: dict[str, Any] = {k: v for k, v in geometry.items() if isinstance(v, (int, float))}
    if n_sets <= (TAMMES_MAX_SETS if search else 2 * features.shape[1]):
        try:
            tammes = tammes_view(features, ids)
        except ValueError:  # a set whose rows cancel out has no direction
            tammes = None
        if tammes is not None:
            out["tammes"] = {k: v for k, v in tammes.items() if isinstance(v, (int, float, str))}
    return out


#: The PID's solver grows with the cube of the codes' alphabets (the number of classes of the target): above this many
#: classes a target is left out (a decomposition of one target takes seconds at 300 classes, minutes at 1,000).
PID_MAX_CLASSES = 50
#: Shuffles of the target behind each "noise" atom (the estimation bias at this number of items).
PID_PERMUTATIONS = 3


def pid_targets(train: Collected, test: Collected, n_train: int, n_test: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """What the towers' information is decomposed about, as (train codes, test codes): the label, and each generative
    factor (continuous ones in 3 quantile bins of both splits together; x and y together as the location on a 3 x 3
    grid) that is not the label itself and has between 2 and :data:`PID_MAX_CLASSES` values."""
    both: dict[str, np.ndarray] = {}
    if train.labels is not None and test.labels is not None:
        both["label"] = np.concatenate([train.labels[:n_train].numpy(), test.labels[:n_test].numpy()])
    shared = [f for f in train.factors if f in test.factors]
    for group, members in default_groups(shared).items():
        values = [torch.cat([torch.as_tensor(train.factors[f][:n_train]), torch.as_tensor(test.factors[f][:n_test])])
                  for f in members]
        codes = [discretize(v, bins=3) for v in values]
        both[group] = np.unique(np.stack(codes, axis=1), axis=0, return_inverse=True)[1].reshape(-1)
    label = both.get("label")
    for group in [g for g in both if g != "label" and label is not None]:  # a factor that is the label (Shapes' shape)
        if len(np.unique(np.stack([label, both[group]], axis=1), axis=0)) == len(np.unique(label)) == len(np.unique(both[group])):
            del both[group]
    return {k: (v[:n_train], v[n_train:]) for k, v in both.items() if 2 <= len(np.unique(v)) <= PID_MAX_CLASSES}


def tower_pid(train: Collected, test: Collected, name: str, towers: tuple[str, str],
              targets: Mapping[str, tuple[np.ndarray, np.ndarray]], *, seed: int) -> dict:
    """The partial information decomposition of two towers' codes (featurizer ``name``) about each target of
    :func:`pid_targets` (train codes for its first rows, test codes for its first rows), each tower read through a
    linear probe of the target."""
    if not targets:
        return {}
    n_fit, m = (len(next(iter(targets.values()))[i]) for i in (0, 1))
    a, b = towers
    return representation_pids(train.features[name][a][:n_fit], train.features[name][b][:n_fit],
                               test.features[name][a][:m], test.features[name][b][:m],
                               {k: te for k, (_, te) in targets.items()},
                               train_targets={k: tr for k, (tr, _) in targets.items()}, discretize="probe",
                               seed=seed, permutations=PID_PERMUTATIONS)


def augmentation_sets(views: Mapping[str, Tensor], towers: Mapping[str, str],
                       row_towers: tuple[str, ...]) -> tuple[Tensor, Tensor] | None:
    """Invariance sets of a row from the positive pairs: every item's views read by the row's towers (SimCLR's two
    augmentations; with several towers, member k is the k-th view of each tower side by side). ``None`` when the
    row's towers read one view each (no set has two members)."""
    per_tower = {t: [v for v in views if towers.get(v, v) == t] for t in row_towers}
    counts = {len(vs) for vs in per_tower.values()}
    if len(counts) != 1 or counts.pop() < 2:
        return None
    members = [torch.cat([views[per_tower[t][k]] for t in row_towers], dim=1)
               for k in range(len(next(iter(per_tower.values()))))]
    n = members[0].shape[0]
    return torch.cat(members), torch.arange(n).repeat(len(members))


def modality_sets(views: Mapping[str, Tensor], towers: Mapping[str, str]) -> tuple[Tensor, Tensor] | None:
    """Sets of one item's views across towers that share a space (an image and its caption at the head)."""
    names = list(views)
    if len(names) < 2 or len({views[v].shape[1] for v in names}) != 1 or len({towers.get(v, v) for v in names}) < 2:
        return None
    n = views[names[0]].shape[0]
    return torch.cat([views[v] for v in names]), torch.arange(n).repeat(len(names))
