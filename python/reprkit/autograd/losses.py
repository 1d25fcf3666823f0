"""Autograd Functions for the losses on CPU tensors: Rust forward and backward.

Each forward keeps only what the Rust backward needs — numpy views of the
inputs, labels, and the kernel's small state (mined triplets, per-row
log-sum-exp values) — never a B×B matrix. Inputs arrive in float32/float64
(the functional layer upcasts half precision); backward returns the gradient
for the upstream scalar ``g`` as ``g · ∂L/∂x``.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from .. import _core
from ._bridge import as_numpy, torch


def _scalar(v: float, like: Any) -> Any:
    return torch.tensor(v, dtype=like.dtype)


def _grad(g: Any, a: Optional[np.ndarray], need: bool) -> Any:
    if not need or a is None:
        return None
    ga = torch.from_numpy(a)
    if not g.requires_grad and g.numel() == 1 and float(g) == 1.0:
        return ga  # loss.backward(): the kernel's gradient as is, no B×d copy
    return ga * g


class ContrastiveLossFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Any, rx: Optional[Any], labels: np.ndarray, rlabels: Optional[np.ndarray], margin: float, n_threads: int) -> Any:  # type: ignore[override]
        xa = as_numpy(x)
        ra = None if rx is None else as_numpy(rx)
        loss = _core.contrastive_loss(xa, labels, ra, rlabels, margin, False, n_threads)
        ctx.args = (xa, labels, ra, rlabels, margin, n_threads)
        return _scalar(loss, x)

    @staticmethod
    def backward(ctx: Any, g: Any) -> Any:  # type: ignore[override]
        xa, labels, ra, rlabels, margin, n_threads = ctx.args
        gx, gr = _core.contrastive_loss(xa, labels, ra, rlabels, margin, True, n_threads)
        return _grad(g, gx, ctx.needs_input_grad[0]), _grad(g, gr, ctx.needs_input_grad[1]), None, None, None, None


class TripletLossFn(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, x: Any, rx: Optional[Any], labels: np.ndarray, rlabels: Optional[np.ndarray],
        margin: float, mining: str, squared: bool, soft: bool, n_threads: int,
    ) -> Any:
        xa = as_numpy(x)
        ra = None if rx is None else as_numpy(rx)
        loss, triplets, norm = _core.triplet_loss(xa, labels, ra, rlabels, margin, mining, squared, soft, None, 0.0, n_threads)
        ctx.args = (xa, labels, ra, rlabels, margin, mining, squared, soft, triplets, norm, n_threads)
        return _scalar(loss, x)

    @staticmethod
    def backward(ctx: Any, g: Any) -> Any:  # type: ignore[override]
        gx, gr = _core.triplet_loss(*ctx.args)
        return (_grad(g, gx, ctx.needs_input_grad[0]), _grad(g, gr, ctx.needs_input_grad[1])) + (None,) * 7


class LiftedLossFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Any, labels: np.ndarray, margin: float, hard: bool, n_threads: int) -> Any:  # type: ignore[override]
        xa = as_numpy(x)
        loss, lse, dl, nearest = _core.lifted_loss(xa, labels, margin, hard, None, None, None, n_threads)
        ctx.args = (xa, labels, margin, hard, lse, dl, nearest, n_threads)
        return _scalar(loss, x)

    @staticmethod
    def backward(ctx: Any, g: Any) -> Any:  # type: ignore[override]
        gx = _core.lifted_loss(*ctx.args)
        return _grad(g, gx, ctx.needs_input_grad[0]), None, None, None, None


class SoftmaxXentFn(torch.autograd.Function):
    """L = mean_i [logsumexp_{j valid} s_ij − s_{i,t_i}], s = scale·q·kᵀ (k None: q itself)."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, q: Any, k: Optional[Any], scale: float, targets: np.ndarray, mask: str, tail: int, n_threads: int
    ) -> Any:
        qa = as_numpy(q)
        ka = None if k is None else as_numpy(k)
        if any(ctx.needs_input_grad[:2]):
            # The gradient comes out of the forward's tiles (O((n+m)·d) kept, no recomputation).
            loss, gq, gk = _core.xent_loss_fused(qa, ka, scale, targets, mask, tail, n_threads)
            ctx.grads = (gq, gk)
            return _scalar(loss, q)
        loss, lse = _core.xent_loss(qa, ka, scale, targets, mask, tail, None, n_threads)
        ctx.args = (qa, ka, scale, targets, mask, tail, lse, n_threads)
        ctx.grads = None
        return _scalar(loss, q)

    @staticmethod
    def backward(ctx: Any, g: Any) -> Any:  # type: ignore[override]
        gq, gk = ctx.grads if ctx.grads is not None else _core.xent_loss(*ctx.args)
        return (_grad(g, gq, ctx.needs_input_grad[0]), _grad(g, gk, ctx.needs_input_grad[1])) + (None,) * 5
