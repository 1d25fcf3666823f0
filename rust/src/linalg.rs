//! Small dense linear-algebra helpers shared by all kernels: strided matrix
//! views, a safe GEMM wrapper, a tiled parallel GEMM and row reductions.

use crate::Real;
use rayon::prelude::*;

/// Rows of the output handled by one parallel task. Fixed (not derived from the
/// thread count) so that results do not depend on how many threads run.
pub const ROW_TILE: usize = 64;

/// The d×n row-major transpose of a row-major n×d matrix (so that a GEMM
/// operand `xᵀ` is packed from contiguous runs). Parallel over fixed blocks of
/// 64 output rows, each transposed in register-sized blocks.
pub fn transpose<T: Real>(x: &[T], n: usize, d: usize) -> Vec<T> {
    const B: usize = 64;
    let mut out = vec![T::zero(); n * d];
    if n == 0 {
        return out;
    }
    out.par_chunks_mut(B * n).enumerate().for_each(|(kb, o)| {
        // Output rows k0.. are the input's columns k0..
        crate::simd::transpose_into(&x[kb * B..], d, o.len() / n, n, o, n);
    });
    out
}

/// A read-only strided matrix view (`rows × cols`, element (i, j) at `i*rs + j*cs`).
#[derive(Clone, Copy, Debug)]
pub struct MatRef<'a, T> {
    pub data: &'a [T],
    pub rows: usize,
    pub cols: usize,
    pub rs: isize,
    pub cs: isize,
}

impl<'a, T: Real> MatRef<'a, T> {
    /// A row-major `rows × cols` view of `data`.
    pub fn new(data: &'a [T], rows: usize, cols: usize) -> Self {
        assert!(data.len() >= rows * cols, "MatRef: buffer too small");
        MatRef { data, rows, cols, rs: cols as isize, cs: 1 }
    }
    /// The transpose, without copying.
    pub fn t(self) -> Self {
        MatRef { data: self.data, rows: self.cols, cols: self.rows, rs: self.cs, cs: self.rs }
    }
    /// Rows `r0..r1` of the view.
    pub fn rows_range(self, r0: usize, r1: usize) -> Self {
        assert!(r0 <= r1 && r1 <= self.rows);
        if r0 == r1 {
            return MatRef { data: &self.data[..0], rows: 0, cols: self.cols, rs: self.rs, cs: self.cs };
        }
        let off = (r0 as isize * self.rs) as usize;
        MatRef { data: &self.data[off..], rows: r1 - r0, cols: self.cols, rs: self.rs, cs: self.cs }
    }
    #[inline(always)]
    pub fn at(&self, i: usize, j: usize) -> T {
        self.data[(i as isize * self.rs + j as isize * self.cs) as usize]
    }
}

/// `c (m×n, row-major) = alpha·a·b + beta·c`, single-threaded.
pub fn gemm<T: Real>(alpha: T, a: MatRef<T>, b: MatRef<T>, beta: T, c: &mut [T]) {
    assert_eq!(a.cols, b.rows, "gemm: inner dimensions differ");
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert!(c.len() >= m * n, "gemm: output too small");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        for v in c[..m * n].iter_mut() {
            *v = if beta == T::zero() { T::zero() } else { *v * beta };
        }
        return;
    }
    // SAFETY: the views were bounds-checked on construction and `c` is a distinct
    // mutable slice of at least m*n values.
    unsafe {
        T::gemm_raw(
            m, k, n, alpha, a.data.as_ptr(), a.rs, a.cs, b.data.as_ptr(), b.rs, b.cs, beta,
            c.as_mut_ptr(), n as isize, 1,
        )
    }
}

/// Parallel [`gemm`]: rows of `c` are split into [`ROW_TILE`]-row tiles.
pub fn par_gemm<T: Real>(alpha: T, a: MatRef<T>, b: MatRef<T>, beta: T, c: &mut [T]) {
    let n = b.cols;
    if n == 0 || a.rows == 0 {
        return;
    }
    c[..a.rows * n].par_chunks_mut(ROW_TILE * n).enumerate().for_each(|(t, ct)| {
        let r0 = t * ROW_TILE;
        let r1 = (r0 + ROW_TILE).min(a.rows);
        gemm(alpha, a.rows_range(r0, r1), b, beta, ct);
    });
}

/// Squared Euclidean norm of each row of a row-major `n × d` matrix.
pub fn row_sq_norms<T: Real>(x: &[T], n: usize, d: usize) -> Vec<T> {
    let mut out = vec![T::zero(); n];
    out.par_iter_mut().enumerate().for_each(|(i, o)| *o = dot(&x[i * d..(i + 1) * d], &x[i * d..(i + 1) * d]));
    out
}

/// Dot product with four independent accumulators (vectorises well).
#[inline]
pub fn dot<T: Real>(a: &[T], b: &[T]) -> T {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [T::zero(); 8];
    let chunks = n / 8;
    for c in 0..chunks {
        for l in 0..8 {
            acc[l] += a[c * 8 + l] * b[c * 8 + l];
        }
    }
    let mut s = T::zero();
    for i in chunks * 8..n {
        s += a[i] * b[i];
    }
    let p = [(acc[0] + acc[4]), (acc[1] + acc[5]), (acc[2] + acc[6]), (acc[3] + acc[7])];
    s + (p[0] + p[2]) + (p[1] + p[3])
}

/// Σ (a_k − b_k)², computed directly (exact for near-identical rows).
#[inline]
pub fn sq_dist<T: Real>(a: &[T], b: &[T]) -> T {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [T::zero(); 8];
    let chunks = n / 8;
    for c in 0..chunks {
        for l in 0..8 {
            let t = a[c * 8 + l] - b[c * 8 + l];
            acc[l] += t * t;
        }
    }
    let mut s = T::zero();
    for i in chunks * 8..n {
        let t = a[i] - b[i];
        s += t * t;
    }
    let p = [(acc[0] + acc[4]), (acc[1] + acc[5]), (acc[2] + acc[6]), (acc[3] + acc[7])];
    s + (p[0] + p[2]) + (p[1] + p[3])
}

/// Column means of a row-major `n × d` matrix, accumulated in f64.
pub fn col_means<T: Real>(x: &[T], n: usize, d: usize) -> Vec<f64> {
    let mut m = vec![0.0f64; d];
    for i in 0..n {
        for (mj, &v) in m.iter_mut().zip(&x[i * d..(i + 1) * d]) {
            *mj += v.to_f64_();
        }
    }
    if n > 0 {
        for mj in m.iter_mut() {
            *mj /= n as f64;
        }
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(a: &[f64], m: usize, k: usize, b: &[f64], n: usize) -> Vec<f64> {
        let mut c = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                for l in 0..k {
                    c[i * n + j] += a[i * k + l] * b[l * n + j];
                }
            }
        }
        c
    }

    #[test]
    fn transpose_matches_naive() {
        for &(n, d) in &[(1usize, 1usize), (3, 1), (1, 5), (9, 13), (70, 130), (131, 67)] {
            let x: Vec<f64> = (0..n * d).map(|v| v as f64).collect();
            let t = transpose(&x, n, d);
            for i in 0..n {
                for k in 0..d {
                    assert_eq!(t[k * n + i], x[i * d + k], "({n}, {d}) at ({i}, {k})");
                }
            }
        }
    }

    #[test]
    fn gemm_matches_naive_with_transposes() {
        let (m, k, n) = (130, 7, 5);
        let a: Vec<f64> = (0..m * k).map(|i| ((i * 37 % 11) as f64) - 5.0).collect();
        let b: Vec<f64> = (0..k * n).map(|i| ((i * 13 % 7) as f64) * 0.5).collect();
        let want = naive(&a, m, k, &b, n);
        let mut c = vec![0.0; m * n];
        par_gemm(1.0, MatRef::new(&a, m, k), MatRef::new(&b, k, n), 0.0, &mut c);
        assert_eq!(c, want);
        // bᵀ stored as n×k, viewed transposed.
        let mut bt = vec![0.0; n * k];
        for l in 0..k {
            for j in 0..n {
                bt[j * k + l] = b[l * n + j];
            }
        }
        let mut c2 = vec![0.0; m * n];
        gemm(1.0, MatRef::new(&a, m, k), MatRef::new(&bt, n, k).t(), 0.0, &mut c2);
        assert_eq!(c2, want);
    }

    #[test]
    fn dot_and_sq_dist() {
        let a: Vec<f32> = (0..19).map(|i| i as f32).collect();
        let b: Vec<f32> = (0..19).map(|i| (i as f32) + 1.0).collect();
        assert_eq!(sq_dist(&a, &b), 19.0);
        assert_eq!(dot(&a, &a), (0..19).map(|i| (i * i) as f32).sum::<f32>());
    }
}
