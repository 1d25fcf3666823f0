"""t-SNE (and SNE / symmetric SNE) with a Rust core.

Cost. With input affinities P and output similarities Q,

    KL(P‖Q) = Σ_ij p_ij ln(p_ij / q_ij),   q_ij = w_ij / Σ_{k≠l} w_kl,
    w_ij = (1 + ‖y_i − y_j‖² / α)^(−α)          (Student-t, α = ``dof``; α = 1 is t-SNE)

and p_ij = (p_{j|i} + p_{i|j}) / 2N, where p_{j|i} ∝ exp(−β_i d_ij²) over the
k = min(N−1, ⌊3·perplexity⌋) nearest neighbours of i and β_i is found by binary
search so that row i has the requested perplexity (exp of its entropy).
Gradient: ∂C/∂y_i = 4 Σ_j (p_ij − q_ij) w_ij^(1/α) (y_i − y_j).

Learning-rate unit. reprkit (like openTSNE) steps along ∂C/∂y / 4, so
``learning_rate="auto"`` = max(N / early_exaggeration, 50) here is the same step
as scikit-learn's "auto" = max(N / early_exaggeration / 4, 50) with its
factor-4 gradient: reprkit's η equals 4 × scikit-learn's η. As in openTSNE,
"auto" is re-evaluated per phase as max(N / exaggeration, 50): N/12 during early
exaggeration (this is ``learning_rate_``), N afterwards. A number is used as is
in both phases.

Schedule (openTSNE's). ``exaggeration_iter`` iterations with P multiplied by
``early_exaggeration``, then the rest of ``max_iter`` without; momentum 0.8 in
both phases (bhtsne / scikit-learn use 0.5 then 0.8); delta-bar-delta gains as
in FIt-SNE / openTSNE (+0.2 where sign(gradient) ≠ sign(velocity), sign(0) = 0;
else gain·0.8 + 0.01, which settles at 0.05 — bhtsne / scikit-learn floor at
0.01 instead); each point's step is capped at norm 5.

Reported KL: always against the true (unexaggerated) P, summed over P's support
with the normaliser Z of the current gradient evaluation (exact for
``method="exact"``, the Barnes-Hut estimate otherwise).

Types and numbers. ``fit_transform`` / ``transform`` / :func:`tsne` return the input's
type: numpy of the input's float dtype (int/bool → float64), or a tensor on the input's
device and dtype; ``embedding_`` stays the optimiser's float64 numpy array. Input is
divided by a power of two when its magnitude would overflow squared (1e30 float32,
1e300 float64): P is scale invariant, so the embedding is unchanged. Many exact
duplicate rows raise a :class:`~reprkit.manifold.DuplicateRowsWarning`.
``n_components=1`` with Barnes-Hut runs the 2-D tree with a zero second column (its
gradient is exactly 0).
"""

from __future__ import annotations

import sys
import time
from typing import Any, Callable, Optional, Sequence, Tuple, Union

import numpy as np

from .. import _core
from ._checks import check_n_features, check_sne_params, estimator_input, power_of_two_scale, scaled, warn_duplicates
from ._estimator import Estimator, as_output
from .._threads import resolve_n_jobs
from .._torch import is_tensor
from .._validation import check_array, check_choice
from ..errors import InvalidParameterError, NonFiniteError, ShapeError

METRICS = ("euclidean", "sqeuclidean", "cosine", "precomputed")
#: Below this many points ``neighbors="auto"`` uses the exact kNN (tiled GEMM), above it
#: the approximate one (random-projection forest + NN-descent).
AUTO_EXACT_MAX_N = 30_000
MAX_STEP_NORM = 5.0
#: ``method="auto"``: Barnes-Hut below this many points in 2-D, the FFT-interpolated
#: repulsion from here on. Measured on the 2-core box, quiet, n_jobs=2 (benches/bench_tsne.py
#: --large, benches/profile_tsne_fft_1m.py): 100k × 50, 750 iterations, optimisation FFT 24.1 s
#: against BH 31.3 s; 1M points, one iteration FFT 305 ms against BH 339 ms. Smaller N was only
#: measured on a loaded box (BH ahead there, e.g. 37 against 40 ms at 5k), so the threshold is
#: the smallest N where FFT was measured faster.
AUTO_FFT_MIN_N = 100_000
#: Momentum during and after early exaggeration (openTSNE's schedule; bhtsne and scikit-learn use 0.5 then 0.8).
MOMENTUM = (0.8, 0.8)

Callback = Callable[[int, float, np.ndarray], Any]


def _to_numpy(x: Any, name: str) -> np.ndarray:
    """numpy arrays pass through; torch tensors on any device come to CPU numpy."""
    if is_tensor(x):
        t = x.detach()
        if t.is_floating_point() and t.dtype not in (_torch().float32, _torch().float64):
            t = t.float()
        return t.cpu().numpy()
    return x


def _torch() -> Any:
    import torch

    return torch


def _seed_of(random_state: Any) -> np.random.Generator:
    if isinstance(random_state, np.random.Generator):
        return random_state
    if random_state is None or isinstance(random_state, (int, np.integer)):
        return np.random.default_rng(random_state)
    if isinstance(random_state, np.random.RandomState):
        return np.random.default_rng(random_state.randint(0, 2**31 - 1))
    raise InvalidParameterError(f"random_state must be None, an int or a numpy Generator, got {random_state!r}")


def pca_init(X: np.ndarray, n_components: int) -> np.ndarray:
    """Top principal components of the centred data, scaled so column 0 has std 1e-4.

    Components come from ``np.linalg.eigh`` of the d×d covariance (or an SVD
    when d > n); each component's sign makes its largest-magnitude loading
    positive, so the result is deterministic.
    """
    Xc = np.asarray(X, dtype=np.float64)
    Xc = Xc - Xc.mean(axis=0)
    n, d = Xc.shape
    if d <= n:
        cov = Xc.T @ Xc
        w, v = np.linalg.eigh(cov)
        comps = v[:, ::-1][:, :n_components]
    else:
        _, _, vt = np.linalg.svd(Xc, full_matrices=False)
        comps = vt[:n_components].T
    if comps.shape[1] < n_components:  # fewer features than components
        comps = np.hstack([comps, np.zeros((d, n_components - comps.shape[1]))])
    signs = np.sign(comps[np.argmax(np.abs(comps), axis=0), np.arange(comps.shape[1])])
    signs[signs == 0] = 1.0
    Y = Xc @ (comps * signs)
    std = Y[:, 0].std()
    if not np.isfinite(std) or std == 0:
        return np.zeros((n, n_components))
    return np.ascontiguousarray(Y / std * 1e-4)


def auto_method(n: int, n_components: int) -> str:
    """The repulsion method ``method="auto"`` uses for ``n`` points in ``n_components`` dims.

    * 1-D: "exact" up to 1,000 points, "fft" above (Barnes-Hut has no 1-D tree here);
    * 2-D: "barnes_hut" below :data:`AUTO_FFT_MIN_N` points, "fft" from there on;
    * 3-D: "barnes_hut" (the FFT grid would be cubic);
    * more dimensions: "exact".
    """
    if n_components == 1:
        return "exact" if n <= 1000 else "fft"
    if n_components == 2:
        return "barnes_hut" if n < AUTO_FFT_MIN_N else "fft"
    if n_components == 3:
        return "barnes_hut"
    return "exact"


class _SNEBase(Estimator):
    """Shared machinery of :class:`TSNE`, :class:`SNE` and :class:`SymmetricSNE`."""

    _kernel = "t"

    # --- parameters the kernel classes fix ---
    def _method(self) -> str:
        return getattr(self, "method", "exact")

    def _dof(self) -> float:
        return float(getattr(self, "dof", 1.0))

    def _log(self, msg: str) -> None:
        if self.verbose:
            print(f"[reprkit.{type(self).__name__}] {msg}", file=sys.stderr, flush=True)

    def _validate(self, n: int) -> None:
        if isinstance(self.n_components, bool) or not isinstance(self.n_components, (int, np.integer)) or self.n_components < 1:
            raise InvalidParameterError(f"n_components must be a positive integer, got {self.n_components!r}")
        method = check_choice("method", self._method(), ("auto", "barnes_hut", "exact", "fft"))
        if method == "fft" and self.n_components > 2:
            raise InvalidParameterError(
                f"method='fft' supports n_components 1 or 2 (grid interpolation), got {self.n_components}; "
                "use method='barnes_hut' (3-D) or 'exact'"
            )
        if method == "barnes_hut" and self.n_components > 3:
            raise InvalidParameterError(
                f"method='barnes_hut' supports n_components <= 3 (quadtree / octree), got {self.n_components}; "
                "use method='exact'"
            )
        check_choice("metric", self.metric, METRICS)
        if not (isinstance(self.perplexity, (int, float)) and np.isfinite(self.perplexity) and self.perplexity > 0):
            raise InvalidParameterError(f"perplexity must be a positive number, got {self.perplexity!r}")
        if n < 2:
            raise ShapeError(f"t-SNE needs at least 2 samples, got {n}")
        if self.perplexity >= n:
            raise InvalidParameterError(f"perplexity ({self.perplexity}) must be less than the number of samples ({n})")
        if not (self.early_exaggeration > 0):
            raise InvalidParameterError(f"early_exaggeration must be positive, got {self.early_exaggeration!r}")
        if int(self.exaggeration_iter) < 0 or int(self.max_iter) < 0:
            raise InvalidParameterError("exaggeration_iter and max_iter must be non-negative")
        if not (self._dof() > 0):
            raise InvalidParameterError(f"dof must be positive, got {self._dof()!r}")
        if not (getattr(self, "angle", 0.5) >= 0):
            raise InvalidParameterError(f"angle must be >= 0, got {getattr(self, 'angle', None)!r}")
        if int(self.callbacks_every) < 1:
            raise InvalidParameterError(f"callbacks_every must be >= 1, got {self.callbacks_every!r}")
        lr = self.learning_rate
        if not (lr == "auto" or (isinstance(lr, (int, float)) and not isinstance(lr, bool) and lr > 0)):
            raise InvalidParameterError(f"learning_rate must be 'auto' or a positive number, got {lr!r}")

    def _resolved_method(self, n: int) -> str:
        """``method`` with "auto" resolved by N and n_components (see :func:`auto_method`)."""
        m = self._method()
        return auto_method(n, int(self.n_components)) if m == "auto" else m

    def _neighbors(self, n: int) -> str:
        nb = check_choice("neighbors", getattr(self, "neighbors", "exact"), ("auto", "exact", "approx"))
        if self.metric == "precomputed" or self._resolved_method(n) == "exact":
            return "exact"
        if nb == "auto":
            return "exact" if n <= AUTO_EXACT_MAX_N else "approx"
        return nb

    def _tag_values(self) -> dict:
        return {"pairwise": self.metric == "precomputed", "sparse": True}

    def _prepare_X(self, X: Any) -> Any:
        if self.metric == "precomputed" and _is_sparse(X):
            return _sparse_distances(X)  # a kNN distance matrix: stays sparse
        X, _ = estimator_input(X, "X", min_rows=2, estimator=type(self).__name__)
        if self.metric == "precomputed":
            if X.shape[0] != X.shape[1]:
                raise ShapeError(f"metric='precomputed' needs a square distance matrix, got shape {X.shape}")
            if (X < 0).any():
                raise InvalidParameterError("a precomputed distance matrix must not contain negative values")
        return X

    # --- fitting ---
    def fit(self, X: Any, y: Any = None, *, affinities: Any = None) -> "_SNEBase":
        """Embed ``X`` (n_samples, n_features), or distances for metric='precomputed'
        (a dense n × n matrix, or a scipy sparse kNN distance matrix: each row's stored
        entries are its neighbours, the k = ⌊3·perplexity⌋ nearest of them are used).

        ``affinities``: a ready symmetric P (scipy sparse or dense n × n: non-negative,
        zero diagonal, summing to 1), e.g. ``affinities_`` of an earlier fit; the
        neighbour search and calibration are skipped and ``perplexity``/``metric`` are
        not used. ``X`` may then be None unless ``init="pca"`` needs it.
        """
        self._fit(X, affinities)
        return self

    def fit_transform(self, X: Any, y: Any = None, *, affinities: Any = None) -> Any:
        """Fit (see :meth:`fit`) and return the embedding (n_samples, n_components) as the input's
        type: numpy of the input's float dtype, or a tensor on the input's device and dtype
        (``embedding_`` stays the float64 numpy array of the optimiser)."""
        self._fit(X, affinities)
        return self._output(self.embedding_, X)

    @staticmethod
    def _output(emb: np.ndarray, X: Any) -> Any:
        if is_tensor(X):
            return as_output(emb, X)
        dtype = np.float32 if getattr(X, "dtype", None) in (np.float16, np.float32) else np.float64
        return emb.astype(dtype)

    def _affinities(self, X: Any, n: int, k: int, nb: str, n_threads: int, seed: int) -> Tuple[Any, Any]:
        """(P as scipy CSR, conditional rows (knn_idx, p_cond) for SNE or None), logging each stage."""
        from scipy.sparse import csr_matrix

        want_cond = self._kernel == "sne"
        if _is_sparse(X):
            ip, ix, dv = X
            indptr, indices, data, cond, t_knn, t_cal = _core.tsne_p_sparse(
                ip, ix, dv, n, float(self.perplexity), k, int(np.ceil(self.perplexity)),
                self.metric == "precomputed", n_threads, want_cond,
            )
            self._log(f"neighbours: {k} per row from the sparse distance matrix")
        else:
            indptr, indices, data, cond, t_knn, t_cal = _core.tsne_p(
                X, float(self.perplexity), k, self.metric, nb, seed, n_threads, want_cond
            )
            what = "from the distance matrix" if self.metric == "precomputed" else f"{nb} search"
            self._log(f"kNN: {k} neighbours of {n} points ({what}): {t_knn:.2f} s")
        self._log(f"calibration (perplexity {self.perplexity}) and symmetrisation: {t_cal:.2f} s, {len(data)} affinities")
        P = csr_matrix((data, indices, indptr), shape=(n, n))
        if cond is None:
            return P, None
        cptr, cidx, cval = cond
        lens = np.diff(cptr)
        if lens.size and (lens != lens[0]).any():
            raise InvalidParameterError(
                "SNE needs the same number of neighbours in every row of a sparse distance matrix"
            )
        kk = int(lens[0]) if lens.size else 0
        return P, (cidx.reshape(n, kk), cval.reshape(n, kk))

    def _fit(self, X: Any, affinities: Any = None) -> None:
        t_all = time.perf_counter()
        if affinities is not None:
            P = check_affinities(affinities)
            n = P.shape[0]
            if X is not None:
                X = self._prepare_X(X)
                if X_rows(X) != n:
                    raise ShapeError(f"X has {X_rows(X)} rows but affinities is {n} × {n}")
        else:
            if X is None:
                raise InvalidParameterError("X is required unless affinities= is given")
            X = self._prepare_X(X)
            n = X_rows(X)
        check_sne_params(self, n)
        self._validate(n)
        self.n_features_in_ = int(X.shape[1]) if isinstance(X, np.ndarray) else n
        if isinstance(self.init, str) and self.init == "pca" and X is not None and self.metric == "precomputed":
            # Fail before the (possibly long) neighbour search.
            raise InvalidParameterError("init='pca' cannot be used with metric='precomputed'; use 'random'")
        self._scale = 1.0
        if isinstance(X, np.ndarray):
            warn_duplicates(X, type(self).__name__)
            # Affinities and init are scale invariant: fit on X / s (s a power of two, exact) so the
            # squared distances of huge data (1e30 float32, 1e300 float64) cannot overflow.
            self._scale = power_of_two_scale(X)
            X = scaled(X, self._scale)
        n_threads = resolve_n_jobs(self.n_jobs)
        rng = _seed_of(self.random_state)
        seed = int(rng.integers(0, 2**63 - 1))
        method = self._resolved_method(n)
        self.method_ = method
        dim = int(self.n_components)
        k = n - 1 if method == "exact" and not _is_sparse(X) else min(n - 1, int(3 * self.perplexity))
        nb = self._neighbors(n)

        held = None
        if affinities is not None:
            if self._kernel == "sne":
                raise InvalidParameterError("SNE needs conditional affinities and does not accept affinities=")
            self.affinities_ = P
            knn_cond = None
            self._log(f"affinities given: {P.nnz} entries, neighbour search skipped")
        elif self._kernel != "sne" and not _is_sparse(X):
            # P stays in Rust and the optimiser takes it (no second copy: ~1.4 GB at 1M points);
            # affinities_ gets it back, without a copy, once the optimisation is over.
            held, t_knn, t_cal = _core.tsne_p_held(X, float(self.perplexity), k, self.metric, nb, seed, n_threads)
            what = "from the distance matrix" if self.metric == "precomputed" else f"{nb} search"
            self._log(f"kNN: {k} neighbours of {n} points ({what}): {t_knn:.2f} s")
            self._log(f"calibration (perplexity {self.perplexity}) and symmetrisation: {t_cal:.2f} s, "
                      f"{held.nnz()} affinities")
            self.affinities_ = None
            knn_cond = None
        else:
            self.affinities_, knn_cond = self._affinities(X, n, k, nb, n_threads, seed)

        Y0 = self._init_embedding(X, rng, dim, n, held)
        if dim == 1 and method == "barnes_hut":
            # 1-D Barnes-Hut runs as 2-D with a zero column: that column's gradient is exactly 0,
            # so it stays 0 and the first column follows the 1-D t-SNE gradient.
            Y0 = np.hstack([Y0, np.zeros_like(Y0)])
        auto = self.learning_rate == "auto"
        lr = max(n / float(self.early_exaggeration), 50.0) if auto else float(self.learning_rate)
        self.learning_rate_ = lr
        angle = float(getattr(self, "angle", 0.5))
        if held is not None:
            opt = _core.TsneOptimizer.from_held(held, Y0, self._kernel, self._dof(), method, angle)
            del held
            try:
                self._optimize(opt, n, dim, n_threads)
            finally:
                from scipy.sparse import csr_matrix

                data_ptr = opt.take_affinities()
                self.affinities_ = csr_matrix((data_ptr[2], data_ptr[1], data_ptr[0]), shape=(n, n))
        else:
            opt = _core.TsneOptimizer(
                np.ascontiguousarray(self.affinities_.indptr, dtype=np.int64),
                np.ascontiguousarray(self.affinities_.indices, dtype=np.int32),
                np.ascontiguousarray(self.affinities_.data, dtype=np.float64),
                Y0, self._kernel, self._dof(), method, angle, knn_cond,
            )
            self._optimize(opt, n, dim, n_threads)
        self._X_fit = X
        self._log(f"done: {self.n_iter_} iterations, KL {self.kl_divergence_:.4f}, total {time.perf_counter() - t_all:.2f} s")

    def _optimize(self, opt: Any, n: int, dim: int, n_threads: int) -> None:
        """Runs the schedule (early exaggeration, then the rest) in chunks for the log and callbacks."""
        auto = self.learning_rate == "auto"
        callbacks = self.callbacks
        if callbacks is not None and callable(callbacks):
            callbacks = [callbacks]
        every = int(self.callbacks_every)
        chunk = every if callbacks else (50 if self.verbose else None)
        n_ex = min(int(self.exaggeration_iter), int(self.max_iter))
        phases = [(n_ex, float(self.early_exaggeration), MOMENTUM[0]), (int(self.max_iter) - n_ex, 1.0, MOMENTUM[1])]
        it = 0
        kl = float("nan")
        stopped = False
        t0 = time.perf_counter()
        for n_phase, exag, momentum in phases:
            # openTSNE's rule: "auto" is N / (this phase's exaggeration).
            lr = max(n / exag, 50.0) if auto else float(self.learning_rate)
            done = 0
            while done < n_phase and not stopped:
                step = n_phase - done if chunk is None else min(chunk - it % chunk, n_phase - done)
                last = it + step == int(self.max_iter)
                want = bool(callbacks) or self.verbose or last
                kl = opt.run(step, exag, momentum, lr, MAX_STEP_NORM, n_threads, want)
                it += step
                done += step
                if chunk is not None and it % chunk == 0:
                    self._log(f"iteration {it:5d}  KL {kl:.4f}  ({time.perf_counter() - t0:.2f} s)")
                    if callbacks:
                        emb = opt.embedding()[:, :dim]
                        if any(bool(cb(it, kl, emb)) for cb in callbacks):
                            stopped = True
            if stopped:
                break
        if it == 0:
            kl = opt.run(0, 1.0, 0.8, lr, MAX_STEP_NORM, n_threads, True)
        self.embedding_ = np.ascontiguousarray(opt.embedding()[:, :dim])
        self.kl_divergence_ = float(kl)
        self.n_iter_ = it

    def _init_embedding(self, X: Any, rng: np.random.Generator, dim: int, n: int, held: Any = None) -> np.ndarray:
        init = self.init
        if isinstance(init, str):
            check_choice("init", init, ("pca", "random", "spectral"))
            if init == "pca":
                if self.metric == "precomputed":
                    raise InvalidParameterError("init='pca' cannot be used with metric='precomputed'; use 'random'")
                if X is None:
                    raise InvalidParameterError("init='pca' needs X; with affinities= alone use init='random' or 'spectral'")
                return pca_init(X, dim)
            if init == "random":
                return np.ascontiguousarray(rng.normal(0.0, 1e-4, size=(n, dim)))
            # Laplacian eigenmaps of P itself (openTSNE's spectral init), std 1e-4 in column 0.
            from .spectral import spectral_init

            seed = int(rng.integers(0, 2**31 - 1))
            P = self.affinities_
            if held is not None:  # a temporary copy of the P held in Rust
                from scipy.sparse import csr_matrix

                ip, ix, dv = held.arrays()
                P = csr_matrix((dv, ix, ip), shape=(n, n))
            Y0 = spectral_init(P, dim, random_state=seed, n_jobs=self.n_jobs)
            del P
            return np.ascontiguousarray(Y0, dtype=np.float64)
        Y0 = check_array(_to_numpy(init, "init"), "init", dtype=np.float64)
        if Y0.shape != (n, dim):
            raise ShapeError(f"init array must have shape ({n}, {dim}), got {Y0.shape}")
        return np.array(Y0, dtype=np.float64, order="C")

    # --- new points ---
    def transform(self, X: Any, *, perplexity: float = 5.0, max_iter: int = 100, learning_rate: float = 0.1) -> Any:
        """Place new points into the fitted embedding; the reference points stay fixed.

        Each new point gets affinities p_{j|i} to its k = ⌊3·perplexity⌋ nearest
        training points (perplexity 5 by default, as in openTSNE), starts at the
        p-weighted mean of their positions and minimises KL(P_i‖Q_i), with Q_i
        its Student-t similarities to the training points only. Each row's result
        depends only on that row (not on the rest of the batch; see :mod:`._transform`).
        Returns the input's type (numpy of its float dtype, or a tensor on its device/dtype).
        """
        if not hasattr(self, "embedding_"):
            raise InvalidParameterError(f"this {type(self).__name__} is not fitted yet; call fit first")
        Xin = X
        ref = self._X_fit
        if ref is None or isinstance(ref, tuple):
            raise InvalidParameterError(
                "transform needs the dense training data: fits from a sparse distance matrix or affinities= alone "
                "cannot place new points"
            )
        Xn, _ = estimator_input(X, "X")
        Xn = scaled(Xn, self._scale)  # the fit's scale (exact power of two)
        n = ref.shape[0]
        check_n_features(self, Xn, self.n_features_in_)
        if self._kernel != "t" or self.n_components not in (1, 2, 3):
            raise InvalidParameterError(
                f"transform supports t-SNE embeddings with n_components 1, 2 or 3, got n_components={self.n_components}"
            )
        from ._checks import check_int_range, check_real

        perplexity = check_real("perplexity", perplexity, low=1.0 / 3.0, low_open=False)
        max_iter = check_int_range("max_iter", max_iter, 0)
        learning_rate = check_real("learning_rate", learning_rate, low=0.0, low_open=True)
        n_threads = resolve_n_jobs(self.n_jobs)
        k = max(1, min(n, int(3 * perplexity)))
        m = Xn.shape[0]
        from ._transform import reference_neighbors

        metric = "cosine" if self.metric == "cosine" else ("precomputed" if self.metric == "precomputed" else "sqeuclidean")
        idx, dist = reference_neighbors(Xn, ref, k, metric)
        P = _core.tsne_calibrate(np.ascontiguousarray(dist), float(min(perplexity, k)), n_threads)
        Yref = np.ascontiguousarray(self.embedding_, dtype=np.float64)
        if Yref.shape[1] == 1:  # 1-D as 2-D with a zero column (its gradient is exactly 0)
            Yref = np.ascontiguousarray(np.hstack([Yref, np.zeros_like(Yref)]))
        Y0 = np.einsum("ik,ikd->id", P, Yref[idx])
        indptr = np.arange(0, m * k + 1, k, dtype=np.int64)
        Y = _core.tsne_transform(
            Yref, indptr, idx.ravel(), P.ravel(), np.ascontiguousarray(Y0), self._dof(),
            float(getattr(self, "angle", 0.5)), int(max_iter), float(learning_rate), 0.5, MAX_STEP_NORM, n_threads,
        )
        return self._output(np.ascontiguousarray(Y[:, : self.embedding_.shape[1]]), Xin)


def _is_sparse(X: Any) -> bool:
    if isinstance(X, tuple):  # the (indptr, indices, distances) triple of _sparse_distances
        return True
    try:
        import scipy.sparse as sp
    except ImportError:  # pragma: no cover - scipy is a runtime dependency
        return False
    return sp.issparse(X)


def X_rows(X: Any) -> int:
    return len(X[0]) - 1 if isinstance(X, tuple) else X.shape[0]


def _sparse_distances(D: Any) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A scipy sparse kNN distance matrix as a validated CSR triple (indptr, indices, distances).

    Stored entries are the neighbours (explicit zeros are neighbours at distance 0,
    duplicates); diagonal entries are ignored. Square, finite, non-negative.
    """
    import scipy.sparse as sp

    if D.ndim != 2 or D.shape[0] != D.shape[1]:
        raise ShapeError(f"metric='precomputed' needs a square distance matrix, got shape {D.shape}")
    if D.dtype.kind not in "fiu":
        raise InvalidParameterError(f"the precomputed distance matrix has unsupported dtype {D.dtype}")
    C = sp.csr_matrix(D, dtype=np.float64, copy=True)
    C.sum_duplicates()
    if not np.isfinite(C.data).all():
        raise NonFiniteError("the precomputed distance matrix contains NaN or infinity")
    if (C.data < 0).any():
        raise InvalidParameterError("a precomputed distance matrix must not contain negative values")
    return (
        np.ascontiguousarray(C.indptr, dtype=np.int64),
        np.ascontiguousarray(C.indices, dtype=np.int32),
        np.ascontiguousarray(C.data, dtype=np.float64),
    )


def check_affinities(P: Any, tol: float = 1e-6) -> Any:
    """Validates a ready t-SNE affinity matrix and returns it as float64 CSR (sorted indices).

    Accepted: scipy sparse or dense, square, finite, non-negative, symmetric (|P − Pᵀ| ≤
    1e-9·max P), zero diagonal and Σ_ij p_ij = 1 within ``tol``. No silent
    renormalisation: pass ``P / P.sum()`` if yours is not normalised.
    """
    import scipy.sparse as sp

    if sp.issparse(P):
        A = sp.csr_matrix(P, dtype=np.float64, copy=True)
    else:
        arr = check_array(_to_numpy(P, "affinities"), "affinities", dtype=np.float64)
        A = sp.csr_matrix(arr)
    if A.ndim != 2 or A.shape[0] != A.shape[1]:
        raise ShapeError(f"affinities must be a square matrix, got shape {A.shape}")
    A.sum_duplicates()
    A.eliminate_zeros()
    A.sort_indices()
    if not np.isfinite(A.data).all():
        raise NonFiniteError("affinities contain NaN or infinity")
    if (A.data < 0).any():
        raise InvalidParameterError("affinities must be non-negative")
    if A.diagonal().any():
        raise InvalidParameterError("affinities must have a zero diagonal (p_ii = 0)")
    total = float(A.data.sum())
    if not abs(total - 1.0) <= tol:
        raise InvalidParameterError(f"affinities must sum to 1 (got {total:.6g}); pass P / P.sum()")
    scale = float(A.data.max()) if A.nnz else 0.0
    diff = abs(A - A.T)
    if diff.nnz and float(diff.max()) > 1e-9 * scale:
        raise InvalidParameterError("affinities must be symmetric (P = Pᵀ); pass (P + P.T) / 2")
    return A


class TSNE(_SNEBase):
    """t-Distributed Stochastic Neighbour Embedding (see the module docstring for the formulas).

    ``method="auto"`` (default) picks by size (:func:`auto_method`: Barnes-Hut below
    100,000 points in 2-D and in 3-D, FFT from there on and in 1-D above 1,000 points,
    exact otherwise). ``"barnes_hut"`` approximates the repulsion with a quadtree
    (2-D) or octree (3-D) at opening angle ``angle``; ``"exact"`` is O(N²) and
    supports any ``n_components``. ``"fft"`` (1-D and 2-D; Linderman et al. 2019,
    "Fast interpolation-based t-SNE", Nature Methods 16) interpolates the charges
    {1, y, |y|²} onto a regular grid (3 Lagrange nodes per box, boxes about one
    embedding unit wide, at least 50 and at most 256 per side in 2-D, 20,000 in
    1-D: beyond the cap boxes widen, so outliers cannot blow the grid up),
    convolves them with K = (1 + d²/dof)^(−(dof+1)) by FFT and interpolates back:
    O(N) per iteration plus an FFT whose size follows the embedding's spread.
    Both the repulsion Σ_j K_ij (y_i − y_j) and Z = Σ_ij K_ij (1 + d²_ij/dof)
    come from those four convolutions for any ``dof``. Relative error of the
    full KL gradient against the exact one: below 10⁻² at the point densities of
    real fits (tests/test_tsne_fft.py); the repulsive part alone of a finished
    100k-point fit is off by ~10⁻¹ relatively, as with openTSNE's FFT.
    ``"auto"`` picks per :func:`auto_method`: in 2-D Barnes-Hut below
    ``AUTO_FFT_MIN_N`` (100,000) points, FFT from there on (measured on 2 cores:
    see ``AUTO_FFT_MIN_N``); FFT in 1-D above 1,000 points; Barnes-Hut in 3-D;
    ``method_`` records the choice. ``dof`` < 1 gives heavier tails (Kobak et
    al. 2019). ``neighbors``: "exact", "approx" (random-projection forest +
    NN-descent) or "auto" (exact up to 30,000 points). ``callbacks(iteration,
    kl, embedding)`` run every ``callbacks_every`` iterations; returning True
    stops. Ctrl-C stops a fit with KeyboardInterrupt. The same ``random_state``
    gives the same embedding for any ``n_jobs``.

    ``metric="precomputed"``: X is a dense n × n distance matrix or a scipy
    sparse kNN distance matrix (each row's stored entries are its neighbours,
    explicit zeros included, the diagonal ignored; the ⌊3·perplexity⌋ nearest
    per row are used and every row needs at least ⌈perplexity⌉). On the same
    neighbours the sparse and the dense paths give identical P.
    ``fit(X, affinities=P)`` skips the neighbour search and calibration and
    uses a ready symmetric P (non-negative, zero diagonal, Σ p_ij = 1; errors
    otherwise) — e.g. the ``affinities_`` of an earlier fit, for another run
    with a different init, ``dof`` or exaggeration. ``verbose=True`` prints
    each stage to stderr: the kNN search with its time, the calibration, and
    every 50 iterations the KL and the elapsed time.

    Attributes: ``embedding_``, ``kl_divergence_``, ``n_iter_``, ``method_``,
    ``learning_rate_``, ``affinities_`` (the symmetric P, scipy.sparse CSR).
    """

    _kernel = "t"

    def __init__(
        self,
        n_components: int = 2,
        *,
        perplexity: float = 30.0,
        early_exaggeration: float = 12.0,
        exaggeration_iter: int = 250,
        learning_rate: Union[float, str] = "auto",
        max_iter: int = 750,
        metric: str = "euclidean",
        init: Union[str, np.ndarray] = "pca",
        method: str = "auto",
        angle: float = 0.5,
        dof: float = 1.0,
        neighbors: str = "auto",
        n_jobs: Optional[int] = None,
        random_state: Any = None,
        verbose: bool = False,
        callbacks: Optional[Union[Callback, Sequence[Callback]]] = None,
        callbacks_every: int = 50,
    ) -> None:
        self.n_components = n_components
        self.perplexity = perplexity
        self.early_exaggeration = early_exaggeration
        self.exaggeration_iter = exaggeration_iter
        self.learning_rate = learning_rate
        self.max_iter = max_iter
        self.metric = metric
        self.init = init
        self.method = method
        self.angle = angle
        self.dof = dof
        self.neighbors = neighbors
        self.n_jobs = n_jobs
        self.random_state = random_state
        self.verbose = verbose
        self.callbacks = callbacks
        self.callbacks_every = callbacks_every


class SymmetricSNE(_SNEBase):
    """Symmetric SNE: the t-SNE P with a Gaussian output kernel,
    q_ij = exp(−‖y_i − y_j‖²) / Σ_{k≠l} exp(−‖y_k − y_l‖²); exact O(N²) gradient
    ∂C/∂y_i = 4 Σ_j (p_ij − q_ij)(y_i − y_j). Same parameters as :class:`TSNE`
    without ``method``/``angle``/``dof``/``neighbors``."""

    _kernel = "gaussian"

    def __init__(
        self,
        n_components: int = 2,
        *,
        perplexity: float = 30.0,
        early_exaggeration: float = 4.0,
        exaggeration_iter: int = 100,
        learning_rate: Union[float, str] = "auto",
        max_iter: int = 750,
        metric: str = "euclidean",
        init: Union[str, np.ndarray] = "pca",
        n_jobs: Optional[int] = None,
        random_state: Any = None,
        verbose: bool = False,
        callbacks: Optional[Union[Callback, Sequence[Callback]]] = None,
        callbacks_every: int = 50,
    ) -> None:
        self.n_components = n_components
        self.perplexity = perplexity
        self.early_exaggeration = early_exaggeration
        self.exaggeration_iter = exaggeration_iter
        self.learning_rate = learning_rate
        self.max_iter = max_iter
        self.metric = metric
        self.init = init
        self.n_jobs = n_jobs
        self.random_state = random_state
        self.verbose = verbose
        self.callbacks = callbacks
        self.callbacks_every = callbacks_every

    @property
    def transform(self) -> Any:  # hasattr(est, "transform") is False: scikit-learn then does not call it
        raise AttributeError(f"{type(self).__name__} has no transform: new points are placed with the t-SNE kernel (TSNE)")


class SNE(SymmetricSNE):
    """Asymmetric SNE (Hinton & Roweis): C = Σ_i KL(P_i‖Q_i) with conditional
    p_{j|i} and q_{j|i} = exp(−‖y_i − y_j‖²) / Σ_{k≠i} exp(−‖y_i − y_k‖²);
    ∂C/∂y_i = 2 Σ_j (p_{j|i} − q_{j|i} + p_{i|j} − q_{i|j})(y_i − y_j). Exact
    O(N²). The optimiser minimises C/N (so learning rates match t-SNE's scale);
    ``kl_divergence_`` reports C itself."""

    _kernel = "sne"


def tsne(X: Any, **params: Any) -> Any:
    """Functional form: ``TSNE(**params).fit_transform(X)`` (numpy in → numpy out of the same
    float dtype, torch in → torch out on the same device and dtype)."""
    return TSNE(**params).fit_transform(X)


__all__ = ["TSNE", "SNE", "SymmetricSNE", "tsne", "pca_init", "auto_method"]
