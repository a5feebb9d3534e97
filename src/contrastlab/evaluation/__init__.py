"""What did the encoder learn? Measures on the features of a frozen encoder.

Numpy arrays or torch tensors in, plain numbers and dicts out.
"""

from contrastlab.evaluation.clustering import cluster_scores
from contrastlab.evaluation.compare import compare_representations, linear_cka, mutual_knn, svcca
from contrastlab.evaluation.decodability import factor_decodability
from contrastlab.evaluation.geometry import alignment, effective_rank, feature_norms, uniformity
from contrastlab.evaluation.information import canonical_correlations, info_nce_bound, mi_lower_bound
from contrastlab.evaluation.pid import (
    conditional_entropy, conditional_mutual_information, default_clusters, entropy, mutual_information, pid,
    pid_from_table, representation_pid, representation_pids,
)
from contrastlab.evaluation.sets import set_geometry, tammes_reference, tammes_view
from contrastlab.evaluation.invariance import default_groups, discretize, invariance_report
from contrastlab.evaluation.knn import faiss_available, knn_classify, knn_evaluate, nearest_neighbours, vote
from contrastlab.evaluation.probe import LinearProbe, linear_probe
from contrastlab.evaluation.retrieval import match_ranks, retrieval_metrics

__all__ = [
    "LinearProbe", "alignment", "canonical_correlations", "cluster_scores", "compare_representations",
    "default_groups", "discretize", "factor_decodability", "linear_cka", "mutual_knn", "svcca",
    "effective_rank", "faiss_available", "feature_norms", "info_nce_bound", "invariance_report", "knn_classify",
    "knn_evaluate", "linear_probe", "match_ranks", "mi_lower_bound", "nearest_neighbours", "retrieval_metrics",
    "uniformity", "vote", "set_geometry", "tammes_reference", "tammes_view", "entropy", "conditional_entropy",
    "mutual_information", "conditional_mutual_information", "pid", "pid_from_table", "representation_pid", "representation_pids",
    "default_clusters",
]
