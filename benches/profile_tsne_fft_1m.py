"""Per-iteration cost of the t-SNE repulsion methods at N points (default 1M) vs openTSNE's FFT gradient.

    N=1000000 PYTHONPATH=python python benches/profile_tsne_fft_1m.py
"""
import time, numpy as np, scipy.sparse as sp, os, resource
from reprkit import _core
print("load", os.getloadavg(), flush=True)
n = int(os.environ.get("N", "1000000"))
rng = np.random.default_rng(0)
c = rng.uniform(-1, 1, size=(30, 2)) * np.sqrt(n) / 3
Y = c[rng.integers(0, 30, n)] + rng.normal(size=(n, 2)) * np.sqrt(n) / 40
off = np.r_[np.arange(-45, 0), np.arange(1, 46)]
cols = np.sort((np.arange(n)[:, None] + off[None, :]) % n, axis=1).astype(np.int32)
indptr = np.arange(0, n * 90 + 1, 90, dtype=np.int64)
data = np.full(n * 90, 1.0 / (n * 90))
print("spread", np.ptp(Y, 0).max(), flush=True)
Yc = np.ascontiguousarray(Y)
for m in ["fft", "barnes_hut"]:
    opt = _core.TsneOptimizer(indptr, cols.ravel(), data, Yc, "t", 1.0, m, 0.5, None)
    ts = []
    for _ in range(2):
        t = time.perf_counter(); opt.run(1, 1.0, 0.8, 1e-12, 5.0, 2, False); ts.append(time.perf_counter() - t)
    print(m, "ms/iteration", [round(v * 1e3) for v in ts], flush=True)
    del opt
from openTSNE import tsne as otsne
P = sp.csr_matrix((data, cols.ravel(), indptr), shape=(n, n))
fp = dict(n_interpolation_points=3, min_num_intervals=50, ints_in_interval=1)
for _ in range(2):
    t = time.perf_counter(); otsne.kl_divergence_fft(Yc, P, 1, fp, n_jobs=2); print("openTSNE fft ms/gradient", round((time.perf_counter() - t) * 1e3), flush=True)
print("peak RSS MiB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
