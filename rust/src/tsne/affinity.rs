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
///
/// Memory: the transpose is kept as (row, position in `a`) pairs, 8 bytes per
/// entry instead of a second copy of the values (12 bytes), so the peak is
/// `a` + 8·nnz + the output (≈ 3.4 GB for 1M points × 90 neighbours).
pub fn symmetrize(a: &Csr) -> Csr {
    if a.indices.len() <= u32::MAX as usize {
        symmetrize_with::<u32>(a)
    } else {
        symmetrize_with::<usize>(a)
    }
}

/// Position of an entry of `a` (u32 while nnz < 2^32: half the memory).
trait Pos: Copy + Send + Sync + Default {
    fn from_usize(v: usize) -> Self;
    fn get(self) -> usize;
}
impl Pos for u32 {
    fn from_usize(v: usize) -> Self { v as u32 }
    fn get(self) -> usize { self as usize }
}
impl Pos for usize {
    fn from_usize(v: usize) -> Self { v }
    fn get(self) -> usize { self }
}

fn symmetrize_with<P: Pos>(a: &Csr) -> Csr {
    let n = a.n;
    let nnz_a = a.indices.len();
    // Transposed structure: for column j, where each entry (i, j) sits in `a`, in
    // ascending i. Built sequentially in row order: deterministic.
    let mut tptr = vec![0usize; n + 1];
    for &j in &a.indices {
        tptr[j as usize + 1] += 1;
    }
    for i in 0..n {
        tptr[i + 1] += tptr[i];
    }
    let mut fill = tptr.clone();
    let mut tpos = vec![P::default(); nnz_a];
    for i in 0..n {
        for p in a.indptr[i]..a.indptr[i + 1] {
            let f = &mut fill[a.indices[p] as usize];
            tpos[*f] = P::from_usize(p);
            *f += 1;
        }
    }
    drop(fill);
    // The row holding entry p of `a`: a division when every row has k entries (the kNN path),
    // else a search of indptr. Derived, not stored: an nnz-long row array (360 MB at 1M points,
    // k = 90) would sit at the fit's peak, next to `a` and the output.
    let k_rows = if n > 0 && a.indptr.iter().enumerate().all(|(i, &v)| v == i * (nnz_a / n)) { nnz_a / n } else { 0 };
    let row_of = |p: usize| -> u32 {
        if k_rows > 0 {
            (p / k_rows) as u32
        } else {
            (a.indptr.partition_point(|&v| v <= p) - 1) as u32
        }
    };
    let tpos_of = |i: usize| &tpos[tptr[i]..tptr[i + 1]];
    // Row i of a + aᵀ in column order: `a`'s own row merged with the transposed entries
    // (positions in `a`, their rows ascending). `emit(col, x, p)` gets the index x in
    // `a`'s row and the position p of the transposed entry, `NONE` where one side is absent.
    // Each transposed entry's row is derived once per step, not once per comparison.
    const NONE: usize = usize::MAX;
    let merge_row = |i: usize, emit: &mut dyn FnMut(u32, usize, usize)| {
        let (ca, pb) = (a.row(i).0, tpos_of(i));
        let row_at = |y: usize| if y < pb.len() { row_of(pb[y].get()) } else { u32::MAX };
        let (mut x, mut y, mut by) = (0, 0, row_at(0));
        while x < ca.len() || y < pb.len() {
            let ax = if x < ca.len() { ca[x] } else { u32::MAX };
            if ax < by {
                emit(ax, x, NONE);
                x += 1;
            } else {
                emit(by, if ax == by { x } else { NONE }, pb[y].get());
                x += (ax == by) as usize;
                y += 1;
                by = row_at(y);
            }
        }
    };
    let lens: Vec<usize> = (0..n)
        .into_par_iter()
        .with_min_len(ROWS_TILE)
        .map(|i| {
            let mut c = 0;
            merge_row(i, &mut |_, _, _| c += 1);
            c
        })
        .collect();
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
        let va = a.row(i).1;
        let mut c = 0;
        merge_row(i, &mut |col, x, p| {
            oi[c] = col;
            od[c] = match (x, p) {
                (x, NONE) => va[x],
                (NONE, p) => a.data[p],
                (x, p) => va[x] + a.data[p],
            };
            c += 1;
        });
    });
    drop(rows);
    drop(tpos);
    // Fixed-order total (tile partial sums, then a sequential sum over tiles).
    let partial: Vec<f64> = data.par_chunks(4096).map(|c| c.iter().sum::<f64>()).collect();
    let total: f64 = partial.iter().sum();
    if total > 0.0 {
        let inv = 1.0 / total;
        data.par_chunks_mut(4096).for_each(|c| c.iter_mut().for_each(|v| *v *= inv));
    }
    Csr { n, indptr, indices, data }
}


/// Calibrates neighbour rows in place. Row i is `cols[indptr[i]..indptr[i+1]]`
/// with its distances in `dist` (already in the Gaussian's argument: squared
/// Euclidean, or cosine), sorted by (distance, column). On exit `dist` holds
/// p_{j|i} and each row is sorted by column, ready for [`symmetrize`].
/// A row of length k_i is calibrated exactly as [`conditional`] calibrates a
/// fixed-k row, so the fixed-k and the sparse paths give identical P.
pub fn calibrate_rows_in_place(indptr: &[usize], cols: &mut [u32], dist: &mut [f64], perplexity: f64) -> Result<()> {
    if !(perplexity > 0.0) || !perplexity.is_finite() {
        return Err(Error::InvalidParameter(format!("perplexity must be positive, got {perplexity}")));
    }
    if indptr.is_empty() || indptr[indptr.len() - 1] != cols.len() || cols.len() != dist.len() {
        return Err(Error::Shape("neighbour rows: inconsistent CSR structure".into()));
    }
    let n = indptr.len() - 1;
    // Split into per-row slices (rows vary in length), then work on tiles of rows.
    let mut rows: Vec<(&mut [u32], &mut [f64])> = Vec::with_capacity(n);
    {
        let (mut rc, mut rd) = (cols, dist);
        for i in 0..n {
            let len = indptr[i + 1] - indptr[i];
            let (a1, b1) = rc.split_at_mut(len);
            let (a2, b2) = rd.split_at_mut(len);
            rows.push((a1, a2));
            rc = b1;
            rd = b2;
        }
    }
    rows.par_iter_mut().with_min_len(ROWS_TILE).for_each(|(c, d)| {
        calibrate_row(d, perplexity, 1e-5, 200);
        let mut buf: Vec<(u32, f64)> = c.iter().cloned().zip(d.iter().cloned()).collect();
        buf.sort_unstable_by_key(|e| e.0);
        for (t, &(j, v)) in buf.iter().enumerate() {
            c[t] = j;
            d[t] = v;
        }
    });
    Ok(())
}

/// Neighbour rows chosen from a sparse distance matrix (CSR, any column order,
/// no duplicate columns): each row keeps its `k_max` smallest off-diagonal
/// entries (ties to the lower column, as the exact kNN does), sorted by
/// (distance, column). Errors name the first offending row: negative or
/// non-finite distances, column out of range, fewer than `min_neighbors`.
pub fn select_sparse_neighbours(
    n: usize, indptr: &[usize], cols: &[u32], dist: &[f64], k_max: usize, min_neighbors: usize,
) -> Result<(Vec<usize>, Vec<u32>, Vec<f64>)> {
    if indptr.len() != n + 1 || indptr[0] != 0 || indptr[n] != cols.len() || cols.len() != dist.len() {
        return Err(Error::Shape(format!("distance matrix: inconsistent CSR structure for {n} rows")));
    }
    if indptr.windows(2).any(|w| w[0] > w[1]) {
        return Err(Error::InvalidInput("distance matrix: indptr must be non-decreasing".into()));
    }
    if let Some(p) = dist.iter().position(|v| !v.is_finite()) {
        let i = indptr.partition_point(|&q| q <= p) - 1;
        return Err(Error::NonFinite(format!("the precomputed distance matrix has a non-finite entry in row {i}")));
    }
    if let Some(p) = dist.iter().position(|&v| v < 0.0) {
        let i = indptr.partition_point(|&q| q <= p) - 1;
        return Err(Error::InvalidInput(format!("the precomputed distance matrix has a negative distance in row {i}")));
    }
    if cols.iter().any(|&j| j as usize >= n) {
        return Err(Error::InvalidInput(format!("distance matrix: column index out of range for {n} columns")));
    }
    let cmp = |a: &(f64, u32), b: &(f64, u32)| a.0.partial_cmp(&b.0).unwrap_or(std::cmp::Ordering::Equal).then(a.1.cmp(&b.1));
    let counts: Vec<usize> = (0..n)
        .into_par_iter()
        .with_min_len(ROWS_TILE)
        .map(|i| cols[indptr[i]..indptr[i + 1]].iter().filter(|&&j| j as usize != i).count())
        .collect();
    if let Some(i) = counts.iter().position(|&c| c < min_neighbors) {
        return Err(Error::InvalidParameter(format!(
            "row {i} of the precomputed distance matrix has {} neighbours (besides itself); the perplexity needs at least \
             {min_neighbors} per row: lower the perplexity or store more neighbours",
            counts[i]
        )));
    }
    let mut out_ptr = vec![0usize; n + 1];
    for i in 0..n {
        out_ptr[i + 1] = out_ptr[i] + counts[i].min(k_max);
    }
    let nnz = out_ptr[n];
    let mut oc = vec![0u32; nnz];
    let mut od = vec![0.0f64; nnz];
    let mut rows: Vec<(usize, &mut [u32], &mut [f64])> = Vec::with_capacity(n);
    {
        let (mut rc, mut rd) = (&mut oc[..], &mut od[..]);
        for i in 0..n {
            let len = out_ptr[i + 1] - out_ptr[i];
            let (a1, b1) = rc.split_at_mut(len);
            let (a2, b2) = rd.split_at_mut(len);
            rows.push((i, a1, a2));
            rc = b1;
            rd = b2;
        }
    }
    let dup = std::sync::atomic::AtomicUsize::new(usize::MAX);
    rows.par_iter_mut().with_min_len(ROWS_TILE).for_each(|(i, c, d)| {
        let i = *i;
        let mut buf: Vec<(f64, u32)> = (indptr[i]..indptr[i + 1]).filter(|&p| cols[p] as usize != i).map(|p| (dist[p], cols[p])).collect();
        let mut by_col: Vec<u32> = buf.iter().map(|e| e.1).collect();
        by_col.sort_unstable();
        if by_col.windows(2).any(|w| w[0] == w[1]) {
            dup.fetch_min(i, std::sync::atomic::Ordering::Relaxed);
        }
        let m = c.len();
        if m < buf.len() {
            buf.select_nth_unstable_by(m, cmp);
            buf.truncate(m);
        }
        buf.sort_unstable_by(cmp);
        for (t, &(v, j)) in buf.iter().enumerate() {
            c[t] = j;
            d[t] = v;
        }
    });
    drop(rows);
    let dup = dup.into_inner();
    if dup != usize::MAX {
        return Err(Error::InvalidInput(format!("row {dup} of the distance matrix lists a column twice")));
    }
    Ok((out_ptr, oc, od))
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
    /// Rows of unequal length, one empty (the sparse `precomputed` path): each transposed
    /// entry's row is then found by a search of indptr, not by a division.
    #[test]
    fn symmetrize_uneven_rows_equals_dense_sum() {
        let n = 5;
        let indptr = vec![0usize, 3, 3, 4, 6, 7];
        let indices = vec![1u32, 2, 4, 0, 1, 4, 3];
        let data = vec![0.2, 0.3, 0.5, 1.0, 0.4, 0.6, 1.0];
        let a = Csr { n, indptr, indices, data };
        let p = symmetrize(&a);
        let dense = |m: &Csr| {
            let mut out = vec![0.0; n * n];
            for i in 0..n {
                let (c, v) = m.row(i);
                assert!(c.windows(2).all(|w| w[0] < w[1]), "row {i} sorted, no repeats");
                for (&j, &x) in c.iter().zip(v) {
                    out[i * n + j as usize] += x;
                }
            }
            out
        };
        let (dp, da) = (dense(&p), dense(&a));
        let total: f64 = a.data.iter().sum::<f64>() * 2.0;
        for i in 0..n {
            for j in 0..n {
                assert!((dp[i * n + j] - (da[i * n + j] + da[j * n + i]) / total).abs() < 1e-15, "({i}, {j})");
            }
        }
    }
    #[test]
    fn sparse_selection_keeps_nearest_and_rejects_bad_rows() {
        // Row 0 lists itself, 2 (0.5), 1 (0.25), 3 (0.5); keep 2 → [1, 2] (tie 2 vs 3 to the lower column).
        let (ip, c, d) = (vec![0usize, 4, 5, 6, 7], vec![0u32, 2, 1, 3, 0, 0, 0], vec![0.0, 0.5, 0.25, 0.5, 1.0, 1.0, 1.0]);
        let (op, oc, od) = select_sparse_neighbours(4, &ip, &c, &d, 2, 1).unwrap();
        assert_eq!(op, vec![0, 2, 3, 4, 5]);
        assert_eq!(&oc[..2], &[1, 2]);
        assert_eq!(&od[..2], &[0.25, 0.5]);
        assert!(matches!(select_sparse_neighbours(4, &ip, &c, &d, 2, 2), Err(Error::InvalidParameter(_))));
        let mut neg = d.clone();
        neg[5] = -1.0;
        assert!(matches!(select_sparse_neighbours(4, &ip, &c, &neg, 2, 1), Err(Error::InvalidInput(_))));
        let mut nan = d.clone();
        nan[1] = f64::NAN;
        assert!(matches!(select_sparse_neighbours(4, &ip, &c, &nan, 2, 1), Err(Error::NonFinite(_))));
        assert!(select_sparse_neighbours(4, &ip[..3], &c, &d, 2, 1).is_err());
    }
}
