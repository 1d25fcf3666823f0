"""CLIP and SigLIP: Rust (CPU) against loop references, the dense torch reference, the chunked torch path
(what other devices run) and open_clip's ClipLoss / SigLipLoss; gradients w.r.t. features, scale and bias;
float64 gradcheck; edge cases; thread-count invariance; torch.compile / torch.func; the modules."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from reprkit import functional as Fn
from reprkit import losses as L
from reprkit._ops import DoubleBackwardError
from reprkit.errors import InvalidParameterError, NonFiniteError, ShapeError
from reprkit.losses import multimodal as MM
from reprkit.reference import multimodal as RM

try:  # the peer: only its comparisons are skipped without it
    import open_clip.loss as oc
except ImportError:  # pragma: no cover
    oc = None
needs_open_clip = pytest.mark.skipif(oc is None, reason="open_clip is not installed")

F = torch.nn.functional


def feats(n=24, d=5, seed=0, dtype=torch.float64, unit=True):
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(n, d, generator=g, dtype=dtype), torch.randn(n, d, generator=g, dtype=dtype)
    return (F.normalize(x, dim=1), F.normalize(y, dim=1)) if unit else (x, y)


def t64(v):
    return torch.tensor(v, dtype=torch.float64)


# ----------------------------------------------------------------- loop references


def clip_loop(x, y, s):
    n = x.shape[0]
    tot = 0.0
    for i in range(n):
        row = torch.stack([s * (x[i] * y[j]).sum() for j in range(n)])
        col = torch.stack([s * (x[j] * y[i]).sum() for j in range(n)])
        tot = tot + (torch.logsumexp(row, 0) - row[i]) + (torch.logsumexp(col, 0) - col[i])
    return tot / (2 * n)


def siglip_loop(x, y, s, b):
    n = x.shape[0]
    tot = 0.0
    for i in range(n):
        for j in range(n):
            z = 1.0 if i == j else -1.0
            tot = tot - F.logsigmoid(z * (s * (x[i] * y[j]).sum() + b))
    return tot / n


def grads(fn, *ts):
    ins = [t.detach().clone().requires_grad_(True) for t in ts]
    out = fn(*ins)
    gs = torch.autograd.grad(out * 1.7, ins, allow_unused=True)
    return out.detach(), [torch.zeros_like(t) if g is None else g for t, g in zip(ins, gs)]


def assert_same(fast, ref, *ts, rtol=1e-9, atol=1e-11):
    v1, g1 = grads(fast, *ts)
    v2, g2 = grads(ref, *ts)
    torch.testing.assert_close(v1, v2, rtol=rtol, atol=atol)
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b, rtol=rtol * 10, atol=atol * 10)


@pytest.mark.parametrize("n", [1, 2, 7])
def test_clip_matches_loop_reference(n):
    x, y = feats(n, 3, seed=n)
    assert_same(lambda a, b, s: Fn.clip_loss(a, b, s), clip_loop, x, y, t64(6.0))


@pytest.mark.parametrize("n", [1, 2, 7])
def test_siglip_matches_loop_reference(n):
    x, y = feats(n, 3, seed=n)
    assert_same(lambda a, b, s, c: Fn.siglip_loss(a, b, s, c), siglip_loop, x, y, t64(6.0), t64(-2.0))


# ----------------------------------------------------------------- dense reference, chunked path, open_clip


@settings(max_examples=15)
@given(st.integers(0, 10_000), st.integers(1, 40), st.integers(1, 8), st.floats(0.05, 100.0), st.booleans())
def test_clip_matches_reference_and_chunked(seed, n, d, scale, unit):
    x, y = feats(n, d, seed, unit=unit)
    s = t64(scale)
    assert_same(lambda a, b, t: Fn.clip_loss(a, b, t), RM.clip_loss, x, y, s)
    assert_same(lambda a, b, t: RM.clip_loss_chunked(a, b, t, chunk=1 + seed % 7), RM.clip_loss, x, y, s)


@settings(max_examples=15)
@given(st.integers(0, 10_000), st.integers(1, 40), st.integers(1, 8), st.floats(0.05, 100.0), st.floats(-15.0, 5.0), st.booleans())
def test_siglip_matches_reference_and_chunked(seed, n, d, scale, bias, unit):
    x, y = feats(n, d, seed, unit=unit)
    s, b = t64(scale), t64(bias)
    assert_same(lambda a, c, t, u: Fn.siglip_loss(a, c, t, u), RM.siglip_loss, x, y, s, b)
    assert_same(lambda a, c, t, u: RM.siglip_loss_chunked(a, c, t, u, chunk=1 + seed % 7), RM.siglip_loss, x, y, s, b)


@needs_open_clip
@pytest.mark.parametrize("n", [1, 2, 33, 300])
def test_clip_matches_open_clip(n):
    x, y = feats(n, 16, seed=n)
    s = t64(1 / 0.07)
    assert_same(lambda a, b, t: L.CLIPLoss()(a, b, t), lambda a, b, t: oc.ClipLoss()(a, b, t), x, y, s)
    # float32 at open_clip's default, through the module's own parameter
    x32, y32 = x.float(), y.float()
    got, want = grads(lambda a, b: L.CLIPLoss()(a, b), x32, y32), grads(lambda a, b: oc.ClipLoss()(a, b, 1 / 0.07), x32, y32)
    torch.testing.assert_close(got[0], want[0], rtol=2e-5, atol=1e-5)
    for a, b in zip(got[1], want[1]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


@needs_open_clip
@pytest.mark.parametrize("n", [1, 2, 33, 300])
def test_siglip_matches_open_clip(n):
    x, y = feats(n, 16, seed=n)
    s, b = t64(10.0), t64(-10.0)
    assert_same(lambda a, c, t, u: L.SigLIPLoss()(a, c, t, u), lambda a, c, t, u: oc.SigLipLoss()(a, c, t, u), x, y, s, b)
    x32, y32 = x.float(), y.float()
    s32, b32 = torch.tensor(10.0), torch.tensor(-10.0)
    got = grads(lambda a, c, t, u: Fn.siglip_loss(a, c, t, u), x32, y32, s32, b32)
    want = grads(lambda a, c, t, u: oc.SigLipLoss()(a, c, t, u), x32, y32, s32, b32)
    torch.testing.assert_close(got[0], want[0], rtol=2e-5, atol=1e-6)
    for a, b in zip(got[1], want[1]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_forced_torch_path_is_the_chunked_one(monkeypatch):
    x, y = feats(50, 4, seed=3)
    want_c = grads(lambda a, b, s: Fn.clip_loss(a, b, s), x, y, t64(20.0))
    want_s = grads(lambda a, b, s, c: Fn.siglip_loss(a, b, s, c), x, y, t64(20.0), t64(-5.0))
    monkeypatch.setattr(MM, "_on_cpu", lambda t: False)
    monkeypatch.setattr(RM, "CHUNK_ENTRIES", 50 * 8)  # 8 rows per chunk
    calls = []
    orig = RM.clip_loss_chunked
    monkeypatch.setattr(RM, "clip_loss_chunked", lambda *a, **k: calls.append(1) or orig(*a, **k))
    got_c = grads(lambda a, b, s: Fn.clip_loss(a, b, s), x, y, t64(20.0))
    got_s = grads(lambda a, b, s, c: Fn.siglip_loss(a, b, s, c), x, y, t64(20.0), t64(-5.0))
    assert calls
    for got, want in ((got_c, want_c), (got_s, want_s)):
        torch.testing.assert_close(got[0], want[0])
        for a, b in zip(got[1], want[1]):
            torch.testing.assert_close(a, b)


def test_chunked_path_memory_is_linear():
    # The chunked forward and backward never make a tensor larger than chunk × n logits: with a
    # chunk of 32 rows at n = 256, 8192 entries against the n² = 65536 of one logit matrix.
    x, y = feats(256, 8, seed=1)
    x.requires_grad_(True)
    s = t64(10.0).requires_grad_(True)
    biggest = [0]

    def hook(t):
        biggest[0] = max(biggest[0], t.numel())
        return t

    from torch.overrides import TorchFunctionMode

    class Watch(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            if isinstance(out, torch.Tensor):
                hook(out)
            return out

    with Watch():
        loss = RM.clip_loss_chunked(x, y, s, chunk=32) + RM.siglip_loss_chunked(x, y, s, t64(-3.0), chunk=32)
        loss.backward()
    assert biggest[0] <= 32 * 256
    assert torch.isfinite(x.grad).all() and torch.isfinite(s.grad)


# ----------------------------------------------------------------- gradcheck, edge cases


def test_float64_gradcheck():
    x, y = feats(6, 3, seed=4)
    for t in (x, y):
        t.requires_grad_(True)
    s, b = t64(3.0).requires_grad_(True), t64(-1.0).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, c, t: Fn.clip_loss(a, c, t), (x, y, s))
    assert torch.autograd.gradcheck(lambda a, c, t, u: Fn.siglip_loss(a, c, t, u), (x, y, s, b))
    assert torch.autograd.gradcheck(lambda a, c, t: RM.clip_loss_chunked(a, c, t, chunk=4), (x, y, s))
    assert torch.autograd.gradcheck(lambda a, c, t, u: RM.siglip_loss_chunked(a, c, t, u, chunk=4), (x, y, s, b))


@pytest.mark.parametrize("scale", [100.0, 1e4, 1e6])
def test_low_temperature_and_huge_scales_stay_finite_and_exact(scale):
    x, y = feats(40, 3, seed=5)
    x = x.clone()
    x[7] = x[3]  # duplicate rows: ties at the top of a row and a column
    y = y.clone()
    y[7] = y[3]
    s, b = t64(scale), t64(-10.0)
    assert_same(lambda a, c, t: Fn.clip_loss(a, c, t), RM.clip_loss, x, y, s, rtol=1e-9, atol=1e-9)
    assert_same(lambda a, c, t, u: Fn.siglip_loss(a, c, t, u), RM.siglip_loss, x, y, s, b, rtol=1e-9, atol=1e-9)
    for dt in (torch.float32,):
        v, g = grads(lambda a, c, t: Fn.clip_loss(a, c, t), x.to(dt), y.to(dt), s.to(dt))
        assert torch.isfinite(v) and all(torch.isfinite(t).all() for t in g)
        v, g = grads(lambda a, c, t, u: Fn.siglip_loss(a, c, t, u), x.to(dt), y.to(dt), s.to(dt), b.to(dt))
        assert torch.isfinite(v) and all(torch.isfinite(t).all() for t in g)


def test_identical_features_everywhere():
    # Every row the same: CLIP is log n exactly, its feature gradient 0.
    n = 6
    x = torch.ones(n, 4, dtype=torch.float64) / 2
    v, g = grads(lambda a, c, t: Fn.clip_loss(a, c, t), x, x.clone(), t64(14.0))
    torch.testing.assert_close(v, torch.tensor(math.log(n), dtype=torch.float64))
    torch.testing.assert_close(g[0], torch.zeros_like(x), atol=1e-12, rtol=0)
    assert_same(lambda a, c, t, u: Fn.siglip_loss(a, c, t, u), RM.siglip_loss, x, x.clone(), t64(14.0), t64(-10.0))


@needs_open_clip
def test_clip_bias_cancels():
    x, y = feats(10, 4)
    b = t64(3.0).requires_grad_(True)
    loss = Fn.clip_loss(x, y, 5.0, b)
    torch.testing.assert_close(loss, Fn.clip_loss(x, y, 5.0))
    (gb,) = torch.autograd.grad(loss, b)
    assert gb == 0
    torch.testing.assert_close(loss, oc.ClipLoss()(x, y, 5.0, torch.tensor(3.0, dtype=torch.float64)))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_computes_in_float32(dtype):
    x, y = feats(30, 8, seed=6, dtype=torch.float32)
    xh, yh = x.to(dtype), y.to(dtype)
    for fn in (lambda a, c: Fn.clip_loss(a, c, 20.0), lambda a, c: Fn.siglip_loss(a, c, 10.0, -10.0)):
        a, c = xh.clone().requires_grad_(True), yh.clone().requires_grad_(True)
        loss = fn(a, c)
        assert loss.dtype == torch.float32
        loss.backward()
        assert a.grad.dtype == dtype and c.grad.dtype == dtype
        want, wg = grads(fn, xh.float(), yh.float())
        torch.testing.assert_close(loss.detach(), want, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(a.grad.float() * 1.7, wg[0], rtol=2e-2, atol=2e-3)


def test_results_do_not_depend_on_the_thread_count():
    x, y = feats(600, 12, seed=7, dtype=torch.float32)
    s, b = torch.tensor(30.0), torch.tensor(-8.0)

    def run(nj):
        c = grads(lambda a, u, t: Fn.clip_loss(a, u, t, n_jobs=nj), x, y, s)
        g = grads(lambda a, u, t, v: Fn.siglip_loss(a, u, t, v, n_jobs=nj), x, y, s, b)
        return [c[0], *c[1], g[0], *g[1]]

    one = run(1)
    for nj in (2, 3):
        for a, b_ in zip(one, run(nj)):
            assert torch.equal(a, b_)


def test_forward_without_grad_matches():
    x, y = feats(20, 4, dtype=torch.float32)
    with torch.no_grad():
        a = Fn.siglip_loss(x, y, 10.0, -10.0)
    assert torch.equal(a, Fn.siglip_loss(x.requires_grad_(True), y, 10.0, -10.0).detach())


def test_errors_name_the_parameter():
    x, y = feats(5, 3)
    with pytest.raises(ShapeError, match="image_features and text_features"):
        Fn.clip_loss(x, y[:4])
    with pytest.raises(ShapeError, match="text_features"):
        Fn.siglip_loss(x, y[:, 0])
    with pytest.raises(NonFiniteError, match="logit_scale"):
        Fn.clip_loss(x, y, torch.tensor(float("nan")))
    with pytest.raises(InvalidParameterError, match="logit_bias"):
        Fn.siglip_loss(x, y, 10.0, float("inf"))
    with pytest.raises(ShapeError, match="logit_scale"):
        Fn.clip_loss(x, y, torch.ones(2))
    with pytest.raises(InvalidParameterError, match="max_scale"):
        L.CLIPLoss(max_scale=0.5)
    with pytest.raises(InvalidParameterError, match="scale_init"):
        L.SigLIPLoss(scale_init=0.0)


# ----------------------------------------------------------------- modules


@needs_open_clip
def test_clip_module_parameter_and_clamp():
    m = L.CLIPLoss()
    assert isinstance(m.logit_scale, torch.nn.Parameter)
    torch.testing.assert_close(m.scale(), torch.tensor(1 / 0.07))
    x, y = feats(12, 4, dtype=torch.float32)
    loss = m(x, y)
    loss.backward()
    # d/dt' of L(exp t') = exp(t') · dL/dscale
    s = torch.tensor(1 / 0.07, requires_grad=True)
    (gs,) = torch.autograd.grad(oc.ClipLoss()(x, y, s), s)
    torch.testing.assert_close(m.logit_scale.grad, gs * (1 / 0.07), rtol=1e-4, atol=1e-6)
    with torch.no_grad():
        m.logit_scale.fill_(10.0)
    torch.testing.assert_close(m.scale(), torch.tensor(100.0))  # clipped at 100
    m.clamp_()
    torch.testing.assert_close(m.logit_scale.detach(), torch.tensor(math.log(100.0)))
    assert "logit_scale" in dict(L.CLIPLoss(learnable=False).named_buffers())
    assert not list(L.CLIPLoss(learnable=False).parameters())
    out = m(x, y, torch.tensor(3.0), output_dict=True)
    torch.testing.assert_close(out["contrastive_loss"], oc.ClipLoss()(x, y, torch.tensor(3.0)))
    torch.testing.assert_close(L.CLIPLoss(max_scale=None, logit_scale_init=6.0).scale(), torch.tensor(math.exp(6.0)))


@needs_open_clip
def test_siglip_module_parameters():
    m = L.SigLIPLoss()
    assert {n for n, _ in m.named_parameters()} == {"logit_scale", "logit_bias"}
    torch.testing.assert_close(m.logit_scale.detach(), torch.tensor(math.log(10.0)))
    torch.testing.assert_close(m.logit_bias.detach(), torch.tensor(-10.0))
    x, y = feats(12, 4, dtype=torch.float32)
    m(x, y).backward()
    s, b = torch.tensor(10.0, requires_grad=True), torch.tensor(-10.0, requires_grad=True)
    gs, gb = torch.autograd.grad(oc.SigLipLoss()(x, y, s, b), (s, b))
    torch.testing.assert_close(m.logit_scale.grad, gs * 10.0, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(m.logit_bias.grad, gb, rtol=1e-4, atol=1e-6)
    assert not list(L.SigLIPLoss(learnable=False).parameters())


# ----------------------------------------------------------------- torch.compile, torch.func


def _two_tower():
    g = torch.Generator().manual_seed(1)
    img, txt = torch.nn.Linear(6, 4), torch.nn.Linear(5, 4)
    return img, txt, torch.randn(16, 6, generator=g), torch.randn(16, 5, generator=g)


@pytest.mark.parametrize("loss_cls", [L.CLIPLoss, L.SigLIPLoss])
def test_compiled_training_step_matches_eager(loss_cls):
    torch._dynamo.reset()
    img, txt, a, b = _two_tower()
    loss_fn = loss_cls()
    params = [*img.parameters(), *txt.parameters(), *loss_fn.parameters()]

    def step(a, b):
        return loss_fn(F.normalize(img(a), dim=1), F.normalize(txt(b), dim=1))

    eager = step(a, b)
    eager.backward()
    want = [p.grad.clone() for p in params]
    for p in params:
        p.grad = None
    out = torch.compile(step, fullgraph=True, backend="aot_eager")(a, b)
    out.backward()
    torch.testing.assert_close(out, eager, rtol=1e-5, atol=1e-6)
    for p, w in zip(params, want):
        torch.testing.assert_close(p.grad, w, rtol=1e-4, atol=1e-6)


def test_torch_func_grad_and_vjp():
    x, y = feats(10, 4, seed=2)
    s, b = t64(8.0), t64(-4.0)
    for fn in (lambda a, c, t: Fn.clip_loss(a, c, t), lambda a, c, t: Fn.siglip_loss(a, c, t, b)):
        want = grads(fn, x, y, s)[1]
        got = torch.func.grad(fn, argnums=(0, 1, 2))(x, y, s)
        for g1, g2 in zip(got, want):
            torch.testing.assert_close(g1 * 1.7, g2)
        _, vjp = torch.func.vjp(fn, x, y, s)
        torch.testing.assert_close(vjp(t64(1.7))[0], want[0])


def test_vmap_and_double_backward_are_refused():
    x, y = feats(6, 3)
    with pytest.raises(RuntimeError, match="clip_loss"):
        torch.vmap(lambda a: Fn.clip_loss(a, a))(torch.randn(2, 6, 3))
    with pytest.raises(RuntimeError, match="siglip_loss"):
        torch.vmap(lambda a: Fn.siglip_loss(a, a))(torch.randn(2, 6, 3))
    for fn in (lambda a: Fn.clip_loss(a, y, 3.0), lambda a: Fn.siglip_loss(a, y, 3.0, 1.0),
               lambda a: RM.clip_loss_chunked(a, y, t64(3.0), chunk=2)):
        a = x.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(fn(a), a, create_graph=True)
        with pytest.raises(DoubleBackwardError, match="double backward"):
            g.pow(2).sum().backward()


def test_bf16_autocast_training_step():
    img, txt, a, b = _two_tower()
    clip, sig = L.CLIPLoss(), L.SigLIPLoss()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        u, v = img(a), txt(b)
        assert u.dtype == torch.bfloat16
        loss = clip(u, v) + sig(u, v)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in [*img.parameters(), *clip.parameters(), *sig.parameters()])
