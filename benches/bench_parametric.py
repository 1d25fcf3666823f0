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
exaggeration in the first quarter) and ``transform`` of the 20%;
(a) reprkit.TSNE fitted on all points (the held-out points were seen: an upper reference);
(b) openTSNE fitted on the 80% and its ``transform`` of the 20% (its defaults, n_jobs=2).
Timings: ``transform`` of 100,000 new points (best of 3), fit times, and TorchDR's TSNE fit (CPU,
its defaults, the training set) when it imports. Every case runs in its own subprocess.

Data: the package's digits (1,797 × 64) and a 30-cluster anisotropic Gaussian mixture
(25,000 × 50, 20,000 for training), as in bench_tsne.py.

    python benches/bench_parametric.py            # digits + mixture 25k
    python benches/bench_parametric.py --quick    # digits only, fewer epochs
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


def case(method: str, data: str, epochs: str) -> dict:
    import torch

    torch.set_num_threads(N_JOBS)
    import reprkit

    x, y = load(data)
    tr, te = split(len(x))
    out: dict = {"method": method, "data": data}
    if method == "parametric":
        m = reprkit.ParametricTSNE(n_epochs=epochs if epochs == "auto" else int(epochs), random_state=0, n_jobs=N_JOBS)
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
        e = reprkit.TSNE(perplexity=30, random_state=0, n_jobs=N_JOBS).fit_transform(x.astype(np.float64))
        out["fit_s"] = time.perf_counter() - t
        e_tr, e_te = e[tr], e[te]
        out["train_cv_acc"] = train_cv_acc(e_tr, y[tr])
    elif method == "opentsne":
        import openTSNE

        t = time.perf_counter()
        emb = openTSNE.TSNE(perplexity=30, n_jobs=N_JOBS, random_state=0).fit(x[tr].astype(np.float64))
        out["fit_s"] = time.perf_counter() - t
        t = time.perf_counter()
        e_te = np.asarray(emb.transform(x[te].astype(np.float64)))
        out["transform_heldout_s"] = time.perf_counter() - t
        e_tr = np.asarray(emb)
        out["train_cv_acc"] = train_cv_acc(e_tr, y[tr])
    elif method == "torchdr":
        import torchdr

        t = time.perf_counter()
        torchdr.TSNE(perplexity=30, device="cpu", random_state=0).fit_transform(torch.from_numpy(x[tr]))
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


def run_case(method: str, data: str, epochs: str) -> dict:
    cmd = [sys.executable, __file__, "--case", method, data, str(epochs)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        return {"method": method, "data": data, "error": r.stderr.strip().splitlines()[-1] if r.stderr else "failed"}
    return json.loads(r.stdout.strip().splitlines()[-1])


def fmt(v):
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--case", nargs=3)
    ap.add_argument("--quick", action="store_true")
    a = ap.parse_args()
    if a.case:
        print(json.dumps(case(a.case[0], a.case[1], a.case[2])))
        return
    # The estimator's default schedule (500 steps); --quick: 100 full-batch steps on digits.
    sets = [("digits", "100" if a.quick else "auto")] + ([] if a.quick else [("mixture_25000", "auto")])
    cols = ["data", "method", "knn_acc", "train_cv_acc", "recall10", "trust", "fit_s", "transform_heldout_s", "embed_100k_s", "error"]
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for data, ep in sets:
        for method in ("parametric", "tsne_all", "opentsne", "torchdr"):
            r = run_case(method, data, ep)
            print("| " + " | ".join(fmt(r.get(c, "")) for c in cols) + " |", flush=True)


if __name__ == "__main__":
    main()
