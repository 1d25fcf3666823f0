"""Margin-softmax losses: classification-style metric learning with learnable class weights.

Every loss normalises the embedding z_i and the class weights w_c (rows of W, C×d),
cos_ic = ẑ_i·ŵ_c, and takes a softmax cross-entropy over the logits

    l_ic = s·cos_ic (c ≠ y_i),   l_{i,y_i} = s·f(cos_{i,y_i}; m_{y_i}),
    L = 1/B Σ_i [ log Σ_c e^{l_ic} − l_{i,y_i} ]

* :func:`normalized_softmax_loss` (NormFace, Wang et al. 2017; PML's ``temperature`` = 1/s): f(c) = c;
* :func:`cosface_loss` (CosFace / AM-softmax, Wang et al. 2018): f(c) = c − m;
* :func:`arcface_loss` (ArcFace, Deng et al. 2019): f(c) = cos(θ + m), computed as
  c·cos m − sin θ·sin m with sin θ = √(1 − c²) (never acos, whose derivative is infinite at ±1).
  Where θ + m > π, cos(θ + m) stops decreasing in θ; as in insightface's reference code,
  f(c) = c − m·sin m when c ≤ cos(π − m). With ``easy_margin=True`` (also insightface),
  f(c) = c wherever c ≤ 0: the margin applies only to positive cosines. At c = ±1 the
  derivative of sin θ is taken as 0, so gradients are finite there;
* :func:`subcenter_arcface_loss` (Deng et al. 2020): K sub-centres per class, cos_ic =
  max_k ẑ_i·ŵ_{c,k}; W is (C·K)×d, row c·K + k is sub-centre k of class c;
* :func:`center_loss` (Wen et al. 2016): softmax on an unnormalised linear head plus
  λ/2 · mean_i ‖z_i − c_{y_i}‖².

``scale="auto"`` is the fixed scale s = √2·ln(C − 1) of AdaCos (Zhang et al. 2019), the
seeds' rule. ``margin=`` takes one value or a per-class tensor of length C, e.g. the
imbalance-aware margins of :func:`adaptive_margins`, m_c = a·N_c^(−λ) + b (Ha et al. 2020).
All margins here are in radians (PML's ArcFace margin is in degrees: 28.6° ≈ 0.5 rad).

CPU tensors run fused Rust kernels: cos tiles by GEMM over tiles of classes (W rows
normalised on the fly, never copied), the margin on the target column, a log-sum-exp across
tiles. When a gradient is needed, one call computes the loss and both gradients with three
GEMMs (cos, ∂ẑ = A·W, ∂W = Aᵀ·ẑ, as autograd does): the batch runs in strips of 128 rows,
and a strip's cosines against all C·K rows of W (128·C·K values, 51 MB at C = 10⁵ in
float32) are the only state that grows with C; the backward then only scales the gradients
by the upstream value. Without a gradient (inference, ``torch.no_grad``), the forward alone
runs with an online log-sum-exp over tiles and O(B) state. No B×C matrix exists at any time. Gradients reach the embeddings and W (W's own dtype; W is never cast in
place). Other devices run :mod:`reprkit.reference.margin` chunked over classes with the
same recomputation, so GPU memory is also linear in C. float16/bfloat16 compute in float32.
"""

from __future__ import annotations

import math
from typing import Any, Optional, Tuple, Union

import numpy as np

from .. import _core, _ops
from .._ops import Tensor, torch
from .._threads import kernel_threads, op_threads
from ..errors import InvalidInputError, InvalidParameterError, ShapeError
from . import _inputs as V

F = torch.nn.functional

__all__ = [
    "normalized_softmax_loss",
    "cosface_loss",
    "arcface_loss",
    "subcenter_arcface_loss",
    "center_loss",
    "adaptive_margins",
    "auto_scale",
    "NormalizedSoftmaxLoss",
    "CosFaceLoss",
    "ArcFaceLoss",
    "SubCenterArcFaceLoss",
    "CenterLoss",
]

#: Classes per chunk of the torch path on non-CPU devices.
CHUNK = 4096


def _on_cpu(t: Any) -> bool:
    return t.device.type == "cpu"


def auto_scale(num_classes: int) -> float:
    """s = √2·ln(C − 1), the fixed AdaCos scale (Zhang et al. 2019); needs C ≥ 3."""
    if num_classes < 3:
        raise InvalidParameterError(f'scale="auto" needs num_classes >= 3 (s = √2·ln(C − 1)), got {num_classes}')
    return math.sqrt(2.0) * math.log(num_classes - 1)


def adaptive_margins(class_counts: Any, a: float = 0.5, lambda_: float = 0.25, b: float = 0.05) -> Any:
    """Per-class margins m_c = a·N_c^(−λ) + b for class counts N_c (Ha et al. 2020, the seeds' formula):
    rare classes get larger margins. Returns a float32 tensor of length C (pass it as ``margin=``)."""
    counts = torch.as_tensor(np.asarray(class_counts) if not isinstance(class_counts, torch.Tensor) else class_counts)
    if counts.dim() != 1 or counts.numel() == 0:
        raise ShapeError(f"class_counts must be a non-empty 1-D sequence, got shape {tuple(counts.shape)}")
    counts = counts.to(torch.float64)
    if bool((counts <= 0).any()) or not bool(torch.isfinite(counts).all()):
        raise InvalidInputError("class_counts must be finite and > 0 (a class with no sample has no margin)")
    for name, v in (("a", a), ("lambda_", lambda_), ("b", b)):
        V.check_finite_number(name, v)
    return (a * counts.pow(-lambda_) + b).to(torch.float32)


# --- the operator -------------------------------------------------------------------------


def _fwd_fake(z, w, labels, margins, scale, kind, easy, k, n_threads):
    return z.new_empty(()), z.new_empty((z.shape[0],))


@_ops.op("margin_softmax", _fwd_fake)
def _margin_fwd(
    z: Tensor, w: Tensor, labels: Tensor, margins: Tensor, scale: float, kind: str, easy: bool, k: int, n_threads: int
) -> Tuple[Tensor, Tensor]:
    """(loss, per-row log-sum-exp) of the margin-softmax loss (see the module docs)."""
    loss, lse = _core.margin_loss(
        _ops.np_(z), _ops.np_(w), _ops.np_(labels), _ops.np_(margins), scale, kind, easy, k, None, 1.0,
        kernel_threads(n_threads),
    )
    return torch.tensor(loss, dtype=z.dtype), torch.from_numpy(lse)


def _bwd_fake(g, z, w, labels, margins, lse, scale, kind, easy, k, n_threads):
    return torch.empty_like(z), torch.empty_like(w)


@_ops.backward_op("margin_softmax_backward", "the margin-softmax losses", _bwd_fake)
def _margin_bwd(
    g: Tensor, z: Tensor, w: Tensor, labels: Tensor, margins: Tensor, lse: Tensor, scale: float, kind: str, easy: bool,
    k: int, n_threads: int,
) -> Tuple[Tensor, Tensor]:
    """(∂L/∂z, ∂L/∂W) for the upstream scalar g, recomputing the tiles from the inputs and lse."""
    gz, gw = _core.margin_loss(
        _ops.np_(z), _ops.np_(w), _ops.np_(labels), _ops.np_(margins), scale, kind, easy, k, _ops.np_(lse),
        float(g), kernel_threads(n_threads),
    )
    return torch.from_numpy(gz), torch.from_numpy(gw)


class _MarginSoftmax(torch.autograd.Function):
    @staticmethod
    def forward(z: Any, w: Any, labels: Any, margins: Any, scale: float, kind: str, easy: bool, k: int, n_threads: int) -> Any:  # type: ignore[override]
        return _margin_fwd(z, w, labels, margins, scale, kind, easy, k, n_threads)

    @staticmethod
    def setup_context(ctx: Any, inputs: Any, output: Any) -> None:
        z, w, labels, margins, scale, kind, easy, k, nt = inputs
        ctx.save_for_backward(z, w, labels, margins, output[1])
        ctx.cfg = (scale, kind, easy, k, nt)
        ctx.mark_non_differentiable(output[1])

    @staticmethod
    def backward(ctx: Any, g: Any, _glse: Any) -> Any:  # type: ignore[override]
        z, w, labels, margins, lse = ctx.saved_tensors
        scale, kind, easy, k, nt = ctx.cfg
        gz, gw = _margin_bwd._opoverload(*_ops.detached(g, z, w, labels, margins, lse), scale, kind, easy, k, nt)
        grads = _ops.refuse_double_backward("the margin-softmax losses", (gz, gw), (z, w))
        return grads + (None,) * 7

    vmap = _ops.no_vmap("the margin-softmax losses (arcface_loss, cosface_loss, ...)")


def _fused_fake(z, w, labels, margins, scale, kind, easy, k, need_z, need_w, n_threads):
    return z.new_empty(()), z.new_empty((z.shape[0] if need_z else 0, z.shape[1])), w.new_empty((w.shape[0] if need_w else 0, w.shape[1]))


@_ops.op("margin_softmax_fused", _fused_fake)
def _margin_fused(
    z: Tensor, w: Tensor, labels: Tensor, margins: Tensor, scale: float, kind: str, easy: bool, k: int, need_z: bool,
    need_w: bool, n_threads: int,
) -> Tuple[Tensor, Tensor, Tensor]:
    """(loss, ∂L/∂z, ∂L/∂W) in one pass (three GEMMs; the batch in strips of 128 rows, whose
    cosines against all C·K rows of W are the only state that grows with C). A gradient not
    needed is a (0, d) tensor."""
    loss, gz, gw = _core.margin_loss_fused(
        _ops.np_(z), _ops.np_(w), _ops.np_(labels), _ops.np_(margins), scale, kind, easy, k, need_z, need_w,
        kernel_threads(n_threads),
    )
    return torch.tensor(loss, dtype=z.dtype), torch.from_numpy(gz), torch.from_numpy(gw)


#: The loss when a gradient is needed (see :func:`reprkit._ops.fused_function`).
_MarginSoftmaxFused = _ops.fused_function(_margin_fused, "the margin-softmax losses (arcface_loss, cosface_loss, ...)")


# --- validation and dispatch --------------------------------------------------------------


def _check_weight(w: Any, d: int, k: int, device: Any) -> Any:
    w = V.check_embeddings(w, "weight")
    if w.shape[1] != d or w.shape[0] % k != 0:
        raise ShapeError(f"weight must be (num_classes·{k}, {d}), got {tuple(w.shape)}")
    if w.device != device:
        raise ShapeError(f"weight is on {w.device}, embeddings on {device}")
    return w


def _check_label_range(labels: Any, classes: int) -> None:
    if torch.compiler.is_compiling() or torch._C._functorch.is_functorch_wrapped_tensor(labels):
        return  # the kernel checks them (a clear InvalidInputError from Rust)
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= classes):
        bad = labels[(labels < 0) | (labels >= classes)][0]
        raise InvalidInputError(f"labels must lie in [0, {classes}) (num_classes = {classes}); got label {int(bad)}")


def _margins(margin: Any, classes: int, device: Any) -> Any:
    """A float64 tensor of one margin or one per class."""
    if margin is None or isinstance(margin, (str, bytes, bool, np.bool_)):
        raise InvalidParameterError(f"margin must be a finite number or one per class ({classes}), got {margin!r}")
    if isinstance(margin, torch.Tensor):
        m = margin.detach().to(device="cpu", dtype=torch.float64).reshape(-1)
    elif isinstance(margin, (int, float)) and not isinstance(margin, bool):
        m = torch.tensor([float(margin)], dtype=torch.float64)
    else:
        arr = np.asarray(margin, dtype=np.float64).reshape(-1)
        m = torch.from_numpy(arr)
    if m.numel() not in (1, classes):
        raise ShapeError(f"margin must be one number or one per class ({classes}), got {m.numel()} values")
    if not torch.compiler.is_compiling() and not bool((m.abs() <= V.F32_MAX).all()):  # NaN fails too
        raise InvalidParameterError(f"margin must be finite in float32 (|margin| <= {V.F32_MAX:.3g}), got {margin!r}")
    return m.to(device)


def _scale(scale: Any, classes: int) -> float:
    if isinstance(scale, str):
        if scale != "auto":
            raise InvalidParameterError(f'scale must be a number > 0 or "auto", got {scale!r}')
        return auto_scale(classes)
    return V.check_positive("scale", scale)


def _margin_softmax(
    embeddings: Any, labels: Any, weight: Any, kind: str, margin: Any, scale: Any, easy_margin: bool, sub_centers: int,
    n_jobs: Optional[int], backend: str = "auto",
) -> Any:
    z = V.check_embeddings(embeddings, "embeddings")
    if isinstance(sub_centers, bool) or not isinstance(sub_centers, int) or sub_centers < 1:
        raise InvalidParameterError(f"sub_centers must be a positive integer, got {sub_centers!r}")
    w = _check_weight(weight, z.shape[1], sub_centers, z.device)
    classes = w.shape[0] // sub_centers
    y = V.check_labels(labels, z.shape[0], z.device)
    _check_label_range(y, classes)
    s = 1.0 if kind == "linear" else _scale(scale, classes)
    m = _margins(margin, classes, z.device)
    z, w = V.common_dtype(z, w)
    from ._chunked import use_rust

    if use_rust(backend, z) and _on_cpu(z):  # (_on_cpu: the tests' hook to force the torch path)
        easy = V.check_bool("easy_margin", easy_margin)
        if _ops.needs_grad(z, w):  # loss and gradients in one pass: 3 GEMMs, not 4
            nz, nw = torch.is_grad_enabled() and z.requires_grad, torch.is_grad_enabled() and w.requires_grad
            return _MarginSoftmaxFused.apply(z, w, y, m, s, kind, easy, sub_centers, nz, nw, op_threads(n_jobs))[0]
        return _MarginSoftmax.apply(z, w, y, m, s, kind, easy, sub_centers, op_threads(n_jobs))[0]
    from ..reference import margin as ref

    mm = m.to(z.dtype) if m.numel() > 1 else float(m[0])
    return ref.margin_softmax_loss(z, y, w, kind, mm, s, V.check_bool("easy_margin", easy_margin), sub_centers, chunk_size=CHUNK)


# --- functions ------------------------------------------------------------------------------


def normalized_softmax_loss(
    embeddings: Any, labels: Any, weight: Any, scale: Union[float, str] = 20.0, *, n_jobs: Optional[int] = None,
    backend: str = "auto",
) -> Any:
    """Normalised softmax (NormFace, Wang et al. 2017): mean_i −log softmax(s·cos_i)[y_i], cos = ẑ·Ŵᵀ.
    ``weight`` is (C, d); s = 20 is PML's ``temperature=0.05``; ``scale="auto"`` = √2·ln(C − 1).
    ``backend`` (all margin losses): ``"auto"`` (Rust on CPU, else the class-chunked torch path of
    :mod:`reprkit.reference.margin`: online log-sum-exp, recomputing backward, no B×C kept),
    ``"rust"`` or ``"torch"``. The margin losses need no ``gather_distributed``: each term is one
    sample against the class weights (see :mod:`reprkit.distributed`)."""
    return _margin_softmax(embeddings, labels, weight, "normalized", 0.0, scale, False, 1, n_jobs, backend)


def cosface_loss(
    embeddings: Any, labels: Any, weight: Any, margin: Any = 0.35, scale: Union[float, str] = 64.0, *,
    n_jobs: Optional[int] = None, backend: str = "auto",
) -> Any:
    """CosFace / large-margin cosine loss (Wang et al. 2018): target logit s·(cos − m_{y_i}).
    ``weight`` (C, d); ``margin`` one value or a per-class tensor."""
    return _margin_softmax(embeddings, labels, weight, "cosface", margin, scale, False, 1, n_jobs, backend)


def arcface_loss(
    embeddings: Any, labels: Any, weight: Any, margin: Any = 0.5, scale: Union[float, str] = 64.0,
    easy_margin: bool = False, *, n_jobs: Optional[int] = None, backend: str = "auto",
) -> Any:
    """ArcFace / additive angular margin (Deng et al. 2019): target logit s·cos(θ + m), m in radians.
    Past θ + m > π: s·(cos − m·sin m) (insightface), or with ``easy_margin`` s·cos where cos ≤ 0."""
    return _margin_softmax(embeddings, labels, weight, "arcface", margin, scale, easy_margin, 1, n_jobs, backend)


def subcenter_arcface_loss(
    embeddings: Any, labels: Any, weight: Any, sub_centers: int = 3, margin: Any = 0.5,
    scale: Union[float, str] = 64.0, easy_margin: bool = False, *, n_jobs: Optional[int] = None, backend: str = "auto",
) -> Any:
    """Sub-center ArcFace (Deng et al. 2020): ``weight`` is (C·K, d), cos_ic = max_k ẑ_i·ŵ_{c·K+k},
    then ArcFace on those cosines."""
    return _margin_softmax(embeddings, labels, weight, "arcface", margin, scale, easy_margin, sub_centers, n_jobs, backend)


def center_loss(
    embeddings: Any, labels: Any, weight: Any, centers: Any, lambda_: float = 0.003, *, n_jobs: Optional[int] = None
) -> Any:
    """Center loss (Wen et al. 2016): mean_i −log softmax(z_i·Wᵀ)[y_i] + λ/2 · mean_i ‖z_i − c_{y_i}‖².

    The softmax is on an unnormalised linear head without bias (``weight``, C×d), run by the
    same fused kernel (no B×C logits kept). ``centers`` (C×d) receives a gradient if it
    requires one (the centres learned by gradient); pass a detached tensor to move them by
    Wen's rule instead (see :class:`CenterLoss`).
    """
    lam = V.check_finite_number("lambda_", lambda_, nonneg=True)
    ce = _margin_softmax(embeddings, labels, weight, "linear", 0.0, 1.0, False, 1, n_jobs)
    c = V.check_embeddings(centers, "centers")
    if tuple(c.shape) != tuple(weight.shape):
        raise ShapeError(f"centers must have the weight's shape {tuple(weight.shape)}, got {tuple(c.shape)}")
    z = V.compute(embeddings)
    y = V.check_labels(labels, z.shape[0], z.device)
    diff = z - c[y].to(z.dtype)
    return ce + 0.5 * lam * (diff * diff).sum(1).mean()


# --- modules ---------------------------------------------------------------------------------


class _MarginModule(torch.nn.Module):
    """Owns W ((C·K)×d), initialised N(0, 1) as PML does (rows are normalised, so only the
    direction matters)."""

    #: ``"auto"`` | ``"rust"`` | ``"torch"``: the loss functions' ``backend`` (set it on the instance).
    backend = "auto"

    _kind = "arcface"

    def __init__(self, num_classes: int, dim: int, sub_centers: int = 1, *, n_jobs: Optional[int] = None) -> None:
        super().__init__()
        for name, v in (("num_classes", num_classes), ("dim", dim), ("sub_centers", sub_centers)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise InvalidParameterError(f"{name} must be a positive integer, got {v!r}")
        self.num_classes, self.dim, self.sub_centers, self.n_jobs = num_classes, dim, sub_centers, n_jobs
        self.weight = torch.nn.Parameter(torch.empty(num_classes * sub_centers, dim))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        torch.nn.init.normal_(self.weight)

    @staticmethod
    def _margin_arg(margin: Any) -> Any:
        if isinstance(margin, torch.Tensor):
            return margin
        if isinstance(margin, (int, float)):
            return float(margin)
        return torch.as_tensor(np.asarray(margin, dtype=np.float32))

    def get_logits(self, embeddings: Any) -> Any:
        """Plain s·cos logits (B×C, no margin), for inference or accuracy."""
        s = self._scale_value()
        cos = F.normalize(embeddings, dim=1) @ F.normalize(self.weight, dim=1).T.to(embeddings.dtype)
        if self.sub_centers > 1:
            cos = cos.view(cos.shape[0], self.num_classes, self.sub_centers).amax(2)
        return s * cos

    def _scale_value(self) -> float:
        return _scale(getattr(self, "scale", 1.0), self.num_classes)


class NormalizedSoftmaxLoss(_MarginModule):
    """Normalised softmax (NormFace) with learnable class weights ``weight`` (C, d).
    ``forward(embeddings, labels)``; ``scale`` = 1/PML's temperature (20 ≙ 0.05) or "auto"."""

    def __init__(self, num_classes: int, dim: int, scale: Union[float, str] = 20.0, *, n_jobs: Optional[int] = None) -> None:
        super().__init__(num_classes, dim, n_jobs=n_jobs)
        self.scale = scale
        _scale(scale, num_classes)

    def forward(self, embeddings: Any, labels: Any) -> Any:
        return normalized_softmax_loss(embeddings, labels, self.weight, self.scale, n_jobs=self.n_jobs, backend=self.backend)

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, dim={self.dim}, scale={self.scale}"


class CosFaceLoss(_MarginModule):
    """CosFace (Wang et al. 2018), target logit s·(cos − m); ``margin`` a number or per-class tensor."""

    def __init__(
        self, num_classes: int, dim: int, margin: Any = 0.35, scale: Union[float, str] = 64.0, *,
        n_jobs: Optional[int] = None,
    ) -> None:
        super().__init__(num_classes, dim, n_jobs=n_jobs)
        self.margin, self.scale = self._margin_arg(margin), scale
        _scale(scale, num_classes)

    def forward(self, embeddings: Any, labels: Any) -> Any:
        return cosface_loss(embeddings, labels, self.weight, self.margin, self.scale, n_jobs=self.n_jobs, backend=self.backend)

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, dim={self.dim}, scale={self.scale}"


class ArcFaceLoss(_MarginModule):
    """ArcFace (Deng et al. 2019), target logit s·cos(θ + m), m in radians (PML: degrees).
    ``easy_margin``: the margin only where cos > 0; otherwise cos − m·sin m past θ + m > π."""

    def __init__(
        self, num_classes: int, dim: int, margin: Any = 0.5, scale: Union[float, str] = 64.0, easy_margin: bool = False,
        *, n_jobs: Optional[int] = None,
    ) -> None:
        super().__init__(num_classes, dim, n_jobs=n_jobs)
        self.margin, self.scale, self.easy_margin = self._margin_arg(margin), scale, easy_margin
        _scale(scale, num_classes)

    def forward(self, embeddings: Any, labels: Any) -> Any:
        return arcface_loss(embeddings, labels, self.weight, self.margin, self.scale, self.easy_margin, n_jobs=self.n_jobs, backend=self.backend)

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, dim={self.dim}, scale={self.scale}, easy_margin={self.easy_margin}"


class SubCenterArcFaceLoss(_MarginModule):
    """Sub-center ArcFace (Deng et al. 2020): ``weight`` (C·K, d), row c·K + k = sub-centre k of class c;
    cos_ic is the max over class c's sub-centres. :meth:`get_outliers` lists the samples far from their
    class's dominant sub-centre (PML's method, same threshold in degrees)."""

    def __init__(
        self, num_classes: int, dim: int, sub_centers: int = 3, margin: Any = 0.5, scale: Union[float, str] = 64.0,
        easy_margin: bool = False, *, n_jobs: Optional[int] = None,
    ) -> None:
        super().__init__(num_classes, dim, sub_centers, n_jobs=n_jobs)
        self.margin, self.scale, self.easy_margin = self._margin_arg(margin), scale, easy_margin
        _scale(scale, num_classes)

    def forward(self, embeddings: Any, labels: Any) -> Any:
        return subcenter_arcface_loss(
            embeddings, labels, self.weight, self.sub_centers, self.margin, self.scale, self.easy_margin, n_jobs=self.n_jobs, backend=self.backend
        )

    @torch.no_grad()
    def get_outliers(self, embeddings: Any, labels: Any, threshold: float = 75.0) -> Tuple[Any, Any]:
        """(outlier indices, dominant centres). For each class present, the dominant sub-centre is the
        one most of its samples are closest to (ties: the lowest index); a sample is an outlier when its
        angle to that sub-centre exceeds ``threshold`` degrees. Dominant centres: (C, d), unit rows
        (zero rows for classes absent from the batch); indices are sorted, int64."""
        z = V.check_embeddings(embeddings, "embeddings")
        y = V.check_labels(labels, z.shape[0], z.device)
        _check_label_range(y, self.num_classes)
        k = self.sub_centers
        wn = F.normalize(self.weight.detach().to(z.device, torch.float32), dim=1).view(self.num_classes, k, -1)
        zn = F.normalize(z.float(), dim=1)
        cos = torch.einsum("bd,bkd->bk", zn, wn[y])  # each sample vs its own class's sub-centres
        best = cos.argmax(1)
        counts = torch.zeros(self.num_classes, k, dtype=torch.long, device=z.device)
        counts.index_put_((y, best), torch.ones_like(best), accumulate=True)
        dom = counts.argmax(1)  # first maximum: the lowest index on ties
        dominant = wn[torch.arange(self.num_classes, device=z.device), dom]
        present = counts.sum(1) > 0
        dominant = torch.where(present.unsqueeze(1), dominant, torch.zeros_like(dominant))
        cos_dom = cos.gather(1, dom[y].unsqueeze(1)).squeeze(1)
        outliers = torch.nonzero(cos_dom < math.cos(math.radians(threshold))).flatten()
        return outliers, dominant.to(self.weight.dtype)

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, dim={self.dim}, sub_centers={self.sub_centers}, scale={self.scale}"


class CenterLoss(torch.nn.Module):
    """Center loss (Wen et al. 2016): softmax on a linear head ``weight`` (C, d, no bias) plus
    λ/2 · mean_i ‖z_i − c_{y_i}‖² with class centres ``centers`` (C, d).

    Default (``alpha=None``): the centres are an ``nn.Parameter`` learned by gradient descent with
    the rest of the model (what most re-implementations do). With ``alpha`` the centres are a
    buffer moved by Wen et al.'s own rule in each training-mode forward:
    c_j ← c_j − α·Σ_{i: y_i=j} (c_j − z_i) / (1 + #{i: y_i = j}) (the centre term then only
    pulls the embeddings). Head initialised as ``nn.Linear``; centres N(0, 1).
    """

    def __init__(
        self, num_classes: int, dim: int, lambda_: float = 0.003, alpha: Optional[float] = None, *,
        n_jobs: Optional[int] = None,
    ) -> None:
        super().__init__()
        for name, v in (("num_classes", num_classes), ("dim", dim)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise InvalidParameterError(f"{name} must be a positive integer, got {v!r}")
        self.num_classes, self.dim, self.n_jobs = num_classes, dim, n_jobs
        self.lambda_ = V.check_finite_number("lambda_", lambda_, nonneg=True)
        self.alpha = None if alpha is None else V.check_positive("alpha", alpha)
        self.weight = torch.nn.Parameter(torch.empty(num_classes, dim))
        torch.nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))  # nn.Linear's default
        centers = torch.randn(num_classes, dim)
        if self.alpha is None:
            self.centers = torch.nn.Parameter(centers)
        else:
            self.register_buffer("centers", centers)

    def forward(self, embeddings: Any, labels: Any) -> Any:
        loss = center_loss(embeddings, labels, self.weight, self.centers, self.lambda_, n_jobs=self.n_jobs)
        if self.alpha is not None and self.training:
            self._update_centers(embeddings, labels)
        return loss

    @torch.no_grad()
    def _update_centers(self, embeddings: Any, labels: Any) -> None:
        z = embeddings.detach().to(self.centers.dtype)
        y = V.check_labels(labels, z.shape[0], z.device)
        delta = torch.zeros_like(self.centers)
        delta.index_add_(0, y, self.centers[y] - z)
        count = torch.zeros(self.num_classes, dtype=z.dtype, device=z.device)
        count.index_add_(0, y, torch.ones_like(y, dtype=z.dtype))
        self.centers.sub_(self.alpha * delta / (1.0 + count).unsqueeze(1))

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, dim={self.dim}, lambda_={self.lambda_}, alpha={self.alpha}"
