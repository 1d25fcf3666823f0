"""Moving CPU tensors to and from the Rust kernels without copies where possible."""

from __future__ import annotations

from typing import Any

import numpy as np

from ._torch import require_torch

torch = require_torch()

COMPUTE_DTYPES = (torch.float32, torch.float64)


def compute_dtype(t: Any) -> Any:
    """float32/float64 compute natively; half precision (and others) compute in float32."""
    return t.dtype if t.dtype in COMPUTE_DTYPES else torch.float32


def as_numpy(t: Any, dtype: Any = None) -> np.ndarray:
    """A C-contiguous numpy view (copy only if needed) of a detached CPU tensor."""
    t = t.detach()
    if dtype is not None and t.dtype != dtype:
        t = t.to(dtype)
    return t.contiguous().numpy()


def as_tensor(a: np.ndarray, like: Any) -> Any:
    """Wrap a numpy result as a tensor and cast it to ``like``'s dtype."""
    out = torch.from_numpy(a)
    return out if out.dtype == like.dtype else out.to(like.dtype)


def unbroadcast(grad: Any) -> Any:
    """A 2-D upstream gradient with its broadcast (stride-0) dimensions cut to length 1.

    After ``D.sum()`` (or a sum over one axis) torch hands backward values expanded to
    D's shape; the kernels take (1, 1), (n, 1) or (1, m) and broadcast it
    themselves, so no n × m copy is made.
    """
    if grad.dim() == 2:
        if grad.stride(0) == 0:
            grad = grad[:1]
        if grad.stride(1) == 0:
            grad = grad[:, :1]
    return grad
