"""The pair and triplet kernels as torch operators (CPU tensors; see :mod:`reprkit._ops`).

Each forward operator returns ``per`` (the per-anchor, per-pair or per-triplet
values whose reduction is the loss), ``cnt`` (each anchor's share of the mean's
normaliser) and the O(B) state its backward needs (mined triplets, per-row
log-sum-exps); no B×B matrix is kept. Each backward operator takes the upstream
gradient of ``per`` and recomputes distance tiles in Rust.
"""

from typing import Any, Optional, Tuple

from .. import _core, _ops
from .._threads import kernel_threads
from .._ops import Tensor, np_, t_, torch


def _vec(x: Any, n: int) -> Any:
    return x.new_empty((n,))


def _grads_fake(x: Any, r: Optional[Any]) -> Tuple[Any, Any]:
    return torch.empty_like(x), _ops.empty_like_rows(x) if r is None else torch.empty_like(r)


def _grads(x: Any, pair: Any) -> Tuple[Any, Any]:
    gx, gr = pair
    return torch.from_numpy(gx), t_(gr, x)


def _dynamic() -> Any:
    return torch.library.get_ctx().new_dynamic_size()


# ----------------------------------------------------------------- contrastive


@_ops.op("contrastive", lambda x, r, y, ry, margin, metric, nt: (_vec(x, x.shape[0]), _vec(x, x.shape[0])))
def contrastive(x: Tensor, r: Optional[Tensor], y: Tensor, ry: Optional[Tensor], margin: float, metric: str, nt: int) -> Tuple[Tensor, Tensor]:
    per, cnt = _core.contrastive_loss(np_(x), np_(y), np_(r), np_(ry), margin, metric, kernel_threads(nt))
    return torch.from_numpy(per), torch.from_numpy(cnt)


@_ops.backward_op("contrastive_backward", "contrastive_loss", lambda g, x, r, y, ry, margin, metric, nt: _grads_fake(x, r))
def contrastive_backward(g: Tensor, x: Tensor, r: Optional[Tensor], y: Tensor, ry: Optional[Tensor], margin: float, metric: str, nt: int) -> Tuple[Tensor, Tensor]:
    return _grads(x, _core.contrastive_loss_backward(np_(x), np_(y), np_(r), np_(ry), margin, metric, np_(g), kernel_threads(nt)))


# ----------------------------------------------------------------- triplet


def _triplet_fake(x, r, y, ry, margin, mining, metric, soft, nt):
    n = x.shape[0]
    t = _dynamic() if mining in ("batch_hard", "semi_hard") else 0
    return _vec(x, n), _vec(x, n), y.new_empty((t, 3))


@_ops.op("triplet", _triplet_fake)
def triplet(
    x: Tensor, r: Optional[Tensor], y: Tensor, ry: Optional[Tensor], margin: float, mining: str, metric: str, soft: bool, nt: int
) -> Tuple[Tensor, Tensor, Tensor]:
    per, cnt, trip = _core.triplet_loss(np_(x), np_(y), np_(r), np_(ry), margin, mining, metric, soft, kernel_threads(nt))
    return torch.from_numpy(per), torch.from_numpy(cnt), torch.from_numpy(trip)


@_ops.backward_op(
    "triplet_backward", "triplet_margin_loss", lambda g, x, r, y, ry, trip, margin, mining, metric, soft, nt: _grads_fake(x, r)
)
def triplet_backward(
    g: Tensor, x: Tensor, r: Optional[Tensor], y: Tensor, ry: Optional[Tensor], trip: Tensor, margin: float, mining: str,
    metric: str, soft: bool, nt: int,
) -> Tuple[Tensor, Tensor]:
    return _grads(x, _core.triplet_loss_backward(np_(x), np_(y), np_(r), np_(ry), margin, mining, metric, soft, np_(trip), np_(g), kernel_threads(nt)))


# ----------------------------------------------------------------- lifted


def _lifted_fake(x, y, margin, hard, metric, nt):
    n = x.shape[0]
    return _vec(x, n), _vec(x, n), _vec(x, n), _vec(x, n), y.new_empty((n,))


@_ops.op("lifted", _lifted_fake)
def lifted(x: Tensor, y: Tensor, margin: float, hard: bool, metric: str, nt: int) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    return tuple(torch.from_numpy(a) for a in _core.lifted_loss(np_(x), np_(y), margin, hard, metric, kernel_threads(nt)))  # type: ignore[return-value]


@_ops.backward_op(
    "lifted_backward", "lifted_structure_loss", lambda g, x, y, lse, dl, nearest, margin, hard, metric, nt: _grads_fake(x, None)
)
def lifted_backward(
    g: Tensor, x: Tensor, y: Tensor, lse: Tensor, dl: Tensor, nearest: Tensor, margin: float, hard: bool, metric: str, nt: int
) -> Tuple[Tensor, Tensor]:
    gx = _core.lifted_loss_backward(np_(x), np_(y), margin, hard, metric, np_(lse), np_(dl), np_(nearest), np_(g), kernel_threads(nt))
    return torch.from_numpy(gx), _ops.empty_like_rows(x)


# ----------------------------------------------------------------- given tuples


@_ops.op("pair_tuple", lambda x, r, a1, p, a2, n, margin, metric, nt: _vec(x, a1.shape[0] + a2.shape[0]))
def pair_tuple(x: Tensor, r: Optional[Tensor], a1: Tensor, p: Tensor, a2: Tensor, n: Tensor, margin: float, metric: str, nt: int) -> Tensor:
    return torch.from_numpy(_core.pair_tuple_loss(np_(x), np_(r), np_(a1), np_(p), np_(a2), np_(n), margin, metric, kernel_threads(nt)))


@_ops.backward_op(
    "pair_tuple_backward", "contrastive_loss (indices_tuple)", lambda g, x, r, a1, p, a2, n, margin, metric, nt: _grads_fake(x, r)
)
def pair_tuple_backward(
    g: Tensor, x: Tensor, r: Optional[Tensor], a1: Tensor, p: Tensor, a2: Tensor, n: Tensor, margin: float, metric: str, nt: int
) -> Tuple[Tensor, Tensor]:
    return _grads(x, _core.pair_tuple_loss_backward(np_(x), np_(r), np_(a1), np_(p), np_(a2), np_(n), margin, metric, np_(g), kernel_threads(nt)))


@_ops.op("triplet_tuple", lambda x, r, a, p, n, margin, metric, soft, nt: _vec(x, a.shape[0]))
def triplet_tuple(x: Tensor, r: Optional[Tensor], a: Tensor, p: Tensor, n: Tensor, margin: float, metric: str, soft: bool, nt: int) -> Tensor:
    return torch.from_numpy(_core.triplet_tuple_loss(np_(x), np_(r), np_(a), np_(p), np_(n), margin, metric, soft, kernel_threads(nt)))


@_ops.backward_op(
    "triplet_tuple_backward", "triplet_margin_loss (indices_tuple)",
    lambda g, x, r, a, p, n, margin, metric, soft, nt: _grads_fake(x, r),
)
def triplet_tuple_backward(
    g: Tensor, x: Tensor, r: Optional[Tensor], a: Tensor, p: Tensor, n: Tensor, margin: float, metric: str, soft: bool, nt: int
) -> Tuple[Tensor, Tensor]:
    return _grads(x, _core.triplet_tuple_loss_backward(np_(x), np_(r), np_(a), np_(p), np_(n), margin, metric, soft, np_(g), kernel_threads(nt)))


# ----------------------------------------------------------------- similarity losses (unit rows)


def _two(x: Any) -> Tuple[Any, Any]:
    return _vec(x, x.shape[0]), _vec(x, x.shape[0])


@_ops.op("multi_similarity", lambda x, r, y, ry, alpha, beta, base, nt: _two(x))
def multi_similarity(x: Tensor, r: Optional[Tensor], y: Tensor, ry: Optional[Tensor], alpha: float, beta: float, base: float, nt: int) -> Tuple[Tensor, Tensor]:
    per, cnt = _core.multi_similarity_loss(np_(x), np_(y), np_(r), np_(ry), alpha, beta, base, kernel_threads(nt))
    return torch.from_numpy(per), torch.from_numpy(cnt)


@_ops.backward_op(
    "multi_similarity_backward", "multi_similarity_loss", lambda g, x, r, y, ry, alpha, beta, base, nt: _grads_fake(x, r)
)
def multi_similarity_backward(
    g: Tensor, x: Tensor, r: Optional[Tensor], y: Tensor, ry: Optional[Tensor], alpha: float, beta: float, base: float, nt: int
) -> Tuple[Tensor, Tensor]:
    return _grads(x, _core.multi_similarity_loss_backward(np_(x), np_(y), np_(r), np_(ry), alpha, beta, base, np_(g), kernel_threads(nt)))


@_ops.op("circle", lambda x, r, y, ry, m, gamma, nt: _two(x))
def circle(x: Tensor, r: Optional[Tensor], y: Tensor, ry: Optional[Tensor], m: float, gamma: float, nt: int) -> Tuple[Tensor, Tensor]:
    per, cnt = _core.circle_loss(np_(x), np_(y), np_(r), np_(ry), m, gamma, kernel_threads(nt))
    return torch.from_numpy(per), torch.from_numpy(cnt)


@_ops.backward_op("circle_backward", "circle_loss", lambda g, x, r, y, ry, m, gamma, nt: _grads_fake(x, r))
def circle_backward(g: Tensor, x: Tensor, r: Optional[Tensor], y: Tensor, ry: Optional[Tensor], m: float, gamma: float, nt: int) -> Tuple[Tensor, Tensor]:
    return _grads(x, _core.circle_loss_backward(np_(x), np_(y), np_(r), np_(ry), m, gamma, np_(g), kernel_threads(nt)))


@_ops.op("multi_similarity_pairs", lambda x, r, a1, p, a2, n, alpha, beta, base, nt: _two(x))
def multi_similarity_pairs(
    x: Tensor, r: Optional[Tensor], a1: Tensor, p: Tensor, a2: Tensor, n: Tensor, alpha: float, beta: float, base: float, nt: int
) -> Tuple[Tensor, Tensor]:
    per, cnt = _core.multi_similarity_pairs_loss(np_(x), np_(r), np_(a1), np_(p), np_(a2), np_(n), alpha, beta, base, kernel_threads(nt))
    return torch.from_numpy(per), torch.from_numpy(cnt)


@_ops.backward_op(
    "multi_similarity_pairs_backward", "multi_similarity_loss (indices_tuple)",
    lambda g, x, r, a1, p, a2, n, alpha, beta, base, nt: _grads_fake(x, r),
)
def multi_similarity_pairs_backward(
    g: Tensor, x: Tensor, r: Optional[Tensor], a1: Tensor, p: Tensor, a2: Tensor, n: Tensor, alpha: float, beta: float,
    base: float, nt: int,
) -> Tuple[Tensor, Tensor]:
    return _grads(
        x, _core.multi_similarity_pairs_loss_backward(np_(x), np_(r), np_(a1), np_(p), np_(a2), np_(n), alpha, beta, base, np_(g), kernel_threads(nt))
    )


@_ops.op("circle_pairs", lambda x, r, a1, p, a2, n, m, gamma, nt: _two(x))
def circle_pairs(x: Tensor, r: Optional[Tensor], a1: Tensor, p: Tensor, a2: Tensor, n: Tensor, m: float, gamma: float, nt: int) -> Tuple[Tensor, Tensor]:
    per, cnt = _core.circle_pairs_loss(np_(x), np_(r), np_(a1), np_(p), np_(a2), np_(n), m, gamma, kernel_threads(nt))
    return torch.from_numpy(per), torch.from_numpy(cnt)


@_ops.backward_op(
    "circle_pairs_backward", "circle_loss (indices_tuple)", lambda g, x, r, a1, p, a2, n, m, gamma, nt: _grads_fake(x, r)
)
def circle_pairs_backward(
    g: Tensor, x: Tensor, r: Optional[Tensor], a1: Tensor, p: Tensor, a2: Tensor, n: Tensor, m: float, gamma: float, nt: int
) -> Tuple[Tensor, Tensor]:
    return _grads(x, _core.circle_pairs_loss_backward(np_(x), np_(r), np_(a1), np_(p), np_(a2), np_(n), m, gamma, np_(g), kernel_threads(nt)))


# ----------------------------------------------------------------- the autograd Functions


def _function(name: str, fwd: Any, bwd: Any, state_at: int, loss: str, refs: bool = True) -> Any:
    """An autograd Function that differentiates output 0 (``per``) of the operator ``fwd``.

    Input 0 is x and, when ``refs``, input 1 the optional references r; the other
    inputs are not differentiable. The backward operator is called as
    ``bwd(g, *inputs[:state_at], *state, *inputs[state_at:])`` with the forward's
    outputs 2… as ``state``, and returns (∂x, ∂r).
    """

    fwd_op, bwd_op = fwd._opoverload, bwd._opoverload  # dynamo traces OpOverloads, not CustomOpDefs in closures

    def forward(*args: Any) -> Any:
        return fwd_op(*args)

    def setup_context(ctx: Any, inputs: Any, output: Any) -> None:
        outs = output if isinstance(output, tuple) else (output,)
        is_t = [isinstance(a, torch.Tensor) for a in inputs]
        ctx.layout, ctx.n_tensors = is_t, sum(is_t)
        ctx.consts = [None if t else a for a, t in zip(inputs, is_t)]
        ctx.has_r = refs and inputs[1] is not None
        if len(outs) > 1:
            ctx.mark_non_differentiable(*outs[1:])
        ctx.save_for_backward(*[a for a, t in zip(inputs, is_t) if t], *outs[2:])

    def backward(ctx: Any, g: Any, *_: Any) -> Any:
        saved = ctx.saved_tensors
        it = iter(saved[: ctx.n_tensors])
        args = [next(it) if t else c for t, c in zip(ctx.layout, ctx.consts)]
        call = _ops.detached(g.contiguous(), *args[:state_at], *saved[ctx.n_tensors :], *args[state_at:])
        gx, gr = bwd_op(*call)
        grads = (gx, gr if ctx.has_r else None) if refs else (gx,)
        grads = _ops.refuse_double_backward(loss, grads, args[:2])
        return grads + (None,) * (len(args) - len(grads))

    return type(
        name,
        (torch.autograd.Function,),
        {
            "forward": staticmethod(forward),
            "setup_context": staticmethod(setup_context),
            "backward": staticmethod(backward),
            "vmap": _ops.no_vmap(loss),
        },
    )


# (inputs before the state in the backward signature: x, r, y, ry for triplet; x, y for lifted)
Contrastive = _function("_Contrastive", contrastive, contrastive_backward, 7, "contrastive_loss")
Triplet = _function("_Triplet", triplet, triplet_backward, 4, "triplet_margin_loss")
Lifted = _function("_Lifted", lifted, lifted_backward, 2, "lifted_structure_loss", refs=False)
PairTuple = _function("_PairTuple", pair_tuple, pair_tuple_backward, 9, "contrastive_loss")
TripletTuple = _function("_TripletTuple", triplet_tuple, triplet_tuple_backward, 9, "triplet_margin_loss")
MultiSimilarity = _function("_MultiSimilarity", multi_similarity, multi_similarity_backward, 8, "multi_similarity_loss")
Circle = _function("_Circle", circle, circle_backward, 7, "circle_loss")
MultiSimilarityPairs = _function("_MultiSimilarityPairs", multi_similarity_pairs, multi_similarity_pairs_backward, 10, "multi_similarity_loss")
CirclePairs = _function("_CirclePairs", circle_pairs, circle_pairs_backward, 9, "circle_loss")


# ----------------------------------------------------------------- fused mean (forward and gradient in one pass)


def _fused_fake(x, r, y, ry, *rest):
    n = x.shape[0]
    return _vec(x, n), _vec(x, n), torch.empty_like(x), _ops.empty_like_rows(x) if r is None else torch.empty_like(r)


@_ops.op("multi_similarity_fused", _fused_fake)
def multi_similarity_fused(
    x: Tensor, r: Optional[Tensor], y: Tensor, ry: Optional[Tensor], alpha: float, beta: float, base: float, nt: int
) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    per, cnt, gx, gr = _core.multi_similarity_loss_fused(np_(x), np_(y), np_(r), np_(ry), alpha, beta, base, kernel_threads(nt))
    return torch.from_numpy(per), torch.from_numpy(cnt), torch.from_numpy(gx), t_(gr, x)


@_ops.op("circle_fused", _fused_fake)
def circle_fused(
    x: Tensor, r: Optional[Tensor], y: Tensor, ry: Optional[Tensor], m: float, gamma: float, nt: int
) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    per, cnt, gx, gr = _core.circle_loss_fused(np_(x), np_(y), np_(r), np_(ry), m, gamma, kernel_threads(nt))
    return torch.from_numpy(per), torch.from_numpy(cnt), torch.from_numpy(gx), t_(gr, x)


def _fused_mean(name: str, fwd: Any, loss: str) -> Any:
    """An autograd Function for the default mean Σper/Σcnt whose gradient comes out of the forward's tiles
    (the similarity tiles are not recomputed: one GEMM fewer than forward + backward)."""
    fwd_op = fwd._opoverload

    def forward(*args: Any) -> Any:
        per, cnt, gx, gr = fwd_op(*args)
        c = cnt.sum()
        inv = torch.where(c > 0, 1.0 / torch.where(c > 0, c, torch.ones_like(c)), torch.zeros_like(c))
        return per.sum() * inv, gx * inv, gr * inv

    def setup_context(ctx: Any, inputs: Any, output: Any) -> None:
        ctx.has_r = inputs[1] is not None
        ctx.mark_non_differentiable(output[1], output[2])
        ctx.set_materialize_grads(False)  # else backward is handed zero tensors the size of x and r
        ctx.save_for_backward(output[1], output[2], inputs[0], inputs[1])

    def backward(ctx: Any, g: Any, *_: Any) -> Any:
        if g is None:
            return (None,) * 8
        gx, gr, x, r = ctx.saved_tensors
        grads = (gx * g, gr * g if ctx.has_r else None)
        return _ops.refuse_double_backward(loss, grads, (x, r)) + (None,) * 6

    return type(name, (torch.autograd.Function,), {
        "forward": staticmethod(forward), "setup_context": staticmethod(setup_context),
        "backward": staticmethod(backward), "vmap": _ops.no_vmap(loss),
    })


MultiSimilarityMean = _fused_mean("_MultiSimilarityMean", multi_similarity_fused, "multi_similarity_loss")
CircleMean = _fused_mean("_CircleMean", circle_fused, "circle_loss")
