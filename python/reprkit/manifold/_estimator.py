"""Shared plumbing of reprkit's scikit-learn-style estimators (no sklearn dependency).

* :class:`Estimator` — ``get_params`` / ``set_params`` read the constructor
  signature, so ``sklearn.base.clone`` and grid searches work without
  subclassing scikit-learn;
* :func:`seed_of` — turns ``random_state`` into a 64-bit seed for the Rust PRNG;
* :func:`as_input` / :func:`as_output` — numpy or torch in, the same kind out.
"""

from __future__ import annotations

import inspect
import numbers
from typing import Any, Dict, Optional, Tuple

import numpy as np

from .._torch import is_tensor
from .._validation import check_array
from ..errors import DTypeError, InvalidParameterError


class Estimator:
    """Base class: parameters are exactly the keyword arguments of ``__init__``."""

    @classmethod
    def _param_names(cls) -> list:
        sig = inspect.signature(cls.__init__)
        return sorted(p.name for p in sig.parameters.values() if p.name != "self" and p.kind != p.VAR_KEYWORD)

    def get_params(self, deep: bool = True) -> Dict[str, Any]:
        """The constructor parameters and their current values."""
        return {name: getattr(self, name) for name in self._param_names()}

    def set_params(self, **params: Any) -> "Estimator":
        """Set constructor parameters (validated at the next ``fit``); returns ``self``."""
        valid = self._param_names()
        for key, value in params.items():
            if key not in valid:
                raise InvalidParameterError(
                    f"invalid parameter {key!r} for {type(self).__name__}; valid parameters: {', '.join(valid)}"
                )
            setattr(self, key, value)
        return self

    def __repr__(self) -> str:
        defaults = {
            p.name: p.default for p in inspect.signature(type(self).__init__).parameters.values() if p.name != "self"
        }
        changed = []
        for k, v in self.get_params().items():
            d = defaults.get(k, inspect.Parameter.empty)
            same = d is not inspect.Parameter.empty and (d is v or (type(d) is type(v) and d == v))
            if not same:
                changed.append(f"{k}={v!r}")
        return f"{type(self).__name__}({', '.join(changed)})"


def seed_of(random_state: Any) -> int:
    """A 64-bit seed: an int is used as is; ``None`` draws from numpy's global RNG
    (scikit-learn's convention); a ``np.random.Generator`` / ``RandomState`` is drawn from."""
    if random_state is None:
        return int(np.random.randint(0, 2**31 - 1))
    if isinstance(random_state, numbers.Integral) and not isinstance(random_state, bool):
        if random_state < 0:
            raise InvalidParameterError(f"random_state must be non-negative, got {random_state}")
        return int(random_state) & (2**64 - 1)
    if isinstance(random_state, np.random.Generator):
        return int(random_state.integers(0, 2**63 - 1))
    if isinstance(random_state, np.random.RandomState):
        return int(random_state.randint(0, 2**31 - 1))
    raise InvalidParameterError(f"random_state must be None, an int or a numpy random generator, got {random_state!r}")


def check_int(name: str, value: Any, minimum: int, allow_none: bool = False) -> Optional[int]:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise InvalidParameterError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def as_input(x: Any, name: str = "X") -> Tuple[np.ndarray, Any]:
    """``(array, like)``: a validated float32/float64 array and the tensor to mimic on output (or None).

    Tensors are detached and moved to the CPU; half precision computes in float32.
    """
    if is_tensor(x):
        import torch

        if not x.is_floating_point():
            raise DTypeError(f"{name} has dtype {x.dtype}; reprkit computes in floating point")
        t = x.detach()
        if t.dtype not in (torch.float32, torch.float64):
            t = t.to(torch.float32)
        return check_array(t.cpu().contiguous().numpy(), name), x
    return check_array(x, name), None


def as_output(a: np.ndarray, like: Any) -> Any:
    """Return ``a`` as it came in: numpy, or a tensor on ``like``'s device and dtype."""
    if like is None:
        return a
    import torch

    return torch.from_numpy(np.ascontiguousarray(a)).to(device=like.device, dtype=like.dtype)
