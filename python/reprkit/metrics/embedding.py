"""How well an embedding keeps neighbourhoods: trustworthiness, continuity, kNN recall.

Trustworthiness (Venna & Kaski 2001; scikit-learn's ``trustworthiness``):

    T(k) = 1 − 2 / (n k (2n − 3k − 1)) · Σ_i Σ_{j ∈ N_k^Y(i)} max(0, r_X(i, j) − k)

where N_k^Y(i) are the k nearest neighbours of i in the embedding Y and
r_X(i, j) is the rank of j among i's neighbours in the input X (1 = nearest).
It penalises points that look close in Y but are far in X. Continuity is the
same with X and Y swapped (neighbours in X, ranks in Y): it penalises
neighbours of X that the embedding tears apart.

scikit-learn builds the n × n distance and rank matrices; here the ranks of
the k neighbours are counted in streamed tiles of distances, memory O(n·k).
With ``sample=m`` only m rows (drawn without replacement with
``random_state``) are scored against all n, and the sum is normalised by m
instead of n: an unbiased estimate of T for millions of rows.

Ranks order ties by index (a stable argsort); the embedding's neighbours
use Euclidean distance, as scikit-learn's ``NearestNeighbors`` does, and
``metric`` applies to X.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from .. import _core
from .._threads import resolve_n_jobs
from . import _inputs as I


def _pair(X: Any, Y: Any):
    x = I.embeddings(X, "X", min_rows=2)
    y = I.embeddings(Y, "Y", min_rows=2)
    if x.shape[0] != y.shape[0]:
        raise I.ShapeError(f"X has {x.shape[0]} rows but Y has {y.shape[0]}: they must describe the same points")
    return x, y


def _rows(n: int, sample: Optional[int], random_state: Optional[int]) -> Optional[np.ndarray]:
    if sample is None:
        return None
    m = I.check_int("sample", sample, 1, n, f" (rows to score, of n = {n})")
    if m == n:
        return None
    rng = np.random.default_rng(random_state)
    return np.sort(rng.choice(n, size=m, replace=False)).astype(np.int64)


def _neighbours(space: np.ndarray, rows: Optional[np.ndarray], k: int, metric: str, nt: int) -> np.ndarray:
    if rows is None:
        idx, _ = _core.knn_query(space, None, k, metric, None, nt)
    else:
        idx, _ = _core.knn_query(np.ascontiguousarray(space[rows]), space, k, metric, rows, nt)
    return idx


def _penalty(rank_space, rank_metric, nbr_space, nbr_metric, k, sample, random_state, n_jobs) -> float:
    n = rank_space.shape[0]
    k = I.check_int("k", k, 1, (n - 1) // 2 if n % 2 else n // 2 - 1, f" (k < n/2 for n = {n}, as scikit-learn requires)")
    nt = resolve_n_jobs(n_jobs)
    rows = _rows(n, sample, random_state)
    nbrs = _neighbours(nbr_space, rows, k, nbr_metric, nt)
    ranks = _core.neighbour_ranks(rank_space, rows, nbrs.ravel(), k, rank_metric, nt)
    m = n if rows is None else rows.shape[0]
    s = float(np.maximum(ranks - k, 0).sum(dtype=np.float64))
    return 1.0 - s * (2.0 / (m * k * (2.0 * n - 3.0 * k - 1.0)))


def trustworthiness(
    X: Any, Y: Any, k: int = 5, *, metric: str = "euclidean", sample: Optional[int] = None,
    random_state: Optional[int] = 0, n_jobs: Optional[int] = None,
) -> float:
    """Trustworthiness T(k) of the embedding Y of X (see the module docstring); equals
    ``sklearn.manifold.trustworthiness(X, Y, n_neighbors=k, metric=metric)``.

    ``sample``: score only this many random rows (an unbiased estimate, O(sample · n) time)."""
    x, y = _pair(X, Y)
    return _penalty(x, I.metric_name(metric), y, "euclidean", k, sample, random_state, n_jobs)


def continuity(
    X: Any, Y: Any, k: int = 5, *, metric: str = "euclidean", sample: Optional[int] = None,
    random_state: Optional[int] = 0, n_jobs: Optional[int] = None,
) -> float:
    """Continuity C(k) (Venna & Kaski 2001): trustworthiness with the roles swapped —
    the k neighbours are taken in X (with ``metric``) and ranked in Y (Euclidean)."""
    x, y = _pair(X, Y)
    return _penalty(y, "euclidean", x, I.metric_name(metric), k, sample, random_state, n_jobs)


def knn_recall(
    X: Any, Y: Any, k: int = 10, *, metric: str = "euclidean", sample: Optional[int] = None,
    random_state: Optional[int] = 0, n_jobs: Optional[int] = None,
) -> float:
    """Neighbourhood preservation: mean over rows of |N_k^X(i) ∩ N_k^Y(i)| / k, exact
    neighbours (``metric`` in X, Euclidean in Y), ties to the lower index."""
    x, y = _pair(X, Y)
    n = x.shape[0]
    k = I.check_int("k", k, 1, n - 1, f" (other rows, n = {n})")
    nt = resolve_n_jobs(n_jobs)
    rows = _rows(n, sample, random_state)
    a = _neighbours(x, rows, k, I.metric_name(metric), nt)
    b = _neighbours(y, rows, k, "euclidean", nt)
    a.sort(axis=1)
    b.sort(axis=1)
    # Row-wise intersection size of two sorted index lists, vectorised by offsetting rows.
    off = (np.arange(a.shape[0], dtype=np.int64) * n)[:, None]
    hits = np.intersect1d((a + off).ravel(), (b + off).ravel(), assume_unique=True).size
    return hits / float(a.size)
