"""Proxy losses: Proxy-Anchor and Proxy-NCA, with learnable class proxies.

Each class c owns a proxy w_c (a row of the C×d ``proxies``, an ``nn.Parameter`` of
the module); the losses depend on the cosines cos_ic = û_i·ŵ_c of the L2-normalised
embeddings and proxies (x̂ = x / max(‖x‖, 1e-12), as ``F.normalize``), the
definitions of pytorch-metric-learning's ``ProxyAnchorLoss`` and ``ProxyNCALoss``:

* **Proxy-Anchor** (Kim, Kim, Cho & Kwak, "Proxy Anchor Loss for Deep Metric Learning",
  CVPR 2020), with P_c = {i : y_i = c}, N_c = {i : y_i ≠ c}, C⁺ = {c : P_c ≠ ∅}:

  L = 1/|C⁺| Σ_{c∈C⁺} log(1 + Σ_{i∈P_c} e^{−α(cos_ic − δ)}) + 1/C Σ_c log(1 + Σ_{i∈N_c} e^{α(cos_ic + δ)})

  margin δ = 0.1 and α = 32 by default. It is a mean over classes, not samples, so it has
  no ``reduction=`` / ``weights=``.
* **Proxy-NCA** (Movshovitz-Attias, Toshev, Leung, Ioffe & Singh, "No Fuss Distance Metric
  Learning using Proxies", ICCV 2017), in pytorch-metric-learning's form (the softmax over
  *all* proxies, the target included, on squared distances of unit vectors):

  ℓ_i = −log softmax_c(−s·‖û_i − ŵ_c‖²)[y_i] = logsumexp_c(2s·cos_ic) − 2s·cos_{i,y_i},

  with ``scale`` s (PML's ``softmax_scale``, default 1); L = mean_i ℓ_i, or
  ``reduction="sum"/"none"``, and ``weights=`` w gives Σ w_i ℓ_i / Σ w_i. (PML drops
  the samples whose softmax probability underflows to 0; here ℓ_i is computed as a
  log-sum-exp and never overflows, so every sample counts.)

Labels must lie in [0, C): anything else is an :class:`~reprkit.errors.InvalidInputError`.
On CPU tensors, when a gradient is needed, one fused Rust call computes the loss and both
gradients with three B×C×d products (cos, ∂x, ∂W, as autograd does), and backward only scales
them by the upstream value: Proxy-Anchor class-tile-major (a tile of 256 classes against the
whole batch per running task: its per-class log-sum-exps, then the coefficients in the same
buffer), Proxy-NCA through the margin-softmax fused kernel (a normalised softmax with scale 2s;
``reduction="none"`` and weights that need a gradient take the two-pass path). Without a
gradient, the forward kernel alone runs: cosine tiles (256 rows × 256 classes) by GEMM, the
proxies normalised tile by tile (no normalised copy of W), online log-sum-exps. No B×C
matrix is stored, results are bit-identical for any ``n_jobs``. Other devices run :mod:`reprkit.reference.proxies` in chunks of
classes with the same recomputing backward. float16/bfloat16 compute in float32; the
gradient of the proxies comes back in the proxies' own dtype (W is never cast in place).
"""

from __future__ import annotations

from typing import Any, Optional, Tuple

from .. import _core, _ops
from .._ops import Tensor, np_, torch
from .._threads import kernel_threads, op_threads
from .._validation import check_choice
from ..errors import InvalidInputError, InvalidParameterError, ShapeError
from . import _inputs as V
from ._chunked import use_rust

F = torch.nn.functional
REDUCTIONS = ("mean", "sum", "none")

__all__ = ["proxy_anchor_loss", "proxy_nca_loss", "ProxyAnchorLoss", "ProxyNCALoss"]


def _on_cpu(t: Any) -> bool:
    return t.device.type == "cpu"


def _chunk(n: int) -> int:
    """Classes per chunk of the torch path: B × chunk ≤ 2²² cosines at a time."""
    return max(256, (1 << 22) // max(1, n))


def _inputs(embeddings: Any, labels: Any, proxies: Any) -> Tuple[Any, Any, Any]:
    x = V.check_embeddings(embeddings, "embeddings")
    w = V.check_embeddings(proxies, "proxies")
    if w.shape[1] != x.shape[1]:
        raise ShapeError(f"proxies must be (num_classes, {x.shape[1]}) to match the embeddings, got {tuple(w.shape)}")
    if w.device != x.device:
        raise ShapeError(f"proxies are on {w.device}, embeddings on {x.device}")
    y = V.check_labels(labels, x.shape[0], x.device)
    c = w.shape[0]
    if not torch.compiler.is_compiling() and not torch._C._functorch.is_functorch_wrapped_tensor(y):
        lo, hi = int(y.min()), int(y.max())
        if lo < 0 or hi >= c:
            raise InvalidInputError(
                f"labels must lie in [0, {c}) (one proxy per class, num_classes = {c}); got labels in [{lo}, {hi}]"
            )
    x, w = V.common_dtype(x, w)
    return x, y, w


# ----------------------------------------------------------------- operators (CPU)


def _vec(t: Any, n: int) -> Any:
    return t.new_empty((n,))


@_ops.op("proxy_anchor", lambda u, w, y, margin, alpha, nt: (_vec(u, w.shape[0]), _vec(u, w.shape[0]), _vec(u, w.shape[0])))
def _anchor(u: Tensor, w: Tensor, y: Tensor, margin: float, alpha: float, nt: int) -> Tuple[Tensor, Tensor, Tensor]:
    pos, neg, cnt = _core.proxy_anchor_loss(np_(u), np_(w), np_(y), margin, alpha, kernel_threads(nt))
    return torch.from_numpy(pos), torch.from_numpy(neg), torch.from_numpy(cnt)


@_ops.backward_op(
    "proxy_anchor_backward", "proxy_anchor_loss",
    lambda u, w, y, pos, neg, gp, gn, margin, alpha, nt: (torch.empty_like(u), torch.empty_like(w)),
)
def _anchor_backward(
    u: Tensor, w: Tensor, y: Tensor, pos: Tensor, neg: Tensor, gp: Tensor, gn: Tensor, margin: float, alpha: float, nt: int
) -> Tuple[Tensor, Tensor]:
    gu, gw = _core.proxy_anchor_loss_backward(
        np_(u), np_(w), np_(y), margin, alpha, np_(pos), np_(neg), np_(gp), np_(gn), kernel_threads(nt)
    )
    return torch.from_numpy(gu), torch.from_numpy(gw)


class _ProxyAnchor(torch.autograd.Function):
    @staticmethod
    def forward(u: Any, w: Any, y: Any, margin: float, alpha: float, nt: int) -> Any:  # type: ignore[override]
        return _anchor._opoverload(u, w, y, margin, alpha, nt)

    @staticmethod
    def setup_context(ctx: Any, inputs: Any, output: Any) -> None:
        u, w, y, margin, alpha, nt = inputs
        ctx.params = (margin, alpha, nt)
        ctx.save_for_backward(u, w, y, output[0], output[1])
        ctx.mark_non_differentiable(output[2])

    @staticmethod
    def backward(ctx: Any, gp: Any, gn: Any, _gc: Any) -> Any:  # type: ignore[override]
        u, w, y, pos, neg = ctx.saved_tensors
        margin, alpha, nt = ctx.params
        gu, gw = _anchor_backward._opoverload(*_ops.detached(u, w, y, pos, neg, gp, gn), margin, alpha, nt)
        return _ops.refuse_double_backward("proxy_anchor_loss", (gu, gw), (u, w)) + (None,) * 4

    vmap = _ops.no_vmap("proxy_anchor_loss")


@_ops.op("proxy_nca", lambda u, w, y, sigma, nt: (_vec(u, u.shape[0]), _vec(u, u.shape[0])))
def _nca(u: Tensor, w: Tensor, y: Tensor, sigma: float, nt: int) -> Tuple[Tensor, Tensor]:
    per, lse = _core.proxy_nca_loss(np_(u), np_(w), np_(y), sigma, kernel_threads(nt))
    return torch.from_numpy(per), torch.from_numpy(lse)


@_ops.backward_op(
    "proxy_nca_backward", "proxy_nca_loss", lambda u, w, y, lse, g, sigma, nt: (torch.empty_like(u), torch.empty_like(w))
)
def _nca_backward(u: Tensor, w: Tensor, y: Tensor, lse: Tensor, g: Tensor, sigma: float, nt: int) -> Tuple[Tensor, Tensor]:
    gu, gw = _core.proxy_nca_loss_backward(np_(u), np_(w), np_(y), sigma, np_(lse), np_(g), kernel_threads(nt))
    return torch.from_numpy(gu), torch.from_numpy(gw)


class _ProxyNCA(torch.autograd.Function):
    @staticmethod
    def forward(u: Any, w: Any, y: Any, sigma: float, nt: int) -> Any:  # type: ignore[override]
        return _nca._opoverload(u, w, y, sigma, nt)

    @staticmethod
    def setup_context(ctx: Any, inputs: Any, output: Any) -> None:
        u, w, y, sigma, nt = inputs
        ctx.params = (sigma, nt)
        ctx.save_for_backward(u, w, y, output[1])
        ctx.mark_non_differentiable(output[1])

    @staticmethod
    def backward(ctx: Any, g: Any, _gl: Any) -> Any:  # type: ignore[override]
        u, w, y, lse = ctx.saved_tensors
        sigma, nt = ctx.params
        gu, gw = _nca_backward._opoverload(*_ops.detached(u, w, y, lse, g), sigma, nt)
        return _ops.refuse_double_backward("proxy_nca_loss", (gu, gw), (u, w)) + (None,) * 3

    vmap = _ops.no_vmap("proxy_nca_loss")


def _fused_fake(x: Any, w: Any, *rest: Any) -> Tuple[Any, Any, Any]:
    need_x, need_w = rest[-3], rest[-2]
    return x.new_empty(()), _ops.empty_like_rows(x, x.shape[0] if need_x else 0), _ops.empty_like_rows(w, w.shape[0] if need_w else 0)


@_ops.op("proxy_anchor_fused", _fused_fake)
def _anchor_fused(
    x: Tensor, w: Tensor, y: Tensor, margin: float, alpha: float, need_x: bool, need_w: bool, nt: int
) -> Tuple[Tensor, Tensor, Tensor]:
    """(loss, ∂L/∂x, ∂L/∂w) of the raw embeddings x in one pass (three GEMMs, class-tile-major)."""
    loss, gx, gw = _core.proxy_anchor_loss_fused(np_(x), np_(w), np_(y), margin, alpha, need_x, need_w, kernel_threads(nt))
    return torch.tensor(loss, dtype=x.dtype), torch.from_numpy(gx), torch.from_numpy(gw)


@_ops.op("proxy_nca_fused", _fused_fake)
def _nca_fused(
    x: Tensor, w: Tensor, y: Tensor, c: Tensor, sigma: float, need_x: bool, need_w: bool, nt: int
) -> Tuple[Tensor, Tensor, Tensor]:
    """(Σ_i c_i·ℓ_i, its ∂/∂x, ∂/∂w) of the raw embeddings x in one pass (the margin-softmax fused kernel)."""
    loss, gx, gw = _core.proxy_nca_loss_fused(np_(x), np_(w), np_(y), sigma, np_(c), need_x, need_w, kernel_threads(nt))
    return torch.tensor(loss, dtype=x.dtype), torch.from_numpy(gx), torch.from_numpy(gw)


_AnchorFused = _ops.fused_function(_anchor_fused, "proxy_anchor_loss")
_NCAFused = _ops.fused_function(_nca_fused, "proxy_nca_loss")


# ----------------------------------------------------------------- functions


def proxy_anchor_loss(
    embeddings: Any, labels: Any, proxies: Any, margin: float = 0.1, alpha: float = 32.0, *, n_jobs: Optional[int] = None,
    backend: str = "auto",
) -> Any:
    """Proxy-Anchor loss (Kim et al. 2020) of ``embeddings`` (B, d) with int ``labels`` in [0, C)
    against the class ``proxies`` (C, d):

    L = 1/|C⁺| Σ_{c∈C⁺} log(1 + Σ_{y_i=c} e^{−α(cos_ic − δ)}) + 1/C Σ_c log(1 + Σ_{y_i≠c} e^{α(cos_ic + δ)}),

    cos_ic the cosine of embedding i and proxy c, δ = ``margin``, α = ``alpha``, C⁺ the classes
    present in the batch. Matches pytorch-metric-learning's ``ProxyAnchorLoss``.
    ``backend`` (both proxy losses): ``"auto"`` (Rust on CPU, else the proxy-chunked torch path of
    :mod:`reprkit.reference.proxies`), ``"rust"`` or ``"torch"``.
    """
    margin = V.check_finite_number("margin", margin)
    alpha = V.check_positive("alpha", alpha)
    x, y, w = _inputs(embeddings, labels, proxies)
    if not (use_rust(backend, x) and _on_cpu(x)):
        from ..reference import proxies as ref

        return ref.proxy_anchor_loss(x, y, w, margin, alpha, chunk_size=_chunk(x.shape[0]))
    if _ops.needs_grad(x, w):  # loss and gradients in one pass: 3 GEMMs, not 4
        nx, nw = x.requires_grad, w.requires_grad
        return _AnchorFused.apply(x, w, y, margin, alpha, nx, nw, op_threads(n_jobs))[0]
    from ..reference.proxies import anchor_loss_from_terms

    u = F.normalize(x, dim=1)
    pos, neg, cnt = _ProxyAnchor.apply(u, w, y, margin, alpha, op_threads(n_jobs))
    return anchor_loss_from_terms(pos, neg, cnt)


def proxy_nca_loss(
    embeddings: Any,
    labels: Any,
    proxies: Any,
    scale: float = 1.0,
    *,
    reduction: str = "mean",
    weights: Optional[Any] = None,
    n_jobs: Optional[int] = None,
    backend: str = "auto",
) -> Any:
    """Proxy-NCA loss (Movshovitz-Attias et al. 2017) of ``embeddings`` (B, d) with int ``labels``
    in [0, C) against the class ``proxies`` (C, d), pytorch-metric-learning's ``ProxyNCALoss``:

    ℓ_i = −log softmax_c(−s·‖û_i − ŵ_c‖²)[y_i] = logsumexp_c(2s·cos_ic) − 2s·cos_{i,y_i},

    s = ``scale`` (PML's ``softmax_scale``). ``reduction``: ``"mean"`` (Σ w_i ℓ_i / Σ w_i with
    ``weights``), ``"sum"`` (Σ w_i ℓ_i) or ``"none"`` (w_i ℓ_i per sample).
    """
    check_choice("reduction", reduction, REDUCTIONS)
    scale = V.check_positive("scale", scale)
    x, y, w = _inputs(embeddings, labels, proxies)
    wt = None
    if weights is not None:
        wt = torch.as_tensor(weights, device=x.device)
        if wt.dim() != 1 or wt.shape[0] != x.shape[0]:
            raise ShapeError(f"weights must have shape ({x.shape[0]},) (one per embedding row), got {tuple(wt.shape)}")
        wt = wt.to(x.dtype)
    from ..reference import proxies as ref

    if not (use_rust(backend, x) and _on_cpu(x)):
        return ref.proxy_nca_loss(x, y, w, scale, reduction=reduction, weights=wt, chunk_size=_chunk(x.shape[0]))
    if _ops.needs_grad(x, w) and reduction != "none" and not (wt is not None and _ops.needs_grad(wt)):
        nx, nw = x.requires_grad, w.requires_grad
        c = ref.reduce_weights(x.shape[0], reduction, wt, x.device)
        return _NCAFused.apply(x, w, y, c, 2.0 * scale, nx, nw, op_threads(n_jobs))[0]
    u = F.normalize(x, dim=1)
    per, _ = _ProxyNCA.apply(u, w, y, 2.0 * scale, op_threads(n_jobs))
    return ref.reduce(per, reduction, wt)


# ----------------------------------------------------------------- modules


class _ProxyModule(torch.nn.Module):
    #: ``"auto"`` | ``"rust"`` | ``"torch"``: the loss functions' ``backend`` (set it on the instance).
    backend = "auto"

    def __init__(self, num_classes: int, dim: int, device: Any, dtype: Any) -> None:
        super().__init__()
        for nm, v in (("num_classes", num_classes), ("dim", dim)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise InvalidParameterError(f"{nm} must be a positive integer, got {v!r}")
        self.num_classes, self.dim = num_classes, dim
        self.proxies = torch.nn.Parameter(torch.empty(num_classes, dim, device=device, dtype=dtype))
        self.reset_parameters()


class ProxyAnchorLoss(_ProxyModule):
    """Proxy-Anchor loss (Kim et al. 2020) with learnable proxies ``self.proxies`` (num_classes × dim),
    initialised as pytorch-metric-learning does (``kaiming_normal_``, mode ``"fan_out"``: N(0, 2/C)).
    ``forward(embeddings, labels)``; see :func:`proxy_anchor_loss` for the formula."""

    def __init__(self, num_classes: int, dim: int, margin: float = 0.1, alpha: float = 32.0, *,
                 n_jobs: Optional[int] = None, device: Any = None, dtype: Any = None) -> None:
        V.check_finite_number("margin", margin)
        V.check_positive("alpha", alpha)
        self.margin, self.alpha, self.n_jobs = float(margin), float(alpha), n_jobs
        super().__init__(num_classes, dim, device, dtype)

    def reset_parameters(self) -> None:
        torch.nn.init.kaiming_normal_(self.proxies, mode="fan_out")

    def forward(self, embeddings: Any, labels: Any) -> Any:
        return proxy_anchor_loss(embeddings, labels, self.proxies, self.margin, self.alpha, n_jobs=self.n_jobs, backend=self.backend)

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, dim={self.dim}, margin={self.margin}, alpha={self.alpha}"


class ProxyNCALoss(_ProxyModule):
    """Proxy-NCA loss (Movshovitz-Attias et al. 2017) with learnable proxies ``self.proxies``
    (num_classes × dim), initialised as pytorch-metric-learning does (``normal_``: N(0, 1)).
    ``forward(embeddings, labels, *, weights=None)``; see :func:`proxy_nca_loss` for the formula."""

    def __init__(self, num_classes: int, dim: int, scale: float = 1.0, *, reduction: str = "mean",
                 n_jobs: Optional[int] = None, device: Any = None, dtype: Any = None) -> None:
        V.check_positive("scale", scale)
        check_choice("reduction", reduction, REDUCTIONS)
        self.scale, self.reduction, self.n_jobs = float(scale), reduction, n_jobs
        super().__init__(num_classes, dim, device, dtype)

    def reset_parameters(self) -> None:
        torch.nn.init.normal_(self.proxies)

    def forward(self, embeddings: Any, labels: Any, *, weights: Any = None) -> Any:
        return proxy_nca_loss(embeddings, labels, self.proxies, self.scale, reduction=self.reduction, weights=weights,
                              n_jobs=self.n_jobs, backend=self.backend)

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, dim={self.dim}, scale={self.scale}, reduction={self.reduction!r}"
