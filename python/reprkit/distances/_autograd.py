"""Pairwise distances of CPU tensors as torch operators: Rust forward and analytic Rust backward."""

from typing import Any, Optional, Tuple

from .. import _core, _ops
from .._threads import kernel_threads
from .._bridge import unbroadcast
from .._ops import Tensor, torch


def _fake(x, y, metric, n_threads):
    return x.new_empty((x.shape[0], x.shape[0] if y is None else y.shape[0]))


@_ops.op("pairwise_distances", _fake)
def _distances(x: Tensor, y: Optional[Tensor], metric: str, n_threads: int) -> Tensor:
    return torch.from_numpy(_core.pairwise_distances(_ops.np_(x), _ops.np_(y), metric, kernel_threads(n_threads)))


def _backward_fake(x, y, dist, g, metric, n_threads):
    return torch.empty_like(x), _ops.empty_like_rows(x) if y is None else torch.empty_like(y)


@_ops.backward_op("pairwise_distances_backward", "pairwise_distances", _backward_fake)
def _distances_backward(x: Tensor, y: Optional[Tensor], dist: Tensor, g: Tensor, metric: str, n_threads: int) -> Tuple[Tensor, Tensor]:
    """∂/∂x, ∂/∂y of Σ g ⊙ D; ``g`` may be (1, 1), (n, 1), (1, m) or (n, m) (broadcast in the kernel)."""
    gx, gy = _core.pairwise_distances_backward(_ops.np_(x), _ops.np_(y), _ops.np_(dist), _ops.np_(g), metric, kernel_threads(n_threads))
    return torch.from_numpy(gx), _ops.t_(gy, x)


class _PairwiseDistances(torch.autograd.Function):
    """D = pairwise_distances(x, y) on float32/float64 CPU tensors."""

    @staticmethod
    def forward(x: Any, y: Optional[Any], metric: str, n_threads: int) -> Any:  # type: ignore[override]
        return _distances(x, y, metric, n_threads)

    @staticmethod
    def setup_context(ctx: Any, inputs: Any, output: Any) -> None:
        x, y, metric, n_threads = inputs
        ctx.metric, ctx.n_threads, ctx.has_y = metric, n_threads, y is not None
        ctx.save_for_backward(x, y, output)  # the output is the user's tensor: no extra memory

    @staticmethod
    def backward(ctx: Any, grad: Any) -> Any:  # type: ignore[override]
        x, y, dist = ctx.saved_tensors
        g = unbroadcast(grad)  # .sum() hands an expanded (stride-0) gradient: no n × m copy
        gx, gy = _distances_backward(*_ops.detached(x, y, dist, g.to(dist.dtype)), ctx.metric, ctx.n_threads)
        gx, gy = _ops.refuse_double_backward("pairwise_distances", (gx, gy if ctx.has_y else None), (x, y))
        return gx, gy, None, None

    vmap = _ops.no_vmap("pairwise_distances")


def pairwise_distances_cpu(x: Any, y: Optional[Any], metric: str, n_threads: int) -> Any:
    """Casts half precision to float32 (autograd casts the gradient back) and applies the operator."""
    cd = x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32
    out = _PairwiseDistances.apply(x.to(cd), None if y is None else y.to(cd), metric, n_threads)
    return out if out.dtype == x.dtype else out.to(x.dtype)
