//! Bindings of the supervised contrastive (SupCon) and uniformity kernels: arrays
//! in, the loss and (fused) its unit-upstream gradient out; the Python autograd
//! Function scales the gradient by the upstream g.

use crate::arrays::{slice_of, to_pyarray};
use crate::held::{arr1, arr2, is_f64, s1, Obj};
use crate::runtime::run;
use numpy::PyUntypedArrayMethods;
use pyo3::prelude::*;
use pyo3::IntoPyObjectExt;
use reprkit_core::losses::{self as L, SupCon, Uniformity};
use reprkit_core::Real;

fn supcon_t<'py, T: numpy::Element + Real>(
    py: Python<'py>, z: &Obj<'py>, scale: f64, groups: &Obj<'py>, need_grad: bool, n_threads: usize,
) -> PyResult<Py<PyAny>> {
    let za = arr2::<T>(z, "embeddings")?;
    let ga = arr1::<i64>(groups, "labels")?;
    let (n, d) = (za.shape()[0], za.shape()[1]);
    let p = SupCon { z: slice_of(&za, "embeddings")?, n, d, scale, groups: s1(&ga, "labels")? };
    if !need_grad {
        let loss = run(py, n_threads, || Ok(L::supcon_forward(&p)?.0))?;
        return (loss, py.None()).into_py_any(py);
    }
    let (loss, g) = run(py, n_threads, || {
        let mut g = vec![T::zero(); n * d];
        let loss = L::supcon_forward_backward(&p, &mut g)?;
        Ok((loss, g))
    })?;
    (loss, to_pyarray(py, g, n, d)?).into_py_any(py)
}

/// supcon_loss(z, scale, groups, need_grad, n_threads) -> (loss, grad | None): unit rows z,
/// positives = other rows of the same group; the gradient (unit upstream) only with need_grad.
#[pyfunction]
#[pyo3(signature = (z, scale, groups, need_grad, n_threads))]
fn supcon_loss<'py>(
    py: Python<'py>, z: &Obj<'py>, scale: f64, groups: &Obj<'py>, need_grad: bool, n_threads: usize,
) -> PyResult<Py<PyAny>> {
    if is_f64(z)? {
        supcon_t::<f64>(py, z, scale, groups, need_grad, n_threads)
    } else {
        supcon_t::<f32>(py, z, scale, groups, need_grad, n_threads)
    }
}

fn uniformity_t<'py, T: numpy::Element + Real>(
    py: Python<'py>, x: &Obj<'py>, t: f64, need_grad: bool, n_threads: usize,
) -> PyResult<Py<PyAny>> {
    let xa = arr2::<T>(x, "x")?;
    let (n, d) = (xa.shape()[0], xa.shape()[1]);
    let p = Uniformity { x: slice_of(&xa, "x")?, n, d, t };
    if !need_grad {
        let loss = run(py, n_threads, || L::uniformity_forward(&p))?;
        return (loss, py.None()).into_py_any(py);
    }
    let (loss, g) = run(py, n_threads, || {
        let mut g = vec![T::zero(); n * d];
        let loss = L::uniformity_forward_backward(&p, &mut g)?;
        Ok((loss, g))
    })?;
    (loss, to_pyarray(py, g, n, d)?).into_py_any(py)
}

/// uniformity_loss(x, t, need_grad, n_threads) -> (loss, grad | None):
/// log mean_{i<j} exp(−t‖x_i − x_j‖²) and its gradient (unit upstream) with need_grad.
#[pyfunction]
#[pyo3(signature = (x, t, need_grad, n_threads))]
fn uniformity_loss<'py>(py: Python<'py>, x: &Obj<'py>, t: f64, need_grad: bool, n_threads: usize) -> PyResult<Py<PyAny>> {
    if is_f64(x)? {
        uniformity_t::<f64>(py, x, t, need_grad, n_threads)
    } else {
        uniformity_t::<f32>(py, x, t, need_grad, n_threads)
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(supcon_loss, m)?)?;
    m.add_function(wrap_pyfunction!(uniformity_loss, m)?)?;
    Ok(())
}
