"""t-SNE / SNE: gradients, affinities, optimiser behaviour, estimator API, CLI, errors.

References: finite differences, scikit-learn's private t-SNE helpers
(``_kl_divergence``, ``_joint_probabilities_nn``), plain numpy formulas and
``sklearn.manifold.trustworthiness``.
"""

from __future__ import annotations

import os
import signal
import threading

import numpy as np
import pytest
import scipy.sparse as sp

import reprkit
from reprkit import _core
from reprkit.errors import InvalidParameterError, NonFiniteError, ShapeError

sk_tsne = pytest.importorskip("sklearn.manifold._t_sne")


def _blobs(n=300, d=10, centers=4, seed=0, spread=12.0):
    rng = np.random.default_rng(seed)
    c = rng.normal(0, spread, size=(centers, d))
    lab = np.arange(n) % centers
    return (c[lab] + rng.normal(size=(n, d))).astype(np.float64), lab


def _dense_joint_p(n, seed=0, perplexity=5.0):
    """A dense symmetric P (all pairs), built with scikit-learn's own calibration."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 4))
    D = ((X[:, None, :] - X[None, :, :]) ** 2).sum(-1).astype(np.float32)
    Pc = sk_tsne._joint_probabilities(D, perplexity, 0)  # condensed
    from scipy.spatial.distance import squareform

    return np.ascontiguousarray(squareform(Pc)), Pc


def _optimizer(P, Y, kernel="t", dof=1.0, method="exact", angle=0.5, cond=None):
    P = sp.csr_matrix(P)
    P.sort_indices()
    return _core.TsneOptimizer(
        P.indptr.astype(np.int64), P.indices.astype(np.int32), P.data.astype(np.float64),
        np.ascontiguousarray(Y, dtype=np.float64), kernel, dof, method, angle, cond,
    )


# ---------------------------------------------------------------- gradients


@pytest.mark.parametrize("kernel,dof,dim", [("t", 1.0, 2), ("t", 0.6, 2), ("t", 1.0, 3), ("t", 2.0, 5), ("gaussian", 1.0, 2)])
def test_exact_gradient_matches_finite_differences(kernel, dof, dim):
    n = 12
    P, _ = _dense_joint_p(n)
    rng = np.random.default_rng(1)
    Y = rng.normal(size=(n, dim))
    opt = _optimizer(P, Y, kernel, dof)
    g, kl = opt.gradient(Y, 1.0, 1)
    h = 1e-6
    fd = np.zeros_like(Y)
    for i in range(n):
        for d in range(dim):
            Yp, Ym = Y.copy(), Y.copy()
            Yp[i, d] += h
            Ym[i, d] -= h
            fd[i, d] = (opt.gradient(Yp, 1.0, 1)[1] - opt.gradient(Ym, 1.0, 1)[1]) / (2 * h)
    np.testing.assert_allclose(g, fd, rtol=1e-5, atol=1e-8)


def test_sne_gradient_matches_finite_differences():
    n = 10
    rng = np.random.default_rng(2)
    X = rng.normal(size=(n, 3))
    _, _, _, knn_idx, p_cond = _core.tsne_affinities(X, 3.0, n - 1, "euclidean", "exact", 1, 0)
    Pcond = np.zeros((n, n))
    np.put_along_axis(Pcond, knn_idx.astype(np.int64), p_cond, axis=1)
    P = (Pcond + Pcond.T) / (2 * n)
    Y = rng.normal(size=(n, 2))
    opt = _optimizer(P, Y, "sne", cond=(knn_idx, p_cond))
    g, kl = opt.gradient(Y, 1.0, 1)
    # KL = Σ_i KL(P_i‖Q_i) with q_{j|i} = exp(-d²)/Σ_k exp(-d²_ik): numpy reference.
    D2 = ((Y[:, None] - Y[None]) ** 2).sum(-1)
    W = np.exp(-D2)
    np.fill_diagonal(W, 0)
    Q = W / W.sum(1, keepdims=True)
    m = Pcond > 0
    assert kl == pytest.approx(np.sum(Pcond[m] * np.log(Pcond[m] / Q[m])), rel=1e-10)
    ref = 2 * np.einsum("ij,ijd->id", Pcond - Q + (Pcond - Q).T, Y[:, None] - Y[None])
    np.testing.assert_allclose(g, ref, rtol=1e-8, atol=1e-12)


def test_gradient_matches_scikit_learn_kl_divergence():
    n = 15
    P, Pc = _dense_joint_p(n, seed=3)
    Y = np.random.default_rng(4).normal(size=(n, 2))
    g, kl = _optimizer(P, Y).gradient(Y, 1.0, 1)
    kl_ref, g_ref = sk_tsne._kl_divergence(Y.ravel(), Pc, 1.0, n, 2)
    assert kl == pytest.approx(kl_ref, rel=1e-6)
    np.testing.assert_allclose(g.ravel(), g_ref, rtol=1e-6, atol=1e-10)


def test_hand_checked_tiny_gradients():
    # Two points: P and Q are both 1/2 on the only pair, so KL = 0 and the gradient is 0.
    P = np.array([[0.0, 0.5], [0.5, 0.0]])
    Y = np.array([[0.0, 0.0], [1.0, 0.0]])
    g, kl = _optimizer(P, Y).gradient(Y, 1.0, 1)
    assert kl == pytest.approx(0.0, abs=1e-15)
    np.testing.assert_allclose(g, 0.0, atol=1e-15)
    # Four points on a unit square, P concentrated on the sides (0-1, 1-2, 2-3, 3-0).
    Y = np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    P = np.zeros((4, 4))
    for a, b in [(0, 1), (1, 2), (2, 3), (3, 0)]:
        P[a, b] = P[b, a] = 1 / 8
    # w = 1/2 on the sides, 1/3 on the diagonals; Z = 8·1/2 + 4·1/3 = 16/3.
    # q_side = 3/32, q_diag = 1/16. For point 0: sides to (1,0) and (0,1), diagonal to (1,1).
    # ∂C/∂y_0 = 4 Σ_j (p−q) w (y_0 − y_j)
    #        = 4[(1/8−3/32)(1/2)((−1,0)+(0,−1)) + (0−1/16)(1/3)(−1,−1)] = (−1/16 + 1/12)(1, 1) = (1/48)(1, 1)
    g, kl = _optimizer(P, Y).gradient(Y, 1.0, 1)
    np.testing.assert_allclose(g[0], [1 / 48, 1 / 48], rtol=1e-12)
    np.testing.assert_allclose(g.sum(0), 0.0, atol=1e-15)
    assert kl == pytest.approx(8 * (1 / 8) * np.log((1 / 8) / (3 / 32)), rel=1e-12)


@pytest.mark.parametrize("dim", [2, 3])
def test_barnes_hut_angle_zero_equals_exact(dim):
    n = 80
    X, _ = _blobs(n, 5)
    indptr, indices, data, _, _ = _core.tsne_affinities(X, 10.0, 30, "euclidean", "exact", 1, 0)
    P = sp.csr_matrix((data, indices, indptr), shape=(n, n))
    Y = np.random.default_rng(5).normal(size=(n, dim)) * 3
    ge, kle = _optimizer(P, Y, method="exact").gradient(Y, 1.0, 2)
    gb, klb = _optimizer(P, Y, method="barnes_hut", angle=0.0).gradient(Y, 1.0, 2)
    np.testing.assert_allclose(gb, ge, rtol=1e-9, atol=1e-13)
    assert klb == pytest.approx(kle, rel=1e-12)
    # And the default angle stays close.
    gh, klh = _optimizer(P, Y, method="barnes_hut", angle=0.5).gradient(Y, 1.0, 2)
    assert np.linalg.norm(gh - ge) < 0.05 * np.linalg.norm(ge)


# ---------------------------------------------------------------- affinities


@pytest.mark.parametrize("dtype,offset", [(np.float64, 0.0), (np.float32, 100.0)])
def test_perplexity_is_reached(dtype, offset):
    rng = np.random.default_rng(6)
    X = (rng.normal(size=(200, 8)) + offset).astype(dtype)
    for perp in (5.0, 20.0):
        k = int(3 * perp)
        *_, p_cond = _core.tsne_affinities(X, perp, k, "euclidean", "exact", 2, 0)
        np.testing.assert_allclose(p_cond.sum(1), 1.0, rtol=1e-12)
        H = -np.sum(np.where(p_cond > 0, p_cond * np.log(np.where(p_cond > 0, p_cond, 1)), 0), axis=1)
        np.testing.assert_allclose(np.exp(H), perp, rtol=1e-3)


def test_knn_restricted_p_equals_scikit_learn_on_support():
    from sklearn.neighbors import NearestNeighbors

    X, _ = _blobs(150, 6, seed=7)
    perp = 10.0
    k = int(3 * perp)
    est = reprkit.TSNE(perplexity=perp, max_iter=0, n_jobs=1, random_state=0, method="barnes_hut").fit(X)
    P = est.affinities_
    assert isinstance(P, sp.csr_matrix)
    assert abs(P - P.T).max() < 1e-15
    assert P.sum() == pytest.approx(1.0, rel=1e-12)
    nn = NearestNeighbors(n_neighbors=k).fit(X)
    G = nn.kneighbors_graph(mode="distance")
    G.data **= 2
    Pref = sk_tsne._joint_probabilities_nn(G, perp, 0)
    assert (P != 0).toarray().sum() == (Pref != 0).toarray().sum()
    np.testing.assert_allclose(P.toarray(), Pref.toarray(), rtol=2e-3, atol=1e-9)
    # Conditional P from k = 3·perplexity neighbours equals the all-pairs one on its support
    # (up to the little mass the all-pairs rows put beyond the k-th neighbour).
    n = X.shape[0]
    *_, idx_k, pk = _core.tsne_affinities(X, perp, k, "euclidean", "exact", 1, 0)
    *_, idx_all, pall = _core.tsne_affinities(X, perp, n - 1, "euclidean", "exact", 1, 0)
    dense = np.zeros((n, n))
    np.put_along_axis(dense, idx_all.astype(np.int64), pall, axis=1)
    on_support = np.take_along_axis(dense, idx_k.astype(np.int64), axis=1)
    tail = 1.0 - on_support.sum(1)
    assert tail.max() < 0.02
    np.testing.assert_allclose(on_support, pk, atol=2e-3, rtol=0.03)


def test_approximate_neighbours_recall_and_determinism():
    X, _ = _blobs(3000, 20, centers=10, seed=8, spread=3.0)
    k = 30
    _, _, _, ex, _ = _core.tsne_affinities(X, 10.0, k, "euclidean", "exact", 2, 0)
    _, _, _, ap1, _ = _core.tsne_affinities(X, 10.0, k, "euclidean", "approx", 1, 42)
    _, _, _, ap2, _ = _core.tsne_affinities(X, 10.0, k, "euclidean", "approx", 2, 42)
    np.testing.assert_array_equal(ap1, ap2)
    recall = np.mean([len(set(a) & set(b)) / k for a, b in zip(ex, ap1)])
    assert recall > 0.95


# ---------------------------------------------------------------- optimiser behaviour


def test_trustworthiness_on_separated_clusters():
    from sklearn.manifold import trustworthiness

    X, lab = _blobs(300, 10)
    Y = reprkit.TSNE(perplexity=20, n_jobs=2, random_state=0).fit_transform(X)
    assert trustworthiness(X, Y, n_neighbors=10) > 0.9
    # Clusters stay apart: every point's nearest embedded neighbour shares its label.
    D = ((Y[:, None] - Y[None]) ** 2).sum(-1)
    np.fill_diagonal(D, np.inf)
    assert np.mean(lab[D.argmin(1)] == lab) > 0.99


def test_kl_does_not_increase_with_more_iterations():
    X, _ = _blobs(250, 8, seed=9)
    kls = [
        reprkit.TSNE(perplexity=15, max_iter=it, n_jobs=2, random_state=0).fit(X).kl_divergence_
        for it in (300, 500, 900)
    ]
    assert kls[1] <= kls[0] + 1e-6
    assert kls[2] <= kls[1] + 1e-6


def test_update_rule_is_fitsne_and_opentsne_gradient_descent():
    """The optimiser's update is FIt-SNE's / openTSNE's: gains +0.2 when sign(g) ≠ sign(u) (sign(0) = 0,
    so every gain rises on the first step), else gain·0.8 + 0.01; u ← μu − η·gain·g; per-point step
    capped at norm 5. Peer: openTSNE's own gradient_descent driven by the same exact gradient, through
    both phases (exaggeration, then none; gains and velocities carry over) at a learning rate large
    enough for the cap and the gain decrease to act. openTSNE re-centres every step: compare centred."""
    gd_mod = pytest.importorskip("openTSNE.tsne")
    X, _ = _blobs(150, 6, seed=12)
    # Few iterations: at this step size the dynamics are chaotic, rounding differences grow ~10× per 5 steps.
    n, lr, n_ex, n_it = 150, 400.0, 12, 25
    Y0 = np.random.default_rng(4).normal(0, 1e-2, size=(n, 2))
    est = reprkit.TSNE(perplexity=10, method="exact", init=Y0, learning_rate=lr, early_exaggeration=12.0,
                       exaggeration_iter=n_ex, max_iter=n_it, n_jobs=1, random_state=0).fit(X)
    P = est.affinities_
    opt = _optimizer(P, Y0)

    def objective(embedding, ex, dof, **_):
        g, kl = opt.gradient(np.ascontiguousarray(embedding), float(ex[0]), 1)
        return kl, g / 4.0  # openTSNE's unit (∂C/∂y / 4), as reprkit's learning rate

    Y = Y0.copy()
    gd, ex = gd_mod.gradient_descent(), np.ones(1)  # ex carries the exaggeration (openTSNE multiplies "P")
    capped, low = 0, np.inf
    for it in range(n_it):  # one iteration per call (gains and velocities persist) to watch the rule act
        gd(Y, ex, 1, objective, learning_rate=lr, momentum=0.8, exaggeration=12.0 if it < n_ex else 1, max_step_norm=5)
        capped += int(np.isclose(np.linalg.norm(gd.update, axis=1), 5.0).sum())
        low = min(low, gd.gains.min())
    # The schedule exercised every part of the rule: capped steps, decayed gains.
    assert capped > 0 and low < 0.25, (capped, low)
    ours = est.embedding_ - est.embedding_.mean(0)
    np.testing.assert_allclose(ours, Y - Y.mean(0), rtol=0, atol=1e-6 * np.abs(Y).max())


@pytest.mark.parametrize("method,neighbors", [("barnes_hut", "exact"), ("barnes_hut", "approx"), ("exact", "auto")])
def test_n_jobs_does_not_change_the_result(method, neighbors):
    X, _ = _blobs(700 if neighbors == "approx" else 200, 12, seed=10)
    kw = dict(perplexity=10, max_iter=200, method=method, neighbors=neighbors, random_state=3, init="random")
    a = reprkit.TSNE(n_jobs=1, **kw).fit(X)
    b = reprkit.TSNE(n_jobs=2, **kw).fit(X)
    np.testing.assert_array_equal(a.embedding_, b.embedding_)
    assert a.kl_divergence_ == b.kl_divergence_
    assert (a.affinities_ != b.affinities_).nnz == 0


def test_three_components_and_heavy_tails():
    X, _ = _blobs(200, 6, seed=11)
    e3 = reprkit.TSNE(3, perplexity=10, max_iter=300, n_jobs=2, random_state=0).fit(X)
    assert e3.embedding_.shape == (200, 3) and np.isfinite(e3.kl_divergence_)
    e = reprkit.TSNE(perplexity=10, max_iter=300, dof=0.5, n_jobs=2, random_state=0).fit(X)
    assert np.isfinite(e.embedding_).all()


def test_transform_places_training_points_near_their_positions():
    X, lab = _blobs(300, 10, seed=12)
    est = reprkit.TSNE(perplexity=20, n_jobs=2, random_state=0).fit(X)
    Yt = est.transform(X[:60])
    Y = est.embedding_
    spread = np.linalg.norm(Y - Y.mean(0), axis=1).mean()
    err = np.linalg.norm(Yt - Y[:60], axis=1)
    assert np.median(err) < 0.05 * spread
    # New points from a cluster land in that cluster (closest embedded training point has the label).
    rng = np.random.default_rng(13)
    Xn = X[:40] + rng.normal(scale=0.3, size=(40, X.shape[1]))
    Yn = est.transform(Xn)
    nearest = ((Yn[:, None] - Y[None]) ** 2).sum(-1).argmin(1)
    assert np.mean(lab[nearest] == lab[:40]) > 0.95
    np.testing.assert_allclose(est.embedding_, Y)  # the reference stays fixed


def test_sne_and_symmetric_sne_reduce_kl():
    X, _ = _blobs(120, 5, seed=14)
    for cls in (reprkit.SymmetricSNE, reprkit.SNE):
        short = cls(perplexity=10, max_iter=20, exaggeration_iter=0, n_jobs=2, random_state=0).fit(X)
        long = cls(perplexity=10, max_iter=400, exaggeration_iter=0, n_jobs=2, random_state=0).fit(X)
        assert np.isfinite(long.embedding_).all()
        assert long.kl_divergence_ < short.kl_divergence_


def test_callbacks_see_progress_and_can_stop():
    X, _ = _blobs(150, 5, seed=15)
    seen = []

    def cb(it, kl, emb):
        seen.append((it, kl, emb.shape))
        return it >= 100

    est = reprkit.TSNE(perplexity=10, n_jobs=1, random_state=0, callbacks=cb, callbacks_every=25).fit(X)
    assert [s[0] for s in seen] == [25, 50, 75, 100]
    assert est.n_iter_ == 100
    assert all(np.isfinite(s[1]) and s[2] == (150, 2) for s in seen)
    assert est.kl_divergence_ == seen[-1][1]


def test_torch_and_numpy_inputs_agree():
    torch = pytest.importorskip("torch")
    X, _ = _blobs(120, 5, seed=16)
    kw = dict(perplexity=10, max_iter=150, n_jobs=1, random_state=0)
    a = reprkit.tsne(X, **kw)
    b = reprkit.tsne(torch.from_numpy(X), **kw)
    np.testing.assert_array_equal(a, b)


def test_pca_init_and_precomputed_metric():
    X, _ = _blobs(100, 6, seed=17)
    Y0 = reprkit.manifold.sne.pca_init(X, 2)
    assert Y0[:, 0].std() == pytest.approx(1e-4, rel=1e-9)
    from sklearn.decomposition import PCA

    ref = PCA(2).fit_transform(X)
    for c in range(2):
        assert abs(np.corrcoef(ref[:, c], Y0[:, c])[0, 1]) > 0.999999
    D = np.sqrt(((X[:, None] - X[None]) ** 2).sum(-1))
    kw = dict(perplexity=10, max_iter=0, n_jobs=1, init="random", random_state=0)
    Pp = reprkit.TSNE(metric="precomputed", **kw).fit(D).affinities_
    Pe = reprkit.TSNE(metric="euclidean", **kw).fit(X).affinities_
    np.testing.assert_allclose(Pp.toarray(), Pe.toarray(), rtol=1e-6, atol=1e-12)


def test_ctrl_c_interrupts_a_long_fit():
    X, _ = _blobs(2000, 10, seed=18)
    timer = threading.Timer(1.0, lambda: os.kill(os.getpid(), signal.SIGINT))
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            reprkit.TSNE(perplexity=10, max_iter=10**6, n_jobs=2, random_state=0).fit(X)
    finally:
        timer.cancel()


# ---------------------------------------------------------------- estimator API


def test_get_params_set_params_and_clone():
    from sklearn.base import clone

    est = reprkit.TSNE(perplexity=7.0, n_jobs=1, angle=0.3)
    params = est.get_params()
    assert params["perplexity"] == 7.0 and params["angle"] == 0.3 and params["max_iter"] == 750
    assert set(params) == {
        "n_components", "perplexity", "early_exaggeration", "exaggeration_iter", "learning_rate", "max_iter",
        "metric", "init", "method", "angle", "dof", "neighbors", "n_jobs", "random_state", "verbose",
        "callbacks", "callbacks_every",
    }
    c = clone(est)
    assert c is not est and c.get_params() == params
    assert est.set_params(perplexity=12.0) is est and est.perplexity == 12.0
    with pytest.raises(InvalidParameterError):
        est.set_params(not_a_param=1)
    assert "perplexity=12.0" in repr(est)
    X, _ = _blobs(60, 4)
    e = reprkit.TSNE(perplexity=5, max_iter=100, n_jobs=1, random_state=0).fit(X)
    assert e.embedding_.shape == (60, 2) and e.n_iter_ == 100
    assert e.learning_rate_ == 50.0  # max(60 / 12, 50)


def test_bad_input_gets_clear_errors():
    X, _ = _blobs(30, 4)
    Xnan = X.copy()
    Xnan[3, 1] = np.nan
    with pytest.raises(NonFiniteError):
        reprkit.TSNE(perplexity=5).fit(Xnan)
    with pytest.raises(InvalidParameterError, match="perplexity"):
        reprkit.TSNE(perplexity=30).fit(X)
    with pytest.raises(InvalidParameterError, match="n_components"):
        reprkit.TSNE(4, perplexity=5, method="barnes_hut").fit(X)
    with pytest.raises(ShapeError):
        reprkit.TSNE(perplexity=0.5).fit(X[:1])
    with pytest.raises(InvalidParameterError):
        reprkit.TSNE(perplexity=5, metric="manhattan").fit(X)
    with pytest.raises(ShapeError):
        reprkit.TSNE(perplexity=5, init=np.zeros((29, 2))).fit(X)
    with pytest.raises(ShapeError):
        reprkit.TSNE(perplexity=5, metric="precomputed").fit(X)
    with pytest.raises(InvalidParameterError):
        reprkit.TSNE(perplexity=5).transform(X)
    # Exact t-SNE does go beyond 3 components, and "auto" (the default) picks it there.
    assert reprkit.TSNE(4, perplexity=5, method="exact", max_iter=50, n_jobs=1).fit_transform(X).shape == (30, 4)
    assert reprkit.TSNE(4, perplexity=5, max_iter=50, n_jobs=1).fit(X).method_ == "exact"


# ---------------------------------------------------------------- command line


def test_cli_on_tiny_files(tmp_path):
    pytest.importorskip("matplotlib")
    from reprkit.cli import main

    X, lab = _blobs(60, 5, seed=19)
    np.save(tmp_path / "x.npy", X)
    np.save(tmp_path / "lab.npy", lab)
    out = tmp_path / "y.npy"
    rc = main(["tsne", str(tmp_path / "x.npy"), "-o", str(out), "--perplexity", "5", "--max-iter", "100",
               "--n-jobs", "1", "--labels", str(tmp_path / "lab.npy"), "--plot", str(tmp_path / "p.png"), "-q"])
    assert rc == 0
    Y = np.load(out)
    assert Y.shape == (60, 2) and np.isfinite(Y).all()
    assert (tmp_path / "p.png").stat().st_size > 1000
    np.savetxt(tmp_path / "x.csv", X, delimiter=",")
    np.savez(tmp_path / "x.npz", X=X, labels=lab)
    for name in ("x.csv", "x.npz"):
        rc = main(["tsne", str(tmp_path / name), "-o", str(tmp_path / "z.npy"), "--perplexity", "5",
                   "--max-iter", "100", "--n-jobs", "1", "-q"])
        assert rc == 0
        np.testing.assert_allclose(np.load(tmp_path / "z.npy"), Y, rtol=1e-4, atol=1e-4)
    # Bad parameters are reported without a traceback, exit status 2.
    assert main(["tsne", str(tmp_path / "x.npy"), "-o", str(out), "--perplexity", "100", "-q"]) == 2


def test_spectral_init_embeds_the_eigenvectors_of_p():
    from sklearn.manifold import trustworthiness

    X, _ = _blobs(300, 10)
    seen = []

    def first(iteration, kl, embedding):
        seen.append(np.array(embedding))
        return False

    est = reprkit.TSNE(perplexity=10, init="spectral", random_state=0, n_jobs=1, max_iter=300, callbacks=first, callbacks_every=1)
    Y = est.fit_transform(X)
    assert trustworthiness(X, Y, n_neighbors=10) > 0.9
    # The start is Laplacian eigenmaps of P: check the first recorded state against it,
    # up to the sign of each column and one optimisation step.
    Y0 = reprkit.manifold.spectral_init(est.affinities_, 2, random_state=0)
    assert np.isclose(Y0[:, 0].std(), 1e-4)
    corr = [abs(np.corrcoef(seen[0][:, j], Y0[:, j])[0, 1]) for j in range(2)]
    assert min(corr) > 0.99, corr
    again = reprkit.TSNE(perplexity=10, init="spectral", random_state=0, n_jobs=2, max_iter=300).fit_transform(X)
    assert np.array_equal(Y, again)
