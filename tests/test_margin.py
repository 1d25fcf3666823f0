"""Margin-softmax losses: the Rust kernel vs a loop reference, the dense and chunked torch reference
and pytorch-metric-learning; gradcheck, hypothesis, edge cases, thread-count invariance, torch.compile
and torch.func."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from reprkit import functional as Fn
from reprkit import losses as L
from reprkit._ops import DoubleBackwardError
from reprkit.errors import InvalidInputError, InvalidParameterError, ShapeError
from reprkit.losses import margin as M
from reprkit.reference import margin as R

PL = pytest.importorskip("pytorch_metric_learning.losses")

KINDS = [("normalized", 1, False), ("cosface", 1, False), ("arcface", 1, False), ("arcface", 1, True), ("arcface", 3, False), ("linear", 1, False)]


def data(n=13, d=6, classes=9, k=1, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, d, generator=g, dtype=dtype)
    w = torch.randn(classes * k, d, generator=g, dtype=dtype)
    y = torch.randint(0, classes, (n,), generator=g)
    return z, w, y


def fast(kind, z, y, w, margin=0.4, scale=8.0, easy=False, k=1, n_jobs=None):
    return M._margin_softmax(z, y, w, kind, margin, scale, easy, k, n_jobs)


def ref_scale(kind, scale):
    return 1.0 if kind == "linear" else scale


def loop_loss(kind, z, y, w, margin, scale, easy, k):
    """Per-sample loop in float64 with acos (the textbook definition)."""
    z, w = z.double(), w.double()
    tot = 0.0
    classes = w.shape[0] // k
    for i in range(z.shape[0]):
        logits = []
        for c in range(classes):
            best = -math.inf
            for j in range(k):
                wr = w[c * k + j]
                if kind == "linear":
                    cs = float(z[i] @ wr)
                else:
                    cs = float(z[i] @ wr / (z[i].norm() * wr.norm()))
                best = max(best, cs)
            f = best
            if c == int(y[i]):
                m = float(margin[c]) if isinstance(margin, torch.Tensor) else margin
                if kind == "cosface":
                    f = best - m
                elif kind == "arcface":
                    phi = math.cos(math.acos(max(-1.0, min(1.0, best))) + m)
                    if easy:
                        f = phi if best > 0 else best
                    else:
                        f = phi if best > math.cos(math.pi - m) else best - math.sin(math.pi - m) * m
            logits.append(ref_scale(kind, scale) * f)
        lse = max(logits) + math.log(sum(math.exp(v - max(logits)) for v in logits))
        tot += lse - logits[int(y[i])]
    return tot / z.shape[0]


def grads(fn, z, w):
    z = z.clone().requires_grad_(True)
    w = w.clone().requires_grad_(True)
    v = fn(z, w)
    gz, gw = torch.autograd.grad(v, (z, w))
    return v.detach(), gz, gw


@pytest.mark.parametrize("kind,k,easy", KINDS)
def test_values_match_a_loop_and_gradients_match_the_dense_and_chunked_reference(kind, k, easy):
    z, w, y = data(k=k, seed=1)
    margin = torch.tensor([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.2, 0.3], dtype=torch.float64)
    for mg in (0.45, margin):
        v, gz, gw = grads(lambda a, b: fast(kind, a, y, b, mg, 8.0, easy, k), z, w)
        assert abs(float(v) - loop_loss(kind, z, y, w, mg, 8.0, easy, k)) < 1e-10
        for chunk in (None, 4):
            rv, rz, rw = grads(lambda a, b: R.margin_softmax_loss(a, y, b, kind, mg, ref_scale(kind, 8.0), easy, k, chunk), z, w)
            torch.testing.assert_close(v, rv, rtol=1e-12, atol=1e-12)
            torch.testing.assert_close(gz, rz, rtol=1e-10, atol=1e-12)
            torch.testing.assert_close(gw, rw, rtol=1e-10, atol=1e-12)


def test_float32_matches_float64_reference_across_many_tiles_and_row_blocks():
    z, w, y = data(n=300, d=16, classes=1500, seed=2, dtype=torch.float32)
    v, gz, gw = grads(lambda a, b: Fn.arcface_loss(a, y, b, 0.5, 30.0), z, w)
    rv, rz, rw = grads(lambda a, b: R.arcface_loss(a, y, b, 0.5, 30.0), z.double(), w.double())
    assert gz.dtype == torch.float32 and gw.dtype == torch.float32
    torch.testing.assert_close(v.double(), rv, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(gz.double(), rz, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(gw.double(), rw, rtol=1e-4, atol=1e-7)


def test_gradcheck_float64():
    for kind, k, easy in KINDS:
        z, w, y = data(n=5, d=4, classes=4, k=k, seed=3)
        assert torch.autograd.gradcheck(
            lambda a, b: fast(kind, a, y, b, 0.3, 3.0, easy, k), (z.clone().requires_grad_(), w.clone().requires_grad_())
        )


# --- pytorch-metric-learning where the definitions coincide ----------------------------------------


def _pml_pair(ours, theirs, z, y, rtol=1e-9):
    with torch.no_grad():
        theirs.W.copy_(ours.weight.T)
    zo = z.clone().requires_grad_(True)
    zt = z.clone().requires_grad_(True)
    lo, lt = ours(zo, y), theirs(zt, y)
    lo.backward()
    lt.backward()
    torch.testing.assert_close(lo, lt.to(lo.dtype), rtol=rtol, atol=1e-9)
    torch.testing.assert_close(zo.grad, zt.grad, rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(ours.weight.grad, theirs.W.grad.T, rtol=1e-6, atol=1e-9)


def test_matches_pml_arcface_cosface_normalized_and_subcenter():
    torch.manual_seed(0)
    z, _, y = data(n=20, d=8, classes=7, seed=4)
    cases = [
        (L.ArcFaceLoss(7, 8, margin=0.5, scale=16.0), PL.ArcFaceLoss(7, 8, margin=math.degrees(0.5), scale=16.0)),
        (L.CosFaceLoss(7, 8, margin=0.35, scale=16.0), PL.CosFaceLoss(7, 8, margin=0.35, scale=16.0)),
        (L.NormalizedSoftmaxLoss(7, 8, scale=20.0), PL.NormalizedSoftmaxLoss(7, 8, temperature=0.05)),
        (L.SubCenterArcFaceLoss(7, 8, sub_centers=3, margin=0.5, scale=16.0), PL.SubCenterArcFaceLoss(num_classes=7, embedding_size=8, margin=math.degrees(0.5), scale=16.0, sub_centers=3)),
    ]
    for ours, theirs in cases:
        ours.double()
        theirs.double()
        # PML has no θ + m > π branch: keep the targets' cosines above cos(π − m).
        _pml_pair(ours, theirs, z, y)


def test_get_outliers_matches_pml():
    torch.manual_seed(5)
    ours = L.SubCenterArcFaceLoss(6, 5, sub_centers=3)
    theirs = PL.SubCenterArcFaceLoss(num_classes=6, embedding_size=5, sub_centers=3)
    with torch.no_grad():
        theirs.W.copy_(ours.weight.T)
    z = torch.randn(40, 5)
    y = torch.arange(40) % 5  # class 5 absent
    o, dom = ours.get_outliers(z, y, threshold=60)
    to, tdom = theirs.get_outliers(z, y, threshold=60)
    assert sorted(o.tolist()) == sorted(to.tolist()) and len(o) > 0
    torch.testing.assert_close(dom[:5], torch.nn.functional.normalize(tdom.T[:5], dim=1), rtol=1e-5, atol=1e-6)
    assert torch.all(dom[5] == 0)


# --- properties ---------------------------------------------------------------------------------------


@given(
    n=st.integers(1, 12),
    classes=st.integers(1, 40),
    k=st.integers(1, 3),
    d=st.integers(1, 5),
    kind=st.sampled_from(["normalized", "cosface", "arcface", "linear"]),
    easy=st.booleans(),
    margin=st.floats(0.0, 1.2),
    scale=st.floats(0.5, 80.0),
    seed=st.integers(0, 2**16),
)
def test_hypothesis_kernel_equals_reference(n, classes, k, d, kind, easy, margin, scale, seed):
    z, w, y = data(n, d, classes, k, seed)
    v, gz, gw = grads(lambda a, b: fast(kind, a, y, b, margin, scale, easy, k), z, w)
    rv, rz, rw = grads(lambda a, b: R.margin_softmax_loss(a, y, b, kind, margin, ref_scale(kind, scale), easy, k, 7), z, w)
    assert float(v) >= 0
    # With d = 1 every cosine is ±1, where sin θ = √(1 − cos²) has an infinite derivative: a
    # normalisation 1 ulp off 1 gives sin θ ≈ √(2·eps) ≈ 2e-8 instead of 0, so the two sides may
    # differ by about s·sin m·2e-8 (well conditioned everywhere else).
    atol = 1e-9 if d > 1 else 3e-8 * scale
    torch.testing.assert_close(v, rv, rtol=1e-7, atol=atol)
    torch.testing.assert_close(gz, rz, rtol=1e-7, atol=atol)
    torch.testing.assert_close(gw, rw, rtol=1e-7, atol=atol)


def test_thread_count_does_not_change_bits():
    z, w, y = data(n=300, d=12, classes=9000, seed=6, dtype=torch.float32)
    outs = []
    for nj in (1, 2, 3):
        outs.append(grads(lambda a, b: fast("arcface", a, y, b, 0.5, 30.0, False, 1, nj), z, w))
    for o in outs[1:]:
        for a, b in zip(outs[0], o):
            assert torch.equal(a, b)


# --- edge cases -----------------------------------------------------------------------------------------


def test_one_class_absent_class_and_cos_exactly_plus_minus_one():
    # One class: every logit is the target's, the loss is 0 and gradients vanish.
    z, w, y = data(n=4, d=3, classes=1)
    v, gz, gw = grads(lambda a, b: Fn.arcface_loss(a, y, b), z, w)
    assert float(v) == 0.0 and torch.all(gz.abs() < 1e-12) and torch.all(gw.abs() < 1e-12)
    # A class absent from the batch still receives a (push-away) gradient.
    z, w, y = data(n=6, d=3, classes=5)
    y = torch.tensor([0, 1, 0, 1, 2, 2])
    _, _, gw = grads(lambda a, b: Fn.cosface_loss(a, y, b, scale=4.0), z, w)
    assert gw[3:].abs().sum() > 0
    # cos = +1 and −1 exactly, huge scale: finite loss and gradients, float32 and float64.
    for dt in (torch.float32, torch.float64):
        w = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]], dtype=dt)
        z = torch.tensor([[2.0, 0.0], [-3.0, 0.0], [0.0, 0.5]], dtype=dt)
        y = torch.tensor([0, 0, 1])
        for easy in (False, True):
            v, gz, gw = grads(lambda a, b: Fn.arcface_loss(a, y, b, 0.5, 1e4, easy), z, w)
            assert torch.isfinite(v) and torch.isfinite(gz).all() and torch.isfinite(gw).all()
            rv = R.arcface_loss(z.double(), y, w.double(), 0.5, 1e4, easy)
            torch.testing.assert_close(v.double(), rv, rtol=1e-6, atol=1e-3)


def test_fp16_and_bf16_compute_in_float32_and_weight_keeps_its_dtype():
    z, w, y = data(n=16, d=8, classes=10, seed=7, dtype=torch.float32)
    for dt in (torch.float16, torch.bfloat16):
        zh = z.to(dt).requires_grad_(True)
        ww = w.clone().requires_grad_(True)
        v = Fn.arcface_loss(zh, y, ww, scale=16.0)
        assert v.dtype == torch.float32
        v.backward()
        assert zh.grad.dtype == dt and ww.grad.dtype == torch.float32 and ww.dtype == torch.float32
        rv = R.arcface_loss(zh.detach().double(), y, w.double(), 0.5, 16.0)
        assert abs(float(v.detach()) - float(rv)) < 1e-4
    # A float16 weight is never cast in place either; its gradient comes back in float16.
    m = L.ArcFaceLoss(10, 8, scale=16.0).half()
    m(z.half(), y).backward()
    assert m.weight.dtype == torch.float16 and m.weight.grad.dtype == torch.float16


def test_errors_are_clear():
    z, w, y = data(n=4, d=3, classes=5)
    with pytest.raises(InvalidInputError, match="labels"):
        Fn.arcface_loss(z, torch.tensor([0, 1, 5, 2]), w)
    with pytest.raises(InvalidInputError, match="labels"):
        Fn.arcface_loss(z, torch.tensor([0, -1, 3, 2]), w)
    with pytest.raises(ShapeError, match="weight"):
        Fn.arcface_loss(z, y, w[:, :2])
    with pytest.raises(ShapeError, match="margin"):
        Fn.cosface_loss(z, y, w, margin=torch.ones(3))
    with pytest.raises(InvalidParameterError, match="scale"):
        Fn.cosface_loss(z, y, w, scale="big")
    with pytest.raises(InvalidParameterError, match="auto"):
        L.ArcFaceLoss(2, 3, scale="auto")
    # The kernel itself refuses out-of-range labels (the path compile takes).
    from reprkit import _core

    with pytest.raises(InvalidInputError, match="outside"):
        _core.margin_loss(z.numpy(), w.numpy(), np.array([0, 9, 1, 1]), np.array([0.5]), 1.0, "arcface", False, 1, None, 1.0, 1)


def test_auto_scale_and_adaptive_margins():
    m = L.ArcFaceLoss(1001, 4, scale="auto")
    assert math.isclose(m._scale_value(), math.sqrt(2) * math.log(1000))
    counts = [1000, 100, 10, 1]
    mg = L.adaptive_margins(counts, a=0.4, lambda_=0.25, b=0.1)
    torch.testing.assert_close(mg.double(), 0.4 * torch.tensor(counts, dtype=torch.float64) ** -0.25 + 0.1, rtol=1e-6, atol=0)
    assert bool((mg[1:] > mg[:-1]).all())
    z, w, y = data(n=8, d=4, classes=4)
    v = Fn.arcface_loss(z, y, w, margin=mg, scale="auto")
    rv = R.arcface_loss(z, y, w, mg.double(), math.sqrt(2) * math.log(3))
    torch.testing.assert_close(v, rv)
    with pytest.raises(InvalidInputError):
        L.adaptive_margins([3, 0])


def test_center_loss_default_learns_centres_and_alpha_moves_them():
    torch.manual_seed(0)
    z, _, y = data(n=12, d=4, classes=3, seed=8, dtype=torch.float32)
    cl = L.CenterLoss(3, 4, lambda_=0.1)
    assert isinstance(cl.centers, torch.nn.Parameter)
    v = cl(z, y)
    rv = R.center_loss(z, y, cl.weight, cl.centers, 0.1)
    torch.testing.assert_close(v, rv)
    v.backward()
    assert cl.centers.grad is not None and cl.weight.grad is not None
    ca = L.CenterLoss(3, 4, lambda_=0.1, alpha=0.5)
    assert "centers" in dict(ca.named_buffers())
    before = ca.centers.clone()
    ca(z, y)
    for j in range(3):
        sel = z[y == j]
        want = before[j] - 0.5 * (before[j] - sel).sum(0) / (1 + len(sel))
        torch.testing.assert_close(ca.centers[j], want)


def test_chunked_torch_path_is_what_other_devices_run(monkeypatch):
    z, w, y = data(n=10, d=5, classes=30, seed=9)
    want = grads(lambda a, b: Fn.arcface_loss(a, y, b, 0.5, 10.0), z, w)
    monkeypatch.setattr(M, "_on_cpu", lambda t: False)
    monkeypatch.setattr(M, "CHUNK", 7)
    got = grads(lambda a, b: Fn.arcface_loss(a, y, b, 0.5, 10.0), z, w)
    for a, b in zip(want, got):
        torch.testing.assert_close(a, b)


# --- torch integration ---------------------------------------------------------------------------------------


def _model_and_loss():
    torch.manual_seed(2)
    model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 4))
    return model, L.ArcFaceLoss(11, 4, scale=10.0)


def test_compiled_training_step_fullgraph_matches_eager():
    torch._dynamo.reset()
    model, loss = _model_and_loss()
    x, y = torch.randn(24, 6), torch.arange(24) % 11

    def step(x, y):
        return loss(model(x), y)

    eager = step(x, y)
    eager.backward()
    want = [p.grad.clone() for p in list(model.parameters()) + [loss.weight]]
    model.zero_grad()
    loss.zero_grad()
    out = torch.compile(step, fullgraph=True, backend="aot_eager")(x, y)
    out.backward()
    torch.testing.assert_close(out, eager, rtol=1e-5, atol=1e-6)
    for p, g in zip(list(model.parameters()) + [loss.weight], want):
        torch.testing.assert_close(p.grad, g, rtol=1e-4, atol=1e-6)


def test_torch_func_grad_vmap_refused_and_double_backward_refused():
    z, w, y = data(n=9, d=4, classes=6, seed=10)
    f = lambda a, b: Fn.arcface_loss(a, y, b, 0.5, 8.0)  # noqa: E731
    gz, gw = torch.func.grad(f, argnums=(0, 1))(z, w)
    _, rz, rw = grads(f, z, w)
    torch.testing.assert_close(gz, rz)
    torch.testing.assert_close(gw, rw)
    with pytest.raises(RuntimeError, match="margin-softmax"):
        torch.vmap(lambda a: f(a, w))(z.unsqueeze(0).repeat(2, 1, 1))
    zz = z.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(f(zz, w), zz, create_graph=True)
    with pytest.raises(DoubleBackwardError):
        g.pow(2).sum().backward()
