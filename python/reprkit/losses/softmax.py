"""Softmax-type losses: N-pair, NT-Xent (SimCLR), InfoNCE (MoCo), supervised contrastive (SupCon).

Each is a mean over rows of a softmax cross-entropy over scaled dot products.
CPU tensors run one fused Rust kernel (forward and gradient from the same
similarity tiles, O((n+m)·d) memory); other devices (and ``backend="torch"``) run
the chunked torch path of :mod:`reprkit.losses._chunked` (row chunks, per-row
log-sum-exps kept, a recomputing backward); :mod:`reprkit.reference.softmax` is
the dense oracle. ``gather_distributed``: see :mod:`reprkit.distributed`.
"""

from typing import Any, Optional, Tuple

from .. import _core, _ops
from .._ops import Tensor, torch
from .._threads import kernel_threads, op_threads
from .._torch import is_tensor
from .._validation import check_choice
from . import _inputs as V
from ._chunked import BACKENDS, use_rust, xent_rows

F = torch.nn.functional

__all__ = [
    "npair_loss",
    "ntxent_loss",
    "infonce_loss",
    "supcon_loss",
    "NPairLoss",
    "NTXentLoss",
    "InfoNCELoss",
    "SupConLoss",
]


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
        ctx.set_materialize_grads(False)  # else backward is handed two B×d zero tensors for the kept gradients

    @staticmethod
    def backward(ctx: Any, g: Any, _gq: Any, _gk: Any) -> Any:  # type: ignore[override]
        if g is None:
            return (None,) * 8
        gq, gk, q, k = ctx.saved_tensors
        tq, tk = _xent_backward(*_ops.detached(g, gq, gk, q, k))
        grads = _ops.refuse_double_backward("the softmax losses", (tq, tk if ctx.has_k else None), (q, k))
        return grads + (None,) * 6

    vmap = _ops.no_vmap("the softmax losses (npair_loss, ntxent_loss, infonce_loss)")


@_ops.op("xent_rows", lambda q, k, scale, t, mask, tail, nt: (q.new_empty(q.shape[0]), q.new_empty(q.shape[0]), q.new_empty(q.shape[0])))
def _xent_rows(q: Tensor, k: Optional[Tensor], scale: float, targets: Tensor, mask: str, tail: int, nt: int) -> Tuple[Tensor, Tensor, Tensor]:
    """Per-row losses lse_i − s_{i,t_i}, each row's count in the mean (1), and the lse state."""
    per, lse = _core.xent_loss_rows(_ops.np_(q), _ops.np_(k), scale, _ops.np_(targets), mask, tail, kernel_threads(nt))
    per = torch.from_numpy(per)
    return per, torch.ones_like(per), torch.from_numpy(lse)


def _xent_rows_backward_fake(g, q, k, scale, t, mask, tail, lse, nt):
    return torch.empty_like(q), _ops.empty_like_rows(q) if k is None else torch.empty_like(k)


@_ops.backward_op("xent_rows_backward", "the softmax losses", _xent_rows_backward_fake)
def _xent_rows_backward(
    g: Tensor, q: Tensor, k: Optional[Tensor], scale: float, targets: Tensor, mask: str, tail: int, lse: Tensor, nt: int
) -> Tuple[Tensor, Tensor]:
    gq, gk = _core.xent_loss_rows_backward(
        _ops.np_(q), _ops.np_(k), scale, _ops.np_(targets), mask, tail, _ops.np_(lse), _ops.np_(g.to(q.dtype)), kernel_threads(nt)
    )
    return torch.from_numpy(gq), _ops.t_(gk, q)


def _rows_function() -> Any:
    from ._pair_ops import _function

    return _function("_SoftmaxRows", _xent_rows, _xent_rows_backward, 6, "the softmax losses (npair_loss, ntxent_loss, infonce_loss)")


_SoftmaxRows = _rows_function()
REDUCTIONS = ("mean", "sum", "none")


def _row_weights(weights: Optional[Any], n: int, like: Any, repeat: int = 1) -> Optional[Any]:
    """Per-sample weights (n,) as per-row weights (each sample's rows: ``repeat`` views)."""
    if weights is None:
        return None
    w = torch.as_tensor(weights, device=like.device).to(like.dtype)
    if w.dim() != 1 or w.shape[0] != n:
        from ..errors import ShapeError

        raise ShapeError(f"weights must have shape ({n},) (one per sample), got {tuple(w.shape)}")
    return torch.cat([w] * repeat) if repeat > 1 else w


def _softmax_xent(
    q: Any, k: Optional[Any], scale: float, targets: Any, mask: str, tail: int, n_jobs: Optional[int],
    reduction: str = "mean", weights: Optional[Any] = None,
) -> Any:
    if reduction == "mean" and weights is None:  # the fused kernel: gradient from the forward's tiles
        need = _ops.needs_grad(q, k)
        return _SoftmaxXent.apply(q, k, scale, targets, mask, tail, need, op_threads(n_jobs))[0]
    from ..reference.pairs import reduce

    per, cnt, _ = _SoftmaxRows.apply(q, k, scale, targets, mask, tail, op_threads(n_jobs))
    return reduce(per, cnt, reduction, weights)


def _distributed() -> bool:
    from ..distributed import is_distributed

    return is_distributed()


def _reduce_rows(per: Any, reduction: str, weights: Optional[Any]) -> Any:
    from ..reference.pairs import reduce

    return reduce(per, torch.ones_like(per), reduction, weights)


def npair_loss(
    anchors: Any, positives: Any, l2_reg: float = 0.0, *, reduction: str = "mean", weights: Optional[Any] = None,
    n_jobs: Optional[int] = None, backend: str = "auto",
) -> Any:
    """Multi-class N-pair loss (Sohn 2016); row i of both inputs is class i.

    L = 1/N Σ_i log(1 + Σ_{j≠i} exp(a_i·p_j − a_i·p_i)) + l2_reg·(mean‖a_i‖² + mean‖p_i‖²)

    ``reduction="none"`` gives the N row terms (without the l2 term), ``"sum"`` their sum (+ N·l2 term);
    ``weights`` (N,) weight the rows of the mean: Σ w_i ℓ_i / Σ w_i. ``backend`` as :func:`ntxent_loss`.
    """
    check_choice("reduction", reduction, REDUCTIONS)
    a = V.check_embeddings(anchors, "anchors")
    p = V.check_embeddings(positives, "positives")
    V.check_same_shape(a, p, "anchors", "positives")
    l2_reg = V.check_finite_number("l2_reg", l2_reg, nonneg=True)
    a, p = V.common_dtype(a, p)
    w = _row_weights(weights, a.shape[0], a)
    targets = torch.arange(a.shape[0], device=a.device)
    if use_rust(backend, a):
        loss = _softmax_xent(a, p, 1.0, targets, "all", 0, n_jobs, reduction, w)
    else:
        loss = _reduce_rows(xent_rows(a, p, 1.0, targets, "all", 0), reduction, w)
    if l2_reg and reduction != "none":
        reg = l2_reg * ((a * a).sum(1).mean() + (p * p).sum(1).mean())
        loss = loss + (reg * a.shape[0] if reduction == "sum" else reg)
    return loss


def ntxent_loss(
    z1: Any, z2: Any, temperature: float = 0.1, *, reduction: str = "mean", weights: Optional[Any] = None,
    n_jobs: Optional[int] = None, backend: str = "auto", gather_distributed: bool = False,
) -> Any:
    """NT-Xent (SimCLR). The 2N views u = normalise([z1; z2]), s_ij = u_i·u_j / τ;

    L = 1/(2N) Σ_i [ −s_{i,p(i)} + log Σ_{j≠i} e^{s_ij} ],  p(i) = i ± N (the other view).

    ``reduction="none"`` gives the 2N view terms (z1's rows, then z2's); ``weights`` (N,) weight each
    sample's two views. ``backend``: ``"auto"`` (Rust on CPU, the chunked torch path elsewhere),
    ``"rust"`` or ``"torch"`` (:mod:`reprkit.losses._chunked`: row chunks, O(chunk·N) memory, a
    recomputing backward). ``gather_distributed=True``: the local views are the anchors against
    the views of every rank (memory per rank O(local·global) logits in tiles; the scaling rule of
    :mod:`reprkit.distributed`; ``"none"`` gives the global vector).
    """
    gather_distributed = V.check_bool("gather_distributed", gather_distributed)
    check_choice("reduction", reduction, REDUCTIONS)
    if gather_distributed and reduction == "none":
        from ..distributed import gather_inputs

        z1, z2, weights = gather_inputs(z1, z2, weights)
    a = V.check_embeddings(z1, "z1")
    b = V.check_embeddings(z2, "z2")
    V.check_same_shape(a, b, "z1", "z2")
    t = V.check_positive("temperature", temperature)
    a, b = V.common_dtype(a, b)
    rust = use_rust(backend, a)
    n = a.shape[0]
    w = _row_weights(weights, n, a, repeat=2)
    if gather_distributed and reduction != "none" and _distributed():
        from . import _dist

        return _dist.ntxent(a, b, t, rust, n_jobs, reduction, w)
    u = F.normalize(torch.cat([a, b]), dim=1)
    idx = torch.arange(n, device=a.device)
    targets = torch.cat([idx + n, idx])
    if rust:
        return _softmax_xent(u, None, 1.0 / t, targets, "nodiag", 0, n_jobs, reduction, w)
    return _reduce_rows(xent_rows(u, None, 1.0 / t, targets, "nodiag", 0), reduction, w)


def infonce_loss(
    query: Any, positive_key: Any, negative_keys: Optional[Any] = None, temperature: float = 0.1, *,
    reduction: str = "mean", weights: Optional[Any] = None, n_jobs: Optional[int] = None, backend: str = "auto",
    gather_distributed: bool = False,
) -> Any:
    """InfoNCE (van den Oord 2018; MoCo). On unit vectors q, k:

    L = 1/N Σ_i −log( e^{q_i·k⁺_i/τ} / (e^{q_i·k⁺_i/τ} + Σ_{k⁻} e^{q_i·k⁻/τ}) )

    where the negatives k⁻ are the other rows' positive keys when
    ``negative_keys`` is None, else the rows of ``negative_keys`` (K, d), a queue
    shared by every query (e.g. :class:`reprkit.MemoryBank`). ``reduction="none"`` gives the N row
    terms; ``weights`` (N,) weight the rows of the mean. ``backend`` as :func:`ntxent_loss`.
    ``gather_distributed=True``: the local queries against every rank's keys (with a queue the
    queue stays local and only the mean is global); the rule of :mod:`reprkit.distributed`.
    """
    gather_distributed = V.check_bool("gather_distributed", gather_distributed)
    check_choice("reduction", reduction, REDUCTIONS)
    if gather_distributed and reduction == "none" and negative_keys is None:
        from ..distributed import gather_inputs

        query, positive_key, weights = gather_inputs(query, positive_key, weights)
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
    rust = use_rust(backend, q)
    n = q.shape[0]
    w = _row_weights(weights, n, q)
    if gather_distributed and reduction != "none" and _distributed():
        from . import _dist

        return _dist.infonce(q, k, nk, t, rust, n_jobs, reduction, w)
    qu, ku = F.normalize(q, dim=1), F.normalize(k, dim=1)
    targets = torch.arange(n, device=q.device)
    if nk is None:
        keys, mask, tail = ku, "all", 0
    else:
        keys, mask, tail = torch.cat([ku, F.normalize(nk, dim=1)]), "own_and_tail", n
    if rust:
        return _softmax_xent(qu, keys, 1.0 / t, targets, mask, tail, n_jobs, reduction, w)
    return _reduce_rows(xent_rows(qu, keys, 1.0 / t, targets, mask, tail), reduction, w)


class NPairLoss(torch.nn.Module):
    """1/N Σ_i log(1 + Σ_{j≠i} exp(a_i·p_j − a_i·p_i)) + l2_reg·(mean‖a‖² + mean‖p‖²).
    ``forward(anchors, positives)``, row i of both being class i."""

    def __init__(self, l2_reg: float = 0.0, *, reduction: str = "mean", n_jobs: Optional[int] = None) -> None:
        super().__init__()
        check_choice("reduction", reduction, REDUCTIONS)
        self.l2_reg, self.reduction, self.n_jobs = l2_reg, reduction, n_jobs

    def forward(self, anchors: Any, positives: Any, *, weights: Any = None) -> Any:
        return npair_loss(anchors, positives, self.l2_reg, reduction=self.reduction, weights=weights, n_jobs=self.n_jobs)

    def extra_repr(self) -> str:
        return f"l2_reg={self.l2_reg}"


class NTXentLoss(torch.nn.Module):
    """SimCLR's NT-Xent over the 2N normalised views of ``forward(z1, z2)``, s = cos/τ."""

    def __init__(
        self, temperature: float = 0.1, *, reduction: str = "mean", n_jobs: Optional[int] = None, backend: str = "auto",
        gather_distributed: bool = False,
    ) -> None:
        super().__init__()
        check_choice("reduction", reduction, REDUCTIONS)
        check_choice("backend", backend, BACKENDS)
        self.temperature, self.reduction, self.n_jobs = temperature, reduction, n_jobs
        self.backend, self.gather_distributed = backend, bool(gather_distributed)

    def forward(self, z1: Any, z2: Any, *, weights: Any = None) -> Any:
        return ntxent_loss(z1, z2, self.temperature, reduction=self.reduction, weights=weights, n_jobs=self.n_jobs,
                           backend=self.backend, gather_distributed=self.gather_distributed)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}"


class InfoNCELoss(torch.nn.Module):
    """InfoNCE on normalised vectors, logits [q·k⁺, q·k⁻…]/τ.
    ``forward(query, positive_key, negative_keys=None)``: without ``negative_keys`` the
    other rows' positive keys are the negatives; else the (K, d) queue is shared."""

    def __init__(
        self, temperature: float = 0.1, *, reduction: str = "mean", n_jobs: Optional[int] = None, backend: str = "auto",
        gather_distributed: bool = False,
    ) -> None:
        super().__init__()
        check_choice("reduction", reduction, REDUCTIONS)
        check_choice("backend", backend, BACKENDS)
        self.temperature, self.reduction, self.n_jobs = temperature, reduction, n_jobs
        self.backend, self.gather_distributed = backend, bool(gather_distributed)

    def forward(self, query: Any, positive_key: Any, negative_keys: Any = None, *, weights: Any = None) -> Any:
        return infonce_loss(query, positive_key, negative_keys, self.temperature, reduction=self.reduction, weights=weights,
                            n_jobs=self.n_jobs, backend=self.backend, gather_distributed=self.gather_distributed)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}"


# ----------------------------------------------------------------------------- SupCon (Khosla et al. 2020)


def _use_rust(t: Any) -> bool:
    """CPU tensors run the Rust kernel; other devices the chunked torch path (tests patch this)."""
    return _on_cpu(t)


def _supcon_fake(z, scale, groups, need_grad, n_threads):
    return z.new_empty(()), torch.empty_like(z) if need_grad else _ops.empty_like_rows(z)


@_ops.op("supcon", _supcon_fake)
def _supcon(z: Tensor, scale: float, groups: Tensor, need_grad: bool, n_threads: int) -> Tuple[Tensor, Tensor]:
    """(loss, ∂loss/∂z) of SupCon on unit rows z (the gradient only with ``need_grad``, else empty)."""
    loss, g = _core.supcon_loss(_ops.np_(z), scale, _ops.np_(groups), need_grad, kernel_threads(n_threads))
    return torch.tensor(loss, dtype=z.dtype), _ops.t_(g) if need_grad else _ops.empty_like_rows(z)


def _supcon_backward_fake(g, gz, z):
    return torch.empty_like(gz)


@_ops.backward_op("supcon_backward", "SupConLoss", _supcon_backward_fake)
def _supcon_backward(g: Tensor, gz: Tensor, z: Tensor) -> Tensor:
    """The forward's gradient times the upstream scalar ``g`` (z: for the double-backward refusal)."""
    return gz * g


class _SupCon(torch.autograd.Function):
    @staticmethod
    def forward(z: Any, scale: float, groups: Any, need_grad: bool, n_threads: int) -> Any:  # type: ignore[override]
        return _supcon(z, scale, groups, need_grad, n_threads)

    @staticmethod
    def setup_context(ctx: Any, inputs: Any, output: Any) -> None:
        ctx.save_for_backward(output[1], inputs[0])
        ctx.mark_non_differentiable(output[1])

    @staticmethod
    def backward(ctx: Any, g: Any, _gz: Any) -> Any:  # type: ignore[override]
        gz, z = ctx.saved_tensors
        tz = _supcon_backward(*_ops.detached(g, gz, z))
        return _ops.refuse_double_backward("SupConLoss", (tz,), (z,)) + (None,) * 4

    vmap = _ops.no_vmap("SupConLoss (supcon_loss)")


def _supcon_inputs(embeddings: Any, labels: Any) -> Tuple[Any, Any]:
    """Validated (rows, group ids) from (B, d) + labels or (B, V, d) [+ labels]."""
    from ..errors import InvalidParameterError, ShapeError
    from ..reference.softmax import supcon_rows

    if isinstance(embeddings, torch.Tensor) and embeddings.dim() == 3:
        b, v, d = embeddings.shape
        if b == 0 or v == 0 or d == 0:
            raise ShapeError(f"features must be non-empty (batch, n_views, dim), got shape {tuple(embeddings.shape)}")
        rows = V.check_embeddings(embeddings.reshape(b * v, d), "features")
        lab = None if labels is None else V.check_labels(labels, b, embeddings.device)
        rows, groups = supcon_rows(rows.reshape(b, v, d), lab)
        return rows, groups
    if isinstance(embeddings, torch.Tensor) and embeddings.dim() not in (2, 3):
        raise ShapeError(
            f"embeddings must be (batch, dim) with labels or (batch, n_views, dim) features, got shape {tuple(embeddings.shape)}"
        )
    z = V.check_embeddings(embeddings, "embeddings")
    if labels is None:
        raise InvalidParameterError(
            "supcon_loss: (batch, dim) embeddings need labels; pass (batch, n_views, dim) features for the "
            "unsupervised form (the views of a sample are its positives)"
        )
    return z, V.check_labels(labels, z.shape[0], z.device)


def supcon_loss(
    embeddings: Any, labels: Optional[Any] = None, temperature: float = 0.1, *, n_jobs: Optional[int] = None,
    backend: str = "auto", gather_distributed: bool = False,
) -> Any:
    """Supervised contrastive loss (Khosla et al. 2020, "Supervised Contrastive Learning", L_out).

    On the unit rows u = normalise(z), s_ij = u_i·u_j / τ, P(i) = the other rows
    with i's label (its positives), A = the rows with P(i) ≠ ∅:

    L = 1/|A| Σ_{i∈A} [ log Σ_{j≠i} e^{s_ij} − 1/|P(i)| Σ_{p∈P(i)} s_ip ]

    Inputs, as pytorch-metric-learning's ``SupConLoss`` and the authors' code take them:

    * ``embeddings`` (B, d) with ``labels`` (B,): several positives per anchor;
    * ``features`` (B, V, d), V views per sample, rows taken view-major
      (``cat(unbind(features, 1))``, the authors' order); with ``labels`` (B,)
      the positives are the same-label rows of every view, without labels the
      other views of the same sample — two views give SimCLR's NT-Xent exactly.

    Conventions: rows without a positive are left out of the mean (PML's
    ``AvgNonZeroReducer``); when no row has one (B = 1, all labels distinct)
    the loss is 0 with a zero gradient. The authors' code scales by
    τ/base_temperature (1 when base_temperature = τ) and counts rows without
    positives as 0 in the mean; PML returns 0 when the batch has no negative
    pair (one class), where this loss keeps the value of the formula.
    Half-precision inputs are computed in float32.

    CPU tensors run the Rust kernel (the masked B×B softmax in upper-triangle
    blocks: an online log-sum-exp over the non-self columns, then one
    recomputing pass for the gradient; the positives' sum from per-label row
    sums, O(B·d); nothing B×B is kept). Other devices run
    :func:`reprkit.reference.softmax.supcon_loss_chunked` (row chunks, a
    recomputing backward: memory linear in B); ``backend="torch"`` forces it on CPU.

    ``gather_distributed=True`` (the rule of :mod:`reprkit.distributed`): on the torch path
    (non-CPU tensors, ``backend="torch"``) this rank's rows are the anchors against every
    rank's rows (L_r = W·Σ_{i∈A_r} ℓ_i / |A|, memory per rank O(chunk·B_global + B_global·d));
    with the Rust kernel (square) every rank gathers the rows and labels and computes the
    global batch's loss (the same memory, the compute repeated on every rank).
    """
    gather_distributed = V.check_bool("gather_distributed", gather_distributed)
    rust_backend = use_rust(backend, embeddings) if is_tensor(embeddings) else True
    if gather_distributed and rust_backend:
        from ..distributed import gather_inputs

        embeddings, labels = gather_inputs(embeddings, labels)
    z, groups = _supcon_inputs(embeddings, labels)
    t = V.check_positive("temperature", temperature)
    (z,) = V.common_dtype(z)
    if gather_distributed and not rust_backend and _distributed():
        from . import _dist

        return _dist.supcon(z, groups, t, labels is None)
    u = F.normalize(z, dim=1)
    if use_rust(backend, u) and _use_rust(u):
        need = _ops.needs_grad(u)
        return _SupCon.apply(u, 1.0 / t, groups, need, op_threads(n_jobs))[0]
    from ..reference import softmax as ref

    return ref._SupConChunked.apply(u, groups, 1.0 / t, 1024)[0]


class SupConLoss(torch.nn.Module):
    """Supervised contrastive loss (Khosla et al. 2020), see :func:`supcon_loss`.

    ``forward(embeddings, labels)`` with (B, d) embeddings, or ``forward(features,
    labels=None)`` with (B, n_views, d) features (no labels: SimCLR's positives)."""

    def __init__(
        self, temperature: float = 0.1, *, n_jobs: Optional[int] = None, backend: str = "auto", gather_distributed: bool = False
    ) -> None:
        super().__init__()
        check_choice("backend", backend, BACKENDS)
        self.temperature, self.n_jobs = temperature, n_jobs
        self.backend, self.gather_distributed = backend, bool(gather_distributed)

    def forward(self, embeddings: Any, labels: Any = None) -> Any:
        return supcon_loss(embeddings, labels, self.temperature, n_jobs=self.n_jobs, backend=self.backend,
                           gather_distributed=self.gather_distributed)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}"
