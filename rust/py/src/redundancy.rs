//! Bindings of `reprkit_core::losses::redundancy`: the off-diagonal sum of squares
//! of aᵀb (Barlow Twins) or xᵀx (VICReg), with its unit-upstream gradient.

use crate::arrays::slice_of;
use crate::held::{arr2, is_f64, opt_grad, Obj};
use crate::runtime::{run, to_pyerr};
use numpy::PyUntypedArrayMethods;
use pyo3::prelude::*;
use pyo3::IntoPyObjectExt;
use reprkit_core::losses::{offdiag_sq, RedundancyPath};
use reprkit_core::Real;

fn offdiag_t<'py, T: numpy::Element + Real>(
    py: Python<'py>, a: &Obj<'py>, b: Option<&Obj<'py>>, path: RedundancyPath, need_grad: bool, n_threads: usize,
) -> PyResult<Py<PyAny>> {
    let aa = arr2::<T>(a, "a")?;
    let ba = match b { Some(o) => Some(arr2::<T>(o, "b")?), None => None };
    let (n, d) = (aa.shape()[0], aa.shape()[1]);
    if let Some(bb) = &ba {
        if bb.shape() != aa.shape() {
            return Err(to_pyerr(py, reprkit_core::Error::Shape(format!("a and b must have the same shape, got {:?} and {:?}", aa.shape(), bb.shape()))));
        }
    }
    let xs = slice_of(&aa, "a")?;
    let ys = match &ba { Some(v) => Some(slice_of(v, "b")?), None => None };
    let cross = ys.is_some();
    let (s, ga, gb) = run(py, n_threads, || {
        if !need_grad {
            return Ok((offdiag_sq(xs, ys, n, d, path, None)?, Vec::new(), Vec::new()));
        }
        let mut ga = vec![T::zero(); n * d];
        let mut gb = if cross { vec![T::zero(); n * d] } else { Vec::new() };
        let s = offdiag_sq(xs, ys, n, d, path, Some((&mut ga, &mut gb)))?;
        Ok((s, ga, gb))
    })?;
    (s, opt_grad(py, ga, n, d)?, opt_grad(py, gb, n, d)?).into_py_any(py)
}

/// offdiag_sq(a, b|None, path, need_grad, n_threads) -> (S, ga|None, gb|None):
/// S = Σ_{k≠l} (aᵀb)_kl² (b None: xᵀx), gradients for a unit upstream when `need_grad`
/// (the symmetric form's ga is the full ∂S/∂x; gb None).
#[pyfunction]
#[pyo3(signature = (a, b, path, need_grad, n_threads))]
fn offdiag_sq_loss<'py>(
    py: Python<'py>, a: &Obj<'py>, b: Option<&Obj<'py>>, path: &str, need_grad: bool, n_threads: usize,
) -> PyResult<Py<PyAny>> {
    let path = RedundancyPath::parse(path).map_err(|e| to_pyerr(py, e))?;
    if is_f64(a)? {
        offdiag_t::<f64>(py, a, b, path, need_grad, n_threads)
    } else {
        offdiag_t::<f32>(py, a, b, path, need_grad, n_threads)
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(offdiag_sq_loss, m)?)?;
    Ok(())
}
