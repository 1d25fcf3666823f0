"""Classical (Torgerson) multidimensional scaling.

With D⁽²⁾ the squared distances and J = I − 11ᵀ/n, ``B = −½ J D⁽²⁾ J`` is the
Gram matrix of centred coordinates; the embedding is ``U_k Λ_k^{1/2}`` for the
top-k eigenpairs of B. For Euclidean distances B = Xc Xcᵀ, so classical MDS
equals PCA (the scores ``Xc W``).

Data (or distances) large enough for their squares to overflow (1e30 in float32,
1e300 in float64) are divided by a power of two first and the embedding scaled
back exactly; ``eigenvalues_`` and ``trace_`` (∝ scale², float64) may then be +inf
when the true value exceeds float64's range (documented), the embedding stays finite.
"""

from __future__ import annotations

import warnings
from typing import Any, Optional

import numpy as np

from .. import _core
from ._checks import check_random_state, power_of_two_scale, scaled
from ._estimator import Estimator, as_input, as_output, check_int, seed_of
from .._threads import resolve_n_jobs
from .._validation import check_choice
from ..errors import InvalidParameterError, ShapeError

__all__ = ["ClassicalMDS"]


class ClassicalMDS(Estimator):
    """Classical MDS.

    Parameters
    ----------
    n_components : embedding dimension.
    metric : ``"euclidean"`` (X is data; B's eigenpairs are obtained from the d × d
        covariance without forming any n × n matrix, since B = Xc Xcᵀ exactly) or
        ``"precomputed"`` (X is a symmetric n × n distance matrix; B is formed
        (n² memory) and solved densely for n ≤ 300, by Lanczos otherwise).
    n_jobs, random_state : threads and the Lanczos start-vector seed.

    Attributes
    ----------
    embedding_ : (n, k) numpy array in the input's float dtype (``fit_transform`` returns it
        as the input's type: a tensor for torch input), column c = u_c √λ_c (0 where λ_c ≤ 0, with a warning: the
        distances are not Euclidean).
    eigenvalues_ : top-k eigenvalues of B, descending.
    explained_variance_ratio_ : eigenvalues_ / trace(B) (equals PCA's ratio for Euclidean data).
    n_features_in_ : columns of X (n for a precomputed distance matrix).
    """

    def _tag_values(self) -> dict:
        return {"pairwise": self.metric == "precomputed", "sparse": True}

    def __init__(self, n_components: int = 2, *, metric: str = "euclidean", n_jobs: Optional[int] = None, random_state: Any = None) -> None:
        self.n_components = n_components
        self.metric = metric
        self.n_jobs = n_jobs
        self.random_state = random_state

    def fit(self, X: Any, y: Any = None) -> "ClassicalMDS":
        """Embed the rows of ``X`` (or the points of a distance matrix)."""
        self._fit(X)
        return self

    def _fit(self, X: Any) -> Any:
        """Fit; returns the tensor the output should mimic (None for numpy input)."""
        k = check_int("n_components", self.n_components, 1)
        check_choice("metric", self.metric, ("euclidean", "precomputed"))
        check_random_state(self.random_state)
        x, like = as_input(X, min_rows=2, estimator="ClassicalMDS")
        n = x.shape[0]
        pre = self.metric == "precomputed"
        if pre and x.shape[0] != x.shape[1]:
            raise ShapeError(f"a precomputed distance matrix must be square, got shape {x.shape}")
        limit = n - 1 if pre else min(n, x.shape[1])
        if n < 2 or k > limit:
            raise InvalidParameterError(f"n_components={k} must be <= {max(limit, 0)} for input of shape {x.shape}")
        seed = seed_of(self.random_state) if pre else 0
        if pre and (x < 0).any():
            raise InvalidParameterError("a precomputed distance matrix must not contain negative values")
        s = power_of_two_scale(x)  # embedding ∝ s, B ∝ s²: fit on x / s (exact), scale back
        emb, vals, trace = _core.classical_mds(scaled(x, s), k, pre, seed, resolve_n_jobs(self.n_jobs))
        with np.errstate(over="ignore"):
            emb = np.asarray(emb, dtype=np.float64) * s
            vals_true = np.asarray(vals, dtype=np.float64) * (s * s)
            trace_true = float(trace) * (s * s)
        if (vals <= 0).any() and pre:
            warnings.warn(
                f"{int((vals <= 0).sum())} of the top {k} eigenvalues of the double-centred matrix are <= 0 "
                "(non-Euclidean distances); those coordinates are set to 0",
                UserWarning,
                stacklevel=3,
            )
        self.eigenvalues_ = vals_true
        self.trace_ = trace_true
        self.explained_variance_ratio_ = vals / trace if trace > 0 else np.zeros_like(vals)
        self.n_features_in_ = int(x.shape[1])
        self.embedding_ = emb.astype(x.dtype)
        return like

    def fit_transform(self, X: Any, y: Any = None) -> Any:
        """``fit(X)`` and return ``embedding_`` as the input's type (numpy, or a tensor on its device/dtype)."""
        like = self._fit(X)
        return as_output(self.embedding_, like)
