"""Input checks shared by every public function, with messages that say what is accepted."""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from .errors import DTypeError, NonFiniteError, ShapeError

FLOAT_DTYPES = (np.float32, np.float64)


def check_array(
    x: Any,
    name: str = "X",
    *,
    dtype: Optional[Any] = None,
    ndim: int = 2,
    min_rows: int = 1,
    allow_nonfinite: bool = False,
) -> np.ndarray:
    """Return ``x`` as a C-contiguous float32/float64 array of ``ndim`` dimensions.

    float16 is upcast to float32; other float widths to float64. Integer,
    boolean, complex and object arrays are rejected (a silent cast would hide
    bugs such as passing labels as features). Copies only when needed.
    """
    if isinstance(x, np.ndarray):
        arr = x
    else:
        try:
            arr = np.asarray(x)
        except Exception as e:  # ragged lists and the like
            raise ShapeError(f"{name} could not be converted to an array: {e}") from None
    kind = arr.dtype.kind
    if kind != "f":
        raise DTypeError(
            f"{name} has dtype {arr.dtype}; reprkit computes in float32 or float64 "
            f"(float16 is upcast) — convert with .astype(np.float32)"
        )
    if dtype is not None:
        target = np.dtype(dtype)
    elif arr.dtype == np.float16:
        target = np.dtype(np.float32)
    elif arr.dtype in (np.float32, np.float64):
        target = arr.dtype
    else:
        target = np.dtype(np.float64)
    if arr.ndim != ndim:
        shape_word = {1: "1-D array (n,)", 2: "2-D array (n_samples, n_features)"}.get(ndim, f"{ndim}-D array")
        raise ShapeError(f"{name} must be a {shape_word}, got {arr.ndim}-D with shape {arr.shape}")
    if arr.shape[0] < min_rows or (ndim == 2 and arr.shape[1] == 0):
        raise ShapeError(f"{name} must have at least {min_rows} row(s) and 1 column, got shape {arr.shape}")
    arr = np.ascontiguousarray(arr, dtype=target)
    if not allow_nonfinite and not np.isfinite(arr).all():
        raise NonFiniteError(f"{name} contains NaN or infinity; remove or impute those values first")
    return arr


def check_choice(name: str, value: Any, choices: "tuple[str, ...] | list[str]") -> str:
    from .errors import InvalidParameterError

    if not isinstance(value, str) or value not in choices:
        raise InvalidParameterError(f"{name}={value!r} is not supported; choose one of: {', '.join(map(repr, choices))}")
    return value
