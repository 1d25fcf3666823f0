//! The exact O(N²) repulsive term, in fixed tiles of rows (any output dimension).
//!
//! The gradient (in units of ∂C/∂y / 4) is  g_i = α_ex·A_i − R_i  with the
//! attractive term A_i from the sparse P (see [`super::optimize`]) and
//!
//! * Student-t (dof α), w = (1 + d²/α)^(−α), b = w^(1/α):
//!   R_i = Σ_j w_ij b_ij (y_i − y_j) / Z,  Z = Σ_{k≠l} w_kl;
//! * symmetric SNE, w = exp(−d²): R_i = Σ_j w_ij (y_i − y_j) / Z;
//! * asymmetric SNE (cost (1/N)·Σ_i KL(P_i‖Q_i) inside the optimiser),
//!   q_{j|i} = w_ij / Z_i: R_i = (1/2N) Σ_j (q_{j|i} + q_{i|j}) (y_i − y_j).

use super::Kernel;
use rayon::prelude::*;

const TILE: usize = 64;

#[inline(always)]
fn d2_of<const D: usize>(y: &[f64], i: usize, j: usize, dim: usize) -> f64 {
    let dim = if D > 0 { D } else { dim };
    let (a, b) = (&y[i * dim..i * dim + dim], &y[j * dim..j * dim + dim]);
    let mut s = 0.0;
    for d in 0..dim {
        let t = a[d] - b[d];
        s += t * t;
    }
    s
}

/// Σ_j c(d²_ij, j)·(y_i − y_j) and Σ_j s(d²_ij) for every row, in tiles;
/// returns the per-row scalar sums.
fn pair_sums<const D: usize, F: Fn(usize, usize, f64) -> (f64, f64) + Sync>(y: &[f64], n: usize, dim: usize, f: F, out: &mut [f64]) -> Vec<f64> {
    let dim_ = if D > 0 { D } else { dim };
    let mut sums = vec![0.0; n];
    out.par_chunks_mut(TILE * dim_).zip(sums.par_chunks_mut(TILE)).enumerate().for_each(|(t, (o, s))| {
        for (r, (orow, srow)) in o.chunks_mut(dim_).zip(s.iter_mut()).enumerate() {
            let i = t * TILE + r;
            orow.iter_mut().for_each(|v| *v = 0.0);
            let mut acc = 0.0;
            let yi = &y[i * dim_..i * dim_ + dim_];
            for j in 0..n {
                if j == i {
                    continue;
                }
                let d2 = d2_of::<D>(y, i, j, dim_);
                let (c, sv) = f(i, j, d2);
                acc += sv;
                let yj = &y[j * dim_..j * dim_ + dim_];
                for d in 0..dim_ {
                    orow[d] += c * (yi[d] - yj[d]);
                }
            }
            *srow = acc;
        }
    });
    sums
}

/// Fixed-order sum (tiles, then sequential).
pub fn fsum(v: &[f64]) -> f64 {
    let parts: Vec<f64> = v.par_chunks(4096).map(|c| c.iter().sum::<f64>()).collect();
    parts.iter().sum()
}

fn repulsion_d<const D: usize>(y: &[f64], n: usize, dim: usize, kernel: Kernel, rep: &mut [f64]) -> f64 {
    match kernel {
        Kernel::StudentT(a) => {
            let zr = pair_sums::<D, _>(y, n, dim, |_, _, d2| {
                let b = 1.0 / (1.0 + d2 / a);
                let w = if a == 1.0 { b } else { b.powf(a) };
                (w * b, w)
            }, rep);
            let z = fsum(&zr);
            let inv = 1.0 / z;
            rep.par_chunks_mut(4096).for_each(|c| c.iter_mut().for_each(|v| *v *= inv));
            z.ln()
        }
        Kernel::Gaussian => {
            let zr = pair_sums::<D, _>(y, n, dim, |_, _, d2| {
                let w = (-d2).exp();
                (w, w)
            }, rep);
            let z = fsum(&zr);
            let inv = 1.0 / z;
            rep.par_chunks_mut(4096).for_each(|c| c.iter_mut().for_each(|v| *v *= inv));
            z.ln()
        }
        Kernel::Sne => {
            let mut scratch = vec![0.0; n * dim];
            let zi = pair_sums::<D, _>(y, n, dim, |_, _, d2| (0.0, (-d2).exp()), &mut scratch);
            let inv_z: Vec<f64> = zi.iter().map(|z| 1.0 / z).collect();
            let s = 0.5 / n as f64;
            pair_sums::<D, _>(y, n, dim, |i, j, d2| ((-d2).exp() * (inv_z[i] + inv_z[j]) * s, 0.0), rep);
            let logs: Vec<f64> = zi.iter().map(|z| z.ln()).collect();
            fsum(&logs)
        }
    }
}

/// Writes R (see the module docs) into `rep` (`n × dim`) and returns the log
/// normaliser the KL needs: ln Z, or Σ_i ln Z_i for asymmetric SNE.
pub fn exact_repulsion(y: &[f64], n: usize, dim: usize, kernel: Kernel, rep: &mut [f64]) -> f64 {
    match dim {
        1 => repulsion_d::<1>(y, n, dim, kernel, rep),
        2 => repulsion_d::<2>(y, n, dim, kernel, rep),
        3 => repulsion_d::<3>(y, n, dim, kernel, rep),
        _ => repulsion_d::<0>(y, n, dim, kernel, rep),
    }
}

/// ln Z = ln Σ_{i≠j} (1 + d²_ij/α)^(−α), exactly (for reporting a KL whose normaliser is exact).
pub fn exact_log_z(y: &[f64], n: usize, dim: usize, dof: f64) -> f64 {
    let mut rep = vec![0.0; n * dim];
    exact_repulsion(y, n, dim, Kernel::StudentT(dof), &mut rep)
}
