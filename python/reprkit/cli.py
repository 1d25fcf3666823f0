"""reprkit's command line (``reprkit ...`` or ``python -m reprkit ...``).

Subcommands register a parser in :func:`build_parser` (``set_defaults(func=...)``)
and :func:`main` dispatches on it. Every check of the user's files and options
runs before any computation; a problem is one line on stderr, never a traceback.

Exit status: 0 success; 2 usage error (an unknown option, a value out of range,
a missing, unreadable or malformed file, an output format reprkit cannot write,
matplotlib missing for ``--plot``); 1 the computation or writing the result
failed; 130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, List, Optional, TextIO

import numpy as np

from ._cli_io import OUTPUT_SUFFIXES, UsageError, check_labels, check_output, load_input, load_labels, parse_delimiter
from ._cli_io import write_output

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

_EXIT_TEXT = """\
exit status:
  0    success
  1    the computation or writing the result failed
  2    usage error: bad option or value, missing/unreadable/malformed file, unsupported format
       (all checked before any computation starts)
  130  interrupted (Ctrl-C)
"""

_TSNE_DESCRIPTION = """\
Embed the rows of a data file with t-SNE and write the embedding and/or a scatter plot.

examples:
  reprkit tsne --demo --plot demo.png          8x8 digits shipped with reprkit, no download
  reprkit tsne emb.npy -o tsne.csv --labels labels.npy --plot tsne.png --perplexity 50
  reprkit tsne table.csv --delimiter ';' -o tsne.npy

input formats:
  .npy          a 2-D array (n_samples, n_features); integer and boolean data are converted to float
  .npz          the array named X, x, data, embeddings, embedding or features (or the only one);
                labels under labels, label, y, target or targets are used for --plot
  .csv .tsv .txt  numeric table; separator detected (, tab ; | whitespace) unless --delimiter;
                one header line is skipped
  .pt .pth      a tensor, or a dict with the keys above (needs torch)
"""


# --- argument types: a bad value is an argparse error naming the option and the accepted range ---
def _number(kind: Callable[[str], Any], lo: float, hi: float, what: str, lo_open: bool = False) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if isinstance(v, float) and not math.isfinite(v):
            raise argparse.ArgumentTypeError(f"expected a finite number ({what}), got {text!r}")
        if v < lo or (lo_open and v == lo) or v > hi:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text}")
        return v

    return parse


def _learning_rate(text: str) -> Any:
    if text == "auto":
        return text
    return _number(float, 0.0, math.inf, "'auto' or a positive number", lo_open=True)(text)


def _cpu_count() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def _n_jobs(text: str) -> int:
    cpus = _cpu_count()
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    # Bounded by the CPUs this process may use: more threads than cores only slow the kernels down.
    if v == 0 or not (-cpus <= v <= cpus):
        raise argparse.ArgumentTypeError(
            f"expected 1..{cpus} (the CPUs available) or -1..-{cpus} (all CPUs, all but one, ...), got {text}"
        )
    return v


# --- progress on stderr ---
class Progress:
    """Progress of a long computation on stderr: named stages, then an iteration bar.

    ``stage(name)`` starts a stage (and closes the previous one with its time);
    calling the object as a t-SNE callback ``(iteration, kl, embedding)`` draws the
    bar, labelled "early exaggeration" up to ``exaggeration_iter`` and "optimisation"
    after. On a terminal the bar redraws in place; otherwise (a log file) a line is
    written every 10 % of the iterations.
    """

    def __init__(self, total: int, *, exaggeration_iter: int = 0, stream: Optional[TextIO] = None, width: int = 30):
        self.total = max(int(total), 1)
        self.exaggeration_iter = int(exaggeration_iter)
        self.stream = stream if stream is not None else sys.stderr
        self.width = width
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._stage: Optional[str] = None
        self._stage_t0 = time.perf_counter()
        self._bar_t0: Optional[float] = None
        self._open_line = False
        self._next_log = 0.0

    #: The progress display drawing now, if any: warnings end its line before they print.
    current: Optional["Progress"] = None

    def _write(self, text: str) -> None:
        Progress.current = self
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):  # a closed or broken stderr must not stop the fit
            pass

    def _end_line(self) -> None:
        if self._open_line:
            self._write("\n")
            self._open_line = False

    def stage(self, name: str) -> None:
        """Start stage ``name`` (e.g. "kNN", "calibration", "optimisation")."""
        self.finish_stage()
        self._stage, self._stage_t0 = name, time.perf_counter()
        self._write(f"  {name} ...")
        self._open_line = True

    def finish_stage(self) -> None:
        if self._stage is not None and self._bar_t0 is None:
            self._write(f" {time.perf_counter() - self._stage_t0:.1f} s")
        self._end_line()
        self._stage = None

    def __call__(self, it: int, kl: float, _embedding: Any = None) -> bool:
        if self._bar_t0 is None:
            self.finish_stage()
            self._bar_t0 = time.perf_counter()
        frac = min(1.0, it / self.total)
        phase = "early exaggeration" if it <= self.exaggeration_iter else "optimisation"
        elapsed = time.perf_counter() - self._bar_t0
        if self.tty:
            bar = "#" * int(frac * self.width)
            self._write(f"\r  {phase:<18} [{bar:<{self.width}}] {it:5d}/{self.total}  KL {kl:8.4f}  {elapsed:6.1f} s")
            self._open_line = True
        elif frac >= self._next_log or it >= self.total:
            self._write(f"  {phase}: iteration {it}/{self.total}  KL {kl:.4f}  {elapsed:.1f} s\n")
            self._next_log = frac + 0.1
        return False

    def close(self) -> None:
        self.finish_stage()
        self._end_line()
        if Progress.current is self:
            Progress.current = None


def _say(args: argparse.Namespace, msg: str) -> None:
    if not args.quiet:
        print(msg, file=sys.stderr, flush=True)


# --- reprkit tsne ---
def _tsne(args: argparse.Namespace) -> int:
    from .manifold import TSNE

    # 1. Every check of files and options, before any computation.
    if args.demo and args.input is not None:
        raise UsageError("give either an INPUT file or --demo, not both")
    if args.input is None and not args.demo:
        raise UsageError("give an INPUT file (or --demo); see reprkit tsne --help")
    if args.output is None and args.plot is None:
        raise UsageError("nothing to write: give -o OUT (" + ", ".join(OUTPUT_SUFFIXES) + ") and/or --plot OUT.png")
    delimiter = parse_delimiter(args.delimiter)
    if args.demo:
        from .data import load_digits

        X, labels = load_digits()
        source = "8x8 digits (shipped with reprkit)"
    else:
        X, labels = load_input(args.input, delimiter)
        source = args.input
    n, d = X.shape
    if labels is not None:
        labels = check_labels(labels, n, f"INPUT {source}")
    if args.labels:
        labels = load_labels(args.labels, n)
    if args.output is not None:
        check_output(args.output, "-o")
        if args.input is not None and os.path.abspath(args.output) == os.path.abspath(args.input):
            raise UsageError(f"-o {args.output} would overwrite the INPUT file")
    if args.plot is not None:
        _check_plot(args)
    method, dim = args.method, args.n_components
    if method == "barnes_hut" and dim > 3:
        raise UsageError(f"--n-components {dim} needs --method exact (barnes_hut supports 1 to 3)")
    if args.plot is not None and dim < 2:
        raise UsageError("--plot needs --n-components 2 or more")
    if n < 2:
        raise UsageError(f"t-SNE needs at least 2 samples; {source} has {n}")
    if args.perplexity >= n:
        raise UsageError(f"--perplexity ({args.perplexity:g}) must be less than the number of samples ({n})")
    init = args.init or ("spectral" if args.metric == "precomputed" else "pca")
    if args.metric == "precomputed":
        if n != d:
            raise UsageError(f"--metric precomputed needs a square distance matrix; {source} has shape {X.shape}")
        if (X < 0).any():
            raise UsageError(f"--metric precomputed: {source} holds negative distances")
        if init == "pca":
            raise UsageError("--init pca needs data vectors, not distances; use --init spectral or random")

    # 2. The fit.
    progress = None if args.quiet else Progress(args.max_iter, exaggeration_iter=min(args.exaggeration_iter, args.max_iter))
    _say(args, f"reprkit t-SNE: {source}, {n} x {d}, perplexity {args.perplexity:g}, init {init}")
    est = TSNE(
        n_components=dim, perplexity=args.perplexity, early_exaggeration=args.early_exaggeration,
        exaggeration_iter=args.exaggeration_iter, learning_rate=args.learning_rate, max_iter=args.max_iter,
        metric=args.metric, init=init, method=method, neighbors=args.neighbors, n_jobs=args.n_jobs,
        random_state=args.random_state, callbacks=progress, callbacks_every=10 if args.max_iter <= 250 else 25,
    )
    t0 = time.perf_counter()
    try:
        if progress is not None:
            progress.stage("kNN, perplexity calibration, initialisation")
        Y = est.fit_transform(X)
    finally:
        if progress is not None:
            progress.close()
    Y = np.ascontiguousarray(np.asarray(Y), dtype=np.float32)
    _say(args, f"done in {time.perf_counter() - t0:.1f} s, KL {est.kl_divergence_:.4f}")

    # 3. The results.
    if args.output:
        _write(lambda: write_output(args.output, Y, labels), args.output)
        _say(args, f"wrote {args.output} ({Y.shape[0]} x {Y.shape[1]}, float32)")
    if args.plot:
        from .plot import embedding

        name = "digits" if args.demo else Path(source).name
        title = args.title if args.title is not None else f"t-SNE of {name} (perplexity {args.perplexity:g})"
        _write(lambda: embedding(Y, labels, path=args.plot, title=title, annotate=args.annotate), args.plot)
        _say(args, f"wrote {args.plot}")
    return EXIT_OK


class _WriteError(Exception):
    """Writing a result failed after the computation (exit status 1)."""


def _write(fn: Callable[[], Any], path: str) -> None:
    try:
        fn()
    except OSError as e:
        raise _WriteError(f"could not write {path}: {e.strerror or e}") from None


def _check_plot(args: argparse.Namespace) -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise UsageError("--plot needs matplotlib: pip install 'reprkit[plot]' (or pip install matplotlib)") from None
    from ._cli_io import _check_writable
    from .errors import ReprkitError
    from .plot import check_path

    try:
        check_path(args.plot)
    except ReprkitError as e:
        raise UsageError(f"--plot {args.plot}: " + str(e).split(": ", 1)[-1]) from None
    _check_writable(args.plot, "--plot")
    if args.output is not None and os.path.abspath(args.output) == os.path.abspath(args.plot):
        raise UsageError("-o and --plot name the same file")


def _add_tsne(sub: Any) -> None:
    t = sub.add_parser(
        "tsne", help="embed a file of vectors with t-SNE (write the embedding and/or a plot)",
        description=_TSNE_DESCRIPTION, epilog=_EXIT_TEXT, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    t.add_argument("input", nargs="?", metavar="INPUT", help="data file (.npy, .npz, .csv, .tsv, .txt, .pt; see above)")
    io = t.add_argument_group("files")
    io.add_argument("-o", "--output", metavar="OUT",
                    help="write the embedding (float32, n x n-components) to exactly this path; the format follows "
                         "the suffix: .npy, .npz (key 'embedding', plus 'labels'), .csv/.tsv/.txt (no header), "
                         ".pt (a tensor, needs torch)")
    io.add_argument("--plot", metavar="FILE",
                    help="write a scatter plot, coloured by the labels, to this path (.png, .pdf, .svg, ...; needs "
                         "matplotlib)")
    io.add_argument("--labels", metavar="FILE",
                    help="labels for the plot, one per row of INPUT (.npy, .npz, .pt, or text: one per line); "
                         "default: the labels stored in an .npz/.pt INPUT, if any")
    io.add_argument("--delimiter", metavar="SEP",
                    help="field separator of a text INPUT: one character, or tab, space, whitespace "
                         "(default: detected from , tab ; | and whitespace)")
    io.add_argument("--demo", action="store_true",
                    help="embed the 8x8 digits shipped with reprkit (1797 x 64) instead of an INPUT file")
    io.add_argument("--title", help="plot title (default: 't-SNE of INPUT (perplexity P)')")
    io.add_argument("--annotate", action="store_true", help="also write each class's name at its median on the plot")
    tp = t.add_argument_group("t-SNE")
    tp.add_argument("--perplexity", metavar="P", type=_number(float, 1.0, math.inf, "a number >= 1"), default=30.0,
                    help="effective number of neighbours, >= 1 and < the number of samples (default: %(default)s)")
    tp.add_argument("--n-components", metavar="N", type=_number(int, 1, 1 << 16, "an integer >= 1"), default=2,
                    help="dimension of the embedding: 1 to 3 with barnes_hut, any with exact (default: %(default)s)")
    tp.add_argument("--max-iter", metavar="N", type=_number(int, 0, 10**9, "an integer >= 0"), default=750,
                    help="gradient-descent iterations in total, early exaggeration included (default: %(default)s)")
    tp.add_argument("--exaggeration-iter", metavar="N", type=_number(int, 0, 10**9, "an integer >= 0"), default=250,
                    help="iterations of early exaggeration at the start (default: %(default)s)")
    tp.add_argument("--early-exaggeration", metavar="F", type=_number(float, 0.0, 1e6, "a number in (0, 1e6]", lo_open=True),
                    default=12.0, help="factor on P during early exaggeration (default: %(default)s)")
    tp.add_argument("--learning-rate", metavar="LR", type=_learning_rate, default="auto",
                    help="step size, or 'auto' = max(N / exaggeration, 50) per phase (openTSNE's unit, 4x "
                         "scikit-learn's) (default: %(default)s)")
    tp.add_argument("--metric", default="euclidean", choices=["euclidean", "sqeuclidean", "cosine", "precomputed"],
                    help="input distance; precomputed = INPUT is a square matrix of distances (default: %(default)s)")
    tp.add_argument("--method", default="auto", choices=["auto", "barnes_hut", "exact", "fft"],
                    help="barnes_hut: O(N log N) tree approximation; fft: grid interpolation (1-D/2-D); exact: "
                         "O(N^2); auto: chosen by N and dimension (default: %(default)s)")
    tp.add_argument("--init", default=None, choices=["pca", "spectral", "random"],
                    help="initial embedding: pca = first principal components, spectral = Laplacian eigenmaps of "
                         "the affinities, random = Gaussian; all scaled to std 1e-4 "
                         "(default: pca, or spectral with --metric precomputed)")
    tp.add_argument("--neighbors", default="auto", choices=["auto", "exact", "approx"],
                    help="nearest-neighbour search: exact, approx (random-projection forest + NN-descent), or auto "
                         "= exact up to 30,000 samples (default: %(default)s)")
    tp.add_argument("--n-jobs", metavar="N", type=_n_jobs, default=None,
                    help="threads: 1 up to the CPU count, or -1 = all CPUs, -2 = all but one, ... "
                         "(default: torch's thread count if torch is loaded, else all CPUs)")
    tp.add_argument("--random-state", metavar="SEED", type=_number(int, 0, 2**63 - 1, "an integer in [0, 2^63)"), default=0,
                    help="seed; the same seed gives the same embedding for any --n-jobs (default: %(default)s)")
    misc = t.add_argument_group("output on the terminal")
    misc.add_argument("-q", "--quiet", action="store_true", help="no progress or summary on stderr (errors still)")
    misc.add_argument("--traceback", action="store_true",
                      help="on an unexpected failure, show the Python traceback (for bug reports)")
    t.set_defaults(func=_tsne)


def build_parser() -> argparse.ArgumentParser:
    """The ``reprkit`` parser: one subparser per subcommand, each with ``set_defaults(func=...)``."""
    from . import __version__

    ap = argparse.ArgumentParser(
        prog="reprkit", description="reprkit command line tools (run 'reprkit COMMAND --help' for a command's options)",
        epilog=_EXIT_TEXT, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--version", action="version", version=f"reprkit {__version__}",
                    help="print reprkit's version and exit")
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_tsne(sub)
    from .metrics.cli import add_parser as _add_eval

    _add_eval(sub)
    return ap


@contextmanager
def _one_line_warnings() -> Iterator[None]:
    """Warnings (duplicates, disconnected graphs, ...) as 'reprkit: warning: ...' lines, without source lines."""
    old = warnings.showwarning

    def show(message: Any, category: Any, filename: str, lineno: int, file: Any = None, line: Any = None) -> None:
        if Progress.current is not None:
            Progress.current._end_line()
        print(f"reprkit: warning: {' '.join(str(message).split())}", file=sys.stderr, flush=True)

    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = old


def main(argv: Optional[List[str]] = None) -> int:
    """Run the command line; returns the exit status (see the module docstring)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help / --version (0) or an argparse usage error (2), already printed
        return e.code if isinstance(e.code, int) else (EXIT_OK if e.code is None else EXIT_USAGE)
    prog = f"reprkit {args.command}"
    from .errors import ReprkitError

    with _one_line_warnings():
        try:
            return int(args.func(args))
        except KeyboardInterrupt:
            print(f"\n{prog}: interrupted", file=sys.stderr)
            return EXIT_INTERRUPTED
        except (UsageError, ReprkitError) as e:  # reprkit's own errors name the parameter and the accepted range
            print(f"{prog}: error: {' '.join(str(e).split())}", file=sys.stderr)
            return EXIT_USAGE
        except _WriteError as e:
            print(f"{prog}: error: {e}", file=sys.stderr)
            return EXIT_FAILURE
        except MemoryError:
            print(f"{prog}: error: out of memory (try --neighbors approx, fewer samples, or a smaller INPUT)",
                  file=sys.stderr)
            return EXIT_FAILURE
        except Exception as e:
            if getattr(args, "traceback", False):
                raise
            print(f"{prog}: failed: {type(e).__name__}: {' '.join(str(e).split())[:300]} "
                  "(run again with --traceback for details)", file=sys.stderr)
            return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
