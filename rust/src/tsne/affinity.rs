//! Input affinities: per-row perplexity calibration on kNN distances, then
//! P = (P_cond + P_condᵀ) / Σ, a symmetric sparse matrix summing to 1.
//!
//! Row i of P_cond is p_{j|i} = exp(−β_i d_ij) / Σ_k exp(−β_i d_ik) over the
//! row's neighbours, with β_i found by binary search so that the entropy
//! H_i = −Σ_j p_{j|i} ln p_{j|i} equals ln(perplexity). `d_ij` is whatever the
//! caller passes (squared Euclidean distances for t-SNE on Euclidean data).

use crate::error::{Error, Result};
use rayon::prelude::*;

pub use crate::sparse::Csr;

/// Rows per parallel task.
const ROWS_TILE: usize = 256;

/// Calibrates one row in place: `d` holds the row's distances on entry and
/// p_{j|i} on exit. Returns the reached perplexity.
pub fn calibrate_row(d: &mut [f64], perplexity: f64, tol: f64, max_steps: usize) -> f64 {
    let k = d.len();
    if k == 0 {
        return 0.0;
    }
    // Shift by the smallest distance: p is unchanged and exp never underflows to all-zero.
    let dmin = d.iter().cloned().fold(f64::INFINITY, f64::min);
    for v in d.iter_mut() {
        *v -= dmin;
    }
    let target = perplexity.ln();
    let mean = d.iter().sum::<f64>() / k as f64;
    let mut beta = if mean > 0.0 { 1.0 / mean } else { 1.0 };
    let (mut lo, mut hi) = (0.0f64, f64::INFINITY);
    let mut p = vec![0.0; k];
    let mut h = 0.0;
    for _ in 0..max_steps {
        let mut sum = 0.0;
        let mut sdp = 0.0;
        for (pj, &dj) in p.iter_mut().zip(d.iter()) {
            let e = (-beta * dj).exp();
            *pj = e;
            sum += e;
            sdp += dj * e;
        }
        // H = ln Σ + β Σ d p (sum ≥ 1 because the nearest neighbour has shifted distance 0).
        h = sum.ln() + beta * sdp / sum;
        let diff = h - target;
        if diff.abs() < tol {
            break;
        }
        if diff > 0.0 {
            lo = beta;
            beta = if hi.is_finite() { 0.5 * (beta + hi) } else { beta * 2.0 };
        } else {
            hi = beta;
            beta = 0.5 * (beta + lo);
        }
    }
    let mut sum = 0.0;
    for (pj, &dj) in p.iter_mut().zip(d.iter()) {
        *pj = (-beta * dj).exp();
        sum += *pj;
    }
    for (dj, pj) in d.iter_mut().zip(p.iter()) {
        *dj = pj / sum;
    }
    h.exp()
}

/// Conditional affinities of an `n × k` neighbour list (row-major distances),
/// calibrated per row in parallel. Returns p_{j|i} in the same layout.
pub fn conditional(dist: &[f64], n: usize, k: usize, perplexity: f64) -> Result<Vec<f64>> {
    if dist.len() != n * k {
        return Err(Error::Shape(format!("neighbour distances: expected {n} x {k} values, got {}", dist.len())));
    }
    if !(perplexity > 0.0) || !perplexity.is_finite() {
        return Err(Error::InvalidParameter(format!("perplexity must be positive, got {perplexity}")));
    }
    if dist.iter().any(|v| !v.is_finite() || *v < 0.0) {
        return Err(Error::InvalidInput("neighbour distances must be finite and non-negative".into()));
    }
    let mut p = dist.to_vec();
    if k == 0 {
        return Ok(p);
    }
    p.par_chunks_mut(ROWS_TILE * k).for_each(|tile| {
        for row in tile.chunks_mut(k) {
            calibrate_row(row, perplexity, 1e-5, 200);
        }
    });
    Ok(p)
}

/// Turns `n × k` neighbour lists with weights into a CSR matrix (columns sorted).
pub fn knn_to_csr(indices: &[u32], weights: &[f64], n: usize, k: usize) -> Csr {
    let mut idx = indices.to_vec();
    let mut data = weights.to_vec();
    idx.par_chunks_mut(ROWS_TILE * k.max(1)).zip(data.par_chunks_mut(ROWS_TILE * k.max(1))).for_each(|(it, dt)| {
        let mut buf: Vec<(u32, f64)> = Vec::with_capacity(k);
        for (ir, dr) in it.chunks_mut(k.max(1)).zip(dt.chunks_mut(k.max(1))) {
            buf.clear();
            buf.extend(ir.iter().cloned().zip(dr.iter().cloned()));
            buf.sort_unstable_by_key(|e| e.0);
            for (t, &(j, v)) in buf.iter().enumerate() {
                ir[t] = j;
                dr[t] = v;
            }
        }
    });
    Csr { n, indptr: (0..=n).map(|i| i * k).collect(), indices: idx, data }
}


/// P = (A + Aᵀ) / sum(A + Aᵀ): the symmetric joint affinities of t-SNE.
pub fn symmetrize(a: &Csr) -> Csr {
    let n = a.n;
    let t = a.transpose();
    let merged_len = |i: usize| {
        let ((ca, _), (cb, _)) = (a.row(i), t.row(i));
        let (mut x, mut y, mut c) = (0, 0, 0);
        while x < ca.len() || y < cb.len() {
            if y == cb.len() || (x < ca.len() && ca[x] < cb[y]) {
                x += 1;
            } else if x == ca.len() || cb[y] < ca[x] {
                y += 1;
            } else {
                x += 1;
                y += 1;
            }
            c += 1;
        }
        c
    };
    let lens: Vec<usize> = (0..n).into_par_iter().with_min_len(ROWS_TILE).map(merged_len).collect();
    let mut indptr = vec![0usize; n + 1];
    for i in 0..n {
        indptr[i + 1] = indptr[i] + lens[i];
    }
    let nnz = indptr[n];
    let mut indices = vec![0u32; nnz];
    let mut data = vec![0.0f64; nnz];
    // Split the output into per-row slices, then fill rows in parallel.
    let mut rows: Vec<(&mut [u32], &mut [f64])> = Vec::with_capacity(n);
    {
        let (mut ri, mut rd) = (&mut indices[..], &mut data[..]);
        for i in 0..n {
            let (a1, b1) = ri.split_at_mut(lens[i]);
            let (a2, b2) = rd.split_at_mut(lens[i]);
            rows.push((a1, a2));
            ri = b1;
            rd = b2;
        }
    }
    rows.par_iter_mut().with_min_len(ROWS_TILE).enumerate().for_each(|(i, (oi, od))| {
        let ((ca, va), (cb, vb)) = (a.row(i), t.row(i));
        let (mut x, mut y, mut c) = (0, 0, 0);
        while x < ca.len() || y < cb.len() {
            if y == cb.len() || (x < ca.len() && ca[x] < cb[y]) {
                oi[c] = ca[x];
                od[c] = va[x];
                x += 1;
            } else if x == ca.len() || cb[y] < ca[x] {
                oi[c] = cb[y];
                od[c] = vb[y];
                y += 1;
            } else {
                oi[c] = ca[x];
                od[c] = va[x] + vb[y];
                x += 1;
                y += 1;
            }
            c += 1;
        }
    });
    drop(rows);
    // Fixed-order total (tile partial sums, then a sequential sum over tiles).
    let partial: Vec<f64> = data.par_chunks(4096).map(|c| c.iter().sum::<f64>()).collect();
    let total: f64 = partial.iter().sum();
    if total > 0.0 {
        let inv = 1.0 / total;
        data.par_chunks_mut(4096).for_each(|c| c.iter_mut().for_each(|v| *v *= inv));
    }
    Csr { n, indptr, indices, data }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calibration_reaches_perplexity() {
        let mut d: Vec<f64> = (1..=90).map(|j| (j as f64).powf(1.3) * 0.37 + 100.0).collect();
        let perp = calibrate_row(&mut d, 30.0, 1e-5, 200);
        assert!((perp - 30.0).abs() < 1e-3, "{perp}");
        let h: f64 = -d.iter().filter(|&&p| p > 0.0).map(|p| p * p.ln()).sum::<f64>();
        assert!((h.exp() - 30.0).abs() < 1e-3);
        assert!((d.iter().sum::<f64>() - 1.0).abs() < 1e-12);
    }

    #[test]
    fn symmetrize_is_symmetric_and_normalised() {
        let idx = vec![1u32, 2, 0, 2, 1, 3, 2, 0];
        let w = vec![0.6, 0.4, 0.5, 0.5, 0.9, 0.1, 0.7, 0.3];
        let a = knn_to_csr(&idx, &w, 4, 2);
        let p = symmetrize(&a);
        let dense = |m: &Csr| {
            let mut out = vec![0.0; 16];
            for i in 0..4 {
                let (c, v) = m.row(i);
                for (&j, &x) in c.iter().zip(v) {
                    out[i * 4 + j as usize] += x;
                }
            }
            out
        };
        let dp = dense(&p);
        let da = dense(&a);
        for i in 0..4 {
            for j in 0..4 {
                assert!((dp[i * 4 + j] - (da[i * 4 + j] + da[j * 4 + i]) / 8.0).abs() < 1e-15);
            }
        }
    }
}
