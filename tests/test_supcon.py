"""SupCon (Khosla et al. 2020) and the hypersphere losses (Wang & Isola 2020): Rust (CPU) against the loop and
dense references, pytorch-metric-learning's SupConLoss, the authors' formulas, float64 gradcheck, hypothesis,
edge cases (B = 1 and 2, τ = 0.01, duplicates, one class, far-apart rows), half precision, thread-count
invariance, the chunked torch path (what other devices run) forced on CPU tensors, torch.compile(fullgraph)
and torch.func."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from reprkit import functional as Fn
from reprkit import losses as L
from reprkit._ops import DoubleBackwardError
from reprkit.errors import InvalidParameterError, ShapeError
from reprkit.losses import hypersphere as HS
from reprkit.losses import softmax as SM
from reprkit.reference import hypersphere as RH
from reprkit.reference import softmax as RS

F = torch.nn.functional


def gen(seed):
    return torch.Generator().manual_seed(seed)


def batch(n=20, d=5, k=4, seed=0, dtype=torch.float64):
    g = gen(seed)
    return torch.randn(n, d, generator=g, dtype=dtype), torch.randint(0, k, (n,), generator=g)


def vg(fn, *xs):
    """Value and gradients of fn under a non-unit upstream gradient."""
    ins = [t.detach().clone().requires_grad_(True) for t in xs]
    out = fn(*ins)
    grads = torch.autograd.grad(out * 1.7, ins, allow_unused=True)
    return out.detach(), [torch.zeros_like(t) if g is None else g for t, g in zip(ins, grads)]


def close(fast, ref, *xs, rtol=1e-9, atol=1e-11):
    v1, g1 = vg(fast, *xs)
    v2, g2 = vg(ref, *xs)
    torch.testing.assert_close(v1, v2, rtol=rtol, atol=atol)
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b, rtol=rtol * 10, atol=atol * 10)


@pytest.fixture
def torch_path(monkeypatch):
    """Forces the chunked torch path (what CUDA tensors run) on CPU tensors."""
    monkeypatch.setattr(SM, "_use_rust", lambda t: False)
    monkeypatch.setattr(HS, "_use_rust", lambda t: False)


# ----------------------------------------------------------------------------- SupCon: values and gradients


@settings(max_examples=20)
@given(st.integers(0, 10_000), st.integers(1, 30), st.integers(1, 6), st.sampled_from([0.07, 0.1, 0.5, 1.0]))
def test_supcon_matches_dense_reference(seed, n, k, tau):
    x, y = batch(n=n, k=k, seed=seed)
    close(lambda a: Fn.supcon_loss(a, y, tau), lambda a: RS.supcon_loss(a, y, tau), x)


def test_supcon_matches_the_loop_reference():
    for seed, (n, k) in enumerate([(9, 3), (12, 2), (7, 7), (10, 1)]):
        x, y = batch(n=n, k=k, seed=seed)
        close(lambda a: Fn.supcon_loss(a, y, 0.2), lambda a: RS.supcon_loss_loop(a, y, 0.2), x)
        f = torch.randn(4, 3, 5, generator=gen(seed), dtype=torch.float64)
        close(lambda a: Fn.supcon_loss(a), lambda a: RS.supcon_loss_loop(a), f)


@settings(max_examples=20)
@given(st.integers(0, 10_000), st.integers(2, 40), st.integers(1, 8), st.sampled_from([0.05, 0.1, 0.7]))
def test_supcon_matches_pytorch_metric_learning(seed, n, k, tau):
    pml = pytest.importorskip("pytorch_metric_learning.losses")
    x, y = batch(n=n, k=k, seed=seed)
    if len(set(y.tolist())) == 1:
        y[0] = y[0] + 1  # PML returns 0 without a negative pair; see test_one_class
    close(lambda a: L.SupConLoss(tau)(a, y), lambda a: pml.SupConLoss(temperature=tau)(a, y), x, rtol=1e-7, atol=1e-9)


def authors_supcon(features, labels=None, temperature=0.07):
    """Khosla et al.'s SupContrast formula (contrast_mode='all', base_temperature = temperature), written out
    independently of reprkit's reference; their model L2-normalises the features before the loss, done here."""
    features = F.normalize(features, dim=2)
    b, v = features.shape[:2]
    mask = torch.eye(b, dtype=features.dtype) if labels is None else (labels[:, None] == labels[None, :]).to(features.dtype)
    rows = torch.cat(torch.unbind(features, dim=1), dim=0)
    logits = rows @ rows.T / temperature
    logits = logits - logits.max(1, keepdim=True).values.detach()
    mask = mask.repeat(v, v)
    not_self = 1 - torch.eye(b * v, dtype=features.dtype)
    mask = mask * not_self
    log_prob = logits - torch.log((torch.exp(logits) * not_self).sum(1, keepdim=True))
    return (-(mask * log_prob).sum(1) / mask.sum(1)).mean()


@pytest.mark.parametrize("with_labels", [False, True])
def test_supcon_views_match_the_authors_code(with_labels):
    f = F.normalize(torch.randn(8, 3, 6, generator=gen(3), dtype=torch.float64), dim=2)
    y = torch.tensor([0, 1, 0, 2, 1, 3, 3, 0]) if with_labels else None
    close(lambda a: Fn.supcon_loss(a, y, 0.07), lambda a: authors_supcon(a, y, 0.07), f)


def test_two_views_without_labels_is_ntxent():
    z1, z2 = batch(n=11, seed=4)[0], batch(n=11, seed=5)[0]
    close(lambda a, b: Fn.supcon_loss(torch.stack([a, b], 1), temperature=0.3),
          lambda a, b: Fn.ntxent_loss(a, b, 0.3), z1, z2)
    # (B, d) rows with labels 0..B−1 twice: the same thing
    idx = torch.arange(11)
    close(lambda a, b: Fn.supcon_loss(torch.cat([a, b]), torch.cat([idx, idx]), 0.3),
          lambda a, b: Fn.ntxent_loss(a, b, 0.3), z1, z2)


def test_supcon_float64_gradcheck():
    x, y = batch(n=9, d=4, k=3, seed=8)
    x.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a: Fn.supcon_loss(a, y, 0.5), (x,))
    f = torch.randn(3, 2, 4, dtype=torch.float64, generator=gen(2), requires_grad=True)
    assert torch.autograd.gradcheck(lambda a: Fn.supcon_loss(a, temperature=0.5), (f,))


def test_supcon_spanning_several_blocks():
    """B above the kernel's 256-row block (partial last block), many singletons: float64 against dense."""
    x, y = batch(n=600, d=6, k=200, seed=9)
    close(lambda a: Fn.supcon_loss(a, y, 0.1), lambda a: RS.supcon_loss(a, y, 0.1), x, rtol=1e-8, atol=1e-10)


def test_supcon_float32_close_to_float64():
    x, y = batch(n=300, d=16, k=10, seed=1)
    v32, (g32,) = vg(lambda a: Fn.supcon_loss(a, y), x.float())
    v64, (g64,) = vg(lambda a: RS.supcon_loss(a, y), x)
    torch.testing.assert_close(v32.double(), v64, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(g32.double(), g64, rtol=1e-3, atol=1e-6)


# ----------------------------------------------------------------------------- SupCon: edge cases


def test_supcon_b1_and_b2():
    for x, y in [(torch.randn(1, 4, dtype=torch.float64), torch.tensor([3])),
                 (torch.randn(2, 4, dtype=torch.float64), torch.tensor([0, 1]))]:
        v, (g,) = vg(lambda a: Fn.supcon_loss(a, y), x)  # no positive anywhere: 0, zero gradient
        assert v.item() == 0.0 and torch.count_nonzero(g) == 0
        assert RS.supcon_loss(x, y).item() == 0.0
    v, (g,) = vg(lambda a: Fn.supcon_loss(a), torch.randn(1, 1, 4, dtype=torch.float64))
    assert v.item() == 0.0 and torch.count_nonzero(g) == 0
    x = torch.randn(2, 4, dtype=torch.float64)
    y = torch.tensor([5, 5])
    close(lambda a: Fn.supcon_loss(a, y), lambda a: RS.supcon_loss_loop(a, y), x)
    # two rows of one class: the only other column is the positive, log-softmax 0
    assert abs(Fn.supcon_loss(x, y).item()) < 1e-12
    close(lambda a: Fn.supcon_loss(a), lambda a: RS.supcon_loss_loop(a), torch.randn(1, 2, 4, dtype=torch.float64))


def test_supcon_one_class():
    x = batch(n=10, seed=2)[0]
    y = torch.zeros(10, dtype=torch.long)
    close(lambda a: Fn.supcon_loss(a, y, 0.2), lambda a: RS.supcon_loss_loop(a, y, 0.2), x)
    # every other row is a positive: the loss is log(B−1) minus the mean log-ratio, ≥ log(B−1)
    assert Fn.supcon_loss(x, y, 0.2).item() >= math.log(9) - 1e-12


def test_supcon_low_temperature_and_duplicates():
    x, y = batch(n=16, d=3, k=3, seed=6)
    x[5] = x[2]
    x[9] = x[2] * 3.0  # same direction: identical unit rows
    for tau in (0.01, 0.005):
        close(lambda a: Fn.supcon_loss(a, y, tau), lambda a: RS.supcon_loss(a, y, tau), x, rtol=1e-8, atol=1e-9)
        v, (g,) = vg(lambda a: Fn.supcon_loss(a, y, tau), x.float())
        assert torch.isfinite(v) and torch.isfinite(g).all()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_supcon_half_precision(dtype):
    x, y = batch(n=24, d=8, seed=7, dtype=torch.float32)
    xh = x.to(dtype)
    v, (g,) = vg(lambda a: Fn.supcon_loss(a, y), xh)
    assert v.dtype == torch.float32 and g.dtype == dtype
    v_ref, (g_ref,) = vg(lambda a: RS.supcon_loss(a.float(), y), xh)
    torch.testing.assert_close(v, v_ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(g.float(), g_ref.float(), rtol=2e-2, atol=2e-3)


def test_supcon_thread_count_invariance():
    x, y = batch(n=700, d=8, k=50, seed=3, dtype=torch.float32)
    outs = [vg(lambda a: Fn.supcon_loss(a, y, n_jobs=nj), x) for nj in (1, 2, 3)]
    for v, (g,) in outs[1:]:
        assert torch.equal(v, outs[0][0]) and torch.equal(g, outs[0][1][0])


def test_supcon_errors():
    x, y = batch()
    with pytest.raises(InvalidParameterError, match="labels"):
        Fn.supcon_loss(x)
    with pytest.raises(ShapeError, match="labels"):
        Fn.supcon_loss(x, y[:-1])
    with pytest.raises(ShapeError, match="labels"):
        Fn.supcon_loss(x.reshape(10, 2, 5), y)
    with pytest.raises(InvalidParameterError, match="temperature"):
        Fn.supcon_loss(x, y, 0.0)
    with pytest.raises(ShapeError):
        Fn.supcon_loss(x[0], y)
    with pytest.raises(ShapeError):
        Fn.supcon_loss(torch.zeros(3, 0, 4), y[:3])


# ----------------------------------------------------------------------------- SupCon: the chunked torch path


def test_supcon_chunked_reference_matches_dense_across_chunks():
    x, y = batch(n=53, k=9, seed=11)
    for chunk in (1, 7, 64):
        close(lambda a: RS.supcon_loss_chunked(a, y, 0.1, chunk=chunk), lambda a: RS.supcon_loss(a, y, 0.1), x)
    f = torch.randn(9, 3, 4, generator=gen(1), dtype=torch.float64)
    close(lambda a: RS.supcon_loss_chunked(a, None, 0.2, chunk=5), lambda a: RS.supcon_loss(a, None, 0.2), f)
    x1 = torch.randn(1, 4, dtype=torch.float64)  # no positive: 0, zero gradient, no NaN
    v, (g,) = vg(lambda a: RS.supcon_loss_chunked(a, torch.tensor([0]), chunk=3), x1)
    assert v.item() == 0.0 and torch.count_nonzero(g) == 0


def test_supcon_dispatch_off_cpu_runs_the_chunked_path(torch_path):
    x, y = batch(n=30, k=5, seed=12)
    close(lambda a: Fn.supcon_loss(a, y, 0.1), lambda a: RS.supcon_loss(a, y, 0.1), x)
    v, (g,) = vg(lambda a: Fn.supcon_loss(a, y), x.to(torch.bfloat16))
    assert v.dtype == torch.float32 and g.dtype == torch.bfloat16


# ----------------------------------------------------------------------------- alignment and uniformity


@settings(max_examples=20)
@given(st.integers(0, 10_000), st.integers(2, 30), st.sampled_from([0.5, 2.0, 5.0]))
def test_uniformity_matches_reference(seed, n, t):
    x = batch(n=n, d=4, seed=seed)[0] * 0.5
    close(lambda a: Fn.uniformity_loss(a, t), lambda a: RH.uniformity_loss(a, t), x)


def test_uniformity_matches_the_authors_one_liner_and_gradcheck():
    x = F.normalize(batch(n=25, d=6, seed=1)[0], dim=1)
    close(lambda a: Fn.uniformity_loss(a), lambda a: RH.uniformity_loss_pdist(a), x)
    close(lambda a: Fn.uniformity_loss(a, normalize=True), lambda a: RH.uniformity_loss_pdist(F.normalize(a, dim=1)),
          batch(n=9, seed=2)[0])
    xs = batch(n=8, d=3, seed=3)[0].requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a: Fn.uniformity_loss(a, 1.5), (xs,))


def test_uniformity_spanning_chunks_float32_and_threads():
    x = F.normalize(batch(n=400, d=8, seed=4)[0], dim=1)
    close(lambda a: Fn.uniformity_loss(a), lambda a: RH.uniformity_loss_chunked(a, chunk=64), x)
    v32, (g32,) = vg(lambda a: Fn.uniformity_loss(a), x.float())
    v64, (g64,) = vg(lambda a: RH.uniformity_loss(a), x)
    torch.testing.assert_close(v32.double(), v64, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(g32.double(), g64, rtol=1e-3, atol=1e-7)
    outs = [vg(lambda a: Fn.uniformity_loss(a, n_jobs=nj), x.float()) for nj in (1, 2, 3)]
    for v, (g,) in outs[1:]:
        assert torch.equal(v, outs[0][0]) and torch.equal(g, outs[0][1][0])


def test_uniformity_edge_cases():
    x2 = torch.randn(2, 3, dtype=torch.float64)
    close(lambda a: Fn.uniformity_loss(a), lambda a: -2 * ((a[0] - a[1]) ** 2).sum(), x2)
    with pytest.raises(ShapeError, match="2 rows"):
        Fn.uniformity_loss(torch.randn(1, 3))
    with pytest.raises(InvalidParameterError, match="t must"):
        Fn.uniformity_loss(x2, 0.0)
    far = torch.tensor([[0.0, 0.0], [100.0, 0.0], [0.0, 100.0]], dtype=torch.float64)
    assert math.isinf(RH.uniformity_loss_pdist(far).item())  # the one-liner underflows to log 0
    close(lambda a: Fn.uniformity_loss(a), lambda a: RH.uniformity_loss(a), far)
    dup = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    v, (g,) = vg(lambda a: Fn.uniformity_loss(a), dup)
    assert torch.isfinite(v) and torch.isfinite(g).all()
    v, (g,) = vg(lambda a: Fn.uniformity_loss(a), dup[:2])  # all rows equal: log 1 = 0, zero gradient
    assert abs(v.item()) < 1e-7 and g.abs().max() < 1e-6


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_hypersphere_half_precision(dtype):
    x, y = (batch(n=20, d=8, seed=s, dtype=torch.float32)[0].to(dtype) for s in (1, 2))
    v, (gx, gy) = vg(lambda a, b: L.HypersphereLoss()(a, b), x, y)
    assert v.dtype == torch.float32 and gx.dtype == dtype and gy.dtype == dtype
    v_ref, _ = vg(lambda a, b: RH.hypersphere_loss(F.normalize(a.float(), dim=1), F.normalize(b.float(), dim=1)), x, y)
    torch.testing.assert_close(v, v_ref, rtol=1e-5, atol=1e-5)


def test_alignment_and_hypersphere():
    x, y = batch(n=12, seed=5)[0], batch(n=12, seed=6)[0]
    for alpha in (2.0, 1.0, 0.5, 3.0):
        close(lambda a, b: Fn.alignment_loss(a, b, alpha), lambda a, b: (a - b).norm(dim=1).pow(alpha).mean(), x, y)
        _, (g, _) = vg(lambda a, b: Fn.alignment_loss(a, b, alpha), x, x)  # at x = y: gradient 0, no NaN
        assert torch.count_nonzero(g) == 0
    def paper(a, b):
        a, b = F.normalize(a, dim=1), F.normalize(b, dim=1)
        return (a - b).norm(dim=1).pow(2).mean() + (RH.uniformity_loss_pdist(a) + RH.uniformity_loss_pdist(b)) / 2

    close(lambda a, b: L.HypersphereLoss()(a, b), paper, x, y)
    close(lambda a, b: Fn.hypersphere_loss(a, b, 2.0, 3.0), lambda a, b: RH.hypersphere_loss(a, b, 2.0, 3.0), x, y)
    with pytest.raises(ShapeError):
        Fn.alignment_loss(x, y[:5])


def test_uniformity_chunked_path(torch_path):
    x = batch(n=37, d=4, seed=7)[0]
    close(lambda a: Fn.uniformity_loss(a, 2.0), lambda a: RH.uniformity_loss(a, 2.0), x)
    for chunk in (1, 5):
        close(lambda a: RH.uniformity_loss_chunked(a, 2.0, chunk), lambda a: RH.uniformity_loss(a, 2.0), x)


# ----------------------------------------------------------------------------- torch.compile, torch.func, vmap

B, D_IN, D = 16, 6, 5


def _labels():
    return torch.arange(B) % 4


CASES = {
    "supcon": lambda z, y: L.SupConLoss(0.2)(z, y),
    "supcon_views": lambda z, y: L.SupConLoss(0.2)(z.reshape(B // 2, 2, D)),
    "hypersphere": lambda z, y: L.HypersphereLoss()(z[: B // 2], z[B // 2 :]),
    "uniformity": lambda z, y: Fn.uniformity_loss(z),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_compiled_training_step_matches_eager(name):
    torch._dynamo.reset()
    model = torch.nn.Sequential(torch.nn.Linear(D_IN, 8), torch.nn.Tanh(), torch.nn.Linear(8, D))
    x, y = torch.randn(B, D_IN, generator=gen(1)), _labels()

    def step(a, b):
        return CASES[name](model(a), b)

    eager = step(x, y)
    eager.backward()
    g_eager = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    out = torch.compile(step, fullgraph=True, backend="aot_eager")(x, y)
    out.backward()
    torch.testing.assert_close(out, eager, rtol=1e-5, atol=1e-6)
    for a, b in zip(model.parameters(), g_eager):
        torch.testing.assert_close(a.grad, b, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", sorted(CASES))
def test_torch_func_grad_matches_autograd(name):
    z = torch.randn(B, D, dtype=torch.float64, generator=gen(2))
    y = _labels()
    zr = z.clone().requires_grad_(True)
    (want,) = torch.autograd.grad(CASES[name](zr, y), zr)
    torch.testing.assert_close(torch.func.grad(lambda t: CASES[name](t, y))(z), want)
    _, vjp = torch.func.vjp(lambda t: CASES[name](t, y), z)
    torch.testing.assert_close(vjp(torch.tensor(2.0, dtype=torch.float64))[0], 2 * want)


def test_vmap_and_double_backward_are_refused():
    z = torch.randn(3, B, D)
    with pytest.raises(RuntimeError, match="SupConLoss"):
        torch.vmap(lambda t: Fn.supcon_loss(t, _labels()))(z)
    with pytest.raises(RuntimeError, match="uniformity_loss"):
        torch.vmap(lambda t: Fn.uniformity_loss(t))(z)
    for name in ("supcon", "uniformity"):
        zz = torch.randn(B, D, dtype=torch.float64, requires_grad=True)
        (g,) = torch.autograd.grad(CASES[name](zz, _labels()), zz, create_graph=True)
        with pytest.raises(DoubleBackwardError, match="double backward"):
            g.pow(2).sum().backward()


def test_bf16_autocast_training_step():
    model = torch.nn.Linear(D_IN, D)
    x, y = torch.randn(B, D_IN), _labels()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        z = model(x)
        loss = L.SupConLoss()(z, y) + L.HypersphereLoss()(z[:8], z[8:])
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
