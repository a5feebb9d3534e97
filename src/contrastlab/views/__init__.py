"""View generators: batched augmentations, factor resampling, colour-space splits, patches, modality pairs.

Every generator follows :class:`~contrastlab.views.base.ViewGenerator` and is built by name with
:func:`build_views`.
"""

from contrastlab.views.base import ViewGenerator
from contrastlab.views.registry import VIEWS, build_views

__all__ = ["ViewGenerator", "VIEWS", "build_views"]
