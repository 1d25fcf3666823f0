"""Pure-torch redundancy-reduction losses (Barlow Twins, VICReg, VICReg's graph form):
the any-device (CUDA) path and, with ``tile=None``, the plain-formula test oracle.

The d×d statistic both losses need, S = Σ_{k≠l} C_kl² with C = aᵀb (Barlow
Twins) or C = xᵀx (VICReg), is evaluated by :func:`offdiag_sq`: with an integer
``tile`` it forms C one block of ``tile`` feature rows at a time, feeds the same
block to the gradient GEMMs at once (forward and backward fused: the saved state
is the two n×d gradients) and never holds more than a ``tile × d`` block, so
memory stays linear in d on a GPU too (the same tiling as the Rust kernel's
feature path; the Symmetric form computes only the blocks on and right of the
diagonal). ``tile=None`` builds the full d×d matrix and lets autograd
differentiate it (higher-order derivatives work there only).

The formulas are documented in :mod:`reprkit.losses.redundancy`. Inputs are
assumed validated (2-D float tensors, float32/float64).
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Tuple

import numpy as np

from .._torch import require_torch

torch = require_torch()
F = torch.nn.functional

#: Feature rows of C per block in the tiled path (the Rust kernel uses the same).
FEAT_TILE = 256
BN_EPS = 1e-5


# ----------------------------------------------------------------- the d×d statistic


def _offdiag_dense(a: Any, b: Optional[Any]) -> Any:
    c = a.T @ (a if b is None else b)
    off = ~torch.eye(c.shape[0], dtype=torch.bool, device=c.device)
    return c[off].pow(2).sum()


def _sq(t: Any) -> Any:
    return t.square().sum(dtype=torch.float64)


@torch.no_grad()
def _offdiag_tiles(a: Any, b: Optional[Any], tile: int, need_grad: bool) -> Tuple[Any, Any, Any]:
    n, d = a.shape
    s = a.new_zeros((), dtype=torch.float64)
    ga = torch.zeros_like(a) if need_grad else a.new_empty((0, d))
    gb = torch.zeros_like(b) if (need_grad and b is not None) else a.new_empty((0, d))
    for k0 in range(0, d, tile):
        k1 = min(k0 + tile, d)
        bk = k1 - k0
        ak = a[:, k0:k1]
        if b is not None:
            c = ak.T @ b  # C[K, :], bk × d
            c.diagonal(offset=k0).zero_()
            s = s + _sq(c)
            if need_grad:
                ga[:, k0:k1] = 2 * (b @ c.T)
                gb.addmm_(ak, c, alpha=2)
        else:
            c = ak.T @ a[:, k0:]  # C[K, K..], bk × (d − k0)
            c.diagonal().zero_()
            s = s + _sq(c[:, :bk]) + 2 * _sq(c[:, bk:])
            if need_grad:
                ga[:, k0:k1].addmm_(a[:, k0:], c.T, alpha=4)
                if k1 < d:
                    ga[:, k1:].addmm_(ak, c[:, bk:], alpha=4)
    return s.to(a.dtype), ga, gb


class _OffdiagTiles(torch.autograd.Function):
    @staticmethod
    def forward(a: Any, b: Any, tile: int, need_grad: bool) -> Any:  # type: ignore[override]
        return _offdiag_tiles(a, b, tile, need_grad)

    @staticmethod
    def setup_context(ctx: Any, inputs: Any, output: Any) -> None:
        ctx.has_b = inputs[1] is not None
        ctx.save_for_backward(output[1], output[2], inputs[0], inputs[1])
        ctx.mark_non_differentiable(output[1], output[2])

    @staticmethod
    def backward(ctx: Any, g: Any, _ga: Any, _gb: Any) -> Any:  # type: ignore[override]
        from .. import _ops

        ga, gb, a, b = ctx.saved_tensors
        grads = (ga * g, gb * g if ctx.has_b else None)
        return _ops.refuse_double_backward("the tiled Barlow Twins / VICReg statistic (use tile=None)", grads, (a, b)) + (None, None)


def offdiag_sq(a: Any, b: Optional[Any] = None, tile: Optional[int] = FEAT_TILE) -> Any:
    """S = Σ_{k≠l} C_kl², C = aᵀb (``b`` None: aᵀa); tiled over ``tile`` feature rows, or dense for ``tile=None``."""
    if tile is None:
        return _offdiag_dense(a, b)
    need = torch.is_grad_enabled() and (a.requires_grad or (b is not None and b.requires_grad))
    return _OffdiagTiles.apply(a, b, int(tile), need)[0]


Offdiag = Callable[[Any, Optional[Any]], Any]


def _tiled(tile: Optional[int]) -> Offdiag:
    return lambda a, b: offdiag_sq(a, b, tile)


# ----------------------------------------------------------------- the losses


def batch_standardize(z: Any, eps: float = BN_EPS) -> Any:
    """(z − mean) / √(var + eps) per feature, biased variance (BatchNorm1d without affine, training mode)."""
    zc = z - z.mean(0)
    return zc * torch.rsqrt(zc.square().mean(0) + eps)


def barlow_twins_from(za: Any, zb: Any, lambda_: float, offdiag: Offdiag) -> Any:
    n = za.shape[0]
    a, b = batch_standardize(za), batch_standardize(zb)
    diag = (a * b).sum(0) / n
    return (1 - diag).square().sum() + lambda_ * offdiag(a, b) / (n * n)


def _var_cov(x: Any, eps: float, offdiag: Offdiag) -> Tuple[Any, Any]:
    n, d = x.shape
    xc = x - x.mean(0)
    std = torch.sqrt(xc.square().sum(0) / (n - 1) + eps)
    return F.relu(1 - std).mean(), offdiag(xc, None) / ((n - 1) ** 2 * d)


def vicreg_from(za: Any, zb: Any, sim: float, var: float, cov: float, eps: float, offdiag: Offdiag) -> Any:
    inv = (za - zb).square().mean()
    va, ca = _var_cov(za, eps, offdiag)
    vb, cb = _var_cov(zb, eps, offdiag)
    return sim * inv + var * (va + vb) / 2 + cov * (ca + cb)


def vicreg_graph_from(
    z: Any, rows: Any, cols: Any, weights: Optional[Any], sim: float, var: float, cov: float, eps: float, views: int,
    offdiag: Offdiag,
) -> Any:
    n, d = z.shape
    diff = (z[rows] - z[cols]).square().sum(1)
    inv = (diff if weights is None else diff * weights).sum() / (n * d)
    m = n // views
    vs, cs = [], []
    for v in range(views):
        vv, cc = _var_cov(z[v * m : (v + 1) * m], eps, offdiag)
        vs.append(vv)
        cs.append(cc)
    return sim * inv + var * sum(vs) / views + cov * sum(cs)


def barlow_twins_loss(z_a: Any, z_b: Any, lambda_: float = 0.0051, tile: Optional[int] = FEAT_TILE) -> Any:
    """Σ_k (1 − C_kk)² + λ Σ_{k≠l} C_kl², C = âᵀb̂/N on batch-standardised views."""
    return barlow_twins_from(z_a, z_b, lambda_, _tiled(tile))


def vicreg_loss(
    z_a: Any, z_b: Any, sim: float = 25.0, var: float = 25.0, cov: float = 1.0, eps: float = 1e-4,
    tile: Optional[int] = FEAT_TILE,
) -> Any:
    """sim·MSE(z_a, z_b) + var·(v(z_a) + v(z_b))/2 + cov·(c(z_a) + c(z_b))."""
    return vicreg_from(z_a, z_b, sim, var, cov, eps, _tiled(tile))


def vicreg_graph_loss(
    z: Any, graph: Any, sim: float = 25.0, var: float = 25.0, cov: float = 1.0, eps: float = 1e-4, *, views: int = 1,
    tile: Optional[int] = FEAT_TILE,
) -> Any:
    """sim·Σ_ij G_ij‖z_i − z_j‖²/(N·d) + var·mean_v v(z_v) + cov·Σ_v c(z_v) over ``views`` equal row blocks z_v."""
    rows, cols, w = graph_edges(graph, z.shape[0], z.device, z.dtype)
    return vicreg_graph_from(z, rows, cols, w, sim, var, cov, eps, views, _tiled(tile))


# ----------------------------------------------------------------- graphs


def graph_edges(graph: Any, n: int, device: Any, dtype: Any) -> Tuple[Any, Any, Optional[Any]]:
    """(rows, cols, weights|None) of a graph given as a scipy sparse matrix, a torch sparse
    tensor (COO or CSR), a pair / triple ``(rows, cols[, weights])`` or an (E, 2) index array."""
    from ..errors import DTypeError, ShapeError

    rows = cols = w = None
    try:
        import scipy.sparse as sp

        is_sp = sp.issparse(graph)
    except ImportError:  # pragma: no cover
        is_sp = False
    if is_sp:
        if graph.shape != (n, n):
            raise ShapeError(f"graph must be ({n}, {n}) to match the rows of z, got {graph.shape}")
        coo = graph.tocoo()
        rows = torch.from_numpy(coo.row.astype(np.int64))
        cols = torch.from_numpy(coo.col.astype(np.int64))
        w = torch.from_numpy(np.asarray(coo.data, dtype=np.float64))
    elif isinstance(graph, torch.Tensor) and graph.layout != torch.strided:
        if tuple(graph.shape) != (n, n):
            raise ShapeError(f"graph must be ({n}, {n}) to match the rows of z, got {tuple(graph.shape)}")
        g = graph.to_sparse_coo() if graph.layout != torch.sparse_coo else graph
        g = g.coalesce()
        rows, cols = g.indices()[0], g.indices()[1]
        w = g.values()
    elif isinstance(graph, (tuple, list)) and len(graph) in (2, 3):
        rows, cols = _index(graph[0], "graph rows"), _index(graph[1], "graph cols")
        if len(graph) == 3:
            w = graph[2] if isinstance(graph[2], torch.Tensor) else torch.as_tensor(np.asarray(graph[2], dtype=np.float64))
            if w.is_complex() or not (w.is_floating_point() or w.dtype in (torch.int32, torch.int64)):
                raise DTypeError(f"graph weights must be real numbers, got dtype {w.dtype}")
    else:
        e = _index(graph, "graph")
        if e.dim() != 2 or e.shape[1] != 2:
            raise ShapeError(
                "graph must be a scipy sparse matrix, a torch sparse tensor, (rows, cols[, weights]) or an (E, 2) "
                f"index array; got {type(graph).__name__} of shape {tuple(getattr(graph, 'shape', ()))}"
            )
        rows, cols = e[:, 0], e[:, 1]
    if rows.dim() != 1 or rows.shape != cols.shape or (w is not None and tuple(w.shape) != tuple(rows.shape)):
        raise ShapeError("graph rows, cols (and weights) must be 1-D and of the same length")
    if not torch.compiler.is_compiling() and rows.numel() and (
        int(rows.min()) < 0 or int(cols.min()) < 0 or int(rows.max()) >= n or int(cols.max()) >= n
    ):
        raise ShapeError(f"graph indices must lie in [0, {n}) (the rows of z)")
    rows, cols = rows.to(device=device, dtype=torch.long), cols.to(device=device, dtype=torch.long)
    if w is not None:
        w = w.to(device=device, dtype=dtype)
    return rows, cols, w


def _index(v: Any, name: str) -> Any:
    from ..errors import DTypeError

    t = v if isinstance(v, torch.Tensor) else torch.as_tensor(np.asarray(v))
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise DTypeError(f"{name} must be integer indices, got dtype {t.dtype}")
    return t
