"""Bad-input fuzz of every public loss, distance and miner function (issue 16).

Table-driven: each public function has one valid call (``SPECS``); every class of bad input is
substituted into it — wrong types, shapes, dtypes, devices (meta, sparse), scipy sparse, lists,
NaN/inf, extreme finite values, impossible parameters, huge/negative thread counts — and the
call must either raise a reprkit error (ValueError/TypeError) whose message names the parameter,
or return a finite result (with finite gradients for the losses). The second derivative of every
loss either passes gradgradcheck or raises DoubleBackwardError.
"""

from __future__ import annotations

import inspect
import math

import numpy as np
import pytest
import scipy.sparse

import reprkit
import reprkit.functional as F
import reprkit.miners as M
from reprkit import _threads
from reprkit._ops import DoubleBackwardError
from reprkit.errors import InvalidParameterError, ReprkitError

torch = pytest.importorskip("torch")

B, D, C = 8, 4, 4


def _data(dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, D, generator=g, dtype=dtype)
    x2 = torch.randn(B, D, generator=g, dtype=dtype)
    y = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    w = torch.randn(C, D, generator=g, dtype=dtype)
    w3 = torch.randn(3 * C, D, generator=g, dtype=dtype)
    return x, x2, y, w, w3


# name -> (function, builder of (args, kwargs) from (x, x2, y, w, w3), index of the embeddings argument).
SPECS = {
    "contrastive_loss": (F.contrastive_loss, lambda x, x2, y, w, w3: ((x, y), {})),
    "triplet_margin_loss": (F.triplet_margin_loss, lambda x, x2, y, w, w3: ((x, y), {})),
    "triplet_batch_hard": (F.triplet_margin_loss, lambda x, x2, y, w, w3: ((x, y), {"mining": "batch_hard", "squared": False})),
    "lifted_structure_loss": (F.lifted_structure_loss, lambda x, x2, y, w, w3: ((x, y), {})),
    "multi_similarity_loss": (F.multi_similarity_loss, lambda x, x2, y, w, w3: ((x, y), {})),
    "circle_loss": (F.circle_loss, lambda x, x2, y, w, w3: ((x, y), {})),
    "npair_loss": (F.npair_loss, lambda x, x2, y, w, w3: ((x, x2), {})),
    "ntxent_loss": (F.ntxent_loss, lambda x, x2, y, w, w3: ((x, x2), {})),
    "infonce_loss": (F.infonce_loss, lambda x, x2, y, w, w3: ((x, x2), {})),
    "supcon_loss": (F.supcon_loss, lambda x, x2, y, w, w3: ((x, y), {})),
    "alignment_loss": (F.alignment_loss, lambda x, x2, y, w, w3: ((x, x2), {})),
    "uniformity_loss": (F.uniformity_loss, lambda x, x2, y, w, w3: ((x,), {})),
    "hypersphere_loss": (F.hypersphere_loss, lambda x, x2, y, w, w3: ((x, x2), {})),
    "normalized_softmax_loss": (F.normalized_softmax_loss, lambda x, x2, y, w, w3: ((x, y, w), {})),
    "cosface_loss": (F.cosface_loss, lambda x, x2, y, w, w3: ((x, y, w), {})),
    "arcface_loss": (F.arcface_loss, lambda x, x2, y, w, w3: ((x, y, w), {})),
    "subcenter_arcface_loss": (F.subcenter_arcface_loss, lambda x, x2, y, w, w3: ((x, y, w3), {})),
    "center_loss": (F.center_loss, lambda x, x2, y, w, w3: ((x, y, w, w.clone()), {})),
    "proxy_anchor_loss": (F.proxy_anchor_loss, lambda x, x2, y, w, w3: ((x, y, w), {})),
    "proxy_nca_loss": (F.proxy_nca_loss, lambda x, x2, y, w, w3: ((x, y, w), {})),
    "negative_cosine_loss": (F.negative_cosine_loss, lambda x, x2, y, w, w3: ((x, x2), {})),
    "symmetric_negative_cosine_loss": (
        F.symmetric_negative_cosine_loss, lambda x, x2, y, w, w3: ((x, x2, x2.flip(0), x.flip(0)), {})),
    "barlow_twins_loss": (F.barlow_twins_loss, lambda x, x2, y, w, w3: ((x, x2), {})),
    "vicreg_loss": (F.vicreg_loss, lambda x, x2, y, w, w3: ((x, x2), {})),
    "clip_loss": (F.clip_loss, lambda x, x2, y, w, w3: ((x, x2), {})),
    "siglip_loss": (F.siglip_loss, lambda x, x2, y, w, w3: ((x, x2), {})),
    "dino_loss": (F.dino_loss, lambda x, x2, y, w, w3: (([x2.softmax(1), x2.flip(0).softmax(1)], [x, x.flip(1)]), {})),
    "pairwise_distances": (reprkit.pairwise_distances, lambda x, x2, y, w, w3: ((x,), {})),
    "pairwise_distances_xy": (reprkit.pairwise_distances, lambda x, x2, y, w, w3: ((x, x2), {"metric": "cosine"})),
    "batch_hard": (M.batch_hard, lambda x, x2, y, w, w3: ((x, y), {})),
    "batch_all": (M.batch_all, lambda x, x2, y, w, w3: ((x, y), {})),
    "semi_hard": (M.semi_hard, lambda x, x2, y, w, w3: ((x, y), {})),
    "triplet_margin": (M.triplet_margin, lambda x, x2, y, w, w3: ((x, y), {})),
    "pair_margin": (M.pair_margin, lambda x, x2, y, w, w3: ((x, y), {})),
    "multi_similarity": (M.multi_similarity, lambda x, x2, y, w, w3: ((x, y), {})),
    "distance_weighted": (M.distance_weighted, lambda x, x2, y, w, w3: ((x, y), {"random_state": 0})),
}
MINERS = {"batch_hard", "batch_all", "semi_hard", "triplet_margin", "pair_margin", "multi_similarity", "distance_weighted"}
LOSSES = sorted(set(SPECS) - MINERS - {"pairwise_distances", "pairwise_distances_xy"})
# Arguments that are not embeddings (labels, weights of classes) are fuzzed through the first one.
NON_TENSOR_FIRST = {"dino_loss"}


def _call(name, transform=None, dtype=torch.float64, **extra):
    fn, build = SPECS[name]
    args, kw = build(*_data(dtype))
    args = list(args)
    if transform is not None:
        args[0] = transform(args[0])
    kw.update(extra)
    return fn(*args, **kw)


def _first_param(name):
    return next(iter(inspect.signature(SPECS[name][0]).parameters))


def _finite(out):
    """Every tensor/array in a result is finite (miners return index tuples)."""
    outs = out if isinstance(out, (tuple, list)) else (out,)
    for o in outs:
        if isinstance(o, torch.Tensor) and o.is_floating_point():
            assert bool(torch.isfinite(o).all()), o
        elif isinstance(o, np.ndarray) and o.dtype.kind == "f":
            assert np.isfinite(o).all()


def _clear_error(excinfo, *names):
    """A reprkit ValueError/TypeError whose message names one of ``names``."""
    e = excinfo.value
    assert isinstance(e, ReprkitError) and isinstance(e, (ValueError, TypeError)), repr(e)
    msg = str(e)
    assert any(n in msg for n in names), f"{msg!r} does not name {names}"


BAD_ARRAYS = {
    "int": lambda x: torch.ones(B, D, dtype=torch.int64),
    "bool": lambda x: torch.ones(B, D, dtype=torch.bool),
    "complex": lambda x: torch.ones(B, D, dtype=torch.complex64),
    "1d": lambda x: x[:, 0].contiguous(),
    "3d": lambda x: x[None],
    "empty_rows": lambda x: x[:0],
    "empty_cols": lambda x: x[:, :0],
    "nan": lambda x: x.index_put((torch.tensor([1]), torch.tensor([2])), torch.tensor(float("nan"), dtype=x.dtype)),
    "inf": lambda x: x.index_put((torch.tensor([0]), torch.tensor([0])), torch.tensor(float("-inf"), dtype=x.dtype)),
    "meta": lambda x: x.to("meta"),
    "sparse_coo": lambda x: x.to_sparse(),
    "sparse_csr": lambda x: x.to_sparse_csr(),
    "scipy_sparse": lambda x: scipy.sparse.csr_matrix(x.numpy()),
    "string": lambda x: "embeddings",
    "none": lambda x: None,
}


@pytest.mark.parametrize("bad", sorted(BAD_ARRAYS))
@pytest.mark.parametrize("name", sorted(set(SPECS) - NON_TENSOR_FIRST))
def test_bad_arrays_raise_a_clear_error(name, bad):
    with pytest.raises(Exception) as ei:
        _call(name, BAD_ARRAYS[bad])
    _clear_error(ei, _first_param(name))


@pytest.mark.parametrize("name", sorted(set(SPECS) - NON_TENSOR_FIRST))
def test_lists_are_refused_or_converted(name):
    try:
        out = _call(name, lambda x: x.tolist())
    except Exception as e:  # noqa: BLE001 - checked below
        assert isinstance(e, ReprkitError) and _first_param(name) in str(e), repr(e)
    else:
        _finite(out)


# Losses that are mean squared distances by definition: at 1e30 (1e300) their true value exceeds the
# dtype's range, so +inf is the right answer (never NaN).
SQUARES_OVERFLOW = {"alignment_loss", "center_loss", "hypersphere_loss"}


@pytest.mark.parametrize("scale", [1e30, 1e-30])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", sorted(set(SPECS) - NON_TENSOR_FIRST))
def test_extreme_finite_values_give_finite_results_or_a_clear_error(name, dtype, scale):
    """Scaled inputs (1e30 / 1e-30; 1e300 / 1e-300 in float64) never turn into NaN: a finite result
    (finite gradients for the losses), or a clear error; +inf only where the true value exceeds the range."""
    s = scale if dtype == torch.float32 else scale**10
    fn, build = SPECS[name]
    args, kw = build(*_data(torch.float64))
    x = (args[0] * s).to(dtype).requires_grad_(name in LOSSES)
    args = [x] + [a.to(dtype) if isinstance(a, torch.Tensor) and a.is_floating_point() else a for a in args[1:]]
    try:
        out = fn(*args, **kw)
    except ReprkitError as e:
        assert isinstance(e, (ValueError, TypeError))
        return
    outs = out if isinstance(out, (tuple, list)) else (out,)
    for o in outs:
        if isinstance(o, torch.Tensor) and o.is_floating_point():
            assert not bool(torch.isnan(o).any()), f"{name}: NaN at scale {s}"
    if name in LOSSES:
        if name in SQUARES_OVERFLOW and scale > 1:
            assert bool(torch.isfinite(out)) or float(out) == float("inf"), f"{name}: loss {out} at scale {s}"
        elif dtype == torch.float32 and float(out.detach()) == float("inf"):
            # +inf only where the true value (computed in float64 on the same inputs) exceeds float32's range
            wide = fn(*[a.detach().double() if isinstance(a, torch.Tensor) and a.is_floating_point() else a for a in args], **kw)
            assert float(wide) > float(torch.finfo(torch.float32).max), f"{name}: inf at scale {s}, float64 gives {float(wide)}"
        else:
            assert bool(torch.isfinite(out)), f"{name}: loss {out} at scale {s}"
        (g,) = torch.autograd.grad(out, x)
        assert not bool(torch.isnan(g).any()), f"{name}: NaN gradient at scale {s}"
        if bool(torch.isfinite(out)):
            assert bool(torch.isfinite(g).all()), f"{name}: non-finite gradient at scale {s}"
    elif name.startswith("pairwise_distances"):
        assert bool(torch.isfinite(out).all()), f"{name}: {out} at scale {s}"


def test_pairwise_distances_of_huge_rows_match_float64_and_sqeuclidean_beyond_range_is_inf():
    r = np.random.default_rng(0)
    x = r.standard_normal((70, 9))
    for dt, s in ((np.float32, 1e30), (np.float64, 1e300)):
        xs = (x * s).astype(dt)
        want = np.sqrt(((x[:, None] - x[None]) ** 2).sum(-1)) * s
        got = reprkit.pairwise_distances(xs)
        assert got.dtype == dt
        np.testing.assert_allclose(got, want, rtol=1e-5 if dt == np.float32 else 1e-12, atol=0)
        sq = reprkit.pairwise_distances(xs, metric="sqeuclidean")
        off = ~np.eye(70, dtype=bool)
        assert np.isinf(sq[off]).all() and (np.diag(sq) == 0).all()
        # The torch reference (the path of non-CPU devices) scales the same way.
        from reprkit import reference as R

        ref = R.pairwise_distances(torch.from_numpy(xs)).numpy()
        np.testing.assert_allclose(ref, want, rtol=1e-5 if dt == np.float32 else 1e-12, atol=0)
        assert np.isinf(R.pairwise_distances(torch.from_numpy(xs), metric="sqeuclidean").numpy()[off]).all()


def test_duplicate_rows_are_exact_zeros_and_near_duplicates_keep_precision():
    """Half the rows one repeated point, plus near-duplicates 1e-4 apart: exact 0 between the copies
    (x vs x and x vs y), float64-accurate distances elsewhere."""
    r = np.random.default_rng(1)
    x = r.standard_normal((300, 16)).astype(np.float32) + 50.0
    x[:150] = x[0]
    x[150:160] = x[160:170] + (1e-4 * r.standard_normal((10, 16))).astype(np.float32)
    y = np.concatenate([x[:5], r.standard_normal((40, 16)).astype(np.float32) + 50.0])
    for a, b in ((x, None), (x, y)):
        got = reprkit.pairwise_distances(a, b)
        bb = a if b is None else b
        truth = np.sqrt(((a[:, None].astype(np.float64) - bb[None].astype(np.float64)) ** 2).sum(-1))
        assert (got[:150, :5] == 0).all()
        nz = truth > 0
        assert np.max(np.abs(got[nz] - truth[nz]) / truth[nz]) < 1e-5
        assert (got[~nz] == 0).all()


# Each public function's numeric and boolean parameters: bad values that must be refused, naming it.
def _numeric_params(fn):
    out = []
    for p in inspect.signature(fn).parameters.values():
        if isinstance(p.default, bool):
            out.append((p.name, "bool"))
        elif isinstance(p.default, float) and p.name not in ("logit_scale", "logit_bias"):
            out.append((p.name, "float"))
    return out


PARAM_CASES = sorted({(n, p, k) for n in SPECS for p, k in _numeric_params(SPECS[n][0])})
BAD_FLOATS = [float("nan"), float("inf"), -float("inf"), 1e39, -1e39, "0.1", True, None]


@pytest.mark.parametrize("name,param,kind", PARAM_CASES)
def test_impossible_parameters_are_refused_naming_the_parameter(name, param, kind):
    bads = ["no", "yes", 1, 0, "True"] if kind == "bool" else BAD_FLOATS
    for v in bads:
        with pytest.raises(Exception) as ei:
            _call(name, None, **{param: v})
        _clear_error(ei, param)


@pytest.mark.parametrize("name", ["ntxent_loss", "infonce_loss", "supcon_loss"])
def test_temperature_whose_reciprocal_overflows_float32_is_refused(name):
    with pytest.raises(InvalidParameterError, match="temperature"):
        _call(name, None, dtype=torch.float32, temperature=1e-39)
    # The smallest accepted temperature gives a finite loss (log-sum-exp) in float32.
    x, x2, y, *_ = _data(torch.float32)
    out = _call(name, None, dtype=torch.float32, temperature=1e-30)
    assert bool(torch.isfinite(out))


def test_margin_finite_in_float64_but_inf_in_float32_is_refused():
    for name in ("contrastive_loss", "triplet_margin_loss", "proxy_anchor_loss"):
        with pytest.raises(InvalidParameterError, match="margin"):
            _call(name, None, margin=1e300)


@pytest.mark.parametrize("n_jobs", [10**6, 2**64, -1, -2, -(10**6)])
@pytest.mark.parametrize("name", ["pairwise_distances", "triplet_batch_hard", "ntxent_loss", "batch_hard", "clip_loss"])
def test_huge_and_negative_n_jobs_are_capped(name, n_jobs):
    out = _call(name, None, n_jobs=n_jobs)
    _finite(out)


@pytest.mark.parametrize("n_jobs", [0, 1.5, "2", True, None.__class__])
def test_bad_n_jobs_is_refused(n_jobs):
    for name in ("pairwise_distances", "ntxent_loss", "batch_hard"):
        with pytest.raises(InvalidParameterError, match="n_jobs"):
            _call(name, None, n_jobs=n_jobs)


def test_set_num_threads_caps_and_follows_sklearn_for_negatives():
    try:
        for n in (10**6, 2**64):
            reprkit.set_num_threads(n)
            assert reprkit.get_num_threads() == _threads.max_threads()
        reprkit.set_num_threads(-1)
        assert reprkit.get_num_threads() == _threads._cpu_count()
        reprkit.set_num_threads(-(10**6))
        assert reprkit.get_num_threads() == 1
        for bad in (0, 1.5, "4", True):
            with pytest.raises(InvalidParameterError, match="set_num_threads"):
                reprkit.set_num_threads(bad)
        assert _threads.resolve_n_jobs(np.int64(3)) == min(3, _threads.max_threads())
    finally:
        reprkit.set_num_threads(None)


def test_numpy_inputs_to_distances_keep_their_type_and_lists_convert():
    x = np.random.default_rng(0).standard_normal((5, 3))
    np.testing.assert_array_equal(reprkit.pairwise_distances(x.tolist()), reprkit.pairwise_distances(x))
    with pytest.raises(ReprkitError, match="x"):
        reprkit.pairwise_distances(scipy.sparse.csr_matrix(x))
    with pytest.raises(ReprkitError, match="metric"):
        reprkit.pairwise_distances(x, metric=None)


# ---- second derivatives: right (gradgradcheck) or refused (DoubleBackwardError) -------------------

@pytest.mark.parametrize("name", LOSSES + ["pairwise_distances", "pairwise_distances_xy"])
def test_double_backward_is_right_or_refused(name):
    fn, build = SPECS[name]
    args, kw = build(*_data(torch.float64, seed=3))
    if name == "dino_loss":
        x = args[1][0].detach().requires_grad_()
        args = (args[0], [x, args[1][1]])
    else:
        x = args[0].detach().requires_grad_()
        args = (x,) + tuple(args[1:])

    def f(t):
        a = (t,) + tuple(args[1:]) if name != "dino_loss" else (args[0], [t, args[1][1]])
        out = fn(*a, **kw)
        return out.sum() if out.dim() else out

    (g,) = torch.autograd.grad(f(x), x, create_graph=True)
    if not g.requires_grad:
        pytest.fail(f"{name}: the gradient is not differentiable and says nothing (expected DoubleBackwardError)")
    try:
        (gg,) = torch.autograd.grad(g.square().sum(), x)
    except DoubleBackwardError as e:
        assert name.split("_xy")[0].replace("triplet_batch_hard", "triplet") in str(e) or "reprkit" in str(e)
        return
    # Supported: must agree with finite differences of the first derivative.
    assert torch.autograd.gradgradcheck(f, (x,), atol=1e-5, rtol=1e-4)
    assert bool(torch.isfinite(gg).all())


def _modules():
    import reprkit.losses as L

    lab = lambda m: (lambda x, x2, y: m(x, y))  # noqa: E731
    two = lambda m: (lambda x, x2, y: m(x, x2))  # noqa: E731
    return {
        "ContrastiveLoss": lab(L.ContrastiveLoss()),
        "TripletMarginLoss": lab(L.TripletMarginLoss()),
        "LiftedStructureLoss": lab(L.LiftedStructureLoss()),
        "MultiSimilarityLoss": lab(L.MultiSimilarityLoss()),
        "CircleLoss": lab(L.CircleLoss()),
        "NPairLoss": two(L.NPairLoss()),
        "NTXentLoss": two(L.NTXentLoss()),
        "InfoNCELoss": two(L.InfoNCELoss()),
        "SupConLoss": lab(L.SupConLoss()),
        "HypersphereLoss": two(L.HypersphereLoss()),
        "NormalizedSoftmaxLoss": lab(L.NormalizedSoftmaxLoss(C, D).double()),
        "CosFaceLoss": lab(L.CosFaceLoss(C, D).double()),
        "ArcFaceLoss": lab(L.ArcFaceLoss(C, D).double()),
        "SubCenterArcFaceLoss": lab(L.SubCenterArcFaceLoss(C, D).double()),
        "CenterLoss": lab(L.CenterLoss(C, D).double()),
        "ProxyAnchorLoss": lab(L.ProxyAnchorLoss(C, D, dtype=torch.float64)),
        "ProxyNCALoss": lab(L.ProxyNCALoss(C, D, dtype=torch.float64)),
        "NegativeCosineLoss": two(L.NegativeCosineLoss()),
        "DINOLoss": lambda x, x2, y, m=L.DINOLoss(D).double(): m([x2, x2.flip(0)], [x, x.flip(1)]),
        "BarlowTwinsLoss": two(L.BarlowTwinsLoss()),
        "VICRegLoss": two(L.VICRegLoss()),
        "CLIPLoss": two(L.CLIPLoss().double()),
        "SigLIPLoss": two(L.SigLIPLoss().double()),
        "TSNELoss": lambda x, x2, y, m=L.TSNELoss(perplexity=2.0): m(x2, x),  # P from x2, Q on x
    }


def test_every_public_loss_module_is_listed():
    import reprkit.losses as L

    mods = {n for n in L.__all__ if isinstance(getattr(L, n), type) and issubclass(getattr(L, n), torch.nn.Module)}
    # MemoryBank stores embeddings (no loss); VICRegGraphLoss takes a graph (its function shares VICReg's kernels).
    assert mods - {"MemoryBank", "VICRegGraphLoss"} == set(_modules())


@pytest.mark.parametrize("name", sorted(_modules()))
def test_double_backward_of_every_module_is_right_or_refused(name):
    fn = _modules()[name]
    x0, x2, y, *_ = _data(torch.float64, seed=5)
    x = x0.detach().requires_grad_()
    out = fn(x, x2, y)
    (g,) = torch.autograd.grad(out, x, create_graph=True)
    assert g.requires_grad, f"{name}: a non-differentiable gradient without DoubleBackwardError"
    try:
        torch.autograd.grad(g.square().sum(), x)
    except DoubleBackwardError as e:
        assert "double backward" in str(e)
        return
    assert torch.autograd.gradgradcheck(lambda t: fn(t, x2, y), (x,), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("loss,kw", [
    ("triplet_margin_loss", dict(distance="euclidean", mining="batch_hard")),
    ("triplet_margin_loss", dict(distance="euclidean", mining="all")),
    ("triplet_margin_loss", dict(distance="euclidean", soft=True)),
])
def test_euclidean_pair_losses_of_huge_float32_rows_match_float64(loss, kw):
    """At 1e30 the squared distances overflow float32 but the loss (a margin of distances) does not:
    the value and gradient equal the float64 computation, in float32."""
    import reprkit.functional as fx

    g = torch.Generator().manual_seed(3)
    x64 = torch.randn(24, 6, generator=g, dtype=torch.float64) * 1e30
    y = torch.randint(0, 3, (24,), generator=g)
    fn = getattr(fx, loss)
    x32 = x64.float().requires_grad_()
    out = fn(x32, y, **kw)
    assert out.dtype == torch.float32 and bool(torch.isfinite(out))
    wide = x32.detach().double().requires_grad_()
    ref = fn(wide, y, **kw)
    assert float(out) == pytest.approx(float(ref), rel=1e-6)
    (g32,) = torch.autograd.grad(out, x32)
    (g64,) = torch.autograd.grad(ref, wide)
    assert g32.dtype == torch.float32
    torch.testing.assert_close(g32.double(), g64, rtol=1e-5, atol=1e-6 * float(g64.abs().max()))
