"""Pair and triplet losses: contrastive, triplet margin, lifted structured, multi-similarity, circle.

They compose like pytorch-metric-learning's:

* ``distance=``: ``"euclidean"`` (d = ‖x_i − x_j‖₂, the default; embeddings are
  **not** normalised), ``"sqeuclidean"`` (d = ‖x_i − x_j‖²) or ``"cosine"``
  (d = 1 − cos θ of the L2-normalised rows, computed as ½‖u_i − u_j‖²; a zero
  row stays zero). The multi-similarity and circle losses are defined on the
  cosine similarity S = 1 − d of normalised rows.
* ``indices_tuple=``: the loss over given pairs ``(a1, p, a2, n)`` or triplets
  ``(a, p, n)`` — the tuple layout of reprkit's miners and of PML's — instead of
  the batch's own pairs; triplets given to a pair loss become the pairs (a, p),
  (a, n), pairs given to the triplet loss become every (a, p, n) sharing the anchor.
* ``reduction=``: ``"mean"`` (default), ``"sum"`` or ``"none"``; ``weights=``: a
  per-sample weight w of the anchors. Every loss is Σ_i per_i / Σ_i cnt_i over
  per-anchor values per_i and counts cnt_i (stated in each docstring), so
  ``"none"`` returns the per-anchor vector (per-pair / per-triplet with
  ``indices_tuple``), ``"sum"`` its sum, and with weights the mean is
  Σ w_i per_i / Σ w_i cnt_i.

CPU tensors run Rust kernels for forward and backward (memory linear in the
batch: distance tiles are recomputed in backward), registered as torch
operators so ``torch.compile(fullgraph=True)`` and ``torch.func.grad`` work;
other devices (and ``backend="torch"``) run the chunked torch path of
:mod:`reprkit.losses._pairs_chunked` (anchor-row tiles recomputed in backward: memory
O(chunk·M + B·d), never B×M); ``backend="auto"|"rust"|"torch"`` on every function and module. float16/bfloat16 compute in
float32 (float32 loss, gradient in the input dtype). A batch without any valid
pair or triplet gives 0, still attached to the graph (zero gradients, never NaN).

Euclidean-type kernels work in squared distances: float32 embeddings so large (about
1e19/√d and beyond) that the squares overflow float32 are computed in float64 and the
loss returned in float32 — finite where its true value fits (a triplet margin of
distances), +inf where it does not (a mean of squared distances past 3.4e38), never NaN.
float64 embeddings whose squares overflow float64 get a clear error.

``gather_distributed=True`` (functions and modules): the global-batch form of
:mod:`reprkit.distributed` — every rank gathers the rows, labels and weights of all
ranks and computes the global loss (memory per rank O(B_global·d) with the tiled
Rust kernels; ``indices_tuple`` indexes the global batch).
"""

from __future__ import annotations

import functools
import math
import warnings
from typing import Any, Optional, Sequence, Tuple

from .._threads import op_threads
from .._torch import require_torch
from .._validation import check_choice
from ..errors import InvalidParameterError, ShapeError
from . import _inputs as V
from ._chunked import BACKENDS, use_rust
from ._pairs_chunked import pair_rows

torch = require_torch()
F = torch.nn.functional

MININGS = ("all", "batch_all", "batch_hard", "semi_hard")
DISTANCES = ("euclidean", "sqeuclidean", "cosine")
REDUCTIONS = ("mean", "sum", "none")

__all__ = [
    "contrastive_loss",
    "triplet_margin_loss",
    "lifted_structure_loss",
    "multi_similarity_loss",
    "circle_loss",
    "ContrastiveLoss",
    "TripletMarginLoss",
    "LiftedStructureLoss",
    "MultiSimilarityLoss",
    "CircleLoss",
    "MININGS",
    "DISTANCES",
    "REDUCTIONS",
]


# ----------------------------------------------------------------- shared plumbing


def _distance(distance: Optional[str], squared: Optional[bool] = None, default: str = "euclidean") -> str:
    squared = V.check_bool("squared", squared, optional=True)
    if distance is None:
        return default if squared is None else ("sqeuclidean" if squared else "euclidean")
    return check_choice("distance", distance, DISTANCES)


def _inputs(embeddings: Any, labels: Any, ref_embeddings: Any, ref_labels: Any, need_labels: bool = True, distance: str = "cosine"):
    x = V.check_embeddings(embeddings, "embeddings")
    y = None
    if labels is not None or need_labels:
        y = V.check_labels(labels, x.shape[0], x.device)
    if ref_embeddings is not None and ref_labels is None and not need_labels:
        r = V.check_embeddings(ref_embeddings, "ref_embeddings")
        if r.shape[1] != x.shape[1] or r.device != x.device:
            raise ShapeError(f"ref_embeddings must be (M, {x.shape[1]}) on {x.device}, got {tuple(r.shape)} on {r.device}")
        ry = None
    else:
        r, ry = V.check_refs(x, y if y is not None else torch.zeros(x.shape[0], dtype=torch.long, device=x.device), ref_embeddings, ref_labels)
    x, r = V.common_dtype(x, r)
    V.check_distance_range(x, "embeddings", distance)
    if r is not None:
        V.check_distance_range(r, "ref_embeddings", distance)
    return x, y, r, ry


def _needs_float64(t: Any, distance: str) -> bool:
    """A float32 (or half) tensor whose squared distances overflow float32 but not float64."""
    if not isinstance(t, torch.Tensor) or t.dtype not in (torch.float32, torch.float16, torch.bfloat16) or t.dim() != 2:
        return False
    if distance == "cosine" or t.numel() == 0 or t.is_meta or t.layout != torch.strided:
        return False
    if torch.compiler.is_compiling() or torch._C._functorch.is_functorch_wrapped_tensor(t):
        return False
    with torch.no_grad():
        m = float(t.detach().abs().max())
    return math.isfinite(m) and m > math.sqrt(float(torch.finfo(torch.float32).max) / (4.0 * t.shape[1]))


def _wide_when_huge(fn: Any) -> Any:
    """Euclidean-type losses square their distances: embeddings of magnitude ~1e30 in float32 would
    overflow the squares although the loss (a margin of distances) is representable. Such calls run in
    float64 and the result is cast back to the float32 loss dtype: finite where the true value fits in
    float32, +inf where it does not (a mean of squared distances past 3.4e38), never NaN. Not under
    ``gather_distributed`` (every rank must gather the same dtype) or tracing."""

    @functools.wraps(fn)
    def call(embeddings: Any, *args: Any, **kwargs: Any) -> Any:
        if kwargs.get("gather_distributed", False) is True:
            return fn(embeddings, *args, **kwargs)
        dist = kwargs.get("distance") or "euclidean"  # euclidean and sqeuclidean kernels both square
        if not isinstance(dist, str) or dist == "cosine":
            return fn(embeddings, *args, **kwargs)
        ref = kwargs.get("ref_embeddings")
        if not (_needs_float64(embeddings, dist) or (ref is not None and _needs_float64(ref, dist))):
            return fn(embeddings, *args, **kwargs)
        if ref is not None and isinstance(ref, torch.Tensor) and ref.is_floating_point():
            kwargs["ref_embeddings"] = ref.double()
        out = fn(embeddings.double(), *args, **kwargs)
        return out.to(torch.float32) if isinstance(out, torch.Tensor) else out

    return call


def _prepare(x: Any, r: Optional[Any], distance: str) -> Tuple[Any, Optional[Any]]:
    if distance == "cosine":
        return F.normalize(x, dim=1), None if r is None else F.normalize(r, dim=1)
    return x, r


def _weights(weights: Optional[Any], n: int, x: Any) -> Optional[Any]:
    if weights is None:
        return None
    w = torch.as_tensor(weights, device=x.device)
    if not w.is_floating_point():
        w = w.to(x.dtype)
    if w.dim() != 1 or w.shape[0] != n:
        raise ShapeError(f"weights must have shape ({n},) (one per embedding row), got {tuple(w.shape)}")
    return w.to(x.dtype)


def _reduce(per: Any, cnt: Any, reduction: str, w: Optional[Any]) -> Any:
    from ..reference.pairs import reduce

    return reduce(per, cnt, reduction, w)


def _index(t: Any, name: str, bound: int, device: Any) -> Any:
    t = torch.as_tensor(t, device=device)
    if t.is_floating_point() or t.dtype == torch.bool or t.dim() != 1:
        raise InvalidParameterError(f"indices_tuple: {name} must be a 1-D integer tensor, got {t.dtype} of shape {tuple(t.shape)}")
    t = t.to(torch.long)
    if not torch.compiler.is_compiling() and t.numel() and (int(t.min()) < 0 or int(t.max()) >= bound):
        raise InvalidParameterError(f"indices_tuple: {name} has an index outside [0, {bound})")
    return t


def _tuple(indices_tuple: Sequence[Any], n: int, m: int, device: Any, want: str) -> Tuple[Any, ...]:
    """Validated (a1, p, a2, n) pairs or (a, p, n) triplets, converted to the form ``want`` ("pairs"/"triplets")."""
    if not isinstance(indices_tuple, (tuple, list)) or len(indices_tuple) not in (3, 4):
        raise InvalidParameterError("indices_tuple must be (anchors, positives, negatives) or (a1, positives, a2, negatives)")
    if len(indices_tuple) == 3:
        a, p, q = (_index(t, nm, b, device) for t, nm, b in zip(indices_tuple, ("a", "p", "n"), (n, m, m)))
        if not (a.shape == p.shape == q.shape):
            raise ShapeError("indices_tuple: a, p and n must have the same length")
        return (a, p, a, q) if want == "pairs" else (a, p, q)
    a1, p, a2, q = (_index(t, nm, b, device) for t, nm, b in zip(indices_tuple, ("a1", "p", "a2", "n"), (n, m, n, m)))
    if a1.shape != p.shape or a2.shape != q.shape:
        raise ShapeError("indices_tuple: a1/p and a2/n must have equal lengths")
    if want == "pairs":
        return a1, p, a2, q
    return pairs_to_triplets(a1, p, a2, q)


def pairs_to_triplets(a1: Any, p: Any, a2: Any, n: Any) -> Tuple[Any, Any, Any]:
    """Every (a, p, n) with (a, p) a given positive pair and (a, n) a given negative pair (PML's rule)."""
    if a1.numel() == 0 or a2.numel() == 0:
        e = a1.new_empty((0,))
        return e, e.clone(), e.clone()
    o1, o2 = torch.argsort(a1, stable=True), torch.argsort(a2, stable=True)
    a1, p, a2, n = a1[o1], p[o1], a2[o2], n[o2]
    size = int(max(int(a1.max()), int(a2.max()))) + 1
    c1, c2 = torch.bincount(a1, minlength=size), torch.bincount(a2, minlength=size)
    s2 = torch.cumsum(c2, 0) - c2
    reps = c2[a1]  # each positive pair meets every negative pair of its anchor
    ai = torch.repeat_interleave(a1, reps)
    pi = torch.repeat_interleave(p, reps)
    start = torch.repeat_interleave(s2[a1], reps)
    offs = torch.arange(ai.numel(), device=ai.device) - torch.repeat_interleave(torch.cumsum(reps, 0) - reps, reps)
    del c1
    return ai, pi, n[start + offs]


def _legacy_refs(indices_tuple: Any, ref_emb: Any, ref_labels: Any) -> Tuple[Any, Any, Any]:
    """Before PML's call style, the third positional argument was ``ref_embeddings``."""
    if indices_tuple is not None and torch.is_tensor(indices_tuple) and indices_tuple.is_floating_point():
        warnings.warn(
            "loss(embeddings, labels, ref_embeddings, ref_labels) is deprecated: the third argument is "
            "indices_tuple (as in pytorch-metric-learning); pass ref_emb=..., ref_labels=...",
            DeprecationWarning,
            stacklevel=3,
        )
        return None, indices_tuple, ref_labels if ref_labels is not None else ref_emb
    return indices_tuple, ref_emb, ref_labels


def _gathered(embeddings: Any, labels: Any, weights: Any) -> Tuple[Any, Any, Any]:
    """The global-batch form of :mod:`reprkit.distributed`: every rank's rows, labels and weights (rank order).

    ``indices_tuple`` then indexes the global batch (as the miners' output with
    ``gather_distributed=True`` does); references (a memory bank) are used as given.
    """
    from ..distributed import gather_inputs

    return gather_inputs(embeddings, labels, weights)


# ----------------------------------------------------------------- contrastive


@_wide_when_huge
def contrastive_loss(
    embeddings: Any,
    labels: Any = None,
    margin: float = 1.0,
    *,
    distance: str = "euclidean",
    indices_tuple: Optional[Sequence[Any]] = None,
    reduction: str = "mean",
    weights: Optional[Any] = None,
    ref_embeddings: Optional[Any] = None,
    ref_labels: Optional[Any] = None,
    n_jobs: Optional[int] = None,
    gather_distributed: bool = False,
    backend: str = "auto",
) -> Any:
    """Contrastive pair loss (Hadsell, Chopra & LeCun 2006).

    ℓ_ij = d_ij² if y_i = y_j, else max(0, margin − d_ij)²;
    L = 1/|pairs| Σ_{i<j} ℓ_ij over the batch's unordered pairs.

    Per anchor (``reduction="none"``): per_i = ½ Σ_{j≠i} ℓ_ij and cnt_i = (n−1)/2, so
    Σ per = Σ_{i<j} ℓ_ij; with references per_i = Σ_j ℓ_ij over every (row i, ref j),
    cnt_i = M. With ``indices_tuple`` the values are per given pair (positives, then
    negatives) and the mean is over the given pairs.

    References (cross-batch memory) are used as given, so add the current batch to a
    :class:`reprkit.MemoryBank` *after* computing the loss. The gradient of d at 0 is 0.
    """
    gather_distributed = V.check_bool("gather_distributed", gather_distributed)
    check_choice("backend", backend, BACKENDS)
    if gather_distributed:
        embeddings, labels, weights = _gathered(embeddings, labels, weights)
    check_choice("reduction", reduction, REDUCTIONS)
    distance = _distance(distance)
    margin = V.check_finite_number("margin", margin, nonneg=True)
    x, y, r, ry = _inputs(embeddings, labels, ref_embeddings, ref_labels, need_labels=indices_tuple is None, distance=distance)
    w = _weights(weights, x.shape[0], x)
    xx, rr = _prepare(x, r, distance)
    if indices_tuple is not None:
        a1, p, a2, n = _tuple(indices_tuple, x.shape[0], x.shape[0] if r is None else r.shape[0], x.device, "pairs")
        if use_rust(backend, x):
            from ._pair_ops import PairTuple

            per = PairTuple.apply(xx, rr, a1, p, a2, n, margin, distance, op_threads(n_jobs))
        else:
            from ..reference.pairs import pair_tuple_terms

            per = pair_tuple_terms(xx, rr, a1, p, a2, n, margin, distance)
        tw = None if w is None else torch.cat([w[a1], w[a2]])
        return _reduce(per, torch.ones_like(per), reduction, tw)
    if use_rust(backend, x):
        from ._pair_ops import Contrastive

        per, cnt = Contrastive.apply(xx, rr, y, ry, margin, distance, op_threads(n_jobs))
    else:
        per, cnt = pair_rows(xx, rr, y, ry, ("contrastive", margin, distance))
    return _reduce(per, cnt, reduction, w)


# ----------------------------------------------------------------- triplet


@_wide_when_huge
def triplet_margin_loss(
    embeddings: Any,
    labels: Any = None,
    margin: float = 0.2,
    mining: str = "all",
    squared: Optional[bool] = None,
    soft: bool = False,
    *,
    distance: Optional[str] = None,
    indices_tuple: Optional[Sequence[Any]] = None,
    reduction: str = "mean",
    weights: Optional[Any] = None,
    ref_embeddings: Optional[Any] = None,
    ref_labels: Optional[Any] = None,
    n_jobs: Optional[int] = None,
    gather_distributed: bool = False,
    backend: str = "auto",
) -> Any:
    """Triplet margin loss (Weinberger & Saul 2009; Schroff et al. 2015) with on-line mining.

    Per triplet (a, p, n) with y_a = y_p, a ≠ p, y_n ≠ y_a:
    ℓ = max(0, d(a,p) − d(a,n) + margin), or softplus(d(a,p) − d(a,n) + margin) when ``soft``.
    ``distance`` (default ``"sqeuclidean"``, the historical choice); ``squared=True/False`` is
    an alias for ``distance="sqeuclidean"/"euclidean"``.

    * ``"all"``: mean of ℓ over every valid triplet (never enumerated: per anchor the
      negatives are sorted and the hinge sums come from prefix sums);
    * ``"batch_all"``: sum over all valid triplets / number with ℓ > 0 (Hermans et al. 2017);
    * ``"batch_hard"``: per anchor, the farthest positive and nearest negative; mean over anchors;
    * ``"semi_hard"``: per positive pair, the nearest negative with d(a,n) > d(a,p), else the
      farthest negative (FaceNet); mean over positive pairs.

    Per anchor: per_a = Σ ℓ over a's triplets, cnt_a = the number of them that the mean counts.
    With ``indices_tuple`` (triplets, or pairs turned into triplets) the values are per triplet.
    Ties in mining go to the lowest index. Every reference row with the anchor's label is a
    positive (no self-exclusion), so enqueue the current batch after computing the loss.
    """
    gather_distributed = V.check_bool("gather_distributed", gather_distributed)
    check_choice("backend", backend, BACKENDS)
    if gather_distributed:
        embeddings, labels, weights = _gathered(embeddings, labels, weights)
    check_choice("mining", mining, MININGS)
    check_choice("reduction", reduction, REDUCTIONS)
    distance = _distance(distance, squared, default="sqeuclidean")
    margin = V.check_finite_number("margin", margin)
    soft = V.check_bool("soft", soft)
    x, y, r, ry = _inputs(embeddings, labels, ref_embeddings, ref_labels, need_labels=indices_tuple is None, distance=distance)
    w = _weights(weights, x.shape[0], x)
    xx, rr = _prepare(x, r, distance)
    if indices_tuple is not None:
        a, p, n = _tuple(indices_tuple, x.shape[0], x.shape[0] if r is None else r.shape[0], x.device, "triplets")
        if use_rust(backend, x):
            from ._pair_ops import TripletTuple

            per = TripletTuple.apply(xx, rr, a, p, n, margin, distance, soft, op_threads(n_jobs))
        else:
            from ..reference.pairs import triplet_tuple_terms

            per = triplet_tuple_terms(xx, rr, a, p, n, margin, distance, soft)
        return _reduce(per, torch.ones_like(per), reduction, None if w is None else w[a])
    if use_rust(backend, x):
        from ._pair_ops import Triplet

        per, cnt, _ = Triplet.apply(xx, rr, y, ry, margin, mining, distance, soft, op_threads(n_jobs))
    else:
        per, cnt = pair_rows(xx, rr, y, ry, ("triplet", margin, mining, distance, soft))
    return _reduce(per, cnt, reduction, w)


# ----------------------------------------------------------------- lifted


@_wide_when_huge
def lifted_structure_loss(
    embeddings: Any,
    labels: Any,
    margin: float = 1.0,
    hard: bool = False,
    *,
    distance: str = "euclidean",
    reduction: str = "mean",
    weights: Optional[Any] = None,
    n_jobs: Optional[int] = None,
    gather_distributed: bool = False,
    backend: str = "auto",
) -> Any:
    """Lifted structured loss (Oh Song et al. 2016).

    L = 1/(2|P|) Σ_{(i,j)∈P} max(0, J_ij)²,
    J_ij = d_ij + log(Σ_{k∈N(i)} e^{margin−d_ik} + Σ_{l∈N(j)} e^{margin−d_jl})

    over the unordered positive pairs P (N(i): the negatives of i), evaluated as
    log-sum-exps. ``hard=True`` replaces each log-sum-exp by a max (the nested max of
    the paper's hard-mining variant). Per anchor: per_i = ½ Σ_{j∈P(i)} max(0, J_ij)²,
    cnt_i = |P(i)|.
    """
    gather_distributed = V.check_bool("gather_distributed", gather_distributed)
    check_choice("backend", backend, BACKENDS)
    if gather_distributed:
        embeddings, labels, weights = _gathered(embeddings, labels, weights)
    check_choice("reduction", reduction, REDUCTIONS)
    distance = _distance(distance)
    margin = V.check_finite_number("margin", margin)
    x, y, _, _ = _inputs(embeddings, labels, None, None, distance=distance)
    w = _weights(weights, x.shape[0], x)
    xx, _ = _prepare(x, None, distance)
    hard = V.check_bool("hard", hard)
    if use_rust(backend, x):
        from ._pair_ops import Lifted

        per, cnt, *_ = Lifted.apply(xx, y, margin, hard, distance, op_threads(n_jobs))
    else:
        per, cnt = pair_rows(xx, None, y, None, ("lifted", margin, hard, distance))
    return _reduce(per, cnt, reduction, w)


# ----------------------------------------------------------------- similarity losses


def _similarity_loss(kind: str, embeddings: Any, labels: Any, params: Tuple[float, ...], indices_tuple: Any,
                     reduction: str, weights: Any, ref_embeddings: Any, ref_labels: Any, n_jobs: Optional[int],
                     gather_distributed: bool = False, backend: str = "auto") -> Any:
    if gather_distributed:
        embeddings, labels, weights = _gathered(embeddings, labels, weights)
    check_choice("reduction", reduction, REDUCTIONS)
    x, y, r, ry = _inputs(embeddings, labels, ref_embeddings, ref_labels, need_labels=indices_tuple is None)
    w = _weights(weights, x.shape[0], x)
    u, ur = _prepare(x, r, "cosine")
    nt = op_threads(n_jobs)
    if indices_tuple is not None:
        pairs = _tuple(indices_tuple, x.shape[0], x.shape[0] if r is None else r.shape[0], x.device, "pairs")
        if use_rust(backend, x):
            from . import _pair_ops as O

            fn = O.MultiSimilarityPairs if kind == "ms" else O.CirclePairs
            per, cnt = fn.apply(u, ur, *pairs, *params, nt)
        else:
            per, cnt = pair_rows(u, ur, None, None, (kind, *params), pairs=pairs)
        return _reduce(per, cnt, reduction, w)
    if use_rust(backend, x):
        from .. import _ops
        from . import _pair_ops as O

        if reduction == "mean" and w is None and _ops.needs_grad(u, ur):
            # The default: loss and gradient from one pass over the similarity tiles.
            return (O.MultiSimilarityMean if kind == "ms" else O.CircleMean).apply(u, ur, y, ry, *params, nt)[0]
        per, cnt = (O.MultiSimilarity if kind == "ms" else O.Circle).apply(u, ur, y, ry, *params, nt)
    else:
        per, cnt = pair_rows(u, ur, y, ry, (kind, *params))
    return _reduce(per, cnt, reduction, w)


def multi_similarity_loss(
    embeddings: Any,
    labels: Any = None,
    alpha: float = 2.0,
    beta: float = 50.0,
    base: float = 0.5,
    *,
    indices_tuple: Optional[Sequence[Any]] = None,
    reduction: str = "mean",
    weights: Optional[Any] = None,
    ref_embeddings: Optional[Any] = None,
    ref_labels: Optional[Any] = None,
    n_jobs: Optional[int] = None,
    gather_distributed: bool = False,
    backend: str = "auto",
) -> Any:
    """Multi-similarity loss (Wang et al. 2019), on the cosine similarity S of L2-normalised rows.

    per_i = 1/α · log(1 + Σ_{p∈P(i)} e^{−α(S_ip − base)}) + 1/β · log(1 + Σ_{n∈N(i)} e^{β(S_in − base)}),
    cnt_i = 1: the mean is over every anchor (rows without pairs contribute 0), as PML's.
    With ``indices_tuple`` P(i), N(i) are the given pairs of anchor i. Pair it with
    :func:`reprkit.miners.multi_similarity` for the paper's pair mining.
    """
    gather_distributed = V.check_bool("gather_distributed", gather_distributed)
    check_choice("backend", backend, BACKENDS)
    for nm, v in (("alpha", alpha), ("beta", beta)):
        V.check_positive(nm, v)
    base = V.check_finite_number("base", base)
    return _similarity_loss("ms", embeddings, labels, (float(alpha), float(beta), base), indices_tuple, reduction, weights,
                            ref_embeddings, ref_labels, n_jobs, gather_distributed, backend)


def circle_loss(
    embeddings: Any,
    labels: Any = None,
    m: float = 0.4,
    gamma: float = 80.0,
    *,
    indices_tuple: Optional[Sequence[Any]] = None,
    reduction: str = "mean",
    weights: Optional[Any] = None,
    ref_embeddings: Optional[Any] = None,
    ref_labels: Optional[Any] = None,
    n_jobs: Optional[int] = None,
    gather_distributed: bool = False,
    backend: str = "auto",
) -> Any:
    """Circle loss (Sun et al. 2020), pair form, on the cosine similarity S of L2-normalised rows.

    α_p = [1 + m − S_ip]₊, α_n = [S_in + m]₊ (treated as constants, as in the authors' code);
    per_i = softplus( log Σ_{p∈P(i)} e^{−γ α_p (S_ip − (1 − m))} + log Σ_{n∈N(i)} e^{γ α_n (S_in − m)} )
    for anchors with a positive and a negative (else 0); cnt_i = [per_i > 0] (mean over the
    anchors with a non-zero loss, PML's AvgNonZeroReducer).
    """
    gather_distributed = V.check_bool("gather_distributed", gather_distributed)
    check_choice("backend", backend, BACKENDS)
    V.check_positive("gamma", gamma)
    m = V.check_finite_number("m", m)
    return _similarity_loss("circle", embeddings, labels, (m, float(gamma)), indices_tuple, reduction, weights,
                            ref_embeddings, ref_labels, n_jobs, gather_distributed, backend)


# ----------------------------------------------------------------- nn.Modules


class _PairLoss(torch.nn.Module):
    """``forward(embeddings, labels=None, indices_tuple=None, ref_emb=None, ref_labels=None, *, weights=None)``,
    pytorch-metric-learning's call signature."""

    def _call(self, fn: Any, embeddings: Any, labels: Any, indices_tuple: Any, ref_emb: Any, ref_labels: Any,
              weights: Any, ref_embeddings: Any = None, **kw: Any) -> Any:
        indices_tuple, ref_emb, ref_labels = _legacy_refs(indices_tuple, ref_emb, ref_labels)
        ref_emb = ref_emb if ref_emb is not None else ref_embeddings
        return fn(embeddings, labels, indices_tuple=indices_tuple, ref_embeddings=ref_emb, ref_labels=ref_labels,
                  weights=weights, n_jobs=self.n_jobs, gather_distributed=self.gather_distributed,
                  backend=getattr(self, "backend", "auto"), **kw)


class ContrastiveLoss(_PairLoss):
    """Same label → d², different → max(0, margin − d)²; mean over pairs (see :func:`contrastive_loss`)."""

    def __init__(self, margin: float = 1.0, *, distance: str = "euclidean", reduction: str = "mean", n_jobs: Optional[int] = None, gather_distributed: bool = False, backend: str = "auto") -> None:
        super().__init__()
        self.gather_distributed = bool(gather_distributed)
        self.backend = check_choice("backend", backend, BACKENDS)
        check_choice("distance", distance, DISTANCES)
        check_choice("reduction", reduction, REDUCTIONS)
        self.margin, self.distance, self.reduction, self.n_jobs = margin, distance, reduction, n_jobs

    def forward(self, embeddings: Any, labels: Any = None, indices_tuple: Any = None, ref_emb: Any = None,
                ref_labels: Any = None, *, weights: Any = None, ref_embeddings: Any = None) -> Any:
        return self._call(lambda e, l, **k: contrastive_loss(e, l, self.margin, distance=self.distance, reduction=self.reduction, **k),
                          embeddings, labels, indices_tuple, ref_emb, ref_labels, weights, ref_embeddings)

    def extra_repr(self) -> str:
        return f"margin={self.margin}, distance={self.distance!r}, reduction={self.reduction!r}"


class TripletMarginLoss(_PairLoss):
    """max(0, d(a,p) − d(a,n) + margin) (softplus if ``soft``) over the triplets chosen by ``mining``
    ("all", "batch_all", "batch_hard", "semi_hard") or given as ``indices_tuple`` (see :func:`triplet_margin_loss`).
    ``squared`` is an alias for ``distance="sqeuclidean"`` (True, the default) / ``"euclidean"`` (False)."""

    def __init__(self, margin: float = 0.2, mining: str = "all", squared: Optional[bool] = None, soft: bool = False, *,
                 distance: Optional[str] = None, reduction: str = "mean", n_jobs: Optional[int] = None, gather_distributed: bool = False, backend: str = "auto") -> None:
        super().__init__()
        self.gather_distributed = bool(gather_distributed)
        self.backend = check_choice("backend", backend, BACKENDS)
        check_choice("mining", mining, MININGS)
        check_choice("reduction", reduction, REDUCTIONS)
        self.distance = _distance(distance, squared, default="sqeuclidean")
        self.margin, self.mining, self.soft, self.reduction, self.n_jobs = margin, mining, soft, reduction, n_jobs

    @property
    def squared(self) -> bool:
        return self.distance == "sqeuclidean"

    def forward(self, embeddings: Any, labels: Any = None, indices_tuple: Any = None, ref_emb: Any = None,
                ref_labels: Any = None, *, weights: Any = None, ref_embeddings: Any = None) -> Any:
        return self._call(
            lambda e, l, **k: triplet_margin_loss(e, l, self.margin, self.mining, None, self.soft, distance=self.distance,
                                                  reduction=self.reduction, **k),
            embeddings, labels, indices_tuple, ref_emb, ref_labels, weights, ref_embeddings)

    def extra_repr(self) -> str:
        return (f"margin={self.margin}, mining={self.mining!r}, distance={self.distance!r}, soft={self.soft}, "
                f"reduction={self.reduction!r}")


class LiftedStructureLoss(torch.nn.Module):
    """1/(2|P|) Σ_{(i,j)∈P} max(0, d_ij + log(Σ_{N(i)} e^{margin−d_ik} + Σ_{N(j)} e^{margin−d_jl}))²;
    ``hard=True`` uses maxima instead of log-sum-exps. ``forward(embeddings, labels, *, weights=None)``."""

    def __init__(self, margin: float = 1.0, hard: bool = False, *, distance: str = "euclidean", reduction: str = "mean",
                 n_jobs: Optional[int] = None, gather_distributed: bool = False, backend: str = "auto") -> None:
        super().__init__()
        self.gather_distributed = bool(gather_distributed)
        self.backend = check_choice("backend", backend, BACKENDS)
        check_choice("distance", distance, DISTANCES)
        check_choice("reduction", reduction, REDUCTIONS)
        self.margin, self.hard, self.distance, self.reduction, self.n_jobs = margin, hard, distance, reduction, n_jobs

    def forward(self, embeddings: Any, labels: Any, *, weights: Any = None) -> Any:
        return lifted_structure_loss(embeddings, labels, self.margin, self.hard, distance=self.distance,
                                     reduction=self.reduction, weights=weights, n_jobs=self.n_jobs,
                                     gather_distributed=self.gather_distributed, backend=self.backend)

    def extra_repr(self) -> str:
        return f"margin={self.margin}, hard={self.hard}, distance={self.distance!r}, reduction={self.reduction!r}"


class MultiSimilarityLoss(_PairLoss):
    """Multi-similarity loss (Wang et al. 2019) on cosine similarities (see :func:`multi_similarity_loss`)."""

    def __init__(self, alpha: float = 2.0, beta: float = 50.0, base: float = 0.5, *, reduction: str = "mean",
                 n_jobs: Optional[int] = None, gather_distributed: bool = False, backend: str = "auto") -> None:
        super().__init__()
        self.gather_distributed = bool(gather_distributed)
        self.backend = check_choice("backend", backend, BACKENDS)
        check_choice("reduction", reduction, REDUCTIONS)
        self.alpha, self.beta, self.base, self.reduction, self.n_jobs = alpha, beta, base, reduction, n_jobs

    def forward(self, embeddings: Any, labels: Any = None, indices_tuple: Any = None, ref_emb: Any = None,
                ref_labels: Any = None, *, weights: Any = None, ref_embeddings: Any = None) -> Any:
        return self._call(
            lambda e, l, **k: multi_similarity_loss(e, l, self.alpha, self.beta, self.base, reduction=self.reduction, **k),
            embeddings, labels, indices_tuple, ref_emb, ref_labels, weights, ref_embeddings)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, beta={self.beta}, base={self.base}, reduction={self.reduction!r}"


class CircleLoss(_PairLoss):
    """Circle loss (Sun et al. 2020) on cosine similarities (see :func:`circle_loss`)."""

    def __init__(self, m: float = 0.4, gamma: float = 80.0, *, reduction: str = "mean", n_jobs: Optional[int] = None, gather_distributed: bool = False, backend: str = "auto") -> None:
        super().__init__()
        self.gather_distributed = bool(gather_distributed)
        self.backend = check_choice("backend", backend, BACKENDS)
        check_choice("reduction", reduction, REDUCTIONS)
        self.m, self.gamma, self.reduction, self.n_jobs = m, gamma, reduction, n_jobs

    def forward(self, embeddings: Any, labels: Any = None, indices_tuple: Any = None, ref_emb: Any = None,
                ref_labels: Any = None, *, weights: Any = None, ref_embeddings: Any = None) -> Any:
        return self._call(lambda e, l, **k: circle_loss(e, l, self.m, self.gamma, reduction=self.reduction, **k),
                          embeddings, labels, indices_tuple, ref_emb, ref_labels, weights, ref_embeddings)

    def extra_repr(self) -> str:
        return f"m={self.m}, gamma={self.gamma}, reduction={self.reduction!r}"
