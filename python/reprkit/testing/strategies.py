"""Hypothesis strategies for embeddings, labels and paired views, plus their seeded generators.

Every strategy draws a handful of small choices (sizes, dtype, kind, scale) and
one integer seed, then builds the tensor with a seeded ``torch.Generator``: the
result is a pure function of hypothesis' draws, so shrinking, the example
database and ``derandomize=True`` all work. The generators themselves
(:func:`make_embeddings`, :func:`make_labels`) are public for use without
hypothesis (``pytest.mark.parametrize``, scripts).

hypothesis is imported only when a strategy is built; without it the call
raises an ImportError naming ``pip install reprkit[test]``.
"""

from __future__ import annotations

import math
from typing import Any, Optional, Sequence, Tuple, Union

import torch

from ..errors import MissingDependencyError

__all__ = [
    "EMBEDDING_KINDS",
    "LABEL_STRUCTURES",
    "embeddings",
    "labels",
    "labelled_batches",
    "paired_views",
    "make_embeddings",
    "make_labels",
]

#: The kinds of embeddings :func:`embeddings` draws from (the first is where hypothesis shrinks to).
EMBEDDING_KINDS: Tuple[str, ...] = (
    "gaussian",
    "near_duplicates",
    "exact_duplicates",
    "collapsed",
    "huge",
    "tiny",
    "mixed_scale",
)

#: The label structures :func:`labels` draws from.
LABEL_STRUCTURES: Tuple[str, ...] = ("random", "one_class", "all_distinct", "singletons_and_pairs", "balanced")

_SEED_MAX = 2**32 - 1
_DEFAULT_SCALES = (1.0, 0.1, 10.0)
_DEFAULT_NOISE = (0.1, 0.0, 1e-3, 1.0)
_DEFAULT_MAX_CLASSES = 8

IntSpec = Union[int, Tuple[int, int], Any]  # an int, an inclusive (min, max) range, or a strategy


def _st() -> Any:
    """hypothesis.strategies, or an ImportError that says what to install."""
    try:
        from hypothesis import strategies
    except ImportError as e:
        raise MissingDependencyError(
            "reprkit.testing strategies need hypothesis; install it with `pip install reprkit[test]` "
            "(or `pip install hypothesis`)"
        ) from e
    return strategies


def _is_strategy(v: Any) -> bool:
    try:
        from hypothesis.strategies import SearchStrategy
    except ImportError:  # pragma: no cover - _st() has already raised
        return False
    return isinstance(v, SearchStrategy)


def _int_range(v: Any, name: str, lo: int = 0) -> Optional[Tuple[int, int]]:
    """(min, max) for an int or a range; None for a strategy."""
    if _is_strategy(v):
        return None
    if isinstance(v, bool):
        raise TypeError(f"{name} must be an int, a (min, max) pair or a strategy, got {v!r}")
    if isinstance(v, int):
        a = b = v
    elif isinstance(v, (tuple, list)) and len(v) == 2 and all(isinstance(t, int) and not isinstance(t, bool) for t in v):
        a, b = v
    else:
        raise TypeError(f"{name} must be an int, a (min, max) pair or a strategy, got {v!r}")
    if a < lo or b < a:
        raise ValueError(f"{name} must satisfy {lo} <= min <= max, got {v!r}")
    return a, b


def _int_strategy(v: Any, name: str, lo: int = 0) -> Any:
    st = _st()
    r = _int_range(v, name, lo)
    return v if r is None else st.integers(*r)


def _choice_strategy(v: Any, allowed: Sequence[Any], name: str) -> Any:
    """None: every allowed value; one value or a sequence of them; or a strategy (checked at draw)."""
    st = _st()
    if v is None:
        return st.sampled_from(tuple(allowed))
    if _is_strategy(v):
        return v
    vals = (v,) if isinstance(v, (str, torch.dtype, int, float)) else tuple(v)
    for x in vals:
        if x not in allowed:
            raise ValueError(f"unknown {name} {x!r}; expected one of {tuple(allowed)!r}")
    if not vals:
        raise ValueError(f"{name}: empty selection")
    return st.sampled_from(vals)


def _dtype_strategy(v: Any) -> Any:
    st = _st()
    if v is None:
        return st.sampled_from((torch.float32, torch.float64))
    if _is_strategy(v):
        return v
    vals = (v,) if isinstance(v, torch.dtype) else tuple(v)
    for x in vals:
        if not (isinstance(x, torch.dtype) and x.is_floating_point):
            raise TypeError(f"dtype must be a floating torch dtype (or a sequence / strategy of them), got {x!r}")
    return st.sampled_from(vals)


def _float_strategy(v: Any, default: Sequence[float], name: str, positive: bool = False) -> Any:
    st = _st()
    if v is None:
        return st.sampled_from(tuple(default))
    if _is_strategy(v):
        return v
    vals = (v,) if isinstance(v, (int, float)) else tuple(v)
    for x in vals:
        if not (isinstance(x, (int, float)) and math.isfinite(x) and (x > 0 if positive else x >= 0)):
            bound = "> 0" if positive else ">= 0"
            raise ValueError(f"{name} must be a finite number {bound} (or a sequence / strategy of them), got {x!r}")
    return st.sampled_from(tuple(float(x) for x in vals))


# --------------------------------------------------------------------------------------------
# Seeded generators
# --------------------------------------------------------------------------------------------


def _normal(gen: torch.Generator, *shape: int) -> torch.Tensor:
    # Clipped so the magnitude bounds below hold for every draw, not just in probability.
    return torch.randn(*shape, generator=gen, dtype=torch.float64).clamp_(-6.0, 6.0)


def _unit_rows(gen: torch.Generator, m: int, d: int) -> torch.Tensor:
    """m random unit vectors of length d (all-zero rows only when d == 0)."""
    v = torch.randn(m, d, generator=gen, dtype=torch.float64)
    return v / v.norm(dim=1, keepdim=True).clamp_min(1e-300)


def _scale_bounds(dtype: torch.dtype, d: int) -> Tuple[float, float]:
    """Smallest and largest row scale whose values stay normal numbers and whose squared
    distances (<= d·(12·scale)²) stay 100× below the dtype's maximum."""
    fi = torch.finfo(dtype)
    hi = math.sqrt(fi.max / (100.0 * 144.0 * max(d, 1)))
    lo = 100.0 * fi.tiny
    return lo, hi


def _duplicate_index(gen: torch.Generator, n: int) -> torch.Tensor:
    """n row indices into ceil(n/2) distinct rows, each used at least once (so n >= 2 repeats one)."""
    m = (n + 1) // 2
    if n == 0:
        return torch.zeros(0, dtype=torch.int64)
    idx = torch.cat([torch.arange(m), torch.randint(0, m, (n - m,), generator=gen)])
    return idx[torch.randperm(n, generator=gen)]


def make_embeddings(
    n: int,
    d: int,
    kind: str = "gaussian",
    *,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    scale: float = 1.0,
    device: Any = "cpu",
) -> torch.Tensor:
    """A deterministic (n, d) embedding matrix of the given kind.

    Parameters
    ----------
    n, d : int
        Rows and columns (``0`` gives an empty tensor).
    kind : str
        One of :data:`EMBEDDING_KINDS`:

        * ``"gaussian"``: i.i.d. normal entries times ``scale``;
        * ``"near_duplicates"``: rows drawn from ceil(n/2) gaussian rows; the copies of a row
          lie on a line through it, ``1e-4·scale`` apart (at least ``8·eps`` of the dtype,
          so copies stay distinct, and never closer, so finite differences see no kink);
          with n >= 2 at least one row has a near duplicate;
        * ``"exact_duplicates"``: the same without the offsets: rows repeated bit for bit;
        * ``"collapsed"``: every row equal to one gaussian row, or (decided by the seed)
          the rows lie on a line through it, ``1e-4·scale`` apart;
        * ``"huge"``: gaussian times ``1e6·scale``; ``"tiny"``: times ``1e-6·scale``;
        * ``"mixed_scale"``: row scales evenly spaced in log scale over six decades
          (``scale·1e-3`` to ``scale·1e3``), rows in random order.
    seed : int
        Seed of the torch generator; the result is a pure function of all arguments.
    dtype : torch.dtype
        Floating dtype of the result (generated in float64, then rounded).
    scale : float
        Overall magnitude. Every row scale is clamped to what ``dtype`` represents:
        values stay normal numbers and squared distances stay far below the dtype's
        maximum (this matters only for float16, where "huge" is about 2/sqrt(d)).
    device : torch.device or str
        Device of the result.

    Returns
    -------
    torch.Tensor
        (n, d), finite, ``requires_grad=False``.
    """
    if kind not in EMBEDDING_KINDS:
        raise ValueError(f"unknown embedding kind {kind!r}; expected one of {EMBEDDING_KINDS!r}")
    if n < 0 or d < 0:
        raise ValueError(f"n and d must be >= 0, got n={n}, d={d}")
    if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise TypeError(f"dtype must be a floating torch dtype, got {dtype!r}")
    if not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"scale must be finite and > 0, got {scale!r}")
    gen = torch.Generator().manual_seed(int(seed))
    lo, hi = _scale_bounds(dtype, d)

    def clamp(s: float) -> float:
        return min(max(s, lo), hi)

    # Relative spread of near copies: 1e-4, but never below a few ulps of the dtype.
    near = max(1e-4, 8.0 * torch.finfo(dtype).eps)
    s = clamp(scale)
    if kind == "gaussian":
        x = _normal(gen, n, d) * s
    elif kind in ("near_duplicates", "exact_duplicates"):
        base = _normal(gen, (n + 1) // 2, d) * s
        idx = _duplicate_index(gen, n)
        x = base[idx]
        if kind == "near_duplicates":
            # The c-th copy of a row moves c·near·s along a direction of its own: copies are
            # exactly near·s apart, never closer (no accidental ties or kinks at 0 distance).
            dirs = _unit_rows(gen, base.shape[0], d)
            copy = torch.zeros(n, dtype=torch.float64)
            seen: dict = {}
            for r, b in enumerate(idx.tolist()):
                copy[r] = seen.get(b, 0)
                seen[b] = seen.get(b, 0) + 1
            x = x + dirs[idx] * (copy[:, None] * near * s)
    elif kind == "collapsed":
        exact = bool(torch.randint(0, 2, (), generator=gen))
        x = (_normal(gen, 1, d) * s).expand(n, d).clone()
        if not exact:  # rows on a line through the point, near·s apart
            steps = torch.randperm(n, generator=gen).to(torch.float64)
            x = x + _unit_rows(gen, 1, d) * (steps[:, None] * near * s)
    elif kind == "huge":
        x = _normal(gen, n, d) * clamp(1e6 * scale)
    elif kind == "tiny":
        x = _normal(gen, n, d) * clamp(1e-6 * scale)
    else:  # mixed_scale
        decades = torch.linspace(-3.0, 3.0, n, dtype=torch.float64)[torch.randperm(n, generator=gen)] if n > 1 else torch.zeros(n, dtype=torch.float64)
        rows = (scale * 10.0**decades).clamp(lo, hi)
        x = _normal(gen, n, d) * rows[:, None]
    out = x.to(dtype=dtype, device=device)
    if not bool(torch.isfinite(out).all()):  # pragma: no cover - guaranteed by the clamps above
        raise AssertionError(f"make_embeddings produced non-finite values (kind={kind!r}, dtype={dtype})")
    return out


def _balanced_class_counts(n: int, bounds: Optional[Tuple[int, int]]) -> Tuple[int, ...]:
    """Class counts k that divide n (within bounds if given); by default those with >= 2 classes of >= 2 rows."""
    divs = tuple(k for k in range(1, n + 1) if n % k == 0)
    if bounds is not None:
        return tuple(k for k in divs if bounds[0] <= k <= bounds[1])
    pk = tuple(k for k in divs if k >= 2 and n // k >= 2)
    return pk or divs


def make_labels(n: int, structure: str = "random", n_classes: Optional[int] = None, *, seed: int = 0, device: Any = "cpu") -> torch.Tensor:
    """A deterministic int64 label vector of length n with the given structure.

    Parameters
    ----------
    n : int
        Number of labels.
    structure : str
        One of :data:`LABEL_STRUCTURES`:

        * ``"random"``: uniform over ``n_classes`` classes (not every class need appear);
        * ``"one_class"``: every label equal (so no negatives);
        * ``"all_distinct"``: a permutation of ``0..n-1`` (so no positives);
        * ``"singletons_and_pairs"``: every class has one or two members, with at least one
          pair and (n >= 3) at least one singleton;
        * ``"balanced"``: ``n_classes`` classes of ``n / n_classes`` members each (P×K sampling).
    n_classes : int, optional
        Class count for "random" (default: drawn from the seed, 1 to min(n, 8)) and
        "balanced" (must divide n; default: a divisor giving >= 2 classes of >= 2).
        Labels lie in ``[0, n_classes)``; ignored by the other structures.
    seed : int
        Seed of the torch generator.
    device : torch.device or str
        Device of the result.

    Returns
    -------
    torch.Tensor
        int64, shape (n,), values in ``[0, n)``, rows in random order.
    """
    if structure not in LABEL_STRUCTURES:
        raise ValueError(f"unknown label structure {structure!r}; expected one of {LABEL_STRUCTURES!r}")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if n_classes is not None and n_classes < 1:
        raise ValueError(f"n_classes must be >= 1, got {n_classes}")
    gen = torch.Generator().manual_seed(int(seed))
    if n == 0:
        return torch.zeros(0, dtype=torch.int64, device=device)
    if structure == "random":
        k = n_classes if n_classes is not None else int(torch.randint(1, min(n, _DEFAULT_MAX_CLASSES) + 1, (), generator=gen))
        y = torch.randint(0, k, (n,), generator=gen)
    elif structure == "one_class":
        k = n_classes if n_classes is not None else 1
        y = torch.full((n,), int(torch.randint(0, k, (), generator=gen)), dtype=torch.int64)
    elif structure == "all_distinct":
        y = torch.randperm(n, generator=gen)
    elif structure == "singletons_and_pairs":
        if n >= 3:
            pairs = int(torch.randint(1, (n - 1) // 2 + 1, (), generator=gen))
        else:
            pairs = n // 2
        sizes = [2] * pairs + [1] * (n - 2 * pairs)
        ids = torch.randperm(len(sizes), generator=gen)  # class ids in random order
        y = torch.cat([torch.full((s,), int(c), dtype=torch.int64) for s, c in zip(sizes, ids)])
        y = y[torch.randperm(n, generator=gen)]
    else:  # balanced
        if n_classes is None:
            ks = _balanced_class_counts(n, None)
            k = ks[int(torch.randint(0, len(ks), (), generator=gen))]
        else:
            k = n_classes
            if n % k:
                raise ValueError(f"balanced labels need n_classes to divide n, got n={n}, n_classes={k}")
        y = torch.arange(k).repeat_interleave(n // k)[torch.randperm(n, generator=gen)]
    return y.to(torch.int64).to(device)


# --------------------------------------------------------------------------------------------
# Strategies
# --------------------------------------------------------------------------------------------


def _embedding_parts(d: IntSpec, dtype: Any, kind: Any, scale: Any) -> Tuple[Any, Any, Any, Any]:
    return (
        _int_strategy(d, "d"),
        _dtype_strategy(dtype),
        _choice_strategy(kind, EMBEDDING_KINDS, "embedding kind"),
        _float_strategy(scale, _DEFAULT_SCALES, "scale", positive=True),
    )


def _draw_embeddings(draw: Any, n: int, parts: Tuple[Any, Any, Any, Any], device: Any) -> torch.Tensor:
    st = _st()
    d_s, dtype_s, kind_s, scale_s = parts
    kind = draw(kind_s)
    d = draw(d_s)
    dtype = draw(dtype_s)
    scale = draw(scale_s)
    seed = draw(st.integers(0, _SEED_MAX))
    return make_embeddings(n, d, kind, seed=seed, dtype=dtype, scale=scale, device=device)


def embeddings(
    n: IntSpec = (2, 24),
    d: IntSpec = (1, 8),
    dtype: Any = None,
    kind: Any = None,
    *,
    scale: Any = None,
    device: Any = "cpu",
) -> Any:
    """Strategy for (n, d) embedding tensors, including the hard cases.

    Parameters
    ----------
    n, d : int, (min, max) or strategy
        Rows and columns; a pair is an inclusive range.
    dtype : torch.dtype, sequence of dtypes or strategy, optional
        Default: float32 or float64.
    kind : str, sequence of str or strategy, optional
        Which of :data:`EMBEDDING_KINDS` to draw from; default: all
        (see :func:`make_embeddings` for what each kind is).
    scale : float, sequence or strategy, optional
        Overall magnitude; default 1, 0.1 or 10.
    device : torch.device or str
        Device of the tensors.

    Returns
    -------
    hypothesis.strategies.SearchStrategy
        Of finite (n, d) tensors that do not require grad.

    Examples
    --------
    >>> from hypothesis import given
    >>> @given(embeddings(n=(2, 16), d=4, dtype=torch.float64, kind=["exact_duplicates", "huge"]))
    ... def test_my_loss(x): ...
    """
    st = _st()
    n_s = _int_strategy(n, "n")
    parts = _embedding_parts(d, dtype, kind, scale)

    @st.composite
    def _embeddings(draw: Any) -> torch.Tensor:
        return _draw_embeddings(draw, draw(n_s), parts, device)

    return _embeddings()


def _draw_n_classes(draw: Any, spec: Any, hi_default: int) -> Optional[int]:
    st = _st()
    if spec is None:
        return draw(st.integers(1, max(1, hi_default)))
    if _is_strategy(spec):
        return draw(spec)
    lo, hi = _int_range(spec, "n_classes", 1)  # type: ignore[misc]
    return draw(st.integers(lo, hi))


def _draw_labels(draw: Any, n: int, structure: str, n_classes: Any, device: Any) -> torch.Tensor:
    st = _st()
    k: Optional[int] = None
    if structure == "random":
        k = _draw_n_classes(draw, n_classes, min(n, _DEFAULT_MAX_CLASSES))
    elif structure == "one_class" and n_classes is not None:
        k = _draw_n_classes(draw, n_classes, 1)
    elif structure == "balanced" and n > 0:
        if n_classes is not None and _is_strategy(n_classes):
            k = draw(n_classes)
        else:
            bounds = None if n_classes is None else _int_range(n_classes, "n_classes", 1)
            ks = _balanced_class_counts(n, bounds)
            if not ks:
                raise ValueError(f"balanced labels: no class count in {bounds} divides n={n}")
            k = draw(st.sampled_from(ks))
    return make_labels(n, structure, k, seed=draw(st.integers(0, _SEED_MAX)), device=device)


def labels(n: IntSpec, structure: Any = None, n_classes: Any = None, *, device: Any = "cpu") -> Any:
    """Strategy for int64 label vectors of length n.

    Parameters
    ----------
    n : int, (min, max) or strategy
        Length.
    structure : str, sequence of str or strategy, optional
        Which of :data:`LABEL_STRUCTURES` to draw from; default: all
        (see :func:`make_labels`).
    n_classes : int, (min, max) or strategy, optional
        Class count for "random" (default 1 to min(n, 8)), "one_class" (the label's
        range) and "balanced" (restricted to divisors of n: a range that holds none
        raises ValueError; default: >= 2 classes of >= 2 members where n allows).
    device : torch.device or str
        Device of the tensors.

    Returns
    -------
    hypothesis.strategies.SearchStrategy
        Of int64 tensors of shape (n,).
    """
    st = _st()
    n_s = _int_strategy(n, "n")
    struct_s = _choice_strategy(structure, LABEL_STRUCTURES, "label structure")
    if n_classes is not None and not _is_strategy(n_classes):
        _int_range(n_classes, "n_classes", 1)

    @st.composite
    def _labels(draw: Any) -> torch.Tensor:
        structure_ = draw(struct_s)
        return _draw_labels(draw, draw(n_s), structure_, n_classes, device)

    return _labels()


def labelled_batches(
    n: IntSpec = (2, 24),
    d: IntSpec = (1, 8),
    dtype: Any = None,
    kind: Any = None,
    structure: Any = None,
    n_classes: Any = None,
    *,
    scale: Any = None,
    device: Any = "cpu",
) -> Any:
    """Strategy for ``(embeddings, labels)`` pairs with the same number of rows.

    Parameters are those of :func:`embeddings` and :func:`labels`. For the
    "balanced" structure with ``n_classes`` given and a range (or int) ``n``, n is drawn
    as a multiple of the class count, so any ``n_classes`` that fits in the range works.

    Returns
    -------
    hypothesis.strategies.SearchStrategy
        Of tuples ``(x, y)``: x a float (n, d) tensor, y an int64 (n,) tensor.
    """
    st = _st()
    n_range = _int_range(n, "n")
    n_s = _int_strategy(n, "n")
    parts = _embedding_parts(d, dtype, kind, scale)
    struct_s = _choice_strategy(structure, LABEL_STRUCTURES, "label structure")
    if n_classes is not None and not _is_strategy(n_classes):
        _int_range(n_classes, "n_classes", 1)

    @st.composite
    def _batches(draw: Any) -> Tuple[torch.Tensor, torch.Tensor]:
        structure_ = draw(struct_s)
        if structure_ == "balanced" and n_classes is not None and n_range is not None and n_range[1] > 0:
            lo, hi = n_range
            # Draw the class count, then the class size, so that k·size lies in [lo, hi].
            if _is_strategy(n_classes):
                k = draw(n_classes)
            else:
                klo, khi = _int_range(n_classes, "n_classes", 1)  # type: ignore[misc]
                k = draw(st.integers(klo, min(khi, hi)) if klo <= hi else st.just(klo))
            size_lo, size_hi = max(1, -(-lo // k)), hi // k
            if size_lo > size_hi:
                raise ValueError(f"balanced labels: no multiple of n_classes={k} lies in n={n_range}")
            size = draw(st.integers(max(size_lo, min(2, size_hi)), size_hi))
            nn = k * size
            y = make_labels(nn, "balanced", k, seed=draw(st.integers(0, _SEED_MAX)), device=device)
        else:
            nn = draw(n_s)
            y = _draw_labels(draw, nn, structure_, n_classes, device)
        x = _draw_embeddings(draw, nn, parts, device)
        return x, y

    return _batches()


def paired_views(
    n: IntSpec = (2, 24),
    d: IntSpec = (1, 8),
    dtype: Any = None,
    kind: Any = None,
    noise: Any = None,
    *,
    scale: Any = None,
    device: Any = "cpu",
) -> Any:
    """Strategy for two views ``(z1, z2)`` of the same n samples (contrastive / SSL losses).

    ``z1`` is drawn like :func:`embeddings`; ``z2 = z1 + noise · rms(row) · N(0, 1)``,
    the noise relative to each row's root-mean-square so mixed-scale rows keep their
    relative perturbation. ``noise == 0`` gives identical views (a separate tensor,
    equal bit for bit).

    Parameters
    ----------
    n, d, dtype, kind, scale, device
        As in :func:`embeddings`.
    noise : float, sequence or strategy, optional
        Relative noise level; default 0.1, 0 (identical views), 1e-3 or 1.

    Returns
    -------
    hypothesis.strategies.SearchStrategy
        Of tuples of two finite (n, d) tensors of one dtype.
    """
    st = _st()
    n_s = _int_strategy(n, "n")
    parts = _embedding_parts(d, dtype, kind, scale)
    noise_s = _float_strategy(noise, _DEFAULT_NOISE, "noise")

    @st.composite
    def _views(draw: Any) -> Tuple[torch.Tensor, torch.Tensor]:
        z1 = _draw_embeddings(draw, draw(n_s), parts, device)
        level = draw(noise_s)
        seed = draw(st.integers(0, _SEED_MAX))
        if level == 0:
            return z1, z1.clone()
        gen = torch.Generator().manual_seed(seed)
        z = z1.detach().to(device="cpu", dtype=torch.float64)
        lo, hi = _scale_bounds(z1.dtype, z1.shape[1])
        rms = z.pow(2).mean(dim=1, keepdim=True).sqrt().clamp(lo, hi)
        z2 = z + level * rms * _normal(gen, *z.shape)
        z2 = z2.clamp(-12.0 * hi, 12.0 * hi).to(dtype=z1.dtype, device=device)
        return z1, z2

    return _views()
