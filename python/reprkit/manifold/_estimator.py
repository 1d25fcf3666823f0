"""Shared plumbing of reprkit's scikit-learn-style estimators (no sklearn dependency).

* :class:`Estimator` — ``get_params`` / ``set_params`` read the constructor
  signature, so ``sklearn.base.clone`` and grid searches work without
  subclassing scikit-learn;
* :func:`seed_of` — turns ``random_state`` into a 64-bit seed for the Rust PRNG;
* :func:`as_input` / :func:`as_output` — numpy or torch in, the same kind out;
* ``__sklearn_tags__`` (scikit-learn ≥ 1.6) and ``_more_tags`` / ``_get_tags`` (older
  versions): scikit-learn is imported lazily, only when it asks for the tags, so it stays
  an optional dependency; without it the tags are a plain namespace with the same fields.
"""

from __future__ import annotations

import inspect
import numbers
from typing import Any, Dict, Optional, Tuple

import numpy as np

from .._torch import is_tensor
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

    # --- scikit-learn tags (Pipeline, check_is_fitted, is_classifier, estimator checks) ---
    def _tag_values(self) -> Dict[str, Any]:
        """Per-class tag overrides: ``transformer``, ``sparse``, ``pairwise``, ``non_deterministic``."""
        return {}

    def __sklearn_tags__(self) -> Any:
        v = {"transformer": True, "sparse": False, "pairwise": False, "non_deterministic": False}
        v.update(self._tag_values())
        preserves = ["float64", "float32"]
        try:
            from sklearn.utils import InputTags, Tags, TargetTags, TransformerTags
        except ImportError:  # no scikit-learn (or < 1.6): the same fields, no sklearn types
            from types import SimpleNamespace as NS

            return NS(
                estimator_type=None, target_tags=NS(required=False, one_d_labels=False, two_d_labels=False,
                                                    positive_only=False, multi_output=False, single_output=True),
                transformer_tags=NS(preserves_dtype=preserves) if v["transformer"] else None,
                classifier_tags=None, regressor_tags=None, array_api_support=False, no_validation=False,
                non_deterministic=v["non_deterministic"], requires_fit=True, _skip_test=False,
                input_tags=NS(one_d_array=False, two_d_array=True, three_d_array=False, sparse=v["sparse"],
                              categorical=False, string=False, dict=False, positive_only=False, allow_nan=False,
                              pairwise=v["pairwise"]),
            )
        return Tags(
            estimator_type=None,
            target_tags=TargetTags(required=False),
            transformer_tags=TransformerTags(preserves_dtype=preserves) if v["transformer"] else None,
            non_deterministic=v["non_deterministic"],
            input_tags=InputTags(sparse=v["sparse"], pairwise=v["pairwise"]),
        )

    def _more_tags(self) -> Dict[str, Any]:
        """Tags in the dict form of scikit-learn < 1.6."""
        v = {"sparse": False, "pairwise": False, "non_deterministic": False}
        v.update(self._tag_values())
        return {
            "X_types": ["2darray", "sparse"] if v["sparse"] else ["2darray"],
            "pairwise": v["pairwise"],
            "non_deterministic": v["non_deterministic"],
            "preserves_dtype": [np.float64, np.float32],
            "requires_y": False,
        }

    def _get_tags(self) -> Dict[str, Any]:
        """scikit-learn < 1.6 reads tags through this method (BaseEstimator's defaults + ours)."""
        tags = {
            "allow_nan": False, "binary_only": False, "multilabel": False, "multioutput": False,
            "multioutput_only": False, "no_validation": False, "non_deterministic": False, "pairwise": False,
            "poor_score": False, "requires_fit": True, "requires_positive_X": False, "requires_y": False,
            "requires_positive_y": False, "_skip_test": False, "_xfail_checks": False, "stateless": False,
            "X_types": ["2darray"], "preserves_dtype": [np.float64],
        }
        tags.update(self._more_tags())
        return tags

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


def as_input(x: Any, name: str = "X", **kw: Any) -> Tuple[Any, Any]:
    """``(array, like)``: a validated float32/float64 array and the tensor to mimic on output (or None).

    scikit-learn's conversions (see :func:`._checks.estimator_input`): lists, object arrays of
    numbers, int/bool → float64, tensors on any device (half precision computes in float32),
    sparse input densified under a size guard (``keep_sparse=True`` keeps a scipy CSR).
    """
    from ._checks import estimator_input

    return estimator_input(x, name, **kw)


def as_output(a: np.ndarray, like: Any) -> Any:
    """Return ``a`` as it came in: numpy, or a tensor on ``like``'s device and dtype
    (integer / boolean tensors give float32, torch's default float dtype)."""
    if like is None:
        return a
    import torch

    t = torch.from_numpy(np.ascontiguousarray(a))
    dtype = like.dtype if like.is_floating_point() else torch.float32
    return t.to(device=like.device, dtype=dtype)
