//! Principal component analysis, exact and randomised.
//!
//! With Xc the column-centred data (n × d), the principal axes are the top
//! eigenvectors w of the covariance `C = Xcᵀ Xc / (n − 1)`; the explained
//! variances are its eigenvalues and the scores are `Xc w`.
//!
//! * Exact: the d × d covariance (or the n × n Gram matrix `Xc Xcᵀ` when
//!   n < d, axes `Xcᵀ u / √λ`) is formed with tiled GEMMs and solved densely.
//! * Randomised (Halko, Martinsson & Tropp): a seeded d × l test matrix
//!   (l = k + oversampling), `q` power iterations `Q ← orth(Xc Xcᵀ Q)` with
//!   re-orthonormalisation, then the exact decomposition of `B = Qᵀ Xc`.
//!
//! Each component is sign-fixed so its largest-|entry| is positive.

use crate::eigen::dense::{sym_eig, sym_eig_top};
use crate::eigen::fix_sign;
use crate::rng::uniform_pm1;
use crate::error::{check_finite, check_len, Error, Result};
use crate::linalg::{gemm, par_gemm, MatRef};
use crate::Real;
use rayon::prelude::*;

/// Rows of the data per partial product in [`par_atb`] (fixed: thread-count independent).
const ROW_BLOCK: usize = 2048;

/// Which PCA solver to run.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Solver {
    Full,
    Randomized { n_iter: usize, n_oversamples: usize, seed: u64 },
}

/// A fitted PCA (all in f64).
#[derive(Clone, Debug)]
pub struct PcaFit {
    pub n_features: usize,
    pub mean: Vec<f64>,
    /// Row-major `k × d`, orthonormal rows.
    pub components: Vec<f64>,
    pub explained_variance: Vec<f64>,
    /// Σ_j Var(x_j) (n − 1 denominator) — the denominator of the explained-variance ratio.
    pub total_variance: f64,
}

/// Column means (f64) and the centred copy of `x`.
pub fn center<T: Real>(x: &[T], n: usize, d: usize) -> (Vec<f64>, Vec<T>) {
    // Partial column sums per fixed block, added in block order.
    let parts: Vec<Vec<f64>> = x.par_chunks(ROW_BLOCK * d).map(|blk| {
        let mut s = vec![0.0; d];
        for row in blk.chunks(d) {
            for (a, &v) in s.iter_mut().zip(row) {
                *a += v.to_f64_();
            }
        }
        s
    }).collect();
    let mut mean = vec![0.0; d];
    for p in parts {
        mean.iter_mut().zip(p).for_each(|(a, b)| *a += b);
    }
    mean.iter_mut().for_each(|m| *m /= n as f64);
    let mt: Vec<T> = mean.iter().map(|&m| T::c(m)).collect();
    let mut xc = x.to_vec();
    xc.par_chunks_mut(d).for_each(|row| row.iter_mut().zip(&mt).for_each(|(v, &m)| *v -= m));
    (mean, xc)
}

/// `Aᵀ B` (p × q, f64) for row-major `a` (n × p) and `b` (n × q): partial
/// products over fixed row blocks (GEMM in T), summed in block order in f64.
pub fn par_atb<T: Real>(a: &[T], b: &[T], n: usize, p: usize, q: usize) -> Vec<f64> {
    let nb = n.div_ceil(ROW_BLOCK);
    let parts: Vec<Vec<T>> = (0..nb).into_par_iter().map(|t| {
        let r0 = t * ROW_BLOCK;
        let r1 = (r0 + ROW_BLOCK).min(n);
        let mut c = vec![T::zero(); p * q];
        let av = MatRef::new(&a[r0 * p..r1 * p], r1 - r0, p).t();
        let bv = MatRef::new(&b[r0 * q..r1 * q], r1 - r0, q);
        gemm(T::one(), av, bv, T::zero(), &mut c);
        c
    }).collect();
    let mut out = vec![0.0; p * q];
    for part in parts {
        out.iter_mut().zip(part).for_each(|(o, v)| *o += v.to_f64_());
    }
    out
}

/// Orthonormalises the columns of a row-major `n × l` f64 matrix in place
/// (classical Gram–Schmidt applied twice). Columns that vanish become zero.
fn orthonormalize_cols(y: &mut [f64], n: usize, l: usize) {
    let mut cols: Vec<Vec<f64>> = (0..l).map(|c| (0..n).map(|i| y[i * l + c]).collect()).collect();
    for c in 0..l {
        let (done, rest) = cols.split_at_mut(c);
        let v = &mut rest[0];
        let n0 = v.iter().map(|x| x * x).sum::<f64>().sqrt();
        for _ in 0..2 {
            for u in done.iter() {
                let p: f64 = u.iter().zip(v.iter()).map(|(a, b)| a * b).sum();
                v.iter_mut().zip(u).for_each(|(x, &uu)| *x -= p * uu);
            }
        }
        let nv = v.iter().map(|x| x * x).sum::<f64>().sqrt();
        if nv > 1e-12 * n0.max(f64::MIN_POSITIVE) && nv > 0.0 {
            v.iter_mut().for_each(|x| *x /= nv);
        } else {
            v.iter_mut().for_each(|x| *x = 0.0);
        }
    }
    for (c, col) in cols.iter().enumerate() {
        for i in 0..n {
            y[i * l + c] = col[i];
        }
    }
}

fn to_t<T: Real>(v: &[f64]) -> Vec<T> {
    v.iter().map(|&x| T::c(x)).collect()
}

/// Fits PCA with `k` components on `x` (n × d). Returns the fit and the centred data.
pub fn pca_fit<T: Real>(x: &[T], n: usize, d: usize, k: usize, solver: Solver) -> Result<(PcaFit, Vec<T>)> {
    check_len("x", x.len(), n, d)?;
    check_finite("x", x)?;
    if n < 2 || d == 0 {
        return Err(Error::Shape(format!("PCA needs at least 2 samples and 1 feature, got ({n}, {d})")));
    }
    if k == 0 || k > n.min(d) {
        return Err(Error::InvalidParameter(format!("n_components must be in 1..={} for data of shape ({n}, {d}), got {k}", n.min(d))));
    }
    let (mean, xc) = center(x, n, d);
    let nm1 = (n - 1) as f64;
    let total_variance: f64 = xc.par_chunks(ROW_BLOCK * d)
        .map(|b| b.iter().map(|v| v.to_f64_() * v.to_f64_()).sum::<f64>())
        .collect::<Vec<f64>>().iter().sum::<f64>() / nm1;
    let (components, explained_variance) = match solver {
        Solver::Full if n >= d => {
            let mut c = par_atb(&xc, &xc, n, d, d);
            c.iter_mut().for_each(|v| *v /= nm1);
            let (vals, vecs) = sym_eig_top(&c, d, k)?;
            (vecs[..k * d].to_vec(), vals[..k].iter().map(|v| v.max(0.0)).collect::<Vec<_>>())
        }
        Solver::Full => {
            // Gram route: K = Xc Xcᵀ (n × n), axes Xcᵀ u / √λ.
            let mut g = vec![T::zero(); n * n];
            par_gemm(T::one(), MatRef::new(&xc, n, d), MatRef::new(&xc, n, d).t(), T::zero(), &mut g);
            let gf: Vec<f64> = g.iter().map(|v| v.to_f64_()).collect();
            let (vals, vecs) = sym_eig_top(&gf, n, k)?;
            let mut comps = vec![0.0; k * d];
            comps.par_chunks_mut(d).enumerate().for_each(|(r, out)| {
                let lam = vals[r];
                if lam <= 0.0 {
                    return;
                }
                let u = &vecs[r * n..(r + 1) * n];
                for (i, &ui) in u.iter().enumerate() {
                    let row = &xc[i * d..(i + 1) * d];
                    out.iter_mut().zip(row).for_each(|(o, v)| *o += ui * v.to_f64_());
                }
                let s = lam.sqrt();
                out.iter_mut().for_each(|o| *o /= s);
            });
            (comps, vals[..k].iter().map(|v| v.max(0.0) / nm1).collect())
        }
        Solver::Randomized { n_iter, n_oversamples, seed } => {
            let l = (k + n_oversamples).min(n.min(d));
            let omega: Vec<T> = (0..d * l).map(|i| T::c(uniform_pm1(seed, i as u64))).collect();
            let mut y = vec![T::zero(); n * l];
            par_gemm(T::one(), MatRef::new(&xc, n, d), MatRef::new(&omega, d, l), T::zero(), &mut y);
            let mut q: Vec<f64> = y.iter().map(|v| v.to_f64_()).collect();
            orthonormalize_cols(&mut q, n, l);
            for _ in 0..n_iter {
                let qt: Vec<T> = to_t(&q);
                let mut z = par_atb(&xc, &qt, n, d, l); // d × l
                orthonormalize_cols(&mut z, d, l);
                let zt: Vec<T> = to_t(&z);
                par_gemm(T::one(), MatRef::new(&xc, n, d), MatRef::new(&zt, d, l), T::zero(), &mut y);
                q = y.iter().map(|v| v.to_f64_()).collect();
                orthonormalize_cols(&mut q, n, l);
            }
            let qt: Vec<T> = to_t(&q);
            let bt = par_atb(&xc, &qt, n, d, l); // Bᵀ = Xcᵀ Q, d × l
            // B Bᵀ (l × l) = (Bᵀ)ᵀ Bᵀ.
            let mut bbt = vec![0.0; l * l];
            for a in 0..l {
                for b in 0..l {
                    bbt[a * l + b] = (0..d).map(|j| bt[j * l + a] * bt[j * l + b]).sum();
                }
            }
            let (vals, vecs) = sym_eig(&bbt, l)?;
            let mut comps = vec![0.0; k * d];
            for r in 0..k {
                let s2 = vals[r];
                if s2 <= 0.0 {
                    continue;
                }
                let u = &vecs[r * l..(r + 1) * l];
                let s = s2.sqrt();
                for j in 0..d {
                    comps[r * d + j] = (0..l).map(|a| bt[j * l + a] * u[a]).sum::<f64>() / s;
                }
            }
            (comps, vals[..k].iter().map(|v| v.max(0.0) / nm1).collect())
        }
    };
    let mut components = components;
    components.chunks_mut(d).for_each(fix_sign);
    Ok((PcaFit { n_features: d, mean, components, explained_variance, total_variance }, xc))
}

/// Scores `Xc · componentsᵀ` (n × k) of already-centred data, parallel over row tiles.
pub fn scores<T: Real>(xc: &[T], n: usize, d: usize, components: &[f64], k: usize) -> Vec<T> {
    let ct: Vec<T> = to_t(components);
    let mut out = vec![T::zero(); n * k];
    par_gemm(T::one(), MatRef::new(xc, n, d), MatRef::new(&ct, k, d).t(), T::zero(), &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(n: usize, d: usize) -> Vec<f64> {
        // Anisotropic data: feature j scaled by 1/(j+1), plus an offset.
        (0..n * d).map(|i| uniform_pm1(11, i as u64) / ((i % d) as f64 + 1.0) + 3.0).collect()
    }

    #[test]
    fn full_gram_and_randomized_agree() {
        let (n, d, k) = (300, 12, 3);
        let x = data(n, d);
        let (full, xc) = pca_fit(&x, n, d, k, Solver::Full).unwrap();
        // Reference covariance eigen-decomposition by brute force.
        let mut c = vec![0.0; d * d];
        for i in 0..n {
            for a in 0..d {
                for b in 0..d {
                    c[a * d + b] += xc[i * d + a] * xc[i * d + b] / (n - 1) as f64;
                }
            }
        }
        let (vals, _) = sym_eig(&c, d).unwrap();
        for r in 0..k {
            assert!((full.explained_variance[r] - vals[r]).abs() < 1e-12);
        }
        assert!((full.total_variance - vals.iter().sum::<f64>()).abs() < 1e-10);
        let (rnd, _) = pca_fit(&x, n, d, k, Solver::Randomized { n_iter: 7, n_oversamples: 9, seed: 5 }).unwrap();
        for r in 0..k {
            assert!((rnd.explained_variance[r] - vals[r]).abs() < 1e-8 * vals[0]);
            let dot: f64 = (0..d).map(|j| rnd.components[r * d + j] * full.components[r * d + j]).sum();
            assert!((dot - 1.0).abs() < 1e-8, "component {r}: {dot}");
        }
        // Gram route (n < d) on the transposed-shape problem.
        let (n2, d2) = (10, 40);
        let x2 = data(n2, d2);
        let (g, _) = pca_fit(&x2, n2, d2, 4, Solver::Full).unwrap();
        let (r2, _) = pca_fit(&x2, n2, d2, 4, Solver::Randomized { n_iter: 4, n_oversamples: 6, seed: 1 }).unwrap();
        for r in 0..4 {
            assert!((g.explained_variance[r] - r2.explained_variance[r]).abs() < 1e-10);
            let dot: f64 = (0..d2).map(|j| g.components[r * d2 + j] * r2.components[r * d2 + j]).sum();
            assert!((dot - 1.0).abs() < 1e-9);
        }
    }
}
