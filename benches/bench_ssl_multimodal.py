"""Forward+backward time and peak extra memory of reprkit's CLIP and SigLIP losses
against the plain torch a user writes and against open_clip's ``ClipLoss`` /
``SigLipLoss`` (single process, world_size 1).

Every (loss, implementation, batch size) runs in its own subprocess, so the
peak extra memory is the growth of the process's peak RSS (VmHWM, reset before the calls: _util.PeakMemory) over the
fwd+bwd calls, torch's allocations included (after one call at B = 8, so that
one-time imports and thread pools are not counted). Cases whose estimated memory
exceeds ``--mem-limit`` (default 8 GB) are skipped and marked. Timings are the
best of 3 runs after a warm-up at B <= 4096, one run above. Inputs: B pairs of
L2-normalised float32 features, d = 256, the scale (and SigLIP's bias) a tensor
that requires grad, as in training: every side computes ∂features, ∂scale (∂bias).
torch and reprkit both get ``--threads`` threads (default 2).

    PYTHONPATH=python python benches/bench_ssl_multimodal.py [--sizes 4096 16384] [--losses clip siglip]
    PYTHONPATH=python python benches/bench_ssl_multimodal.py --sizes 4096 --threads 1 --cpu-time   # work, on a busy box

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
LOSSES = ("clip", "siglip")
IMPLS = ("reprkit", "torch", "open_clip")

# Rough peak bytes (float32 B×B matrices alive at once) to skip what cannot run.
ESTIMATE = {
    ("clip", "torch"): lambda b: 6 * 4 * b * b,
    ("clip", "open_clip"): lambda b: 8 * 4 * b * b,  # logits_per_image and logits_per_text are separate GEMMs
    ("siglip", "torch"): lambda b: 6 * 4 * b * b,
    ("siglip", "open_clip"): lambda b: 6 * 4 * b * b,
}


def make_case(loss: str, impl: str, b: int):
    """Returns (inputs requiring grad, fn(*inputs) -> scalar loss)."""
    import torch
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(0)
    x = F.normalize(torch.randn(b, D, generator=g), dim=1).requires_grad_(True)
    y = F.normalize(torch.randn(b, D, generator=g), dim=1).requires_grad_(True)
    scale = torch.tensor(1 / 0.07 if loss == "clip" else 10.0, requires_grad=True)
    bias = torch.tensor(-10.0, requires_grad=True)
    ins = [x, y, scale] + ([bias] if loss == "siglip" else [])
    if impl == "reprkit":
        from reprkit import functional as Fn

        if loss == "clip":
            return ins, lambda a, c, s: Fn.clip_loss(a, c, s)
        return ins, lambda a, c, s, t: Fn.siglip_loss(a, c, s, t)
    if impl == "torch":

        def clip(a, c, s):
            logits = s * a @ c.T
            labels = torch.arange(b)
            return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2

        def siglip(a, c, s, t):
            logits = s * a @ c.T + t
            z = 2 * torch.eye(b) - 1
            return -F.logsigmoid(z * logits).sum() / b

        return ins, clip if loss == "clip" else siglip
    from open_clip.loss import ClipLoss, SigLipLoss

    fn = ClipLoss() if loss == "clip" else SigLipLoss()
    return ins, fn


def run_one(loss: str, impl: str, b: int, threads: int, cpu_time: bool = False) -> dict:
    import gc

    import torch

    torch.set_num_threads(threads)
    if impl == "reprkit":
        import reprkit

        reprkit.set_num_threads(threads)
    # One call at B = 8 first: one-time costs (imports torch's custom-operator machinery pulls
    # in on a first call, ~170 MB of modules; thread pools) are not the loss's memory.
    tiny, tfn = make_case(loss, impl, 8)
    tfn(*tiny).backward()
    inputs, fn = make_case(loss, impl, b)
    del tiny, tfn
    gc.collect()
    mem = PeakMemory().start()
    reps = 3 if b <= 4096 else 1

    def call():
        out = fn(*inputs)
        out.backward()
        return float(out.detach())

    if b <= 4096:
        call()  # warm-up (thread pools, allocator)
    best, value = float("inf"), float("nan")
    for _ in range(reps):
        for t in inputs:
            t.grad = None
        clock = time.process_time if cpu_time else time.perf_counter
        t0 = clock()
        value = call()
        best = min(best, clock() - t0)
    extra = mem.stop()
    return {"time": best, "mem": extra, "loss": value, "d_scale": float(inputs[2].grad), "threads": torch.get_num_threads()}


def fmt_t(r):
    return f"{r['time']:.3f}" if "time" in r else "—"


def fmt_m(r):
    return f"{r['mem'] / 2**20:.0f}" if "time" in r else "—"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--one", nargs=3, metavar=("LOSS", "IMPL", "B"))
    ap.add_argument("--sizes", nargs="*", type=int, default=list(SIZES))
    ap.add_argument("--losses", nargs="*", default=list(LOSSES))
    ap.add_argument("--impls", nargs="*", default=list(IMPLS))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--mem-limit", type=float, default=8e9)
    ap.add_argument("--timeout", type=int, default=900)
    ap.add_argument("--omp-wait-policy", default="best", help=OMP_HELP)
    ap.add_argument(
        "--cpu-time", action="store_true",
        help="report the process's CPU time (all threads) instead of wall time: the work done, "
        "less sensitive to other load on the machine (use with --threads 1)",
    )
    args = ap.parse_args()
    if args.one:
        loss, impl, b = args.one
        print(json.dumps(run_one(loss, impl, int(b), args.threads, args.cpu_time)))
        return
    print(f"# load average at start: {os.getloadavg()}; threads={args.threads}; cpu_time={args.cpu_time}; "
          f"OMP_WAIT_POLICY={args.omp_wait_policy or '(default)'}", flush=True)
    rows = []
    peers = [p for p in args.impls if p != "reprkit"]
    for loss in args.losses:
        for b in args.sizes:
            res = {}
            for impl in args.impls:
                est = ESTIMATE.get((loss, impl))
                if est is not None and est(b) > args.mem_limit:
                    res[impl] = {"skip": f"needs ~{est(b) / 1e9:.0f} GB"}
                    continue
                cmd = [sys.executable, __file__, "--one", loss, impl, str(b), "--threads", str(args.threads)]
                if args.cpu_time:
                    cmd.append("--cpu-time")
                res[impl] = run_case(cmd, impl == "reprkit", args.omp_wait_policy, args.timeout)
            rows.append((loss, b, res))
            print("ROW " + json.dumps([loss, b, res]), flush=True)
    r0 = "reprkit" in args.impls
    head = "| loss | B |" + (" reprkit s | reprkit MB |" if r0 else "")
    sep = "|---|---:|" + ("---:|---:|" if r0 else "")
    for peer in peers:
        head += f" {peer} s | {peer} MB |" + (f" {peer} / reprkit |" if r0 else "")
        sep += "---:|---:|" + ("---:|" if r0 else "")
    head += " max |Δloss| | max |Δ∂scale| |"
    sep += "---:|---:|"
    print("\n" + head + "\n" + sep)
    for loss, b, res in rows:
        r = res.get("reprkit", {})
        cells = [loss, str(b)] + ([fmt_t(r), fmt_m(r)] if r0 else [])
        dl, ds = [], []
        ran = [res[k] for k in args.impls if "time" in res[k]]
        for peer in peers:
            q = res[peer]
            if "time" in q:
                cells += [fmt_t(q), fmt_m(q)] + ([f"**{q['time'] / r['time']:.1f}×**" if "time" in r else ""] if r0 else [])
            else:
                cells += [f"skipped ({q.get('skip')})", ""] + ([""] if r0 else [])
        for q in ran[1:]:
            dl.append(abs(q["loss"] - ran[0]["loss"]))
            ds.append(abs(q["d_scale"] - ran[0]["d_scale"]))
        cells += [f"{max(dl):.0e}" if dl else "", f"{max(ds):.0e}" if ds else ""]
        print("| " + " | ".join(cells) + " |")
    print(f"\n# load average at end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
