"""Pure-torch proxy losses (Proxy-Anchor, Proxy-NCA): the any-device (CUDA) path and the test oracle.

Two forms of each loss, same formulas as :mod:`reprkit.losses.proxies` and the Rust kernels:

* ``chunk_size=None``: the plain formula on the full B×C cosine matrix, differentiated by
  autograd (the oracle the tests compare against);
* ``chunk_size=k``: classes in chunks of ``k``; the forward keeps only the O(B + C) state
  (per-class or per-row log-sum-exps) and a custom backward recomputes each chunk's
  cosines, so memory stays O(B·k + (B + C)·d) on any device — the path
  :mod:`reprkit.losses.proxies` takes for tensors that are not on the CPU.

Inputs are assumed validated: ``embeddings`` (B, d) and ``proxies`` (C, d) floating tensors
of one dtype on one device, int64 ``labels`` in [0, C).
"""

from __future__ import annotations

from typing import Any, Optional, Tuple

from .._torch import require_torch

torch = require_torch()
F = torch.nn.functional

NORM_EPS = 1e-12


def _unit(w: Any) -> Any:
    return F.normalize(w, dim=1, eps=NORM_EPS)


def _normalize_backward(w: Any, wh: Any, g: Any) -> Any:
    """∂L/∂w from ∂L/∂ŵ for ŵ = w / max(‖w‖, eps) (torch.nn.functional.normalize's derivative)."""
    nrm = w.norm(dim=1, keepdim=True)
    inv = 1.0 / nrm.clamp_min(NORM_EPS)
    proj = g - (g * wh).sum(1, keepdim=True) * wh
    return torch.where(nrm > NORM_EPS, proj, g) * inv


def _lse1(v: Any, dim: int) -> Any:
    """log(1 + Σ e^v) along ``dim`` (−∞ entries count as absent)."""
    zero = torch.zeros_like(v.narrow(dim, 0, 1))
    return torch.logsumexp(torch.cat([v, zero], dim), dim)


# ----------------------------------------------------------------- Proxy-Anchor


def proxy_anchor_terms(u: Any, labels: Any, proxies: Any, margin: float, alpha: float) -> Tuple[Any, Any, Any]:
    """Per class c: pos_c = log(1 + Σ_{y_i=c} e^{−α(cos_ic − δ)}), neg_c = log(1 + Σ_{y_i≠c} e^{α(cos_ic + δ)})
    and the class count, on unit rows ``u`` and raw ``proxies`` (dense B×C, autograd)."""
    return proxy_anchor_terms_chunk(u, labels, proxies, 0, margin, alpha)


def anchor_loss_from_terms(pos: Any, neg: Any, count: Any) -> Any:
    """Σ_c pos_c / |{c : count_c > 0}| + Σ_c neg_c / C."""
    present = (count > 0).sum()
    return pos.sum() / present.clamp_min(1) + neg.sum() / neg.shape[0]


class _ChunkedAnchor(torch.autograd.Function):
    """Proxy-Anchor's per-class terms over class chunks; backward recomputes each chunk."""

    @staticmethod
    def forward(u: Any, w: Any, labels: Any, margin: float, alpha: float, chunk: int) -> Any:  # type: ignore[override]
        pos, neg = [], []
        for c0 in range(0, w.shape[0], chunk):
            wc = w[c0 : c0 + chunk]
            p, n_, _ = proxy_anchor_terms_chunk(u, labels, wc, c0, margin, alpha)
            pos.append(p)
            neg.append(n_)
        count = torch.zeros(w.shape[0], dtype=u.dtype, device=u.device).index_add_(
            0, labels, torch.ones_like(labels, dtype=u.dtype)
        )
        return torch.cat(pos), torch.cat(neg), count

    @staticmethod
    def setup_context(ctx: Any, inputs: Any, output: Any) -> None:
        u, w, labels, margin, alpha, chunk = inputs
        ctx.save_for_backward(u, w, labels, output[0], output[1])
        ctx.params = (margin, alpha, chunk)
        ctx.mark_non_differentiable(output[2])

    @staticmethod
    def backward(ctx: Any, g_pos: Any, g_neg: Any, _g_count: Any) -> Any:  # type: ignore[override]
        from .._ops import refuse_double_backward

        u, w, labels, pos, neg = ctx.saved_tensors
        margin, alpha, chunk = ctx.params
        with torch.no_grad():
            gu = torch.zeros_like(u)
            gws = []
            for c0 in range(0, w.shape[0], chunk):
                wc = w[c0 : c0 + chunk]
                wh = _unit(wc)
                cos = u @ wh.T
                is_pos = labels[:, None] == torch.arange(c0, c0 + wc.shape[0], device=u.device)[None, :]
                sl = slice(c0, c0 + wc.shape[0])
                gp = -alpha * g_pos[sl] * torch.exp(-alpha * (cos - margin) - pos[sl])
                gn = alpha * g_neg[sl] * torch.exp(alpha * (cos + margin) - neg[sl])
                coef = torch.where(is_pos, gp, gn)
                del gp, gn, cos
                gu += coef @ wh
                gws.append(_normalize_backward(wc, wh, coef.T @ u))
            gw = torch.cat(gws)
        return refuse_double_backward("proxy_anchor_loss", (gu, gw), (u, w)) + (None,) * 4


def proxy_anchor_terms_chunk(u: Any, labels: Any, wc: Any, c0: int, margin: float, alpha: float) -> Tuple[Any, Any, Any]:
    """:func:`proxy_anchor_terms` for the classes c0 … c0 + len(wc) − 1."""
    cos = u @ _unit(wc).T
    pos = labels[:, None] == torch.arange(c0, c0 + wc.shape[0], device=u.device)[None, :]
    ninf = torch.full_like(cos, float("-inf"))
    pos_t = _lse1(torch.where(pos, -alpha * (cos - margin), ninf), 0)
    neg_t = _lse1(torch.where(pos, ninf, alpha * (cos + margin)), 0)
    return pos_t, neg_t, pos.sum(0).to(u.dtype)


def proxy_anchor_loss(
    embeddings: Any, labels: Any, proxies: Any, margin: float = 0.1, alpha: float = 32.0, *, chunk_size: Optional[int] = None
) -> Any:
    """Proxy-Anchor (Kim et al. 2020): Σ_c pos_c / |classes in the batch| + Σ_c neg_c / C on cosines of
    normalised embeddings and proxies (see :func:`proxy_anchor_terms`)."""
    u = F.normalize(embeddings, dim=1)
    if chunk_size is None:
        return anchor_loss_from_terms(*proxy_anchor_terms(u, labels, proxies, margin, alpha))
    pos, neg, count = _ChunkedAnchor.apply(u, proxies, labels, float(margin), float(alpha), int(chunk_size))
    return anchor_loss_from_terms(pos, neg, count)


# ----------------------------------------------------------------- Proxy-NCA


def proxy_nca_terms(u: Any, labels: Any, proxies: Any, scale: float) -> Any:
    """per_i = −log softmax_c(2·scale·cos_ic)[y_i] (= softmax of −scale·‖û_i − ŵ_c‖² on unit rows), dense."""
    z = (2.0 * scale) * (u @ _unit(proxies).T)
    return F.cross_entropy(z, labels, reduction="none")


class _ChunkedNCA(torch.autograd.Function):
    """Proxy-NCA's per-sample terms with an online log-sum-exp over class chunks; backward recomputes."""

    @staticmethod
    def forward(u: Any, w: Any, labels: Any, sigma: float, chunk: int) -> Any:  # type: ignore[override]
        lse = torch.full((u.shape[0],), float("-inf"), dtype=u.dtype, device=u.device)
        for c0 in range(0, w.shape[0], chunk):
            z = sigma * (u @ _unit(w[c0 : c0 + chunk]).T)
            lse = torch.logaddexp(lse, torch.logsumexp(z, 1))
        target = sigma * (u * _unit(w[labels])).sum(1)
        return (lse - target).clamp_min(0.0), lse

    @staticmethod
    def setup_context(ctx: Any, inputs: Any, output: Any) -> None:
        u, w, labels, sigma, chunk = inputs
        ctx.save_for_backward(u, w, labels, output[1])
        ctx.params = (sigma, chunk)
        ctx.mark_non_differentiable(output[1])

    @staticmethod
    def backward(ctx: Any, g: Any, _g_lse: Any) -> Any:  # type: ignore[override]
        from .._ops import refuse_double_backward

        u, w, labels, lse = ctx.saved_tensors
        sigma, chunk = ctx.params
        with torch.no_grad():
            gs = g * sigma
            gu = torch.zeros_like(u)
            gws = []
            for c0 in range(0, w.shape[0], chunk):
                wc = w[c0 : c0 + chunk]
                wh = _unit(wc)
                coef = torch.exp(sigma * (u @ wh.T) - lse[:, None]) * gs[:, None]
                is_t = labels[:, None] == torch.arange(c0, c0 + wc.shape[0], device=u.device)[None, :]
                coef = coef - is_t.to(coef.dtype) * gs[:, None]
                gu += coef @ wh
                gws.append(_normalize_backward(wc, wh, coef.T @ u))
            gw = torch.cat(gws)
        return refuse_double_backward("proxy_nca_loss", (gu, gw), (u, w)) + (None,) * 3


def reduce(per: Any, reduction: str, weights: Optional[Any]) -> Any:
    """``"none"``: per·w; ``"sum"``: Σ w·per; ``"mean"``: Σ w·per / Σ w (0 when Σ w = 0)."""
    from .pairs import reduce as _reduce

    return _reduce(per, torch.ones_like(per), reduction, weights)


def reduce_weights(n: int, reduction: str, weights: Optional[Any], device: Any = None) -> Any:
    """The row weights c (float64, (n,)) with Σ_i c_i·per_i = ``reduce(per, reduction, weights)`` for
    ``"sum"`` and ``"mean"`` (both linear in per for fixed weights): what the fused kernels, which
    differentiate Σ c_i·ℓ_i in one pass, need. Kept beside :func:`reduce`; tests check they agree."""
    if reduction not in ("sum", "mean"):
        raise ValueError(f"reduce_weights: reduction must be 'sum' or 'mean', got {reduction!r}")
    if weights is None:
        return torch.full((n,), 1.0 / n if reduction == "mean" else 1.0, dtype=torch.float64, device=device)
    c = torch.as_tensor(weights, device=device).detach().to(torch.float64)
    if reduction == "mean":
        tot = c.sum()
        c = torch.where(tot > 0, c / torch.where(tot > 0, tot, torch.ones_like(tot)), c * 0.0)
    return c


def proxy_nca_loss(
    embeddings: Any,
    labels: Any,
    proxies: Any,
    scale: float = 1.0,
    *,
    reduction: str = "mean",
    weights: Optional[Any] = None,
    chunk_size: Optional[int] = None,
) -> Any:
    """Proxy-NCA (Movshovitz-Attias et al. 2017), pytorch-metric-learning's form: per sample
    −log softmax_c(−scale·‖û_i − ŵ_c‖²)[y_i] = −log softmax_c(2·scale·cos_ic)[y_i], then reduced."""
    u = F.normalize(embeddings, dim=1)
    if chunk_size is None:
        per = proxy_nca_terms(u, labels, proxies, scale)
    else:
        per, _ = _ChunkedNCA.apply(u, proxies, labels, 2.0 * float(scale), int(chunk_size))
    return reduce(per, reduction, weights)
