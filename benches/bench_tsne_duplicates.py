"""t-SNE on duplicated and collapsed inputs: the time relative to distinct rows (target ≤ 1.5×).

    PYTHONPATH=python python benches/bench_tsne_duplicates.py [--n 5000] [--d 50] [--n-jobs 2]

Cases, all n × d float32 from one Gaussian sample: distinct rows; 50 % exact copies; 100 % copies
(every row equal: the embedding stays collapsed, a documented result); rows within 1e-6 of one point;
50 distinct rows repeated n/50 times. reprkit.TSNE at its defaults (method "auto"), one process,
each case once after a warm-up fit; the DuplicateRowsWarning is silenced.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _util import machine  # noqa: E402


def cases(n: int, d: int) -> dict:
    base = np.random.default_rng(0).standard_normal((n, d)).astype(np.float32)
    half = base.copy()
    half[n // 2:] = half[: n // 2]
    return {
        "distinct": base,
        "50 % copies": half,
        "100 % copies": np.repeat(base[:1], n, 0),
        "within 1e-6 of a point": (base[0] + 1e-6 * base).astype(np.float32),
        "50 rows × n/50": np.repeat(base[:50], n // 50, 0),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--d", type=int, default=50)
    ap.add_argument("--n-jobs", type=int, default=2)
    args = ap.parse_args()
    import reprkit

    print(f"# {machine()}; n={args.n}, d={args.d}, n_jobs={args.n_jobs}")
    data = cases(args.n, args.d)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reprkit.TSNE(n_jobs=args.n_jobs, random_state=0, max_iter=50, exaggeration_iter=25).fit_transform(data["distinct"][:500])
        times = {}
        for name, x in data.items():
            t0 = time.perf_counter()
            y = reprkit.TSNE(n_jobs=args.n_jobs, random_state=0).fit_transform(x)
            times[name] = time.perf_counter() - t0
            assert np.isfinite(y).all()
    print("\n| input | s | time / distinct |\n|---|---:|---:|")
    for name, t in times.items():
        print(f"| {name} | {t:.2f} | {t / times['distinct']:.2f}× |")


if __name__ == "__main__":
    main()
