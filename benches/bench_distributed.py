"""NT-Xent and CLIP under torch.distributed (gloo, one machine): 2 ranks × B/2 rows against 1 process × B.

For each (loss, B): one process computes the loss of the global batch (forward + backward,
``gather_distributed=False``) with ``--threads`` threads; then ``--ranks`` processes (spawned,
gloo on 127.0.0.1) each take B/ranks rows with ``--threads``/ranks threads and
``gather_distributed=True``. Reported: both times (best of ``--repeat`` after a warm-up; the
distributed time is the slowest rank's), the time of the collectives alone (the all_gather of
the local (B/ranks, 2d) features and the all_reduce of the (B, 2d) gradient that the loss's
backward does), and the check that the ranks' mean loss equals the single-process loss and
that rank 0's gradient × 1/ranks equals its slice of the single-process gradient (max relative
error). float32, d = 256, L2-normalised features (CLIP's scale 1/0.07).

    PYTHONPATH=python python benches/bench_distributed.py [--sizes 4096 16384] [--ranks 2] [--threads 2]

Each side runs at reprkit's defaults (no OMP_WAIT_POLICY is set).
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _util import best_of, machine  # noqa: E402

D = 256


def _inputs(b: int):
    import torch
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(0)
    return F.normalize(torch.randn(b, D, generator=g), dim=1), F.normalize(torch.randn(b, D, generator=g), dim=1)


def _loss(kind: str, x, y, gather: bool):
    from reprkit import functional as Fn

    if kind == "ntxent":
        return Fn.ntxent_loss(x, y, 0.1, gather_distributed=gather)
    return Fn.clip_loss(x, y, 1 / 0.07, gather_distributed=gather)


def _step(kind, x0, y0, gather):
    import torch

    x, y = x0.clone().requires_grad_(True), y0.clone().requires_grad_(True)
    loss = _loss(kind, x, y, gather)
    gx, _ = torch.autograd.grad(loss, (x, y))
    return loss.detach(), gx


def _worker(rank, world, port, kind, b, threads, repeat, out):
    import torch
    import torch.distributed as dist

    torch.set_num_threads(threads)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        x, y = _inputs(b)
        n = b // world
        xl, yl = x[rank * n : (rank + 1) * n], y[rank * n : (rank + 1) * n]
        res = {}

        def run():
            res["loss"], res["grad"] = _step(kind, xl, yl, True)

        def sync_run():
            dist.barrier()
            run()
            dist.barrier()

        t = best_of(sync_run, repeat)
        feats = torch.cat([xl, yl], 1)
        grad = torch.randn(b, 2 * D)

        def comm():
            from reprkit.distributed import all_gather

            dist.barrier()
            all_gather(feats)
            dist.all_reduce(grad.clone())
            dist.barrier()

        tc = best_of(comm, repeat)
        torch.save({"t": t, "tc": tc, "loss": res["loss"], "grad": res["grad"]}, os.path.join(out, f"r{rank}.pt"))
    finally:
        dist.destroy_process_group()


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[4096, 16384])
    ap.add_argument("--losses", nargs="+", default=["ntxent", "clip"], choices=["ntxent", "clip"])
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()

    import torch
    import torch.multiprocessing as mp

    torch.set_num_threads(args.threads)
    w = args.ranks
    print(f"machine: {machine()}; torch {torch.__version__}; {w} gloo ranks × {max(1, args.threads // w)} threads "
          f"vs 1 process × {args.threads} threads; float32, d = {D}\n")
    print("| loss | B | 1 process (s) | ranks (s) | ratio | collectives (s) | loss rel. err | grad rel. err |")
    print("|---|---|---|---|---|---|---|---|")
    for kind in args.losses:
        for b in args.sizes:
            b -= b % w
            x, y = _inputs(b)
            single = {}

            def run():
                single["loss"], single["grad"] = _step(kind, x, y, False)

            t1 = best_of(run, args.repeat)
            with tempfile.TemporaryDirectory() as out:
                mp.spawn(_worker, args=(w, _port(), kind, b, max(1, args.threads // w), args.repeat, out), nprocs=w, join=True)
                rs = [torch.load(os.path.join(out, f"r{r}.pt")) for r in range(w)]
            tw = max(r["t"] for r in rs)
            tc = max(r["tc"] for r in rs)
            mean = sum(float(r["loss"]) for r in rs) / w
            lerr = abs(mean - float(single["loss"])) / abs(float(single["loss"]))
            n = b // w
            g0 = rs[0]["grad"] / w
            gerr = float((g0 - single["grad"][:n]).abs().max() / single["grad"][:n].abs().max())
            print(f"| {kind} | {b} | {t1:.4f} | {tw:.4f} | {tw / t1:.2f} | {tc:.4f} | {lerr:.1e} | {gerr:.1e} |", flush=True)


if __name__ == "__main__":
    t0 = time.time()
    main()
    print(f"\n({time.time() - t0:.0f} s)")
