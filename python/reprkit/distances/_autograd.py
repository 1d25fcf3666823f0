"""Autograd Function for pairwise distances on CPU tensors (Rust forward and backward)."""

from __future__ import annotations

from typing import Any, Optional

from .. import _core
from .._bridge import as_numpy, as_tensor, compute_dtype, torch, unbroadcast

from torch.autograd.function import once_differentiable


class PairwiseDistances(torch.autograd.Function):
    """D = pairwise_distances(x, y); backward is the analytic Rust kernel."""

    @staticmethod
    def forward(ctx: Any, x: Any, y: Optional[Any], metric: str, n_threads: int) -> Any:  # type: ignore[override]
        cd = compute_dtype(x)
        xa = as_numpy(x, cd)
        ya = None if y is None else as_numpy(y, cd)
        dist = _core.pairwise_distances(xa, ya, metric, n_threads)
        ctx.metric, ctx.n_threads, ctx.same = metric, n_threads, y is None
        ctx.arrays = (xa, ya, dist)
        ctx.in_dtypes = (x.dtype, None if y is None else y.dtype)
        return as_tensor(dist, x)

    @staticmethod
    @once_differentiable  # the Rust backward is not itself differentiable: say so on double backward
    def backward(ctx: Any, grad: Any) -> Any:  # type: ignore[override]
        xa, ya, dist = ctx.arrays
        need_x, need_y = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        if not (need_x or need_y):
            return None, None, None, None
        g = as_numpy(unbroadcast(grad), torch.float64 if dist.dtype.name == "float64" else torch.float32)
        gx, gy = _core.pairwise_distances_backward(xa, ya, dist, g, ctx.metric, ctx.n_threads)
        tx = torch.from_numpy(gx).to(ctx.in_dtypes[0]) if need_x else None
        ty = torch.from_numpy(gy).to(ctx.in_dtypes[1]) if (need_y and gy is not None) else None
        return tx, ty, None, None
