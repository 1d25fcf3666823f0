"""t-SNE affinities from a sparse kNN distance matrix, from a ready P (fit(affinities=P)),
reuse of ``affinities_``, their validation, and the verbose progress log.

References: the dense paths of reprkit (the sparse paths must equal them) and
scikit-learn's ``_joint_probabilities_nn`` (an independent calibration)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from scipy.spatial.distance import cdist

import reprkit
from reprkit import _core
from reprkit.errors import InvalidParameterError, NonFiniteError, ShapeError

sk_tsne = pytest.importorskip("sklearn.manifold._t_sne")


def _data(n=400, d=8, seed=0):
    rng = np.random.default_rng(seed)
    c = rng.normal(0, 6, size=(5, d))
    return c[np.arange(n) % 5] + rng.normal(size=(n, d))


def _knn_graph(D, k):
    """Sparse kNN distance matrix of a dense D: each row's k nearest others (ties to the lower index)."""
    n = D.shape[0]
    Dm = D.copy()
    np.fill_diagonal(Dm, np.inf)
    idx = np.argsort(Dm, axis=1, kind="stable")[:, :k]
    return sp.csr_matrix((np.take_along_axis(D, idx, 1).ravel(), idx.ravel(), np.arange(0, n * k + 1, k)), shape=(n, n))


KW = dict(init="random", random_state=0, max_iter=120, exaggeration_iter=60, n_jobs=2)


@pytest.mark.parametrize("method", ["barnes_hut", "exact"])
def test_sparse_precomputed_equals_dense_precomputed(method):
    X = _data()
    D = cdist(X, X)
    k = int(3 * 10.0)
    dense = reprkit.TSNE(metric="precomputed", perplexity=10.0, method=method, **KW).fit(D)
    # The sparse path uses k = 3·perplexity neighbours; the dense exact method uses all n−1,
    # so compare against a dense run restricted to the same neighbours (barnes_hut) or
    # against the sparse P directly.
    sparse = reprkit.TSNE(metric="precomputed", perplexity=10.0, method=method, **KW).fit(_knn_graph(D, k))
    if method == "barnes_hut":
        assert abs(dense.affinities_ - sparse.affinities_).max() == 0.0
        np.testing.assert_array_equal(dense.embedding_, sparse.embedding_)
    # Extra stored neighbours beyond k change nothing: the k nearest of each row are kept.
    more = reprkit.TSNE(metric="precomputed", perplexity=10.0, method=method, **KW).fit(_knn_graph(D, 2 * k))
    assert abs(more.affinities_ - sparse.affinities_).max() == 0.0


def test_sparse_precomputed_matches_scikit_learn_and_the_euclidean_path():
    X = _data(500, 6, seed=1)
    perp = 12.0
    k = int(3 * perp)
    D = cdist(X, X)
    G = _knn_graph(D, k)
    ours = reprkit.TSNE(metric="precomputed", perplexity=perp, **KW).fit(G).affinities_
    # sklearn calibrates on squared distances, stored as a CSR of neighbours.
    G2 = G.copy()
    G2.data = G2.data**2
    ref = sp.csr_matrix(sk_tsne._joint_probabilities_nn(G2, perp, 0))
    assert abs(ours - ref).max() <= 1e-4 * ref.max()
    eu = reprkit.TSNE(perplexity=perp, neighbors="exact", **KW).fit(X).affinities_
    np.testing.assert_allclose((ours - eu).toarray(), 0.0, atol=1e-12)


def test_rows_with_unequal_neighbour_counts_and_explicit_zeros():
    X = _data(300, 5, seed=2)
    D = cdist(X, X)
    G = _knn_graph(D, 20).tolil()
    G[0, 0] = 0.0  # a stored diagonal is ignored
    for j in np.argsort(D[1])[21:30]:  # row 1 lists more neighbours than the others
        G[1, j] = D[1, j]
    G = G.tocsr()
    t = reprkit.TSNE(metric="precomputed", perplexity=5.0, **KW).fit(G)
    P = t.affinities_
    assert abs(P - P.T).max() <= 1e-15 and abs(P.sum() - 1) < 1e-12 and P.diagonal().max() == 0
    # Explicit zeros are neighbours at distance 0 (duplicates), not missing entries.
    Z = _knn_graph(D, 20)
    Z.data[:1] = 0.0
    assert reprkit.TSNE(metric="precomputed", perplexity=5.0, **KW).fit(Z).affinities_[0, Z.indices[0]] > 0


def test_bad_sparse_distances_get_clear_errors():
    X = _data(200, 4)
    G = _knn_graph(cdist(X, X), 15)
    t = reprkit.TSNE(metric="precomputed", perplexity=5.0, **KW)
    neg = G.copy()
    neg.data[7] = -1.0
    with pytest.raises(InvalidParameterError, match="negative"):
        t.fit(neg)
    bad = G.copy()
    bad.data[3] = np.nan
    with pytest.raises(NonFiniteError):
        t.fit(bad)
    with pytest.raises(InvalidParameterError, match="row 0 .* 3 neighbours.*perplexity"):
        reprkit.TSNE(metric="precomputed", perplexity=5.0, **KW).fit(_knn_graph(cdist(X, X), 3))
    with pytest.raises(ShapeError, match="square"):
        t.fit(G[:, :150])
    with pytest.raises(InvalidParameterError, match="init='pca'"):
        reprkit.TSNE(metric="precomputed", init="pca").fit(G)


@pytest.mark.filterwarnings("ignore:the affinity graph has")  # separated clusters: spectral init warns
def test_affinities_reuse_skips_the_search_and_reproduces_the_fit():
    X = _data(400, 8, seed=3)
    first = reprkit.TSNE(perplexity=15.0, **KW).fit(X)
    again = reprkit.TSNE(**KW).fit(None, affinities=first.affinities_)
    np.testing.assert_array_equal(again.embedding_, first.embedding_)
    assert again.kl_divergence_ == first.kl_divergence_
    # Other runs on the same P: heavier tails, other exaggeration, spectral init, dense P in.
    for kw in (dict(dof=0.5), dict(early_exaggeration=4.0), dict(init="spectral")):
        other = reprkit.TSNE(**{**KW, **kw}).fit_transform(X, affinities=first.affinities_)
        assert other.shape == (400, 2) and np.isfinite(other).all()
    dense = reprkit.TSNE(**KW).fit(X, affinities=first.affinities_.toarray())
    np.testing.assert_array_equal(dense.embedding_, first.embedding_)


def test_bad_affinities_get_clear_errors():
    X = _data(100, 4)
    P = reprkit.TSNE(perplexity=5.0, **KW).fit(X).affinities_
    t = reprkit.TSNE(**KW)
    with pytest.raises(InvalidParameterError, match="sum to 1"):
        t.fit(None, affinities=P * 2)
    asym = P.tolil()
    i, j = P.nonzero()[0][0], P.nonzero()[1][0]
    asym[i, j] = asym[i, j] * 1.5
    asym = asym.tocsr() / asym.sum()
    with pytest.raises(InvalidParameterError, match="symmetric"):
        t.fit(None, affinities=asym)
    neg = P.copy()
    neg.data[0] = -neg.data[0]
    with pytest.raises(InvalidParameterError, match="non-negative"):
        t.fit(None, affinities=neg)
    diag = (P + sp.identity(100) * 1e-3) / (1 + 0.1)
    with pytest.raises(InvalidParameterError, match="diagonal"):
        t.fit(None, affinities=diag)
    with pytest.raises(ShapeError):
        t.fit(X[:50], affinities=P)
    with pytest.raises(InvalidParameterError, match="init='pca' needs X"):
        reprkit.TSNE().fit(None, affinities=P)
    with pytest.raises(InvalidParameterError, match="SNE"):
        reprkit.SNE(init="random").fit(X, affinities=P)
    with pytest.raises(InvalidParameterError, match="transform"):
        reprkit.TSNE(**KW).fit(None, affinities=P).transform(X[:3])


def test_verbose_reports_each_stage(capsys):
    X = _data(300, 6)
    reprkit.TSNE(verbose=True, **{**KW, "max_iter": 100, "exaggeration_iter": 50}).fit(X)
    err = capsys.readouterr().err
    assert "kNN: 90 neighbours of 300 points (exact search):" in err
    assert "calibration (perplexity 30.0) and symmetrisation:" in err
    assert "iteration    50  KL" in err and "iteration   100  KL" in err
    assert "done: 100 iterations" in err
