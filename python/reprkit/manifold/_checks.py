"""Input and parameter checks of the manifold estimators (scikit-learn's conventions).

What an estimator accepts as ``X`` (see :func:`estimator_input`):

* numpy arrays, lists, object arrays of numbers and torch tensors (any device:
  copied to the CPU; the output goes back to the input's device and dtype);
* float32 / float64 compute in their own dtype, float16 in float32; integer and
  boolean input is converted to float64 (torch: float32), as scikit-learn does;
* complex input → :class:`ComplexInputError` (a ``ValueError``); torch meta tensors
  (no data) → :class:`~reprkit.errors.InvalidInputError`;
* sparse input (scipy.sparse or torch sparse): converted to dense when the dense
  copy is at most :data:`MAX_DENSE_BYTES` (PCA instead keeps it sparse, see
  :mod:`.pca`), otherwise a clear error.

Huge or tiny finite data. Squared distances and covariances of data scaled to
1e30 (float32) or 1e300 (float64) overflow although the embedding is
representable, so :func:`power_of_two_scale` picks ``s = 2^e`` with
``max|X| / s`` in [1, 2); dividing by a power of two is exact, and each
estimator maps its results back (scale-invariant results unchanged, lengths × s).
"""

from __future__ import annotations

import numbers
import warnings
from typing import Any, Optional, Sequence, Tuple

import numpy as np

from .._torch import is_tensor
from .._validation import check_array
from ..errors import DTypeError, InvalidInputError, InvalidParameterError, ReprkitError, ShapeError

#: Largest dense copy (bytes) made of a sparse input for estimators whose math is dense.
MAX_DENSE_BYTES = 2 * 1024**3
#: |X| outside [2^-LOG2_SAFE, 2^LOG2_SAFE] is rescaled by a power of two before fitting.
LOG2_SAFE = {np.dtype(np.float32): 24, np.dtype(np.float64): 200}
#: t-SNE warns when at least this fraction of the rows are exact duplicates of an earlier row.
DUPLICATE_WARN_FRACTION = 0.1


class ComplexInputError(DTypeError, ValueError):
    """Complex input: no estimator embeds complex data (a ValueError, as in scikit-learn)."""


class ReprkitWarning(UserWarning):
    """Base class of reprkit's warnings."""


class DuplicateRowsWarning(ReprkitWarning):
    """Many input rows are exact duplicates (t-SNE then spends its effort separating copies)."""


def _is_sparse(x: Any) -> bool:
    try:
        import scipy.sparse as sp
    except ImportError:  # pragma: no cover - scipy is a runtime dependency
        return False
    return bool(sp.issparse(x))


def _dense_guard(shape: Sequence[int], itemsize: int, name: str, what: str) -> None:
    nbytes = int(np.prod([int(s) for s in shape], dtype=np.float64)) * itemsize
    if nbytes > MAX_DENSE_BYTES:
        raise InvalidInputError(
            f"{name} is a sparse {what} of shape {tuple(shape)}; this estimator needs it dense and the dense copy "
            f"would take {nbytes / 2**30:.1f} GiB (limit {MAX_DENSE_BYTES / 2**30:.0f} GiB, "
            "reprkit.manifold._checks.MAX_DENSE_BYTES); reduce it first (e.g. TruncatedSVD / reprkit.PCA)"
        )


def _float_target(dtype: np.dtype) -> np.dtype:
    if dtype == np.float16:
        return np.dtype(np.float32)
    if dtype in (np.float32, np.float64):
        return np.dtype(dtype)
    return np.dtype(np.float64)


def numeric_array(x: Any, name: str = "X") -> np.ndarray:
    """``x`` as a float numpy array (any ndim, not yet validated): scikit-learn's conversions."""
    if isinstance(x, np.ndarray):
        arr = x
    else:
        try:
            arr = np.asarray(x)
        except Exception as e:  # ragged lists and the like
            raise ShapeError(f"{name} could not be converted to an array: {e}") from None
    kind = arr.dtype.kind
    if kind == "c":
        raise ComplexInputError(f"Complex data not supported: {name} has dtype {arr.dtype}")
    if kind in "biu":
        return arr.astype(np.float64)
    if kind == "O":
        if any(isinstance(v, (complex, np.complexfloating)) for v in arr.flat):
            raise ComplexInputError(f"Complex data not supported: {name} is an object array holding complex numbers")
        try:
            return arr.astype(np.float64)
        except (TypeError, ValueError) as e:
            raise DTypeError(f"{name} is an object array that is not all numbers ({e})") from None
    if kind != "f":
        raise DTypeError(f"{name} has dtype {arr.dtype}; reprkit estimators need numbers (float, int or bool)")
    return arr


def _from_torch(x: Any, name: str) -> np.ndarray:
    import torch

    if x.is_complex():
        raise ComplexInputError(f"Complex data not supported: {name} has dtype {x.dtype}")
    if x.device.type == "meta":
        raise InvalidInputError(f"{name} is a tensor on the 'meta' device (no data); move it to a real device first")
    t = x.detach()
    if t.layout != torch.strided:
        _dense_guard(t.shape, max(t.element_size(), 4), name, f"torch tensor ({t.layout})")
        t = t.to_dense()
    if not t.is_floating_point():
        t = t.to(torch.float32)
    elif t.dtype not in (torch.float32, torch.float64):
        t = t.to(torch.float32)
    return t.cpu().contiguous().numpy()


def output_like(x: Any) -> Any:
    """What the output should look like: the tensor itself for torch input, else None (numpy)."""
    return x if is_tensor(x) else None


def estimator_input(
    x: Any, name: str = "X", *, min_rows: int = 1, estimator: str = "this estimator", keep_sparse: bool = False
) -> Tuple[Any, Any]:
    """``(array, like)``: ``x`` validated as a finite 2-D float32/float64 array and the tensor
    to mimic on output (None for numpy). With ``keep_sparse`` a scipy matrix stays sparse
    (CSR, float dtype, checked finite); otherwise sparse input is densified under a size guard."""
    like = output_like(x)
    if is_tensor(x):
        arr: Any = _from_torch(x, name)
    elif _is_sparse(x):
        import scipy.sparse as sp

        if x.ndim != 2:
            raise ShapeError(f"{name} must be 2-D, got a sparse array of shape {x.shape}")
        if x.dtype.kind == "c":
            raise ComplexInputError(f"Complex data not supported: {name} has dtype {x.dtype}")
        if x.dtype.kind not in "fbiu":
            raise DTypeError(f"{name} is a sparse matrix of dtype {x.dtype}; reprkit estimators need numbers")
        target = _float_target(x.dtype)
        if keep_sparse:
            m = sp.csr_matrix(x, dtype=target, copy=True)
            m.sum_duplicates()
            if not np.isfinite(m.data).all():
                raise _nonfinite(name)
            if m.shape[0] < min_rows or m.shape[1] == 0:
                raise _too_few(name, m.shape, min_rows, estimator)
            return m, like
        _dense_guard(x.shape, target.itemsize, name, "matrix")
        arr = np.asarray(x.toarray(), dtype=target)
    else:
        arr = numeric_array(x, name)
    if arr.ndim != 2:
        hint = " Reshape your data either using array.reshape(-1, 1) if it has a single feature or array.reshape(1, -1) if it contains a single sample." if arr.ndim == 1 else ""
        raise ShapeError(f"{name} must be a 2-D array (n_samples, n_features), got {arr.ndim}-D with shape {arr.shape}.{hint}")
    if arr.shape[0] < min_rows or arr.shape[1] == 0:
        raise _too_few(name, arr.shape, min_rows, estimator)
    return check_array(arr, name), like


def _nonfinite(name: str) -> ReprkitError:
    from ..errors import NonFiniteError

    return NonFiniteError(f"{name} contains NaN or infinity; remove or impute those values first")


def _too_few(name: str, shape: Any, min_rows: int, estimator: str) -> ShapeError:
    # scikit-learn's wording (its estimator checks match it).
    shape = tuple(int(v) for v in shape)
    if shape[0] < min_rows:
        return ShapeError(
            f"{name}: found array with {shape[0]} sample(s) (shape={shape}) while a minimum of {min_rows} "
            f"is required by {estimator} (n_samples = {shape[0]})"
        )
    return ShapeError(f"{name}: found array with 0 feature(s) (shape={shape}) while a minimum of 1 is required by {estimator}")


def power_of_two_scale(a: Any) -> float:
    """``2^e`` with max|a| / 2^e in [1, 2) when max|a| is outside the dtype's safe range, else 1.0."""
    data = a.data if _is_sparse(a) else a
    if data.size == 0:
        return 1.0
    amax = float(np.max(np.abs(data)))
    lim = LOG2_SAFE.get(np.dtype(data.dtype), 24)
    if amax == 0.0 or 2.0**-lim <= amax <= 2.0**lim:
        return 1.0
    return float(2.0 ** np.floor(np.log2(amax)))


def scaled(a: Any, s: float) -> Any:
    """``a / s`` in ``a``'s dtype (exact for a power of two), or ``a`` itself when s == 1."""
    if s == 1.0:
        return a
    out = a * (1.0 / s) if _is_sparse(a) else a / a.dtype.type(s)
    return out.astype(a.dtype, copy=False)


def duplicate_fraction(x: np.ndarray) -> float:
    """Fraction of rows that exactly repeat an earlier row (−0.0 counts as 0.0).

    Rows are hashed by exact integer arithmetic on their bit patterns (no sort of
    the rows themselves), so this is O(n·d) plus a sort of n 64-bit keys.
    """
    n = x.shape[0]
    if n < 2:
        return 0.0
    a = np.ascontiguousarray(x + x.dtype.type(0.0))  # −0.0 → +0.0
    bits = a.view(np.uint32 if a.dtype == np.float32 else np.uint64).astype(np.uint64)
    rng = np.random.default_rng(0x5EED)
    mult = rng.integers(1, 2**63, size=bits.shape[1], dtype=np.uint64) | np.uint64(1)
    with np.errstate(over="ignore"):
        h = np.zeros(n, dtype=np.uint64)
        for c in range(bits.shape[1]):
            h = (h ^ (bits[:, c] * mult[c])) * np.uint64(0x9E3779B97F4A7C15)
    return 1.0 - np.unique(h).size / n


def warn_duplicates(x: np.ndarray, what: str = "t-SNE", stacklevel: int = 4) -> None:
    frac = duplicate_fraction(x)
    if frac >= DUPLICATE_WARN_FRACTION:
        warnings.warn(
            f"{frac:.0%} of the {x.shape[0]} input rows are exact duplicates of another row; {what} spends its "
            "iterations pushing identical points apart and the embedding of those copies is arbitrary. "
            "Remove duplicates (np.unique(X, axis=0, return_inverse=True)) or add jitter.",
            DuplicateRowsWarning,
            stacklevel=stacklevel,
        )


# ------------------------------------------------------------------ parameters


def check_bool(name: str, value: Any) -> bool:
    """Booleans are booleans: ``"no"`` or ``1`` is not True."""
    if not isinstance(value, (bool, np.bool_)):
        raise InvalidParameterError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def check_real(
    name: str,
    value: Any,
    *,
    low: Optional[float] = None,
    high: Optional[float] = None,
    low_open: bool = False,
    high_open: bool = False,
    dtype: Any = np.float64,
) -> float:
    """A finite real number in the interval, finite also after rounding to ``dtype``."""
    lo = "(" if low_open else "["
    hi = ")" if high_open else "]"
    rng = f"{lo}{'-inf' if low is None else low}, {'inf' if high is None else high}{hi}"
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise InvalidParameterError(f"{name} must be a real number in {rng}, got {value!r}")
    v = float(value)
    with np.errstate(over="ignore"):
        finite = np.isfinite(v) and np.isfinite(np.dtype(dtype).type(v))
    if not finite:
        raise InvalidParameterError(f"{name} must be a finite real number in {rng} (in {np.dtype(dtype).name}), got {value!r}")
    if low is not None and (v < low or (low_open and v == low)):
        raise InvalidParameterError(f"{name} must be in {rng}, got {value!r}")
    if high is not None and (v > high or (high_open and v == high)):
        raise InvalidParameterError(f"{name} must be in {rng}, got {value!r}")
    return v


def check_int_range(name: str, value: Any, low: int, high: Optional[int] = None) -> int:
    """An integer (not a bool) in [low, high]."""
    rng = f"[{low}, {'inf' if high is None else high}]"
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise InvalidParameterError(f"{name} must be an integer in {rng}, got {value!r}")
    v = int(value)
    if v < low or (high is not None and v > high):
        raise InvalidParameterError(f"{name} must be an integer in {rng}, got {value!r}")
    return v


def check_n_features(estimator: Any, x: Any, expected: int) -> None:
    """scikit-learn's wording, which its checks match."""
    if x.shape[1] != expected:
        raise ShapeError(
            f"X has {x.shape[1]} features, but {type(estimator).__name__} is expecting {expected} features as input"
        )


def check_sne_params(est: Any, n: int) -> None:
    """Type and range of every numeric / boolean parameter of TSNE, SNE and SymmetricSNE
    (the string choices are checked where they are used)."""
    check_int_range("n_components", est.n_components, 1)
    # ⌊3·perplexity⌋ neighbours per point must be at least 1 (and perplexity < n).
    try:
        p = check_real("perplexity", est.perplexity, low=1.0 / 3.0)
    except InvalidParameterError:
        p = -1.0
    if not (p < n) or p < 1.0 / 3.0:
        raise InvalidParameterError(
            f"perplexity must be a finite number in [1/3, n_samples) = [1/3, {n}) (each point needs "
            f"floor(3 * perplexity) >= 1 neighbours), got {est.perplexity!r}"
        )
    check_real("early_exaggeration", est.early_exaggeration, low=0.0, low_open=True)
    check_int_range("exaggeration_iter", est.exaggeration_iter, 0)
    check_int_range("max_iter", est.max_iter, 0)
    check_int_range("callbacks_every", est.callbacks_every, 1)
    lr = est.learning_rate
    if not (isinstance(lr, str) and lr == "auto"):
        if isinstance(lr, str):
            raise InvalidParameterError(f"learning_rate must be 'auto' or a finite number in (0, inf), got {lr!r}")
        check_real("learning_rate", lr, low=0.0, low_open=True)
    if hasattr(est, "angle"):
        check_real("angle", est.angle, low=0.0)
    if hasattr(est, "dof"):
        check_real("dof", est.dof, low=0.0, low_open=True)
    v = est.verbose
    if not isinstance(v, (bool, np.bool_)) and not (isinstance(v, numbers.Integral) and v >= 0):
        raise InvalidParameterError(f"verbose must be a bool (or a non-negative integer level), got {v!r}")
    check_random_state(est.random_state)
    cb = est.callbacks
    if cb is not None and not callable(cb):
        if isinstance(cb, (str, bytes)) or not all(callable(c) for c in (cb if hasattr(cb, "__iter__") else [cb])):
            raise InvalidParameterError(f"callbacks must be None, a callable or a sequence of callables, got {cb!r}")


def check_random_state(value: Any) -> None:
    """None, a non-negative int, or a numpy Generator / RandomState (validated without drawing)."""
    if value is None or isinstance(value, (np.random.Generator, np.random.RandomState)):
        return
    if isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_)) and value >= 0:
        return
    raise InvalidParameterError(
        f"random_state must be None, an integer in [0, inf) or a numpy Generator / RandomState, got {value!r}"
    )
