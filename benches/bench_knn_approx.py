"""Approximate kNN (random-projection forest + NN-descent) at t-SNE scale (issue 13):
CPU seconds (process time, all threads: meaningful on a loaded box), wall seconds, the
load average, and recall@k on a fixed sample of rows against an exact float64 search.

Data: the Gaussian mixture of benches/bench_tsne.py (N × 50 float32), or uniform data in a
cube (``--data uniform``, where NN-descent is weakest). k = 90 = 3 · perplexity 30, the
Euclidean metric, as t-SNE calls it.

    python benches/bench_knn_approx.py --n 100000 250000
    python benches/bench_knn_approx.py --n 100000 --data uniform --d 16
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "python"))
sys.path.insert(0, os.path.dirname(__file__))
from reprkit import _core  # noqa: E402
from bench_tsne import mixture  # noqa: E402


def exact_rows(X: np.ndarray, rows: np.ndarray, k: int) -> np.ndarray:
    """k nearest of X[rows] among all rows (self excluded), float64, in chunks of rows."""
    X64 = X.astype(np.float64)
    sq = (X64**2).sum(1)
    out = []
    for s in range(0, len(rows), 100):
        r = rows[s : s + 100]
        D = sq[r][:, None] - 2 * X64[r] @ X64.T + sq[None, :]
        D[np.arange(len(r)), r] = np.inf
        part = np.argpartition(D, k, axis=1)[:, :k]
        out.append(part)
    return np.concatenate(out)


def recall(found: np.ndarray, exact: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(b)) / len(b) for a, b in zip(found, exact)]))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, nargs="+", default=[100_000])
    ap.add_argument("--d", type=int, default=50)
    ap.add_argument("--k", type=int, default=90)
    ap.add_argument("--data", choices=["mixture", "uniform"], default="mixture")
    ap.add_argument("--n-jobs", type=int, default=2)
    ap.add_argument("--sample", type=int, default=1000)
    args = ap.parse_args()
    print("| data | n | d | k | CPU s | wall s | load (1 min) | recall@k |")
    print("|---|---|---|---|---|---|---|---|")
    for n in args.n:
        if args.data == "mixture":
            X, _ = mixture(n, args.d)
        else:
            X = np.random.default_rng(0).uniform(size=(n, args.d)).astype(np.float32)
        load = os.getloadavg()[0]
        t, c = time.perf_counter(), time.process_time()
        idx, _ = _core.knn_search(X, args.k, "euclidean", "approx", 0, args.n_jobs)
        wall, cpu = time.perf_counter() - t, time.process_time() - c
        rows = np.random.default_rng(1).choice(n, min(args.sample, n), replace=False)
        rec = recall(idx[rows], exact_rows(X, rows, args.k))
        print(f"| {args.data} | {n:,} | {args.d} | {args.k} | {cpu:.1f} | {wall:.1f} | {load:.2f} | {rec:.4f} |", flush=True)


if __name__ == "__main__":
    main()
