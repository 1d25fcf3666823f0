"""Statistics of a representation on its own: alignment, uniformity, RankMe."""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from . import _inputs as I


def _as_torch(x: Any, name: str):
    from .._torch import require_torch

    torch = require_torch()

    return torch.from_numpy(I.embeddings(x, name))


def alignment(x: Any, y: Any, alpha: float = 2.0, *, normalize: bool = True) -> float:
    """Alignment (Wang & Isola 2020): mean_i ‖x̂_i − ŷ_i‖^α over positive pairs, rows
    L2-normalised unless ``normalize=False`` (the losses' own formula, as a float)."""
    from ..losses.hypersphere import alignment_loss

    a, b = _as_torch(x, "x"), _as_torch(y, "y")
    if a.dtype != b.dtype:
        a, b = a.double(), b.double()
    return float(alignment_loss(a, b, alpha, normalize=normalize))


def uniformity(x: Any, t: float = 2.0, *, normalize: bool = True, n_jobs: Optional[int] = None) -> float:
    """Uniformity (Wang & Isola 2020): log mean_{i<j} e^{−t‖x̂_i − x̂_j‖²}, rows L2-normalised
    unless ``normalize=False``; the Rust kernel of ``uniformity_loss`` (O(n·d) memory)."""
    from ..losses.hypersphere import uniformity_loss

    return float(uniformity_loss(_as_torch(x, "x"), t, normalize=normalize, n_jobs=n_jobs))


def rank_me(x: Any, eps: float = 1e-7) -> float:
    """RankMe effective rank (Garrido, Balestriero, Najman & LeCun, ICML 2023):

        p_k = σ_k / ‖σ‖₁ + ε,   RankMe = exp(−Σ_k p_k log p_k)

    with σ the singular values of the (uncentred) n × d embedding matrix and
    ε = 1e-7 as in the paper. Between 1 and min(n, d)."""
    a = I.embeddings(x, "x")
    if not (isinstance(eps, (int, float)) and eps >= 0):
        raise I.InvalidParameterError(f"eps must be a number >= 0, got {eps!r}")
    a = a.astype(np.float64)
    if a.shape[0] > a.shape[1]:
        # σ² are the eigenvalues of the d × d Gram matrix: far cheaper than an SVD of n × d rows.
        s = np.sqrt(np.clip(np.linalg.eigvalsh(a.T @ a), 0.0, None))
    else:
        s = np.linalg.svd(a, compute_uv=False)
    tot = s.sum()
    if tot <= 0:
        return 1.0 if eps == 0 else float(np.exp(-(s.size * eps * np.log(eps))))
    p = s / tot + eps
    return float(np.exp(-(p * np.log(p)).sum()))
