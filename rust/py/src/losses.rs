//! Bindings of `reprkit_core::losses`. Pair, triplet and lifted forwards return
//! per-anchor (or per-tuple) values and counts plus the small state backward
//! needs; their backwards take the upstream gradient g of those values. The
//! cross-entropy bindings return the loss and a unit-upstream gradient (the
//! Python autograd Function scales it).

use crate::arrays::{slice_of, to_pyarray};
use crate::runtime::{run, to_pyerr};
use numpy::{PyArray1, PyArray2, PyUntypedArrayMethods};
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::IntoPyObjectExt;
use reprkit_core::losses::{self as L, Batch, Mask, Metric, Mining, Rows, TripletCfg, Xent};
use reprkit_core::Real;

use crate::held::{arr1, arr2, is_f64, opt_grad, s1, vec1, Held, Obj};

fn grads_of<T: Real>(n: usize, d: usize, refs_rows: Option<usize>) -> (Vec<T>, Vec<T>) {
    (vec![T::zero(); n * d], refs_rows.map_or_else(Vec::new, |m| vec![T::zero(); m * d]))
}

fn batch_grads<T: Real>(b: &Batch<T>) -> (Vec<T>, Vec<T>) {
    grads_of(b.n, b.d, b.refs.map(|r| r.1))
}

fn metric_of(py: Python<'_>, s: &str) -> PyResult<Metric> {
    Metric::parse(s).map_err(|e| to_pyerr(py, e))
}

fn mining_of(py: Python<'_>, s: &str) -> PyResult<Mining> {
    Mining::parse(s).map_err(|e| to_pyerr(py, e))
}

/// (gx, gref | None) as a Python tuple.
fn grad_pair<'py, T: numpy::Element>(
    py: Python<'py>, gx: Vec<T>, gr: Vec<T>, n: usize, m: usize, d: usize,
) -> PyResult<Py<PyAny>> {
    (to_pyarray(py, gx, n, d)?, opt_grad(py, gr, m, d)?).into_py_any(py)
}

/// (T, 3) int64 array of triplets.
fn triplets_array<'py>(py: Python<'py>, t: &[[u32; 3]]) -> PyResult<Bound<'py, PyArray2<i64>>> {
    let flat: Vec<i64> = t.iter().flat_map(|t| t.iter().map(|&v| v as i64)).collect();
    to_pyarray(py, flat, t.len(), 3)
}

/// Owned typed views of the unlabelled (x, ref_x) of the tuple losses.
struct HeldRows<'py, T: numpy::Element> {
    x: Bound<'py, PyArray2<T>>,
    refs: Option<Bound<'py, PyArray2<T>>>,
}

impl<'py, T: numpy::Element + Real> HeldRows<'py, T> {
    fn new(x: &Obj<'py>, rx: Option<&Obj<'py>>) -> PyResult<Self> {
        let refs = match rx { Some(a) => Some(arr2::<T>(a, "ref_embeddings")?), None => None };
        Ok(HeldRows { x: arr2::<T>(x, "embeddings")?, refs })
    }
    fn rows(&self) -> PyResult<Rows<'_, T>> {
        let s = self.x.shape();
        let refs = match &self.refs { Some(a) => Some((slice_of(a, "ref_embeddings")?, a.shape()[0])), None => None };
        Ok(Rows { x: slice_of(&self.x, "embeddings")?, n: s[0], d: s[1], refs })
    }
}

/// Index columns of the tuple losses (1-D int64), kept alive for the call.
fn idx<'py>(o: &Obj<'py>, name: &str) -> PyResult<Bound<'py, PyArray1<i64>>> {
    arr1::<i64>(o, name)
}

// ---------------------------------------------------------------- contrastive

fn contrastive_fwd_t<'py, T: numpy::Element + Real>(
    py: Python<'py>, h: Held<'py, T>, margin: f64, metric: Metric, n_threads: usize,
) -> PyResult<Py<PyAny>> {
    let b = h.batch()?;
    let (per, cnt) = run(py, n_threads, || L::contrastive_forward(&b, margin, metric))?;
    (vec1(py, per)?, vec1(py, cnt)?).into_py_any(py)
}

/// contrastive_loss(x, labels, ref_x, ref_labels, margin, metric, n_threads) -> (per, cnt)
#[pyfunction]
#[pyo3(signature = (x, labels, ref_x, ref_labels, margin, metric, n_threads))]
#[allow(clippy::too_many_arguments)]
fn contrastive_loss<'py>(
    py: Python<'py>, x: &Obj<'py>, labels: &Obj<'py>, ref_x: Option<&Obj<'py>>, ref_labels: Option<&Obj<'py>>,
    margin: f64, metric: &str, n_threads: usize,
) -> PyResult<Py<PyAny>> {
    let metric = metric_of(py, metric)?;
    if is_f64(x)? {
        contrastive_fwd_t::<f64>(py, Held::new(x, labels, ref_x, ref_labels)?, margin, metric, n_threads)
    } else {
        contrastive_fwd_t::<f32>(py, Held::new(x, labels, ref_x, ref_labels)?, margin, metric, n_threads)
    }
}

fn contrastive_bwd_t<'py, T: numpy::Element + Real>(
    py: Python<'py>, h: Held<'py, T>, margin: f64, metric: Metric, g: &Obj<'py>, n_threads: usize,
) -> PyResult<Py<PyAny>> {
    let b = h.batch()?;
    let ga = arr1::<T>(g, "g")?;
    let gs = s1(&ga, "g")?;
    let (gx, gr) = run(py, n_threads, || {
        let (mut gx, mut gr) = batch_grads(&b);
        L::contrastive_backward(&b, margin, metric, gs, &mut gx, &mut gr)?;
        Ok((gx, gr))
    })?;
    grad_pair(py, gx, gr, b.n, b.refs.map_or(0, |r| r.1), b.d)
}

/// contrastive_loss_backward(x, labels, ref_x, ref_labels, margin, metric, g, n_threads) -> (gx, gref | None)
#[pyfunction]
#[pyo3(signature = (x, labels, ref_x, ref_labels, margin, metric, g, n_threads))]
#[allow(clippy::too_many_arguments)]
fn contrastive_loss_backward<'py>(
    py: Python<'py>, x: &Obj<'py>, labels: &Obj<'py>, ref_x: Option<&Obj<'py>>, ref_labels: Option<&Obj<'py>>,
    margin: f64, metric: &str, g: &Obj<'py>, n_threads: usize,
) -> PyResult<Py<PyAny>> {
    let metric = metric_of(py, metric)?;
    if is_f64(x)? {
        contrastive_bwd_t::<f64>(py, Held::new(x, labels, ref_x, ref_labels)?, margin, metric, g, n_threads)
    } else {
        contrastive_bwd_t::<f32>(py, Held::new(x, labels, ref_x, ref_labels)?, margin, metric, g, n_threads)
    }
}

// ---------------------------------------------------------------- triplet

fn triplet_fwd_t<'py, T: numpy::Element + Real>(
    py: Python<'py>, h: Held<'py, T>, cfg: TripletCfg, n_threads: usize,
) -> PyResult<Py<PyAny>> {
    let b = h.batch()?;
    let out = run(py, n_threads, || L::triplet_forward(&b, &cfg))?;
    (vec1(py, out.per)?, vec1(py, out.cnt)?, triplets_array(py, &out.triplets)?).into_py_any(py)
}

/// triplet_loss(x, labels, ref_x, ref_labels, margin, mining, metric, soft, n_threads) -> (per, cnt, triplets)
#[pyfunction]
#[pyo3(signature = (x, labels, ref_x, ref_labels, margin, mining, metric, soft, n_threads))]
#[allow(clippy::too_many_arguments)]
fn triplet_loss<'py>(
    py: Python<'py>, x: &Obj<'py>, labels: &Obj<'py>, ref_x: Option<&Obj<'py>>, ref_labels: Option<&Obj<'py>>,
    margin: f64, mining: &str, metric: &str, soft: bool, n_threads: usize,
) -> PyResult<Py<PyAny>> {
    let cfg = TripletCfg { margin, metric: metric_of(py, metric)?, soft, mining: mining_of(py, mining)? };
    if is_f64(x)? {
        triplet_fwd_t::<f64>(py, Held::new(x, labels, ref_x, ref_labels)?, cfg, n_threads)
    } else {
        triplet_fwd_t::<f32>(py, Held::new(x, labels, ref_x, ref_labels)?, cfg, n_threads)
    }
}

/// A (T, 3) int64 array of triplets as u32 index triples (negative or ≥ 2³² → error).
fn parse_triplets(py: Python<'_>, trip: &Obj<'_>) -> PyResult<Vec<[u32; 3]>> {
    let bad = || PyTypeError::new_err("triplets: expected an int64 (T, 3) array");
    let ta = trip.cast::<PyArray2<i64>>().map_err(|_| bad())?.clone();
    if ta.shape()[1] != 3 {
        return Err(bad());
    }
    let ts = slice_of(&ta, "triplets")?;
    let mut out = Vec::with_capacity(ts.len() / 3);
    for c in ts.chunks(3) {
        if c.iter().any(|&v| v < 0 || v > u32::MAX as i64) {
            return Err(to_pyerr(py, reprkit_core::Error::InvalidInput("triplet index out of range".into())));
        }
        out.push([c[0] as u32, c[1] as u32, c[2] as u32]);
    }
    Ok(out)
}

fn triplet_bwd_t<'py, T: numpy::Element + Real>(
    py: Python<'py>, h: Held<'py, T>, cfg: TripletCfg, triplets: &Obj<'py>, g: &Obj<'py>, n_threads: usize,
) -> PyResult<Py<PyAny>> {
    let b = h.batch()?;
    // Dense minings recompute tiles: their (0, 3) triplets are not read.
    let ts = if cfg.mining.sparse() { parse_triplets(py, triplets)? } else { Vec::new() };
    let ga = arr1::<T>(g, "g")?;
    let gs = s1(&ga, "g")?;
    let (gx, gr) = run(py, n_threads, || {
        let (mut gx, mut gr) = batch_grads(&b);
        L::triplet_backward(&b, &cfg, &ts, gs, &mut gx, &mut gr)?;
        Ok((gx, gr))
    })?;
    grad_pair(py, gx, gr, b.n, b.refs.map_or(0, |r| r.1), b.d)
}

/// triplet_loss_backward(x, labels, ref_x, ref_labels, margin, mining, metric, soft, triplets, g, n_threads)
/// -> (gx, gref | None)
#[pyfunction]
#[pyo3(signature = (x, labels, ref_x, ref_labels, margin, mining, metric, soft, triplets, g, n_threads))]
#[allow(clippy::too_many_arguments)]
fn triplet_loss_backward<'py>(
    py: Python<'py>, x: &Obj<'py>, labels: &Obj<'py>, ref_x: Option<&Obj<'py>>, ref_labels: Option<&Obj<'py>>,
    margin: f64, mining: &str, metric: &str, soft: bool, triplets: &Obj<'py>, g: &Obj<'py>, n_threads: usize,
) -> PyResult<Py<PyAny>> {
    let cfg = TripletCfg { margin, metric: metric_of(py, metric)?, soft, mining: mining_of(py, mining)? };
    if is_f64(x)? {
        triplet_bwd_t::<f64>(py, Held::new(x, labels, ref_x, ref_labels)?, cfg, triplets, g, n_threads)
    } else {
        triplet_bwd_t::<f32>(py, Held::new(x, labels, ref_x, ref_labels)?, cfg, triplets, g, n_threads)
    }
}

fn mine_t<'py, T: numpy::Element + Real>(
    py: Python<'py>, h: Held<'py, T>, kind: Mining, margin: f64, metric: Metric, n_threads: usize,
) -> PyResult<Py<PyAny>> {
    let b = h.batch()?;
    let t = run(py, n_threads, || L::mine(&b, kind, margin, metric))?;
    triplets_array(py, &t)?.into_py_any(py)
}

/// mine_triplets(x, labels, ref_x, ref_labels, kind, margin, metric, n_threads) -> (T, 3) int64.
#[pyfunction]
#[pyo3(signature = (x, labels, ref_x, ref_labels, kind, margin, metric, n_threads))]
#[allow(clippy::too_many_arguments)]
fn mine_triplets<'py>(
    py: Python<'py>, x: &Obj<'py>, labels: &Obj<'py>, ref_x: Option<&Obj<'py>>, ref_labels: Option<&Obj<'py>>,
    kind: &str, margin: f64, metric: &str, n_threads: usize,
) -> PyResult<Py<PyAny>> {
    let kind = mining_of(py, kind)?;
    let metric = metric_of(py, metric)?;
    if is_f64(x)? {
        mine_t::<f64>(py, Held::new(x, labels, ref_x, ref_labels)?, kind, margin, metric, n_threads)
    } else {
        mine_t::<f32>(py, Held::new(x, labels, ref_x, ref_labels)?, kind, margin, metric, n_threads)
    }
}

// ---------------------------------------------------------------- lifted

fn lifted_fwd_t<'py, T: numpy::Element + Real>(
    py: Python<'py>, h: Held<'py, T>, margin: f64, hard: bool, metric: Metric, n_threads: usize,
) -> PyResult<Py<PyAny>> {
    let b = h.batch()?;
    let (per, cnt, st) = run(py, n_threads, || L::lifted_forward(&b, margin, hard, metric))?;
    (vec1(py, per)?, vec1(py, cnt)?, vec1(py, st.lse)?, vec1(py, st.dl)?, vec1(py, st.nearest)?).into_py_any(py)
}

/// lifted_loss(x, labels, margin, hard, metric, n_threads) -> (per, cnt, lse, dl, nearest)
#[pyfunction]
#[pyo3(signature = (x, labels, margin, hard, metric, n_threads))]
fn lifted_loss<'py>(
    py: Python<'py>, x: &Obj<'py>, labels: &Obj<'py>, margin: f64, hard: bool, metric: &str, n_threads: usize,
) -> PyResult<Py<PyAny>> {
    let metric = metric_of(py, metric)?;
    if is_f64(x)? {
        lifted_fwd_t::<f64>(py, Held::new(x, labels, None, None)?, margin, hard, metric, n_threads)
    } else {
        lifted_fwd_t::<f32>(py, Held::new(x, labels, None, None)?, margin, hard, metric, n_threads)
    }
}

#[allow(clippy::too_many_arguments)]
fn lifted_bwd_t<'py, T: numpy::Element + Real>(
    py: Python<'py>, h: Held<'py, T>, margin: f64, hard: bool, metric: Metric, lse: &Obj<'py>, dl: &Obj<'py>,
    nearest: &Obj<'py>, g: &Obj<'py>, n_threads: usize,
) -> PyResult<Py<PyAny>> {
    let b = h.batch()?;
    let (l, a, k) = (arr1::<T>(lse, "lse")?, arr1::<T>(dl, "dl")?, arr1::<i64>(nearest, "nearest")?);
    let st = L::LiftedState { lse: s1(&l, "lse")?.to_vec(), dl: s1(&a, "dl")?.to_vec(), nearest: s1(&k, "nearest")?.to_vec() };
    let ga = arr1::<T>(g, "g")?;
    let gs = s1(&ga, "g")?;
    let gx = run(py, n_threads, || {
        let mut gx = vec![T::zero(); b.n * b.d];
        L::lifted_backward(&b, margin, hard, metric, &st, gs, &mut gx)?;
        Ok(gx)
    })?;
    to_pyarray(py, gx, b.n, b.d)?.into_py_any(py)
}

/// lifted_loss_backward(x, labels, margin, hard, metric, lse, dl, nearest, g, n_threads) -> gx
#[pyfunction]
#[pyo3(signature = (x, labels, margin, hard, metric, lse, dl, nearest, g, n_threads))]
#[allow(clippy::too_many_arguments)]
fn lifted_loss_backward<'py>(
    py: Python<'py>, x: &Obj<'py>, labels: &Obj<'py>, margin: f64, hard: bool, metric: &str, lse: &Obj<'py>,
    dl: &Obj<'py>, nearest: &Obj<'py>, g: &Obj<'py>, n_threads: usize,
) -> PyResult<Py<PyAny>> {
    let metric = metric_of(py, metric)?;
    if is_f64(x)? {
        lifted_bwd_t::<f64>(py, Held::new(x, labels, None, None)?, margin, hard, metric, lse, dl, nearest, g, n_threads)
    } else {
        lifted_bwd_t::<f32>(py, Held::new(x, labels, None, None)?, margin, hard, metric, lse, dl, nearest, g, n_threads)
    }
}

// ---------------------------------------------------------------- losses over given tuples

#[allow(clippy::too_many_arguments)]
fn pair_tuple_t<'py, T: numpy::Element + Real>(
    py: Python<'py>, h: HeldRows<'py, T>, ix: [&Obj<'py>; 4], margin: f64, metric: Metric, g: Option<&Obj<'py>>,
    n_threads: usize,
) -> PyResult<Py<PyAny>> {
    let rows = h.rows()?;
    let (a1, p) = (idx(ix[0], "a1")?, idx(ix[1], "p")?);
    let (a2, q) = (idx(ix[2], "a2")?, idx(ix[3], "n")?);
    let pos = (s1(&a1, "a1")?, s1(&p, "p")?);
    let neg = (s1(&a2, "a2")?, s1(&q, "n")?);
    let Some(g) = g else {
        let per = run(py, n_threads, || L::pair_tuple_forward(&rows, pos, neg, margin, metric))?;
        return vec1(py, per);
    };
    let ga = arr1::<T>(g, "g")?;
    let gs = s1(&ga, "g")?;
    let (gx, gr) = run(py, n_threads, || {
        let (mut gx, mut gr) = grads_of(rows.n, rows.d, rows.refs.map(|r| r.1));
        L::pair_tuple_backward(&rows, pos, neg, margin, metric, gs, &mut gx, &mut gr)?;
        Ok((gx, gr))
    })?;
    grad_pair(py, gx, gr, rows.n, rows.refs.map_or(0, |r| r.1), rows.d)
}

/// pair_tuple_loss(x, ref_x, a1, p, a2, n, margin, metric, n_threads) -> per (P+N,)
#[pyfunction]
#[pyo3(signature = (x, ref_x, a1, p, a2, n, margin, metric, n_threads))]
#[allow(clippy::too_many_arguments)]
fn pair_tuple_loss<'py>(
    py: Python<'py>, x: &Obj<'py>, ref_x: Option<&Obj<'py>>, a1: &Obj<'py>, p: &Obj<'py>, a2: &Obj<'py>,
    n: &Obj<'py>, margin: f64, metric: &str, n_threads: usize,
) -> PyResult<Py<PyAny>> {
    let metric = metric_of(py, metric)?;
    if is_f64(x)? {
        pair_tuple_t::<f64>(py, HeldRows::new(x, ref_x)?, [a1, p, a2, n], margin, metric, None, n_threads)
    } else {
        pair_tuple_t::<f32>(py, HeldRows::new(x, ref_x)?, [a1, p, a2, n], margin, metric, None, n_threads)
    }
}

/// pair_tuple_loss_backward(x, ref_x, a1, p, a2, n, margin, metric, g, n_threads) -> (gx, gref | None)
#[pyfunction]
#[pyo3(signature = (x, ref_x, a1, p, a2, n, margin, metric, g, n_threads))]
#[allow(clippy::too_many_arguments)]
fn pair_tuple_loss_backward<'py>(
    py: Python<'py>, x: &Obj<'py>, ref_x: Option<&Obj<'py>>, a1: &Obj<'py>, p: &Obj<'py>, a2: &Obj<'py>,
    n: &Obj<'py>, margin: f64, metric: &str, g: &Obj<'py>, n_threads: usize,
) -> PyResult<Py<PyAny>> {
    let metric = metric_of(py, metric)?;
    if is_f64(x)? {
        pair_tuple_t::<f64>(py, HeldRows::new(x, ref_x)?, [a1, p, a2, n], margin, metric, Some(g), n_threads)
    } else {
        pair_tuple_t::<f32>(py, HeldRows::new(x, ref_x)?, [a1, p, a2, n], margin, metric, Some(g), n_threads)
    }
}

#[allow(clippy::too_many_arguments)]
fn triplet_tuple_t<'py, T: numpy::Element + Real>(
    py: Python<'py>, h: HeldRows<'py, T>, ix: [&Obj<'py>; 3], margin: f64, metric: Metric, soft: bool,
    g: Option<&Obj<'py>>, n_threads: usize,
) -> PyResult<Py<PyAny>> {
    let rows = h.rows()?;
    let (a, p, q) = (idx(ix[0], "a")?, idx(ix[1], "p")?, idx(ix[2], "n")?);
    let (a, p, q) = (s1(&a, "a")?, s1(&p, "p")?, s1(&q, "n")?);
    let Some(g) = g else {
        let per = run(py, n_threads, || L::triplet_tuple_forward(&rows, a, p, q, margin, metric, soft))?;
        return vec1(py, per);
    };
    let ga = arr1::<T>(g, "g")?;
    let gs = s1(&ga, "g")?;
    let (gx, gr) = run(py, n_threads, || {
        let (mut gx, mut gr) = grads_of(rows.n, rows.d, rows.refs.map(|r| r.1));
        L::triplet_tuple_backward(&rows, a, p, q, margin, metric, soft, gs, &mut gx, &mut gr)?;
        Ok((gx, gr))
    })?;
    grad_pair(py, gx, gr, rows.n, rows.refs.map_or(0, |r| r.1), rows.d)
}

/// triplet_tuple_loss(x, ref_x, a, p, n, margin, metric, soft, n_threads) -> per (T,)
#[pyfunction]
#[pyo3(signature = (x, ref_x, a, p, n, margin, metric, soft, n_threads))]
#[allow(clippy::too_many_arguments)]
fn triplet_tuple_loss<'py>(
    py: Python<'py>, x: &Obj<'py>, ref_x: Option<&Obj<'py>>, a: &Obj<'py>, p: &Obj<'py>, n: &Obj<'py>,
    margin: f64, metric: &str, soft: bool, n_threads: usize,
) -> PyResult<Py<PyAny>> {
    let metric = metric_of(py, metric)?;
    if is_f64(x)? {
        triplet_tuple_t::<f64>(py, HeldRows::new(x, ref_x)?, [a, p, n], margin, metric, soft, None, n_threads)
    } else {
        triplet_tuple_t::<f32>(py, HeldRows::new(x, ref_x)?, [a, p, n], margin, metric, soft, None, n_threads)
    }
}

/// triplet_tuple_loss_backward(x, ref_x, a, p, n, margin, metric, soft, g, n_threads) -> (gx, gref | None)
#[pyfunction]
#[pyo3(signature = (x, ref_x, a, p, n, margin, metric, soft, g, n_threads))]
#[allow(clippy::too_many_arguments)]
fn triplet_tuple_loss_backward<'py>(
    py: Python<'py>, x: &Obj<'py>, ref_x: Option<&Obj<'py>>, a: &Obj<'py>, p: &Obj<'py>, n: &Obj<'py>,
    margin: f64, metric: &str, soft: bool, g: &Obj<'py>, n_threads: usize,
) -> PyResult<Py<PyAny>> {
    let metric = metric_of(py, metric)?;
    if is_f64(x)? {
        triplet_tuple_t::<f64>(py, HeldRows::new(x, ref_x)?, [a, p, n], margin, metric, soft, Some(g), n_threads)
    } else {
        triplet_tuple_t::<f32>(py, HeldRows::new(x, ref_x)?, [a, p, n], margin, metric, soft, Some(g), n_threads)
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
    m.add_function(wrap_pyfunction!(contrastive_loss_backward, m)?)?;
    m.add_function(wrap_pyfunction!(triplet_loss, m)?)?;
    m.add_function(wrap_pyfunction!(triplet_loss_backward, m)?)?;
    m.add_function(wrap_pyfunction!(mine_triplets, m)?)?;
    m.add_function(wrap_pyfunction!(lifted_loss, m)?)?;
    m.add_function(wrap_pyfunction!(lifted_loss_backward, m)?)?;
    m.add_function(wrap_pyfunction!(pair_tuple_loss, m)?)?;
    m.add_function(wrap_pyfunction!(pair_tuple_loss_backward, m)?)?;
    m.add_function(wrap_pyfunction!(triplet_tuple_loss, m)?)?;
    m.add_function(wrap_pyfunction!(triplet_tuple_loss_backward, m)?)?;
    m.add_function(wrap_pyfunction!(xent_loss, m)?)?;
    Ok(())
}
