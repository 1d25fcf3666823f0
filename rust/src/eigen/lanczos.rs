//! Thick-restart Lanczos with full reorthogonalisation for the largest
//! eigenpairs of a symmetric operator.
//!
//! The basis V (m vectors) satisfies `A V = V H + r e_mᵀ` with `H = Vᵀ A V`
//! computed explicitly by classical Gram–Schmidt applied twice, so V stays
//! orthonormal to working precision. After m steps the Ritz pairs of H are
//! formed; the Ritz residual of pair i is `‖r‖·|Y[m−1, i]|`. The basis is then
//! shrunk to the best `k` Ritz vectors plus `r/‖r‖` (Wu & Simon's thick
//! restart) and extended again. Known eigenvectors (`deflate`) are projected
//! out of every vector, so the search runs in their orthogonal complement.
//!
//! Every reduction is either sequential or split over fixed tiles combined in
//! a fixed order, so results are bit-identical for any number of threads.

use super::dense::sym_eig;
use crate::rng::uniform_vec;
use crate::error::{Error, Result};
use rayon::prelude::*;

const TILE: usize = 4096;

/// Options of [`lanczos_largest`].
#[derive(Clone, Debug)]
pub struct LanczosOpts {
    /// Number of wanted eigenpairs.
    pub nev: usize,
    /// Maximum basis size (clamped to `[nev + 2, n_eff]`).
    pub ncv: usize,
    /// Converged when `‖A x − θ x‖ ≤ tol · max|θ|` for all wanted pairs.
    pub tol: f64,
    /// Maximum number of operator applications.
    pub max_matvecs: usize,
    /// Seed of the start vector.
    pub seed: u64,
}

/// Deterministic dot product: fixed tiles summed in order.
pub fn pdot(a: &[f64], b: &[f64]) -> f64 {
    let parts: Vec<f64> = a.par_chunks(TILE).zip(b.par_chunks(TILE)).map(|(x, y)| x.iter().zip(y).map(|(p, q)| p * q).sum()).collect();
    parts.iter().sum()
}

/// Projects `w` onto the orthogonal complement of `basis` (orthonormal rows),
/// twice; returns the accumulated coefficients.
fn orthogonalize(w: &mut [f64], basis: &[&[f64]]) -> Vec<f64> {
    let mut h = vec![0.0; basis.len()];
    if basis.is_empty() {
        return h;
    }
    for _ in 0..2 {
        let c: Vec<f64> = basis.par_iter().map(|v| {
            // sequential per vector: deterministic and independent of threads
            v.iter().zip(w.iter()).map(|(p, q)| p * q).sum::<f64>()
        }).collect();
        w.par_chunks_mut(TILE).enumerate().for_each(|(t, wt)| {
            let r0 = t * TILE;
            for (ci, v) in c.iter().zip(basis) {
                let vt = &v[r0..r0 + wt.len()];
                for (x, &y) in wt.iter_mut().zip(vt) {
                    *x -= ci * y;
                }
            }
        });
        for (hi, ci) in h.iter_mut().zip(&c) {
            *hi += ci;
        }
    }
    h
}

fn norm(v: &[f64]) -> f64 {
    pdot(v, v).sqrt()
}

/// The `nev` largest eigenpairs of the symmetric operator `op` (`y = A x`)
/// restricted to the orthogonal complement of `deflate` (orthonormal vectors).
/// Returns values in descending order and unit eigenvectors.
pub fn lanczos_largest<F>(n: usize, op: F, deflate: &[Vec<f64>], opts: &LanczosOpts) -> Result<(Vec<f64>, Vec<Vec<f64>>)>
where
    F: Fn(&[f64], &mut [f64]) + Sync,
{
    let n_eff = n.saturating_sub(deflate.len());
    let nev = opts.nev;
    if nev == 0 {
        return Ok((Vec::new(), Vec::new()));
    }
    if nev + 2 > n_eff {
        return Err(Error::InvalidParameter(format!("Lanczos needs nev + 2 <= {n_eff}, got nev = {nev}")));
    }
    let m = opts.ncv.max(nev + 2).min(n_eff);
    let defl: Vec<&[f64]> = deflate.iter().map(|v| v.as_slice()).collect();
    let mut seed_ctr = opts.seed;
    let mut fresh = |basis: &[Vec<f64>]| -> Vec<f64> {
        // A random vector orthogonal to the deflation space and the basis.
        for _ in 0..8 {
            let mut v = uniform_vec(seed_ctr, n);
            seed_ctr = seed_ctr.wrapping_add(0x9E37_79B9);
            orthogonalize(&mut v, &defl);
            let b: Vec<&[f64]> = basis.iter().map(|x| x.as_slice()).collect();
            orthogonalize(&mut v, &b);
            let nv = norm(&v);
            if nv > 1e-8 {
                v.iter_mut().for_each(|x| *x /= nv);
                return v;
            }
        }
        vec![0.0; n]
    };
    let mut v: Vec<Vec<f64>> = Vec::with_capacity(m);
    v.push(fresh(&[]));
    let mut h = vec![0.0; m * m];
    let mut k = 0usize;
    let mut matvecs = 0usize;
    let mut w = vec![0.0; n];
    loop {
        let mut beta_m = 0.0;
        let mut resid = vec![0.0; n];
        for j in k..m {
            op(&v[j], &mut w);
            matvecs += 1;
            orthogonalize(&mut w, &defl);
            let hc = {
                let b: Vec<&[f64]> = v.iter().map(|x| x.as_slice()).collect();
                orthogonalize(&mut w, &b)
            };
            for (i, &hi) in hc.iter().enumerate() {
                h[i * m + j] = hi;
                h[j * m + i] = hi;
            }
            let beta = norm(&w);
            if j + 1 < m {
                let scale = hc.iter().fold(0.0f64, |a, b| a.max(b.abs())).max(1e-300);
                if beta <= 1e-12 * scale {
                    // Invariant subspace: continue with a fresh orthogonal direction.
                    let nv = fresh(&v);
                    v.push(nv);
                    h[(j + 1) * m + j] = 0.0;
                    h[j * m + j + 1] = 0.0;
                } else {
                    v.push(w.iter().map(|x| x / beta).collect());
                    h[(j + 1) * m + j] = beta;
                    h[j * m + j + 1] = beta;
                }
            } else {
                beta_m = beta;
                resid.copy_from_slice(&w);
            }
        }
        let (theta, y) = sym_eig(&h, m)?; // rows of y: eigenvectors, descending
        let scale = theta.iter().fold(0.0f64, |a, b| a.max(b.abs())).max(1e-300);
        let res: Vec<f64> = (0..m).map(|i| beta_m * y[i * m + m - 1].abs()).collect();
        let nconv = (0..nev).filter(|&i| res[i] <= opts.tol * scale).count();
        let done = nconv == nev;
        if done || matvecs >= opts.max_matvecs {
            if !done {
                return Err(Error::InvalidInput(format!(
                    "Lanczos did not converge in {matvecs} operator applications ({nconv}/{nev} eigenpairs)"
                )));
            }
            return Ok((theta[..nev].to_vec(), ritz(&v, &y, m, nev, n)));
        }
        // Thick restart: keep the best kk Ritz vectors, more as more converge.
        let kk = (nev + nconv + (m - nev) / 2).min(m - 2).max(nev);
        let mut nv = ritz(&v, &y, m, kk, n);
        h.iter_mut().for_each(|x| *x = 0.0);
        for i in 0..kk {
            h[i * m + i] = theta[i];
            let c = beta_m * y[i * m + m - 1];
            h[i * m + kk] = c;
            h[kk * m + i] = c;
        }
        if beta_m > 0.0 {
            nv.push(resid.iter().map(|x| x / beta_m).collect());
        } else {
            let f = fresh(&nv);
            nv.push(f);
        }
        v = nv;
        k = kk;
    }
}

/// Ritz vectors `x_i = Σ_j Y[i, j] v_j` for i < count, parallel over row tiles.
fn ritz(v: &[Vec<f64>], y: &[f64], m: usize, count: usize, n: usize) -> Vec<Vec<f64>> {
    let mut out = vec![vec![0.0; n]; count];
    // Work row-tile by row-tile; each output entry is a fixed-order sum.
    let tiles: Vec<(usize, Vec<f64>)> = (0..n.div_ceil(TILE)).into_par_iter().map(|t| {
        let r0 = t * TILE;
        let r1 = (r0 + TILE).min(n);
        let mut buf = vec![0.0; count * (r1 - r0)];
        for i in 0..count {
            let b = &mut buf[i * (r1 - r0)..(i + 1) * (r1 - r0)];
            for j in 0..m.min(v.len()) {
                let c = y[i * m + j];
                for (x, &vj) in b.iter_mut().zip(&v[j][r0..r1]) {
                    *x += c * vj;
                }
            }
        }
        (r0, buf)
    }).collect();
    for (r0, buf) in tiles {
        let len = buf.len() / count.max(1);
        for (i, o) in out.iter_mut().enumerate() {
            o[r0..r0 + len].copy_from_slice(&buf[i * len..(i + 1) * len]);
        }
    }
    out
}
