"""Laplacian eigenmaps (Belkin & Niyogi) and the spectral initialisation of t-SNE.

Given a symmetric non-negative affinity matrix W with degrees D = diag(W·1)
and Laplacian L = D − W, the embedding minimises

    Σ_ij w_ij ‖v_i − v_j‖²   subject to   Vᵀ D V = I   (and V ⊥_D 1),

whose solutions are the generalized eigenvectors ``L v = λ D v`` of the
smallest non-trivial eigenvalues. reprkit computes them as the largest
eigenvectors u of ``D^{-1/2} W D^{-1/2}`` (eigenvalue 1 − λ) with a
thick-restart Lanczos solver in Rust (dense for n ≤ 300) and returns
``v = D^{-1/2} u``; the constant solution (λ = 0) is dropped. Each column's
largest-magnitude entry is positive.
"""

from __future__ import annotations

import numbers
import warnings
from typing import Any, Optional, Tuple, Union

import numpy as np

from .. import _core
from ._checks import power_of_two_scale, scaled
from ._estimator import Estimator, as_input, as_output, check_int, seed_of
from ._knn_graph import mean_symmetrized_knn
from .._threads import resolve_n_jobs
from .._torch import is_tensor
from .._validation import check_choice
from ..errors import InvalidInputError, InvalidParameterError, NonFiniteError, ShapeError

__all__ = ["LaplacianEigenmaps", "spectral_init", "laplacian_eigenmaps"]

_WEIGHTS = ("heat", "connectivity")
#: ``neighbors="auto"``: exact kNN up to this many points, approximate above.
AUTO_EXACT_MAX_N = 5_000
_AFFINITIES = ("nearest_neighbors", "precomputed")


def _scipy_sparse() -> Any:
    try:
        import scipy.sparse as sp
    except ImportError as e:  # pragma: no cover - scipy is a runtime dependency
        from ..errors import MissingDependencyError

        raise MissingDependencyError("Laplacian eigenmaps need scipy (`pip install scipy`)") from e
    return sp


def _precomputed_affinity(a: Any) -> Tuple[Any, np.dtype]:
    """A CSR float64 copy of a precomputed affinity: square, finite, non-negative,
    symmetrised as (A + Aᵀ)/2 with a warning if needed, diagonal removed."""
    sp = _scipy_sparse()
    if sp.issparse(a):
        dtype = np.dtype(np.float32) if a.dtype == np.float32 else np.dtype(np.float64)
        if a.dtype.kind == "c":
            from ._checks import ComplexInputError

            raise ComplexInputError(f"Complex data not supported: the affinity matrix has dtype {a.dtype}")
        if a.dtype.kind not in "fiub":
            raise InvalidInputError(f"the affinity matrix has unsupported dtype {a.dtype}")
        w = sp.csr_matrix(a, dtype=np.float64, copy=True)
    else:
        arr, _ = as_input(a, "affinity matrix")
        dtype = arr.dtype
        w = sp.csr_matrix(arr.astype(np.float64, copy=False))
    if w.ndim != 2 or w.shape[0] != w.shape[1]:
        raise ShapeError(f"a precomputed affinity must be a square matrix, got shape {w.shape}")
    w.sum_duplicates()
    if not np.isfinite(w.data).all():
        raise NonFiniteError("the affinity matrix contains NaN or infinity")
    if (w.data < 0).any():
        raise InvalidInputError("affinities must be non-negative")
    w.setdiag(0)
    w.eliminate_zeros()
    w = scaled(w, power_of_two_scale(w))  # the embedding is invariant to W's scale; degrees must not overflow
    diff = abs(w - w.T)
    scale = float(abs(w).max()) if w.nnz else 0.0
    if diff.nnz and float(diff.max()) > 1e-10 * max(scale, np.finfo(float).tiny):
        warnings.warn(
            "the precomputed affinity matrix is not symmetric; using (A + A.T) / 2", UserWarning, stacklevel=4
        )
        w = ((w + w.T) * 0.5).tocsr()
    else:
        w = ((w + w.T) * 0.5).tocsr()  # exact symmetry for the Rust check
    w.sort_indices()
    return w, dtype


def _solve(w: Any, n_components: int, normalized: bool, seed: int, tol: float, n_threads: int) -> Tuple[np.ndarray, np.ndarray, int]:
    n = w.shape[0]
    emb, vals, n_cc = _core.laplacian_eigenmaps(
        np.ascontiguousarray(w.indptr, dtype=np.int64),
        np.ascontiguousarray(w.indices, dtype=np.int32),
        np.ascontiguousarray(w.data, dtype=np.float64),
        n,
        n_components,
        normalized,
        seed,
        tol,
        n_threads,
    )
    if n_cc > 1:
        warnings.warn(
            f"the affinity graph has {n_cc} connected components; the embedding is not unique. reprkit returns "
            f"the {min(n_cc - 1, n_components)} component-indicator coordinate(s) (eigenvalue 0) first, then the "
            "smallest non-zero eigenvalues. Increase n_neighbors to connect the graph.",
            UserWarning,
            stacklevel=4,
        )
    return emb, vals, n_cc


class LaplacianEigenmaps(Estimator):
    """Laplacian eigenmaps embedding of a kNN graph (or of a precomputed affinity).

    Parameters
    ----------
    n_components : embedding dimension (eigenvectors kept after dropping the trivial one).
    n_neighbors : neighbours per point of the exact kNN graph (self excluded); must be < n_samples.
    symmetrize : how the directed kNN graph A becomes symmetric. ``"union"`` (default):
        w_ij = kernel(d_ij) when either point is a neighbour of the other — Belkin & Niyogi's
        definition, and the default because it keeps reprkit's results and gives every kNN edge
        its full weight; ``"mean"``: W = (A + Aᵀ)/2, scikit-learn's ``SpectralEmbedding`` (a
        one-sided edge gets half weight). Note scikit-learn also counts each point as its own
        neighbour (``include_self=True``), so its ``n_neighbors=k`` matches reprkit's ``k − 1``
        with ``symmetrize="mean", weights="connectivity"``.
    weights : ``"heat"``: w_ij = exp(−‖x_i − x_j‖² / t); ``"connectivity"``: w_ij = 1.
    t : heat-kernel bandwidth, a positive float or ``"auto"`` = the median of the n·k
        squared kNN distances (if that is 0, the mean of the positive ones). The value
        used is stored in ``t_``.
    normalized : True solves ``L v = λ D v`` (normalised Laplacian, scikit-learn's default);
        False solves ``L v = λ v``.
    affinity : ``"nearest_neighbors"`` (X is data, n × d) or ``"precomputed"`` (X is a
        symmetric non-negative n × n affinity matrix, scipy sparse or dense; a non-symmetric
        one is replaced by (A + Aᵀ)/2 with a warning; the diagonal is ignored).
    neighbors : kNN search for ``affinity="nearest_neighbors"``: ``"exact"`` (tiled GEMM),
        ``"approx"`` (random-projection forest + NN-descent, as t-SNE's; recall ≥ 0.95 on
        our benchmarks, deterministic for ``random_state``) or ``"auto"`` (exact up to
        ``AUTO_EXACT_MAX_N`` = 5,000 points, approximate above).
    tol : relative Ritz-residual tolerance of the Lanczos solver.
    n_jobs : threads (None → reprkit's default); results do not depend on it.
    random_state : seed of the Lanczos start vector.

    Attributes
    ----------
    embedding_ : (n, n_components) numpy array in the input's float dtype (``fit_transform``
        returns the input's type: a tensor on the input's device and dtype for torch input).
    n_features_in_ : columns of X (n for a precomputed affinity).
    eigenvalues_ : the λ of each column, ascending.
    affinity_matrix_ : scipy.sparse CSR matrix W actually used.
    n_connected_components_ : number of connected components of the graph. With c > 1 a
        warning is issued and the first min(c − 1, n_components) columns are
        D-orthonormalised component indicators (λ = 0).
    t_ : bandwidth used (NaN for connectivity weights or precomputed affinities).
    """

    def __init__(
        self,
        n_components: int = 2,
        *,
        n_neighbors: int = 10,
        weights: str = "heat",
        t: Union[str, float] = "auto",
        normalized: bool = True,
        affinity: str = "nearest_neighbors",
        symmetrize: str = "union",
        tol: float = 1e-10,
        neighbors: str = "auto",
        n_jobs: Optional[int] = None,
        random_state: Any = None,
    ) -> None:
        self.n_components = n_components
        self.n_neighbors = n_neighbors
        self.weights = weights
        self.t = t
        self.normalized = normalized
        self.affinity = affinity
        self.symmetrize = symmetrize
        self.tol = tol
        self.neighbors = neighbors
        self.n_jobs = n_jobs
        self.random_state = random_state

    def _check_params(self) -> Optional[float]:
        check_int("n_components", self.n_components, 1)
        check_int("n_neighbors", self.n_neighbors, 1)
        check_choice("weights", self.weights, _WEIGHTS)
        check_choice("affinity", self.affinity, _AFFINITIES)
        check_choice("symmetrize", self.symmetrize, ("union", "mean"))
        check_choice("neighbors", self.neighbors, ("auto", "exact", "approx"))
        if not isinstance(self.normalized, (bool, np.bool_)):
            raise InvalidParameterError(f"normalized must be a bool, got {self.normalized!r}")
        if isinstance(self.tol, bool) or not (isinstance(self.tol, numbers.Real) and 0 < self.tol < 1):
            raise InvalidParameterError(f"tol must be in (0, 1), got {self.tol!r}")
        if isinstance(self.t, str):
            if self.t != "auto":
                raise InvalidParameterError(f"t must be 'auto' or a positive number, got {self.t!r}")
            return None
        if isinstance(self.t, bool) or not isinstance(self.t, numbers.Real) or not (0 < self.t < np.inf):
            raise InvalidParameterError(f"t must be 'auto' or a positive number, got {self.t!r}")
        return float(self.t)

    def _tag_values(self) -> dict:
        return {"pairwise": self.affinity == "precomputed", "sparse": True}

    def fit(self, X: Any, y: Any = None) -> "LaplacianEigenmaps":
        """Compute the embedding of ``X`` (data, or an affinity matrix when ``affinity="precomputed"``)."""
        self._fit(X)
        return self

    def _fit(self, X: Any) -> Any:
        """Fit; returns the tensor the output should mimic (None for numpy input)."""
        t = self._check_params()
        n_threads = resolve_n_jobs(self.n_jobs)
        seed = seed_of(self.random_state)
        like = None
        if self.affinity == "precomputed":
            if is_tensor(X):
                like = X
            w, dtype = _precomputed_affinity(X)
            self.t_ = float("nan")
        else:
            sp = _scipy_sparse()
            # sparse X: densified under a size guard (the kNN search is dense).
            x, like = as_input(X, min_rows=3, estimator="LaplacianEigenmaps")
            n = x.shape[0]
            if self.n_neighbors >= n:
                raise InvalidParameterError(
                    f"n_neighbors={self.n_neighbors} must be smaller than the number of samples ({n})"
                )
            nb = self.neighbors
            if nb == "auto":
                nb = "exact" if n <= AUTO_EXACT_MAX_N else "approx"
            # The embedding is scale invariant (heat bandwidth t ∝ scale²): kNN on x / s so
            # squared distances of huge data (1e30 float32) cannot overflow; t_ reported for x.
            s = power_of_two_scale(x)
            ts = None if t is None else t / (s * s)
            if self.symmetrize == "mean":
                w, t_used = mean_symmetrized_knn(scaled(x, s), self.n_neighbors, self.weights, ts, n_threads, nb, seed)
            else:
                ip, ix, dv, t_used = _core.knn_graph_affinity(scaled(x, s), self.n_neighbors, self.weights, ts, nb, seed, n_threads)
                w = sp.csr_matrix((dv, ix, ip), shape=(n, n))
            dtype = x.dtype
            self.t_ = float(t_used) * (s * s)
            self.n_features_in_ = int(x.shape[1])
        n = w.shape[0]
        if self.n_components + 2 > n:
            raise InvalidParameterError(
                f"n_components={self.n_components} needs at least {self.n_components + 2} samples, got {n}"
            )
        emb, vals, n_cc = _solve(w, self.n_components, bool(self.normalized), seed, float(self.tol), n_threads)
        self.affinity_matrix_ = w
        self.eigenvalues_ = vals
        self.n_connected_components_ = int(n_cc)
        if self.affinity == "precomputed":
            self.n_features_in_ = int(w.shape[1])
        self.embedding_ = emb.astype(dtype)  # numpy always; fit_transform returns the input's type
        return like

    def fit_transform(self, X: Any, y: Any = None) -> Any:
        """``fit(X)`` and return ``embedding_`` as the input's type (numpy, or a tensor on its device/dtype)."""
        like = self._fit(X)
        return as_output(self.embedding_, like)


def laplacian_eigenmaps(affinity: Any, n_components: int = 2, *, normalized: bool = True, random_state: Any = None, n_jobs: Optional[int] = None) -> np.ndarray:
    """Functional form: the Laplacian-eigenmaps embedding of a precomputed affinity matrix."""
    return LaplacianEigenmaps(
        n_components, affinity="precomputed", normalized=normalized, random_state=random_state, n_jobs=n_jobs
    ).fit_transform(affinity)


def spectral_init(P: Any, n_components: int = 2, random_state: Any = None, *, n_jobs: Optional[int] = None) -> np.ndarray:
    """Spectral initialisation for t-SNE from a symmetric sparse affinity ``P`` (e.g. t-SNE's P).

    Returns the normalised Laplacian-eigenmaps embedding of ``P`` (``L v = λ D v``,
    trivial vector dropped) rescaled so that column 0 has standard deviation 1e-4
    (openTSNE's convention): ``Y = V · 1e-4 / std(V[:, 0])``. The dtype follows ``P``; a torch
    ``P`` gives a tensor on its device.
    """
    emb = laplacian_eigenmaps(P, n_components, random_state=random_state, n_jobs=n_jobs)
    like = emb if is_tensor(emb) else None  # torch in → torch out (same device and dtype)
    emb = emb.detach().cpu().numpy() if like is not None else np.asarray(emb)
    std = float(np.std(emb[:, 0]))
    return as_output((emb * (1e-4 / std if std > 0 else 1.0)).astype(emb.dtype, copy=False), like)
