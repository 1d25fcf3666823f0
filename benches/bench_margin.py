"""Forward + backward (embeddings' and W's gradients) of ArcFace: reprkit's fused kernel against the
plain torch a user writes (normalise, ``F.linear``, cos(θ+m) on the target column, ``F.cross_entropy``)
and pytorch-metric-learning's ``ArcFaceLoss`` (margin in degrees), B = 512, d = 512, float32,
2 threads, C = 1,000 / 10,000 / 100,000.

Every (implementation, C) runs in a fresh subprocess. Peak extra memory: VmHWM is reset
(``/proc/self/clear_refs``) after a warm-up call and ``malloc_trim``, then one fwd+bwd call runs
with ``z.grad`` and ``W.grad`` None; "extra MB" is the peak RSS growth of that call minus the
gradients every implementation must hold (W.grad: C·d, z.grad: B·d floats). Times are the best of
several calls in that process. The GEMM floor is the three B×C×d products of the loss (cos, ∂z, ∂W)
at torch's measured float32 GEMM rate on the same threads. reprkit's training path computes the loss
and both gradients in one fused call with those three products (the batch in strips of 128 rows);
only a forward without gradients runs the O(B)-state kernel.

Besides wall-clock times, each case records the process CPU time of its best call
(``time.process_time``, all threads): on a loaded machine, ``--threads 1`` CPU times are the
steadier comparison; a second table prints them.

    PYTHONPATH=python python benches/bench_margin.py [--classes 1000 10000 100000] [--threads 2]
    PYTHONPATH=python python benches/bench_margin.py --threads 1   # CPU-time comparison

Each side at its own best setting (``_util.run_case``): torch and PML at their library default,
reprkit the faster of the default and OMP_WAIT_POLICY=PASSIVE (its rayon pool and torch's OpenMP pool
share the cores); ``--omp-wait-policy PASSIVE`` (or ``''``) runs every side with that one setting.

``--quick`` runs C = 1,000 and 10,000 only.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _util import OMP_HELP, PeakMemory, machine, run_case  # noqa: E402

B, D, MARGIN, SCALE = 512, 512, 0.5, 64.0
IMPLS = ("reprkit", "torch", "pml")


def make_case(impl: str, classes: int):
    """(z, W parameter, fn() -> loss) with the same data for every implementation."""
    import torch
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(0)
    z = torch.randn(B, D, generator=g).requires_grad_(True)
    y = torch.randint(0, classes, (B,), generator=g)
    w0 = torch.randn(classes, D, generator=g)
    if impl == "reprkit":
        from reprkit import losses as RL

        m = RL.ArcFaceLoss(classes, D, margin=MARGIN, scale=SCALE)
        with torch.no_grad():
            m.weight.copy_(w0)
        return z, m.weight, lambda: m(z, y)
    if impl == "torch":
        w = torch.nn.Parameter(w0.clone())
        cm, sm = math.cos(MARGIN), math.sin(MARGIN)
        th, mm = math.cos(math.pi - MARGIN), math.sin(math.pi - MARGIN) * MARGIN

        def plain():
            cos = F.linear(F.normalize(z), F.normalize(w))
            ct = cos.gather(1, y[:, None])
            sin = torch.sqrt((1.0 - ct * ct).clamp(min=0))
            phi = torch.where(ct > th, ct * cm - sin * sm, ct - mm)
            return F.cross_entropy(SCALE * cos.scatter(1, y[:, None], phi), y)

        return z, w, plain
    from pytorch_metric_learning import losses as PL

    m = PL.ArcFaceLoss(classes, D, margin=math.degrees(MARGIN), scale=SCALE)
    with torch.no_grad():
        m.W.copy_(w0.T)
    return z, m.W, lambda: m(z, y)


def measure(impl: str, classes: int, threads: int, repeat: int) -> dict:
    import torch

    torch.set_num_threads(threads)
    import reprkit

    reprkit.set_num_threads(threads)
    z, w, fn = make_case(impl, classes)

    def step():
        z.grad = None
        w.grad = None
        loss = fn()
        loss.backward()
        return float(loss)

    step()  # warm-up (first-call allocations, operator registration)
    z.grad = None
    w.grad = None
    peak = PeakMemory().start()
    loss = step()
    grads_mb = (w.numel() + z.numel()) * 4 / 1e6
    extra = peak.stop() / 1e6 - grads_mb
    times, cpus = [], []
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        step()
        times.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    return {"time": min(times), "cpu": min(cpus), "extra_mb": extra, "loss": loss}


def gemm_rate(threads: int, classes: int) -> float:
    """torch's float32 GEMM rate (FLOP/s) on a B×d · d×C product, best of 3."""
    import torch

    torch.set_num_threads(threads)
    a, b = torch.randn(B, D), torch.randn(classes, D)
    best = math.inf
    for _ in range(4):
        t0 = time.perf_counter()
        a @ b.T
        best = min(best, time.perf_counter() - t0)
    return 2.0 * B * D * classes / best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--classes", type=int, nargs="+", default=[1000, 10000, 100000])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--omp-wait-policy", default="best", help=OMP_HELP)
    ap.add_argument("--case", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.case:
        impl, c = args.case[0], int(args.case[1])
        print(json.dumps(measure(impl, c, args.threads, 3 if c >= 100000 else 5)))
        return
    classes = [1000, 10000] if args.quick else args.classes
    print(f"machine: {machine()}; B = {B}, d = {D}, float32, {args.threads} threads, ArcFace m = {MARGIN}, s = {SCALE}; "
          f"OMP_WAIT_POLICY={args.omp_wait_policy or '(default)'}")
    print()
    print("| C | reprkit s (OMP) | reprkit extra MB | GEMM floor s (3 products) | torch s | torch extra MB | torch / reprkit "
          "| torch MB / reprkit MB | PML s | PML extra MB | PML / reprkit | max \\|Δloss\\| |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    cpu_rows = []
    for c in classes:
        res = {}
        for impl in IMPLS:
            got = run_case([sys.executable, __file__, "--case", impl, str(c), "--threads", str(args.threads)],
                           impl == "reprkit", args.omp_wait_policy)
            if "skip" in got:
                res[impl] = None
                print(f"<!-- {impl} C={c}: {got['skip']} -->")
                continue
            res[impl] = got
        floor = 3 * 2.0 * B * D * c / gemm_rate(args.threads, c)
        r, t, p = res["reprkit"], res["torch"], res["pml"]
        dl = max(abs(r["loss"] - o["loss"]) for o in (t, p) if o) if r else float("nan")

        def f(v, fmt):
            return format(v, fmt) if v is not None else "n/a"

        print(
            f"| {c:,} | {f(r and r['time'], '.3f')} ({r['omp'] if r else ''}) | {f(r and r['extra_mb'], '.0f')} | {floor:.3f} "
            f"| {f(t and t['time'], '.3f')} | {f(t and t['extra_mb'], '.0f')} "
            f"| **{t['time'] / r['time']:.2f}×** | {t['extra_mb'] / max(r['extra_mb'], 1.0):.1f}× "
            f"| {f(p and p['time'], '.3f')} | {f(p and p['extra_mb'], '.0f')} | **{p['time'] / r['time']:.2f}×** | {dl:.1e} |",
            flush=True,
        )
        if r and t and p:
            cpu_rows.append(
                f"| {c:,} | {r['cpu']:.3f} | {t['cpu']:.3f} | {p['cpu']:.3f} "
                f"| **{t['cpu'] / r['cpu']:.2f}×** | **{p['cpu'] / r['cpu']:.2f}×** |"
            )
    print()
    print(f"CPU time (process_time, all threads) of the best call, {args.threads} thread(s):")
    print()
    print("| C | reprkit CPU s | torch CPU s | PML CPU s | torch / reprkit | PML / reprkit |")
    print("|---:|---:|---:|---:|---:|---:|")
    for row in cpu_rows:
        print(row)


if __name__ == "__main__":
    main()
