"""Reading numbers out of a run's ``metrics.json`` without a KeyError for what a run did not measure."""

from __future__ import annotations

from typing import Any


def get(tree: Any, *path: str, default: Any = None) -> Any:
    """``tree[p0][p1]...``, or ``default`` where a key is missing.

    Example:
        >>> get({"a": {"b": 1}}, "a", "b"), get({"a": {}}, "a", "b")
        (1, None)
    """
    for key in path:
        if not isinstance(tree, dict) or key not in tree:
            return default
        tree = tree[key]
    return tree


def encoder(outcome, name: str = "head") -> dict:
    """The metrics of one encoder ("head", "backbone", "raw", "random_head", ...) of a run."""
    return get(outcome.metrics, "encoders", name, default={}) or {}


def accuracy_row(outcome, stage: str = "head") -> dict[str, Any]:
    """Linear-probe and k-NN test accuracy, alignment, uniformity, MI bound of one run's features."""
    m = encoder(outcome, stage)
    return {
        "linear": get(m, "classification", "probe_test_accuracy"),
        "knn5": get(m, "classification", "knn5_accuracy"),
        "alignment": get(m, "geometry", "alignment"),
        "uniformity": get(m, "geometry", "uniformity"),
        "norm": get(m, "geometry", "norms", "mean"),
        "mi_bound": get(m, "information", "mi_lower_bound"),
        "effective_rank": get(m, "geometry", "effective_rank"),
    }
