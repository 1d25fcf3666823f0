"""Proxy losses (Proxy-Anchor, Proxy-NCA): the Rust kernels (CPU) against explicit loop references, the
pure-torch reference (dense and chunked over classes, the path of other devices, forced here on CPU) and
pytorch-metric-learning; float64 gradcheck, hypothesis, edge cases (a class absent from the batch, one
class, cos = ±1, huge scales, fp16), thread-count invariance, torch.compile / torch.func."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from reprkit import functional as Fn
from reprkit import losses as L
from reprkit._ops import DoubleBackwardError
from reprkit.errors import InvalidInputError, InvalidParameterError, ShapeError
from reprkit.reference import proxies as RP

pml = pytest.importorskip("pytorch_metric_learning")
from pytorch_metric_learning import losses as PL  # noqa: E402

F = torch.nn.functional


def batch(n=24, d=5, c=7, k=None, seed=0, dtype=torch.float64):
    """Embeddings (n, d), labels in [0, k or c) and proxies (c, d)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=dtype)
    y = torch.randint(0, c if k is None else k, (n,), generator=g)
    w = torch.randn(c, d, generator=g, dtype=dtype)
    return x, y, w


def vg(fn, *xs):
    """Value and gradients (for a non-uniform upstream gradient when the output is a vector)."""
    ins = [t.detach().clone().requires_grad_(True) for t in xs]
    out = fn(*ins)
    up = torch.linspace(0.5, 1.5, out.numel(), dtype=out.dtype).reshape(out.shape)
    grads = torch.autograd.grad((out * up).sum(), ins)
    return out.detach(), grads


def close(fast, ref, *xs, rtol=1e-9, atol=1e-11):
    v1, g1 = vg(fast, *xs)
    v2, g2 = vg(ref, *xs)
    torch.testing.assert_close(v1, v2, rtol=rtol, atol=atol)
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b, rtol=rtol * 10, atol=atol * 10)


# ----------------------------------------------------------------- loop references (the papers' sums, written out)


def _unit(v):
    return v / v.norm().clamp_min(1e-12)


def loop_anchor(x, y, w, margin, alpha):
    n, c = x.shape[0], w.shape[0]
    pos_sum, neg_sum, present = 0.0, 0.0, 0
    for k in range(c):
        wk = _unit(w[k])
        ps, ns = [], []
        for i in range(n):
            cos = _unit(x[i]) @ wk
            if int(y[i]) == k:
                ps.append(torch.exp(-alpha * (cos - margin)))
            else:
                ns.append(torch.exp(alpha * (cos + margin)))
        if ps:
            present += 1
            pos_sum = pos_sum + torch.log(1 + sum(ps))
        if ns:
            neg_sum = neg_sum + torch.log(1 + sum(ns))
    return pos_sum / present + neg_sum / c


def loop_nca(x, y, w, scale):
    out = []
    for i in range(x.shape[0]):
        u = _unit(x[i])
        z = torch.stack([-scale * ((u - _unit(w[k])) ** 2).sum() for k in range(w.shape[0])])
        out.append(-(z[int(y[i])] - torch.logsumexp(z, 0)))
    return torch.stack(out)


@pytest.mark.parametrize("margin,alpha", [(0.1, 32.0), (0.0, 4.0), (-0.2, 10.0)])
def test_proxy_anchor_matches_the_loop_reference(margin, alpha):
    x, y, w = batch(n=10, d=4, c=6, k=4, seed=1)  # classes 4, 5 absent from the batch
    close(lambda a, b: Fn.proxy_anchor_loss(a, y, b, margin, alpha), lambda a, b: loop_anchor(a, y, b, margin, alpha), x, w)


@pytest.mark.parametrize("scale", [1.0, 0.3, 9.0])
def test_proxy_nca_matches_the_loop_reference(scale):
    x, y, w = batch(n=14, d=4, c=6, seed=2)
    close(lambda a, b: Fn.proxy_nca_loss(a, y, b, scale, reduction="none"), lambda a, b: loop_nca(a, y, b, scale), x, w)


# ----------------------------------------------------------------- Rust vs the torch reference (dense and chunked)


@settings(max_examples=15)
@given(st.integers(0, 10_000), st.integers(1, 40), st.integers(1, 9), st.integers(1, 400),
       st.floats(-0.3, 0.5), st.floats(0.5, 64.0))
def test_proxy_anchor_rust_and_chunked_match_dense_reference(seed, n, d, c, margin, alpha):
    x, y, w = batch(n=n, d=d, c=c, seed=seed)
    ref = lambda a, b: RP.proxy_anchor_loss(a, y, b, margin, alpha)  # noqa: E731
    close(lambda a, b: Fn.proxy_anchor_loss(a, y, b, margin, alpha), ref, x, w)
    close(lambda a, b: RP.proxy_anchor_loss(a, y, b, margin, alpha, chunk_size=97), ref, x, w)


@settings(max_examples=15)
@given(st.integers(0, 10_000), st.integers(1, 40), st.integers(1, 9), st.integers(1, 400), st.floats(0.05, 30.0),
       st.sampled_from(["mean", "sum", "none"]), st.booleans())
def test_proxy_nca_rust_and_chunked_match_dense_reference(seed, n, d, c, scale, reduction, weighted):
    x, y, w = batch(n=n, d=d, c=c, seed=seed)
    wt = torch.rand(n, dtype=x.dtype, generator=torch.Generator().manual_seed(seed)) if weighted else None
    kw = dict(reduction=reduction, weights=wt)
    ref = lambda a, b: RP.proxy_nca_loss(a, y, b, scale, **kw)  # noqa: E731
    close(lambda a, b: Fn.proxy_nca_loss(a, y, b, scale, **kw), ref, x, w)
    close(lambda a, b: RP.proxy_nca_loss(a, y, b, scale, chunk_size=97, **kw), ref, x, w)


@pytest.mark.parametrize("loss", ["anchor", "nca"])
def test_many_class_tiles_and_groups_float64_and_float32(loss):
    # C spans several 256-class tiles and all 16 task groups; n spans two 256-row tiles.
    for dtype, tol in ((torch.float64, 1e-9), (torch.float32, 2e-5)):
        x, y, w = batch(n=300, d=16, c=5000, seed=3, dtype=dtype)
        if loss == "anchor":
            fast = lambda a, b: Fn.proxy_anchor_loss(a, y, b)  # noqa: E731
            ref = lambda a, b: RP.proxy_anchor_loss(a.double(), y, b.double()).to(a.dtype)  # noqa: E731
        else:
            fast = lambda a, b: Fn.proxy_nca_loss(a, y, b, 4.0)  # noqa: E731
            ref = lambda a, b: RP.proxy_nca_loss(a.double(), y, b.double(), 4.0).to(a.dtype)  # noqa: E731
        close(fast, ref, x, w, rtol=tol, atol=tol * 1e-2)


def test_float64_gradcheck():
    x, y, w = batch(n=9, d=3, c=5, k=4, seed=4)
    x.requires_grad_(True)
    w.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, b: Fn.proxy_anchor_loss(a, y, b, 0.1, 6.0), (x, w))
    assert torch.autograd.gradcheck(lambda a, b: Fn.proxy_nca_loss(a, y, b, 2.0, reduction="none"), (x, w))
    assert torch.autograd.gradcheck(lambda a, b: RP.proxy_anchor_loss(a, y, b, 0.1, 6.0, chunk_size=2), (x, w))
    assert torch.autograd.gradcheck(lambda a, b: RP.proxy_nca_loss(a, y, b, 2.0, reduction="none", chunk_size=2), (x, w))


# ----------------------------------------------------------------- pytorch-metric-learning


@pytest.mark.parametrize("margin,alpha", [(0.1, 32.0), (0.3, 8.0)])
def test_proxy_anchor_matches_pml(margin, alpha):
    x, y, _ = batch(n=32, d=8, c=11, k=9, seed=5)  # classes 9, 10 absent
    theirs = PL.ProxyAnchorLoss(11, 8, margin=margin, alpha=alpha).double()
    ours = L.ProxyAnchorLoss(11, 8, margin=margin, alpha=alpha, dtype=torch.float64)
    with torch.no_grad():
        ours.proxies.copy_(theirs.proxies)
    xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    la, lb = ours(xa, y), theirs(xb, y)
    la.backward()
    lb.backward()
    torch.testing.assert_close(la, lb, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(xa.grad, xb.grad, rtol=1e-8, atol=1e-12)
    torch.testing.assert_close(ours.proxies.grad, theirs.proxies.grad, rtol=1e-8, atol=1e-12)


@pytest.mark.parametrize("scale", [1.0, 8.0])
def test_proxy_nca_matches_pml(scale):
    x, y, _ = batch(n=32, d=8, c=11, seed=6)
    theirs = PL.ProxyNCALoss(11, 8, softmax_scale=scale).double()
    ours = L.ProxyNCALoss(11, 8, scale=scale, dtype=torch.float64)
    with torch.no_grad():
        ours.proxies.copy_(theirs.proxies)
    xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    la, lb = ours(xa, y), theirs(xb, y)
    la.backward()
    lb.backward()
    torch.testing.assert_close(la, lb, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(xa.grad, xb.grad, rtol=1e-8, atol=1e-12)
    torch.testing.assert_close(ours.proxies.grad, theirs.proxies.grad, rtol=1e-8, atol=1e-12)


def test_proxies_are_initialised_as_pml_does():
    torch.manual_seed(0)
    a = L.ProxyAnchorLoss(2000, 64)
    n = L.ProxyNCALoss(2000, 64)
    assert a.proxies.shape == (2000, 64) and isinstance(a.proxies, torch.nn.Parameter)
    assert abs(a.proxies.std().item() - math.sqrt(2 / 2000)) < 0.02 * math.sqrt(2 / 2000)  # kaiming, fan_out = C
    assert abs(n.proxies.std().item() - 1.0) < 0.02  # normal_
    assert [p for p in a.parameters()] == [a.proxies]
    assert "num_classes=2000" in repr(a) and "scale=1.0" in repr(n)


# ----------------------------------------------------------------- edge cases


def test_a_class_absent_from_the_batch_has_no_positive_term_and_its_proxy_is_only_pushed_away():
    x, y, w = batch(n=12, d=4, c=5, k=3, seed=7)  # classes 3 and 4 absent
    pos, neg, cnt = RP.proxy_anchor_terms(F.normalize(x, dim=1), y, w, 0.1, 32.0)
    assert cnt[3] == 0 and pos[3] == 0 and neg[3] > 0
    wr = w.clone().requires_grad_(True)
    Fn.proxy_anchor_loss(x, y, wr).backward()
    assert torch.isfinite(wr.grad).all() and wr.grad[3].abs().sum() > 0
    close(lambda a, b: Fn.proxy_anchor_loss(a, y, b), lambda a, b: loop_anchor(a, y, b, 0.1, 32.0), x, w)


def test_one_class():
    x, y, w = batch(n=6, d=3, c=1, seed=8)
    # Proxy-Anchor: every sample is a positive of the only proxy, the negative term is log 1 = 0.
    close(lambda a, b: Fn.proxy_anchor_loss(a, y, b), lambda a, b: loop_anchor(a, y, b, 0.1, 32.0), x, w)
    # Proxy-NCA: the softmax over one proxy is 1: zero loss, zero gradient.
    v, (gx, gw) = vg(lambda a, b: Fn.proxy_nca_loss(a, y, b, 3.0), x, w)
    assert v == 0 and gx.abs().max() == 0 and gw.abs().max() == 0
    xs, ys, ws = batch(n=1, d=3, c=4, seed=9)
    close(lambda a, b: Fn.proxy_anchor_loss(a, ys, b), lambda a, b: loop_anchor(a, ys, b, 0.1, 32.0), xs, ws)


def test_cosine_exactly_plus_and_minus_one_and_huge_scales_are_finite():
    w = torch.eye(4, dtype=torch.float64)[:3] * 2.0
    x = torch.cat([w[:2] * 3.0, -w[2:] * 0.5])  # cos = 1, 1 and -1 with the own proxy
    y = torch.tensor([0, 1, 2])
    for alpha in (32.0, 1e4):
        close(lambda a, b: Fn.proxy_anchor_loss(a, y, b, 0.1, alpha), lambda a, b: RP.proxy_anchor_loss(a, y, b, 0.1, alpha), x, w)
    for scale in (1.0, 1e4):
        close(lambda a, b: Fn.proxy_nca_loss(a, y, b, scale), lambda a, b: RP.proxy_nca_loss(a, y, b, scale), x, w)
    xf, yf, wf = batch(n=50, d=6, c=40, seed=10, dtype=torch.float32)
    for fn in (lambda a, b: Fn.proxy_anchor_loss(a, yf, b, 0.1, 1e4), lambda a, b: Fn.proxy_nca_loss(a, yf, b, 1e4)):
        v, grads = vg(fn, xf, wf)
        assert torch.isfinite(v).all() and all(torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("half", [torch.float16, torch.bfloat16])
def test_half_precision_embeddings_compute_in_float32_and_proxies_keep_their_dtype(half):
    x, y, _ = batch(n=20, d=8, c=6, seed=11, dtype=torch.float32)
    for module in (L.ProxyAnchorLoss(6, 8), L.ProxyNCALoss(6, 8, scale=4.0)):
        xh = x.to(half).requires_grad_(True)
        loss = module(xh, y)
        assert loss.dtype == torch.float32
        loss.backward()
        assert xh.grad.dtype == half and module.proxies.grad.dtype == torch.float32
        assert module.proxies.dtype == torch.float32  # never cast in place
        ref_w = module.proxies.detach().clone().requires_grad_(True)
        xr = xh.detach().float().requires_grad_(True)
        ref = (RP.proxy_anchor_loss(xr, y, ref_w) if isinstance(module, L.ProxyAnchorLoss) else RP.proxy_nca_loss(xr, y, ref_w, 4.0))
        ref.backward()
        torch.testing.assert_close(loss, ref, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(module.proxies.grad, ref_w.grad, rtol=1e-4, atol=1e-6)
        # Half-precision proxies too (module.half()): gradient back in float16, the parameter stays float16.
        module.zero_grad()
        module.to(half)
        xh.grad = None
        module(xh, y).backward()
        assert module.proxies.dtype == half and module.proxies.grad.dtype == half
        assert torch.isfinite(module.proxies.grad.float()).all()


def test_results_do_not_depend_on_the_thread_count():
    x, y, w = batch(n=300, d=12, c=3000, seed=12, dtype=torch.float32)
    outs = []
    for nj in (1, 2, 3):
        a, (ga, gwa) = vg(lambda p, q: Fn.proxy_anchor_loss(p, y, q, n_jobs=nj), x, w)
        b, (gb, gwb) = vg(lambda p, q: Fn.proxy_nca_loss(p, y, q, 5.0, reduction="none", n_jobs=nj), x, w)
        outs.append([a, ga, gwa, b, gb, gwb])
    for other in outs[1:]:
        for s, t in zip(outs[0], other):
            assert torch.equal(s, t)


# ----------------------------------------------------------------- the fused kernels (loss and gradients in one call)


def _two_pass_anchor(x, y, w, margin=0.1, alpha=32.0):
    import reprkit.losses.proxies as LP

    pos, neg, cnt = LP._ProxyAnchor.apply(F.normalize(x, dim=1), w, y, margin, alpha, 2)
    return RP.anchor_loss_from_terms(pos, neg, cnt)


def _two_pass_nca(x, y, w, scale, reduction="mean", weights=None):
    import reprkit.losses.proxies as LP

    per, _ = LP._ProxyNCA.apply(F.normalize(x, dim=1), w, y, 2.0 * scale, 2)
    return RP.reduce(per, reduction, weights)


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
def test_fused_kernels_match_the_two_pass_kernels(dtype, tol):
    # Several class tiles and groups, a batch wider than a row tile, tiny and large embedding norms.
    x, y, w = batch(n=300, d=16, c=1500, k=900, seed=21, dtype=dtype)
    x[0] *= 1e-6
    x[1] *= 1e3
    close(lambda a, b: Fn.proxy_anchor_loss(a, y, b, 0.2, 16.0), lambda a, b: _two_pass_anchor(a, y, b, 0.2, 16.0), x, w,
          rtol=tol, atol=tol * 1e-2)
    wt = torch.rand(300, dtype=dtype, generator=torch.Generator().manual_seed(3))
    for red, wts in (("mean", None), ("sum", None), ("mean", wt), ("sum", wt), ("mean", torch.zeros(300, dtype=dtype))):
        close(lambda a, b: Fn.proxy_nca_loss(a, y, b, 4.0, reduction=red, weights=wts),
              lambda a, b: _two_pass_nca(a, y, b, 4.0, red, wts), x, w, rtol=tol, atol=tol * 1e-2)


@pytest.mark.parametrize("kind", ["anchor", "nca"])
def test_fused_path_one_gradient_upstream_scale_and_retained_graph(kind):
    x, y, w = batch(n=40, d=6, c=30, seed=22)
    fn = (lambda a, b: Fn.proxy_anchor_loss(a, y, b)) if kind == "anchor" else (lambda a, b: Fn.proxy_nca_loss(a, y, b, 3.0))
    xr, wr = x.clone().requires_grad_(True), w.clone().requires_grad_(True)
    want = torch.autograd.grad(fn(xr, wr), (xr, wr))
    # One input needing a gradient: the same bits as with both.
    (gx,) = torch.autograd.grad(fn(xr, w), xr)
    (gw,) = torch.autograd.grad(fn(x, wr), wr)
    assert torch.equal(gx, want[0]) and torch.equal(gw, want[1])
    # An upstream gradient other than 1, and a second backward through a retained graph.
    loss = fn(xr, wr)
    (2.5 * loss).backward(retain_graph=True)
    torch.testing.assert_close(xr.grad, 2.5 * want[0], rtol=1e-12, atol=0)
    xr.grad, wr.grad = None, None
    loss.backward()
    assert torch.equal(xr.grad, want[0]) and torch.equal(wr.grad, want[1])
    # Without a gradient, the forward-only kernel gives the same value.
    with torch.no_grad():
        torch.testing.assert_close(fn(x, w), loss.detach(), rtol=1e-12, atol=1e-14)


def test_proxy_nca_weights_that_need_a_gradient_take_the_two_pass_path():
    x, y, w = batch(n=20, d=4, c=9, seed=23)
    wt = torch.rand(20, dtype=x.dtype, generator=torch.Generator().manual_seed(1))
    close(lambda a, b, c: Fn.proxy_nca_loss(a, y, b, 2.0, weights=c), lambda a, b, c: RP.proxy_nca_loss(a, y, b, 2.0, weights=c),
          x, w, wt)


# ----------------------------------------------------------------- errors


def test_labels_outside_the_classes_are_a_clear_error():
    x, y, w = batch(n=6, d=3, c=4, seed=13)
    for bad in (torch.tensor([0, 1, 2, 3, 4, 0]), torch.tensor([0, -1, 2, 3, 1, 0])):
        for fn in (Fn.proxy_anchor_loss, Fn.proxy_nca_loss):
            with pytest.raises(InvalidInputError, match=r"\[0, 4\)"):
                fn(x, bad, w)
    with pytest.raises(ShapeError, match="proxies"):
        Fn.proxy_anchor_loss(x, y, torch.randn(4, 5, dtype=x.dtype))
    with pytest.raises(ShapeError, match="labels"):
        Fn.proxy_nca_loss(x, y[:3], w)
    with pytest.raises(InvalidParameterError, match="alpha"):
        Fn.proxy_anchor_loss(x, y, w, alpha=0.0)
    with pytest.raises(InvalidParameterError, match="scale"):
        Fn.proxy_nca_loss(x, y, w, scale=-1.0)
    with pytest.raises(InvalidParameterError, match="reduction"):
        Fn.proxy_nca_loss(x, y, w, reduction="avg")
    with pytest.raises(InvalidParameterError, match="num_classes"):
        L.ProxyAnchorLoss(0, 3)
    with pytest.raises(ShapeError, match="weights"):
        Fn.proxy_nca_loss(x, y, w, weights=torch.ones(5))


# ----------------------------------------------------------------- torch.compile, torch.func


def _model():
    torch.manual_seed(1)
    return torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 4))


@pytest.mark.parametrize("kind", ["anchor", "nca"])
def test_compiled_training_step_has_no_graph_break_and_matches_eager(kind):
    torch._dynamo.reset()
    model = _model()
    loss_fn = L.ProxyAnchorLoss(5, 4) if kind == "anchor" else L.ProxyNCALoss(5, 4, scale=3.0)
    g = torch.Generator().manual_seed(2)
    x, y = torch.randn(24, 6, generator=g), torch.randint(0, 5, (24,), generator=g)
    params = list(model.parameters()) + list(loss_fn.parameters())

    def step(a, b):
        return loss_fn(model(a), b)

    eager = step(x, y)
    eager.backward()
    want = [p.grad.clone() for p in params]
    for p in params:
        p.grad = None
    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    out = compiled(x, y)
    out.backward()
    torch.testing.assert_close(out, eager, rtol=1e-5, atol=1e-6)
    for p, wg in zip(params, want):
        torch.testing.assert_close(p.grad, wg, rtol=1e-4, atol=1e-6)


def test_torch_func_grad_vmap_and_double_backward():
    x, y, w = batch(n=10, d=4, c=6, seed=14)
    for fn, name in ((lambda a, b: Fn.proxy_anchor_loss(a, y, b), "proxy_anchor_loss"),
                     (lambda a, b: Fn.proxy_nca_loss(a, y, b, 2.0), "proxy_nca_loss")):
        xr, wr = x.clone().requires_grad_(True), w.clone().requires_grad_(True)
        want = torch.autograd.grad(fn(xr, wr), (xr, wr))
        got = torch.func.grad(fn, argnums=(0, 1))(x, w)
        for a, b in zip(got, want):
            torch.testing.assert_close(a, b)
        with pytest.raises(RuntimeError, match=name):
            torch.vmap(lambda t: fn(t, w))(x[None].expand(2, -1, -1).contiguous())
        xr = x.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(fn(xr, w), xr, create_graph=True)
        with pytest.raises(DoubleBackwardError, match="double backward"):
            g.pow(2).sum().backward()


def test_the_other_devices_path_dispatches_to_the_chunked_reference(monkeypatch):
    # What a CUDA tensor takes, forced on CPU: the chunked torch path, same values and gradients.
    import reprkit.losses.proxies as LP

    x, y, w = batch(n=30, d=5, c=600, seed=15)
    wt = torch.rand(30, dtype=x.dtype)
    want_a = vg(lambda a, b: Fn.proxy_anchor_loss(a, y, b, 0.2, 16.0), x, w)
    want_n = vg(lambda a, b: Fn.proxy_nca_loss(a, y, b, 3.0, weights=wt), x, w)
    monkeypatch.setattr(LP, "_on_cpu", lambda t: False)
    monkeypatch.setattr(LP, "_chunk", lambda n: 256)  # several chunks
    got_a = vg(lambda a, b: Fn.proxy_anchor_loss(a, y, b, 0.2, 16.0), x, w)
    got_n = vg(lambda a, b: Fn.proxy_nca_loss(a, y, b, 3.0, weights=wt), x, w)
    for got, want in ((got_a, want_a), (got_n, want_n)):
        torch.testing.assert_close(got[0], want[0], rtol=1e-10, atol=1e-12)
        for a, b in zip(got[1], want[1]):
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("kind", ["anchor", "nca"])
def test_chunked_torch_path_compiles_fullgraph_and_works_with_torch_func(kind):
    torch._dynamo.reset()
    x, y, w = batch(n=20, d=4, c=9, seed=16, dtype=torch.float32)
    if kind == "anchor":
        fn = lambda a, b: RP.proxy_anchor_loss(a, y, b, chunk_size=4)  # noqa: E731
    else:
        fn = lambda a, b: RP.proxy_nca_loss(a, y, b, 3.0, chunk_size=4)  # noqa: E731
    want = vg(fn, x, w)
    got = vg(torch.compile(fn, fullgraph=True, backend="aot_eager"), x, w)
    torch.testing.assert_close(got[0], want[0])
    for a, b in zip(got[1], want[1]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    xr, wr = x.clone().requires_grad_(True), w.clone().requires_grad_(True)
    for a, b in zip(torch.func.grad(fn, argnums=(0, 1))(x, w), torch.autograd.grad(fn(xr, wr), (xr, wr))):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("reduction", ["sum", "mean"])
@pytest.mark.parametrize("weights", [None, "random", "zeros", "one_nonzero"])
def test_reduce_weights_give_the_reduction_as_a_weighted_sum(reduction, weights):
    # The fused kernels differentiate Σ c_i·ℓ_i: c must reproduce reference.proxies.reduce exactly.
    g = torch.Generator().manual_seed(3)
    per = torch.rand(7, generator=g, dtype=torch.float64) * 5
    w = {None: None, "random": torch.rand(7, generator=g, dtype=torch.float64), "zeros": torch.zeros(7, dtype=torch.float64),
         "one_nonzero": torch.tensor([0, 0, 2.5, 0, 0, 0, 0], dtype=torch.float64)}[weights]
    c = RP.reduce_weights(7, reduction, w)
    assert c.dtype == torch.float64 and c.shape == (7,)
    torch.testing.assert_close((c * per).sum(), RP.reduce(per, reduction, w), rtol=1e-14, atol=1e-14)
    with pytest.raises(ValueError, match="reduction"):
        RP.reduce_weights(7, "none", w)
