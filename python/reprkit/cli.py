"""Command line: ``reprkit tsne INPUT -o OUT.npy [--labels L.npy] [--plot OUT.png] ...``.

``reprkit tsne --demo --plot demo.png`` embeds the 8×8 digits shipped with the
package (no download) and writes a labelled scatter plot.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np

_LABEL_KEYS = ("labels", "label", "y", "target", "targets")
_DATA_KEYS = ("X", "x", "data", "embeddings", "embedding", "features")


def _load_table(path: Path) -> np.ndarray:
    try:
        return np.loadtxt(path, delimiter=",", ndmin=2)
    except ValueError:  # a header line
        return np.loadtxt(path, delimiter=",", ndmin=2, skiprows=1)


def load_input(path: str) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    """Data (and labels, when the file carries them) from .npy, .npz, .csv or .pt."""
    p = Path(path)
    suffix = p.suffix.lower()
    labels = None
    if not p.exists():
        raise SystemExit(f"reprkit: input file not found: {path}")
    if suffix == ".npy":
        X = np.load(p, allow_pickle=False)
    elif suffix == ".npz":
        with np.load(p, allow_pickle=False) as f:
            keys = list(f.keys())
            data_key = next((k for k in _DATA_KEYS if k in keys), None)
            if data_key is None:
                rest = [k for k in keys if k not in _LABEL_KEYS]
                if not rest:
                    raise SystemExit(f"reprkit: {path} holds no data array (keys: {keys})")
                data_key = rest[0]
            X = f[data_key]
            lab_key = next((k for k in _LABEL_KEYS if k in keys), None)
            labels = f[lab_key] if lab_key else None
    elif suffix in (".csv", ".txt", ".tsv"):
        X = _load_table(p)
    elif suffix in (".pt", ".pth"):
        from ._torch import require_torch

        torch = require_torch()
        obj = torch.load(p, map_location="cpu", weights_only=True)
        if isinstance(obj, dict):
            data_key = next((k for k in _DATA_KEYS if k in obj), None)
            if data_key is None:
                raise SystemExit(f"reprkit: {path} is a dict without a data key ({', '.join(_DATA_KEYS)})")
            lab_key = next((k for k in _LABEL_KEYS if k in obj), None)
            labels = obj[lab_key].cpu().numpy() if lab_key else None
            obj = obj[data_key]
        X = obj.detach().cpu().float().numpy() if obj.dtype.is_floating_point else obj.cpu().numpy()
    else:
        raise SystemExit(f"reprkit: unsupported input format {suffix!r} (use .npy, .npz, .csv or .pt)")
    X = np.asarray(X)
    if X.dtype.kind in "iub":
        X = X.astype(np.float32)
    return X, labels


def _load_labels(path: str) -> np.ndarray:
    p = Path(path)
    if p.suffix.lower() == ".npy":
        return np.load(p, allow_pickle=False).ravel()
    if p.suffix.lower() == ".npz":
        with np.load(p, allow_pickle=False) as f:
            return f[next(iter(f.keys()))].ravel()
    return np.loadtxt(p, dtype=str, delimiter=",").ravel()


class _Progress:
    """A one-line progress bar on stderr, driven by the TSNE callback."""

    def __init__(self, total: int, width: int = 30) -> None:
        self.total = max(total, 1)
        self.width = width
        self.t0 = time.perf_counter()

    def __call__(self, it: int, kl: float, _emb: np.ndarray) -> bool:
        frac = min(1.0, it / self.total)
        bar = "#" * int(frac * self.width)
        elapsed = time.perf_counter() - self.t0
        sys.stderr.write(f"\rt-SNE [{bar:<{self.width}}] {it:4d}/{self.total}  KL {kl:7.4f}  {elapsed:6.1f} s")
        sys.stderr.flush()
        return False

    def close(self) -> None:
        sys.stderr.write("\n")
        sys.stderr.flush()


def _tsne(args: argparse.Namespace) -> int:
    from .manifold import TSNE

    if args.demo:
        from .data import load_digits

        X, labels = load_digits()
        source = "8x8 digits (shipped with reprkit)"
    else:
        if args.input is None:
            raise SystemExit("reprkit tsne: give an INPUT file or --demo")
        X, labels = load_input(args.input)
        source = args.input
    if args.labels:
        labels = _load_labels(args.labels)
    if args.output is None and args.plot is None:
        raise SystemExit("reprkit tsne: nothing to write; give -o OUT.npy and/or --plot OUT.png")
    progress = None if args.quiet else _Progress(args.max_iter)
    if not args.quiet:
        print(f"reprkit t-SNE: {source}, {X.shape[0]} x {X.shape[1]}", file=sys.stderr)
    est = TSNE(
        n_components=args.n_components, perplexity=args.perplexity, max_iter=args.max_iter, metric=args.metric,
        method=args.method, n_jobs=args.n_jobs, random_state=args.random_state, init=args.init,
        callbacks=progress, callbacks_every=25,
    )
    t0 = time.perf_counter()
    try:
        Y = est.fit_transform(X)
    finally:
        if progress is not None:
            progress.close()
    if not args.quiet:
        print(f"done in {time.perf_counter() - t0:.1f} s, KL {est.kl_divergence_:.4f}", file=sys.stderr)
    if args.output:
        np.save(args.output, Y.astype(np.float32))
        if not args.quiet:
            print(f"wrote {args.output}", file=sys.stderr)
    if args.plot:
        from .plot import embedding

        title = f"t-SNE of {Path(source).name if not args.demo else 'digits'} (perplexity {args.perplexity:g})"
        embedding(Y, labels, path=args.plot, title=title)
        if not args.quiet:
            print(f"wrote {args.plot}", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="reprkit", description="reprkit command line tools")
    sub = ap.add_subparsers(dest="command", required=True)
    t = sub.add_parser("tsne", help="embed a file of vectors with t-SNE", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    t.add_argument("input", nargs="?", help="data file: .npy, .npz (keys X/data/embeddings, labels/y), .csv or .pt")
    t.add_argument("-o", "--output", help="where to write the embedding (.npy, float32)")
    t.add_argument("--labels", help="labels for the plot (.npy/.npz/.csv)")
    t.add_argument("--plot", help="write a scatter plot here (.png/.pdf/.svg; needs matplotlib)")
    t.add_argument("--demo", action="store_true", help="use the bundled 8x8 digits instead of INPUT")
    t.add_argument("--perplexity", type=float, default=30.0)
    t.add_argument("--n-components", type=int, default=2)
    t.add_argument("--max-iter", type=int, default=750)
    t.add_argument("--metric", default="euclidean", choices=["euclidean", "sqeuclidean", "cosine", "precomputed"])
    t.add_argument("--method", default="barnes_hut", choices=["auto", "barnes_hut", "exact", "fft"])
    t.add_argument("--init", default="pca", choices=["pca", "random"])
    t.add_argument("--n-jobs", type=int, default=None, help="threads (default: all CPUs)")
    t.add_argument("--random-state", type=int, default=0)
    t.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    t.set_defaults(func=_tsne)
    return ap


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    except Exception as e:  # reprkit errors carry clear messages: no traceback for them
        from .errors import ReprkitError

        if isinstance(e, ReprkitError):
            print(f"reprkit: error: {e}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
