"""How many threads reprkit's kernels use.

Kernels run in reprkit's own rayon pool. The size is, in order of precedence:
the ``n_jobs`` argument of a call, the value given to :func:`set_num_threads`,
``torch.get_num_threads()`` when torch is already imported (so reprkit and
torch share the cores instead of oversubscribing them), else the number of
CPUs this process may run on.

Counts are bounded: a request above :func:`max_threads` (4 × the CPUs this
process may run on) is capped there, so ``n_jobs=10**6`` or ``2**64`` neither
starts a million threads nor overflows; results do not depend on the thread
count, so the cap changes only the speed. Negative counts follow scikit-learn:
``-1`` = all CPUs, ``-2`` = all but one, ... (at least 1).
"""

from __future__ import annotations

import numbers
import os
import sys
from typing import Any, Optional

from .errors import InvalidParameterError

_user_threads: Optional[int] = None


def _cpu_count() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def max_threads() -> int:
    """The most threads a kernel runs: 4 × the CPUs this process may run on (larger requests are capped)."""
    return 4 * _cpu_count()


def _count(n: Any, what: str) -> int:
    """An integer thread request (positive, or negative as in scikit-learn) as a count in [1, max_threads()]."""
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or int(n) == 0:
        raise InvalidParameterError(
            f"{what} must be None, a positive integer (capped at {max_threads()}) or a negative integer "
            f"(-1 = all CPUs, -2 = all but one, ...), got {n!r}"
        )
    n = int(n)
    if n < 0:
        return max(1, _cpu_count() + 1 + n)
    return min(n, max_threads())


def set_num_threads(n: Optional[int]) -> None:
    """Set the default number of threads of reprkit's kernels (``None`` restores the default).

    A positive count is capped at :func:`max_threads`; ``-1`` means all CPUs, ``-2`` all but one, ..."""
    global _user_threads
    _user_threads = None if n is None else _count(n, "set_num_threads's n")


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

    ``None`` → :func:`get_num_threads`; a positive integer → itself (capped at :func:`max_threads`); ``-1`` → all
    CPUs, ``-2`` → all but one, ... (scikit-learn's convention).
    """
    if n_jobs is None:
        return get_num_threads()
    return _count(n_jobs, "n_jobs")


def op_threads(n_jobs: Optional[int]) -> int:
    """``n_jobs`` for a torch operator: 0 = "the default, resolved when the kernel runs" (so a traced
    graph does not bake in torch.get_num_threads()); otherwise :func:`resolve_n_jobs`."""
    return 0 if n_jobs is None else resolve_n_jobs(n_jobs)


def kernel_threads(n: int) -> int:
    """The thread count of an operator call: ``n``, or the default for 0."""
    return min(n, max_threads()) if n > 0 else get_num_threads()
