r"""A representation named in words — a run's stage and tower, or a key of a features file — as features.

``contrastlab compare A B`` names each side as

* ``RUN``, ``RUN:STAGE`` or ``RUN:STAGE:TOWER``: a run folder, the stage ``head`` (default) or ``backbone``
  (``shared`` or ``private`` for a fission run),
  and, for runs whose towers read different modalities, the tower (``image``, ``caption``, …). Features of a
  seeded random subset of the run's test split.
* ``FILE`` or ``FILE:KEY``: a features file (:func:`~contrastlab.evaluation.analyze.load_features`) and one of its
  keys — ``x`` (default), ``x2``, ``paired`` or ``baseline_<name>`` — on its test rows when it has them.

Both sides must describe the same items in the same order: two runs must read the same data (the same data
set, options and number of test items), two files the same number of rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from contrastlab.errors import UserError

STAGES = ("head", "backbone")
#: The parts of the head's code of a model whose objective splits it (``shared_dim``: fission, FactorCL).
FISSION_STAGES = ("shared", "private")


@dataclass
class Representation:
    """Features of N items and where they came from."""

    #: (N, D) features.
    features: Tensor
    #: The spec as the user wrote it, normalised (``runs/a:head``).
    name: str
    #: What identifies the items (data set and options, or the file's row count), to check both sides match.
    items: Any


def _split_spec(spec: str) -> tuple[Path, list[str]]:
    """The existing path at the start of ``spec`` and the ``:``-separated parts after it."""
    if Path(spec).exists():
        return Path(spec), []
    parts = spec.split(":")
    for cut in range(len(parts) - 1, 0, -1):
        head = ":".join(parts[:cut])
        if Path(head).exists():
            return Path(head), parts[cut:]
    raise UserError(f"{parts[0] if len(parts) > 1 else spec} does not exist (give a run folder or a features file)")


def _from_file(path: Path, parts: list[str], items: int, seed: int) -> Representation:
    from contrastlab.evaluation.feature_files import feature_matrix, load_features
    from contrastlab.evaluation.selection import subset

    if len(parts) > 1:
        raise UserError(f"{path}:{':'.join(parts)}: a features file takes one key after the colon")
    key = parts[0] if parts else "x"
    if key not in ("x", "x2", "paired") and not key.startswith("baseline_"):
        raise UserError(f"{path}: compare reads the key x, x2, paired or baseline_<name>; got {key!r}")
    arrays = load_features(path)
    test = "x_test" in arrays
    name = (f"{key}_test" if key in ("x2", "paired") else f"test_{key}" if key.startswith("baseline_")
            else "x_test") if test else key
    if name not in arrays:
        raise UserError(f"{path} has no {name!r} (it holds {', '.join(sorted(arrays))})")
    try:
        x = feature_matrix(arrays[name], name)
    except ValueError as err:
        raise UserError(f"{path}: {err}") from None
    rows = subset(x.shape[0], items, seed)
    return Representation(x[rows], f"{path}:{key}", ("file rows", x.shape[0]))


def _from_run(path: Path, parts: list[str], items: int, seed: int) -> Representation:
    from contrastlab.evaluation.features import collect, trained_featurizer
    from contrastlab.evaluation.pipeline import tower_sources
    from contrastlab.evaluation.selection import Selection
    from contrastlab.training import load_run

    if len(parts) > 2:
        raise UserError(f"{path}:{':'.join(parts)}: give RUN, RUN:STAGE or RUN:STAGE:TOWER")
    stage = parts[0] if parts else "head"
    if stage not in STAGES + FISSION_STAGES:
        raise UserError(f"{path}: the stage must be head or backbone (or shared / private for a fission run); "
                        f"got {stage!r}")
    run = load_run(path)
    if stage not in getattr(run.model, "stages", STAGES):
        raise UserError(f"{path}: the stage {stage!r} needs a run whose objective splits the code (fission, FactorCL)")
    dataset = run.dataset("test")
    selection = Selection.of(dataset, items, seed + 1)  # the subset `eval` draws for the test split
    got = collect(dataset, selection.indices, {"f": trained_featurizer(run.model, run.views, stage=stage)},
                  limit=selection.limit)
    towers = got.features["f"]
    modality = tower_sources(run.model, run.views)
    if len(parts) == 2:
        if parts[1] not in towers:
            raise UserError(f"{path}: no tower {parts[1]!r}; the run's towers are {', '.join(towers)}")
        x, name = towers[parts[1]], f"{path}:{stage}:{parts[1]}"
    elif len(set(modality.get(t, t) for t in towers)) > 1:
        raise UserError(f"{path}: its towers read different modalities; name one: "
                        + ", ".join(f"{path}:{stage}:{t}" for t in towers))
    else:
        x, name = torch.cat(list(towers.values()), dim=1), f"{path}:{stage}"
    data = run.config.get("data", {}) if isinstance(run.config, dict) else {}
    return Representation(x, name, ("run data", data.get("name"), repr(data.get("options")), run.config.get("seed"),
                                    len(got)))


def representation(spec: str, *, items: int = 2000, seed: int = 0) -> Representation:
    """The features a spec names (see the module docstring).

    Args:
        spec: ``RUN[:STAGE[:TOWER]]`` or ``FILE[:KEY]``.
        items: at most this many items (a seeded random subset).
        seed: seeds the subset.

    Returns:
        A :class:`Representation`.

    Raises:
        UserError: a path that does not exist, an unknown stage, tower or key.

    Example:
        >>> import tempfile, numpy as np
        >>> f = Path(tempfile.mkdtemp()) / "f.npz"
        >>> np.savez(f, x=np.zeros((5, 3)), paired=np.ones((5, 2)))
        >>> tuple(representation(f"{f}:paired").features.shape)
        (5, 2)
    """
    path, parts = _split_spec(spec)
    if path.is_dir():
        return _from_run(path, parts, items, seed)
    return _from_file(path, parts, items, seed)


def compare_sources(a: str, b: str, *, items: int = 2000, k: int = 10, seed: int = 0) -> dict[str, Any]:
    """CKA, mutual k-NN and SVCCA between two named representations of the same items.

    Args:
        a: the first spec (see the module docstring).
        b: the second spec.
        items: at most this many items.
        k: neighbours of the mutual k-NN alignment.
        seed: seeds the subset (the same items on both sides).

    Returns:
        ``{"a", "b", **compare_representations(...)}``.

    Raises:
        UserError: for a bad spec, or two sides that do not describe the same items.
    """
    from contrastlab.evaluation.compare import compare_representations

    ra, rb = representation(a, items=items, seed=seed), representation(b, items=items, seed=seed)
    if ra.items != rb.items:
        raise UserError(f"{ra.name} and {rb.name} do not describe the same items ({_items(ra.items)} vs "
                        f"{_items(rb.items)})")
    n = min(ra.features.shape[0], rb.features.shape[0])
    if n < 4:
        raise UserError(f"need at least 4 items to compare; {ra.name} has {n}")
    return {"a": ra.name, "b": rb.name,
            **compare_representations(ra.features[:n], rb.features[:n], k=min(k, n - 2), seed=seed)}


def _items(what: tuple) -> str:
    if what[0] == "file rows":
        return f"{what[1]} rows"
    return f"data {what[1]} {what[2]}, seed {what[3]}, {what[4]} test items"
