"""Parametric t-SNE benchmark: held-out quality, embedding speed, fit time.

Each data set is split 80/20 (fixed seed). For the held-out 20% we report, against their
training-set neighbours in input space:

* recall10 — of each held-out point's 10 nearest training points in input space, the fraction
  that are among its 10 nearest training points in the embedding;
* trust — trustworthiness (k = 10) of the held-out points' embedding (sklearn), on ≤ 2,000 of them;
* knn_acc — 10-NN classification accuracy of the held-out points from the training points'
  embedding and labels.

Methods: (p) reprkit.ParametricTSNE trained on the 80% with its defaults (global P, perplexity 30,
full batch on digits / batches of 1024 edges drawn by p_ij on the mixture, 500 AdamW steps, early
exaggeration 4 in the first quarter, input noise at each row's nearest-neighbour distance) and
``transform`` of the 20%;
(a) reprkit.TSNE fitted on all points (the held-out points were seen: an upper reference);
(b) openTSNE fitted on the 80% and its ``transform`` of the 20% (its defaults, n_jobs=2).
Each of (p), (a), (b) runs once per seed (``--seeds``: random_state of the method; the split is
fixed); with several seeds a mean and a min row per method follow the per-seed rows.
Timings: ``transform`` of 100,000 new points (best of 3), fit times, and TorchDR's TSNE fit (CPU,
its defaults, the training set) when it imports. Every case runs in its own subprocess.

Data: the package's digits (1,797 × 64) and a 30-cluster anisotropic Gaussian mixture
(25,000 × 50, 20,000 for training), as in bench_tsne.py.

    python benches/bench_parametric.py                          # digits + mixture 25k, seed 0
    python benches/bench_parametric.py --seeds 0 1 2 --digits   # digits only, 3 seeds
    python benches/bench_parametric.py --quick                  # digits only, fewer epochs
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "python"))
N_JOBS = 2


def load(name: str):
    if name == "digits":
        from reprkit.data import load_digits

        x, y = load_digits()
        return (x / 16.0).astype(np.float32), y
    n = int(name.split("_")[1])
    rng = np.random.default_rng(0)
    k, d = 30, 50
    centers = rng.normal(0, 4.0, size=(k, d))
    lab = rng.integers(0, k, size=n)
    scales = rng.uniform(0.5, 2.0, size=(k, d))
    x = centers[lab] + rng.normal(size=(n, d)) * scales[lab]
    return x.astype(np.float32), lab


def split(n: int):
    perm = np.random.default_rng(1).permutation(n)
    cut = int(0.8 * n)
    return np.sort(perm[:cut]), np.sort(perm[cut:])


def quality(x_tr, x_te, e_tr, e_te, y_tr, y_te) -> dict:
    from sklearn.manifold import trustworthiness
    from sklearn.neighbors import KNeighborsClassifier, NearestNeighbors

    hd = NearestNeighbors(n_neighbors=10).fit(x_tr).kneighbors(x_te, return_distance=False)
    ld = NearestNeighbors(n_neighbors=10).fit(e_tr).kneighbors(e_te, return_distance=False)
    recall = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(hd, ld)]))
    sub = np.random.default_rng(2).permutation(len(x_te))[:2000]
    trust = float(trustworthiness(x_te[sub], e_te[sub], n_neighbors=10))
    acc = float(KNeighborsClassifier(10).fit(e_tr, y_tr).score(e_te, y_te))
    return {"recall10": recall, "trust": trust, "knn_acc": acc}


def case(method: str, data: str, epochs: str, seed: int = 0) -> dict:
    import torch

    torch.set_num_threads(N_JOBS)
    import reprkit

    x, y = load(data)
    tr, te = split(len(x))
    out: dict = {"method": method, "data": data, "seed": seed}
    if method == "parametric":
        m = reprkit.ParametricTSNE(n_epochs=epochs if epochs == "auto" else int(epochs), random_state=seed, n_jobs=N_JOBS)
        t = time.perf_counter()
        e_tr = m.fit_transform(x[tr])
        out["fit_s"] = time.perf_counter() - t
        out["train_cv_acc"] = train_cv_acc(e_tr, y[tr])
        e_te = m.transform(x[te])
        big = x[te][np.random.default_rng(3).integers(0, len(te), 100_000)]
        big = big + np.random.default_rng(4).normal(0, 0.01, big.shape).astype(np.float32)
        m.transform(big[:1000])
        ts = []
        for _ in range(3):
            t = time.perf_counter()
            m.transform(big)
            ts.append(time.perf_counter() - t)
        out["embed_100k_s"] = min(ts)
    elif method == "tsne_all":
        t = time.perf_counter()
        e = reprkit.TSNE(perplexity=30, random_state=seed, n_jobs=N_JOBS).fit_transform(x.astype(np.float64))
        out["fit_s"] = time.perf_counter() - t
        e_tr, e_te = e[tr], e[te]
        out["train_cv_acc"] = train_cv_acc(e_tr, y[tr])
    elif method == "opentsne":
        import openTSNE

        t = time.perf_counter()
        emb = openTSNE.TSNE(perplexity=30, n_jobs=N_JOBS, random_state=seed).fit(x[tr].astype(np.float64))
        out["fit_s"] = time.perf_counter() - t
        t = time.perf_counter()
        e_te = np.asarray(emb.transform(x[te].astype(np.float64)))
        out["transform_heldout_s"] = time.perf_counter() - t
        e_tr = np.asarray(emb)
        out["train_cv_acc"] = train_cv_acc(e_tr, y[tr])
    elif method == "torchdr":
        import torchdr

        t = time.perf_counter()
        torchdr.TSNE(perplexity=30, device="cpu", random_state=seed).fit_transform(torch.from_numpy(x[tr]))
        out["fit_s"] = time.perf_counter() - t
        return out
    else:
        raise ValueError(method)
    out.update(quality(x[tr], x[te], np.asarray(e_tr, np.float64), np.asarray(e_te, np.float64), y[tr], y[te]))
    return out


def train_cv_acc(e_tr, y_tr) -> float:
    """5-fold 10-NN accuracy inside the training embedding: under-fitting vs generalisation."""
    from sklearn.model_selection import cross_val_score
    from sklearn.neighbors import KNeighborsClassifier

    return float(cross_val_score(KNeighborsClassifier(10), np.asarray(e_tr, np.float64), y_tr, cv=5).mean())


def run_case(method: str, data: str, epochs: str, seed: int = 0) -> dict:
    cmd = [sys.executable, __file__, "--case", method, data, str(epochs), str(seed)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        return {"method": method, "data": data, "seed": seed,
                "error": r.stderr.strip().splitlines()[-1] if r.stderr else "failed"}
    return json.loads(r.stdout.strip().splitlines()[-1])


def fmt(v):
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--case", nargs="+", help="METHOD DATA EPOCHS [SEED]: one case in this process")
    ap.add_argument("--quick", action="store_true", help="digits only, 100 steps")
    ap.add_argument("--digits", action="store_true", help="digits only, default schedule")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0], help="random_state of each method (default: 0)")
    ap.add_argument("--no-torchdr", action="store_true")
    a = ap.parse_args()
    if a.case:
        print(json.dumps(case(a.case[0], a.case[1], a.case[2], int(a.case[3]) if len(a.case) > 3 else 0)))
        return
    # The estimator's default schedule (500 steps); --quick: 100 full-batch steps on digits.
    only_digits = a.quick or a.digits
    sets = [("digits", "100" if a.quick else "auto")] + ([] if only_digits else [("mixture_25000", "auto")])
    cols = ["data", "method", "seed", "knn_acc", "train_cv_acc", "recall10", "trust", "fit_s", "transform_heldout_s",
            "embed_100k_s", "error"]
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for data, ep in sets:
        for method in ("parametric", "tsne_all", "opentsne"):
            rows = []
            for seed in a.seeds:
                r = run_case(method, data, ep, seed)
                rows.append(r)
                print("| " + " | ".join(fmt(r.get(c, "")) for c in cols) + " |", flush=True)
            ok = [r for r in rows if "error" not in r]
            if len(ok) > 1:
                for agg, f in (("mean", np.mean), ("min", np.min)):
                    vals = {c: float(f([r[c] for r in ok])) for c in ("knn_acc", "train_cv_acc", "recall10", "trust")}
                    print("| " + " | ".join(fmt({**vals, "data": data, "method": method, "seed": agg}.get(c, ""))
                                            for c in cols) + " |", flush=True)
        if not a.no_torchdr:
            r = run_case("torchdr", data, ep, a.seeds[0])
            print("| " + " | ".join(fmt(r.get(c, "")) for c in cols) + " |", flush=True)


if __name__ == "__main__":
    main()
