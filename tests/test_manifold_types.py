"""The type rule and the numbers of reprkit.manifold (issue 16).

* numpy in → numpy out of the same float dtype (int/bool → float64); torch in → torch
  out on the same device and dtype, for every public estimator method and function;
  ``embedding_`` attributes are always numpy;
* ``TSNE.transform`` of a row does not depend on the rest of its batch (duplicate
  training rows, grid ties);
* huge / tiny finite data (1e30 float32, 1e300 float64) gives finite results;
* t-SNE warns on duplicate rows; 1-D Barnes-Hut equals the exact gradient at angle 0;
* sparse PCA (implicit centring) against dense PCA and scikit-learn;
* LaplacianEigenmaps(symmetrize="mean") against scikit-learn's SpectralEmbedding.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.sparse as sp

import reprkit
from reprkit.manifold import spectral_init
from reprkit.manifold._checks import DuplicateRowsWarning, duplicate_fraction
from reprkit.manifold.spectral import laplacian_eigenmaps

torch = pytest.importorskip("torch")
dup_ok = pytest.mark.filterwarnings("ignore::reprkit.manifold._checks.DuplicateRowsWarning")

FAST = dict(perplexity=5.0, max_iter=40, exaggeration_iter=10, random_state=0)
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _data(n=50, d=6, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)) + 1.5 * (np.arange(n) % 3)[:, None]


def _affinity(n=50):
    X = _data(n)
    W = reprkit.LaplacianEigenmaps(2, n_neighbors=8).fit(X).affinity_matrix_
    return W.toarray()


# Every public estimator method / function of the manifold side: name -> f(input) -> output.
def _tsne_transform(X):
    t = reprkit.TSNE(2, **FAST)
    ref = _data()
    t.fit(ref.astype(np.float64))
    return t.transform(X)


def _pca_transform(X):
    return reprkit.PCA(2).fit(_data()).transform(X)


def _pca_inverse(X):
    return reprkit.PCA(6).fit(_data()).inverse_transform(X)


CASES = {
    "TSNE.fit_transform": (lambda X: reprkit.TSNE(2, **FAST).fit_transform(X), "data"),
    "TSNE(exact).fit_transform": (lambda X: reprkit.TSNE(3, method="exact", **FAST).fit_transform(X), "data"),
    "TSNE.transform": (_tsne_transform, "data"),
    "tsne": (lambda X: reprkit.tsne(X, **FAST), "data"),
    "SNE.fit_transform": (lambda X: reprkit.SNE(2, **FAST).fit_transform(X), "data"),
    "SymmetricSNE.fit_transform": (lambda X: reprkit.SymmetricSNE(2, **FAST).fit_transform(X), "data"),
    "PCA.fit_transform": (lambda X: reprkit.PCA(2).fit_transform(X), "data"),
    "PCA.transform": (_pca_transform, "data"),
    "PCA.inverse_transform": (_pca_inverse, "data"),
    "ClassicalMDS.fit_transform": (lambda X: reprkit.ClassicalMDS(2).fit_transform(X), "data"),
    "LaplacianEigenmaps.fit_transform": (lambda X: reprkit.LaplacianEigenmaps(2, n_neighbors=8).fit_transform(X), "data"),
    "LaplacianEigenmaps(mean).fit_transform": (
        lambda X: reprkit.LaplacianEigenmaps(2, n_neighbors=8, symmetrize="mean").fit_transform(X), "data"),
    "laplacian_eigenmaps": (lambda W: laplacian_eigenmaps(W, 2), "affinity"),
    "spectral_init": (lambda W: spectral_init(W, 2, random_state=0), "affinity"),
}


def _input(kind):
    return _data() if kind == "data" else _affinity()


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_numpy_in_numpy_out_same_dtype(name, dtype):
    f, kind = CASES[name]
    out = f(_input(kind).astype(dtype))
    assert isinstance(out, np.ndarray) and out.dtype == dtype and np.isfinite(out).all()


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("device", DEVICES)
def test_torch_in_torch_out_same_device_dtype(name, dtype, device):
    f, kind = CASES[name]
    x = _input(kind)
    out = f(torch.tensor(x, dtype=dtype, device=device))
    assert isinstance(out, torch.Tensor) and out.dtype == dtype and out.device.type == device
    # the same numbers as the numpy path (torch only moves the data)
    ref = f(x.astype(np.float32 if dtype == torch.float32 else np.float64))
    np.testing.assert_allclose(out.cpu().numpy(), ref, rtol=1e-5, atol=1e-6 if dtype == torch.float64 else 1e-4)


@dup_ok
@pytest.mark.parametrize("name", ["PCA.fit_transform", "ClassicalMDS.fit_transform", "TSNE.fit_transform"])
def test_integer_and_bool_input_convert_to_float64(name):
    f, _ = CASES[name]
    X = np.round(_data() * 3).astype(np.int64)
    out = f(X)
    assert out.dtype == np.float64
    np.testing.assert_allclose(out, f(X.astype(np.float64)))
    assert f(torch.tensor(X)).dtype == torch.float32  # torch int → torch's default float
    assert f(X > 4).dtype == np.float64


def test_embedding_attributes_stay_numpy():
    X = torch.tensor(_data(), dtype=torch.float32)
    for est in [reprkit.TSNE(2, **FAST), reprkit.ClassicalMDS(2), reprkit.LaplacianEigenmaps(2, n_neighbors=8)]:
        est.fit(X)
        assert isinstance(est.embedding_, np.ndarray), type(est).__name__
    assert isinstance(reprkit.PCA(2).fit(X).components_, np.ndarray)


# --------------------------------------------------------------- transform batch invariance


def _grid(dtype):
    g = np.stack(np.meshgrid(np.arange(8), np.arange(8), np.arange(3)), -1).reshape(-1, 3).astype(dtype) * dtype(0.1)
    return g


@dup_ok
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_transform_of_a_row_does_not_depend_on_its_batch(dtype):
    """Duplicate training rows and grid points make exact distance ties; a far-away batch used to
    move the joint centring mean and flip those ties (max difference 4e-3 before the fix)."""
    g = _grid(dtype)
    X = np.vstack([g, g])  # every training row twice
    t = reprkit.TSNE(2, perplexity=3, max_iter=60, exaggeration_iter=20, init="random", random_state=0).fit(X)
    rng = np.random.default_rng(1)
    Q = np.vstack([g[:15], (rng.normal(size=(40, 3)) * 3 + 7.3).astype(dtype)])
    full = t.transform(Q)
    for i in range(15):
        np.testing.assert_array_equal(t.transform(Q[i : i + 1])[0], full[i])
        np.testing.assert_array_equal(t.transform(Q[[30, i, 31]])[1], full[i])


@dup_ok
def test_transform_places_a_training_duplicate_on_its_copies():
    rng = np.random.default_rng(0)
    base = rng.normal(size=(30, 4)) * 5
    t = reprkit.TSNE(2, perplexity=3, max_iter=150, exaggeration_iter=50, random_state=0).fit(np.vstack([base, base]))
    Y = t.transform(base[:5])
    # the new copy lands next to its (identical) training rows, well inside the map's scale
    for i in range(5):
        d = np.linalg.norm(Y[i] - t.embedding_[[i, i + 30]], axis=1).min()
        assert d < 0.1 * np.ptp(t.embedding_, axis=0).max()


# --------------------------------------------------------------- huge and tiny finite data


HUGE = {np.float32: 2.0**100, np.float64: 2.0**996}  # ≈1.3e30 and ≈6.7e299: exact powers of two
ESTIMATORS = {
    "TSNE": lambda: reprkit.TSNE(2, **FAST),
    "TSNE(exact)": lambda: reprkit.TSNE(2, method="exact", **FAST),
    "SymmetricSNE": lambda: reprkit.SymmetricSNE(2, **FAST),
    "PCA": lambda: reprkit.PCA(2),
    "ClassicalMDS": lambda: reprkit.ClassicalMDS(2),
    "LaplacianEigenmaps": lambda: reprkit.LaplacianEigenmaps(2, n_neighbors=8, random_state=0),
}
LINEAR = ("PCA", "ClassicalMDS")  # embedding ∝ the data's scale; the others are scale invariant


@pytest.mark.parametrize("name", sorted(ESTIMATORS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("direction", ["huge", "tiny"])
def test_extreme_scale_gives_the_scaled_result(name, dtype, direction):
    """Data times 2^100 (float32) / 2^996 (float64), or divided by it: the embedding is the
    unscaled one (times the scale for PCA/MDS) — finite, no overflow in the squares."""
    X = _data().astype(dtype)
    s = HUGE[dtype] if direction == "huge" else 1.0 / HUGE[dtype]
    with np.errstate(all="raise"):
        Xs = X * dtype(s) if dtype(s) != 0 else None
    Z = ESTIMATORS[name]().fit_transform(Xs)
    ref = ESTIMATORS[name]().fit_transform(X)
    assert np.isfinite(Z).all()
    if name in LINEAR:
        ref = ref.astype(np.float64) * s
    np.testing.assert_allclose(np.asarray(Z, dtype=np.float64), ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())


@pytest.mark.parametrize("dtype,scale", [(np.float32, 1e30), (np.float64, 1e300)])
def test_data_at_1e30_and_1e300_is_embedded_well(dtype, scale):
    from sklearn.manifold import trustworthiness

    X = _data(90)
    Xs = (X * scale).astype(dtype)
    # t-SNE with enough iterations to be past the transient (40 give 0.78-0.84 depending on the gain rule).
    for est in [reprkit.TSNE(2, **{**FAST, "max_iter": 150}), reprkit.ClassicalMDS(2), reprkit.LaplacianEigenmaps(2, n_neighbors=8)]:
        Z = est.fit_transform(Xs)
        assert np.isfinite(Z).all()
        Z = np.asarray(Z, dtype=np.float64)
        Z = Z / np.abs(Z).max()  # MDS keeps the data's scale; sklearn's own distances would overflow
        assert trustworthiness(X, Z, n_neighbors=5) > 0.8, type(est).__name__
    t = reprkit.TSNE(2, **FAST).fit(Xs)
    assert np.isfinite(t.transform(Xs[:7])).all()
    p = reprkit.PCA(2, whiten=True).fit(Xs)
    Zw = p.transform(Xs)
    assert np.isfinite(Zw).all()
    np.testing.assert_allclose(Zw.std(axis=0, ddof=1), 1.0, rtol=1e-3)
    # explained variance ∝ scale² exceeds float32 here: documented +inf, never NaN; the ratio is finite
    assert not np.isnan(p.explained_variance_).any() and np.isfinite(p.explained_variance_ratio_).all()
    back = p.inverse_transform(Zw)
    assert np.isfinite(back).all()


# --------------------------------------------------------------- duplicates


def test_duplicate_fraction_counts_exact_repeats():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(100, 4)).astype(np.float32)
    assert duplicate_fraction(X) == 0.0
    X[50:] = X[:50]
    assert duplicate_fraction(X) == pytest.approx(0.5)
    Y = X.copy()
    Y[0, 0] = -0.0
    Y[50, 0] = 0.0
    assert duplicate_fraction(Y) == pytest.approx(0.5)  # −0.0 == 0.0
    Z = np.vstack([X[:1]] * 10 + [X[1:2] + 1e-7])
    assert duplicate_fraction(Z.astype(np.float64)) == pytest.approx(0.9 * 10 / 11, abs=1e-12)


def test_tsne_warns_on_many_duplicates_only():
    rng = np.random.default_rng(0)
    base = rng.normal(size=(30, 4))
    with pytest.warns(DuplicateRowsWarning, match="duplicates"):
        reprkit.TSNE(2, **FAST).fit(np.vstack([base, base[:10]]))
    with warnings.catch_warnings():
        warnings.simplefilter("error", DuplicateRowsWarning)
        reprkit.TSNE(2, **FAST).fit(np.vstack([base, base[:2]]))  # 2 of 32: no warning
    assert issubclass(DuplicateRowsWarning, UserWarning)


# --------------------------------------------------------------- 1-D Barnes-Hut


def test_one_dimensional_barnes_hut_matches_exact_at_angle_zero():
    # perplexity 20 → ⌊3·20⌋ ≥ n − 1 neighbours: Barnes-Hut's P is the exact method's P
    X = _data(60)
    kw = dict(perplexity=20.0, max_iter=80, exaggeration_iter=20, random_state=0, init="pca")
    bh = reprkit.TSNE(1, angle=0.0, **kw).fit(X)
    ex = reprkit.TSNE(1, method="exact", **kw).fit(X)
    assert bh.embedding_.shape == (60, 1)
    np.testing.assert_allclose(bh.embedding_, ex.embedding_, rtol=1e-6, atol=1e-6 * np.abs(ex.embedding_).max())
    assert bh.transform(X[:4]).shape == (4, 1)


# --------------------------------------------------------------- sparse PCA


@pytest.mark.parametrize("solver", ["full", "randomized"])
def test_sparse_pca_matches_dense_and_sklearn(solver):
    from sklearn.decomposition import PCA as SkPCA

    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 40)) * np.r_[[20, 10, 6, 3], np.full(36, 0.3)] + 2.0
    X[rng.random(X.shape) < 0.6] = 0.0
    S = sp.csr_matrix(X)
    a = reprkit.PCA(4, svd_solver=solver, random_state=0).fit(S)
    b = reprkit.PCA(4, svd_solver="full").fit(X)
    sk = SkPCA(4, svd_solver="full").fit(X)
    np.testing.assert_allclose(a.explained_variance_, sk.explained_variance_, rtol=1e-6 if solver == "full" else 1e-3)
    np.testing.assert_allclose(np.abs(a.components_), np.abs(sk.components_), atol=1e-6 if solver == "full" else 5e-3)
    np.testing.assert_allclose(a.components_, b.components_, atol=1e-6 if solver == "full" else 5e-3)
    np.testing.assert_allclose(a.transform(S), b.transform(X), atol=1e-5 if solver == "full" else 0.1)
    np.testing.assert_allclose(reprkit.PCA(4, svd_solver=solver, random_state=0).fit_transform(S), a.transform(S), atol=1e-9)
    assert a.n_features_in_ == 40


def test_sparse_pca_never_densifies(monkeypatch):
    rng = np.random.default_rng(0)
    S = sp.random(500, 3000, density=0.01, random_state=0, format="csr") + sp.eye(500, 3000)
    calls = []
    monkeypatch.setattr(sp.csr_matrix, "toarray", lambda self, *a, **k: calls.append(self.shape) or np.zeros(self.shape))
    Z = reprkit.PCA(3, svd_solver="randomized", random_state=0).fit_transform(S.tocsr())
    assert Z.shape == (500, 3) and not calls


# --------------------------------------------------------------- scikit-learn's symmetrisation


def test_symmetrize_mean_is_sklearns_spectral_embedding():
    from sklearn.manifold import SpectralEmbedding
    from sklearn.neighbors import kneighbors_graph

    X = np.random.default_rng(2).normal(size=(120, 5))  # one connected kNN graph: a unique embedding
    k = 6
    ours = reprkit.LaplacianEigenmaps(2, n_neighbors=k, weights="connectivity", symmetrize="mean", random_state=0).fit(X)
    A = kneighbors_graph(X, k, include_self=False)
    W = (0.5 * (A + A.T)).toarray()
    np.testing.assert_allclose(ours.affinity_matrix_.toarray(), W)
    union = reprkit.LaplacianEigenmaps(2, n_neighbors=k, weights="connectivity", random_state=0).fit(X)
    np.testing.assert_allclose(union.affinity_matrix_.toarray(), np.maximum(A.toarray(), A.toarray().T))
    ref = SpectralEmbedding(2, affinity="precomputed", random_state=0, eigen_solver="arpack").fit_transform(W)
    Z = ours.embedding_
    # the same subspace (sklearn normalises columns differently): compare after least squares
    coef, *_ = np.linalg.lstsq(Z, ref, rcond=None)
    np.testing.assert_allclose(Z @ coef, ref, atol=1e-6 * np.abs(ref).max())
