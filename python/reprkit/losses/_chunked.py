"""Chunked torch implementations (any device) with recomputing backwards, and the backend switch.

The Rust kernels' design in torch ops: the forward walks row chunks of the logit
matrix, keeps the inputs and one log-sum-exp per row (O(n)), and the backward
recomputes each chunk's logits; no n×m matrix is held, memory is
O(chunk·m + (n + m)·d). This is what non-CPU tensors run, and what CPU tensors
run with ``backend="torch"``. :mod:`reprkit.reference` stays the dense oracle.
"""

from __future__ import annotations

from typing import Any, Optional

from .. import _ops
from .._ops import torch
from .._validation import check_choice
from ..errors import InvalidParameterError

BACKENDS = ("auto", "rust", "torch")

# Logit entries per chunk (64 MB of float32), as reference.multimodal.
CHUNK_ENTRIES = 1 << 24


def use_rust(backend: str, t: Any) -> bool:
    """Whether a loss runs its Rust kernel: ``"auto"`` on CPU tensors, ``"rust"`` (CPU only), never for ``"torch"``."""
    check_choice("backend", backend, BACKENDS)
    cpu = t.device.type == "cpu"
    if backend == "rust" and not cpu:
        raise InvalidParameterError(f"backend='rust' needs CPU tensors, got a tensor on {t.device}; use 'auto' or 'torch'")
    return cpu and backend != "torch"


def chunk_rows(m: int, chunk: Optional[int] = None) -> int:
    return max(1, int(chunk) if chunk else CHUNK_ENTRIES // max(1, m))


def _blank(s: Any, r0: int, mask: str, tail: int) -> Any:
    """Rows r0.. of the logits with the invalid columns at −∞ (the Rust kernel's masks)."""
    if mask == "all":
        return s
    rows = torch.arange(s.shape[0], device=s.device)
    if mask == "nodiag":
        bad = torch.zeros_like(s, dtype=torch.bool)
        bad[rows, rows + r0] = True
        return s.masked_fill(bad, float("-inf"))
    # "own_and_tail": column i (own key) and the columns ≥ tail (the queue)
    cols = torch.arange(s.shape[1], device=s.device)
    bad = (cols[None, :] < tail) & (cols[None, :] != (rows + r0)[:, None])
    return s.masked_fill(bad, float("-inf"))


class XentRows(torch.autograd.Function):
    """Per-row softmax cross-entropy ℓ_i = lse_{j valid} s_ij − s_{i,t_i}, s = scale·q·kᵀ (k None: q), in row chunks.

    Returns (ℓ (n,), lse (n,)); the backward recomputes the chunks from the saved lse:
    ∂ℓ_i/∂s_ij = softmax_ij − [j = t_i].
    """

    @staticmethod
    def forward(q: Any, k: Optional[Any], scale: float, targets: Any, mask: str, tail: int, chunk: int) -> Any:  # type: ignore[override]
        kk = q if k is None else k
        n = q.shape[0]
        lse = q.new_empty(n)
        for r0 in range(0, n, chunk):
            r1 = min(n, r0 + chunk)
            lse[r0:r1] = torch.logsumexp(_blank(scale * (q[r0:r1] @ kk.T), r0, mask, tail), 1)
        tgt = scale * (q * kk[targets]).sum(1)
        return lse - tgt, lse

    @staticmethod
    def setup_context(ctx: Any, inputs: Any, output: Any) -> None:
        q, k, scale, targets, mask, tail, chunk = inputs
        ctx.has_k, ctx.scale, ctx.mask, ctx.tail, ctx.chunk = k is not None, scale, mask, tail, chunk
        ctx.save_for_backward(q, k, targets, output[1])
        ctx.mark_non_differentiable(output[1])

    @staticmethod
    def backward(ctx: Any, g: Any, _lse: Any) -> Any:  # type: ignore[override]
        q0, k0, targets, lse = ctx.saved_tensors
        q, k, g = _ops.detached(q0, k0, g)
        kk = q if k is None else k
        n, chunk, scale = q.shape[0], ctx.chunk, ctx.scale
        gq = torch.empty_like(q)
        gk = torch.zeros_like(kk)
        for r0 in range(0, n, chunk):
            r1 = min(n, r0 + chunk)
            s = _blank(scale * (q[r0:r1] @ kk.T), r0, ctx.mask, ctx.tail)
            c = torch.exp(s - lse[r0:r1, None]) * g[r0:r1, None]
            rows = torch.arange(r1 - r0, device=q.device)
            c[rows, targets[r0:r1]] -= g[r0:r1]
            gq[r0:r1] = scale * (c @ kk)
            gk += scale * (c.T @ q[r0:r1])
        if not ctx.has_k:
            grads = (gq + gk, None)
        else:
            grads = (gq, gk)
        return _ops.refuse_double_backward("the softmax losses (chunked torch path)", grads, (q0, k0)) + (None,) * 5

    vmap = _ops.no_vmap("the softmax losses (chunked torch path)")


def xent_rows(q: Any, k: Optional[Any], scale: float, targets: Any, mask: str, tail: int, chunk: Optional[int] = None) -> Any:
    """Per-row terms of :class:`XentRows` (O(chunk·m) memory)."""
    m = q.shape[0] if k is None else k.shape[0]
    return XentRows.apply(q, k, scale, targets, mask, tail, chunk_rows(m, chunk))[0]
