"""reprkit.testing against real behaviour: correct custom autograd Functions pass, broken ones
fail with a message that says what and where; the strategies produce what they claim."""

from __future__ import annotations

import re
import sys

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.autograd.function import once_differentiable

from reprkit.testing import (
    EMBEDDING_KINDS,
    LABEL_STRUCTURES,
    assert_double_backward,
    assert_gradients_match,
    default_tolerances,
    embeddings,
    labelled_batches,
    labels,
    make_embeddings,
    make_labels,
    paired_views,
)

# --------------------------------------------------------------------------------------------
# Functions under test: hand-written forward/backward pairs and their torch references
# --------------------------------------------------------------------------------------------


class Softplus(torch.autograd.Function):
    """Stable softplus with an analytic backward (differentiable: built from torch ops)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.clamp_min(0) + torch.log1p(torch.exp(-x.abs()))

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * torch.sigmoid(x)


def softplus_ref(x):
    return torch.nn.functional.softplus(x)


def _broken_softplus(grad_fn):
    """A Softplus whose backward is grad_fn(x, g) (forward unchanged)."""

    class Broken(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x.clamp_min(0) + torch.log1p(torch.exp(-x.abs()))

        @staticmethod
        def backward(ctx, g):
            (x,) = ctx.saved_tensors
            return grad_fn(x, g)

    return Broken.apply


def _at(t, index, value):
    t = t.clone()
    t[index] = value
    return t


MARGIN = 1.0


def _contrastive_terms(x, y):
    diff = x[:, None, :] - x[None, :, :]
    d = diff.norm(dim=-1)
    same = y[:, None] == y[None, :]
    off = ~torch.eye(len(y), dtype=torch.bool, device=x.device)
    return diff, d, same, off


class Contrastive(torch.autograd.Function):
    """Per-anchor contrastive loss: mean over j != i of d² (same label) or relu(m − d)² (other)."""

    @staticmethod
    def forward(ctx, x, y):
        diff, d, same, off = _contrastive_terms(x, y)
        terms = torch.where(same, d**2, (MARGIN - d).clamp_min(0) ** 2) * off
        ctx.save_for_backward(x, y)
        return terms.sum(dim=1) / max(len(y) - 1, 1)

    @staticmethod
    def backward(ctx, g):
        x, y = ctx.saved_tensors
        diff, d, same, off = _contrastive_terms(x, y)
        dterm = torch.where(same, 2 * d, -2 * (MARGIN - d).clamp_min(0)) * off  # ∂term/∂d
        unit = torch.where(d[..., None] > 0, diff / d.clamp_min(torch.finfo(d.dtype).tiny)[..., None], 0.0)
        w = (g[:, None] + g[None, :]) * dterm / max(len(y) - 1, 1)  # term (i, j) is in rows i and j
        return (w[..., None] * unit).sum(dim=1), None


def contrastive_ref(x, y):
    diff = x[:, None, :] - x[None, :, :]
    d = torch.linalg.vector_norm(diff, dim=-1)  # gradient 0 at d = 0
    same = y[:, None] == y[None, :]
    terms = torch.where(same, d.pow(2), torch.relu(MARGIN - d).pow(2))
    terms = terms * (1 - torch.eye(len(y), dtype=x.dtype, device=x.device))
    return terms.sum(dim=1) / max(len(y) - 1, 1)


# --------------------------------------------------------------------------------------------
# assert_gradients_match: correct functions pass
# --------------------------------------------------------------------------------------------


@settings(max_examples=30)
@given(embeddings(n=(1, 8), d=(1, 4)))
def test_softplus_matches_reference_on_every_kind(x):
    report = assert_gradients_match(Softplus.apply, softplus_ref, x, names=("x",))
    assert report.differentiated == (0,)
    assert report.gradcheck == "passed"
    assert report.max_error_ratio <= 1.0


@settings(max_examples=30)
@given(labelled_batches(n=(2, 10), d=(1, 4)))
def test_contrastive_function_matches_reference(batch):
    x, y = batch
    report = assert_gradients_match(Contrastive.apply, contrastive_ref, x, y, names=("x", "labels"))
    assert report.differentiated == (0,)  # labels pass through untouched


@settings(max_examples=15)
@given(paired_views(n=(1, 6), d=(1, 3), dtype=torch.float64))
def test_two_differentiated_inputs(views):
    z1, z2 = views

    def fn(a, b):
        return Softplus.apply(a - b).sum(dim=1)

    def ref(a, b):
        return softplus_ref(a - b).sum(dim=1)

    assert assert_gradients_match(fn, ref, z1, z2).differentiated == (0, 1)


def test_scalar_and_tuple_outputs_and_integer_outputs():
    x = make_embeddings(6, 3, seed=1)
    y = make_labels(6, "balanced", 2, seed=1)

    def fn(x, y):
        loss = Contrastive.apply(x, y)
        return loss.mean(), (loss > 0.5).sum(), loss

    def ref(x, y):
        loss = contrastive_ref(x, y)
        return loss.mean(), (loss > 0.5).sum(), loss

    report = assert_gradients_match(fn, ref, x, y)
    assert report.gradcheck == "passed" and report.notes == ()


def test_half_precision_tolerances_and_output_dtype():
    x = make_embeddings(4, 3, seed=2, dtype=torch.bfloat16)
    assert assert_gradients_match(Softplus.apply, softplus_ref, x).gradcheck == "passed"

    def upcasting(x):  # computes and returns float32 for half inputs, like reprkit's losses
        return Softplus.apply(x.float() if x.dtype in (torch.float16, torch.bfloat16) else x)

    with pytest.raises(AssertionError, match=r"dtype mismatch for output 0: fn gives torch.float32, expected torch.bfloat16"):
        assert_gradients_match(upcasting, softplus_ref, x)
    assert_gradients_match(upcasting, softplus_ref, x, output_dtype=torch.float32)


def test_inputs_are_not_modified_and_get_no_grad():
    x = make_embeddings(5, 2, seed=3).requires_grad_(True)
    before = x.detach().clone()
    w = torch.rand(5, 2, generator=torch.Generator().manual_seed(0))  # does not require grad

    def fn(x, w):
        return Softplus.apply(x) * w

    def ref(x, w):
        return softplus_ref(x) * w

    report = assert_gradients_match(fn, ref, x, w)
    assert report.differentiated == (0,)  # only the input that requires grad
    assert x.grad is None and torch.equal(x.detach(), before)


def test_zero_gradients_by_symmetry_pass_in_float32():
    # Collapsed rows: the cosine-similarity gradient is 0 up to rounding; rounding noise of the
    # float32 fn must not count as a mismatch against the float64 reference's ~1e-17.
    x = make_embeddings(6, 4, "collapsed", seed=0)
    x = x[0].expand(6, 4).clone()

    def cos_loss(x):
        u = x / x.norm(dim=1, keepdim=True)
        return (u @ u.T).sum()

    assert_gradients_match(cos_loss, cos_loss, x)
    assert "gradient mismatch" in _fails(cos_loss, cos_loss, x, rounding_allowance=False, gradcheck=False)

    def pushes(x):  # a small constant gradient where the true one is exactly zero
        return cos_loss(x) + 1e-3 * (x - x.detach()).sum()

    assert "gradient mismatch for input 0" in _fails(pushes, cos_loss, x, gradcheck=False)


# --------------------------------------------------------------------------------------------
# assert_gradients_match: broken functions fail, and say how
# --------------------------------------------------------------------------------------------

X = make_embeddings(5, 3, seed=7)  # float32, no element near 0 matters for softplus


def _fails(fn, reference=softplus_ref, *inputs, **kw):
    with pytest.raises(AssertionError) as info:
        assert_gradients_match(fn, reference, *(inputs or (X,)), **kw)
    return str(info.value)


def test_gradient_off_by_a_factor():
    msg = _fails(_broken_softplus(lambda x, g: 1.5 * g * torch.sigmoid(x)), names=("x",))
    assert "gradient mismatch for input 0 ('x': torch.float32, shape (5, 3)): 15 of 15 elements differ" in msg
    assert "first at index (0, 0): fn = " in msg
    assert re.search(r"abs error \S+, rel error 0\.5, tolerance \S+ \(atol \S+ .*rtol 0\.002", msg)
    assert "grad_outputs='random', seed 0" in msg
    # gradcheck, independent of the reference, fails too and locates the same element
    assert "gradcheck failed for input 0 ('x'" in msg and "fn's backward = " in msg


def test_gradient_wrong_at_one_index():
    bad = _broken_softplus(lambda x, g: _at(g * torch.sigmoid(x), (3, 1), 0.0))
    msg = _fails(bad)
    assert "gradient mismatch for input 0 (torch.float32, shape (5, 3)): 1 of 15 elements differ" in msg
    assert "first at index (3, 1): fn = 0, reference = " in msg
    assert "rel error 1," in msg


def test_value_mismatch():
    def fn(x):
        return _at(Softplus.apply(x), (2, 2), 0.0) + 0 * x

    msg = _fails(fn, gradcheck=False)
    assert "value mismatch for output 0 (torch.float32, shape (5, 3)): 1 of 15 elements differ" in msg
    assert "first at index (2, 2): fn = 0, reference = " in msg


def test_dtype_change():
    msg = _fails(lambda x: Softplus.apply(x.double()), gradcheck=False)
    assert "dtype mismatch for output 0: fn gives torch.float64, expected torch.float32" in msg


def test_non_finite_gradient():
    bad = _broken_softplus(lambda x, g: _at(g * torch.sigmoid(x), (1, 2), float("nan")))
    msg = _fails(bad, gradcheck=False)
    assert "non-finite gradient for input 0 (torch.float32, shape (5, 3)): fn is nan where the reference is finite, at 1 of 15 elements" in msg
    assert "first at index (1, 2): fn = nan" in msg


def test_non_finite_value():
    msg = _fails(lambda x: Softplus.apply(x) / (x - x[0, 0]) * (x - x[0, 0]), gradcheck=False)
    assert "non-finite value for output 0" in msg and "index (0, 0)" in msg


def test_gradcheck_catches_an_error_the_reference_shares():
    bad = _broken_softplus(lambda x, g: 2 * g * torch.sigmoid(x))
    msg = _fails(bad, bad)  # reference = the same wrong Function: values and gradients agree
    assert "gradient mismatch" not in msg
    assert "gradcheck failed for input 0" in msg and "finite difference = " in msg
    assert "the reference may share the error" in msg
    assert_gradients_match(bad, bad, X, gradcheck=False)  # without gradcheck it goes unnoticed


def test_gradcheck_passing_points_at_the_reference():
    wrong_ref = lambda x: softplus_ref(x) + 0.5 * (x.detach() - x)  # right values, gradient off by -0.5  # noqa: E731
    msg = _fails(Softplus.apply, wrong_ref)
    assert "gradient mismatch for input 0" in msg and "gradcheck of fn passed" in msg


def test_gradcheck_skipped_for_big_inputs_unless_forced():
    report = assert_gradients_match(Softplus.apply, softplus_ref, X, gradcheck_max_numel=10)
    assert report.gradcheck == "skipped" and "gradcheck_max_numel=10" in report.notes[0]
    assert assert_gradients_match(Softplus.apply, softplus_ref, X, gradcheck="force", gradcheck_max_numel=10).gradcheck == "passed"
    assert assert_gradients_match(Softplus.apply, softplus_ref, X, gradcheck=False).gradcheck == "off"


def test_random_grad_outputs_catch_what_ones_miss():
    # A backward that ignores its upstream gradient is right only for out.sum().backward().
    ignores_g = _broken_softplus(lambda x, g: torch.sigmoid(x))
    assert_gradients_match(ignores_g, softplus_ref, X, grad_outputs="ones", gradcheck=False)
    assert "gradcheck failed" in _fails(ignores_g, grad_outputs="ones")  # gradcheck sends one-hot upstreams
    assert "gradient mismatch for input 0" in _fails(ignores_g, gradcheck=False)
    explicit = torch.full((5, 3), 2.0)
    assert "grad_outputs='given'" in _fails(ignores_g, grad_outputs=explicit, gradcheck=False)


def test_names_and_nondiff():
    def fn(x, w):  # wrong gradient for w only
        return Softplus.apply(x) * w.detach() + (w - w.detach()) * 3.0

    def ref(x, w):
        return softplus_ref(x) * w

    w = torch.rand(5, 3, generator=torch.Generator().manual_seed(1)) + 0.5
    msg = _fails(fn, ref, X, w, names=("x", "w"), gradcheck=False)
    assert "gradient mismatch for input 1 ('w': torch.float32, shape (5, 3))" in msg
    assert "input 0" not in msg
    assert assert_gradients_match(fn, ref, X, w, names=("x", "w"), nondiff="w").differentiated == (0,)
    assert assert_gradients_match(fn, ref, X, w, nondiff=[1]).differentiated == (0,)


def test_structure_mismatches():
    assert "fn returned 2 outputs, the reference 1" in _fails(lambda x: (Softplus.apply(x), x.sum()))
    assert "shape mismatch for output 0: fn gives (15,), the reference (5, 3)" in _fails(lambda x: Softplus.apply(x).reshape(-1))
    with pytest.raises(TypeError, match="fn must return a tensor or a tuple of tensors"):
        assert_gradients_match(lambda x: 1.0, softplus_ref, X)


def test_integer_output_mismatch():
    def fn(x):
        return Softplus.apply(x), (x > 0).sum(dim=1) + 1

    def ref(x):
        return softplus_ref(x), (x > 0).sum(dim=1)

    assert "value mismatch for output 1 (torch.int64): 5 of 5 elements differ" in _fails(fn, ref, gradcheck=False)


def test_reference_nan_is_not_compared_but_inf_must_match():
    def ref_nan(x):
        return _at(softplus_ref(x), (0, 0), float("nan"))

    assert_gradients_match(Softplus.apply, ref_nan, X, nondiff=0)  # values only

    def ref_inf(x):
        return softplus_ref(x) + torch.where(torch.arange(15).reshape(5, 3) == 4, float("inf"), 0.0).to(x.dtype)

    msg = _fails(Softplus.apply, ref_inf, gradcheck=False)
    assert "value mismatch for output 0" in msg and "index (1, 1)" in msg and "reference = inf" in msg


def test_default_tolerances_by_dtype():
    assert default_tolerances(torch.float64) == (1e-7, 1e-7)
    assert default_tolerances(torch.float32) == (2e-3, 1e-4)
    r16, a16 = default_tolerances(torch.float16)
    rb, ab = default_tolerances(torch.bfloat16)
    assert 2e-3 < r16 <= rb and 1e-4 < a16 <= ab


# --------------------------------------------------------------------------------------------
# assert_double_backward
# --------------------------------------------------------------------------------------------


class OnceSoftplus(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return softplus_ref(x)

    @staticmethod
    @once_differentiable
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * torch.sigmoid(x)


def test_double_backward_outcomes():
    x = X.double()
    assert assert_double_backward(Softplus.apply, x) == "gradgradcheck"
    assert assert_double_backward(OnceSoftplus.apply, x) == "raises"
    detached = _broken_softplus(lambda x, g: (g * torch.sigmoid(x)).detach())
    with pytest.raises(AssertionError, match=r"silently wrong: fn's gradient w.r.t. input 0 .* is detached"):
        assert_double_backward(detached, x)
    # first order right, second order wrong: the backward treats x as a constant
    wrong_second = _broken_softplus(lambda x, g: g * torch.sigmoid(x.detach()))
    with pytest.raises(AssertionError, match="silently wrong: gradgradcheck of fn failed"):
        assert_double_backward(wrong_second, x)


# --------------------------------------------------------------------------------------------
# Strategies
# --------------------------------------------------------------------------------------------


def _rows_equal(x):
    return torch.unique(x, dim=0).shape[0] < x.shape[0]


def _pairwise(x):
    x = x.double()
    return (x[:, None] - x[None]).norm(dim=-1) + torch.diag(torch.full((len(x),), float("inf")))


@settings(max_examples=20)
@given(embeddings(n=5, d=3, dtype=torch.float64))
def test_embeddings_fixed_shape_and_dtype(x):
    assert x.shape == (5, 3) and x.dtype == torch.float64 and not x.requires_grad
    assert torch.isfinite(x).all()


@settings(max_examples=30)
@given(embeddings(n=(0, 9), d=st.integers(1, 5), dtype=[torch.float16, torch.bfloat16, torch.float32]))
def test_embeddings_ranges_and_half_dtypes_stay_finite(x):
    assert 0 <= x.shape[0] <= 9 and 1 <= x.shape[1] <= 5
    assert x.dtype in (torch.float16, torch.bfloat16, torch.float32)
    assert torch.isfinite(x).all()
    sq = ((x[:, None] - x[None]) ** 2).sum(-1)  # squared distances computed in the dtype itself
    assert torch.isfinite(sq).all()


SCALE = st.sampled_from([0.1, 1.0, 10.0])
SEED = st.integers(0, 2**32 - 1)
DT = st.sampled_from([torch.float32, torch.float64])


@settings(max_examples=40)
@given(n=st.integers(2, 12), d=st.integers(1, 5), seed=SEED, dtype=DT, scale=SCALE)
def test_duplicate_kinds_are_duplicated(n, d, seed, dtype, scale):
    exact = make_embeddings(n, d, "exact_duplicates", seed=seed, dtype=dtype, scale=scale)
    assert _rows_equal(exact)
    near = make_embeddings(n, d, "near_duplicates", seed=seed, dtype=torch.float64, scale=scale)
    assert _pairwise(near).min() == pytest.approx(1e-4 * scale, rel=1e-6)  # copies exactly 1e-4·scale apart


@settings(max_examples=30)
@given(n=st.integers(1, 12), d=st.integers(1, 5), seed=SEED, dtype=DT, scale=SCALE)
def test_collapsed_rows_are_one_point(n, d, seed, dtype, scale):
    x = make_embeddings(n, d, "collapsed", seed=seed, dtype=dtype, scale=scale).double()
    assert (x - x[0]).norm(dim=1).max() <= (n - 1) * 1e-4 * scale * 1.01
    if not torch.equal(x, x[:1].expand_as(x)) and dtype == torch.float64:
        assert _pairwise(x).min() == pytest.approx(1e-4 * scale, rel=1e-6)


def test_collapsed_is_sometimes_exact_and_sometimes_nearly():
    exact = [torch.equal(*make_embeddings(2, 3, "collapsed", seed=s)) for s in range(20)]
    assert any(exact) and not all(exact)


@settings(max_examples=30)
@given(n=st.integers(2, 8), d=st.integers(4, 6), seed=SEED, dtype=DT, scale=SCALE)
def test_scale_kinds(n, d, seed, dtype, scale):
    huge = make_embeddings(n, d, "huge", seed=seed, dtype=dtype, scale=scale).double()
    assert 1e4 * scale <= huge.abs().max() <= 6e6 * scale
    tiny = make_embeddings(n, d, "tiny", seed=seed, dtype=dtype, scale=scale).double()
    assert 1e-8 * scale <= tiny.abs().max() <= 6e-6 * scale
    mixed = make_embeddings(n, d, "mixed_scale", seed=seed, dtype=dtype, scale=scale).double()
    rms = mixed.pow(2).mean(dim=1).sqrt()
    assert rms.max() / rms.min() >= 10 and rms.max() >= 10 * scale


def test_huge_in_float16_is_clamped_to_representable():
    x = make_embeddings(16, 8, "huge", seed=0, dtype=torch.float16)
    assert torch.isfinite(((x[:, None] - x[None]) ** 2).sum(-1)).all()


def test_generators_are_deterministic():
    for kind in EMBEDDING_KINDS:
        a = make_embeddings(7, 3, kind, seed=11, dtype=torch.float64)
        assert torch.equal(a, make_embeddings(7, 3, kind, seed=11, dtype=torch.float64))
        assert not torch.equal(a, make_embeddings(7, 3, kind, seed=12, dtype=torch.float64))
    for structure in LABEL_STRUCTURES:
        assert torch.equal(make_labels(12, structure, seed=5), make_labels(12, structure, seed=5))


def test_strategies_are_deterministic_under_derandomize():
    def run():
        seen = []

        @settings(derandomize=True, max_examples=10, database=None)
        @given(labelled_batches(n=(2, 8)), paired_views(n=(1, 4)))
        def collect(batch, views):
            seen.append(batch + views)

        collect()
        return seen

    first, second = run(), run()
    assert len(first) == len(second) >= 5
    for a, b in zip(first, second):
        assert all(torch.equal(s, t) and s.dtype == t.dtype for s, t in zip(a, b))


@settings(max_examples=40)
@given(n=st.integers(1, 16), structure=st.sampled_from(LABEL_STRUCTURES), data=st.data())
def test_label_structures(n, structure, data):
    y = data.draw(labels(n, structure))
    assert y.dtype == torch.int64 and y.shape == (n,)
    counts = torch.unique(y, return_counts=True)[1]
    if structure == "one_class":
        assert len(counts) == 1
    elif structure == "all_distinct":
        assert len(counts) == n
    elif structure == "singletons_and_pairs":
        assert set(counts.tolist()) <= {1, 2}
        assert n < 2 or 2 in counts.tolist()
        assert n < 3 or 1 in counts.tolist()
    elif structure == "balanced":
        assert len(set(counts.tolist())) == 1
        if n >= 4 and any(n % k == 0 for k in range(2, n // 2 + 1)):  # P×K with P, K >= 2 when n allows it
            assert len(counts) >= 2 and counts[0] >= 2


@settings(max_examples=20)
@given(labels(12, "balanced", n_classes=(3, 4)), labels(30, "random", n_classes=3))
def test_label_class_counts(balanced, random):
    assert len(torch.unique(balanced)) in (3, 4)
    assert random.max() < 3


@settings(max_examples=20)
@given(labelled_batches(n=(2, 20), d=2, structure="balanced", n_classes=3, kind="exact_duplicates"))
def test_labelled_batches_balanced_sizes(batch):
    x, y = batch
    assert x.shape == (len(y), 2) and len(y) % 3 == 0
    assert (torch.unique(y, return_counts=True)[1] == len(y) // 3).all()


@settings(max_examples=20)
@given(labelled_batches())
def test_labelled_batches_consistent(batch):
    x, y = batch
    assert x.shape[0] == y.shape[0] and y.dtype == torch.int64 and x.dtype in (torch.float32, torch.float64)


def test_paired_views_include_identical_and_noisy():
    seen = {"identical": 0, "noisy": 0}

    @settings(derandomize=True, max_examples=30, database=None)
    @given(paired_views(n=(1, 6), d=(1, 4)))
    def collect(views):
        z1, z2 = views
        assert z1.shape == z2.shape and z1.dtype == z2.dtype and z1 is not z2
        assert torch.isfinite(z2).all()
        seen["identical" if torch.equal(z1, z2) else "noisy"] += 1

    collect()
    assert seen["identical"] and seen["noisy"]


@settings(max_examples=10)
@given(paired_views(n=6, d=3, dtype=torch.float64, noise=0.1, kind="mixed_scale"))
def test_paired_view_noise_is_relative_per_row(views):
    z1, z2 = views
    rel = (z2 - z1).norm(dim=1) / z1.norm(dim=1)
    assert (rel > 0).all() and (rel < 2.0).all()


def test_bad_strategy_arguments():
    with pytest.raises(ValueError, match="unknown embedding kind 'spiky'"):
        embeddings(kind="spiky")
    with pytest.raises(ValueError, match="unknown label structure"):
        labels(4, "clustered")
    with pytest.raises(ValueError, match="balanced labels need n_classes to divide n"):
        make_labels(10, "balanced", 3)
    with pytest.raises(TypeError, match="n must be an int"):
        embeddings(n=2.5)


def test_strategies_without_hypothesis_name_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "hypothesis", None)
    monkeypatch.setitem(sys.modules, "hypothesis.strategies", None)
    with pytest.raises(ImportError, match=r"pip install reprkit\[test\]"):
        embeddings()
    assert make_embeddings(3, 2).shape == (3, 2)  # the generators need no hypothesis


def test_precision_loss_is_caught_despite_rounding_allowances():
    # Distances by the product form ‖a‖² + ‖b‖² − 2a·b cancel catastrophically for near
    # duplicates in float32: the allowances (own-dtype rounding of a stable reference, one-ulp
    # conditioning) must not hide that, while the same code passes on well-separated rows.
    def gram_contrastive(x, y):
        sq = (x * x).sum(1)
        d2 = (sq[:, None] + sq[None] - 2 * x @ x.T).clamp_min(0)
        d = torch.where(d2 > 0, d2.clamp_min(1e-30).sqrt(), 0.0)
        terms = torch.where(y[:, None] == y[None], d2, (MARGIN - d).clamp_min(0) ** 2)
        return (terms * (1 - torch.eye(len(y), dtype=x.dtype))).sum(1) / (len(y) - 1)

    y = make_labels(8, "balanced", 4, seed=0)
    assert_gradients_match(gram_contrastive, contrastive_ref, make_embeddings(8, 4, seed=0), y, gradcheck=False)
    near = make_embeddings(8, 4, "near_duplicates", seed=0)
    assert "gradient mismatch for input 0" in _fails(gram_contrastive, contrastive_ref, near, y, gradcheck=False)
