"""Pairwise distances: reprkit vs torch.cdist, scipy cdist and sklearn, in one process.

    python benches/bench_distances.py [--sizes 1024 4096] [--dims 64 128 512] [--repeat 5] [--dup-size 4096]

Prints a markdown table: times in ms and ratios peer/reprkit (> 1: reprkit faster),
plus the float32 accuracy on near-duplicate rows (the product form's weak spot), and a
table of 0 % / 50 % / 100 % duplicate rows (B = --dup-size, d = 128): the time relative to
distinct rows must stay ≤ 1.5× (exact duplicates skip the cancelled-entry recompute).
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import scipy.spatial.distance as ssd
import sklearn.metrics
import torch

sys.path.insert(0, os.path.dirname(__file__))
from _util import best_of, machine  # noqa: E402

import reprkit  # noqa: E402


def accuracy() -> tuple[float, float]:
    """Max relative error of float32 distances for rows 1e-4 apart (norm ~1)."""
    r = np.random.default_rng(0)
    x = r.standard_normal((2048, 128))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    y = x + 1e-4 * r.standard_normal(x.shape) / np.sqrt(128)
    x32, y32 = x.astype(np.float32), y.astype(np.float32)
    truth = np.sqrt(((x32.astype(np.float64) - y32.astype(np.float64)) ** 2).sum(1))
    ours = np.diag(reprkit.pairwise_distances(x32, y32))
    cd = torch.cdist(torch.from_numpy(x32), torch.from_numpy(y32)).diagonal().numpy()
    return float(np.max(np.abs(ours - truth) / truth)), float(np.max(np.abs(cd - truth) / truth))


def duplicates(b: int, repeat: int, d: int = 128) -> None:
    """Forward and forward+backward with 0 %, 50 %, 100 % of the rows equal to one row."""
    print(f"\nDuplicate rows, B = {b}, d = {d}, float32 (ratio: time / time with distinct rows)\n")
    print("| duplicates | reprkit fwd ms | ratio | cdist fwd ms | ratio | reprkit fwd+bwd ms | ratio | cdist fwd+bwd ms | ratio |")
    print("|---|---|---|---|---|---|---|---|---|")
    base = None
    for pct in (0, 50, 100):
        x = np.random.default_rng(7).standard_normal((b, d)).astype(np.float32)
        x[: b * pct // 100] = x[0]
        t = torch.from_numpy(x)

        def fb(f):
            xt = t.clone().requires_grad_(True)
            f(xt).sum().backward()

        row = [
            best_of(lambda: reprkit.pairwise_distances(x), repeat),
            best_of(lambda: torch.cdist(t, t), repeat),
            best_of(lambda: fb(lambda v: reprkit.pairwise_distances(v)), repeat),
            best_of(lambda: fb(lambda v: torch.cdist(v, v)), repeat),
        ]
        base = base or row
        cells = " | ".join(f"{v*1e3:.1f} | {v/b0:.2f}×" for v, b0 in zip(row, base))
        print(f"| {pct} % | {cells} |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[1024, 4096])
    ap.add_argument("--dims", type=int, nargs="+", default=[64, 128, 512])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--dup-size", type=int, default=4096)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    reprkit.set_num_threads(args.threads)
    print(f"machine: {machine()}; torch {torch.__version__} ({args.threads} threads), float32, Euclidean, x vs x\n")
    print("| B | d | reprkit fwd ms | cdist fwd ms | scipy ms | sklearn ms | fwd vs cdist | vs scipy | vs sklearn "
          "| reprkit fwd+bwd ms | cdist fwd+bwd ms | fwd+bwd vs cdist |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for b in args.sizes:
        for d in args.dims:
            x = np.random.default_rng(b + d).standard_normal((b, d)).astype(np.float32)
            t = torch.from_numpy(x)
            r_f = best_of(lambda: reprkit.pairwise_distances(x), args.repeat)
            c_f = best_of(lambda: torch.cdist(t, t), args.repeat)
            s_f = best_of(lambda: ssd.cdist(x, x), max(1, args.repeat // 2))
            k_f = best_of(lambda: sklearn.metrics.pairwise_distances(x, n_jobs=1), args.repeat)

            def ours_fb():
                xt = t.clone().requires_grad_(True)
                reprkit.pairwise_distances(xt).sum().backward()

            def cdist_fb():
                xt = t.clone().requires_grad_(True)
                torch.cdist(xt, xt).sum().backward()

            r_fb = best_of(ours_fb, args.repeat)
            c_fb = best_of(cdist_fb, args.repeat)
            print(f"| {b} | {d} | {r_f*1e3:.1f} | {c_f*1e3:.1f} | {s_f*1e3:.1f} | {k_f*1e3:.1f} | {c_f/r_f:.2f}× | "
                  f"{s_f/r_f:.1f}× | {k_f/r_f:.2f}× | {r_fb*1e3:.1f} | {c_fb*1e3:.1f} | {c_fb/r_fb:.2f}× |", flush=True)
    duplicates(args.dup_size, args.repeat)
    ours, cd = accuracy()
    print(f"\nfloat32 rows 1e-4 apart (norm 1): max relative error reprkit {ours:.2e}, torch.cdist {cd:.2e}")


if __name__ == "__main__":
    main()
