"""Losses: Rust path (CPU autograd Functions) vs the pure-torch reference,
finite differences (gradcheck), PML where definitions coincide, edge cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import reprkit
from reprkit import functional as Fn
from reprkit import losses as L
from reprkit.errors import DTypeError, InvalidParameterError, NonFiniteError, ShapeError
from reprkit import reference as R

LAYOUTS = ("random", "singletons", "one_class", "pairs")


def make_labels(n: int, layout: str, k: int, gen: torch.Generator) -> torch.Tensor:
    if layout == "singletons":
        return torch.randperm(n, generator=gen)
    if layout == "one_class":
        return torch.full((n,), 3, dtype=torch.long)
    if layout == "pairs":
        return torch.arange(n) // 2
    return torch.randint(0, k, (n,), generator=gen)


@st.composite
def batches(draw, max_n: int = 64):
    n = draw(st.integers(2, max_n))
    d = draw(st.integers(1, 8))
    layout = draw(st.sampled_from(LAYOUTS))
    k = draw(st.integers(1, 6))
    seed = draw(st.integers(0, 2**31 - 1))
    dtype = draw(st.sampled_from([torch.float32, torch.float64]))
    scale = draw(st.sampled_from([0.3, 1.0, 3.0]))
    gen = torch.Generator().manual_seed(seed)
    # Continuous random embeddings: mining ties have probability 0 (duplicates are tested separately).
    x = (torch.randn(n, d, generator=gen, dtype=torch.float64) * scale).to(dtype)
    y = make_labels(n, layout, k, gen)
    return x, y, gen


def tol(dtype: torch.dtype) -> dict:
    return dict(rtol=2e-3, atol=2e-4) if dtype == torch.float32 else dict(rtol=1e-7, atol=1e-9)


def value_and_grads(fn, *inputs):
    ins = [t.detach().clone().requires_grad_(True) for t in inputs]
    out = fn(*ins)
    grads = torch.autograd.grad(out, ins, allow_unused=True)
    return out.detach(), [torch.zeros_like(t) if g is None else g for t, g in zip(ins, grads)]


def assert_matches(fast, ref, inputs, dtype):
    v1, g1 = value_and_grads(fast, *inputs)
    v2, g2 = value_and_grads(ref, *[t.double() for t in inputs])
    assert torch.isfinite(v1) and all(torch.isfinite(g).all() for g in g1)
    torch.testing.assert_close(v1.double(), v2, **tol(dtype))
    scale = max(1.0, max(float(g.abs().max()) for g in g2))
    for a, b in zip(g1, g2):
        assert a.dtype == dtype
        torch.testing.assert_close(a.double() / scale, b / scale, **tol(dtype))


# ----------------------------------------------------------------- values and gradients vs reference


@given(batches(), st.floats(0.1, 2.0))
def test_contrastive_matches_reference(b, margin):
    x, y, _ = b
    assert_matches(lambda t: Fn.contrastive_loss(t, y, margin), lambda t: R.contrastive_loss(t, y, margin), [x], x.dtype)


@given(batches(max_n=40), st.sampled_from(["all", "batch_all", "batch_hard", "semi_hard"]), st.booleans(), st.booleans(), st.floats(0.05, 1.0))
def test_triplet_matches_reference(b, mining, squared, soft, margin):
    x, y, _ = b
    # The reference works in float64 here; mining on float32 data must see the same order, so compare on float64 data.
    x = x.double() if mining in ("batch_hard", "semi_hard") else x
    assert_matches(
        lambda t: Fn.triplet_margin_loss(t, y, margin, mining, squared, soft),
        lambda t: R.triplet_margin_loss(t, y, margin, mining, squared, soft),
        [x],
        x.dtype,
    )


@given(batches(max_n=40), st.sampled_from(["all", "batch_all", "batch_hard", "semi_hard"]), st.integers(1, 30))
def test_triplet_with_references_matches_reference(b, mining, m):
    x, y, gen = b
    x = x.double()
    r = torch.randn(m, x.shape[1], generator=gen, dtype=torch.float64)
    ry = torch.randint(0, 4, (m,), generator=gen)
    assert_matches(
        lambda t, u: Fn.triplet_margin_loss(t, y, 0.3, mining, False, ref_embeddings=u, ref_labels=ry),
        lambda t, u: R.triplet_margin_loss(t, y, 0.3, mining, False, False, u, ry),
        [x, r],
        x.dtype,
    )


@given(batches(), st.integers(1, 30))
def test_contrastive_with_references_matches_reference(b, m):
    x, y, gen = b
    r = torch.randn(m, x.shape[1], generator=gen, dtype=torch.float64).to(x.dtype)
    ry = torch.randint(0, 4, (m,), generator=gen)
    assert_matches(
        lambda t, u: Fn.contrastive_loss(t, y, 1.0, ref_embeddings=u, ref_labels=ry),
        lambda t, u: R.contrastive_loss(t, y, 1.0, u, ry),
        [x, r],
        x.dtype,
    )


@given(batches(), st.booleans(), st.floats(0.0, 2.0))
def test_lifted_matches_reference(b, hard, margin):
    x, y, _ = b
    x = x.double() if hard else x  # the hard max picks one negative: compare on float64 data
    assert_matches(
        lambda t: Fn.lifted_structure_loss(t, y, margin, hard), lambda t: R.lifted_structure_loss(t, y, margin, hard), [x], x.dtype
    )


@given(batches(), st.sampled_from([0.0, 0.02]))
def test_npair_matches_reference(b, l2):
    x, _, gen = b
    p = torch.randn(x.shape, generator=gen, dtype=torch.float64).to(x.dtype)
    assert_matches(lambda a, q: Fn.npair_loss(a, q, l2), lambda a, q: R.npair_loss(a, q, l2), [x, p], x.dtype)


@given(batches(), st.sampled_from([0.05, 0.1, 0.5, 1.0]))
def test_ntxent_matches_reference(b, tau):
    x, _, gen = b
    # In 1-D every unit vector is ±1: the true gradient is 0 and float32 only sees rounding residue.
    assume(x.shape[1] >= 2)
    z2 = x + 0.3 * torch.randn(x.shape, generator=gen, dtype=torch.float64).to(x.dtype)
    assert_matches(lambda a, c: Fn.ntxent_loss(a, c, tau), lambda a, c: R.ntxent_loss(a, c, tau), [x, z2], x.dtype)


@given(batches(), st.sampled_from([0.05, 0.1, 1.0]), st.integers(0, 20))
def test_infonce_matches_reference(b, tau, k):
    x, _, gen = b
    assume(x.shape[1] >= 2)  # see test_ntxent_matches_reference
    pk = x + 0.3 * torch.randn(x.shape, generator=gen, dtype=torch.float64).to(x.dtype)
    inputs = [x, pk]
    if k:
        inputs.append(torch.randn(k, x.shape[1], generator=gen, dtype=torch.float64).to(x.dtype))
        fast = lambda q, p, nk: Fn.infonce_loss(q, p, nk, tau)  # noqa: E731
        ref = lambda q, p, nk: R.infonce_loss(q, p, nk, tau)  # noqa: E731
    else:
        fast = lambda q, p: Fn.infonce_loss(q, p, None, tau)  # noqa: E731
        ref = lambda q, p: R.infonce_loss(q, p, None, tau)  # noqa: E731
    assert_matches(fast, ref, inputs, x.dtype)


# ----------------------------------------------------------------- gradcheck (Rust backward vs finite differences)


def _gc_data(n=10, d=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 0, 1, 1, 1, 2, 2, 0, 3, 1][:n])
    return x, y, g


@pytest.mark.parametrize("mining", ["all", "batch_all", "batch_hard", "semi_hard"])
@pytest.mark.parametrize("squared,soft", [(True, False), (False, False), (False, True)])
def test_gradcheck_triplet(mining, squared, soft):
    x, y, g = _gc_data()
    assert torch.autograd.gradcheck(lambda t: Fn.triplet_margin_loss(t, y, 0.5, mining, squared, soft), (x,))
    r = torch.randn(7, 3, generator=g, dtype=torch.float64, requires_grad=True)
    ry = torch.tensor([0, 1, 2, 3, 0, 1, 2])
    f = lambda t, u: Fn.triplet_margin_loss(t, y, 0.5, mining, squared, soft, ref_embeddings=u, ref_labels=ry)  # noqa: E731
    assert torch.autograd.gradcheck(f, (x, r))


def test_gradcheck_contrastive_lifted_npair_ntxent_infonce():
    x, y, g = _gc_data()
    r = torch.randn(6, 3, generator=g, dtype=torch.float64, requires_grad=True)
    ry = torch.tensor([0, 1, 2, 3, 0, 1])
    p = torch.randn(10, 3, generator=g, dtype=torch.float64, requires_grad=True)
    q = torch.randn(5, 3, generator=g, dtype=torch.float64, requires_grad=True)
    gc = torch.autograd.gradcheck
    assert gc(lambda t: Fn.contrastive_loss(t, y, 2.0), (x,))
    assert gc(lambda t, u: Fn.contrastive_loss(t, y, 2.0, ref_embeddings=u, ref_labels=ry), (x, r))
    assert gc(lambda t: Fn.lifted_structure_loss(t, y, 1.0), (x,))
    assert gc(lambda t: Fn.lifted_structure_loss(t, y, 1.0, hard=True), (x,))
    assert gc(lambda a, b: Fn.npair_loss(a, b, 0.1), (x, p))
    assert gc(lambda a, b: Fn.ntxent_loss(a, b, 0.2), (x, p))
    assert gc(lambda a, b: Fn.infonce_loss(a, b, None, 0.2), (x, p))
    assert gc(lambda a, b, c: Fn.infonce_loss(a, b, c, 0.2), (x, p, q))


# ----------------------------------------------------------------- peers


def test_pml_triplet_batch_all_and_ntxent_agree():
    pml = pytest.importorskip("pytorch_metric_learning")
    from pytorch_metric_learning import distances, losses

    g = torch.Generator().manual_seed(1)
    x = torch.randn(48, 6, generator=g, dtype=torch.float64)
    y = torch.randint(0, 5, (48,), generator=g)
    # PML's triplet loss averages over the triplets with a positive loss: our "batch_all" on D.
    ref = losses.TripletMarginLoss(margin=0.3, distance=distances.LpDistance(normalize_embeddings=False))(x, y)
    ours = Fn.triplet_margin_loss(x, y, 0.3, "batch_all", squared=False)
    torch.testing.assert_close(ours, ref.to(ours.dtype), rtol=1e-9, atol=1e-12)
    # NT-Xent: labels pair view i with view i+N; PML's cosine similarity normalises like SimCLR.
    z1, z2 = x[:24], x[24:] + 0.1
    ref = losses.NTXentLoss(temperature=0.2)(torch.cat([z1, z2]), torch.cat([torch.arange(24), torch.arange(24)]))
    torch.testing.assert_close(Fn.ntxent_loss(z1, z2, 0.2), ref.to(torch.float64), rtol=1e-9, atol=1e-12)
    assert pml.__version__


# ----------------------------------------------------------------- numerics and edge cases


@pytest.mark.parametrize(
    "loss",
    [
        lambda x, y: Fn.triplet_margin_loss(x, y, 0.2, "all"),
        lambda x, y: Fn.triplet_margin_loss(x, y, 0.2, "batch_all"),
        lambda x, y: Fn.triplet_margin_loss(x, y, 0.2, "batch_hard", squared=False),
        lambda x, y: Fn.triplet_margin_loss(x, y, 0.2, "semi_hard", squared=False, soft=True),
        lambda x, y: Fn.lifted_structure_loss(x, y),
        lambda x, y: Fn.lifted_structure_loss(x, y, hard=True),
    ],
)
@pytest.mark.parametrize("layout", ["one_class", "singletons"])
def test_no_valid_pair_or_triplet_gives_attached_zero(loss, layout):
    x = torch.randn(6, 3, requires_grad=True)
    y = torch.zeros(6, dtype=torch.long) if layout == "one_class" else torch.arange(6)
    out = loss(x, y)
    assert out.item() == 0.0 and out.requires_grad
    (gx,) = torch.autograd.grad(out, x)
    assert torch.equal(gx, torch.zeros_like(x))


def test_single_row_and_single_class_contrastive():
    x = torch.randn(1, 3, requires_grad=True)
    out = Fn.contrastive_loss(x, torch.tensor([0]))
    assert out.item() == 0.0
    out.backward()
    assert torch.equal(x.grad, torch.zeros_like(x))


def test_low_temperature_and_large_distances_stay_finite():
    g = torch.Generator().manual_seed(3)
    x = (torch.randn(32, 8, generator=g) * 60).requires_grad_(True)  # pairwise distances ~100+
    y = torch.randint(0, 4, (32,), generator=g)
    z2 = (x.detach() + torch.randn(32, 8, generator=g)).requires_grad_(True)
    outs = [
        Fn.ntxent_loss(x, z2, 0.01),
        Fn.infonce_loss(x, z2, None, 0.01),
        Fn.infonce_loss(x, z2, torch.randn(50, 8, generator=g), 0.01),
        Fn.lifted_structure_loss(x, y),
        Fn.lifted_structure_loss(x, y, 1.0, True),
        Fn.npair_loss(x, z2),
        Fn.contrastive_loss(x, y, 200.0),
        Fn.triplet_margin_loss(x, y, 50.0, "all", soft=True),
    ]
    for out in outs:
        gx, gz = torch.autograd.grad(out, [x, z2], allow_unused=True)
        assert torch.isfinite(out)
        assert torch.isfinite(gx).all() and (gz is None or torch.isfinite(gz).all())
    # The same in the reference (the CUDA path) and both agree.
    torch.testing.assert_close(outs[0], R.ntxent_loss(x, z2, 0.01), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(outs[3], R.lifted_structure_loss(x, y), rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("squared", [False, True])
def test_duplicate_embeddings_give_finite_gradients(squared):
    base = torch.randn(4, 3, dtype=torch.float64)
    x = torch.cat([base, base, base[:2]]).requires_grad_(True)  # exact duplicates, zero distances
    y = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3, 1, 0])
    for out in [
        Fn.contrastive_loss(x, y, 1.0),
        Fn.triplet_margin_loss(x, y, 0.2, "all", squared),
        Fn.triplet_margin_loss(x, y, 0.2, "batch_hard", squared),
        Fn.triplet_margin_loss(x, y, 0.2, "semi_hard", squared),
        Fn.lifted_structure_loss(x, y),
        Fn.ntxent_loss(x, x),
    ]:
        (gx,) = torch.autograd.grad(out, x)
        assert torch.isfinite(out) and torch.isfinite(gx).all()
    # Duplicates: reference and Rust agree on the non-mining losses.
    for f, r in [
        (lambda t: Fn.contrastive_loss(t, y, 1.0), lambda t: R.contrastive_loss(t, y, 1.0)),
        (lambda t: Fn.lifted_structure_loss(t, y), lambda t: R.lifted_structure_loss(t, y)),
        (lambda t: Fn.triplet_margin_loss(t, y, 0.2, "all", squared), lambda t: R.triplet_margin_loss(t, y, 0.2, "all", squared)),
    ]:
        assert_matches(f, r, [x.detach()], torch.float64)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_computes_in_float32(dtype):
    g = torch.Generator().manual_seed(0)
    x32 = torch.randn(20, 4, generator=g)
    y = torch.randint(0, 3, (20,), generator=g)
    x = x32.to(dtype).requires_grad_(True)
    for f in [
        lambda t: Fn.triplet_margin_loss(t, y, 0.2, "batch_hard"),
        lambda t: Fn.lifted_structure_loss(t, y),
        lambda t: Fn.ntxent_loss(t[:10], t[10:]),
        lambda t: Fn.contrastive_loss(t, y),
    ]:
        out = f(x)
        assert out.dtype == torch.float32
        (gx,) = torch.autograd.grad(out, x)
        assert gx.dtype == dtype and torch.isfinite(gx.float()).all()
        want = f(x.detach().float())  # same computation on the upcast values
        torch.testing.assert_close(out.detach(), want, rtol=1e-6, atol=1e-6)


def test_thread_count_does_not_change_results():
    g = torch.Generator().manual_seed(5)
    x = torch.randn(300, 16, generator=g, requires_grad=True)
    y = torch.randint(0, 10, (300,), generator=g)
    for f in [
        lambda t, j: Fn.triplet_margin_loss(t, y, 0.2, "all", n_jobs=j),
        lambda t, j: Fn.lifted_structure_loss(t, y, n_jobs=j),
        lambda t, j: Fn.ntxent_loss(t[:150], t[150:], n_jobs=j),
        lambda t, j: Fn.contrastive_loss(t[:100], y[:100], ref_embeddings=t[100:], ref_labels=y[100:], n_jobs=j),
    ]:
        a, (ga,) = f(x, 1), torch.autograd.grad(f(x, 1), x)
        b, (gb,) = f(x, 3), torch.autograd.grad(f(x, 3), x)
        assert torch.equal(a, b) and torch.equal(ga, gb)


def test_softmax_losses_thread_count_bit_identical_across_tiles():
    # Sizes spanning several 256-row blocks / chunks and parallel tasks of the
    # symmetric NT-Xent kernel and the q != k kernel.
    g = torch.Generator().manual_seed(6)
    x = torch.randn(1400, 16, generator=g, requires_grad=True)
    queue = torch.randn(300, 16, generator=g)
    for f in [
        lambda t, j: Fn.ntxent_loss(t[:700], t[700:], 0.05, n_jobs=j),
        lambda t, j: Fn.npair_loss(t[:600], t[600:1200], n_jobs=j),
        lambda t, j: Fn.infonce_loss(t[:700], t[700:], None, 0.1, n_jobs=j),
        lambda t, j: Fn.infonce_loss(t[:700], t[700:], queue, 0.1, n_jobs=j),
    ]:
        a, (ga,) = f(x, 1), torch.autograd.grad(f(x, 1), x)
        b, (gb,) = f(x, 2), torch.autograd.grad(f(x, 2), x)
        assert torch.equal(a, b) and torch.equal(ga, gb)


def test_ntxent_large_batch_matches_reference():
    # Several blocks of the symmetric kernel (n = 2·300 views) against the torch reference.
    from reprkit.reference import losses as ref

    g = torch.Generator().manual_seed(8)
    z1 = torch.randn(300, 8, generator=g, dtype=torch.float64, requires_grad=True)
    z2 = torch.randn(300, 8, generator=g, dtype=torch.float64, requires_grad=True)
    for tau in (0.5, 0.1, 0.01):
        got = Fn.ntxent_loss(z1, z2, tau)
        want = ref.ntxent_loss(z1, z2, tau)
        g_got = torch.autograd.grad(got, (z1, z2))
        g_want = torch.autograd.grad(want, (z1, z2))
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
        for a, b in zip(g_got, g_want):
            torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_ntxent_single_pair_is_exactly_zero(dtype):
    # Two views only: each one's softmax holds just its partner, so L = 0 and ∂L = 0 (never below 0).
    z1 = torch.tensor([[0.3, -1.2, 2.0]], dtype=dtype, requires_grad=True)
    z2 = torch.tensor([[1.5, 0.7, -0.4]], dtype=dtype, requires_grad=True)
    loss = Fn.ntxent_loss(z1, z2, 0.1)
    assert float(loss.detach()) == 0.0
    for g in torch.autograd.grad(loss, (z1, z2)):
        torch.testing.assert_close(g, torch.zeros_like(g), rtol=0, atol=1e-6)


def test_bad_input_raises_reprkit_errors():
    x = torch.randn(5, 3)
    y = torch.tensor([0, 1, 0, 1, 2])
    bad = x.clone()
    bad[2, 1] = float("nan")
    with pytest.raises(NonFiniteError):
        Fn.contrastive_loss(bad, y)
    with pytest.raises(NonFiniteError):
        L.NTXentLoss()(x, bad)
    with pytest.raises(ShapeError, match="labels"):
        Fn.triplet_margin_loss(x, y[:4])
    with pytest.raises(DTypeError, match="integer"):
        Fn.lifted_structure_loss(x, y.float())
    with pytest.raises(DTypeError):
        Fn.contrastive_loss(x, np.array([0.5, 1, 0, 1, 2]))
    with pytest.raises(ShapeError, match="same shape"):
        Fn.ntxent_loss(x, x[:4])
    with pytest.raises(ShapeError):
        Fn.npair_loss(x, x[:, :2])
    with pytest.raises(InvalidParameterError):
        Fn.triplet_margin_loss(x, y, mining="hardest")
    with pytest.raises(InvalidParameterError):
        Fn.ntxent_loss(x, x, temperature=0.0)
    with pytest.raises(InvalidParameterError):
        Fn.contrastive_loss(x, y, ref_embeddings=x)
    with pytest.raises(ShapeError):
        Fn.triplet_margin_loss(x, y, ref_embeddings=torch.randn(4, 2), ref_labels=torch.arange(4))
    with pytest.raises(ShapeError):
        Fn.contrastive_loss(x[0], y)
    with pytest.raises(DTypeError):
        Fn.contrastive_loss(x.long(), y)
    # Every one of them is also the builtin a caller expects.
    assert issubclass(NonFiniteError, ValueError) and issubclass(DTypeError, TypeError)


# ----------------------------------------------------------------- modules, memory bank


def test_modules_follow_the_issue_signatures_and_match_functions():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(16, 4, generator=g)
    y = torch.randint(0, 3, (16,), generator=g)
    assert L.ContrastiveLoss().margin == 1.0
    t = L.TripletMarginLoss()
    assert (t.margin, t.mining, t.squared, t.soft) == (0.2, "all", True, False)
    assert (L.LiftedStructureLoss().margin, L.LiftedStructureLoss().hard) == (1.0, False)
    assert L.NPairLoss().l2_reg == 0.0 and L.NTXentLoss().temperature == 0.1 and L.InfoNCELoss().temperature == 0.1
    assert torch.equal(L.ContrastiveLoss(0.7)(x, y), Fn.contrastive_loss(x, y, 0.7))
    assert torch.equal(L.TripletMarginLoss(0.1, "semi_hard", False, True)(x, y), Fn.triplet_margin_loss(x, y, 0.1, "semi_hard", False, True))
    assert torch.equal(L.LiftedStructureLoss(0.5, True)(x, y), Fn.lifted_structure_loss(x, y, 0.5, True))
    assert torch.equal(L.NPairLoss(0.1)(x[:8], x[8:]), Fn.npair_loss(x[:8], x[8:], 0.1))
    assert torch.equal(L.NTXentLoss(0.3)(x[:8], x[8:]), Fn.ntxent_loss(x[:8], x[8:], 0.3))
    assert torch.equal(L.InfoNCELoss(0.3)(x[:4], x[4:8], x[8:]), Fn.infonce_loss(x[:4], x[4:8], x[8:], 0.3))
    assert "mining='all'" in repr(t)
    with pytest.raises(InvalidParameterError):
        L.TripletMarginLoss(mining="nope")


def test_memory_bank_fifo_and_cross_batch_losses():
    bank = reprkit.MemoryBank(10, 3)
    assert len(bank) == 0
    xs = [torch.randn(4, 3, dtype=torch.float32, requires_grad=True) for _ in range(4)]
    ys = [torch.tensor([0, 1, 2, 0]) + i for i in range(4)]
    for x, y in zip(xs, ys):
        bank.add(x, y)
    want_x = torch.cat([t.detach() for t in xs])[-10:]
    want_y = torch.cat(ys)[-10:]
    assert len(bank) == 10 and torch.equal(bank.embeddings, want_x) and torch.equal(bank.labels, want_y)
    assert not bank.embeddings.requires_grad
    bank.add(torch.randn(25, 3), torch.arange(25))  # larger than the bank: newest rows only
    assert torch.equal(bank.labels, torch.arange(15, 25))
    # Cross-batch losses with the bank as references, against the reference implementation.
    x = torch.randn(6, 3, dtype=torch.float64)
    y = torch.tensor([15, 16, 17, 3, 3, 20])
    r, ry = bank.get()
    assert_matches(
        lambda t: Fn.triplet_margin_loss(t, y, 0.2, "batch_hard", ref_embeddings=r.double(), ref_labels=ry),
        lambda t: R.triplet_margin_loss(t, y, 0.2, "batch_hard", True, False, r.double(), ry),
        [x],
        torch.float64,
    )
    q = reprkit.MemoryBank(8, 3)
    q.add(torch.randn(5, 3))
    assert q.labels is None and q.embeddings.shape == (5, 3)
    out = L.InfoNCELoss()(torch.randn(4, 3), torch.randn(4, 3), q.embeddings)
    assert torch.isfinite(out)
    with pytest.raises(ShapeError):
        q.add(torch.randn(2, 4))
    with pytest.raises(InvalidParameterError):
        reprkit.MemoryBank(0, 3)


def test_import_of_reprkit_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys, reprkit; assert 'torch' not in sys.modules; reprkit.MemoryBank; assert 'torch' in sys.modules"
    env = {"PYTHONPATH": str(__import__('pathlib').Path(reprkit.__file__).parent.parent)}
    subprocess.run([sys.executable, "-c", code], check=True, env=env)


@settings(max_examples=10)
@given(batches(max_n=20))
def test_gradient_reaches_cuda_style_reference_path_equally(b):
    """The dispatch rule: the reference (device path) and the Rust path agree for every loss on CPU."""
    x, y, _ = b
    x = x.double()
    for f, r in [
        (lambda t: Fn.lifted_structure_loss(t, y, 0.5), lambda t: R.lifted_structure_loss(t, y, 0.5)),
        (lambda t: Fn.ntxent_loss(t, t.flip(0), 0.3), lambda t: R.ntxent_loss(t, t.flip(0), 0.3)),
    ]:
        assert_matches(f, r, [x], torch.float64)


def _held_bytes(out) -> int:
    """Bytes a reprkit autograd node (a ``_Name`` Function) keeps for backward: its saved tensors."""
    total, seen, stack = 0, set(), [out.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        name = type(node).__name__
        if name.startswith("_") and name.endswith("Backward"):
            total += sum(t.numel() * t.element_size() for t in node.saved_tensors if t is not None)
        stack.extend(n for n, _ in node.next_functions)
    return total


def test_state_kept_for_backward_is_linear_in_the_batch():
    b, d = 600, 8
    g = torch.Generator().manual_seed(9)
    x = torch.randn(b, d, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, 20, (b,), generator=g)
    budget = 8 * (4 * b * d + 8 * b)  # a few copies of the rows plus per-row values, far below B² = 360000 values
    for out in [
        Fn.contrastive_loss(x, y),
        Fn.triplet_margin_loss(x, y, 0.2, "all"),
        Fn.triplet_margin_loss(x, y, 0.2, "batch_hard"),
        Fn.lifted_structure_loss(x, y),
        Fn.ntxent_loss(x[:300], x[300:]),
        Fn.npair_loss(x[:300], x[300:]),
    ]:
        assert 0 < _held_bytes(out) <= budget
