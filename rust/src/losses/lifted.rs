//! Lifted structured loss (Oh Song et al. 2016), d the [`Metric`]'s distance:
//!
//! J_ij = d_ij + log(Σ_{k∈N(i)} e^{margin−d_ik} + Σ_{l∈N(j)} e^{margin−d_jl}),
//! loss of the positive pair (i, j): max(0, J_ij)²,
//!
//! with N(i) the negatives of i. Writing l_i = log Σ_{k∈N(i)} e^{margin−d_ik}
//! (a per-row log-sum-exp), J_ij = d_ij + logaddexp(l_i, l_j). `hard` uses
//! l_i = max_k (margin − d_ik) and max(l_i, l_j).
//!
//! Per anchor: per_i = ½ Σ_{j∈P(i)} relu(J_ij)², cnt_i = |P(i)|, so Σper/Σcnt
//! = 1/(2|P|) Σ_{unordered (i,j)∈P} relu(J_ij)² (the usual normalisation).
//!
//! Forward keeps only l, dl = ∂(Σ_i per_i)/∂l (the unit upstream gradient) and
//! (hard) each row's nearest negative: O(B) state. Backward reuses dl scaled
//! when the upstream gradient is uniform (mean and sum reductions) and
//! otherwise recomputes it from g over the positive pairs; it then
//! recomputes distance tiles.

use super::common::{check_upstream, exp_slice, logaddexp, sparse_backward, Batch, Metric, Space};
use crate::error::{Error, Result};
use crate::linalg::sq_dist;
use crate::Real;
use rayon::prelude::*;

/// Per-row state between forward and backward.
#[derive(Clone, Debug)]
pub struct LiftedState<T> {
    /// l_i (−∞ for a row without negatives).
    pub lse: Vec<T>,
    /// ∂(Σ per)/∂l_i for a unit upstream gradient.
    pub dl: Vec<T>,
    /// Hard variant: the nearest negative of each row (−1 if none).
    pub nearest: Vec<i64>,
}

/// Rows of each class: `order` sorted by (label, index), `class_of[i]` = range in `order`.
fn classes(labels: &[i64]) -> (Vec<usize>, Vec<(usize, usize)>) {
    let n = labels.len();
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by_key(|&i| (labels[i], i));
    let mut range = vec![(0, 0); n];
    let mut s = 0;
    while s < n {
        let mut e = s + 1;
        while e < n && labels[order[e]] == labels[order[s]] {
            e += 1;
        }
        for k in s..e {
            range[order[k]] = (s, e);
        }
        s = e;
    }
    (order, range)
}

/// Which side of a positive pair the hard variant's max picks (ties: lower index).
#[inline]
fn hard_wins<T: Real>(li: T, lj: T, i: usize, j: usize) -> bool {
    li > lj || (li == lj && i < j)
}

/// relu(J_ij) of a positive pair and ∂J_ij/∂l_i.
#[inline]
fn pair_j<T: Real>(dij: T, li: T, lj: T, i: usize, j: usize, hard: bool) -> (T, T) {
    let (z, share) = if hard {
        (li.max(lj), if hard_wins(li, lj, i, j) { T::one() } else { T::zero() })
    } else {
        let z = logaddexp(li, lj);
        (z, if z == T::neg_infinity() { T::zero() } else { (li - z).exp() })
    };
    ((dij + z).max(T::zero()), share)
}

/// Pass over the positive pairs (distances computed directly), per row i:
/// (per_i, Σ_{j∈P(i)} (g_i + g_j) relu(J_ij) ∂J_ij/∂l_i), g = 1 when `g` is None.
/// The second value is ∂(Σ g·per)/∂l_i: the pair weight is ½(g_i + g_j).
#[allow(clippy::too_many_arguments)]
fn positive_pass<T: Real>(
    x: &[T], d: usize, y: &[i64], lse: &[T], hard: bool, metric: Metric, g: Option<&[T]>,
) -> Vec<(T, T)> {
    let (order, range) = classes(y);
    let half = T::c(0.5);
    (0..y.len())
        .into_par_iter()
        .map(|i| {
            let (s, e) = range[i];
            let (mut per, mut dl) = (T::zero(), T::zero());
            for &j in &order[s..e] {
                if j == i {
                    continue;
                }
                let dij = metric.of_sq(sq_dist(&x[i * d..(i + 1) * d], &x[j * d..(j + 1) * d]));
                let (jp, share) = pair_j(dij, lse[i], lse[j], i, j, hard);
                per += half * jp * jp;
                let w = g.map_or(T::c(2.0), |g| g[i] + g[j]);
                dl += w * jp * share;
            }
            (per, dl)
        })
        .collect()
}

/// Per-anchor values and counts and the state backward needs.
#[allow(clippy::type_complexity)]
pub fn lifted_forward<T: Real>(
    b: &Batch<T>, margin: f64, hard: bool, metric: Metric,
) -> Result<(Vec<T>, Vec<T>, LiftedState<T>)> {
    if b.refs.is_some() {
        return Err(Error::InvalidParameter("the lifted structured loss takes no reference embeddings".into()));
    }
    b.validate()?;
    if !margin.is_finite() {
        return Err(Error::InvalidParameter(format!("margin must be finite, got {margin}")));
    }
    let (n, d, y) = (b.n, b.d, b.labels);
    let mg = T::c(margin);
    let space = Space::dist(b.x, n, None, d);
    // Pass 1: per-row log-sum-exp (or max) over negatives.
    let rows: Vec<Vec<(T, i64)>> = space.map_tiles(|r0, r1, s| {
        let mut buf = vec![T::zero(); n];
        (r0..r1)
            .map(|i| {
                let row = &s[(i - r0) * n..(i - r0 + 1) * n];
                let (mut mx, mut arg) = (T::neg_infinity(), -1i64);
                for (k, (b, &v)) in buf.iter_mut().zip(row).enumerate() {
                    *b = if y[k] != y[i] { mg - metric.of_sq(v) } else { T::neg_infinity() };
                    if *b > mx {
                        mx = *b;
                        arg = k as i64;
                    }
                }
                if hard || arg < 0 {
                    return (mx, arg);
                }
                buf.iter_mut().for_each(|v| *v -= mx);
                exp_slice(&mut buf);
                (mx + buf.iter().copied().sum::<T>().ln(), arg)
            })
            .collect()
    });
    let flat: Vec<(T, i64)> = rows.concat();
    let lse: Vec<T> = flat.iter().map(|v| v.0).collect();
    let nearest: Vec<i64> = flat.iter().map(|v| v.1).collect();
    let (_, range) = classes(y);
    let cnt: Vec<T> = range.iter().map(|&(s, e)| T::c((e - s - 1) as f64)).collect();
    // Pass 2: positive pairs.
    let pp = positive_pass(b.x, d, y, &lse, hard, metric, None);
    let per = pp.iter().map(|v| v.0).collect();
    let dl = pp.iter().map(|v| v.1).collect();
    Ok((per, cnt, LiftedState { lse, dl, nearest }))
}

/// Σ_i g_i ∂per_i/∂x into `gx` (n×d); `st` is the forward's state.
#[allow(clippy::too_many_arguments)]
pub fn lifted_backward<T: Real>(
    b: &Batch<T>, margin: f64, hard: bool, metric: Metric, st: &LiftedState<T>, g: &[T], gx: &mut [T],
) -> Result<()> {
    if b.refs.is_some() {
        return Err(Error::InvalidParameter("the lifted structured loss takes no reference embeddings".into()));
    }
    b.validate()?;
    if !margin.is_finite() {
        return Err(Error::InvalidParameter(format!("margin must be finite, got {margin}")));
    }
    let (n, d, y) = (b.n, b.d, b.labels);
    if st.lse.len() != n || st.dl.len() != n || st.nearest.len() != n {
        return Err(Error::Shape("lifted state does not match the batch".into()));
    }
    if st.nearest.iter().any(|&k| k < -1 || k >= n as i64) {
        return Err(Error::InvalidInput("lifted state: nearest index out of range".into()));
    }
    check_upstream(g, n)?;
    gx.iter_mut().for_each(|v| *v = T::zero());
    let lse = &st.lse;
    // dl = ∂(Σ g·per)/∂l: linear in g, so a uniform g only scales the stored unit one.
    let dl: Vec<T> = if g.iter().all(|&v| v == g[0]) {
        st.dl.iter().map(|&v| v * g[0]).collect()
    } else {
        positive_pass(b.x, d, y, lse, hard, metric, Some(g)).into_iter().map(|v| v.1).collect()
    };
    let mg = T::c(margin);
    if hard {
        let (order, range) = classes(y);
        let mut pairs = Vec::new();
        for i in 0..n {
            let (s, e) = range[i];
            let xi = &b.x[i * d..(i + 1) * d];
            for &j in &order[s..e] {
                if j <= i {
                    continue;
                }
                let sij = sq_dist(xi, &b.x[j * d..(j + 1) * d]);
                let jp = (metric.of_sq(sij) + lse[i].max(lse[j])).max(T::zero());
                let w = g[i] + g[j];
                if jp > T::zero() && w != T::zero() {
                    pairs.push((i as u32, j as u32, metric.coef(sij, w * jp)));
                }
            }
            let k = st.nearest[i];
            if k >= 0 && dl[i] != T::zero() {
                let k = k as usize;
                let sik = sq_dist(xi, &b.x[k * d..(k + 1) * d]);
                pairs.push((i as u32, k as u32, metric.coef(sik, -dl[i])));
            }
        }
        sparse_backward(b.x, n, b.x, n, d, true, &pairs, gx, &mut []);
        return Ok(());
    }
    let space = Space::dist(b.x, n, None, d);
    space.backward(
        true,
        |r0, r1, s, c| {
            let mut ek = vec![T::zero(); n];
            let mut ej = vec![T::zero(); n];
            for k in r0..r1 {
                let srow = &s[(k - r0) * n..(k - r0 + 1) * n];
                let crow = &mut c[(k - r0) * n..(k - r0 + 1) * n];
                // Negatives: ∂L/∂d_kj = −(dl_k e^{margin−d_kj−l_k} + dl_j e^{margin−d_kj−l_j}).
                for j in 0..n {
                    let a = if y[j] != y[k] { mg - metric.of_sq(srow[j]) } else { T::neg_infinity() };
                    ek[j] = a - lse[k];
                    ej[j] = a - lse[j];
                }
                exp_slice(&mut ek);
                exp_slice(&mut ej);
                for j in 0..n {
                    if j == k {
                        continue;
                    }
                    // Positives: ∂L/∂d_kj = 2·½(g_k + g_j)·relu(J_kj) (both roles: symmetric).
                    let t = if y[j] == y[k] {
                        let jp = (metric.of_sq(srow[j]) + logaddexp(lse[k], lse[j])).max(T::zero());
                        (g[k] + g[j]) * jp
                    } else {
                        -(dl[k] * ek[j] + dl[j] * ej[j])
                    };
                    crow[j] = metric.coef(srow[j], t);
                }
            }
        },
        gx,
        &mut [],
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::losses::common::testutil::*;

    const METRICS: [Metric; 3] = [Metric::Euclidean, Metric::SqEuclidean, Metric::Cosine];

    /// (per, cnt) by the definition.
    #[allow(clippy::too_many_arguments)]
    fn brute(x: &[f64], n: usize, l: &[i64], d: usize, mg: f64, hard: bool, mt: Metric) -> (Vec<f64>, Vec<f64>) {
        let dd = |i: usize, j: usize| mt.of_sq(dist(x, i, x, j, d));
        let term = |i: usize| -> Vec<f64> { (0..n).filter(|&k| l[k] != l[i]).map(|k| mg - dd(i, k)).collect() };
        let (mut per, mut cnt) = (vec![0.0; n], vec![0.0; n]);
        for i in 0..n {
            for j in 0..n {
                if l[i] != l[j] || i == j {
                    continue;
                }
                cnt[i] += 1.0;
                let mut t = term(i);
                t.extend(term(j));
                if t.is_empty() {
                    continue;
                }
                let z = if hard {
                    t.iter().cloned().fold(f64::NEG_INFINITY, f64::max)
                } else {
                    t.iter().map(|v| v.exp()).sum::<f64>().ln()
                };
                per[i] += 0.5 * (dd(i, j) + z).max(0.0).powi(2);
            }
        }
        (per, cnt)
    }

    /// The old normalised loss: 1/(2|P|) Σ over unordered positive pairs.
    fn old_loss(x: &[f64], n: usize, l: &[i64], d: usize, mg: f64, hard: bool, mt: Metric) -> f64 {
        let dd = |i: usize, j: usize| mt.of_sq(dist(x, i, x, j, d));
        let term = |i: usize| -> Vec<f64> { (0..n).filter(|&k| l[k] != l[i]).map(|k| mg - dd(i, k)).collect() };
        let (mut s, mut c) = (0.0, 0.0);
        for i in 0..n {
            for j in i + 1..n {
                if l[i] != l[j] {
                    continue;
                }
                c += 1.0;
                let mut t = term(i);
                t.extend(term(j));
                if t.is_empty() {
                    continue;
                }
                let z = if hard { t.iter().cloned().fold(f64::NEG_INFINITY, f64::max) } else { t.iter().map(|v| v.exp()).sum::<f64>().ln() };
                s += (dd(i, j) + z).max(0.0).powi(2);
            }
        }
        if c > 0.0 { s / (2.0 * c) } else { 0.0 }
    }

    fn dot(a: &[f64], b: &[f64]) -> f64 {
        a.iter().zip(b).map(|(u, v)| u * v).sum()
    }

    #[test]
    fn matches_brute_force_and_finite_differences() {
        let mut rng = Rng(5);
        for &(n, d, k) in &[(10usize, 3usize, 3u64), (30, 2, 5), (6, 2, 1), (4, 2, 9), (135, 2, 6)] {
            let x: Vec<f64> = rng.normal_vec(n * d).iter().map(|v| v * 0.6).collect();
            let l = rng.labels(n, k);
            let b = Batch { x: &x, n, d, labels: &l, refs: None };
            let g_rand: Vec<f64> = (0..n).map(|_| rng.unif() * 2.0 - 0.5).collect();
            for mt in METRICS {
                for hard in [false, true] {
                    let (per, cnt, st) = lifted_forward(&b, 1.0, hard, mt).unwrap();
                    let (bp, bc) = brute(&x, n, &l, d, 1.0, hard, mt);
                    assert_close(&per, &bp, 1e-9);
                    assert_eq!(cnt, bc);
                    let (sp, sc): (f64, f64) = (per.iter().sum(), cnt.iter().sum());
                    let v = if sc > 0.0 { sp / sc } else { 0.0 };
                    let want = old_loss(&x, n, &l, d, 1.0, hard, mt);
                    assert!((v - want).abs() < 1e-9 * (1.0 + want), "hard={hard} {mt:?}: {v} vs {want}");
                    // A uniform g takes the stored-dl path, a random one the recomputing path.
                    for g in [vec![0.7; n], g_rand.clone()] {
                        let mut gx = vec![0.0; n * d];
                        lifted_backward(&b, 1.0, hard, mt, &st, &g, &mut gx).unwrap();
                        let f = |xx: &[f64]| dot(&brute(xx, n, &l, d, 1.0, hard, mt).0, &g);
                        if n <= 30 {
                            assert_close(&gx, &fd_grad(&x, &f), 1e-4);
                        } else {
                            for _ in 0..3 {
                                assert_dir(&gx, &x, &rng.normal_vec(n * d), &f, 1e-4);
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn results_do_not_depend_on_the_thread_count() {
        let (n, d) = (300usize, 4usize);
        let mut rng = Rng(6);
        let x: Vec<f32> = rng.normal_vec(n * d).iter().map(|&v| 0.5 * v as f32).collect();
        let l = rng.labels(n, 6);
        let g: Vec<f32> = (0..n).map(|_| rng.unif() as f32).collect();
        for hard in [false, true] {
            let run = |threads: usize| {
                let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
                pool.install(|| {
                    let b = Batch { x: &x, n, d, labels: &l, refs: None };
                    let (per, _, st) = lifted_forward(&b, 1.0, hard, Metric::Euclidean).unwrap();
                    let mut gx = vec![0.0f32; n * d];
                    lifted_backward(&b, 1.0, hard, Metric::Euclidean, &st, &g, &mut gx).unwrap();
                    per.iter().chain(&st.dl).chain(&gx).map(|v| v.to_bits()).collect::<Vec<_>>()
                })
            };
            assert_eq!(run(1), run(2), "hard={hard}");
        }
    }

    #[test]
    fn far_points_stay_finite_f32() {
        let x: Vec<f32> = (0..40).map(|i| (i as f32) * 37.0 % 101.0).collect();
        let l: Vec<i64> = (0..20).map(|i| i % 3).collect();
        let b = Batch { x: &x, n: 20, d: 2, labels: &l, refs: None };
        for mt in METRICS {
            let (per, _, st) = lifted_forward(&b, 1.0, false, mt).unwrap();
            assert!(per.iter().all(|v| v.is_finite()));
            let mut gx = vec![0.0f32; 40];
            lifted_backward(&b, 1.0, false, mt, &st, &[1.0; 20], &mut gx).unwrap();
            assert!(gx.iter().all(|g| g.is_finite()));
        }
        let (_, _, mut st) = lifted_forward(&b, 1.0, true, Metric::Euclidean).unwrap();
        st.nearest[3] = 20;
        assert!(lifted_backward(&b, 1.0, true, Metric::Euclidean, &st, &[1.0; 20], &mut [0.0; 40]).is_err());
    }
}
