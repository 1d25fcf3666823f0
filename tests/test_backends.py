"""The ``backend=`` switch: the chunked torch path (what non-CPU devices run) against the dense
reference, forced on CPU tensors; and the chunked softmax Function at chunk boundaries."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

import reprkit.functional as RF  # noqa: E402
from reprkit.errors import InvalidParameterError  # noqa: E402
from reprkit.losses import _chunked  # noqa: E402
from reprkit.reference import margin as RM  # noqa: E402
from reprkit.reference import multimodal as RMM  # noqa: E402
from reprkit.reference import hypersphere as RH  # noqa: E402
from reprkit.reference import proxies as RP  # noqa: E402
from reprkit.reference import softmax as RS  # noqa: E402

N, DIM, C = 9, 5, 7


def _inputs(dtype):
    g = torch.Generator().manual_seed(3)
    r = lambda *s: torch.randn(*s, generator=g, dtype=dtype).requires_grad_(True)  # noqa: E731
    u = lambda t: torch.nn.functional.normalize(t.detach(), dim=1).requires_grad_(True)  # noqa: E731
    return {"a": r(N, DIM), "b": r(N, DIM), "q": r(4, DIM), "y": torch.randint(0, 3, (N,), generator=g), "W": r(C, DIM),
            "c": torch.randint(0, C, (N,), generator=g), "ua": u(r(N, DIM)), "ub": u(r(N, DIM)), "v": r(N, 2, DIM)}


# name -> (differentiable inputs, reprkit loss(x, backend), dense reference(x))
CASES = {
    "npair": ("ab", lambda x, be: RF.npair_loss(x["a"], x["b"], backend=be), lambda x: RS.npair_loss(x["a"], x["b"])),
    "ntxent": ("ab", lambda x, be: RF.ntxent_loss(x["a"], x["b"], 0.4, backend=be), lambda x: RS.ntxent_loss(x["a"], x["b"], 0.4)),
    "ntxent_none": ("ab", lambda x, be: RF.ntxent_loss(x["a"], x["b"], 0.4, reduction="none", backend=be).square().sum(),
                    lambda x: RS.ntxent_loss(x["a"], x["b"], 0.4, reduction="none").square().sum()),
    "infonce": ("ab", lambda x, be: RF.infonce_loss(x["a"], x["b"], None, 0.3, backend=be),
                lambda x: RS.infonce_loss(x["a"], x["b"], None, 0.3)),
    "infonce_queue": ("abq", lambda x, be: RF.infonce_loss(x["a"], x["b"], x["q"], 0.3, backend=be),
                      lambda x: RS.infonce_loss(x["a"], x["b"], x["q"], 0.3)),
    "supcon": ("a", lambda x, be: RF.supcon_loss(x["a"], x["y"], 0.5, backend=be), lambda x: RS.supcon_loss(x["a"], x["y"], 0.5)),
    "supcon_views": ("v", lambda x, be: RF.supcon_loss(x["v"], None, 0.5, backend=be), lambda x: RS.supcon_loss(x["v"], None, 0.5)),
    "clip": ("uaub", lambda x, be: RF.clip_loss(x["ua"], x["ub"], 6.0, backend=be), lambda x: RMM.clip_loss(x["ua"], x["ub"], 6.0)),
    "siglip": ("uaub", lambda x, be: RF.siglip_loss(x["ua"], x["ub"], 5.0, -3.0, backend=be),
               lambda x: RMM.siglip_loss(x["ua"], x["ub"], torch.tensor(5.0, dtype=x["ua"].dtype), torch.tensor(-3.0, dtype=x["ua"].dtype))),
    "uniformity": ("a", lambda x, be: RF.uniformity_loss(x["a"], 1.5, normalize=True, backend=be),
                   lambda x: RH.uniformity_loss(torch.nn.functional.normalize(x["a"], dim=1), 1.5)),
    "proxy_anchor": ("aW", lambda x, be: RF.proxy_anchor_loss(x["a"], x["c"], x["W"], 0.1, 8.0, backend=be),
                     lambda x: RP.proxy_anchor_loss(x["a"], x["c"], x["W"], 0.1, 8.0)),
    "proxy_nca": ("aW", lambda x, be: RF.proxy_nca_loss(x["a"], x["c"], x["W"], 2.0, backend=be),
                  lambda x: RP.proxy_nca_loss(x["a"], x["c"], x["W"], 2.0)),
    "arcface": ("aW", lambda x, be: RF.arcface_loss(x["a"], x["c"], x["W"], 0.3, 8.0, backend=be),
                lambda x: RM.arcface_loss(x["a"], x["c"], x["W"], 0.3, 8.0)),
    "cosface": ("aW", lambda x, be: RF.cosface_loss(x["a"], x["c"], x["W"], 0.3, 8.0, backend=be),
                lambda x: RM.cosface_loss(x["a"], x["c"], x["W"], 0.3, 8.0)),
    "normalized_softmax": ("aW", lambda x, be: RF.normalized_softmax_loss(x["a"], x["c"], x["W"], 10.0, backend=be),
                           lambda x: RM.normalized_softmax_loss(x["a"], x["c"], x["W"], 10.0)),
    "subcenter_arcface": ("aW", lambda x, be: RF.subcenter_arcface_loss(x["a"], x["c"][:N] % 2, x["W"][:6], 3, 0.3, 8.0, backend=be),
                          lambda x: RM.subcenter_arcface_loss(x["a"], x["c"][:N] % 2, x["W"][:6], 3, 0.3, 8.0)),
}


def _keys(wrt):
    return ["ua", "ub"] if wrt == "uaub" else list(wrt)


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 2e-5)])
def test_torch_backend_matches_reference(name, dtype, tol):
    wrt, fn, ref = CASES[name]
    x = _inputs(dtype)
    ins = [x[k] for k in _keys(wrt)]
    out = fn(x, "torch")
    assert out.dtype == dtype
    want = ref(x)
    torch.testing.assert_close(out, want.to(dtype), rtol=tol, atol=tol)
    for g, gr in zip(torch.autograd.grad(out, ins), torch.autograd.grad(want, ins)):
        assert g.dtype == dtype
        torch.testing.assert_close(g, gr, rtol=tol, atol=tol)
    # and the Rust kernel agrees with the torch path (both against the same oracle)
    torch.testing.assert_close(fn(x, "rust"), out, rtol=tol, atol=tol)


@pytest.mark.parametrize("mask,tail", [("all", 0), ("nodiag", 0), ("own_and_tail", 6)])
@pytest.mark.parametrize("chunk", [1, 4, 100])
def test_chunked_xent_rows_at_chunk_boundaries(mask, tail, chunk):
    g = torch.Generator().manual_seed(5)
    q = torch.randn(6, 4, generator=g, dtype=torch.float64, requires_grad=True)
    k = torch.randn(10, 4, generator=g, dtype=torch.float64, requires_grad=True)
    t = torch.randint(0, 6, (6,), generator=g)
    if mask == "nodiag":
        t = (torch.arange(6) + 1) % 6
    if mask == "own_and_tail":
        t = torch.arange(6)
    s = 0.7 * q @ k.T  # dense oracle with the kernel's mask semantics
    cols, rows = torch.arange(10), torch.arange(6)[:, None]
    bad = {"all": torch.zeros(6, 10, dtype=torch.bool), "nodiag": cols[None] == rows,
           "own_and_tail": (cols[None] < tail) & (cols[None] != rows)}[mask]
    want = torch.logsumexp(s.masked_fill(bad, float("-inf")), 1) - s[torch.arange(6), t]
    per = _chunked.xent_rows(q, k, 0.7, t, mask, tail, chunk)
    torch.testing.assert_close(per, want)
    w = torch.rand(6, generator=g, dtype=torch.float64)
    for a, b in zip(torch.autograd.grad((per * w).sum(), (q, k)), torch.autograd.grad((want * w).sum(), (q, k))):
        torch.testing.assert_close(a, b)


def test_chunked_xent_gradcheck_and_self_keys():
    q = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    t = (torch.arange(5) + 2) % 5
    assert torch.autograd.gradcheck(lambda q: _chunked.xent_rows(q, None, 1.3, t, "nodiag", 0, 2), (q,))
    assert torch.autograd.gradcheck(lambda q, k: _chunked.xent_rows(q, k, 0.9, t, "all", 0, 3),
                                    (q, torch.randn(7, 3, dtype=torch.float64, requires_grad=True)))


def test_backend_errors_name_the_parameter():
    a = torch.randn(4, 3)
    with pytest.raises(InvalidParameterError, match="backend"):
        RF.ntxent_loss(a, a, backend="cuda")
    with pytest.raises(InvalidParameterError, match="backend"):
        RF.clip_loss(a, a, backend="numpy")
    # "rust" on a non-CPU tensor is refused, naming the device (meta stands in for a GPU here)
    with pytest.raises(InvalidParameterError, match="backend='rust' needs CPU tensors"):
        _chunked.use_rust("rust", torch.empty(2, 2, device="meta"))
    assert not _chunked.use_rust("auto", torch.empty(2, 2, device="meta"))
    assert not _chunked.use_rust("torch", a) and _chunked.use_rust("auto", a) and _chunked.use_rust("rust", a)


def test_torch_backend_half_precision_and_double_backward_refused():
    a = torch.randn(6, 4, dtype=torch.bfloat16, requires_grad=True)
    b = torch.randn(6, 4, dtype=torch.bfloat16, requires_grad=True)
    loss = RF.ntxent_loss(a, b, backend="torch")
    assert loss.dtype == torch.float32
    ga, = torch.autograd.grad(loss, a)
    assert ga.dtype == torch.bfloat16
    want = RS.ntxent_loss(a.float(), b.float())
    torch.testing.assert_close(loss, want, rtol=1e-5, atol=1e-5)
    a64 = torch.randn(6, 4, dtype=torch.float64, requires_grad=True)
    g, = torch.autograd.grad(RF.infonce_loss(a64, a64 * 2, backend="torch"), a64, create_graph=True)
    from reprkit._ops import DoubleBackwardError

    with pytest.raises(DoubleBackwardError):
        g.sum().backward()


def test_modules_take_the_backend():
    import reprkit.losses as L

    x = _inputs(torch.float64)
    a, b, c, y = x["a"].detach(), x["b"].detach(), x["c"], x["y"]
    cases = [
        (L.NTXentLoss(0.4, backend="torch"), L.NTXentLoss(0.4), (a, b)),
        (L.InfoNCELoss(0.4, backend="torch"), L.InfoNCELoss(0.4), (a, b)),
        (L.SupConLoss(0.5, backend="torch"), L.SupConLoss(0.5), (a, y)),
        (L.CLIPLoss(backend="torch").double(), L.CLIPLoss().double(), (a, b)),
        (L.SigLIPLoss(backend="torch").double(), L.SigLIPLoss().double(), (a, b)),
    ]
    for backend_torch, auto, args in cases:
        torch.testing.assert_close(backend_torch(*args), auto(*args), rtol=1e-10, atol=1e-12)
    for mod in (L.ArcFaceLoss(C, DIM).double(), L.ProxyNCALoss(C, DIM).double()):
        want = mod(a, c)
        mod.backend = "torch"
        torch.testing.assert_close(mod(a, c), want, rtol=1e-10, atol=1e-12)
        mod.backend = "gpu"
        with pytest.raises(InvalidParameterError, match="backend"):
            mod(a, c)
    with pytest.raises(InvalidParameterError, match="backend"):
        L.NTXentLoss(backend="cuda")
