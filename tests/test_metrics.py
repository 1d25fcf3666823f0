"""reprkit.metrics against independent references: PML's AccuracyCalculator,
scikit-learn (trustworthiness, NMI/AMI, LogisticRegression, KMeans) and plain
numpy loops with the documented tie rules."""

import json
import subprocess
import sys

import numpy as np
import pytest

import reprkit.metrics as M
from reprkit.errors import InvalidParameterError, NonFiniteError, ShapeError

torch = pytest.importorskip("torch")


def _data(n=300, d=6, n_cls=5, seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, n_cls, n)
    x = rng.normal(size=(n, d)) + 1.5 * rng.normal(size=(n_cls, d))[y]
    return x.astype(dtype), y


# ---------------------------------------------------------------- retrieval

def _loop_retrieval(q, ql, r, rl, same, k=None):
    """Per-query loop: stable ranking by (exact distance, index)."""
    p1, rp, mp, rr, excl = [], [], [], [], 0
    for i in range(q.shape[0]):
        d = ((r - q[i]) ** 2).sum(1)
        order = np.lexsort((np.arange(r.shape[0]), d))
        if same:
            order = order[order != i]
        R = int((rl == ql[i]).sum()) - int(same)
        if R == 0:
            excl += 1
            continue
        if k is not None:
            order = order[:k]
        hit = rl[order] == ql[i]
        re = min(R, len(order))
        cum = np.cumsum(hit)
        p1.append(float(hit[0]))
        rp.append(cum[re - 1] / re)
        mp.append(float((cum[:re] / np.arange(1, re + 1) * hit[:re]).sum() / R))
        first = np.flatnonzero(hit)
        rr.append(1.0 / (first[0] + 1) if first.size else 0.0)
    return dict(precision_at_1=np.mean(p1), r_precision=np.mean(rp), mean_average_precision_at_r=np.mean(mp),
                mean_reciprocal_rank=np.mean(rr), n_excluded=excl)


def _close(got, want, keys, tol):
    for key in keys:
        assert got[key] == pytest.approx(want[key], abs=tol), key


KEYS = ("precision_at_1", "r_precision", "mean_average_precision_at_r", "mean_reciprocal_rank")


@pytest.mark.parametrize("k", [None, 7])
def test_retrieval_matches_pml_accuracy_calculator(k):
    pytest.importorskip("faiss")
    from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator

    x, y = _data(400, 8, 6, seed=1, dtype=np.float32)
    y[0] = 99  # a label with no other member: PML and reprkit leave the query out
    xr, yr = _data(250, 8, 7, seed=2, dtype=np.float32)
    ac = AccuracyCalculator(include=KEYS, k=k)
    tq, ty = torch.from_numpy(x), torch.from_numpy(y)
    want = ac.get_accuracy(tq, ty)
    got = M.retrieval_metrics(x, y, k=k)
    _close(got, want, KEYS, 1e-6)
    assert got["n_excluded"] == 1 and got["n_queries"] == 399
    want = ac.get_accuracy(tq, ty, torch.from_numpy(xr), torch.from_numpy(yr), False)
    _close(M.retrieval_metrics(x, y, xr, yr, k=k), want, KEYS, 1e-6)


def test_retrieval_cosine_is_euclidean_on_unit_rows_and_pml():
    pytest.importorskip("faiss")
    from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator

    x, y = _data(300, 5, 4, seed=3)
    u = x / np.linalg.norm(x, axis=1, keepdims=True)
    want = AccuracyCalculator(include=KEYS).get_accuracy(torch.from_numpy(u).float(), torch.from_numpy(y))
    got = M.retrieval_metrics(x, y, metric="cosine")
    _close(got, want, KEYS, 1e-6)
    _close(got, M.retrieval_metrics(u, y), KEYS, 1e-12)


@pytest.mark.parametrize("k", [None, 5])
def test_retrieval_ties_duplicates_and_singletons_against_loop(k):
    x, y = _data(260, 4, 5, seed=4)
    # Duplicate rows with different labels: the tie goes to the lower index.
    for a, b in [(3, 100), (3, 200), (50, 51), (7, 250)]:
        x[b] = x[a]
    y[100], y[200] = (y[3] + 1) % 5, y[3]
    y[17] = 42  # singleton label
    got = M.retrieval_metrics(x, y, k=k)
    want = _loop_retrieval(x, y, x, y, True, k)
    _close(got, want, KEYS + ("n_excluded",), 1e-12)
    xr, yr = _data(90, 4, 6, seed=5)
    xr[10] = x[0]
    xr[11] = x[0]
    _close(M.retrieval_metrics(x, y, xr, yr, k=k), _loop_retrieval(x, y, xr, yr, False, k), KEYS + ("n_excluded",), 1e-12)


def test_retrieval_big_class_reciprocal_rank_beyond_r():
    # One huge class and random features: many queries have no match in their top R,
    # so the reciprocal rank comes from the second pass over the whole set.
    rng = np.random.default_rng(6)
    x = rng.normal(size=(700, 3))
    y = np.where(rng.random(700) < 0.03, 1, 0)
    y[::50] = 2
    _close(M.retrieval_metrics(x, y), _loop_retrieval(x, y, x, y, True), KEYS, 1e-12)


def test_labels_strings_torch_lists_and_threads_agree():
    x, y = _data(200, 5, 4, seed=7)
    base = M.retrieval_metrics(x, y)
    names = np.array(["cat", "dog", "emu", "fox"])[y]
    assert M.retrieval_metrics(x, list(names)) == base
    assert M.retrieval_metrics(torch.from_numpy(x), torch.from_numpy(y)) == base
    assert M.retrieval_metrics(x, y, n_jobs=1) == M.retrieval_metrics(x, y, n_jobs=2)
    assert M.knn_accuracy(x, names, k=3) == M.knn_accuracy(x, y, k=3)


def _loop_knn_acc(q, ql, r, rl, same, k):
    ok = 0
    for i in range(q.shape[0]):
        d = ((r - q[i]) ** 2).sum(1)
        order = np.lexsort((np.arange(r.shape[0]), d))
        if same:
            order = order[order != i]
        lab = list(rl[order[:k]])
        best = max(lab, key=lambda c: (lab.count(c), -lab.index(c)))
        ok += best == ql[i]
    return ok / q.shape[0]


@pytest.mark.parametrize("k", [1, 4, 6])
def test_knn_accuracy_majority_vote_tie_rule(k):
    x, y = _data(250, 3, 6, seed=8)
    assert M.knn_accuracy(x, y, k=k) == pytest.approx(_loop_knn_acc(x, y, x, y, True, k), abs=1e-12)
    xr, yr = _data(120, 3, 6, seed=9)
    assert M.knn_accuracy(x, y, xr, yr, k=k) == pytest.approx(_loop_knn_acc(x, y, xr, yr, False, k), abs=1e-12)


def test_knn_matches_sklearn_neighbours():
    from sklearn.neighbors import NearestNeighbors

    x, _ = _data(300, 7, 3, seed=10)
    idx, dist = M.knn(x, k=6)
    d_sk, i_sk = NearestNeighbors(n_neighbors=6).fit(x).kneighbors()
    np.testing.assert_array_equal(idx, i_sk)
    np.testing.assert_allclose(dist, d_sk, rtol=1e-10)
    xf = x.astype(np.float32)
    i32, d32 = M.knn(xf[:50], xf, k=3)
    assert d32.dtype == np.float32 and i32.shape == (50, 3)
    np.testing.assert_array_equal(i32[:, 0], np.arange(50))  # a query in the reference finds itself


# ---------------------------------------------------------------- embedding quality

@pytest.mark.parametrize("k", [1, 5, 12])
@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_trustworthiness_and_continuity_equal_sklearn(k, metric):
    from sklearn.manifold import trustworthiness as sk_trust

    rng = np.random.default_rng(11)
    X = rng.normal(size=(240, 10))
    Y = X[:, :2] + 0.3 * rng.normal(size=(240, 2))
    assert M.trustworthiness(X, Y, k, metric=metric) == pytest.approx(sk_trust(X, Y, n_neighbors=k, metric=metric), abs=1e-9)
    if metric == "euclidean":
        assert M.continuity(X, Y, k) == pytest.approx(sk_trust(Y, X, n_neighbors=k), abs=1e-9)


def test_trustworthiness_across_tiles_float32_and_sampling():
    from sklearn.manifold import trustworthiness as sk_trust

    rng = np.random.default_rng(12)
    X = rng.normal(size=(2600, 5))
    Y = X[:, :2] + 0.5 * rng.normal(size=(2600, 2))
    full = M.trustworthiness(X, Y, 7)
    assert full == pytest.approx(sk_trust(X, Y, n_neighbors=7), abs=1e-9)
    assert M.trustworthiness(X.astype(np.float32), Y.astype(np.float32), 7) == pytest.approx(full, abs=1e-4)
    assert M.trustworthiness(X, Y, 7, sample=2600) == full
    est = M.trustworthiness(X, Y, 7, sample=600, random_state=1)
    assert est != full and est == pytest.approx(full, abs=0.02)
    assert M.trustworthiness(X, Y, 7, n_jobs=1) == M.trustworthiness(X, Y, 7, n_jobs=2)


def test_trustworthiness_duplicates_against_stable_rank_loop():
    rng = np.random.default_rng(13)
    X = rng.normal(size=(120, 4))
    X[10] = X[20] = X[30] = X[5]
    Y = rng.normal(size=(120, 2))
    Y[40] = Y[41]
    n, k = 120, 4
    s = 0
    for i in range(n):
        dx = ((X - X[i]) ** 2).sum(1)
        dx[i] = np.inf
        rank = np.empty(n, int)
        rank[np.lexsort((np.arange(n), dx))] = np.arange(1, n + 1)
        dy = ((Y - Y[i]) ** 2).sum(1)
        dy[i] = np.inf
        nb = np.lexsort((np.arange(n), dy))[:k]
        s += np.maximum(rank[nb] - k, 0).sum()
    want = 1 - 2.0 / (n * k * (2 * n - 3 * k - 1)) * s
    assert M.trustworthiness(X, Y, k) == pytest.approx(want, abs=1e-12)


def test_knn_recall_against_brute_force():
    rng = np.random.default_rng(14)
    X = rng.normal(size=(300, 6))
    Y = X[:, :3] + 0.2 * rng.normal(size=(300, 3))
    k = 8
    def nbrs(A):
        d = ((A[:, None] - A[None]) ** 2).sum(-1)
        np.fill_diagonal(d, np.inf)
        return np.argsort(d, axis=1, kind="stable")[:, :k]
    a, b = nbrs(X), nbrs(Y)
    want = np.mean([len(set(a[i]) & set(b[i])) / k for i in range(300)])
    assert M.knn_recall(X, Y, k) == pytest.approx(want, abs=1e-12)
    assert M.knn_recall(X, X, k) == 1.0


# ---------------------------------------------------------------- clustering

@pytest.mark.parametrize("seed", range(4))
def test_nmi_ami_formulas_equal_sklearn(seed):
    from sklearn.metrics import adjusted_mutual_info_score, normalized_mutual_info_score

    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 400))
    u = rng.integers(0, int(rng.integers(1, 9)), n)
    v = np.where(rng.random(n) < 0.6, u, rng.integers(0, int(rng.integers(1, 12)), n))
    assert M.normalized_mutual_info(u, v) == pytest.approx(normalized_mutual_info_score(u, v), abs=1e-10)
    assert M.adjusted_mutual_info(u, v) == pytest.approx(adjusted_mutual_info_score(u, v), abs=1e-10)
    s = np.array(list("abcdefghijkl"))[v]
    assert M.adjusted_mutual_info(u, s) == pytest.approx(adjusted_mutual_info_score(u, v), abs=1e-10)


def test_nmi_ami_degenerate_labellings_equal_sklearn():
    from sklearn.metrics import adjusted_mutual_info_score, normalized_mutual_info_score

    for u, v in [([0] * 6, [0] * 6), ([0] * 6, [0, 1, 2, 3, 4, 5]), ([0, 0, 1, 1], [1, 1, 0, 0]), ([0, 1, 2], [0, 0, 0])]:
        assert M.normalized_mutual_info(u, v) == pytest.approx(normalized_mutual_info_score(u, v), abs=1e-12)
        assert M.adjusted_mutual_info(u, v) == pytest.approx(adjusted_mutual_info_score(u, v), abs=1e-12)


def test_kmeans_close_to_sklearn_and_deterministic():
    from sklearn.cluster import KMeans

    x, y = _data(600, 5, 6, seed=15)
    lab, cen, inertia = M.kmeans(x, 6, random_state=3)
    sk = KMeans(6, n_init=1, random_state=3).fit(x)
    assert inertia <= 1.05 * sk.inertia_
    assert inertia == pytest.approx(float(((x - cen[lab]) ** 2).sum()), rel=1e-9)
    lab2, _, in2 = M.kmeans(x, 6, random_state=3, n_jobs=1)
    np.testing.assert_array_equal(lab, lab2)
    assert in2 == inertia
    # Well separated blobs: clusters recover the labels.
    rng = np.random.default_rng(0)
    yb = rng.integers(0, 4, 400)
    xb = rng.normal(size=(400, 3)) * 0.1 + 10 * np.eye(4, 3)[yb]
    assert M.nmi(xb, yb) == pytest.approx(1.0) and M.ami(xb, yb) == pytest.approx(1.0)
    assert M.cluster_scores(xb, yb) == {"nmi": M.nmi(xb, yb), "ami": M.ami(xb, yb)}


# ---------------------------------------------------------------- linear probe

def test_linear_probe_matches_sklearn_logistic_regression():
    from sklearn.linear_model import LogisticRegression
    from reprkit.data import load_digits

    X, y = load_digits()
    X = X.astype(np.float64)
    rng = np.random.default_rng(0)
    perm = rng.permutation(len(y))
    tr, te = perm[:1300], perm[1300:]
    l2 = 1e-3
    res = M.linear_probe(X[tr], y[tr], X[te], y[te], l2=l2, max_iter=500, tol=1e-9, rtol=0, n_jobs=1)
    mu, sd = X[tr].mean(0), X[tr].std(0)
    sd[sd == 0] = 1
    C = 1.0 / (l2 * len(tr))
    sk = LogisticRegression(C=C, max_iter=5000, tol=1e-10).fit((X[tr] - mu) / sd, y[tr])
    acc = sk.score((X[te] - mu) / sd, y[te])
    assert abs(res.top1 - acc) <= 0.005
    # Same optimum: the weights agree once mapped to standardised features.
    np.testing.assert_allclose(res.weight * sd, sk.coef_, atol=2e-3 * np.abs(sk.coef_).max())
    assert res.top5 >= res.top1 and res.weight.dtype == np.float64
    # Both at their default stopping rules (reprkit: windowed relative loss decrease; scikit-learn: max |gradient| < 1e-4).
    quick = M.linear_probe(X[tr], y[tr], X[te], y[te], l2=l2, n_jobs=1)
    sk_quick = LogisticRegression(C=C).fit((X[tr] - mu) / sd, y[tr])
    assert abs(quick.top1 - sk_quick.score((X[te] - mu) / sd, y[te])) <= 0.005
    assert list(res.classes) == list(range(10))


def test_linear_probe_torch_in_torch_out_and_string_labels():
    x, y = _data(300, 6, 4, seed=16, dtype=np.float32)
    names = np.array(["a", "b", "c", "d"])[y]
    r = M.linear_probe(torch.from_numpy(x[:200]), names[:200], torch.from_numpy(x[200:]), names[200:], max_iter=50, n_jobs=1)
    assert isinstance(r.weight, torch.Tensor) and r.weight.dtype == torch.float32 and r.weight.shape == (4, 6)
    r2 = M.linear_probe(x[:200], y[:200], x[200:], y[200:], max_iter=50, n_jobs=1)
    assert r.top1 == r2.top1 and r2.top5 == 1.0  # 4 classes: top-5 is top-4
    logits = x[200:] @ r2.weight.T + r2.bias
    assert (logits.argmax(1) == y[200:]).mean() == pytest.approx(r2.top1)


def test_probe_fused_pass_equals_autograd_reference():
    """The fused loss/gradient pass (row tiles, in-place softmax) against torch autograd of the plain formula."""
    from reprkit.metrics import _lbfgs

    rng = np.random.default_rng(3)
    n, d, C = 300, 7, 5
    Z = torch.from_numpy(rng.normal(size=(n, d)))
    y = torch.from_numpy(rng.integers(0, C, n))
    W = torch.from_numpy(rng.normal(size=(C, d))).requires_grad_()
    b = torch.from_numpy(rng.normal(size=C)).requires_grad_()
    lam = 0.03
    ref = torch.nn.functional.cross_entropy(Z @ W.T + b, y) + 0.5 * lam * (W * W).sum()
    gW, gb = torch.autograd.grad(ref, (W, b))
    old = _lbfgs._CHUNK
    _lbfgs._CHUNK = 64  # several tiles, the last one partial
    try:
        f, fW, fb = _lbfgs._loss_grad(torch, Z, y, W.detach(), b.detach(), lam)
    finally:
        _lbfgs._CHUNK = old
    assert f == pytest.approx(ref.item(), rel=1e-12)
    torch.testing.assert_close(fW, gW, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(fb, gb, rtol=1e-10, atol=1e-12)


def test_probe_zero_start_equals_the_fused_pass_at_zero():
    """The GEMM-free start (P = 1/C at W = 0, b = 0) gives the loss and gradient of the full pass, over several
    row tiles (the last partial) and with an empty class."""
    from reprkit.metrics import _lbfgs

    rng = np.random.default_rng(6)
    n, d, C = 500, 9, 6
    Z = torch.from_numpy(rng.normal(size=(n, d)) + 0.3)  # not centred: the colsum term matters
    y = torch.from_numpy(rng.choice(C - 1, n))  # class C − 1 never occurs
    old = _lbfgs._CHUNK
    _lbfgs._CHUNK = 128
    try:
        f0, gW0, gb0 = _lbfgs._zero_start(torch, Z, y, C)
        f, gW, gb = _lbfgs._loss_grad(torch, Z, y, torch.zeros(C, d, dtype=torch.float64), torch.zeros(C, dtype=torch.float64), 0.1)
    finally:
        _lbfgs._CHUNK = old
    assert f0 == pytest.approx(f, rel=1e-13) and f0 == pytest.approx(np.log(C), rel=1e-13)
    torch.testing.assert_close(gW0, gW, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(gb0, gb, rtol=1e-12, atol=1e-14)


def test_probe_standardise_matches_numpy():
    from reprkit.metrics import probe

    rng = np.random.default_rng(7)
    x = rng.normal(size=(1000, 5)) * [1, 10, 0.1, 3, 1] + [0, 100, -5, 2, 0]
    x[:, 4] = 7.0  # constant column: σ = 0 → 1
    old = probe._STAT_ROWS
    probe._STAT_ROWS = 96  # several tiles, the last partial
    try:
        for dt, tol in ((np.float64, 1e-12), (np.float32, 2e-5)):
            mean, std, Z = probe.standardise(torch, torch.from_numpy(x.astype(dt)))
            sd = x.std(0)
            sd[sd == 0] = 1
            np.testing.assert_allclose(mean.numpy(), x.mean(0), rtol=tol, atol=tol)
            np.testing.assert_allclose(std.numpy(), sd, rtol=tol)
            np.testing.assert_allclose(Z.numpy(), (x - x.mean(0)) / sd, rtol=0, atol=50 * tol)
            assert Z.dtype == mean.dtype == std.dtype == torch.from_numpy(x.astype(dt)).dtype
    finally:
        probe._STAT_ROWS = old


def test_probe_preconditioner_keeps_the_optimum():
    """W = V L⁻¹ is a change of variables: with and without it L-BFGS reaches the same minimiser, and the
    preconditioned run needs fewer iterations on strongly correlated features."""
    from reprkit.metrics._lbfgs import fit_multinomial

    rng = np.random.default_rng(4)
    n, d, C = 600, 12, 4
    y = rng.integers(0, C, n)
    mix = rng.normal(size=(d, d)) * np.logspace(0, -2, d)  # correlated features, spread spectrum
    Z = (rng.normal(size=(n, d)) + rng.normal(size=(C, d))[y]) @ mix
    Z = (Z - Z.mean(0)) / Z.std(0)
    Zt, yt = torch.from_numpy(Z), torch.from_numpy(y)
    Wp, bp, itp, _, fp = fit_multinomial(torch, Zt, yt, C, 1e-2, 2000, 1e-9, precondition=True)
    Wn, bn, itn, _, fn = fit_multinomial(torch, Zt, yt, C, 1e-2, 2000, 1e-9, precondition=False)
    assert fp == pytest.approx(fn, rel=1e-9)
    torch.testing.assert_close(Wp, Wn, rtol=0, atol=1e-5)
    torch.testing.assert_close(bp, bn, rtol=0, atol=1e-5)
    assert itp < itn


def test_linear_probe_deterministic_across_thread_counts():
    from reprkit.metrics import _lbfgs, probe

    rng = np.random.default_rng(5)
    n, d, C = 3000, 96, 12
    y = rng.integers(0, C, n)
    x = (0.6 * rng.normal(size=(C, d))[y] + rng.normal(size=(n, d))).astype(np.float32)
    old = _lbfgs._CHUNK, probe._STAT_ROWS
    _lbfgs._CHUNK, probe._STAT_ROWS = 1000, 700  # several row tiles in every pass and in the statistics
    try:
        runs = [M.linear_probe(x[:2400], y[:2400], x[2400:], y[2400:], max_iter=40, n_jobs=j) for j in (1, 2, 1)]
    finally:
        _lbfgs._CHUNK, probe._STAT_ROWS = old
    for r in runs[1:]:
        assert r.n_iter == runs[0].n_iter and r.top1 == runs[0].top1 and r.loss == runs[0].loss
        np.testing.assert_array_equal(r.weight, runs[0].weight)
        np.testing.assert_array_equal(r.bias, runs[0].bias)
    assert runs[0].weight.dtype == np.float32 and runs[0].n_evals >= runs[0].n_iter


def test_linear_probe_stopping_rules():
    """rtol stops on the windowed loss decrease, near the tight solve's optimum; rtol = 0 leaves it to tol."""
    rng = np.random.default_rng(8)
    n, d, C = 2000, 40, 8
    y = rng.integers(0, C, n)
    x = 0.5 * rng.normal(size=(C, d))[y] + rng.normal(size=(n, d)) @ np.diag(np.logspace(0, -1.5, d))
    tight = M.linear_probe(x[:1600], y[:1600], x[1600:], y[1600:], l2=1e-3, max_iter=1000, tol=1e-10, rtol=0, n_jobs=1)
    loose = M.linear_probe(x[:1600], y[:1600], x[1600:], y[1600:], l2=1e-3, max_iter=1000, tol=1e-10, rtol=1e-3, n_jobs=1)
    assert loose.n_iter < tight.n_iter
    assert tight.loss <= loose.loss <= tight.loss * (1 + 1e-3)
    assert abs(loose.top1 - tight.top1) <= 0.01
    with pytest.raises(InvalidParameterError, match="rtol"):
        M.linear_probe(x[:100], y[:100], x[100:200], y[100:200], rtol=-1.0)
    with pytest.raises(InvalidParameterError, match="tol"):
        M.linear_probe(x[:100], y[:100], x[100:200], y[100:200], tol=float("nan"))


# ---------------------------------------------------------------- statistics

def test_rank_me_uniformity_alignment_against_formulas():
    rng = np.random.default_rng(17)
    x = rng.normal(size=(50, 8)) @ np.diag([5, 4, 3, 1, 0.5, 0.1, 0, 0])
    s = np.linalg.svd(x, compute_uv=False)
    p = s / s.sum() + 1e-7
    assert M.rank_me(x) == pytest.approx(np.exp(-(p * np.log(p)).sum()), rel=1e-10)
    assert M.rank_me(x.T) == pytest.approx(M.rank_me(x), rel=1e-10)
    assert M.rank_me(np.eye(6)) == pytest.approx(6.0, rel=1e-5)
    u = x / np.linalg.norm(x, axis=1, keepdims=True)
    d2 = ((u[:, None] - u[None]) ** 2).sum(-1)
    iu = np.triu_indices(50, 1)
    assert M.uniformity(x) == pytest.approx(np.log(np.exp(-2 * d2[iu]).mean()), rel=1e-9)
    y = x + 0.1
    v = y / np.linalg.norm(y, axis=1, keepdims=True)
    assert M.alignment(x, y) == pytest.approx(((u - v) ** 2).sum(1).mean(), rel=1e-9)


# ---------------------------------------------------------------- errors

def test_errors_name_the_argument():
    x, y = _data(20, 3, 2)
    with pytest.raises(ShapeError, match="query_labels has 19 labels"):
        M.retrieval_metrics(x, y[:19])
    with pytest.raises(InvalidParameterError, match=r"k must be in 1\.\.19"):
        M.retrieval_metrics(x, y, k=20)
    with pytest.raises(InvalidParameterError, match=r"k must be in 1\.\.19"):
        M.knn_accuracy(x, y, k=20)
    with pytest.raises(InvalidParameterError, match="k must be in 1..9"):
        M.trustworthiness(x, x[:, :2], 10)
    bad = x.copy()
    bad[3, 1] = np.nan
    with pytest.raises(NonFiniteError, match="query contains NaN"):
        M.retrieval_metrics(bad, y)
    with pytest.raises(NonFiniteError, match="X contains NaN"):
        M.trustworthiness(bad, x, 3)
    with pytest.raises(NonFiniteError, match="labels"):
        M.knn_accuracy(x, np.where(y == 0, np.nan, 1.0))
    with pytest.raises(ShapeError, match="X has 20 rows but Y has 19"):
        M.continuity(x, x[:19], 3)
    with pytest.raises(InvalidParameterError, match="metric must be one of"):
        M.retrieval_metrics(x, y, metric="manhattan")
    with pytest.raises(InvalidParameterError, match="reference and reference_labels together"):
        M.retrieval_metrics(x, y, reference=x)
    with pytest.raises(InvalidParameterError, match="mix strings and numbers"):
        M.retrieval_metrics(x, y, x, y.astype(str))
    with pytest.raises(ShapeError, match="reference has 2 features"):
        M.knn_accuracy(x, y, x[:, :2], y)
    with pytest.raises(InvalidParameterError, match="at least 2 classes"):
        M.linear_probe(x, np.zeros(20, int), x, np.zeros(20, int))
    with pytest.raises(InvalidParameterError, match="sample must be in 1..20"):
        M.trustworthiness(x, x, 3, sample=21)
    # All queries excluded: NaN scores, counted.
    r = M.retrieval_metrics(x, np.arange(20))
    assert r["n_queries"] == 0 and r["n_excluded"] == 20 and np.isnan(r["precision_at_1"])


# ---------------------------------------------------------------- CLI

def _cli(*args):
    return subprocess.run([sys.executable, "-m", "reprkit", "eval", *args], capture_output=True, text=True, timeout=300)


def _main(capsys, *args):
    from reprkit.cli import main

    rc = main(["eval", *args])
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_cli_demo_end_to_end():
    p = _cli("--demo", "--max-iter", "50", "--n-jobs", "1")
    assert p.returncode == 0, p.stderr
    assert "precision@1" in p.stdout and "RankMe" in p.stdout and "[6/6]" in p.stderr


def test_cli_test_split_json_and_unlabelled(tmp_path, capsys):
    x, y = _data(120, 5, 3, seed=18, dtype=np.float32)
    np.save(tmp_path / "tr.npy", x[:80])
    np.save(tmp_path / "trl.npy", y[:80])
    np.savez(tmp_path / "te.npz", embeddings=x[80:], labels=y[80:])
    rc, out, err = _main(capsys, str(tmp_path / "tr.npy"), "--labels", str(tmp_path / "trl.npy"),
                         "--test-emb", str(tmp_path / "te.npz"), "--json", "--n-jobs", "1", "--max-iter", "30")
    assert rc == 0, err
    res = json.loads(out)
    want = M.retrieval_metrics(x[80:], y[80:], x[:80], y[:80])
    assert res["retrieval"]["precision_at_1"] == pytest.approx(want["precision_at_1"])
    assert res["knn_accuracy"] == pytest.approx(M.knn_accuracy(x[80:], y[80:], x[:80], y[:80], k=20))
    rc, out, _ = _main(capsys, str(tmp_path / "tr.npy"), "--json")
    assert rc == 0 and "retrieval" not in json.loads(out) and "rank_me" in json.loads(out)


def test_cli_bad_input_exits_2_with_a_message(tmp_path, capsys):
    rc, _, err = _main(capsys, str(tmp_path / "missing.npy"))
    assert rc == 2 and "not found" in err
    x = np.ones((10, 3), np.float32)
    x[2, 2] = np.nan
    np.save(tmp_path / "nan.npy", x)
    rc, _, err = _main(capsys, str(tmp_path / "nan.npy"))
    assert rc == 2 and "NaN" in err
    np.save(tmp_path / "ok.npy", np.ones((10, 3), np.float32))
    np.save(tmp_path / "lab.npy", np.arange(7))
    rc, _, err = _main(capsys, str(tmp_path / "ok.npy"), "--labels", str(tmp_path / "lab.npy"))
    assert rc == 2 and "7 entries" in err
    rc, _, err = _main(capsys)
    assert rc == 2 and "--demo" in err
    rc, _, err = _main(capsys, str(tmp_path / "ok.npy"), "--test-labels", str(tmp_path / "lab.npy"))
    assert rc == 2 and "--test-emb" in err
    # No traceback end to end either.
    p = _cli(str(tmp_path / "nan.npy"))
    assert p.returncode == 2 and "Traceback" not in p.stderr and "NaN" in p.stderr
