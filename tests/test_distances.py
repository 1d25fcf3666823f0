"""Pairwise distances: values, gradients, accuracy, bad input, for numpy and torch."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.spatial.distance as ssd
import torch
from hypothesis import given
from hypothesis import strategies as st

import reprkit
from reprkit import reference
from reprkit.errors import DTypeError, InvalidParameterError, NonFiniteError, ReprkitError, ShapeError

METRICS = ["euclidean", "sqeuclidean", "cosine"]
SCIPY = {"euclidean": "euclidean", "sqeuclidean": "sqeuclidean", "cosine": "cosine"}
TOL = {np.float32: dict(rtol=2e-4, atol=2e-4), np.float64: dict(rtol=1e-10, atol=1e-10)}


def rng_arrays(n, m, d, dtype, seed=0):
    r = np.random.default_rng(seed)
    return r.standard_normal((n, d)).astype(dtype), r.standard_normal((m, d)).astype(dtype)


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n,m,d", [(1, 1, 1), (1, 7, 3), (9, 1, 1), (33, 70, 5), (130, 65, 129)])
def test_numpy_values_match_scipy(metric, dtype, n, m, d):
    x, y = rng_arrays(n, m, d, dtype)
    got = reprkit.pairwise_distances(x, y, metric=metric)
    assert got.dtype == dtype and got.shape == (n, m)
    want = ssd.cdist(x.astype(np.float64), y.astype(np.float64), SCIPY[metric])
    np.testing.assert_allclose(got, want, **TOL[dtype])


@pytest.mark.parametrize("metric", METRICS)
def test_self_distances_match_scipy_with_exact_zero_diagonal(metric):
    x, _ = rng_arrays(50, 1, 8, np.float64)
    got = reprkit.pairwise_distances(x, metric=metric)
    np.testing.assert_allclose(got, ssd.cdist(x, x, SCIPY[metric]), rtol=1e-10, atol=1e-10)
    assert np.all(np.diag(got) == 0.0)


@pytest.mark.parametrize("metric", METRICS)
def test_layouts_fortran_and_strided(metric):
    x, y = rng_arrays(40, 30, 12, np.float64, seed=3)
    want = ssd.cdist(x, y, SCIPY[metric])
    np.testing.assert_allclose(reprkit.pairwise_distances(np.asfortranarray(x), np.asfortranarray(y), metric), want, atol=1e-10)
    big = np.random.default_rng(1).standard_normal((80, 24))
    xs, ys = big[::2, ::2], big[1::2, 1::2][:30]
    np.testing.assert_allclose(reprkit.pairwise_distances(xs, ys, metric), ssd.cdist(xs, ys, SCIPY[metric]), atol=1e-10)
    tx = torch.from_numpy(big).T[:12, :40]  # non-contiguous tensor view
    np.testing.assert_allclose(reprkit.pairwise_distances(tx, metric=metric).numpy(), ssd.cdist(tx.numpy(), tx.numpy(), SCIPY[metric]), atol=1e-10)


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_torch_matches_reference_and_keeps_dtype(metric, dtype):
    x = torch.randn(37, 9, dtype=dtype, generator=torch.Generator().manual_seed(0))
    y = torch.randn(21, 9, dtype=dtype, generator=torch.Generator().manual_seed(1))
    got = reprkit.pairwise_distances(x, y, metric)
    assert isinstance(got, torch.Tensor) and got.dtype == dtype and got.device == x.device
    tol = 1e-4 if dtype == torch.float32 else 1e-10
    torch.testing.assert_close(got, reference.pairwise_distances(x, y, metric), rtol=tol, atol=tol)


def test_zero_rows_cosine_is_one():
    x = np.array([[0.0, 0.0], [1.0, 0.0]])
    y = np.array([[0.0, 0.0], [0.0, 2.0]])
    np.testing.assert_allclose(reprkit.pairwise_distances(x, y, "cosine"), [[1.0, 1.0], [1.0, 1.0]])
    torch.testing.assert_close(
        reference.pairwise_distances(torch.from_numpy(x), torch.from_numpy(y), "cosine"), torch.ones(2, 2, dtype=torch.float64)
    )


# --- accuracy -----------------------------------------------------------------------------------


def test_near_duplicates_float32_within_one_percent_of_float64():
    r = np.random.default_rng(7)
    base = r.standard_normal((64, 128))
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    near = base + 1e-4 * r.standard_normal(base.shape) / np.sqrt(128)
    x32, y32 = base.astype(np.float32), near.astype(np.float32)
    truth = np.sqrt(((x32.astype(np.float64) - y32.astype(np.float64)) ** 2).sum(1))
    got = np.diag(reprkit.pairwise_distances(x32, y32))
    assert np.all(np.abs(got - truth) / truth < 0.01)
    # The product form (what torch.cdist does above 25 rows) is far off here.
    prod = np.sqrt(np.maximum((x32**2).sum(1) + (y32**2).sum(1) - 2 * (x32 * y32).sum(1), 0))
    assert np.max(np.abs(prod - truth) / truth) > 0.01
    tg = reprkit.pairwise_distances(torch.from_numpy(x32), torch.from_numpy(y32)).diagonal().numpy()
    assert np.all(np.abs(tg - truth) / truth < 0.01)


def test_offset_data_keeps_precision_and_self_distance_is_exactly_zero():
    r = np.random.default_rng(8)
    x = (r.standard_normal((100, 16)) * 1e-2 + 100.0).astype(np.float32)
    d = reprkit.pairwise_distances(x)
    assert np.all(np.diag(d) == 0.0)
    truth = ssd.cdist(x.astype(np.float64), x.astype(np.float64))
    off = ~np.eye(100, dtype=bool)
    assert np.max(np.abs(d[off] - truth[off]) / truth[off]) < 1e-2


# --- gradients ----------------------------------------------------------------------------------


@pytest.mark.parametrize("metric", METRICS)
def test_gradcheck_two_inputs(metric):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 4, dtype=torch.float64, generator=g, requires_grad=True)
    y = torch.randn(5, 4, dtype=torch.float64, generator=g, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: reprkit.pairwise_distances(a, b, metric), (x, y))


@pytest.mark.parametrize("metric", METRICS)
def test_gradcheck_self(metric):
    x = torch.randn(7, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2), requires_grad=True)
    # Only the off-diagonal entries are smooth for the Euclidean metric.
    mask = 1.0 - torch.eye(7, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda a: reprkit.pairwise_distances(a, metric=metric) * mask, (x,))


def _grads(fn, x, y, w):
    x = x.clone().requires_grad_(True)
    y = None if y is None else y.clone().requires_grad_(True)
    (fn(x, y) * w).sum().backward()
    return x.grad, (None if y is None else y.grad)


finite_floats = st.floats(-10, 10, allow_nan=False, width=64)


@st.composite
def batches(draw):
    n = draw(st.integers(1, 12))
    m = draw(st.integers(1, 12))
    d = draw(st.integers(1, 6))
    same = draw(st.booleans())
    x = np.array(draw(st.lists(finite_floats, min_size=n * d, max_size=n * d))).reshape(n, d)
    if draw(st.booleans()) and n > 1:
        x[-1] = x[0]  # a duplicate row
    y = None if same else np.array(draw(st.lists(finite_floats, min_size=m * d, max_size=m * d))).reshape(m, d)
    metric = draw(st.sampled_from(METRICS))
    return x, y, metric


@given(batches())
def test_hypothesis_gradients_match_reference_autograd(b):
    x, y, metric = b
    tx = torch.from_numpy(x)
    ty = None if y is None else torch.from_numpy(y)
    n, m = x.shape[0], (x.shape[0] if y is None else y.shape[0])
    w = torch.from_numpy(np.random.default_rng(0).standard_normal((n, m)))
    if metric == "cosine":  # the gradient scales with 1/‖row‖: keep rows well away from zero
        tx = tx + (tx.norm(dim=1, keepdim=True) < 1e-3).double()
        if ty is not None:
            ty = ty + (ty.norm(dim=1, keepdim=True) < 1e-3).double()
    gx, gy = _grads(lambda a, c: reprkit.pairwise_distances(a, c, metric), tx, ty, w)
    rx, ry = _grads(lambda a, c: reference.pairwise_distances(a, c, metric), tx, ty, w)
    torch.testing.assert_close(reprkit.pairwise_distances(tx, ty, metric), reference.pairwise_distances(tx, ty, metric), rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(gx, rx, rtol=1e-7, atol=1e-7)
    if gy is not None:
        torch.testing.assert_close(gy, ry, rtol=1e-7, atol=1e-7)


REDUCTIONS = {
    "sum": lambda t: t.sum(),
    "mean": lambda t: t.mean(),  # torch divides the expanded value: a dense gradient
    "rows": lambda t: (t.sum(1) * torch.arange(t.shape[0], dtype=t.dtype)).sum(),  # grad (n, 1) broadcast
    "cols": lambda t: (t.sum(0) ** 2).sum(),  # grad (1, m) broadcast
    "transposed": lambda t: (t.T * torch.linspace(0, 1, t.shape[0], dtype=t.dtype)).sum(),  # dense, non-contiguous
}


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("same", [True, False])
@pytest.mark.parametrize("reduce", sorted(REDUCTIONS))
def test_broadcast_upstream_gradients_match_reference(metric, same, reduce):
    # .sum() hands backward an expanded (stride-0) gradient, which the kernel takes unexpanded.
    x, y = (torch.from_numpy(a) for a in rng_arrays(150, 70, 5, np.float64, seed=3))
    y = None if same else y
    grads = []
    for fn in (reprkit.pairwise_distances, reference.pairwise_distances):
        xa = x.clone().requires_grad_(True)
        ya = None if y is None else y.clone().requires_grad_(True)
        REDUCTIONS[reduce](fn(xa, ya, metric)).backward()
        grads.append((xa.grad, None if ya is None else ya.grad))
    torch.testing.assert_close(grads[0][0], grads[1][0], rtol=1e-9, atol=1e-9)
    if not same:
        torch.testing.assert_close(grads[0][1], grads[1][1], rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("metric", METRICS)
def test_duplicate_rows_give_finite_gradients(metric):
    x = torch.tensor([[1.0, 2.0], [1.0, 2.0], [0.0, 1.0]], dtype=torch.float64, requires_grad=True)
    reprkit.pairwise_distances(x, metric=metric).sum().backward()
    assert torch.isfinite(x.grad).all()
    xr = x.detach().clone().requires_grad_(True)
    reference.pairwise_distances(xr, metric=metric).sum().backward()
    assert torch.isfinite(xr.grad).all()
    torch.testing.assert_close(x.grad, xr.grad)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_is_computed_in_float32_and_cast_back(dtype):
    x = torch.randn(20, 8, generator=torch.Generator().manual_seed(0)).to(dtype).requires_grad_(True)
    d = reprkit.pairwise_distances(x)
    assert d.dtype == dtype
    want = reprkit.pairwise_distances(x.detach().float())
    torch.testing.assert_close(d.float(), want.to(dtype).float())
    d.float().sum().backward()
    assert x.grad.dtype == dtype and torch.isfinite(x.grad.float()).all()


def test_gradient_only_for_inputs_that_require_it():
    x = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    y = torch.randn(5, 3, dtype=torch.float64)
    reprkit.pairwise_distances(x, y).sum().backward()
    assert x.grad is not None and y.grad is None


# --- bad input ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "x,exc",
    [
        (np.array([[1.0, np.nan]]), NonFiniteError),
        (np.array([[1.0, np.inf]]), NonFiniteError),
        (np.zeros((0, 3)), ShapeError),
        (np.zeros((3, 0)), ShapeError),
        (np.zeros(3), ShapeError),
        (np.zeros((2, 2, 2)), ShapeError),
        (np.zeros((3, 2), dtype=np.int64), DTypeError),
        (np.zeros((3, 2), dtype=np.complex128), DTypeError),
        (np.array([[1, "a"]], dtype=object), DTypeError),
        (torch.tensor([[1.0, float("nan")]]), NonFiniteError),
        (torch.zeros(3, dtype=torch.float32), ShapeError),
        (torch.zeros((3, 2), dtype=torch.int64), DTypeError),
    ],
)
def test_bad_input_raises_clear_errors(x, exc):
    with pytest.raises(exc) as info:
        reprkit.pairwise_distances(x)
    assert isinstance(info.value, ReprkitError) and str(info.value)


def test_error_classes_subclass_builtins():
    assert issubclass(NonFiniteError, ValueError) and issubclass(ShapeError, ValueError)
    assert issubclass(DTypeError, TypeError) and issubclass(InvalidParameterError, ValueError)


def test_mismatched_features_unknown_metric_and_mixed_types():
    with pytest.raises(ShapeError, match="same number of features"):
        reprkit.pairwise_distances(np.zeros((2, 3)), np.zeros((2, 4)))
    with pytest.raises(InvalidParameterError, match="euclidean"):
        reprkit.pairwise_distances(np.zeros((2, 3)), metric="manhattan")
    with pytest.raises(DTypeError):
        reprkit.pairwise_distances(torch.zeros(2, 3), np.zeros((2, 3)))
    with pytest.raises(ShapeError):
        reprkit.pairwise_distances(torch.zeros(2, 3), torch.zeros(2, 4))


def test_kernel_errors_are_python_exceptions_not_panics():
    from reprkit import _core

    x = np.ones((3, 2))
    with pytest.raises(ShapeError):
        _core.pairwise_distances_backward(x, None, np.ones((2, 2)), np.ones((3, 3)), "euclidean", 1)
    with pytest.raises(NonFiniteError):
        _core.pairwise_distances(np.array([[np.nan]]), None, "euclidean", 1)
    with pytest.raises(InvalidParameterError):
        _core.pairwise_distances(x, None, "l1", 1)
    with pytest.raises(TypeError):
        _core.pairwise_distances(x.astype(np.float32), x, "euclidean", 1)


def test_mixed_float_dtypes_are_promoted():
    x = np.ones((2, 3), dtype=np.float32)
    y = np.zeros((2, 3), dtype=np.float64)
    out = reprkit.pairwise_distances(x, y)
    assert out.dtype == np.float64
    np.testing.assert_allclose(out, np.full((2, 2), np.sqrt(3.0)))


def test_gradient_of_near_duplicates_does_not_cancel():
    # W = G/D is huge for the near pair; the product form of the gradient would cancel.
    x = torch.tensor([[0.0, 0.0], [1e-30, 1.0], [0.3, -2.0]], dtype=torch.float64)
    y = torch.tensor([[0.0, 1.0], [5.0, 5.0]], dtype=torch.float64)
    w = torch.tensor([[1.0, -2.0], [0.5, 3.0], [-1.0, 1.0]], dtype=torch.float64)
    gx, gy = _grads(lambda a, c: reprkit.pairwise_distances(a, c), x, y, w)
    rx, ry = _grads(lambda a, c: reference.pairwise_distances(a, c), x, y, w)
    torch.testing.assert_close(gx, rx)
    torch.testing.assert_close(gy, ry)
    # d/dx of |x - y| along the axis where they differ is sign(x - y) = +1.
    assert gx[1, 0].item() == pytest.approx(0.5 * 1.0 + 3.0 * (1e-30 - 5.0) / np.hypot(5.0, 4.0))


def test_double_backward_is_refused_clearly():
    x = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(reprkit.pairwise_distances(x).sum(), x, create_graph=True)
    with pytest.raises(RuntimeError):
        g.sum().backward()
