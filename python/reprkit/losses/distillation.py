"""Self-distillation and Siamese objectives: SimSiam / BYOL's negative cosine, DINO, EMA teachers.

**Negative cosine** (SimSiam, Chen & He 2021, "Exploring Simple Siamese Representation Learning";
BYOL, Grill et al. 2020, "Bootstrap Your Own Latent"). For a predictor output p and a target
projection z,

    D(p, z) = −1/B Σ_i cos(p_i, sg(z_i)),   sg = stop-gradient,

and the symmetric two-view form is ½ D(p1, z2) + ½ D(p2, z1). BYOL's normalised MSE is
‖p̂ − ẑ‖² = 2 − 2 cos, i.e. 2 + 2·D. This objective is elementwise (O(B·d)): it stays plain
torch on every device (no Rust kernel; nothing to tile).

**DINO** (Caron et al. 2021, "Emerging Properties in Self-Supervised Vision Transformers").
Teacher views t = 0..T−1 (the global crops) and student views s = 0..S−1 (the same global crops
first, then the local crops), each a B×K output; a centre c (K values), temperatures τ_t, τ_s:

    p_tb = softmax((x^T_tb − c)/τ_t),   log q_sb = log_softmax(x^S_sb/τ_s),
    L = 1/(n·B) Σ_b Σ_{t≠s} −p_tb · log q_sb,   n = T·S − min(T, S)

(pairs with t = s, the same crop, are excluded). The teacher gets no gradient (stop-gradient,
as in the authors' code). After each call :class:`DINOLoss` moves the centre by EMA,
c ← m·c + (1 − m)·mean_{t,b} x^T_tb (momentum m = 0.9), and the teacher temperature may warm up
linearly from ``warmup_teacher_temp`` to ``teacher_temp`` over ``warmup_epochs`` epochs
(``linspace(warmup, teacher_temp, warmup_epochs)[epoch]``, as lightly and the authors' code).

CPU tensors run one Rust kernel: per sample, the T + S rows are walked once in column tiles with
an online log-sum-exp and the T×S products p_t·x_s; only the per-row log-sum-exps are kept
(O(B·(T+S))) and the backward recomputes the tiles, writing only the student gradient. At
B = 256, 2 + 6 crops, K = 65,536 plain torch (lightly) holds stacked copies, the teacher softmax
and the student log-softmax (≈1.7 GB in float32) on top of the inputs. Other devices run
:func:`reprkit.reference.distillation.dino_loss_chunked`, the same tiling in torch chunks.

**EMA teachers**: :func:`ema_update` (BYOL's target network, MoCo's key encoder, DINO's teacher):
θ_target ← m·θ_target + (1 − m)·θ_online, in place, without autograd.
"""

from __future__ import annotations

from typing import Any, List, Optional, Sequence, Tuple

from .. import _core, _ops
from .._ops import Tensor, torch
from .._threads import kernel_threads, op_threads
from ..errors import InvalidParameterError, ShapeError
from . import _inputs as V

F = torch.nn.functional

__all__ = [
    "negative_cosine_loss",
    "symmetric_negative_cosine_loss",
    "dino_loss",
    "ema_update",
    "NegativeCosineLoss",
    "DINOLoss",
]


# ----------------------------------------------------------------------------- negative cosine


def negative_cosine_loss(p: Any, z: Any, *, eps: float = 1e-8, stop_gradient: bool = True) -> Any:
    """SimSiam / BYOL: D(p, z) = −1/B Σ_i cos(p_i, sg(z_i)) (Chen & He 2021; Grill et al. 2020).

    ``p`` the predictor output, ``z`` the other view's projection (B, d); the gradient does not flow
    into ``z`` unless ``stop_gradient`` is False. cos = p·z / (max(‖p‖, eps)·max(‖z‖, eps)) as
    ``torch.nn.functional.cosine_similarity``. Elementwise, so plain torch on every device.
    Half-precision inputs are computed in float32 (a float32 loss; gradients in the input dtype).
    """
    a = V.check_embeddings(p, "p")
    b = V.check_embeddings(z, "z")
    V.check_same_shape(a, b, "p", "z")
    eps = V.check_positive("eps", eps)
    a, b = V.common_dtype(a, b)
    from ..reference import distillation as ref

    return ref.negative_cosine_loss(a, b, eps, V.check_bool("stop_gradient", stop_gradient))


def symmetric_negative_cosine_loss(
    p1: Any, p2: Any, z1: Any, z2: Any, *, eps: float = 1e-8, stop_gradient: bool = True
) -> Any:
    """SimSiam's symmetrised loss ½ D(p1, z2) + ½ D(p2, z1), D = :func:`negative_cosine_loss`."""
    for t, nm in ((p1, "p1"), (p2, "p2"), (z1, "z1"), (z2, "z2")):
        V.check_embeddings(t, nm)  # errors name the caller's argument, not D's p / z
    return 0.5 * negative_cosine_loss(p1, z2, eps=eps, stop_gradient=stop_gradient) + 0.5 * negative_cosine_loss(
        p2, z1, eps=eps, stop_gradient=stop_gradient
    )


class NegativeCosineLoss(torch.nn.Module):
    """−mean cos(p, sg(z)) (SimSiam / BYOL). ``forward(p, z)`` gives D(p, z);
    ``forward(p1, p2, z1, z2)`` the symmetric ½ D(p1, z2) + ½ D(p2, z1).
    Elementwise: plain torch on every device (no Rust kernel)."""

    def __init__(self, eps: float = 1e-8, stop_gradient: bool = True) -> None:
        super().__init__()
        self.eps, self.stop_gradient = V.check_positive("eps", eps), V.check_bool("stop_gradient", stop_gradient)

    def forward(self, *views: Any) -> Any:
        kw = dict(eps=self.eps, stop_gradient=self.stop_gradient)
        if len(views) == 2:
            return negative_cosine_loss(*views, **kw)
        if len(views) == 4:
            return symmetric_negative_cosine_loss(*views, **kw)
        raise InvalidParameterError(
            f"NegativeCosineLoss takes (p, z) or (p1, p2, z1, z2), got {len(views)} tensors"
        )

    def extra_repr(self) -> str:
        return f"eps={self.eps}, stop_gradient={self.stop_gradient}"


# ----------------------------------------------------------------------------- EMA


def _tensors(obj: Any, name: str, buffers: bool) -> List[Any]:
    if isinstance(obj, torch.nn.Module):
        ts = list(obj.parameters())
        if buffers:
            ts += list(obj.buffers())
        return ts
    if isinstance(obj, torch.Tensor):
        return [obj]
    try:
        ts = list(obj)
    except TypeError:
        raise InvalidParameterError(f"{name} must be a torch.nn.Module, a tensor or an iterable of tensors") from None
    for t in ts:
        if not isinstance(t, torch.Tensor):
            raise InvalidParameterError(f"{name} must hold tensors, got {type(t).__name__}")
    return ts


@torch.no_grad()
def ema_update(target: Any, online: Any, momentum: float, *, buffers: bool = False) -> None:
    """θ_target ← m·θ_target + (1 − m)·θ_online, in place and without autograd (BYOL, MoCo, DINO teachers).

    ``target`` and ``online``: ``torch.nn.Module`` s (their parameters, in ``parameters()`` order) or
    tensors / iterables of tensors, matched one to one with equal shapes. ``momentum`` m ∈ [0, 1]
    (m = 1 leaves the target, m = 0 copies the online values). With ``buffers`` a module's
    floating-point buffers (BatchNorm statistics) are averaged too and its other buffers
    (``num_batches_tracked``) copied. Any device: tensors that share device and dtype are updated
    with one fused ``torch._foreach_lerp_``; the online value is cast to the target's dtype/device.
    lightly's ``update_momentum(model, model_ema, m)`` is ``ema_update(model_ema, model, m)``.
    """
    if isinstance(momentum, bool) or not isinstance(momentum, (int, float)) or not 0.0 <= float(momentum) <= 1.0:
        raise InvalidParameterError(f"momentum must be a number in [0, 1], got {momentum!r}")
    tgt = _tensors(target, "target", buffers)
    onl = _tensors(online, "online", buffers)
    if len(tgt) != len(onl):
        raise ShapeError(f"target has {len(tgt)} tensors, online has {len(onl)}")
    w = 1.0 - float(momentum)
    groups: dict = {}
    for i, (t, o) in enumerate(zip(tgt, onl)):
        if t.shape != o.shape:
            raise ShapeError(f"tensor {i}: target has shape {tuple(t.shape)}, online {tuple(o.shape)}")
        if not t.is_floating_point():
            t.copy_(o)
            continue
        if t.dtype == o.dtype and t.device == o.device:
            groups.setdefault((t.device, t.dtype), ([], []))
            groups[(t.device, t.dtype)][0].append(t)
            groups[(t.device, t.dtype)][1].append(o)
        else:
            t.lerp_(o.to(device=t.device, dtype=t.dtype), w)
    for ts, os_ in groups.values():
        torch._foreach_lerp_(ts, os_, w)


# ----------------------------------------------------------------------------- DINO kernel as a torch operator


def _dino_fake(teacher, student, center, teacher_temp, student_temp, n_threads):
    b = teacher[0].shape[0]
    return center.new_empty(()), center.new_empty((len(teacher) * b,)), center.new_empty((len(student) * b,))


@_ops.op("dino", _dino_fake)
def _dino(
    teacher: List[Tensor], student: List[Tensor], center: Tensor, teacher_temp: float, student_temp: float, n_threads: int
) -> Tuple[Tensor, Tensor, Tensor]:
    """(loss, teacher log-sum-exps (T·B), student log-sum-exps (S·B)) of the DINO cross-entropy."""
    loss, tl, sl = _core.dino_loss(
        [_ops.np_(t) for t in teacher], [_ops.np_(s) for s in student], _ops.np_(center),
        teacher_temp, student_temp, kernel_threads(n_threads),
    )
    return torch.tensor(loss, dtype=center.dtype), _ops.t_(tl), _ops.t_(sl)


def _dino_backward_fake(g, teacher, student, center, t_lse, s_lse, teacher_temp, student_temp, n_threads):
    return [torch.empty_like(s) for s in student]


@_ops.backward_op("dino_backward", "DINOLoss", _dino_backward_fake)
def _dino_backward(
    g: Tensor, teacher: List[Tensor], student: List[Tensor], center: Tensor, t_lse: Tensor, s_lse: Tensor,
    teacher_temp: float, student_temp: float, n_threads: int,
) -> List[Tensor]:
    """∂(g·L)/∂ each student view, recomputed from the views and the log-sum-exps."""
    grads = _core.dino_loss_backward(
        [_ops.np_(t) for t in teacher], [_ops.np_(s) for s in student], _ops.np_(center), _ops.np_(t_lse),
        _ops.np_(s_lse), teacher_temp, student_temp, float(g), kernel_threads(n_threads),
    )
    return [_ops.t_(a) for a in grads]


class _Dino(torch.autograd.Function):
    @staticmethod
    def forward(center: Any, tt: float, ts: float, n_threads: int, nt: int, *views: Any) -> Any:  # type: ignore[override]
        return _dino(list(views[:nt]), list(views[nt:]), center, tt, ts, n_threads)

    @staticmethod
    def setup_context(ctx: Any, inputs: Any, output: Any) -> None:
        center, tt, ts, n_threads, nt = inputs[:5]
        ctx.params = (tt, ts, n_threads, nt)
        ctx.save_for_backward(center, output[1], output[2], *inputs[5:])
        ctx.mark_non_differentiable(output[1], output[2])

    @staticmethod
    def backward(ctx: Any, g: Any, _a: Any, _b: Any) -> Any:  # type: ignore[override]
        tt, ts, n_threads, nt = ctx.params
        center, t_lse, s_lse, *views = ctx.saved_tensors
        det = _ops.detached(g, center, t_lse, s_lse, *views)
        g_, c_, tl_, sl_ = det[:4]
        vs = list(det[4:])
        grads = _dino_backward(g_, vs[:nt], vs[nt:], c_, tl_, sl_, tt, ts, n_threads)
        grads = _ops.refuse_double_backward("DINOLoss", grads, views[nt:])
        return (None,) * (5 + nt) + tuple(grads)

    vmap = _ops.no_vmap("DINOLoss (dino_loss)")


def _check_views(views: Any, name: str) -> List[Any]:
    if isinstance(views, torch.Tensor):
        if views.dim() == 3:  # a stacked (views, B, K) tensor
            views = list(views.unbind(0))
        else:
            views = [views]
    if not isinstance(views, (list, tuple)) or len(views) == 0:
        raise InvalidParameterError(f"{name} must be a non-empty list of (batch, out_dim) tensors, one per view")
    return [V.check_embeddings(v, f"{name}[{i}]") for i, v in enumerate(views)]


def dino_loss(
    teacher_out: Sequence[Any],
    student_out: Sequence[Any],
    center: Optional[Any] = None,
    teacher_temp: float = 0.04,
    student_temp: float = 0.1,
    *,
    n_jobs: Optional[int] = None,
) -> Any:
    """DINO's multi-crop cross-entropy (Caron et al. 2021), without the centre update:

    L = 1/(n·B) Σ_b Σ_{t≠s} −softmax((x^T_tb − c)/τ_t) · log_softmax(x^S_sb/τ_s),  n = T·S − min(T, S).

    ``teacher_out``: list of T (B, K) teacher outputs (the global crops); ``student_out``: list of S
    (B, K) student outputs, the same global crops first, then the local crops; ``center``: K values
    (any shape with K elements, e.g. lightly's (1, 1, K) buffer), zeros when None. The teacher gets no
    gradient. CPU: the Rust kernel (O(B·(T+S)) state, backward recomputes); other devices:
    :func:`reprkit.reference.distillation.dino_loss_chunked`. Half precision is computed in float32.
    """
    tv = _check_views(teacher_out, "teacher_out")
    sv = _check_views(student_out, "student_out")
    shape, dev = tuple(tv[0].shape), tv[0].device
    for name, vs in (("teacher_out", tv), ("student_out", sv)):
        for i, v in enumerate(vs):
            if tuple(v.shape) != shape or v.device != dev:
                raise ShapeError(
                    f"{name}[{i}] has shape {tuple(v.shape)} on {v.device}; every view must be {shape} on {dev}"
                )
    from ..reference import distillation as ref

    if ref.n_terms(len(tv), len(sv)) == 0:
        raise ShapeError(
            "DINO needs at least two views in total: with one teacher and one student view the only pair is "
            "the same view, which is excluded"
        )
    k = shape[1]
    if center is None:
        c = tv[0].new_zeros(k)
    else:
        if not isinstance(center, torch.Tensor) or center.numel() != k:
            raise ShapeError(f"center must be a tensor of {k} values (out_dim), got {getattr(center, 'shape', center)!r}")
        # a copy: the backward must see this call's centre even after DINOLoss moves its buffer in place
        c = center.detach().reshape(k).to(dev).clone()
    tt = V.check_positive("teacher_temp", teacher_temp.item() if isinstance(teacher_temp, torch.Tensor) else teacher_temp)
    ts = V.check_positive("student_temp", student_temp)
    nt = len(tv)
    cast = V.common_dtype(c, *tv, *sv)
    c, views = cast[0].contiguous(), cast[1:]
    teacher = [v.detach() for v in views[:nt]]
    student = views[nt:]
    if dev.type == "cpu":
        return _Dino.apply(c, tt, ts, op_threads(n_jobs), nt, *teacher, *student)[0]
    return ref.dino_loss_chunked(teacher, student, c, tt, ts)


class DINOLoss(torch.nn.Module):
    """DINO's loss with its centre and teacher-temperature schedule (Caron et al. 2021), called as
    lightly's ``DINOLoss``: ``loss(teacher_out, student_out, epoch=None)``.

    ``teacher_out``: list of the T teacher outputs (global crops), ``student_out``: list of the S
    student outputs (the same global crops first, then the local crops), each (B, out_dim). Value:
    :func:`dino_loss` with the current centre (buffer ``center``, shape (1, out_dim)) and the teacher
    temperature of ``epoch``; then, without gradient, c ← m·c + (1 − m)·mean over teacher views and
    batch (all-reduced when torch.distributed is initialised). Temperature: ``teacher_temp`` when
    ``epoch`` is None or ≥ ``warmup_epochs`` or ``warmup_teacher_temp`` is None, else
    ``linspace(warmup_teacher_temp, teacher_temp, warmup_epochs)[epoch]``; a ``teacher_temp`` given
    to ``forward`` overrides both. Values and centre match lightly's DINOLoss for the same settings.
    """

    def __init__(
        self,
        out_dim: int,
        student_temp: float = 0.1,
        teacher_temp: float = 0.04,
        warmup_teacher_temp: Optional[float] = None,
        warmup_epochs: int = 0,
        center_momentum: float = 0.9,
        *,
        n_jobs: Optional[int] = None,
    ) -> None:
        super().__init__()
        if isinstance(out_dim, bool) or not isinstance(out_dim, int) or out_dim < 1:
            raise InvalidParameterError(f"out_dim must be a positive integer, got {out_dim!r}")
        if isinstance(warmup_epochs, bool) or not isinstance(warmup_epochs, int) or warmup_epochs < 0:
            raise InvalidParameterError(f"warmup_epochs must be an integer >= 0, got {warmup_epochs!r}")
        if isinstance(center_momentum, bool) or not isinstance(center_momentum, (int, float)) or not 0 <= center_momentum <= 1:
            raise InvalidParameterError(f"center_momentum must be a number in [0, 1], got {center_momentum!r}")
        self.out_dim = out_dim
        self.student_temp = V.check_positive("student_temp", student_temp)
        self.teacher_temp = V.check_positive("teacher_temp", teacher_temp)
        self.warmup_teacher_temp = None if warmup_teacher_temp is None else V.check_positive("warmup_teacher_temp", warmup_teacher_temp)
        self.warmup_epochs = warmup_epochs
        self.center_momentum = float(center_momentum)
        self.n_jobs = n_jobs
        self.register_buffer("center", torch.zeros(1, out_dim))

    def teacher_temperature(self, epoch: Optional[int] = None) -> float:
        """The teacher temperature at ``epoch`` (the linear warm-up, then ``teacher_temp``)."""
        if epoch is None or self.warmup_teacher_temp is None or epoch >= self.warmup_epochs:
            return self.teacher_temp
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
            raise InvalidParameterError(f"epoch must be an integer >= 0 or None, got {epoch!r}")
        if self.warmup_epochs == 1:
            return self.warmup_teacher_temp
        w = epoch / (self.warmup_epochs - 1)
        return self.warmup_teacher_temp + (self.teacher_temp - self.warmup_teacher_temp) * w

    def forward(
        self, teacher_out: Sequence[Any], student_out: Sequence[Any], epoch: Optional[int] = None,
        teacher_temp: Optional[float] = None,
    ) -> Any:
        tt = self.teacher_temperature(epoch) if teacher_temp is None else teacher_temp
        loss = dino_loss(teacher_out, student_out, self.center, tt, self.student_temp, n_jobs=self.n_jobs)
        self.update_center(teacher_out)
        return loss

    @torch.no_grad()
    def update_center(self, teacher_out: Sequence[Any]) -> None:
        """c ← m·c + (1 − m)·(mean of the teacher outputs over views and batch)."""
        tv = _check_views(teacher_out, "teacher_out")
        views = V.common_dtype(*[v.detach() for v in tv])
        batch_center = torch.stack([v.mean(0) for v in views]).mean(0)
        dist = torch.distributed
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(batch_center)
            batch_center = batch_center / dist.get_world_size()
        m = self.center_momentum
        self.center.mul_(m).add_(batch_center.to(self.center).reshape(self.center.shape), alpha=1.0 - m)

    def extra_repr(self) -> str:
        return (
            f"out_dim={self.out_dim}, student_temp={self.student_temp}, teacher_temp={self.teacher_temp}, "
            f"warmup_teacher_temp={self.warmup_teacher_temp}, warmup_epochs={self.warmup_epochs}, "
            f"center_momentum={self.center_momentum}"
        )
