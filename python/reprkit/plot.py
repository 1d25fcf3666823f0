"""Scatter plots of embeddings (needs the optional ``matplotlib``: ``pip install reprkit[plot]``)."""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from .errors import MissingDependencyError, ShapeError


def _require_matplotlib() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise MissingDependencyError(
            "plotting needs matplotlib; install it with `pip install reprkit[plot]` (or `pip install matplotlib`)"
        ) from None
    return matplotlib


def embedding(
    Y: Any, labels: Optional[Any] = None, path: Optional[str] = None, *, title: Optional[str] = None,
    point_size: Optional[float] = None, dpi: int = 150,
) -> Any:
    """Scatter plot of a 2-D embedding ``Y`` (n, 2), coloured by ``labels`` (n,) if given.

    Up to 20 distinct labels get a categorical palette and a legend; more are
    drawn with a continuous colour map. With ``path`` the figure is written
    there (format from the extension) without needing a display. Returns the
    matplotlib Figure.
    """
    _require_matplotlib()
    from matplotlib.figure import Figure

    Y = np.asarray(Y)
    if Y.ndim != 2 or Y.shape[1] < 2:
        raise ShapeError(f"Y must be (n, 2) (extra columns are ignored), got shape {Y.shape}")
    n = Y.shape[0]
    if path is None:
        import matplotlib.pyplot as plt

        fig = plt.figure(figsize=(7, 7))
    else:
        fig = Figure(figsize=(7, 7))
    ax = fig.add_subplot(111)
    s = point_size if point_size is not None else float(np.clip(20000.0 / max(n, 1), 0.5, 30.0))
    if labels is None:
        ax.scatter(Y[:, 0], Y[:, 1], s=s, linewidths=0, alpha=0.8)
    else:
        lab = np.asarray(labels).ravel()
        if lab.shape[0] != n:
            raise ShapeError(f"labels has {lab.shape[0]} entries, Y has {n} rows")
        uniq = np.unique(lab)
        if len(uniq) <= 20:
            import matplotlib

            palette = matplotlib.colormaps["tab10" if len(uniq) <= 10 else "tab20"]
            for t, u in enumerate(uniq):
                m = lab == u
                ax.scatter(Y[m, 0], Y[m, 1], s=s, linewidths=0, alpha=0.8, color=palette(t), label=str(u))
            ax.legend(markerscale=max(1.0, 6.0 / np.sqrt(s)), fontsize="small", loc="best", frameon=False)
        else:
            sc = ax.scatter(Y[:, 0], Y[:, 1], s=s, linewidths=0, alpha=0.8, c=lab, cmap="viridis")
            fig.colorbar(sc, ax=ax)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_aspect("equal", adjustable="datalim")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=dpi)
    return fig


__all__ = ["embedding"]
