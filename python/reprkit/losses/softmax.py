"""Softmax-type losses: N-pair, NT-Xent (SimCLR), InfoNCE (MoCo).

Each is a mean over rows of a softmax cross-entropy over scaled dot products.
CPU tensors run one fused Rust kernel (forward and gradient from the same
similarity tiles, O((n+m)·d) memory); other devices run
:mod:`reprkit.reference.softmax`.
"""

from typing import Any, Optional, Tuple

from .. import _core, _ops
from .._ops import Tensor, torch
from .._threads import kernel_threads, op_threads
from . import _inputs as V

F = torch.nn.functional

__all__ = ["npair_loss", "ntxent_loss", "infonce_loss", "NPairLoss", "NTXentLoss", "InfoNCELoss"]


def _on_cpu(t: Any) -> bool:
    return t.device.type == "cpu"


def _xent_fake(q, k, scale, targets, mask, tail, need_grad, n_threads):
    if not need_grad:
        return q.new_empty(()), _ops.empty_like_rows(q), _ops.empty_like_rows(q)
    return q.new_empty(()), torch.empty_like(q), _ops.empty_like_rows(q) if k is None else torch.empty_like(k)


@_ops.op("xent", _xent_fake)
def _xent(
    q: Tensor, k: Optional[Tensor], scale: float, targets: Tensor, mask: str, tail: int, need_grad: bool, n_threads: int
) -> Tuple[Tensor, Tensor, Tensor]:
    """(loss, ∂loss/∂q, ∂loss/∂k) of mean_i [lse_{j valid} s_ij − s_{i,t_i}], s = scale·q·kᵀ (k None: q itself).

    With ``need_grad`` the gradient comes out of the forward's tiles (fused: O((n+m)·d)
    kept, nothing recomputed); without it only the loss (empty gradients).
    """
    qa, ka, ta = _ops.np_(q), _ops.np_(k), _ops.np_(targets)
    if need_grad:
        loss, gq, gk = _core.xent_loss_fused(qa, ka, scale, ta, mask, tail, kernel_threads(n_threads))
        return torch.tensor(loss, dtype=q.dtype), _ops.t_(gq), _ops.t_(gk, q)
    loss, _ = _core.xent_loss(qa, ka, scale, ta, mask, tail, None, kernel_threads(n_threads))
    return torch.tensor(loss, dtype=q.dtype), _ops.empty_like_rows(q), _ops.empty_like_rows(q)


def _xent_backward_fake(g, gq, gk, q, k):
    return torch.empty_like(gq), torch.empty_like(gk)


@_ops.backward_op("xent_backward", "the softmax losses (N-pair, NT-Xent, InfoNCE)", _xent_backward_fake)
def _xent_backward(g: Tensor, gq: Tensor, gk: Tensor, q: Tensor, k: Optional[Tensor]) -> Tuple[Tensor, Tensor]:
    """The forward's gradients times the upstream scalar ``g`` (q, k: for the double-backward refusal)."""
    return gq * g, gk * g


class _SoftmaxXent(torch.autograd.Function):
    @staticmethod
    def forward(q: Any, k: Any, scale: float, targets: Any, mask: str, tail: int, need_grad: bool, n_threads: int) -> Any:  # type: ignore[override]
        return _xent(q, k, scale, targets, mask, tail, need_grad, n_threads)

    @staticmethod
    def setup_context(ctx: Any, inputs: Any, output: Any) -> None:
        q, k = inputs[0], inputs[1]
        ctx.has_k = k is not None
        ctx.save_for_backward(output[1], output[2], q, k)
        ctx.mark_non_differentiable(output[1], output[2])

    @staticmethod
    def backward(ctx: Any, g: Any, _gq: Any, _gk: Any) -> Any:  # type: ignore[override]
        gq, gk, q, k = ctx.saved_tensors
        tq, tk = _xent_backward(*_ops.detached(g, gq, gk, q, k))
        grads = _ops.refuse_double_backward("the softmax losses", (tq, tk if ctx.has_k else None), (q, k))
        return grads + (None,) * 6

    vmap = _ops.no_vmap("the softmax losses (npair_loss, ntxent_loss, infonce_loss)")


def _softmax_xent(q: Any, k: Optional[Any], scale: float, targets: Any, mask: str, tail: int, n_jobs: Optional[int]) -> Any:
    need = _ops.needs_grad(q, k)
    return _SoftmaxXent.apply(q, k, scale, targets, mask, tail, need, op_threads(n_jobs))[0]


def npair_loss(anchors: Any, positives: Any, l2_reg: float = 0.0, *, n_jobs: Optional[int] = None) -> Any:
    """Multi-class N-pair loss (Sohn 2016); row i of both inputs is class i.

    L = 1/N Σ_i log(1 + Σ_{j≠i} exp(a_i·p_j − a_i·p_i)) + l2_reg·(mean‖a_i‖² + mean‖p_i‖²)
    """
    a = V.check_embeddings(anchors, "anchors")
    p = V.check_embeddings(positives, "positives")
    V.check_same_shape(a, p, "anchors", "positives")
    l2_reg = V.check_finite_number("l2_reg", l2_reg, nonneg=True)
    a, p = V.common_dtype(a, p)
    if _on_cpu(a):
        loss = _softmax_xent(a, p, 1.0, torch.arange(a.shape[0]), "all", 0, n_jobs)
        if l2_reg:
            loss = loss + l2_reg * ((a * a).sum(1).mean() + (p * p).sum(1).mean())
        return loss
    from ..reference import softmax as ref

    return ref.npair_loss(a, p, l2_reg)


def ntxent_loss(z1: Any, z2: Any, temperature: float = 0.1, *, n_jobs: Optional[int] = None) -> Any:
    """NT-Xent (SimCLR). The 2N views u = normalise([z1; z2]), s_ij = u_i·u_j / τ;

    L = 1/(2N) Σ_i [ −s_{i,p(i)} + log Σ_{j≠i} e^{s_ij} ],  p(i) = i ± N (the other view).
    """
    a = V.check_embeddings(z1, "z1")
    b = V.check_embeddings(z2, "z2")
    V.check_same_shape(a, b, "z1", "z2")
    t = V.check_positive("temperature", temperature)
    a, b = V.common_dtype(a, b)
    if _on_cpu(a):
        n = a.shape[0]
        u = F.normalize(torch.cat([a, b]), dim=1)
        idx = torch.arange(n)
        return _softmax_xent(u, None, 1.0 / t, torch.cat([idx + n, idx]), "nodiag", 0, n_jobs)
    from ..reference import softmax as ref

    return ref.ntxent_loss(a, b, t)


def infonce_loss(
    query: Any, positive_key: Any, negative_keys: Optional[Any] = None, temperature: float = 0.1, *, n_jobs: Optional[int] = None
) -> Any:
    """InfoNCE (van den Oord 2018; MoCo). On unit vectors q, k:

    L = 1/N Σ_i −log( e^{q_i·k⁺_i/τ} / (e^{q_i·k⁺_i/τ} + Σ_{k⁻} e^{q_i·k⁻/τ}) )

    where the negatives k⁻ are the other rows' positive keys when
    ``negative_keys`` is None, else the rows of ``negative_keys`` (K, d), a queue
    shared by every query (e.g. :class:`reprkit.MemoryBank`).
    """
    q = V.check_embeddings(query, "query")
    k = V.check_embeddings(positive_key, "positive_key")
    V.check_same_shape(q, k, "query", "positive_key")
    nk = None
    if negative_keys is not None:
        nk = V.check_embeddings(negative_keys, "negative_keys")
        if nk.shape[1] != q.shape[1] or nk.device != q.device:
            from ..errors import ShapeError

            raise ShapeError(f"negative_keys must be (K, {q.shape[1]}) on {q.device}, got {tuple(nk.shape)} on {nk.device}")
    t = V.check_positive("temperature", temperature)
    q, k, nk = V.common_dtype(q, k, nk)
    if _on_cpu(q):
        n = q.shape[0]
        qu, ku = F.normalize(q, dim=1), F.normalize(k, dim=1)
        targets = torch.arange(n)
        if nk is None:
            return _softmax_xent(qu, ku, 1.0 / t, targets, "all", 0, n_jobs)
        keys = torch.cat([ku, F.normalize(nk, dim=1)])
        return _softmax_xent(qu, keys, 1.0 / t, targets, "own_and_tail", n, n_jobs)
    from ..reference import softmax as ref

    return ref.infonce_loss(q, k, nk, t)


class NPairLoss(torch.nn.Module):
    """1/N Σ_i log(1 + Σ_{j≠i} exp(a_i·p_j − a_i·p_i)) + l2_reg·(mean‖a‖² + mean‖p‖²).
    ``forward(anchors, positives)``, row i of both being class i."""

    def __init__(self, l2_reg: float = 0.0, *, n_jobs: Optional[int] = None) -> None:
        super().__init__()
        self.l2_reg, self.n_jobs = l2_reg, n_jobs

    def forward(self, anchors: Any, positives: Any) -> Any:
        return npair_loss(anchors, positives, self.l2_reg, n_jobs=self.n_jobs)

    def extra_repr(self) -> str:
        return f"l2_reg={self.l2_reg}"


class NTXentLoss(torch.nn.Module):
    """SimCLR's NT-Xent over the 2N normalised views of ``forward(z1, z2)``, s = cos/τ."""

    def __init__(self, temperature: float = 0.1, *, n_jobs: Optional[int] = None) -> None:
        super().__init__()
        self.temperature, self.n_jobs = temperature, n_jobs

    def forward(self, z1: Any, z2: Any) -> Any:
        return ntxent_loss(z1, z2, self.temperature, n_jobs=self.n_jobs)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}"


class InfoNCELoss(torch.nn.Module):
    """InfoNCE on normalised vectors, logits [q·k⁺, q·k⁻…]/τ.
    ``forward(query, positive_key, negative_keys=None)``: without ``negative_keys`` the
    other rows' positive keys are the negatives; else the (K, d) queue is shared."""

    def __init__(self, temperature: float = 0.1, *, n_jobs: Optional[int] = None) -> None:
        super().__init__()
        self.temperature, self.n_jobs = temperature, n_jobs

    def forward(self, query: Any, positive_key: Any, negative_keys: Any = None) -> Any:
        return infonce_loss(query, positive_key, negative_keys, self.temperature, n_jobs=self.n_jobs)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}"
