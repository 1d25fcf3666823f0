"""``reprkit eval EMB [--labels L] [--test-emb T --test-labels TL] [--json]``.

Prints the metrics that apply to the embeddings: with labels, retrieval
(precision@1, R-precision, MAP@R, MRR), kNN accuracy, a linear probe and
k-means NMI/AMI; always uniformity and RankMe. With a test split, queries
and the probe's test set come from it and the training embeddings are the
reference; without one, retrieval and kNN are leave-one-out and the probe
uses a seeded 80/20 split. ``reprkit eval --demo`` runs on the 8×8 digits
shipped with reprkit.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any, Callable, Dict, List, Optional

import numpy as np

UNIFORMITY_ROWS = 10_000


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser("eval", help="evaluate embeddings (retrieval, kNN, linear probe, uniformity, RankMe)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("emb", nargs="?", help="embeddings: .npy, .npz (keys X/embeddings, labels/y), .csv or .pt")
    p.add_argument("--labels", help="labels of EMB (.npy/.npz/.csv), unless EMB carries them")
    p.add_argument("--test-emb", help="test embeddings (queries and the probe's test set)")
    p.add_argument("--test-labels", help="labels of --test-emb, unless that file carries them")
    p.add_argument("--demo", action="store_true", help="evaluate the bundled 8x8 digits (pixels as embeddings)")
    p.add_argument("--metric", default="euclidean", choices=["euclidean", "cosine"], help="distance for retrieval and kNN")
    p.add_argument("--k", type=int, default=20, help="neighbours of the kNN vote (default 20)")
    p.add_argument("--l2", type=float, default=1e-4, help="probe ridge coefficient of the mean loss (= 1/(C n))")
    p.add_argument("--max-iter", type=int, default=200, help="probe L-BFGS iterations")
    p.add_argument("--n-jobs", type=int, default=None, help="threads (default: all CPUs)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=run)
    return p


class _Steps:
    """One progress line per step on stderr: [i/N] name ... seconds."""

    def __init__(self, total: int, quiet: bool) -> None:
        self.total, self.i, self.quiet = total, 0, quiet

    def __call__(self, name: str, fn: Callable[[], Any]) -> Any:
        self.i += 1
        if not self.quiet:
            sys.stderr.write(f"[{self.i}/{self.total}] {name} ...")
            sys.stderr.flush()
        t0 = time.perf_counter()
        out = fn()
        if not self.quiet:
            sys.stderr.write(f" {time.perf_counter() - t0:.2f} s\n")
            sys.stderr.flush()
        return out


def _load(path: str, what: str):
    from .._cli_io import UsageError, load_input

    try:
        X, labels = load_input(path)
    except UsageError as e:
        raise SystemExit(f"reprkit eval: {e}")
    if X.ndim != 2:
        raise SystemExit(f"reprkit eval: {what} {path} must hold a 2-D array (rows × features), got shape {X.shape}")
    return X, labels


def _labels(path: str, n: int):
    from .._cli_io import UsageError, load_labels

    try:
        return load_labels(path, n)
    except UsageError as e:
        raise SystemExit(f"reprkit eval: {e}")


def evaluate(X, labels, Xt=None, yt=None, *, metric: str = "euclidean", k: int = 20, l2: float = 1e-4,
             max_iter: int = 200, n_jobs: Optional[int] = None, quiet: bool = True) -> Dict[str, Any]:
    """The metrics of ``reprkit eval`` as a dict (see the module docstring)."""
    from . import cluster_scores, knn_accuracy, linear_probe, rank_me, retrieval_metrics, uniformity
    from ._inputs import embeddings, labels_1d

    X = embeddings(X, "embeddings", min_rows=2)
    if labels is not None:
        labels = labels_1d(labels, "labels", X.shape[0], "embeddings")
    if Xt is not None:
        Xt = embeddings(Xt, "test embeddings")
        if yt is None:
            raise SystemExit("reprkit eval: --test-emb needs --test-labels (or a file carrying labels)")
        yt = labels_1d(yt, "test labels", Xt.shape[0], "test embeddings")
        if labels is None:
            raise SystemExit("reprkit eval: a test split needs labels for EMB too (--labels)")
    res: Dict[str, Any] = {"n": int(X.shape[0]), "dim": int(X.shape[1])}
    n_steps = 2 + (4 if labels is not None else 0)
    step = _Steps(n_steps, quiet)
    if labels is not None:
        kk = min(k, X.shape[0] - 1)
        if Xt is None:
            res["retrieval"] = step("retrieval (leave-one-out)", lambda: retrieval_metrics(X, labels, metric=metric, n_jobs=n_jobs))
            res["knn_accuracy"] = step(f"{kk}-NN accuracy (leave-one-out)",
                                       lambda: knn_accuracy(X, labels, k=kk, metric=metric, n_jobs=n_jobs))
            rng = np.random.default_rng(0)
            perm = rng.permutation(X.shape[0])
            cut = max(1, int(round(0.8 * X.shape[0])))
            tr, te = perm[:cut], perm[cut:]
            if te.size == 0:
                tr, te = perm[:-1], perm[-1:]
            probe_args = (X[tr], labels[tr], X[te], labels[te])
            res["linear_probe_split"] = "seeded 80/20 split of EMB"
        else:
            res["retrieval"] = step("retrieval (test queries vs EMB)",
                                    lambda: retrieval_metrics(Xt, yt, X, labels, metric=metric, n_jobs=n_jobs))
            res["knn_accuracy"] = step(f"{kk}-NN accuracy (test vs EMB)",
                                       lambda: knn_accuracy(Xt, yt, X, labels, k=kk, metric=metric, n_jobs=n_jobs))
            probe_args = (X, labels, Xt, yt)
            res["linear_probe_split"] = "train EMB, test --test-emb"
        res["knn_k"] = kk
        pr = step("linear probe (L-BFGS)", lambda: linear_probe(*probe_args, l2=l2, max_iter=max_iter, n_jobs=n_jobs))
        res["linear_probe"] = pr.as_dict()
        res["clustering"] = step("k-means NMI / AMI", lambda: cluster_scores(X, labels, n_jobs=n_jobs))
    U = X
    if X.shape[0] > UNIFORMITY_ROWS:
        U = X[np.random.default_rng(0).choice(X.shape[0], UNIFORMITY_ROWS, replace=False)]
        res["uniformity_rows"] = UNIFORMITY_ROWS
    res["uniformity"] = step("uniformity (t=2, normalised rows)", lambda: uniformity(U, n_jobs=n_jobs))
    res["rank_me"] = step("RankMe", lambda: rank_me(X))
    return res


def _table(res: Dict[str, Any], source: str) -> str:
    rows: List[tuple] = []
    if "retrieval" in res:
        r = res["retrieval"]
        rows += [("precision@1", r["precision_at_1"]), ("R-precision", r["r_precision"]),
                 ("MAP@R", r["mean_average_precision_at_r"]), ("MRR", r["mean_reciprocal_rank"]),
                 ("queries scored / excluded", f"{r['n_queries']} / {r['n_excluded']}"),
                 (f"{res['knn_k']}-NN accuracy", res["knn_accuracy"]),
                 ("linear probe top-1", res["linear_probe"]["top1"]), ("linear probe top-5", res["linear_probe"]["top5"]),
                 ("k-means NMI", res["clustering"]["nmi"]), ("k-means AMI", res["clustering"]["ami"])]
    rows += [("uniformity", res["uniformity"]), ("RankMe", res["rank_me"])]
    w = max(len(a) for a, _ in rows)
    lines = [f"reprkit eval: {source} ({res['n']} x {res['dim']})", f"{'metric':<{w}}  value", "-" * (w + 10)]
    for a, v in rows:
        lines.append(f"{a:<{w}}  {v:.4f}" if isinstance(v, float) else f"{a:<{w}}  {v}")
    if "linear_probe_split" in res:
        lines.append(f"(linear probe: {res['linear_probe_split']})")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from ..errors import ReprkitError

    try:
        if args.demo:
            from ..data import load_digits

            X, labels = load_digits()
            source = "8x8 digits (shipped with reprkit)"
        else:
            if args.emb is None:
                raise SystemExit("reprkit eval: give an EMB file or --demo")
            X, labels = _load(args.emb, "EMB")
            source = args.emb
        if args.labels:
            labels = _labels(args.labels, X.shape[0])
        Xt = yt = None
        if args.test_emb:
            Xt, yt = _load(args.test_emb, "--test-emb")
            if args.test_labels:
                yt = _labels(args.test_labels, Xt.shape[0])
        elif args.test_labels:
            raise SystemExit("reprkit eval: --test-labels needs --test-emb")
        res = evaluate(X, labels, Xt, yt, metric=args.metric, k=args.k, l2=args.l2, max_iter=args.max_iter,
                       n_jobs=args.n_jobs, quiet=args.quiet or args.json)
    except SystemExit as e:
        if isinstance(e.code, str):
            print(e.code, file=sys.stderr)
            return 2
        raise
    except (ReprkitError, ValueError, OSError) as e:
        print(f"reprkit eval: error: {e}", file=sys.stderr)
        return 2
    res["source"] = source
    print(json.dumps(res, indent=2) if args.json else _table(res, source))
    return 0
