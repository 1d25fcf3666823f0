"""PCA and classical MDS against scikit-learn, scipy and the cMDS = PCA identity."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
from scipy.spatial.distance import cdist

import reprkit
from reprkit.errors import InvalidParameterError, NonFiniteError, ShapeError


def data(n: int, d: int, seed: int = 0, dtype=np.float64) -> np.ndarray:
    rng = np.random.default_rng(seed)
    scales = 1.0 / (1.0 + np.arange(d)) ** 0.7  # distinct variances → well-separated components
    return (rng.normal(size=(n, d)) * scales + 5.0).astype(dtype)


def assert_same_up_to_sign(a: np.ndarray, b: np.ndarray, axis: int, **tol) -> None:
    """Columns (axis=0) or rows (axis=1) of a equal those of b up to a per-vector sign."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    s = np.sign(np.sum(a * b, axis=axis, keepdims=True))
    np.testing.assert_allclose(a * s, b, **tol)


@pytest.mark.parametrize("shape", [(300, 12), (15, 40)])  # covariance route and Gram route (n < d)
def test_pca_full_matches_sklearn(shape) -> None:
    from sklearn.decomposition import PCA as SkPCA

    X = data(*shape)
    k = 5
    ours = reprkit.PCA(k, svd_solver="full").fit(X)
    ref = SkPCA(k, svd_solver="full").fit(X)
    assert_same_up_to_sign(ours.components_, ref.components_, axis=1, atol=1e-9)
    np.testing.assert_allclose(ours.explained_variance_, ref.explained_variance_, rtol=1e-10)
    np.testing.assert_allclose(ours.explained_variance_ratio_, ref.explained_variance_ratio_, rtol=1e-10)
    np.testing.assert_allclose(ours.singular_values_, ref.singular_values_, rtol=1e-10)
    np.testing.assert_allclose(ours.mean_, ref.mean_, atol=1e-12)
    Z = ours.transform(X)
    assert_same_up_to_sign(Z, ref.transform(X), axis=0, atol=1e-9)
    np.testing.assert_allclose(ours.fit_transform(X), Z, atol=1e-10)
    np.testing.assert_allclose(ours.inverse_transform(Z), ref.inverse_transform(ref.transform(X)), atol=1e-9)
    # sign convention: largest-|entry| of each component is positive
    C = ours.components_
    assert np.all(C[np.arange(k), np.argmax(np.abs(C), axis=1)] > 0)


def test_pca_whiten_and_full_rank_roundtrip() -> None:
    from sklearn.decomposition import PCA as SkPCA

    X = data(200, 6, seed=1)
    ours = reprkit.PCA(3, whiten=True).fit(X)
    ref = SkPCA(3, whiten=True).fit(X)
    Z = ours.transform(X)
    np.testing.assert_allclose(np.var(Z, axis=0, ddof=1), 1.0, rtol=1e-10)
    assert_same_up_to_sign(Z, ref.transform(X), axis=0, atol=1e-8)
    np.testing.assert_allclose(ours.inverse_transform(Z), ref.inverse_transform(ref.transform(X)), atol=1e-9)
    full = reprkit.PCA().fit(X)  # n_components=None → all: exact reconstruction
    assert full.n_components_ == 6
    np.testing.assert_allclose(full.inverse_transform(full.transform(X)), X, atol=1e-10)
    np.testing.assert_allclose(full.explained_variance_ratio_.sum(), 1.0, rtol=1e-12)


def test_pca_randomized_matches_exact_and_is_deterministic() -> None:
    X = data(2000, 60, seed=2)
    exact = reprkit.PCA(4, svd_solver="full").fit(X)
    a = reprkit.PCA(4, svd_solver="randomized", random_state=0, n_jobs=1).fit(X)
    b = reprkit.PCA(4, svd_solver="randomized", random_state=0, n_jobs=2).fit(X)
    np.testing.assert_array_equal(a.components_, b.components_)
    assert_same_up_to_sign(a.components_, exact.components_, axis=1, atol=2e-5)
    np.testing.assert_allclose(a.explained_variance_, exact.explained_variance_, rtol=1e-7)
    e1 = reprkit.PCA(4, svd_solver="full", n_jobs=1).fit(X)
    np.testing.assert_array_equal(e1.components_, exact.components_)


def test_pca_float32_and_torch() -> None:
    torch = pytest.importorskip("torch")
    X = data(500, 20, seed=3)
    f = reprkit.PCA(3).fit(X.astype(np.float32))
    d = reprkit.PCA(3).fit(X)
    assert f.components_.dtype == np.float32
    assert_same_up_to_sign(f.components_, d.components_, axis=1, atol=2e-4)
    t = torch.tensor(X)
    Zt = reprkit.PCA(3).fit_transform(t)
    assert isinstance(Zt, torch.Tensor) and Zt.dtype == torch.float64
    np.testing.assert_allclose(Zt.numpy(), d.transform(X), atol=1e-10)
    back = d.inverse_transform(torch.tensor(d.transform(X)))
    assert isinstance(back, torch.Tensor)


def test_pca_errors_and_params() -> None:
    from sklearn.base import clone

    X = data(30, 4)
    with pytest.raises(InvalidParameterError):
        reprkit.PCA(5).fit(X)
    with pytest.raises(InvalidParameterError):
        reprkit.PCA(2, svd_solver="arpack").fit(X)
    Xn = X.copy()
    Xn[0, 0] = np.nan
    with pytest.raises(NonFiniteError):
        reprkit.PCA(2).fit(Xn)
    p = reprkit.PCA(2, whiten=True, random_state=3)
    assert clone(p).get_params() == p.get_params()
    p.set_params(n_components=3)
    assert p.n_components == 3
    with pytest.raises(ShapeError):
        reprkit.PCA(2).fit(X).transform(np.ones((3, 5)))


def test_classical_mds_equals_pca_and_scipy_eigh() -> None:
    X = data(250, 5, seed=4)
    k = 3
    mds = reprkit.ClassicalMDS(k).fit(X)
    pca = reprkit.PCA(k).fit(X)
    assert_same_up_to_sign(mds.embedding_, pca.transform(X), axis=0, atol=1e-9)
    np.testing.assert_allclose(mds.explained_variance_ratio_, pca.explained_variance_ratio_, rtol=1e-10)
    # precomputed: double-centring path, checked against scipy.linalg.eigh of B
    D = cdist(X, X)
    n = len(X)
    J = np.eye(n) - 1.0 / n
    B = -0.5 * J @ (D**2) @ J
    vals, vecs = scipy.linalg.eigh(B)
    vals, vecs = vals[::-1][:k], vecs[:, ::-1][:, :k]
    pre = reprkit.ClassicalMDS(k, metric="precomputed", random_state=0).fit(D)
    np.testing.assert_allclose(pre.eigenvalues_, vals, rtol=1e-9)
    assert_same_up_to_sign(pre.embedding_, vecs * np.sqrt(vals), axis=0, atol=1e-8)
    assert_same_up_to_sign(pre.embedding_, mds.embedding_, axis=0, atol=1e-8)
    np.testing.assert_allclose(pre.explained_variance_ratio_, vals / np.trace(B), rtol=1e-9)


@pytest.mark.parametrize("n", [120, 400])  # dense and Lanczos paths
def test_mds_reproduces_distances_at_full_rank(n: int) -> None:
    rng = np.random.default_rng(5)
    X = rng.normal(size=(n, 3)) @ rng.normal(size=(3, 7))  # rank 3 in 7 dimensions
    D = cdist(X, X)
    for est in (reprkit.ClassicalMDS(3), reprkit.ClassicalMDS(3, metric="precomputed", random_state=1)):
        Y = est.fit_transform(D if est.metric == "precomputed" else X)
        np.testing.assert_allclose(cdist(Y, Y), D, atol=1e-8)


def test_mds_non_euclidean_warns_and_validates() -> None:
    from sklearn.base import clone

    # a non-metric "distance" matrix: B has two clearly negative eigenvalues (−2, −0.78),
    # so the top 4 of its 5 eigenvalues include one
    D = np.array([[0, 3, 1, 1, 3], [3, 0, 1, 3, 2], [1, 1, 0, 2, 3], [1, 3, 2, 0, 1], [3, 2, 3, 1, 0]], float)
    J = np.eye(5) - 0.2
    assert (np.linalg.eigvalsh(-0.5 * J @ (D**2) @ J) < -0.5).sum() == 2
    with pytest.warns(UserWarning, match="non-Euclidean"):
        m = reprkit.ClassicalMDS(4, metric="precomputed", random_state=0).fit(D)
    assert m.eigenvalues_[3] == pytest.approx(-0.783294573, rel=1e-8)
    assert np.isfinite(m.embedding_).all()
    np.testing.assert_array_equal(m.embedding_[:, m.eigenvalues_ <= 0], 0.0)
    with pytest.raises(ShapeError):
        reprkit.ClassicalMDS(metric="precomputed").fit(np.ones((3, 4)))
    with pytest.raises(ValueError, match="symmetric"):
        reprkit.ClassicalMDS(1, metric="precomputed").fit(np.array([[0, 1, 2], [1, 0, 1], [1, 1, 0]], float))
    with pytest.raises(InvalidParameterError):
        reprkit.ClassicalMDS(9).fit(np.ones((5, 3)) + np.arange(3))
    with pytest.raises(InvalidParameterError):
        reprkit.ClassicalMDS(metric="cosine").fit(np.ones((5, 3)))
    est = reprkit.ClassicalMDS(4, metric="precomputed", random_state=2)
    assert clone(est).get_params() == est.get_params()


def test_mds_deterministic_across_threads_float32_torch() -> None:
    torch = pytest.importorskip("torch")
    X = data(500, 4, seed=6)
    D = cdist(X, X)
    a = reprkit.ClassicalMDS(2, metric="precomputed", random_state=0, n_jobs=1).fit_transform(D)
    b = reprkit.ClassicalMDS(2, metric="precomputed", random_state=0, n_jobs=2).fit_transform(D)
    np.testing.assert_array_equal(a, b)
    f = reprkit.ClassicalMDS(2).fit_transform(X.astype(np.float32))
    assert f.dtype == np.float32
    assert_same_up_to_sign(f, a, axis=0, atol=1e-3)
    t = reprkit.ClassicalMDS(2).fit_transform(torch.tensor(X))
    assert isinstance(t, torch.Tensor)
    assert_same_up_to_sign(t.numpy(), a, axis=0, atol=1e-8)
