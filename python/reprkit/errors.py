"""The exceptions reprkit raises.

Every error derives from :class:`ReprkitError`, and also from the builtin a
caller would expect (``ValueError`` for bad values and shapes, ``TypeError``
for bad dtypes, ``ImportError`` for a missing optional dependency), so both
``except reprkit.ReprkitError`` and ``except ValueError`` work.
"""

from __future__ import annotations


class ReprkitError(Exception):
    """Base class of all reprkit errors."""


class InvalidInputError(ReprkitError, ValueError):
    """The input data cannot be used (see the subclasses)."""


class ShapeError(InvalidInputError):
    """Wrong number of dimensions, an empty array, or mismatched sizes."""


class NonFiniteError(InvalidInputError):
    """The input contains NaN or infinity."""


class InvalidParameterError(ReprkitError, ValueError):
    """A parameter is outside its valid range (unknown metric, perplexity >= n, ...)."""


class DTypeError(ReprkitError, TypeError):
    """The input has a dtype reprkit does not compute in (integer, complex, object, ...)."""


class MissingDependencyError(ReprkitError, ImportError):
    """An optional dependency (torch, matplotlib) is needed for this call."""


__all__ = [
    "ReprkitError",
    "InvalidInputError",
    "ShapeError",
    "NonFiniteError",
    "InvalidParameterError",
    "DTypeError",
    "MissingDependencyError",
]
