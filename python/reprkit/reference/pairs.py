"""Pure-torch pair and triplet losses: the test oracle (non-CPU tensors run :mod:`reprkit.losses._pairs_chunked`).

Written for clarity: they build the full B×M distance or similarity matrix and
let autograd differentiate it. Each dense loss has a ``*_terms`` function that
returns the per-anchor values and counts the Rust kernels return (``per``,
``cnt``; the mean is Σper/Σcnt), and a public function that reduces them
exactly as :mod:`reprkit.losses.pairs` does. Inputs are assumed validated:
float tensors, int64 labels on the same device; for ``distance="cosine"`` the
rows are already L2-normalised (see :func:`prepare`).
"""

from __future__ import annotations

from typing import Any, Optional, Tuple

from .._torch import require_torch
from .distances import pairwise_distances

torch = require_torch()
F = torch.nn.functional

# Anchors per chunk in the "all"/"batch_all" triplet sums: chunk × M × M entries at once.
_TRIPLET_CHUNK_ENTRIES = 1 << 24


def prepare(x: Any, distance: str) -> Any:
    """Rows as the kernels see them: unit rows for ``"cosine"``, unchanged otherwise."""
    return F.normalize(x, dim=1) if distance == "cosine" else x


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


def _sqrt0(d2: Any) -> Any:
    pos = d2 > 0
    # Double where: the gradient of sqrt at 0 is taken as 0, never NaN.
    return torch.where(pos, torch.where(pos, d2, torch.ones_like(d2)).sqrt(), torch.zeros_like(d2))


def _dist(x: Any, ref: Optional[Any], distance: Any) -> Any:
    """d(x_i, r_j): Euclidean D, D², or ½D² (= 1 − cos on unit rows). ``distance`` True/False = old ``squared``."""
    if distance is True:
        distance = "sqeuclidean"
    elif distance is False:
        distance = "euclidean"
    d2 = pairwise_distances(x, ref, "sqeuclidean")
    if distance == "sqeuclidean":
        return d2
    if distance == "cosine":
        return 0.5 * d2
    return _sqrt0(d2)


def tuple_dist(x: Any, r: Any, i: Any, j: Any, distance: str) -> Any:
    """d(x_i, r_j) for index vectors, computed directly from the rows."""
    d2 = ((x[i] - r[j]) ** 2).sum(1)
    if distance == "sqeuclidean":
        return d2
    if distance == "cosine":
        return 0.5 * d2
    return _sqrt0(d2)


def _masks(labels: Any, ref_labels: Optional[Any]) -> Tuple[Any, Any]:
    same = ref_labels is None
    rl = labels if same else ref_labels
    eq = labels[:, None] == rl[None, :]
    pos = eq.clone()
    if same:
        pos.fill_diagonal_(False)
    return pos, ~eq


def reduce(per: Any, cnt: Any, reduction: str = "mean", weights: Optional[Any] = None) -> Any:
    """``"none"``: per (times weights); ``"sum"``: Σ w·per; ``"mean"``: Σ w·per / Σ w·cnt (0 when that is 0)."""
    if weights is not None:
        per, cnt = per * weights, cnt * weights
    if reduction == "none":
        return per
    s = per.sum()
    if reduction == "sum":
        return s
    c = cnt.sum()
    return torch.where(c > 0, s / torch.where(c > 0, c, torch.ones_like(c)), s * 0.0)


# ----------------------------------------------------------------- contrastive


def contrastive_terms(x: Any, labels: Any, margin: float, r: Optional[Any] = None, rl: Optional[Any] = None, distance: str = "euclidean"):
    """Pair loss ℓ_ij = d² (same label) or max(0, margin − d)²; per_i = ½Σ_{j≠i} ℓ_ij (Σ_j ℓ_ij with refs)."""
    same = r is None
    d = _dist(x, r, distance)
    eq = labels[:, None] == (labels if same else rl)[None, :]
    per_pair = torch.where(eq, d * d, F.relu(margin - d) ** 2)
    if same:
        n = x.shape[0]
        per_pair = per_pair * (1.0 - torch.eye(n, dtype=x.dtype, device=x.device))
        return 0.5 * per_pair.sum(1), torch.full((n,), 0.5 * (n - 1), dtype=x.dtype, device=x.device)
    return per_pair.sum(1), torch.full((x.shape[0],), float(r.shape[0]), dtype=x.dtype, device=x.device)


def contrastive_loss(
    embeddings: Any, labels: Any, margin: float = 1.0, ref_embeddings: Optional[Any] = None, ref_labels: Optional[Any] = None,
    distance: str = "euclidean", reduction: str = "mean", weights: Optional[Any] = None,
) -> Any:
    """Mean over pairs of d² (same label) or max(0, margin − d)² (different labels)."""
    x, r = prepare(embeddings, distance), None if ref_embeddings is None else prepare(ref_embeddings, distance)
    per, cnt = contrastive_terms(x, labels, margin, r, ref_labels, distance)
    return reduce(per, cnt, reduction, weights)


def pair_tuple_terms(x: Any, r: Optional[Any], a1: Any, p: Any, a2: Any, n: Any, margin: float, distance: str) -> Any:
    """Contrastive values of given pairs: [d² of each positive pair] ++ [max(0, margin − d)² of each negative pair]."""
    r = x if r is None else r
    dp = tuple_dist(x, r, a1, p, distance)
    dn = tuple_dist(x, r, a2, n, distance)
    return torch.cat([dp * dp, F.relu(margin - dn) ** 2])


# ----------------------------------------------------------------- triplet


def _triplet_chunks(dist: Any, pos: Any, neg: Any):
    """Yields (a0, z = d(a,p) − d(a,n) as (c, M, M), valid mask) for chunks of anchors."""
    b, m = dist.shape
    step = max(1, _TRIPLET_CHUNK_ENTRIES // max(1, m * m))
    for a0 in range(0, b, step):
        a1 = min(b, a0 + step)
        z = dist[a0:a1, :, None] - dist[a0:a1, None, :]
        yield a0, z, pos[a0:a1, :, None] & neg[a0:a1, None, :]


def triplet_terms(
    x: Any, labels: Any, margin: float, mining: str, distance: str = "euclidean", soft: bool = False,
    r: Optional[Any] = None, rl: Optional[Any] = None,
):
    """Per-anchor sums of ℓ = max(0, d_ap − d_an + margin) (softplus if ``soft``) and counts.

    all: every valid triplet counts; batch_all: those with ℓ > 0 (all when soft);
    batch_hard: the anchor's one mined triplet; semi_hard: one per positive pair.
    """
    from .mining import mine_batch_hard, mine_semi_hard

    h = F.softplus if soft else F.relu
    dist = _dist(x, r, distance)
    b = x.shape[0]
    if mining in ("batch_hard", "semi_hard"):
        miner = mine_batch_hard if mining == "batch_hard" else mine_semi_hard
        a, p, n = miner(x, labels, distance, r, rl)
        v = h(dist[a, p] - dist[a, n] + margin)
        per = torch.zeros(b, dtype=x.dtype, device=x.device).index_add(0, a, v)
        cnt = torch.zeros(b, dtype=x.dtype, device=x.device).index_add(0, a, torch.ones_like(v))
        return per, cnt
    pos, neg = _masks(labels, rl)
    pers, cnts = [], []
    for _, z, valid in _triplet_chunks(dist, pos, neg):
        v = h(z + margin) * valid
        pers.append(v.sum((1, 2)))
        counted = valid if (mining == "all" or soft) else valid & (v > 0)
        cnts.append(counted.sum((1, 2)).to(x.dtype))
    return torch.cat(pers), torch.cat(cnts)


def triplet_margin_loss(
    embeddings: Any, labels: Any, margin: float = 0.2, mining: str = "all", squared: bool = True, soft: bool = False,
    ref_embeddings: Optional[Any] = None, ref_labels: Optional[Any] = None, distance: Optional[str] = None,
    reduction: str = "mean", weights: Optional[Any] = None,
) -> Any:
    """max(0, d(a,p) − d(a,n) + margin) (softplus when ``soft``) over the mined triplets."""
    distance = distance or ("sqeuclidean" if squared else "euclidean")
    x, r = prepare(embeddings, distance), None if ref_embeddings is None else prepare(ref_embeddings, distance)
    per, cnt = triplet_terms(x, labels, margin, mining, distance, soft, r, ref_labels)
    return reduce(per, cnt, reduction, weights)


def triplet_tuple_terms(x: Any, r: Optional[Any], a: Any, p: Any, n: Any, margin: float, distance: str, soft: bool) -> Any:
    """ℓ of each given triplet."""
    r = x if r is None else r
    z = tuple_dist(x, r, a, p, distance) - tuple_dist(x, r, a, n, distance) + margin
    return F.softplus(z) if soft else F.relu(z)


# ----------------------------------------------------------------- lifted


def lifted_terms(x: Any, labels: Any, margin: float = 1.0, hard: bool = False, distance: str = "euclidean"):
    """per_i = ½ Σ_{j: (i,j) positive} max(0, J_ij)², cnt_i = #positives of i (so Σper/Σcnt = 1/(2|P|) Σ_P ...)."""
    dd = _dist(x, None, distance)
    pos, neg = _masks(labels, None)
    has_neg = neg.any(1)
    a = torch.where(neg, margin - dd, torch.full_like(dd, float("-inf")))
    a = torch.where(has_neg[:, None], a, torch.zeros_like(a))  # rows without negatives: kept finite, masked below
    l_row = a.max(1).values if hard else torch.logsumexp(a, 1)
    l_row = torch.where(has_neg, l_row, torch.full_like(l_row, float("-inf")))
    ok = pos & (has_neg[:, None] | has_neg[None, :])
    zero = torch.zeros_like(dd)
    li = torch.where(ok, l_row[:, None].expand_as(dd), zero)
    lj = torch.where(ok, l_row[None, :].expand_as(dd), zero)
    if hard:
        # Ties between the two sides go to the lower index (as the kernel's nested max).
        z = torch.maximum(li, lj)
    else:
        z = torch.logaddexp(li, lj)
    j = torch.where(ok, dd + z, zero)
    per = 0.5 * (F.relu(j) ** 2).sum(1)
    return per, pos.sum(1).to(x.dtype)


def lifted_structure_loss(
    embeddings: Any, labels: Any, margin: float = 1.0, hard: bool = False, distance: str = "euclidean",
    reduction: str = "mean", weights: Optional[Any] = None,
) -> Any:
    """L = 1/(2|P|) Σ_{i<j positive} max(0, d_ij + logaddexp(l_i, l_j))², l_i = log Σ_{k∈N(i)} e^{margin−d_ik}."""
    per, cnt = lifted_terms(prepare(embeddings, distance), labels, margin, hard, distance)
    return reduce(per, cnt, reduction, weights)


# ----------------------------------------------------------------- similarity-based pair losses (cosine)


def _lse1(z: Any, mask: Any) -> Any:
    """log(1 + Σ_{mask} e^z) per row."""
    zz = torch.where(mask, z, torch.full_like(z, float("-inf")))
    zz = torch.cat([zz, torch.zeros_like(zz[:, :1])], 1)
    return torch.logsumexp(zz, 1)


def _lse(z: Any, mask: Any) -> Any:
    """log Σ_{mask} e^z per row (−∞ for an empty row)."""
    return torch.logsumexp(torch.where(mask, z, torch.full_like(z, float("-inf"))), 1)


def _pair_masks(n_rows: int, m: int, a1: Any, p: Any, a2: Any, n: Any, device: Any) -> Tuple[Any, Any]:
    """Count matrices of given pairs (duplicates counted as given)."""
    pos = torch.zeros(n_rows, m, device=device)
    neg = torch.zeros(n_rows, m, device=device)
    pos.index_put_((a1, p), torch.ones_like(a1, dtype=pos.dtype), accumulate=True)
    neg.index_put_((a2, n), torch.ones_like(a2, dtype=neg.dtype), accumulate=True)
    return pos, neg


def _weighted_lse(z: Any, count: Any, add_one: bool) -> Any:
    """log([1 +] Σ_j count_ij e^{z_ij}) per row."""
    zz = torch.where(count > 0, z + torch.log(torch.where(count > 0, count, torch.ones_like(count))), torch.full_like(z, float("-inf")))
    if add_one:
        zz = torch.cat([zz, torch.zeros_like(zz[:, :1])], 1)
    return torch.logsumexp(zz, 1)


def multi_similarity_terms(
    x: Any, labels: Optional[Any], alpha: float = 2.0, beta: float = 50.0, base: float = 0.5, r: Optional[Any] = None,
    rl: Optional[Any] = None, pairs: Optional[Tuple[Any, Any, Any, Any]] = None,
):
    """per_i = 1/α log(1 + Σ_P e^{−α(S_ip − base)}) + 1/β log(1 + Σ_N e^{β(S_in − base)}), S = cosine; cnt_i = 1."""
    s = x @ (x if r is None else r).T
    if pairs is None:
        pos, neg = _masks(labels, rl)
        pos, neg = pos.to(s.dtype), neg.to(s.dtype)
    else:
        pos, neg = _pair_masks(x.shape[0], s.shape[1], *pairs, s.device)
        pos, neg = pos.to(s.dtype), neg.to(s.dtype)
    per = _weighted_lse(-alpha * (s - base), pos, True) / alpha + _weighted_lse(beta * (s - base), neg, True) / beta
    return per, torch.ones_like(per)


def circle_terms(
    x: Any, labels: Optional[Any], m: float = 0.4, gamma: float = 80.0, r: Optional[Any] = None, rl: Optional[Any] = None,
    pairs: Optional[Tuple[Any, Any, Any, Any]] = None,
):
    """Circle loss per anchor (α's detached, as in the paper's code); cnt_i = [per_i > 0]."""
    s = x @ (x if r is None else r).T
    if pairs is None:
        pos, neg = _masks(labels, rl)
        pos, neg = pos.to(s.dtype), neg.to(s.dtype)
    else:
        pos, neg = _pair_masks(x.shape[0], s.shape[1], *pairs, s.device)
        pos, neg = pos.to(s.dtype), neg.to(s.dtype)
    sd = s.detach()
    lp = -gamma * F.relu(1 + m - sd) * (s - (1 - m))
    ln = gamma * F.relu(sd + m) * (s - m)
    ok = (pos.sum(1) > 0) & (neg.sum(1) > 0)
    lsp = _weighted_lse(torch.where(pos > 0, lp, torch.zeros_like(lp)), pos, False)
    lsn = _weighted_lse(torch.where(neg > 0, ln, torch.zeros_like(ln)), neg, False)
    z = torch.where(ok, lsp + lsn, torch.zeros_like(lsp))
    per = torch.where(ok, F.softplus(z), torch.zeros_like(z))
    return per, (per > 0).to(per.dtype)


def multi_similarity_loss(
    embeddings: Any, labels: Any, alpha: float = 2.0, beta: float = 50.0, base: float = 0.5, ref_embeddings: Optional[Any] = None,
    ref_labels: Optional[Any] = None, reduction: str = "mean", weights: Optional[Any] = None,
) -> Any:
    """Multi-similarity loss (Wang et al. 2019) on cosine similarities, mean over anchors."""
    x = F.normalize(embeddings, dim=1)
    r = None if ref_embeddings is None else F.normalize(ref_embeddings, dim=1)
    return reduce(*multi_similarity_terms(x, labels, alpha, beta, base, r, ref_labels), reduction, weights)


def circle_loss(
    embeddings: Any, labels: Any, m: float = 0.4, gamma: float = 80.0, ref_embeddings: Optional[Any] = None,
    ref_labels: Optional[Any] = None, reduction: str = "mean", weights: Optional[Any] = None,
) -> Any:
    """Circle loss (Sun et al. 2020) on cosine similarities, mean over anchors with a non-zero loss."""
    x = F.normalize(embeddings, dim=1)
    r = None if ref_embeddings is None else F.normalize(ref_embeddings, dim=1)
    return reduce(*circle_terms(x, labels, m, gamma, r, ref_labels), reduction, weights)
