"""Where linear_probe's stopping rules stop, against the optimum and scikit-learn.

For each data set (n × 768, 100 classes, 80/20 split, l2 = 1e-4 on standardised
features as in bench_metrics.py) this runs reprkit's L-BFGS with the stopping
rules disabled to a tight optimum (f*, and the test accuracy there), recording
the loss, max |gradient| and test accuracy after every iteration; then
scikit-learn's LogisticRegression (lbfgs) at its defaults (tol 1e-4), whose
objective value is evaluated with reprkit's fused pass in float64. It prints,
for each rule, the iteration and pass where it stops, the relative excess loss
(f − f*)/f* there and the accuracy's distance from the optimum's and from
scikit-learn's. The iterates do not depend on the rule, so one run serves all.

Data sets: ``embedding_like`` (bench_metrics.py: class means in a 64-d subspace,
power-law noise, per-feature scale and offset; seed 1), ``mixture`` (isotropic
class means, noise σ = 6), ``lowrank`` (class means 3 × N(0, 0.3²) in a 32-d
subspace, unit noise, per-feature scale and offset), and ``bench`` (the 100k
benchmark case itself, seed 0).

    PYTHONPATH=python python benches/probe_convergence.py                 # 40k each + the 100k case (~6 CPU-min)
    PYTHONPATH=python python benches/probe_convergence.py --n 10000 --sets embedding_like mixture   # smoke run
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_metrics import L2, THREADS, embedding_like, mixture  # noqa: E402


def lowrank(n: int, d: int, n_cls: int, k: int = 32, sep: float = 0.3, seed: int = 0):
    """Class means N(0, sep²) in a random k-dimensional subspace, times 3, plus unit noise; per-feature scale and offset."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, n_cls, n)
    basis = np.linalg.qr(rng.normal(size=(d, k)))[0]
    means = rng.normal(size=(n_cls, k)) * sep
    scales = np.exp(rng.normal(size=d) * 0.5)
    x = (means[y] @ basis.T) * 3 + rng.normal(size=(n, d))
    x = x * scales + rng.normal(size=d)
    return x.astype(np.float32), y


def data(name: str, n: int):
    if name == "embedding_like":
        return embedding_like(n, 768, 100, seed=1)
    if name == "mixture":
        return mixture(n, 768, 100, 6.0)
    if name == "lowrank":
        return lowrank(n, 768, 100)
    if name == "bench":
        return embedding_like(100_000, 768, 100)
    raise SystemExit(f"unknown data set {name}")


def study(name: str, n: int, max_iter: int) -> None:
    import torch

    from reprkit.metrics import _lbfgs
    from reprkit.metrics.probe import standardise

    torch.set_num_threads(THREADS)
    x, y = data(name, n)
    cut = int(0.8 * len(y))
    mean, sd, Z = standardise(torch, torch.from_numpy(x[:cut]))
    Zte = (torch.from_numpy(x[cut:]) - mean) / sd
    ytr, yte = torch.from_numpy(y[:cut]), y[cut:]
    trace = []

    def cb(it, ne, f, gmax, get_w, b):
        acc = float(((Zte @ get_w().T + b).argmax(1).numpy() == yte).mean())
        trace.append((it, ne, f, gmax, acc))

    window = _lbfgs._WINDOW
    _lbfgs._WINDOW = 1 << 30  # no loss-based stop: run to the tight gradient tolerance
    try:
        c0 = time.process_time()
        _lbfgs.fit_multinomial(torch, Z, ytr, 100, L2, max_iter, 1e-7, callback=cb)
        cpu = time.process_time() - c0
    finally:
        _lbfgs._WINDOW = window
    f_star, acc_star = trace[-1][2], trace[-1][4]

    from sklearn.linear_model import LogisticRegression

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        c0 = time.process_time()
        m = LogisticRegression(C=1.0 / (L2 * cut)).fit(Z.numpy(), y[:cut])
        sk_cpu = time.process_time() - c0
    f_sk = _lbfgs._loss_grad(torch, Z.double(), ytr, torch.from_numpy(m.coef_).double(),
                             torch.from_numpy(m.intercept_).double(), L2)[0]
    acc_sk = float(m.score(Zte.numpy(), yte))
    print(f"\n### {name}, n = {len(y)} (train {cut}): optimum f* = {f_star:.7f}, top-1 {acc_star:.4f} after {trace[-1][0]} "
          f"iterations ({cpu:.1f} CPU s); scikit-learn: {m.n_iter_[0]} iterations ({sk_cpu:.1f} CPU s), "
          f"(f − f*)/f* = {(f_sk - f_star) / f_star:.1e}, top-1 {acc_sk:.4f} ({100 * (acc_sk - acc_star):+.2f} pt)\n")
    print("| rule | iteration | passes | (f − f*)/f* | top-1 | − optimum | − scikit-learn |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    fs = [t[2] for t in trace]
    rules = [(f"rtol {r:g} (window {window})", lambda k, r=r: k >= window and fs[k - window] - fs[k] <= r * fs[k])
             for r in (5e-4, 1e-3, 2e-3)]
    rules += [(f"tol {t:g} (max abs gradient)", lambda k, t=t: trace[k][3] <= t) for t in (1e-4, 1e-5)]
    for label, stop in rules:
        k = next((k for k in range(len(trace)) if stop(k)), len(trace) - 1)
        it, ne, f, _, acc = trace[k]
        print(f"| {label} | {it} | {ne} | {(f - f_star) / f_star:.1e} | {acc:.4f} | {100 * (acc - acc_star):+.2f} pt "
              f"| {100 * (acc - acc_sk):+.2f} pt |")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=40_000, help="rows per data set (the bench set is always 100k)")
    ap.add_argument("--sets", nargs="*", default=["embedding_like", "mixture", "lowrank", "bench"])
    ap.add_argument("--max-iter", type=int, default=60)
    args = ap.parse_args()
    print(f"# load average at start: {os.getloadavg()}")
    for name in args.sets:
        study(name, args.n, args.max_iter)
    print(f"\n# load average at end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
