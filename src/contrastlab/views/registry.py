"""The plain registry of view generators: a name -> a factory ``(dataset, **options) -> ViewGenerator``.

Only the names listed here can be built (nothing is imported from a user-supplied name).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

from contrastlab.data.base import Dataset
from contrastlab.errors import check_flags, did_you_mean
from contrastlab.views.base import ViewGenerator
from contrastlab.views.colour_split import ColourSplitViews
from contrastlab.views.factor import FactorResampleViews
from contrastlab.views.fusion import JoinedViews
from contrastlab.views.multicrop import MultiCropViews
from contrastlab.views.pairs import IdentityViews, ModalityPairViews
from contrastlab.views.patches import PatchViews
from contrastlab.views.signal import SignalViews
from contrastlab.views.simclr import SimCLRAugment, SimCLRViews
from contrastlab.views.vectors import ModalityAugmentViews

VIEWS: dict[str, Callable[..., ViewGenerator]] = {
    "simclr": SimCLRViews,
    "multicrop": MultiCropViews,
    "factor_resample": FactorResampleViews,
    "colour_split": ColourSplitViews,
    "patches": PatchViews,
    "modality_pair": ModalityPairViews,
    "signal": SignalViews,
    "identity": IdentityViews,
    "modality_augment": ModalityAugmentViews,
    "joined": JoinedViews,
}

#: View generators whose ``**options`` go to :class:`SimCLRAugment`, with the augment options they set themselves.
_AUGMENT_OPTIONS: dict[str, tuple[str, ...]] = {"simclr": ("size",), "multicrop": ("size", "crop_scale")}


def view_options(name: str) -> tuple[str, ...]:
    """The option names the view generator ``name`` accepts."""
    if name not in VIEWS:
        raise ValueError(f"unknown views {name!r}{did_you_mean(name, VIEWS)}")
    params = [p for p in inspect.signature(VIEWS[name]).parameters.values()
              if p.name != "dataset" and p.kind is not inspect.Parameter.VAR_KEYWORD]
    names = tuple(p.name for p in params)
    if name in _AUGMENT_OPTIONS:
        names += tuple(p for p in inspect.signature(SimCLRAugment).parameters if p not in _AUGMENT_OPTIONS[name])
    return names


def build_views(name: str, dataset: Dataset, **options) -> ViewGenerator:
    """Build the view generator ``name`` for ``dataset`` with its keyword options.

    Raises:
        ValueError: For an unknown name or option (with a did-you-mean) or a bad option value.

    Example:
        >>> from contrastlab.data import build_dataset
        >>> views = build_views("colour_split", build_dataset("shapes", n_items=4), space="ycbcr")
        >>> views.view_names
        ('Y', 'CbCr')
    """
    allowed = view_options(name)
    for key in options:
        if key not in allowed:
            raise ValueError(f"unknown option {key!r} for views {name!r}{did_you_mean(key, allowed)}")
    check_flags(VIEWS[name], options, f"views {name!r}")
    try:
        return VIEWS[name](dataset, **options)
    except TypeError as err:  # a value of the wrong type that no check caught: still the user's input
        given = ", ".join(f"{k}={v!r}" for k, v in options.items())
        raise ValueError(f"bad option value for views {name!r} ({given}): {err}") from None
