"""Linear probe: multinomial logistic regression on frozen features (the
linear evaluation protocol of SimCLR, Chen et al. 2020).

Features are standardised with the training mean and standard deviation;
the probe minimises

    L(W, b) = (1/n) Σ_i CE(softmax(W z_i + b), y_i) + (l2 / 2) ‖W‖²_F

(the bias is not penalised). This is scikit-learn's ``LogisticRegression(C=C)``
objective C Σ_i CE_i + ½‖W‖² divided by C·n, so ``l2 = 1 / (C · n_train)``.
The returned weights act on the raw (unstandardised) features.

Solver (``_lbfgs.py``): full-batch L-BFGS (memory 10, backtracking Armijo line
search) from W = 0, b = 0 (whose loss and gradient need no GEMM) with a Newton
first step, in the input's float dtype (float32 GEMMs for float32 features),
one fused pass per evaluation (two n × d × C GEMMs, the softmax in place, no
autograd), preconditioned by the Cholesky factor of the feature correlation
matrix (W = V L⁻¹, an exact change of variables), so that a fast-decaying
feature spectrum costs no extra iterations. Standardisation: column means and
variances as GEMVs over row tiles (``standardise``), one write of Z.
Stopping rule: the loss fell by less than ``rtol`` (relative) over the last 5
iterations, or max |∂L| ≤ ``tol`` over W and b (scikit-learn's lbfgs rule,
``gtol`` on the same mean objective), or ``max_iter`` iterations, or no
decrease representable in the working precision (a failed line search, or
scipy's ftol at 64 ε of the dtype over the same window). See linear_probe.
Row tiles are summed in a fixed order, so results for given inputs do not
depend on the thread count.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Tuple

import numpy as np

from . import _inputs as I
from ._lbfgs import fit_multinomial, tn


_STAT_ROWS = 4096  # rows per tile of the column statistics (a tile of squares stays in cache)


def standardise(torch: Any, X: Any) -> Tuple[Any, Any, Any]:
    """(μ, σ, Z = (X − μ)/σ) with the column mean and the biased standard deviation (σ = 0 → 1).

    The column sums are products 1ᵀ X (``_lbfgs.tn``, thread-count independent) over fixed row tiles, accumulated in float64: torch's dim-0 reductions
    (``X.mean(0)``, ``X.std(0)``) take ~20× longer than a GEMV at 80k × 768 and were ~7 % of a probe fit.
    Two reads of X (mean, then Σ (x − μ)² tile by tile, so the variance has no cancellation) and one write of Z."""
    n, d = X.shape
    ones = X.new_ones(min(n, _STAT_ROWS), 1)
    tot = torch.zeros(d, dtype=torch.float64)
    for s in range(0, n, _STAT_ROWS):
        Xt = X[s:s + _STAT_ROWS]
        tot += tn(torch, Xt, ones[: Xt.shape[0]])[:, 0].double()
    mean = (tot / n).to(X.dtype)
    sq = torch.empty((min(n, _STAT_ROWS), d), dtype=X.dtype)
    tot.zero_()
    for s in range(0, n, _STAT_ROWS):
        Xt = X[s:s + _STAT_ROWS]
        k = Xt.shape[0]
        torch.sub(Xt, mean, out=sq[:k]).square_()
        tot += tn(torch, sq[:k], ones[:k])[:, 0].double()
    std = (tot / n).sqrt_().to(X.dtype)
    std = torch.where(std > 0, std, torch.ones_like(std))
    inv = 1.0 / std
    Z = torch.addcmul(-mean * inv, X, inv)  # one write of Z: x/σ − μ/σ
    return mean, std, Z


@dataclass
class LinearProbeResult:
    """Accuracies on the test split and the fitted probe (logits = x @ weight.T + bias)."""

    top1: float
    top5: float
    weight: Any
    bias: Any
    classes: np.ndarray
    n_iter: int
    loss: float
    n_evals: int = 0  # loss/gradient passes (two n × d × C GEMMs each)

    def as_dict(self) -> dict:
        return {"top1": self.top1, "top5": self.top5, "n_iter": self.n_iter, "n_evals": self.n_evals, "loss": self.loss,
                "n_classes": int(len(self.classes))}


def linear_probe(
    train_x: Any,
    train_y: Any,
    test_x: Any,
    test_y: Any,
    *,
    l2: float = 1e-4,
    max_iter: int = 200,
    tol: float = 1e-5,
    rtol: float = 1e-3,
    n_jobs: Optional[int] = None,
) -> LinearProbeResult:
    """Fit a multinomial logistic regression on ``train_x`` and score it on ``test_x``.

    ``l2``: the ridge coefficient of the mean loss (= 1/(C·n_train) in scikit-learn's
    terms); ``max_iter``: L-BFGS iterations (each usually one loss/gradient pass,
    ``n_evals`` in the result counts them). Stops at the first of: the loss fell by
    less than ``rtol``·L over the last 5 iterations (default 1e-3), or the largest
    gradient entry of L is ≤ ``tol`` (default 1e-5); ``rtol=0`` with a small ``tol``
    asks for a tight solve.

    Why these defaults: the probe is compared at the optimum, where the accuracy no
    longer depends on the solver. scikit-learn's default (lbfgs, max |gradient| ≤ 1e-4
    on the same mean objective) stops short of it: on three 40k × 768, 100-class data
    sets (benches/bench_metrics.py's ``embedding_like``, a Gaussian mixture, a
    low-rank signal in noise) its excess loss was 0.9–8 % and its test accuracy
    0.1–1.7 points from the optimum's (early stopping acts as extra regularisation).
    The same gradient rule stops this preconditioned solver early too (0.46 points off
    on ``embedding_like``). The windowed loss rule at 1e-3 stopped within 6e-4 relative
    excess loss and 0.07 points of the optimum's accuracy on those three and on the
    100k benchmark, after 21–27 passes (``benches/probe_convergence.py``). See the
    module docstring for the solver. Test labels never seen in training count as errors.
    Top-5 accuracy is top-min(5, classes). Weights come back as numpy arrays for
    numpy input and as torch tensors (train_x's device and dtype) for torch input.
    """
    from .._torch import require_torch

    torch = require_torch()
    torch_in = I.is_torch(train_x)
    out_device = train_x.device if torch_in else None
    out_dtype = train_x.dtype if torch_in else None
    xtr = I.embeddings(train_x, "train_x", min_rows=2)
    xte = I.embeddings(test_x, "test_x")
    if xte.shape[1] != xtr.shape[1]:
        raise I.ShapeError(f"test_x has {xte.shape[1]} features but train_x has {xtr.shape[1]}")
    xtr, xte = I.same_dtype(xtr, xte)
    ytr = I.labels_1d(train_y, "train_y", xtr.shape[0], "train_x")
    yte = I.labels_1d(test_y, "test_y", xte.shape[0], "test_x")
    classes, (ctr, cte) = I.encode(ytr, yte)
    seen = np.unique(ctr)
    # Classes present only in the test split are never predicted: map them to -1.
    remap = np.full(classes.shape[0], -1, dtype=np.int64)
    remap[seen] = np.arange(seen.shape[0])
    ctr, cte = remap[ctr], remap[cte]
    classes = classes[seen]
    n_cls = int(classes.shape[0])
    if n_cls < 2:
        raise I.InvalidParameterError(f"train_y needs at least 2 classes for a probe, got {n_cls}")
    if not (isinstance(l2, (int, float)) and np.isfinite(l2) and l2 >= 0):
        raise I.InvalidParameterError(f"l2 must be a finite number >= 0, got {l2!r}")
    max_iter = I.check_int("max_iter", max_iter, 1)
    for name, v in (("tol", tol), ("rtol", rtol)):
        if not (isinstance(v, (int, float)) and np.isfinite(v) and v >= 0):
            raise I.InvalidParameterError(f"{name} must be a finite number >= 0, got {v!r}")

    threads_before = torch.get_num_threads()
    if n_jobs is not None:
        from .._threads import resolve_n_jobs

        torch.set_num_threads(resolve_n_jobs(n_jobs))
    try:
        dt = torch.float64 if xtr.dtype == np.float64 else torch.float32
        mean, std, Z = standardise(torch, torch.from_numpy(xtr).to(dt))
        y = torch.from_numpy(ctr)
        W, b, n_iter, n_evals, loss = fit_multinomial(torch, Z, y, n_cls, float(l2), max_iter, float(tol), float(rtol))
        del Z
        with torch.no_grad():
            Wr = W / std  # logits = (x − μ)/σ · Wᵀ + b = x · (W/σ)ᵀ + (b − (W/σ)·μ)
            br = b - Wr @ mean
            Xt = torch.from_numpy(xte).to(dt)
            logits = torch.addmm(br, Xt, Wr.t())
            yt = torch.from_numpy(cte)
            kk = min(5, n_cls)
            topk = logits.topk(kk, dim=1).indices
            top1 = float((topk[:, 0] == yt).double().mean())
            top5 = float((topk == yt[:, None]).any(dim=1).double().mean())
    finally:
        torch.set_num_threads(threads_before)
    if torch_in:
        weight, bias = Wr.to(device=out_device, dtype=out_dtype), br.to(device=out_device, dtype=out_dtype)
    else:
        weight, bias = Wr.numpy().astype(xtr.dtype), br.numpy().astype(xtr.dtype)
    return LinearProbeResult(top1, top5, weight, bias, classes, n_iter, loss, n_evals)
