"""Laplacian eigenmaps, PCA and classical MDS: reprkit vs scikit-learn / scipy.

For each (n, d): data = 8-D latent Gaussian clusters (overlapping, so the kNN graph
is connected) mapped linearly to d dimensions plus noise, float32.

* Laplacian eigenmaps, n_components=2, n_neighbors=10:
  - end to end from X: reprkit ``LaplacianEigenmaps(weights="connectivity")`` vs
    ``sklearn.manifold.SpectralEmbedding(affinity="nearest_neighbors")`` (their graphs
    differ slightly: sklearn averages (A + Aᵀ)/2, reprkit takes the union);
  - on the SAME graph: reprkit's ``affinity_matrix_`` passed as ``affinity="precomputed"``
    to both; the largest principal angle between the two 2-D embeddings is reported.
* Laplacian eigenmaps with the approximate kNN (``neighbors="approx"``, the shared
  random-projection forest + NN-descent) vs scikit-learn's fastest path,
  ``SpectralEmbedding(eigen_solver="lobpcg")``, end to end; subspace agreement (largest
  principal angle) of the two solvers on the SAME graph (reprkit's approx graph, precomputed).
* PCA(2): reprkit vs sklearn, both ``svd_solver="auto"`` and both ``"randomized"``;
  largest principal angle between the component subspaces (vs sklearn full/auto).
* Classical MDS(2): reprkit ``ClassicalMDS`` (Euclidean: from the covariance, no n × n
  matrix) and ``ClassicalMDS(metric="precomputed")`` on the distance matrix, vs
  ``scipy.linalg.eigh`` of the double-centred matrix (top 2 eigenpairs via
  subset_by_index). Skipped at n = 50k: the n × n matrices need 20 GB in float64.

All with n_jobs=2 (threadpoolctl limits BLAS to 2 threads for the peers).
Each scikit-learn Laplacian-eigenmaps call runs in a forked child with a time limit
(``--peer-timeout``, default 600 s); a call over the limit is reported as "> limit".
Usage: python benches/bench_spectral.py [--sizes 2000,10000,50000] [--dims 50,384] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Callable, Tuple

import numpy as np
import scipy.linalg
from scipy.spatial.distance import cdist

import reprkit


def make_data(n: int, d: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, 8))
    z[:, 0] += 2.5 * rng.integers(0, 5, n)
    a = rng.normal(size=(8, d)) / np.sqrt(8)
    return (z @ a + 0.1 * rng.normal(size=(n, d))).astype(np.float32)


def best_of(fn: Callable[[], object], repeats: int) -> Tuple[float, object]:
    best, out = np.inf, None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def timed_in_child(fn: Callable[[], np.ndarray], repeats: int, timeout: float) -> Tuple[float, object]:
    """best_of(fn) in a forked child process; (inf, None) if it exceeds ``timeout`` seconds."""
    import multiprocessing as mp

    ctx = mp.get_context("fork")
    recv, send = ctx.Pipe(duplex=False)

    def child() -> None:
        send.send(best_of(fn, repeats))

    p = ctx.Process(target=child)
    p.start()
    if recv.poll(timeout):
        out = recv.recv()
        p.join()
        return out
    p.terminate()
    p.join()
    return np.inf, None


def arpack_reference(W, k: int) -> np.ndarray:
    """Independent reference: scipy's ARPACK (eigsh, which='LA', tol 1e-10, no shift-invert)
    on D^{-1/2} W D^{-1/2}; drop the trivial top vector and return D^{-1/2} u."""
    import scipy.sparse as sp
    from scipy.sparse.linalg import eigsh

    deg = np.asarray(W.sum(axis=1)).ravel()
    dis = sp.diags(1.0 / np.sqrt(deg))
    M = (dis @ W @ dis).tocsr()
    v0 = np.random.default_rng(0).uniform(-1, 1, W.shape[0])
    vals, vecs = eigsh(M, k=k + 1, which="LA", tol=1e-10, v0=v0, ncv=40)
    order = np.argsort(vals)[::-1]
    return vecs[:, order[1 : k + 1]] / np.sqrt(deg)[:, None]


def angle(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(scipy.linalg.subspace_angles(np.asarray(a, np.float64), np.asarray(b, np.float64))))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="2000,10000,50000")
    ap.add_argument("--dims", default="50,384")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--skip", default="", help="comma list of parts to skip: le,approx,pca,mds")
    ap.add_argument("--peer-timeout", type=float, default=600.0)
    args = ap.parse_args()
    from sklearn.decomposition import PCA as SkPCA
    from sklearn.manifold import SpectralEmbedding
    from threadpoolctl import threadpool_limits

    skip = set(filter(None, args.skip.split(",")))
    jobs = 2
    print(f"# load average at start: {os.getloadavg()}")
    rows_le, rows_pca, rows_mds, rows_ap = [], [], [], []
    with threadpool_limits(jobs):
        for n in map(int, args.sizes.split(",")):
            for d in map(int, args.dims.split(",")):
                X = make_data(n, d)
                reps = args.repeats if n <= 10_000 else 1
                if "le" not in skip:
                    ours = reprkit.LaplacianEigenmaps(2, n_neighbors=10, weights="connectivity", n_jobs=jobs, random_state=0)
                    t_r, emb = best_of(lambda: ours.fit_transform(X), reps)
                    sk = SpectralEmbedding(2, affinity="nearest_neighbors", n_neighbors=10, n_jobs=jobs, random_state=0)
                    W = ours.affinity_matrix_
                    pre = reprkit.LaplacianEigenmaps(2, affinity="precomputed", n_jobs=jobs, random_state=0)
                    t_rp, emb_p = best_of(lambda: pre.fit_transform(W), reps)
                    skp = SpectralEmbedding(2, affinity="precomputed", n_jobs=jobs, random_state=0)
                    t_sp, ref = timed_in_child(lambda: skp.fit_transform(W), reps, args.peer_timeout)
                    if ref is None:  # the same eigensolver would also time out end to end
                        t_s = np.inf
                    else:
                        t_s, _ = timed_in_child(lambda: sk.fit_transform(X), reps, args.peer_timeout)
                    a = angle(emb_p, ref) if ref is not None else float("nan")
                    t_ar, ref_ar = best_of(lambda: arpack_reference(W, 2), 1)
                    row = (n, d, t_r, t_s, t_rp, t_sp, a, ours.n_connected_components_, t_ar, angle(emb_p, ref_ar))
                    rows_le.append(row)
                    print("LE", row, flush=True)
                if "approx" not in skip:
                    ours = reprkit.LaplacianEigenmaps(
                        2, n_neighbors=10, weights="connectivity", neighbors="approx", n_jobs=jobs, random_state=0
                    )
                    t_r, emb = best_of(lambda: ours.fit_transform(X), reps)
                    W = ours.affinity_matrix_
                    sk = SpectralEmbedding(2, affinity="nearest_neighbors", n_neighbors=10, eigen_solver="lobpcg", n_jobs=jobs, random_state=0)
                    t_s, _ = timed_in_child(lambda: sk.fit_transform(X), reps, args.peer_timeout)
                    skp = SpectralEmbedding(2, affinity="precomputed", eigen_solver="lobpcg", n_jobs=jobs, random_state=0)
                    _, ref = timed_in_child(lambda: skp.fit_transform(W), 1, args.peer_timeout)
                    pre = reprkit.LaplacianEigenmaps(2, affinity="precomputed", n_jobs=jobs, random_state=0).fit_transform(W)
                    a = angle(pre, ref) if ref is not None else float("nan")
                    a_ar = angle(pre, arpack_reference(W, 2))
                    row = (n, d, t_r, t_s, a, a_ar)
                    rows_ap.append(row)
                    print("LE-approx", row, flush=True)
                if "pca" not in skip:
                    t_r, p = best_of(lambda: reprkit.PCA(2, n_jobs=jobs).fit(X), reps)
                    t_s, q = best_of(lambda: SkPCA(2).fit(X), reps)
                    t_rr, pr = best_of(lambda: reprkit.PCA(2, svd_solver="randomized", random_state=0, n_jobs=jobs).fit(X), reps)
                    t_sr, _ = best_of(lambda: SkPCA(2, svd_solver="randomized", random_state=0).fit(X), reps)
                    row = (n, d, t_r, t_s, t_rr, t_sr, angle(p.components_.T, q.components_.T), angle(pr.components_.T, q.components_.T))
                    rows_pca.append(row)
                    print("PCA", row, flush=True)
                if "mds" not in skip and n <= 10_000:
                    t_r, e = best_of(lambda: reprkit.ClassicalMDS(2, n_jobs=jobs).fit_transform(X), reps)
                    X64 = X.astype(np.float64)
                    D = cdist(X64, X64)

                    def scipy_cmds() -> np.ndarray:
                        D2 = D**2
                        B = -0.5 * (D2 - D2.mean(0) - D2.mean(1)[:, None] + D2.mean())
                        w, v = scipy.linalg.eigh(B, subset_by_index=[n - 2, n - 1], overwrite_a=True)
                        return v[:, ::-1] * np.sqrt(w[::-1])

                    reps_m = reps if n <= 2000 else 1
                    t_s, ref = best_of(scipy_cmds, reps_m)
                    t_rp, ep = best_of(lambda: reprkit.ClassicalMDS(2, metric="precomputed", n_jobs=jobs, random_state=0).fit_transform(D), reps_m)
                    row = (n, d, t_r, t_rp, t_s, angle(e, ref), angle(ep, ref))
                    rows_mds.append(row)
                    print("MDS", row, flush=True)
    print(f"# load average at end: {os.getloadavg()}")
    print("\n### Laplacian eigenmaps (n_components=2, n_neighbors=10)\n")
    print("| n | d | reprkit end-to-end (s) | sklearn end-to-end (s) | ratio | reprkit same graph (s) | sklearn same graph (s) | ratio | max angle vs sklearn (rad) | scipy eigsh 'LA' (s) | max angle vs eigsh (rad) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    lim = f"> {args.peer_timeout:.0f}"
    for n, d, t_r, t_s, t_rp, t_sp, a, cc, t_ar, a_ar in rows_le:
        s_e2e = lim if np.isinf(t_s) else f"{t_s:.3f}"
        s_pre = lim if np.isinf(t_sp) else f"{t_sp:.3f}"
        r_e2e = f"> {args.peer_timeout / t_r:.0f}×" if np.isinf(t_s) else f"{t_s / t_r:.1f}×"
        r_pre = f"> {args.peer_timeout / t_rp:.0f}×" if np.isinf(t_sp) else f"{t_sp / t_rp:.1f}×"
        a_s = "—" if np.isnan(a) else f"{a:.1e}"
        print(f"| {n} | {d} | {t_r:.3f} | {s_e2e} | {r_e2e} | {t_rp:.3f} | {s_pre} | {r_pre} | {a_s} | {t_ar:.2f} | {a_ar:.1e} |")
    print("\n### Laplacian eigenmaps, approximate kNN vs scikit-learn lobpcg (n_components=2, n_neighbors=10)\n")
    print("| n | d | reprkit neighbors='approx' end-to-end (s) | sklearn lobpcg end-to-end (s) | ratio | max angle vs sklearn lobpcg, same graph (rad) | max angle vs eigsh, same graph (rad) |")
    print("|---|---|---|---|---|---|---|")
    for n, d, t_r, t_s, a, a_ar in rows_ap:
        s_e2e = lim if np.isinf(t_s) else f"{t_s:.3f}"
        r_e2e = f"> {args.peer_timeout / t_r:.0f}×" if np.isinf(t_s) else f"{t_s / t_r:.1f}×"
        a_s = "—" if np.isnan(a) else f"{a:.1e}"
        print(f"| {n} | {d} | {t_r:.3f} | {s_e2e} | {r_e2e} | {a_s} | {a_ar:.1e} |")
    print("\n### PCA (n_components=2)\n")
    print("| n | d | reprkit auto (s) | sklearn auto (s) | ratio | reprkit randomized (s) | sklearn randomized (s) | ratio | max angle auto / randomized vs sklearn auto (rad) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for n, d, t_r, t_s, t_rr, t_sr, a, ar in rows_pca:
        print(f"| {n} | {d} | {t_r:.3f} | {t_s:.3f} | {t_s / t_r:.1f}× | {t_rr:.3f} | {t_sr:.3f} | {t_sr / t_rr:.1f}× | {a:.1e} / {ar:.1e} |")
    print("\n### Classical MDS (n_components=2)\n")
    print("| n | d | reprkit Euclidean (s) | reprkit precomputed D (s) | scipy eigh of −½JD²J (s) | ratio (Euclidean / precomputed) | max angle (Euclidean / precomputed) |")
    print("|---|---|---|---|---|---|---|")
    for n, d, t_r, t_rp, t_s, a, ap_ in rows_mds:
        print(f"| {n} | {d} | {t_r:.3f} | {t_rp:.3f} | {t_s:.3f} | {t_s / t_r:.0f}× / {t_s / t_rp:.1f}× | {a:.1e} / {ap_:.1e} |")


if __name__ == "__main__":
    main()
