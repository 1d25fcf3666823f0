"""reprkit's chunked torch path on a CUDA GPU against plain torch: peak CUDA memory and time.

Cases (forward + backward, float32, inputs requiring grad as in training):

* NT-Xent, CLIP, SupCon at B = 65,536, d = 256 (``--batch``): reprkit's losses on CUDA tensors
  run :mod:`reprkit.losses._chunked` / the chunked reference paths (row chunks, per-row
  log-sum-exps kept, a recomputing backward: memory O(chunk·B + B·d)); plain torch is
  :mod:`reprkit.reference` — the B×B logits a user writes (``F.cross_entropy(z @ z.T / τ, …)``);
* ArcFace with C = 1,000,000 classes (``--classes``), B = 4096 (``--arc-batch``), d = 256:
  reprkit's class-chunked path against the dense B×C logits;
* the pair losses at B = 32,768 (``--pair-batch``), 1,000 classes, d = 256: contrastive, triplet
  (batch_hard; "all" reprkit only: the dense reference enumerates B×M×M triplets), lifted structured,
  multi-similarity, circle — :mod:`reprkit.losses._pairs_chunked` (anchor-row tiles recomputed in
  backward) against :mod:`reprkit.reference.pairs` (the B×B distance matrix kept by autograd).

Peak memory is ``torch.cuda.max_memory_allocated`` above the inputs' own allocation, time the
best of ``--repeat`` synchronised runs after a warm-up. A case that runs out of memory is
reported as OOM. Needs a CUDA GPU; on a machine without one it exits saying so.

    PYTHONPATH=python python benches/bench_gpu.py [--batch 65536] [--classes 1000000] [--pair-batch 32768]
        [--only ntxent clip supcon arcface contrastive triplet_batch_hard triplet_all lifted multi_similarity circle]
"""

from __future__ import annotations

import argparse
import sys
import time


def _cases(args):
    import torch
    import torch.nn.functional as F

    from reprkit import functional as Fn
    from reprkit.reference import margin as RM
    from reprkit.reference import multimodal as RMM
    from reprkit.reference import pairs as RPa
    from reprkit.reference import softmax as RS

    dev, d = args.device, args.dim
    g = torch.Generator(device=dev).manual_seed(0)

    def feats(b):
        return F.normalize(torch.randn(b, d, device=dev, generator=g), dim=1).requires_grad_(True)

    def labels(b, c):
        return torch.randint(0, c, (b,), device=dev, generator=g)

    def seeded(make):  # every implementation gets the same inputs
        def fresh():
            g.manual_seed(0)
            return make()

        return fresh

    b = args.batch
    yield "ntxent", seeded(lambda: (feats(b), feats(b))), {
        "reprkit": lambda a, c: Fn.ntxent_loss(a, c, 0.1),
        "torch": lambda a, c: RS.ntxent_loss(a, c, 0.1),
    }
    yield "clip", seeded(lambda: (feats(b), feats(b))), {
        "reprkit": lambda a, c: Fn.clip_loss(a, c, 1 / 0.07),
        "torch": lambda a, c: RMM.clip_loss(a, c, 1 / 0.07),
    }
    yield "supcon", seeded(lambda: (feats(b), labels(b, 1000))), {
        "reprkit": lambda a, y: Fn.supcon_loss(a, y, 0.1),
        "torch": lambda a, y: RS.supcon_loss(a, y, 0.1),
    }
    ab, c = args.arc_batch, args.classes
    yield "arcface", seeded(lambda: (feats(ab), labels(ab, c), torch.randn(c, d, device=dev, generator=g).requires_grad_(True))), {
        "reprkit": lambda z, y, w: Fn.arcface_loss(z, y, w, 0.5, 64.0),
        "torch": lambda z, y, w: RM.arcface_loss(z, y, w, 0.5, 64.0),
    }
    pb = args.pair_batch
    be = "torch"  # what CUDA tensors run under "auto"; also what a --device cpu smoke run exercises
    pair = seeded(lambda: (feats(pb), labels(pb, 1000)))
    yield "contrastive", pair, {
        "reprkit": lambda z, y: Fn.contrastive_loss(z, y, 0.5, backend=be),
        "torch": lambda z, y: RPa.contrastive_loss(z, y, 0.5),
    }
    yield "triplet_batch_hard", pair, {
        "reprkit": lambda z, y: Fn.triplet_margin_loss(z, y, 0.2, "batch_hard", backend=be),
        "torch": lambda z, y: RPa.triplet_margin_loss(z, y, 0.2, "batch_hard"),
    }
    yield "triplet_all", pair, {"reprkit": lambda z, y: Fn.triplet_margin_loss(z, y, 0.2, "all", backend=be)}
    yield "lifted", pair, {
        "reprkit": lambda z, y: Fn.lifted_structure_loss(z, y, 1.0, backend=be),
        "torch": lambda z, y: RPa.lifted_structure_loss(z, y, 1.0),
    }
    yield "multi_similarity", pair, {
        "reprkit": lambda z, y: Fn.multi_similarity_loss(z, y, backend=be),
        "torch": lambda z, y: RPa.multi_similarity_loss(z, y),
    }
    yield "circle", pair, {
        "reprkit": lambda z, y: Fn.circle_loss(z, y, backend=be),
        "torch": lambda z, y: RPa.circle_loss(z, y),
    }


def _measure(make, fn, repeat, cuda=True):
    import torch

    sync = torch.cuda.synchronize if cuda else (lambda: None)
    if cuda:
        torch.cuda.empty_cache()
    ins = make()
    diff = [t for t in ins if t.is_floating_point() and t.requires_grad]
    sync()
    if cuda:
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()

    def once():
        loss = fn(*ins)
        grads = torch.autograd.grad(loss, diff)
        sync()
        return loss, grads

    try:
        loss, _ = once()
        peak = torch.cuda.max_memory_allocated() - base if cuda else float("nan")
        best = float("inf")
        for _ in range(repeat):
            t0 = time.perf_counter()
            once()
            best = min(best, time.perf_counter() - t0)
        return float(loss.detach()), peak, best
    except torch.cuda.OutOfMemoryError:
        return None, None, None
    finally:
        del ins, diff
        if cuda:
            torch.cuda.empty_cache()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=65536)
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--classes", type=int, default=1_000_000)
    ap.add_argument("--arc-batch", type=int, default=4096)
    ap.add_argument("--pair-batch", type=int, default=32768)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--only", nargs="+", default=None)
    # --device cpu: a smoke run of the script's own code at small sizes (no memory numbers), not a benchmark
    ap.add_argument("--device", default="cuda", help=argparse.SUPPRESS)
    args = ap.parse_args()

    import torch

    cuda = args.device == "cuda"
    if cuda and not torch.cuda.is_available():
        sys.exit("bench_gpu.py: no CUDA GPU here (torch.cuda.is_available() is False): nothing to measure")
    gpu = torch.cuda.get_device_name() if cuda else args.device
    print(f"GPU: {gpu}; torch {torch.__version__}; float32, d = {args.dim}\n")
    print("| loss | size | impl | peak extra CUDA memory (GB) | time (s) | loss |")
    print("|---|---|---|---|---|---|")
    for name, make, impls in _cases(args):
        if args.only and name not in args.only:
            continue
        size = {"arcface": f"B={args.arc_batch}, C={args.classes}", "ntxent": f"B={args.batch}", "clip": f"B={args.batch}",
                "supcon": f"B={args.batch}"}.get(name, f"B={args.pair_batch}")
        for impl, fn in impls.items():
            loss, peak, t = _measure(make, fn, args.repeat, cuda)
            if loss is None:
                print(f"| {name} | {size} | {impl} | OOM | – | – |", flush=True)
            else:
                print(f"| {name} | {size} | {impl} | {peak / 1e9:.2f} | {t:.3f} | {loss:.6f} |", flush=True)


if __name__ == "__main__":
    main()
