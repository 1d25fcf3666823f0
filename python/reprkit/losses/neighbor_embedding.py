"""SNE-family loss for training networks on minibatches: parametric t-SNE and its relatives.

van der Maaten 2009, "Learning a Parametric Embedding by Preserving Local Structure"
(AISTATS): a network maps x to y, and each minibatch minimises KL(P‖Q) with P computed
from the batch's input rows and Q from its outputs. On a batch of B rows with outputs y:

* input affinities: each row's k = ⌊3·perplexity⌋ nearest rows of the batch (squared
  Euclidean distances), p_{j|i} = exp(−β_i d_ij) / Σ_k exp(−β_i d_ik) with β_i found by
  bisection so that exp(H(P_i)) = perplexity (van der Maaten & Hinton 2008); ``joint``:
  p_ij = (p_{j|i} + p_{i|j}) / (2B); ``conditional``: p_{j|i} itself. Or a given P
  restricted to the batch (P[idx][:, idx], then renormalised: ``joint`` symmetrises it,
  (P + Pᵀ)/2, and divides by its sum; ``conditional`` divides each row by its sum);
* output kernel: ``student`` w_ij = (1 + ‖y_i − y_j‖²/ν)^{−(ν+1)/2} (ν = ``dof``; 1 = t-SNE),
  ``gaussian`` w_ij = exp(−‖y_i − y_j‖²);
* ``joint`` (t-SNE, symmetric SNE): q_ij = w_ij / Σ_{k≠l} w_kl,
  L = KL(P‖Q) = Σ p_ij log p_ij − α Σ p_ij log w_ij + log Σ_{k≠l} w_kl;
* ``conditional`` (SNE): q_{j|i} = w_ij / Σ_{k≠i} w_ik, L = 1/R Σ_i KL(P_i‖Q_i) over the R
  rows with mass (the mean, so the scale does not grow with B);

α = ``exaggeration`` weighs the attractive term (α = 1: exactly the KL divergence).

Contrastive learning as SNE (the seeds' "two modifications": a network, and neighbours
generated as augmented views): with the 2N views u = normalise([z1; z2]), the one-hot P
whose row i has its single neighbour at the other view of the same sample, the ``gaussian``
kernel with ``conditional`` normalisation on the outputs y = u / √(2τ) gives exactly
SimCLR's NT-Xent at temperature τ: ‖y_i − y_j‖² = (2 − 2 u_i·u_j)/(2τ), so
q_{j|i} = e^{u_i·u_j/τ} / Σ_{k≠i} e^{u_i·u_k/τ} (the constant e^{−1/τ} cancels), and the
mean of KL(onehot_i ‖ Q_i) = −log q_{p(i)|i} over the 2N rows is NT-Xent
(:func:`contrastive_affinities` builds that P; tests check the equality).

CPU tensors run one fused Rust kernel (loss and gradient from the same pass; kept for
backward: the (B, d) gradient only; the P of a batch is a CSR of ≤ 2·B·k entries; no B×B
matrix anywhere). Other devices run :func:`reprkit.reference.neighbor_embedding.neighbor_embedding_loss_chunked`
(row chunks, memory linear in B).
"""

from __future__ import annotations

from typing import Any, Optional, Tuple

import numpy as np

from .. import _core, _ops
from .._ops import Tensor, torch
from .._threads import kernel_threads, op_threads
from .._validation import check_choice
from ..errors import InvalidParameterError, ShapeError
from . import _inputs as V

__all__ = ["tsne_loss", "TSNELoss", "batch_affinities", "contrastive_affinities"]

KERNELS = ("student", "gaussian")
NORMALIZATIONS = ("joint", "conditional")


def _ne_fake(y, indptr, indices, data, kernel, dof, norm, alpha, need_grad, n_threads):
    return y.new_empty(()), torch.empty_like(y) if need_grad else _ops.empty_like_rows(y)


@_ops.op("neighbor_embedding", _ne_fake)
def _ne(
    y: Tensor, indptr: Tensor, indices: Tensor, data: Tensor, kernel: str, dof: float, norm: str, alpha: float,
    need_grad: bool, n_threads: int,
) -> Tuple[Tensor, Tensor]:
    """(loss, ∂loss/∂y) of KL(P‖Q) for a CSR P (the gradient only with ``need_grad``, else empty)."""
    loss, g = _core.neighbor_embedding_loss(
        _ops.np_(y), _ops.np_(indptr), _ops.np_(indices), _ops.np_(data), kernel, dof, norm, alpha, need_grad,
        kernel_threads(n_threads),
    )
    return torch.tensor(loss, dtype=y.dtype), _ops.t_(g) if need_grad else _ops.empty_like_rows(y)


def _ne_backward_fake(g, gy, y):
    return torch.empty_like(gy)


@_ops.backward_op("neighbor_embedding_backward", "TSNELoss", _ne_backward_fake)
def _ne_backward(g: Tensor, gy: Tensor, y: Tensor) -> Tensor:
    """The forward's gradient times the upstream scalar ``g`` (y: for the double-backward refusal)."""
    return gy * g


class _NE(torch.autograd.Function):
    @staticmethod
    def forward(y: Any, indptr: Any, indices: Any, data: Any, kernel: str, dof: float, norm: str, alpha: float,  # type: ignore[override]
                need_grad: bool, n_threads: int) -> Any:
        return _ne(y, indptr, indices, data, kernel, dof, norm, alpha, need_grad, n_threads)

    @staticmethod
    def setup_context(ctx: Any, inputs: Any, output: Any) -> None:
        ctx.save_for_backward(output[1], inputs[0])
        ctx.mark_non_differentiable(output[1])

    @staticmethod
    def backward(ctx: Any, g: Any, _gy: Any) -> Any:  # type: ignore[override]
        gy, y = ctx.saved_tensors
        ty = _ne_backward(*_ops.detached(g, gy, y))
        return _ops.refuse_double_backward("TSNELoss", (ty,), (y,)) + (None,) * 9

    vmap = _ops.no_vmap("TSNELoss (tsne_loss)")


# ----------------------------------------------------------------------------- affinities


def _use_rust(t: Any) -> bool:
    """CPU tensors run the Rust kernels; other devices the chunked torch path (tests patch this)."""
    return t.device.type == "cpu"


def _n_neighbors(n: int, perplexity: float, n_neighbors: Optional[int]) -> int:
    k = int(3 * perplexity) if n_neighbors is None else int(n_neighbors)
    k = max(k, 1)
    if n_neighbors is not None and not (perplexity < n_neighbors < n):
        raise InvalidParameterError(
            f"n_neighbors must be in (perplexity, batch size) = ({perplexity:g}, {n}), got {n_neighbors}"
        )
    if k >= n:
        raise InvalidParameterError(
            f"a batch of {n} rows is too small for perplexity={perplexity:g}: P is calibrated on each row's "
            f"3·perplexity = {k} nearest rows of the batch, so the batch needs at least {k + 1} rows "
            f"(lower perplexity or use a larger batch)"
        )
    return k


def _csr_from_coo(rows: Any, cols: Any, vals: Any, n: int) -> Tuple[Any, Any, Any]:
    """CSR (int64 indptr, int64 indices, float64 data) on the CPU from row-major-sorted COO."""
    counts = torch.bincount(rows.cpu(), minlength=n)
    indptr = torch.zeros(n + 1, dtype=torch.int64)
    indptr[1:] = torch.cumsum(counts, 0)
    return indptr, cols.cpu().to(torch.int64).contiguous(), vals.cpu().to(torch.float64).contiguous()


def batch_affinities(
    inputs: Any, perplexity: float = 30.0, *, normalization: str = "joint", n_neighbors: Optional[int] = None,
    n_jobs: Optional[int] = None,
) -> Tuple[Any, Any, Any]:
    """P of a batch from its input rows, as COO ``(rows, cols, vals)`` (row-major, float64, on the
    inputs' device): each row's ``n_neighbors`` (default ⌊3·perplexity⌋) nearest rows by squared
    Euclidean distance, calibrated to ``perplexity``; ``joint``: (P_cond + P_condᵀ)/Σ (sums to 1),
    ``conditional``: P_cond (rows sum to 1). Needs batch size > n_neighbors."""
    check_choice("normalization", normalization, NORMALIZATIONS)
    x = V.check_embeddings(inputs, "inputs")
    perplexity = V.check_positive("perplexity", perplexity)
    n = x.shape[0]
    k = _n_neighbors(n, perplexity, n_neighbors)
    if not _use_rust(x):
        from ..reference.neighbor_embedding import batch_affinities as ref

        return ref(x, perplexity, k, normalization)
    xa = _ops.np_(V.compute(x))
    indptr, indices, data, kidx, pcond = _core.tsne_affinities(xa, perplexity, k, "sqeuclidean", "exact", kernel_threads(op_threads(n_jobs)), 0)
    if normalization == "conditional":
        rows = torch.arange(n).repeat_interleave(k)
        return rows, torch.from_numpy(kidx.astype(np.int64)).reshape(-1), torch.from_numpy(pcond).reshape(-1)
    rows = torch.repeat_interleave(torch.arange(n), torch.from_numpy(np.diff(indptr)))
    return rows, torch.from_numpy(indices.astype(np.int64)), torch.from_numpy(data)


def _csr_fake(n: int, device: Any) -> Tuple[Any, Any, Any]:
    nnz = torch.library.get_ctx().new_dynamic_size()
    return (torch.empty(n + 1, dtype=torch.int64, device=device), torch.empty(nnz, dtype=torch.int64, device=device),
            torch.empty(nnz, dtype=torch.float64, device=device))


def _batch_p_fake(x, perplexity, k, normalization, n_threads):
    return _csr_fake(x.shape[0], x.device)


@_ops.op("tsne_batch_affinities", _batch_p_fake)
def _batch_p(x: Tensor, perplexity: float, k: int, normalization: str, n_threads: int) -> Tuple[Tensor, Tensor, Tensor]:
    """A batch's P as a CSR (int64 indptr, int64 indices, float64 data) from its input rows: a custom
    op, so the data-dependent calibration and symmetrisation are one opaque node under torch.compile
    (the number of entries is a dynamic size in the fake)."""
    n = x.shape[0]
    indptr, indices, data, kidx, pcond = _core.tsne_affinities(_ops.np_(x), perplexity, k, "sqeuclidean", "exact", kernel_threads(n_threads), 0)
    if normalization == "conditional":
        return (torch.arange(0, n * k + 1, k, dtype=torch.int64), torch.from_numpy(kidx.astype(np.int64)).reshape(-1),
                torch.from_numpy(np.ascontiguousarray(pcond)).reshape(-1))
    return torch.from_numpy(indptr.astype(np.int64)), torch.from_numpy(indices.astype(np.int64)), torch.from_numpy(data)


def _given_p_fake(rows, cols, vals, indices, n, normalization):
    return _csr_fake(n, rows.device)


@_ops.op("tsne_given_affinities", _given_p_fake)
def _given_p(rows: Tensor, cols: Tensor, vals: Tensor, indices: Optional[Tensor], n: int, normalization: str) -> Tuple[Tensor, Tensor, Tensor]:
    """:func:`prepare_affinities` of a (rows, cols, vals) P as a custom op returning a CPU CSR, so a given P
    (restricted to a batch, renormalised: data-dependent sizes) compiles as one node."""
    r, c, v = prepare_affinities((rows, cols, vals), n, normalization, indices, rows.device)
    return _csr_from_coo(r, c, v, n)


def contrastive_affinities(n: int, device: Any = None) -> Tuple[Any, Any, Any]:
    """The one-hot P of 2n augmented views (rows 0..n−1 the first views, n..2n−1 the second):
    row i's only neighbour is its other view, p_{i±n|i} = 1 (use with ``normalization="conditional"``)."""
    i = torch.arange(2 * n, device=device)
    return i, (i + n) % (2 * n), torch.ones(2 * n, dtype=torch.float64, device=device)


def _coo_of(p: Any, n_out: int, device: Any) -> Tuple[Any, Any, Any, int]:
    """(rows, cols, vals, size) of a dense / sparse / index-value P."""
    if isinstance(p, tuple) and len(p) == 3:
        r, c, v = (torch.as_tensor(np.asarray(t) if not isinstance(t, torch.Tensor) else t) for t in p)
        size = None
    elif isinstance(p, torch.Tensor) and p.is_sparse:
        sp = p.coalesce()
        (r, c), v, size = sp.indices(), sp.values(), p.shape[0]
    elif isinstance(p, torch.Tensor) and p.layout in (torch.sparse_csr, torch.sparse_csc, torch.sparse_bsr):
        sp = p.to_sparse_coo().coalesce()
        (r, c), v, size = sp.indices(), sp.values(), p.shape[0]
    elif hasattr(p, "tocoo") and not isinstance(p, (np.ndarray, torch.Tensor)):  # scipy.sparse
        coo = p.tocoo()
        r, c, v, size = torch.from_numpy(coo.row.astype(np.int64)), torch.from_numpy(coo.col.astype(np.int64)), torch.from_numpy(coo.data), coo.shape[0]
        if coo.shape[0] != coo.shape[1]:
            raise ShapeError(f"P must be square, got shape {coo.shape}")
    else:
        t = torch.as_tensor(p)
        if t.dim() != 2 or t.shape[0] != t.shape[1]:
            raise ShapeError(f"a dense P must be a square (n, n) matrix, got shape {tuple(t.shape)}")
        r, c = torch.nonzero(t, as_tuple=True)
        v, size = t[r, c], t.shape[0]
    if r.dim() != 1 or r.shape != c.shape or r.shape != v.shape:
        raise ShapeError(f"P's rows, cols and vals must be 1-D of one length, got {tuple(r.shape)}, {tuple(c.shape)}, {tuple(v.shape)}")
    if v.is_floating_point() is False and v.numel():
        v = v.to(torch.float64)
    return r.to(device=device, dtype=torch.int64), c.to(device=device, dtype=torch.int64), v.to(device=device, dtype=torch.float64), size


def prepare_affinities(p: Any, n: int, normalization: str, indices: Optional[Any] = None, device: Any = None) -> Tuple[Any, Any, Any]:
    """A given P (dense, torch sparse, scipy sparse or (rows, cols, vals)), restricted to the batch
    ``indices`` when given (P[idx][:, idx]), without its diagonal, renormalised for ``normalization``:
    COO (rows, cols, vals) over the n batch rows, row-major."""
    r, c, v, size = _coo_of(p, n, device)
    if torch.compiler.is_compiling():
        raise InvalidParameterError("a given P is prepared outside torch.compile: pass it through batch_affinities first")
    if v.numel() and (not bool(torch.isfinite(v).all()) or bool((v < 0).any())):
        raise InvalidParameterError("P must hold finite, non-negative affinities")
    if indices is not None:
        idx = torch.as_tensor(indices, device=device).to(torch.int64)
        if idx.dim() != 1 or idx.shape[0] != n:
            raise ShapeError(f"indices must have shape ({n},) (the batch rows of P), got {tuple(idx.shape)}")
        big = int(size) if size is not None else int(max(int(r.max()) if r.numel() else 0, int(c.max()) if c.numel() else 0, int(idx.max())) + 1)
        if int(idx.min()) < 0 or int(idx.max()) >= big:
            raise ShapeError(f"indices must lie in [0, {big}), the rows of P")
        local = torch.full((big,), -1, dtype=torch.int64, device=device)
        local[idx] = torch.arange(n, device=device)
        lr, lc = local[r], local[c]
        keep = (lr >= 0) & (lc >= 0)
        r, c, v = lr[keep], lc[keep], v[keep]
    else:
        if (size is not None and size != n) or (r.numel() and int(max(int(r.max()), int(c.max()))) >= n):
            raise ShapeError(f"P has {size} rows but the batch has {n}; pass indices= to restrict a global P to the batch")
    keep = (r != c) & (v > 0)
    r, c, v = r[keep], c[keep], v[keep]
    if normalization == "joint":
        r, c, v = torch.cat([r, c]), torch.cat([c, r]), torch.cat([v, v]) * 0.5
    sp = torch.sparse_coo_tensor(torch.stack([r, c]), v, (n, n), check_invariants=False).coalesce()
    (r, c), v = sp.indices(), sp.values()
    if normalization == "joint":
        total = v.sum()
        if not bool(total > 0):
            raise InvalidParameterError("P restricted to the batch has no off-diagonal mass: nothing to fit")
        v = v / total
    else:
        rs = torch.zeros(n, dtype=v.dtype, device=device).index_add_(0, r, v)
        v = v / rs[r]
    return r, c, v


# ----------------------------------------------------------------------------- the loss


def _is_p(x: Any) -> bool:
    return (isinstance(x, tuple) and len(x) == 3) or (isinstance(x, torch.Tensor) and x.layout != torch.strided) or (
        hasattr(x, "tocoo") and not isinstance(x, (np.ndarray, torch.Tensor))
    )


def tsne_loss(
    inputs_or_p: Any, outputs: Any, *, perplexity: float = 30.0, dof: float = 1.0, exaggeration: float = 1.0,
    kernel: str = "student", normalization: str = "joint", affinities: str = "auto", indices: Optional[Any] = None,
    n_neighbors: Optional[int] = None, n_jobs: Optional[int] = None,
) -> Any:
    """KL(P‖Q) of a minibatch (see the module docstring for the formulas).

    ``inputs_or_p``: the batch's input rows (B, D) — P is calibrated on them (no gradient
    flows to them) — or a P: a torch sparse tensor, a scipy sparse matrix, an index-value
    triple ``(rows, cols, vals)``, or a dense matrix with ``affinities="precomputed"``. With
    ``indices`` (B,) the P is global (N, N) and restricted to those rows and columns.
    ``affinities``: ``"auto"`` (sparse / triple = P, dense = inputs), ``"inputs"``, ``"precomputed"``.
    ``outputs``: (B, d) embeddings, the loss's only differentiable argument.
    """
    check_choice("kernel", kernel, KERNELS)
    check_choice("normalization", normalization, NORMALIZATIONS)
    check_choice("affinities", affinities, ("auto", "inputs", "precomputed"))
    y = V.check_embeddings(outputs, "outputs")
    dof = V.check_positive("dof", dof)
    alpha = V.check_positive("exaggeration", exaggeration)
    (yc,) = V.common_dtype(y)
    n = y.shape[0]
    if n < 2:
        raise ShapeError(f"outputs must have at least 2 rows, got {n}")
    given = affinities == "precomputed" or (affinities == "auto" and _is_p(inputs_or_p))
    if given and _use_rust(y) and torch.compiler.is_compiling():
        if not (isinstance(inputs_or_p, tuple) and isinstance(inputs_or_p[0], torch.Tensor)
                and isinstance(inputs_or_p[1], torch.Tensor) and isinstance(inputs_or_p[2], torch.Tensor)):
            raise InvalidParameterError(
                "under torch.compile a given P must be a (rows, cols, vals) triple of tensors (convert a sparse or "
                "dense P outside the compiled function: (P.indices()[0], P.indices()[1], P.values()) of a coalesced COO)"
            )
        idx = None if indices is None else torch.as_tensor(indices)
        indptr, ind, dat = _given_p(*inputs_or_p, idx, n, normalization)
        return _NE.apply(yc, indptr, ind, dat, kernel, dof, normalization, alpha, _ops.needs_grad(yc), op_threads(n_jobs))[0]
    if given:
        rows, cols, vals = prepare_affinities(inputs_or_p, n, normalization, indices, y.device)
    elif _use_rust(y) and _use_rust(inputs_or_p if isinstance(inputs_or_p, torch.Tensor) else y):
        if indices is not None:
            raise InvalidParameterError("indices= restricts a given P; it has no meaning with input rows")
        x = V.check_embeddings(inputs_or_p, "inputs")
        if x.shape[0] != n:
            raise ShapeError(f"inputs has {x.shape[0]} rows but outputs has {n}: one input row per output row")
        k = _n_neighbors(n, V.check_positive("perplexity", perplexity), n_neighbors)
        indptr, ind, dat = _batch_p(V.compute(x).detach(), float(perplexity), k, normalization, op_threads(n_jobs))
        return _NE.apply(yc, indptr, ind, dat, kernel, dof, normalization, alpha, _ops.needs_grad(yc), op_threads(n_jobs))[0]
    else:
        if indices is not None:
            raise InvalidParameterError("indices= restricts a given P; it has no meaning with input rows")
        x = V.check_embeddings(inputs_or_p, "inputs")
        if x.shape[0] != n:
            raise ShapeError(f"inputs has {x.shape[0]} rows but outputs has {n}: one input row per output row")
        rows, cols, vals = batch_affinities(x, perplexity, normalization=normalization, n_neighbors=n_neighbors, n_jobs=n_jobs)
    if _use_rust(y):
        indptr, ind, dat = _csr_from_coo(rows, cols, vals, n)
        need = _ops.needs_grad(yc)
        return _NE.apply(yc, indptr, ind, dat, kernel, dof, normalization, alpha, need, op_threads(n_jobs))[0]
    from ..reference.neighbor_embedding import neighbor_embedding_loss_chunked

    return neighbor_embedding_loss_chunked(
        rows.to(y.device), cols.to(y.device), vals.to(device=y.device, dtype=yc.dtype), yc, kernel, dof, normalization, alpha
    )


def prepared_loss(y: Any, indptr: Any, indices: Any, data: Any, *, dof: float = 1.0, exaggeration: float = 1.0,
                  kernel: str = "student", normalization: str = "joint", n_jobs: Optional[int] = None) -> Any:
    """KL(P‖Q) for a P already normalised as a CSR over the batch rows (int64 indptr / indices, float64
    data, on the CPU): the inner loop of :class:`reprkit.ParametricTSNE`, skipping the validation and
    coalescing of :func:`tsne_loss` (the caller built P once, or built it duplicate-free)."""
    (yc,) = V.common_dtype(y)
    if _use_rust(y):
        return _NE.apply(yc, indptr, indices, data, kernel, float(dof), normalization, float(exaggeration),
                         _ops.needs_grad(yc), op_threads(n_jobs))[0]
    from ..reference.neighbor_embedding import neighbor_embedding_loss_chunked

    rows = torch.repeat_interleave(torch.arange(y.shape[0]), torch.diff(indptr))
    return neighbor_embedding_loss_chunked(
        rows.to(y.device), indices.to(y.device), data.to(device=y.device, dtype=yc.dtype), yc, kernel, float(dof),
        normalization, float(exaggeration),
    )


class TSNELoss(torch.nn.Module):
    """KL(P‖Q) of a minibatch: t-SNE (``kernel="student"``, ``normalization="joint"``, the
    default), symmetric SNE (``gaussian``, ``joint``), SNE (``gaussian``, ``conditional``).
    ``forward(inputs_or_P, outputs, indices=None)``; see :func:`tsne_loss`."""

    def __init__(
        self, perplexity: float = 30.0, dof: float = 1.0, exaggeration: float = 1.0, kernel: str = "student",
        normalization: str = "joint", *, affinities: str = "auto", n_neighbors: Optional[int] = None,
        n_jobs: Optional[int] = None,
    ) -> None:
        super().__init__()
        check_choice("kernel", kernel, KERNELS)
        check_choice("normalization", normalization, NORMALIZATIONS)
        V.check_positive("perplexity", perplexity)
        V.check_positive("dof", dof)
        V.check_positive("exaggeration", exaggeration)
        self.perplexity, self.dof, self.exaggeration = perplexity, dof, exaggeration
        self.kernel, self.normalization, self.affinities = kernel, normalization, affinities
        self.n_neighbors, self.n_jobs = n_neighbors, n_jobs

    def forward(self, inputs_or_p: Any, outputs: Any, indices: Any = None) -> Any:
        return tsne_loss(
            inputs_or_p, outputs, perplexity=self.perplexity, dof=self.dof, exaggeration=self.exaggeration,
            kernel=self.kernel, normalization=self.normalization, affinities=self.affinities, indices=indices,
            n_neighbors=self.n_neighbors, n_jobs=self.n_jobs,
        )

    def extra_repr(self) -> str:
        return (f"perplexity={self.perplexity}, dof={self.dof}, exaggeration={self.exaggeration}, "
                f"kernel={self.kernel!r}, normalization={self.normalization!r}")
