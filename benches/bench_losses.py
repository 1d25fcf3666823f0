"""Forward+backward time and peak extra memory of reprkit's losses against the
plain-torch code a user would write and against pytorch-metric-learning (PML,
with ``normalize_embeddings=False`` wherever it has a distance, so that it
computes the same formula).

Every (loss, implementation, batch size) runs in its own subprocess; after a
warm-up call the RSS high-water mark is reset (/proc/self/clear_refs), so the
peak extra memory is VmHWM − VmRSS over the measured fwd+bwd calls — torch's
allocations included. Cases whose estimated
memory exceeds ~8 GB are skipped and marked in the table. Timings are the
best of several runs (one run at B >= 8192). B is the number of embeddings in
the batch (N-pair / NT-Xent / InfoNCE: B/2 pairs); d = 128, float32, labels
with 4 samples per class.

    PYTHONPATH=python python benches/bench_losses.py [--sizes 1024 4096] [--losses lifted ntxent]
    PYTHONPATH=python python benches/bench_losses.py --losses triplet_batch_hard --sizes 1024 --duplicates 0 50 100

Each side runs at its own best setting (``--omp-wait-policy best``, the default): the peers
(plain torch, PML) at the library default, which is their best — OMP_WAIT_POLICY=PASSIVE slows
them (PML's batch-hard at B=256: 1.8 → 4.9 ms) — and reprkit both with the default and with
OMP_WAIT_POLICY=PASSIVE, keeping its faster run (the column "reprkit OMP" says which).
``--omp-wait-policy PASSIVE`` (or ``''``) runs every side with that one setting.

``--duplicates 0 50 100`` adds, per loss, the cases where that percentage of the rows are one
repeated row (collapsed embeddings), named ``loss@dupP``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _util import OMP_HELP, PeakMemory, run_case  # noqa: E402

SIZES = (1024, 4096, 8192, 16384)
D = 128
MEM_LIMIT = 8e9
LOSSES = ("contrastive", "triplet_batch_hard", "triplet_batch_all", "lifted", "npair", "ntxent", "infonce",
          "multi_similarity", "circle", "ms_miner_and_loss", "mine_triplet_semihard", "mine_pair_margin",
          "mine_multi_similarity", "mine_distance_weighted")
# Miner rows time the mining call alone (indices, no backward); the others forward + backward.
IMPLS = ("reprkit", "torch", "pml")

# Rough peak bytes of the peers, to skip what cannot run on a 24 GB machine.
ESTIMATE = {
    ("contrastive", "torch"): lambda b: 10 * 4 * b * b,
    ("triplet_batch_hard", "torch"): lambda b: 8 * 4 * b * b,
    ("triplet_batch_hard", "pml"): lambda b: 8 * 4 * b * b,
    ("triplet_batch_all", "torch"): lambda b: 3 * 4 * b**3,  # the (B, B, B) hinge tensor
    ("triplet_batch_all", "pml"): lambda b: 60 * 3 * b * b,  # ~3(B−4) triplets per anchor, ~60 B each
    ("lifted", "torch"): lambda b: 10 * 4 * b * b,
    ("npair", "torch"): lambda b: 6 * 4 * (b // 2) ** 2,
    ("npair", "pml"): lambda b: 6 * 4 * (b // 2) ** 2,
    ("ntxent", "torch"): lambda b: 6 * 4 * b * b,
    ("infonce", "torch"): lambda b: 6 * 4 * (b // 2) ** 2,
    # PML's TripletMarginMiner enumerates every triplet first (B³ bools + int64 indices).
    ("mine_triplet_semihard", "pml"): lambda b: b**3 + 8 * 3 * 3 * b * b,
    ("multi_similarity", "pml"): lambda b: 12 * 4 * b * b,
    ("circle", "pml"): lambda b: 14 * 4 * b * b,
    ("ms_miner_and_loss", "pml"): lambda b: 20 * 4 * b * b,
    ("mine_pair_margin", "pml"): lambda b: 8 * 4 * b * b,
    ("mine_multi_similarity", "pml"): lambda b: 12 * 4 * b * b,
    ("mine_distance_weighted", "pml"): lambda b: 10 * 4 * b * b,
}
NEW = ("multi_similarity", "circle", "ms_miner_and_loss", "mine_triplet_semihard", "mine_pair_margin",
       "mine_multi_similarity", "mine_distance_weighted")
NO_PEER = {
    ("lifted", "pml"): "its |P|×|N| mask asks for 541 GB at B = 1024 (issue 3)",
    ("ntxent", "pml"): "its |P|×|N| matrix takes 17 GB at B = 1024 (issue 3)",
    ("contrastive", "pml"): "PML's ContrastiveLoss is not squared (different formula)",
    ("infonce", "pml"): "no PML InfoNCE with the same inputs",
}
for _name in NEW:
    NO_PEER[(_name, "torch")] = "PML is the plain-torch implementation of these"


def make_case(loss: str, impl: str, b: int):
    """Returns (inputs requiring grad, fn(*inputs) -> scalar loss)."""
    import torch
    import torch.nn.functional as F

    loss, _, dup = loss.partition("@dup")
    g = torch.Generator().manual_seed(0)
    x = torch.randn(b, D, generator=g) / D**0.5
    x[: int(b * int(dup or 0) / 100)] = x[0]  # duplicate rows: the first P% of the batch is one point
    x.requires_grad_(True)
    y = torch.arange(b) // 4
    h = b // 2
    tau = 0.1
    if loss.startswith("mine_"):
        x = x.detach()
    if impl == "reprkit":
        from reprkit import functional as Fn
        from reprkit import losses as RL
        from reprkit import miners as RM

        if loss in NEW:
            ms_fn = RL.MultiSimilarityLoss()
            new = {
                "multi_similarity": lambda t: ms_fn(t, y),
                "circle": lambda t: RL.CircleLoss()(t, y),
                "ms_miner_and_loss": lambda t: ms_fn(t, y, RM.multi_similarity(t, y, 0.1)),
                "mine_triplet_semihard": lambda t: RM.triplet_margin(t, y, 0.2, "semihard"),
                "mine_pair_margin": lambda t: RM.pair_margin(t, y, 0.2, 0.8),
                "mine_multi_similarity": lambda t: RM.multi_similarity(t, y, 0.1),
                "mine_distance_weighted": lambda t: RM.distance_weighted(t, y, random_state=0),
            }
            return [x], new[loss]

        fns = {
            "contrastive": lambda t: Fn.contrastive_loss(t, y, 1.0),
            "triplet_batch_hard": lambda t: Fn.triplet_margin_loss(t, y, 0.2, "batch_hard", squared=False),
            "triplet_batch_all": lambda t: Fn.triplet_margin_loss(t, y, 0.2, "batch_all", squared=False),
            "lifted": lambda t: Fn.lifted_structure_loss(t, y, 1.0),
            "npair": lambda t: Fn.npair_loss(t[:h], t[h:]),
            "ntxent": lambda t: Fn.ntxent_loss(t[:h], t[h:], tau),
            "infonce": lambda t: Fn.infonce_loss(t[:h], t[h:], None, tau),
        }
        return [x], fns[loss]
    if impl == "torch":

        def masks():
            same = y[:, None] == y[None, :]
            eye = torch.eye(b, dtype=torch.bool)
            return same & ~eye, ~same

        def contrastive(t):
            dist = torch.cdist(t, t)
            same = y[:, None] == y[None, :]
            iu = torch.triu(torch.ones_like(same), 1)
            return (torch.where(same, dist**2, F.relu(1.0 - dist) ** 2) * iu).sum() / iu.sum()

        def batch_hard(t):
            dist = torch.cdist(t, t)
            pos, neg = masks()
            dp = dist.masked_fill(~pos, float("-inf")).max(1).values
            dn = dist.masked_fill(~neg, float("inf")).min(1).values
            ok = pos.any(1) & neg.any(1)
            return F.relu(dp - dn + 0.2)[ok].mean()

        def batch_all(t):
            dist = torch.cdist(t, t)
            pos, neg = masks()
            z = F.relu(dist[:, :, None] - dist[:, None, :] + 0.2) * (pos[:, :, None] & neg[:, None, :])
            return z.sum() / (z > 0).sum()

        def lifted(t):
            dist = torch.cdist(t, t)
            pos, neg = masks()
            lse = torch.logsumexp((1.0 - dist).masked_fill(~neg, float("-inf")), 1)
            j = dist + torch.logaddexp(lse[:, None], lse[None, :])
            pu = torch.triu(pos, 1)
            return (F.relu(j[pu]) ** 2).sum() / (2 * pu.sum())

        def ntxent(t):
            z = F.normalize(t, dim=1)
            s = (z @ z.T / tau).fill_diagonal_(float("-inf"))
            idx = torch.arange(h)
            return F.cross_entropy(s, torch.cat([idx + h, idx]))

        fns = {
            "contrastive": contrastive,
            "triplet_batch_hard": batch_hard,
            "triplet_batch_all": batch_all,
            "lifted": lifted,
            "npair": lambda t: F.cross_entropy(t[:h] @ t[h:].T, torch.arange(h)),
            "ntxent": ntxent,
            "infonce": lambda t: F.cross_entropy(F.normalize(t[:h], dim=1) @ F.normalize(t[h:], dim=1).T / tau, torch.arange(h)),
        }
        return [x], fns[loss]
    from pytorch_metric_learning import distances, losses, miners, reducers

    lp = distances.LpDistance(normalize_embeddings=False)
    if loss in NEW:
        ms_loss = losses.MultiSimilarityLoss()
        ms_miner = miners.MultiSimilarityMiner(0.1)
        new = {
            "multi_similarity": lambda t: ms_loss(t, y),  # cosine similarity of normalised rows, as reprkit
            "circle": lambda t: losses.CircleLoss()(t, y),
            "ms_miner_and_loss": lambda t: ms_loss(t, y, ms_miner(t, y)),
            "mine_triplet_semihard": lambda t: miners.TripletMarginMiner(0.2, type_of_triplets="semihard", distance=lp)(t, y),
            "mine_pair_margin": lambda t: miners.PairMarginMiner(0.2, 0.8, distance=lp)(t, y),
            "mine_multi_similarity": lambda t: ms_miner(t, y),
            # PML's weights are normalised by the batch max; both sample one negative per positive pair
            "mine_distance_weighted": lambda t: miners.DistanceWeightedMiner()(t, y),
        }
        return [x], new[loss]
    pair_labels = torch.cat([torch.arange(h), torch.arange(h)])
    if loss == "triplet_batch_hard":
        miner = miners.BatchHardMiner(distance=lp)
        fn = losses.TripletMarginLoss(margin=0.2, distance=lp, reducer=reducers.MeanReducer())
        return [x], lambda t: fn(t, y, miner(t, y))
    if loss == "triplet_batch_all":
        fn = losses.TripletMarginLoss(margin=0.2, distance=lp)  # mean over triplets with a positive loss
        return [x], lambda t: fn(t, y)
    if loss == "lifted":
        fn = losses.LiftedStructureLoss(neg_margin=1.0, pos_margin=0.0, distance=lp)
        return [x], lambda t: fn(t, y)
    if loss == "npair":
        fn = losses.NPairsLoss(distance=distances.DotProductSimilarity(normalize_embeddings=False))
        return [x], lambda t: fn(t, pair_labels)
    if loss == "ntxent":
        fn = losses.NTXentLoss(temperature=tau)
        return [x], lambda t: fn(t, pair_labels)
    raise ValueError(loss)


def run_one(loss: str, impl: str, b: int) -> dict:
    import torch

    inputs, fn = make_case(loss, impl, b)
    mining = loss.startswith("mine_")

    def call(fn=fn, inputs=inputs):
        out = fn(*inputs)
        if mining:  # indices: the value is the number of tuples
            return float(sum(t.numel() for t in out))
        out.backward()
        return float(out.detach())

    # Warm-up outside the measurement (thread pools, allocator, first-call imports: a torch.library
    # operator's first call alone imports ~1 s of modules); the peak is then reset so that the
    # reported memory is what one call adds. B >= 8192: a single measured call after a warm-up call
    # of the same loss at B = 256.
    if b <= 4096:
        call()
    else:
        small, sfn = make_case(loss, impl, 256)
        call(sfn, small)
        del small, sfn
    for t in inputs:
        t.grad = None
    peak = PeakMemory().start()
    reps = 3 if b <= 4096 else 1
    best, value = float("inf"), float("nan")
    for _ in range(reps):
        for t in inputs:
            t.grad = None
        t0 = time.perf_counter()
        value = call()
        best = min(best, time.perf_counter() - t0)
    return {"time": best, "mem": peak.stop(), "loss": value, "threads": torch.get_num_threads()}


def fmt_t(r):
    return f"{r['time']:.3f}" if "time" in r else "—"


def fmt_m(r):
    return f"{r['mem'] / 2**20:.0f}" if "time" in r else "—"


def table(rows: list) -> None:
    """The markdown table of (loss, B, results) rows."""
    print("\n| loss | B | reprkit s | reprkit MB | reprkit OMP | torch s | torch MB | torch/reprkit | PML s | PML MB | PML/reprkit | max abs Δloss |")
    print("|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    for loss, b, res in rows:
        r = res["reprkit"]
        cells = [loss, str(b), fmt_t(r), fmt_m(r), r.get("omp", "")]
        diffs = []
        for peer in ("torch", "pml"):
            q = res[peer]
            if "time" in q and "time" in r:
                cells += [fmt_t(q), fmt_m(q), f"{q['time'] / r['time']:.1f}×"]
                diffs.append(abs(q["loss"] - r["loss"]))
            else:
                cells += [f"skipped: {q.get('skip')}", "", ""]
        cells.append(f"{max(diffs):.1e}" if diffs else "")
        print("| " + " | ".join(cells) + " |")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--one", nargs=3, metavar=("LOSS", "IMPL", "B"))
    ap.add_argument("--sizes", nargs="*", type=int, default=list(SIZES))
    ap.add_argument("--losses", nargs="*", default=list(LOSSES))
    ap.add_argument("--timeout", type=int, default=900)
    ap.add_argument("--omp-wait-policy", default="best", help=OMP_HELP)
    ap.add_argument("--from-log", nargs="*", help="print the table of the ROW lines in these output files")
    ap.add_argument("--duplicates", nargs="*", type=int, default=[],
                    help="percentages of duplicate rows to add as cases (loss@dupP)")
    args = ap.parse_args()
    if args.from_log:
        # the table of the ROW lines of one or more earlier runs' output (e.g. an interrupted run)
        rows = [json.loads(line[4:]) for f in args.from_log for line in open(f) if line.startswith("ROW ")]
        table(rows)
        return
    if args.one:
        loss, impl, b = args.one
        print(json.dumps(run_one(loss, impl, int(b))))
        return
    print(f"# load average at start: {os.getloadavg()}; OMP_WAIT_POLICY={args.omp_wait_policy or '(default)'}", flush=True)
    rows = []
    cases = [lo if p == 0 else f"{lo}@dup{p}" for lo in args.losses for p in (args.duplicates or [0])]
    for loss in cases:
        base = loss.partition("@")[0]
        for b in args.sizes:
            res = {}
            for impl in IMPLS:
                if (base, impl) in NO_PEER:
                    res[impl] = {"skip": NO_PEER[(base, impl)]}
                    continue
                est = ESTIMATE.get((base, impl))
                if est is not None and est(b) > MEM_LIMIT:
                    res[impl] = {"skip": f"needs ~{est(b) / 1e9:.0f} GB"}
                    continue
                cmd = [sys.executable, __file__, "--one", loss, impl, str(b)]
                res[impl] = run_case(cmd, impl == "reprkit", args.omp_wait_policy, args.timeout)
            rows.append((loss, b, res))
            print("ROW " + json.dumps([loss, b, res]), flush=True)
            r = res["reprkit"]
            line = f"{loss:20s} B={b:6d} reprkit {fmt_t(r)} s {fmt_m(r)} MB"
            for peer in ("torch", "pml"):
                q = res[peer]
                if "time" in q and "time" in r:
                    line += f" | {peer} {fmt_t(q)} s {fmt_m(q)} MB x{q['time'] / r['time']:.1f} dloss={abs(q['loss'] - r['loss']):.1e}"
                else:
                    line += f" | {peer} {q.get('skip')}"
            print(line, flush=True)
    table(rows)
    print(f"\n# load average at end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
