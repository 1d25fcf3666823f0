//! Bindings of the neighbour search shared by t-SNE and Laplacian eigenmaps:
//! exact or approximate kNN, t-SNE's P from data, from a sparse distance
//! matrix (metric="precomputed" with scipy CSR) — with stage timings for the
//! progress log — and the kNN affinity graph of Laplacian eigenmaps.

use crate::arrays::{slice_of, Arr2};
use crate::runtime::{run, to_pyerr};
use numpy::{PyArray1, PyArray2, PyArrayMethods, PyReadonlyArray1, PyUntypedArrayMethods};
use pyo3::prelude::*;
use pyo3::IntoPyObjectExt;
use reprkit_core::distances::Metric;
use reprkit_core::knn::{knn_exact, knn_from_dense, Knn};
use reprkit_core::knn_approx::knn_approx;
use reprkit_core::spectral::{knn_affinity as core_knn_affinity, Weights};
use reprkit_core::tsne::affinity::{calibrate_rows_in_place, select_sparse_neighbours, symmetrize, Csr};
use reprkit_core::{Error, Real};
use std::time::Instant;

fn metric_of(metric: &str) -> Result<Metric, Error> {
    match metric {
        "euclidean" => Ok(Metric::Euclidean),
        "sqeuclidean" => Ok(Metric::SqEuclidean),
        "cosine" => Ok(Metric::Cosine),
        _ => Err(Error::InvalidParameter(format!("metric must be 'euclidean', 'sqeuclidean' or 'cosine', got {metric:?}"))),
    }
}

fn search<T: Real>(x: &[T], n: usize, d: usize, k: usize, metric: Metric, neighbors: &str, seed: u64) -> Result<Knn<T>, Error> {
    match neighbors {
        "exact" => knn_exact(x, n, d, k, metric),
        "approx" => knn_approx(x, n, d, k, metric, seed),
        _ => Err(Error::InvalidParameter(format!("neighbors must be 'exact' or 'approx', got {neighbors:?}"))),
    }
}

fn knn_typed<'py, T: Real + numpy::Element>(
    py: Python<'py>, a: &Bound<'py, PyArray2<T>>, k: usize, metric: Metric, neighbors: &str, seed: u64, n_threads: usize,
) -> PyResult<(Py<PyAny>, Py<PyAny>)> {
    let (n, d) = (a.shape()[0], a.shape()[1]);
    let s = slice_of(a, "x")?;
    let knn = run(py, n_threads, || search(s, n, d, k, metric, neighbors, seed))?;
    let idx: Vec<i32> = knn.indices.into_iter().map(|v| v as i32).collect();
    Ok((
        PyArray1::from_vec(py, idx).reshape([n, k])?.into_py_any(py)?,
        PyArray1::from_vec(py, knn.distances).reshape([n, k])?.into_py_any(py)?,
    ))
}

/// knn_search(x, k, metric, neighbors, seed, n_threads) -> (indices (n, k) int32, distances (n, k) x.dtype):
/// each row sorted by (distance, index), a point never its own neighbour.
#[pyfunction]
#[pyo3(signature = (x, k, metric, neighbors, seed, n_threads))]
fn knn_search(py: Python<'_>, x: &Bound<'_, PyAny>, k: usize, metric: &str, neighbors: &str, seed: u64, n_threads: usize) -> PyResult<(Py<PyAny>, Py<PyAny>)> {
    let m = metric_of(metric).map_err(|e| to_pyerr(py, e))?;
    match Arr2::extract(x, "x")? {
        Arr2::F32(a) => knn_typed(py, &a, k, m, neighbors, seed, n_threads),
        Arr2::F64(a) => knn_typed(py, &a, k, m, neighbors, seed, n_threads),
    }
}

/// P and (optionally) the calibrated conditional rows, with the seconds spent in
/// the neighbour search and in the calibration + symmetrisation.
struct Affinities {
    p: Csr,
    cond: Option<Csr>,
    t_knn: f64,
    t_cal: f64,
}

/// Calibrates fixed-k neighbour lists (consumed: their memory is reused for
/// the conditional rows) and symmetrises.
fn from_knn<T: Real>(knn: Knn<T>, perplexity: f64, square: bool, want_cond: bool, t_knn: f64) -> Result<Affinities, Error> {
    let t0 = Instant::now();
    let (n, k) = (knn.n, knn.k);
    // Euclidean and precomputed distances enter the Gaussian squared; sqeuclidean is
    // already squared; cosine distances enter as they are (as in scikit-learn).
    let mut dist: Vec<f64> = knn.distances.into_iter().map(|v| if square { v.to_f64_() * v.to_f64_() } else { v.to_f64_() }).collect();
    let mut cols = knn.indices;
    let indptr: Vec<usize> = (0..=n).map(|i| i * k).collect();
    calibrate_rows_in_place(&indptr, &mut cols, &mut dist, perplexity)?;
    let cond = Csr { n, indptr, indices: cols, data: dist };
    let p = symmetrize(&cond);
    Ok(Affinities { p, cond: want_cond.then_some(cond), t_knn, t_cal: t0.elapsed().as_secs_f64() })
}

fn dense_affinities<T: Real>(
    x: &[T], n: usize, d: usize, perplexity: f64, k: usize, metric: &str, neighbors: &str, seed: u64, want_cond: bool,
) -> Result<Affinities, Error> {
    let t0 = Instant::now();
    let (knn, square) = if metric == "precomputed" {
        if d != n {
            return Err(Error::Shape(format!("metric='precomputed' needs a square distance matrix, got ({n}, {d})")));
        }
        (knn_from_dense(x, n, k)?, true)
    } else {
        // Euclidean neighbours are searched in squared distances (same order, no sqrt).
        let m = match metric {
            "euclidean" | "sqeuclidean" => Metric::SqEuclidean,
            "cosine" => Metric::Cosine,
            _ => return Err(Error::InvalidParameter(format!("unknown metric {metric:?}"))),
        };
        (search(x, n, d, k, m, neighbors, seed)?, false)
    };
    from_knn(knn, perplexity, square, want_cond, t0.elapsed().as_secs_f64())
}

type POut = (Py<PyAny>, Py<PyAny>, Py<PyAny>, Option<(Py<PyAny>, Py<PyAny>, Py<PyAny>)>, f64, f64);

pub(crate) fn csr_arrays(py: Python<'_>, c: Csr) -> PyResult<(Py<PyAny>, Py<PyAny>, Py<PyAny>)> {
    // Same-size element conversions reuse the allocations (no second copy of P).
    let indptr: Vec<i64> = c.indptr.into_iter().map(|v| v as i64).collect();
    let indices: Vec<i32> = c.indices.into_iter().map(|v| v as i32).collect();
    Ok((
        PyArray1::from_vec(py, indptr).into_py_any(py)?,
        PyArray1::from_vec(py, indices).into_py_any(py)?,
        PyArray1::from_vec(py, c.data).into_py_any(py)?,
    ))
}

fn p_out(py: Python<'_>, a: Affinities) -> PyResult<POut> {
    let cond = match a.cond {
        Some(c) => Some(csr_arrays(py, c)?),
        None => None,
    };
    let (ip, ix, dv) = csr_arrays(py, a.p)?;
    Ok((ip, ix, dv, cond, a.t_knn, a.t_cal))
}

/// tsne_p(x, perplexity, k, metric, neighbors, seed, n_threads, want_cond)
/// -> (indptr i64, indices i32, data f64, cond CSR triple or None, knn seconds, calibration seconds).
/// `metric` = "euclidean" | "sqeuclidean" | "cosine" | "precomputed" (x a dense n × n distance matrix).
#[pyfunction]
#[pyo3(signature = (x, perplexity, k, metric, neighbors, seed, n_threads, want_cond))]
#[allow(clippy::too_many_arguments)]
fn tsne_p(
    py: Python<'_>, x: &Bound<'_, PyAny>, perplexity: f64, k: usize, metric: &str, neighbors: &str, seed: u64, n_threads: usize,
    want_cond: bool,
) -> PyResult<POut> {
    let a = match Arr2::extract(x, "x")? {
        Arr2::F32(a) => {
            let (n, d) = (a.shape()[0], a.shape()[1]);
            let s = slice_of(&a, "x")?;
            run(py, n_threads, || dense_affinities(s, n, d, perplexity, k, metric, neighbors, seed, want_cond))?
        }
        Arr2::F64(a) => {
            let (n, d) = (a.shape()[0], a.shape()[1]);
            let s = slice_of(&a, "x")?;
            run(py, n_threads, || dense_affinities(s, n, d, perplexity, k, metric, neighbors, seed, want_cond))?
        }
    };
    p_out(py, a)
}

/// tsne_p_held(x, perplexity, k, metric, neighbors, seed, n_threads) -> (HeldAffinities, knn seconds,
/// calibration seconds): tsne_p's P kept in Rust, for `TsneOptimizer.from_held` — so Python and the
/// optimiser never hold two copies of P (at 1M points P is ~1.4 GB).
#[pyfunction]
#[pyo3(signature = (x, perplexity, k, metric, neighbors, seed, n_threads))]
#[allow(clippy::too_many_arguments)]
fn tsne_p_held(
    py: Python<'_>, x: &Bound<'_, PyAny>, perplexity: f64, k: usize, metric: &str, neighbors: &str, seed: u64, n_threads: usize,
) -> PyResult<(Py<crate::tsne::HeldAffinities>, f64, f64)> {
    let a = match Arr2::extract(x, "x")? {
        Arr2::F32(a) => {
            let (n, d) = (a.shape()[0], a.shape()[1]);
            let s = slice_of(&a, "x")?;
            run(py, n_threads, || dense_affinities(s, n, d, perplexity, k, metric, neighbors, seed, false))?
        }
        Arr2::F64(a) => {
            let (n, d) = (a.shape()[0], a.shape()[1]);
            let s = slice_of(&a, "x")?;
            run(py, n_threads, || dense_affinities(s, n, d, perplexity, k, metric, neighbors, seed, false))?
        }
    };
    Ok((Py::new(py, crate::tsne::HeldAffinities { p: Some(a.p) })?, a.t_knn, a.t_cal))
}

/// tsne_p_sparse(indptr, indices, distances, n, perplexity, k_max, min_neighbors, square, n_threads, want_cond)
/// -> as tsne_p. Each row of the CSR distance matrix keeps its k_max nearest stored entries.
#[pyfunction]
#[pyo3(signature = (indptr, indices, distances, n, perplexity, k_max, min_neighbors, square, n_threads, want_cond))]
#[allow(clippy::too_many_arguments)]
fn tsne_p_sparse(
    py: Python<'_>, indptr: PyReadonlyArray1<i64>, indices: PyReadonlyArray1<i32>, distances: PyReadonlyArray1<f64>, n: usize,
    perplexity: f64, k_max: usize, min_neighbors: usize, square: bool, n_threads: usize, want_cond: bool,
) -> PyResult<POut> {
    let (ip, ix, dv) = (indptr.as_slice()?, indices.as_slice()?, distances.as_slice()?);
    if ip.iter().any(|&v| v < 0) || ix.iter().any(|&v| v < 0) {
        return Err(to_pyerr(py, Error::InvalidInput("distance matrix: negative index in the CSR structure".into())));
    }
    let a = run(py, n_threads, || {
        let t0 = Instant::now();
        let ipu: Vec<usize> = ip.iter().map(|&v| v as usize).collect();
        let ixu: Vec<u32> = ix.iter().map(|&v| v as u32).collect();
        let (optr, mut cols, mut dist) = select_sparse_neighbours(n, &ipu, &ixu, dv, k_max, min_neighbors)?;
        drop((ipu, ixu));
        if square {
            dist.iter_mut().for_each(|v| *v *= *v);
        }
        calibrate_rows_in_place(&optr, &mut cols, &mut dist, perplexity)?;
        let cond = Csr { n, indptr: optr, indices: cols, data: dist };
        let p = symmetrize(&cond);
        Ok(Affinities { p, cond: want_cond.then_some(cond), t_knn: 0.0, t_cal: t0.elapsed().as_secs_f64() })
    })?;
    p_out(py, a)
}

fn graph_typed<T: Real + numpy::Element>(
    py: Python<'_>, x: &Bound<'_, PyArray2<T>>, k: usize, weights: Weights, neighbors: &str, seed: u64, n_threads: usize,
) -> PyResult<(Py<PyAny>, Py<PyAny>, Py<PyAny>, f64)> {
    let (n, d) = (x.shape()[0], x.shape()[1]);
    let xs = slice_of(x, "x")?;
    let (c, t) = run(py, n_threads, || {
        let knn = search(xs, n, d, k, Metric::Euclidean, neighbors, seed)?;
        core_knn_affinity(&knn, weights)
    })?;
    let (ip, ix, dv) = csr_arrays(py, c)?;
    Ok((ip, ix, dv, t))
}

/// knn_graph_affinity(x, n_neighbors, weights, t, neighbors, seed, n_threads) -> (indptr, indices, data, t_used):
/// Laplacian eigenmaps' union-symmetrised kNN graph from the exact or the approximate search.
#[pyfunction]
#[pyo3(signature = (x, n_neighbors, weights, t, neighbors, seed, n_threads))]
#[allow(clippy::too_many_arguments)]
fn knn_graph_affinity(
    py: Python<'_>, x: &Bound<'_, PyAny>, n_neighbors: usize, weights: &str, t: Option<f64>, neighbors: &str, seed: u64, n_threads: usize,
) -> PyResult<(Py<PyAny>, Py<PyAny>, Py<PyAny>, f64)> {
    let w = match weights {
        "heat" => Weights::Heat(t),
        "connectivity" => Weights::Connectivity,
        other => return Err(to_pyerr(py, Error::InvalidParameter(format!("unknown weights {other:?}")))),
    };
    match Arr2::extract(x, "x")? {
        Arr2::F32(a) => graph_typed(py, &a, n_neighbors, w, neighbors, seed, n_threads),
        Arr2::F64(a) => graph_typed(py, &a, n_neighbors, w, neighbors, seed, n_threads),
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(knn_search, m)?)?;
    m.add_function(wrap_pyfunction!(tsne_p, m)?)?;
    m.add_function(wrap_pyfunction!(tsne_p_held, m)?)?;
    m.add_function(wrap_pyfunction!(tsne_p_sparse, m)?)?;
    m.add_function(wrap_pyfunction!(knn_graph_affinity, m)?)?;
    Ok(())
}
