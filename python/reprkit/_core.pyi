"""Type stubs of the compiled module reprkit._core (thin bindings over the Rust kernels)."""

from typing import Any, Optional, Tuple

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

# --- losses (reprkit.autograd.losses); backward variants return gradients for a unit upstream gradient
def contrastive_loss(
    x: npt.NDArray[np.floating],
    labels: npt.NDArray[np.int64],
    ref_x: Optional[npt.NDArray[np.floating]],
    ref_labels: Optional[npt.NDArray[np.int64]],
    margin: float,
    backward: bool,
    n_threads: int,
) -> Any: ...
def triplet_loss(
    x: npt.NDArray[np.floating],
    labels: npt.NDArray[np.int64],
    ref_x: Optional[npt.NDArray[np.floating]],
    ref_labels: Optional[npt.NDArray[np.int64]],
    margin: float,
    mining: str,
    squared: bool,
    soft: bool,
    triplets: Optional[npt.NDArray[np.int64]],
    norm: float,
    n_threads: int,
) -> Any: ...
def mine_triplets(
    x: npt.NDArray[np.floating],
    labels: npt.NDArray[np.int64],
    ref_x: Optional[npt.NDArray[np.floating]],
    ref_labels: Optional[npt.NDArray[np.int64]],
    kind: str,
    margin: float,
    squared: bool,
    n_threads: int,
) -> npt.NDArray[np.int64]: ...
def lifted_loss(
    x: npt.NDArray[np.floating],
    labels: npt.NDArray[np.int64],
    margin: float,
    hard: bool,
    lse: Optional[npt.NDArray[np.floating]],
    dl: Optional[npt.NDArray[np.floating]],
    nearest: Optional[npt.NDArray[np.int64]],
    n_threads: int,
) -> Any: ...
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
# --- spectral embeddings, PCA, classical MDS (reprkit.spectral / pca / mds) ---
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
