"""Pair and triplet losses: contrastive, triplet margin (with on-line mining), lifted structured.

D_ij = ‖x_i − x_j‖₂ is the Euclidean distance. CPU tensors run Rust kernels
(forward and backward, memory linear in the batch: distance tiles are
recomputed in backward); tensors on other devices run the pure-torch
:mod:`reprkit.reference.pairs`. float16/bfloat16 are computed in float32 (the
loss comes back in float32, the gradient in the input dtype). A batch without
any valid pair or triplet gives a loss of 0 that is still attached to the
graph, so backward gives zero gradients, never NaN.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from .. import _core
from .._bridge import as_numpy, torch
from .._threads import resolve_n_jobs
from .._validation import check_choice
from . import _inputs as V

MININGS = ("all", "batch_all", "batch_hard", "semi_hard")

__all__ = [
    "contrastive_loss",
    "triplet_margin_loss",
    "lifted_structure_loss",
    "ContrastiveLoss",
    "TripletMarginLoss",
    "LiftedStructureLoss",
]


def _on_cpu(t: Any) -> bool:
    return t.device.type == "cpu"


def _scalar(v: float, like: Any) -> Any:
    return torch.tensor(v, dtype=like.dtype)


def _grad(g: Any, a: Optional[np.ndarray], need: bool) -> Any:
    if not need or a is None:
        return None
    ga = torch.from_numpy(a)
    if not g.requires_grad and g.numel() == 1 and float(g) == 1.0:
        return ga  # loss.backward(): the kernel's gradient as is, no B×d copy
    return ga * g


class ContrastiveLossFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Any, rx: Optional[Any], labels: np.ndarray, rlabels: Optional[np.ndarray], margin: float, n_threads: int) -> Any:  # type: ignore[override]
        xa = as_numpy(x)
        ra = None if rx is None else as_numpy(rx)
        loss = _core.contrastive_loss(xa, labels, ra, rlabels, margin, False, n_threads)
        ctx.args = (xa, labels, ra, rlabels, margin, n_threads)
        return _scalar(loss, x)

    @staticmethod
    def backward(ctx: Any, g: Any) -> Any:  # type: ignore[override]
        xa, labels, ra, rlabels, margin, n_threads = ctx.args
        gx, gr = _core.contrastive_loss(xa, labels, ra, rlabels, margin, True, n_threads)
        return _grad(g, gx, ctx.needs_input_grad[0]), _grad(g, gr, ctx.needs_input_grad[1]), None, None, None, None


class TripletLossFn(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, x: Any, rx: Optional[Any], labels: np.ndarray, rlabels: Optional[np.ndarray],
        margin: float, mining: str, squared: bool, soft: bool, n_threads: int,
    ) -> Any:
        xa = as_numpy(x)
        ra = None if rx is None else as_numpy(rx)
        loss, triplets, norm = _core.triplet_loss(xa, labels, ra, rlabels, margin, mining, squared, soft, None, 0.0, n_threads)
        ctx.args = (xa, labels, ra, rlabels, margin, mining, squared, soft, triplets, norm, n_threads)
        return _scalar(loss, x)

    @staticmethod
    def backward(ctx: Any, g: Any) -> Any:  # type: ignore[override]
        gx, gr = _core.triplet_loss(*ctx.args)
        return (_grad(g, gx, ctx.needs_input_grad[0]), _grad(g, gr, ctx.needs_input_grad[1])) + (None,) * 7


class LiftedLossFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Any, labels: np.ndarray, margin: float, hard: bool, n_threads: int) -> Any:  # type: ignore[override]
        xa = as_numpy(x)
        loss, lse, dl, nearest = _core.lifted_loss(xa, labels, margin, hard, None, None, None, n_threads)
        ctx.args = (xa, labels, margin, hard, lse, dl, nearest, n_threads)
        return _scalar(loss, x)

    @staticmethod
    def backward(ctx: Any, g: Any) -> Any:  # type: ignore[override]
        gx = _core.lifted_loss(*ctx.args)
        return _grad(g, gx, ctx.needs_input_grad[0]), None, None, None, None



def contrastive_loss(
    embeddings: Any,
    labels: Any,
    margin: float = 1.0,
    *,
    ref_embeddings: Optional[Any] = None,
    ref_labels: Optional[Any] = None,
    n_jobs: Optional[int] = None,
) -> Any:
    """Contrastive pair loss (Hadsell et al. 2006).

    L = 1/|pairs| Σ_{i<j} [ y_i = y_j ] D_ij² + [ y_i ≠ y_j ] max(0, margin − D_ij)²

    With ``ref_embeddings, ref_labels`` (cross-batch memory) the pairs are every
    (batch row i, reference row j); references are used as given, so add the
    current batch to a :class:`reprkit.MemoryBank` *after* computing the loss
    (else each row meets itself at distance 0). The gradient of D at 0 is taken as 0.
    """
    x = V.check_embeddings(embeddings, "embeddings")
    y = V.check_labels(labels, x.shape[0], x.device)
    r, ry = V.check_refs(x, y, ref_embeddings, ref_labels)
    margin = V.check_finite_number("margin", margin, nonneg=True)
    x, r = V.common_dtype(x, r)
    if _on_cpu(x):
        return ContrastiveLossFn.apply(x, r, V.labels_np(y), V.labels_np(ry), margin, resolve_n_jobs(n_jobs))
    from ..reference import pairs as ref

    return ref.contrastive_loss(x, y, margin, r, ry)


def triplet_margin_loss(
    embeddings: Any,
    labels: Any,
    margin: float = 0.2,
    mining: str = "all",
    squared: bool = True,
    soft: bool = False,
    *,
    ref_embeddings: Optional[Any] = None,
    ref_labels: Optional[Any] = None,
    n_jobs: Optional[int] = None,
) -> Any:
    """Triplet margin loss with on-line mining.

    Per triplet (a, p, n) with y_a = y_p, a ≠ p, y_n ≠ y_a:
    ℓ = max(0, d(a,p) − d(a,n) + margin), or softplus(d(a,p) − d(a,n) + margin)
    when ``soft``; d = D² when ``squared`` else D.

    * ``"all"``: mean of ℓ over every valid triplet (never enumerated: per anchor
      the negatives are sorted and the hinge sums come from prefix sums);
    * ``"batch_all"``: sum over all valid triplets / number of triplets with ℓ > 0
      (Hermans et al. 2017);
    * ``"batch_hard"``: per anchor with a positive and a negative, the farthest
      positive and nearest negative; mean over those anchors;
    * ``"semi_hard"``: per positive pair, the nearest negative with d(a,n) > d(a,p),
      else the farthest negative (FaceNet); mean over positive pairs.

    Ties in mining go to the lowest index. References (cross-batch memory)
    supply the positives and negatives of the batch's anchors; every reference
    row with the anchor's label is a positive (no self-exclusion), so enqueue
    the current batch after computing the loss.
    """
    check_choice("mining", mining, MININGS)
    x = V.check_embeddings(embeddings, "embeddings")
    y = V.check_labels(labels, x.shape[0], x.device)
    r, ry = V.check_refs(x, y, ref_embeddings, ref_labels)
    margin = V.check_finite_number("margin", margin)
    x, r = V.common_dtype(x, r)
    if _on_cpu(x):
        return TripletLossFn.apply(
            x, r, V.labels_np(y), V.labels_np(ry), margin, mining, bool(squared), bool(soft), resolve_n_jobs(n_jobs)
        )
    from ..reference import pairs as ref

    return ref.triplet_margin_loss(x, y, margin, mining, bool(squared), bool(soft), r, ry)


def lifted_structure_loss(
    embeddings: Any, labels: Any, margin: float = 1.0, hard: bool = False, *, n_jobs: Optional[int] = None
) -> Any:
    """Lifted structured loss (Oh Song et al. 2016).

    L = 1/(2|P|) Σ_{(i,j)∈P} max(0, J_ij)²,
    J_ij = D_ij + log(Σ_{k∈N(i)} e^{margin−D_ik} + Σ_{l∈N(j)} e^{margin−D_jl})

    over the unordered positive pairs P (N(i): the negatives of i), evaluated
    as log-sum-exps. ``hard=True`` replaces each log-sum-exp by a max (the
    nested max of the paper's hard-mining variant).
    """
    x = V.check_embeddings(embeddings, "embeddings")
    y = V.check_labels(labels, x.shape[0], x.device)
    margin = V.check_finite_number("margin", margin)
    (x,) = V.common_dtype(x)
    if _on_cpu(x):
        return LiftedLossFn.apply(x, V.labels_np(y), margin, bool(hard), resolve_n_jobs(n_jobs))
    from ..reference import pairs as ref

    return ref.lifted_structure_loss(x, y, margin, bool(hard))


class ContrastiveLoss(torch.nn.Module):
    """Same label → D², different → max(0, margin − D)²; mean over pairs i<j.

    ``forward(embeddings, labels, ref_embeddings=None, ref_labels=None)``.
    """

    def __init__(self, margin: float = 1.0, *, n_jobs: Optional[int] = None) -> None:
        super().__init__()
        self.margin, self.n_jobs = margin, n_jobs

    def forward(self, embeddings: Any, labels: Any, ref_embeddings: Any = None, ref_labels: Any = None) -> Any:
        return contrastive_loss(
            embeddings, labels, self.margin, ref_embeddings=ref_embeddings, ref_labels=ref_labels, n_jobs=self.n_jobs
        )

    def extra_repr(self) -> str:
        return f"margin={self.margin}"


class TripletMarginLoss(torch.nn.Module):
    """max(0, d(a,p) − d(a,n) + margin) (softplus if ``soft``), d = D² if ``squared`` else D,
    over the triplets chosen by ``mining`` ("all", "batch_all", "batch_hard", "semi_hard").

    ``forward(embeddings, labels, ref_embeddings=None, ref_labels=None)``.
    """

    def __init__(
        self, margin: float = 0.2, mining: str = "all", squared: bool = True, soft: bool = False, *, n_jobs: Optional[int] = None
    ) -> None:
        super().__init__()
        check_choice("mining", mining, MININGS)
        self.margin, self.mining, self.squared, self.soft, self.n_jobs = margin, mining, squared, soft, n_jobs

    def forward(self, embeddings: Any, labels: Any, ref_embeddings: Any = None, ref_labels: Any = None) -> Any:
        return triplet_margin_loss(
            embeddings, labels, self.margin, self.mining, self.squared, self.soft,
            ref_embeddings=ref_embeddings, ref_labels=ref_labels, n_jobs=self.n_jobs,
        )

    def extra_repr(self) -> str:
        return f"margin={self.margin}, mining={self.mining!r}, squared={self.squared}, soft={self.soft}"


class LiftedStructureLoss(torch.nn.Module):
    """1/(2|P|) Σ_{(i,j)∈P} max(0, D_ij + log(Σ_{N(i)} e^{margin−D_ik} + Σ_{N(j)} e^{margin−D_jl}))²;
    ``hard=True`` uses maxima instead of log-sum-exps. ``forward(embeddings, labels)``."""

    def __init__(self, margin: float = 1.0, hard: bool = False, *, n_jobs: Optional[int] = None) -> None:
        super().__init__()
        self.margin, self.hard, self.n_jobs = margin, hard, n_jobs

    def forward(self, embeddings: Any, labels: Any) -> Any:
        return lifted_structure_loss(embeddings, labels, self.margin, self.hard, n_jobs=self.n_jobs)

    def extra_repr(self) -> str:
        return f"margin={self.margin}, hard={self.hard}"
