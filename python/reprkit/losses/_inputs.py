"""Validation and dtype handling shared by the loss families and the miners."""

from __future__ import annotations

import math
from typing import Any, Optional, Tuple

import numpy as np

from .._torch import is_tensor, require_torch
from ..errors import DTypeError, InvalidParameterError, NonFiniteError, ShapeError


def check_embeddings(t: Any, name: str) -> Any:
    """A 2-D, non-empty, finite floating-point tensor, or a clear reprkit error."""
    torch = require_torch()
    if not is_tensor(t):
        raise DTypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if not t.is_floating_point():
        raise DTypeError(f"{name} has dtype {t.dtype}; losses take floating-point embeddings (float16/bfloat16/float32/float64)")
    if t.dim() != 2:
        raise ShapeError(f"{name} must be a 2-D tensor (batch, dim), got shape {tuple(t.shape)}")
    if t.shape[0] == 0 or t.shape[1] == 0:
        raise ShapeError(f"{name} must be non-empty, got shape {tuple(t.shape)}")
    if torch.compiler.is_compiling() or torch._C._functorch.is_functorch_wrapped_tensor(t):
        # No data-dependent branch in a traced graph or under vmap: the CPU kernels check finiteness themselves.
        return t
    with torch.no_grad():
        # A finite sum proves every entry finite (NaN/±inf propagate) without the
        # B×d boolean mask of isfinite; only a non-finite sum (or overflow) needs it.
        if not bool(torch.isfinite(t.sum())) and not bool(torch.isfinite(t).all()):
            raise NonFiniteError(f"{name} contains NaN or infinity")
    return t


def check_labels(labels: Any, n: int, device: Any, name: str = "labels") -> Any:
    """Labels as an int64 tensor of length ``n`` on ``device``; rejects floats and bools."""
    torch = require_torch()
    if is_tensor(labels):
        t = labels
    else:
        arr = np.asarray(labels)
        if arr.dtype.kind not in "iu":
            raise DTypeError(f"{name} must be integers, got dtype {arr.dtype}")
        t = torch.from_numpy(arr.astype(np.int64, copy=False))
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise DTypeError(f"{name} must be an integer tensor, got dtype {t.dtype}")
    if t.dim() != 1 or t.shape[0] != n:
        raise ShapeError(f"{name} must have shape ({n},) to match the embeddings, got {tuple(t.shape)}")
    return t.to(device=device, dtype=torch.long)


def check_refs(x: Any, labels: Any, ref_embeddings: Any, ref_labels: Any) -> Tuple[Optional[Any], Optional[Any]]:
    """Validates cross-batch references (both or neither, same width, device)."""
    if (ref_embeddings is None) != (ref_labels is None):
        raise InvalidParameterError("ref_embeddings and ref_labels must be given together")
    if ref_embeddings is None:
        return None, None
    r = check_embeddings(ref_embeddings, "ref_embeddings")
    if r.shape[1] != x.shape[1]:
        raise ShapeError(f"ref_embeddings has {r.shape[1]} features, embeddings have {x.shape[1]}")
    if r.device != x.device:
        raise ShapeError(f"ref_embeddings is on {r.device}, embeddings on {x.device}")
    return r, check_labels(ref_labels, r.shape[0], x.device, "ref_labels")


def check_same_shape(a: Any, b: Any, na: str, nb: str) -> None:
    if tuple(a.shape) != tuple(b.shape):
        raise ShapeError(f"{na} and {nb} must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    if a.device != b.device:
        raise ShapeError(f"{na} is on {a.device}, {nb} on {b.device}")


def check_positive(name: str, v: float) -> float:
    if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v) or v <= 0:
        raise InvalidParameterError(f"{name} must be a finite number > 0, got {v!r}")
    return float(v)


def check_finite_number(name: str, v: float, *, nonneg: bool = False) -> float:
    if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v) or (nonneg and v < 0):
        raise InvalidParameterError(f"{name} must be a finite number{' >= 0' if nonneg else ''}, got {v!r}")
    return float(v)


def compute(t: Optional[Any]) -> Optional[Any]:
    """float32/float64 stay; half precision (and others) are computed in float32."""
    torch = require_torch()
    if t is None or t.dtype in (torch.float32, torch.float64):
        return t
    return t.float()


def common_dtype(*ts: Optional[Any]) -> list:
    """Casts every given tensor to the widest compute dtype among them."""
    torch = require_torch()
    ts2 = [compute(t) for t in ts]
    wide = torch.float64 if any(t is not None and t.dtype == torch.float64 for t in ts2) else torch.float32
    return [None if t is None else t.to(wide) for t in ts2]


def labels_np(t: Optional[Any]) -> Optional[np.ndarray]:
    return None if t is None else np.ascontiguousarray(t.detach().cpu().numpy(), dtype=np.int64)
