"""Type stubs of the compiled module reprkit._core (thin bindings over the Rust kernels)."""

from typing import Any, List, Optional, Tuple

import numpy as np
import numpy.typing as npt

__version__: str

def _pool_threads(n_threads: int) -> int: ...
def pairwise_distances(
    x: npt.NDArray[np.floating], y: Optional[npt.NDArray[np.floating]], metric: str, n_threads: int
) -> npt.NDArray[np.floating]: ...
def pairwise_distances_backward(
    x: npt.NDArray[np.floating],
    y: Optional[npt.NDArray[np.floating]],
    dist: npt.NDArray[np.floating],
    grad: npt.NDArray[np.floating],
    metric: str,
    n_threads: int,
) -> Tuple[npt.NDArray[np.floating], Optional[npt.NDArray[np.floating]]]:
    """Gradients of the distances; ``grad`` is (n, m) or broadcasts to it: (1, 1), (n, 1), (1, m)."""
    ...

# --- losses (reprkit.autograd.losses)
# Pair / triplet / lifted kernels: forwards return per-anchor (or per-tuple) values `per` and counts `cnt`
# (1-D, x's dtype; mean = sum(per) / sum(cnt)); backwards take g = dL/dper (1-D, x's dtype).
# metric: "euclidean" | "sqeuclidean" | "cosine" (cosine = ||u - v||^2 / 2 on rows the caller normalised).
# ref_x None means the partners are x itself: gradients of both roles go to gx and gref is None.
# mining / kind: "all" | "batch_all" | "batch_hard" | "semi_hard".
def contrastive_loss(
    x: npt.NDArray[np.floating],
    labels: npt.NDArray[np.int64],
    ref_x: Optional[npt.NDArray[np.floating]],
    ref_labels: Optional[npt.NDArray[np.int64]],
    margin: float,
    metric: str,
    n_threads: int,
) -> Tuple[npt.NDArray[np.floating], npt.NDArray[np.floating]]:
    """(per, cnt), each (n,): no refs per_i = 1/2 sum_{j!=i} l_ij, cnt_i = (n-1)/2; refs per_i = sum_j l_ij, cnt_i = m."""
    ...
def contrastive_loss_backward(
    x: npt.NDArray[np.floating],
    labels: npt.NDArray[np.int64],
    ref_x: Optional[npt.NDArray[np.floating]],
    ref_labels: Optional[npt.NDArray[np.int64]],
    margin: float,
    metric: str,
    g: npt.NDArray[np.floating],
    n_threads: int,
) -> Tuple[npt.NDArray[np.floating], Optional[npt.NDArray[np.floating]]]:
    """(gx, gref | None) of sum_i g_i per_i; g is (n,)."""
    ...
def triplet_loss(
    x: npt.NDArray[np.floating],
    labels: npt.NDArray[np.int64],
    ref_x: Optional[npt.NDArray[np.floating]],
    ref_labels: Optional[npt.NDArray[np.int64]],
    margin: float,
    mining: str,
    metric: str,
    soft: bool,
    n_threads: int,
) -> Tuple[npt.NDArray[np.floating], npt.NDArray[np.floating], npt.NDArray[np.int64]]:
    """(per, cnt, triplets): triplets (T, 3) mined for batch_hard / semi_hard, (0, 3) for all / batch_all."""
    ...
def triplet_loss_backward(
    x: npt.NDArray[np.floating],
    labels: npt.NDArray[np.int64],
    ref_x: Optional[npt.NDArray[np.floating]],
    ref_labels: Optional[npt.NDArray[np.int64]],
    margin: float,
    mining: str,
    metric: str,
    soft: bool,
    triplets: npt.NDArray[np.int64],
    g: npt.NDArray[np.floating],
    n_threads: int,
) -> Tuple[npt.NDArray[np.floating], Optional[npt.NDArray[np.floating]]]:
    """(gx, gref | None) of sum_a g_a per_a; triplets as returned by triplet_loss, g is (n,)."""
    ...
def mine_triplets(
    x: npt.NDArray[np.floating],
    labels: npt.NDArray[np.int64],
    ref_x: Optional[npt.NDArray[np.floating]],
    ref_labels: Optional[npt.NDArray[np.int64]],
    kind: str,
    margin: float,
    metric: str,
    n_threads: int,
) -> npt.NDArray[np.int64]:
    """(T, 3) (anchor, positive, negative) triplets in anchor, positive, negative order."""
    ...
def lifted_loss(
    x: npt.NDArray[np.floating],
    labels: npt.NDArray[np.int64],
    margin: float,
    hard: bool,
    metric: str,
    n_threads: int,
) -> Tuple[
    npt.NDArray[np.floating],
    npt.NDArray[np.floating],
    npt.NDArray[np.floating],
    npt.NDArray[np.floating],
    npt.NDArray[np.int64],
]:
    """(per, cnt, lse, dl, nearest): per_i = 1/2 sum over i's positives of relu(J)^2, cnt_i = #positives; the rest is state."""
    ...
def lifted_loss_backward(
    x: npt.NDArray[np.floating],
    labels: npt.NDArray[np.int64],
    margin: float,
    hard: bool,
    metric: str,
    lse: npt.NDArray[np.floating],
    dl: npt.NDArray[np.floating],
    nearest: npt.NDArray[np.int64],
    g: npt.NDArray[np.floating],
    n_threads: int,
) -> npt.NDArray[np.floating]:
    """gx of sum_i g_i per_i; lse, dl, nearest exactly as lifted_loss returned them, g is (n,)."""
    ...
def pair_tuple_loss(
    x: npt.NDArray[np.floating],
    ref_x: Optional[npt.NDArray[np.floating]],
    a1: npt.NDArray[np.int64],
    p: npt.NDArray[np.int64],
    a2: npt.NDArray[np.int64],
    n: npt.NDArray[np.int64],
    margin: float,
    metric: str,
    n_threads: int,
) -> npt.NDArray[np.floating]:
    """per (P+N,): d^2 of each positive pair (x[a1], r[p]), then max(0, margin - d)^2 of each negative pair (x[a2], r[n])."""
    ...
def pair_tuple_loss_backward(
    x: npt.NDArray[np.floating],
    ref_x: Optional[npt.NDArray[np.floating]],
    a1: npt.NDArray[np.int64],
    p: npt.NDArray[np.int64],
    a2: npt.NDArray[np.int64],
    n: npt.NDArray[np.int64],
    margin: float,
    metric: str,
    g: npt.NDArray[np.floating],
    n_threads: int,
) -> Tuple[npt.NDArray[np.floating], Optional[npt.NDArray[np.floating]]]:
    """(gx, gref | None) of sum_k g_k per_k; g is (P+N,)."""
    ...
def triplet_tuple_loss(
    x: npt.NDArray[np.floating],
    ref_x: Optional[npt.NDArray[np.floating]],
    a: npt.NDArray[np.int64],
    p: npt.NDArray[np.int64],
    n: npt.NDArray[np.int64],
    margin: float,
    metric: str,
    soft: bool,
    n_threads: int,
) -> npt.NDArray[np.floating]:
    """per (T,): max(0, d(x[a], r[p]) - d(x[a], r[n]) + margin), softplus when soft."""
    ...
def triplet_tuple_loss_backward(
    x: npt.NDArray[np.floating],
    ref_x: Optional[npt.NDArray[np.floating]],
    a: npt.NDArray[np.int64],
    p: npt.NDArray[np.int64],
    n: npt.NDArray[np.int64],
    margin: float,
    metric: str,
    soft: bool,
    g: npt.NDArray[np.floating],
    n_threads: int,
) -> Tuple[npt.NDArray[np.floating], Optional[npt.NDArray[np.floating]]]:
    """(gx, gref | None) of sum_k g_k per_k; g is (T,)."""
    ...

# --- cross-entropy losses: backward variants return gradients for a unit upstream gradient
def xent_loss(
    q: npt.NDArray[np.floating],
    k: Optional[npt.NDArray[np.floating]],
    scale: float,
    targets: npt.NDArray[np.int64],
    mask: str,
    tail: int,
    lse: Optional[npt.NDArray[np.floating]],
    n_threads: int,
) -> Any: ...
def xent_loss_fused(
    q: npt.NDArray[np.floating],
    k: Optional[npt.NDArray[np.floating]],
    scale: float,
    targets: npt.NDArray[np.int64],
    mask: str,
    tail: int,
    n_threads: int,
) -> Tuple[float, npt.NDArray[np.floating], Optional[npt.NDArray[np.floating]]]: ...
# --- DINO (rust/py/src/distillation.rs): views are lists of C-contiguous (B, K) arrays of one dtype, center (K,);
# forward returns (loss, teacher lse (T*B,), student lse (S*B,)); backward returns the S student gradients.
def dino_loss(
    teacher: List[npt.NDArray[np.floating]],
    student: List[npt.NDArray[np.floating]],
    center: npt.NDArray[np.floating],
    teacher_temp: float,
    student_temp: float,
    n_threads: int,
) -> Tuple[float, npt.NDArray[np.floating], npt.NDArray[np.floating]]: ...
def dino_loss_backward(
    teacher: List[npt.NDArray[np.floating]],
    student: List[npt.NDArray[np.floating]],
    center: npt.NDArray[np.floating],
    teacher_lse: npt.NDArray[np.floating],
    student_lse: npt.NDArray[np.floating],
    teacher_temp: float,
    student_temp: float,
    g: float,
    n_threads: int,
) -> List[npt.NDArray[np.floating]]: ...
def xent_loss_rows(
    q: npt.NDArray[np.floating],
    k: Optional[npt.NDArray[np.floating]],
    scale: float,
    targets: npt.NDArray[np.int64],
    mask: str,
    tail: int,
    n_threads: int,
) -> Tuple[npt.NDArray[np.floating], npt.NDArray[np.floating]]:
    """(per, lse), both (n,) in q's dtype: per_i = lse_i - s_{i,t_i} >= 0 (rust/py/src/xent_rows.rs)."""
    ...
def xent_loss_rows_backward(
    q: npt.NDArray[np.floating],
    k: Optional[npt.NDArray[np.floating]],
    scale: float,
    targets: npt.NDArray[np.int64],
    mask: str,
    tail: int,
    lse: npt.NDArray[np.floating],
    g: npt.NDArray[np.floating],
    n_threads: int,
) -> Tuple[npt.NDArray[np.floating], Optional[npt.NDArray[np.floating]]]:
    """(gq, gk | None) of sum_i g_i per_i; lse and g are (n,) in q's dtype (k None: both roles in gq)."""
    ...

# multimodal (CLIP, SigLIP): image and text features of one shape (n, d), one float dtype
def clip_loss(
    image_features: npt.NDArray[np.floating], text_features: npt.NDArray[np.floating], scale: float, n_threads: int
) -> Tuple[float, npt.NDArray[np.floating], npt.NDArray[np.floating]]: ...
def clip_loss_backward(
    image_features: npt.NDArray[np.floating],
    text_features: npt.NDArray[np.floating],
    scale: float,
    lse_rows: npt.NDArray[np.floating],
    lse_cols: npt.NDArray[np.floating],
    g: float,
    n_threads: int,
) -> Tuple[npt.NDArray[np.floating], npt.NDArray[np.floating], float]: ...
def siglip_loss(
    image_features: npt.NDArray[np.floating],
    text_features: npt.NDArray[np.floating],
    scale: float,
    bias: float,
    need_grad: bool,
    n_threads: int,
) -> Tuple[float, Optional[npt.NDArray[np.floating]], Optional[npt.NDArray[np.floating]], float, float]: ...
# --- miners and per-anchor pair-similarity losses (rust/py/src/pairs.rs). metric: "euclidean" | "sqeuclidean" |
# "cosine" (1 - cos on unit rows); ref_x/ref_labels None = the batch itself; index outputs are int64, (anchor, ...)
# rows ordered by anchor then reference index; losses take unit rows (cosine similarity = x·r) and return per-anchor
# (per, cnt) of x's dtype; backward takes g = dL/dper (n,) and returns (gx, gref | None).
def mine_triplet_margin(
    x: npt.NDArray[np.floating],
    labels: npt.NDArray[np.int64],
    ref_x: Optional[npt.NDArray[np.floating]],
    ref_labels: Optional[npt.NDArray[np.int64]],
    margin: float,
    type: str,
    metric: str,
    n_threads: int,
) -> npt.NDArray[np.int64]:
    """(T, 3) triplets with t = d_an - d_ap meeting type: "all" t <= margin, "hard" also t <= 0, "semihard" 0 < t <= margin, "easy" t > margin."""
    ...
def mine_pair_margin(
    x: npt.NDArray[np.floating],
    labels: npt.NDArray[np.int64],
    ref_x: Optional[npt.NDArray[np.floating]],
    ref_labels: Optional[npt.NDArray[np.int64]],
    pos_margin: float,
    neg_margin: float,
    metric: str,
    n_threads: int,
) -> Tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """(pos (P, 2), neg (N, 2)): positive pairs with d > pos_margin, negative pairs with d < neg_margin."""
    ...
def mine_multi_similarity(
    x: npt.NDArray[np.floating],
    labels: npt.NDArray[np.int64],
    ref_x: Optional[npt.NDArray[np.floating]],
    ref_labels: Optional[npt.NDArray[np.int64]],
    epsilon: float,
    n_threads: int,
) -> Tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """(pos (P, 2), neg (N, 2)) on S = x·r of unit rows: negatives with S + eps > min positive S, positives with S - eps < max negative S."""
    ...
def mine_distance_weighted(
    x: npt.NDArray[np.floating],
    labels: npt.NDArray[np.int64],
    ref_x: Optional[npt.NDArray[np.floating]],
    ref_labels: Optional[npt.NDArray[np.int64]],
    cutoff: float,
    nonzero_loss_cutoff: float,
    seed: int,
    n_threads: int,
) -> npt.NDArray[np.int64]:
    """(T, 3): one negative per (anchor, positive) pair drawn with probability proportional to the Wu et al. weight (unit rows)."""
    ...
def multi_similarity_loss(
    x: npt.NDArray[np.floating],
    labels: npt.NDArray[np.int64],
    ref_x: Optional[npt.NDArray[np.floating]],
    ref_labels: Optional[npt.NDArray[np.int64]],
    alpha: float,
    beta: float,
    base: float,
    n_threads: int,
) -> Tuple[npt.NDArray[np.floating], npt.NDArray[np.floating]]:
    """(per (n,), cnt (n,)) of the Multi-Similarity loss; cnt is 1 for every anchor."""
    ...
def multi_similarity_loss_backward(
    x: npt.NDArray[np.floating],
    labels: npt.NDArray[np.int64],
    ref_x: Optional[npt.NDArray[np.floating]],
    ref_labels: Optional[npt.NDArray[np.int64]],
    alpha: float,
    beta: float,
    base: float,
    g: npt.NDArray[np.floating],
    n_threads: int,
) -> Tuple[npt.NDArray[np.floating], Optional[npt.NDArray[np.floating]]]:
    """(gx, gref | None) = sum_i g_i dper_i/d(x, ref_x)."""
    ...
def circle_loss(
    x: npt.NDArray[np.floating],
    labels: npt.NDArray[np.int64],
    ref_x: Optional[npt.NDArray[np.floating]],
    ref_labels: Optional[npt.NDArray[np.int64]],
    m: float,
    gamma: float,
    n_threads: int,
) -> Tuple[npt.NDArray[np.floating], npt.NDArray[np.floating]]:
    """(per (n,), cnt (n,)) of the Circle loss; per is 0 without a positive and a negative, cnt = [per > 0]."""
    ...
def circle_loss_backward(
    x: npt.NDArray[np.floating],
    labels: npt.NDArray[np.int64],
    ref_x: Optional[npt.NDArray[np.floating]],
    ref_labels: Optional[npt.NDArray[np.int64]],
    m: float,
    gamma: float,
    g: npt.NDArray[np.floating],
    n_threads: int,
) -> Tuple[npt.NDArray[np.floating], Optional[npt.NDArray[np.floating]]]:
    """(gx, gref | None) = sum_i g_i dper_i/d(x, ref_x), alpha_p / alpha_n held constant."""
    ...
def multi_similarity_pairs_loss(
    x: npt.NDArray[np.floating],
    ref_x: Optional[npt.NDArray[np.floating]],
    a1: npt.NDArray[np.int64],
    p: npt.NDArray[np.int64],
    a2: npt.NDArray[np.int64],
    n: npt.NDArray[np.int64],
    alpha: float,
    beta: float,
    base: float,
    n_threads: int,
) -> Tuple[npt.NDArray[np.floating], npt.NDArray[np.floating]]:
    """(per (n_rows,), cnt (n_rows,)) over the given pairs (a1[k], p[k]) and (a2[k], n[k]); duplicates count as given."""
    ...
def multi_similarity_pairs_loss_backward(
    x: npt.NDArray[np.floating],
    ref_x: Optional[npt.NDArray[np.floating]],
    a1: npt.NDArray[np.int64],
    p: npt.NDArray[np.int64],
    a2: npt.NDArray[np.int64],
    n: npt.NDArray[np.int64],
    alpha: float,
    beta: float,
    base: float,
    g: npt.NDArray[np.floating],
    n_threads: int,
) -> Tuple[npt.NDArray[np.floating], Optional[npt.NDArray[np.floating]]]:
    """(gx, gref | None) = sum_i g_i dper_i/d(x, ref_x) over the given pairs."""
    ...
def circle_pairs_loss(
    x: npt.NDArray[np.floating],
    ref_x: Optional[npt.NDArray[np.floating]],
    a1: npt.NDArray[np.int64],
    p: npt.NDArray[np.int64],
    a2: npt.NDArray[np.int64],
    n: npt.NDArray[np.int64],
    m: float,
    gamma: float,
    n_threads: int,
) -> Tuple[npt.NDArray[np.floating], npt.NDArray[np.floating]]:
    """(per (n_rows,), cnt (n_rows,)) of the Circle loss over the given pairs; cnt = [per > 0]."""
    ...
def circle_pairs_loss_backward(
    x: npt.NDArray[np.floating],
    ref_x: Optional[npt.NDArray[np.floating]],
    a1: npt.NDArray[np.int64],
    p: npt.NDArray[np.int64],
    a2: npt.NDArray[np.int64],
    n: npt.NDArray[np.int64],
    m: float,
    gamma: float,
    g: npt.NDArray[np.floating],
    n_threads: int,
) -> Tuple[npt.NDArray[np.floating], Optional[npt.NDArray[np.floating]]]:
    """(gx, gref | None) = sum_i g_i dper_i/d(x, ref_x) over the given pairs."""
    ...
# --- spectral embeddings, PCA, classical MDS (reprkit.spectral / pca / mds) ---
def proxy_anchor_loss(
    u: npt.NDArray[np.floating],
    w: npt.NDArray[np.floating],
    labels: npt.NDArray[np.int64],
    margin: float,
    alpha: float,
    n_threads: int,
) -> Tuple[npt.NDArray[np.floating], npt.NDArray[np.floating], npt.NDArray[np.floating]]:
    """(pos (C,), neg (C,), count (C,)): Proxy-Anchor's per-class terms on unit rows u and raw proxies w."""
    ...
def proxy_anchor_loss_backward(
    u: npt.NDArray[np.floating],
    w: npt.NDArray[np.floating],
    labels: npt.NDArray[np.int64],
    margin: float,
    alpha: float,
    pos: npt.NDArray[np.floating],
    neg: npt.NDArray[np.floating],
    g_pos: npt.NDArray[np.floating],
    g_neg: npt.NDArray[np.floating],
    n_threads: int,
) -> Tuple[npt.NDArray[np.floating], npt.NDArray[np.floating]]:
    """(gu (B, d), gw (C, d)) = sum_c g_pos_c dpos_c + g_neg_c dneg_c."""
    ...
def proxy_nca_loss(
    u: npt.NDArray[np.floating],
    w: npt.NDArray[np.floating],
    labels: npt.NDArray[np.int64],
    sigma: float,
    n_threads: int,
) -> Tuple[npt.NDArray[np.floating], npt.NDArray[np.floating]]:
    """(per (B,), lse (B,)): Proxy-NCA's per-sample terms with logits sigma*cos."""
    ...
def proxy_nca_loss_backward(
    u: npt.NDArray[np.floating],
    w: npt.NDArray[np.floating],
    labels: npt.NDArray[np.int64],
    sigma: float,
    lse: npt.NDArray[np.floating],
    g: npt.NDArray[np.floating],
    n_threads: int,
) -> Tuple[npt.NDArray[np.floating], npt.NDArray[np.floating]]:
    """(gu (B, d), gw (C, d)) = sum_i g_i dper_i."""
    ...
def knn_affinity(
    x: npt.NDArray[np.floating], n_neighbors: int, weights: str, t: Optional[float], n_threads: int
) -> Tuple[npt.NDArray[np.int64], npt.NDArray[np.int32], npt.NDArray[np.float64], float]: ...
def laplacian_eigenmaps(
    indptr: npt.NDArray[np.int64],
    indices: npt.NDArray[np.int32],
    data: npt.NDArray[np.float64],
    n: int,
    n_components: int,
    normalized: bool,
    seed: int,
    tol: float,
    n_threads: int,
) -> Tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], int]: ...
def pca_fit(
    x: npt.NDArray[np.floating],
    n_components: int,
    solver: str,
    n_iter: int,
    n_oversamples: int,
    seed: int,
    want_scores: bool,
    n_threads: int,
) -> Tuple[
    npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.float64], float, Optional[npt.NDArray[np.floating]]
]: ...
def classical_mds(
    x: npt.NDArray[np.floating], n_components: int, precomputed: bool, seed: int, n_threads: int
) -> Tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], float]: ...
# --- t-SNE (reprkit.sne) ---
def tsne_affinities(
    x: npt.NDArray[np.floating], perplexity: float, k: int, metric: str, neighbors: str, n_threads: int, seed: int
) -> Tuple[
    npt.NDArray[np.int64], npt.NDArray[np.int32], npt.NDArray[np.float64], npt.NDArray[np.int32], npt.NDArray[np.float64]
]: ...
def tsne_calibrate(dist: npt.NDArray[np.float64], perplexity: float, n_threads: int) -> npt.NDArray[np.float64]: ...
def tsne_transform(
    ref_y: npt.NDArray[np.float64],
    indptr: npt.NDArray[np.int64],
    indices: npt.NDArray[np.int32],
    data: npt.NDArray[np.float64],
    y0: npt.NDArray[np.float64],
    dof: float,
    angle: float,
    n_iter: int,
    learning_rate: float,
    momentum: float,
    max_step_norm: float,
    n_threads: int,
) -> npt.NDArray[np.float64]: ...
def tsne_kl(
    indptr: npt.NDArray[np.int64],
    indices: npt.NDArray[np.int32],
    data: npt.NDArray[np.float64],
    y: npt.NDArray[np.float64],
    dof: float,
    n_threads: int,
) -> float: ...

class TsneOptimizer:
    def __init__(
        self,
        indptr: npt.NDArray[np.int64],
        indices: npt.NDArray[np.int32],
        data: npt.NDArray[np.float64],
        y0: npt.NDArray[np.float64],
        kernel: str,
        dof: float,
        method: str,
        angle: float,
        cond: Optional[Tuple[npt.NDArray[np.int32], npt.NDArray[np.float64]]] = None,
    ) -> None: ...
    def run(
        self,
        n_iter: int,
        exaggeration: float,
        momentum: float,
        learning_rate: float,
        max_step_norm: float,
        n_threads: int,
        want_kl: bool,
    ) -> float: ...
    def embedding(self) -> npt.NDArray[np.float64]: ...
    def gradient(
        self, y: npt.NDArray[np.float64], exaggeration: float, n_threads: int
    ) -> Tuple[npt.NDArray[np.float64], float]: ...
    @staticmethod
    def from_held(
        held: "HeldAffinities", y0: npt.NDArray[np.float64], kernel: str, dof: float, method: str, angle: float
    ) -> "TsneOptimizer": ...
    def take_affinities(self) -> Tuple[npt.NDArray[np.int64], npt.NDArray[np.int32], npt.NDArray[np.float64]]: ...

class HeldAffinities:
    """t-SNE's symmetric P kept in Rust (tsne_p_held) until TsneOptimizer.from_held takes it."""

    def n(self) -> int: ...
    def nnz(self) -> int: ...
    def arrays(self) -> Tuple[npt.NDArray[np.int64], npt.NDArray[np.int32], npt.NDArray[np.float64]]: ...
def margin_loss(
    z: npt.NDArray[Any],
    w: npt.NDArray[Any],
    labels: npt.NDArray[np.int64],
    margins: npt.NDArray[np.float64],
    scale: float,
    kind: str,
    easy_margin: bool,
    sub_centers: int,
    lse: Optional[npt.NDArray[Any]],
    g: float,
    n_threads: int,
) -> Any:
    """kind "linear" | "normalized" | "cosface" | "arcface"; lse None -> (loss, lse (n,)); else (grad_z, grad_w) for upstream g."""
    ...
def margin_loss_fused(
    z: npt.NDArray[Any],
    w: npt.NDArray[Any],
    labels: npt.NDArray[np.int64],
    margins: npt.NDArray[np.float64],
    scale: float,
    kind: str,
    easy_margin: bool,
    sub_centers: int,
    need_z: bool,
    need_w: bool,
    n_threads: int,
) -> Tuple[float, npt.NDArray[Any], npt.NDArray[Any]]:
    """(loss, ∂L/∂z (n, d) or (0, d) without need_z, ∂L/∂W (C·K, d) or (0, d) without need_w) in one pass (3 GEMMs)."""
    ...

# --- SupCon and uniformity (rust/py/src/supcon.rs): loss and, with need_grad, its unit-upstream gradient
def supcon_loss(
    z: npt.NDArray[np.floating], scale: float, groups: npt.NDArray[np.int64], need_grad: bool, n_threads: int
) -> Tuple[float, Optional[npt.NDArray[np.floating]]]: ...
def uniformity_loss(
    x: npt.NDArray[np.floating], t: float, need_grad: bool, n_threads: int
) -> Tuple[float, Optional[npt.NDArray[np.floating]]]: ...

def offdiag_sq_loss(
    a: npt.NDArray[np.floating],
    b: Optional[npt.NDArray[np.floating]],
    path: str,
    need_grad: bool,
    n_threads: int,
) -> Tuple[float, Optional[npt.NDArray[np.floating]], Optional[npt.NDArray[np.floating]]]: ...

def multi_similarity_loss_fused(
    x: npt.NDArray[np.floating], labels: npt.NDArray[np.int64], ref_x: Optional[npt.NDArray[np.floating]], ref_labels: Optional[npt.NDArray[np.int64]],
    alpha: float, beta: float, base: float, n_threads: int,
) -> Tuple[npt.NDArray[np.floating], npt.NDArray[np.floating], npt.NDArray[np.floating], Optional[npt.NDArray[np.floating]]]:
    """(per, cnt, ∂Σper/∂x, ∂Σper/∂refs | None) in one pass over the similarity tiles."""

def circle_loss_fused(
    x: npt.NDArray[np.floating], labels: npt.NDArray[np.int64], ref_x: Optional[npt.NDArray[np.floating]], ref_labels: Optional[npt.NDArray[np.int64]],
    m: float, gamma: float, n_threads: int,
) -> Tuple[npt.NDArray[np.floating], npt.NDArray[np.floating], npt.NDArray[np.floating], Optional[npt.NDArray[np.floating]]]:
    """(per, cnt, ∂Σper/∂x, ∂Σper/∂refs | None) in one pass (α weights held constant)."""

# reprkit.metrics (rust/py/src/metrics.rs)
def knn_query(
    query: npt.NDArray[np.floating], reference: Optional[npt.NDArray[np.floating]], k: int, metric: str,
    exclude: Optional[npt.NDArray[np.int64]], n_threads: int,
) -> Tuple[npt.NDArray[np.int64], npt.NDArray[np.floating]]:
    """Exact kNN (indices (nq, k), distances (nq, k)); reference=None: the queries, each skipping itself."""
def retrieval_scores(
    query: npt.NDArray[np.floating], query_labels: npt.NDArray[np.int64], reference: Optional[npt.NDArray[np.floating]],
    reference_labels: Optional[npt.NDArray[np.int64]], k: Optional[int], metric: str, n_threads: int,
) -> Tuple[npt.NDArray[np.int64], npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Per query: (R, precision@1, R-precision, MAP@R, reciprocal rank), PML's definitions."""
def neighbour_ranks(
    x: npt.NDArray[np.floating], rows: Optional[npt.NDArray[np.int64]], neighbours: npt.NDArray[np.int64], k: int,
    metric: str, n_threads: int,
) -> npt.NDArray[np.int64]:
    """1-based ranks (m, k) of the given neighbours among the other rows of x (ties to the lower index)."""

# --- neighbour search shared by t-SNE and Laplacian eigenmaps (rust/py/src/knn.rs) ---
def knn_search(
    x: npt.NDArray[np.floating], k: int, metric: str, neighbors: str, seed: int, n_threads: int
) -> Tuple[npt.NDArray[np.int32], npt.NDArray[np.floating]]: ...
def tsne_p(
    x: npt.NDArray[np.floating],
    perplexity: float,
    k: int,
    metric: str,
    neighbors: str,
    seed: int,
    n_threads: int,
    want_cond: bool,
) -> Tuple[
    npt.NDArray[np.int64],
    npt.NDArray[np.int32],
    npt.NDArray[np.float64],
    Optional[Tuple[npt.NDArray[np.int64], npt.NDArray[np.int32], npt.NDArray[np.float64]]],
    float,
    float,
]: ...
def tsne_p_held(
    x: npt.NDArray[np.floating], perplexity: float, k: int, metric: str, neighbors: str, seed: int, n_threads: int
) -> Tuple[HeldAffinities, float, float]: ...
def tsne_p_sparse(
    indptr: npt.NDArray[np.int64],
    indices: npt.NDArray[np.int32],
    distances: npt.NDArray[np.float64],
    n: int,
    perplexity: float,
    k_max: int,
    min_neighbors: int,
    square: bool,
    n_threads: int,
    want_cond: bool,
) -> Tuple[
    npt.NDArray[np.int64],
    npt.NDArray[np.int32],
    npt.NDArray[np.float64],
    Optional[Tuple[npt.NDArray[np.int64], npt.NDArray[np.int32], npt.NDArray[np.float64]]],
    float,
    float,
]: ...
def knn_graph_affinity(
    x: npt.NDArray[np.floating], n_neighbors: int, weights: str, t: Optional[float], neighbors: str, seed: int, n_threads: int
) -> Tuple[npt.NDArray[np.int64], npt.NDArray[np.int32], npt.NDArray[np.float64], float]: ...

# --- SNE-family minibatch loss (rust/py/src/neighbor_embedding.rs): KL(P‖Q) for a CSR P over the batch
def neighbor_embedding_loss(
    y: npt.NDArray[np.floating],
    indptr: npt.NDArray[np.int64],
    indices: npt.NDArray[np.int64],
    data: npt.NDArray[np.float64],
    kernel: str,
    dof: float,
    normalization: str,
    exaggeration: float,
    need_grad: bool,
    n_threads: int,
) -> Tuple[float, Optional[npt.NDArray[np.floating]]]:
    """kernel "student" | "gaussian"; normalization "joint" | "conditional"; grad (unit upstream) with need_grad."""
    ...
