//! Uniformity of a batch on the hypersphere (Wang & Isola 2020, "Understanding
//! contrastive representation learning through alignment and uniformity"):
//!
//! U = log( 2/(n(n−1)) Σ_{i<j} e^{−t‖x_i − x_j‖²} ) = logsumexp_{i≠j}(−t D_ij) − ln(n(n−1)).
//!
//! One pass over fixed chunks of full rows: v_ij = −t·max(‖x_i‖² + ‖x_j‖² −
//! 2 x_i·x_j, 0) from a GEMM, the row's own maximum m_i, e_ij = e^{v_ij − m_i}
//! (j ≠ i), S_i = Σ_j e_ij and, when the gradient is wanted, G_i = S_i x_i −
//! Σ_j e_ij x_j (a second GEMM of the same chunk). With log Z the ordered
//! log-sum-exp of m_i + ln S_i,
//!
//! ∂U/∂x_i = −4t · e^{m_i − log Z} · G_i
//!
//! (every unordered pair enters twice and D_ij = D_ji), so the gradient needs
//! no second pass. Memory: one chunk of CHUNK×n per running task; the kept
//! state is O(n). Chunks are fixed and per-row results merged in row order:
//! results do not depend on the thread count.

use super::common::logaddexp;
use super::rowops;
use crate::error::{check_finite, check_len, Error, Result};
use crate::linalg::{gemm, MatRef};
use crate::Real;
use rayon::prelude::*;

/// Rows per chunk (fixed: results do not depend on the thread count).
const CHUNK: usize = 128;

/// The problem: rows `x` (n×d, n ≥ 2) and the temperature-like `t` > 0.
#[derive(Clone, Copy)]
pub struct Uniformity<'a, T> {
    pub x: &'a [T],
    pub n: usize,
    pub d: usize,
    pub t: f64,
}

impl<'a, T: Real> Uniformity<'a, T> {
    fn validate(&self) -> Result<()> {
        if self.n < 2 || self.d == 0 {
            return Err(Error::Shape(format!(
                "uniformity needs at least 2 rows and 1 column, got shape ({}, {})",
                self.n, self.d
            )));
        }
        check_len("x", self.x.len(), self.n, self.d)?;
        check_finite("x", self.x)?;
        if !(self.t.is_finite() && self.t > 0.0) {
            return Err(Error::InvalidParameter(format!("t must be finite and > 0, got {}", self.t)));
        }
        Ok(())
    }
}

/// The loss U.
pub fn uniformity_forward<T: Real>(p: &Uniformity<T>) -> Result<f64> {
    p.validate()?;
    Ok(pass(p, None))
}

/// U and ∂U/∂x (into `gx`, n×d, overwritten) in one pass.
pub fn uniformity_forward_backward<T: Real>(p: &Uniformity<T>, gx: &mut [T]) -> Result<f64> {
    p.validate()?;
    check_len("grad", gx.len(), p.n, p.d)?;
    Ok(pass(p, Some(gx)))
}

fn pass<T: Real>(p: &Uniformity<T>, gx: Option<&mut [T]>) -> f64 {
    let (n, d) = (p.n, p.d);
    let t = T::c(p.t);
    let xm = MatRef::new(p.x, n, d);
    // xᵀ (d×n, contiguous rows): the GEMM packs it faster than a strided view of x.
    let xt = crate::linalg::transpose(p.x, n, d);
    let xtm = MatRef { data: &xt[..], rows: d, cols: n, rs: n as isize, cs: 1 };
    let sq: Vec<T> = p.x.chunks_exact(d).map(|r| r.iter().fold(T::zero(), |a, &v| a + v * v)).collect();
    // One chunk: per-row (m_i, ln S_i); writes G rows into `g` when given.
    let chunk = |c: usize, g: Option<&mut [T]>| -> Vec<(T, T)> {
        let r0 = c * CHUNK;
        let r1 = (r0 + CHUNK).min(n);
        let rows = r1 - r0;
        let mut e = vec![T::zero(); rows * n];
        gemm(T::c(2.0 * p.t), xm.rows_range(r0, r1), xtm, T::zero(), &mut e);
        let mut out = Vec::with_capacity(rows);
        let mut sums = Vec::with_capacity(rows);
        for (ii, row) in e.chunks_exact_mut(n).enumerate() {
            let i = r0 + ii;
            let ti = t * sq[i];
            for (v, &sj) in row.iter_mut().zip(&sq) {
                // −t·D_ij = 2t x_i·x_j − t‖x_i‖² − t‖x_j‖², D clamped at 0.
                *v = (*v - ti - t * sj).min(T::zero());
            }
            row[i] = T::neg_infinity();
            let mx = rowops::max(row);
            let s = rowops::exp_shift(row, mx);
            out.push((mx, s.ln()));
            sums.push(s);
        }
        if let Some(g) = g {
            gemm(-T::one(), MatRef::new(&e, rows, n), xm, T::zero(), g);
            for (ii, gi) in g.chunks_exact_mut(d).enumerate() {
                let (s, xi) = (sums[ii], &p.x[(r0 + ii) * d..(r0 + ii + 1) * d]);
                for (gv, &xv) in gi.iter_mut().zip(xi) {
                    *gv += s * xv;
                }
            }
        }
        out
    };
    let nc = n.div_ceil(CHUNK);
    let parts: Vec<Vec<(T, T)>> = match gx {
        None => (0..nc).into_par_iter().map(|c| chunk(c, None)).collect(),
        Some(g) => {
            let parts: Vec<Vec<(T, T)>> =
                g[..n * d].par_chunks_mut(CHUNK * d).enumerate().map(|(c, gc)| chunk(c, Some(gc))).collect();
            let logz = merged(&parts);
            let k = T::c(-4.0 * p.t);
            let rows: Vec<T> = parts.iter().flatten().map(|&(m, _)| k * (m - logz).exp()).collect();
            g[..n * d].par_chunks_mut(d).zip(rows.par_iter()).for_each(|(gi, &w)| gi.iter_mut().for_each(|v| *v *= w));
            return logz.to_f64_() - ((n as f64) * (n as f64 - 1.0)).ln();
        }
    };
    merged(&parts).to_f64_() - ((n as f64) * (n as f64 - 1.0)).ln()
}

/// log Σ_i e^{m_i + ln S_i}, merged in row order.
fn merged<T: Real>(parts: &[Vec<(T, T)>]) -> T {
    parts.iter().flatten().fold(T::neg_infinity(), |acc, &(m, ls)| logaddexp(acc, m + ls))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::losses::common::testutil::*;

    fn brute(x: &[f64], n: usize, d: usize, t: f64) -> f64 {
        let mut tot = 0.0;
        for i in 0..n {
            for j in i + 1..n {
                tot += (-t * dist(x, i, x, j, d)).exp();
            }
        }
        (tot / (n * (n - 1) / 2) as f64).ln()
    }

    #[test]
    fn matches_brute_force_and_finite_differences() {
        let mut rng = Rng(21);
        for &(n, d, t) in &[(2usize, 3usize, 2.0), (9, 4, 2.0), (300, 3, 0.5), (20, 2, 30.0)] {
            let x = rng.normal_vec(n * d);
            let p = Uniformity { x: &x, n, d, t };
            let v = uniformity_forward(&p).unwrap();
            let want = brute(&x, n, d, t);
            assert!((v - want).abs() < 1e-9 * (1.0 + want.abs()), "{v} vs {want}");
            let mut g = vec![0.0; n * d];
            let fv = uniformity_forward_backward(&p, &mut g).unwrap();
            assert!((fv - v).abs() < 1e-12 * (1.0 + v.abs()));
            if n <= 20 {
                assert_close(&g, &fd_grad(&x, &|xx| brute(xx, n, d, t)), 1e-5);
            } else {
                let dir = rng.normal_vec(n * d);
                assert_dir(&g, &x, &dir, &|xx| brute(xx, n, d, t), 1e-6);
            }
        }
    }

    #[test]
    fn far_apart_rows_do_not_underflow_and_duplicates_are_finite() {
        // −t·D ≈ −2·10⁴ for every pair: e^{−tD} underflows, its log-sum-exp does not.
        let x = vec![0.0, 0.0, 100.0, 0.0, 0.0, 100.0];
        let v = uniformity_forward(&Uniformity { x: &x, n: 3, d: 2, t: 2.0 }).unwrap();
        assert!((v - brute_log(&x)).abs() < 1e-9, "{v}");
        let dup: Vec<f32> = vec![1.0, 0.0, 1.0, 0.0, 0.0, 1.0];
        let mut g = vec![0.0f32; 6];
        let v = uniformity_forward_backward(&Uniformity { x: &dup, n: 3, d: 2, t: 2.0 }, &mut g).unwrap();
        assert!(v.is_finite() && g.iter().all(|x| x.is_finite()));
        assert!(uniformity_forward(&Uniformity { x: &dup[..2], n: 1, d: 2, t: 2.0 }).is_err());
    }

    /// log mean_{i<j} e^{−2 D_ij} for the 3 points above, in closed form.
    fn brute_log(x: &[f64]) -> f64 {
        let ds = [dist(x, 0, x, 1, 2), dist(x, 0, x, 2, 2), dist(x, 1, x, 2, 2)];
        let m = ds.iter().map(|d| -2.0 * d).fold(f64::NEG_INFINITY, f64::max);
        m + (ds.iter().map(|d| (-2.0 * d - m).exp()).sum::<f64>() / 3.0).ln()
    }

    #[test]
    fn results_do_not_depend_on_the_thread_count() {
        let (n, d) = (700usize, 8usize);
        let x: Vec<f32> = Rng(8).normal_vec(n * d).iter().map(|&v| v as f32 * 0.3).collect();
        let p = Uniformity { x: &x, n, d, t: 2.0 };
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            pool.install(|| {
                let mut g = vec![0.0f32; n * d];
                let v = uniformity_forward_backward(&p, &mut g).unwrap();
                (v.to_bits(), uniformity_forward(&p).unwrap().to_bits(), g.iter().map(|x| x.to_bits()).collect::<Vec<_>>())
            })
        };
        let one = run(1);
        assert_eq!(one, run(2));
        assert_eq!(one, run(3));
    }
}
