"""DINO loss, forward + backward with the centre update: reprkit against plain torch (the authors' per-pair
loop) and lightly's DINOLoss, float32, at DINO's multi-crop setting (B = 256, 2 global + 6 local crops,
K = 65,536 prototypes).

Each (implementation, size) runs in its own subprocess: the peak extra memory is the growth of the process's
peak RSS (VmHWM, reset before the calls: _util.PeakMemory) during the fwd+bwd calls, after the inputs (teacher views, student views requiring grad)
exist — so it counts the student gradient (S·B·K floats, the same for everyone) plus the temporaries.
Time: best of ``--repeat`` calls after one warm-up call. Threads: ``--threads`` for torch and reprkit alike.
The teacher does not require grad (it never does in DINO); the student views are leaves.

    PYTHONPATH=python python benches/bench_ssl_dino.py                       # B=256, 2+6 crops, K=65536
    PYTHONPATH=python python benches/bench_ssl_dino.py --b 32 --k 4096       # a quick check

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
from _util import OMP_HELP, PeakMemory, run_case  # noqa: E402

IMPLS = ("reprkit", "torch", "lightly")


def make_case(impl: str, b: int, nt: int, ns: int, k: int, seed: int = 0):
    import torch

    g = torch.Generator().manual_seed(seed)
    teacher = [torch.randn(b, k, generator=g) for _ in range(nt)]
    student = [torch.randn(b, k, generator=g).requires_grad_(True) for _ in range(ns)]
    if impl == "reprkit":
        from reprkit.losses import DINOLoss

        fn = DINOLoss(k)
        return teacher, student, lambda: fn(teacher, student)
    if impl == "lightly":
        from lightly.loss import DINOLoss as LDINOLoss

        fn = LDINOLoss(k, warmup_teacher_temp=0.04, teacher_temp=0.04)
        return teacher, student, lambda: fn(teacher, student)
    if impl == "torch":
        F = torch.nn.functional
        center = torch.zeros(1, k)

        def dino_torch():
            # facebookresearch/dino's DINOLoss.forward, on lists of views
            t_out = [F.softmax((t - center) / 0.04, dim=-1) for t in teacher]
            total, n = 0.0, 0
            for it, q in enumerate(t_out):
                for v, s in enumerate(student):
                    if v == it:
                        continue
                    total = total + torch.sum(-q * F.log_softmax(s / 0.1, dim=-1), dim=-1).mean()
                    n += 1
            with torch.no_grad():
                center.mul_(0.9).add_(torch.cat(teacher).mean(0, keepdim=True), alpha=0.1)
            return total / n

        return teacher, student, dino_torch
    raise ValueError(impl)


def run_one(impl: str, b: int, nt: int, ns: int, k: int, repeat: int, threads: int) -> dict:
    import gc

    import torch

    torch.set_num_threads(threads)
    # prime imports, operator registration and thread pools on a tiny case before the memory baseline
    _, _, pf = make_case(impl, 2, nt, ns, 8)
    pf().backward()
    teacher, student, fn = make_case(impl, b, nt, ns, k)

    def call():
        for s in student:
            s.grad = None
        out = fn()
        out.backward()
        return float(out.detach())

    gc.collect()
    mem = PeakMemory().start()
    call()  # warm-up
    best, value = float("inf"), float("nan")
    for _ in range(repeat):
        t0 = time.perf_counter()
        value = call()
        best = min(best, time.perf_counter() - t0)
    extra = mem.stop()
    # the first call's value with a zero centre (comparable across implementations)
    _, _, fresh = make_case(impl, b, nt, ns, k)
    first = float(fresh().detach())
    return {"time": best, "mem": extra, "loss": first, "last": value, "threads": torch.get_num_threads()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--one", metavar="IMPL")
    ap.add_argument("--b", type=int, default=256)
    ap.add_argument("--teacher-views", type=int, default=2)
    ap.add_argument("--student-views", type=int, default=8, help="global + local crops")
    ap.add_argument("--k", type=int, default=65536)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--impls", nargs="*", default=list(IMPLS))
    ap.add_argument("--timeout", type=int, default=900)
    ap.add_argument("--omp-wait-policy", default="best", help=OMP_HELP)
    args = ap.parse_args()
    shape = (args.b, args.teacher_views, args.student_views, args.k)
    if args.one:
        print(json.dumps(run_one(args.one, *shape, args.repeat, args.threads)))
        return
    print(f"# load average at start: {os.getloadavg()}; B={args.b}, crops {args.teacher_views}+"
          f"{args.student_views - args.teacher_views}, K={args.k}, {args.threads} threads", flush=True)
    res = {}
    for impl in args.impls:
        cmd = [sys.executable, __file__, "--one", impl, "--b", str(args.b), "--teacher-views", str(args.teacher_views),
               "--student-views", str(args.student_views), "--k", str(args.k), "--repeat", str(args.repeat),
               "--threads", str(args.threads)]
        res[impl] = run_case(cmd, impl == "reprkit", args.omp_wait_policy, args.timeout)
        print(impl, json.dumps(res[impl]), flush=True)
    r = res.get("reprkit", {})
    print("\n| impl | fwd+bwd s | extra peak MB | time / reprkit | loss (first call) |")
    print("|---|---:|---:|---:|---:|")
    for impl in args.impls:
        q = res[impl]
        if "time" not in q:
            print(f"| {impl} | {q.get('skip')} | | | |")
            continue
        ratio = f"{q['time'] / r['time']:.2f}×" if "time" in r else "—"
        print(f"| {impl} | {q['time']:.3f} | {q['mem'] / 2**20:.0f} | {ratio} | {q['loss']:.6f} |")
    print(f"\n# load average at end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
