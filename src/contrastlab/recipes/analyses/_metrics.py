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


def across_towers(outcome, stage: str = "head") -> dict:
    """What a run's evaluation measured between the towers of one stage: ``retrieval`` and ``geometry``
    (alignment and uniformity of the paired views, and the mean effective rank of the towers).

    Evaluations since towers of different modalities became separate rows keep this under
    ``cross_modal[stage]``; older ones kept it in the ``stage`` row itself.

    Example:
        >>> from types import SimpleNamespace
        >>> new = {"cross_modal": {"head": {"retrieval": {"a->b": {"R@1": 0.5}}, "geometry": {"alignment": 1.0}}},
        ...        "encoders": {"head:a": {"tower": "a", "geometry": {"effective_rank": 3.0}}}}
        >>> across_towers(SimpleNamespace(metrics=new))["geometry"]
        {'alignment': 1.0, 'effective_rank': 3.0}
        >>> across_towers(SimpleNamespace(metrics={"encoders": {"head": {"retrieval": {"x": {}}}}}))["retrieval"]
        {'x': {}}
    """
    cross = get(outcome.metrics, "cross_modal", stage, default=None)
    if not isinstance(cross, dict):
        own = encoder(outcome, stage)
        return {"retrieval": own.get("retrieval") or {}, "geometry": own.get("geometry") or {}}
    geometry = dict(cross.get("geometry") or {})
    ranks = [get(m, "geometry", "effective_rank") for name, m in (get(outcome.metrics, "encoders") or {}).items()
             if name.startswith(f"{stage}:")]
    ranks = [r for r in ranks if r is not None]
    if ranks:
        geometry["effective_rank"] = sum(ranks) / len(ranks)
    return {"retrieval": cross.get("retrieval") or {}, "geometry": geometry}


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
