"""The local-anchor distributed forms of the softmax losses (see :mod:`reprkit.distributed` for the rule).

Rank r's anchors are its own rows; the references are the gathered rows, this rank's
first (:func:`reprkit.distributed.all_gather_local_first`), so the kernels' masks and
targets need no offset. L_r = W · Σ_{local anchors} w_i ℓ_i / Σ_{global} w_i
(``"sum"``: W · Σ_local w_i ℓ_i), hence Σ_r L_r = W · L.
"""

from __future__ import annotations

from typing import Any, Optional

from .. import distributed as D
from .._ops import torch
from . import _chunked

F = torch.nn.functional


def _local_sum(q: Any, k: Any, scale: float, targets: Any, mask: str, tail: int, rust: bool, n_jobs: Optional[int],
               w: Optional[Any]) -> Any:
    """Σ_i w_i ℓ_i over the local anchor rows q against the references k."""
    if rust:
        from .softmax import _softmax_xent

        if w is None:  # the fused kernel's mean, times the row count: the same tiles, gradient from the forward
            return _softmax_xent(q, k, scale, targets, mask, tail, n_jobs, "mean", None) * q.shape[0]
        return _softmax_xent(q, k, scale, targets, mask, tail, n_jobs, "sum", w)
    per = _chunked.xent_rows(q, k, scale, targets, mask, tail)
    return per.sum() if w is None else (per * w).sum()


def _scaled(total: Any, count: Any, reduction: str) -> Any:
    """The rule: W · total / (global count) for the mean, W · total for the sum."""
    w = D.world_size()
    if reduction == "sum":
        return total * w
    # the count travels on the loss's device (nccl reduces CUDA tensors only)
    n = D.global_sum(count.to(device=total.device, dtype=total.dtype))
    return total * (w / torch.where(n > 0, n, torch.ones_like(n)))  # no anchor anywhere: 0, still attached


def _count(rows: int, w: Optional[Any]) -> Any:
    return torch.tensor(float(rows)) if w is None else w.detach().sum()


def ntxent(a: Any, b: Any, t: float, rust: bool, n_jobs: Optional[int], reduction: str, w: Optional[Any]) -> Any:
    """NT-Xent: the 2n local views against the 2N gathered views (one collective for both views)."""
    n, d = a.shape
    ab, _ = D.all_gather_local_first(torch.cat([a, b], 1))
    ua, ub = F.normalize(ab[:, :d], dim=1), F.normalize(ab[:, d:], dim=1)
    q = torch.cat([ua[:n], ub[:n]])
    keys = torch.cat([q, ua[n:], ub[n:]])  # row i < 2n is anchor i itself: "nodiag" drops it
    idx = torch.arange(n, device=a.device)
    total = _local_sum(q, keys, 1.0 / t, torch.cat([idx + n, idx]), "nodiag", 0, rust, n_jobs, w)
    return _scaled(total, _count(2 * n, w), reduction)


def infonce(q: Any, k: Any, nk: Optional[Any], t: float, rust: bool, n_jobs: Optional[int], reduction: str,
            w: Optional[Any]) -> Any:
    """InfoNCE: local queries against the gathered keys; with a queue only the normalisation is global."""
    n = q.shape[0]
    qu = F.normalize(q, dim=1)
    idx = torch.arange(n, device=q.device)
    if nk is None:
        keys, _ = D.all_gather_local_first(k)
        total = _local_sum(qu, F.normalize(keys, dim=1), 1.0 / t, idx, "all", 0, rust, n_jobs, w)
    else:
        keys = torch.cat([F.normalize(k, dim=1), F.normalize(nk, dim=1)])
        total = _local_sum(qu, keys, 1.0 / t, idx, "own_and_tail", n, rust, n_jobs, w)
    return _scaled(total, _count(n, w), reduction)


def clip(x: Any, y: Any, s: Any, rust: bool, n_jobs: Optional[int]) -> Any:
    """CLIP: local images against the gathered texts and local texts against the gathered images
    (open_clip's ``local_loss``), the logit scale folded into the anchors so it stays differentiable."""
    n, d = x.shape
    xy, _ = D.all_gather_local_first(torch.cat([x, y], 1))
    idx = torch.arange(n, device=x.device)
    total = _local_sum(s * x, xy[:, d:], 1.0, idx, "all", 0, rust, n_jobs, None) + _local_sum(
        s * y, xy[:, :d], 1.0, idx, "all", 0, rust, n_jobs, None
    )
    return _scaled(total, torch.tensor(2.0 * n), "mean")


def siglip(x: Any, y: Any, s: Any, b: Any, rust: bool, n_jobs: Optional[int]) -> Any:
    """SigLIP: the local images against every rank's texts; each of the N² pairs is counted on
    exactly one rank (its image's), so L_r = W · Σ_{i local, j} ℓ_ij / N.

    With the Rust backend and equal local batches the n×n blocks run the square kernel: block
    (local images, rank q's texts) has no positive pair for q ≠ r, and Σ_ij softplus(l_ij) =
    n·siglip(x, y_q) + Σ_i l_ii (the kernel's diagonal counts softplus(−l_ii) = softplus(l_ii) − l_ii).
    Otherwise the chunked torch path runs on the (n, N) rectangle (positives at i, i: this rank first).
    """
    n = x.shape[0]
    keys, total_n = D.all_gather_local_first(y)
    if rust and total_n % n == 0 and total_n // n == D.world_size():
        from .multimodal import siglip_loss

        total = siglip_loss(x, y, s, b, n_jobs=n_jobs) * n
        for q0 in range(n, total_n, n):
            yq = keys[q0 : q0 + n]
            total = total + siglip_loss(x, yq, s, b, n_jobs=n_jobs) * n + (s * (x * yq).sum(1) + b).sum()
    else:
        from ..reference.multimodal import siglip_loss_chunked

        total = siglip_loss_chunked(x, keys, s, b, chunk=_chunked.chunk_rows(total_n)) * n
    return _scaled(total, torch.tensor(float(n)), "mean")


class _SupConLocal(torch.autograd.Function):
    """SupCon's sum over the anchors 0..n of ``u`` (this rank's rows, first) against every row of ``u``:
    Σ_{i<n, P(i)≠∅} [lse_{j≠i} s_ij − mean_{p∈P(i)} s_ip], in row chunks with a recomputing backward
    (reference.softmax._SupConChunked restricted to the local anchors); also returns |A_local|."""

    @staticmethod
    def forward(u: Any, groups: Any, n: int, scale: float, chunk: int) -> Any:  # type: ignore[override]
        from ..reference.softmax import _supcon_chunk

        lse, pos_sum, cnt = u.new_empty(n), u.new_empty(n), u.new_empty(n)
        for r0 in range(0, n, chunk):
            r1 = min(r0 + chunk, n)
            s, pos = _supcon_chunk(u, groups, scale, r0, r1)
            lse[r0:r1] = torch.logsumexp(s, 1)
            pos_sum[r0:r1] = torch.where(pos, s, 0).sum(1)
            cnt[r0:r1] = pos.sum(1)
        active = cnt > 0
        total = torch.where(active, lse - pos_sum / cnt.clamp(min=1), 0).sum()
        return total, active.sum().to(u.dtype), lse, cnt

    @staticmethod
    def setup_context(ctx: Any, inputs: Any, output: Any) -> None:
        u, groups, n, scale, chunk = inputs
        ctx.n, ctx.scale, ctx.chunk = n, scale, chunk
        ctx.save_for_backward(u, groups, output[2], output[3])
        ctx.mark_non_differentiable(*output[1:])

    @staticmethod
    def backward(ctx: Any, g: Any, *_: Any) -> Any:  # type: ignore[override]
        from .. import _ops
        from ..reference.softmax import _supcon_chunk

        u0, groups, lse, cnt = ctx.saved_tensors
        u, g = _ops.detached(u0, g)
        n, scale, chunk = ctx.n, ctx.scale, ctx.chunk
        active = cnt > 0
        a = active.to(u.dtype) * g
        b = a / cnt.clamp(min=1)
        lse_m = torch.where(active, lse, float("inf"))  # rows outside A are no anchors
        grad = torch.zeros_like(u)
        for r0 in range(0, n, chunk):
            r1 = min(r0 + chunk, n)
            s, pos = _supcon_chunk(u, groups, scale, r0, r1)
            c = torch.exp(s - lse_m[r0:r1, None]) * a[r0:r1, None] - pos * b[r0:r1, None]
            grad[r0:r1] += c @ u
            grad += c.T @ u[r0:r1]
        grads = _ops.refuse_double_backward("supcon_loss (distributed)", (grad * scale,), (u0,))
        return grads + (None,) * 4


def supcon(z: Any, groups: Any, t: float, unsupervised: bool) -> Any:
    """SupCon with local anchors (the torch path): this rank's rows against every rank's rows.

    ``groups`` are the local rows' group ids; without labels (the views of a sample are its
    positives) they are made globally unique as id·W + rank. L_r = W · Σ_{i∈A_r} ℓ_i / |A|."""
    if unsupervised:
        groups = groups * D.world_size() + D.rank()
    n = z.shape[0]
    u, total_n = D.all_gather_local_first(F.normalize(z, dim=1))
    g_all, _ = D.all_gather_local_first(groups)
    total, count, _, _ = _SupConLocal.apply(u, g_all, n, 1.0 / t, _chunked.chunk_rows(total_n))
    return _scaled(total, count, "mean")
