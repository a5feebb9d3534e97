"""What did the encoder learn? Measures on the features of a frozen encoder.

Numpy arrays or torch tensors in, plain numbers and dicts out.
"""

# ``pid`` names both a function and its module: bound here, the function wins whatever imports the module.
from contrastlab.evaluation.pid import pid  # noqa: E402  (numpy only: cheap)

_HOME = {  # name -> the module that defines it, imported on first use (PEP 562): reading one module
    # (e.g. the training monitors' geometry) must not import scikit-learn and scipy with the others
    'LinearProbe': 'probe',
    'alignment': 'geometry',
    'canonical_correlations': 'information',
    'cluster_scores': 'clustering',
    'compare_representations': 'compare',
    'conditional_entropy': 'pid',
    'conditional_mutual_information': 'pid',
    'default_clusters': 'pid',
    'default_groups': 'invariance',
    'discretize': 'invariance',
    'effective_rank': 'geometry',
    'entropy': 'pid',
    'factor_decodability': 'decodability',
    'faiss_available': 'knn',
    'feature_norms': 'geometry',
    'info_nce_bound': 'information',
    'invariance_report': 'invariance',
    'knn_classify': 'knn',
    'knn_evaluate': 'knn',
    'linear_cka': 'compare',
    'linear_probe': 'probe',
    'match_ranks': 'retrieval',
    'mi_lower_bound': 'information',
    'mutual_information': 'pid',
    'mutual_knn': 'compare',
    'nearest_neighbours': 'knn',
    'pid_from_table': 'pid',
    'representation_pid': 'pid',
    'representation_pids': 'pid',
    'retrieval_metrics': 'retrieval',
    'set_geometry': 'sets',
    'svcca': 'compare',
    'tammes_reference': 'sets',
    'tammes_view': 'sets',
    'uniformity': 'geometry',
    'vote': 'knn',
}


def __getattr__(name: str):
    if name in _HOME:
        import importlib

        value = getattr(importlib.import_module(f"{__name__}.{_HOME[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_HOME))


__all__ = [
    "LinearProbe", "alignment", "canonical_correlations", "cluster_scores", "compare_representations",
    "default_groups", "discretize", "factor_decodability", "linear_cka", "mutual_knn", "svcca",
    "effective_rank", "faiss_available", "feature_norms", "info_nce_bound", "invariance_report", "knn_classify",
    "knn_evaluate", "linear_probe", "match_ranks", "mi_lower_bound", "nearest_neighbours", "retrieval_metrics",
    "uniformity", "vote", "set_geometry", "tammes_reference", "tammes_view", "entropy", "conditional_entropy",
    "mutual_information", "conditional_mutual_information", "pid", "pid_from_table", "representation_pid", "representation_pids",
    "default_clusters",
]
