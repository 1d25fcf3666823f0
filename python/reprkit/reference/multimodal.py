"""Pure-torch image–text losses (CLIP, SigLIP): the test oracle and the any-device path.

* :func:`clip_loss` / :func:`siglip_loss` build the full n×n logit matrix and let
  autograd differentiate it (the formulas of :mod:`reprkit.losses.multimodal`,
  written like open_clip's ``ClipLoss`` / ``SigLipLoss``).
* :func:`clip_loss_chunked` / :func:`siglip_loss_chunked` are what non-CPU
  tensors run: the same tiling as the Rust kernels in row chunks, so memory is
  O(chunk·n) and never n×n. CLIP's forward keeps the row and column
  log-sum-exps (O(n)); both backwards recompute the chunks' logits. Their
  backward is not differentiable again (a second derivative raises).

Inputs are assumed validated: floating-point (n, d) tensors on one device and
0-d scale / bias tensors of the same dtype.
"""

from __future__ import annotations

from typing import Any, Optional

from .._ops import no_vmap, refuse_double_backward
from .._torch import require_torch

torch = require_torch()
F = torch.nn.functional

# Logit entries per chunk of the chunked path (64 MB of float32).
CHUNK_ENTRIES = 1 << 24


def clip_loss(image_features: Any, text_features: Any, logit_scale: Any, logit_bias: Optional[Any] = None) -> Any:
    """½ [CE(s·x·yᵀ + b, arange) + CE(s·y·xᵀ + b, arange)] (the bias cancels in a softmax)."""
    logits = logit_scale * image_features @ text_features.T
    if logit_bias is not None:
        logits = logits + logit_bias
    labels = torch.arange(logits.shape[0], device=logits.device)
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2


def siglip_loss(image_features: Any, text_features: Any, logit_scale: Any, logit_bias: Any) -> Any:
    """−1/n Σ_ij log σ(z_ij (s·x_i·y_j + b)), z = 2·I − 1."""
    n = image_features.shape[0]
    logits = logit_scale * image_features @ text_features.T + logit_bias
    z = 2 * torch.eye(n, dtype=logits.dtype, device=logits.device) - 1
    return -F.logsigmoid(z * logits).sum() / n


def chunk_rows(n: int, chunk: Optional[int] = None) -> int:
    """Rows per chunk: ``chunk`` or CHUNK_ENTRIES / n (at least 1)."""
    return max(1, int(chunk) if chunk else CHUNK_ENTRIES // max(1, n))


class _ClipChunked(torch.autograd.Function):
    @staticmethod
    def forward(x: Any, y: Any, scale: Any, chunk: int) -> Any:  # type: ignore[override]
        n = x.shape[0]
        lr = x.new_empty(n)
        lc = x.new_full((n,), float("-inf"))
        for c0 in range(0, n, chunk):
            s = scale * (x[c0 : c0 + chunk] @ y.T)
            lr[c0 : c0 + chunk] = torch.logsumexp(s, 1)
            lc = torch.logaddexp(lc, torch.logsumexp(s, 0))
        sii = scale * (x * y).sum(1)
        loss = ((lr - sii).clamp_min(0) + (lc - sii).clamp_min(0)).sum() / (2 * n)
        return loss, lr, lc

    @staticmethod
    def setup_context(ctx: Any, inputs: Any, output: Any) -> None:
        x, y, scale, chunk = inputs
        ctx.chunk = chunk
        ctx.save_for_backward(x, y, scale, output[1], output[2])
        ctx.mark_non_differentiable(output[1], output[2])

    @staticmethod
    def backward(ctx: Any, g: Any, *_: Any) -> Any:  # type: ignore[override]
        saved = ctx.saved_tensors
        x, y, scale, lr, lc = (t.detach() for t in saved)
        g = g.detach()
        n, chunk = x.shape[0], ctx.chunk
        gx = torch.empty_like(x)
        gy = torch.zeros_like(y)
        for c0 in range(0, n, chunk):
            c1 = min(n, c0 + chunk)
            s = scale * (x[c0:c1] @ y.T)
            c = (torch.exp(s - lr[c0:c1, None]) + torch.exp(s - lc[None, :])) / (2 * n)
            idx = torch.arange(c1 - c0, device=x.device)
            c[idx, idx + c0] -= 1.0 / n
            gx[c0:c1] = c @ y
            gy += c.T @ x[c0:c1]
        gs = (x * gx).sum() * g
        f = g * scale
        grads = (gx * f, gy * f, gs.reshape(scale.shape))
        return refuse_double_backward("clip_loss", grads, saved[:3]) + (None,)

    vmap = no_vmap("clip_loss (chunked torch path)")


class _SiglipChunked(torch.autograd.Function):
    @staticmethod
    def forward(x: Any, y: Any, scale: Any, bias: Any, chunk: int) -> Any:  # type: ignore[override]
        n = x.shape[0]
        loss = x.new_zeros(())
        for c0 in range(0, n, chunk):
            c1 = min(n, c0 + chunk)
            logits = scale * (x[c0:c1] @ y.T) + bias
            idx = torch.arange(c1 - c0, device=x.device)
            # softplus(l) = −log σ(−l) on the negatives, softplus(−l) on the positives (set
            # aside: their −∞ in the chunk adds 0).
            ld = logits[idx, idx + c0].clone()
            logits[idx, idx + c0] = float("-inf")
            loss = loss - F.logsigmoid(-logits).sum() - F.logsigmoid(ld).sum()
        return loss / n

    @staticmethod
    def setup_context(ctx: Any, inputs: Any, output: Any) -> None:
        x, y, scale, bias, chunk = inputs
        ctx.chunk = chunk
        ctx.save_for_backward(x, y, scale, bias)

    @staticmethod
    def backward(ctx: Any, g: Any) -> Any:  # type: ignore[override]
        saved = ctx.saved_tensors
        x, y, scale, bias = (t.detach() for t in saved)
        g = g.detach()
        n, chunk = x.shape[0], ctx.chunk
        gx = torch.empty_like(x)
        gy = torch.zeros_like(y)
        gb = x.new_zeros(())
        for c0 in range(0, n, chunk):
            c1 = min(n, c0 + chunk)
            logits = scale * (x[c0:c1] @ y.T) + bias
            c = torch.sigmoid(logits) / n
            idx = torch.arange(c1 - c0, device=x.device)
            c[idx, idx + c0] -= 1.0 / n  # σ(l) − 1 = −σ(−l) on the positives
            gb = gb + c.sum()
            gx[c0:c1] = c @ y
            gy += c.T @ x[c0:c1]
        gs = (x * gx).sum() * g
        f = g * scale
        grads = (gx * f, gy * f, gs.reshape(scale.shape), (gb * g).reshape(bias.shape))
        return refuse_double_backward("siglip_loss", grads, saved) + (None,)

    vmap = no_vmap("siglip_loss (chunked torch path)")


def clip_loss_chunked(image_features: Any, text_features: Any, logit_scale: Any, chunk: Optional[int] = None) -> Any:
    """:func:`clip_loss` in row chunks (O(chunk·n) memory); ``logit_scale`` a 0-d tensor."""
    c = chunk_rows(image_features.shape[0], chunk)
    return _ClipChunked.apply(image_features, text_features, logit_scale, c)[0]


def siglip_loss_chunked(image_features: Any, text_features: Any, logit_scale: Any, logit_bias: Any, chunk: Optional[int] = None) -> Any:
    """:func:`siglip_loss` in row chunks (O(chunk·n) memory); scale and bias 0-d tensors."""
    c = chunk_rows(image_features.shape[0], chunk)
    return _SiglipChunked.apply(image_features, text_features, logit_scale, logit_bias, c)
