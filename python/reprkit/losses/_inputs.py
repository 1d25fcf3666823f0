"""Validation and dtype handling shared by the loss families and the miners."""

from __future__ import annotations

import math
import numbers
from typing import Any, Optional, Tuple

import numpy as np

from .._torch import is_tensor, require_torch
from ..errors import DTypeError, InvalidInputError, InvalidParameterError, NonFiniteError, ShapeError


def check_embeddings(t: Any, name: str) -> Any:
    """A 2-D, non-empty, finite floating-point tensor, or a clear reprkit error."""
    torch = require_torch()
    if not is_tensor(t):
        raise DTypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    check_layout(t, name)
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


def check_layout(t: Any, name: str) -> None:
    """Refuses what no kernel or reference computes on: sparse layouts and data-less meta tensors."""
    torch = require_torch()
    if t.layout != torch.strided:
        raise DTypeError(f"{name} is a sparse tensor ({t.layout}); pass a dense tensor ({name}.to_dense())")
    if t.is_meta:
        raise DTypeError(f"{name} is on the meta device (no data); pass a tensor on a CPU or GPU device")


def check_distance_range(t: Any, name: str, metric: str) -> None:
    """Euclidean-type losses square their distances: refuse embeddings so large that 4·d·max|x|²
    overflows the compute dtype (the loss would be inf − inf = NaN), naming the bound."""
    torch = require_torch()
    if metric == "cosine" or torch.compiler.is_compiling() or torch._C._functorch.is_functorch_wrapped_tensor(t):
        return
    big = float(torch.finfo(t.dtype if t.dtype == torch.float64 else torch.float32).max)
    bound = math.sqrt(big / (4.0 * t.shape[1]))
    with torch.no_grad():
        m = float(t.detach().abs().max())
    if m > bound:
        raise InvalidInputError(
            f"{name} has values up to {m:.3g}: its squares (the squared distances of a {metric} loss) overflow "
            f"{'float64' if big > 1e300 else 'float32'} (max |value| for d={t.shape[1]} is {bound:.3g}); "
            f"rescale or normalise the embeddings"
        )


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


# Parameters are checked in float32, the narrowest dtype a kernel computes in (half precision is
# computed in float32): a margin finite in float64 can be inf in float32, and a temperature
# τ < 2**-126 has a 1/τ that overflows it.
F32_MAX = float(np.finfo(np.float32).max)
F32_TINY = float(np.finfo(np.float32).tiny)


def _real(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, (bool, np.bool_))


def check_positive(name: str, v: float) -> float:
    """A number τ with 2**-126 ≤ τ ≤ float32's max: τ and 1/τ are finite in float32."""
    if not _real(v) or not math.isfinite(float(v)) or not (F32_TINY <= float(v) <= F32_MAX):
        raise InvalidParameterError(
            f"{name} must be a number in [{F32_TINY:.3g}, {F32_MAX:.3g}] (> 0, and it and its reciprocal finite in "
            f"float32), got {v!r}"
        )
    return float(v)


def check_finite_number(name: str, v: float, *, nonneg: bool = False) -> float:
    """A number finite in float32 (|v| ≤ 3.4e38), and ≥ 0 with ``nonneg``."""
    ok = _real(v) and math.isfinite(float(v)) and abs(float(v)) <= F32_MAX and not (nonneg and float(v) < 0)
    if not ok:
        lo = "0" if nonneg else f"{-F32_MAX:.3g}"
        raise InvalidParameterError(f"{name} must be a number in [{lo}, {F32_MAX:.3g}] (finite in float32), got {v!r}")
    return float(v)


def check_bool(name: str, v: Any, *, optional: bool = False) -> Any:
    """``True`` / ``False`` (numpy booleans too; ``None`` with ``optional``): a string such as "no" is
    truthy, so anything else is refused rather than read as True."""
    if optional and v is None:
        return None
    if not isinstance(v, (bool, np.bool_)):
        raise InvalidParameterError(f"{name} must be True or False{' or None' if optional else ''}, got {v!r}")
    return bool(v)


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
