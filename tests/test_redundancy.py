"""Barlow Twins, VICReg and VICReg's graph form: the Rust kernel (both evaluations) and the tiled torch path
against loop references and lightly, float64 gradcheck, hypothesis, edge cases (B = 2, constant features,
fp16/bf16), thread-count invariance, torch.compile(fullgraph) and torch.func."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from reprkit import functional as Fn
from reprkit import losses as L
from reprkit._ops import DoubleBackwardError
from reprkit.errors import InvalidParameterError, NonFiniteError, ShapeError
from reprkit.reference import redundancy as R

PATHS = ("features", "samples")


def views(n=12, d=5, seed=0, dtype=torch.float64, corr=0.7):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(n, d, generator=g, dtype=dtype)
    b = corr * a + torch.randn(n, d, generator=g, dtype=dtype)
    return a, b


# ----------------------------------------------------------------- loop references (the definitions, written out)


def loop_barlow(za, zb, lam):
    n, d = za.shape

    def bn(z):
        cols = []
        for k in range(d):
            c = z[:, k]
            mu = sum(c[i] for i in range(n)) / n
            var = sum((c[i] - mu) ** 2 for i in range(n)) / n
            cols.append((c - mu) / torch.sqrt(var + 1e-5))
        return torch.stack(cols, 1)

    a, b = bn(za), bn(zb)
    loss = za.new_zeros(())
    for k in range(d):
        for m in range(d):
            c = sum(a[i, k] * b[i, m] for i in range(n)) / n
            loss = loss + ((1 - c) ** 2 if k == m else lam * c**2)
    return loss


def loop_var_cov(z, eps):
    n, d = z.shape
    mu = [sum(z[i, k] for i in range(n)) / n for k in range(d)]
    v = z.new_zeros(())
    c = z.new_zeros(())
    for k in range(d):
        var = sum((z[i, k] - mu[k]) ** 2 for i in range(n)) / (n - 1)
        v = v + torch.relu(1 - torch.sqrt(var + eps)) / d
        for m in range(d):
            if m != k:
                cov = sum((z[i, k] - mu[k]) * (z[i, m] - mu[m]) for i in range(n)) / (n - 1)
                c = c + cov**2 / d
    return v, c


def loop_vicreg(za, zb, sim=25.0, var=25.0, cov=1.0, eps=1e-4):
    n, d = za.shape
    inv = sum(((za[i] - zb[i]) ** 2).sum() for i in range(n)) / (n * d)
    va, ca = loop_var_cov(za, eps)
    vb, cb = loop_var_cov(zb, eps)
    return sim * inv + var * (va + vb) / 2 + cov * (ca + cb)


def loop_graph(z, edges, sim=25.0, var=25.0, cov=1.0, eps=1e-4, views=1):
    n, d = z.shape
    inv = sum(w * ((z[i] - z[j]) ** 2).sum() for i, j, w in edges) / (n * d)
    m = n // views
    vs, cs = zip(*[loop_var_cov(z[v * m : (v + 1) * m], eps) for v in range(views)])
    return sim * inv + var * sum(vs) / views + cov * sum(cs)


# ----------------------------------------------------------------- helpers


def vg(fn, *xs):
    ins = [t.detach().clone().requires_grad_(True) for t in xs]
    out = fn(*ins)
    grads = torch.autograd.grad(out * 1.3, ins)
    return out.detach(), grads


def close(fast, ref, *xs, rtol=1e-9, atol=1e-11):
    v1, g1 = vg(fast, *xs)
    v2, g2 = vg(ref, *xs)
    torch.testing.assert_close(v1, v2, rtol=rtol, atol=atol)
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b, rtol=rtol * 10, atol=atol * 10)


def pair_graph(n):
    i = torch.arange(n)
    return torch.cat([i, i + n]), torch.cat([i + n, i])


# ----------------------------------------------------------------- values and gradients


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("n,d", [(6, 4), (4, 9)])
def test_barlow_twins_matches_loop_reference(path, n, d):
    a, b = views(n, d)
    close(lambda x, y: Fn.barlow_twins_loss(x, y, 0.02, path=path), lambda x, y: loop_barlow(x, y, 0.02), a, b)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("n,d", [(6, 4), (4, 9)])
def test_vicreg_matches_loop_reference(path, n, d):
    a, b = views(n, d, seed=1)
    close(lambda x, y: Fn.vicreg_loss(x, y, 3.0, 2.0, 0.5, path=path), lambda x, y: loop_vicreg(x, y, 3.0, 2.0, 0.5), a, b)


def test_vicreg_graph_matches_loop_reference_weighted_knn():
    z = views(10, 4, seed=2)[0]
    rng = np.random.default_rng(0)
    edges = {}
    for i in range(10):
        for j in rng.choice(10, 3, replace=False):
            if i != j:
                w = float(rng.uniform(0.5, 2))
                edges[(i, int(j))] = edges[(int(j), i)] = w
    trip = [(i, j, w) for (i, j), w in edges.items()]
    rows, cols, ws = (list(t) for t in zip(*trip))
    close(lambda x: Fn.vicreg_graph_loss(x, (rows, cols, ws)), lambda x: loop_graph(x, trip), z)
    close(
        lambda x: Fn.vicreg_graph_loss(x, (rows, cols, ws), 2.0, 1.0, 3.0, views=2, path="samples"),
        lambda x: loop_graph(x, trip, 2.0, 1.0, 3.0, views=2),
        z,
    )


@pytest.mark.parametrize("path", PATHS)
def test_graph_form_with_partner_graph_equals_vicreg(path):
    a, b = views(9, 6, seed=3)
    n = a.shape[0]
    close(lambda x, y: Fn.vicreg_graph_loss(torch.cat([x, y]), pair_graph(n), views=2, path=path), Fn.vicreg_loss, a, b)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_graph_formats_agree():
    import scipy.sparse as sp

    z = views(8, 3, seed=4)[0]
    rows, cols = pair_graph(4)
    w = torch.linspace(0.5, 2.0, 8, dtype=torch.float64)
    w = (w + w[torch.cat([torch.arange(4, 8), torch.arange(4)])]) / 2  # symmetric weights
    want = Fn.vicreg_graph_loss(z, (rows, cols, w))
    m = sp.coo_matrix((w.numpy(), (rows.numpy(), cols.numpy())), shape=(8, 8))
    for g in (m, m.tocsr(), torch.sparse_coo_tensor(torch.stack([rows, cols]), w, (8, 8)),
              torch.sparse_coo_tensor(torch.stack([rows, cols]), w, (8, 8)).to_sparse_csr()):
        torch.testing.assert_close(Fn.vicreg_graph_loss(z, g), want)
    unit = Fn.vicreg_graph_loss(z, (rows, cols))
    torch.testing.assert_close(Fn.vicreg_graph_loss(z, torch.stack([rows, cols], 1)), unit)
    torch.testing.assert_close(Fn.vicreg_graph_loss(z, np.stack([rows.numpy(), cols.numpy()], 1)), unit)
    torch.testing.assert_close(Fn.vicreg_graph_loss(z, sp.coo_matrix((np.ones(8), (rows, cols)), shape=(8, 8))), unit)


def test_rust_and_tiled_torch_paths_match_dense_oracle_float64():
    # d = 300 with tile 64 / the Rust feature tile 256: several blocks, a ragged last one.
    a, b = views(20, 300, seed=5)
    for fast in (
        lambda x, y: Fn.barlow_twins_loss(x, y, path="features"),
        lambda x, y: Fn.barlow_twins_loss(x, y, path="samples"),
        lambda x, y: R.barlow_twins_loss(x, y, tile=64),
    ):
        close(fast, lambda x, y: R.barlow_twins_loss(x, y, tile=None), a, b)
    for fast in (
        lambda x, y: Fn.vicreg_loss(x, y, path="features"),
        lambda x, y: Fn.vicreg_loss(x, y, path="samples"),
        lambda x, y: R.vicreg_loss(x, y, tile=64),
    ):
        close(fast, lambda x, y: R.vicreg_loss(x, y, tile=None), a, b)


def test_float32_paths_agree():
    a, b = views(64, 520, seed=6, dtype=torch.float32)
    for ref_fn, fns in (
        (lambda x, y: R.barlow_twins_loss(x.double(), y.double(), tile=None),
         [lambda x, y: Fn.barlow_twins_loss(x, y, path=p) for p in PATHS] + [lambda x, y: R.barlow_twins_loss(x, y, tile=128)]),
        (lambda x, y: R.vicreg_loss(x.double(), y.double(), tile=None),
         [lambda x, y: Fn.vicreg_loss(x, y, path=p) for p in PATHS] + [lambda x, y: R.vicreg_loss(x, y, tile=128)]),
    ):
        v2, g2 = vg(ref_fn, a, b)
        for f in fns:
            v1, g1 = vg(f, a, b)
            assert v1.dtype == torch.float32
            torch.testing.assert_close(v1.double(), v2, rtol=2e-5, atol=1e-5)
            for x, y in zip(g1, g2):
                torch.testing.assert_close(x.double(), y.double(), rtol=1e-4, atol=1e-5 * float(y.abs().max()))


def test_matches_lightly():
    lightly = pytest.importorskip("lightly.loss")
    for n, d in [(16, 8), (32, 70)]:
        a, b = views(n, d, seed=7)
        close(lambda x, y: L.BarlowTwinsLoss(5e-3)(x, y), lambda x, y: lightly.BarlowTwinsLoss(lambda_param=5e-3)(x, y), a, b,
              rtol=1e-9, atol=1e-9)
        close(L.VICRegLoss(), lightly.VICRegLoss(), a, b)
        close(L.VICRegLoss(10.0, 5.0, 2.0, 1e-3), lightly.VICRegLoss(10.0, 5.0, 2.0, eps=1e-3), a, b)
    # The default λ differs on purpose: the paper's 0.0051, lightly's 5e-3.
    assert L.BarlowTwinsLoss().lambda_ == 0.0051 and lightly.BarlowTwinsLoss().lambda_param == 5e-3


def test_gradcheck_float64():
    a, b = views(5, 4, seed=8)
    ins = (a.clone().requires_grad_(True), b.clone().requires_grad_(True))
    for p in PATHS:
        assert torch.autograd.gradcheck(lambda x, y: Fn.barlow_twins_loss(x, y, path=p), ins)
        assert torch.autograd.gradcheck(lambda x, y: Fn.vicreg_loss(x, y, path=p), ins)
        assert torch.autograd.gradcheck(lambda x: Fn.vicreg_graph_loss(x, ([0, 1, 3], [1, 0, 3]), path=p),
                                        (ins[0],))
    assert torch.autograd.gradcheck(lambda x, y: R.barlow_twins_loss(x, y, tile=3), ins)
    assert torch.autograd.gradcheck(lambda x, y: R.vicreg_loss(x, y, tile=3), ins)


@settings(max_examples=25)
@given(st.integers(2, 9), st.integers(1, 12), st.integers(0, 10_000), st.sampled_from(PATHS),
       st.floats(0.0, 0.1), st.booleans())
def test_hypothesis_rust_matches_dense_oracle(n, d, seed, path, lam, vic):
    a, b = views(n, d, seed=seed)
    if vic:
        close(lambda x, y: Fn.vicreg_loss(x, y, path=path), lambda x, y: R.vicreg_loss(x, y, tile=None), a, b, rtol=1e-8, atol=1e-9)
    else:
        close(lambda x, y: Fn.barlow_twins_loss(x, y, lam, path=path), lambda x, y: R.barlow_twins_loss(x, y, lam, tile=None), a, b,
              rtol=1e-8, atol=1e-9)


# ----------------------------------------------------------------- edge cases


@pytest.mark.parametrize("path", PATHS)
def test_batch_of_two(path):
    a, b = views(2, 5, seed=9)
    close(lambda x, y: Fn.barlow_twins_loss(x, y, path=path), lambda x, y: loop_barlow(x, y, 0.0051), a, b, rtol=1e-7, atol=1e-8)
    close(lambda x, y: Fn.vicreg_loss(x, y, path=path), loop_vicreg, a, b)


def test_batch_of_one():
    a, b = views(1, 4)
    # Standardised single rows are all zero: C = 0 and the loss is d.
    torch.testing.assert_close(Fn.barlow_twins_loss(a, b), torch.tensor(4.0, dtype=torch.float64))
    with pytest.raises(ShapeError, match="at least 2 rows"):
        Fn.vicreg_loss(a, b)


@pytest.mark.parametrize("path", PATHS)
def test_constant_features_stay_finite(path):
    a, b = views(8, 6, seed=10)
    a[:, 2] = 3.0
    b[:, 2] = -1.0
    b[:, 4] = 0.0
    for f in (lambda x, y: Fn.barlow_twins_loss(x, y, path=path), lambda x, y: Fn.vicreg_loss(x, y, path=path)):
        v, (ga, gb) = vg(f, a, b)
        assert torch.isfinite(v) and torch.isfinite(ga).all() and torch.isfinite(gb).all()
    close(lambda x, y: Fn.barlow_twins_loss(x, y, path=path), lambda x, y: R.barlow_twins_loss(x, y, tile=None), a, b)
    close(lambda x, y: Fn.vicreg_loss(x, y, path=path), lambda x, y: R.vicreg_loss(x, y, tile=None), a, b)
    # all constant: Barlow Twins gives d (C = 0), VICReg's variance term is relu(1 − √eps) per feature
    c = torch.ones(5, 3, dtype=torch.float64)
    torch.testing.assert_close(Fn.barlow_twins_loss(c, c), torch.tensor(3.0, dtype=torch.float64))
    torch.testing.assert_close(Fn.vicreg_loss(c, c), torch.tensor(25 * (1 - 1e-2), dtype=torch.float64))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_computes_in_float32(dtype):
    a, b = views(16, 8, seed=11, dtype=torch.float32)
    ah, bh = a.to(dtype).requires_grad_(True), b.to(dtype).requires_grad_(True)
    for f in (Fn.barlow_twins_loss, Fn.vicreg_loss):
        out = f(ah, bh)
        assert out.dtype == torch.float32
        torch.testing.assert_close(out, f(ah.detach().float(), bh.detach().float()))
        ga, gb = torch.autograd.grad(out, (ah, bh))
        assert ga.dtype == dtype and torch.isfinite(ga.float()).all() and torch.isfinite(gb.float()).all()


def test_bf16_autocast_training_step():
    model = torch.nn.Linear(6, 8)
    x = torch.randn(16, 6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        z1, z2 = model(x), model(x + 0.1)
        assert z1.dtype == torch.bfloat16
        loss = L.BarlowTwinsLoss()(z1, z2) + L.VICRegLoss()(z1, z2)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


def test_thread_count_does_not_change_bits():
    a, b = views(150, 270, seed=12, dtype=torch.float32)
    for f in (Fn.barlow_twins_loss, Fn.vicreg_loss):
        for p in PATHS:
            r1 = vg(lambda x, y: f(x, y, n_jobs=1, path=p), a, b)
            r3 = vg(lambda x, y: f(x, y, n_jobs=3, path=p), a, b)
            assert torch.equal(r1[0], r3[0]) and all(torch.equal(u, v) for u, v in zip(r1[1], r3[1]))


def test_validation_errors():
    a, b = views(6, 3)
    with pytest.raises(ShapeError):
        Fn.barlow_twins_loss(a, b[:, :2])
    with pytest.raises(NonFiniteError):
        Fn.vicreg_loss(a, b * float("nan"))
    with pytest.raises(InvalidParameterError, match="lambda_"):
        Fn.barlow_twins_loss(a, b, -1.0)
    with pytest.raises(InvalidParameterError, match="eps"):
        Fn.vicreg_loss(a, b, eps=0.0)
    with pytest.raises(InvalidParameterError, match="path"):
        Fn.vicreg_loss(a, b, path="gram")
    with pytest.raises(InvalidParameterError, match="views"):
        Fn.vicreg_graph_loss(torch.cat([a, b]), pair_graph(6), views=5)
    with pytest.raises(ShapeError, match="indices"):
        Fn.vicreg_graph_loss(a, ([0, 7], [7, 0]))
    with pytest.raises(ShapeError, match=r"\(6, 6\)"):
        import scipy.sparse as sp

        Fn.vicreg_graph_loss(a, sp.eye(5))


# ----------------------------------------------------------------- torch integration


def test_compiled_training_step_matches_eager():
    torch._dynamo.reset()
    bt, vic = L.BarlowTwinsLoss(), L.VICRegLoss()
    model = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Tanh(), torch.nn.Linear(16, 12))
    g = torch.Generator().manual_seed(1)
    x1, x2 = torch.randn(24, 6, generator=g), torch.randn(24, 6, generator=g)

    def step(u, v):
        z1, z2 = model(u), model(v)
        return bt(z1, z2) + vic(z1, z2)

    eager = step(x1, x2)
    eager.backward()
    want = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    out = torch.compile(step, fullgraph=True, backend="aot_eager")(x1, x2)
    out.backward()
    torch.testing.assert_close(out, eager, rtol=1e-5, atol=1e-6)
    for p, w in zip(model.parameters(), want):
        torch.testing.assert_close(p.grad, w, rtol=1e-4, atol=1e-6)


def test_torch_func_grad_vmap_and_double_backward():
    a, b = views(10, 6, seed=13)
    for f in (Fn.barlow_twins_loss, Fn.vicreg_loss):
        ar = a.clone().requires_grad_(True)
        (want,) = torch.autograd.grad(f(ar, b), ar)
        torch.testing.assert_close(torch.func.grad(lambda t: f(t, b))(a), want)
        with pytest.raises(RuntimeError, match=f.__name__):
            torch.vmap(lambda t: f(t, b))(a.expand(2, -1, -1))
        (g,) = torch.autograd.grad(f(ar, b), ar, create_graph=True)
        with pytest.raises(DoubleBackwardError, match="double backward"):
            g.pow(2).sum().backward()
    # the dense reference supports higher-order derivatives
    ar = a.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(R.vicreg_loss(ar, b, tile=None), ar, create_graph=True)
    g.pow(2).sum().backward()
    assert torch.isfinite(ar.grad).all()
