"""ms per t-SNE iteration (gradient + update, FFT) at N points, on the mixture's P and a given embedding.

    python benches/profile_tsne_iteration.py EMBEDDING.npy [--n 1000000] [--cache P.npz]

EMBEDDING.npy: an N × 2 embedding of ``bench_tsne.mixture(N, 50)`` (``bench_tsne.py --large`` saves
one per case). P is computed once (approximate kNN, perplexity 30) and cached. Compare builds by
running the same command on each.
"""
import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "python"))
sys.path.insert(0, os.path.dirname(__file__))
from reprkit import _core  # noqa: E402

from bench_tsne import mixture  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("embedding")
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--cache", default="/tmp/reprkit_P_mixture.npz")
    ap.add_argument("--iters", type=int, default=10)
    a = ap.parse_args()
    if not os.path.exists(a.cache):
        X, _ = mixture(a.n, 50)
        held = _core.tsne_p_held(X, 30.0, 90, "euclidean", "approx", 0, 2)[0]
        ip, ix, dv = held.arrays()
        np.savez(a.cache, ip=ip, ix=ix, dv=dv)
    z = np.load(a.cache)
    ip, ix, dv = z["ip"].astype(np.int64), z["ix"].astype(np.int32), z["dv"]
    Y = np.ascontiguousarray(np.load(a.embedding).astype(np.float64))
    opt = _core.TsneOptimizer(ip, ix, dv, Y, "t", 1.0, "fft", 0.5, None)
    opt.run(2, 1.0, 0.8, 1e4, 5.0, 2, False)  # warm-up (and the first reorder)
    t = time.perf_counter()
    opt.run(a.iters, 1.0, 0.8, 1e4, 5.0, 2, False)
    print(f"{(time.perf_counter() - t) / a.iters * 1e3:.1f} ms / iteration at N = {len(Y):,}")


if __name__ == "__main__":
    main()
