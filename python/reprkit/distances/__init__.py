"""Pairwise distances for numpy arrays and torch tensors."""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from .. import _core
from .._threads import op_threads, resolve_n_jobs
from .._torch import is_tensor
from .._validation import check_array, check_choice
from ..errors import DTypeError, NonFiniteError, ShapeError

METRICS = ("euclidean", "sqeuclidean", "cosine")


def _check_tensor(t: Any, name: str) -> None:
    from ..losses._inputs import check_layout

    check_layout(t, name)
    if not (t.is_floating_point()):
        raise DTypeError(f"{name} has dtype {t.dtype}; reprkit computes in floating point (float16/bfloat16/float32/float64)")
    if t.dim() != 2:
        raise ShapeError(f"{name} must be a 2-D tensor (n_samples, n_features), got shape {tuple(t.shape)}")
    if t.shape[0] == 0 or t.shape[1] == 0:
        raise ShapeError(f"{name} must be non-empty, got shape {tuple(t.shape)}")
    # On CPU the Rust kernel checks finiteness as it reads (same error); other devices check here.
    if t.device.type != "cpu" and not bool(t.detach().isfinite().all()):
        raise NonFiniteError(f"{name} contains NaN or infinity")


def pairwise_distances(x: Any, y: Optional[Any] = None, metric: str = "euclidean", *, n_jobs: Optional[int] = None) -> Any:
    """Distances between the rows of ``x`` (n, d) and of ``y`` (m, d), as an (n, m) matrix.

    Metrics:

    * ``"euclidean"``: D_ij = ‖x_i − y_j‖₂
    * ``"sqeuclidean"``: D_ij = ‖x_i − y_j‖₂²
    * ``"cosine"``: D_ij = 1 − x_i·y_j / (‖x_i‖‖y_j‖) (1 when either row is all zeros)

    ``y=None`` means ``y = x``; the diagonal is then exactly 0. numpy in → numpy
    out; a torch tensor in → a tensor on the same device and dtype, differentiable
    in ``x`` and ``y`` (CPU tensors run the Rust kernel with an analytic backward,
    other devices run :func:`reprkit.reference.pairwise_distances`). float16 and
    bfloat16 are computed in float32 and cast back.

    Unlike the plain product form ‖x‖²+‖y‖²−2x·y (``torch.cdist``), entries where
    that form cancels are recomputed directly, so near-duplicate rows keep their
    relative precision; exact duplicate rows get an exact 0 without that recompute, so a
    collapsed batch (all rows equal) costs about what distinct rows cost. The gradient of
    the Euclidean distance at 0 is 0.

    Rows whose squares would overflow (float32 rows of 1e30, float64 of 1e300) or underflow
    are scaled by a power of two (exact) and the distances scaled back, so every distance
    whose true value is representable is finite; a ``"sqeuclidean"`` value beyond the
    dtype's range is ``+inf``, never NaN.
    """
    check_choice("metric", metric, METRICS)
    if is_tensor(x) or is_tensor(y):
        if not is_tensor(x) or (y is not None and not is_tensor(y)):
            raise DTypeError("x and y must both be torch tensors or both be numpy arrays")
        _check_tensor(x, "x")
        if y is not None:
            _check_tensor(y, "y")
            if y.shape[1] != x.shape[1]:
                raise ShapeError(f"x and y must have the same number of features, got {x.shape[1]} and {y.shape[1]}")
            if y.device != x.device:
                raise ShapeError(f"x and y are on different devices ({x.device} and {y.device})")
        if x.device.type == "cpu":
            from ._autograd import pairwise_distances_cpu

            return pairwise_distances_cpu(x, y, metric, op_threads(n_jobs))
        from .. import reference

        cd = x.dtype if x.dtype in (_torch_float32(), _torch_float64()) else _torch_float32()
        out = reference.pairwise_distances(x.to(cd), None if y is None else y.to(cd), metric)
        return out.to(x.dtype)
    xa = check_array(x, "x")
    ya = None
    if y is not None:
        ya = check_array(y, "y")
        if ya.shape[1] != xa.shape[1]:
            raise ShapeError(f"x and y must have the same number of features, got {xa.shape[1]} and {ya.shape[1]}")
        if ya.dtype != xa.dtype:
            common = np.promote_types(xa.dtype, ya.dtype)
            xa, ya = xa.astype(common, copy=False), ya.astype(common, copy=False)
    return _core.pairwise_distances(xa, ya, metric, resolve_n_jobs(n_jobs))


def _torch_float32() -> Any:
    import torch

    return torch.float32


def _torch_float64() -> Any:
    import torch

    return torch.float64
