"""Pure-torch alignment and uniformity (Wang & Isola 2020): the any-device path and the test oracle.

:func:`alignment_loss` is elementwise. :func:`uniformity_loss` is the dense
definition over the i < j pairs; :func:`uniformity_loss_chunked` is the same
value in row chunks with a recomputing backward, so memory stays linear in the
batch on a GPU (it is what :mod:`reprkit.losses.hypersphere` runs off the CPU).
Inputs are assumed validated; no normalisation happens here.
"""

from __future__ import annotations

import math
from typing import Any

from .._torch import require_torch

torch = require_torch()


def alignment_loss(x: Any, y: Any, alpha: float = 2.0) -> Any:
    """mean_i ‖x_i − y_i‖^α (gradient 0 at x_i = y_i for every α > 0)."""
    d2 = ((x - y) ** 2).sum(1)
    if alpha == 2:
        return d2.mean()
    nz = d2 > 0
    return torch.where(nz, torch.where(nz, d2, 1).pow(alpha / 2), 0).mean()


def uniformity_loss(x: Any, t: float = 2.0) -> Any:
    """log mean_{i<j} e^{−t‖x_i − x_j‖²}, from the explicit pair differences (the oracle)."""
    n = x.shape[0]
    d2 = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    iu = torch.triu_indices(n, n, 1, device=x.device)
    return torch.logsumexp(-t * d2[iu[0], iu[1]], 0) - math.log(n * (n - 1) / 2)


def uniformity_loss_pdist(x: Any, t: float = 2.0) -> Any:
    """The authors' one-liner: ``torch.pdist(x).pow(2).mul(-t).exp().mean().log()`` (underflows far apart)."""
    return torch.pdist(x, p=2).pow(2).mul(-t).exp().mean().log()


class _UniformityChunked(torch.autograd.Function):
    @staticmethod
    def forward(x: Any, t: float, chunk: int) -> Any:  # type: ignore[override]
        n = x.shape[0]
        sq = (x * x).sum(1)
        lse = x.new_empty(n)
        for r0 in range(0, n, chunk):
            r1 = min(r0 + chunk, n)
            lse[r0:r1] = torch.logsumexp(_neg_t_d2(x, sq, t, r0, r1), 1)
        logz = torch.logsumexp(lse, 0)
        return logz - math.log(n * (n - 1)), logz

    @staticmethod
    def setup_context(ctx: Any, inputs: Any, output: Any) -> None:
        ctx.t, ctx.chunk = inputs[1], inputs[2]
        ctx.save_for_backward(inputs[0], output[1])
        ctx.mark_non_differentiable(output[1])

    @staticmethod
    def backward(ctx: Any, g: Any, _z: Any) -> Any:  # type: ignore[override]
        x, logz = ctx.saved_tensors
        t, chunk, n = ctx.t, ctx.chunk, x.shape[0]
        sq = (x * x).sum(1)
        grad = torch.empty_like(x)
        for r0 in range(0, n, chunk):
            r1 = min(r0 + chunk, n)
            e = torch.exp(_neg_t_d2(x, sq, t, r0, r1) - logz)
            grad[r0:r1] = e.sum(1, keepdim=True) * x[r0:r1] - e @ x
        # ∂U/∂x_i = −4t Σ_j e^{−tD_ij}/Z (x_i − x_j): both orders of each pair.
        return grad * (-4.0 * t * g), None, None


def _neg_t_d2(x: Any, sq: Any, t: float, r0: int, r1: int) -> Any:
    """Rows r0..r1 of −t‖x_i − x_j‖² (clamped at ≤ 0) with the self column at −∞."""
    v = (sq[r0:r1, None] + sq[None, :] - 2.0 * (x[r0:r1] @ x.T)).clamp(min=0) * (-t)
    rows = torch.arange(r1 - r0, device=x.device)
    self_col = torch.zeros_like(v, dtype=torch.bool)
    self_col[rows, rows + r0] = True
    return v.masked_fill(self_col, float("-inf"))


def uniformity_loss_chunked(x: Any, t: float = 2.0, chunk: int = 1024) -> Any:
    """:func:`uniformity_loss` in row chunks of the n×n matrix, backward recomputing them: O(chunk·n + n·d)."""
    return _UniformityChunked.apply(x, float(t), int(chunk))[0]


def hypersphere_loss(x: Any, y: Any, alpha: float = 2.0, t: float = 2.0) -> Any:
    """alignment(x, y) + (uniformity(x) + uniformity(y)) / 2."""
    return alignment_loss(x, y, alpha) + (uniformity_loss(x, t) + uniformity_loss(y, t)) / 2
