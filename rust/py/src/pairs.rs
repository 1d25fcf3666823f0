//! Bindings of the miners and of the per-anchor pair-similarity losses
//! (Multi-Similarity, Circle). Losses return per-anchor values and counts
//! (the Python side reduces them); backward takes g = ∂L/∂per and returns
//! Σ_i g_i ∂per_i/∂(x, refs). Index outputs are int64.

use crate::arrays::{slice_of, to_pyarray};
use crate::held::{arr1, arr2, is_f64, opt_grad, s1, vec1, Held, Obj};
use crate::runtime::{run, to_pyerr};
use numpy::PyUntypedArrayMethods;
use pyo3::prelude::*;
use pyo3::IntoPyObjectExt;
use reprkit_core::losses::{self as L, Batch, GivenPairs, Metric, TripletType};
use reprkit_core::{Real, Result};

fn idx_array<const K: usize>(py: Python<'_>, v: Vec<[u32; K]>) -> PyResult<Py<PyAny>> {
    let rows = v.len();
    let flat: Vec<i64> = v.iter().flat_map(|t| t.iter().map(|&i| i as i64)).collect();
    to_pyarray(py, flat, rows, K)?.into_py_any(py)
}

fn pair_arrays(py: Python<'_>, (p, n): L::PairSets) -> PyResult<Py<PyAny>> {
    (idx_array(py, p)?, idx_array(py, n)?).into_py_any(py)
}

/// Evaluates `body` with `b` the typed batch of (x, labels, ref_x, ref_labels)
/// and `T` its float type, dispatching on x's dtype.
macro_rules! with_batch {
    ($x:expr, $labels:expr, $rx:expr, $rl:expr, |$b:ident : $T:ident| $body:expr) => {{
        if is_f64($x)? {
            type $T = f64;
            let h = Held::<$T>::new($x, $labels, $rx, $rl)?;
            let $b = &h.batch()?;
            $body
        } else {
            type $T = f32;
            let h = Held::<$T>::new($x, $labels, $rx, $rl)?;
            let $b = &h.batch()?;
            $body
        }
    }};
}

fn metric_of(py: Python<'_>, s: &str) -> PyResult<Metric> {
    Metric::parse(s).map_err(|e| to_pyerr(py, e))
}

// ---------------------------------------------------------------- miners

/// mine_triplet_margin(x, labels, ref_x, ref_labels, margin, type, metric, n_threads) -> (T, 3) int64.
#[pyfunction]
#[pyo3(signature = (x, labels, ref_x, ref_labels, margin, r#type, metric, n_threads))]
#[allow(clippy::too_many_arguments)]
fn mine_triplet_margin<'py>(
    py: Python<'py>, x: &Obj<'py>, labels: &Obj<'py>, ref_x: Option<&Obj<'py>>, ref_labels: Option<&Obj<'py>>,
    margin: f64, r#type: &str, metric: &str, n_threads: usize,
) -> PyResult<Py<PyAny>> {
    let ty = TripletType::parse(r#type).map_err(|e| to_pyerr(py, e))?;
    let metric = metric_of(py, metric)?;
    with_batch!(x, labels, ref_x, ref_labels, |b: T| {
        let t = run(py, n_threads, || L::mine_triplet_margin(b, margin, ty, metric))?;
        idx_array(py, t)
    })
}

/// mine_pair_margin(x, labels, ref_x, ref_labels, pos_margin, neg_margin, metric, n_threads)
/// -> (pos (P, 2), neg (N, 2)) int64.
#[pyfunction]
#[pyo3(signature = (x, labels, ref_x, ref_labels, pos_margin, neg_margin, metric, n_threads))]
#[allow(clippy::too_many_arguments)]
fn mine_pair_margin<'py>(
    py: Python<'py>, x: &Obj<'py>, labels: &Obj<'py>, ref_x: Option<&Obj<'py>>, ref_labels: Option<&Obj<'py>>,
    pos_margin: f64, neg_margin: f64, metric: &str, n_threads: usize,
) -> PyResult<Py<PyAny>> {
    let metric = metric_of(py, metric)?;
    with_batch!(x, labels, ref_x, ref_labels, |b: T| {
        let s = run(py, n_threads, || L::mine_pair_margin(b, pos_margin, neg_margin, metric))?;
        pair_arrays(py, s)
    })
}

/// mine_multi_similarity(x, labels, ref_x, ref_labels, epsilon, n_threads) -> (pos (P, 2), neg (N, 2)) int64.
#[pyfunction]
#[pyo3(signature = (x, labels, ref_x, ref_labels, epsilon, n_threads))]
fn mine_multi_similarity<'py>(
    py: Python<'py>, x: &Obj<'py>, labels: &Obj<'py>, ref_x: Option<&Obj<'py>>, ref_labels: Option<&Obj<'py>>,
    epsilon: f64, n_threads: usize,
) -> PyResult<Py<PyAny>> {
    with_batch!(x, labels, ref_x, ref_labels, |b: T| {
        let s = run(py, n_threads, || L::mine_multi_similarity(b, epsilon))?;
        pair_arrays(py, s)
    })
}

/// mine_distance_weighted(x, labels, ref_x, ref_labels, cutoff, nonzero_loss_cutoff, seed, n_threads)
/// -> (T, 3) int64.
#[pyfunction]
#[pyo3(signature = (x, labels, ref_x, ref_labels, cutoff, nonzero_loss_cutoff, seed, n_threads))]
#[allow(clippy::too_many_arguments)]
fn mine_distance_weighted<'py>(
    py: Python<'py>, x: &Obj<'py>, labels: &Obj<'py>, ref_x: Option<&Obj<'py>>, ref_labels: Option<&Obj<'py>>,
    cutoff: f64, nonzero_loss_cutoff: f64, seed: u64, n_threads: usize,
) -> PyResult<Py<PyAny>> {
    with_batch!(x, labels, ref_x, ref_labels, |b: T| {
        let t = run(py, n_threads, || L::mine_distance_weighted(b, cutoff, nonzero_loss_cutoff, seed))?;
        idx_array(py, t)
    })
}

// ---------------------------------------------------------------- pair-similarity losses

#[derive(Clone, Copy)]
enum Kind {
    Ms(L::MultiSimilarity),
    Circle(L::Circle),
}

impl Kind {
    fn forward<T: Real>(self, b: &Batch<T>) -> Result<(Vec<T>, Vec<T>)> {
        match self {
            Kind::Ms(c) => L::multi_similarity_forward(b, &c),
            Kind::Circle(c) => L::circle_forward(b, &c),
        }
    }
    fn backward<T: Real>(self, b: &Batch<T>, g: &[T], gx: &mut [T], gr: &mut [T]) -> Result<()> {
        match self {
            Kind::Ms(c) => L::multi_similarity_backward(b, &c, g, gx, gr),
            Kind::Circle(c) => L::circle_backward(b, &c, g, gx, gr),
        }
    }
    fn forward_backward<T: Real>(self, b: &Batch<T>, gx: &mut [T], gr: &mut [T]) -> Result<(Vec<T>, Vec<T>)> {
        match self {
            Kind::Ms(c) => L::multi_similarity_forward_backward(b, &c, gx, gr),
            Kind::Circle(c) => L::circle_forward_backward(b, &c, gx, gr),
        }
    }
    fn pairs_forward<T: Real>(self, p: &GivenPairs<T>) -> Result<(Vec<T>, Vec<T>)> {
        match self {
            Kind::Ms(c) => L::multi_similarity_pairs_forward(p, &c),
            Kind::Circle(c) => L::circle_pairs_forward(p, &c),
        }
    }
    fn pairs_backward<T: Real>(self, p: &GivenPairs<T>, g: &[T], gx: &mut [T], gr: &mut [T]) -> Result<()> {
        match self {
            Kind::Ms(c) => L::multi_similarity_pairs_backward(p, &c, g, gx, gr),
            Kind::Circle(c) => L::circle_pairs_backward(p, &c, g, gx, gr),
        }
    }
}

type Fwd<'a, T> = &'a (dyn Fn() -> Result<(Vec<T>, Vec<T>)> + Sync);
type Bwd<'a, T> = &'a (dyn Fn(&[T], &mut [T], &mut [T]) -> Result<()> + Sync);

/// Forward -> (per, cnt), or with `g` backward -> (gx, gref | None); `(n, d, m)`
/// are the shapes of x and of the references (None: no separate references).
fn run_loss<'py, T: numpy::Element + Real>(
    py: Python<'py>, (n, d, m): (usize, usize, Option<usize>), g: Option<&Obj<'py>>, n_threads: usize, fwd: Fwd<T>,
    bwd: Bwd<T>,
) -> PyResult<Py<PyAny>> {
    match g {
        None => {
            let (per, cnt) = run(py, n_threads, fwd)?;
            (vec1(py, per)?, vec1(py, cnt)?).into_py_any(py)
        }
        Some(g) => {
            let ga = arr1::<T>(g, "g")?;
            let gs = s1(&ga, "g")?;
            let mr = m.unwrap_or(0);
            let (gx, gr) = run(py, n_threads, || {
                let (mut gx, mut gr) = (vec![T::zero(); n * d], vec![T::zero(); mr * d]);
                bwd(gs, &mut gx, &mut gr)?;
                Ok((gx, gr))
            })?;
            (to_pyarray(py, gx, n, d)?, opt_grad(py, gr, mr, d)?).into_py_any(py)
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn dense_loss<'py>(
    py: Python<'py>, x: &Obj<'py>, labels: &Obj<'py>, ref_x: Option<&Obj<'py>>, ref_labels: Option<&Obj<'py>>,
    kind: Kind, g: Option<&Obj<'py>>, n_threads: usize,
) -> PyResult<Py<PyAny>> {
    with_batch!(x, labels, ref_x, ref_labels, |b: T| {
        let m = b.refs.map(|r| r.1);
        run_loss::<T>(py, (b.n, b.d, m), g, n_threads, &|| kind.forward(b), &|g, gx, gr| kind.backward(b, g, gx, gr))
    })
}

#[allow(clippy::too_many_arguments)]
fn given_loss_t<'py, T: numpy::Element + Real>(
    py: Python<'py>, x: &Obj<'py>, ref_x: Option<&Obj<'py>>, idx: [&Obj<'py>; 4], kind: Kind, g: Option<&Obj<'py>>,
    n_threads: usize,
) -> PyResult<Py<PyAny>> {
    let xa = arr2::<T>(x, "embeddings")?;
    let ra = match ref_x { Some(r) => Some(arr2::<T>(r, "ref_embeddings")?), None => None };
    let names = ["a1", "p", "a2", "n"];
    let ia = idx.iter().zip(names).map(|(o, nm)| arr1::<i64>(o, nm)).collect::<PyResult<Vec<_>>>()?;
    let is = ia.iter().zip(names).map(|(a, nm)| s1(a, nm)).collect::<PyResult<Vec<_>>>()?;
    let (n, d) = (xa.shape()[0], xa.shape()[1]);
    let refs = match &ra { Some(a) => Some((slice_of(a, "ref_embeddings")?, a.shape()[0])), None => None };
    let p = GivenPairs { x: slice_of(&xa, "embeddings")?, n, d, refs, a1: is[0], p: is[1], a2: is[2], neg: is[3] };
    let m = refs.map(|r| r.1);
    run_loss::<T>(py, (n, d, m), g, n_threads, &|| kind.pairs_forward(&p), &|g, gx, gr| kind.pairs_backward(&p, g, gx, gr))
}

#[allow(clippy::too_many_arguments)]
fn given_loss<'py>(
    py: Python<'py>, x: &Obj<'py>, ref_x: Option<&Obj<'py>>, idx: [&Obj<'py>; 4], kind: Kind, g: Option<&Obj<'py>>,
    n_threads: usize,
) -> PyResult<Py<PyAny>> {
    if is_f64(x)? {
        given_loss_t::<f64>(py, x, ref_x, idx, kind, g, n_threads)
    } else {
        given_loss_t::<f32>(py, x, ref_x, idx, kind, g, n_threads)
    }
}

/// (per, cnt, gx, gref | None): forward and the gradient of Σ per in one pass over the tiles.
fn fused_loss<'py>(
    py: Python<'py>, x: &Obj<'py>, labels: &Obj<'py>, ref_x: Option<&Obj<'py>>, ref_labels: Option<&Obj<'py>>,
    kind: Kind, n_threads: usize,
) -> PyResult<Py<PyAny>> {
    with_batch!(x, labels, ref_x, ref_labels, |b: T| {
        let (n, d, mr) = (b.n, b.d, b.refs.map_or(0, |r| r.1));
        let (per, cnt, gx, gr) = run(py, n_threads, || {
            let (mut gx, mut gr) = (vec![T::default(); n * d], vec![T::default(); mr * d]);
            let (per, cnt) = kind.forward_backward(b, &mut gx, &mut gr)?;
            Ok((per, cnt, gx, gr))
        })?;
        (vec1(py, per)?, vec1(py, cnt)?, to_pyarray(py, gx, n, d)?, opt_grad(py, gr, mr, d)?).into_py_any(py)
    })
}

/// multi_similarity_loss_fused(x, labels, ref_x, ref_labels, alpha, beta, base, n_threads) -> (per, cnt, gx, gref | None).
#[pyfunction]
#[pyo3(signature = (x, labels, ref_x, ref_labels, alpha, beta, base, n_threads))]
#[allow(clippy::too_many_arguments)]
fn multi_similarity_loss_fused<'py>(
    py: Python<'py>, x: &Obj<'py>, labels: &Obj<'py>, ref_x: Option<&Obj<'py>>, ref_labels: Option<&Obj<'py>>,
    alpha: f64, beta: f64, base: f64, n_threads: usize,
) -> PyResult<Py<PyAny>> {
    fused_loss(py, x, labels, ref_x, ref_labels, ms(alpha, beta, base), n_threads)
}

/// circle_loss_fused(x, labels, ref_x, ref_labels, m, gamma, n_threads) -> (per, cnt, gx, gref | None).
#[pyfunction]
#[pyo3(signature = (x, labels, ref_x, ref_labels, m, gamma, n_threads))]
#[allow(clippy::too_many_arguments)]
fn circle_loss_fused<'py>(
    py: Python<'py>, x: &Obj<'py>, labels: &Obj<'py>, ref_x: Option<&Obj<'py>>, ref_labels: Option<&Obj<'py>>,
    m: f64, gamma: f64, n_threads: usize,
) -> PyResult<Py<PyAny>> {
    fused_loss(py, x, labels, ref_x, ref_labels, circle(m, gamma), n_threads)
}

fn ms(alpha: f64, beta: f64, base: f64) -> Kind {
    Kind::Ms(L::MultiSimilarity { alpha, beta, base })
}

fn circle(m: f64, gamma: f64) -> Kind {
    Kind::Circle(L::Circle { m, gamma })
}

/// multi_similarity_loss(x, labels, ref_x, ref_labels, alpha, beta, base, n_threads) -> (per, cnt).
#[pyfunction]
#[pyo3(signature = (x, labels, ref_x, ref_labels, alpha, beta, base, n_threads))]
#[allow(clippy::too_many_arguments)]
fn multi_similarity_loss<'py>(
    py: Python<'py>, x: &Obj<'py>, labels: &Obj<'py>, ref_x: Option<&Obj<'py>>, ref_labels: Option<&Obj<'py>>,
    alpha: f64, beta: f64, base: f64, n_threads: usize,
) -> PyResult<Py<PyAny>> {
    dense_loss(py, x, labels, ref_x, ref_labels, ms(alpha, beta, base), None, n_threads)
}

/// multi_similarity_loss_backward(x, labels, ref_x, ref_labels, alpha, beta, base, g, n_threads) -> (gx, gref | None).
#[pyfunction]
#[pyo3(signature = (x, labels, ref_x, ref_labels, alpha, beta, base, g, n_threads))]
#[allow(clippy::too_many_arguments)]
fn multi_similarity_loss_backward<'py>(
    py: Python<'py>, x: &Obj<'py>, labels: &Obj<'py>, ref_x: Option<&Obj<'py>>, ref_labels: Option<&Obj<'py>>,
    alpha: f64, beta: f64, base: f64, g: &Obj<'py>, n_threads: usize,
) -> PyResult<Py<PyAny>> {
    dense_loss(py, x, labels, ref_x, ref_labels, ms(alpha, beta, base), Some(g), n_threads)
}

/// circle_loss(x, labels, ref_x, ref_labels, m, gamma, n_threads) -> (per, cnt).
#[pyfunction]
#[pyo3(signature = (x, labels, ref_x, ref_labels, m, gamma, n_threads))]
#[allow(clippy::too_many_arguments)]
fn circle_loss<'py>(
    py: Python<'py>, x: &Obj<'py>, labels: &Obj<'py>, ref_x: Option<&Obj<'py>>, ref_labels: Option<&Obj<'py>>,
    m: f64, gamma: f64, n_threads: usize,
) -> PyResult<Py<PyAny>> {
    dense_loss(py, x, labels, ref_x, ref_labels, circle(m, gamma), None, n_threads)
}

/// circle_loss_backward(x, labels, ref_x, ref_labels, m, gamma, g, n_threads) -> (gx, gref | None).
#[pyfunction]
#[pyo3(signature = (x, labels, ref_x, ref_labels, m, gamma, g, n_threads))]
#[allow(clippy::too_many_arguments)]
fn circle_loss_backward<'py>(
    py: Python<'py>, x: &Obj<'py>, labels: &Obj<'py>, ref_x: Option<&Obj<'py>>, ref_labels: Option<&Obj<'py>>,
    m: f64, gamma: f64, g: &Obj<'py>, n_threads: usize,
) -> PyResult<Py<PyAny>> {
    dense_loss(py, x, labels, ref_x, ref_labels, circle(m, gamma), Some(g), n_threads)
}

/// multi_similarity_pairs_loss(x, ref_x, a1, p, a2, n, alpha, beta, base, n_threads) -> (per, cnt).
#[pyfunction]
#[pyo3(signature = (x, ref_x, a1, p, a2, n, alpha, beta, base, n_threads))]
#[allow(clippy::too_many_arguments)]
fn multi_similarity_pairs_loss<'py>(
    py: Python<'py>, x: &Obj<'py>, ref_x: Option<&Obj<'py>>, a1: &Obj<'py>, p: &Obj<'py>, a2: &Obj<'py>,
    n: &Obj<'py>, alpha: f64, beta: f64, base: f64, n_threads: usize,
) -> PyResult<Py<PyAny>> {
    given_loss(py, x, ref_x, [a1, p, a2, n], ms(alpha, beta, base), None, n_threads)
}

/// multi_similarity_pairs_loss_backward(x, ref_x, a1, p, a2, n, alpha, beta, base, g, n_threads) -> (gx, gref | None).
#[pyfunction]
#[pyo3(signature = (x, ref_x, a1, p, a2, n, alpha, beta, base, g, n_threads))]
#[allow(clippy::too_many_arguments)]
fn multi_similarity_pairs_loss_backward<'py>(
    py: Python<'py>, x: &Obj<'py>, ref_x: Option<&Obj<'py>>, a1: &Obj<'py>, p: &Obj<'py>, a2: &Obj<'py>,
    n: &Obj<'py>, alpha: f64, beta: f64, base: f64, g: &Obj<'py>, n_threads: usize,
) -> PyResult<Py<PyAny>> {
    given_loss(py, x, ref_x, [a1, p, a2, n], ms(alpha, beta, base), Some(g), n_threads)
}

/// circle_pairs_loss(x, ref_x, a1, p, a2, n, m, gamma, n_threads) -> (per, cnt).
#[pyfunction]
#[pyo3(signature = (x, ref_x, a1, p, a2, n, m, gamma, n_threads))]
#[allow(clippy::too_many_arguments)]
fn circle_pairs_loss<'py>(
    py: Python<'py>, x: &Obj<'py>, ref_x: Option<&Obj<'py>>, a1: &Obj<'py>, p: &Obj<'py>, a2: &Obj<'py>,
    n: &Obj<'py>, m: f64, gamma: f64, n_threads: usize,
) -> PyResult<Py<PyAny>> {
    given_loss(py, x, ref_x, [a1, p, a2, n], circle(m, gamma), None, n_threads)
}

/// circle_pairs_loss_backward(x, ref_x, a1, p, a2, n, m, gamma, g, n_threads) -> (gx, gref | None).
#[pyfunction]
#[pyo3(signature = (x, ref_x, a1, p, a2, n, m, gamma, g, n_threads))]
#[allow(clippy::too_many_arguments)]
fn circle_pairs_loss_backward<'py>(
    py: Python<'py>, x: &Obj<'py>, ref_x: Option<&Obj<'py>>, a1: &Obj<'py>, p: &Obj<'py>, a2: &Obj<'py>,
    n: &Obj<'py>, m: f64, gamma: f64, g: &Obj<'py>, n_threads: usize,
) -> PyResult<Py<PyAny>> {
    given_loss(py, x, ref_x, [a1, p, a2, n], circle(m, gamma), Some(g), n_threads)
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(mine_triplet_margin, m)?)?;
    m.add_function(wrap_pyfunction!(mine_pair_margin, m)?)?;
    m.add_function(wrap_pyfunction!(mine_multi_similarity, m)?)?;
    m.add_function(wrap_pyfunction!(mine_distance_weighted, m)?)?;
    m.add_function(wrap_pyfunction!(multi_similarity_loss, m)?)?;
    m.add_function(wrap_pyfunction!(multi_similarity_loss_backward, m)?)?;
    m.add_function(wrap_pyfunction!(circle_loss, m)?)?;
    m.add_function(wrap_pyfunction!(multi_similarity_loss_fused, m)?)?;
    m.add_function(wrap_pyfunction!(circle_loss_fused, m)?)?;
    m.add_function(wrap_pyfunction!(circle_loss_backward, m)?)?;
    m.add_function(wrap_pyfunction!(multi_similarity_pairs_loss, m)?)?;
    m.add_function(wrap_pyfunction!(multi_similarity_pairs_loss_backward, m)?)?;
    m.add_function(wrap_pyfunction!(circle_pairs_loss, m)?)?;
    m.add_function(wrap_pyfunction!(circle_pairs_loss_backward, m)?)?;
    Ok(())
}
