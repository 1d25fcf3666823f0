"""Standalone triplet miners: ``(anchors, positives, negatives)`` LongTensors.

Every miner takes ``(embeddings, labels, ..., squared=False, ref_embeddings=None,
ref_labels=None)``; d = D (Euclidean) or D² when ``squared``. Without references
positives and negatives come from the batch (a ≠ p); with references they are
indices into ``ref_embeddings``. Output order: by anchor, then positive, then
negative. Ties (equal distances) always go to the lowest index. CPU tensors
run the Rust kernel, other devices the pure-torch reference. Mining is not
differentiable (indices only).
"""

from __future__ import annotations

from typing import Any, Optional, Tuple

from .._threads import resolve_n_jobs
from .._torch import require_torch
from . import _inputs as V

torch = require_torch()

__all__ = ["batch_hard", "batch_all", "semi_hard"]

Triplets = Tuple[Any, Any, Any]


def _prep(embeddings: Any, labels: Any, ref_embeddings: Any, ref_labels: Any):
    x = V.check_embeddings(embeddings, "embeddings")
    y = V.check_labels(labels, x.shape[0], x.device)
    r, ry = V.check_refs(x, y, ref_embeddings, ref_labels)
    x, r = V.common_dtype(x.detach(), None if r is None else r.detach())
    return x, y, r, ry


def _rust(kind: str, x: Any, y: Any, r: Any, ry: Any, margin: float, squared: bool, n_jobs: Optional[int]) -> Triplets:
    from .. import _core
    from .._bridge import as_numpy

    t = _core.mine_triplets(
        as_numpy(x), V.labels_np(y), None if r is None else as_numpy(r), V.labels_np(ry), kind, margin, bool(squared),
        resolve_n_jobs(n_jobs),
    )
    t = torch.from_numpy(t)
    return t[:, 0], t[:, 1], t[:, 2]


def batch_hard(
    embeddings: Any, labels: Any, squared: bool = False, ref_embeddings: Any = None, ref_labels: Any = None,
    *, n_jobs: Optional[int] = None,
) -> Triplets:
    """Per anchor that has a positive and a negative: the farthest positive
    (argmax d(a,p)) and the nearest negative (argmin d(a,n)) — Hermans et al. 2017."""
    x, y, r, ry = _prep(embeddings, labels, ref_embeddings, ref_labels)
    if x.device.type == "cpu":
        return _rust("batch_hard", x, y, r, ry, 0.0, squared, n_jobs)
    from ..reference import mining as ref

    return ref.mine_batch_hard(x, y, squared, r, ry)


def batch_all(
    embeddings: Any, labels: Any, margin: float = 0.2, squared: bool = False, ref_embeddings: Any = None,
    ref_labels: Any = None, *, n_jobs: Optional[int] = None,
) -> Triplets:
    """Every valid triplet with a positive loss: d(a,p) − d(a,n) + margin > 0."""
    margin = V.check_finite_number("margin", margin)
    x, y, r, ry = _prep(embeddings, labels, ref_embeddings, ref_labels)
    if x.device.type == "cpu":
        return _rust("batch_all", x, y, r, ry, margin, squared, n_jobs)
    from ..reference import mining as ref

    return ref.mine_batch_all(x, y, margin, squared, r, ry)


def semi_hard(
    embeddings: Any, labels: Any, margin: Optional[float] = None, squared: bool = False, ref_embeddings: Any = None,
    ref_labels: Any = None, *, n_jobs: Optional[int] = None,
) -> Triplets:
    """Per positive pair (a, p) of an anchor with negatives: the nearest negative
    with d(a,n) > d(a,p); if there is none, the farthest negative (FaceNet).

    With a ``margin``, only the triplets with d(a,n) < d(a,p) + margin are kept
    (those with a non-zero hinge loss).
    """
    if margin is not None:
        margin = V.check_finite_number("margin", margin)
    x, y, r, ry = _prep(embeddings, labels, ref_embeddings, ref_labels)
    if x.device.type == "cpu":
        a, p, n = _rust("semi_hard", x, y, r, ry, 0.0, squared, n_jobs)
    else:
        from ..reference import mining as ref

        a, p, n = ref.mine_semi_hard(x, y, squared, r, ry)
    if margin is not None and a.numel():
        rr = x if r is None else r
        dp = ((x[a] - rr[p]) ** 2).sum(1)
        dn = ((x[a] - rr[n]) ** 2).sum(1)
        if not squared:
            dp, dn = dp.sqrt(), dn.sqrt()
        keep = dp - dn + margin > 0
        a, p, n = a[keep], p[keep], n[keep]
    return a, p, n
