"""Pure-torch pairwise distances (any device, differentiable by autograd)."""

from __future__ import annotations

from typing import Any, Optional

from .._torch import require_torch

# Below this ratio of d² to ‖x‖²+‖y‖² the product form has lost digits and the
# entry is recomputed directly (same rule as the Rust kernel).
_CANCEL_TOL = {"float32": 1.0 / 1024.0, "float64": 1e-7}


def _sq_euclidean(x: Any, y: Any, same: bool) -> Any:
    torch = require_torch()
    both = x if same else torch.cat([x, y])
    mean = both.detach().mean(0, keepdim=True)
    xc, yc = x - mean, y - mean
    nx = (xc * xc).sum(1, keepdim=True)
    ny = (yc * yc).sum(1, keepdim=True).T
    scale = nx + ny
    d2 = scale - 2.0 * (xc @ yc.T)
    tol = _CANCEL_TOL.get(str(x.dtype).replace("torch.", ""), 1e-7)
    bad = (d2 <= tol * scale).nonzero(as_tuple=True)
    if bad[0].numel():
        direct = ((x[bad[0]] - y[bad[1]]) ** 2).sum(1)
        d2 = d2.index_put(bad, direct)
    d2 = d2.clamp_min(0.0)
    if same:
        d2 = d2 * (1.0 - torch.eye(x.shape[0], dtype=x.dtype, device=x.device))
    return d2


def _range_scale(x: Any, y: Any) -> Any:
    """A power of two s with s·max|x, y| in [1, 2) (1 for all-zero input), clamped so that s and
    1/s are normal numbers: distances of the scaled rows neither overflow (rows of 1e30 in float32)
    nor underflow, and scaling by s is exact. Tensor ops only (no host sync, traceable)."""
    torch = require_torch()
    m = torch.maximum(x.detach().abs().amax(), y.detach().abs().amax())
    lim = 126 if x.dtype != torch.float64 else 1022
    e = torch.where(m > 0, -torch.floor(torch.log2(torch.where(m > 0, m, torch.ones_like(m)))), torch.zeros_like(m))
    return torch.exp2(e.clamp(-lim, lim))


def pairwise_distances(x: Any, y: Optional[Any] = None, metric: str = "euclidean") -> Any:
    """Distances between the rows of ``x`` (n, d) and ``y`` (m, d) as an (n, m) tensor.

    * ``"euclidean"``: D_ij = ‖x_i − y_j‖₂ (gradient 0 where D_ij = 0)
    * ``"sqeuclidean"``: D_ij = ‖x_i − y_j‖₂²
    * ``"cosine"``: D_ij = 1 − x_i·y_j / (‖x_i‖‖y_j‖), and 1 when either row is zero

    With ``y=None`` the distances of ``x`` to itself, with an exactly zero diagonal.
    """
    torch = require_torch()
    same = y is None
    if same:
        y = x
    s = _range_scale(x, y)
    x, y = x * s, y * s  # distances scale back below (cosine is scale invariant)
    if metric in ("euclidean", "sqeuclidean"):
        d2 = _sq_euclidean(x, y, same)
        inv = 1.0 / s
        if metric == "sqeuclidean":
            return d2 * inv * inv  # inf only when the true value exceeds the range
        pos = d2 > 0
        # Double-where keeps the gradient of sqrt at 0 finite (it is 0 there).
        return torch.where(pos, torch.where(pos, d2, torch.ones_like(d2)).sqrt(), torch.zeros_like(d2)) * inv
    if metric == "cosine":
        nx = x.norm(dim=1, keepdim=True)
        ny = y.norm(dim=1, keepdim=True)
        ux = torch.where(nx > 0, x / torch.where(nx > 0, nx, torch.ones_like(nx)), torch.zeros_like(x))
        uy = torch.where(ny > 0, y / torch.where(ny > 0, ny, torch.ones_like(ny)), torch.zeros_like(y))
        d = (1.0 - ux @ uy.T).clamp(0.0, 2.0)
        if same:
            d = d * (1.0 - torch.eye(x.shape[0], dtype=x.dtype, device=x.device))
        return d
    from ..errors import InvalidParameterError

    raise InvalidParameterError(f"unknown metric {metric!r}; accepted: 'euclidean', 'sqeuclidean', 'cosine'")
