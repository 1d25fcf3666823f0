"""Forward+backward time and peak extra memory of reprkit's SupCon and uniformity losses against the plain
torch code a user would write and against pytorch-metric-learning's SupConLoss (PML has no uniformity).

Every (loss, implementation, batch size) runs in its own subprocess, so the peak extra memory is the growth
of the process's peak RSS (VmHWM, reset before the calls: _util.PeakMemory) over the fwd+bwd calls, torch's allocations included. Cases whose
estimated memory exceeds ``--mem-limit`` are skipped and marked. Timings are the best of 3 runs after a
warm-up at B <= 4096, one run above. float32, d = 256, ``--threads`` threads for torch and reprkit (2 by
default, the issue's setting).

* supcon: B embeddings, labels with 4 samples per class (several positives per anchor), τ = 0.1; PML's
  SupConLoss (cosine similarity, the same formula: rows without positives are left out of the mean).
* uniformity: the rows normalised, log mean_{i<j} e^{−2‖x_i − x_j‖²}; plain torch is the authors'
  one-liner ``torch.pdist(x).pow(2).mul(-2).exp().mean().log()`` and, as a faster plain form,
  ``torch.cdist`` + ``logsumexp`` over the upper triangle (``torch_cdist``).

    PYTHONPATH=python python benches/bench_ssl_supcon.py [--sizes 4096 16384] [--losses supcon uniformity]

Each side runs at its own best setting (``--omp-wait-policy best``, the default; _util.run_case):
the peers at their library default, reprkit the faster of the default and OMP_WAIT_POLICY=PASSIVE.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _util import OMP_HELP, PeakMemory, machine, run_case  # noqa: E402

SIZES = (4096, 16384)
D = 256
TAU = 0.1
LOSSES = ("supcon", "uniformity")
IMPLS = {"supcon": ("reprkit", "torch", "pml"), "uniformity": ("reprkit", "torch", "torch_cdist")}
# Rough peak bytes, to skip what cannot run on the machine.
ESTIMATE = {
    ("supcon", "torch"): lambda b: 9 * 4 * b * b,
    ("supcon", "pml"): lambda b: 12 * 4 * b * b,
    ("uniformity", "torch"): lambda b: 4 * 4 * b * b / 2,
    ("uniformity", "torch_cdist"): lambda b: 6 * 4 * b * b,
}


def make_case(loss: str, impl: str, b: int):
    """(inputs requiring grad, fn(*inputs) -> scalar loss)."""
    import torch
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(0)
    x = torch.randn(b, D, generator=g).requires_grad_(True)
    y = torch.arange(b) // 4
    if loss == "supcon":
        if impl == "reprkit":
            from reprkit import losses as RL

            fn = RL.SupConLoss(TAU)
            return [x], lambda t: fn(t, y)
        if impl == "pml":
            from pytorch_metric_learning import losses

            fn = losses.SupConLoss(temperature=TAU)
            return [x], lambda t: fn(t, y)

        def plain(t):
            u = F.normalize(t, dim=1)
            s = u @ u.T / TAU
            eye = torch.eye(b, dtype=torch.bool)
            pos = (y[:, None] == y[None, :]) & ~eye
            log_prob = s - torch.logsumexp(s.masked_fill(eye, float("-inf")), 1, keepdim=True)
            cnt = pos.sum(1)
            keep = cnt > 0
            return (-(log_prob * pos).sum(1)[keep] / cnt[keep]).mean()

        return [x], plain
    if impl == "reprkit":
        from reprkit import functional as Fn

        return [x], lambda t: Fn.uniformity_loss(t, 2.0, normalize=True)
    if impl == "torch":
        return [x], lambda t: torch.pdist(F.normalize(t, dim=1), p=2).pow(2).mul(-2.0).exp().mean().log()

    def cdist_form(t):
        u = F.normalize(t, dim=1)
        d2 = torch.cdist(u, u).pow(2)
        iu = torch.triu_indices(b, b, 1)
        return torch.logsumexp(-2.0 * d2[iu[0], iu[1]], 0) - torch.log(torch.tensor(b * (b - 1) / 2.0))

    return [x], cdist_form


def run_one(loss: str, impl: str, b: int, threads: int) -> dict:
    import gc

    import torch

    torch.set_num_threads(threads)
    # One tiny call first: the first call of a torch.library operator imports ~900 modules (sympy, ...),
    # ~160 MB that are no part of the loss's memory.
    small, sfn = make_case(loss, impl, 16)
    sfn(*small).backward()
    inputs, fn = make_case(loss, impl, b)
    gc.collect()
    mem = PeakMemory().start()
    reps = 3 if b <= 4096 else 1

    def call():
        out = fn(*inputs)
        out.backward()
        return float(out.detach())

    if b <= 4096:
        call()
    best, value = float("inf"), float("nan")
    for _ in range(reps):
        for t in inputs:
            t.grad = None
        t0 = time.perf_counter()
        value = call()
        best = min(best, time.perf_counter() - t0)
    extra = mem.stop()
    return {"time": best, "mem": extra, "loss": value, "threads": torch.get_num_threads()}


def fmt_t(r):
    return f"{r['time']:.3f}" if "time" in r else "—"


def fmt_m(r):
    return f"{r['mem'] / 2**20:.0f}" if "time" in r else "—"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--one", nargs=3, metavar=("LOSS", "IMPL", "B"))
    ap.add_argument("--sizes", nargs="*", type=int, default=list(SIZES))
    ap.add_argument("--losses", nargs="*", default=list(LOSSES))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--mem-limit", type=float, default=8e9, help="skip cases estimated above this many bytes")
    ap.add_argument("--timeout", type=int, default=900)
    ap.add_argument("--omp-wait-policy", default="best", help=OMP_HELP)
    args = ap.parse_args()
    if args.one:
        loss, impl, b = args.one
        print(json.dumps(run_one(loss, impl, int(b), args.threads)))
        return
    print(f"# load average at start: {os.getloadavg()}; threads={args.threads}; OMP_WAIT_POLICY={args.omp_wait_policy or '(default)'}", flush=True)
    rows = []
    for loss in args.losses:
        for b in args.sizes:
            res = {}
            for impl in IMPLS[loss]:
                est = ESTIMATE.get((loss, impl))
                if est is not None and est(b) > args.mem_limit:
                    res[impl] = {"skip": f"needs ~{est(b) / 1e9:.0f} GB"}
                    continue
                cmd = [sys.executable, __file__, "--one", loss, impl, str(b), "--threads", str(args.threads)]
                res[impl] = run_case(cmd, impl == "reprkit", args.omp_wait_policy, args.timeout)
            rows.append((loss, b, res))
            print("ROW " + json.dumps([loss, b, res]), flush=True)
    print("\n| loss | B | impl | s | extra MB | impl/reprkit time | Δloss vs reprkit |")
    print("|---|---:|---|---:|---:|---:|---:|")
    for loss, b, res in rows:
        r = res["reprkit"]
        for impl, q in res.items():
            if "time" not in q:
                print(f"| {loss} | {b} | {impl} | skipped: {q.get('skip')} | | | |")
                continue
            ratio = f"{q['time'] / r['time']:.1f}×" if "time" in r else ""
            dl = f"{abs(q['loss'] - r['loss']):.1e}" if "time" in r else ""
            print(f"| {loss} | {b} | {impl} | {fmt_t(q)} | {fmt_m(q)} | {ratio} | {dl} |")
    print(f"\n# load average at end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
