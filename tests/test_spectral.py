"""Laplacian eigenmaps and spectral_init against scipy / scikit-learn references."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.linalg
import scipy.sparse as sp
from scipy.spatial.distance import cdist

import reprkit
from reprkit.errors import InvalidParameterError, NonFiniteError, ShapeError
from reprkit.manifold import spectral_init


def blobs(n: int, d: int = 6, seed: int = 0) -> np.ndarray:
    """Overlapping Gaussian clusters (a connected kNN graph with a clear spectrum)."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=1.0, size=(3, d))
    return centers[rng.integers(0, 3, n)] + rng.normal(size=(n, d))


def laplacian(w: sp.csr_matrix) -> tuple:
    W = w.toarray()
    deg = W.sum(1)
    return np.diag(deg) - W, deg


def max_angle(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(scipy.linalg.subspace_angles(np.asarray(a, float), np.asarray(b, float))))


@pytest.mark.parametrize("n", [150, 700])  # dense path and Lanczos path
@pytest.mark.parametrize("normalized", [True, False])
def test_generalized_residuals_and_d_orthogonality(n: int, normalized: bool) -> None:
    X = blobs(n)
    le = reprkit.LaplacianEigenmaps(3, n_neighbors=8, normalized=normalized, random_state=0).fit(X)
    L, deg = laplacian(le.affinity_matrix_)
    V, lam = le.embedding_, le.eigenvalues_
    B = np.diag(deg) if normalized else np.eye(n)
    for c in range(3):
        r = L @ V[:, c] - lam[c] * (B @ V[:, c])
        assert np.linalg.norm(r) < 1e-7 * max(1.0, np.abs(L).max())
    np.testing.assert_allclose(V.T @ B @ V, np.eye(3), atol=1e-9)
    # orthogonal (in the B inner product) to the trivial constant vector
    np.testing.assert_allclose(V.T @ B @ np.ones(n), 0.0, atol=1e-8)
    assert np.all(np.diff(lam) >= -1e-12) and lam[0] > 0


def test_agrees_with_scipy_eigh_on_small_dense_graph() -> None:
    X = blobs(120, seed=3)
    le = reprkit.LaplacianEigenmaps(4, n_neighbors=6, random_state=1).fit(X)
    L, deg = laplacian(le.affinity_matrix_)
    vals, vecs = scipy.linalg.eigh(L, np.diag(deg))
    np.testing.assert_allclose(le.eigenvalues_, vals[1:5], rtol=1e-9, atol=1e-12)
    assert max_angle(le.embedding_, vecs[:, 1:5]) < 1e-8
    # fixed sign convention: each column's largest-|entry| is positive
    V = le.embedding_
    assert np.all(V[np.argmax(np.abs(V), axis=0), np.arange(4)] > 0)


def test_affinity_matches_brute_force_union_graph() -> None:
    X = blobs(90, seed=5)
    k = 5
    D2 = cdist(X, X, "sqeuclidean")
    np.fill_diagonal(D2, np.inf)
    nbr = np.argsort(D2, axis=1, kind="stable")[:, :k]
    t = float(np.median(np.take_along_axis(D2, nbr, 1)))
    A = np.zeros_like(D2)
    rows = np.repeat(np.arange(90), k)
    A[rows, nbr.ravel()] = 1.0
    A = np.maximum(A, A.T)
    W_ref = np.where(A > 0, np.exp(-np.where(A > 0, D2, 0) / t), 0.0)
    le = reprkit.LaplacianEigenmaps(n_neighbors=k, random_state=0).fit(X)
    assert le.t_ == pytest.approx(t, rel=1e-12)
    np.testing.assert_allclose(le.affinity_matrix_.toarray(), W_ref, rtol=1e-10, atol=1e-14)
    conn = reprkit.LaplacianEigenmaps(n_neighbors=k, weights="connectivity", random_state=0).fit(X)
    np.testing.assert_array_equal(conn.affinity_matrix_.toarray(), A)
    assert np.isnan(conn.t_)
    fixed = reprkit.LaplacianEigenmaps(n_neighbors=k, t=2.5, random_state=0).fit(X)
    np.testing.assert_allclose(fixed.affinity_matrix_.toarray(), np.where(A > 0, np.exp(-np.where(A > 0, D2, 0) / 2.5), 0))


def test_principal_angles_vs_sklearn_spectral_embedding() -> None:
    from sklearn.manifold import SpectralEmbedding

    X = blobs(800, d=10, seed=2)
    le = reprkit.LaplacianEigenmaps(2, n_neighbors=10, random_state=0).fit(X)
    ref = SpectralEmbedding(2, affinity="precomputed", random_state=0).fit_transform(le.affinity_matrix_)
    assert max_angle(le.embedding_, ref) < 1e-6
    # same scale (unit D-norm) as scikit-learn's
    np.testing.assert_allclose(np.abs(le.embedding_).max(0), np.abs(ref).max(0), rtol=1e-4)


def test_precomputed_sparse_and_dense_match_data_path() -> None:
    X = blobs(200, seed=7)
    le = reprkit.LaplacianEigenmaps(2, random_state=0).fit(X)
    W = le.affinity_matrix_
    for A in (W, W.tocoo(), W.toarray()):
        pre = reprkit.LaplacianEigenmaps(2, affinity="precomputed", random_state=0).fit(A)
        np.testing.assert_allclose(pre.embedding_, le.embedding_, atol=1e-9)
        np.testing.assert_allclose(pre.eigenvalues_, le.eigenvalues_, rtol=1e-10)
    # a non-symmetric affinity is symmetrised with a warning; a self-loop is ignored
    A = W.toarray()
    A[0, 1] += 0.3
    A[5, 5] = 7.0
    with pytest.warns(UserWarning, match="not symmetric"):
        pre = reprkit.LaplacianEigenmaps(2, affinity="precomputed", random_state=0).fit(A)
    B = 0.5 * (A + A.T)
    np.fill_diagonal(B, 0)
    np.testing.assert_allclose(pre.affinity_matrix_.toarray(), B)
    with pytest.raises(ShapeError):
        reprkit.LaplacianEigenmaps(affinity="precomputed").fit(np.ones((4, 5)))
    with pytest.raises(ValueError, match="non-negative"):
        reprkit.LaplacianEigenmaps(affinity="precomputed").fit(-np.ones((6, 6)))


def test_disconnected_graph_warns_and_is_finite() -> None:
    rng = np.random.default_rng(0)
    X = np.vstack([rng.normal(size=(40, 3)), rng.normal(size=(50, 3)) + 100.0])
    with pytest.warns(UserWarning, match="2 connected components"):
        le = reprkit.LaplacianEigenmaps(2, n_neighbors=5, random_state=0).fit(X)
    assert le.n_connected_components_ == 2
    V = le.embedding_
    assert np.isfinite(V).all()
    # column 0 is the component indicator (λ = 0): constant on each blob
    assert le.eigenvalues_[0] == 0.0
    assert np.ptp(V[:40, 0]) < 1e-12 and np.ptp(V[40:, 0]) < 1e-12 and abs(V[0, 0] - V[-1, 0]) > 1e-3
    # column 1 still solves the generalized problem
    L, deg = laplacian(le.affinity_matrix_)
    r = L @ V[:, 1] - le.eigenvalues_[1] * deg * V[:, 1]
    assert np.linalg.norm(r) < 1e-7
    np.testing.assert_allclose(V.T @ (deg[:, None] * V), np.eye(2), atol=1e-9)


def test_duplicates_nneighbors_nan_and_parameters() -> None:
    rng = np.random.default_rng(1)
    base = rng.normal(size=(60, 4))
    X = np.vstack([base, base[:30]])  # exact duplicates: zero kNN distances
    le = reprkit.LaplacianEigenmaps(2, n_neighbors=6, random_state=0).fit(X)
    assert np.isfinite(le.embedding_).all() and le.t_ > 0
    W = le.affinity_matrix_.toarray()
    np.testing.assert_array_equal(W[np.arange(30), np.arange(60, 90)], 1.0)  # exp(0): duplicates fully linked
    L, deg = laplacian(le.affinity_matrix_)
    V = le.embedding_
    assert np.linalg.norm(L @ V - deg[:, None] * V * le.eigenvalues_) < 1e-7
    # all points identical: t falls back to 1, the graph is complete with weight 1
    same = reprkit.LaplacianEigenmaps(2, n_neighbors=3, random_state=0).fit(np.ones((12, 3)))
    assert same.t_ == 1.0 and np.isfinite(same.embedding_).all()
    with pytest.raises(InvalidParameterError, match="n_neighbors"):
        reprkit.LaplacianEigenmaps(n_neighbors=90).fit(X)
    Xn = X.copy()
    Xn[3, 1] = np.nan
    with pytest.raises(NonFiniteError):
        reprkit.LaplacianEigenmaps().fit(Xn)
    for bad in (dict(weights="gauss"), dict(t=-1.0), dict(t="median"), dict(n_components=0), dict(affinity="rbf")):
        with pytest.raises(InvalidParameterError):
            reprkit.LaplacianEigenmaps(**bad).fit(base)


def test_estimator_protocol_and_clone() -> None:
    from sklearn.base import clone

    est = reprkit.LaplacianEigenmaps(3, n_neighbors=7, weights="connectivity", random_state=4)
    params = est.get_params()
    assert params["n_components"] == 3 and params["n_neighbors"] == 7 and params["random_state"] == 4
    c = clone(est)
    assert c is not est and c.get_params() == params
    assert est.set_params(n_neighbors=9) is est and est.n_neighbors == 9
    with pytest.raises(InvalidParameterError):
        est.set_params(bogus=1)
    assert "n_neighbors=9" in repr(est)


def test_deterministic_across_threads_and_dtypes() -> None:
    X = blobs(900, seed=11)
    a = reprkit.LaplacianEigenmaps(2, random_state=3, n_jobs=1).fit_transform(X)
    b = reprkit.LaplacianEigenmaps(2, random_state=3, n_jobs=2).fit_transform(X)
    np.testing.assert_array_equal(a, b)
    f = reprkit.LaplacianEigenmaps(2, random_state=3).fit_transform(X.astype(np.float32))
    assert f.dtype == np.float32
    assert max_angle(f, a) < 1e-3


def test_torch_input_returns_tensor() -> None:
    torch = pytest.importorskip("torch")
    X = blobs(150, seed=2)
    t = torch.tensor(X, dtype=torch.float32)
    out = reprkit.LaplacianEigenmaps(2, random_state=0).fit_transform(t)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32 and out.device == t.device
    ref = reprkit.LaplacianEigenmaps(2, random_state=0).fit_transform(X.astype(np.float32))
    np.testing.assert_allclose(out.numpy(), ref)


def test_spectral_init_scaling() -> None:
    X = blobs(300, seed=4)
    W = reprkit.LaplacianEigenmaps(n_neighbors=10, random_state=0).fit(X).affinity_matrix_
    P = (W / W.sum()).tocsr()  # t-SNE-like normalised joint probabilities
    Y = spectral_init(P, 2, random_state=0)
    assert Y.shape == (300, 2)
    assert np.std(Y[:, 0]) == pytest.approx(1e-4, rel=1e-10)
    V = reprkit.LaplacianEigenmaps(2, affinity="precomputed", random_state=0).fit_transform(W)
    # scaling W does not change the normalised eigenvectors: Y ∝ V
    np.testing.assert_allclose(Y, V * (1e-4 / np.std(V[:, 0])), rtol=1e-7, atol=1e-13)


def test_spectral_init_float32_and_disconnected_p() -> None:
    X = blobs(200, seed=8)
    W = reprkit.LaplacianEigenmaps(n_neighbors=10, random_state=0).fit(X).affinity_matrix_
    P32 = (W / W.sum()).astype(np.float32).tocsr()
    Y = spectral_init(P32, 2, random_state=1)
    assert Y.dtype == np.float32 and np.std(Y[:, 0]) == pytest.approx(1e-4, rel=1e-5)
    # block-diagonal P (two components): warns, stays finite
    Pd = sp.block_diag([P32, P32]).tocsr()
    with pytest.warns(UserWarning, match="2 connected components"):
        Yd = spectral_init(Pd, 2, random_state=1)
    assert np.isfinite(Yd).all()
