//! Lifted structured loss (Oh Song et al. 2016), D Euclidean:
//!
//! L = 1/(2|P|) Σ_{(i,j)∈P} max(0, J_ij)²,
//! J_ij = D_ij + log(Σ_{k∈N(i)} e^{margin−D_ik} + Σ_{l∈N(j)} e^{margin−D_jl}),
//!
//! with P the unordered positive pairs and N(i) the negatives of i. Writing
//! l_i = log Σ_{k∈N(i)} e^{margin−D_ik} (a per-row log-sum-exp), J_ij = D_ij +
//! logaddexp(l_i, l_j). `hard` uses l_i = max_k (margin − D_ik) and max(l_i, l_j).
//!
//! Forward keeps only l, A_i = ∂L/∂l_i and (hard) each row's nearest negative:
//! O(B) state. Backward recomputes distance tiles.

use super::common::{exp_slice, logaddexp, ordered_sum, sparse_backward, sqrt_and_inv, Batch, Space};
use crate::error::{Error, Result};
use crate::linalg::sq_dist;
use crate::Real;
use rayon::prelude::*;

/// Per-row state between forward and backward.
#[derive(Clone, Debug)]
pub struct LiftedState<T> {
    /// l_i (−∞ for a row without negatives).
    pub lse: Vec<T>,
    /// ∂L/∂l_i.
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

fn n_pos_pairs(labels: &[i64]) -> f64 {
    let (_, range) = classes(labels);
    range.iter().map(|&(s, e)| (e - s - 1) as f64).sum::<f64>() / 2.0
}

/// Which side of a positive pair the hard variant's max picks (ties: lower index).
#[inline]
fn hard_wins<T: Real>(li: T, lj: T, i: usize, j: usize) -> bool {
    li > lj || (li == lj && i < j)
}

pub fn lifted_forward<T: Real>(b: &Batch<T>, margin: f64, hard: bool) -> Result<(f64, LiftedState<T>)> {
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
                    *b = if y[k] != y[i] { mg - v.sqrt() } else { T::neg_infinity() };
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
    let np = n_pos_pairs(y);
    if np == 0.0 {
        return Ok((0.0, LiftedState { lse, dl: vec![T::zero(); n], nearest }));
    }
    let (order, range) = classes(y);
    let inv_np = T::c(1.0 / np);
    // Pass 2: positive pairs, distances computed directly.
    let per_row: Vec<(f64, T)> = (0..n)
        .into_par_iter()
        .map(|i| {
            let (s, e) = range[i];
            let (mut loss, mut dl) = (T::zero(), T::zero());
            for &j in &order[s..e] {
                if j == i {
                    continue;
                }
                let dij = sq_dist(&b.x[i * d..(i + 1) * d], &b.x[j * d..(j + 1) * d]).sqrt();
                let (li, lj) = (lse[i], lse[j]);
                let (z, share) = if hard {
                    (li.max(lj), if hard_wins(li, lj, i, j) { T::one() } else { T::zero() })
                } else {
                    let z = logaddexp(li, lj);
                    (z, if z == T::neg_infinity() { T::zero() } else { (li - z).exp() })
                };
                let jp = (dij + z).max(T::zero());
                if j > i {
                    loss += jp * jp;
                }
                dl += jp * inv_np * share;
            }
            (loss.to_f64_(), dl)
        })
        .collect();
    let loss = ordered_sum(per_row.iter().map(|v| v.0)) / (2.0 * np);
    let dl = per_row.iter().map(|v| v.1).collect();
    Ok((loss, LiftedState { lse, dl, nearest }))
}

pub fn lifted_backward<T: Real>(b: &Batch<T>, margin: f64, hard: bool, st: &LiftedState<T>, gx: &mut [T]) -> Result<()> {
    b.validate()?;
    let (n, d, y) = (b.n, b.d, b.labels);
    if st.lse.len() != n || st.dl.len() != n || st.nearest.len() != n {
        return Err(Error::Shape("lifted state does not match the batch".into()));
    }
    gx.iter_mut().for_each(|v| *v = T::zero());
    let np = n_pos_pairs(y);
    if np == 0.0 {
        return Ok(());
    }
    let inv_np = T::c(1.0 / np);
    let mg = T::c(margin);
    let (lse, dl) = (&st.lse, &st.dl);
    if hard {
        let (order, range) = classes(y);
        let mut pairs = Vec::new();
        for i in 0..n {
            let (s, e) = range[i];
            for &j in &order[s..e] {
                if j <= i {
                    continue;
                }
                let (dij, inv) = sqrt_and_inv(sq_dist(&b.x[i * d..(i + 1) * d], &b.x[j * d..(j + 1) * d]));
                let jp = (dij + lse[i].max(lse[j])).max(T::zero());
                if jp > T::zero() {
                    pairs.push((i as u32, j as u32, jp * inv_np * inv));
                }
            }
            let k = st.nearest[i];
            if k >= 0 && dl[i] != T::zero() {
                let k = k as usize;
                let inv = sqrt_and_inv(sq_dist(&b.x[i * d..(i + 1) * d], &b.x[k * d..(k + 1) * d])).1;
                pairs.push((i as u32, k as u32, -dl[i] * inv));
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
                // Negatives: ∂L/∂D_kj = −(A_k e^{margin−D_kj−l_k} + A_j e^{margin−D_kj−l_j}).
                for j in 0..n {
                    let a = if y[j] != y[k] { mg - srow[j].sqrt() } else { T::neg_infinity() };
                    ek[j] = a - lse[k];
                    ej[j] = a - lse[j];
                }
                exp_slice(&mut ek);
                exp_slice(&mut ej);
                for j in 0..n {
                    if j == k {
                        continue;
                    }
                    let (dkj, inv) = sqrt_and_inv(srow[j]);
                    let t = if y[j] == y[k] {
                        (dkj + logaddexp(lse[k], lse[j])).max(T::zero()) * inv_np
                    } else {
                        -(dl[k] * ek[j] + dl[j] * ej[j])
                    };
                    crow[j] = t * inv;
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

    fn brute(x: &[f64], n: usize, l: &[i64], d: usize, mg: f64, hard: bool) -> f64 {
        let dd = |i: usize, j: usize| dist(x, i, x, j, d).sqrt();
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
                let z = if hard {
                    t.iter().cloned().fold(f64::NEG_INFINITY, f64::max)
                } else {
                    t.iter().map(|v| v.exp()).sum::<f64>().ln()
                };
                s += (dd(i, j) + z).max(0.0).powi(2);
            }
        }
        if c > 0.0 { s / (2.0 * c) } else { 0.0 }
    }

    #[test]
    fn matches_brute_force_and_finite_differences() {
        let mut rng = Rng(5);
        for &(n, d, k) in &[(10usize, 3usize, 3u64), (70, 2, 5), (6, 2, 1), (4, 2, 9)] {
            let x: Vec<f64> = rng.normal_vec(n * d).iter().map(|v| v * 0.6).collect();
            let l = rng.labels(n, k);
            let b = Batch { x: &x, n, d, labels: &l, refs: None };
            for hard in [false, true] {
                let (v, st) = lifted_forward(&b, 1.0, hard).unwrap();
                let want = brute(&x, n, &l, d, 1.0, hard);
                assert!((v - want).abs() < 1e-9 * (1.0 + want), "hard={hard}: {v} vs {want}");
                let mut gx = vec![0.0; n * d];
                lifted_backward(&b, 1.0, hard, &st, &mut gx).unwrap();
                assert_close(&gx, &fd_grad(&x, &|xx| brute(xx, n, &l, d, 1.0, hard)), 1e-4);
            }
        }
    }

    #[test]
    fn far_points_stay_finite() {
        let x: Vec<f32> = (0..40).map(|i| (i as f32) * 37.0 % 101.0).collect();
        let l: Vec<i64> = (0..20).map(|i| i % 3).collect();
        let b = Batch { x: &x, n: 20, d: 2, labels: &l, refs: None };
        let (v, st) = lifted_forward(&b, 1.0, false).unwrap();
        assert!(v.is_finite());
        let mut gx = vec![0.0f32; 40];
        lifted_backward(&b, 1.0, false, &st, &mut gx).unwrap();
        assert!(gx.iter().all(|g| g.is_finite()));
    }
}
