//! Bindings of the proxy losses (Proxy-Anchor, Proxy-NCA). The embeddings come in
//! L2-normalised (the Python layer differentiates that step), the proxies raw; both in
//! one float dtype. Forwards return the per-class (Proxy-Anchor) or per-sample
//! (Proxy-NCA) terms and their O(B + C) state; backwards take the upstream gradient of
//! those terms and return (∂û, ∂w).

use crate::arrays::{slice_of, to_pyarray};
use crate::held::{arr1, arr2, is_f64, s1, vec1, Obj};
use crate::runtime::run;
use numpy::{PyArray1, PyArray2, PyUntypedArrayMethods};
use pyo3::prelude::*;
use pyo3::IntoPyObjectExt;
use reprkit_core::losses::{self as L, Proxies};
use reprkit_core::Real;

/// Typed views of (u, w, labels).
struct Views<'py, T: numpy::Element> {
    u: Bound<'py, PyArray2<T>>,
    w: Bound<'py, PyArray2<T>>,
    y: Bound<'py, PyArray1<i64>>,
}

impl<'py, T: numpy::Element + Real> Views<'py, T> {
    fn new(u: &Obj<'py>, w: &Obj<'py>, y: &Obj<'py>) -> PyResult<Self> {
        Ok(Views { u: arr2::<T>(u, "embeddings")?, w: arr2::<T>(w, "proxies")?, y: arr1::<i64>(y, "labels")? })
    }
    fn problem(&self) -> PyResult<Proxies<'_, T>> {
        let (su, sw) = (self.u.shape(), self.w.shape());
        if su[1] != sw[1] {
            return Err(pyo3::exceptions::PyValueError::new_err(format!(
                "proxies have {} features, embeddings {}",
                sw[1], su[1]
            )));
        }
        Ok(Proxies {
            u: slice_of(&self.u, "embeddings")?,
            n: su[0],
            w: slice_of(&self.w, "proxies")?,
            c: sw[0],
            d: su[1],
            labels: s1(&self.y, "labels")?,
        })
    }
}

fn v1<'py, T: numpy::Element + Real>(o: &Obj<'py>, name: &str) -> PyResult<Vec<T>> {
    let a = arr1::<T>(o, name)?;
    Ok(s1(&a, name)?.to_vec())
}

fn anchor_fwd<'py, T: numpy::Element + Real>(
    py: Python<'py>, u: &Obj<'py>, w: &Obj<'py>, y: &Obj<'py>, margin: f64, alpha: f64, nt: usize,
) -> PyResult<Py<PyAny>> {
    let v = Views::<T>::new(u, w, y)?;
    let p = v.problem()?;
    let t = run(py, nt, || L::proxy_anchor_forward(&p, margin, alpha))?;
    (vec1(py, t.pos)?, vec1(py, t.neg)?, vec1(py, t.count)?).into_py_any(py)
}

/// proxy_anchor_loss(u, w, labels, margin, alpha, n_threads) -> (pos (C,), neg (C,), count (C,)).
#[pyfunction]
#[pyo3(signature = (u, w, labels, margin, alpha, n_threads))]
fn proxy_anchor_loss<'py>(
    py: Python<'py>, u: &Obj<'py>, w: &Obj<'py>, labels: &Obj<'py>, margin: f64, alpha: f64, n_threads: usize,
) -> PyResult<Py<PyAny>> {
    if is_f64(u)? {
        anchor_fwd::<f64>(py, u, w, labels, margin, alpha, n_threads)
    } else {
        anchor_fwd::<f32>(py, u, w, labels, margin, alpha, n_threads)
    }
}

#[allow(clippy::too_many_arguments)]
fn anchor_bwd<'py, T: numpy::Element + Real>(
    py: Python<'py>, u: &Obj<'py>, w: &Obj<'py>, y: &Obj<'py>, margin: f64, alpha: f64, pos: &Obj<'py>,
    neg: &Obj<'py>, g_pos: &Obj<'py>, g_neg: &Obj<'py>, nt: usize,
) -> PyResult<Py<PyAny>> {
    let v = Views::<T>::new(u, w, y)?;
    let p = v.problem()?;
    let (pos, neg) = (v1::<T>(pos, "pos")?, v1::<T>(neg, "neg")?);
    let (gp, gn) = (v1::<T>(g_pos, "g_pos")?, v1::<T>(g_neg, "g_neg")?);
    let (n, c, d) = (p.n, p.c, p.d);
    let (gu, gw) = run(py, nt, || {
        let (mut gu, mut gw) = (vec![T::zero(); n * d], vec![T::zero(); c * d]);
        L::proxy_anchor_backward(&p, margin, alpha, &pos, &neg, &gp, &gn, &mut gu, &mut gw)?;
        Ok((gu, gw))
    })?;
    (to_pyarray(py, gu, n, d)?, to_pyarray(py, gw, c, d)?).into_py_any(py)
}

/// proxy_anchor_loss_backward(u, w, labels, margin, alpha, pos, neg, g_pos, g_neg, n_threads) -> (gu, gw).
#[pyfunction]
#[pyo3(signature = (u, w, labels, margin, alpha, pos, neg, g_pos, g_neg, n_threads))]
#[allow(clippy::too_many_arguments)]
fn proxy_anchor_loss_backward<'py>(
    py: Python<'py>, u: &Obj<'py>, w: &Obj<'py>, labels: &Obj<'py>, margin: f64, alpha: f64, pos: &Obj<'py>,
    neg: &Obj<'py>, g_pos: &Obj<'py>, g_neg: &Obj<'py>, n_threads: usize,
) -> PyResult<Py<PyAny>> {
    if is_f64(u)? {
        anchor_bwd::<f64>(py, u, w, labels, margin, alpha, pos, neg, g_pos, g_neg, n_threads)
    } else {
        anchor_bwd::<f32>(py, u, w, labels, margin, alpha, pos, neg, g_pos, g_neg, n_threads)
    }
}

fn nca_fwd<'py, T: numpy::Element + Real>(
    py: Python<'py>, u: &Obj<'py>, w: &Obj<'py>, y: &Obj<'py>, sigma: f64, nt: usize,
) -> PyResult<Py<PyAny>> {
    let v = Views::<T>::new(u, w, y)?;
    let p = v.problem()?;
    let (per, lse) = run(py, nt, || L::proxy_nca_forward(&p, sigma))?;
    (vec1(py, per)?, vec1(py, lse)?).into_py_any(py)
}

/// proxy_nca_loss(u, w, labels, sigma, n_threads) -> (per (B,), lse (B,)); logits σ·cos.
#[pyfunction]
#[pyo3(signature = (u, w, labels, sigma, n_threads))]
fn proxy_nca_loss<'py>(
    py: Python<'py>, u: &Obj<'py>, w: &Obj<'py>, labels: &Obj<'py>, sigma: f64, n_threads: usize,
) -> PyResult<Py<PyAny>> {
    if is_f64(u)? {
        nca_fwd::<f64>(py, u, w, labels, sigma, n_threads)
    } else {
        nca_fwd::<f32>(py, u, w, labels, sigma, n_threads)
    }
}

#[allow(clippy::too_many_arguments)]
fn nca_bwd<'py, T: numpy::Element + Real>(
    py: Python<'py>, u: &Obj<'py>, w: &Obj<'py>, y: &Obj<'py>, sigma: f64, lse: &Obj<'py>, g: &Obj<'py>, nt: usize,
) -> PyResult<Py<PyAny>> {
    let v = Views::<T>::new(u, w, y)?;
    let p = v.problem()?;
    let (lse, g) = (v1::<T>(lse, "lse")?, v1::<T>(g, "g")?);
    let (n, c, d) = (p.n, p.c, p.d);
    let (gu, gw) = run(py, nt, || {
        let (mut gu, mut gw) = (vec![T::zero(); n * d], vec![T::zero(); c * d]);
        L::proxy_nca_backward(&p, sigma, &lse, &g, &mut gu, &mut gw)?;
        Ok((gu, gw))
    })?;
    (to_pyarray(py, gu, n, d)?, to_pyarray(py, gw, c, d)?).into_py_any(py)
}

/// proxy_nca_loss_backward(u, w, labels, sigma, lse, g, n_threads) -> (gu, gw).
#[pyfunction]
#[pyo3(signature = (u, w, labels, sigma, lse, g, n_threads))]
#[allow(clippy::too_many_arguments)]
fn proxy_nca_loss_backward<'py>(
    py: Python<'py>, u: &Obj<'py>, w: &Obj<'py>, labels: &Obj<'py>, sigma: f64, lse: &Obj<'py>, g: &Obj<'py>,
    n_threads: usize,
) -> PyResult<Py<PyAny>> {
    if is_f64(u)? {
        nca_bwd::<f64>(py, u, w, labels, sigma, lse, g, n_threads)
    } else {
        nca_bwd::<f32>(py, u, w, labels, sigma, lse, g, n_threads)
    }
}

/// (loss, ∂x or a 0×d array, ∂w or a 0×d array) of a fused kernel `f(p, gx, gw)`.
fn fused_t<'py, T: numpy::Element + Real>(
    py: Python<'py>, u: &Obj<'py>, w: &Obj<'py>, y: &Obj<'py>, need_x: bool, need_w: bool, nt: usize,
    f: impl FnOnce(&Proxies<'_, T>, Option<&mut [T]>, Option<&mut [T]>) -> reprkit_core::Result<f64> + Send,
) -> PyResult<Py<PyAny>> {
    let v = Views::<T>::new(u, w, y)?;
    let p = v.problem()?;
    let (n, c, d) = (p.n, p.c, p.d);
    let (loss, gx, gw) = run(py, nt, || {
        let mut gx = vec![T::zero(); if need_x { n * d } else { 0 }];
        let mut gw = vec![T::zero(); if need_w { c * d } else { 0 }];
        let loss = f(&p, need_x.then_some(&mut gx[..]), need_w.then_some(&mut gw[..]))?;
        Ok((loss, gx, gw))
    })?;
    (loss, to_pyarray(py, gx, if need_x { n } else { 0 }, d)?, to_pyarray(py, gw, if need_w { c } else { 0 }, d)?)
        .into_py_any(py)
}

/// proxy_anchor_loss_fused(x, w, labels, margin, alpha, need_x, need_w, n_threads) -> (loss, ∂x, ∂w):
/// the loss of the *raw* embeddings x (normalised in the kernel) and its gradients in one pass;
/// a gradient not needed is a 0×d array.
#[pyfunction]
#[pyo3(signature = (x, w, labels, margin, alpha, need_x, need_w, n_threads))]
#[allow(clippy::too_many_arguments)]
fn proxy_anchor_loss_fused<'py>(
    py: Python<'py>, x: &Obj<'py>, w: &Obj<'py>, labels: &Obj<'py>, margin: f64, alpha: f64, need_x: bool,
    need_w: bool, n_threads: usize,
) -> PyResult<Py<PyAny>> {
    if is_f64(x)? {
        fused_t::<f64>(py, x, w, labels, need_x, need_w, n_threads, |p, gx, gw| L::proxy_anchor_fused(p, margin, alpha, gx, gw))
    } else {
        fused_t::<f32>(py, x, w, labels, need_x, need_w, n_threads, |p, gx, gw| L::proxy_anchor_fused(p, margin, alpha, gx, gw))
    }
}

/// proxy_nca_loss_fused(x, w, labels, sigma, row_weights, need_x, need_w, n_threads) -> (loss, ∂x, ∂w):
/// Σ_i c_i·per_i (row_weights c, float64, length B) of the raw embeddings x with logits σ·cos,
/// and its gradients in one pass; a gradient not needed is a 0×d array.
#[pyfunction]
#[pyo3(signature = (x, w, labels, sigma, row_weights, need_x, need_w, n_threads))]
#[allow(clippy::too_many_arguments)]
fn proxy_nca_loss_fused<'py>(
    py: Python<'py>, x: &Obj<'py>, w: &Obj<'py>, labels: &Obj<'py>, sigma: f64, row_weights: &Obj<'py>,
    need_x: bool, need_w: bool, n_threads: usize,
) -> PyResult<Py<PyAny>> {
    let ca = arr1::<f64>(row_weights, "row_weights")?;
    let c = s1(&ca, "row_weights")?;
    if is_f64(x)? {
        fused_t::<f64>(py, x, w, labels, need_x, need_w, n_threads, |p, gx, gw| L::proxy_nca_fused(p, sigma, c, gx, gw))
    } else {
        fused_t::<f32>(py, x, w, labels, need_x, need_w, n_threads, |p, gx, gw| L::proxy_nca_fused(p, sigma, c, gx, gw))
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(proxy_anchor_loss_fused, m)?)?;
    m.add_function(wrap_pyfunction!(proxy_nca_loss_fused, m)?)?;
    m.add_function(wrap_pyfunction!(proxy_anchor_loss, m)?)?;
    m.add_function(wrap_pyfunction!(proxy_anchor_loss_backward, m)?)?;
    m.add_function(wrap_pyfunction!(proxy_nca_loss, m)?)?;
    m.add_function(wrap_pyfunction!(proxy_nca_loss_backward, m)?)?;
    Ok(())
}
