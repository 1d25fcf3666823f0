//! Compressed sparse row matrices and their parallel mat-vec.

use crate::error::{Error, Result};
use rayon::prelude::*;

/// Rows per parallel task of the mat-vec (fixed: results do not depend on the thread count).
pub const SPMV_TILE: usize = 1024;

/// A square CSR matrix with f64 values (`indptr.len() == n + 1`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Csr {
    pub n: usize,
    pub indptr: Vec<usize>,
    pub indices: Vec<u32>,
    pub data: Vec<f64>,
}

impl Csr {
    /// Validates the structure (sorted-ness is not required).
    pub fn new(n: usize, indptr: Vec<usize>, indices: Vec<u32>, data: Vec<f64>) -> Result<Self> {
        if indptr.len() != n + 1 || indptr[0] != 0 || indptr[n] != indices.len() || indices.len() != data.len() {
            return Err(Error::Shape(format!(
                "CSR: inconsistent structure (n={n}, indptr={}, indices={}, data={})",
                indptr.len(), indices.len(), data.len()
            )));
        }
        if indptr.windows(2).any(|w| w[0] > w[1]) {
            return Err(Error::InvalidInput("CSR: indptr must be non-decreasing".into()));
        }
        if indices.iter().any(|&j| j as usize >= n) {
            return Err(Error::InvalidInput(format!("CSR: column index out of range for {n} columns")));
        }
        if data.iter().any(|v| !v.is_finite()) {
            return Err(Error::NonFinite("affinity matrix contains NaN or infinity".into()));
        }
        Ok(Csr { n, indptr, indices, data })
    }

    /// Checks structure and values against `n_cols` columns (affinities coming
    /// from Python: finite and non-negative; rectangular for `transform`).
    pub fn validate(&self, n_cols: usize) -> Result<()> {
        let bad = |m: &str| Err(Error::InvalidInput(format!("affinity matrix: {m}")));
        if self.indptr.len() != self.n + 1 || self.indptr[0] != 0 || self.indptr[self.n] != self.indices.len() {
            return bad("indptr does not match the number of rows / entries");
        }
        if self.indices.len() != self.data.len() {
            return bad("indices and data differ in length");
        }
        if self.indptr.windows(2).any(|w| w[0] > w[1]) {
            return bad("indptr must be non-decreasing");
        }
        if self.indices.iter().any(|&j| j as usize >= n_cols) {
            return bad("column index out of range");
        }
        if self.data.iter().any(|v| !v.is_finite() || *v < 0.0) {
            return bad("values must be finite and non-negative");
        }
        Ok(())
    }

    pub fn nnz(&self) -> usize {
        self.indices.len()
    }

    #[inline]
    pub fn row(&self, i: usize) -> (&[u32], &[f64]) {
        let (a, b) = (self.indptr[i], self.indptr[i + 1]);
        (&self.indices[a..b], &self.data[a..b])
    }

    /// `y = A x`, parallel over fixed row tiles; each row is summed in stored order.
    pub fn matvec(&self, x: &[f64], y: &mut [f64]) {
        y.par_chunks_mut(SPMV_TILE).enumerate().for_each(|(t, yt)| {
            let r0 = t * SPMV_TILE;
            for (o, yi) in yt.iter_mut().enumerate() {
                let (idx, val) = self.row(r0 + o);
                let mut s = 0.0;
                for (&j, &v) in idx.iter().zip(val) {
                    s += v * x[j as usize];
                }
                *yi = s;
            }
        });
    }

    /// Row sums (degrees of an affinity matrix).
    pub fn row_sums(&self) -> Vec<f64> {
        (0..self.n).map(|i| self.row(i).1.iter().sum()).collect()
    }

    /// Whether the matrix equals its transpose up to `tol` (relative to the largest |value|).
    pub fn is_symmetric(&self, tol: f64) -> bool {
        let scale = self.data.iter().fold(0.0f64, |m, v| m.max(v.abs())).max(f64::MIN_POSITIVE);
        let t = self.transpose();
        let norm = |c: &Csr, i: usize| {
            let (idx, val) = c.row(i);
            let mut p: Vec<(u32, f64)> = idx.iter().copied().zip(val.iter().copied()).filter(|e| e.1 != 0.0).collect();
            p.sort_by_key(|e| e.0);
            // merge duplicate entries (scipy allows them; they add up)
            let mut out: Vec<(u32, f64)> = Vec::with_capacity(p.len());
            for (j, v) in p {
                match out.last_mut() {
                    Some(l) if l.0 == j => l.1 += v,
                    _ => out.push((j, v)),
                }
            }
            out
        };
        (0..self.n).all(|i| {
            let (a, b) = (norm(self, i), norm(&t, i));
            a.len() == b.len() && a.iter().zip(&b).all(|(x, y)| x.0 == y.0 && (x.1 - y.1).abs() <= tol * scale)
        })
    }

    /// The transpose (counting sort by column: deterministic).
    pub fn transpose(&self) -> Csr {
        let n = self.n;
        let mut cnt = vec![0usize; n + 1];
        for &j in &self.indices {
            cnt[j as usize + 1] += 1;
        }
        for i in 0..n {
            cnt[i + 1] += cnt[i];
        }
        let indptr = cnt.clone();
        let mut pos = cnt;
        let mut indices = vec![0u32; self.indices.len()];
        let mut data = vec![0.0; self.data.len()];
        for i in 0..n {
            let (idx, val) = self.row(i);
            for (&j, &v) in idx.iter().zip(val) {
                let p = &mut pos[j as usize];
                indices[*p] = i as u32;
                data[*p] = v;
                *p += 1;
            }
        }
        Csr { n, indptr, indices, data }
    }
}

/// Connected components of the graph of the non-zero entries (union-find).
/// Returns `(count, label per vertex)`, labels numbered by each component's lowest vertex.
pub fn components(a: &Csr) -> (usize, Vec<usize>) {
    let n = a.n;
    let mut parent: Vec<usize> = (0..n).collect();
    fn find(p: &mut [usize], mut x: usize) -> usize {
        while p[x] != x {
            p[x] = p[p[x]];
            x = p[x];
        }
        x
    }
    for i in 0..n {
        let (idx, val) = a.row(i);
        for (&j, &v) in idx.iter().zip(val) {
            if v != 0.0 {
                let (ri, rj) = (find(&mut parent, i), find(&mut parent, j as usize));
                if ri != rj {
                    let (lo, hi) = if ri < rj { (ri, rj) } else { (rj, ri) };
                    parent[hi] = lo;
                }
            }
        }
    }
    let mut label = vec![usize::MAX; n];
    let mut count = 0;
    let mut root_label = vec![usize::MAX; n];
    for (i, li) in label.iter_mut().enumerate() {
        let r = find(&mut parent, i);
        if root_label[r] == usize::MAX {
            root_label[r] = count;
            count += 1;
        }
        *li = root_label[r];
    }
    (count, label)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matvec_transpose_components() {
        // 0-1 edge, 2 isolated, 3-4 edge.
        let a = Csr::new(5, vec![0, 1, 2, 2, 3, 4], vec![1, 0, 4, 3], vec![2.0, 2.0, 0.5, 0.5]).unwrap();
        let mut y = vec![0.0; 5];
        a.matvec(&[1.0, 2.0, 3.0, 4.0, 5.0], &mut y);
        assert_eq!(y, vec![4.0, 2.0, 0.0, 2.5, 2.0]);
        assert!(a.is_symmetric(0.0));
        assert_eq!(components(&a), (3, vec![0, 0, 1, 2, 2]));
        let b = Csr::new(2, vec![0, 1, 1], vec![1], vec![1.0]).unwrap();
        assert!(!b.is_symmetric(1e-12));
        assert_eq!(b.transpose().indptr, vec![0, 0, 1]);
        assert!(Csr::new(2, vec![0, 1, 1], vec![2], vec![1.0]).is_err());
    }
}
