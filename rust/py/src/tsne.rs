//! Bindings of `reprkit_core::tsne`: affinities, the optimiser (a stateful
//! object Python drives in chunks), the gradient (for tests), transform, KL.

use crate::arrays::{slice_of, Arr2};
use crate::runtime::{run, run_interruptible, to_pyerr};
use numpy::{PyArray1, PyArray2, PyArrayMethods, PyReadonlyArray1, PyReadonlyArray2, PyUntypedArrayMethods};
use pyo3::prelude::*;
use pyo3::IntoPyObjectExt;
use reprkit_core::distances::Metric;
use reprkit_core::knn::{knn_from_dense, Knn};
use reprkit_core::tsne::affinity::{conditional, knn_to_csr, symmetrize, Csr};
use reprkit_core::tsne::optimize::{optimize_local, transform, Method, Problem, Schedule, State};
use reprkit_core::tsne::Kernel;
use reprkit_core::{Error, Real};

fn affinities_impl<T: Real>(
    x: &[T], n: usize, d: usize, perplexity: f64, k: usize, metric: &str, neighbors: &str, seed: u64,
) -> Result<(Csr, Vec<u32>, Vec<f64>), Error> {
    let knn: Knn<T> = match metric {
        "precomputed" => {
            if d != n {
                return Err(Error::Shape(format!("metric='precomputed' needs a square distance matrix, got ({n}, {d})")));
            }
            knn_from_dense(x, n, k)?
        }
        _ => {
            let m = match metric {
                "euclidean" | "sqeuclidean" => Metric::SqEuclidean,
                "cosine" => Metric::Cosine,
                _ => return Err(Error::InvalidParameter(format!("unknown metric {metric:?}"))),
            };
            match neighbors {
                "exact" => reprkit_core::knn::knn_exact(x, n, d, k, m)?,
                "approx" => reprkit_core::knn_approx::knn_approx(x, n, d, k, m, seed)?,
                _ => return Err(Error::InvalidParameter(format!("neighbors must be 'exact' or 'approx', got {neighbors:?}"))),
            }
        }
    };
    // Euclidean and precomputed distances enter the Gaussian squared; sqeuclidean
    // is already squared; cosine distances enter as they are (as in scikit-learn).
    let square = metric == "precomputed";
    let dist: Vec<f64> = knn.distances.iter().map(|v| { let v = v.to_f64_(); if square { v * v } else { v } }).collect();
    let pc = conditional(&dist, n, k, perplexity)?;
    let cond = knn_to_csr(&knn.indices, &pc, n, k);
    let p = symmetrize(&cond);
    Ok((p, knn.indices, pc))
}

type AffOut = (Py<PyAny>, Py<PyAny>, Py<PyAny>, Py<PyAny>, Py<PyAny>);

/// tsne_affinities(x, perplexity, k, metric, neighbors, n_threads, seed)
/// -> (indptr i64, indices i32, data f64, knn_indices (n,k) i32, p_cond (n,k) f64).
#[pyfunction]
#[pyo3(signature = (x, perplexity, k, metric, neighbors, n_threads, seed))]
#[allow(clippy::too_many_arguments)]
fn tsne_affinities<'py>(
    py: Python<'py>, x: &Bound<'py, PyAny>, perplexity: f64, k: usize, metric: &str, neighbors: &str, n_threads: usize, seed: u64,
) -> PyResult<AffOut> {
    let x = Arr2::extract(x, "x")?;
    let (p, idx, pc, n) = match &x {
        Arr2::F32(a) => {
            let (n, d) = (a.shape()[0], a.shape()[1]);
            let s = slice_of(a, "x")?;
            let r = run(py, n_threads, || affinities_impl(s, n, d, perplexity, k, metric, neighbors, seed))?;
            (r.0, r.1, r.2, n)
        }
        Arr2::F64(a) => {
            let (n, d) = (a.shape()[0], a.shape()[1]);
            let s = slice_of(a, "x")?;
            let r = run(py, n_threads, || affinities_impl(s, n, d, perplexity, k, metric, neighbors, seed))?;
            (r.0, r.1, r.2, n)
        }
    };
    let indptr: Vec<i64> = p.indptr.iter().map(|&v| v as i64).collect();
    let indices: Vec<i32> = p.indices.iter().map(|&v| v as i32).collect();
    let kidx: Vec<i32> = idx.iter().map(|&v| v as i32).collect();
    Ok((
        PyArray1::from_vec(py, indptr).into_py_any(py)?,
        PyArray1::from_vec(py, indices).into_py_any(py)?,
        PyArray1::from_vec(py, p.data).into_py_any(py)?,
        PyArray1::from_vec(py, kidx).reshape([n, k])?.into_py_any(py)?,
        PyArray1::from_vec(py, pc).reshape([n, k])?.into_py_any(py)?,
    ))
}

fn csr_from(n: usize, indptr: &PyReadonlyArray1<i64>, indices: &PyReadonlyArray1<i32>, data: &PyReadonlyArray1<f64>) -> PyResult<Csr> {
    let ip = indptr.as_slice()?;
    if ip.iter().any(|&v| v < 0) || indices.as_slice()?.iter().any(|&v| v < 0) {
        return Err(pyo3::exceptions::PyValueError::new_err("affinity matrix: negative index"));
    }
    // Validated by the optimiser against the right number of columns (Csr::validate).
    Ok(Csr {
        n,
        indptr: ip.iter().map(|&v| v as usize).collect(),
        indices: indices.as_slice()?.iter().map(|&v| v as u32).collect(),
        data: data.as_slice()?.to_vec(),
    })
}

fn kernel_of(kernel: &str, dof: f64) -> Result<Kernel, Error> {
    match kernel {
        "t" | "student-t" | "tsne" => Ok(Kernel::StudentT(dof)),
        "gaussian" | "ssne" => Ok(Kernel::Gaussian),
        "sne" => Ok(Kernel::Sne),
        _ => Err(Error::InvalidParameter(format!("unknown kernel {kernel:?}"))),
    }
}

fn method_of(method: &str, angle: f64) -> Result<Method, Error> {
    match method {
        "exact" => Ok(Method::Exact),
        "barnes_hut" => Ok(Method::BarnesHut(angle)),
        "fft" => Ok(Method::Fft),
        _ => Err(Error::InvalidParameter(format!("unknown method {method:?}"))),
    }
}

#[allow(clippy::too_many_arguments)]
fn problem_from(
    py: Python<'_>, n: usize, dim: usize, indptr: &PyReadonlyArray1<i64>, indices: &PyReadonlyArray1<i32>, data: &PyReadonlyArray1<f64>,
    kernel: &str, dof: f64, method: &str, angle: f64, cond: Option<(PyReadonlyArray2<i32>, PyReadonlyArray2<f64>)>,
) -> PyResult<Problem> {
    let p = csr_from(n, indptr, indices, data)?;
    let pc = match cond {
        Some((ci, cp)) => {
            let k = ci.shape()[1];
            let idx: Vec<u32> = ci.as_slice()?.iter().map(|&v| v as u32).collect();
            Some(knn_to_csr(&idx, cp.as_slice()?, ci.shape()[0], k))
        }
        None => None,
    };
    let kernel = kernel_of(kernel, dof).map_err(|e| to_pyerr(py, e))?;
    let method = method_of(method, angle).map_err(|e| to_pyerr(py, e))?;
    Problem::new(p, pc, dim, kernel, method).map_err(|e| to_pyerr(py, e))
}

/// t-SNE's symmetric P held in Rust (from `tsne_p_held`) until an optimiser takes it.
#[pyclass(module = "reprkit._core")]
pub struct HeldAffinities {
    pub(crate) p: Option<Csr>,
}

fn taken_err() -> PyErr {
    pyo3::exceptions::PyValueError::new_err("the affinities were moved out of this object (TsneOptimizer.from_held / take_affinities)")
}

#[pymethods]
impl HeldAffinities {
    /// Number of points.
    fn n(&self) -> PyResult<usize> {
        self.p.as_ref().map(|p| p.n).ok_or_else(taken_err)
    }

    /// Number of stored affinities.
    fn nnz(&self) -> PyResult<usize> {
        self.p.as_ref().map(|p| p.nnz()).ok_or_else(taken_err)
    }

    /// A copy of P as (indptr i64, indices i32, data f64) (e.g. for a spectral init).
    fn arrays(&self, py: Python<'_>) -> PyResult<(Py<PyAny>, Py<PyAny>, Py<PyAny>)> {
        let p = self.p.as_ref().ok_or_else(taken_err)?.clone();
        crate::knn::csr_arrays(py, p)
    }
}

/// The optimiser state (positions, velocities, gains) with its problem; Python
/// calls `run` in chunks (callbacks, progress) and the state carries over.
#[pyclass(module = "reprkit._core")]
struct TsneOptimizer {
    prob: Problem,
    state: State,
    /// P was moved out (`take_affinities`): the optimiser cannot run any more.
    taken: bool,
}

#[pymethods]
impl TsneOptimizer {
    #[new]
    #[pyo3(signature = (indptr, indices, data, y0, kernel, dof, method, angle, cond=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>, indptr: PyReadonlyArray1<i64>, indices: PyReadonlyArray1<i32>, data: PyReadonlyArray1<f64>,
        y0: PyReadonlyArray2<f64>, kernel: &str, dof: f64, method: &str, angle: f64,
        cond: Option<(PyReadonlyArray2<i32>, PyReadonlyArray2<f64>)>,
    ) -> PyResult<Self> {
        let (n, dim) = (y0.shape()[0], y0.shape()[1]);
        let prob = problem_from(py, n, dim, &indptr, &indices, &data, kernel, dof, method, angle, cond)?;
        Ok(TsneOptimizer { prob, state: State::new(y0.as_slice()?.to_vec()), taken: false })
    }

    /// An optimiser that takes `held`'s P without copying it (`held` is empty afterwards).
    #[staticmethod]
    #[pyo3(signature = (held, y0, kernel, dof, method, angle))]
    fn from_held(
        py: Python<'_>, mut held: PyRefMut<'_, HeldAffinities>, y0: PyReadonlyArray2<f64>, kernel: &str, dof: f64, method: &str, angle: f64,
    ) -> PyResult<Self> {
        let (n, dim) = (y0.shape()[0], y0.shape()[1]);
        let pn = held.p.as_ref().ok_or_else(taken_err)?.n;
        if pn != n {
            return Err(to_pyerr(py, Error::Shape(format!("y0 has {n} rows but the affinities are {pn} x {pn}"))));
        }
        let kernel = kernel_of(kernel, dof).map_err(|e| to_pyerr(py, e))?;
        let method = method_of(method, angle).map_err(|e| to_pyerr(py, e))?;
        let y = y0.as_slice()?.to_vec();
        let p = held.p.take().ok_or_else(taken_err)?;
        let prob = Problem::new(p, None, dim, kernel, method).map_err(|e| to_pyerr(py, e))?;
        Ok(TsneOptimizer { prob, state: State::new(y), taken: false })
    }

    /// Moves P out as (indptr i64, indices i32, data f64) without a copy; the
    /// optimiser cannot run afterwards (its embedding stays readable).
    fn take_affinities(&mut self, py: Python<'_>) -> PyResult<(Py<PyAny>, Py<PyAny>, Py<PyAny>)> {
        if self.taken {
            return Err(taken_err());
        }
        self.taken = true;
        // The state goes back to the original order with P's labels (the embedding stays readable).
        self.state.y = self.prob.to_original(&self.state.y);
        self.prob.restore_labels();
        crate::knn::csr_arrays(py, std::mem::take(&mut self.prob.p))
    }

    /// Runs n_iter iterations; returns the KL of the final embedding if want_kl (else NaN).
    #[pyo3(signature = (n_iter, exaggeration, momentum, learning_rate, max_step_norm, n_threads, want_kl))]
    #[allow(clippy::too_many_arguments)]
    fn run(
        &mut self, py: Python<'_>, n_iter: usize, exaggeration: f64, momentum: f64, learning_rate: f64, max_step_norm: f64,
        n_threads: usize, want_kl: bool,
    ) -> PyResult<f64> {
        if self.taken {
            return Err(taken_err());
        }
        let sch = Schedule { n_iter, exaggeration, momentum, learning_rate, max_step_norm };
        let (prob, state) = (&mut self.prob, &mut self.state);
        run_interruptible(py, n_threads, move |stop| {
            optimize_local(prob, state, &sch, stop)?;
            if want_kl {
                prob.kl(&state.y)
            } else {
                Ok(f64::NAN)
            }
        })
    }

    /// A copy of the current embedding.
    fn embedding<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyArray2<f64>>> {
        PyArray1::from_vec(py, self.prob.to_original(&self.state.y)).reshape([self.prob.n, self.prob.dim])
    }

    /// (∂KL/∂Y, KL) at `y` (the true gradient of the reported KL; tests use it).
    fn gradient<'py>(&self, py: Python<'py>, y: PyReadonlyArray2<f64>, exaggeration: f64, n_threads: usize) -> PyResult<(Py<PyAny>, f64)> {
        if self.taken {
            return Err(taken_err());
        }
        let ys = y.as_slice()?;
        let prob = &self.prob;
        let (g, kl) = run(py, n_threads, || {
            let mut g = vec![0.0; ys.len()];
            let kl = prob.gradient(&prob.to_positions(ys), exaggeration, &mut g, true)?;
            let mut g = prob.to_original(&g);
            let scale = if prob.kernel == Kernel::Sne { 4.0 * prob.n as f64 } else { 4.0 };
            g.iter_mut().for_each(|v| *v *= scale);
            Ok((g, kl))
        })?;
        Ok((PyArray1::from_vec(py, g).reshape([prob.n, prob.dim])?.into_py_any(py)?, kl))
    }
}

/// tsne_transform(ref_y, indptr, indices, data, y0, dof, angle, n_iter, learning_rate, momentum, max_step_norm, n_threads) -> y
#[pyfunction]
#[pyo3(signature = (ref_y, indptr, indices, data, y0, dof, angle, n_iter, learning_rate, momentum, max_step_norm, n_threads))]
#[allow(clippy::too_many_arguments)]
fn tsne_transform<'py>(
    py: Python<'py>, ref_y: PyReadonlyArray2<f64>, indptr: PyReadonlyArray1<i64>, indices: PyReadonlyArray1<i32>,
    data: PyReadonlyArray1<f64>, y0: PyReadonlyArray2<f64>, dof: f64, angle: f64, n_iter: usize, learning_rate: f64,
    momentum: f64, max_step_norm: f64, n_threads: usize,
) -> PyResult<Bound<'py, PyArray2<f64>>> {
    let (m, dim) = (y0.shape()[0], y0.shape()[1]);
    let n_ref = ref_y.shape()[0];
    if ref_y.shape()[1] != dim {
        return Err(pyo3::exceptions::PyValueError::new_err("ref_y and y0 dimensions differ"));
    }
    let p = csr_from(m, &indptr, &indices, &data)?;
    let rs = ref_y.as_slice()?;
    let mut y = y0.as_slice()?.to_vec();
    let sch = Schedule { n_iter, exaggeration: 1.0, momentum, learning_rate, max_step_norm };
    let yref = &mut y;
    run_interruptible(py, n_threads, move |stop| transform(rs, n_ref, dim, &p, yref, dof, angle, &sch, stop))?;
    PyArray1::from_vec(py, y).reshape([m, dim])
}

/// tsne_kl(indptr, indices, data, y, dof, n_threads) -> KL(P‖Q) with the exact
/// normaliser Z = Σ_{i≠j} w_ij (O(N²) time, O(N) memory).
#[pyfunction]
#[pyo3(signature = (indptr, indices, data, y, dof, n_threads))]
fn tsne_kl(
    py: Python<'_>, indptr: PyReadonlyArray1<i64>, indices: PyReadonlyArray1<i32>, data: PyReadonlyArray1<f64>,
    y: PyReadonlyArray2<f64>, dof: f64, n_threads: usize,
) -> PyResult<f64> {
    let (n, dim) = (y.shape()[0], y.shape()[1]);
    let prob = problem_from(py, n, dim, &indptr, &indices, &data, "t", dof, "exact", 0.0, None)?;
    let ys = y.as_slice()?;
    run_interruptible(py, n_threads, |_| prob.kl(ys))
}

/// tsne_calibrate(dist (m, k) f64, perplexity, n_threads) -> p_cond (m, k): per-row
/// binary search of the Gaussian precision so that each row reaches the perplexity.
#[pyfunction]
#[pyo3(signature = (dist, perplexity, n_threads))]
fn tsne_calibrate<'py>(py: Python<'py>, dist: PyReadonlyArray2<f64>, perplexity: f64, n_threads: usize) -> PyResult<Bound<'py, PyArray2<f64>>> {
    let (m, k) = (dist.shape()[0], dist.shape()[1]);
    let ds = dist.as_slice()?;
    let p = run(py, n_threads, || conditional(ds, m, k, perplexity))?;
    PyArray1::from_vec(py, p).reshape([m, k])
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(tsne_calibrate, m)?)?;
    m.add_function(wrap_pyfunction!(tsne_affinities, m)?)?;
    m.add_function(wrap_pyfunction!(tsne_transform, m)?)?;
    m.add_function(wrap_pyfunction!(tsne_kl, m)?)?;
    m.add_class::<TsneOptimizer>()?;
    m.add_class::<HeldAffinities>()?;
    Ok(())
}
