"""Forward+backward time and peak extra memory of Barlow Twins and VICReg: reprkit against the plain
torch a user would write (the authors' formulas, full d×d matrices, autograd) and lightly.

Every (loss, implementation, N, d) case runs in its own subprocess, so the peak extra memory is the
growth of that process's peak RSS (VmHWM, reset before the calls: _util.PeakMemory) over the fwd+bwd calls, after a tiny warm-up call (lazy
imports) and after the two (N, d) float32
views exist (their gradients are counted for every implementation). Timings: best of 3 after a
warm-up for d ≤ 2048, one cold run above. Each side runs at its own best OMP_WAIT_POLICY
(peers at the library default, reprkit the faster of default and PASSIVE: _util.run_case) and the same
torch thread count (``--threads``, default 2). Implementations:

* ``reprkit``: :func:`reprkit.functional.barlow_twins_loss` / ``vicreg_loss`` (CPU: the Rust kernel);
* ``reprkit_torch``: the tiled torch path reprkit runs on other devices (here on CPU), opt-in;
* ``torch``: plain torch, C = âᵀb̂/N (Barlow Twins) and Cov = xᵀx/(N−1) (VICReg) as d×d tensors;
* ``lightly``: ``lightly.loss.BarlowTwinsLoss(lambda_param=0.0051)`` and ``lightly.loss.VICRegLoss()``.

    PYTHONPATH=python python benches/bench_ssl_redundancy.py                  # N = 2048, d = 2048 and 8192
    PYTHONPATH=python python benches/bench_ssl_redundancy.py --n 256 --dims 512 --impls reprkit torch lightly reprkit_torch
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _util import OMP_HELP, PeakMemory, machine, run_case  # noqa: E402

LOSSES = ("barlow_twins", "vicreg")
IMPLS = ("reprkit", "torch", "lightly")
LAMBDA = 0.0051


def make_case(loss: str, impl: str, n: int, d: int):
    import torch
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(0)
    a = torch.randn(n, d, generator=g)
    b = (0.6 * a + 0.8 * torch.randn(n, d, generator=g)).requires_grad_(True)
    a.requires_grad_(True)
    if impl == "reprkit":
        from reprkit import functional as Fn

        fn = (lambda x, y: Fn.barlow_twins_loss(x, y, LAMBDA)) if loss == "barlow_twins" else Fn.vicreg_loss
        return [a, b], fn
    if impl == "reprkit_torch":
        from reprkit.reference import redundancy as R

        fn = (lambda x, y: R.barlow_twins_loss(x, y, LAMBDA)) if loss == "barlow_twins" else R.vicreg_loss
        return [a, b], fn
    if impl == "lightly":
        from lightly.loss import BarlowTwinsLoss, VICRegLoss

        return [a, b], BarlowTwinsLoss(lambda_param=LAMBDA) if loss == "barlow_twins" else VICRegLoss()
    if impl == "torch":

        def off_diagonal(c):
            k = c.shape[0]
            return c.flatten()[:-1].view(k - 1, k + 1)[:, 1:].flatten()

        def barlow(x, y):
            bn = torch.nn.BatchNorm1d(d, affine=False)
            c = bn(x).T @ bn(y) / n
            return (torch.diagonal(c) - 1).pow(2).sum() + LAMBDA * off_diagonal(c).pow(2).sum()

        def vicreg(x, y):
            inv = F.mse_loss(x, y)
            x, y = x - x.mean(0), y - y.mean(0)
            sx, sy = torch.sqrt(x.var(0) + 1e-4), torch.sqrt(y.var(0) + 1e-4)
            var = F.relu(1 - sx).mean() / 2 + F.relu(1 - sy).mean() / 2
            cx, cy = x.T @ x / (n - 1), y.T @ y / (n - 1)
            cov = off_diagonal(cx).pow(2).sum() / d + off_diagonal(cy).pow(2).sum() / d
            return 25 * inv + 25 * var + cov

        return [a, b], barlow if loss == "barlow_twins" else vicreg
    raise ValueError(impl)


def run_one(loss: str, impl: str, n: int, d: int, threads: int) -> dict:
    import gc

    import torch

    torch.set_num_threads(threads)
    # A tiny call first: lazy imports and one-time registrations are not the loss's memory.
    small, fn_small = make_case(loss, impl, 8, 16)
    fn_small(*small).backward()
    del small, fn_small
    inputs, fn = make_case(loss, impl, n, d)
    gc.collect()
    mem = PeakMemory().start()
    warm = d <= 2048
    reps = 3 if warm else 1

    def call():
        for t in inputs:
            t.grad = None
        out = fn(*inputs)
        out.backward()
        return float(out.detach())

    if warm:
        call()
    best, value = float("inf"), float("nan")
    for _ in range(reps):
        t0 = time.perf_counter()
        value = call()
        best = min(best, time.perf_counter() - t0)
    extra = mem.stop()
    return {"time": best, "mem": extra, "loss": value, "threads": torch.get_num_threads()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--one", nargs=4, metavar=("LOSS", "IMPL", "N", "D"))
    ap.add_argument("--n", type=int, default=2048)
    ap.add_argument("--dims", nargs="*", type=int, default=[2048, 8192])
    ap.add_argument("--losses", nargs="*", default=list(LOSSES))
    ap.add_argument("--impls", nargs="*", default=list(IMPLS))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--timeout", type=int, default=900)
    ap.add_argument("--omp-wait-policy", default="best", help=OMP_HELP)
    args = ap.parse_args()
    if args.one:
        loss, impl, n, d = args.one
        print(json.dumps(run_one(loss, impl, int(n), int(d), args.threads)))
        return
    print(f"# {machine()}; torch threads {args.threads}; OMP_WAIT_POLICY={args.omp_wait_policy or '(default)'}", flush=True)
    rows = []
    for loss in args.losses:
        for d in args.dims:
            res = {}
            for impl in args.impls:
                cmd = [sys.executable, __file__, "--one", loss, impl, str(args.n), str(d), "--threads", str(args.threads)]
                res[impl] = run_case(cmd, impl == "reprkit", args.omp_wait_policy, args.timeout)
                print("CASE " + json.dumps([loss, impl, args.n, d, res[impl]]), flush=True)
            rows.append((loss, d, res))
    peers = [i for i in args.impls if i != "reprkit"]
    head = "| loss | N | d | reprkit s | reprkit MB |" + "".join(f" {p} s | {p} MB | {p}/reprkit time | {p}/reprkit MB |" for p in peers)
    print("\n" + head + " max abs Δloss |")
    print("|---|---:|---:|---:|---:|" + "---:|" * (4 * len(peers)) + "---:|")
    for loss, d, res in rows:
        r = res.get("reprkit", {})
        cells = [loss, str(args.n), str(d)]
        cells += [f"{r['time']:.3f}", f"{r['mem'] / 2**20:.0f}"] if "time" in r else ["—", "—"]
        diffs = []
        for p in peers:
            q = res[p]
            if "time" in q and "time" in r:
                cells += [f"{q['time']:.3f}", f"{q['mem'] / 2**20:.0f}", f"{q['time'] / r['time']:.2f}×",
                          f"{q['mem'] / max(r['mem'], 1):.1f}×"]
                diffs.append(abs(q["loss"] - r["loss"]))
            else:
                cells += [f"skipped: {q.get('skip')}", "", "", ""]
        cells.append(f"{max(diffs):.1e}" if diffs else "")
        print("| " + " | ".join(cells) + " |")
    print(f"\n# load average at end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
