"""Distillation and Siamese losses: DINO (Rust on CPU, the chunked torch path, the plain reference and a loop
reference; lightly's DINOLoss with its centre and warm-up schedule), SimSiam/BYOL's negative cosine (lightly's
NegativeCosineSimilarity) and reprkit.ema_update (lightly's update_momentum). float64 gradcheck, hypothesis,
fp16/bf16, thread-count invariance, torch.compile(fullgraph) and torch.func."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import reprkit
from reprkit import functional as Fn
from reprkit import losses as L
from reprkit import reference as R
from reprkit._ops import DoubleBackwardError
from reprkit.errors import InvalidParameterError, NonFiniteError, ShapeError
from reprkit.reference import distillation as RD



def lightly_loss():
    """lightly's losses (a peer, optional: the tests that need it skip without it)."""
    return pytest.importorskip("lightly.loss")


def views(n, b, k, seed=0, dtype=torch.float64, scale=2.0):
    g = torch.Generator().manual_seed(seed)
    return [scale * torch.randn(b, k, generator=g, dtype=dtype) for _ in range(n)]


def loop_dino(teacher, student, center, tt, ts):
    """The definition, one (sample, teacher view, student view) term at a time."""
    total, n = 0.0, 0
    b = teacher[0].shape[0]
    for t, xt in enumerate(teacher):
        for s, xs in enumerate(student):
            if t == s:
                continue
            n += 1
            for i in range(b):
                p = torch.softmax((xt[i].detach() - center) / tt, 0)
                total = total - (p * torch.log_softmax(xs[i] / ts, 0)).sum()
    return total / (n * b)


def value_and_grads(fn, teacher, student):
    sv = [v.detach().clone().requires_grad_(True) for v in student]
    tv = [v.detach().clone().requires_grad_(True) for v in teacher]
    out = fn(tv, sv)
    grads = torch.autograd.grad(out * 1.7, sv, allow_unused=True)
    assert all(v.grad is None for v in tv)
    return out.detach(), [torch.zeros_like(v) if g is None else g for v, g in zip(sv, grads)]


IMPLS = {
    "rust": lambda c, tt, ts: (lambda t, s: Fn.dino_loss(t, s, c, tt, ts)),
    "chunked": lambda c, tt, ts: (lambda t, s: RD.dino_loss_chunked(t, s, c, tt, ts, chunk=7)),
    "chunked_default": lambda c, tt, ts: (lambda t, s: RD.dino_loss_chunked(t, s, c, tt, ts)),
    "reference": lambda c, tt, ts: (lambda t, s: R.dino_loss(t, s, c, tt, ts)),
}


# ----------------------------------------------------------------------------------------------- DINO values


@pytest.mark.parametrize("impl", sorted(IMPLS))
@pytest.mark.parametrize("nt,ns", [(2, 8), (2, 2), (1, 3), (3, 2)])
def test_dino_matches_loop_reference_float64(impl, nt, ns):
    teacher, student = views(nt, 3, 37, seed=1), views(ns, 3, 37, seed=2)
    center = 0.3 * torch.randn(37, dtype=torch.float64)
    want, wg = value_and_grads(lambda t, s: loop_dino(t, s, center, 0.04, 0.1), teacher, student)
    got, gg = value_and_grads(IMPLS[impl](center, 0.04, 0.1), teacher, student)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    for a, b in zip(gg, wg):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


def test_dino_spans_several_kernel_tiles():
    # K larger than the Rust tile (2048) and not a multiple of it; the online max moves between tiles.
    teacher, student = views(2, 2, 5001, seed=3, scale=1.0), views(4, 2, 5001, seed=4, scale=1.0)
    teacher[0][:, 4000:] += 3.0  # the largest teacher logits sit in the last tile
    center = torch.zeros(5001, dtype=torch.float64)
    want, wg = value_and_grads(lambda t, s: R.dino_loss(t, s, center, 0.05, 0.1), teacher, student)
    for fn in (IMPLS["rust"](center, 0.05, 0.1), IMPLS["chunked"](center, 0.05, 0.1)):
        got, gg = value_and_grads(fn, teacher, student)
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
        for a, b in zip(gg, wg):
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-13)


@given(
    st.integers(0, 10_000), st.integers(1, 3), st.integers(1, 5), st.integers(1, 4), st.integers(1, 40),
    st.floats(0.01, 1.0), st.floats(0.01, 1.0),
)
def test_dino_hypothesis_rust_and_chunked_match_reference(seed, nt, ns, b, k, tt, ts):
    if nt * ns - min(nt, ns) == 0:
        nt, ns = 1, 2
    teacher, student = views(nt, b, k, seed=seed), views(ns, b, k, seed=seed + 1)
    center = 0.5 * views(1, 1, k, seed=seed + 2)[0][0]
    want, wg = value_and_grads(lambda t, s: R.dino_loss(t, s, center, tt, ts), teacher, student)
    for impl in ("rust", "chunked"):
        got, gg = value_and_grads(IMPLS[impl](center, tt, ts), teacher, student)
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-10)
        for a, c in zip(gg, wg):
            torch.testing.assert_close(a, c, rtol=1e-8, atol=1e-10)


def test_dino_float32_close_to_float64():
    teacher, student = views(2, 8, 300, seed=5), views(6, 8, 300, seed=6)
    c = torch.randn(300, dtype=torch.float64) * 0.1
    want, wg = value_and_grads(IMPLS["reference"](c, 0.04, 0.1), teacher, student)
    f = lambda vs: [v.float() for v in vs]  # noqa: E731
    got, gg = value_and_grads(IMPLS["rust"](c.float(), 0.04, 0.1), f(teacher), f(student))
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), want, rtol=2e-5, atol=1e-5)
    for a, b in zip(gg, wg):
        torch.testing.assert_close(a.double(), b, rtol=1e-3, atol=1e-7)


def test_dino_gradcheck_float64():
    teacher, student = views(2, 2, 6, seed=7, scale=0.5), views(3, 2, 6, seed=8, scale=0.5)
    c = torch.linspace(-0.2, 0.2, 6, dtype=torch.float64)
    sv = [v.requires_grad_(True) for v in student]
    assert torch.autograd.gradcheck(lambda *s: Fn.dino_loss(teacher, list(s), c, 0.2, 0.3), sv)
    assert torch.autograd.gradcheck(lambda *s: RD.dino_loss_chunked(teacher, list(s), c, 0.2, 0.3, chunk=4), sv)


def test_dino_thread_count_invariance():
    teacher, student = views(2, 9, 4500, seed=9, dtype=torch.float32), views(5, 9, 4500, seed=10, dtype=torch.float32)
    runs = []
    for n in (1, 2, 3):
        sv = [v.clone().requires_grad_(True) for v in student]
        loss = Fn.dino_loss(teacher, sv, None, 0.04, 0.1, n_jobs=n)
        loss.backward()
        runs.append((loss.detach(), [v.grad for v in sv]))
    for loss, grads in runs[1:]:
        assert torch.equal(loss, runs[0][0])
        assert all(torch.equal(a, b) for a, b in zip(grads, runs[0][1]))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_dino_half_precision(dtype):
    teacher, student = views(2, 4, 64, seed=11, dtype=torch.float32), views(4, 4, 64, seed=12, dtype=torch.float32)
    th, sh = [v.to(dtype) for v in teacher], [v.to(dtype).requires_grad_(True) for v in student]
    loss = Fn.dino_loss(th, sh)
    assert loss.dtype == torch.float32
    loss.backward()
    assert all(v.grad.dtype == dtype for v in sh)
    want, wg = value_and_grads(IMPLS["reference"](torch.zeros(64), 0.04, 0.1), [v.float() for v in th], [v.float() for v in sh])
    torch.testing.assert_close(loss.detach(), want, rtol=1e-5, atol=1e-5)
    for a, b in zip(sh, wg):
        torch.testing.assert_close(a.grad.float(), b / 1.7, rtol=2e-2, atol=2e-4)


def test_dino_edge_cases_and_errors():
    t, s = views(1, 1, 5, seed=13), views(2, 1, 5, seed=14)  # B = 1
    torch.testing.assert_close(Fn.dino_loss(t, s), loop_dino(t, s, torch.zeros(5, dtype=torch.float64), 0.04, 0.1))
    # teacher = student and one view each: no term left.
    with pytest.raises(ShapeError, match="two views"):
        Fn.dino_loss(t, t[:1])
    with pytest.raises(ShapeError, match="student_out"):
        Fn.dino_loss(t, [s[0], torch.zeros(1, 4, dtype=torch.float64)])
    with pytest.raises(ShapeError, match="center"):
        Fn.dino_loss(t, s, torch.zeros(4))
    with pytest.raises(InvalidParameterError, match="teacher_temp"):
        Fn.dino_loss(t, s, None, 0.0)
    with pytest.raises(InvalidParameterError, match="list"):
        Fn.dino_loss([], s)
    bad = s[1].clone()
    bad[0, 0] = math.nan
    with pytest.raises(NonFiniteError, match="student_out"):
        Fn.dino_loss(t, [s[0], bad])
    # a stacked (views, B, K) tensor is accepted as the list of its views; K = 1 gives log(1) = 0.
    torch.testing.assert_close(Fn.dino_loss(torch.stack(t), torch.stack(s)), Fn.dino_loss(t, s))
    assert float(Fn.dino_loss(views(2, 3, 1), views(2, 3, 1))) == pytest.approx(0.0, abs=1e-12)
    # very low temperatures stay finite.
    assert torch.isfinite(Fn.dino_loss(views(2, 3, 50, scale=10.0), views(3, 3, 50, scale=10.0), None, 0.001, 0.001))


# ----------------------------------------------------------------------------------------------- DINOLoss vs lightly


@pytest.mark.parametrize("nt,ns", [(2, 8), (2, 2), (1, 3)])
def test_dino_module_matches_lightly_over_several_steps(nt, ns):
    k, b = 96, 6
    ours = L.DINOLoss(k, student_temp=0.1, teacher_temp=0.06, warmup_teacher_temp=0.03, warmup_epochs=4, center_momentum=0.8)
    theirs = lightly_loss().DINOLoss(k, warmup_teacher_temp=0.03, teacher_temp=0.06, warmup_teacher_temp_epochs=4,
                                   student_temp=0.1, center_momentum=0.8)
    for step, epoch in enumerate([0, 1, 2, 3, 7, None]):
        teacher = views(nt, b, k, seed=20 + step, dtype=torch.float32)
        student = views(ns, b, k, seed=40 + step, dtype=torch.float32)
        a, ga = value_and_grads(lambda t, s: ours(t, s, epoch=epoch), teacher, student)
        bl, gb = value_and_grads(lambda t, s: theirs([v.detach() for v in t], s, epoch=epoch), teacher, student)
        torch.testing.assert_close(a, bl, rtol=2e-5, atol=1e-5)
        for x, y in zip(ga, gb):
            torch.testing.assert_close(x, y, rtol=1e-3, atol=1e-6)
        # value_and_grads called each loss once: the centres moved the same way.
        torch.testing.assert_close(ours.center.reshape(-1), theirs.center.reshape(-1), rtol=1e-5, atol=1e-6)


def test_dino_centre_update_and_lightly_defaults():
    k = 32
    ours = L.DINOLoss(k)  # teacher_temp 0.04, student_temp 0.1, momentum 0.9, no warm-up
    theirs = lightly_loss().DINOLoss(k)
    teacher, student = views(2, 5, k, seed=50, dtype=torch.float32), views(4, 5, k, seed=51, dtype=torch.float32)
    assert ours.center.shape == (1, k) and not ours.center.any()
    torch.testing.assert_close(ours(teacher, student), theirs(teacher, student), rtol=1e-5, atol=1e-6)
    want = 0.1 * torch.stack(teacher).mean((0, 1))
    torch.testing.assert_close(ours.center[0], want, rtol=1e-6, atol=1e-7)
    # the loss of a call uses the centre from before the call
    before = ours.center.clone()
    torch.testing.assert_close(ours(teacher, student), Fn.dino_loss(teacher, student, before), rtol=0, atol=0)
    torch.testing.assert_close(ours.center[0], 0.9 * before[0] + 0.1 * torch.stack(teacher).mean((0, 1)))
    # the buffer travels with state_dict and .double()
    assert "center" in ours.state_dict()
    assert ours.double().center.dtype == torch.float64


def test_dino_warmup_schedule():
    m = L.DINOLoss(8, teacher_temp=0.07, warmup_teacher_temp=0.04, warmup_epochs=30)
    want = torch.linspace(0.04, 0.07, 30, dtype=torch.float64)
    for e in range(30):
        assert m.teacher_temperature(e) == pytest.approx(float(want[e]), rel=1e-12)
    assert m.teacher_temperature(30) == m.teacher_temperature(None) == 0.07
    assert L.DINOLoss(8, warmup_teacher_temp=0.02, warmup_epochs=1).teacher_temperature(0) == 0.02
    assert L.DINOLoss(8, teacher_temp=0.05, warmup_epochs=10).teacher_temperature(0) == 0.05  # no warm-up temp given
    t, s = views(2, 3, 8, seed=60), views(3, 3, 8, seed=61)
    m = m.double()
    c = m.center.clone()
    torch.testing.assert_close(m(t, s, epoch=10), Fn.dino_loss(t, s, c, float(want[10]), 0.1))
    c = m.center.clone()
    torch.testing.assert_close(m(t, s, teacher_temp=0.5), Fn.dino_loss(t, s, c, 0.5, 0.1))
    with pytest.raises(InvalidParameterError, match="epoch"):
        m(t, s, epoch=-1)
    for bad in (dict(out_dim=0), dict(out_dim=4, warmup_epochs=-1), dict(out_dim=4, center_momentum=2.0),
                dict(out_dim=4, student_temp=0.0)):
        with pytest.raises(InvalidParameterError):
            L.DINOLoss(**bad)


# ----------------------------------------------------------------------------------------------- torch integration


def test_dino_compiled_training_step_matches_eager():
    torch._dynamo.reset()
    g = torch.Generator().manual_seed(3)
    student = torch.nn.Sequential(torch.nn.Linear(5, 16), torch.nn.Tanh(), torch.nn.Linear(16, 40))
    teacher = torch.nn.Linear(5, 40)
    crops = [torch.randn(6, 5, generator=g) for _ in range(4)]

    def step(loss_fn, *xs):
        with torch.no_grad():
            t = [teacher(x) for x in xs[:2]]
        return loss_fn(t, [student(x) for x in xs])

    eager_fn, comp_fn = L.DINOLoss(40), L.DINOLoss(40)
    eager = step(eager_fn, *crops)
    eager.backward()
    g_eager = [p.grad.clone() for p in student.parameters()]
    student.zero_grad()
    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    out = compiled(comp_fn, *crops)
    out.backward()
    torch.testing.assert_close(out, eager, rtol=1e-5, atol=1e-6)
    for p, ge in zip(student.parameters(), g_eager):
        torch.testing.assert_close(p.grad, ge, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(comp_fn.center, eager_fn.center)


def test_dino_torch_func_vmap_and_double_backward():
    teacher, student = views(2, 3, 10, seed=70), views(3, 3, 10, seed=71)
    s0 = student[0]

    def f(x):
        return Fn.dino_loss(teacher, [x] + student[1:])

    xr = s0.clone().requires_grad_(True)
    (want,) = torch.autograd.grad(f(xr), xr)
    torch.testing.assert_close(torch.func.grad(f)(s0), want)
    out, vjp = torch.func.vjp(f, s0)
    torch.testing.assert_close(vjp(torch.tensor(2.0, dtype=torch.float64))[0], 2 * want)
    with pytest.raises(RuntimeError, match="DINOLoss"):
        torch.vmap(f)(torch.stack([s0, s0]))
    (g,) = torch.autograd.grad(f(xr), xr, create_graph=True)
    with pytest.raises(DoubleBackwardError, match="double backward"):
        g.pow(2).sum().backward()


def test_dino_bf16_autocast_training_step():
    student = torch.nn.Linear(6, 32)
    xs = [torch.randn(4, 6) for _ in range(3)]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        s = [student(x) for x in xs]
        with torch.no_grad():
            t = [student(x) for x in xs[:2]]
        assert s[0].dtype == torch.bfloat16
        loss = L.DINOLoss(32)(t, s)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    assert torch.isfinite(student.weight.grad).all()


# ----------------------------------------------------------------------------------------------- negative cosine


def test_negative_cosine_matches_lightly_and_stops_gradient():
    g = torch.Generator().manual_seed(80)
    p1, p2, z1, z2 = (torch.randn(7, 12, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(4))
    theirs = lightly_loss().NegativeCosineSimilarity()
    got = Fn.negative_cosine_loss(p1, z2)
    want = theirs(p1, z2.detach())
    torch.testing.assert_close(got, want)
    gp, gz = torch.autograd.grad(got, (p1, z2), allow_unused=True)
    (wp,) = torch.autograd.grad(want, p1)
    torch.testing.assert_close(gp, wp)
    assert gz is None  # stop-gradient on the target
    sym = L.NegativeCosineLoss()(p1, p2, z1, z2)
    torch.testing.assert_close(sym, 0.5 * theirs(p1, z2.detach()) + 0.5 * theirs(p2, z1.detach()))
    torch.testing.assert_close(sym, R.symmetric_negative_cosine_loss(p1, p2, z1, z2))
    # without stop-gradient both sides get gradients, as lightly's
    both = Fn.negative_cosine_loss(p1, z2, stop_gradient=False)
    torch.testing.assert_close(torch.autograd.grad(both, z2)[0], torch.autograd.grad(theirs(p1, z2), z2)[0])
    assert torch.autograd.gradcheck(lambda a: Fn.negative_cosine_loss(a, z1.detach()), (p1,))
    # loop reference
    a, b = p1.detach(), z2.detach()
    loop = -sum(float(a[i] @ b[i] / (a[i].norm() * b[i].norm())) for i in range(7)) / 7
    assert float(got.detach()) == pytest.approx(loop, rel=1e-12)


def test_negative_cosine_half_precision_and_errors():
    p = torch.randn(5, 8).to(torch.bfloat16).requires_grad_(True)
    z = torch.randn(5, 8).to(torch.bfloat16)
    loss = Fn.negative_cosine_loss(p, z)
    assert loss.dtype == torch.float32
    loss.backward()
    assert p.grad.dtype == torch.bfloat16
    torch.testing.assert_close(loss, R.negative_cosine_loss(p.float(), z.float()))
    with pytest.raises(ShapeError):
        Fn.negative_cosine_loss(p, z[:4])
    with pytest.raises(InvalidParameterError, match="NegativeCosineLoss"):
        L.NegativeCosineLoss()(p, z, p)
    # a zero vector gives cos 0 (eps), not NaN
    assert float(Fn.negative_cosine_loss(torch.zeros(2, 3), torch.ones(2, 3))) == 0.0


def test_negative_cosine_compile_and_func():
    torch._dynamo.reset()
    g = torch.Generator().manual_seed(81)
    x1, x2 = torch.randn(8, 4, generator=g), torch.randn(8, 4, generator=g)
    model, pred = torch.nn.Linear(4, 6), torch.nn.Linear(6, 6)
    loss_fn = L.NegativeCosineLoss()

    def step(a, b):
        z1, z2 = model(a), model(b)
        return loss_fn(pred(z1), pred(z2), z1, z2)

    eager = step(x1, x2)
    got = torch.compile(step, fullgraph=True, backend="aot_eager")(x1, x2)
    torch.testing.assert_close(got, eager)
    z = torch.randn(8, 6, dtype=torch.float64)
    p = torch.randn(8, 6, dtype=torch.float64)
    pr = p.clone().requires_grad_(True)
    torch.testing.assert_close(torch.func.grad(lambda t: Fn.negative_cosine_loss(t, z))(p),
                               torch.autograd.grad(Fn.negative_cosine_loss(pr, z), pr)[0])


# ----------------------------------------------------------------------------------------------- ema_update


def test_ema_update_modules_match_lightly():
    update_momentum = pytest.importorskip("lightly.models.utils").update_momentum

    torch.manual_seed(0)
    online = torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.BatchNorm1d(5), torch.nn.Linear(5, 3))
    ours, theirs = (torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.BatchNorm1d(5), torch.nn.Linear(5, 3)) for _ in range(2))
    theirs.load_state_dict(ours.state_dict())
    for _ in range(3):
        reprkit.ema_update(ours, online, 0.99)
        update_momentum(online, theirs, 0.99)
    for a, b in zip(ours.parameters(), theirs.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
        assert not a.requires_grad or a.grad is None
    # parameters only by default: buffers untouched; with buffers=True floats averaged, counters copied
    online(torch.randn(6, 4))  # moves the BatchNorm statistics
    reprkit.ema_update(ours, online, 0.5)
    assert not ours[1].running_mean.any()
    reprkit.ema_update(ours, online, 0.5, buffers=True)
    torch.testing.assert_close(ours[1].running_mean, 0.5 * online[1].running_mean)
    assert int(ours[1].num_batches_tracked) == int(online[1].num_batches_tracked) == 1


def test_ema_update_lists_dtypes_extremes_and_errors():
    t = [torch.zeros(3), torch.ones(2, 2, dtype=torch.float64)]
    o = [torch.full((3,), 2.0), torch.full((2, 2), 3.0)]  # the second pair differs in dtype
    reprkit.ema_update(t, o, 0.75)
    torch.testing.assert_close(t[0], torch.full((3,), 0.5))
    torch.testing.assert_close(t[1], torch.full((2, 2), 1.5, dtype=torch.float64))
    x, y = torch.randn(10), torch.randn(10)
    keep = x.clone()
    reprkit.ema_update(x, y, 1.0)
    assert torch.equal(x, keep)
    reprkit.ema_update(x, y, 0.0)
    assert torch.equal(x, y)
    p = torch.nn.Parameter(torch.zeros(3))
    reprkit.ema_update([p], [torch.ones(3)], 0.9)  # a leaf that requires grad: updated in place, no autograd error
    assert p.requires_grad and p.grad_fn is None
    torch.testing.assert_close(p.detach(), torch.full((3,), 0.1))
    with pytest.raises(ShapeError):
        reprkit.ema_update([torch.zeros(3)], [torch.zeros(4)], 0.9)
    with pytest.raises(ShapeError):
        reprkit.ema_update(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2, bias=False), 0.9)
    for bad in (-0.1, 1.5, True, "0.9"):
        with pytest.raises(InvalidParameterError, match="momentum"):
            reprkit.ema_update(x, y, bad)
    with pytest.raises(InvalidParameterError):
        reprkit.ema_update(3, y, 0.9)
