"""Checking a function's values and gradients against a reference, and against finite differences."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, List, Optional, Sequence, Tuple, Union

import torch
from torch.autograd.gradcheck import GradcheckError

__all__ = ["GradientReport", "assert_gradients_match", "assert_double_backward", "default_tolerances"]

# (rtol, atol) per dtype; atol is multiplied by the largest |reference| of the compared tensor.
_TOLERANCES = {
    torch.float64: (1e-7, 1e-7),
    torch.float32: (2e-3, 1e-4),
    torch.float16: (1e-2, 2e-3),
    torch.bfloat16: (5e-2, 1e-2),
}
# How many times the measured rounding / conditioning of the reference (see _allowances) fn may
# be off: implementations round differently, and a few samples underestimate the worst case.
_NOISE_FACTOR = 10.0
# torch.autograd.gradcheck settings, used on inputs and outputs rescaled to O(1) (see _scaled_problem).
# The step is relative (1e-7·|x| per element): small against the 1e-4 relative spacing of near
# duplicates, so the curvature of a distance between them stays below rtol.
_GC_STEPS, _GC_ATOL, _GC_RTOL = (1e-7, 1e-9, 1e-5), 1e-5, 1e-3
_GC_EPS = _GC_STEPS[0]
_GC_FULL_JACOBIAN = 200_000

Index = Tuple[int, ...]


def default_tolerances(dtype: torch.dtype) -> Tuple[float, float]:
    """The default ``(rtol, atol)`` for a tensor of ``dtype``.

    The comparison is ``|fn - reference| <= atol · max|reference| + rtol · |reference|``
    elementwise, so ``atol`` here is relative to the magnitude of the compared tensor
    (an explicit ``atol`` passed to :func:`assert_gradients_match` is absolute).

    Parameters
    ----------
    dtype : torch.dtype
        float64: (1e-7, 1e-7); float32: (2e-3, 1e-4); float16: (1e-2, 2e-3);
        bfloat16 and other 8/16-bit floats: (5e-2, 1e-2).

    Returns
    -------
    tuple of float
    """
    if dtype in _TOLERANCES:
        return _TOLERANCES[dtype]
    if dtype.is_floating_point and torch.finfo(dtype).bits <= 16:
        return _TOLERANCES[torch.bfloat16]
    return _TOLERANCES[torch.float32]


@dataclass(frozen=True)
class GradientReport:
    """What :func:`assert_gradients_match` checked (returned when everything matched).

    Attributes
    ----------
    differentiated : tuple of int
        Positions of the inputs whose gradients were compared.
    gradcheck : str
        ``"passed"``, ``"skipped"`` (inputs too big; see ``notes``), ``"off"`` or
        ``"not run"`` (nothing to differentiate).
    max_error_ratio : float
        Largest ``|fn - reference| / tolerance`` over all compared elements (<= 1 on
        success): how much headroom the tolerances left.
    notes : tuple of str
        Remarks (skipped gradcheck, unused inputs, ...).
    """

    differentiated: Tuple[int, ...]
    gradcheck: str
    max_error_ratio: float
    notes: Tuple[str, ...]


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def _is_float(x: Any) -> bool:
    return isinstance(x, torch.Tensor) and x.is_floating_point()


def _outputs(out: Any, who: str) -> Tuple[torch.Tensor, ...]:
    if isinstance(out, torch.Tensor):
        return (out,)
    if isinstance(out, (tuple, list)) and all(isinstance(o, torch.Tensor) for o in out):
        return tuple(out)
    raise TypeError(f"{who} must return a tensor or a tuple of tensors, got {type(out).__name__}")


def _copies(inputs: Sequence[Any], diff: Sequence[int], dtype: Optional[torch.dtype]) -> List[Any]:
    """Fresh leaves for the differentiated inputs; floating inputs cast to ``dtype`` (if given);
    everything else as given."""
    out: List[Any] = []
    for i, x in enumerate(inputs):
        if _is_float(x) and (i in diff or dtype is not None):
            t = x.detach()
            t = t.to(dtype) if dtype is not None and t.dtype != dtype else t.clone()
            out.append(t.requires_grad_(True) if i in diff else t)
        else:
            out.append(x)
    return out


def _describe(kind: str, i: int, names: Sequence[Optional[str]], t: Optional[torch.Tensor]) -> str:
    name = names[i] if i < len(names) else None
    desc = f"{kind} {i}"
    extra = [repr(name)] if name else []
    if t is not None:
        extra.append(f"{t.dtype}, shape {tuple(t.shape)}")
    return desc + (f" ({': '.join(extra)})" if extra else "")


def _unravel(flat: int, shape: Sequence[int]) -> Index:
    idx = []
    for s in reversed(tuple(shape)):
        idx.append(flat % s)
        flat //= s
    return tuple(reversed(idx))


def _fmt(v: float) -> str:
    return f"{v:.9g}"


def _less_precise(a: torch.dtype, b: Optional[torch.dtype]) -> torch.dtype:
    if b is None or not b.is_floating_point:
        return a
    if not a.is_floating_point:
        return b
    return a if torch.finfo(a).eps >= torch.finfo(b).eps else b


def _max_finite_abs(t: torch.Tensor) -> float:
    t = t.detach().to("cpu", torch.float64)
    fin = torch.isfinite(t)
    return float(t[fin].abs().max()) if bool(fin.any()) else 0.0


def _value_hash(x64: torch.Tensor, salt: int) -> torch.Tensor:
    """A pseudo-random number in [-1, 1) per element, a function of the element's bits: equal
    values get equal numbers, so duplicates, ties and zero distances survive a perturbation."""
    h = x64.to(torch.float64).contiguous().reshape(-1).view(torch.int64).reshape(x64.shape) ^ (salt * 0x2545F4914F6CDD1D)
    h = h * 6364136223846793005 + 1442695040888963407  # wraps: only the bit pattern matters
    h = h ^ (h >> 29)
    h = h * 6364136223846793005
    return ((h >> 11) & ((1 << 52) - 1)).to(torch.float64) / 2.0**51 - 1.0


def _deviation(a: Optional[torch.Tensor], ref: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    """|a − ref| in float64 on the CPU, non-finite entries as 0 (None when not comparable)."""
    if a is None or ref is None or not a.is_floating_point() or a.shape != ref.shape:
        return None
    d = (a.detach().to("cpu", torch.float64) - ref.detach().to("cpu", torch.float64)).abs()
    return torch.nan_to_num(d, nan=0.0, posinf=0.0)


def _allowances(
    reference: Callable, inputs: Sequence[Any], diff: Sequence[int], weights: Sequence[Any],
    r_out: Sequence[torch.Tensor], r_grads: Sequence[Optional[torch.Tensor]], notes: List[str],
) -> Tuple[List[Any], List[Any]]:
    """Allowances (added to atol) per output and per gradient: what a correct implementation
    at the inputs' dtype may get wrong at these particular inputs.

    a. rounding: the reference itself at the inputs' dtype, at the inputs and at two one-ulp
       perturbations of them (their largest error, as one number per tensor);
    b. conditioning: the float64 reference at those perturbations (elementwise): a
       backward-stable implementation may be off by this much (nearly parallel rows);
    c. scale: eps(dtype) × the largest value / gradient of the float64 reference at a generic
       point of the inputs' scale, so that rounding noise where the answer is exactly 0 by
       symmetry (collapsed rows, exact duplicates) passes; and where the reference gradient is
       0 to float64 precision, eps(dtype) × max|out·w| / |x_j| (a locally constant function,
       like the cosine of 1-D rows, gives no other scale).
    a and b use value-hashed perturbations, so duplicates and ties stay exact. a and b count
    _NOISE_FACTOR times; c's factor is capped by the dtype's default atol."""
    floats = [i for i, x in enumerate(inputs) if _is_float(x)]
    low = any(inputs[i].dtype != torch.float64 for i in floats)
    n_out = len(r_out)
    dev_out: List[Optional[torch.Tensor]] = [None] * n_out
    dev_grad: List[Optional[torch.Tensor]] = [None] * len(diff)
    flat_out = [0.0] * n_out
    flat_grad = [0.0] * len(diff)

    def run(salt: int, own: bool, generic: bool = False) -> Tuple[Sequence[torch.Tensor], List[Optional[torch.Tensor]]]:
        args = _copies(inputs, diff, torch.float64)
        gen = torch.Generator().manual_seed(12345)
        for i in floats:
            with torch.no_grad():
                a = args[i]
                if generic and i in diff:  # a random point of the same scale: breaks every symmetry
                    rms = float(a.detach().pow(2).mean().sqrt()) if a.numel() else 0.0
                    noise = torch.randn(a.shape, generator=gen, dtype=torch.float64).to(a.device)
                    a.add_(noise * (rms if rms > 0 and math.isfinite(rms) else 1.0))
                elif salt:
                    a.mul_(1.0 + torch.finfo(inputs[i].dtype).eps * _value_hash(a.detach().cpu(), salt).to(a.device))
            if own:
                args[i] = args[i].detach().to(inputs[i].dtype)
                if i in diff:
                    args[i].requires_grad_(True)
        outs = _outputs(reference(*args), "reference")
        return outs, _backward(outs, [args[i] for i in diff], weights)

    def merge(into: List[Any], new: List[Any], reduce_flat: bool) -> None:
        for k, d in enumerate(new):
            if d is None:
                continue
            if reduce_flat:
                into[k] = max(into[k], float(d.max()) if d.numel() else 0.0)
            else:
                into[k] = d if into[k] is None else torch.maximum(into[k], d)

    if low:
        try:
            for salt in (0, 1, 2):
                outs, grads = run(salt, own=True)
                merge(flat_out, [_deviation(o, r) for o, r in zip(outs, r_out)], True)
                merge(flat_grad, [_deviation(g, r) for g, r in zip(grads, r_grads)], True)
        except Exception as e:  # a float64-only reference: no such allowance, say so
            notes.append(f"the reference failed at the inputs' own dtype ({type(e).__name__}); its rounding is not allowed for")
    for salt in (1, 2):
        outs, grads = run(salt, own=False)
        merge(dev_out, [_deviation(o, r) for o, r in zip(outs, r_out)], False)
        merge(dev_grad, [_deviation(g, r) for g, r in zip(grads, r_grads)], False)

    out_floor: List[Any] = []
    for k in range(n_out):
        d = dev_out[k]
        out_floor.append(_NOISE_FACTOR * (flat_out[k] + (d if d is not None else 0.0)))
    grad_floor: List[Any] = []
    for j in range(len(diff)):
        d = dev_grad[j]
        grad_floor.append(_NOISE_FACTOR * (flat_grad[j] + (d if d is not None else 0.0)))

    # c. scale floors
    try:
        g_outs, g_grads = run(0, own=False, generic=True)
    except Exception:  # the reference may reject a generic point (unit-norm inputs, ...)
        g_outs, g_grads = [], []
    for k, o in enumerate(g_outs[:n_out]):
        if o.is_floating_point() and r_out[k].is_floating_point():
            out_floor[k] = out_floor[k] + _scale_factor(r_out[k].dtype, inputs, floats) * _max_finite_abs(o)
    om = 0.0  # max |out · w| at the inputs
    for o, w in zip(r_out, weights):
        if w is not None and o.is_floating_point():
            om = max(om, _max_finite_abs(o.detach().to("cpu", torch.float64) * (1.0 if isinstance(w, str) else w)))
    for j, i in enumerate(diff):
        x = inputs[i]
        fac = _scale_factor(x.dtype, inputs, [i])
        if j < len(g_grads) and g_grads[j] is not None:
            grad_floor[j] = grad_floor[j] + fac * _max_finite_abs(g_grads[j])
        gr = r_grads[j]
        xa = x.detach().to("cpu", torch.float64).abs()
        xm = _max_finite_abs(xa)
        if gr is None or not (xm > 0 and om > 0 and math.isfinite(om)):
            continue
        natural = om / xa.clamp_min(1e-9 * xm)  # exact zeros: as if 1e-9 of the largest element
        zero = gr.detach().to("cpu", torch.float64).abs() <= 1e3 * torch.finfo(torch.float64).eps * natural
        if bool(zero.any()):
            grad_floor[j] = grad_floor[j] + torch.where(zero, _NOISE_FACTOR * torch.finfo(x.dtype).eps * natural, torch.zeros(()))
    return out_floor, grad_floor


def _scale_factor(dtype: torch.dtype, inputs: Sequence[Any], positions: Sequence[int]) -> float:
    """32 ulps of the least precise of dtype and the given inputs, at most that dtype's default atol."""
    dt = dtype
    for i in positions:
        dt = _less_precise(dt, inputs[i].dtype)
    if not dt.is_floating_point:
        return 0.0
    return min(32.0 * torch.finfo(dt).eps, default_tolerances(dt)[1])


@dataclass
class _Mismatch:
    nonfinite: int  # fn non-finite where the reference is finite
    count: int  # all mismatching elements (non-finite ones included)
    numel: int
    index: Index
    actual: float
    expected: float
    tol: float
    atol: float
    rtol: float
    floor: float
    max_err: float
    max_index: Index


def _compare(
    actual: torch.Tensor, expected: torch.Tensor, rtol: float, atol: float, floor: Any
) -> Tuple[Optional[_Mismatch], float]:
    """Elementwise ``|a − e| <= atol + floor + rtol·|e|`` where e is finite; a reference ±inf must be
    matched exactly; a reference NaN means "undefined here" and is not checked.
    Returns the mismatch (or None) and the largest error / tolerance ratio."""
    a = actual.detach().to("cpu", torch.float64).reshape(-1)
    e = expected.detach().to("cpu", torch.float64).reshape(-1)
    fin_e, fin_a = torch.isfinite(e), torch.isfinite(a)
    floor_t = floor.detach().to("cpu", torch.float64).reshape(-1) if isinstance(floor, torch.Tensor) else floor
    atol_eff = atol + floor_t
    diff = (a - e).abs()
    tol = atol_eff + rtol * e.abs()
    both = fin_e & fin_a
    close_bad = both & (diff > tol)
    nonfinite = fin_e & ~fin_a
    inf_bad = torch.isinf(e) & (a != e)
    bad = close_bad | nonfinite | inf_bad
    ratios = torch.where(diff[both] == 0, torch.zeros(()), diff[both] / tol[both])
    ratio = float(ratios.max()) if ratios.numel() else 0.0
    if not bool(bad.any()):
        return None, ratio
    first = int(nonfinite.nonzero()[0, 0]) if bool(nonfinite.any()) else int(bad.nonzero()[0, 0])
    errs = torch.where(both, diff, torch.zeros(()))
    mx = int(errs.argmax()) if errs.numel() else 0
    shape = tuple(expected.shape)
    return (
        _Mismatch(
            nonfinite=int(nonfinite.sum()),
            count=int(bad.sum()),
            numel=e.numel(),
            index=_unravel(first, shape),
            actual=float(a[first]),
            expected=float(e[first]),
            tol=float(tol[first]),
            atol=atol,
            rtol=rtol,
            floor=float(floor_t[first]) if isinstance(floor_t, torch.Tensor) else floor,
            max_err=float(errs[mx]) if errs.numel() else 0.0,
            max_index=_unravel(mx, shape),
        ),
        ratio,
    )


def _mismatch_block(what: str, subject: str, m: _Mismatch, a_name: str = "fn", e_name: str = "reference") -> str:
    if m.nonfinite:
        head = (
            f"non-finite {what} for {subject}: {a_name} is {_fmt(m.actual)} where the {e_name} is finite, "
            f"at {m.nonfinite} of {m.numel} elements"
        )
        if m.count > m.nonfinite:
            head += f" (and {m.count - m.nonfinite} more elements differ)"
    else:
        head = f"{what} mismatch for {subject}: {m.count} of {m.numel} elements differ"
    err = abs(m.actual - m.expected)
    rel = err / abs(m.expected) if m.expected != 0 else math.inf
    tol = f"atol {m.atol:.3g}" + (f" + rounding allowance {m.floor:.3g}" if m.floor else "") + f" + rtol {m.rtol:.3g}·|{e_name}|"
    lines = [
        head,
        f"  first at index {m.index}: {a_name} = {_fmt(m.actual)}, {e_name} = {_fmt(m.expected)}",
        f"  abs error {err:.3g}, rel error {rel:.3g}, tolerance {m.tol:.3g} ({tol})",
    ]
    if m.max_index != m.index and m.max_err > 0:
        lines.append(f"  largest finite abs error {m.max_err:.3g} at index {m.max_index}")
    return "\n".join(lines)


def _names(names: Optional[Sequence[Optional[str]]], n: int) -> List[Optional[str]]:
    if names is None:
        return [None] * n
    names = list(names)
    if len(names) > n:
        raise ValueError(f"names has {len(names)} entries for {n} inputs")
    return names + [None] * (n - len(names))


def _resolve_nondiff(nondiff: Any, names: Sequence[Optional[str]], n: int) -> set:
    if nondiff is None:
        return set()
    items = [nondiff] if isinstance(nondiff, (int, str)) else list(nondiff)
    out = set()
    for it in items:
        if isinstance(it, str):
            if it not in names:
                raise ValueError(f"nondiff names {it!r}, which is not in names={list(names)!r}")
            out.add(list(names).index(it))
        elif isinstance(it, int) and -n <= it < n:
            out.add(it % n)
        else:
            raise ValueError(f"nondiff entries must be input positions or names, got {it!r}")
    return out


def _diff_positions(inputs: Sequence[Any], nondiff: set) -> List[int]:
    floating = [i for i, x in enumerate(inputs) if _is_float(x) and i not in nondiff]
    req = [i for i in floating if inputs[i].requires_grad]
    return req or floating


def _weights(grad_outputs: Any, outs: Sequence[torch.Tensor], seed: int) -> List[Any]:
    """Per-output upstream gradients: float64 CPU tensors, the marker "ones", or None (skip)."""
    if isinstance(grad_outputs, str):
        if grad_outputs == "ones":
            return ["ones"] * len(outs)
        if grad_outputs != "random":
            raise ValueError(f"grad_outputs must be 'random', 'ones' or tensors, got {grad_outputs!r}")
        gen = torch.Generator().manual_seed(seed)
        ws: List[Any] = []
        for o in outs:
            # Magnitudes in [0.5, 1.5] with random signs: every element counts, none equally.
            mag = 0.5 + torch.rand(o.shape, generator=gen, dtype=torch.float64)
            sign = torch.randint(0, 2, o.shape, generator=gen).to(torch.float64) * 2 - 1
            ws.append(mag * sign)
        return ws
    given = [grad_outputs] if isinstance(grad_outputs, torch.Tensor) else list(grad_outputs)
    if len(given) != len(outs):
        raise ValueError(f"grad_outputs has {len(given)} entries for {len(outs)} outputs")
    ws = []
    for k, (g, o) in enumerate(zip(given, outs)):
        if g is None:
            ws.append(None)
            continue
        g = torch.as_tensor(g).detach().to("cpu", torch.float64)
        if g.shape != o.shape:
            raise ValueError(f"grad_outputs[{k}] has shape {tuple(g.shape)}, output {k} has {tuple(o.shape)}")
        ws.append(g)
    return ws


def _backward(outs: Sequence[torch.Tensor], leaves: Sequence[torch.Tensor], weights: Sequence[Any]) -> List[Optional[torch.Tensor]]:
    """Gradients of Σ_k Σ(out_k · w_k) w.r.t. leaves (None: no gradient flows)."""
    pairs = []
    for o, w in zip(outs, weights):
        if w is None or not (o.is_floating_point() and o.requires_grad):
            continue
        if isinstance(w, str):  # "ones": a stride-0 upstream gradient, exactly what out.sum().backward() sends
            go = torch.ones((), dtype=o.dtype, device=o.device).expand(o.shape)
        else:
            go = w.to(dtype=o.dtype, device=o.device)
        pairs.append((o, go))
    if not pairs or not leaves:
        return [None] * len(leaves)
    return list(torch.autograd.grad([p[0] for p in pairs], list(leaves), [p[1] for p in pairs], allow_unused=True))


def _elem_scale(x: torch.Tensor) -> torch.Tensor:
    """Per-element step scale for finite differences: |x|, floored at 1e-3·max|row| (rows: the
    last dimension; a zero row uses max|x|; 1 for all-zero x). The floor is per row because
    losses normalise rows: a row 10⁶ times shorter than the others needs steps 10⁶ times smaller."""
    a = x.detach().abs()
    m = float(a.max()) if a.numel() else 0.0
    if not (m > 0 and math.isfinite(m)):
        return torch.ones_like(a)
    if a.dim() >= 2:
        rm = a.amax(dim=-1, keepdim=True)
        rm = torch.where(rm > 0, rm, torch.full_like(rm, m))
        return torch.maximum(a, 1e-3 * rm)
    return a.clamp_min(1e-3 * m)


def _max_jump(outs_list: Sequence[Sequence[torch.Tensor]], k: int, o: torch.Tensor) -> float:
    devs = [_deviation(outs[k], o) for outs in outs_list if k < len(outs)]
    return max((float(d.max()) for d in devs if d is not None and d.numel()), default=0.0)


def _scaled_problem(fn: Callable, inputs: Sequence[Any], diff: Sequence[int]) -> Tuple[Callable, List[torch.Tensor], int]:
    """fn on float64 copies, reparametrised as h(u) = fn(s ⊙ u) / c.

    u = x / s is O(1) per element and each floating output is divided by its largest
    |value|, so gradcheck's fixed eps / atol act as *relative* step and tolerance at any
    input scale (1e6-scale or mixed-scale rows would otherwise defeat eps = 1e-6).
    Returns h, the starting u leaves and the number of floating output elements."""
    base = _copies(inputs, [], torch.float64)
    scales = [_elem_scale(base[i]) for i in diff]
    us = [(base[i] / s).detach().requires_grad_(True) for i, s in zip(diff, scales)]
    with torch.no_grad():
        outs0 = _outputs(fn(*base), "fn")
        jumps = {}
        for step in (_GC_EPS, 1e-2 * _GC_EPS):  # moves of (and below) a finite-difference step
            outs_at = []
            for salt in (3, 4, 5):
                moved = list(base)
                for i in diff:
                    moved[i] = base[i] * (1.0 + step * _value_hash(base[i].cpu(), salt).to(base[i].device))
                outs_at.append(_outputs(fn(*moved), "fn"))
            jumps[step] = outs_at
    cs = []
    for k, o in enumerate(outs0):
        m = _max_finite_abs(o) if o.is_floating_point() else 0.0
        j1, j2 = (_max_jump(jumps[step], k, o) for step in (_GC_EPS, 1e-2 * _GC_EPS))
        # A smooth output moves 100× less for a 100× smaller move; rounding noise of a constant
        # (NT-Xent of one pair) moves as much: scale by the magnitude that noise implies.
        if m > 0 and j1 > 1e-3 * m and j2 > 0.1 * j1:
            m = max(m, j1) / torch.finfo(torch.float64).eps
        cs.append(m if m > 0 else 1.0)

    def h(*u: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        args = list(base)
        for i, s, ui in zip(diff, scales, u):
            args[i] = ui * s
        outs = _outputs(fn(*args), "fn")
        return tuple(o / c for o, c in zip(outs, cs) if o.is_floating_point())

    return h, us, sum(o.numel() for o in outs0 if o.is_floating_point())


def _fd_diagnosis(fn: Callable, inputs: Sequence[Any], diff: Sequence[int], names: Sequence[Optional[str]], seed: int) -> Optional[str]:
    """Locate a gradcheck failure: fn's backward of Σ out·w vs central differences, per element."""
    base = _copies(inputs, diff, torch.float64)
    leaves = [base[i] for i in diff]
    outs = _outputs(fn(*base), "fn")
    ws = _weights("random", outs, seed)
    ana = [g if g is not None else torch.zeros_like(x) for g, x in zip(_backward(outs, leaves, ws), leaves)]

    def scalar(args: List[Any]) -> float:
        with torch.no_grad():
            os_ = _outputs(fn(*args), "fn")
            return float(sum((o.double().cpu() * w).sum() for o, w in zip(os_, ws) if o.is_floating_point()))

    plain = [x.detach() if _is_float(x) else x for x in base]
    for j, i in enumerate(diff):
        x = plain[i].contiguous()  # view(-1) below
        steps = (_elem_scale(x) * _GC_EPS).reshape(-1)
        num = torch.zeros(x.numel(), dtype=torch.float64)
        for f in range(x.numel()):
            vals = []
            for sgn in (1.0, -1.0):
                xp = x.clone()
                xp.view(-1)[f] += sgn * steps[f]
                args = list(plain)
                args[i] = xp
                vals.append((scalar(args), float(xp.view(-1)[f])))
            num[f] = (vals[0][0] - vals[1][0]) / (vals[0][1] - vals[1][1])
        num = num.reshape(x.shape)
        a = ana[j].detach().to("cpu", torch.float64)
        mag = max(_max_finite_abs(num), _max_finite_abs(a))
        m, _ = _compare(a, num, _GC_RTOL, _GC_ATOL * mag, 0.0)
        if m is not None:
            return _mismatch_block(
                "gradcheck", _describe("input", i, names, inputs[i]), m, a_name="fn's backward", e_name="finite difference"
            ).replace("gradcheck mismatch", "gradcheck failed", 1)
    return None


def _check_steps(check: Callable, h: Callable, us: Sequence[torch.Tensor], **kw: Any) -> Optional[GradcheckError]:
    """Run gradcheck/gradgradcheck at each relative step in _GC_STEPS; None as soon as one passes.

    No single step fits every function: 1e-7·|x| straddles the structure of exp(a − b) at
    |a|, |b| ~ 1e6, while 1e-9 drowns a cancelling sum in rounding. A wrong backward fails at
    every step, so passing at any of them is still a real check."""
    first: Optional[GradcheckError] = None
    for eps in _GC_STEPS:
        try:
            check(h, tuple(us), eps=eps, atol=_GC_ATOL, rtol=_GC_RTOL, raise_exception=True, **kw)
            return None
        except GradcheckError as e:
            first = first or e
    return first


def _run_gradcheck(fn: Callable, inputs: Sequence[Any], diff: Sequence[int], names: Sequence[Optional[str]], seed: int) -> Optional[str]:
    """None when torch.autograd.gradcheck passes, else a failure block."""
    try:
        h, us, out_numel = _scaled_problem(fn, inputs, diff)
        # The full Jacobian costs 2 forwards per input element and 1 backward per output element
        # (and in × out memory): beyond _GC_FULL_JACOBIAN entries, gradcheck's random projections.
        in_numel = sum(u.numel() for u in us)
        err = _check_steps(torch.autograd.gradcheck, h, us, fast_mode=in_numel * out_numel > _GC_FULL_JACOBIAN)
    except Exception as e:
        return f"gradcheck failed: fn raised {type(e).__name__} on float64 copies of the inputs: {e}"
    if err is None:
        return None
    steps = ", ".join(f"{eps:g}" for eps in _GC_STEPS)
    try:
        located = _fd_diagnosis(fn, inputs, diff, names, seed)
    except Exception:  # the diagnosis is best effort; torch's message still says what failed
        located = None
    if located is not None:
        return located + (
            f"\n  (fn's analytic backward disagrees with finite differences of its own forward on float64 copies, "
            f"at relative steps {steps})"
        )
    torch_msg = "\n  ".join(str(err).strip().splitlines()[:3])
    return f"gradcheck failed (torch.autograd.gradcheck on float64 copies, relative steps {steps}):\n  " + torch_msg


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


def assert_gradients_match(
    fn: Callable[..., Any],
    reference: Callable[..., Any],
    *inputs: Any,
    rtol: Optional[float] = None,
    atol: Optional[float] = None,
    gradcheck: Union[bool, str] = True,
    grad_outputs: Any = "random",
    nondiff: Any = None,
    names: Optional[Sequence[Optional[str]]] = None,
    output_dtype: Any = None,
    rounding_allowance: bool = True,
    seed: int = 0,
    gradcheck_max_numel: int = 2000,
) -> GradientReport:
    """Assert that ``fn`` has the values and gradients of ``reference`` at ``inputs``.

    ``fn`` runs on the inputs at their own dtype; ``reference`` runs on float64 copies
    of every floating input (its outputs are the ground truth). Checked, in order:

    1. the same number of outputs, with the same shapes;
    2. fn's floating outputs have the inputs' dtype (``output_dtype``) and device;
       integer outputs have the reference's dtype;
    3. values: floating outputs within tolerance, integer outputs equal;
    4. gradients of ``Σ_k Σ(out_k · grad_outputs_k)`` w.r.t. each differentiated input:
       the input's dtype and device, within tolerance;
    5. with ``gradcheck``, ``torch.autograd.gradcheck`` of fn on float64 copies, which
       catches a wrong analytic backward even when the reference shares the mistake.

    Everywhere fn must be finite where the reference is finite; a reference ±inf must be
    matched exactly; a reference NaN means "undefined here" and is not compared.

    Parameters
    ----------
    fn, reference : callable
        Called as ``f(*inputs)``; return a tensor (scalar or any shape) or a tuple of tensors.
    *inputs
        Tensors and anything else (labels, ints, None...). The floating tensors that
        require grad are differentiated, or all floating tensors when none does
        (minus ``nondiff``); everything else passes as given. Inputs are never
        modified and get no ``.grad``.
    rtol, atol : float, optional
        ``|fn − ref| <= atol + rtol·|ref|`` elementwise. Default per dtype (see
        :func:`default_tolerances`): the default atol is relative to the largest
        ``|ref|`` of each compared tensor; an explicit atol is absolute. Values use the
        output's dtype, gradients the input's.
    gradcheck : bool or "force"
        Run ``torch.autograd.gradcheck`` (on inputs and outputs rescaled to O(1), so the
        step and tolerance are relative). Skipped, with a note in the report, when the
        differentiated inputs hold more than ``gradcheck_max_numel`` elements, unless
        ``"force"``.
    grad_outputs : "random", "ones", tensor or sequence
        Upstream gradient per output: "random" (fixed by ``seed``; magnitudes in
        [0.5, 1.5], random signs, so every element of a per-sample output is tested),
        "ones" (what ``out.sum().backward()`` sends, a stride-0 tensor), or explicit
        tensors (one per output; None leaves an output out of the gradient).
    nondiff : int, str or sequence, optional
        Inputs (positions, or names from ``names``) never differentiated.
    names : sequence of str, optional
        Names of the inputs, used in messages (``names=("x", "labels")``).
    output_dtype : torch.dtype or sequence, optional
        Expected dtype of fn's floating outputs (per output if a sequence; None entries
        are not checked). Default: the promoted dtype of the floating inputs. Pass e.g.
        ``torch.float32`` for a function that returns float32 for half inputs.
    rounding_allowance : bool
        Also tolerate, elementwise on top of atol, what a correct implementation at the
        inputs' dtype may get wrong at these particular inputs: 10× the error of the
        reference run at that dtype; 10× how far the float64 reference moves when the
        inputs move by one ulp of their dtype (ill-conditioned gradients of nearly
        parallel or nearly equal rows); and a few ulps of the typical value / gradient
        magnitude at a generic point of the inputs' scale (rounding noise where the answer
        is exactly 0 by symmetry). Perturbations keep equal values equal, so duplicates,
        ties and zero distances are still checked exactly. Costs 3 (float64) to 6 extra
        reference calls; see ``_allowances`` for details.
    seed : int
        Seed of the random ``grad_outputs``.
    gradcheck_max_numel : int
        Size limit (differentiated input elements) for ``gradcheck``. Above 200 000
        Jacobian entries (inputs × outputs) gradcheck uses its ``fast_mode``.

    Returns
    -------
    GradientReport
        What was checked, with the error headroom and notes.

    Raises
    ------
    AssertionError
        Naming each difference (value / gradient / non-finite / dtype / device /
        gradcheck), the output or input (position and name), the first mismatching
        index, both values, the absolute and relative error, the tolerance and the
        number of mismatching elements.
    """
    if gradcheck not in (True, False, "force"):
        raise ValueError(f"gradcheck must be True, False or 'force', got {gradcheck!r}")
    n_in = len(inputs)
    names_ = _names(names, n_in)
    diff = _diff_positions(inputs, _resolve_nondiff(nondiff, names_, n_in))
    notes: List[str] = []
    failures: List[str] = []
    ratio = 0.0

    f_in = _copies(inputs, diff, None)
    f_out = _outputs(fn(*f_in), "fn")
    r_in = _copies(inputs, diff, torch.float64)
    r_out = _outputs(reference(*r_in), "reference")
    if len(f_out) != len(r_out):
        raise AssertionError(f"output mismatch: fn returned {len(f_out)} outputs, the reference {len(r_out)}")
    for k, (fo, ro) in enumerate(zip(f_out, r_out)):
        if fo.shape != ro.shape:
            raise AssertionError(f"shape mismatch for output {k}: fn gives {tuple(fo.shape)}, the reference {tuple(ro.shape)}")

    tensors = [x for x in inputs if isinstance(x, torch.Tensor)]
    floats = [x for x in tensors if x.is_floating_point()]
    device = tensors[0].device if tensors else None
    promoted: Optional[torch.dtype] = None
    for x in floats:
        promoted = x.dtype if promoted is None else torch.promote_types(promoted, x.dtype)
    if output_dtype is None or isinstance(output_dtype, torch.dtype):
        expected_dtypes = [output_dtype or promoted] * len(f_out)
    else:
        expected_dtypes = list(output_dtype)
        if len(expected_dtypes) != len(f_out):
            raise ValueError(f"output_dtype has {len(expected_dtypes)} entries for {len(f_out)} outputs")

    weights = _weights(grad_outputs, r_out, seed)
    f_grads = _backward(f_out, [f_in[i] for i in diff], weights)
    r_grads = _backward(r_out, [r_in[i] for i in diff], weights)

    out_floor: List[Any] = [0.0] * len(r_out)
    grad_floor: List[Any] = [0.0] * len(diff)
    if rounding_allowance:
        out_floor, grad_floor = _allowances(reference, inputs, diff, weights, r_out, r_grads, notes)

    for k, (fo, ro) in enumerate(zip(f_out, r_out)):
        subject = f"output {k}"
        exp = expected_dtypes[k] if ro.is_floating_point() else ro.dtype
        if fo.is_floating_point() != ro.is_floating_point() or (exp is not None and fo.dtype != exp):
            why = "the inputs' dtype" if ro.is_floating_point() else "the reference's dtype"
            failures.append(f"dtype mismatch for {subject}: fn gives {fo.dtype}, expected {exp} ({why})")
        if device is not None and fo.device != device:
            failures.append(f"device mismatch for {subject}: fn gives {fo.device}, the inputs are on {device}")
        if not fo.is_floating_point() or not ro.is_floating_point():
            neq = fo.detach().cpu().reshape(-1) != ro.detach().cpu().to(fo.dtype).reshape(-1)
            if bool(neq.any()):
                first = int(neq.nonzero()[0, 0])
                failures.append(
                    f"value mismatch for {subject} ({fo.dtype}): {int(neq.sum())} of {neq.numel()} elements differ\n"
                    f"  first at index {_unravel(first, fo.shape)}: fn = {fo.reshape(-1)[first].item()}, "
                    f"reference = {ro.reshape(-1)[first].item()}"
                )
            continue
        tol_dtype = _less_precise(fo.dtype, exp)
        rt, at = default_tolerances(tol_dtype)
        rt = rt if rtol is None else rtol
        at = at * _max_finite_abs(ro) if atol is None else atol
        m, r = _compare(fo, ro, rt, at, out_floor[k])
        ratio = max(ratio, r)
        if m is not None:
            failures.append(_mismatch_block("value", f"{subject} ({fo.dtype}, shape {tuple(fo.shape)})", m))
        if not fo.requires_grad and ro.requires_grad and diff:
            notes.append(f"fn's output {k} does not require grad (detached?) while the reference's does")

    grad_failed = False
    for j, i in enumerate(diff):
        x = inputs[i]
        subject = _describe("input", i, names_, x)
        gf, gr = f_grads[j], r_grads[j]
        if gf is None and gr is not None:
            notes.append(f"no gradient flows from fn's outputs to {subject}; compared as zeros")
        if gr is None and gf is not None:
            notes.append(f"no gradient flows from the reference's outputs to {subject}; compared as zeros")
        if gf is None and gr is None:
            notes.append(f"{subject} receives no gradient from fn nor the reference")
            continue
        if gf is not None:
            if gf.dtype != x.dtype:
                failures.append(f"dtype mismatch for the gradient of {subject}: fn's gradient is {gf.dtype}")
            if gf.device != x.device:
                failures.append(f"device mismatch for the gradient of {subject}: fn's gradient is on {gf.device}")
        gf = torch.zeros_like(x, dtype=x.dtype) if gf is None else gf
        gr = torch.zeros(x.shape, dtype=torch.float64, device=x.device) if gr is None else gr
        rt, at = default_tolerances(x.dtype)
        rt = rt if rtol is None else rtol
        at = at * _max_finite_abs(gr) if atol is None else atol
        m, r = _compare(gf, gr, rt, at, grad_floor[j])
        ratio = max(ratio, r)
        if m is not None:
            grad_failed = True
            failures.append(_mismatch_block("gradient", subject, m))

    gc_status = "off"
    if not diff:
        gc_status = "not run"
        notes.append("no floating input to differentiate: only values were compared")
    elif gradcheck:
        numel = sum(inputs[i].numel() for i in diff)
        if numel > gradcheck_max_numel and gradcheck != "force":
            gc_status = "skipped"
            notes.append(f"gradcheck skipped: {numel} input elements > gradcheck_max_numel={gradcheck_max_numel} (pass gradcheck='force')")
        else:
            block = _run_gradcheck(fn, inputs, diff, names_, seed)
            if block is None:
                gc_status = "passed"
                if grad_failed:
                    failures.append(
                        "note: gradcheck of fn passed (its backward matches finite differences of its own forward), "
                        "so the reference's gradient, or a forward difference, may be at fault"
                    )
            else:
                gc_status = "failed"
                if not grad_failed:
                    block += (
                        "\n  note: fn's gradients match the reference, so the reference may share the error, or the "
                        "inputs sit on a kink (ties, zero distances) where finite differences are meaningless"
                    )
                failures.append(block)

    if failures:
        head = "assert_gradients_match failed"
        if grad_failed:
            go = grad_outputs if isinstance(grad_outputs, str) else "given"
            head += f" (gradients are of sum(out * grad_outputs), grad_outputs={go!r}" + (f", seed {seed})" if go == "random" else ")")
        raise AssertionError(head + ":\n" + "\n".join(failures))
    return GradientReport(tuple(diff), gc_status, ratio, tuple(notes))


def assert_double_backward(
    fn: Callable[..., Any],
    *inputs: Any,
    nondiff: Any = None,
    names: Optional[Sequence[Optional[str]]] = None,
    seed: int = 0,
) -> str:
    """Assert that fn's double backward is right or raises — never silently wrong.

    A custom ``autograd.Function`` whose backward is not differentiable (numpy, Rust,
    ``torch.no_grad``) must say so, e.g. with ``@once_differentiable``; otherwise a
    gradient penalty or Hessian-vector product through it is silently zero or partial.

    Parameters
    ----------
    fn : callable
        Called as ``fn(*inputs)``; returns a tensor or a tuple of tensors.
    *inputs
        As in :func:`assert_gradients_match` (all floating inputs become float64 copies).
    nondiff, names : optional
        As in :func:`assert_gradients_match`.
    seed : int
        Seed of the random first-order upstream gradients.

    Returns
    -------
    str
        ``"gradgradcheck"`` when ``torch.autograd.gradgradcheck`` passes, ``"raises"``
        when differentiating fn's gradient raises a RuntimeError.

    Raises
    ------
    AssertionError
        When the double backward returns wrong values: fn's gradient is detached from
        the graph, or gradgradcheck finds a mismatch.
    """
    n_in = len(inputs)
    names_ = _names(names, n_in)
    diff = _diff_positions(inputs, _resolve_nondiff(nondiff, names_, n_in))
    if not diff:
        raise ValueError("assert_double_backward: no floating input to differentiate")
    args = _copies(inputs, diff, torch.float64)
    leaves = [args[i] for i in diff]
    outs = [o for o in _outputs(fn(*args), "fn") if o.is_floating_point() and o.requires_grad]
    if not outs:
        raise ValueError("assert_double_backward: no output of fn requires grad")
    gen = torch.Generator().manual_seed(seed)
    # Upstream gradients that require grad, as in a gradient penalty: once_differentiable arms its error only then.
    vs = [torch.randn(o.shape, generator=gen, dtype=torch.float64).to(o.device).requires_grad_(True) for o in outs]
    gs = torch.autograd.grad(outs, leaves, vs, create_graph=True, allow_unused=True)
    detached = [i for i, g in zip(diff, gs) if g is not None and not g.requires_grad]
    if detached:
        which = ", ".join(_describe("input", i, names_, inputs[i]) for i in detached)
        raise AssertionError(
            f"double backward is silently wrong: fn's gradient w.r.t. {which} is detached from the graph "
            "(a backward that is not differentiable must raise on double backward, e.g. @once_differentiable)"
        )
    live = [(g, torch.randn(g.shape, generator=gen, dtype=torch.float64).to(g.device)) for g in gs if g is not None]
    if not live:
        raise ValueError("assert_double_backward: no gradient flows from fn's outputs to its inputs")
    try:
        # backward() runs every node of the graph (torch.autograd.grad would prune an error node
        # that leads to no requested input, and gradgradcheck with it).
        sum((g * r).sum() for g, r in live).backward()
    except RuntimeError:
        return "raises"
    try:
        h, us, _ = _scaled_problem(fn, inputs, diff)
        err = _check_steps(torch.autograd.gradgradcheck, h, us)
    except RuntimeError:
        return "raises"
    if err is not None:
        msg = "\n  ".join(str(err).strip().splitlines()[:3])
        raise AssertionError(
            f"double backward is silently wrong: gradgradcheck of fn failed:\n  {msg}\n"
            "  (a backward computed outside autograd — numpy, Rust, no_grad — must be marked @once_differentiable)"
        )
    return "gradgradcheck"
