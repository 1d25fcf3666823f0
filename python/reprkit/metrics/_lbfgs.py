"""The linear probe's solver: L-BFGS on the multinomial logistic loss with a
fused loss/gradient pass and a whitening preconditioner (torch, no autograd).

Objective on standardised features z_i (n rows, d features, C classes):

    f(W, b) = (1/n) Σ_i [logsumexp(W z_i + b) − (W z_i + b)_{y_i}] + (λ/2) ‖W‖²_F
    ∇_W f = (1/n) (P − Y)ᵀ Z + λ W,    ∇_b f = (1/n) Σ_i (p_i − e_{y_i})

with P the row-wise softmax: one pass costs two (n × d × C) GEMMs.

Preconditioner: L-BFGS runs on V with W = V L⁻¹, L Lᵀ = Σ + λC·I, where
Σ = ZᵀZ/m is the feature correlation matrix estimated on m ≤ 8192 evenly spaced
rows. At W = 0 the Hessian in W is (diag(p) − ppᵀ) ⊗ Σ + λI ≈ (Σ + λC·I)/C, so
its condition number carries the spread of Σ's spectrum (large for real
embeddings, whose spectra decay fast); in V that factor is ≈ I. The change of
variables is exact (the same f, the same optimum); it costs one m × d × d GEMM
once and two C × d × d triangular solves per pass. The gradient rule (tol) is
measured on the gradient in W, the loss rule (rtol) on f: neither depends on
the preconditioner.

Start: at W = 0, b = 0 every row's softmax is uniform, so f = log C and the
gradient needs no GEMM (``_zero_start``: class sums of Z, one read). The first
direction is the Newton step of that point, −C·g: in V the W-block of the
Hessian there is (I − 11ᵀ/C)/C ⊗ I (Σ estimated), the b-block (I − 11ᵀ/C)/C, and
g sums to zero over the classes, so −C·g solves H p = −g exactly up to the
covariance estimate (a unit-length first step cost about one more iteration on the
benchmark data).

L-BFGS: Nocedal & Wright (2006), Algorithm 7.4 (two-loop recursion, memory 10,
H₀ = γI with γ = sᵀy/yᵀy), backtracking Armijo line search (c₁ = 1e-4, step 1,
halved at most 11 times), pairs with sᵀy ≤ 1e-10·|s||y| skipped.

Stopping: the first of
  * max |∇f| ≤ tol over W and b (scikit-learn's lbfgs rule, its ``gtol``);
  * f_{k−5} − f_k ≤ rtol·f_k: the loss fell by less than a fraction rtol of
    itself over the last 5 iterations (a window: L-BFGS's per-step decrease is
    erratic, one poor step says little);
  * the same decrease ≤ 64 ε(dtype)·max(f_{k−5}, 1) (scipy's ftol at the working
    precision: below it float32 iterations chase rounding);
  * a failed line search (no decrease representable), or max_iter iterations.
The gradient rule alone is a poor test with a preconditioned solver: max |∇f|
is measured in W, where the low-variance directions (the ones the
preconditioner speeds up) carry small gradients long before they converge; on
embedding-like data it fell below 1e-4 with the test accuracy still 0.5 points
from the optimum's. The loss is summed in float64 so the Armijo and window tests
stay meaningful in float32 near the optimum.
"""

from __future__ import annotations

import math
from typing import Any, Tuple

_CHUNK = 16384  # rows per pass tile: the n × C softmax buffer stays O(chunk·C)
_COV_ROWS = 8192
_WINDOW = 5  # iterations over which the loss decrease is measured (rtol and the precision floor)


_SPLIT = 8  # fixed row blocks of a reduction GEMM (see tn)


def tn(torch: Any, A: Any, B: Any) -> Any:
    """Aᵀ·B (A: K × d, B: K × m) independent of the thread count.

    MKL splits the K reduction of a GEMM with a small output across threads (Zᵀ·(P − Y), Zᵀ·Z, column sums),
    so its rounding depends on the thread count (seen on AVX-512 Xeons; not on AMD). A batched product over
    ``_SPLIT`` fixed blocks of rows computes each block on one thread; the blocks are summed in order. The speed
    is that of one GEMM (8192 × 768 × 100: 6.6 ms against 6.1 ms, 2 threads)."""
    K = A.shape[0]
    r = -(-K // _SPLIT)
    if K != r * _SPLIT:  # zero rows add nothing (only a pass's last, partial tile is padded)
        A = torch.cat([A, A.new_zeros(r * _SPLIT - K, A.shape[1])])
        B = torch.cat([B, B.new_zeros(r * _SPLIT - K, B.shape[1])])
    P = torch.bmm(A.reshape(_SPLIT, r, -1).transpose(1, 2), B.reshape(_SPLIT, r, -1))
    out = P[0].clone()
    for t in range(1, _SPLIT):
        out += P[t]
    return out


def _loss_grad(torch: Any, Z: Any, y: Any, W: Any, b: Any, lam: float) -> Tuple[float, Any, Any]:
    n = Z.shape[0]
    # GEMM layouts: Z·Wᵀ with a contiguous d × C operand and the gradient as Zᵀ·(P − Y) (d × C) run
    # 1.1–1.3× faster than with a transposed view and (P − Y)ᵀ·Z at C ~ 100 (MKL, 2 threads).
    Wt = W.t().contiguous()
    gWt = torch.zeros_like(Wt)
    gb = torch.zeros_like(b)
    ones = Z.new_ones(min(n, _CHUNK), 1)
    total = 0.0
    # Fixed row tiles summed in order: the result does not depend on the thread count.
    for s in range(0, n, _CHUNK):
        Zc, yc = Z[s:s + _CHUNK], y[s:s + _CHUNK]
        L = torch.addmm(b, Zc, Wt)
        ly = L.gather(1, yc[:, None])
        lse = torch.logsumexp(L, 1, keepdim=True)  # fused max/exp/sum: the elementwise work stays ≪ the GEMMs
        total += float((lse - ly).double().sum())
        L.sub_(lse).exp_()  # P = softmax, in place
        L.scatter_add_(1, yc[:, None], torch.full_like(ly, -1.0))  # P − Y
        gWt += tn(torch, Zc, L)
        gb += tn(torch, L, ones[: L.shape[0]])[:, 0]  # column sums as a GEMM: L.sum(0) took ~5 % of the pass
    gW = gWt.t().contiguous()
    gW.div_(n).add_(W, alpha=lam)
    gb.div_(n)
    f = total / n + 0.5 * lam * float((W.double() ** 2).sum())
    return f, gW, gb


def _zero_start(torch: Any, Z: Any, y: Any, n_cls: int) -> Tuple[float, Any, Any]:
    """f, ∇_W f, ∇_b f at W = 0, b = 0 without a GEMM: P = 1/C everywhere, so Zᵀ(P − Y) = (1/C)·colsum(Z) 1ᵀ − (class
    sums of Z)ᵀ, one read of Z (the ridge term vanishes at W = 0)."""
    n = Z.shape[0]
    csum = torch.zeros(n_cls, Z.shape[1], dtype=Z.dtype)
    count = torch.zeros(n_cls, dtype=Z.dtype)
    for s in range(0, n, _CHUNK):  # fixed tiles in order, as in _loss_grad
        Zc, yc = Z[s:s + _CHUNK], y[s:s + _CHUNK]
        csum.index_add_(0, yc, Zc)
        count.index_add_(0, yc, torch.ones(yc.shape[0], dtype=Z.dtype))
    gW = (csum.sum(0, keepdim=True) / n_cls - csum).div_(n)
    gb = (n / n_cls - count).div_(n)
    return math.log(n_cls), gW, gb


def fit_multinomial(torch: Any, Z: Any, y: Any, n_cls: int, lam: float, max_iter: int, tol: float, rtol: float = 0.0,
                    precondition: bool = True, history: int = 10, callback: Any = None,
                    zero_start: bool = True, newton_first: bool = True) -> Tuple[Any, Any, int, int, float]:
    """Minimise f over (W, b) from zero; returns (W, b, iterations, passes, f)."""
    n, d = Z.shape
    dt = Z.dtype
    if precondition:
        step = max(1, n // _COV_ROWS)
        S = Z[::step][:_COV_ROWS]
        cov = tn(torch, S, S).double() / S.shape[0]
        # At W = 0 the Hessian in W is (diag(p) − ppᵀ) ⊗ Σ + λI ≈ (Σ + λC·I)/C (p = 1/C): factor Σ + λC·I, not Σ
        # alone, or the ridge term becomes ill-conditioned in V. The floor keeps rank-deficient Σ factorable at λ = 0.
        eps = lam * n_cls + 1e-6 * float(cov.diagonal().mean()) + 1e-12
        Lc = torch.linalg.cholesky(cov + eps * torch.eye(d, dtype=torch.float64)).to(dt)
    else:
        Lc = None

    def to_w(V: Any) -> Any:  # W = V L⁻¹  ⇔  Lᵀ Wᵀ = Vᵀ
        return V if Lc is None else torch.linalg.solve_triangular(Lc.t(), V.t(), upper=True).t()

    def to_v_grad(gW: Any) -> Any:  # ∂f/∂V = ∂f/∂W L⁻ᵀ  ⇔  L (∂f/∂V)ᵀ = (∂f/∂W)ᵀ
        return gW if Lc is None else torch.linalg.solve_triangular(Lc, gW.t(), upper=False).t()

    def pack(f: float, gW: Any, gb: Any) -> Tuple[float, Any, float]:
        gmax = max(float(gW.abs().max()), float(gb.abs().max()))
        return f, torch.cat([to_v_grad(gW).reshape(-1), gb]), gmax

    def evaluate(x: Any) -> Tuple[float, Any, float]:
        V, b = x[: n_cls * d].view(n_cls, d), x[n_cls * d:]
        return pack(*_loss_grad(torch, Z, y, to_w(V), b, lam))

    ftol = 64 * torch.finfo(dt).eps
    x = torch.zeros(n_cls * d + n_cls, dtype=dt)
    if zero_start:
        f, g, gmax = pack(*_zero_start(torch, Z, y, n_cls))
        n_evals = 0
    else:
        f, g, gmax = evaluate(x)
        n_evals = 1
    S_hist, Y_hist, rho = [], [], []
    f_hist = [f]
    it = 0
    while gmax > tol and it < max_iter:
        # Two-loop recursion: p = −H g.
        q = g.clone()
        alphas = []
        for s, yv, r in zip(reversed(S_hist), reversed(Y_hist), reversed(rho)):
            a = r * float(s @ q)
            alphas.append(a)
            q.add_(yv, alpha=-a)
        if Y_hist:
            q.mul_(float(S_hist[-1] @ Y_hist[-1]) / float(Y_hist[-1] @ Y_hist[-1]))
        elif newton_first and precondition:
            q.mul_(float(n_cls))
        else:
            q.mul_(1.0 / max(float(g.norm()), 1e-30))  # first step: unit length
        for s, yv, r, a in zip(S_hist, Y_hist, rho, reversed(alphas)):
            bcoef = r * float(yv @ q)
            q.add_(s, alpha=a - bcoef)
        p = q.neg_()
        gp = float(g @ p)
        if gp >= 0:  # not a descent direction (float32 round-off): restart from steepest descent
            S_hist, Y_hist, rho = [], [], []
            p = -g / max(float(g.norm()), 1e-30)
            gp = float(g @ p)
        t = 1.0
        accepted = False
        for _ in range(12):  # a step 2⁻¹¹ of the quasi-Newton one: the model no longer predicts the loss
            xn = x + t * p
            fn, gn, gmaxn = evaluate(xn)
            n_evals += 1
            if fn <= f + 1e-4 * t * gp:
                accepted = True
                break
            t *= 0.5
        it += 1
        if not accepted:  # no decrease representable at this precision: converged as far as it goes
            break
        s_vec, y_vec = xn - x, gn - g
        sy = float(s_vec @ y_vec)
        if sy > 1e-10 * float(s_vec.norm()) * float(y_vec.norm()):
            S_hist.append(s_vec)
            Y_hist.append(y_vec)
            rho.append(1.0 / sy)
            if len(S_hist) > history:
                S_hist.pop(0), Y_hist.pop(0), rho.pop(0)
        # Loss decrease over the last _WINDOW iterations, relative to f: below rtol the remaining excess loss is a
        # small fraction of it (L-BFGS converges linearly here). The floor is scipy's L-BFGS-B ftol (64 ε) at the
        # working precision: in float32 the loss carries ~1e-7 relative rounding, below which iterations chase
        # noise. Over a window, not one step: a single poor quasi-Newton step can lower f by that little far from
        # the optimum, a run of them cannot.
        f_hist.append(fn)
        if len(f_hist) > _WINDOW:
            f_old = f_hist[-1 - _WINDOW]
            stalled = f_old - fn <= max(rtol * abs(fn), ftol * max(abs(f_old), 1.0))
        else:
            stalled = False
        x, f, g, gmax = xn, fn, gn, gmaxn
        if callback is not None:
            callback(it, n_evals, f, gmax, lambda: to_w(x[: n_cls * d].view(n_cls, d)), x[n_cls * d:])
        if stalled:
            break
    V, b = x[: n_cls * d].view(n_cls, d), x[n_cls * d:]
    return to_w(V).contiguous(), b.clone(), it, n_evals, f
