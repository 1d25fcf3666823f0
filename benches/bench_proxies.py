"""Forward+backward time and peak extra memory of reprkit's proxy losses (Proxy-Anchor, Proxy-NCA)
against the plain torch a user writes and against pytorch-metric-learning (PML).

One training step: loss of (B, d) embeddings against the (C, d) proxies, then ``backward()``
computing the gradient of both (the proxies' gradient included). B = 512, d = 512, float32,
2 threads (``--threads``), labels uniform over the C classes, C = 1,000 / 10,000 / 100,000.

Every (loss, implementation, C) runs in a fresh subprocess. Peak extra memory is the growth of
the resident set over the step: the peak (VmHWM) is reset through /proc/self/clear_refs just
before the step (a subprocess inherits its parent's ru_maxrss on Linux, so ru_maxrss is not
used), and the table also gives it net of the gradients every implementation must hold
(embeddings' and proxies' gradients, (B + C)·d floats). Timings are the best of ``--repeat``
steps after the first (the one whose memory is measured; a tiny step runs before it, so that
one-off costs — imports, operator registration, thread pools — are not counted). The GEMM column is the time of the three B×C×d products any
implementation needs (cosines, ∂/∂embeddings, ∂/∂proxies) as torch.mm runs them in the same
process: a floor (reprkit's fused kernels do these three in one call). Beside each wall time the
table gives the step's CPU time (all threads, ``time.process_time``), steadier on a loaded box.

    PYTHONPATH=python python benches/bench_proxies.py [--classes 1000 10000 100000] [--losses anchor nca] [--threads 2]

Each side at its own best setting (``_util.run_case``): torch and PML at their library default,
reprkit the faster of the default and OMP_WAIT_POLICY=PASSIVE (column "omp"); ``--omp-wait-policy
PASSIVE`` (or ``''``) runs every side with that one setting.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _util import OMP_HELP, PeakMemory, run_case  # noqa: E402

B, D = 512, 512
CLASSES = (1_000, 10_000, 100_000)
LOSSES = ("anchor", "nca")
IMPLS = ("reprkit", "torch", "pml")
MARGIN, ALPHA, SCALE = 0.1, 32.0, 8.0


def make_case(loss: str, impl: str, c: int, b: int = B):
    """(embeddings, proxies, step() -> loss value): a fwd+bwd step of the given implementation."""
    import torch
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(0)
    x = torch.randn(b, D, generator=g).requires_grad_(True)
    y = torch.randint(0, c, (b,), generator=g)
    w0 = torch.randn(c, D, generator=g) * (2.0 / c) ** 0.5  # the same proxies for every implementation
    if impl == "pml":
        from pytorch_metric_learning import losses as PL

        mod = PL.ProxyAnchorLoss(c, D, margin=MARGIN, alpha=ALPHA) if loss == "anchor" else PL.ProxyNCALoss(c, D, softmax_scale=SCALE)
        with torch.no_grad():
            mod.proxies.copy_(w0)
        del w0
        w = mod.proxies
        fn = lambda: mod(x, y)  # noqa: E731
    else:
        w = w0.requires_grad_(True)
        if impl == "reprkit":
            from reprkit import functional as Fn

            if loss == "anchor":
                fn = lambda: Fn.proxy_anchor_loss(x, y, w, MARGIN, ALPHA)  # noqa: E731
            else:
                fn = lambda: Fn.proxy_nca_loss(x, y, w, SCALE)  # noqa: E731
        elif loss == "anchor":

            def fn():
                cos = F.normalize(x, dim=1) @ F.normalize(w, dim=1).T
                pos = F.one_hot(y, c).bool()
                ninf = torch.tensor(float("-inf"))
                zero = torch.zeros(1, c)
                lp = torch.logsumexp(torch.cat([torch.where(pos, -ALPHA * (cos - MARGIN), ninf), zero]), 0)
                ln = torch.logsumexp(torch.cat([torch.where(pos, ninf, ALPHA * (cos + MARGIN)), zero]), 0)
                return lp.sum() / pos.any(0).sum() + ln.sum() / c
        else:

            def fn():
                cos = F.normalize(x, dim=1) @ F.normalize(w, dim=1).T
                return F.cross_entropy(2 * SCALE * cos, y)

    return x, w, fn


def gemm_floor(c: int) -> float:
    import torch

    a, b = torch.randn(B, D), torch.randn(c, D)
    g = torch.randn(B, c)

    def three():
        a @ b.T
        g @ b
        g.T @ a

    three()
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        three()
        best = min(best, time.perf_counter() - t0)
    return best


def run_one(loss: str, impl: str, c: int, repeat: int, threads: int = 2) -> dict:
    import torch

    torch.set_num_threads(threads)

    def stepper(x, w, fn):
        def step():
            x.grad = None
            w.grad = None
            out = fn()
            out.backward()
            return float(out.detach())

        return step

    # One tiny step first: imports, operator registration, thread pools (one-off costs, not the step's).
    stepper(*make_case(loss, impl, 8, 8))()
    step = stepper(*make_case(loss, impl, c))

    # Peak extra memory of the first step (the gradients allocated inside it): later steps reuse
    # memory the allocator kept, which an RSS measurement would not see.
    peak = PeakMemory().start()
    step()
    extra = peak.stop()
    best = cpu = float("inf")
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        value = step()
        best, cpu = min(best, time.perf_counter() - t0), min(cpu, time.process_time() - c0)
    grads = (B + c) * D * 4
    out = {"time": best, "cpu": cpu, "mem": extra, "mem_net": extra - grads, "loss": value, "threads": torch.get_num_threads()}
    if impl == "torch":
        out["gemm3"] = gemm_floor(c)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--one", nargs=3, metavar=("LOSS", "IMPL", "C"))
    ap.add_argument("--classes", nargs="*", type=int, default=list(CLASSES))
    ap.add_argument("--losses", nargs="*", default=list(LOSSES))
    ap.add_argument("--impls", nargs="*", default=list(IMPLS))
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--timeout", type=int, default=900)
    ap.add_argument("--omp-wait-policy", default="best", help=OMP_HELP)
    args = ap.parse_args()
    if args.one:
        loss, impl, c = args.one
        print(json.dumps(run_one(loss, impl, int(c), args.repeat, args.threads)))
        return
    print(f"# B = {B}, d = {D}, float32, {args.threads} threads; load average at start: {os.getloadavg()}; "
          f"OMP_WAIT_POLICY={args.omp_wait_policy or '(default)'}", flush=True)
    rows = []
    for loss in args.losses:
        for c in args.classes:
            res = {}
            for impl in args.impls:
                cmd = [sys.executable, __file__, "--one", loss, impl, str(c), "--repeat", str(args.repeat), "--threads", str(args.threads)]
                res[impl] = run_case(cmd, impl == "reprkit", args.omp_wait_policy, args.timeout)
            rows.append((loss, c, res))
            print("ROW " + json.dumps([loss, c, res]), flush=True)
    mb = lambda v: f"{v / 2**20:.0f}"  # noqa: E731
    print("\n| loss | C | reprkit s (OMP) / CPU s | reprkit MB (net) | torch s / CPU s | torch MB (net) | torch/reprkit | PML s / CPU s | PML MB (net) "
          "| PML/reprkit | 3-GEMM floor s | max abs Δloss |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for loss, c, res in rows:
        r = res.get("reprkit", {})
        cells = [loss, f"{c:,}"]
        cells += [f"{r['time']:.3f} ({r['omp']}) / {r['cpu']:.3f}", f"{mb(r['mem'])} ({mb(r['mem_net'])})"] if "time" in r else [r.get("skip", "—"), ""]
        diffs = []
        for peer in ("torch", "pml"):
            q = res.get(peer, {})
            if "time" in q:
                ratio = f"{q['time'] / r['time']:.1f}×" if "time" in r else ""
                cells += [f"{q['time']:.3f} / {q['cpu']:.3f}", f"{mb(q['mem'])} ({mb(q['mem_net'])})", ratio]
                if "time" in r:
                    diffs.append(abs(q["loss"] - r["loss"]))
            else:
                cells += [q.get("skip", "—"), "", ""]
        t = res.get("torch", {})
        cells.append(f"{t['gemm3']:.3f}" if "gemm3" in t else "")
        cells.append(f"{max(diffs):.1e}" if diffs else "")
        print("| " + " | ".join(cells) + " |")
    print(f"\n# load average at end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
