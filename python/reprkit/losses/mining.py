"""Miners: which pairs or triplets of a batch a loss should see (also ``reprkit.miners``).

Triplet miners return ``(anchors, positives, negatives)``, pair miners
``(a1, positives, a2, negatives)`` — LongTensors in pytorch-metric-learning's
``indices_tuple`` layout, so they feed reprkit's losses and PML's alike. Without
references, positives and negatives come from the batch (a ≠ p); with
``ref_embeddings, ref_labels`` they index the references. Output order: by
anchor, then positive, then negative index; ties go to the lowest index.

``distance=``: ``"euclidean"`` (default), ``"sqeuclidean"`` or ``"cosine"``
(1 − cos of the normalised rows); the older ``squared=True`` means
``"sqeuclidean"``. CPU tensors run Rust kernels (distance tiles of 64 rows, no
B×B matrix kept, never B³), registered as torch operators; other devices run
:mod:`reprkit.reference.mining`. Mining is not differentiable (indices only).

``gather_distributed=True`` (functions and miner objects): mines the global batch
(every rank's rows and labels, rank order, :mod:`reprkit.distributed`); the indices
refer to it and are the same on every rank — feed them to a loss called with
``gather_distributed=True``.
"""

from typing import Any, Optional, Tuple

from .. import _core, _ops
from .._ops import Tensor, np_, torch
from .._threads import kernel_threads, op_threads
from .._validation import check_choice
from . import _inputs as V

__all__ = ["batch_hard", "batch_all", "semi_hard", "triplet_margin", "pair_margin", "multi_similarity", "distance_weighted"]

DISTANCES = ("euclidean", "sqeuclidean", "cosine")
TRIPLET_TYPES = ("all", "hard", "semihard", "easy")
Triplets = Tuple[Any, Any, Any]
Pairs = Tuple[Any, Any, Any, Any]

F = torch.nn.functional


def _dyn(y: Any, cols: int) -> Any:
    return y.new_empty((torch.library.get_ctx().new_dynamic_size(), cols))


# ----------------------------------------------------------------- operators (CPU)


@_ops.op("mine_triplets", lambda x, r, y, ry, kind, margin, metric, nt: _dyn(y, 3))
def _mine_triplets(x: Tensor, r: Optional[Tensor], y: Tensor, ry: Optional[Tensor], kind: str, margin: float, metric: str, nt: int) -> Tensor:
    return torch.from_numpy(_core.mine_triplets(np_(x), np_(y), np_(r), np_(ry), kind, margin, metric, kernel_threads(nt)))


@_ops.op("mine_triplet_margin", lambda x, r, y, ry, margin, kind, metric, nt: _dyn(y, 3))
def _mine_triplet_margin(x: Tensor, r: Optional[Tensor], y: Tensor, ry: Optional[Tensor], margin: float, kind: str, metric: str, nt: int) -> Tensor:
    return torch.from_numpy(_core.mine_triplet_margin(np_(x), np_(y), np_(r), np_(ry), margin, kind, metric, kernel_threads(nt)))


@_ops.op("mine_pair_margin", lambda x, r, y, ry, pm, nm, metric, nt: (_dyn(y, 2), _dyn(y, 2)))
def _mine_pair_margin(x: Tensor, r: Optional[Tensor], y: Tensor, ry: Optional[Tensor], pm: float, nm: float, metric: str, nt: int) -> Tuple[Tensor, Tensor]:
    pos, neg = _core.mine_pair_margin(np_(x), np_(y), np_(r), np_(ry), pm, nm, metric, kernel_threads(nt))
    return torch.from_numpy(pos), torch.from_numpy(neg)


@_ops.op("mine_multi_similarity", lambda x, r, y, ry, eps, nt: (_dyn(y, 2), _dyn(y, 2)))
def _mine_multi_similarity(x: Tensor, r: Optional[Tensor], y: Tensor, ry: Optional[Tensor], eps: float, nt: int) -> Tuple[Tensor, Tensor]:
    pos, neg = _core.mine_multi_similarity(np_(x), np_(y), np_(r), np_(ry), eps, kernel_threads(nt))
    return torch.from_numpy(pos), torch.from_numpy(neg)


@_ops.op("mine_distance_weighted", lambda x, r, y, ry, cutoff, nz, seed, nt: _dyn(y, 3))
def _mine_distance_weighted(x: Tensor, r: Optional[Tensor], y: Tensor, ry: Optional[Tensor], cutoff: float, nz: float, seed: int, nt: int) -> Tensor:
    return torch.from_numpy(_core.mine_distance_weighted(np_(x), np_(y), np_(r), np_(ry), cutoff, nz, seed, kernel_threads(nt)))


# ----------------------------------------------------------------- helpers


def _prep(embeddings: Any, labels: Any, ref_embeddings: Any, ref_labels: Any, distance: str = "euclidean"):
    x = V.check_embeddings(embeddings, "embeddings")
    y = V.check_labels(labels, x.shape[0], x.device)
    r, ry = V.check_refs(x, y, ref_embeddings, ref_labels)
    x, r = V.common_dtype(x.detach(), None if r is None else r.detach())
    if distance == "cosine":
        x, r = F.normalize(x, dim=1), None if r is None else F.normalize(r, dim=1)
    return x, y, r, ry


def _gathered(embeddings: Any, labels: Any, gather: bool) -> Tuple[Any, Any]:
    """With ``gather_distributed``: every rank's rows and labels (rank order), so that the mined
    indices refer to the global batch and are the same on every rank (pass them to a loss called
    with ``gather_distributed=True``; distance_weighted needs a fixed ``random_state`` for that)."""
    if not gather:
        return embeddings, labels
    from ..distributed import gather_inputs

    return gather_inputs(embeddings, labels)


def _metric(distance: Optional[str], squared: Optional[bool]) -> str:
    squared = V.check_bool("squared", squared, optional=True)
    if distance is None:
        return "sqeuclidean" if squared else "euclidean"
    return check_choice("distance", distance, DISTANCES)


def _split3(t: Any) -> Triplets:
    return t[:, 0], t[:, 1], t[:, 2]


def _split4(pos: Any, neg: Any) -> Pairs:
    return pos[:, 0], pos[:, 1], neg[:, 0], neg[:, 1]


def _ref():
    from ..reference import mining

    return mining


# ----------------------------------------------------------------- triplet miners


def batch_hard(
    embeddings: Any, labels: Any, squared: bool = False, ref_embeddings: Any = None, ref_labels: Any = None,
    *, distance: Optional[str] = None, n_jobs: Optional[int] = None, gather_distributed: bool = False,
) -> Triplets:
    """Per anchor that has a positive and a negative: the farthest positive
    (argmax d(a,p)) and the nearest negative (argmin d(a,n)) — Hermans et al. 2017."""
    gather_distributed = V.check_bool("gather_distributed", gather_distributed)
    metric = _metric(distance, squared)
    x, y, r, ry = _prep(*_gathered(embeddings, labels, gather_distributed), ref_embeddings, ref_labels, metric)
    if x.device.type == "cpu":
        return _split3(_mine_triplets(x, r, y, ry, "batch_hard", 0.0, metric, op_threads(n_jobs)))
    return _ref().mine_batch_hard(x, y, metric, r, ry)


def batch_all(
    embeddings: Any, labels: Any, margin: float = 0.2, squared: bool = False, ref_embeddings: Any = None,
    ref_labels: Any = None, *, distance: Optional[str] = None, n_jobs: Optional[int] = None, gather_distributed: bool = False,
) -> Triplets:
    """Every valid triplet with a positive loss: d(a,p) − d(a,n) + margin > 0."""
    gather_distributed = V.check_bool("gather_distributed", gather_distributed)
    margin = V.check_finite_number("margin", margin)
    metric = _metric(distance, squared)
    x, y, r, ry = _prep(*_gathered(embeddings, labels, gather_distributed), ref_embeddings, ref_labels, metric)
    if x.device.type == "cpu":
        return _split3(_mine_triplets(x, r, y, ry, "batch_all", margin, metric, op_threads(n_jobs)))
    return _ref().mine_batch_all(x, y, margin, metric, r, ry)


def semi_hard(
    embeddings: Any, labels: Any, margin: Optional[float] = None, squared: bool = False, ref_embeddings: Any = None,
    ref_labels: Any = None, *, distance: Optional[str] = None, n_jobs: Optional[int] = None, gather_distributed: bool = False,
) -> Triplets:
    """Per positive pair (a, p) of an anchor with negatives: the nearest negative
    with d(a,n) > d(a,p); if there is none, the farthest negative (FaceNet).

    With a ``margin``, only the triplets with d(a,n) < d(a,p) + margin are kept
    (those with a non-zero hinge loss).
    """
    gather_distributed = V.check_bool("gather_distributed", gather_distributed)
    if margin is not None:
        margin = V.check_finite_number("margin", margin)
    metric = _metric(distance, squared)
    x, y, r, ry = _prep(*_gathered(embeddings, labels, gather_distributed), ref_embeddings, ref_labels, metric)
    if x.device.type == "cpu":
        a, p, n = _split3(_mine_triplets(x, r, y, ry, "semi_hard", 0.0, metric, op_threads(n_jobs)))
    else:
        a, p, n = _ref().mine_semi_hard(x, y, metric, r, ry)
    if margin is not None:
        from ..reference.pairs import tuple_dist

        rr = x if r is None else r
        keep = tuple_dist(x, rr, a, p, metric) - tuple_dist(x, rr, a, n, metric) + margin > 0
        a, p, n = a[keep], p[keep], n[keep]
    return a, p, n


def triplet_margin(
    embeddings: Any, labels: Any, margin: float = 0.2, type: str = "all", ref_embeddings: Any = None, ref_labels: Any = None,
    *, distance: str = "euclidean", n_jobs: Optional[int] = None, gather_distributed: bool = False,
) -> Triplets:
    """PML's ``TripletMarginMiner``: valid triplets by t = d(a,n) − d(a,p):
    ``"all"``: t ≤ margin (the triplets with a non-zero hinge loss, and ties); ``"hard"``: t ≤ margin and
    t ≤ 0 (the negative is at least as close as the positive); ``"semihard"``: 0 < t ≤ margin;
    ``"easy"``: t > margin. Cost O(output + B log B) per anchor (sorted negatives), never B³ memory."""
    gather_distributed = V.check_bool("gather_distributed", gather_distributed)
    check_choice("type", type, TRIPLET_TYPES)
    margin = V.check_finite_number("margin", margin)
    metric = _metric(distance, None)
    x, y, r, ry = _prep(*_gathered(embeddings, labels, gather_distributed), ref_embeddings, ref_labels, metric)
    if x.device.type == "cpu":
        return _split3(_mine_triplet_margin(x, r, y, ry, margin, type, metric, op_threads(n_jobs)))
    return _ref().mine_triplet_margin(x, y, margin, type, metric, r, ry)


# ----------------------------------------------------------------- pair miners


def pair_margin(
    embeddings: Any, labels: Any, pos_margin: float = 0.2, neg_margin: float = 0.8, ref_embeddings: Any = None,
    ref_labels: Any = None, *, distance: str = "euclidean", n_jobs: Optional[int] = None, gather_distributed: bool = False,
) -> Pairs:
    """PML's ``PairMarginMiner``: positive pairs with d > pos_margin, negative pairs with d < neg_margin."""
    gather_distributed = V.check_bool("gather_distributed", gather_distributed)
    pm = V.check_finite_number("pos_margin", pos_margin)
    nm = V.check_finite_number("neg_margin", neg_margin)
    metric = _metric(distance, None)
    x, y, r, ry = _prep(*_gathered(embeddings, labels, gather_distributed), ref_embeddings, ref_labels, metric)
    if x.device.type == "cpu":
        return _split4(*_mine_pair_margin(x, r, y, ry, pm, nm, metric, op_threads(n_jobs)))
    return _ref().mine_pair_margin(x, y, pm, nm, metric, r, ry)


def multi_similarity(
    embeddings: Any, labels: Any, epsilon: float = 0.1, ref_embeddings: Any = None, ref_labels: Any = None,
    *, n_jobs: Optional[int] = None, gather_distributed: bool = False,
) -> Pairs:
    """Multi-similarity pair mining (Wang et al. 2019; PML's ``MultiSimilarityMiner``) on cosine similarity S:
    for an anchor with positives and negatives, negatives with S_an + ε > min_p S_ap and positives with
    S_ap − ε < max_n S_an."""
    gather_distributed = V.check_bool("gather_distributed", gather_distributed)
    eps = V.check_finite_number("epsilon", epsilon)
    x, y, r, ry = _prep(*_gathered(embeddings, labels, gather_distributed), ref_embeddings, ref_labels, "cosine")
    if x.device.type == "cpu":
        return _split4(*_mine_multi_similarity(x, r, y, ry, eps, op_threads(n_jobs)))
    return _ref().mine_multi_similarity(x, y, eps, r, ry)


def distance_weighted(
    embeddings: Any, labels: Any, cutoff: float = 0.5, nonzero_loss_cutoff: float = 1.4, ref_embeddings: Any = None,
    ref_labels: Any = None, *, random_state: Optional[int] = None, n_jobs: Optional[int] = None, gather_distributed: bool = False,
) -> Triplets:
    """Distance-weighted sampling (Wu et al. 2017; PML's ``DistanceWeightedMiner``) on normalised rows.

    For each (anchor, positive) pair one negative is drawn with probability ∝ w(d), where
    q = max(d, cutoff) and w = q^(2−dim) · (1 − q²/4)^(−(dim−3)/2) (the inverse of the density of
    distances between uniform points on the sphere), w = 0 for d ≥ ``nonzero_loss_cutoff``.
    Weights are normalised per anchor (PML normalises by the batch maximum, which underflows to
    no triplets in high dimensions). Seeded by ``random_state`` (an int; None draws one from
    torch's generator): the same result for any ``n_jobs``.
    """
    gather_distributed = V.check_bool("gather_distributed", gather_distributed)
    cutoff = V.check_finite_number("cutoff", cutoff, nonneg=True)
    nz = V.check_finite_number("nonzero_loss_cutoff", nonzero_loss_cutoff, nonneg=True)
    if random_state is None:
        seed = int(torch.randint(0, 2**62, (1,)).item())
    elif isinstance(random_state, bool) or not isinstance(random_state, int) or random_state < 0:
        from ..errors import InvalidParameterError

        raise InvalidParameterError(f"random_state must be None or a non-negative int, got {random_state!r}")
    else:
        seed = random_state
    x, y, r, ry = _prep(*_gathered(embeddings, labels, gather_distributed), ref_embeddings, ref_labels, "cosine")
    if x.device.type == "cpu":
        return _split3(_mine_distance_weighted(x, r, y, ry, cutoff, nz, seed, op_threads(n_jobs)))
    # Other devices: sample from the reference weights with a seeded torch generator.
    w = _ref().distance_weighted_weights(x, y, cutoff, nz, r, ry)
    from ..reference.pairs import _masks

    pos, _ = _masks(y, ry)
    a, p = (pos & (w.sum(1, keepdim=True) > 0)).nonzero(as_tuple=True)
    if a.numel() == 0:
        return a, p, p.clone()
    gen = torch.Generator(device=w.device).manual_seed(seed)
    n = torch.multinomial(w[a], 1, generator=gen)[:, 0]
    return a, p, n


# ----------------------------------------------------------------- PML-style miner objects


class _Miner:
    """A configured miner called like pytorch-metric-learning's: ``miner(embeddings, labels, ref_emb=None, ref_labels=None)``."""

    def __init__(self, fn: Any, **params: Any) -> None:
        self._fn, self.params = fn, params

    def __call__(self, embeddings: Any, labels: Any, ref_emb: Any = None, ref_labels: Any = None) -> Any:
        return self._fn(embeddings, labels, ref_embeddings=ref_emb, ref_labels=ref_labels, **self.params)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"{type(self).__name__}({args})"


class BatchHardMiner(_Miner):
    """:func:`batch_hard` as an object (PML's ``BatchHardMiner``)."""

    def __init__(self, *, distance: str = "euclidean", n_jobs: Optional[int] = None,
                 gather_distributed: bool = False) -> None:
        super().__init__(batch_hard, distance=distance, n_jobs=n_jobs,
                         gather_distributed=gather_distributed)


class BatchAllMiner(_Miner):
    """:func:`batch_all` as an object: every valid triplet with a positive hinge loss."""

    def __init__(self, margin: float = 0.2, *, distance: str = "euclidean", n_jobs: Optional[int] = None,
                 gather_distributed: bool = False) -> None:
        super().__init__(batch_all, margin=margin, distance=distance, n_jobs=n_jobs,
                         gather_distributed=gather_distributed)


class SemiHardMiner(_Miner):
    """:func:`semi_hard` as an object (FaceNet's semi-hard negatives)."""

    def __init__(self, margin: Optional[float] = None, *, distance: str = "euclidean", n_jobs: Optional[int] = None,
                 gather_distributed: bool = False) -> None:
        super().__init__(semi_hard, margin=margin, distance=distance, n_jobs=n_jobs,
                         gather_distributed=gather_distributed)


class TripletMarginMiner(_Miner):
    """:func:`triplet_margin` as an object (PML's ``TripletMarginMiner(margin, type_of_triplets)``)."""

    def __init__(self, margin: float = 0.2, type_of_triplets: str = "all", *, distance: str = "euclidean",
                 n_jobs: Optional[int] = None,
                 gather_distributed: bool = False) -> None:
        super().__init__(triplet_margin, margin=margin, type=type_of_triplets, distance=distance, n_jobs=n_jobs,
                         gather_distributed=gather_distributed)


class PairMarginMiner(_Miner):
    """:func:`pair_margin` as an object (PML's ``PairMarginMiner``)."""

    def __init__(self, pos_margin: float = 0.2, neg_margin: float = 0.8, *, distance: str = "euclidean",
                 n_jobs: Optional[int] = None,
                 gather_distributed: bool = False) -> None:
        super().__init__(pair_margin, pos_margin=pos_margin, neg_margin=neg_margin, distance=distance, n_jobs=n_jobs,
                         gather_distributed=gather_distributed)


class MultiSimilarityMiner(_Miner):
    """:func:`multi_similarity` as an object (PML's ``MultiSimilarityMiner``)."""

    def __init__(self, epsilon: float = 0.1, *, n_jobs: Optional[int] = None,
                 gather_distributed: bool = False) -> None:
        super().__init__(multi_similarity, epsilon=epsilon, n_jobs=n_jobs,
                         gather_distributed=gather_distributed)


class DistanceWeightedMiner(_Miner):
    """:func:`distance_weighted` as an object (PML's ``DistanceWeightedMiner``); a fixed ``random_state`` makes
    every call draw the same way for the same inputs."""

    def __init__(self, cutoff: float = 0.5, nonzero_loss_cutoff: float = 1.4, *, random_state: Optional[int] = None,
                 n_jobs: Optional[int] = None,
                 gather_distributed: bool = False) -> None:
        super().__init__(distance_weighted, cutoff=cutoff, nonzero_loss_cutoff=nonzero_loss_cutoff,
                         random_state=random_state, n_jobs=n_jobs,
                         gather_distributed=gather_distributed)


__all__ += ["BatchHardMiner", "BatchAllMiner", "SemiHardMiner", "TripletMarginMiner", "PairMarginMiner",
            "MultiSimilarityMiner", "DistanceWeightedMiner"]
