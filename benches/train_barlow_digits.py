"""A short Barlow Twins training run on the 8×8 digits (reprkit.data.load_digits), reprkit's loss against
lightly's with the same seeds, and the linear-probe accuracy of the frozen backbone after a fixed number
of steps.

Setup: pixels / 16; a fixed split (1197 train, 600 test); two augmented views per image (random shift
by up to one pixel, random erasing of 15 % of the pixels, Gaussian noise σ = 0.1); backbone
64→256→128 (Linear, BatchNorm, ReLU), projector 128→256→256; Adam (lr 1e-3), batch 256, ``--steps``
steps; the same λ = 0.0051 for both losses. The probe is scikit-learn's LogisticRegression on the
standardised 128-d backbone features of the train split, accuracy on the test split. Baselines: the
same probe on an untrained backbone and on raw pixels.

    OMP_WAIT_POLICY=PASSIVE PYTHONPATH=python python benches/train_barlow_digits.py [--steps 300] [--seeds 0 1 2] [--threads 1]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

LAMBDA = 0.0051


def split():
    from reprkit.data import load_digits

    x, y = load_digits()
    perm = np.random.default_rng(12345).permutation(len(x))
    x, y = torch.from_numpy(x[perm] / 16.0).float(), torch.from_numpy(y[perm])
    return (x[:1197], y[:1197]), (x[1197:], y[1197:])


def augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    n = x.shape[0]
    img = x.view(n, 1, 8, 8)
    pad = torch.nn.functional.pad(img, (1, 1, 1, 1))
    dx, dy = torch.randint(0, 3, (n,), generator=g), torch.randint(0, 3, (n,), generator=g)
    rows = (dy[:, None] + torch.arange(8)[None, :])[:, :, None].expand(n, 8, 8)
    cols = (dx[:, None] + torch.arange(8)[None, :])[:, None, :].expand(n, 8, 8)
    shifted = pad[torch.arange(n)[:, None, None], 0, rows, cols]
    keep = (torch.rand(n, 8, 8, generator=g) > 0.15).float()
    out = shifted * keep + 0.1 * torch.randn(n, 8, 8, generator=g)
    return out.reshape(n, 64)


def nets(seed: int):
    torch.manual_seed(seed)
    nn = torch.nn
    backbone = nn.Sequential(nn.Linear(64, 256), nn.BatchNorm1d(256), nn.ReLU(), nn.Linear(256, 128))
    projector = nn.Sequential(nn.Linear(128, 256), nn.BatchNorm1d(256), nn.ReLU(), nn.Linear(256, 256))
    return backbone, projector


def probe(backbone, train, test) -> float:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    backbone.eval()
    with torch.no_grad():
        ftr, fte = backbone(train[0]).numpy(), backbone(test[0]).numpy()
    backbone.train()
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    clf.fit(ftr, train[1].numpy())
    return float(clf.score(fte, test[1].numpy()))


def train(impl: str, seed: int, steps: int, train_set, test_set) -> dict:
    if impl == "reprkit":
        from reprkit.losses import BarlowTwinsLoss

        loss_fn = BarlowTwinsLoss(lambda_=LAMBDA)
    else:
        from lightly.loss import BarlowTwinsLoss as LightlyBT

        loss_fn = LightlyBT(lambda_param=LAMBDA)
    backbone, projector = nets(seed)
    opt = torch.optim.Adam(list(backbone.parameters()) + list(projector.parameters()), lr=1e-3)
    g = torch.Generator().manual_seed(1000 + seed)
    x = train_set[0]
    t0 = time.perf_counter()
    last = float("nan")
    for _ in range(steps):
        idx = torch.randperm(x.shape[0], generator=g)[:256]
        xb = x[idx]
        v1, v2 = augment(xb, g), augment(xb, g)
        loss = loss_fn(projector(backbone(v1)), projector(backbone(v2)))
        opt.zero_grad()
        loss.backward()
        opt.step()
        last = float(loss.detach())
    secs = time.perf_counter() - t0
    return {"impl": impl, "seed": seed, "final_loss": last, "probe_acc": probe(backbone, train_set, test_set), "train_s": secs}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2])
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    tr, te = split()
    from sklearn.linear_model import LogisticRegression

    raw = LogisticRegression(max_iter=3000).fit(tr[0].numpy(), tr[1].numpy()).score(te[0].numpy(), te[1].numpy())
    untrained = [probe(nets(s)[0], tr, te) for s in args.seeds]
    print(f"# baselines: raw pixels {raw:.4f}; untrained backbone {np.mean(untrained):.4f} ± {np.std(untrained):.4f}")
    res = {"reprkit": [], "lightly": []}
    for s in args.seeds:
        for impl in res:
            r = train(impl, s, args.steps, tr, te)
            res[impl].append(r)
            print(r, flush=True)
    print(f"\n| loss | steps | seeds | probe accuracy (mean ± sd) | final loss (mean) | train s (mean) |")
    print("|---|---:|---|---:|---:|---:|")
    for impl, rs in res.items():
        acc = [r["probe_acc"] for r in rs]
        print(f"| {impl} BarlowTwinsLoss(λ={LAMBDA}) | {args.steps} | {args.seeds} | {np.mean(acc):.4f} ± {np.std(acc):.4f} | "
              f"{np.mean([r['final_loss'] for r in rs]):.3f} | {np.mean([r['train_s'] for r in rs]):.1f} |")
    print(f"| untrained backbone | 0 | {args.seeds} | {np.mean(untrained):.4f} ± {np.std(untrained):.4f} | | |")
    print(f"| raw pixels | | | {raw:.4f} | | |")


if __name__ == "__main__":
    main()
