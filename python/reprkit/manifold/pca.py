"""Principal component analysis with a Rust core (exact and randomised solvers).

With Xc the centred data, the components are the top eigenvectors w of the
covariance ``C = Xcᵀ Xc / (n − 1)``, the explained variances its eigenvalues,
and ``transform(X) = (X − mean_) · componentsᵀ`` (divided by
``√explained_variance_`` when ``whiten=True``).

Sparse input (scipy.sparse) is never centred densely: with μ the column means,
``Xcᵀ Xc = Xᵀ X − n μ μᵀ`` ("full": eigh of that d × d matrix) and the
randomised solver multiplies by ``Xc`` implicitly, ``Xc M = X M − 1 (μᵀ M)``
(see :mod:`._pca_sparse`). Data whose magnitude would overflow when squared
(1e30 in float32, 1e300 in float64) is divided by a power of two first and the
results are scaled back exactly; ``explained_variance_`` (∝ scale²) is then +inf
when it exceeds the dtype's range (documented), everything else stays finite.
"""

from __future__ import annotations

from typing import Any, Optional, Union

import numpy as np

from .. import _core
from ._checks import check_bool, check_n_features, check_random_state, power_of_two_scale, scaled
from ._estimator import Estimator, as_input, as_output, check_int, seed_of
from .._threads import resolve_n_jobs
from .._validation import check_choice
from ..errors import InvalidParameterError, ShapeError

__all__ = ["PCA"]


class PCA(Estimator):
    """PCA (scikit-learn compatible attributes, no sklearn dependency).

    Parameters
    ----------
    n_components : number of components (None → min(n_samples, n_features)).
    whiten : scale the scores to unit variance.
    svd_solver : ``"full"`` — exact: eigen-decomposition of the d × d covariance (or of the
        n × n Gram matrix when n < d) with reprkit's dense symmetric solver; ``"randomized"`` —
        seeded randomised subspace iteration (Halko et al.) with ``n_oversamples`` extra
        vectors and ``iterated_power`` power iterations; ``"auto"`` — ``"full"`` when
        min(n, d) ≤ 1000 or n_components ≥ 0.8·min(n, d), else ``"randomized"``.
    iterated_power : power iterations of the randomised solver (``"auto"``: 7 if
        n_components < 0.1·min(n, d), else 4 — scikit-learn's rule).
    n_oversamples : extra random vectors of the randomised solver.
    random_state : seed of the randomised solver.
    n_jobs : threads (results do not depend on it).

    Attributes
    ----------
    components_ (k, d), explained_variance_ (k,), explained_variance_ratio_ (k,),
    singular_values_ (k,), mean_ (d,), n_components_, n_features_in_, n_samples_.
    Each component's largest-magnitude entry is positive.
    """

    def __init__(
        self,
        n_components: Optional[int] = None,
        *,
        whiten: bool = False,
        svd_solver: str = "auto",
        iterated_power: Union[str, int] = "auto",
        n_oversamples: int = 10,
        random_state: Any = None,
        n_jobs: Optional[int] = None,
    ) -> None:
        self.n_components = n_components
        self.whiten = whiten
        self.svd_solver = svd_solver
        self.iterated_power = iterated_power
        self.n_oversamples = n_oversamples
        self.random_state = random_state
        self.n_jobs = n_jobs

    def _tag_values(self) -> dict:
        return {"sparse": True}

    def _fit(self, X: Any, want_scores: bool) -> Any:
        check_choice("svd_solver", self.svd_solver, ("auto", "full", "randomized"))
        check_int("n_oversamples", self.n_oversamples, 0)
        check_bool("whiten", self.whiten)
        check_random_state(self.random_state)
        x, like = as_input(X, keep_sparse=True, min_rows=2, estimator="PCA")
        n, d = x.shape
        k = check_int("n_components", self.n_components, 1, allow_none=True)
        k = min(n, d) if k is None else k
        if k > min(n, d):
            raise InvalidParameterError(f"n_components={k} must be <= min(n_samples, n_features) = {min(n, d)}")
        solver = self.svd_solver
        if solver == "auto":
            solver = "full" if (min(n, d) <= 1000 or k >= 0.8 * min(n, d)) else "randomized"
            if solver == "full" and hasattr(x, "tocsr") and d > 4096:  # sparse "full" forms a d x d matrix
                solver = "randomized"
        if self.iterated_power == "auto":
            n_iter = 7 if k < 0.1 * min(n, d) else 4
        else:
            n_iter = check_int("iterated_power", self.iterated_power, 0)
        seed = seed_of(self.random_state) if solver == "randomized" else 0
        # Fit on x / s (s a power of two: exact) so squares cannot overflow; map back below.
        s = power_of_two_scale(x)
        xs = scaled(x, s)
        n_threads = resolve_n_jobs(self.n_jobs)
        if hasattr(xs, "tocsr"):
            from ._pca_sparse import sparse_pca

            mean, comps, ev, total, scores = sparse_pca(xs, k, solver, n_iter, self.n_oversamples, seed, want_scores)
        else:
            mean, comps, ev, total, scores = _core.pca_fit(
                xs, k, solver, n_iter, self.n_oversamples, seed, want_scores, n_threads
            )
        ev = np.asarray(ev, dtype=np.float64)
        self._scale = s
        self._ev_scaled = ev  # float64 eigenvalues of x / s: whitening uses these (never overflow)
        with np.errstate(over="ignore"):
            self.mean_ = (np.asarray(mean, dtype=np.float64) * s).astype(x.dtype)
            self.explained_variance_ = (ev * s * s).astype(x.dtype)
            self.singular_values_ = (np.sqrt(ev * (n - 1)) * s).astype(x.dtype)
        self.components_ = comps.astype(x.dtype)
        self.explained_variance_ratio_ = (ev / total if total > 0 else np.zeros_like(ev)).astype(x.dtype)
        self.n_components_ = k
        self.n_features_in_ = d
        self.n_samples_ = n
        self._solver = solver
        if scores is None:
            return None
        scores = np.asarray(scores).astype(x.dtype, copy=False)
        if self.whiten:  # scores of x / s divided by √ev(x / s): the whitened scores of x
            scores = scores / self._whiten_scale().astype(scores.dtype)
        else:
            scores = scores * x.dtype.type(s)
        return as_output(scores, like)

    def _whiten_scale(self) -> np.ndarray:
        """√(explained variance of X / s), floored at float64's tiny."""
        return np.sqrt(np.maximum(self._ev_scaled, np.finfo(np.float64).tiny))

    def fit(self, X: Any, y: Any = None) -> "PCA":
        """Fit the principal axes of ``X`` (n_samples, n_features)."""
        self._fit(X, want_scores=False)
        return self

    def fit_transform(self, X: Any, y: Any = None) -> Any:
        """Fit and return the scores of ``X`` (computed in Rust alongside the fit)."""
        return self._fit(X, want_scores=True)

    def _check_fitted(self) -> None:
        if not hasattr(self, "components_"):
            from ..errors import InvalidInputError

            raise InvalidInputError("this PCA instance is not fitted yet; call fit first")

    def transform(self, X: Any) -> Any:
        """Scores ``(X − mean_) · components_ᵀ`` (/ √explained_variance_ if whiten)."""
        self._check_fitted()
        x, like = as_input(X, keep_sparse=True)
        check_n_features(self, x, self.n_features_in_)
        s = self._scale
        mean = (self.mean_.astype(np.float64) / s).astype(x.dtype)
        w = self.components_.astype(x.dtype)
        xs = scaled(x, s)
        # (X / s − mean_ / s) · Wᵀ without densifying a sparse X.
        z = np.asarray(xs @ w.T, dtype=x.dtype) - (mean @ w.T)[None, :]
        if self.whiten:
            z = z / self._whiten_scale().astype(x.dtype)
        else:
            with np.errstate(over="ignore"):
                z = z * x.dtype.type(s)
        return as_output(z, like)

    def inverse_transform(self, Z: Any) -> Any:
        """Back to feature space: ``Z · components_ + mean_`` (Z rescaled first if whiten)."""
        self._check_fitted()
        z, like = as_input(Z, "Z")
        if z.shape[1] != self.n_components_:
            raise ShapeError(f"Z has {z.shape[1]} columns, expected n_components_={self.n_components_}")
        s = self._scale
        if self.whiten:
            z = z * self._whiten_scale().astype(z.dtype)
        else:
            z = scaled(z, s)
        x = z @ self.components_.astype(z.dtype) + (self.mean_.astype(np.float64) / s).astype(z.dtype)
        with np.errstate(over="ignore"):
            return as_output(x * z.dtype.type(s), like)
