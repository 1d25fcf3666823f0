"""Metric-learning and contrastive losses as functions.

D_ij = ‖x_i − x_j‖₂ is the Euclidean distance. CPU tensors run Rust kernels
(forward and backward, memory linear in the batch: distance tiles are
recomputed in backward); tensors on other devices run the pure-torch
:mod:`reprkit.reference.losses`. float16/bfloat16 are computed in float32 (the
loss comes back in float32, the gradient in the input dtype). A batch without
any valid pair or triplet gives a loss of 0 that is still attached to the
graph, so backward gives zero gradients, never NaN.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from . import _loss_inputs as V
from ._threads import resolve_n_jobs
from ._validation import check_choice

MININGS = ("all", "batch_all", "batch_hard", "semi_hard")

__all__ = [
    "contrastive_loss",
    "triplet_margin_loss",
    "lifted_structure_loss",
    "npair_loss",
    "ntxent_loss",
    "infonce_loss",
]


def _on_cpu(t: Any) -> bool:
    return t.device.type == "cpu"


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
        from .autograd.losses import ContrastiveLossFn

        return ContrastiveLossFn.apply(x, r, V.labels_np(y), V.labels_np(ry), margin, resolve_n_jobs(n_jobs))
    from .reference import losses as ref

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
        from .autograd.losses import TripletLossFn

        return TripletLossFn.apply(
            x, r, V.labels_np(y), V.labels_np(ry), margin, mining, bool(squared), bool(soft), resolve_n_jobs(n_jobs)
        )
    from .reference import losses as ref

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
        from .autograd.losses import LiftedLossFn

        return LiftedLossFn.apply(x, V.labels_np(y), margin, bool(hard), resolve_n_jobs(n_jobs))
    from .reference import losses as ref

    return ref.lifted_structure_loss(x, y, margin, bool(hard))


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
        from .autograd.losses import SoftmaxXentFn

        n = a.shape[0]
        loss = SoftmaxXentFn.apply(a, p, 1.0, np.arange(n, dtype=np.int64), "all", 0, resolve_n_jobs(n_jobs))
        if l2_reg:
            loss = loss + l2_reg * ((a * a).sum(1).mean() + (p * p).sum(1).mean())
        return loss
    from .reference import losses as ref

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
        from .autograd.losses import SoftmaxXentFn
        from .reference.losses import F, torch

        n = a.shape[0]
        u = F.normalize(torch.cat([a, b]), dim=1)
        idx = np.arange(n, dtype=np.int64)
        targets = np.concatenate([idx + n, idx])
        return SoftmaxXentFn.apply(u, None, 1.0 / t, targets, "nodiag", 0, resolve_n_jobs(n_jobs))
    from .reference import losses as ref

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
            from .errors import ShapeError

            raise ShapeError(f"negative_keys must be (K, {q.shape[1]}) on {q.device}, got {tuple(nk.shape)} on {nk.device}")
    t = V.check_positive("temperature", temperature)
    q, k, nk = V.common_dtype(q, k, nk)
    if _on_cpu(q):
        from .autograd.losses import SoftmaxXentFn
        from .reference.losses import F, torch

        n = q.shape[0]
        qu, ku = F.normalize(q, dim=1), F.normalize(k, dim=1)
        targets = np.arange(n, dtype=np.int64)
        if nk is None:
            return SoftmaxXentFn.apply(qu, ku, 1.0 / t, targets, "all", 0, resolve_n_jobs(n_jobs))
        keys = torch.cat([ku, F.normalize(nk, dim=1)])
        return SoftmaxXentFn.apply(qu, keys, 1.0 / t, targets, "own_and_tail", n, resolve_n_jobs(n_jobs))
    from .reference import losses as ref

    return ref.infonce_loss(q, k, nk, t)
