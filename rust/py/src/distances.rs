//! Bindings of `reprkit_core::distances`.

use crate::arrays::{slice_of, to_pyarray, Arr2};
use crate::runtime::run;
use numpy::PyArray2;
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::IntoPyObjectExt;
use reprkit_core::distances::{pairwise, pairwise_backward, Grad, Metric, Rows};
use reprkit_core::Real;

fn metric_of(py: Python<'_>, name: &str) -> PyResult<Metric> {
    Metric::parse(name).map_err(|e| crate::runtime::to_pyerr(py, e))
}

fn forward<'py, T: Real + numpy::Element>(
    py: Python<'py>, x: &Bound<'py, PyArray2<T>>, y: Option<&Bound<'py, PyArray2<T>>>, metric: Metric, n_threads: usize,
) -> PyResult<Py<PyAny>> {
    let (n, d) = { let s = numpy::PyUntypedArrayMethods::shape(x); (s[0], s[1]) };
    let xs = slice_of(x, "x")?;
    let ys = match y { Some(a) => Some(slice_of(a, "y")?), None => None };
    let m = match y { Some(a) => numpy::PyUntypedArrayMethods::shape(a)[0], None => n };
    let out = run(py, n_threads, || {
        let mut out = reprkit_core::mem::zeroed_large(n * m);
        pairwise(Rows { data: xs, n }, ys.map(|data| Rows { data, n: m }), d, metric, &mut out)?;
        Ok(out)
    })?;
    to_pyarray(py, out, n, m)?.into_py_any(py)
}

/// pairwise_distances(x, y, metric, n_threads) -> (n, m) array in x's dtype.
#[pyfunction]
#[pyo3(signature = (x, y, metric, n_threads))]
fn pairwise_distances<'py>(py: Python<'py>, x: &Bound<'py, PyAny>, y: Option<&Bound<'py, PyAny>>, metric: &str, n_threads: usize) -> PyResult<Py<PyAny>> {
    let metric = metric_of(py, metric)?;
    let x = Arr2::extract(x, "x")?;
    let y = match y { Some(o) => Some(Arr2::extract(o, "y")?), None => None };
    match (&x, &y) {
        (Arr2::F32(a), None) => forward(py, a, None, metric, n_threads),
        (Arr2::F64(a), None) => forward(py, a, None, metric, n_threads),
        (Arr2::F32(a), Some(Arr2::F32(b))) => forward(py, a, Some(b), metric, n_threads),
        (Arr2::F64(a), Some(Arr2::F64(b))) => forward(py, a, Some(b), metric, n_threads),
        _ => Err(PyTypeError::new_err("x and y must have the same dtype")),
    }
}

#[allow(clippy::too_many_arguments)]
fn backward<'py, T: Real + numpy::Element>(
    py: Python<'py>, x: &Bound<'py, PyArray2<T>>, y: Option<&Bound<'py, PyArray2<T>>>, dist: &Bound<'py, PyArray2<T>>,
    grad: &Bound<'py, PyArray2<T>>, metric: Metric, n_threads: usize,
) -> PyResult<(Py<PyAny>, Py<PyAny>)> {
    let (n, d) = { let s = numpy::PyUntypedArrayMethods::shape(x); (s[0], s[1]) };
    let m = match y { Some(a) => numpy::PyUntypedArrayMethods::shape(a)[0], None => n };
    let xs = slice_of(x, "x")?;
    let ys = match y { Some(a) => Some(slice_of(a, "y")?), None => None };
    let ds = slice_of(dist, "dist")?;
    let gs = slice_of(grad, "grad")?;
    let (g_rows, g_cols) = { let s = numpy::PyUntypedArrayMethods::shape(grad); (s[0], s[1]) };
    let same = y.is_none();
    let (gx, gy) = run(py, n_threads, || {
        let mut gx = vec![T::zero(); n * d];
        let mut gy = if same { Vec::new() } else { vec![T::zero(); m * d] };
        pairwise_backward(Rows { data: xs, n }, ys.map(|data| Rows { data, n: m }), d, metric, ds, Grad { data: gs, rows: g_rows, cols: g_cols }, &mut gx, &mut gy)?;
        Ok((gx, gy))
    })?;
    let gx = to_pyarray(py, gx, n, d)?.into_py_any(py)?;
    let gy = if same { py.None() } else { to_pyarray(py, gy, m, d)?.into_py_any(py)? };
    Ok((gx, gy))
}

/// pairwise_distances_backward(x, y, dist, grad, metric, n_threads) -> (grad_x, grad_y | None).
/// `grad` is (n, m) or broadcasts to it: (1, 1), (n, 1) or (1, m).
#[pyfunction]
#[pyo3(signature = (x, y, dist, grad, metric, n_threads))]
fn pairwise_distances_backward<'py>(
    py: Python<'py>, x: &Bound<'py, PyAny>, y: Option<&Bound<'py, PyAny>>, dist: &Bound<'py, PyAny>,
    grad: &Bound<'py, PyAny>, metric: &str, n_threads: usize,
) -> PyResult<(Py<PyAny>, Py<PyAny>)> {
    let metric = metric_of(py, metric)?;
    let x = Arr2::extract(x, "x")?;
    let y = match y { Some(o) => Some(Arr2::extract(o, "y")?), None => None };
    let dist = Arr2::extract(dist, "dist")?;
    let grad = Arr2::extract(grad, "grad")?;
    match (&x, &y, &dist, &grad) {
        (Arr2::F32(a), None, Arr2::F32(dd), Arr2::F32(g)) => backward(py, a, None, dd, g, metric, n_threads),
        (Arr2::F64(a), None, Arr2::F64(dd), Arr2::F64(g)) => backward(py, a, None, dd, g, metric, n_threads),
        (Arr2::F32(a), Some(Arr2::F32(b)), Arr2::F32(dd), Arr2::F32(g)) => backward(py, a, Some(b), dd, g, metric, n_threads),
        (Arr2::F64(a), Some(Arr2::F64(b)), Arr2::F64(dd), Arr2::F64(g)) => backward(py, a, Some(b), dd, g, metric, n_threads),
        _ => Err(PyTypeError::new_err("x, y, dist and grad must share one dtype")),
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(pairwise_distances, m)?)?;
    m.add_function(wrap_pyfunction!(pairwise_distances_backward, m)?)?;
    Ok(())
}
