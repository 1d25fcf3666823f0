"""Input handling shared by reprkit.metrics: embeddings and labels from numpy,
torch or lists, with errors that name the argument."""

from __future__ import annotations

import sys
from typing import Any, Optional, Sequence, Tuple

import numpy as np

from .._validation import check_array
from ..errors import InvalidParameterError, NonFiniteError, ShapeError

METRICS = ("euclidean", "cosine")


def is_torch(x: Any) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


def embeddings(x: Any, name: str, min_rows: int = 1) -> np.ndarray:
    """A C-contiguous float32/float64 numpy copy-or-view of ``x`` (torch tensors
    go through the CPU; float16/bfloat16 compute in float32)."""
    if is_torch(x):
        import torch

        t = x.detach()
        if t.dtype in (torch.float16, torch.bfloat16):
            t = t.float()
        x = t.cpu().numpy()
    return check_array(x, name, min_rows=min_rows)


def labels_1d(y: Any, name: str, n: Optional[int] = None, n_name: str = "") -> np.ndarray:
    """Labels (ints, strings, floats without NaN; numpy, torch or a list) as a 1-D numpy array."""
    if is_torch(y):
        y = y.detach().cpu().numpy()
    try:
        arr = np.asarray(y)
    except Exception as e:
        raise ShapeError(f"{name} could not be converted to an array: {e}") from None
    if arr.ndim == 2 and 1 in arr.shape:
        arr = arr.ravel()
    if arr.ndim != 1:
        raise ShapeError(f"{name} must be 1-D (one label per row), got shape {arr.shape}")
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise NonFiniteError(f"{name} contains NaN or infinity; every row needs a label")
    if arr.dtype.kind not in "iubfUSO":
        raise ShapeError(f"{name}: labels must be integers or strings, got dtype {arr.dtype}")
    if arr.dtype.kind == "O":
        arr = arr.astype(str)
    if n is not None and arr.shape[0] != n:
        raise ShapeError(f"{name} has {arr.shape[0]} labels but {n_name} has {n} rows")
    return arr


def encode(*label_sets: np.ndarray) -> Tuple[np.ndarray, Sequence[np.ndarray]]:
    """Joint integer codes 0..C-1 of several label arrays (the classes in sorted order)."""
    kinds = {a.dtype.kind in "US" for a in label_sets}
    if len(kinds) > 1:
        raise InvalidParameterError("labels mix strings and numbers between arguments; use one kind of label")
    allv = np.concatenate(label_sets)
    classes, inv = np.unique(allv, return_inverse=True)
    inv = inv.astype(np.int64).ravel()
    out, s = [], 0
    for a in label_sets:
        out.append(np.ascontiguousarray(inv[s : s + a.shape[0]]))
        s += a.shape[0]
    return classes, out


def metric_name(metric: str) -> str:
    if metric not in METRICS:
        raise InvalidParameterError(f"metric must be one of {', '.join(METRICS)}, got {metric!r}")
    return metric


def check_int(name: str, value: Any, lo: int, hi: Optional[int] = None, why: str = "") -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise InvalidParameterError(f"{name} must be an integer, got {value!r}")
    v = int(value)
    if v < lo or (hi is not None and v > hi):
        rng = f"{lo}..{hi}" if hi is not None else f">= {lo}"
        raise InvalidParameterError(f"{name} must be in {rng}{why}, got {v}")
    return v


def same_dtype(a: np.ndarray, b: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    if a.dtype != b.dtype:
        dt = np.promote_types(a.dtype, b.dtype)
        return a.astype(dt, copy=False), b.astype(dt, copy=False)
    return a, b
