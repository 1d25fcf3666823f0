"""Chunked torch pair losses (any device) with recomputing backwards: memory O(chunk·M + (B + M)·d).

What non-CPU tensors run (and CPU tensors with ``backend="torch"``) for the
contrastive, triplet (all / batch_all / batch_hard / semi_hard, hinge or soft),
lifted structured, multi-similarity and circle losses. The Rust kernels' design
in torch ops: the forward walks chunks of anchor rows, builds each chunk's
chunk × M distance (or similarity) tile with the same formulas as
:mod:`reprkit.reference.pairs` (x·yᵀ with norms on centred, range-scaled rows,
cancelled entries recomputed directly, clamped, √ with zero gradient at 0) and
keeps only the inputs and O(B) per-row values. The backward rebuilds each tile,
differentiates that chunk's per-row terms with autograd (a graph of one tile),
and accumulates ∂x (and ∂refs); no B × M matrix lives longer than one chunk.

Per-row terms depend on the anchor's own tile row only, except the lifted
loss's l_j = log Σ_{k∈N(j)} e^{margin−d_jk} of the *other* side of a pair: its
forward keeps l (B,), and its backward takes ∂L/∂l in a first pass over the
tiles and sends it through each row's log-sum-exp in a second. Miners
(batch_hard, semi_hard) are re-run on the recomputed tile in backward: the tile
is the same computation on the same inputs, so the same triplets come out.

The triplet "all"/"batch_all" hinge sums never enumerate triplets: per anchor the
negatives' distances are sorted and Σ_{p,n} [t_p − d_an]₊ (t_p = d_ap + margin)
comes from prefix sums (kept in float64). The soft (softplus) form has no such
shortcut and sums over (positive block × M) sub-tiles of bounded size.

Each tile's backward is a ``torch.func.vjp`` of its per-row terms, so ``torch.func.grad`` works.
``torch.compile(fullgraph=True)`` works for the similarity losses (multi-similarity, circle); the
distance losses compile with graph breaks (results equal eager): the cancelled-entry fix-up of the
distance tile has a data-dependent size (as in the reference).
"""

from __future__ import annotations

from typing import Any, Optional, Tuple

from .. import _ops
from .._ops import torch
from ..reference.distances import _CANCEL_TOL, _range_scale
from ..reference.pairs import _sqrt0, _weighted_lse
from ._chunked import chunk_rows

F = torch.nn.functional

# Tile entries per chunk: a chunk's tile and its few same-size temporaries (and,
# in backward, their autograd graph) stay within a few hundred MB in float32.
TILE_ENTRIES = 1 << 22
_LOSS = "the pair losses (chunked torch path)"


class _Geom:
    """The batch-wide constants of the reference's distance: range scale s and the (detached) mean of the rows."""

    def __init__(self, x: Any, r: Optional[Any], distance: Optional[str]) -> None:
        self.same, self.distance = r is None, distance
        if distance is None:  # similarity losses: s = x·rᵀ, nothing to precompute
            return
        y = x if r is None else r
        with torch.no_grad():
            s = _range_scale(x, y)
            both = x * s if r is None else torch.cat([x * s, y * s])
            self.s, self.mean = s, both.mean(0, keepdim=True)
        self.tol = _CANCEL_TOL.get(str(x.dtype).replace("torch.", ""), 1e-7)

    def tile(self, xc: Any, cols: Any, r0: int) -> Any:
        """Rows r0.. of d(x, refs) (or of S = x·rᵀ); differentiable in ``xc`` and ``cols``."""
        if self.distance is None:
            return xc @ cols.T
        xs, ys = xc * self.s, cols * self.s
        a, b = xs - self.mean, ys - self.mean
        nx = (a * a).sum(1, keepdim=True)
        ny = (b * b).sum(1, keepdim=True).T
        scale = nx + ny
        d2 = scale - 2.0 * (a @ b.T)
        bad = (d2 <= self.tol * scale).nonzero(as_tuple=True)
        if bad[0].numel():
            d2 = d2.index_put(bad, ((xs[bad[0]] - ys[bad[1]]) ** 2).sum(1))
        d2 = d2.clamp_min(0.0)
        if self.same:
            d2 = d2 * (1.0 - _diag(d2, r0).to(d2.dtype))
        inv = 1.0 / self.s
        d2 = d2 * inv * inv
        if self.distance == "sqeuclidean":
            return d2
        if self.distance == "cosine":
            return 0.5 * d2
        return _sqrt0(d2)


def _diag(t: Any, r0: int) -> Any:
    """True where column j is the row's own index (in-batch tiles)."""
    rows = torch.arange(t.shape[0], device=t.device) + r0
    return torch.arange(t.shape[1], device=t.device)[None, :] == rows[:, None]


def _masks(t: Any, y: Optional[Any], ry: Optional[Any], same: bool, r0: int, pairs: Optional[Tuple[Any, ...]]):
    """(pos, neg) of the tile: booleans from labels (own column excluded in-batch), or counts of given pairs."""
    c, m = t.shape
    if pairs is not None:
        a1, p, a2, n = pairs
        out = []
        for a, j in ((a1, p), (a2, n)):
            rows = a - r0
            rows = torch.where((rows >= 0) & (rows < c), rows, torch.full_like(rows, c))  # others land in a spare row
            cnt = torch.zeros(c + 1, m, dtype=t.dtype, device=t.device)
            cnt.index_put_((rows, j), torch.ones_like(rows, dtype=t.dtype), accumulate=True)
            out.append(cnt[:c])
        return out[0], out[1]
    eq = y[r0:r0 + c, None] == (y if same else ry)[None, :]
    pos = eq & ~_diag(t, r0) if same else eq
    return pos, ~eq


# ----------------------------------------------------------------- per-row terms of one tile


def _contrastive(d: Any, pos: Any, neg: Any, spec: tuple, same: bool, r0: int, state: Any):
    margin = spec[1]
    eq = ~neg
    per_pair = torch.where(eq, d * d, F.relu(margin - d) ** 2)
    m = d.shape[1]
    if same:
        per = 0.5 * (per_pair * (1.0 - _diag(d, r0).to(d.dtype))).sum(1)
        return per, torch.full_like(per, 0.5 * (m - 1))
    per = per_pair.sum(1)
    return per, torch.full_like(per, float(m))


def _batch_hard(d: Any, pos: Any, neg: Any, h: Any, margin: float):
    with torch.no_grad():
        ok = pos.any(1) & neg.any(1)
        inf = torch.tensor(float("inf"), dtype=d.dtype, device=d.device)
        p = torch.where(pos, d, -inf).argmax(1, keepdim=True)
        n = torch.where(neg, d, inf).argmin(1, keepdim=True)
    v = h(d.gather(1, p) - d.gather(1, n) + margin)[:, 0]
    zero = torch.zeros_like(v)
    return torch.where(ok, v, zero), ok.to(d.dtype)


def _sorted_negatives(d: Any, neg: Any):
    """Per row: the negatives' distances ascending (+∞ after them), their columns (stable: ties by index), count."""
    key = torch.where(neg, d, torch.full_like(d, float("inf")))
    vals, idx = torch.sort(key, dim=1, stable=True)
    return vals, idx, neg.sum(1)


def _semi_hard(d: Any, pos: Any, neg: Any, h: Any, margin: float):
    """Per positive pair (a, p): nearest negative with d_an > d_ap, else the farthest negative (ties: lowest index)."""
    with torch.no_grad():
        pos = pos & neg.any(1, keepdim=True)
        vals, idx, nn = _sorted_negatives(d, neg)
        k = torch.searchsorted(vals, d.contiguous(), right=True)  # first negative with d_an > d_ap
        semi = k < nn[:, None]
        nearest = idx.gather(1, k.clamp_max(d.shape[1] - 1))
        farthest = torch.where(neg, d, torch.full_like(d, float("-inf"))).argmax(1, keepdim=True)
        nidx = torch.where(semi, nearest, farthest.expand_as(nearest))
    v = h(d - d.gather(1, nidx) + margin)
    v = torch.where(pos, v, torch.zeros_like(v))
    return v.sum(1), pos.sum(1).to(d.dtype)


def _hinge_all(d: Any, pos: Any, neg: Any, margin: float, count_active: bool):
    """Σ_{p∈P, n∈N} [d_ap + margin − d_an]₊ = Σ_p (k_p t_p − Σ_{first k_p negatives} d_an), k_p = #{n: d_an < t_p}."""
    with torch.no_grad():
        vals, idx, nn = _sorted_negatives(d, neg)
    srt = d.gather(1, idx)
    srt = torch.where(torch.arange(d.shape[1], device=d.device)[None, :] < nn[:, None], srt, torch.zeros_like(srt))
    # Prefix sums in float64: k·t − P[k] cancels, and M can be large.
    pre = F.pad(torch.cumsum(srt.double(), 1), (1, 0))
    t = d + margin
    with torch.no_grad():
        k = torch.searchsorted(vals, t.contiguous(), right=False)
    v = k.to(torch.float64) * t.double() - pre.gather(1, k)
    v = torch.where(pos, v, torch.zeros_like(v))
    per = v.sum(1).to(d.dtype)
    if count_active:
        cnt = torch.where(pos, k, torch.zeros_like(k)).sum(1)
    else:
        cnt = pos.sum(1) * nn
    return per, cnt.to(d.dtype)


class _SoftAll(torch.autograd.Function):
    """Σ_{p∈P, n∈N} softplus(d_ap − d_an + margin) per row, over (rows × positive block × M) sub-tiles.

    Only the rows' positive columns are visited (gathered into a rows × max|P| block), so the work is
    Σ_a |P(a)|·M, not M² per anchor; σ(z) is recomputed in backward.
    """

    @staticmethod
    def forward(d: Any, pos: Any, neg: Any, margin: float) -> Any:  # type: ignore[override]
        pidx = _positive_columns(pos)
        per = torch.zeros(d.shape[0], dtype=d.dtype, device=d.device)
        for _, _, z, valid in _soft_blocks(d, pos, neg, pidx, margin):
            per += (F.softplus(z) * valid).sum((1, 2))
        return per, pidx

    @staticmethod
    def setup_context(ctx: Any, inputs: Any, output: Any) -> None:
        d, pos, neg, margin = inputs
        ctx.save_for_backward(d, pos, neg, output[1])
        ctx.margin = margin
        ctx.mark_non_differentiable(output[1])

    @staticmethod
    def backward(ctx: Any, g: Any, _: Any) -> Any:  # type: ignore[override]
        d, pos, neg, pidx = ctx.saved_tensors
        gd = torch.zeros_like(d)
        for j0, j1, z, valid in _soft_blocks(d, pos, neg, pidx, ctx.margin):
            w = torch.sigmoid(z) * valid * g[:, None, None]
            gd.scatter_add_(1, pidx[:, j0:j1], w.sum(2))
            gd -= w.sum(1)
        return gd, None, None, None


def _positive_columns(pos: Any) -> Any:
    """Per row, its positive columns first (rows × max |P|; padding columns are masked out by ``pos``)."""
    k = int(pos.sum(1).max()) if pos.numel() else 0
    return torch.argsort(pos.to(torch.int8), dim=1, descending=True, stable=True)[:, :k]


def _soft_blocks(d: Any, pos: Any, neg: Any, pidx: Any, margin: float):
    c, m = d.shape
    k = pidx.shape[1]
    step = max(1, TILE_ENTRIES // max(1, c * m))
    for j0 in range(0, k, step):
        j1 = min(k, j0 + step)
        cols = pidx[:, j0:j1]
        z = d.gather(1, cols)[:, :, None] - d[:, None, :] + margin
        yield j0, j1, z, (pos.gather(1, cols)[:, :, None] & neg[:, None, :]).to(d.dtype)


def _triplet(d: Any, pos: Any, neg: Any, spec: tuple, same: bool, r0: int, state: Any):
    _, margin, mining, _, soft = spec
    h = F.softplus if soft else F.relu
    if mining == "batch_hard":
        return _batch_hard(d, pos, neg, h, margin)
    if mining == "semi_hard":
        return _semi_hard(d, pos, neg, h, margin)
    if soft:
        per = _SoftAll.apply(d, pos, neg, margin)[0]
        return per, (pos.sum(1) * neg.sum(1)).to(d.dtype)
    return _hinge_all(d, pos, neg, margin, mining == "batch_all")


def _lifted_rows(d: Any, neg: Any, margin: float, hard: bool):
    """l_i = log Σ_{k∈N(i)} e^{margin − d_ik} (max when ``hard``); −∞ for rows without negatives."""
    has_neg = neg.any(1)
    a = torch.where(neg, margin - d, torch.full_like(d, float("-inf")))
    a = torch.where(has_neg[:, None], a, torch.zeros_like(a))
    l_row = a.max(1).values if hard else torch.logsumexp(a, 1)
    return torch.where(has_neg, l_row, torch.full_like(l_row, float("-inf"))), has_neg


def _lifted(d: Any, pos: Any, neg: Any, spec: tuple, same: bool, r0: int, state: Any):
    _, margin, hard, _ = spec
    l_all, has_all = state
    c = d.shape[0]
    ok = pos & (has_all[r0:r0 + c, None] | has_all[None, :])
    zero = torch.zeros_like(d)
    li = torch.where(ok, l_all[r0:r0 + c, None].expand_as(d), zero)
    lj = torch.where(ok, l_all[None, :].expand_as(d), zero)
    z = torch.maximum(li, lj) if hard else torch.logaddexp(li, lj)
    j = torch.where(ok, d + z, zero)
    return 0.5 * (F.relu(j) ** 2).sum(1), pos.sum(1).to(d.dtype)


def _multi_similarity(s: Any, pos: Any, neg: Any, spec: tuple, same: bool, r0: int, state: Any):
    _, alpha, beta, base = spec
    pos, neg = pos.to(s.dtype), neg.to(s.dtype)
    per = _weighted_lse(-alpha * (s - base), pos, True) / alpha + _weighted_lse(beta * (s - base), neg, True) / beta
    return per, torch.ones_like(per)


def _circle(s: Any, pos: Any, neg: Any, spec: tuple, same: bool, r0: int, state: Any):
    _, m, gamma = spec
    pos, neg = pos.to(s.dtype), neg.to(s.dtype)
    sd = s.detach()  # α's are constants (the authors' code)
    lp = -gamma * F.relu(1 + m - sd) * (s - (1 - m))
    ln = gamma * F.relu(sd + m) * (s - m)
    ok = (pos.sum(1) > 0) & (neg.sum(1) > 0)
    lsp = _weighted_lse(torch.where(pos > 0, lp, torch.zeros_like(lp)), pos, False)
    lsn = _weighted_lse(torch.where(neg > 0, ln, torch.zeros_like(ln)), neg, False)
    z = torch.where(ok, lsp + lsn, torch.zeros_like(lsp))
    per = torch.where(ok, F.softplus(z), torch.zeros_like(z))
    return per, (per > 0).to(per.dtype)


_TERMS = {"contrastive": _contrastive, "triplet": _triplet, "lifted": _lifted, "ms": _multi_similarity, "circle": _circle}


def _distance_of(spec: tuple) -> Optional[str]:
    return {"contrastive": lambda s: s[2], "triplet": lambda s: s[3], "lifted": lambda s: s[3]}.get(spec[0], lambda s: None)(spec)


# ----------------------------------------------------------------- the Function


class PairRows(torch.autograd.Function):
    """(per (B,), cnt (B,)) of a pair loss ``spec`` over anchor-row chunks of ``chunk`` rows.

    ``spec``: ("contrastive", margin, distance) | ("triplet", margin, mining, distance, soft) |
    ("lifted", margin, hard, distance) | ("ms", alpha, beta, base) | ("circle", m, gamma).
    ``r`` None: in-batch (own row excluded); ``a1, p, a2, n``: given pairs instead of labels (ms/circle).
    Saved for backward: the inputs and, for lifted, l (B,) and whether each row has a negative.
    """

    @staticmethod
    def forward(x: Any, r: Optional[Any], y: Optional[Any], ry: Optional[Any], a1: Optional[Any], p: Optional[Any],
                a2: Optional[Any], n: Optional[Any], spec: tuple, chunk: int) -> Any:  # type: ignore[override]
        geom = _Geom(x, r, _distance_of(spec))
        cols = x if r is None else r
        pairs = None if a1 is None else (a1, p, a2, n)
        b = x.shape[0]
        state = None
        if spec[0] == "lifted":
            l_all = x.new_empty(b)
            has_all = torch.empty(b, dtype=torch.bool, device=x.device)
            for r0 in range(0, b, chunk):
                d = geom.tile(x[r0:r0 + chunk], cols, r0)
                _, neg = _masks(d, y, ry, geom.same, r0, None)
                l_all[r0:r0 + chunk], has_all[r0:r0 + chunk] = _lifted_rows(d, neg, spec[1], spec[2])
            state = (l_all, has_all)
        per, cnt = x.new_empty(b), x.new_empty(b)
        for r0 in range(0, b, chunk):
            t = geom.tile(x[r0:r0 + chunk], cols, r0)
            pos, neg = _masks(t, y, ry, geom.same, r0, pairs)
            per[r0:r0 + chunk], cnt[r0:r0 + chunk] = _TERMS[spec[0]](t, pos, neg, spec, geom.same, r0, state)
        if state is None:
            return per, cnt, x.new_empty(0), x.new_empty(0, dtype=torch.bool)
        return per, cnt, state[0], state[1]

    @staticmethod
    def setup_context(ctx: Any, inputs: Any, output: Any) -> None:
        x, r, y, ry, a1, p, a2, n, spec, chunk = inputs
        ctx.spec, ctx.chunk, ctx.has_r = spec, chunk, r is not None
        ctx.save_for_backward(x, r, y, ry, a1, p, a2, n, output[2], output[3])
        ctx.mark_non_differentiable(*output[1:])

    @staticmethod
    def backward(ctx: Any, g: Any, *_: Any) -> Any:  # type: ignore[override]
        x0, r0_, y, ry, a1, p, a2, n, l_all, has_all = ctx.saved_tensors
        x, r, g = _ops.detached(x0, r0_, g)
        spec, chunk = ctx.spec, ctx.chunk
        pairs = None if a1 is None else (a1, p, a2, n)
        geom = _Geom(x, r, _distance_of(spec))
        b = x.shape[0]
        gx = torch.zeros_like(x)
        gcols = torch.zeros_like(x if r is None else r)
        lifted = spec[0] == "lifted"
        gl = torch.zeros_like(l_all) if lifted else None
        cols = x if r is None else r
        # Each tile differentiated with torch.func.vjp (not autograd.grad on fresh leaves), so the
        # backward also runs inside torch.func transforms (torch.func.grad of a loss).
        for r0 in range(0, b, chunk):
            def terms(xc: Any, cc: Any, *ll: Any, r0: int = r0) -> Any:
                t = geom.tile(xc, cc, r0)
                pos, neg = _masks(t.detach(), y, ry, geom.same, r0, pairs)
                return _TERMS[spec[0]](t, pos, neg, spec, geom.same, r0, (ll[0], has_all) if ll else None)[0]

            args = (x[r0:r0 + chunk], cols) + ((l_all,) if lifted else ())
            _, pull = torch.func.vjp(terms, *args)
            got = pull(g[r0:r0 + chunk])
            gx[r0:r0 + chunk] += got[0]
            gcols += got[1]
            if lifted:
                gl += got[2]
            del pull, got  # this chunk's tile graph goes before the next one is built
        if lifted:
            # ∂L/∂l_i back through each row's log-sum-exp over its negatives.
            for r0 in range(0, b, chunk):
                def rows(xc: Any, cc: Any, r0: int = r0) -> Any:
                    t = geom.tile(xc, cc, r0)
                    _, neg = _masks(t.detach(), y, None, True, r0, None)
                    return _lifted_rows(t, neg, spec[1], spec[2])[0]

                l_row, pull = torch.func.vjp(rows, x[r0:r0 + chunk], cols)
                gi = gl[r0:r0 + chunk]
                got = pull(torch.where(torch.isfinite(l_row), gi, torch.zeros_like(gi)))
                gx[r0:r0 + chunk] += got[0]
                gcols += got[1]
                del pull, got
        if ctx.has_r:
            grads = (gx, gcols)
        else:
            grads = (gx + gcols, None)
        return _ops.refuse_double_backward(_LOSS, grads, (x0, r0_)) + (None,) * 8

    vmap = _ops.no_vmap(_LOSS)


def pair_rows(x: Any, r: Optional[Any], y: Optional[Any], ry: Optional[Any], spec: tuple,
              pairs: Optional[Tuple[Any, Any, Any, Any]] = None, chunk: Optional[int] = None) -> Tuple[Any, Any]:
    """(per, cnt) of :class:`PairRows`, the same values :mod:`reprkit.reference.pairs`' ``*_terms`` return."""
    m = x.shape[0] if r is None else r.shape[0]
    step = chunk_rows(m, chunk or max(1, TILE_ENTRIES // max(1, m)))
    a1, p, a2, n = pairs if pairs is not None else (None,) * 4
    # dynamo refuses one tensor passed as two inputs of an autograd.Function (e.g. ref_labels=labels)
    if r is x:
        r = x.clone()
    if ry is not None and ry is y:
        ry = y.clone()
    per, cnt, _, _ = PairRows.apply(x, r, y, ry, a1, p, a2, n, spec, step)
    return per, cnt
