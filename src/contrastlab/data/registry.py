"""The plain registry of data sets: a name -> a factory ``(*, split, seed, **options) -> Dataset``.

Only the names listed here can be built (nothing is imported from a user-supplied name).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

from contrastlab.data._split import check_split
from contrastlab.data.base import Dataset
from contrastlab.errors import check_flags, did_you_mean
from contrastlab.data.bundled import load_digits, load_mnist, load_mnist1d
from contrastlab.data.manifest import load_manifest
from contrastlab.data.shapes import ShapesDataset
from contrastlab.data.shards import load_shards
from contrastlab.data.arrays import load_npz
from contrastlab.data.hf import load_hf
from contrastlab.data.user import load_image_folder
from contrastlab.data.factorcl_synthetic import FactorCLSynthetic

DATASETS: dict[str, Callable[..., Dataset]] = {
    "shapes": ShapesDataset,
    "digits": load_digits,
    "mnist": load_mnist,
    "mnist1d": load_mnist1d,
    "image_folder": load_image_folder,
    "npz": load_npz,
    "manifest": load_manifest,
    "hf": load_hf,
    "shards": load_shards,
    "factorcl_synthetic": FactorCLSynthetic,
}




def dataset_options(name: str) -> tuple[str, ...]:
    """The option names the data set ``name`` accepts (besides ``split`` and ``seed``)."""
    if name not in DATASETS:
        raise ValueError(f"unknown data set {name!r}{did_you_mean(name, DATASETS)}")
    params = inspect.signature(DATASETS[name]).parameters
    return tuple(p for p in params if p not in ("split", "seed", "self"))


def build_dataset(name: str, *, split: str = "train", seed: int = 0, **options) -> Dataset:
    """Build the data set ``name`` for ``split`` with its keyword options.

    Args:
        name: A key of :data:`DATASETS`.
        split: ``"train"`` or ``"test"`` (disjoint, deterministic).
        seed: Seed of a generated data set (Shapes); real data sets ignore it.
        **options: The data set's own options (e.g. ``n_items`` for Shapes, ``root`` for image folders).

    Returns:
        A data set following the ``Dataset`` protocol.

    Raises:
        ValueError: For an unknown name, split or option (with a did-you-mean), or a bad option value.
        contrastlab.errors.UserError: For problems with the user's files.

    Example:
        >>> ds = build_dataset("digits", split="test")
        >>> len(ds), ds.modalities
        (359, {'image': (1, 8, 8)})
    """
    allowed = dataset_options(name)
    check_split(split)
    for key in options:
        if key not in allowed:
            known = did_you_mean(key, allowed) if allowed else f"; data set {name!r} takes no options"
            raise ValueError(f"unknown option {key!r} for data set {name!r}{known}")
    required = [p.name for p in inspect.signature(DATASETS[name]).parameters.values()
                if p.default is inspect.Parameter.empty and p.kind is inspect.Parameter.KEYWORD_ONLY
                and p.name not in options and p.name not in ("split", "seed")]
    if required:
        raise ValueError(f"data set {name!r} needs the option {required[0]!r}")
    check_flags(DATASETS[name], options, f"data set {name!r}")
    try:
        return DATASETS[name](split=split, seed=seed, **options)
    except TypeError as err:  # a value of the wrong type that no check caught: still the user's input
        given = ", ".join(f"{k}={v!r}" for k, v in options.items())
        raise ValueError(f"bad option value for data set {name!r} ({given}): {err}") from None
