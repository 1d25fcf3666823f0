"""Pure-torch margin-softmax losses: the any-device (CUDA) path and the test oracle.

:func:`margin_softmax_loss` with ``chunk_size=None`` is the dense formula (a B×C logit
matrix, autograd differentiates it): the oracle. With an integer ``chunk_size`` it follows
the Rust kernel's tiling: the forward runs over chunks of classes with an online
log-sum-exp and keeps only the per-row log-sum-exp; the backward recomputes each chunk's
logits, so no B×C matrix is ever held (memory O(B·chunk + B·d), plus the gradients).
Formulas are documented in :mod:`reprkit.losses.margin`. Inputs are assumed validated.
"""

from __future__ import annotations

import math
from typing import Any, Optional

from .._torch import require_torch

torch = require_torch()
F = torch.nn.functional

#: Classes per chunk of the chunked path (B × this many logits live at a time).
DEFAULT_CHUNK = 4096
_EPS = 1e-12


def _target(kind: str, cos: Any, m: Any, easy_margin: bool) -> Any:
    """f(cos; m) of the target logit (no acos: cos(θ+m) = cos·cos m − sin θ·sin m)."""
    if kind in ("linear", "normalized"):
        return cos
    if kind == "cosface":
        return cos - m
    sin = torch.sqrt(torch.clamp(1.0 - cos * cos, min=0.0))
    # d sin/d cos = −cos/sin is taken as 0 where sin = 0 (cos = ±1): a finite gradient.
    sin = torch.where(sin > 0, sin, sin.detach())
    phi = cos * torch.cos(m) - sin * torch.sin(m)
    if easy_margin:
        return torch.where(cos > 0, phi, cos)
    th = torch.cos(math.pi - m)
    mm = torch.sin(math.pi - m) * m
    return torch.where(cos > th, phi, cos - mm)


def _cos(z: Any, w: Any, kind: str, sub_centers: int) -> Any:
    """cos_ic (or z·wᵀ for "linear"), the max over each class's sub-centres."""
    if kind == "linear":
        c = z @ w.T
    else:
        c = F.normalize(z, dim=1, eps=_EPS) @ F.normalize(w, dim=1, eps=_EPS).T
    if sub_centers > 1:
        c = c.view(c.shape[0], -1, sub_centers).amax(2)
    return c


def _row_margins(margin: Any, labels: Any, like: Any) -> Any:
    m = torch.as_tensor(margin, dtype=like.dtype, device=like.device)
    return m.expand(1) if m.dim() == 0 else (m if m.numel() == 1 else m[labels])


def _logits(z, w, labels, kind, margin, scale, easy_margin, sub_centers, c0=0):
    """Logits of every row against classes c0.. (those of w's rows), margin on the target column."""
    cos = _cos(z, w, kind, sub_centers)
    nc = cos.shape[1]
    local = labels - c0
    here = (local >= 0) & (local < nc)
    idx = local.clamp(0, nc - 1).unsqueeze(1)
    ct = cos.gather(1, idx).squeeze(1)
    ft = _target(kind, ct, _row_margins(margin, labels, cos), easy_margin)
    tl = torch.where(here, ft, ct)
    out = cos.scatter(1, idx, tl.unsqueeze(1))
    return scale * out, here


def _dense(z, w, labels, kind, margin, scale, easy_margin, sub_centers):
    logits, _ = _logits(z, w, labels, kind, margin, scale, easy_margin, sub_centers)
    return F.cross_entropy(logits, labels)


class _Chunked(torch.autograd.Function):
    """Chunked forward (online log-sum-exp over class chunks), backward by recomputation."""

    @staticmethod
    def forward(ctx, z, w, labels, margin, kind, scale, easy_margin, sub_centers, chunk):  # type: ignore[override]
        n, k = z.shape[0], sub_centers
        classes = w.shape[0] // k
        mx = torch.full((n,), -math.inf, dtype=z.dtype, device=z.device)
        ssum = torch.zeros(n, dtype=z.dtype, device=z.device)
        tl = torch.zeros(n, dtype=z.dtype, device=z.device)
        with torch.no_grad():
            for c0 in range(0, classes, chunk):
                c1 = min(classes, c0 + chunk)
                lg, here = _logits(z, w[c0 * k : c1 * k], labels, kind, margin, scale, easy_margin, k, c0)
                tl = torch.where(here, lg.gather(1, (labels - c0).clamp(0, c1 - c0 - 1).unsqueeze(1)).squeeze(1), tl)
                cm = lg.amax(1)
                new = torch.maximum(mx, cm)
                ssum = ssum * torch.exp(mx - new) + torch.exp(lg - new.unsqueeze(1)).sum(1)
                mx = new
            lse = mx + torch.log(ssum)
        ctx.save_for_backward(z, w, labels, margin if isinstance(margin, torch.Tensor) else None, lse)
        ctx.cfg = (margin, kind, scale, easy_margin, sub_centers, chunk)
        return torch.clamp(lse - tl, min=0).mean()

    @staticmethod
    def backward(ctx, g):  # type: ignore[override]
        z, w, labels, mt, lse = ctx.saved_tensors
        margin, kind, scale, easy_margin, k, chunk = ctx.cfg
        if mt is not None:
            margin = mt
        n, classes = z.shape[0], w.shape[0] // k
        gz = torch.zeros_like(z)
        gw = torch.zeros_like(w)
        coef = g / n
        for c0 in range(0, classes, chunk):
            c1 = min(classes, c0 + chunk)
            with torch.enable_grad():
                zc = z.detach().requires_grad_(True)
                wc = w[c0 * k : c1 * k].detach().requires_grad_(True)
                lg, here = _logits(zc, wc, labels, kind, margin, scale, easy_margin, k, c0)
                p = torch.exp(lg.detach() - lse.unsqueeze(1))
                idx = (labels - c0).clamp(0, c1 - c0 - 1).unsqueeze(1)
                p = p.scatter_add(1, idx, -here.to(p.dtype).unsqueeze(1))
                # Surrogate whose gradient is this chunk's share of ∂L: Σ (softmax − onehot)·logit.
                dz, dw = torch.autograd.grad((p * lg).sum() * coef, (zc, wc))
            gz += dz
            gw[c0 * k : c1 * k] = dw
        return gz, gw, None, None, None, None, None, None, None


def margin_softmax_loss(
    embeddings: Any,
    labels: Any,
    weight: Any,
    kind: str = "arcface",
    margin: Any = 0.5,
    scale: float = 64.0,
    easy_margin: bool = False,
    sub_centers: int = 1,
    chunk_size: Optional[int] = None,
) -> Any:
    """mean_i [logsumexp_c l_ic − l_{i,y_i}], l = s·cos (target: s·f(cos; m_{y_i})); see module docs."""
    if chunk_size is None:
        return _dense(embeddings, weight, labels, kind, margin, scale, easy_margin, sub_centers)
    return _Chunked.apply(embeddings, weight, labels, margin, kind, scale, easy_margin, sub_centers, int(chunk_size))


def normalized_softmax_loss(embeddings, labels, weight, scale=20.0, chunk_size=None):
    return margin_softmax_loss(embeddings, labels, weight, "normalized", 0.0, scale, chunk_size=chunk_size)


def cosface_loss(embeddings, labels, weight, margin=0.35, scale=64.0, chunk_size=None):
    return margin_softmax_loss(embeddings, labels, weight, "cosface", margin, scale, chunk_size=chunk_size)


def arcface_loss(embeddings, labels, weight, margin=0.5, scale=64.0, easy_margin=False, chunk_size=None):
    return margin_softmax_loss(embeddings, labels, weight, "arcface", margin, scale, easy_margin, chunk_size=chunk_size)


def subcenter_arcface_loss(embeddings, labels, weight, sub_centers=3, margin=0.5, scale=64.0, easy_margin=False, chunk_size=None):
    return margin_softmax_loss(embeddings, labels, weight, "arcface", margin, scale, easy_margin, sub_centers, chunk_size)


def center_loss(embeddings, labels, weight, centers, lambda_=0.003, chunk_size=None):
    """mean_n CE(z_n·Wᵀ) + λ/2 · mean_n ‖z_n − c_{y_n}‖² (Wen et al. 2016)."""
    ce = margin_softmax_loss(embeddings, labels, weight, "linear", 0.0, 1.0, chunk_size=chunk_size)
    return ce + 0.5 * lambda_ * ((embeddings - centers[labels]) ** 2).sum(1).mean()


def adaptive_margins(class_counts: Any, a: float, lambda_: float, b: float) -> Any:
    """m_c = a·N_c^(−λ) + b (Ha 2020)."""
    n = torch.as_tensor(class_counts, dtype=torch.float64)
    return a * n.pow(-lambda_) + b
