"""Losses that compose: distance=, reduction=, weights=, indices_tuple= (reprkit's and PML's miners), the new
miners and the multi-similarity and circle losses — Rust (CPU) against the pure-torch reference, float64
gradcheck, and pytorch-metric-learning where the definitions coincide."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import reprkit
from reprkit import functional as Fn
from reprkit import losses as L
from reprkit import miners
from reprkit import reference as R
from reprkit.errors import InvalidParameterError, ShapeError
from reprkit.reference import pairs as RP

pml = pytest.importorskip("pytorch_metric_learning")
from pytorch_metric_learning import distances as PD  # noqa: E402
from pytorch_metric_learning import losses as PL  # noqa: E402
from pytorch_metric_learning import miners as PM  # noqa: E402
from pytorch_metric_learning import reducers as PR  # noqa: E402

DISTANCES = ("euclidean", "sqeuclidean", "cosine")


def batch(n=24, d=5, k=4, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=dtype), torch.randint(0, k, (n,), generator=g)


def vg(fn, *xs):
    ins = [t.detach().clone().requires_grad_(True) for t in xs]
    out = fn(*ins)
    upstream = torch.linspace(0.5, 1.5, out.numel(), dtype=out.dtype).reshape(out.shape)
    grads = torch.autograd.grad((out * upstream).sum(), ins, allow_unused=True)
    return out.detach(), [torch.zeros_like(t) if g is None else g for t, g in zip(ins, grads)]


def close(fast, ref, *xs, rtol=1e-7, atol=1e-9):
    v1, g1 = vg(fast, *xs)
    v2, g2 = vg(ref, *xs)
    torch.testing.assert_close(v1, v2, rtol=rtol, atol=atol)
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b, rtol=rtol * 10, atol=atol * 10)


# ----------------------------------------------------------------- distance=, reduction=, weights=


@given(st.integers(0, 10_000), st.sampled_from(DISTANCES), st.sampled_from(["mean", "sum", "none"]), st.booleans(), st.booleans())
def test_contrastive_options_match_reference(seed, distance, reduction, weighted, refs):
    x, y = batch(seed=seed)
    r, ry = batch(n=9, seed=seed + 1) if refs else (None, None)
    w = torch.rand(x.shape[0], dtype=x.dtype) if weighted else None
    kw = dict(distance=distance, reduction=reduction, weights=w)

    def fast(a, *rr):
        return Fn.contrastive_loss(a, y, 0.7, ref_embeddings=rr[0] if rr else None, ref_labels=ry, **kw)

    def ref(a, *rr):
        return RP.contrastive_loss(a, y, 0.7, rr[0] if rr else None, ry, **kw)

    close(fast, ref, x, *([r] if refs else []))


@given(st.integers(0, 10_000), st.sampled_from(DISTANCES), st.sampled_from(["all", "batch_all", "batch_hard", "semi_hard"]),
       st.sampled_from(["mean", "sum", "none"]), st.booleans(), st.booleans())
def test_triplet_options_match_reference(seed, distance, mining, reduction, soft, weighted):
    x, y = batch(n=18, seed=seed)
    w = torch.rand(x.shape[0], dtype=x.dtype) if weighted else None
    kw = dict(distance=distance, reduction=reduction, weights=w)
    close(lambda a: Fn.triplet_margin_loss(a, y, 0.3, mining, soft=soft, **kw),
          lambda a: RP.triplet_margin_loss(a, y, 0.3, mining, soft=soft, **kw), x)


@given(st.integers(0, 10_000), st.sampled_from(DISTANCES), st.sampled_from(["mean", "sum", "none"]), st.booleans(), st.booleans())
def test_lifted_options_match_reference(seed, distance, reduction, hard, weighted):
    x, y = batch(n=20, seed=seed)
    w = torch.rand(x.shape[0], dtype=x.dtype) if weighted else None
    kw = dict(distance=distance, reduction=reduction, weights=w)
    close(lambda a: Fn.lifted_structure_loss(a, y, 0.5, hard, **kw), lambda a: RP.lifted_structure_loss(a, y, 0.5, hard, **kw), x)


@pytest.mark.parametrize("loss", ["contrastive", "triplet", "lifted", "ms", "circle"])
def test_reduction_none_sums_to_sum_and_mean_is_sum_over_counts(loss):
    x, y = batch(n=30, seed=3)
    f = {
        "contrastive": lambda **k: Fn.contrastive_loss(x, y, **k),
        "triplet": lambda **k: Fn.triplet_margin_loss(x, y, 0.2, "batch_all", **k),
        "lifted": lambda **k: Fn.lifted_structure_loss(x, y, **k),
        "ms": lambda **k: Fn.multi_similarity_loss(x, y, **k),
        "circle": lambda **k: Fn.circle_loss(x, y, **k),
    }[loss]
    none, total, mean = f(reduction="none"), f(reduction="sum"), f(reduction="mean")
    assert none.shape == (30,)
    torch.testing.assert_close(none.sum(), total)
    # Unit weights change nothing; weights scale the per-anchor terms.
    torch.testing.assert_close(f(reduction="mean", weights=torch.ones(30, dtype=x.dtype)), mean)
    w = torch.arange(30, dtype=x.dtype)
    torch.testing.assert_close(f(reduction="none", weights=w), none * w)


def test_weighted_batch_hard_is_a_weighted_mean_over_anchors():
    x, y = batch(n=16, seed=5)
    w = torch.rand(16, dtype=x.dtype)
    per = Fn.triplet_margin_loss(x, y, 0.2, "batch_hard", reduction="none")
    a, _, _ = miners.batch_hard(x, y, True)
    want = (w[a] * per[a]).sum() / w[a].sum()
    torch.testing.assert_close(Fn.triplet_margin_loss(x, y, 0.2, "batch_hard", weights=w), want)


def test_cosine_distance_is_one_minus_cos_of_normalised_rows():
    x, y = batch(n=12, seed=1)
    u = torch.nn.functional.normalize(x, dim=1)
    d = 1 - u @ u.T
    eq = y[:, None] == y[None, :]
    per_pair = torch.where(eq, d**2, torch.relu(0.5 - d) ** 2).triu(1)
    torch.testing.assert_close(Fn.contrastive_loss(x, y, 0.5, distance="cosine"), per_pair.sum() / (12 * 11 / 2))
    # squared= stays an alias of distance=
    torch.testing.assert_close(Fn.triplet_margin_loss(x, y, 0.2, "all", squared=False),
                               Fn.triplet_margin_loss(x, y, 0.2, "all", distance="euclidean"))


def test_gradcheck_float64_every_option():
    x, y = batch(n=10, d=3, k=3, seed=2)
    x.requires_grad_(True)
    w = torch.rand(10, dtype=torch.float64)
    for distance in DISTANCES:
        for f in [
            lambda a: Fn.contrastive_loss(a, y, 1.5, distance=distance, weights=w),
            lambda a: Fn.triplet_margin_loss(a, y, 0.5, "all", distance=distance, reduction="none"),
            lambda a: Fn.triplet_margin_loss(a, y, 0.5, "semi_hard", distance=distance, soft=True),
            lambda a: Fn.lifted_structure_loss(a, y, 0.5, distance=distance, reduction="none"),
        ]:
            assert torch.autograd.gradcheck(f, (x,), eps=1e-6, atol=1e-5)
    assert torch.autograd.gradcheck(lambda a: Fn.multi_similarity_loss(a, y, reduction="none"), (x,), eps=1e-6, atol=1e-5)
    # The circle loss's weights α are constants in its gradient (the paper's and PML's code), so its gradient is
    # not the derivative of its value: gradcheck on the value with the α held fixed, via the reference's detach.
    xa = x.detach().clone().requires_grad_(True)
    (want,) = torch.autograd.grad(RP.circle_loss(xa, y, 0.25, 8.0), xa)
    (got,) = torch.autograd.grad(Fn.circle_loss(xa, y, 0.25, 8.0), xa)
    torch.testing.assert_close(got, want, rtol=1e-8, atol=1e-10)


# ----------------------------------------------------------------- indices_tuple


@pytest.mark.parametrize("distance", DISTANCES)
def test_indices_tuple_triplets_and_pairs_match_reference(distance):
    x, y = batch(n=20, seed=4)
    a, p, n = miners.batch_all(x, y, 0.5)
    close(lambda t: Fn.triplet_margin_loss(t, y, 0.2, indices_tuple=(a, p, n), distance=distance, reduction="none"),
          lambda t: RP.triplet_tuple_terms(RP.prepare(t, distance), None, a, p, n, 0.2, distance, False), x)
    pairs = miners.pair_margin(x, y, 0.5, 2.0)
    close(lambda t: Fn.contrastive_loss(t, y, 1.0, indices_tuple=pairs, distance=distance, reduction="none"),
          lambda t: RP.pair_tuple_terms(RP.prepare(t, distance), None, *pairs, 1.0, distance), x)


def test_indices_tuple_with_references_and_conversions():
    x, y = batch(n=10, seed=6)
    r, ry = batch(n=14, seed=7)
    a, p, n = miners.batch_hard(x, y, False, r, ry)
    got = Fn.triplet_margin_loss(x, y, 0.2, indices_tuple=(a, p, n), ref_embeddings=r, ref_labels=ry, distance="euclidean")
    want = torch.relu(RP.tuple_dist(x, r, a, p, "euclidean") - RP.tuple_dist(x, r, a, n, "euclidean") + 0.2).mean()
    torch.testing.assert_close(got, want)
    # pairs → triplets: every (a, p, n) sharing the anchor
    a1, p1, a2, n2 = (torch.tensor(v) for v in ([0, 0, 1], [1, 2, 0], [0, 1, 1, 2], [3, 4, 5, 6]))
    t = Fn.pairs_to_triplets(a1, p1, a2, n2)
    assert sorted(zip(*[v.tolist() for v in t])) == [(0, 1, 3), (0, 2, 3), (1, 0, 4), (1, 0, 5)]
    # triplets given to a pair loss become the pairs (a, p), (a, n)
    got = Fn.contrastive_loss(x, None, 1.0, indices_tuple=(a, p, n), ref_embeddings=r, ref_labels=ry, reduction="sum")
    dp, dn = RP.tuple_dist(x, r, a, p, "euclidean"), RP.tuple_dist(x, r, a, n, "euclidean")
    torch.testing.assert_close(got, (dp**2).sum() + (torch.relu(1.0 - dn) ** 2).sum())


@pytest.mark.parametrize("miner", ["triplet_margin", "multi_similarity", "pair_margin"])
def test_pml_miner_tuples_feed_reprkit_losses(miner):
    x, y = batch(n=32, d=6, seed=8, dtype=torch.float32)
    lp = PD.LpDistance(normalize_embeddings=False)
    m = {"triplet_margin": PM.TripletMarginMiner(0.3, distance=lp), "multi_similarity": PM.MultiSimilarityMiner(0.1),
         "pair_margin": PM.PairMarginMiner(0.5, 3.0, distance=lp)}[miner]
    tup = m(x, y)
    if miner == "triplet_margin":
        theirs = PL.TripletMarginLoss(0.2, distance=lp, reducer=PR.MeanReducer())(x, y, tup)
        ours = L.TripletMarginLoss(0.2, distance="euclidean")(x, y, tup)
    elif miner == "multi_similarity":
        theirs = PL.MultiSimilarityLoss()(x, y, tup)
        ours = L.MultiSimilarityLoss()(x, y, tup)
    else:
        theirs = PL.CircleLoss()(x, y, tup)
        ours = L.CircleLoss()(x, y, tup)
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5)


def test_indices_tuple_errors():
    x, y = batch(n=6)
    with pytest.raises(InvalidParameterError, match="outside"):
        Fn.triplet_margin_loss(x, y, indices_tuple=(torch.tensor([0]), torch.tensor([9]), torch.tensor([1])))
    with pytest.raises(InvalidParameterError, match="integer"):
        Fn.contrastive_loss(x, y, indices_tuple=(torch.tensor([0.0]), torch.tensor([1]), torch.tensor([1])))
    with pytest.raises(ShapeError):
        Fn.triplet_margin_loss(x, y, indices_tuple=(torch.tensor([0, 1]), torch.tensor([1]), torch.tensor([1])))
    with pytest.raises(ShapeError, match="weights"):
        Fn.contrastive_loss(x, y, weights=torch.ones(5))
    with pytest.raises(InvalidParameterError, match="reduction"):
        Fn.contrastive_loss(x, y, reduction="avg")
    with pytest.raises(InvalidParameterError, match="distance"):
        L.ContrastiveLoss(distance="manhattan")
    # An empty tuple: a zero loss attached to the graph.
    e = torch.zeros(0, dtype=torch.long)
    xr = x.clone().requires_grad_(True)
    out = Fn.triplet_margin_loss(xr, y, indices_tuple=(e, e, e))
    out.backward()
    assert float(out) == 0.0 and torch.equal(xr.grad, torch.zeros_like(x))


def test_module_call_style_and_legacy_refs():
    x, y = batch(n=12, seed=9)
    r, ry = batch(n=7, seed=10)
    fn = L.ContrastiveLoss(0.8)
    want = Fn.contrastive_loss(x, y, 0.8, ref_embeddings=r, ref_labels=ry)
    torch.testing.assert_close(fn(x, y, ref_emb=r, ref_labels=ry), want)
    with pytest.warns(DeprecationWarning):
        torch.testing.assert_close(fn(x, y, r, ry), want)


# ----------------------------------------------------------------- multi-similarity and circle


@given(st.integers(0, 10_000), st.booleans(), st.sampled_from(["mean", "none"]))
def test_ms_and_circle_match_reference(seed, refs, reduction):
    x, y = batch(n=20, seed=seed)
    r, ry = batch(n=11, seed=seed + 1) if refs else (None, None)
    xs = [x] + ([r] if refs else [])
    close(lambda a, *rr: Fn.multi_similarity_loss(a, y, 2.0, 10.0, 0.5, ref_embeddings=rr[0] if rr else None, ref_labels=ry, reduction=reduction),
          lambda a, *rr: R.multi_similarity_loss(a, y, 2.0, 10.0, 0.5, rr[0] if rr else None, ry, reduction=reduction), *xs)
    close(lambda a, *rr: Fn.circle_loss(a, y, 0.25, 16.0, ref_embeddings=rr[0] if rr else None, ref_labels=ry, reduction=reduction),
          lambda a, *rr: R.circle_loss(a, y, 0.25, 16.0, rr[0] if rr else None, ry, reduction=reduction), *xs)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_ms_and_circle_match_pml_values_and_gradients(dtype):
    x, y = batch(n=64, d=16, k=8, seed=11, dtype=dtype)
    for ours, theirs in [(L.MultiSimilarityLoss(), PL.MultiSimilarityLoss()), (L.CircleLoss(), PL.CircleLoss())]:
        v1, g1 = vg(lambda a: ours(a, y), x)
        v2, g2 = vg(lambda a: theirs(a, y), x)
        tol = dict(rtol=2e-4, atol=2e-5) if dtype == torch.float32 else dict(rtol=1e-9, atol=1e-11)
        torch.testing.assert_close(v1, v2, **tol)
        torch.testing.assert_close(g1[0], g2[0], **tol)


def test_ms_and_circle_given_all_pairs_equal_the_dense_loss():
    x, y = batch(n=15, seed=12)
    pos, neg = RP._masks(y, None)
    a1, p = pos.nonzero(as_tuple=True)
    a2, n = neg.nonzero(as_tuple=True)
    for f in (Fn.multi_similarity_loss, Fn.circle_loss):
        close(lambda t: f(t, y, reduction="none"), lambda t: f(t, None, indices_tuple=(a1, p, a2, n), reduction="none"), x)


# ----------------------------------------------------------------- miners


def as_set(t):
    return sorted(zip(*[v.tolist() for v in t]))


@given(st.integers(0, 10_000), st.sampled_from(["all", "hard", "semihard", "easy"]), st.sampled_from(DISTANCES), st.booleans())
def test_triplet_margin_miner_matches_reference(seed, kind, distance, refs):
    x, y = batch(n=16, k=3, seed=seed)
    r, ry = batch(n=10, k=3, seed=seed + 1) if refs else (None, None)
    got = miners.triplet_margin(x, y, 0.3, kind, r, ry, distance=distance)
    xx, rr = RP.prepare(x, distance), None if r is None else RP.prepare(r, distance)
    want = R.mine_triplet_margin(xx, y, 0.3, kind, distance, rr, ry)
    assert [v.tolist() for v in got] == [v.tolist() for v in want]


@given(st.integers(0, 10_000), st.sampled_from(DISTANCES), st.booleans())
def test_pair_miners_match_reference(seed, distance, refs):
    x, y = batch(n=16, k=3, seed=seed)
    r, ry = batch(n=10, k=3, seed=seed + 1) if refs else (None, None)
    xx, rr = RP.prepare(x, distance), None if r is None else RP.prepare(r, distance)
    assert as_set(miners.pair_margin(x, y, 0.5, 1.2, r, ry, distance=distance)[:2]) == as_set(R.mine_pair_margin(xx, y, 0.5, 1.2, distance, rr, ry)[:2])
    assert as_set(miners.pair_margin(x, y, 0.5, 1.2, r, ry, distance=distance)[2:]) == as_set(R.mine_pair_margin(xx, y, 0.5, 1.2, distance, rr, ry)[2:])
    got, want = miners.multi_similarity(x, y, 0.1, r, ry), R.mine_multi_similarity(x, y, 0.1, r, ry)
    assert as_set(got[:2]) == as_set(want[:2]) and as_set(got[2:]) == as_set(want[2:])


@pytest.mark.parametrize("kind", ["all", "hard", "semihard", "easy"])
def test_miners_match_pml(kind):
    x, y = batch(n=40, d=8, k=5, seed=13, dtype=torch.float32)
    theirs = PM.TripletMarginMiner(0.2, type_of_triplets=kind)(x, y)  # PML: normalised Lp distance
    xn = torch.nn.functional.normalize(x, dim=1)
    ours = miners.triplet_margin(xn, y, 0.2, kind)
    assert as_set(ours) == as_set(theirs)
    t2, o2 = PM.MultiSimilarityMiner(0.1)(x, y), miners.multi_similarity(x, y, 0.1)
    assert as_set(t2[:2]) == as_set(o2[:2]) and as_set(t2[2:]) == as_set(o2[2:])
    t3, o3 = PM.PairMarginMiner(0.2, 0.8)(x, y), miners.pair_margin(xn, y, 0.2, 0.8)
    assert as_set(t3[:2]) == as_set(o3[:2]) and as_set(t3[2:]) == as_set(o3[2:])


def test_distance_weighted_miner_is_seeded_valid_and_follows_the_weights():
    x, y = batch(n=40, d=6, k=4, seed=14)
    a = miners.distance_weighted(x, y, random_state=3, n_jobs=1)
    b = miners.distance_weighted(x, y, random_state=3, n_jobs=2)
    assert [v.tolist() for v in a] == [v.tolist() for v in b]
    assert a[0].numel() > 0
    assert bool((y[a[0]] == y[a[1]]).all()) and bool((a[0] != a[1]).all()) and bool((y[a[0]] != y[a[2]]).all())
    # Empirical frequencies of one anchor's negatives follow the reference weights.
    w = R.distance_weighted_weights(x, y, 0.5, 1.4)
    anchor = int(a[0][0])
    counts = torch.zeros(40, dtype=torch.float64)
    for s in range(300):
        aa, _, nn = miners.distance_weighted(x, y, random_state=s)
        counts += torch.bincount(nn[aa == anchor], minlength=40).double()
    freq = counts / counts.sum()
    assert float((freq - w[anchor]).abs().max()) < 0.05
    assert bool((freq[w[anchor] == 0] == 0).all())


def test_pml_style_miner_objects_equal_the_functions():
    x, y = batch(n=20, seed=15)
    assert as_set(miners.TripletMarginMiner(0.3, "semihard")(x, y)) == as_set(miners.triplet_margin(x, y, 0.3, "semihard"))
    assert [v.tolist() for v in miners.MultiSimilarityMiner(0.1)(x, y)] == [v.tolist() for v in miners.multi_similarity(x, y, 0.1)]
    assert [v.tolist() for v in miners.BatchHardMiner(distance="cosine")(x, y)] == [v.tolist() for v in miners.batch_hard(x, y, distance="cosine")]
    m = miners.DistanceWeightedMiner(random_state=1)
    assert [v.tolist() for v in m(x, y)] == [v.tolist() for v in m(x, y)]
    assert "TripletMarginMiner(margin=0.3" in repr(miners.TripletMarginMiner(0.3))
    # composes with a loss exactly like PML's miner → loss pipeline
    loss = L.TripletMarginLoss(0.2, distance="euclidean")(x, y, miners.TripletMarginMiner(0.2, "hard")(x, y))
    assert torch.isfinite(loss)


@pytest.mark.parametrize("loss", ["ntxent", "infonce", "infonce_queue", "npair"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_softmax_family_reduction_and_weights_match_reference(loss, reduction):
    g = torch.Generator().manual_seed(21)
    z1, z2 = torch.randn(300, 6, generator=g, dtype=torch.float64), torch.randn(300, 6, generator=g, dtype=torch.float64)
    queue = torch.randn(50, 6, generator=g, dtype=torch.float64)
    w = torch.rand(300, dtype=torch.float64, generator=g)
    from reprkit.reference import softmax as RS

    def ref_rows(a, b):
        return {"ntxent": lambda: RS.ntxent_loss(a, b, 0.2, reduction="none"),
                "infonce": lambda: RS.infonce_loss(a, b, None, 0.2, reduction="none"),
                "infonce_queue": lambda: RS.infonce_loss(a, b, queue, 0.2, reduction="none"),
                "npair": lambda: RS.npair_loss(a, b, 0.0, reduction="none")}[loss]()

    def fast(a, b, weights):
        kw = dict(reduction=reduction, weights=weights)
        return {"ntxent": lambda: Fn.ntxent_loss(a, b, 0.2, **kw), "infonce": lambda: Fn.infonce_loss(a, b, None, 0.2, **kw),
                "infonce_queue": lambda: Fn.infonce_loss(a, b, queue, 0.2, **kw), "npair": lambda: Fn.npair_loss(a, b, **kw)}[loss]()

    for weights in (None, w):
        rw = None if weights is None else (torch.cat([weights, weights]) if loss == "ntxent" else weights)
        close(lambda a, b: fast(a, b, weights), lambda a, b: RP.reduce(ref_rows(a, b), torch.ones_like(ref_rows(a, b)), reduction, rw), z1, z2)
