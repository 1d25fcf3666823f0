"""Losses across ``torch.distributed`` ranks with the single-process gradient.

Contrastive losses want many negatives; under DDP the negatives live on the other
ranks. :func:`all_gather` concatenates a tensor from every rank in rank order and
carries the gradient back: its backward **sums** the incoming gradients over the
ranks (``all_reduce``) and returns this rank's slice, because every rank's loss
depends on every rank's rows. (lightly's gather returned only the local gradient
until 2024; see ``shared/notes/losses-modern.md``.) Local batch sizes may differ:
the sizes are gathered first. Without an initialised process group (or a world of
one) every function here is the identity and costs nothing.

The scaling rule (the one place it is stated)
----------------------------------------------
Let L be the loss of one process on the concatenated global batch (N anchors,
the concatenation of the ranks' batches in rank order) and L_r the value rank r
returns with ``gather_distributed=True``. reprkit chooses L_r so that

    Σ_r L_r = world_size · L,

hence DDP's gradient averaging, (1/W) Σ_r ∇L_r, gives exactly ∇L (and the mean
of the ranks' losses is L). Two forms satisfy it:

* **local anchors** (NT-Xent, InfoNCE, CLIP, N-pair: the efficient form): rank r
  takes its own rows as anchors against the gathered rows as references and
  returns L_r = W · (Σ of its anchors' terms) / (global anchor count); for a
  ``"sum"`` reduction L_r = W · Σ of its anchors' terms. Memory per rank
  O(local · global) entries at most (the Rust kernels and the chunked torch path
  keep only tiles: O(global · d)). Each rank's value is its share, not L.
* **global batch** (the statistics losses Barlow Twins and VICReg, whose batch
  normalisation and covariance are over the global batch, and the others listed
  below): every rank gathers the inputs and computes L itself, L_r = L, so
  Σ_r L_r = W·L again and the returned value is the global loss on every rank.
  Memory per rank O(global · d) for the tiled kernels; the compute is repeated
  on every rank.

Gradients of replicated parameters (CLIP's ``logit_scale``, a loss module's own
parameters) follow the same rule: DDP averages them to ∇L.

Which form each loss uses:

* local anchors — :func:`~reprkit.functional.ntxent_loss`,
  :func:`~reprkit.functional.infonce_loss` (with a queue the queue stays local and only
  the normalisation is global), :func:`~reprkit.functional.clip_loss` (open_clip's
  ``local_loss``), :func:`~reprkit.functional.siglip_loss` (local images against every
  rank's texts; each pair counted on its image's rank), and
  :func:`~reprkit.functional.supcon_loss` on the torch path (non-CPU tensors or
  ``backend="torch"``);
* global batch — SupCon with the Rust kernel (square: the CPU default), uniformity, hypersphere_loss,
  Barlow Twins, VICReg, the contrastive / triplet / lifted / multi-similarity / circle
  losses and the miners (their indices then refer to the global batch, rank order, and
  are the same on every rank), :class:`~reprkit.MemoryBank` (``add`` enqueues the global
  batch, detached). ``reduction="none"`` on a local-anchor loss also takes the
  global-batch form (the global vector on every rank).

Losses whose terms involve one sample and parameters only need no gather: the margin
losses (normalised softmax, CosFace, ArcFace, sub-center ArcFace), center loss,
Proxy-NCA, negative cosine (SimSiam/BYOL), DINO's per-sample cross-entropy (its centre
is an EMA buffer: all-reduce the batch mean yourself, as DINO's code does) and
alignment: DDP's averaging of equal local means already is the global mean (with
unequal local batch sizes, weight them yourself). Proxy-Anchor averages over the
proxies that have positives in the batch, a batch statistic: its distributed form is
not provided.

``all_gather`` is a ``torch.autograd.Function`` around ``torch.distributed``
collectives whose output size comes from the gathered row counts: ``torch.compile``
(default, ``fullgraph=False``) of a distributed loss runs and matches eager (checked
with gloo, 2 ranks, ``backend="aot_eager"``), with graph breaks at the gather;
``fullgraph=True`` fails (the gathered size is data-dependent). Every rank must call the loss
(and its backward) collectively, as with any collective.
"""

from __future__ import annotations

from typing import Any, List, Optional, Tuple

from ._torch import require_torch

torch = require_torch()

__all__ = ["all_gather", "all_gather_local_first", "world_size", "rank", "is_distributed", "global_sum"]


def _dist() -> Any:
    return torch.distributed


def is_distributed(group: Any = None) -> bool:
    """True when torch.distributed is available and initialised with more than one rank."""
    d = _dist()
    return bool(d.is_available() and d.is_initialized() and d.get_world_size(group) > 1)


def world_size(group: Any = None) -> int:
    """The number of ranks (1 without an initialised process group)."""
    d = _dist()
    return d.get_world_size(group) if d.is_available() and d.is_initialized() else 1


def rank(group: Any = None) -> int:
    """This process's rank (0 without an initialised process group)."""
    d = _dist()
    return d.get_rank(group) if d.is_available() and d.is_initialized() else 0


def _sizes(n: int, device: Any, group: Any) -> List[int]:
    """Every rank's number of rows, in rank order."""
    d = _dist()
    mine = torch.tensor([n], dtype=torch.long, device=device)
    out = [torch.empty_like(mine) for _ in range(d.get_world_size(group))]
    d.all_gather(out, mine, group=group)
    return [int(t) for t in out]


def _gather_raw(x: Any, sizes: List[int], group: Any) -> Any:
    """Rank-order concatenation of every rank's ``x`` (rows may differ: padded to the largest)."""
    d = _dist()
    x = x.contiguous()
    m = max(sizes)
    if x.shape[0] < m:
        x = torch.cat([x, x.new_zeros((m - x.shape[0],) + tuple(x.shape[1:]))])
    bufs = [torch.empty_like(x) for _ in sizes]
    d.all_gather(bufs, x, group=group)
    return torch.cat([b[:s] for b, s in zip(bufs, sizes)])


class _AllGather(torch.autograd.Function):
    @staticmethod
    def forward(x: Any, sizes: Tuple[int, ...], me: int, group: Any) -> Any:  # type: ignore[override]
        return _gather_raw(x, list(sizes), group)

    @staticmethod
    def setup_context(ctx: Any, inputs: Any, output: Any) -> None:
        _, ctx.sizes, ctx.me, ctx.group = inputs

    @staticmethod
    def backward(ctx: Any, g: Any) -> Any:  # type: ignore[override]
        # Every rank's loss depends on this rank's rows: the gradient is the sum over ranks.
        g = g.contiguous().clone()
        _dist().all_reduce(g, op=_dist().ReduceOp.SUM, group=ctx.group)
        off = sum(ctx.sizes[: ctx.me])
        return g[off : off + ctx.sizes[ctx.me]], None, None, None


def all_gather(x: Any, group: Any = None) -> Any:
    """The rank-order concatenation (along dim 0) of ``x`` from every rank, differentiable.

    Forward: [x_0; x_1; …; x_{W−1}] (local row counts may differ). Backward: the
    incoming gradient G is summed over the ranks and rank r receives rows
    off_r … off_r + n_r of Σ_ranks G. Integer tensors (labels) are gathered too
    (no gradient). The identity without an initialised process group.
    """
    return _gather(x, group)[0]


def _gather(x: Any, group: Any) -> Tuple[Any, List[int]]:
    if not is_distributed(group):
        return x, [x.shape[0]]
    sizes = _sizes(x.shape[0], x.device, group)
    return _AllGather.apply(x, tuple(sizes), rank(group), group), sizes


def all_gather_local_first(x: Any, group: Any = None) -> Tuple[Any, int]:
    """(this rank's rows followed by every other rank's rows in rank order, the global row count).

    The reference set for local anchors: row i < n_local of the result is local row i
    itself (not a gathered copy), so local indices need no offset; the other rows carry
    their gradient back to their ranks through :func:`all_gather`.
    """
    if not is_distributed(group):
        return x, x.shape[0]
    g, sizes = _gather(x, group)
    off = sum(sizes[: rank(group)])
    return torch.cat([x, g[:off], g[off + x.shape[0] :]]), g.shape[0]


def global_sum(v: Any, group: Any = None) -> Any:
    """Σ over the ranks of a (detached) tensor or number, as a tensor; the value itself when not distributed."""
    t = v.detach().clone() if torch.is_tensor(v) else torch.tensor(v)
    if is_distributed(group):
        _dist().all_reduce(t, op=_dist().ReduceOp.SUM, group=group)
    return t


def gather_inputs(*ts: Optional[Any], group: Any = None) -> Tuple[Optional[Any], ...]:
    """:func:`all_gather` of each row-indexed input (labels as arrays become tensors; None passes): the global-batch form."""
    if not is_distributed(group):
        return ts
    out = []
    for t in ts:
        if t is not None and not torch.is_tensor(t):
            import numpy as np

            t = torch.from_numpy(np.asarray(t))
        out.append(None if t is None else all_gather(t, group))
    return tuple(out)
