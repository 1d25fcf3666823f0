//! Bindings of `reprkit_core::metrics`: streamed kNN between two sets,
//! per-query retrieval scores, and neighbour ranks for trustworthiness.

use crate::arrays::{slice_of, to_pyarray, Arr2};
use crate::runtime::{run, to_pyerr};
use numpy::{PyArray1, PyArray2, PyReadonlyArray1, PyUntypedArrayMethods};
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::IntoPyObjectExt;
use reprkit_core::distances::Metric;
use reprkit_core::metrics::{knn_cross, neighbour_ranks as core_ranks, retrieval};
use reprkit_core::{Error, Real};

fn shape<T: numpy::Element>(a: &Bound<'_, PyArray2<T>>) -> (usize, usize) {
    let s = a.shape();
    (s[0], s[1])
}

fn u32s(py: Python<'_>, a: &PyReadonlyArray1<'_, i64>, name: &str) -> PyResult<Vec<u32>> {
    let s = a.as_slice().map_err(|_| PyTypeError::new_err(format!("{name}: array must be contiguous")))?;
    s.iter()
        .map(|&v| u32::try_from(v).map_err(|_| to_pyerr(py, Error::InvalidInput(format!("{name}: values must be in 0..2^32, got {v}")))))
        .collect()
}

fn same_dtype<'py, T: numpy::Element>(o: &Bound<'py, PyAny>, name: &str) -> PyResult<Bound<'py, PyArray2<T>>> {
    o.cast::<PyArray2<T>>().cloned().map_err(|_| PyTypeError::new_err(format!("{name}: expected a 2-D array of the query's float dtype")))
}

fn knn_typed<T: Real + numpy::Element>(
    py: Python<'_>, q: &Bound<'_, PyArray2<T>>, r: Option<&Bound<'_, PyAny>>, k: usize, metric: Metric, exclude: Option<Vec<u32>>,
    n_threads: usize,
) -> PyResult<(Py<PyAny>, Py<PyAny>)> {
    let (nq, d) = shape(q);
    let qs = slice_of(q, "query")?;
    let rb = r.map(|o| same_dtype::<T>(o, "reference")).transpose()?;
    if let Some(rb) = &rb {
        if shape(rb).1 != d {
            return Err(to_pyerr(py, Error::Shape(format!("reference has {} features, query {d}", shape(rb).1))));
        }
    }
    let rs = match &rb {
        Some(a) => Some((slice_of(a, "reference")?, shape(a).0)),
        None => None,
    };
    let knn = run(py, n_threads, || knn_cross(qs, nq, rs, d, k, metric, exclude.as_deref()))?;
    let idx: Vec<i64> = knn.indices.iter().map(|&v| v as i64).collect();
    Ok((to_pyarray(py, idx, nq, k)?.into_py_any(py)?, to_pyarray(py, knn.distances, nq, k)?.into_py_any(py)?))
}

/// knn_query(query, reference, k, metric, exclude, n_threads) -> (indices (nq, k) int64, distances (nq, k)).
/// `reference=None`: the queries against themselves, each skipping itself; `exclude[q]`: a reference row to skip.
#[pyfunction]
#[pyo3(signature = (query, reference, k, metric, exclude, n_threads))]
fn knn_query(
    py: Python<'_>, query: &Bound<'_, PyAny>, reference: Option<&Bound<'_, PyAny>>, k: usize, metric: &str,
    exclude: Option<PyReadonlyArray1<'_, i64>>, n_threads: usize,
) -> PyResult<(Py<PyAny>, Py<PyAny>)> {
    let metric = Metric::parse(metric).map_err(|e| to_pyerr(py, e))?;
    let exclude = exclude.map(|e| u32s(py, &e, "exclude")).transpose()?;
    match Arr2::extract(query, "query")? {
        Arr2::F32(a) => knn_typed(py, &a, reference, k, metric, exclude, n_threads),
        Arr2::F64(a) => knn_typed(py, &a, reference, k, metric, exclude, n_threads),
    }
}

type RetrievalOut = (Py<PyAny>, Py<PyAny>, Py<PyAny>, Py<PyAny>, Py<PyAny>);

#[allow(clippy::too_many_arguments)]
fn retrieval_typed<T: Real + numpy::Element>(
    py: Python<'_>, q: &Bound<'_, PyArray2<T>>, ql: Vec<u32>, r: Option<&Bound<'_, PyAny>>, rl: Option<Vec<u32>>, k: Option<usize>,
    metric: Metric, n_threads: usize,
) -> PyResult<RetrievalOut> {
    let (nq, d) = shape(q);
    let qs = slice_of(q, "query")?;
    let rb = r.map(|o| same_dtype::<T>(o, "reference")).transpose()?;
    let refs = match (&rb, &rl) {
        (Some(a), Some(l)) => {
            if shape(a).1 != d {
                return Err(to_pyerr(py, Error::Shape(format!("reference has {} features, query {d}", shape(a).1))));
            }
            Some((slice_of(a, "reference")?, shape(a).0, &l[..]))
        }
        (None, None) => None,
        _ => return Err(PyTypeError::new_err("reference and reference_labels go together")),
    };
    let res = run(py, n_threads, || retrieval(qs, nq, &ql, refs, d, k, metric))?;
    let rc: Vec<i64> = res.r_count.iter().map(|&v| v as i64).collect();
    Ok((
        PyArray1::from_vec(py, rc).into_py_any(py)?,
        PyArray1::from_vec(py, res.precision_at_1).into_py_any(py)?,
        PyArray1::from_vec(py, res.r_precision).into_py_any(py)?,
        PyArray1::from_vec(py, res.map_at_r).into_py_any(py)?,
        PyArray1::from_vec(py, res.reciprocal_rank).into_py_any(py)?,
    ))
}

/// retrieval_scores(query, query_labels, reference, reference_labels, k, metric, n_threads)
/// -> (R, precision@1, R-precision, MAP@R, reciprocal rank), one value per query (float64; R int64).
/// Labels are codes 0..n_labels (int64).
#[pyfunction]
#[pyo3(signature = (query, query_labels, reference, reference_labels, k, metric, n_threads))]
#[allow(clippy::too_many_arguments)]
fn retrieval_scores(
    py: Python<'_>, query: &Bound<'_, PyAny>, query_labels: PyReadonlyArray1<'_, i64>, reference: Option<&Bound<'_, PyAny>>,
    reference_labels: Option<PyReadonlyArray1<'_, i64>>, k: Option<usize>, metric: &str, n_threads: usize,
) -> PyResult<RetrievalOut> {
    let metric = Metric::parse(metric).map_err(|e| to_pyerr(py, e))?;
    let ql = u32s(py, &query_labels, "query_labels")?;
    let rl = reference_labels.map(|l| u32s(py, &l, "reference_labels")).transpose()?;
    match Arr2::extract(query, "query")? {
        Arr2::F32(a) => retrieval_typed(py, &a, ql, reference, rl, k, metric, n_threads),
        Arr2::F64(a) => retrieval_typed(py, &a, ql, reference, rl, k, metric, n_threads),
    }
}

fn ranks_typed<T: Real + numpy::Element>(
    py: Python<'_>, x: &Bound<'_, PyArray2<T>>, rows: Option<Vec<u32>>, nbrs: Vec<u32>, k: usize, metric: Metric, n_threads: usize,
) -> PyResult<Py<PyAny>> {
    let (n, d) = shape(x);
    let xs = slice_of(x, "X")?;
    let nq = rows.as_ref().map_or(n, |r| r.len());
    let ranks = run(py, n_threads, || core_ranks(xs, n, d, rows.as_deref(), &nbrs, k, metric))?;
    let r: Vec<i64> = ranks.iter().map(|&v| v as i64).collect();
    to_pyarray(py, r, nq, k)?.into_py_any(py)
}

/// neighbour_ranks(x, rows, neighbours (m, k) flattened int64, k, metric, n_threads) -> ranks (m, k) int64:
/// the 1-based rank of each given neighbour among the other rows of x (stable order: ties to the lower index).
#[pyfunction]
#[pyo3(signature = (x, rows, neighbours, k, metric, n_threads))]
fn neighbour_ranks(
    py: Python<'_>, x: &Bound<'_, PyAny>, rows: Option<PyReadonlyArray1<'_, i64>>, neighbours: PyReadonlyArray1<'_, i64>, k: usize,
    metric: &str, n_threads: usize,
) -> PyResult<Py<PyAny>> {
    let metric = Metric::parse(metric).map_err(|e| to_pyerr(py, e))?;
    let rows = rows.map(|r| u32s(py, &r, "rows")).transpose()?;
    let nbrs = u32s(py, &neighbours, "neighbours")?;
    match Arr2::extract(x, "X")? {
        Arr2::F32(a) => ranks_typed(py, &a, rows, nbrs, k, metric, n_threads),
        Arr2::F64(a) => ranks_typed(py, &a, rows, nbrs, k, metric, n_threads),
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(knn_query, m)?)?;
    m.add_function(wrap_pyfunction!(retrieval_scores, m)?)?;
    m.add_function(wrap_pyfunction!(neighbour_ranks, m)?)?;
    Ok(())
}
