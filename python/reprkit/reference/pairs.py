"""Pure-torch pair and triplet losses: the any-device (CUDA) path and the test oracle.

Written for clarity: they build the full distance or similarity matrix and let
autograd differentiate it. They follow exactly the formulas and conventions of
the Rust kernels (see :mod:`reprkit.losses` for the documented formulas).
Inputs are assumed validated: float tensors, int64 labels on the same device.
"""

from __future__ import annotations

from typing import Any, Optional, Tuple

from .._torch import require_torch
from .distances import pairwise_distances

torch = require_torch()
F = torch.nn.functional

# Anchors per chunk in the "all"/"batch_all" triplet sums: chunk × M × M entries at once.
_TRIPLET_CHUNK_ENTRIES = 1 << 24


def _zero(*tensors: Any) -> Any:
    """A zero loss still attached to the graph of every input (backward gives zeros)."""
    out = None
    for t in tensors:
        if t is not None and t.requires_grad:
            z = t.sum() * 0.0
            out = z if out is None else out + z
    if out is None:
        t0 = next(t for t in tensors if t is not None)
        out = torch.zeros((), dtype=t0.dtype, device=t0.device)
    return out


def _dist(x: Any, ref: Optional[Any], squared: bool) -> Any:
    d2 = pairwise_distances(x, ref, "sqeuclidean")
    if squared:
        return d2
    pos = d2 > 0
    # Double where: the gradient of sqrt at 0 is taken as 0, never NaN.
    return torch.where(pos, torch.where(pos, d2, torch.ones_like(d2)).sqrt(), torch.zeros_like(d2))


def _masks(labels: Any, ref_labels: Optional[Any]) -> Tuple[Any, Any]:
    same = ref_labels is None
    rl = labels if same else ref_labels
    eq = labels[:, None] == rl[None, :]
    pos = eq.clone()
    if same:
        pos.fill_diagonal_(False)
    return pos, ~eq


def _triplet_chunks(dist: Any, pos: Any, neg: Any):
    """Yields (a0, z = d(a,p) − d(a,n) as (c, M, M), valid mask) for chunks of anchors."""
    b, m = dist.shape
    step = max(1, _TRIPLET_CHUNK_ENTRIES // max(1, m * m))
    for a0 in range(0, b, step):
        a1 = min(b, a0 + step)
        z = dist[a0:a1, :, None] - dist[a0:a1, None, :]
        yield a0, z, pos[a0:a1, :, None] & neg[a0:a1, None, :]


def contrastive_loss(
    embeddings: Any, labels: Any, margin: float = 1.0, ref_embeddings: Optional[Any] = None, ref_labels: Optional[Any] = None
) -> Any:
    """Mean over pairs of D² (same label) or max(0, margin − D)² (different labels)."""
    same = ref_embeddings is None
    d2 = _dist(embeddings, ref_embeddings, True)
    dd = _dist(embeddings, ref_embeddings, False)
    eq = labels[:, None] == (labels if same else ref_labels)[None, :]
    per = torch.where(eq, d2, F.relu(margin - dd) ** 2)
    mask = torch.ones_like(eq)
    if same:
        mask = torch.triu(mask, diagonal=1)
    count = int(mask.sum())
    if count == 0:
        return _zero(embeddings, ref_embeddings)
    return (per * mask).sum() / count


def triplet_margin_loss(
    embeddings: Any,
    labels: Any,
    margin: float = 0.2,
    mining: str = "all",
    squared: bool = True,
    soft: bool = False,
    ref_embeddings: Optional[Any] = None,
    ref_labels: Optional[Any] = None,
) -> Any:
    """max(0, d(a,p) − d(a,n) + margin) (softplus when ``soft``) over the mined triplets."""
    h = F.softplus if soft else F.relu
    dist = _dist(embeddings, ref_embeddings, squared)
    if mining in ("batch_hard", "semi_hard"):
        from .mining import mine_batch_hard, mine_semi_hard

        miner = mine_batch_hard if mining == "batch_hard" else mine_semi_hard
        a, p, n = miner(embeddings, labels, squared, ref_embeddings, ref_labels)
        if a.numel() == 0:
            return _zero(embeddings, ref_embeddings)
        return h(dist[a, p] - dist[a, n] + margin).mean()
    pos, neg = _masks(labels, ref_labels)
    total, count = None, 0
    for _, z, valid in _triplet_chunks(dist, pos, neg):
        per = h(z + margin) * valid
        total = per.sum() if total is None else total + per.sum()
        count += int(valid.sum()) if (mining == "all" or soft) else int((valid & (per > 0)).sum())
    if count == 0:
        return _zero(embeddings, ref_embeddings)
    return total / count


def lifted_structure_loss(embeddings: Any, labels: Any, margin: float = 1.0, hard: bool = False) -> Any:
    """L = 1/(2|P|) Σ_{i<j positive} max(0, D_ij + logaddexp(l_i, l_j))², l_i = log Σ_{k∈N(i)} e^{margin−D_ik}."""
    dd = _dist(embeddings, None, False)
    pos, neg = _masks(labels, None)
    pos_u = torch.triu(pos, diagonal=1)
    n_pairs = int(pos_u.sum())
    if n_pairs == 0:
        return _zero(embeddings)
    has_neg = neg.any(1)
    a = torch.where(neg, margin - dd, torch.full_like(dd, float("-inf")))
    a = torch.where(has_neg[:, None], a, torch.zeros_like(a))  # rows without negatives: kept finite, masked below
    l_row = a.max(1).values if hard else torch.logsumexp(a, 1)
    ninf = torch.full_like(l_row, float("-inf"))
    l_row = torch.where(has_neg, l_row, ninf)
    ok = pos_u & (has_neg[:, None] | has_neg[None, :])
    zero = torch.zeros_like(dd)
    li = torch.where(ok, l_row[:, None].expand_as(dd), zero)
    lj = torch.where(ok, l_row[None, :].expand_as(dd), zero)
    z = torch.maximum(li, lj) if hard else torch.logaddexp(li, lj)
    j = torch.where(ok, dd + z, zero)
    return (F.relu(j) ** 2).sum() / (2 * n_pairs)

