"""Redundancy-reduction losses: Barlow Twins, VICReg and VICReg's graph form.

**Barlow Twins** (Zbontar, Jing, Misra, LeCun, Deny, "Barlow Twins: Self-Supervised
Learning via Redundancy Reduction", ICML 2021). Each view is standardised per
feature over the batch as in the authors' code (BatchNorm1d without affine:
biased variance, eps = 1e-5), â = (z_a − μ_a)/√(σ²_a + 1e-5), b̂ likewise;

    C = âᵀ b̂ / N   (d×d),    L = Σ_k (1 − C_kk)² + λ Σ_{k≠l} C_kl²,   λ = 0.0051.

**VICReg** (Bardes, Ponce, LeCun, "VICReg: Variance-Invariance-Covariance
Regularization for Self-Supervised Learning", ICLR 2022), for two views of N rows:

    inv  = 1/(N·d) Σ_i ‖z_a,i − z_b,i‖²                             (MSE)
    v(z) = 1/d Σ_k relu(1 − √(Var_k(z) + ε)),  Var with 1/(N−1)
    c(z) = 1/d Σ_{k≠l} Cov(z)_kl²,  Cov = (z − z̄)ᵀ(z − z̄)/(N−1)
    L = sim·inv + var·(v(z_a) + v(z_b))/2 + cov·(c(z_a) + c(z_b)),   (25, 25, 1), ε = 1e-4

(the authors' weighting: the variance term averaged over the views, the
covariance term summed).

**VICReg as Laplacian eigenmaps** (the graph form of the seed notes; Balestriero &
LeCun 2022 "Contrastive and non-contrastive self-supervised learning recover
global and local spectral embedding methods"): for rows z (N×d) and a symmetric
sparse affinity G that lists each pair both ways,

    inv_G = 1/(N·d) Σ_ij G_ij ‖z_i − z_j‖²,
    L = sim·inv_G + var·1/V Σ_v v(z_v) + cov·Σ_v c(z_v),

where z_1..z_V are ``views`` equal consecutive blocks of rows (default V = 1: the
variance and covariance over all rows of z). With z = [z_a; z_b], G linking
row i and row N+i both ways and ``views=2`` it equals :func:`vicreg_loss`
exactly; a kNN graph with ``views=1`` gives Laplacian eigenmaps with VICReg's
variance–covariance constraint instead of the orthogonality constraint. Note:
with ``views=1`` the variance and covariance of the stacked views include the
spread between the views' means and use 1/(2N−1), so they are not VICReg's
per-view terms; ``views=2`` is what reproduces VICReg.

Kernels. The d×d statistic Σ_{k≠l} C_kl² (and its gradient) is the only part
that is not O(N·d); everything else (standardisation, diagonals, the MSE and
graph terms) is elementwise torch. On CPU tensors it runs the Rust kernel
(``reprkit._core.offdiag_sq_loss``): for d < 2N in blocks of 256 feature rows
of C by GEMM (forward and gradient fused from the same block; VICReg's symmetric
covariance computes only the upper blocks), for d ≥ 2N from row blocks of the
N×N Gram matrices (‖aᵀb‖² = ⟨aaᵀ, bbᵀ⟩, exact, 4× fewer flops at d = 4N). Only
the O(N·d) gradients are kept for backward, never a d×d matrix. On other devices
the same feature tiling runs in torch (:mod:`reprkit.reference.redundancy`).

Differences from lightly (1.5): lightly's ``BarlowTwinsLoss`` defaults to
λ = 5e-3 (reprkit: the paper's 0.0051) and uses ``F.batch_norm`` (which raises for
N = 1; reprkit gives the loss of all-zero standardised views, d); lightly's
multi-GPU Barlow Twins was off by 1/world_size before #1977. Values otherwise
agree with lightly's ``BarlowTwinsLoss(lambda_param=...)`` and ``VICRegLoss``.
"""

from typing import Any, Optional, Tuple

from .. import _core, _ops
from .._ops import Tensor, torch
from .._threads import kernel_threads, op_threads
from ..errors import InvalidParameterError, ShapeError
from ..reference import redundancy as ref
from . import _inputs as V

__all__ = ["barlow_twins_loss", "vicreg_loss", "vicreg_graph_loss", "BarlowTwinsLoss", "VICRegLoss", "VICRegGraphLoss"]

_PATHS = ("auto", "features", "samples")


def _offdiag_fake(a, b, path, need_grad, n_threads):
    if not need_grad:
        return a.new_empty(()), _ops.empty_like_rows(a), _ops.empty_like_rows(a)
    return a.new_empty(()), torch.empty_like(a), _ops.empty_like_rows(a) if b is None else torch.empty_like(b)


@_ops.op("offdiag_sq", _offdiag_fake)
def _offdiag(a: Tensor, b: Optional[Tensor], path: str, need_grad: bool, n_threads: int) -> Tuple[Tensor, Tensor, Tensor]:
    """(S, ∂S/∂a, ∂S/∂b) of S = Σ_{k≠l} (aᵀb)_kl² (b None: aᵀa; ∂S/∂a is then the full derivative)."""
    s, ga, gb = _core.offdiag_sq_loss(_ops.np_(a), _ops.np_(b), path, need_grad, kernel_threads(n_threads))
    return torch.tensor(s, dtype=a.dtype), _ops.t_(ga, a), _ops.t_(gb, a)


def _offdiag_backward_fake(g, ga, gb, a, b):
    return torch.empty_like(ga), torch.empty_like(gb)


@_ops.backward_op("offdiag_sq_backward", "the Barlow Twins / VICReg statistic", _offdiag_backward_fake)
def _offdiag_backward(g: Tensor, ga: Tensor, gb: Tensor, a: Tensor, b: Optional[Tensor]) -> Tuple[Tensor, Tensor]:
    """The forward's gradients times the upstream scalar ``g`` (a, b: for the double-backward refusal)."""
    return ga * g, gb * g


class _OffdiagSq(torch.autograd.Function):
    @staticmethod
    def forward(a: Any, b: Any, path: str, need_grad: bool, n_threads: int) -> Any:  # type: ignore[override]
        return _offdiag(a, b, path, need_grad, n_threads)

    @staticmethod
    def setup_context(ctx: Any, inputs: Any, output: Any) -> None:
        ctx.has_b = inputs[1] is not None
        ctx.save_for_backward(output[1], output[2], inputs[0], inputs[1])
        ctx.mark_non_differentiable(output[1], output[2])
        ctx.set_materialize_grads(False)  # else backward is handed zero tensors the size of the kept gradients

    @staticmethod
    def backward(ctx: Any, g: Any, _ga: Any, _gb: Any) -> Any:  # type: ignore[override]
        if g is None:  # grads are not materialised: an unused statistic has no gradient
            return (None,) * 5
        ga, gb, a, b = ctx.saved_tensors
        ta, tb = _offdiag_backward(*_ops.detached(g, ga, gb, a, b))
        grads = _ops.refuse_double_backward("barlow_twins_loss / vicreg_loss", (ta, tb if ctx.has_b else None), (a, b))
        return grads + (None,) * 3

    vmap = _ops.no_vmap("barlow_twins_loss / vicreg_loss / vicreg_graph_loss")


def _rust(n_jobs: Optional[int], path: str = "auto") -> Any:
    nt = op_threads(n_jobs)

    def f(a: Any, b: Optional[Any]) -> Any:
        return _OffdiagSq.apply(a, b, path, _ops.needs_grad(a, b), nt)[0]

    return f


# ----------------------------------------------------------------- CPU: whole losses with analytic gradients
#
# On CPU the loss and its input gradients come out of one forward (the Rust statistic plus O(N·d) torch
# algebra, in place where possible); backward only scales the saved (N, d) gradients. Peak memory: the two
# standardised / centred views and their two gradients, never autograd's chain of N×d intermediates.


def _coldot(x: Any, y: Any) -> Any:
    # Not einsum("nd,nd->d"): on CPU that becomes d batched 1×1 products, 20× slower.
    return torch.linalg.vecdot(x, y, dim=0)


def _barlow_cpu(za: Any, zb: Any, lam: float, path: str, need_grad: bool, nt: int) -> Tuple[Any, Any, Any]:
    n = za.shape[0]

    def standardize(z: Any) -> Tuple[Any, Any]:
        zc = z - z.mean(0)
        inv = torch.rsqrt(_coldot(zc, zc) / n + ref.BN_EPS)
        return zc.mul_(inv), inv

    a, inv_a = standardize(za)
    b, inv_b = standardize(zb)
    diag = _coldot(a, b) / n
    s, ga, gb = _offdiag(a, b, path, need_grad, nt)
    loss = (1 - diag).square().sum() + lam * s / (n * n)
    if not need_grad:
        return loss, ga, gb
    coef = -2 * (1 - diag) / n  # ∂Σ(1 − C_kk)²/∂â_nk = coef_k · b̂_nk
    k = lam / (n * n)

    def chain(g: Any, zhat: Any, other: Any, inv: Any) -> Any:
        g.mul_(k).addcmul_(other, coef)  # ∂L/∂ẑ
        # through ẑ = (z − μ)/√(σ² + eps): ∂L/∂z = inv·(g − mean(g) − ẑ·mean(g·ẑ))
        m2 = _coldot(g, zhat) / n
        g.sub_(g.mean(0)).addcmul_(zhat, -m2).mul_(inv)
        return g

    ga = chain(ga, a, b, inv_a)
    gb = chain(gb, b, a, inv_b)
    return loss, ga, gb


def _vicreg_cpu(
    za: Any, zb: Any, sim: float, var: float, cov: float, eps: float, path: str, need_grad: bool, nt: int
) -> Tuple[Any, Any, Any]:
    n, d = za.shape

    def view(z: Any) -> Tuple[Any, Any]:
        zc = z - z.mean(0)
        std = torch.sqrt(_coldot(zc, zc) / (n - 1) + eps)
        s, g, _ = _offdiag(zc, None, path, need_grad, nt)
        term = var * torch.relu(1 - std).mean() / 2 + cov * s / ((n - 1) ** 2 * d)
        if need_grad:
            # ∂/∂zc of var/2·mean relu(1 − std) = −var/(2d)·[std < 1]/std · zc/(n − 1)
            c = torch.where(std < 1, -var / (2 * d * (n - 1)) / std, torch.zeros_like(std))
            g.mul_(cov / ((n - 1) ** 2 * d)).addcmul_(zc, c)
            g.sub_(g.mean(0))  # through zc = z − mean(z)
        return term, g

    ta, ga = view(za)
    tb, gb = view(zb)
    diff = za - zb
    loss = sim * _coldot(diff, diff).sum() / (n * d) + ta + tb
    if need_grad:
        ga.add_(diff, alpha=2 * sim / (n * d))
        gb.sub_(diff, alpha=2 * sim / (n * d))
    return loss, ga, gb


def _loss_backward(ctx: Any, g: Any, name: str) -> Any:
    if g is None:  # grads are not materialised: an unused loss has no gradient
        return (None, None)
    ga, gb, a, b = ctx.saved_tensors
    ta, tb = _offdiag_backward(*_ops.detached(g, ga, gb, a, b))
    return _ops.refuse_double_backward(name, (ta, tb), (a, b))


class _BarlowCPU(torch.autograd.Function):
    @staticmethod
    def forward(za: Any, zb: Any, lam: float, path: str, need_grad: bool, nt: int) -> Any:  # type: ignore[override]
        return _barlow_cpu(za, zb, lam, path, need_grad, nt)

    @staticmethod
    def setup_context(ctx: Any, inputs: Any, output: Any) -> None:
        ctx.save_for_backward(output[1], output[2], inputs[0], inputs[1])
        ctx.mark_non_differentiable(output[1], output[2])
        ctx.set_materialize_grads(False)  # else backward is handed zero tensors the size of the kept gradients

    @staticmethod
    def backward(ctx: Any, g: Any, _ga: Any, _gb: Any) -> Any:  # type: ignore[override]
        return _loss_backward(ctx, g, "barlow_twins_loss") + (None,) * 4

    vmap = _ops.no_vmap("barlow_twins_loss")


class _VICRegCPU(torch.autograd.Function):
    @staticmethod
    def forward(za: Any, zb: Any, sim: float, var: float, cov: float, eps: float, path: str, need_grad: bool, nt: int) -> Any:  # type: ignore[override]
        return _vicreg_cpu(za, zb, sim, var, cov, eps, path, need_grad, nt)

    @staticmethod
    def setup_context(ctx: Any, inputs: Any, output: Any) -> None:
        ctx.save_for_backward(output[1], output[2], inputs[0], inputs[1])
        ctx.mark_non_differentiable(output[1], output[2])
        ctx.set_materialize_grads(False)  # else backward is handed zero tensors the size of the kept gradients

    @staticmethod
    def backward(ctx: Any, g: Any, _ga: Any, _gb: Any) -> Any:  # type: ignore[override]
        return _loss_backward(ctx, g, "vicreg_loss") + (None,) * 7

    vmap = _ops.no_vmap("vicreg_loss")


def _backend(x: Any, n_jobs: Optional[int], path: str) -> Any:
    if path not in _PATHS:
        raise InvalidParameterError(f"path must be one of {_PATHS}, got {path!r}")
    return _rust(n_jobs, path) if x.device.type == "cpu" else ref._tiled(ref.FEAT_TILE)


def _gathered(a: Any, b: Any, gather: bool) -> Tuple[Any, Any]:
    """Both views of every rank (one collective), rank order; as given when not distributed."""
    from ..distributed import all_gather, is_distributed

    if not (gather and is_distributed()):
        return a, b
    ab = all_gather(torch.cat([a, b], 1))
    return ab[:, : a.shape[1]], ab[:, a.shape[1] :]


def _two_views(z_a: Any, z_b: Any) -> Tuple[Any, Any]:
    a = V.check_embeddings(z_a, "z_a")
    b = V.check_embeddings(z_b, "z_b")
    V.check_same_shape(a, b, "z_a", "z_b")
    a, b = V.common_dtype(a, b)
    return a, b


def barlow_twins_loss(
    z_a: Any, z_b: Any, lambda_: float = 0.0051, *, n_jobs: Optional[int] = None, path: str = "auto",
    gather_distributed: bool = False,
) -> Any:
    """Barlow Twins (Zbontar et al. 2021) on two (N, d) views:

    Σ_k (1 − C_kk)² + λ Σ_{k≠l} C_kl²,  C = âᵀb̂/N, â = (z_a − μ)/√(σ² + 1e-5) per feature (biased σ²).

    ``path`` selects the CPU kernel's evaluation ("auto", "features", "samples"; same value).
    ``gather_distributed=True``: μ, σ² and C over the global batch (N = every rank's rows):
    the global-batch form of :mod:`reprkit.distributed` (memory per rank O(N·d + d²)).
    """
    gather_distributed = V.check_bool("gather_distributed", gather_distributed)
    a, b = _gathered(*_two_views(z_a, z_b), gather_distributed)
    lam = V.check_finite_number("lambda_", lambda_, nonneg=True)
    off = _backend(a, n_jobs, path)
    if a.device.type == "cpu":
        return _BarlowCPU.apply(a, b, lam, path, _ops.needs_grad(a, b), op_threads(n_jobs))[0]
    return ref.barlow_twins_from(a, b, lam, off)


def _check_vicreg(sim: float, var: float, cov: float, eps: float) -> Tuple[float, float, float, float]:
    return (
        V.check_finite_number("sim", sim, nonneg=True),
        V.check_finite_number("var", var, nonneg=True),
        V.check_finite_number("cov", cov, nonneg=True),
        V.check_positive("eps", eps),
    )


def _need_two_rows(n: int, name: str) -> None:
    if n < 2:
        raise ShapeError(f"{name} needs at least 2 rows per view (the variance uses 1/(N−1)), got {n}")


def vicreg_loss(
    z_a: Any, z_b: Any, sim: float = 25.0, var: float = 25.0, cov: float = 1.0, eps: float = 1e-4, *,
    n_jobs: Optional[int] = None, path: str = "auto", gather_distributed: bool = False,
) -> Any:
    """VICReg (Bardes et al. 2022) on two (N, d) views, N ≥ 2:

    sim·MSE(z_a, z_b) + var·(v(z_a) + v(z_b))/2 + cov·(c(z_a) + c(z_b)),
    v(z) = mean_k relu(1 − √(Var_k z + eps)), c(z) = Σ_{k≠l} Cov(z)_kl² / d (1/(N−1) in Var and Cov).

    ``gather_distributed=True``: every term over the global batch (N = every rank's rows), the
    global-batch form of :mod:`reprkit.distributed` (memory per rank O(N·d + d²)).
    """
    gather_distributed = V.check_bool("gather_distributed", gather_distributed)
    a, b = _gathered(*_two_views(z_a, z_b), gather_distributed)
    V.check_distance_range(a, "z_a", "vicreg")  # variances and covariances square the values
    V.check_distance_range(b, "z_b", "vicreg")
    _need_two_rows(a.shape[0], "vicreg_loss")
    sim, var, cov, eps = _check_vicreg(sim, var, cov, eps)
    off = _backend(a, n_jobs, path)
    if a.device.type == "cpu":
        return _VICRegCPU.apply(a, b, sim, var, cov, eps, path, _ops.needs_grad(a, b), op_threads(n_jobs))[0]
    return ref.vicreg_from(a, b, sim, var, cov, eps, off)


def vicreg_graph_loss(
    z: Any, graph: Any, sim: float = 25.0, var: float = 25.0, cov: float = 1.0, eps: float = 1e-4, *,
    views: int = 1, n_jobs: Optional[int] = None, path: str = "auto",
) -> Any:
    """VICReg's graph form (Laplacian eigenmaps with a variance–covariance constraint):

    sim·Σ_ij G_ij‖z_i − z_j‖²/(N·d) + var·mean_v v(z_v) + cov·Σ_v c(z_v),

    N the rows of z, G a symmetric affinity listing each pair both ways: a scipy sparse
    matrix, a torch sparse tensor (COO/CSR), ``(rows, cols[, weights])`` or an (E, 2) index
    array (unit weights). z_1..z_V are ``views`` equal consecutive row blocks (default: all
    rows). z = [z_a; z_b], G = partners both ways, ``views=2``: equals :func:`vicreg_loss`.
    The invariance term costs O(E·d) memory (E = stored entries of G).
    """
    x = V.check_embeddings(z, "z")
    (x,) = V.common_dtype(x)
    if isinstance(views, bool) or not isinstance(views, int) or views < 1 or x.shape[0] % views:
        raise InvalidParameterError(f"views must be a positive integer dividing the {x.shape[0]} rows of z, got {views!r}")
    _need_two_rows(x.shape[0] // views, "vicreg_graph_loss")
    sim, var, cov, eps = _check_vicreg(sim, var, cov, eps)
    rows, cols, w = ref.graph_edges(graph, x.shape[0], x.device, x.dtype)
    return ref.vicreg_graph_from(x, rows, cols, w, sim, var, cov, eps, views, _backend(x, n_jobs, path))


class BarlowTwinsLoss(torch.nn.Module):
    """Barlow Twins: Σ(1 − C_kk)² + λ Σ_{k≠l} C_kl², C the cross-correlation of the batch-standardised
    views. ``forward(z_a, z_b)``. See :func:`barlow_twins_loss`."""

    def __init__(self, lambda_: float = 0.0051, *, n_jobs: Optional[int] = None, gather_distributed: bool = False) -> None:
        super().__init__()
        self.lambda_, self.n_jobs, self.gather_distributed = lambda_, n_jobs, bool(gather_distributed)

    def forward(self, z_a: Any, z_b: Any) -> Any:
        return barlow_twins_loss(z_a, z_b, self.lambda_, n_jobs=self.n_jobs, gather_distributed=self.gather_distributed)

    def extra_repr(self) -> str:
        return f"lambda_={self.lambda_}"


class VICRegLoss(torch.nn.Module):
    """VICReg: sim·invariance + var·variance + cov·covariance. ``forward(z_a, z_b)``. See :func:`vicreg_loss`."""

    def __init__(self, sim: float = 25.0, var: float = 25.0, cov: float = 1.0, eps: float = 1e-4, *, n_jobs: Optional[int] = None,
                 gather_distributed: bool = False) -> None:
        super().__init__()
        self.sim, self.var, self.cov, self.eps, self.n_jobs = sim, var, cov, eps, n_jobs
        self.gather_distributed = bool(gather_distributed)

    def forward(self, z_a: Any, z_b: Any) -> Any:
        return vicreg_loss(z_a, z_b, self.sim, self.var, self.cov, self.eps, n_jobs=self.n_jobs,
                           gather_distributed=self.gather_distributed)

    def extra_repr(self) -> str:
        return f"sim={self.sim}, var={self.var}, cov={self.cov}, eps={self.eps}"


class VICRegGraphLoss(torch.nn.Module):
    """VICReg's graph form. ``forward(z, graph)``. See :func:`vicreg_graph_loss`."""

    def __init__(
        self, sim: float = 25.0, var: float = 25.0, cov: float = 1.0, eps: float = 1e-4, *, views: int = 1,
        n_jobs: Optional[int] = None,
    ) -> None:
        super().__init__()
        self.sim, self.var, self.cov, self.eps, self.views, self.n_jobs = sim, var, cov, eps, views, n_jobs

    def forward(self, z: Any, graph: Any) -> Any:
        return vicreg_graph_loss(z, graph, self.sim, self.var, self.cov, self.eps, views=self.views, n_jobs=self.n_jobs)

    def extra_repr(self) -> str:
        return f"sim={self.sim}, var={self.var}, cov={self.cov}, eps={self.eps}, views={self.views}"
