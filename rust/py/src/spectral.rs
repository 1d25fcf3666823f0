//! Bindings of `reprkit_core::{spectral, pca, mds}`.

use crate::arrays::{slice_of, to_pyarray, Arr2};
use crate::runtime::{run, to_pyerr};
use numpy::{PyArray1, PyArray2, PyReadonlyArray1, PyUntypedArrayMethods};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::IntoPyObjectExt;
use reprkit_core::distances::Metric;
use reprkit_core::sparse::Csr;
use reprkit_core::knn::knn_exact;
use reprkit_core::mds::{classical_mds_euclidean, classical_mds_precomputed};
use reprkit_core::pca::{pca_fit as core_pca_fit, scores, Solver};
use reprkit_core::spectral::{knn_affinity as core_knn_affinity, laplacian_eigenmaps as core_eigenmaps, EigenmapOpts, Weights};
use reprkit_core::{Error, Real};

type CsrOut = (Py<PyAny>, Py<PyAny>, Py<PyAny>, f64);

fn csr_out(py: Python<'_>, c: Csr, t: f64) -> PyResult<CsrOut> {
    let indptr: Vec<i64> = c.indptr.iter().map(|&v| v as i64).collect();
    let indices: Vec<i32> = c.indices.iter().map(|&v| v as i32).collect();
    Ok((
        PyArray1::from_vec(py, indptr).into_py_any(py)?,
        PyArray1::from_vec(py, indices).into_py_any(py)?,
        PyArray1::from_vec(py, c.data).into_py_any(py)?,
        t,
    ))
}

fn affinity_typed<T: Real + numpy::Element>(
    py: Python<'_>, x: &Bound<'_, PyArray2<T>>, k: usize, weights: Weights, n_threads: usize,
) -> PyResult<CsrOut> {
    let (n, d) = { let s = x.shape(); (s[0], s[1]) };
    let xs = slice_of(x, "x")?;
    let (c, t) = run(py, n_threads, || {
        let knn = knn_exact(xs, n, d, k, Metric::Euclidean)?;
        core_knn_affinity(&knn, weights)
    })?;
    csr_out(py, c, t)
}

/// knn_affinity(x, n_neighbors, weights, t, n_threads) -> (indptr, indices, data, t_used).
#[pyfunction]
#[pyo3(signature = (x, n_neighbors, weights, t, n_threads))]
fn knn_affinity(py: Python<'_>, x: &Bound<'_, PyAny>, n_neighbors: usize, weights: &str, t: Option<f64>, n_threads: usize) -> PyResult<CsrOut> {
    let w = match weights {
        "heat" => Weights::Heat(t),
        "connectivity" => Weights::Connectivity,
        other => return Err(to_pyerr(py, Error::InvalidParameter(format!("unknown weights {other:?}")))),
    };
    match Arr2::extract(x, "x")? {
        Arr2::F32(a) => affinity_typed(py, &a, n_neighbors, w, n_threads),
        Arr2::F64(a) => affinity_typed(py, &a, n_neighbors, w, n_threads),
    }
}

/// laplacian_eigenmaps(indptr, indices, data, n, n_components, normalized, seed, tol, n_threads)
/// -> (embedding (n, k) float64, eigenvalues (k,), n_graph_components).
#[pyfunction]
#[pyo3(signature = (indptr, indices, data, n, n_components, normalized, seed, tol, n_threads))]
#[allow(clippy::too_many_arguments)]
fn laplacian_eigenmaps<'py>(
    py: Python<'py>, indptr: PyReadonlyArray1<'py, i64>, indices: PyReadonlyArray1<'py, i32>, data: PyReadonlyArray1<'py, f64>,
    n: usize, n_components: usize, normalized: bool, seed: u64, tol: f64, n_threads: usize,
) -> PyResult<(Py<PyAny>, Py<PyAny>, usize)> {
    let ip = indptr.as_slice().map_err(|_| PyValueError::new_err("indptr must be contiguous"))?;
    let ix = indices.as_slice().map_err(|_| PyValueError::new_err("indices must be contiguous"))?;
    let dv = data.as_slice().map_err(|_| PyValueError::new_err("data must be contiguous"))?;
    if ip.iter().any(|&v| v < 0) || ix.iter().any(|&v| v < 0) {
        return Err(to_pyerr(py, Error::InvalidInput("CSR indices must be non-negative".into())));
    }
    let e = run(py, n_threads, || {
        let csr = Csr::new(n, ip.iter().map(|&v| v as usize).collect(), ix.iter().map(|&v| v as u32).collect(), dv.to_vec())?;
        core_eigenmaps(&csr, &EigenmapOpts { n_components, normalized, seed, tol })
    })?;
    let emb = to_pyarray(py, e.embedding, n, n_components)?.into_py_any(py)?;
    let vals = PyArray1::from_vec(py, e.eigenvalues).into_py_any(py)?;
    Ok((emb, vals, e.n_graph_components))
}

type PcaOut = (Py<PyAny>, Py<PyAny>, Py<PyAny>, f64, Py<PyAny>);

fn pca_typed<T: Real + numpy::Element>(
    py: Python<'_>, x: &Bound<'_, PyArray2<T>>, k: usize, solver: Solver, want_scores: bool, n_threads: usize,
) -> PyResult<PcaOut> {
    let (n, d) = { let s = x.shape(); (s[0], s[1]) };
    let xs = slice_of(x, "x")?;
    let (fit, sc) = run(py, n_threads, || {
        let (fit, xc) = core_pca_fit(xs, n, d, k, solver)?;
        let sc = if want_scores { Some(scores(&xc, n, d, &fit.components, k)) } else { None };
        Ok((fit, sc))
    })?;
    let mean = PyArray1::from_vec(py, fit.mean).into_py_any(py)?;
    let comps = to_pyarray(py, fit.components, k, d)?.into_py_any(py)?;
    let ev = PyArray1::from_vec(py, fit.explained_variance).into_py_any(py)?;
    let sc = match sc { Some(s) => to_pyarray(py, s, n, k)?.into_py_any(py)?, None => py.None() };
    Ok((mean, comps, ev, fit.total_variance, sc))
}

/// pca_fit(x, n_components, solver, n_iter, n_oversamples, seed, want_scores, n_threads)
/// -> (mean, components (k, d) float64, explained_variance, total_variance, scores | None).
#[pyfunction]
#[pyo3(signature = (x, n_components, solver, n_iter, n_oversamples, seed, want_scores, n_threads))]
#[allow(clippy::too_many_arguments)]
fn pca_fit(
    py: Python<'_>, x: &Bound<'_, PyAny>, n_components: usize, solver: &str, n_iter: usize, n_oversamples: usize,
    seed: u64, want_scores: bool, n_threads: usize,
) -> PyResult<PcaOut> {
    let s = match solver {
        "full" => Solver::Full,
        "randomized" => Solver::Randomized { n_iter, n_oversamples, seed },
        other => return Err(to_pyerr(py, Error::InvalidParameter(format!("unknown solver {other:?}")))),
    };
    match Arr2::extract(x, "x")? {
        Arr2::F32(a) => pca_typed(py, &a, n_components, s, want_scores, n_threads),
        Arr2::F64(a) => pca_typed(py, &a, n_components, s, want_scores, n_threads),
    }
}

fn mds_typed<T: Real + numpy::Element>(
    py: Python<'_>, x: &Bound<'_, PyArray2<T>>, k: usize, precomputed: bool, seed: u64, n_threads: usize,
) -> PyResult<(Py<PyAny>, Py<PyAny>, f64)> {
    let (n, d) = { let s = x.shape(); (s[0], s[1]) };
    let xs = slice_of(x, "x")?;
    let m = run(py, n_threads, || {
        if precomputed {
            if n != d {
                return Err(Error::Shape(format!("a precomputed distance matrix must be square, got ({n}, {d})")));
            }
            classical_mds_precomputed(xs, n, k, seed)
        } else {
            classical_mds_euclidean(xs, n, d, k)
        }
    })?;
    Ok((to_pyarray(py, m.embedding, n, k)?.into_py_any(py)?, PyArray1::from_vec(py, m.eigenvalues).into_py_any(py)?, m.trace))
}

/// classical_mds(x, n_components, precomputed, seed, n_threads) -> (embedding float64, eigenvalues, trace(B)).
#[pyfunction]
#[pyo3(signature = (x, n_components, precomputed, seed, n_threads))]
fn classical_mds(py: Python<'_>, x: &Bound<'_, PyAny>, n_components: usize, precomputed: bool, seed: u64, n_threads: usize) -> PyResult<(Py<PyAny>, Py<PyAny>, f64)> {
    match Arr2::extract(x, "x")? {
        Arr2::F32(a) => mds_typed(py, &a, n_components, precomputed, seed, n_threads),
        Arr2::F64(a) => mds_typed(py, &a, n_components, precomputed, seed, n_threads),
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(knn_affinity, m)?)?;
    m.add_function(wrap_pyfunction!(laplacian_eigenmaps, m)?)?;
    m.add_function(wrap_pyfunction!(pca_fit, m)?)?;
    m.add_function(wrap_pyfunction!(classical_mds, m)?)?;
    Ok(())
}
