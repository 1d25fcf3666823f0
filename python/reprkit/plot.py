"""Scatter plots of embeddings (needs the optional ``matplotlib``: ``pip install reprkit[plot]``).

Colours. Class t (in sorted label order) gets ``PALETTE[t]``: the first 10 are
matplotlib's tab10, the next 20 were chosen greedily in CIELAB, each as far as
possible (ΔE76) from all earlier ones among colours of lightness 30–80 (visible
on white), so any two of the 30 differ by ΔE76 ≥ 27 (tab10's own closest pair).
Beyond 30 classes colours repeat with a new marker shape per round
(``MARKERS``), so every class up to 30 × 8 = 240 has its own (colour, marker);
beyond 240 classes, or for labels that are non-integer numbers (a regression
target), points are coloured by a continuous colour map with a colour bar.

Layout. The legend always sits outside the axes, to the right, in as many
columns as needed (at most 30 rows each), so it never covers points; the figure
is widened to hold it and constrained layout keeps both on the canvas. Long
titles are wrapped to the figure's width (at most 3 lines, then shortened with
"…"). ``annotate=True`` also writes each class's name at its median position.
"""

from __future__ import annotations

import math
import textwrap
import warnings
from typing import Any, List, Optional, Sequence, Tuple

import numpy as np

from .errors import InvalidParameterError, MissingDependencyError, NonFiniteError, ShapeError

#: tab10, then 20 colours picked greedily for the largest CIELAB distance to all earlier ones.
PALETTE: Tuple[str, ...] = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
    "#0000ff", "#ff1eff", "#4b5a0f", "#690fb4", "#a5d296", "#f0b478", "#00e100", "#ff0078", "#0078ff", "#960f4b",
    "#00785a", "#965a00", "#ff8787", "#b4c3f0", "#c300a5", "#00e1a5", "#d269ff", "#ffb400", "#f0b4c3", "#87d21e",
)
#: Marker of each round through the palette (classes 0-29 "o", 30-59 "s", ...).
MARKERS: Tuple[str, ...] = ("o", "s", "^", "D", "v", "P", "X", "*")
#: Above this many classes points get a continuous colour map instead of a legend.
MAX_CATEGORICAL = len(PALETTE) * len(MARKERS)
_LEGEND_ROWS = 30
_TITLE_LINES = 3


def _require_matplotlib() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise MissingDependencyError(
            "plotting needs matplotlib; install it with `pip install reprkit[plot]` (or `pip install matplotlib`)"
        ) from None
    return matplotlib


def supported_formats() -> List[str]:
    """File extensions (without the dot) that :func:`embedding` can write with this matplotlib."""
    _require_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    return sorted(FigureCanvasAgg(Figure()).get_supported_filetypes())


def check_path(path: Any) -> str:
    """``path`` as a string if matplotlib can write its format, else a clear error (used before long fits)."""
    import os

    if not isinstance(path, (str, os.PathLike)):
        raise InvalidParameterError(f"path must be a file name (str or PathLike), got {type(path).__name__}")
    path = os.fspath(path)
    ext = os.path.splitext(path)[1].lower().lstrip(".")
    formats = supported_formats()
    if ext not in formats:
        raise InvalidParameterError(
            f"path={path!r}: unsupported plot format {('.' + ext) if ext else '(no extension)'}; "
            f"use one of: {', '.join('.' + f for f in formats)}"
        )
    return path


def class_style(t: int) -> Tuple[str, str]:
    """(colour, marker) of the t-th class (0-based, in sorted label order)."""
    return PALETTE[t % len(PALETTE)], MARKERS[(t // len(PALETTE)) % len(MARKERS)]


def _to_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # torch tensor, any device
        x = x.detach().cpu()
        if x.is_floating_point():
            x = x.double()
        return x.numpy()
    return np.asarray(x)


def _labels(labels: Any, n: int) -> Tuple[np.ndarray, bool]:
    """(labels, categorical): integer-valued numbers and any strings are classes; other floats are continuous."""
    lab = _to_numpy(labels)
    if lab.ndim == 2 and 1 in lab.shape:
        lab = lab.ravel()
    if lab.ndim != 1:
        raise ShapeError(f"labels must be a 1-D array (n,), got shape {lab.shape}")
    if lab.shape[0] != n:
        raise ShapeError(f"labels has {lab.shape[0]} entries, Y has {n} rows")
    if lab.dtype.kind == "O":  # mixed Python objects: compare them as text
        lab = np.array([str(v) for v in lab])
    if lab.dtype.kind == "c":
        raise InvalidParameterError("labels must be numbers or strings, got complex values")
    if lab.dtype.kind == "f":
        if np.isfinite(lab).all() and np.all(lab == np.round(lab)):
            return lab.astype(np.int64), True
        return lab.astype(np.float64), False
    return lab, True


def _wrap_title(title: str, width_in: float, fontsize: float) -> str:
    # ~0.55 em per character of the default sans-serif font.
    chars = max(10, int(width_in * 72.0 / (0.55 * fontsize)))
    lines = textwrap.wrap(title, chars) or [""]
    if len(lines) > _TITLE_LINES:
        lines = lines[:_TITLE_LINES]
        lines[-1] = lines[-1][: max(1, chars - 1)].rstrip() + "…"
    return "\n".join(lines)


def embedding(
    Y: Any, labels: Optional[Any] = None, path: Optional[str] = None, *, title: Optional[str] = None,
    point_size: Optional[float] = None, dpi: int = 150, legend: bool = True, annotate: bool = False,
) -> Any:
    """Scatter plot of a 2-D embedding ``Y`` (n, 2) (extra columns are ignored), coloured by ``labels`` (n,).

    ``labels`` may be integers, strings or floats (numpy, torch or a list):
    integer-valued labels and strings are classes (see the module docstring for
    the palette, the marker fallback beyond 30 classes and the colour map beyond
    240); other floats are a continuous value shown with a colour bar. The
    legend is outside the axes (``legend=False`` drops it); ``annotate=True``
    writes each class name at the class's median point. ``point_size`` defaults
    to clip(20000 / n, 0.5, 30) points². With ``path`` the figure is written
    there (format from the extension, see :func:`supported_formats`) without a
    display. Returns the matplotlib Figure.
    """
    _require_matplotlib()
    from matplotlib.figure import Figure

    Yn = _to_numpy(Y)
    if Yn.dtype.kind not in "fiub":
        raise InvalidParameterError(f"Y must hold real numbers, got dtype {Yn.dtype}")
    Yn = Yn.astype(np.float64, copy=False)
    if Yn.ndim != 2 or Yn.shape[1] < 2 or Yn.shape[0] < 1:
        raise ShapeError(f"Y must be (n, 2) with n >= 1 (extra columns are ignored), got shape {Yn.shape}")
    if not np.isfinite(Yn[:, :2]).all():
        raise NonFiniteError("Y contains NaN or infinity; cannot place those points")
    n = Yn.shape[0]
    if point_size is not None and (
        isinstance(point_size, bool) or not isinstance(point_size, (int, float)) or not (0 < point_size < math.inf)
    ):
        raise InvalidParameterError(f"point_size must be a positive finite number (points²), got {point_size!r}")
    if isinstance(dpi, bool) or not isinstance(dpi, (int, np.integer)) or not (1 <= dpi <= 2400):
        raise InvalidParameterError(f"dpi must be an integer in [1, 2400], got {dpi!r}")
    if title is not None and not isinstance(title, str):
        raise InvalidParameterError(f"title must be a string or None, got {type(title).__name__}")
    if not isinstance(legend, bool) or not isinstance(annotate, bool):
        raise InvalidParameterError(f"legend and annotate must be booleans, got {legend!r} and {annotate!r}")
    if path is not None:
        path = check_path(path)

    lab, categorical = (None, False) if labels is None else _labels(labels, n)
    uniq: Sequence[Any] = ()
    codes = None
    if lab is not None and categorical:
        uniq, codes = np.unique(lab, return_inverse=True)
        codes = codes.ravel()
        if len(uniq) > MAX_CATEGORICAL:
            warnings.warn(
                f"{len(uniq)} classes: more than {MAX_CATEGORICAL} distinct styles, colouring by class index "
                "with a continuous colour map instead of a legend",
                stacklevel=2,
            )
            categorical = False
    show_legend = legend and lab is not None and categorical
    ncol = max(1, math.ceil(len(uniq) / _LEGEND_ROWS)) if show_legend else 0
    longest = max((len(str(u)) for u in uniq), default=0)
    # Widen the figure by the legend's estimated width (marker + text at "small" font) so the axes keep their size.
    extra_w = ncol * (0.45 + 0.075 * min(longest, 40)) if show_legend else 0.0
    if lab is not None and not categorical:
        extra_w = 1.2  # colour bar
    width = 7.0 + extra_w
    if path is None:
        import matplotlib.pyplot as plt

        fig = plt.figure(figsize=(width, 7.0), layout="constrained")
    else:
        from matplotlib.backends.backend_agg import FigureCanvasAgg

        fig = Figure(figsize=(width, 7.0), layout="constrained")
        FigureCanvasAgg(fig)  # a canvas of its own: no display, no global pyplot state
    ax = fig.add_subplot(111)
    s = point_size if point_size is not None else float(np.clip(20000.0 / n, 0.5, 30.0))
    X0, X1 = Yn[:, 0], Yn[:, 1]
    if lab is None:
        ax.scatter(X0, X1, s=s, linewidths=0, alpha=0.8, color=PALETTE[0])
    elif categorical:
        for t, u in enumerate(uniq):
            m = codes == t
            colour, marker = class_style(t)
            ax.scatter(X0[m], X1[m], s=s, linewidths=0, alpha=0.8, color=colour, marker=marker, label=str(u))
        if annotate:
            for t, u in enumerate(uniq):
                m = codes == t
                ax.annotate(
                    str(u), (float(np.median(X0[m])), float(np.median(X1[m]))), ha="center", va="center",
                    fontsize="small", fontweight="bold", color="black",
                    bbox=dict(boxstyle="round,pad=0.15", fc="white", ec="none", alpha=0.7),
                )
        if show_legend:
            ax.legend(
                loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, ncol=ncol, fontsize="small",
                markerscale=max(1.0, 6.0 / np.sqrt(s)), frameon=False, handletextpad=0.3, columnspacing=1.0,
            )
    else:
        values = codes if codes is not None else lab
        sc = ax.scatter(X0, X1, s=s, linewidths=0, alpha=0.8, c=values, cmap="turbo")
        if codes is None:
            fig.colorbar(sc, ax=ax, shrink=0.8)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_aspect("equal", adjustable="datalim")
    if title:
        fontsize = 12.0
        ax.set_title(_wrap_title(title, 6.3, fontsize), fontsize=fontsize)
    if path is not None:
        fig.savefig(path, dpi=dpi)
    return fig


__all__ = ["embedding", "supported_formats", "check_path", "class_style", "PALETTE", "MARKERS", "MAX_CATEGORICAL"]
