"""reprkit.metrics against the tools users stitch together today: PML's
AccuracyCalculator with faiss-cpu (retrieval), scikit-learn's trustworthiness,
and scikit-learn's LogisticRegression (lbfgs) as the linear probe.

Every (task, implementation) runs in its own fresh subprocess with 2 threads
(reprkit n_jobs=2; torch/faiss/BLAS/OpenMP set to 2 threads); the RSS
high-water mark is reset after the data are built, so "MB" is the peak memory
the call adds. "s" is the best wall time of --repeat calls in that process
(the first call is one of them: nothing is warmed except imports and, for the
probe, torch's first-call set-up), "cpu s" the process CPU time of the best
call (on a loaded box the ratio of CPU times is the steadier one). float32.

* retrieval: n × 384 queries against themselves, 100 classes (a seeded
  Gaussian mixture, class means N(0, 1), noise N(0, 2²)). PML runs at its
  defaults (FaissKNN: a faiss-cpu IndexFlatL2) with k="max_bin_count" (k=None
  would ask faiss for an n × n result); reprkit with k=None (every query ranks
  the whole set). precision@1, R-precision and MAP@R coincide under both; the
  table reports each pair and the largest absolute difference.
* trustworthiness: X n × 50, Y = its first 2 coordinates plus noise, k = 5;
  the big case is reprkit only, with sample=1000.
* linear probe: n × 768, 100 classes, 80/20 split, embedding-like data
  (``embedding_like``: class means in a random 64-dimensional subspace, noise
  with a power-law spectrum λ_j ∝ 1/j in a random rotation, as the spectra of
  trained encoders decay, then a random scale and offset per feature). Both at
  l2 = 1e-4 on standardised features (scikit-learn's C = 1/(l2 · n_train)),
  each at its defaults otherwise: reprkit stops when the loss fell by less than
  1e-3 relatively over 5 iterations (or max |gradient| ≤ 1e-5, at most 200
  L-BFGS steps; see linear_probe and benches/probe_convergence.py), scikit-learn
  at max |gradient| ≤ 1e-4 on the same mean objective (max_iter=100). "diff" is
  |Δ top-1| in points (target ≤ 0.5).

    PYTHONPATH=python python benches/bench_metrics.py --full              # the issue's sizes (BENCHMARKS.md)
    PYTHONPATH=python python benches/bench_metrics.py --small             # 10k / 2k / 50k / 10k smoke run
    PYTHONPATH=python python benches/bench_metrics.py --sizes probe=40000 retrieval=30000 --repeat 2
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

THREADS = 2
L2 = 1e-4
SAMPLE = 1000


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def _reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def mixture(n: int, d: int, n_cls: int, sigma: float, seed: int = 0):
    import numpy as np

    rng = np.random.default_rng(seed)
    y = rng.integers(0, n_cls, n)
    means = rng.normal(size=(n_cls, d)).astype(np.float32)
    x = means[y] + sigma * rng.normal(size=(n, d)).astype(np.float32)
    return x.astype(np.float32), y


def embedding_like(n: int, d: int, n_cls: int, sep: float = 0.25, k: int = 64, seed: int = 0):
    """Features shaped like a trained encoder's: class means N(0, sep²) in a random k-dimensional subspace, plus
    noise whose covariance spectrum decays as 1/j (mean variance 1 per feature) in a random rotation, then a random
    positive scale and an offset per feature (so standardising matters)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    y = rng.integers(0, n_cls, n)
    basis = np.linalg.qr(rng.normal(size=(d, k)))[0].astype(np.float32)
    rot = np.linalg.qr(rng.normal(size=(d, d)))[0].astype(np.float32)
    spec = np.arange(1, d + 1, dtype=np.float64) ** -0.5
    spec = (spec * np.sqrt(d / (spec**2).sum())).astype(np.float32)
    means = (sep * rng.normal(size=(n_cls, k))).astype(np.float32) @ basis.T
    x = np.empty((n, d), dtype=np.float32)
    for s in range(0, n, 16384):  # in tiles: the float64 normals of all rows at once would be 8 bytes × n × d
        e = min(n, s + 16384)
        x[s:e] = means[y[s:e]] + (rng.normal(size=(e - s, d)).astype(np.float32) * spec) @ rot.T
    x *= np.exp(0.5 * rng.normal(size=d)).astype(np.float32)
    x += rng.normal(size=d).astype(np.float32)
    return x, y


def case(task: str, impl: str, n: int):
    """Builds the inputs, returns a zero-argument call that returns a dict of values."""
    import numpy as np

    if task == "retrieval":
        x, y = mixture(n, 384, 100, 2.0)
        if impl == "reprkit":
            from reprkit.metrics import retrieval_metrics

            return lambda: retrieval_metrics(x, y, n_jobs=THREADS)
        import faiss
        import torch
        from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator

        faiss.omp_set_num_threads(THREADS)
        ac = AccuracyCalculator(include=("precision_at_1", "r_precision", "mean_average_precision_at_r"), k="max_bin_count")
        tx, ty = torch.from_numpy(x), torch.from_numpy(y)
        return lambda: ac.get_accuracy(tx, ty)
    if task in ("trust", "trust_sampled"):
        rng = np.random.default_rng(1)
        X = rng.normal(size=(n, 50)).astype(np.float32)
        Y = (X[:, :2] + 0.5 * rng.normal(size=(n, 2))).astype(np.float32)
        if impl == "reprkit":
            from reprkit.metrics import trustworthiness

            sample = SAMPLE if task == "trust_sampled" else None
            return lambda: {"trustworthiness": trustworthiness(X, Y, 5, sample=sample, n_jobs=THREADS)}
        from sklearn.manifold import trustworthiness as sk

        return lambda: {"trustworthiness": sk(X, Y, n_neighbors=5)}
    if task == "probe":
        x, y = embedding_like(n, 768, 100)
        cut = int(0.8 * n)
        if impl == "reprkit":
            from reprkit.metrics import linear_probe

            # torch's import and first-call set-up stay out of the measurement, like the peer's imports.
            linear_probe(x[:200], y[:200] % 2, x[200:300], y[200:300] % 2, max_iter=2, n_jobs=THREADS)

            def run():
                r = linear_probe(x[:cut], y[:cut], x[cut:], y[cut:], l2=L2, n_jobs=THREADS)
                return {"top1": r.top1, "n_iter": r.n_iter, "n_evals": r.n_evals}

            return run
        import warnings

        from sklearn.linear_model import LogisticRegression

        def run_sk():
            mu, sd = x[:cut].mean(0), x[:cut].std(0)
            sd[sd == 0] = 1
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                m = LogisticRegression(C=1.0 / (L2 * cut)).fit((x[:cut] - mu) / sd, y[:cut])
            return {"top1": float(m.score((x[cut:] - mu) / sd, y[cut:])), "n_iter": int(m.n_iter_[0])}

        return run_sk
    raise SystemExit(f"unknown task {task}")


def run_one(task: str, impl: str, n: int, repeat: int = 1) -> dict:
    fn = case(task, impl, n)
    _reset_peak()
    base = _status_kb("VmRSS")
    best = None
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        values = fn()
        t, c = time.perf_counter() - t0, time.process_time() - c0
        if best is None or t < best[0]:
            best = (t, c)
    return {"time": best[0], "cpu": best[1], "mem": (_status_kb("VmHWM") - base) / 1024,
            "values": {k: float(v) for k, v in values.items()}}


PEER = {"retrieval": "pml+faiss", "trust": "sklearn", "trust_sampled": None, "probe": "sklearn"}


FULL = {"retrieval": 100_000, "trust": 10_000, "trust_sampled": 1_000_000, "probe": 100_000}
SMALL = {"retrieval": 10_000, "trust": 2_000, "trust_sampled": 50_000, "probe": 10_000}


def _diff(task: str, r: dict, q: dict) -> str:
    """The largest difference of the values both sides report (for the probe: |Δ top-1| in points)."""
    if task == "probe":
        return f"{100 * abs(r['top1'] - q['top1']):.2f} pt"
    common = [k for k in q if k in r]
    return f"{max(abs(r[k] - q[k]) for k in common):.1e}" if common else ""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--one", nargs=3, metavar=("TASK", "IMPL", "N"))
    ap.add_argument("--full", action="store_true", help="the issue's sizes (also the default)")
    ap.add_argument("--small", action="store_true", help="small sizes for a smoke run")
    ap.add_argument("--sizes", nargs="*", default=[], metavar="TASK=N", help="override one task's size")
    ap.add_argument("--repeat", type=int, default=1, help="calls per process; the best wall time is reported")
    ap.add_argument("--tasks", nargs="*", default=["retrieval", "trust", "trust_sampled", "probe"])
    ap.add_argument("--timeout", type=int, default=3600)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one[0], args.one[1], int(args.one[2]), args.repeat)))
        return
    if args.full and args.small:
        raise SystemExit("--full and --small exclude each other")
    sizes = dict(SMALL if args.small else FULL)
    for item in args.sizes:
        task, _, val = item.partition("=")
        if task not in sizes or not val.isdigit():
            raise SystemExit(f"--sizes takes TASK=N with TASK in {sorted(sizes)}, got {item!r}")
        sizes[task] = int(val)
    env = dict(os.environ)
    for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[v] = str(THREADS)
    print(f"# load average at start: {os.getloadavg()}", flush=True)
    rows = []
    for task in args.tasks:
        n = sizes[task]
        res = {}
        for impl in ("reprkit", PEER[task]):
            if impl is None:
                continue
            cmd = [sys.executable, __file__, "--one", task, impl, str(n), "--repeat", str(args.repeat)]
            try:
                p = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout, env=env)
                if p.returncode == 0:
                    res[impl] = json.loads(p.stdout.strip().splitlines()[-1])
                else:
                    res[impl] = {"skip": "failed: " + (p.stderr.strip().splitlines() or ["?"])[-1][:100]}
            except subprocess.TimeoutExpired:
                res[impl] = {"skip": f"> {args.timeout} s"}
            print("ROW " + json.dumps([task, n, impl, res[impl]]), flush=True)
        rows.append((task, n, res))
    print(f"\n# load average at end: {os.getloadavg()}")
    print("\n| task | n | reprkit s | cpu s | MB | peer | peer s | cpu s | MB | peer/reprkit (wall, cpu) "
          "| values (reprkit / peer) | diff |")
    print("|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---|---:|")
    for task, n, res in rows:
        r = res["reprkit"]
        peer = PEER[task]
        q = res.get(peer, {}) if peer else {}
        cells = [task, str(n)]
        cells += [f"{r['time']:.2f}", f"{r['cpu']:.2f}", f"{r['mem']:.0f}"] if "time" in r else [r.get("skip", ""), "", ""]
        if peer and "time" in q and "time" in r:
            vals = ", ".join(f"{k} {r['values'][k]:.4f} / {q['values'].get(k, float('nan')):.4f}" for k in q["values"]
                             if k in r["values"])
            cells += [peer, f"{q['time']:.2f}", f"{q['cpu']:.2f}", f"{q['mem']:.0f}",
                      f"{q['time'] / r['time']:.1f}×, {q['cpu'] / r['cpu']:.1f}×", vals, _diff(task, r["values"], q["values"])]
        else:
            vals = ", ".join(f"{k} {v:.4f}" for k, v in r.get("values", {}).items())
            cells += [peer or "—", q.get("skip", "") if peer else "", "", "", "", vals, ""]
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
