"""Stage split and peak memory of one reprkit t-SNE fit at large N (issue 13).

Wall and CPU seconds (process time, all threads: meaningful on a loaded box) of the
affinity stage (kNN search, calibration + symmetrisation — the binding reports the split
in wall seconds), of the PCA init and of the optimisation, and the peak RSS (VmHWM) after
the affinities and after the fit, for a Gaussian mixture of N × 50 float32 (the data of
benches/bench_tsne.py --large). ``--outliers M`` (openTSNE #174): from the fitted embedding,
20 more iterations without and with M points moved ~1e4 units out, time per iteration of each.

    python benches/profile_tsne_stages.py --n 1000000 --iters 50
    python benches/profile_tsne_stages.py --n 100000 --iters 750
    python benches/profile_tsne_stages.py --n 100000 --iters 300 --outliers 5
    python benches/profile_tsne_stages.py --n 1000000 --iters 750 --plot docs/tsne_1m.png
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "python"))
sys.path.insert(0, os.path.dirname(__file__))
import reprkit  # noqa: E402
from reprkit import _core  # noqa: E402
from bench_tsne import mixture  # noqa: E402


def vmhwm_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--iters", type=int, default=50)
    ap.add_argument("--n-jobs", type=int, default=2)
    ap.add_argument("--outliers", type=int, default=0, help="move this many points 1e4 units out after exaggeration")
    ap.add_argument("--save", help="save the embedding to this .npy")
    ap.add_argument("--plot", help="plot the embedding, coloured by mixture component, to this .png")
    args = ap.parse_args()
    print(f"load: {os.getloadavg()}", flush=True)
    X, lab = mixture(args.n, 50)
    print(f"data {X.shape} {X.dtype}: VmHWM {vmhwm_mib():.0f} MiB", flush=True)
    stage = {}
    orig = _core.tsne_p_held

    def timed(*a):
        t, c = time.perf_counter(), time.process_time()
        r = orig(*a)
        stage.update(aff_wall=time.perf_counter() - t, aff_cpu=time.process_time() - c, knn_wall=r[1], cal_wall=r[2],
                     aff_hwm=vmhwm_mib(), nnz=r[0].nnz())
        return r

    _core.tsne_p_held = timed
    n_ex = min(250, args.iters)
    est = reprkit.TSNE(perplexity=30, n_jobs=args.n_jobs, random_state=0, method="fft", max_iter=args.iters,
                       exaggeration_iter=n_ex, verbose=True)
    t, c = time.perf_counter(), time.process_time()
    est.fit(X)
    wall, cpu = time.perf_counter() - t, time.process_time() - c
    _core.tsne_p_held = orig
    opt_wall, opt_cpu = wall - stage["aff_wall"], cpu - stage["aff_cpu"]
    print(f"N = {args.n:,}, {args.iters} iterations, n_jobs = {args.n_jobs}, P nnz {stage['nnz']:,}")
    print(f"  kNN                      {stage['knn_wall']:8.2f} s wall")
    print(f"  calibration + symmetrise {stage['cal_wall']:8.2f} s wall")
    print(f"  affinities total         {stage['aff_wall']:8.2f} s wall {stage['aff_cpu']:8.2f} s CPU")
    print(f"  init + optimisation      {opt_wall:8.2f} s wall {opt_cpu:8.2f} s CPU "
          f"({opt_wall / max(args.iters, 1) * 1e3:.0f} ms wall / iteration)")
    print(f"  total                    {wall:8.2f} s wall {cpu:8.2f} s CPU")
    print(f"  peak RSS after affinities {stage['aff_hwm']:.0f} MiB, after the fit {vmhwm_mib():.0f} MiB")
    if args.save:
        np.save(args.save, np.asarray(est.embedding_, dtype=np.float32))
    if args.plot:
        from bench_tsne import _plot_embedding

        _plot_embedding(est.embedding_, lab, args.plot, f"reprkit t-SNE (fft), {args.n:,} × 50 mixture")
    if args.outliers:
        outlier_run(est, args)
    print(f"load: {os.getloadavg()}", flush=True)


def outlier_run(est, args) -> None:
    """Iteration time with and without a few far outliers, from the fitted embedding."""
    P = est.affinities_
    Y = np.ascontiguousarray(est.embedding_, dtype=np.float64)
    Yo = Y.copy()
    rng = np.random.default_rng(0)
    idx = rng.choice(len(Y), args.outliers, replace=False)
    Yo[idx] = rng.normal(size=(args.outliers, 2)) * 1e4
    for name, y0 in (("no outliers", Y), (f"{args.outliers} outliers at ~1e4", Yo)):
        opt = _core.TsneOptimizer(P.indptr.astype(np.int64), P.indices.astype(np.int32), P.data, y0, "t", 1.0, "fft",
                                  0.5, None)
        t = time.perf_counter()
        opt.run(20, 1.0, 0.8, len(Y), 5.0, args.n_jobs, False)
        print(f"  {name}: {(time.perf_counter() - t) / 20 * 1e3:.0f} ms wall / iteration", flush=True)


if __name__ == "__main__":
    main()
