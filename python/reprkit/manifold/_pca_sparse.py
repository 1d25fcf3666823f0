"""PCA of a scipy.sparse matrix without ever forming the dense centred matrix.

With μ the column means and Xc = X − 1μᵀ:

* ``"full"``: the covariance ``C = (XᵀX − n μμᵀ) / (n − 1)`` is a d × d dense matrix
  (XᵀX is a sparse product); its top eigenpairs give the components (d ≤ FULL_MAX_D);
* ``"randomized"``: Halko, Martinsson & Tropp (2011), Alg. 4.4 (subspace iteration
  with QR re-orthonormalisation) on the implicit operator
  ``Xc M = X M − 1 (μᵀ M)`` and ``Xcᵀ M = Xᵀ M − μ (1ᵀ M)``.

Each component's largest-magnitude entry is positive (the dense solvers' rule).
Memory: O(nnz + (n + d)·(k + oversamples)) for "randomized", O(nnz + d²) for "full".
"""

from __future__ import annotations

from typing import Any, Optional, Tuple

import numpy as np

from ..errors import InvalidParameterError

#: "full" on sparse input forms the d × d covariance; above this d use "randomized".
FULL_MAX_D = 4096


def _fix_signs(comps: np.ndarray) -> np.ndarray:
    """Rows of ``comps`` (k, d) flipped so each row's largest-magnitude entry is positive."""
    idx = np.argmax(np.abs(comps), axis=1)
    signs = np.sign(comps[np.arange(comps.shape[0]), idx])
    signs[signs == 0] = 1.0
    return comps * signs[:, None]


def sparse_pca(
    x: Any, k: int, solver: str, n_iter: int, n_oversamples: int, seed: int, want_scores: bool
) -> Tuple[np.ndarray, np.ndarray, np.ndarray, float, Optional[np.ndarray]]:
    """``(mean, components (k, d), explained_variance (k,), total_variance, scores or None)``."""
    n, d = x.shape
    xd = x.astype(np.float64)
    mu = np.asarray(xd.mean(axis=0)).ravel()
    sq = xd.multiply(xd).sum()
    total = max(float(sq) - n * float(mu @ mu), 0.0) / (n - 1)
    if solver == "full":
        if d > FULL_MAX_D:
            raise InvalidParameterError(
                f"svd_solver='full' on sparse input forms the d x d covariance; d={d} > {FULL_MAX_D}: "
                "use svd_solver='randomized' (or 'auto')"
            )
        c = np.asarray((xd.T @ xd).todense()) - n * np.outer(mu, mu)
        c = (c + c.T) / (2.0 * (n - 1))
        w, v = np.linalg.eigh(c)
        order = np.argsort(w)[::-1][:k]
        ev = np.maximum(w[order], 0.0)
        comps = v[:, order].T
    else:
        rng = np.random.default_rng(seed)
        ell = min(k + n_oversamples, min(n, d))

        def a_mul(m: np.ndarray) -> np.ndarray:  # Xc @ m
            return np.asarray(xd @ m) - (mu @ m)[None, :]

        def at_mul(m: np.ndarray) -> np.ndarray:  # Xcᵀ @ m
            return np.asarray(xd.T @ m) - mu[:, None] * m.sum(axis=0)[None, :]

        q, _ = np.linalg.qr(a_mul(rng.standard_normal((d, ell))))
        for _ in range(n_iter):
            z, _ = np.linalg.qr(at_mul(q))
            q, _ = np.linalg.qr(a_mul(z))
        b = at_mul(q).T  # (ell, d) = Qᵀ Xc
        _, sv, vt = np.linalg.svd(b, full_matrices=False)
        ev = sv[:k] ** 2 / (n - 1)
        comps = vt[:k]
    comps = _fix_signs(comps)
    scores = None
    if want_scores:
        scores = np.asarray(xd @ comps.T) - (mu @ comps.T)[None, :]
    dt = x.dtype
    return mu.astype(dt), comps.astype(dt), ev, total, None if scores is None else scores.astype(dt)
