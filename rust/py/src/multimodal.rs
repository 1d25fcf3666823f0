//! Bindings of `reprkit_core::losses::multimodal`: CLIP (forward → loss and the
//! row / column log-sum-exps; backward recomputes the tiles) and SigLIP (loss,
//! or loss and unit-upstream gradients in one fused pass).

use crate::arrays::{slice_of, to_pyarray};
use crate::held::{arr1, arr2, is_f64, s1, vec1, Obj};
use crate::runtime::{run, to_pyerr};
use numpy::{PyArray2, PyUntypedArrayMethods};
use pyo3::prelude::*;
use pyo3::IntoPyObjectExt;
use reprkit_core::losses::{self as L, Pairs};
use reprkit_core::{Error, Real};

type Two<'py, T> = (Bound<'py, PyArray2<T>>, Bound<'py, PyArray2<T>>);

/// The two feature arrays, checked to have one shape.
fn views<'py, T: numpy::Element>(py: Python<'py>, x: &Obj<'py>, y: &Obj<'py>) -> PyResult<Two<'py, T>> {
    let (xa, ya) = (arr2::<T>(x, "image_features")?, arr2::<T>(y, "text_features")?);
    if xa.shape() != ya.shape() {
        return Err(to_pyerr(
            py,
            Error::Shape(format!("image_features {:?} and text_features {:?} must have the same shape", xa.shape(), ya.shape())),
        ));
    }
    Ok((xa, ya))
}

fn clip_t<'py, T: numpy::Element + Real>(py: Python<'py>, x: &Obj<'py>, y: &Obj<'py>, scale: f64, n_threads: usize) -> PyResult<Py<PyAny>> {
    let (xa, ya) = views::<T>(py, x, y)?;
    let (n, d) = (xa.shape()[0], xa.shape()[1]);
    let p = Pairs { x: slice_of(&xa, "image_features")?, y: slice_of(&ya, "text_features")?, n, d };
    let st = run(py, n_threads, || L::clip_forward(&p, scale))?;
    (st.loss, vec1(py, st.lse_rows)?, vec1(py, st.lse_cols)?).into_py_any(py)
}

/// clip_loss(image_features, text_features, scale, n_threads) -> (loss, lse_rows, lse_cols).
#[pyfunction]
fn clip_loss<'py>(py: Python<'py>, x: &Obj<'py>, y: &Obj<'py>, scale: f64, n_threads: usize) -> PyResult<Py<PyAny>> {
    if is_f64(x)? {
        clip_t::<f64>(py, x, y, scale, n_threads)
    } else {
        clip_t::<f32>(py, x, y, scale, n_threads)
    }
}

#[allow(clippy::too_many_arguments)]
fn clip_backward_t<'py, T: numpy::Element + Real>(
    py: Python<'py>, x: &Obj<'py>, y: &Obj<'py>, scale: f64, lse_rows: &Obj<'py>, lse_cols: &Obj<'py>, g: f64, n_threads: usize,
) -> PyResult<Py<PyAny>> {
    let (xa, ya) = views::<T>(py, x, y)?;
    let (lr, lc) = (arr1::<T>(lse_rows, "lse_rows")?, arr1::<T>(lse_cols, "lse_cols")?);
    let (n, d) = (xa.shape()[0], xa.shape()[1]);
    let p = Pairs { x: slice_of(&xa, "image_features")?, y: slice_of(&ya, "text_features")?, n, d };
    let (lrs, lcs) = (s1(&lr, "lse_rows")?, s1(&lc, "lse_cols")?);
    let (gx, gy, gs) = run(py, n_threads, || {
        let (mut gx, mut gy) = (vec![T::zero(); n * d], vec![T::zero(); n * d]);
        let gs = L::clip_backward(&p, scale, lrs, lcs, g, &mut gx, &mut gy)?;
        Ok((gx, gy, gs))
    })?;
    (to_pyarray(py, gx, n, d)?, to_pyarray(py, gy, n, d)?, gs).into_py_any(py)
}

/// clip_loss_backward(image_features, text_features, scale, lse_rows, lse_cols, g, n_threads)
/// -> (grad_image, grad_text, grad_scale), all times the upstream g.
#[pyfunction]
#[allow(clippy::too_many_arguments)]
fn clip_loss_backward<'py>(
    py: Python<'py>, x: &Obj<'py>, y: &Obj<'py>, scale: f64, lse_rows: &Obj<'py>, lse_cols: &Obj<'py>, g: f64, n_threads: usize,
) -> PyResult<Py<PyAny>> {
    if is_f64(x)? {
        clip_backward_t::<f64>(py, x, y, scale, lse_rows, lse_cols, g, n_threads)
    } else {
        clip_backward_t::<f32>(py, x, y, scale, lse_rows, lse_cols, g, n_threads)
    }
}

#[allow(clippy::too_many_arguments)]
fn siglip_t<'py, T: numpy::Element + Real>(
    py: Python<'py>, x: &Obj<'py>, y: &Obj<'py>, scale: f64, bias: f64, need_grad: bool, n_threads: usize,
) -> PyResult<Py<PyAny>> {
    let (xa, ya) = views::<T>(py, x, y)?;
    let (n, d) = (xa.shape()[0], xa.shape()[1]);
    let p = Pairs { x: slice_of(&xa, "image_features")?, y: slice_of(&ya, "text_features")?, n, d };
    if !need_grad {
        let loss = run(py, n_threads, || L::siglip_forward(&p, scale, bias))?;
        return (loss, py.None(), py.None(), 0.0f64, 0.0f64).into_py_any(py);
    }
    let (out, gx, gy) = run(py, n_threads, || {
        let (mut gx, mut gy) = (vec![T::zero(); n * d], vec![T::zero(); n * d]);
        let out = L::siglip_forward_backward(&p, scale, bias, &mut gx, &mut gy)?;
        Ok((out, gx, gy))
    })?;
    (out.loss, to_pyarray(py, gx, n, d)?, to_pyarray(py, gy, n, d)?, out.d_scale, out.d_bias).into_py_any(py)
}

/// siglip_loss(image_features, text_features, scale, bias, need_grad, n_threads)
/// -> (loss, grad_image|None, grad_text|None, grad_scale, grad_bias) (unit upstream).
#[pyfunction]
#[allow(clippy::too_many_arguments)]
fn siglip_loss<'py>(
    py: Python<'py>, x: &Obj<'py>, y: &Obj<'py>, scale: f64, bias: f64, need_grad: bool, n_threads: usize,
) -> PyResult<Py<PyAny>> {
    if is_f64(x)? {
        siglip_t::<f64>(py, x, y, scale, bias, need_grad, n_threads)
    } else {
        siglip_t::<f32>(py, x, y, scale, bias, need_grad, n_threads)
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(clip_loss, m)?)?;
    m.add_function(wrap_pyfunction!(clip_loss_backward, m)?)?;
    m.add_function(wrap_pyfunction!(siglip_loss, m)?)?;
    Ok(())
}
