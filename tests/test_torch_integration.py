"""reprkit's kernels inside modern torch: torch.compile(fullgraph=True) of a training step, torch.func.grad /
vjp, vmap refused by name, double backward refused (never silently wrong), bf16 autocast."""

from __future__ import annotations

import pytest
import torch

from reprkit import functional as Fn
from reprkit import losses as L
from reprkit import miners, pairwise_distances
from reprkit._ops import DoubleBackwardError

torch.manual_seed(0)
B, D_IN, D = 24, 6, 4


def _labels():
    return torch.arange(B) % 4


# (name, loss of the model's output z (B, D), needs two views)
LOSSES = {
    "contrastive": lambda z, y: L.ContrastiveLoss(0.8)(z, y),
    "triplet_all": lambda z, y: L.TripletMarginLoss(0.2, "all")(z, y),
    "triplet_batch_hard_cosine": lambda z, y: L.TripletMarginLoss(0.2, "batch_hard", distance="cosine")(z, y),
    "triplet_semi_hard_none": lambda z, y: L.TripletMarginLoss(0.2, "semi_hard", reduction="none")(z, y).sum(),
    "lifted": lambda z, y: L.LiftedStructureLoss(0.5)(z, y),
    "multi_similarity": lambda z, y: L.MultiSimilarityLoss()(z, y),
    "circle": lambda z, y: L.CircleLoss(0.25, 16.0)(z, y),
    "ntxent": lambda z, y: L.NTXentLoss(0.5)(z[: B // 2], z[B // 2 :]),
    "npair": lambda z, y: L.NPairLoss()(z[: B // 2], z[B // 2 :]),
    "infonce": lambda z, y: L.InfoNCELoss(0.5)(z[: B // 2], z[B // 2 :]),
    "distances": lambda z, y: pairwise_distances(z).mean(),
    "mined_tuple": lambda z, y: L.TripletMarginLoss(0.2)(z, y, miners.batch_hard(z, y)),
}


def _step(model, loss):
    def step(x, y):
        return loss(model(x), y)

    return step


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_compiled_training_step_has_no_graph_break_and_matches_eager(name):
    torch._dynamo.reset()
    g = torch.Generator().manual_seed(1)
    model = torch.nn.Sequential(torch.nn.Linear(D_IN, 8), torch.nn.Tanh(), torch.nn.Linear(8, D))
    x, y = torch.randn(B, D_IN, generator=g), _labels()
    step = _step(model, LOSSES[name])
    eager = step(x, y)
    eager.backward()
    g_eager = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")  # fullgraph: any graph break raises
    out = compiled(x, y)
    out.backward()
    torch.testing.assert_close(out, eager, rtol=1e-5, atol=1e-6)
    for a, b in zip(model.parameters(), g_eager):
        torch.testing.assert_close(a.grad, b, rtol=1e-4, atol=1e-6)


def test_compile_with_inductor_backend():
    torch._dynamo.reset()
    model = torch.nn.Linear(D_IN, D)
    x, y = torch.randn(B, D_IN), _labels()
    step = _step(model, LOSSES["triplet_batch_hard_cosine"])
    want = step(x, y)
    got = torch.compile(step, fullgraph=True)(x, y)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["contrastive", "triplet_all", "lifted", "multi_similarity", "circle", "ntxent", "distances"])
def test_torch_func_grad_and_vjp_match_autograd(name):
    loss = LOSSES[name]
    z = torch.randn(B, D, dtype=torch.float64)
    y = _labels()
    zr = z.clone().requires_grad_(True)
    (want,) = torch.autograd.grad(loss(zr, y), zr)
    got = torch.func.grad(lambda t: loss(t, y))(z)
    torch.testing.assert_close(got, want)
    out, vjp = torch.func.vjp(lambda t: loss(t, y), z)
    (gv,) = vjp(torch.tensor(2.0, dtype=torch.float64))
    torch.testing.assert_close(gv, 2 * want)


def test_vmap_raises_an_error_naming_the_loss():
    z = torch.randn(3, B, D)
    y = _labels()
    with pytest.raises(RuntimeError, match="contrastive_loss"):
        torch.vmap(lambda t: Fn.contrastive_loss(t, y))(z)
    with pytest.raises(RuntimeError, match="ntxent_loss"):
        torch.vmap(lambda t: Fn.ntxent_loss(t, t))(z)


@pytest.mark.parametrize("name", ["contrastive", "triplet_all", "lifted", "circle", "ntxent", "distances"])
def test_double_backward_is_refused_not_silently_wrong(name):
    z = torch.randn(B, D, dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(LOSSES[name](z, _labels()), z, create_graph=True)
    with pytest.raises(DoubleBackwardError, match="double backward"):
        g.pow(2).sum().backward()


def test_bf16_autocast_training_step():
    model = torch.nn.Linear(D_IN, D)
    x, y = torch.randn(B, D_IN), _labels()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        z = model(x)
        assert z.dtype == torch.bfloat16
        loss = L.TripletMarginLoss(0.2, "batch_hard")(z, y) + L.NTXentLoss()(z[:12], z[12:])
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
