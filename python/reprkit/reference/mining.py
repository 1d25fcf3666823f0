"""Pure-torch triplet miners: the any-device (CUDA) path and the test oracle.

Written for clarity: they build the full distance or similarity matrix and let
autograd differentiate it. They follow exactly the formulas and conventions of
the Rust kernels (see :mod:`reprkit.losses` for the documented formulas).
Inputs are assumed validated: float tensors, int64 labels on the same device.
"""

from __future__ import annotations

from typing import Any, Optional, Tuple

from .._torch import require_torch
from .pairs import _dist, _masks, _triplet_chunks

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

