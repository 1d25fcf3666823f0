"""Approximate kNN (random-projection forest + NN-descent): recall against an
independent brute-force numpy search, determinism for a seed and any thread
count, metrics, duplicates, and its use by Laplacian eigenmaps (same subspace
as the exact graph)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg

import reprkit
from reprkit import _core
from reprkit.errors import InvalidParameterError


def _mixture(n, d, seed=0, latent=12, centers=30):
    """Gaussian clusters in a `latent`-dim space mapped linearly to d dims plus noise (embedding-like)."""
    rng = np.random.default_rng(seed)
    c = rng.normal(size=(centers, latent)) * 3.0
    z = c[rng.integers(0, centers, n)] + rng.normal(size=(n, latent))
    a = rng.normal(size=(latent, d)) / np.sqrt(latent)
    return (z @ a + 0.3 * rng.normal(size=(n, d))).astype(np.float32)


def _brute_force(X, rows, k, metric="sqeuclidean"):
    """k nearest of X[rows] among all rows (self excluded), in float64 numpy."""
    X64 = X.astype(np.float64)
    if metric == "cosine":
        X64 = X64 / np.linalg.norm(X64, axis=1, keepdims=True)
    D = (X64[rows] ** 2).sum(1)[:, None] - 2 * X64[rows] @ X64.T + (X64**2).sum(1)[None, :]
    D[np.arange(len(rows)), rows] = np.inf
    return np.argsort(D, axis=1, kind="stable")[:, :k]


def _recall(found, exact):
    return float(np.mean([len(set(a) & set(b)) / len(b) for a, b in zip(found, exact)]))


def test_recall_on_a_20k_mixture_against_brute_force():
    n, d, k = 20_000, 50, 30
    X = _mixture(n, d)
    idx, dist = _core.knn_search(X, k, "sqeuclidean", "approx", 7, 0)
    assert idx.shape == (n, k) and idx.dtype == np.int32 and dist.dtype == np.float32
    rows = np.random.default_rng(1).choice(n, 400, replace=False)
    rec = _recall(idx[rows], _brute_force(X, rows, k))
    assert rec >= 0.95, rec
    # Rows sorted by distance, never the point itself, distances are the true ones.
    assert (np.diff(dist, axis=1) >= 0).all()
    assert not (idx == np.arange(n)[:, None]).any()
    true = ((X[rows, None, :].astype(np.float64) - X[idx[rows]].astype(np.float64)) ** 2).sum(-1)
    np.testing.assert_allclose(dist[rows], true, rtol=1e-4, atol=1e-5)


def test_deterministic_for_a_seed_and_any_thread_count():
    X = _mixture(6000, 24, seed=3)
    a = _core.knn_search(X, 15, "euclidean", "approx", 11, 1)
    b = _core.knn_search(X, 15, "euclidean", "approx", 11, 2)
    c = _core.knn_search(X, 15, "euclidean", "approx", 11, 2)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    np.testing.assert_array_equal(b[0], c[0])


def test_cosine_and_float64():
    X = _mixture(5000, 32, seed=5).astype(np.float64)
    idx, dist = _core.knn_search(X, 10, "cosine", "approx", 2, 0)
    assert dist.dtype == np.float64
    rows = np.arange(0, 5000, 25)
    assert _recall(idx[rows], _brute_force(X, rows, 10, "cosine")) >= 0.95
    Xu = X / np.linalg.norm(X, axis=1, keepdims=True)
    cos = 1 - (Xu[rows, None, :] * Xu[idx[rows]]).sum(-1)
    np.testing.assert_allclose(dist[rows], cos, atol=1e-10)


def test_duplicates_and_tiny_leaves_give_valid_lists():
    rng = np.random.default_rng(0)
    base = rng.normal(size=(50, 8))
    X = np.repeat(base, 60, axis=0)  # 3000 rows, every point has 59 exact duplicates
    idx, dist = _core.knn_search(X, 20, "euclidean", "approx", 0, 0)
    assert ((idx >= 0) & (idx < len(X))).all()
    assert not (idx == np.arange(len(X))[:, None]).any()
    assert all(len(set(r)) == 20 for r in idx)
    np.testing.assert_array_equal(dist, 0.0)  # 59 duplicates at distance 0 ≥ 20


def test_bad_arguments_are_errors_not_panics():
    X = _mixture(500, 4)
    with pytest.raises(InvalidParameterError, match="k must be"):
        _core.knn_search(X, 500, "euclidean", "approx", 0, 0)
    with pytest.raises(InvalidParameterError, match="neighbors"):
        _core.knn_search(X, 5, "euclidean", "fast", 0, 0)
    with pytest.raises(InvalidParameterError, match="metric"):
        _core.knn_search(X, 5, "manhattan", "approx", 0, 0)
    Xn = X.copy()
    Xn[3, 1] = np.nan
    with pytest.raises(Exception, match="(?i)nan|finite"):
        _core.knn_search(Xn, 5, "euclidean", "approx", 0, 0)


def test_laplacian_eigenmaps_approx_neighbours_same_subspace():
    # Overlapping clusters (a connected graph), as in benches/bench_spectral.py.
    rng = np.random.default_rng(2)
    z = rng.normal(size=(8000, 8))
    z[:, 0] += 2.5 * rng.integers(0, 5, 8000)
    X = (z @ (rng.normal(size=(8, 64)) / np.sqrt(8)) + 0.1 * rng.normal(size=(8000, 64))).astype(np.float32)
    kw = dict(n_neighbors=10, weights="connectivity", random_state=0, n_jobs=2)
    ex = reprkit.LaplacianEigenmaps(2, neighbors="exact", **kw).fit(X)
    ap = reprkit.LaplacianEigenmaps(2, neighbors="approx", **kw).fit(X)
    auto = reprkit.LaplacianEigenmaps(2, **kw).fit(X)  # 8000 > AUTO_EXACT_MAX_N: approximate
    np.testing.assert_array_equal(auto.embedding_, ap.embedding_)
    assert ap.embedding_.dtype == np.float32
    # The graphs are nearly the same, hence the embedding's subspace.
    Ge, Ga = ex.affinity_matrix_, ap.affinity_matrix_
    assert abs(Ge - Ga).nnz <= 0.05 * Ge.nnz
    ang = np.max(scipy.linalg.subspace_angles(ex.embedding_.astype(np.float64), ap.embedding_.astype(np.float64)))
    assert ang < 0.1, ang
    # On the same graph the approximate path's solve equals the precomputed solve.
    pre = reprkit.LaplacianEigenmaps(2, affinity="precomputed", random_state=0, n_jobs=2).fit(Ga)
    np.testing.assert_allclose(pre.embedding_, ap.embedding_, rtol=1e-5, atol=1e-7)
    with pytest.raises(InvalidParameterError, match="neighbors"):
        reprkit.LaplacianEigenmaps(2, neighbors="annoy").fit(X[:100])
