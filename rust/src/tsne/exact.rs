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

/// One row of the fused exact gradient: (A_i, F_i, Z_i) with `L` independent lanes.
#[inline(always)]
fn exact_row<const D: usize, const L: usize>(yi: [f64; D], cols: &[Vec<f64>], prow: &[f64], i: usize, n: usize) -> ([f64; D], [f64; D], f64) {
    let mut a = [[0.0f64; L]; D];
    let mut f = [[0.0f64; L]; D];
    let mut z = [0.0f64; L];
    // j < i uses p[j], j > i uses p[j − 1].
    for (j0, j1, poff) in [(0usize, i, 0usize), (i + 1, n, 1usize)] {
        let full = (j1 - j0) / L * L;
        let pr = &prow[j0 - poff..j1 - poff];
        let cs: [&[f64]; D] = std::array::from_fn(|d| &cols[d][j0..j1]);
        let mut j = 0;
        while j < full {
            let mut dd = [[0.0f64; L]; D];
            let mut d2 = [0.0f64; L];
            for d in 0..D {
                for l in 0..L {
                    dd[d][l] = yi[d] - cs[d][j + l];
                    d2[l] += dd[d][l] * dd[d][l];
                }
            }
            let mut b = [0.0f64; L];
            let mut pb = [0.0f64; L];
            let mut bb = [0.0f64; L];
            for l in 0..L {
                b[l] = 1.0 / (1.0 + d2[l]);
                pb[l] = pr[j + l] * b[l];
                bb[l] = b[l] * b[l];
                z[l] += b[l];
            }
            for d in 0..D {
                for l in 0..L {
                    a[d][l] += pb[l] * dd[d][l];
                    f[d][l] += bb[l] * dd[d][l];
                }
            }
            j += L;
        }
        while j < j1 - j0 {
            let mut d2 = 0.0;
            let mut dd = [0.0f64; D];
            for d in 0..D {
                dd[d] = yi[d] - cs[d][j];
                d2 += dd[d] * dd[d];
            }
            let b = 1.0 / (1.0 + d2);
            z[0] += b;
            for d in 0..D {
                a[d][0] += pr[j] * b * dd[d];
                f[d][0] += b * b * dd[d];
            }
            j += 1;
        }
    }
    (std::array::from_fn(|d| a[d].iter().sum()), std::array::from_fn(|d| f[d].iter().sum()), z.iter().sum())
}

fn exact_row_base<const D: usize>(yi: [f64; D], cols: &[Vec<f64>], prow: &[f64], i: usize, n: usize) -> ([f64; D], [f64; D], f64) {
    exact_row::<D, 2>(yi, cols, prow, i, n)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn exact_row_avx2<const D: usize>(yi: [f64; D], cols: &[Vec<f64>], prow: &[f64], i: usize, n: usize) -> ([f64; D], [f64; D], f64) {
    exact_row::<D, 4>(yi, cols, prow, i, n)
}

/// Fused exact t-SNE gradient (dof = 1) for a *complete* P (every row holds all
/// j ≠ i in order, as the exact method builds it): one sweep over all pairs
/// accumulates A_i = Σ p_ij b_ij (y_i − y_j), F_i = Σ b²_ij (y_i − y_j) and Z,
/// then g_i = exag·A_i − F_i / Z. Coordinates are read column-wise and the
/// inner loop runs independent lanes (AVX2 when the CPU has it) so it vectorises.
pub fn fused_tsne_gradient<const D: usize>(y: &[f64], n: usize, pdata: &[f64], exag: f64, grad: &mut [f64]) {
    let cols: Vec<Vec<f64>> = (0..D).map(|d| (0..n).map(|i| y[i * D + d]).collect()).collect();
    let mut frep = vec![0.0f64; n * D];
    let avx = crate::simd::has_avx2();
    let zs: Vec<f64> = grad
        .par_chunks_mut(TILE * D)
        .zip(frep.par_chunks_mut(TILE * D))
        .enumerate()
        .map(|(t, (g, fr))| {
            let mut ztile = 0.0;
            for (r, (grow, frow)) in g.chunks_mut(D).zip(fr.chunks_mut(D)).enumerate() {
                let i = t * TILE + r;
                let yi: [f64; D] = std::array::from_fn(|d| cols[d][i]);
                let prow = &pdata[i * (n - 1)..(i + 1) * (n - 1)];
                let (a, f, z) = if D == 2 {
                    let (p1, p2) = (&prow[..i], &prow[i..]);
                    let (a1, f1, z1) = super::simd::cauchy_row_2d([yi[0], yi[1]], &cols[0][..i], &cols[1][..i], p1, avx);
                    let (a2, f2, z2) = super::simd::cauchy_row_2d([yi[0], yi[1]], &cols[0][i + 1..], &cols[1][i + 1..], p2, avx);
                    (std::array::from_fn(|d| a1[d] + a2[d]), std::array::from_fn(|d| f1[d] + f2[d]), z1 + z2)
                } else {
                    row_generic::<D>(avx, yi, &cols, prow, i, n)
                };
                for d in 0..D {
                    grow[d] = exag * a[d];
                    frow[d] = f[d];
                }
                ztile += z;
            }
            ztile
        })
        .collect();
    let inv = 1.0 / zs.iter().sum::<f64>();
    grad.par_chunks_mut(4096).zip(frep.par_chunks(4096)).for_each(|(g, f)| {
        for (gv, fv) in g.iter_mut().zip(f) {
            *gv -= fv * inv;
        }
    });
}

#[inline]
fn row_generic<const D: usize>(avx: bool, yi: [f64; D], cols: &[Vec<f64>], prow: &[f64], i: usize, n: usize) -> ([f64; D], [f64; D], f64) {
                #[cfg(target_arch = "x86_64")]
                let (a, f, z) = if avx {
                    // SAFETY: the CPU supports AVX2 and FMA (checked above).
                    unsafe { exact_row_avx2::<D>(yi, cols, prow, i, n) }
                } else {
                    exact_row_base::<D>(yi, cols, prow, i, n)
                };
                #[cfg(not(target_arch = "x86_64"))]
                let (a, f, z) = { let _ = avx; exact_row_base::<D>(yi, cols, prow, i, n) };
                (a, f, z)
}
