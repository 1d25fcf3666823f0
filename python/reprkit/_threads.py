"""How many threads reprkit's kernels use.

Kernels run in reprkit's own rayon pool. The size is, in order of precedence:
the ``n_jobs`` argument of a call, the value given to :func:`set_num_threads`,
``torch.get_num_threads()`` when torch is already imported (so reprkit and
torch share the cores instead of oversubscribing them), else the number of
CPUs this process may run on.
"""

from __future__ import annotations

import os
import sys
from typing import Optional

from .errors import InvalidParameterError

_user_threads: Optional[int] = None


def _cpu_count() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def set_num_threads(n: Optional[int]) -> None:
    """Set the default number of threads of reprkit's kernels (``None`` restores the default)."""
    global _user_threads
    if n is not None:
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise InvalidParameterError(f"set_num_threads expects a positive integer or None, got {n!r}")
    _user_threads = n


def get_num_threads() -> int:
    """The number of threads a kernel uses when no ``n_jobs`` is given."""
    if _user_threads is not None:
        return _user_threads
    torch = sys.modules.get("torch")
    if torch is not None and hasattr(torch, "get_num_threads"):
        return max(1, int(torch.get_num_threads()))
    return _cpu_count()


def resolve_n_jobs(n_jobs: Optional[int]) -> int:
    """Turn an ``n_jobs`` argument into a thread count.

    ``None`` → :func:`get_num_threads`; a positive integer → itself; ``-1`` → all
    CPUs, ``-2`` → all but one, ... (scikit-learn's convention).
    """
    if n_jobs is None:
        return get_num_threads()
    if isinstance(n_jobs, bool) or not isinstance(n_jobs, int) or n_jobs == 0:
        raise InvalidParameterError(f"n_jobs must be None, a positive integer or a negative integer, got {n_jobs!r}")
    if n_jobs < 0:
        return max(1, _cpu_count() + 1 + n_jobs)
    return n_jobs


def op_threads(n_jobs: Optional[int]) -> int:
    """``n_jobs`` for a torch operator: 0 = "the default, resolved when the kernel runs" (so a traced
    graph does not bake in torch.get_num_threads()); otherwise :func:`resolve_n_jobs`."""
    return 0 if n_jobs is None else resolve_n_jobs(n_jobs)


def kernel_threads(n: int) -> int:
    """The thread count of an operator call: ``n``, or the default for 0."""
    return n if n > 0 else get_num_threads()
