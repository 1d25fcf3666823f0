"""Pure-torch softmax-type losses: the any-device (CUDA) path and the test oracle.

Written for clarity: they build the full distance or similarity matrix and let
autograd differentiate it. They follow exactly the formulas and conventions of
the Rust kernels (see :mod:`reprkit.losses` for the documented formulas).
Inputs are assumed validated: float tensors, int64 labels on the same device.
"""

from __future__ import annotations

from typing import Any, Optional, Tuple

from .._torch import require_torch

torch = require_torch()
F = torch.nn.functional


def npair_loss(anchors: Any, positives: Any, l2_reg: float = 0.0, reduction: str = "mean") -> Any:
    """1/N Σ_i log(1 + Σ_{j≠i} exp(a_i·p_j − a_i·p_i)) + l2_reg·(mean‖a_i‖² + mean‖p_i‖²)."""
    s = anchors @ positives.T
    loss = F.cross_entropy(s, torch.arange(s.shape[0], device=s.device), reduction=reduction)
    if l2_reg:
        loss = loss + l2_reg * ((anchors**2).sum(1).mean() + (positives**2).sum(1).mean())
    return loss


def ntxent_loss(z1: Any, z2: Any, temperature: float = 0.1, reduction: str = "mean") -> Any:
    """SimCLR: −log softmax of each view's partner over the other 2N−1 views, s = cos/τ; mean over 2N."""
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    n = z1.shape[0]
    s = (z @ z.T) / temperature
    eye = torch.eye(2 * n, dtype=torch.bool, device=z.device)
    s = s.masked_fill(eye, float("-inf"))
    idx = torch.arange(n, device=z.device)
    return F.cross_entropy(s, torch.cat([idx + n, idx]), reduction=reduction)


def infonce_loss(
    query: Any, positive_key: Any, negative_keys: Optional[Any] = None, temperature: float = 0.1, reduction: str = "mean"
) -> Any:
    """−log softmax of q·k⁺ against the negatives (other rows' keys, or the queue), unit vectors, /τ."""
    q = F.normalize(query, dim=1)
    k = F.normalize(positive_key, dim=1)
    if negative_keys is None:
        logits = q @ k.T
        target = torch.arange(q.shape[0], device=q.device)
    else:
        nk = F.normalize(negative_keys, dim=1)
        logits = torch.cat([(q * k).sum(1, keepdim=True), q @ nk.T], 1)
        target = torch.zeros(q.shape[0], dtype=torch.long, device=q.device)
    return F.cross_entropy(logits / temperature, target, reduction=reduction)



# ----------------------------------------------------------------------------- SupCon (Khosla et al. 2020)


def supcon_rows(embeddings: Any, labels: Optional[Any] = None) -> Tuple[Any, Any]:
    """The rows and group ids SupCon works on.

    * (B, d) embeddings with labels (B,): the rows themselves, grouped by label;
    * (B, V, d) features (V views of each sample, the authors' layout): the B·V
      rows ``cat(unbind(features, 1))`` (view-major), grouped by ``labels``
      repeated over the views, or without labels by sample (SimCLR's positives).
    """
    if embeddings.dim() == 3:
        b, v, d = embeddings.shape
        rows = embeddings.transpose(0, 1).reshape(b * v, d)
        base = torch.arange(b, device=embeddings.device) if labels is None else labels
        return rows, base.repeat(v)
    return embeddings, labels


def supcon_loss(embeddings: Any, labels: Optional[Any] = None, temperature: float = 0.1) -> Any:
    """The definition on the dense B×B matrix (the test oracle). u = normalise(rows), s = u·uᵀ/τ,
    P(i) = other rows of i's group; L = mean over rows with P(i) ≠ ∅ of
    [logsumexp_{j≠i} s_ij − mean_{p∈P(i)} s_ip]; 0 when no row has a positive."""
    z, groups = supcon_rows(embeddings, labels)
    u = F.normalize(z, dim=1)
    n = u.shape[0]
    s = (u @ u.T) / temperature
    eye = torch.eye(n, dtype=torch.bool, device=u.device)
    pos = (groups[:, None] == groups[None, :]) & ~eye
    cnt = pos.sum(1)
    active = cnt > 0
    if not bool(active.any()):
        return (u * 0).sum()
    lse = torch.logsumexp(s.masked_fill(eye, float("-inf")), 1)
    mean_pos = (s * pos).sum(1) / cnt.clamp(min=1)
    return (lse - mean_pos)[active].mean()


def supcon_loss_loop(embeddings: Any, labels: Optional[Any] = None, temperature: float = 0.1) -> Any:
    """The definition anchor by anchor, positive by positive (a second oracle, for small batches)."""
    z, groups = supcon_rows(embeddings, labels)
    u = F.normalize(z, dim=1)
    n = u.shape[0]
    terms = []
    for i in range(n):
        others = [j for j in range(n) if j != i]
        pos = [p for p in others if int(groups[p]) == int(groups[i])]
        if not pos:
            continue
        denom = torch.logsumexp(torch.stack([u[i] @ u[j] / temperature for j in others]), 0)
        terms.append(sum(denom - u[i] @ u[p] / temperature for p in pos) / len(pos))
    if not terms:
        return (u * 0).sum()
    return torch.stack(terms).mean()


class _SupConChunked(torch.autograd.Function):
    """SupCon on unit rows in row chunks: O(chunk·B + B·d) memory on any device; the backward recomputes
    the chunks from the per-row log-sum-exps (no B×B matrix is kept)."""

    @staticmethod
    def forward(u: Any, groups: Any, scale: float, chunk: int) -> Any:  # type: ignore[override]
        n = u.shape[0]
        lse = u.new_empty(n)
        pos_sum = u.new_empty(n)
        cnt = u.new_empty(n)
        for r0 in range(0, n, chunk):
            r1 = min(r0 + chunk, n)
            s, pos = _supcon_chunk(u, groups, scale, r0, r1)
            lse[r0:r1] = torch.logsumexp(s, 1)
            pos_sum[r0:r1] = torch.where(pos, s, 0).sum(1)
            cnt[r0:r1] = pos.sum(1)
        active = cnt > 0
        a = active.sum().clamp(min=1)
        per = torch.where(active, lse - pos_sum / cnt.clamp(min=1), 0)
        return per.sum() / a, lse, cnt

    @staticmethod
    def setup_context(ctx: Any, inputs: Any, output: Any) -> None:
        u, groups, scale, chunk = inputs
        ctx.scale, ctx.chunk = scale, chunk
        ctx.save_for_backward(u, groups, output[1], output[2])
        ctx.mark_non_differentiable(output[1], output[2])

    @staticmethod
    def backward(ctx: Any, g: Any, _l: Any, _c: Any) -> Any:  # type: ignore[override]
        u, groups, lse, cnt = ctx.saved_tensors
        scale, chunk, n = ctx.scale, ctx.chunk, u.shape[0]
        active = cnt > 0
        inv_a = 1.0 / active.sum().clamp(min=1).to(u.dtype)
        a = active.to(u.dtype) * inv_a
        b = a / cnt.clamp(min=1)
        lse_m = torch.where(active, lse, float("inf"))  # rows outside A are no anchors: e^{s − ∞} = 0
        grad = torch.zeros_like(u)
        for r0 in range(0, n, chunk):
            r1 = min(r0 + chunk, n)
            s, pos = _supcon_chunk(u, groups, scale, r0, r1)
            c = torch.exp(s - lse_m[r0:r1, None]) * a[r0:r1, None] - pos * b[r0:r1, None]
            grad[r0:r1] += c @ u
            grad += c.T @ u[r0:r1]
        return grad * (scale * g), None, None, None


def _supcon_chunk(u: Any, groups: Any, scale: float, r0: int, r1: int) -> Tuple[Any, Any]:
    """Rows r0..r1 of s = scale·u·uᵀ with the self column at −∞, and their positives' mask."""
    s = (u[r0:r1] @ u.T) * scale
    rows = torch.arange(r1 - r0, device=u.device)
    self_col = torch.zeros_like(s, dtype=torch.bool)
    self_col[rows, rows + r0] = True
    s = s.masked_fill(self_col, float("-inf"))
    pos = (groups[r0:r1, None] == groups[None, :]) & ~self_col
    return s, pos


def supcon_loss_chunked(embeddings: Any, labels: Optional[Any] = None, temperature: float = 0.1, chunk: int = 1024) -> Any:
    """:func:`supcon_loss` in row chunks with a recomputing backward: memory linear in B (the GPU path)."""
    z, groups = supcon_rows(embeddings, labels)
    u = F.normalize(z, dim=1)
    return _SupConChunked.apply(u, groups, 1.0 / temperature, int(chunk))[0]
