"""Pure-torch distillation and Siamese losses: the any-device (CUDA) path and the test oracle.

* :func:`negative_cosine_loss`, :func:`symmetric_negative_cosine_loss` — SimSiam / BYOL;
* :func:`dino_loss` — DINO's multi-crop cross-entropy written plainly (stacked views, full
  softmaxes, autograd): the oracle;
* :func:`dino_loss_chunked` — the same value computed over column chunks of K with an online
  log-sum-exp and a backward that recomputes the chunks, so that besides the inputs and the
  gradient it keeps O(B·views) state: what :func:`reprkit.losses.dino_loss` runs on non-CPU
  devices (the CPU tensors run the Rust kernel that follows the same tiling).

Formulas: see :mod:`reprkit.losses.distillation`. Inputs are assumed validated (float
tensors of one dtype and device; views of equal shape (B, K); a centre of K values).
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

from .._torch import require_torch

torch = require_torch()
F = torch.nn.functional

# Elements of (teacher + student views) × B × chunk held at once by the chunked path.
CHUNK_ELEMENTS = 1 << 22


def negative_cosine_loss(p: Any, z: Any, eps: float = 1e-8, stop_gradient: bool = True) -> Any:
    """D(p, z) = −1/B Σ_i cos(p_i, sg(z_i)) (sg = stop-gradient unless ``stop_gradient`` is False)."""
    return -F.cosine_similarity(p, z.detach() if stop_gradient else z, dim=1, eps=eps).mean()


def symmetric_negative_cosine_loss(p1: Any, p2: Any, z1: Any, z2: Any, eps: float = 1e-8, stop_gradient: bool = True) -> Any:
    """½ D(p1, z2) + ½ D(p2, z1) (SimSiam's symmetrised loss)."""
    return 0.5 * negative_cosine_loss(p1, z2, eps, stop_gradient) + 0.5 * negative_cosine_loss(p2, z1, eps, stop_gradient)


def n_terms(n_teacher: int, n_student: int) -> int:
    """Pairs (t, s) with t ≠ s: the same view seen by teacher and student is excluded."""
    return n_teacher * n_student - min(n_teacher, n_student)


def dino_loss(
    teacher_out: Sequence[Any], student_out: Sequence[Any], center: Any, teacher_temp: float = 0.04, student_temp: float = 0.1
) -> Any:
    """1/(n·B) Σ_b Σ_{t≠s} −softmax((x^T_tb − c)/τ_t) · log_softmax(x^S_sb/τ_s), teacher detached."""
    t = torch.stack([v.detach() for v in teacher_out])
    s = torch.stack(list(student_out))
    p = F.softmax((t - center.reshape(-1)) / teacher_temp, dim=-1)
    logq = F.log_softmax(s / student_temp, dim=-1)
    ce = -torch.einsum("tbk,sbk->ts", p, logq)
    nt, ns = t.shape[0], s.shape[0]
    keep = ~torch.eye(nt, ns, dtype=torch.bool, device=ce.device)
    return (ce * keep).sum() / (n_terms(nt, ns) * t.shape[1])


def _chunk_width(n_views: int, b: int, k: int, chunk: Optional[int]) -> int:
    if chunk is None:
        chunk = max(1, CHUNK_ELEMENTS // max(1, n_views * b))
    return max(1, min(int(chunk), k))


def _lse_and_dots(teacher: Sequence[Any], student: Sequence[Any], c: Any, tt: float, ts: float, w: int):
    """Online pass over column chunks: (teacher lse (nt, B), student lse (ns, B), p_t·x_s (nt, ns, B))."""
    nt, ns = len(teacher), len(student)
    b, k = teacher[0].shape
    like = teacher[0]
    tm = like.new_full((nt, b), float("-inf"))
    tz = like.new_zeros((nt, b))
    sm = like.new_full((ns, b), float("-inf"))
    sz = like.new_zeros((ns, b))
    acc = like.new_zeros((nt, ns, b))
    for c0 in range(0, k, w):
        c1 = min(c0 + w, k)
        xs = torch.stack([v[:, c0:c1] for v in student])
        zs = xs / ts
        new = torch.maximum(sm, zs.amax(-1))
        sz = sz * torch.exp(sm - new) + torch.exp(zs - new.unsqueeze(-1)).sum(-1)
        sm = new
        y = (torch.stack([v[:, c0:c1] for v in teacher]) - c[c0:c1]) / tt
        new = torch.maximum(tm, y.amax(-1))
        r = torch.exp(tm - new)
        e = torch.exp(y - new.unsqueeze(-1))
        tz = tz * r + e.sum(-1)
        acc = acc * r.unsqueeze(1) + torch.einsum("tbw,sbw->tsb", e, xs)
        tm = new
    return tm + torch.log(tz), sm + torch.log(sz), acc / tz.unsqueeze(1)


class _DinoChunked(torch.autograd.Function):
    @staticmethod
    def forward(center: Any, tt: float, ts: float, w: int, nt: int, *views: Any) -> Any:  # type: ignore[override]
        teacher, student = views[:nt], views[nt:]
        ns = len(student)
        t_lse, s_lse, dots = _lse_and_dots(teacher, student, center, tt, ts, w)
        terms = s_lse.unsqueeze(0) - dots / ts  # (nt, ns, B)
        keep = ~torch.eye(nt, ns, dtype=torch.bool, device=terms.device)
        loss = (terms * keep.unsqueeze(-1)).sum() / (n_terms(nt, ns) * teacher[0].shape[0])
        return loss, t_lse, s_lse

    @staticmethod
    def setup_context(ctx: Any, inputs: Any, output: Any) -> None:
        center, tt, ts, w, nt = inputs[:5]
        ctx.params = (tt, ts, w, nt)
        ctx.save_for_backward(center, output[1], output[2], *inputs[5:])
        ctx.mark_non_differentiable(output[1], output[2])

    @staticmethod
    def backward(ctx: Any, g: Any, _a: Any, _b: Any) -> Any:  # type: ignore[override]
        from .. import _ops

        tt, ts, w, nt = ctx.params
        center, t_lse, s_lse, *views = ctx.saved_tensors
        teacher, student = views[:nt], views[nt:]
        ns = len(student)
        b, k = student[0].shape
        with torch.no_grad():
            coef = g / (n_terms(nt, ns) * b * ts)
            grads = [torch.empty_like(v) for v in student]
            for c0 in range(0, k, w):
                c1 = min(c0 + w, k)
                p = torch.exp((torch.stack([v[:, c0:c1] for v in teacher]) - center[c0:c1]) / tt - t_lse.unsqueeze(-1))
                psum = p.sum(0)
                for s in range(ns):
                    q = torch.exp(student[s][:, c0:c1] / ts - s_lse[s].unsqueeze(-1))
                    own = p[s] if s < nt else 0.0
                    grads[s][:, c0:c1] = ((nt - (1 if s < nt else 0)) * q - (psum - own)) * coef
        grads = _ops.refuse_double_backward("DINOLoss", grads, student)
        return (None,) * (5 + nt) + tuple(grads)


def dino_loss_chunked(
    teacher_out: Sequence[Any],
    student_out: Sequence[Any],
    center: Any,
    teacher_temp: float = 0.04,
    student_temp: float = 0.1,
    chunk: Optional[int] = None,
) -> Any:
    """:func:`dino_loss` over column chunks of ``chunk`` columns (default: about 4M elements of all views
    per chunk): O(B·views) state besides the inputs and the student gradient; the teacher is detached."""
    teacher = [v.detach() for v in teacher_out]
    student = list(student_out)
    b, k = teacher[0].shape
    w = _chunk_width(len(teacher) + len(student), b, k, chunk)
    c = center.detach().reshape(-1).clone()  # saved for backward: immune to later in-place centre updates
    return _DinoChunked.apply(c, float(teacher_temp), float(student_temp), w, len(teacher), *teacher, *student)[0]
