"""Pure-torch triplet miners: the any-device (CUDA) path and the test oracle.

Written for clarity: they build the full distance or similarity matrix and let
autograd differentiate it. They follow exactly the formulas and conventions of
the Rust kernels (see :mod:`reprkit.losses` for the documented formulas).
Inputs are assumed validated: float tensors, int64 labels on the same device.
"""

from __future__ import annotations

from typing import Any, Optional, Tuple

from .._torch import require_torch
from .pairs import F, _dist, _masks, _triplet_chunks

torch = require_torch()


def mine_batch_hard(embeddings: Any, labels: Any, squared: bool = False, ref_embeddings: Any = None, ref_labels: Any = None) -> Tuple[Any, Any, Any]:
    """Per anchor with a positive and a negative: farthest positive, nearest negative (ties → lowest index)."""
    with torch.no_grad():
        dist = _dist(embeddings, ref_embeddings, squared)
        pos, neg = _masks(labels, ref_labels)
        ok = pos.any(1) & neg.any(1)
        inf = torch.tensor(float("inf"), dtype=dist.dtype, device=dist.device)
        p = torch.where(pos, dist, -inf).argmax(1)
        n = torch.where(neg, dist, inf).argmin(1)
        a = torch.arange(dist.shape[0], device=dist.device)
        return a[ok], p[ok], n[ok]


def mine_semi_hard(embeddings: Any, labels: Any, squared: bool = False, ref_embeddings: Any = None, ref_labels: Any = None) -> Tuple[Any, Any, Any]:
    """Per positive pair (a, p): nearest negative with d(a,n) > d(a,p), else the farthest negative (ties → lowest index)."""
    with torch.no_grad():
        dist = _dist(embeddings, ref_embeddings, squared)
        pos, neg = _masks(labels, ref_labels)
        pos = pos & neg.any(1, keepdim=True)
        a, p = pos.nonzero(as_tuple=True)
        rows, negs = dist[a], neg[a]
        inf = torch.tensor(float("inf"), dtype=dist.dtype, device=dist.device)
        semi = negs & (rows > dist[a, p][:, None])
        nearest = torch.where(semi, rows, inf).argmin(1)
        farthest = torch.where(negs, rows, -inf).argmax(1)
        return a, p, torch.where(semi.any(1), nearest, farthest)


def mine_batch_all(
    embeddings: Any, labels: Any, margin: float = 0.2, squared: bool = False, ref_embeddings: Any = None, ref_labels: Any = None
) -> Tuple[Any, Any, Any]:
    """Every valid triplet with d(a,p) − d(a,n) + margin > 0, in (a, p, n) lexicographic order."""
    with torch.no_grad():
        dist = _dist(embeddings, ref_embeddings, squared)
        pos, neg = _masks(labels, ref_labels)
        out = []
        for a0, z, valid in _triplet_chunks(dist, pos, neg):
            a, p, n = (valid & (z + margin > 0)).nonzero(as_tuple=True)
            out.append(torch.stack([a + a0, p, n]))
        t = torch.cat(out, 1) if out else torch.zeros((3, 0), dtype=torch.long, device=dist.device)
        return t[0], t[1], t[2]



def mine_triplet_margin(
    embeddings: Any, labels: Any, margin: float = 0.2, type: str = "all", distance: str = "euclidean",
    ref_embeddings: Any = None, ref_labels: Any = None,
) -> Tuple[Any, Any, Any]:
    """PML's TripletMarginMiner: valid triplets with t = d_an − d_ap; "all": t ≤ margin, "hard": t ≤ min(0, margin)
    (t ≤ margin and t ≤ 0), "semihard": 0 < t ≤ margin, "easy": t > margin. (a, p, n) lexicographic order."""
    with torch.no_grad():
        dist = _dist(embeddings, ref_embeddings, distance)
        pos, neg = _masks(labels, ref_labels)
        out = []
        for a0, z, valid in _triplet_chunks(dist, pos, neg):
            t = -z  # d_an − d_ap
            if type == "easy":
                keep = t > margin
            else:
                keep = t <= margin
                if type == "hard":
                    keep = keep & (t <= 0)
                elif type == "semihard":
                    keep = keep & (t > 0)
            a, p, n = (valid & keep).nonzero(as_tuple=True)
            out.append(torch.stack([a + a0, p, n]))
        t3 = torch.cat(out, 1) if out else torch.zeros((3, 0), dtype=torch.long, device=dist.device)
        return t3[0], t3[1], t3[2]


def _pairs_of(mask: Any) -> Tuple[Any, Any]:
    return mask.nonzero(as_tuple=True)


def mine_pair_margin(
    embeddings: Any, labels: Any, pos_margin: float = 0.2, neg_margin: float = 0.8, distance: str = "euclidean",
    ref_embeddings: Any = None, ref_labels: Any = None,
) -> Tuple[Any, Any, Any, Any]:
    """PML's PairMarginMiner: positive pairs with d > pos_margin, negative pairs with d < neg_margin."""
    with torch.no_grad():
        dist = _dist(embeddings, ref_embeddings, distance)
        pos, neg = _masks(labels, ref_labels)
        a1, p = _pairs_of(pos & (dist > pos_margin))
        a2, n = _pairs_of(neg & (dist < neg_margin))
        return a1, p, a2, n


def mine_multi_similarity(
    embeddings: Any, labels: Any, epsilon: float = 0.1, ref_embeddings: Any = None, ref_labels: Any = None
) -> Tuple[Any, Any, Any, Any]:
    """PML's MultiSimilarityMiner on cosine similarity S of unit rows: negatives with S_an + ε > min_p S_ap,
    positives with S_ap − ε < max_n S_an, for anchors with both."""
    with torch.no_grad():
        x = F.normalize(embeddings, dim=1)
        r = x if ref_embeddings is None else F.normalize(ref_embeddings, dim=1)
        s = x @ r.T
        pos, neg = _masks(labels, ref_labels)
        ok = pos.any(1) & neg.any(1)
        inf = torch.tensor(float("inf"), dtype=s.dtype, device=s.device)
        min_pos = torch.where(pos, s, inf).min(1).values
        max_neg = torch.where(neg, s, -inf).max(1).values
        hard_neg = neg & ok[:, None] & (s + epsilon > min_pos[:, None])
        hard_pos = pos & ok[:, None] & (s - epsilon < max_neg[:, None])
        a1, p = _pairs_of(hard_pos)
        a2, n = _pairs_of(hard_neg)
        return a1, p, a2, n


def distance_weighted_weights(
    embeddings: Any, labels: Any, cutoff: float = 0.5, nonzero_loss_cutoff: float = 1.4, ref_embeddings: Any = None,
    ref_labels: Any = None,
) -> Any:
    """Wu et al. 2017's sampling weights (per row, up to scale) of each negative for an anchor's positive pairs:
    q = max(d, cutoff), log w = (2 − dim)·ln q − (dim − 3)/2·ln(1 − q²/4) on unit rows; 0 for same-label pairs,
    d ≥ nonzero_loss_cutoff and non-finite log w. Rows are normalised to sum 1 (all-zero rows stay 0)."""
    with torch.no_grad():
        x = F.normalize(embeddings, dim=1)
        r = None if ref_embeddings is None else F.normalize(ref_embeddings, dim=1)
        d = _dist(x, r, "euclidean")
        dim = float(x.shape[1])
        q = d.clamp_min(cutoff)
        logw = (2.0 - dim) * torch.log(q) - ((dim - 3.0) / 2.0) * torch.log(1.0 - 0.25 * q * q)
        _, neg = _masks(labels, ref_labels)
        ok = neg & (d < nonzero_loss_cutoff) & torch.isfinite(logw)
        logw = torch.where(ok, logw, torch.full_like(logw, float("-inf")))
        mx = logw.max(1, keepdim=True).values
        w = torch.where(ok, torch.exp(logw - torch.where(torch.isfinite(mx), mx, torch.zeros_like(mx))), torch.zeros_like(logw))
        s = w.sum(1, keepdim=True)
        return torch.where(s > 0, w / torch.where(s > 0, s, torch.ones_like(s)), w)
