"""A short BYOL (or SimSiam) training run on scikit-learn's 8×8 digits (``reprkit.data.load_digits``):
reprkit's ``NegativeCosineLoss`` + ``reprkit.ema_update`` against lightly's ``NegativeCosineSimilarity`` +
``update_momentum``, same seeds, same model, same augmentations; the score is the linear-probe accuracy
(logistic regression on the frozen encoder's features fit on 10 labelled images per class, tested on the
other 1,697) after a fixed number of steps.

Model: encoder MLP 64→256→128 (BatchNorm, ReLU), projector 128→256→64, predictor 64→128→64; two views per
image by a random ±1-pixel shift, pixel dropout (p = 0.2) and Gaussian noise (σ = 1 on the 0–16 scale).
BYOL: the target (encoder + projector) is an EMA of the online one, momentum 0.99; SimSiam: the target
is the online network itself behind the stop-gradient. Adam, lr 1e-3, batch 256.

    OMP_WAIT_POLICY=PASSIVE PYTHONPATH=python python benches/bench_ssl_byol.py       # BYOL, 200 steps, seeds 0 1 2
    OMP_WAIT_POLICY=PASSIVE PYTHONPATH=python python benches/bench_ssl_byol.py --method simsiam

Baselines printed alongside: the probe on the raw pixels and on the untrained (random) encoder.
"""

from __future__ import annotations

import argparse
import copy
import time

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

import reprkit
from reprkit.data import load_digits


def mlp(i: int, h: int, o: int, last_bn: bool = False) -> torch.nn.Module:
    layers = [torch.nn.Linear(i, h), torch.nn.BatchNorm1d(h), torch.nn.ReLU(), torch.nn.Linear(h, o)]
    if last_bn:
        layers.append(torch.nn.BatchNorm1d(o))
    return torch.nn.Sequential(*layers)


def augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Random ±1-pixel shift (zero fill), pixel dropout and Gaussian noise on (n, 64) images in 0–16."""
    n = x.shape[0]
    img = x.reshape(n, 1, 8, 8)
    padded = torch.nn.functional.pad(img, (1, 1, 1, 1))
    dx = torch.randint(0, 3, (n,), generator=g)
    dy = torch.randint(0, 3, (n,), generator=g)
    rows = (dy[:, None] + torch.arange(8)[None, :])  # (n, 8)
    cols = (dx[:, None] + torch.arange(8)[None, :])
    out = padded[torch.arange(n)[:, None, None], 0, rows[:, :, None], cols[:, None, :]]
    keep = (torch.rand(n, 8, 8, generator=g) > 0.2).float()
    out = out * keep + torch.randn(n, 8, 8, generator=g)
    return out.reshape(n, 64) / 16.0


def probe(features: np.ndarray, y: np.ndarray, seed: int, per_class: int = 10) -> float:
    """Accuracy on the rest of a logistic regression fit on ``per_class`` labelled images per class (0: 70/30 split)."""
    if per_class:
        rng = np.random.default_rng(seed)
        tr = np.concatenate([rng.permutation(np.flatnonzero(y == c))[:per_class] for c in np.unique(y)])
        te = np.setdiff1d(np.arange(len(y)), tr)
        xtr, xte, ytr, yte = features[tr], features[te], y[tr], y[te]
    else:
        xtr, xte, ytr, yte = train_test_split(features, y, test_size=0.3, random_state=seed, stratify=y)
    sc = StandardScaler().fit(xtr)
    clf = LogisticRegression(max_iter=2000).fit(sc.transform(xtr), ytr)
    return float(clf.score(sc.transform(xte), yte))


def train(impl: str, method: str, seed: int, steps: int, batch: int, x: torch.Tensor) -> torch.nn.Module:
    torch.manual_seed(seed)
    encoder = mlp(64, 256, 128)
    projector = mlp(128, 256, 64)
    predictor = mlp(64, 128, 64)
    online = torch.nn.Sequential(encoder, projector)
    target = copy.deepcopy(online) if method == "byol" else online
    for p in (target.parameters() if method == "byol" else []):
        p.requires_grad_(False)
    opt = torch.optim.Adam(list(online.parameters()) + list(predictor.parameters()), lr=1e-3)
    if impl == "reprkit":
        loss_fn = reprkit.losses.NegativeCosineLoss()

        def objective(p1, p2, z1, z2):
            return loss_fn(p1, p2, z1, z2)  # ½D(p1, sg z2) + ½D(p2, sg z1)

        def ema():
            reprkit.ema_update(target, online, 0.99)
    else:
        from lightly.loss import NegativeCosineSimilarity
        from lightly.models.utils import update_momentum

        crit = NegativeCosineSimilarity()

        def objective(p1, p2, z1, z2):
            return 0.5 * crit(p1, z2.detach()) + 0.5 * crit(p2, z1.detach())

        def ema():
            update_momentum(online, target, 0.99)

    g = torch.Generator().manual_seed(1000 + seed)
    n = x.shape[0]
    for _ in range(steps):
        idx = torch.randint(0, n, (batch,), generator=g)
        v1, v2 = augment(x[idx], g), augment(x[idx], g)
        p1, p2 = predictor(online(v1)), predictor(online(v2))
        if method == "byol":
            with torch.no_grad():
                z1, z2 = target(v1), target(v2)
        else:
            z1, z2 = online(v1), online(v2)
        loss = objective(p1, p2, z1, z2)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if method == "byol":
            ema()
    return encoder


def features(encoder: torch.nn.Module, x: torch.Tensor) -> np.ndarray:
    encoder.eval()
    with torch.no_grad():
        return encoder(x / 16.0).numpy()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--method", choices=("byol", "simsiam"), default="byol")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2])
    ap.add_argument("--per-class", type=int, default=10, help="labelled images per class for the probe (0: 70/30 split)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    xn, yn = load_digits()
    x = torch.as_tensor(np.asarray(xn, dtype=np.float32))
    y = np.asarray(yn)
    print(f"# {args.method}, {args.steps} steps, batch {args.batch}, digits {tuple(x.shape)}; seeds {args.seeds}; "
          f"probe on {args.per_class or '70%'} labelled per class")
    raw = probe(x.numpy(), y, 0, args.per_class)
    torch.manual_seed(0)
    rand = probe(features(mlp(64, 256, 128), x), y, 0, args.per_class)
    rows = {"reprkit": [], "lightly": []}
    for seed in args.seeds:
        for impl in rows:
            t0 = time.perf_counter()
            enc = train(impl, args.method, seed, args.steps, args.batch, x)
            acc = probe(features(enc, x), y, seed, args.per_class)
            rows[impl].append(acc)
            print(f"seed {seed} {impl:8s} probe accuracy {acc:.4f} ({time.perf_counter() - t0:.1f} s)", flush=True)
    print(f"\n| loss | linear-probe accuracy, seeds {' '.join(map(str, args.seeds))} | mean ± sd |")
    print("|---|---|---:|")
    for impl, accs in rows.items():
        name = "reprkit NegativeCosineLoss + ema_update" if impl == "reprkit" else "lightly NegativeCosineSimilarity + update_momentum"
        print(f"| {name} | {' / '.join(f'{a:.4f}' for a in accs)} | {np.mean(accs):.4f} ± {np.std(accs):.4f} |")
    print(f"| raw pixels (no training; split of seed 0) | {raw:.4f} | |")
    print(f"| random encoder (no training; split of seed 0) | {rand:.4f} | |")


if __name__ == "__main__":
    main()
