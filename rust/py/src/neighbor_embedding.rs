//! Binding of the SNE-family minibatch loss (`reprkit_core::losses::neighbor_embedding`):
//! outputs and a CSR P in, the loss and (fused) its unit-upstream gradient out.

use crate::arrays::{slice_of, to_pyarray};
use crate::held::{arr1, arr2, is_f64, s1, Obj};
use crate::runtime::run;
use numpy::PyUntypedArrayMethods;
use pyo3::prelude::*;
use pyo3::IntoPyObjectExt;
use reprkit_core::losses::{neighbor_embedding_loss, NeKernel, NeNorm, NeighborEmbedding};
use reprkit_core::{Error, Real};

#[allow(clippy::too_many_arguments)]
fn ne_t<'py, T: numpy::Element + Real>(
    py: Python<'py>, y: &Obj<'py>, indptr: &Obj<'py>, indices: &Obj<'py>, data: &Obj<'py>, kernel: &str, dof: f64,
    normalization: &str, exaggeration: f64, need_grad: bool, n_threads: usize,
) -> PyResult<Py<PyAny>> {
    let ya = arr2::<T>(y, "outputs")?;
    let (ip, ix, dt) = (arr1::<i64>(indptr, "indptr")?, arr1::<i64>(indices, "indices")?, arr1::<f64>(data, "data")?);
    let (n, d) = (ya.shape()[0], ya.shape()[1]);
    let (ys, ips, ixs, dts) = (slice_of(&ya, "outputs")?, s1(&ip, "indptr")?, s1(&ix, "indices")?, s1(&dt, "data")?);
    let (kernel, norm) = (kernel.to_string(), normalization.to_string());
    let (loss, g) = run(py, n_threads, move || {
        let kernel = match kernel.as_str() {
            "student" => NeKernel::StudentT(dof),
            "gaussian" => NeKernel::Gaussian,
            k => return Err(Error::InvalidParameter(format!("kernel must be 'student' or 'gaussian', got {k:?}"))),
        };
        let norm = match norm.as_str() {
            "joint" => NeNorm::Joint,
            "conditional" => NeNorm::Conditional,
            k => return Err(Error::InvalidParameter(format!("normalization must be 'joint' or 'conditional', got {k:?}"))),
        };
        let p = NeighborEmbedding { y: ys, n, d, indptr: ips, indices: ixs, data: dts, kernel, norm, exaggeration };
        if need_grad {
            let mut g = vec![T::zero(); n * d];
            let loss = neighbor_embedding_loss(&p, Some(&mut g))?;
            Ok((loss, g))
        } else {
            Ok((neighbor_embedding_loss(&p, None)?, Vec::new()))
        }
    })?;
    if need_grad {
        (loss, to_pyarray(py, g, n, d)?).into_py_any(py)
    } else {
        (loss, py.None()).into_py_any(py)
    }
}

/// neighbor_embedding_loss(y, indptr, indices, data, kernel, dof, normalization, exaggeration, need_grad, n_threads)
/// -> (loss, grad | None): KL(P‖Q) of a minibatch, P a CSR (int64 indptr / indices, float64 data).
#[pyfunction]
#[pyo3(name = "neighbor_embedding_loss", signature = (y, indptr, indices, data, kernel, dof, normalization, exaggeration, need_grad, n_threads))]
#[allow(clippy::too_many_arguments)]
fn neighbor_embedding_loss_py<'py>(
    py: Python<'py>, y: &Obj<'py>, indptr: &Obj<'py>, indices: &Obj<'py>, data: &Obj<'py>, kernel: &str, dof: f64,
    normalization: &str, exaggeration: f64, need_grad: bool, n_threads: usize,
) -> PyResult<Py<PyAny>> {
    if is_f64(y)? {
        ne_t::<f64>(py, y, indptr, indices, data, kernel, dof, normalization, exaggeration, need_grad, n_threads)
    } else {
        ne_t::<f32>(py, y, indptr, indices, data, kernel, dof, normalization, exaggeration, need_grad, n_threads)
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(neighbor_embedding_loss_py, m)?)?;
    Ok(())
}
