"""The chunked torch path of the pair losses (what non-CPU devices run), forced on CPU tensors with
backend="torch": against the dense reference.pairs (values and gradients), at chunk boundaries, on
degenerate batches, and with a check that no B×B matrix is kept for backward."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

import reprkit.losses as L  # noqa: E402
from reprkit.errors import InvalidParameterError  # noqa: E402
from reprkit.losses import _pairs_chunked as PC  # noqa: E402
from reprkit.losses import pairs as P  # noqa: E402
from reprkit.reference import pairs as R  # noqa: E402

B, M, DIM = 11, 7, 5


def _data(dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, DIM, generator=g, dtype=dtype).requires_grad_(True)
    r = torch.randn(M, DIM, generator=g, dtype=dtype).requires_grad_(True)
    y = torch.randint(0, 3, (B,), generator=g)
    ry = torch.randint(0, 3, (M,), generator=g)
    w = torch.rand(B, generator=g, dtype=dtype) + 0.5
    return x, r, y, ry, w


# name -> (reprkit loss(x, y, backend, **kw), reference loss(x, y, **kw), takes distance, takes refs)
def _triplet(mining, soft):
    return (lambda x, y, be, **k: P.triplet_margin_loss(x, y, 0.3, mining, soft=soft, backend=be, **k),
            lambda x, y, **k: R.triplet_margin_loss(x, y, 0.3, mining, soft=soft, **k), True, True)


LOSSES = {
    "contrastive": (lambda x, y, be, **k: P.contrastive_loss(x, y, 1.2, backend=be, **k),
                    lambda x, y, **k: R.contrastive_loss(x, y, 1.2, **k), True, True),
    **{f"triplet_{m}": _triplet(m, False) for m in P.MININGS},
    "triplet_all_soft": _triplet("all", True),
    "triplet_batch_hard_soft": _triplet("batch_hard", True),
    "triplet_semi_hard_soft": _triplet("semi_hard", True),
    "lifted": (lambda x, y, be, **k: P.lifted_structure_loss(x, y, 1.0, backend=be, **k),
               lambda x, y, **k: R.lifted_structure_loss(x, y, 1.0, **k), True, False),
    "lifted_hard": (lambda x, y, be, **k: P.lifted_structure_loss(x, y, 1.0, True, backend=be, **k),
                    lambda x, y, **k: R.lifted_structure_loss(x, y, 1.0, True, **k), True, False),
    "multi_similarity": (lambda x, y, be, **k: P.multi_similarity_loss(x, y, 2.0, 10.0, 0.5, backend=be, **k),
                         lambda x, y, **k: R.multi_similarity_loss(x, y, 2.0, 10.0, 0.5, **k), False, True),
    "circle": (lambda x, y, be, **k: P.circle_loss(x, y, 0.4, 16.0, backend=be, **k),
               lambda x, y, **k: R.circle_loss(x, y, 0.4, 16.0, **k), False, True),
}

CASES = [(name, dist, refs) for name, (_, _, has_d, has_r) in LOSSES.items()
         for dist in (P.DISTANCES if has_d else (None,)) for refs in ((False, True) if has_r else (False,))]


def _reduced(per_or_loss, reduction, w):
    """reduction "none": a scalar of the per-anchor vector that weighs every entry differently."""
    if reduction == "none":
        return (per_or_loss * torch.linspace(0.5, 1.5, per_or_loss.shape[0], dtype=per_or_loss.dtype)).sum()
    return per_or_loss


def _run(name, dist, refs, reduction, weighted, dtype):
    fn, ref, _, _ = LOSSES[name]
    x, r, y, ry, w = _data(dtype)
    kw = {"reduction": reduction}
    if dist is not None:
        kw["distance"] = dist
    if weighted:
        kw["weights"] = w
    rk = dict(ref_embeddings=r, ref_labels=ry) if refs else {}
    out = fn(x, y, "torch", **kw, **rk)
    want = ref(x, y, **kw, **rk)
    ins = [x, r] if refs else [x]
    return out, want, ins


@pytest.fixture(params=[1 << 22, 3 * M], ids=["one_chunk", "chunks_of_3"])
def tile(request, monkeypatch):
    """Tile entries per chunk: everything in one chunk, or chunks of 3 anchor rows (B = 11 is not a multiple)."""
    monkeypatch.setattr(PC, "TILE_ENTRIES", request.param)
    return request.param


# (reduction, weighted, tile entries): one chunk ≥ B, and chunks of 3 rows (B = 11 is not a multiple of 3)
SETTINGS = [("mean", False, 1 << 22), ("mean", False, 3 * M), ("sum", False, 3 * M), ("none", False, 3 * M),
            ("mean", True, 3 * M)]


@pytest.mark.parametrize("reduction,weighted,entries", SETTINGS)
@pytest.mark.parametrize("name,dist,refs", CASES)
def test_torch_path_matches_reference_float64(name, dist, refs, reduction, weighted, entries, monkeypatch):
    monkeypatch.setattr(PC, "TILE_ENTRIES", entries)
    out, want, ins = _run(name, dist, refs, reduction, weighted, torch.float64)
    assert out.dtype == torch.float64 and out.shape == want.shape
    torch.testing.assert_close(out, want, rtol=1e-10, atol=1e-12)
    got = torch.autograd.grad(_reduced(out, reduction, None), ins)
    exp = torch.autograd.grad(_reduced(want, reduction, None), ins)
    for a, b in zip(got, exp):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("name,dist,refs", CASES)
def test_torch_path_matches_reference_and_rust_float32(name, dist, refs):
    out, want, ins = _run(name, dist, refs, "mean", False, torch.float32)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, want, rtol=2e-5, atol=2e-5)
    for a, b in zip(torch.autograd.grad(out, ins), torch.autograd.grad(want, ins)):
        assert a.dtype == torch.float32
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    # the Rust kernel agrees with the torch path (both against the same oracle)
    fn, _, has_d, _ = LOSSES[name]
    x, r, y, ry, _ = _data(torch.float32)
    kw = ({"distance": dist} if has_d else {}) | (dict(ref_embeddings=r, ref_labels=ry) if refs else {})
    torch.testing.assert_close(fn(x, y, "rust", **kw), fn(x, y, "torch", **kw), rtol=1e-4, atol=1e-5)


def test_gradcheck_float64(monkeypatch):
    monkeypatch.setattr(PC, "TILE_ENTRIES", 2 * 6)  # chunks of 2 rows against 6 columns
    g = torch.Generator().manual_seed(4)
    x = torch.randn(6, 3, dtype=torch.float64, generator=g, requires_grad=True)
    r = torch.randn(6, 3, dtype=torch.float64, generator=g, requires_grad=True)
    y = torch.tensor([0, 0, 1, 1, 2, 0])
    fns = [
        lambda x, r: P.contrastive_loss(x, y, 2.0, backend="torch"),
        lambda x, r: P.triplet_margin_loss(x, y, 0.5, "all", distance="euclidean", backend="torch"),
        lambda x, r: P.triplet_margin_loss(x, y, 0.5, "all", soft=True, ref_embeddings=r, ref_labels=y, backend="torch"),
        lambda x, r: P.triplet_margin_loss(x, y, 0.5, "semi_hard", ref_embeddings=r, ref_labels=y, backend="torch"),
        lambda x, r: P.lifted_structure_loss(x, y, 1.0, backend="torch"),
        lambda x, r: P.multi_similarity_loss(x, y, 2.0, 10.0, ref_embeddings=r, ref_labels=y, backend="torch"),
    ]  # not circle: its α's are detached by definition, so its gradient is not the numerical one (nor the reference's)
    for f in fns:
        assert torch.autograd.gradcheck(f, (x, r))


@pytest.mark.parametrize("kind", ["pairs", "triplets"])
def test_tuple_forms_match_reference(kind, tile):
    x, r, y, ry, w = _data(torch.float64, seed=2)
    g = torch.Generator().manual_seed(9)
    if kind == "pairs":
        it = tuple(torch.randint(0, hi, (13,), generator=g) for hi in (B, M, B, M))
    else:
        it = tuple(torch.randint(0, hi, (13,), generator=g) for hi in (B, M, M))
    pairs = P._tuple(it, B, M, x.device, "pairs")
    trip = P._tuple(it, B, M, x.device, "triplets")
    cases = [
        (P.contrastive_loss(x, None, 1.2, indices_tuple=it, ref_embeddings=r, backend="torch"),
         R.reduce(*(lambda v: (v, torch.ones_like(v)))(R.pair_tuple_terms(x, r, *pairs, 1.2, "euclidean")))),
        (P.triplet_margin_loss(x, None, 0.3, indices_tuple=it, ref_embeddings=r, backend="torch"),
         R.reduce(*(lambda v: (v, torch.ones_like(v)))(R.triplet_tuple_terms(x, r, *trip, 0.3, "sqeuclidean", False)))),
    ]
    u, ur = torch.nn.functional.normalize(x, dim=1), torch.nn.functional.normalize(r, dim=1)
    for red in ("mean", "none"):
        cases.append((P.multi_similarity_loss(x, None, 2.0, 10.0, indices_tuple=it, ref_embeddings=r, reduction=red, backend="torch"),
                      R.reduce(*R.multi_similarity_terms(u, None, 2.0, 10.0, 0.5, ur, None, pairs=pairs), red)))
        cases.append((P.circle_loss(x, None, 0.4, 16.0, indices_tuple=it, ref_embeddings=r, reduction=red, backend="torch"),
                      R.reduce(*R.circle_terms(u, None, 0.4, 16.0, ur, None, pairs=pairs), red)))
    # in-batch pairs (refs = the batch itself)
    ib = tuple(torch.randint(0, B, (10,), generator=g) for _ in range(4))
    cases.append((P.circle_loss(x, y, 0.4, 16.0, indices_tuple=ib, backend="torch"),
                  R.reduce(*R.circle_terms(u, None, 0.4, 16.0, None, None, pairs=ib), "mean")))
    for out, want in cases:
        torch.testing.assert_close(out, want, rtol=1e-10, atol=1e-12)
        s = lambda t: (t * torch.arange(1, t.numel() + 1, dtype=t.dtype)).sum() if t.dim() else t  # noqa: E731
        got = torch.autograd.grad(s(out), (x, r), retain_graph=True, allow_unused=True, materialize_grads=True)
        for a, b in zip(got, torch.autograd.grad(s(want), (x, r), retain_graph=True, allow_unused=True, materialize_grads=True)):
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_duplicate_rows_and_collapsed_batch(name, monkeypatch):
    """d = 0 between equal rows: finite gradients equal to the reference's and the Rust path's (the gradient of
    d at 0 is 0). Exact ties in lifted's hard max: torch.maximum splits the gradient (reference and torch path),
    the kernel's nested max gives it to the lower index, so there only the values are compared with Rust."""
    monkeypatch.setattr(PC, "TILE_ENTRIES", 4 * 8)
    fn, ref, has_d, _ = LOSSES[name]
    g = torch.Generator().manual_seed(1)
    base = torch.randn(4, 3, dtype=torch.float64, generator=g)
    y = torch.tensor([0, 0, 1, 1, 0, 1, 2, 2])
    for rows in (base[[0, 0, 1, 1, 2, 2, 3, 3]], base[[0] * 8]):
        for dist in (P.DISTANCES if has_d else (None,)):
            kw = {"distance": dist} if dist else {}
            xt = rows.clone().requires_grad_(True)
            xr = rows.clone().requires_grad_(True)
            xd = rows.clone().requires_grad_(True)
            out, want, dense = fn(xt, y, "torch", **kw), fn(xr, y, "rust", **kw), ref(xd, y, **kw)
            torch.testing.assert_close(out, want, rtol=1e-10, atol=1e-12)
            torch.testing.assert_close(out, dense, rtol=1e-10, atol=1e-12)
            gt, = torch.autograd.grad(out, xt)
            assert torch.isfinite(gt).all()
            torch.testing.assert_close(gt, torch.autograd.grad(dense, xd)[0], rtol=1e-9, atol=1e-10)
            if name != "lifted_hard":
                torch.testing.assert_close(gt, torch.autograd.grad(want, xr)[0], rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_no_valid_pairs_gives_attached_zero(name):
    fn, ref, _, _ = LOSSES[name]
    x = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    y = torch.arange(5)  # every label distinct: no positive pair
    out = fn(x, y, "torch")
    want = ref(x, y)
    torch.testing.assert_close(out, want)
    if name in ("contrastive", "multi_similarity"):
        return  # negatives alone give these a non-zero loss
    assert out.item() == 0.0 and out.requires_grad
    gx, = torch.autograd.grad(out, x)
    assert torch.equal(gx, torch.zeros_like(x))


def _max_saved_numel(fn):
    """The largest tensor autograd keeps for backward while ``fn()`` builds its graph."""
    sizes = []

    def pack(t):
        sizes.append(t.numel())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return max(sizes), out


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_saved_state_is_linear_in_the_batch(name):
    """Nothing of B×B size is kept for backward (the dense reference keeps B×B tiles: the check can fail)."""
    fn, ref, _, _ = LOSSES[name]
    n, d = 96, 4
    x = torch.randn(n, d, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, 4, (n,))
    biggest, out = _max_saved_numel(lambda: fn(x, y, "torch"))
    assert biggest <= n * d, f"{name}: a tensor of {biggest} entries saved (B·d = {n * d})"
    out.backward()
    dense, _ = _max_saved_numel(lambda: ref(x, y))
    assert dense >= n * n


def test_half_precision_computes_in_float32_and_double_backward_is_refused():
    from reprkit._ops import DoubleBackwardError

    x = torch.randn(10, 4, dtype=torch.bfloat16, requires_grad=True)
    y = torch.randint(0, 3, (10,))
    loss = P.triplet_margin_loss(x, y, 0.2, "batch_hard", backend="torch")
    assert loss.dtype == torch.float32
    gx, = torch.autograd.grad(loss, x)
    assert gx.dtype == torch.bfloat16
    torch.testing.assert_close(loss, R.triplet_margin_loss(x.float(), y, 0.2, "batch_hard"), rtol=1e-5, atol=1e-5)
    x64 = torch.randn(10, 4, dtype=torch.float64, requires_grad=True)
    for f in (lambda: P.lifted_structure_loss(x64, y, backend="torch"), lambda: P.circle_loss(x64, y, backend="torch")):
        g, = torch.autograd.grad(f(), x64, create_graph=True)
        with pytest.raises(DoubleBackwardError):
            g.sum().backward()


def test_vmap_is_refused_naming_the_path():
    x = torch.randn(2, 6, 3)
    y = torch.tensor([0, 0, 1, 1, 2, 2])
    with pytest.raises(RuntimeError, match="pair losses"):
        torch.vmap(lambda t: P.contrastive_loss(t, y, backend="torch"))(x)


def test_backend_validation_and_modules():
    x = torch.randn(8, 3, dtype=torch.float64)
    y = torch.tensor([0, 0, 1, 1, 2, 2, 0, 1])
    for f in (P.contrastive_loss, P.triplet_margin_loss, P.lifted_structure_loss, P.multi_similarity_loss, P.circle_loss):
        with pytest.raises(InvalidParameterError, match="backend"):
            f(x, y, backend="cuda")
    mods = [
        (L.ContrastiveLoss, {}), (L.TripletMarginLoss, {"mining": "semi_hard"}), (L.LiftedStructureLoss, {}),
        (L.MultiSimilarityLoss, {}), (L.CircleLoss, {}),
    ]
    for cls, kw in mods:
        want = cls(**kw)(x, y)
        torch.testing.assert_close(cls(**kw, backend="torch")(x, y), want, rtol=1e-10, atol=1e-12)
        with pytest.raises(InvalidParameterError, match="backend"):
            cls(**kw, backend="gpu")


def test_torch_compile_and_func_grad_equal_eager():
    """torch.func.grad, and torch.compile (fullgraph for the similarity losses, with graph breaks for the
    distance ones: see _pairs_chunked's docstring), give the eager loss and gradient."""
    x = torch.randn(8, 4, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 0, 1, 1, 2, 2, 0, 1])
    fns = {
        "semi_hard": lambda t: P.triplet_margin_loss(t, y, 0.3, "semi_hard", backend="torch"),
        "lifted": lambda t: P.lifted_structure_loss(t, y, backend="torch"),
        "soft_all": lambda t: P.triplet_margin_loss(t, y, 0.3, "all", soft=True, backend="torch"),
        "ms": lambda t: P.multi_similarity_loss(t, y, backend="torch"),
        "circle_refs": lambda t: P.circle_loss(t, y, ref_embeddings=t.detach() * 2, ref_labels=y, backend="torch"),
    }
    for f in fns.values():
        torch.testing.assert_close(torch.func.grad(f)(x.detach()), torch.autograd.grad(f(x), x)[0], rtol=0, atol=0)
    f = fns["circle_refs"]  # compiling is slow: one loss (the distance losses graph-break, which costs more)
    out = torch.compile(f, backend="aot_eager", fullgraph=True)(x)
    want = f(x)
    torch.testing.assert_close(out, want, rtol=0, atol=0)
    torch.testing.assert_close(torch.autograd.grad(out, x)[0], torch.autograd.grad(want, x)[0], rtol=0, atol=0)
