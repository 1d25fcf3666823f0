"""Alignment and uniformity on the hypersphere (Wang & Isola 2020, "Understanding Contrastive
Representation Learning through Alignment and Uniformity on the Hypersphere", ICML).

* alignment(x, y) = mean_i ‖x_i − y_i‖^α  (α = 2): positive pairs close;
* uniformity(x) = log mean_{i<j} e^{−t‖x_i − x_j‖²}  (t = 2): the batch spread over the sphere
  (the log of the mean Gaussian potential over the B(B−1)/2 pairs; lower is more uniform);
* :class:`HypersphereLoss` = alignment(x, y) + (uniformity(x) + uniformity(y)) / 2.

The functions evaluate the formulas on the rows as given (the paper applies them
to L2-normalised features; ``normalize=True`` normalises first), so they double
as evaluation metrics of a representation. Alignment is elementwise and stays
torch. Uniformity on CPU tensors runs the Rust kernel (fixed chunks of full rows
of the B×B matrix, the row's own maximum for the log-sum-exp, forward and
gradient in one pass; nothing B×B is kept); on other devices
:func:`reprkit.reference.hypersphere.uniformity_loss_chunked` (row chunks, a
recomputing backward: memory linear in B). Half precision is computed in float32.
"""

from __future__ import annotations

from typing import Any, Optional, Tuple

from .. import _core, _ops
from .._ops import Tensor, torch
from .._threads import kernel_threads, op_threads
from . import _inputs as V

F = torch.nn.functional

__all__ = ["alignment_loss", "uniformity_loss", "hypersphere_loss", "HypersphereLoss"]


def _use_rust(t: Any) -> bool:
    """CPU tensors run the Rust kernel; other devices the chunked torch path (tests patch this)."""
    return t.device.type == "cpu"


def _unif_fake(x, t, need_grad, n_threads):
    return x.new_empty(()), torch.empty_like(x) if need_grad else _ops.empty_like_rows(x)


@_ops.op("uniformity", _unif_fake)
def _unif(x: Tensor, t: float, need_grad: bool, n_threads: int) -> Tuple[Tensor, Tensor]:
    """(U, ∂U/∂x) of the uniformity (the gradient only with ``need_grad``, else empty)."""
    loss, g = _core.uniformity_loss(_ops.np_(x), t, need_grad, kernel_threads(n_threads))
    return torch.tensor(loss, dtype=x.dtype), _ops.t_(g) if need_grad else _ops.empty_like_rows(x)


def _unif_backward_fake(g, gx, x):
    return torch.empty_like(gx)


@_ops.backward_op("uniformity_backward", "uniformity_loss", _unif_backward_fake)
def _unif_backward(g: Tensor, gx: Tensor, x: Tensor) -> Tensor:
    """The forward's gradient times the upstream scalar ``g`` (x: for the double-backward refusal)."""
    return gx * g


class _Uniformity(torch.autograd.Function):
    @staticmethod
    def forward(x: Any, t: float, need_grad: bool, n_threads: int) -> Any:  # type: ignore[override]
        return _unif(x, t, need_grad, n_threads)

    @staticmethod
    def setup_context(ctx: Any, inputs: Any, output: Any) -> None:
        ctx.save_for_backward(output[1], inputs[0])
        ctx.mark_non_differentiable(output[1])

    @staticmethod
    def backward(ctx: Any, g: Any, _gx: Any) -> Any:  # type: ignore[override]
        gx, x = ctx.saved_tensors
        tx = _unif_backward(*_ops.detached(g, gx, x))
        return _ops.refuse_double_backward("uniformity_loss", (tx,), (x,)) + (None,) * 3

    vmap = _ops.no_vmap("uniformity_loss (HypersphereLoss)")


def _maybe_normalize(x: Any, normalize: bool) -> Any:
    normalize = V.check_bool("normalize", normalize)
    return F.normalize(x, dim=1) if normalize else x


def alignment_loss(x: Any, y: Any, alpha: float = 2.0, *, normalize: bool = False) -> Any:
    """Alignment (Wang & Isola 2020): mean_i ‖x_i − y_i‖^α over the positive pairs (x_i, y_i).

    Elementwise, so plain torch on every device; the gradient at x_i = y_i is 0 for every α > 0."""
    a = V.check_embeddings(x, "x")
    b = V.check_embeddings(y, "y")
    V.check_same_shape(a, b, "x", "y")
    alpha = V.check_positive("alpha", alpha)
    a, b = V.common_dtype(a, b)
    from ..reference import hypersphere as ref

    return ref.alignment_loss(_maybe_normalize(a, normalize), _maybe_normalize(b, normalize), alpha)


def uniformity_loss(
    x: Any, t: float = 2.0, *, normalize: bool = False, n_jobs: Optional[int] = None, gather_distributed: bool = False,
    backend: str = "auto",
) -> Any:
    """Uniformity (Wang & Isola 2020): U = log( 2/(B(B−1)) Σ_{i<j} e^{−t‖x_i − x_j‖²} ), B ≥ 2.

    Computed as a log-sum-exp (never underflows for rows far apart). ``gather_distributed=True``:
    the global-batch form of :mod:`reprkit.distributed` (the rows of every rank, B the global
    batch; memory per rank O(B·d)). ``backend``: ``"auto"`` (Rust on CPU, else the row-chunked
    torch path), ``"rust"`` or ``"torch"``."""
    gather_distributed = V.check_bool("gather_distributed", gather_distributed)
    if gather_distributed:
        from ..distributed import all_gather

        x = all_gather(x)
    a = V.check_embeddings(x, "x")
    if not torch.compiler.is_compiling() and a.shape[0] < 2:
        from ..errors import ShapeError

        raise ShapeError(f"uniformity_loss needs at least 2 rows (it averages over pairs), got shape {tuple(a.shape)}")
    t = V.check_positive("t", t)
    (a,) = V.common_dtype(a)
    a = _maybe_normalize(a, normalize)
    from ._chunked import use_rust

    if use_rust(backend, a) and _use_rust(a):
        return _Uniformity.apply(a, t, _ops.needs_grad(a), op_threads(n_jobs))[0]
    from ..reference import hypersphere as ref

    return ref.uniformity_loss_chunked(a, t, 1024)


def hypersphere_loss(
    x: Any, y: Any, alpha: float = 2.0, t: float = 2.0, *, normalize: bool = False, n_jobs: Optional[int] = None,
    gather_distributed: bool = False,
) -> Any:
    """Wang & Isola's objective: alignment(x, y) + (uniformity(x) + uniformity(y)) / 2.

    ``gather_distributed=True``: both views of every rank (one collective) and every term over
    the global batch, the global-batch form of :mod:`reprkit.distributed`."""
    gather_distributed = V.check_bool("gather_distributed", gather_distributed)
    if gather_distributed:
        from ..distributed import all_gather, is_distributed

        if is_distributed():
            a = V.check_embeddings(x, "x")
            b = V.check_embeddings(y, "y")
            V.check_same_shape(a, b, "x", "y")
            a, b = V.common_dtype(a, b)
            ab = all_gather(torch.cat([a, b], 1))
            x, y = ab[:, : a.shape[1]], ab[:, a.shape[1] :]
    return alignment_loss(x, y, alpha, normalize=normalize) + (
        uniformity_loss(x, t, normalize=normalize, n_jobs=n_jobs) + uniformity_loss(y, t, normalize=normalize, n_jobs=n_jobs)
    ) / 2


class HypersphereLoss(torch.nn.Module):
    """alignment(x, y) + (uniformity(x) + uniformity(y)) / 2 (Wang & Isola 2020), ``forward(x, y)`` on two views.

    ``normalize=True`` (default here) L2-normalises the rows first, as the paper's features are."""

    def __init__(self, alpha: float = 2.0, t: float = 2.0, *, normalize: bool = True, n_jobs: Optional[int] = None,
                 gather_distributed: bool = False) -> None:
        super().__init__()
        self.alpha, self.t, self.normalize, self.n_jobs = alpha, t, normalize, n_jobs
        self.gather_distributed = bool(gather_distributed)

    def forward(self, x: Any, y: Any) -> Any:
        return hypersphere_loss(x, y, self.alpha, self.t, normalize=self.normalize, n_jobs=self.n_jobs,
                                gather_distributed=self.gather_distributed)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, t={self.t}, normalize={self.normalize}"
