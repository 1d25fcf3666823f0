//! Bindings of the margin-softmax kernel (`reprkit_core::losses::margin`): the forward returns
//! the loss and the per-row log-sum-exp (O(n) state), the backward takes the upstream scalar g
//! and recomputes the tiles, returning ∂L/∂z (n×d) and ∂L/∂W ((C·K)×d).

use crate::arrays::{slice_of, to_pyarray};
use crate::held::{arr1, arr2, is_f64, s1, vec1, Obj};
use crate::runtime::{run, to_pyerr};
use numpy::{PyArray1, PyUntypedArrayMethods};
use pyo3::prelude::*;
use pyo3::IntoPyObjectExt;
use reprkit_core::losses::{margin_backward, margin_forward, margin_fused, MarginKind, MarginSoftmax};
use reprkit_core::Real;

/// Borrows the arrays, checks W's shape against the embeddings and `sub_centers`, and hands
/// the kernel's problem and W's row count (C·K) to `f`.
#[allow(clippy::too_many_arguments)]
fn with_problem<'py, T: numpy::Element + Real, R>(
    py: Python<'py>, z: &Obj<'py>, w: &Obj<'py>, labels: &Obj<'py>, margins: &Obj<'py>, scale: f64, kind: MarginKind,
    sub_centers: usize, f: impl FnOnce(&MarginSoftmax<'_, T>, usize) -> PyResult<R>,
) -> PyResult<R> {
    let za = arr2::<T>(z, "embeddings")?;
    let wa = arr2::<T>(w, "weight")?;
    let la = arr1::<i64>(labels, "labels")?;
    let ma = arr1::<f64>(margins, "margin")?;
    let (n, d) = (za.shape()[0], za.shape()[1]);
    let (rw, dw) = (wa.shape()[0], wa.shape()[1]);
    let k = sub_centers.max(1);
    if dw != d || rw % k != 0 {
        return Err(to_pyerr(
            py,
            reprkit_core::Error::Shape(format!("weight must be (num_classes·{k}, {d}), got ({rw}, {dw})")),
        ));
    }
    let p = MarginSoftmax {
        z: slice_of(&za, "embeddings")?,
        n,
        d,
        w: slice_of(&wa, "weight")?,
        classes: rw / k,
        sub_centers: k,
        labels: s1(&la, "labels")?,
        margins: s1(&ma, "margin")?,
        scale,
        kind,
    };
    f(&p, rw)
}

#[allow(clippy::too_many_arguments)]
fn margin_t<'py, T: numpy::Element + Real>(
    py: Python<'py>, z: &Obj<'py>, w: &Obj<'py>, labels: &Obj<'py>, margins: &Obj<'py>, scale: f64, kind: MarginKind,
    sub_centers: usize, back: Option<(&Obj<'py>, f64)>, n_threads: usize,
) -> PyResult<Py<PyAny>> {
    with_problem::<T, _>(py, z, w, labels, margins, scale, kind, sub_centers, |p, rw| {
        let (n, d) = (p.n, p.d);
        match back {
            None => {
                let (loss, st) = run(py, n_threads, || margin_forward(p))?;
                (loss, vec1(py, st.lse)?).into_py_any(py)
            }
            Some((lse, g)) => {
                let la = lse.cast::<PyArray1<T>>().map_err(|_| {
                    pyo3::exceptions::PyTypeError::new_err("lse: expected a 1-D array of the embeddings' dtype")
                })?;
                let ls = s1(la, "lse")?;
                let (gz, gw) = run(py, n_threads, || {
                    let mut gz = vec![T::zero(); n * d];
                    let mut gw = vec![T::zero(); rw * d];
                    margin_backward(p, ls, g, &mut gz, &mut gw)?;
                    Ok((gz, gw))
                })?;
                (to_pyarray(py, gz, n, d)?, to_pyarray(py, gw, rw, d)?).into_py_any(py)
            }
        }
    })
}

/// margin_loss(z, w, labels, margins, scale, kind, easy_margin, sub_centers, lse, g, n_threads):
/// kind "linear" | "normalized" | "cosface" | "arcface"; margins a float64 array of length 1 or C.
/// lse None -> (loss, lse); else -> (grad_z, grad_w) for upstream g.
#[pyfunction]
#[pyo3(signature = (z, w, labels, margins, scale, kind, easy_margin, sub_centers, lse, g, n_threads))]
#[allow(clippy::too_many_arguments)]
fn margin_loss<'py>(
    py: Python<'py>, z: &Obj<'py>, w: &Obj<'py>, labels: &Obj<'py>, margins: &Obj<'py>, scale: f64, kind: &str,
    easy_margin: bool, sub_centers: usize, lse: Option<&Obj<'py>>, g: f64, n_threads: usize,
) -> PyResult<Py<PyAny>> {
    let kind = MarginKind::parse(kind, easy_margin).map_err(|e| to_pyerr(py, e))?;
    let back = lse.map(|l| (l, g));
    if is_f64(z)? {
        margin_t::<f64>(py, z, w, labels, margins, scale, kind, sub_centers, back, n_threads)
    } else {
        margin_t::<f32>(py, z, w, labels, margins, scale, kind, sub_centers, back, n_threads)
    }
}

#[allow(clippy::too_many_arguments)]
fn fused_t<'py, T: numpy::Element + Real>(
    py: Python<'py>, z: &Obj<'py>, w: &Obj<'py>, labels: &Obj<'py>, margins: &Obj<'py>, scale: f64, kind: MarginKind,
    sub_centers: usize, need_z: bool, need_w: bool, n_threads: usize,
) -> PyResult<Py<PyAny>> {
    with_problem::<T, _>(py, z, w, labels, margins, scale, kind, sub_centers, |p, rw| {
        let (n, d) = (p.n, p.d);
        let (loss, gz, gw) = run(py, n_threads, || {
            let mut gz = vec![T::zero(); if need_z { n * d } else { 0 }];
            let mut gw = vec![T::zero(); if need_w { rw * d } else { 0 }];
            let loss = margin_fused(p, need_z.then_some(&mut gz[..]), need_w.then_some(&mut gw[..]))?;
            Ok((loss, gz, gw))
        })?;
        (loss, to_pyarray(py, gz, if need_z { n } else { 0 }, d)?, to_pyarray(py, gw, if need_w { rw } else { 0 }, d)?)
            .into_py_any(py)
    })
}

/// margin_loss_fused(z, w, labels, margins, scale, kind, easy_margin, sub_centers, need_z, need_w, n_threads)
/// -> (loss, ∂L/∂z (n×d, or 0×d without need_z), ∂L/∂W ((C·K)×d, or 0×d without need_w)):
/// loss and gradients in one pass (3 GEMMs; the batch in strips, O(strip·C·K) extra state).
#[pyfunction]
#[pyo3(signature = (z, w, labels, margins, scale, kind, easy_margin, sub_centers, need_z, need_w, n_threads))]
#[allow(clippy::too_many_arguments)]
fn margin_loss_fused<'py>(
    py: Python<'py>, z: &Obj<'py>, w: &Obj<'py>, labels: &Obj<'py>, margins: &Obj<'py>, scale: f64, kind: &str,
    easy_margin: bool, sub_centers: usize, need_z: bool, need_w: bool, n_threads: usize,
) -> PyResult<Py<PyAny>> {
    let kind = MarginKind::parse(kind, easy_margin).map_err(|e| to_pyerr(py, e))?;
    if is_f64(z)? {
        fused_t::<f64>(py, z, w, labels, margins, scale, kind, sub_centers, need_z, need_w, n_threads)
    } else {
        fused_t::<f32>(py, z, w, labels, margins, scale, kind, sub_centers, need_z, need_w, n_threads)
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(margin_loss, m)?)?;
    m.add_function(wrap_pyfunction!(margin_loss_fused, m)?)?;
    Ok(())
}
