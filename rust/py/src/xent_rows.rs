//! Per-row bindings of the softmax cross-entropy kernel (`reprkit_core::losses::xent`):
//! the per-row values lse_i − s_{i,t_i} and the gradient of Σ_i g_i·per_i for an
//! upstream g, for reductions other than the mean and per-sample weights.

use crate::arrays::{slice_of, to_pyarray};
use crate::held::{arr1, arr2, is_f64, opt_grad, s1, vec1, Obj};
use crate::runtime::{run, to_pyerr};
use numpy::PyUntypedArrayMethods;
use pyo3::prelude::*;
use pyo3::IntoPyObjectExt;
use reprkit_core::losses::{self as L, Mask, Xent};
use reprkit_core::Real;

fn mask_of(py: Python<'_>, mask: &str, tail: usize) -> PyResult<Mask> {
    match mask {
        "all" => Ok(Mask::All),
        "nodiag" => Ok(Mask::NoDiag),
        "own_and_tail" => Ok(Mask::OwnAndTail(tail)),
        _ => Err(to_pyerr(py, reprkit_core::Error::InvalidParameter(format!("unknown mask {mask:?}")))),
    }
}

/// Forward (`lse_g` None) -> (per, lse); backward (Some((lse, g))) -> (gq, gk | None).
#[allow(clippy::too_many_arguments)]
fn rows_t<'py, T: numpy::Element + Real>(
    py: Python<'py>, q: &Obj<'py>, k: Option<&Obj<'py>>, scale: f64, targets: &Obj<'py>, mask: Mask,
    lse_g: Option<(&Obj<'py>, &Obj<'py>)>, n_threads: usize,
) -> PyResult<Py<PyAny>> {
    let qa = arr2::<T>(q, "query")?;
    let ka = match k { Some(o) => Some(arr2::<T>(o, "keys")?), None => None };
    let ta = arr1::<i64>(targets, "targets")?;
    let (n, d) = (qa.shape()[0], qa.shape()[1]);
    let kk = match &ka { Some(a) => Some((slice_of(a, "keys")?, a.shape()[0])), None => None };
    let p = Xent { q: slice_of(&qa, "query")?, n, k: kk, d, scale, targets: s1(&ta, "targets")?, mask };
    match lse_g {
        None => {
            let (per, lse) = run(py, n_threads, || L::xent_forward_rows(&p))?;
            (vec1(py, per)?, vec1(py, lse)?).into_py_any(py)
        }
        Some((l, g)) => {
            let la = arr1::<T>(l, "lse")?;
            let ga = arr1::<T>(g, "g")?;
            let (ls, gs) = (s1(&la, "lse")?, s1(&ga, "g")?);
            let m = kk.map_or(0, |v| v.1);
            let (gq, gk) = run(py, n_threads, || {
                let mut gq = vec![T::zero(); n * d];
                let mut gk = vec![T::zero(); m * d];
                L::xent_backward_rows(&p, ls, gs, &mut gq, &mut gk)?;
                Ok((gq, gk))
            })?;
            (to_pyarray(py, gq, n, d)?, opt_grad(py, gk, m, d)?).into_py_any(py)
        }
    }
}

/// xent_loss_rows(q, k, scale, targets, mask, tail, n_threads) -> (per (n,), lse (n,)):
/// per_i = logsumexp_{j valid} s_ij − s_{i,t_i} (≥ 0), s = scale·q·kᵀ (k None = q itself).
#[pyfunction]
#[pyo3(signature = (q, k, scale, targets, mask, tail, n_threads))]
#[allow(clippy::too_many_arguments)]
fn xent_loss_rows<'py>(
    py: Python<'py>, q: &Obj<'py>, k: Option<&Obj<'py>>, scale: f64, targets: &Obj<'py>, mask: &str, tail: usize,
    n_threads: usize,
) -> PyResult<Py<PyAny>> {
    let mask = mask_of(py, mask, tail)?;
    if is_f64(q)? {
        rows_t::<f64>(py, q, k, scale, targets, mask, None, n_threads)
    } else {
        rows_t::<f32>(py, q, k, scale, targets, mask, None, n_threads)
    }
}

/// xent_loss_rows_backward(q, k, scale, targets, mask, tail, lse, g, n_threads) -> (gq, gk | None):
/// the gradient of Σ_i g_i·per_i (lse from xent_loss_rows or xent_loss, g (n,) in q's dtype).
#[pyfunction]
#[pyo3(signature = (q, k, scale, targets, mask, tail, lse, g, n_threads))]
#[allow(clippy::too_many_arguments)]
fn xent_loss_rows_backward<'py>(
    py: Python<'py>, q: &Obj<'py>, k: Option<&Obj<'py>>, scale: f64, targets: &Obj<'py>, mask: &str, tail: usize,
    lse: &Obj<'py>, g: &Obj<'py>, n_threads: usize,
) -> PyResult<Py<PyAny>> {
    let mask = mask_of(py, mask, tail)?;
    if is_f64(q)? {
        rows_t::<f64>(py, q, k, scale, targets, mask, Some((lse, g)), n_threads)
    } else {
        rows_t::<f32>(py, q, k, scale, targets, mask, Some((lse, g)), n_threads)
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(xent_loss_rows, m)?)?;
    m.add_function(wrap_pyfunction!(xent_loss_rows_backward, m)?)?;
    Ok(())
}
