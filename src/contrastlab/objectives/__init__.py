"""Objectives: embeddings in, a 0-dim loss out. See :mod:`contrastlab.objectives.registry`."""

from contrastlab.objectives._spec import ObjectiveSpec
from contrastlab.objectives.registry import OBJECTIVES, build_objective, get_objective

__all__ = ["OBJECTIVES", "ObjectiveSpec", "build_objective", "get_objective"]
