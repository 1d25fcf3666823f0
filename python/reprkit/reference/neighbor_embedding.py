"""Pure-torch SNE-family minibatch loss (the oracle of :mod:`reprkit.losses.neighbor_embedding`
and its path on non-CPU devices).

* :func:`neighbor_embedding_loss` — the dense formula, autograd through it (O(B²) memory: the oracle);
* :func:`neighbor_embedding_loss_chunked` — the same loss and its gradient in row chunks
  (memory linear in B), the same two passes as the Rust kernel;
* :func:`batch_affinities` — per-batch perplexity-calibrated P in row chunks (any device).

Kernels w(d²): Student-t ``(1 + d²/ν)^{−(ν+1)/2}``, Gaussian ``exp(−d²)``; normalisation
``joint`` q_ij = w_ij / Σ_{k≠l} w_kl, ``conditional`` q_{j|i} = w_ij / Σ_{k≠i} w_ik. See
:func:`reprkit.losses.tsne_loss` for the loss.
"""

from __future__ import annotations

import math
from typing import Any, Tuple

from .._ops import torch


def log_kernel(d2: Any, kernel: str, dof: float) -> Any:
    """log w(d²) (elementwise)."""
    if kernel == "gaussian":
        return -d2
    return -0.5 * (dof + 1.0) * torch.log1p(d2 / dof)


def _h(d2: Any, kernel: str, dof: float) -> Any:
    """h with ∂(−log w_ij)/∂y_i = h_ij (y_i − y_j)."""
    if kernel == "gaussian":
        return torch.full_like(d2, 2.0)
    return (dof + 1.0) / (dof + d2)


def _sqdist(a: Any, b: Any) -> Any:
    return (a.unsqueeze(1) - b.unsqueeze(0)).pow(2).sum(-1)


def neighbor_embedding_loss(
    p: Any, y: Any, kernel: str = "student", dof: float = 1.0, normalization: str = "joint", exaggeration: float = 1.0
) -> Any:
    """Dense KL(P‖Q) for a dense (B, B) P with a zero diagonal (already normalised as the
    loss expects: summing to 1 for ``joint``, rows summing to 1 or 0 for ``conditional``)."""
    n = y.shape[0]
    off = ~torch.eye(n, dtype=torch.bool, device=y.device)
    lw = log_kernel(_sqdist(y, y), kernel, dof)
    lw = lw.masked_fill(~off, float("-inf"))
    p = p.to(y.dtype)
    plogp = torch.where(p > 0, p * torch.log(torch.where(p > 0, p, torch.ones_like(p))), torch.zeros_like(p))
    att = (p * lw.masked_fill(~off, 0.0)).sum(1)
    if normalization == "joint":
        return plogp.sum() - exaggeration * att.sum() + p.sum() * torch.logsumexp(lw.reshape(-1), 0)
    mass = p.sum(1)
    rows = mass > 0
    per = plogp.sum(1) - exaggeration * att + mass * torch.logsumexp(lw, 1)
    return per[rows].sum() / max(int(rows.sum()), 1)


def _coo_terms(rows: Any, cols: Any, vals: Any, y: Any, kernel: str, dof: float) -> Tuple[Any, Any]:
    d2 = (y[rows] - y[cols]).pow(2).sum(1)
    return log_kernel(d2, kernel, dof), d2


class _Chunked(torch.autograd.Function):
    """Loss and gradient of the sparse-P loss in row chunks; the gradient is computed in the
    forward (fused), so backward keeps only O(B·d) of it."""

    @staticmethod
    def forward(ctx: Any, y: Any, rows: Any, cols: Any, vals: Any, kernel: str, dof: float, norm: str, alpha: float, chunk: int) -> Any:  # type: ignore[override]
        n, d = y.shape
        yd = y.detach()
        lse = []
        rep = torch.zeros_like(yd)
        for s in range(0, n, chunk):
            yc = yd[s : s + chunk]
            lw = log_kernel(_sqdist(yc, yd), kernel, dof)
            idx = torch.arange(s, s + yc.shape[0], device=y.device)
            lw[torch.arange(yc.shape[0], device=y.device), idx] = float("-inf")
            m = lw.max(1).values
            e = torch.exp(lw - m[:, None])
            lse.append(m + torch.log(e.sum(1)))
            if norm == "joint":
                c = e * _h(_sqdist(yc, yd), kernel, dof)
                rep[s : s + chunk] = c.sum(1, keepdim=True) * yc - c @ yd
                rep[s : s + chunk] *= torch.exp(m)[:, None]  # unnormalised: scaled by 1/Z below
        lz = torch.cat(lse)
        lw_nz, _ = _coo_terms(rows, cols, vals, yd, kernel, dof)
        pos = vals > 0
        plogp = torch.where(pos, vals * torch.log(torch.where(pos, vals, torch.ones_like(vals))), torch.zeros_like(vals))
        mass = torch.zeros(n, dtype=yd.dtype, device=y.device).index_add_(0, rows, vals)
        if norm == "joint":
            log_z = torch.logsumexp(lz, 0)
            total = mass.sum()
            loss = plogp.sum() - alpha * (vals * lw_nz).sum() + total * log_z
            grad = -2.0 * total * torch.exp(-log_z) * rep
            denom = 1.0
        else:
            has = mass > 0
            r = max(int(has.sum()), 1)
            ent = torch.zeros(n, dtype=yd.dtype, device=y.device).index_add_(0, rows, plogp)
            att = torch.zeros(n, dtype=yd.dtype, device=y.device).index_add_(0, rows, vals * lw_nz)
            loss = torch.where(has, ent - alpha * att + mass * lz, torch.zeros_like(lz)).sum() / r
            grad = torch.zeros_like(yd)
            for s in range(0, n, chunk):
                yc = yd[s : s + chunk]
                d2 = _sqdist(yc, yd)
                lw = log_kernel(d2, kernel, dof)
                c = (mass[s : s + chunk, None] * torch.exp(lw - lz[s : s + chunk, None]) + mass[None, :] * torch.exp(lw - lz[None, :]))
                c = c * _h(d2, kernel, dof)
                c[torch.arange(yc.shape[0], device=y.device), torch.arange(s, s + yc.shape[0], device=y.device)] = 0.0
                grad[s : s + chunk] = -(c.sum(1, keepdim=True) * yc - c @ yd)
            denom = float(r)
        diff = yd[rows] - yd[cols]
        _, d2nz = _coo_terms(rows, cols, vals, yd, kernel, dof)
        a = (alpha * vals * _h(d2nz, kernel, dof))[:, None] * diff
        grad = grad.index_add(0, rows, a).index_add(0, cols, -a) / denom
        ctx.save_for_backward(grad)
        return loss

    @staticmethod
    def backward(ctx: Any, g: Any) -> Any:  # type: ignore[override]
        (grad,) = ctx.saved_tensors
        return (grad * g,) + (None,) * 8


def neighbor_embedding_loss_chunked(
    rows: Any, cols: Any, vals: Any, y: Any, kernel: str = "student", dof: float = 1.0, normalization: str = "joint",
    exaggeration: float = 1.0, chunk: int = 1024,
) -> Any:
    """The loss for P as COO (rows, cols, vals; no diagonal; normalised as in
    :func:`neighbor_embedding_loss`), in row chunks: memory O(chunk·B + B·d + nnz)."""
    return _Chunked.apply(y, rows, cols, vals, kernel, dof, normalization, exaggeration, chunk)


def calibrate(d: Any, perplexity: float, steps: int = 100) -> Any:
    """Conditional affinities p_{j|i} ∝ exp(−β_i d_ij) per row of ``d`` (squared distances of
    each row's neighbours), β_i by bisection in log space so that exp(H_i) = perplexity."""
    d = d - d.min(1, keepdim=True).values
    target = math.log(perplexity)
    lo = torch.full((d.shape[0], 1), -50.0, dtype=d.dtype, device=d.device)
    hi = torch.full_like(lo, 50.0)
    for _ in range(steps):
        mid = 0.5 * (lo + hi)
        p = torch.softmax(-torch.exp(mid) * d, 1)
        h = -(p * torch.log(p.clamp_min(1e-300))).sum(1, keepdim=True)
        up = h > target  # entropy too high: raise β
        lo = torch.where(up, mid, lo)
        hi = torch.where(up, hi, mid)
    return torch.softmax(-torch.exp(0.5 * (lo + hi)) * d, 1)


def batch_affinities(x: Any, perplexity: float, n_neighbors: int, normalization: str = "joint", chunk: int = 1024) -> Tuple[Any, Any, Any]:
    """COO (rows, cols, vals) of a batch's P: each row's ``n_neighbors`` nearest rows (squared
    Euclidean), calibrated to ``perplexity``; ``joint``: (P_cond + P_condᵀ) / Σ, ``conditional``: P_cond."""
    x = x.detach().to(torch.float64)
    n = x.shape[0]
    idx, pc = [], []
    for s in range(0, n, chunk):
        d2 = _sqdist(x[s : s + chunk], x)
        d2[torch.arange(d2.shape[0], device=x.device), torch.arange(s, s + d2.shape[0], device=x.device)] = float("inf")
        dk, ik = torch.topk(d2, n_neighbors, dim=1, largest=False)
        idx.append(ik)
        pc.append(calibrate(dk, perplexity))
    ik, pk = torch.cat(idx), torch.cat(pc)
    rows = torch.arange(n, device=x.device).repeat_interleave(n_neighbors)
    cols, vals = ik.reshape(-1), pk.reshape(-1)
    if normalization == "conditional":
        return rows, cols, vals
    sp = torch.sparse_coo_tensor(torch.stack([torch.cat([rows, cols]), torch.cat([cols, rows])]), torch.cat([vals, vals]), (n, n), check_invariants=False).coalesce()
    r, c = sp.indices()
    v = sp.values()
    return r, c, v / v.sum()
