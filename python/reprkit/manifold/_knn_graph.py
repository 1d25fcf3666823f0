"""scikit-learn's kNN-graph symmetrisation for Laplacian eigenmaps: W = (A + Aᵀ) / 2.

A is the directed kNN graph (a_ij = kernel(d_ij) when j is one of the k nearest
neighbours of i, self excluded), so a one-sided edge gets half the weight of a
mutual one; this is ``sklearn.manifold.SpectralEmbedding``'s
``0.5 * (A + A.T)``. reprkit's default, the union (w_ij = kernel(d_ij) when either
is a neighbour of the other, Belkin & Niyogi 2003, §3 step 1), lives in Rust
(``_core.knn_affinity``).
"""

from __future__ import annotations

from typing import Any, Optional, Tuple

import numpy as np

from .. import _core


def _auto_bandwidth(sq: np.ndarray) -> float:
    """The Rust rule (spectral.rs ``auto_bandwidth``): median of the squared kNN distances,
    else the mean of the positive ones, else 1."""
    med = float(np.median(sq)) if sq.size else 1.0
    if med > 0:
        return med
    pos = sq[sq > 0]
    return float(pos.mean()) if pos.size else 1.0


def mean_symmetrized_knn(
    x: np.ndarray, k: int, weights: str, t: Optional[float], n_threads: int, neighbors: str = "exact", seed: int = 0
) -> Tuple[Any, float]:
    """``(W csr float64, t_used)`` with W = (A + Aᵀ)/2 of the directed kNN graph of ``x``
    (``neighbors``: "exact" or "approx", the search t-SNE uses)."""
    import scipy.sparse as sp

    n = x.shape[0]
    # Only the neighbour lists are used; distances are recomputed exactly below.
    knn_idx = _core.knn_search(x, k, "euclidean", neighbors, seed, n_threads)[0].astype(np.int64)
    xd = x.astype(np.float64)
    sq = np.empty((n, k))
    for s in range(0, n, 4096):  # exact Σ(x_i − x_j)² in chunks: O(chunk·k·d) memory
        diff = xd[s : s + 4096, None, :] - xd[knn_idx[s : s + 4096]]
        sq[s : s + 4096] = np.einsum("ikd,ikd->ik", diff, diff)
    if weights == "connectivity":
        vals, t_used = np.ones(n * k), float("nan")
    else:
        t_used = _auto_bandwidth(sq.ravel()) if t is None else float(t)
        vals = np.exp(-sq.ravel() / t_used)
    a = sp.csr_matrix((vals, knn_idx.ravel(), np.arange(0, n * k + 1, k)), shape=(n, n))
    w = ((a + a.T) * 0.5).tocsr()
    w.setdiag(0)
    w.eliminate_zeros()
    w.sort_indices()
    return w, t_used
