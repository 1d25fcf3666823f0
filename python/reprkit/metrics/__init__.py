"""Judging a representation: retrieval, kNN accuracy, clustering agreement,
linear probes, neighbourhood preservation and representation statistics.

Every function takes numpy arrays, torch tensors or lists (labels may be
integers or strings) and returns Python floats (dicts of floats for the
multi-metric calls); neighbour searches run in reprkit's exact tiled Rust
kNN with the GIL released, ``n_jobs`` threads and O(n·k) memory.
"""

from .clustering import adjusted_mutual_info, ami, cluster_scores, kmeans, nmi, normalized_mutual_info
from .embedding import continuity, knn_recall, trustworthiness
from .probe import LinearProbeResult, linear_probe
from .retrieval import knn, knn_accuracy, retrieval_metrics
from .stats import alignment, rank_me, uniformity

__all__ = [
    "LinearProbeResult",
    "adjusted_mutual_info",
    "alignment",
    "ami",
    "cluster_scores",
    "continuity",
    "kmeans",
    "knn",
    "knn_accuracy",
    "knn_recall",
    "linear_probe",
    "nmi",
    "normalized_mutual_info",
    "rank_me",
    "retrieval_metrics",
    "trustworthiness",
    "uniformity",
]
