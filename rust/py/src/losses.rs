//! Bindings of `reprkit_core::losses`: forward returns the loss and the small
//! state backward needs; backward returns the gradient for a unit upstream
//! gradient (the Python autograd Function scales it).

use crate::arrays::{slice_of, to_pyarray};
use crate::runtime::{run, to_pyerr};
use numpy::{PyArray2, PyUntypedArrayMethods};
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::IntoPyObjectExt;
use reprkit_core::losses::{self as L, Mask, Mining, TripletCfg, TripletState, Xent};
use reprkit_core::Real;

use crate::held::{arr1, arr2, grads_of, is_f64, opt_grad, s1, vec1, Held, Obj};

// ---------------------------------------------------------------- contrastive

fn contrastive_t<'py, T: numpy::Element + Real>(
    py: Python<'py>, h: Held<'py, T>, margin: f64, backward: bool, n_threads: usize,
) -> PyResult<Py<PyAny>> {
    let b = h.batch()?;
    if !backward {
        let v = run(py, n_threads, || L::contrastive_forward(&b, margin))?;
        return v.into_py_any(py);
    }
    let (gx, gr) = run(py, n_threads, || {
        let (mut gx, mut gr) = grads_of(&b);
        L::contrastive_backward(&b, margin, &mut gx, &mut gr)?;
        Ok((gx, gr))
    })?;
    let m = b.refs.map_or(0, |r| r.1);
    (to_pyarray(py, gx, b.n, b.d)?, opt_grad(py, gr, m, b.d)?).into_py_any(py)
}

/// contrastive_loss(x, labels, ref_x, ref_labels, margin, backward, n_threads) -> loss | (gx, gref|None)
#[pyfunction]
#[pyo3(signature = (x, labels, ref_x, ref_labels, margin, backward, n_threads))]
#[allow(clippy::too_many_arguments)]
fn contrastive_loss<'py>(
    py: Python<'py>, x: &Obj<'py>, labels: &Obj<'py>, ref_x: Option<&Obj<'py>>, ref_labels: Option<&Obj<'py>>,
    margin: f64, backward: bool, n_threads: usize,
) -> PyResult<Py<PyAny>> {
    if is_f64(x)? {
        contrastive_t::<f64>(py, Held::new(x, labels, ref_x, ref_labels)?, margin, backward, n_threads)
    } else {
        contrastive_t::<f32>(py, Held::new(x, labels, ref_x, ref_labels)?, margin, backward, n_threads)
    }
}

// ---------------------------------------------------------------- triplet

#[allow(clippy::too_many_arguments)]
fn triplet_t<'py, T: numpy::Element + Real>(
    py: Python<'py>, h: Held<'py, T>, cfg: TripletCfg, state: Option<(&Obj<'py>, f64)>, n_threads: usize,
) -> PyResult<Py<PyAny>> {
    let b = h.batch()?;
    match state {
        None => {
            let (loss, st) = run(py, n_threads, || L::triplet_forward(&b, &cfg))?;
            let t: Vec<i64> = st.triplets.iter().flat_map(|t| t.iter().map(|&v| v as i64)).collect();
            let nt = st.triplets.len();
            (loss, to_pyarray(py, t, nt, 3)?, st.norm).into_py_any(py)
        }
        Some((trip, norm)) => {
            let ta = trip.cast::<PyArray2<i64>>().map_err(|_| PyTypeError::new_err("triplets: expected an int64 (T, 3) array"))?.clone();
            let ts = slice_of(&ta, "triplets")?;
            if ta.shape()[1] != 3 {
                return Err(PyTypeError::new_err("triplets: expected an int64 (T, 3) array"));
            }
            let mut triplets = Vec::with_capacity(ts.len() / 3);
            for c in ts.chunks(3) {
                if c.iter().any(|&v| v < 0 || v > u32::MAX as i64) {
                    return Err(to_pyerr(py, reprkit_core::Error::InvalidInput("triplet index out of range".into())));
                }
                triplets.push([c[0] as u32, c[1] as u32, c[2] as u32]);
            }
            let st = TripletState { triplets, norm };
            let (gx, gr) = run(py, n_threads, || {
                let (mut gx, mut gr) = grads_of(&b);
                L::triplet_backward(&b, &cfg, &st, &mut gx, &mut gr)?;
                Ok((gx, gr))
            })?;
            let m = b.refs.map_or(0, |r| r.1);
            (to_pyarray(py, gx, b.n, b.d)?, opt_grad(py, gr, m, b.d)?).into_py_any(py)
        }
    }
}

/// triplet_loss(x, labels, ref_x, ref_labels, margin, mining, squared, soft, triplets, norm, n_threads)
/// forward (triplets None) -> (loss, triplets (T,3) int64, norm); backward -> (gx, gref|None).
#[pyfunction]
#[pyo3(signature = (x, labels, ref_x, ref_labels, margin, mining, squared, soft, triplets, norm, n_threads))]
#[allow(clippy::too_many_arguments)]
fn triplet_loss<'py>(
    py: Python<'py>, x: &Obj<'py>, labels: &Obj<'py>, ref_x: Option<&Obj<'py>>, ref_labels: Option<&Obj<'py>>,
    margin: f64, mining: &str, squared: bool, soft: bool, triplets: Option<&Obj<'py>>, norm: f64, n_threads: usize,
) -> PyResult<Py<PyAny>> {
    let mining = Mining::parse(mining).map_err(|e| to_pyerr(py, e))?;
    let cfg = TripletCfg { margin, squared, soft, mining };
    let state = triplets.map(|t| (t, norm));
    if is_f64(x)? {
        triplet_t::<f64>(py, Held::new(x, labels, ref_x, ref_labels)?, cfg, state, n_threads)
    } else {
        triplet_t::<f32>(py, Held::new(x, labels, ref_x, ref_labels)?, cfg, state, n_threads)
    }
}

fn mine_t<'py, T: numpy::Element + Real>(
    py: Python<'py>, h: Held<'py, T>, kind: Mining, margin: f64, squared: bool, n_threads: usize,
) -> PyResult<Py<PyAny>> {
    let b = h.batch()?;
    let t = run(py, n_threads, || L::mine(&b, kind, margin, squared))?;
    let nt = t.len();
    let flat: Vec<i64> = t.iter().flat_map(|t| t.iter().map(|&v| v as i64)).collect();
    to_pyarray(py, flat, nt, 3)?.into_py_any(py)
}

/// mine_triplets(x, labels, ref_x, ref_labels, kind, margin, squared, n_threads) -> (T, 3) int64.
#[pyfunction]
#[pyo3(signature = (x, labels, ref_x, ref_labels, kind, margin, squared, n_threads))]
#[allow(clippy::too_many_arguments)]
fn mine_triplets<'py>(
    py: Python<'py>, x: &Obj<'py>, labels: &Obj<'py>, ref_x: Option<&Obj<'py>>, ref_labels: Option<&Obj<'py>>,
    kind: &str, margin: f64, squared: bool, n_threads: usize,
) -> PyResult<Py<PyAny>> {
    let kind = Mining::parse(kind).map_err(|e| to_pyerr(py, e))?;
    if is_f64(x)? {
        mine_t::<f64>(py, Held::new(x, labels, ref_x, ref_labels)?, kind, margin, squared, n_threads)
    } else {
        mine_t::<f32>(py, Held::new(x, labels, ref_x, ref_labels)?, kind, margin, squared, n_threads)
    }
}

// ---------------------------------------------------------------- lifted

#[allow(clippy::type_complexity)]
fn lifted_t<'py, T: numpy::Element + Real>(
    py: Python<'py>, h: Held<'py, T>, margin: f64, hard: bool, state: Option<(&Obj<'py>, &Obj<'py>, &Obj<'py>)>,
    n_threads: usize,
) -> PyResult<Py<PyAny>> {
    let b = h.batch()?;
    match state {
        None => {
            let (loss, st) = run(py, n_threads, || L::lifted_forward(&b, margin, hard))?;
            (loss, vec1(py, st.lse)?, vec1(py, st.dl)?, vec1(py, st.nearest)?).into_py_any(py)
        }
        Some((l, a, k)) => {
            let (l, a, k) = (arr1::<T>(l, "lse")?, arr1::<T>(a, "dl")?, arr1::<i64>(k, "nearest")?);
            let st = L::LiftedState { lse: s1(&l, "lse")?.to_vec(), dl: s1(&a, "dl")?.to_vec(), nearest: s1(&k, "nearest")?.to_vec() };
            let gx = run(py, n_threads, || {
                let mut gx = vec![T::zero(); b.n * b.d];
                L::lifted_backward(&b, margin, hard, &st, &mut gx)?;
                Ok(gx)
            })?;
            to_pyarray(py, gx, b.n, b.d)?.into_py_any(py)
        }
    }
}

/// lifted_loss(x, labels, margin, hard, lse, dl, nearest, n_threads)
/// forward (state None) -> (loss, lse, dl, nearest); backward -> gx.
#[pyfunction]
#[pyo3(signature = (x, labels, margin, hard, lse, dl, nearest, n_threads))]
#[allow(clippy::too_many_arguments)]
fn lifted_loss<'py>(
    py: Python<'py>, x: &Obj<'py>, labels: &Obj<'py>, margin: f64, hard: bool, lse: Option<&Obj<'py>>,
    dl: Option<&Obj<'py>>, nearest: Option<&Obj<'py>>, n_threads: usize,
) -> PyResult<Py<PyAny>> {
    let state = match (lse, dl, nearest) {
        (Some(a), Some(b), Some(c)) => Some((a, b, c)),
        _ => None,
    };
    if is_f64(x)? {
        lifted_t::<f64>(py, Held::new(x, labels, None, None)?, margin, hard, state, n_threads)
    } else {
        lifted_t::<f32>(py, Held::new(x, labels, None, None)?, margin, hard, state, n_threads)
    }
}

// ---------------------------------------------------------------- cross-entropy

#[allow(clippy::too_many_arguments)]
fn xent_t<'py, T: numpy::Element + Real>(
    py: Python<'py>, q: &Obj<'py>, k: Option<&Obj<'py>>, scale: f64, targets: &Obj<'py>, mask: Mask,
    lse: Option<&Obj<'py>>, n_threads: usize,
) -> PyResult<Py<PyAny>> {
    let qa = arr2::<T>(q, "query")?;
    let ka = match k { Some(o) => Some(arr2::<T>(o, "keys")?), None => None };
    let ta = arr1::<i64>(targets, "targets")?;
    let (n, d) = (qa.shape()[0], qa.shape()[1]);
    let kk = match &ka { Some(a) => Some((slice_of(a, "keys")?, a.shape()[0])), None => None };
    let p = Xent { q: slice_of(&qa, "query")?, n, k: kk, d, scale, targets: s1(&ta, "targets")?, mask };
    match lse {
        None => {
            let (loss, lse) = run(py, n_threads, || L::xent_forward(&p))?;
            (loss, vec1(py, lse)?).into_py_any(py)
        }
        Some(l) => {
            let la = arr1::<T>(l, "lse")?;
            let ls = s1(&la, "lse")?;
            let m = kk.map_or(0, |v| v.1);
            let (gq, gk) = run(py, n_threads, || {
                let mut gq = vec![T::zero(); n * d];
                let mut gk = vec![T::zero(); m * d];
                L::xent_backward(&p, ls, &mut gq, &mut gk)?;
                Ok((gq, gk))
            })?;
            (to_pyarray(py, gq, n, d)?, opt_grad(py, gk, m, d)?).into_py_any(py)
        }
    }
}

/// xent_loss(q, k, scale, targets, mask, tail, lse, n_threads): softmax cross-entropy over
/// scale·q·kᵀ (k None = q itself). mask: "all", "nodiag" or "own_and_tail" (columns i and ≥ tail).
/// forward (lse None) -> (loss, lse); backward -> (gq, gk|None).
#[pyfunction]
#[pyo3(signature = (q, k, scale, targets, mask, tail, lse, n_threads))]
#[allow(clippy::too_many_arguments)]
fn xent_loss<'py>(
    py: Python<'py>, q: &Obj<'py>, k: Option<&Obj<'py>>, scale: f64, targets: &Obj<'py>, mask: &str, tail: usize,
    lse: Option<&Obj<'py>>, n_threads: usize,
) -> PyResult<Py<PyAny>> {
    let mask = match mask {
        "all" => Mask::All,
        "nodiag" => Mask::NoDiag,
        "own_and_tail" => Mask::OwnAndTail(tail),
        _ => return Err(to_pyerr(py, reprkit_core::Error::InvalidParameter(format!("unknown mask {mask:?}")))),
    };
    if is_f64(q)? {
        xent_t::<f64>(py, q, k, scale, targets, mask, lse, n_threads)
    } else {
        xent_t::<f32>(py, q, k, scale, targets, mask, lse, n_threads)
    }
}

fn xent_fused_t<'py, T: numpy::Element + Real>(
    py: Python<'py>, q: &Obj<'py>, k: Option<&Obj<'py>>, scale: f64, targets: &Obj<'py>, mask: Mask, n_threads: usize,
) -> PyResult<Py<PyAny>> {
    let qa = arr2::<T>(q, "query")?;
    let ka = match k { Some(o) => Some(arr2::<T>(o, "keys")?), None => None };
    let ta = arr1::<i64>(targets, "targets")?;
    let (n, d) = (qa.shape()[0], qa.shape()[1]);
    let kk = match &ka { Some(a) => Some((slice_of(a, "keys")?, a.shape()[0])), None => None };
    let m = kk.map_or(0, |v| v.1);
    let p = Xent { q: slice_of(&qa, "query")?, n, k: kk, d, scale, targets: s1(&ta, "targets")?, mask };
    let (loss, gq, gk) = run(py, n_threads, || {
        let mut gq = vec![T::zero(); n * d];
        let mut gk = vec![T::zero(); m * d];
        let loss = L::xent_forward_backward(&p, &mut gq, &mut gk)?;
        Ok((loss, gq, gk))
    })?;
    (loss, to_pyarray(py, gq, n, d)?, opt_grad(py, gk, m, d)?).into_py_any(py)
}

/// xent_loss_fused(q, k, scale, targets, mask, tail, n_threads) -> (loss, gq, gk|None): forward
/// and gradient (unit upstream) in one pass (k None = q itself).
#[pyfunction]
#[pyo3(signature = (q, k, scale, targets, mask, tail, n_threads))]
#[allow(clippy::too_many_arguments)]
fn xent_loss_fused<'py>(
    py: Python<'py>, q: &Obj<'py>, k: Option<&Obj<'py>>, scale: f64, targets: &Obj<'py>, mask: &str, tail: usize, n_threads: usize,
) -> PyResult<Py<PyAny>> {
    let mask = match mask {
        "all" => Mask::All,
        "nodiag" => Mask::NoDiag,
        "own_and_tail" => Mask::OwnAndTail(tail),
        _ => return Err(to_pyerr(py, reprkit_core::Error::InvalidParameter(format!("unknown mask {mask:?}")))),
    };
    if is_f64(q)? {
        xent_fused_t::<f64>(py, q, k, scale, targets, mask, n_threads)
    } else {
        xent_fused_t::<f32>(py, q, k, scale, targets, mask, n_threads)
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(xent_loss_fused, m)?)?;
    m.add_function(wrap_pyfunction!(contrastive_loss, m)?)?;
    m.add_function(wrap_pyfunction!(triplet_loss, m)?)?;
    m.add_function(wrap_pyfunction!(mine_triplets, m)?)?;
    m.add_function(wrap_pyfunction!(lifted_loss, m)?)?;
    m.add_function(wrap_pyfunction!(xent_loss, m)?)?;
    Ok(())
}
