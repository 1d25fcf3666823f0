"""Pure-torch losses and miners: the any-device (CUDA) path and the test oracle.

Written for clarity: they build the B×M distance or similarity matrix and let
autograd differentiate it. They follow exactly the formulas and conventions of
the Rust kernels (see :mod:`reprkit.functional` for the documented formulas).
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


def _triplet_chunks(dist: Any, pos: Any, neg: Any):
    """Yields (a0, z = d(a,p) − d(a,n) as (c, M, M), valid mask) for chunks of anchors."""
    b, m = dist.shape
    step = max(1, _TRIPLET_CHUNK_ENTRIES // max(1, m * m))
    for a0 in range(0, b, step):
        a1 = min(b, a0 + step)
        z = dist[a0:a1, :, None] - dist[a0:a1, None, :]
        yield a0, z, pos[a0:a1, :, None] & neg[a0:a1, None, :]


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


def npair_loss(anchors: Any, positives: Any, l2_reg: float = 0.0) -> Any:
    """1/N Σ_i log(1 + Σ_{j≠i} exp(a_i·p_j − a_i·p_i)) + l2_reg·(mean‖a_i‖² + mean‖p_i‖²)."""
    s = anchors @ positives.T
    loss = F.cross_entropy(s, torch.arange(s.shape[0], device=s.device))
    if l2_reg:
        loss = loss + l2_reg * ((anchors**2).sum(1).mean() + (positives**2).sum(1).mean())
    return loss


def ntxent_loss(z1: Any, z2: Any, temperature: float = 0.1) -> Any:
    """SimCLR: −log softmax of each view's partner over the other 2N−1 views, s = cos/τ; mean over 2N."""
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    n = z1.shape[0]
    s = (z @ z.T) / temperature
    eye = torch.eye(2 * n, dtype=torch.bool, device=z.device)
    s = s.masked_fill(eye, float("-inf"))
    idx = torch.arange(n, device=z.device)
    return F.cross_entropy(s, torch.cat([idx + n, idx]))


def infonce_loss(query: Any, positive_key: Any, negative_keys: Optional[Any] = None, temperature: float = 0.1) -> Any:
    """−log softmax of q·k⁺ against the negatives (other rows' keys, or the queue), unit vectors, /τ."""
    q = F.normalize(query, dim=1)
    k = F.normalize(positive_key, dim=1)
    if negative_keys is None:
        logits = q @ k.T
        target = torch.arange(q.shape[0], device=q.device)
    else:
        nk = F.normalize(negative_keys, dim=1)
        logits = torch.cat([(q * k).sum(1, keepdim=True), q @ nk.T], 1)
        target = torch.zeros(q.shape[0], dtype=torch.long, device=q.device)
    return F.cross_entropy(logits / temperature, target)
