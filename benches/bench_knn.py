"""Approximate kNN benchmark: reprkit's random-projection forest + NN-descent vs
openTSNE's Annoy (``openTSNE.nearest_neighbors.Annoy``, its default 50 trees, the search
openTSNE's t-SNE runs above 1,000 points) and reprkit's exact tiled-GEMM search.

Data: a realistic embedding-like mixture, float32: 50 Gaussian clusters in a 20-dim
latent space mapped linearly to d dims plus isotropic noise (intrinsic dim ≈ 20).
k = 90 (t-SNE's 3·perplexity at perplexity 30), n_jobs = 2 for every library.
Recall@k against exact neighbours on a fixed sample of 1,000 query rows (brute force
in float64 numpy, in chunks). Each (library, size) runs in a fresh subprocess; peak
extra memory is the growth of the resident set (VmHWM, reset after the data is built; _util.PeakMemory).
Exact search is timed only where it finishes in reasonable time (``--exact-max``).

    python benches/bench_knn.py                          # 100k×50, 100k×384, 1M×50
    python benches/bench_knn.py --cases 20000x50 --repeats 1   # smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "python"))
sys.path.insert(0, os.path.dirname(__file__))
from _util import PeakMemory, machine  # noqa: E402

K = 90
N_JOBS = 2
SAMPLE = 1000


def make_data(n: int, d: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    c = rng.normal(size=(50, 20)) * 3.0
    z = c[rng.integers(0, 50, n)] + rng.normal(size=(n, 20))
    X = (z @ (rng.normal(size=(20, d)) / np.sqrt(20))).astype(np.float32)
    X += (0.3 * rng.normal(size=(n, d))).astype(np.float32)
    return X


def sample_rows(n: int) -> np.ndarray:
    return np.sort(np.random.default_rng(123).choice(n, min(SAMPLE, n), replace=False))


def exact_on_sample(X: np.ndarray, rows: np.ndarray, k: int) -> np.ndarray:
    """True k nearest (self excluded) of X[rows], float64 brute force in chunks of candidates."""
    Q = X[rows].astype(np.float64)
    qn = (Q**2).sum(1)
    best_d = np.full((len(rows), k), np.inf)
    best_i = np.zeros((len(rows), k), dtype=np.int64)
    for s in range(0, len(X), 100_000):
        C = X[s : s + 100_000].astype(np.float64)
        D = qn[:, None] - 2 * Q @ C.T + (C**2).sum(1)[None, :]
        ids = np.arange(s, s + len(C))
        D[rows[:, None] == ids[None, :]] = np.inf
        dd = np.concatenate([best_d, D], 1)
        ii = np.concatenate([best_i, np.broadcast_to(ids, D.shape)], 1)
        sel = np.argpartition(dd, k - 1, axis=1)[:, :k]
        best_d, best_i = np.take_along_axis(dd, sel, 1), np.take_along_axis(ii, sel, 1)
    return best_i


def child(lib: str, n: int, d: int, repeats: int) -> None:
    X = make_data(n, d)
    mem = PeakMemory().start()
    best, idx = np.inf, None
    for _ in range(repeats):
        t0 = time.perf_counter()
        if lib == "reprkit":
            from reprkit import _core

            idx, _ = _core.knn_search(X, K, "euclidean", "approx", 0, N_JOBS)
        elif lib == "reprkit-exact":
            from reprkit import _core

            idx, _ = _core.knn_search(X, K, "euclidean", "exact", 0, N_JOBS)
        elif lib == "annoy":
            from openTSNE.nearest_neighbors import Annoy

            idx, _ = Annoy(X, K, metric="euclidean", n_jobs=N_JOBS, random_state=0).build()
        else:
            raise SystemExit(f"unknown lib {lib}")
        best = min(best, time.perf_counter() - t0)
    extra = mem.stop()
    rows = sample_rows(n)
    ex = exact_on_sample(X, rows, K)
    rec = float(np.mean([len(set(a) & set(b)) / K for a, b in zip(np.asarray(idx)[rows], ex)]))
    print(json.dumps({"time": best, "recall": rec, "extra_mb": extra / 2**20}))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", default="100000x50,100000x384,1000000x50")
    ap.add_argument("--libs", default="reprkit,annoy,reprkit-exact")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--exact-max", type=int, default=100_000, help="largest n for the exact search")
    ap.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        lib, n, d, r = args.child
        child(lib, int(n), int(d), int(r))
        return

    print(f"# {machine()}")
    rows = []
    for case in args.cases.split(","):
        n, d = map(int, case.split("x"))
        reps = args.repeats if n <= 100_000 else 1
        res = {}
        for lib in args.libs.split(","):
            if lib == "reprkit-exact" and n > args.exact_max:
                continue
            out = subprocess.run(
                [sys.executable, __file__, "--child", lib, str(n), str(d), str(reps)],
                capture_output=True, text=True, check=True,
            ).stdout.strip().splitlines()[-1]
            res[lib] = json.loads(out)
            print(case, lib, res[lib], flush=True)
        rows.append((n, d, res))
    print(f"\n### Approximate kNN, k = {K}, n_jobs = {N_JOBS} (recall@{K} on {SAMPLE} rows vs brute force)\n")
    print("| n | d | reprkit (s) | recall | extra MB | Annoy (s) | recall | extra MB | Annoy / reprkit | exact (s) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for n, d, r in rows:
        a, b = r.get("reprkit"), r.get("annoy")
        e = r.get("reprkit-exact")
        ratio = f"{b['time'] / a['time']:.1f}×" if a and b else "—"
        fa = f"{a['time']:.2f} | {a['recall']:.3f} | {a['extra_mb']:.0f}" if a else "— | — | —"
        fb = f"{b['time']:.2f} | {b['recall']:.3f} | {b['extra_mb']:.0f}" if b else "— | — | —"
        print(f"| {n} | {d} | {fa} | {fb} | {ratio} | {e['time']:.2f} |" if e else f"| {n} | {d} | {fa} | {fb} | {ratio} | — |")


if __name__ == "__main__":
    main()
