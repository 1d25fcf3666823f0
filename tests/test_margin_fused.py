"""The fused margin-softmax path (loss and both gradients in one Rust call, 3 GEMMs) against the
recomputing forward + backward ops and the torch reference: several batch strips (128 rows), tiles
and tile groups; one gradient alone; upstream values other than 1 and retain_graph; inference
keeps the forward-only kernel; thread-count invariance."""

from __future__ import annotations

import pytest
import torch

from reprkit import _core
from reprkit.losses import margin as M
from reprkit.reference import margin as R

KINDS = [("normalized", 1, False), ("cosface", 1, False), ("arcface", 1, False), ("arcface", 1, True), ("arcface", 3, False), ("linear", 1, False)]


def data(n, d, classes, k=1, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, d, generator=g, dtype=dtype)
    w = torch.randn(classes * k, d, generator=g, dtype=dtype)
    y = torch.randint(0, classes, (n,), generator=g)
    return z, w, y


def margins(classes):
    return torch.linspace(0.1, 0.6, classes, dtype=torch.float64)


@pytest.mark.parametrize("kind,k,easy", KINDS)
def test_fused_equals_the_recomputing_forward_and_backward_ops(kind, k, easy):
    # 300 rows = 3 strips; 2100 classes·K = 5 or 13 tiles of 512 W rows.
    classes = 2100 // k
    z, w, y = data(300, 7, classes, k, seed=1)
    m, s = margins(classes), (1.0 if kind == "linear" else 16.0)
    loss, lse = M._margin_fwd(z, w, y, m, s, kind, easy, k, 0)
    gz, gw = M._margin_bwd(torch.tensor(1.0, dtype=z.dtype), z, w, y, m, lse, s, kind, easy, k, 0)
    fl, fz, fw = M._margin_fused(z, w, y, m, s, kind, easy, k, True, True, 0)
    torch.testing.assert_close(fl, loss, rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(fz, gz, rtol=1e-10, atol=1e-14)
    torch.testing.assert_close(fw, gw, rtol=1e-10, atol=1e-14)
    # Each gradient alone: the same bits as with both.
    _, oz, ow = M._margin_fused(z, w, y, m, s, kind, easy, k, True, False, 0)
    assert torch.equal(oz, fz) and ow.shape == (0, 7)
    _, oz, ow = M._margin_fused(z, w, y, m, s, kind, easy, k, False, True, 0)
    assert torch.equal(ow, fw) and oz.shape == (0, 7)


def test_float32_fused_matches_the_float64_reference():
    z, w, y = data(260, 16, 1500, seed=2, dtype=torch.float32)
    zr, wr = z.double().requires_grad_(True), w.double().requires_grad_(True)
    R.arcface_loss(zr, y, wr, 0.5, 30.0).backward()
    zf, wf = z.clone().requires_grad_(True), w.clone().requires_grad_(True)
    loss = M.arcface_loss(zf, y, wf, 0.5, 30.0)
    loss.backward()
    torch.testing.assert_close(zf.grad.double(), zr.grad, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(wf.grad.double(), wr.grad, rtol=1e-4, atol=1e-7)


def test_one_side_requiring_grad_upstream_scale_and_retain_graph():
    z, w, y = data(150, 5, 700, seed=3)
    zb, wb = z.clone().requires_grad_(True), w.clone().requires_grad_(True)
    M.cosface_loss(zb, y, wb, 0.3, 10.0).backward()
    # Only z / only W: the other gets no gradient, this one the same as with both.
    za = z.clone().requires_grad_(True)
    M.cosface_loss(za, y, w, 0.3, 10.0).backward()
    assert torch.equal(za.grad, zb.grad)
    wa = w.clone().requires_grad_(True)
    M.cosface_loss(z, y, wa, 0.3, 10.0).backward()
    assert torch.equal(wa.grad, wb.grad)
    # An upstream value ≠ 1, and two backward passes through a retained graph (the saved
    # gradients must not be scaled in place).
    z2, w2 = z.clone().requires_grad_(True), w.clone().requires_grad_(True)
    loss = M.cosface_loss(z2, y, w2, 0.3, 10.0)
    (2.5 * loss).backward(retain_graph=True)
    loss.backward(retain_graph=True)
    # (The second pass recomputes them with the same fused call.)
    torch.testing.assert_close(z2.grad, 3.5 * zb.grad, rtol=1e-10, atol=1e-15)
    torch.testing.assert_close(w2.grad, 3.5 * wb.grad, rtol=1e-10, atol=1e-15)
    # A third pass, with the upstream 1 (no in-place scaling of anything shared).
    loss.backward()
    torch.testing.assert_close(w2.grad, 4.5 * wb.grad, rtol=1e-10, atol=1e-15)
    # The reference agrees.
    zr, wr = z.clone().requires_grad_(True), w.clone().requires_grad_(True)
    R.cosface_loss(zr, y, wr, 0.3, 10.0).backward()
    torch.testing.assert_close(zb.grad, zr.grad, rtol=1e-10, atol=1e-14)
    torch.testing.assert_close(wb.grad, wr.grad, rtol=1e-10, atol=1e-14)


def test_inference_runs_the_forward_only_kernel_and_training_the_fused_one(monkeypatch):
    z, w, y = data(20, 4, 30, seed=4)
    calls = []
    fwd, fused = _core.margin_loss, _core.margin_loss_fused
    monkeypatch.setattr(_core, "margin_loss", lambda *a: calls.append("forward") or fwd(*a))
    monkeypatch.setattr(_core, "margin_loss_fused", lambda *a: calls.append("fused") or fused(*a))
    wp = w.clone().requires_grad_(True)
    with torch.no_grad():
        v0 = M.arcface_loss(z, y, wp, 0.5, 8.0)
    v1 = M.arcface_loss(z, y, w, 0.5, 8.0)
    v2 = M.arcface_loss(z, y, wp, 0.5, 8.0)
    v2.backward()
    assert calls == ["forward", "forward", "fused"]
    torch.testing.assert_close(v0, v2.detach(), rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(v1, v2.detach(), rtol=1e-13, atol=1e-13)


def test_fused_bits_do_not_depend_on_the_thread_count():
    z, w, y = data(300, 12, 9000, k=1, seed=6, dtype=torch.float32)
    m = torch.tensor([0.5], dtype=torch.float64)
    outs = [M._margin_fused(z, w, y, m, 30.0, "arcface", False, 1, True, True, nj) for nj in (1, 2, 3)]
    for o in outs[1:]:
        for a, b in zip(outs[0], o):
            assert torch.equal(a, b)
    zs, ws, ys = data(140, 6, 400, k=3, seed=7, dtype=torch.float32)
    outs = [M._margin_fused(zs, ws, ys, m, 20.0, "arcface", True, 3, True, True, nj) for nj in (1, 3)]
    for a, b in zip(*outs):
        assert torch.equal(a, b)


def test_a_torch_without_the_trace_internals_takes_the_dispatcher_path(monkeypatch):
    # _ops.traced relies on torch internals (FakeTensor, FunctionalTensor, functorch wrappers); where
    # they are missing it must answer "traced", the path that is right in every mode.
    from reprkit import _ops

    z, w, y = data(40, 5, 90, seed=6)
    want = []
    for probes in ("real", None):
        if probes is None:
            monkeypatch.setattr(_ops, "_PROBES", None)
        assert _ops.traced(z) is (probes is None)
        zb, wb = z.clone().requires_grad_(True), w.clone().requires_grad_(True)
        loss = M.arcface_loss(zb, y, wb, 0.4, 12.0)
        (2.0 * loss).backward(retain_graph=True)
        loss.backward()
        want.append((loss.detach(), zb.grad, wb.grad))
    for a, b in zip(*want):
        assert torch.equal(a, b)
