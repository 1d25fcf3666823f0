//! Exact k-nearest neighbours, shared by t-SNE and Laplacian eigenmaps.
//!
//! Queries are processed in fixed tiles of rows: each tile computes its block
//! of squared distances with the guarded GEMM of [`crate::distances::SqEuclid`]
//! and keeps the k smallest per row. Ties are broken towards the lower index,
//! so the result is deterministic and independent of the thread count.

use crate::distances::{unit_rows, Metric, SqEuclid};
use crate::error::{check_finite, check_len, Error, Result};
use crate::linalg::sq_dist;
use crate::Real;
use rayon::prelude::*;

/// Neighbour lists, row-major `n × k`, each row sorted by ascending distance
/// (then index). A point is never its own neighbour (duplicates are).
#[derive(Clone, Debug)]
pub struct Knn<T> {
    pub n: usize,
    pub k: usize,
    pub indices: Vec<u32>,
    /// Distances in the requested metric (Euclidean, squared Euclidean or cosine).
    pub distances: Vec<T>,
}

/// Queries per task, and candidate columns per block: a 256 × 2048 f32 block
/// is 2 MiB, and each packed block of candidates serves 256 queries.
const QUERY_TILE: usize = 256;
const CAND_BLOCK: usize = 2048;

/// The k best (distance, index) pairs seen so far for one query, sorted
/// ascending; ties go to the lower index because candidates arrive in index
/// order and only a strictly better pair displaces the current worst.
struct TopK<T> {
    d: Vec<T>,
    i: Vec<u32>,
    k: usize,
}

impl<T: Real> TopK<T> {
    fn new(k: usize) -> Self {
        TopK { d: Vec::with_capacity(k), i: Vec::with_capacity(k), k }
    }
    #[inline]
    fn worst(&self) -> T {
        if self.d.len() < self.k { T::infinity() } else { self.d[self.k - 1] }
    }
    #[inline]
    fn push(&mut self, dist: T, idx: u32) {
        if self.d.len() == self.k {
            if !(dist < self.d[self.k - 1]) {
                return;
            }
            self.d.pop();
            self.i.pop();
        }
        // Insert after every entry with distance <= dist (earlier indices win ties).
        let pos = self.d.partition_point(|&v| v <= dist);
        self.d.insert(pos, dist);
        self.i.insert(pos, idx);
    }
}

fn keep_k_smallest<T: Real>(row: &[T], skip: usize, k: usize, idx: &mut [u32], dist: &mut [T], buf: &mut Vec<(T, u32)>) {
    buf.clear();
    buf.extend(row.iter().enumerate().filter(|&(j, _)| j != skip).map(|(j, &v)| (v, j as u32)));
    let cmp = |a: &(T, u32), b: &(T, u32)| a.0.partial_cmp(&b.0).unwrap_or(std::cmp::Ordering::Equal).then(a.1.cmp(&b.1));
    if k < buf.len() {
        buf.select_nth_unstable_by(k, cmp);
        buf.truncate(k);
    }
    buf.sort_unstable_by(cmp);
    for (t, &(v, j)) in buf.iter().enumerate() {
        idx[t] = j;
        dist[t] = v;
    }
}

/// Exact kNN of each row of `x` (`n × d`) among the other rows.
///
/// Each task takes QUERY_TILE queries and streams the candidates in blocks of
/// CAND_BLOCK: one guarded GEMM per block, then a filter against each query's
/// current k-th distance (after the first blocks almost nothing passes).
pub fn knn_exact<T: Real>(x: &[T], n: usize, d: usize, k: usize, metric: Metric) -> Result<Knn<T>> {
    check_len("x", x.len(), n, d)?;
    check_finite("x", x)?;
    if n < 2 || d == 0 {
        return Err(Error::Shape(format!("kNN needs at least 2 points with 1 feature, got ({n}, {d})")));
    }
    if k == 0 || k >= n {
        return Err(Error::InvalidParameter(format!("k must be in 1..={} for {n} points, got {k}", n - 1)));
    }
    let unit;
    let data: &[T] = if metric == Metric::Cosine {
        unit = unit_rows(x, n, d).0;
        &unit
    } else {
        x
    };
    let prep = SqEuclid::new(data, n, None, d);
    let mut indices = vec![0u32; n * k];
    let mut distances = vec![T::zero(); n * k];
    indices
        .par_chunks_mut(QUERY_TILE * k)
        .zip(distances.par_chunks_mut(QUERY_TILE * k))
        .enumerate()
        .for_each(|(t, (it, dt))| {
            let r0 = t * QUERY_TILE;
            let r1 = (r0 + QUERY_TILE).min(n);
            let mut tops: Vec<TopK<T>> = (r0..r1).map(|_| TopK::new(k)).collect();
            let mut block = vec![T::zero(); (r1 - r0) * CAND_BLOCK.min(n)];
            let mut c0 = 0;
            while c0 < n {
                let c1 = (c0 + CAND_BLOCK).min(n);
                let w = c1 - c0;
                prep.fill_block_sq(r0, r1, c0, c1, &mut block);
                for (q, top) in tops.iter_mut().enumerate() {
                    let i = r0 + q;
                    let row = &block[q * w..(q + 1) * w];
                    let mut worst = top.worst();
                    for (jj, &v) in row.iter().enumerate() {
                        if v < worst && c0 + jj != i {
                            top.push(v, (c0 + jj) as u32);
                            worst = top.worst();
                        }
                    }
                }
                c0 = c1;
            }
            // Exact distances of the chosen neighbours (the GEMM form carries rounding
            // of order eps·‖x‖²), re-sorted by (distance, index).
            let mut pairs: Vec<(T, u32)> = Vec::with_capacity(k);
            for (q, top) in tops.iter().enumerate() {
                let i = r0 + q;
                let xi = &data[i * d..(i + 1) * d];
                pairs.clear();
                pairs.extend(top.i.iter().map(|&j| (sq_dist(xi, &data[j as usize * d..(j as usize + 1) * d]), j)));
                pairs.sort_unstable_by(|a, b| a.0.partial_cmp(&b.0).unwrap_or(std::cmp::Ordering::Equal).then(a.1.cmp(&b.1)));
                for (t, &(v, j)) in pairs.iter().enumerate() {
                    it[q * k + t] = j;
                    dt[q * k + t] = v;
                }
            }
        });
    finish_metric(&mut distances, metric);
    Ok(Knn { n, k, indices, distances })
}

/// Converts squared Euclidean neighbour distances to the requested metric.
fn finish_metric<T: Real>(dist: &mut [T], metric: Metric) {
    match metric {
        Metric::SqEuclidean => {}
        Metric::Euclidean => dist.par_iter_mut().for_each(|v| *v = v.sqrt()),
        // ‖x̂ − ŷ‖² = 2 − 2cos, so cosine distance = ‖x̂ − ŷ‖² / 2.
        Metric::Cosine => dist.par_iter_mut().for_each(|v| *v = *v * T::c(0.5)),
    }
}

/// kNN from a dense `n × n` distance matrix (metric = "precomputed").
pub fn knn_from_dense<T: Real>(dist: &[T], n: usize, k: usize) -> Result<Knn<T>> {
    check_len("distance matrix", dist.len(), n, n)?;
    check_finite("distance matrix", dist)?;
    if n < 2 {
        return Err(Error::Shape(format!("kNN needs at least 2 points, got {n}")));
    }
    if k == 0 || k >= n {
        return Err(Error::InvalidParameter(format!("k must be in 1..={} for {n} points, got {k}", n - 1)));
    }
    if dist.iter().any(|&v| v < T::zero()) {
        return Err(Error::InvalidInput("a precomputed distance matrix must not contain negative values".into()));
    }
    let mut indices = vec![0u32; n * k];
    let mut distances = vec![T::zero(); n * k];
    indices.par_chunks_mut(k).zip(distances.par_chunks_mut(k)).enumerate().for_each(|(i, (it, dt))| {
        let mut buf = Vec::with_capacity(n);
        keep_k_smallest(&dist[i * n..(i + 1) * n], i, k, it, dt, &mut buf);
    });
    Ok(Knn { n, k, indices, distances })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_brute_force_with_ties_to_lower_index() {
        // Points on a line with one duplicate pair and no other equidistant pairs.
        let vals = [0.0f64, 1.0, 1.0, 2.5, 4.25, 7.7, 11.0, 16.5, 23.0, 31.5];
        let n = vals.len();
        let knn = knn_exact(&vals, n, 1, 3, Metric::Euclidean).unwrap();
        for i in 0..n {
            let mut all: Vec<(f64, u32)> = (0..n).filter(|&j| j != i).map(|j| ((vals[i] - vals[j]).abs(), j as u32)).collect();
            all.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap().then(a.1.cmp(&b.1)));
            let want: Vec<u32> = all[..3].iter().map(|p| p.1).collect();
            assert_eq!(&knn.indices[i * 3..i * 3 + 3], &want[..], "row {i}");
            for t in 0..3 {
                assert!((knn.distances[i * 3 + t] - all[t].0).abs() < 1e-12);
            }
        }
        // The duplicate pair (1, 2) are each other's first neighbour at distance 0.
        assert_eq!(knn.indices[3], 2);
        assert_eq!(knn.distances[3], 0.0);
        let dense: Vec<f64> = (0..n * n).map(|t| (vals[t / n] - vals[t % n]).abs()).collect();
        let k2 = knn_from_dense(&dense, n, 3).unwrap();
        assert_eq!(k2.indices, knn.indices);
    }

    #[test]
    fn streaming_blocks_match_full_rows() {
        // More candidates than one block and more queries than one tile, with a duplicate pair.
        let (n, d, k) = (2600, 3, 7);
        let mut s = 7u64;
        let mut x: Vec<f64> = (0..n * d)
            .map(|_| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((s >> 11) as f64) / (1u64 << 53) as f64
            })
            .collect();
        x[2500 * d..2501 * d].copy_from_slice(&[1.0, 2.0, 3.0]);
        x[3 * d..4 * d].copy_from_slice(&[1.0, 2.0, 3.0]);
        let knn = knn_exact(&x, n, d, k, Metric::SqEuclidean).unwrap();
        let mut buf = Vec::new();
        let (mut idx, mut dist) = (vec![0u32; k], vec![0.0; k]);
        for i in 0..n {
            let row: Vec<f64> = (0..n)
                .map(|j| (0..d).map(|c| (x[i * d + c] - x[j * d + c]).powi(2)).sum())
                .collect();
            keep_k_smallest(&row, i, k, &mut idx, &mut dist, &mut buf);
            assert_eq!(&knn.indices[i * k..(i + 1) * k], &idx[..], "row {i}");
            for (a, b) in knn.distances[i * k..(i + 1) * k].iter().zip(&dist) {
                assert!((a - b).abs() <= 1e-15, "row {i}: {a} {b}");
            }
        }
    }

    #[test]
    fn rejects_bad_k() {
        let x = [0.0f32, 1.0, 2.0];
        assert!(knn_exact(&x, 3, 1, 3, Metric::Euclidean).is_err());
        assert!(knn_exact(&x, 3, 1, 0, Metric::Euclidean).is_err());
    }
}
