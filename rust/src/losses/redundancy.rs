//! The d×d statistic shared by Barlow Twins and VICReg: the sum of squared
//! off-diagonal entries of a cross product of two n×d matrices,
//!
//! * cross form: S(a, b) = Σ_{k≠l} C_kl²,  C = aᵀb (Barlow Twins' cross-correlation, before /n);
//! * symmetric form: S(x) = Σ_{k≠l} C_kl²,  C = xᵀx (VICReg's covariance, before /(n−1)),
//!
//! with the gradient for a unit upstream: ∂S/∂a = 2 b C_offᵀ, ∂S/∂b = 2 a C_off,
//! ∂S/∂x = 4 x C_off (C_off: C with its diagonal zeroed). The diagonal terms,
//! the normalisation and the weights are O(n·d) and stay in the Python layer.
//!
//! Two exact evaluations, chosen by shape (both keep O(n·d) memory besides a
//! fixed tile, never a d×d or n×n matrix):
//!
//! * **feature tiles** (d < 2n): C is formed one block of [`FEAT_TILE`] rows at
//!   a time (a GEMM), its diagonal zeroed, squared and summed, and the gradient
//!   GEMMs consume the same tile at once (fused forward/backward, no recompute).
//!   The symmetric form computes only the blocks on and right of the diagonal:
//!   3·n·d² flops against 6·n·d² for the cross form.
//! * **sample tiles** (d ≥ 2n, where C has rank ≤ n): ‖C‖² = ⟨a aᵀ, b bᵀ⟩ is
//!   formed from [`ROW_BLOCK`]-row blocks of the n×n Gram matrices, and the
//!   diagonal Σ_k C_kk² (from column dot products in f64) subtracted;
//!   ∂‖C‖²/∂a = 2 (b bᵀ) a. 8·n²·d flops (4·n²·d symmetric). With d ≥ 2n
//!   the rank bound ‖C‖² ≥ (tr C)²/n keeps the subtraction well conditioned.
//!
//! Every output element is written by one GEMM call over a fixed partition and
//! every sum is reduced in a fixed order, so results are bit-identical for any
//! thread count.

use crate::error::{check_finite, check_len, Error, Result};
use crate::Real;
use rayon::prelude::*;

/// Rows of C (features) per block in the feature-tile form.
pub const FEAT_TILE: usize = 256;
/// Output rows / columns per parallel GEMM task.
const GEMM_ROWS: usize = 256;
const GEMM_COLS: usize = 512;
/// Rows of the n×n Gram matrices per task in the sample-tile form.
pub const ROW_BLOCK: usize = 128;

/// Which evaluation to use (`Auto`: sample tiles when d ≥ 2n).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Path {
    Auto,
    Features,
    Samples,
}

impl Path {
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "auto" => Ok(Path::Auto),
            "features" => Ok(Path::Features),
            "samples" => Ok(Path::Samples),
            _ => Err(Error::InvalidParameter(format!("path must be 'auto', 'features' or 'samples', got {s:?}"))),
        }
    }
    fn samples(self, n: usize, d: usize) -> bool {
        match self {
            Path::Auto => d >= 2 * n,
            Path::Features => false,
            Path::Samples => true,
        }
    }
}

#[derive(Clone, Copy)]
struct Ptr<T>(*mut T);
// SAFETY: used only to hand disjoint output blocks to parallel tasks.
unsafe impl<T> Send for Ptr<T> {}
unsafe impl<T> Sync for Ptr<T> {}

/// A strided read-only operand: element (i, j) at `data[off + i*rs + j*cs]`.
#[derive(Clone, Copy)]
struct Op<'a, T> {
    data: &'a [T],
    off: usize,
    rows: usize,
    cols: usize,
    rs: usize,
    cs: usize,
}

impl<'a, T> Op<'a, T> {
    /// Columns c0..c1 of a row-major matrix with row stride `ld` (rows × (c1−c0)).
    fn cols_of(data: &'a [T], rows: usize, ld: usize, c0: usize, c1: usize) -> Self {
        Op { data, off: c0, rows, cols: c1 - c0, rs: ld, cs: 1 }
    }
    fn t(self) -> Self {
        Op { rows: self.cols, cols: self.rows, rs: self.cs, cs: self.rs, ..self }
    }
    fn in_bounds(&self) -> bool {
        self.rows == 0
            || self.cols == 0
            || self.off + (self.rows - 1) * self.rs + (self.cols - 1) * self.cs < self.data.len()
    }
}

/// `c[c_off + i*ldc + j] = alpha·(a·b)_ij + beta·c[..]`, parallel over a fixed grid of
/// output blocks (each block one single-threaded GEMM call: thread-count independent).
fn pgemm<T: Real>(alpha: T, a: Op<T>, b: Op<T>, beta: T, c: &mut [T], c_off: usize, ldc: usize) {
    assert_eq!(a.cols, b.rows, "pgemm: inner dimensions differ");
    assert!(a.in_bounds() && b.in_bounds(), "pgemm: operand out of bounds");
    let (m, k, n) = (a.rows, a.cols, b.cols);
    if m == 0 || n == 0 {
        return;
    }
    assert!(n <= ldc && c_off + (m - 1) * ldc + n <= c.len(), "pgemm: output out of bounds");
    let rb = m.div_ceil(GEMM_ROWS);
    let cb = n.div_ceil(GEMM_COLS);
    let cp = Ptr(c.as_mut_ptr());
    (0..rb * cb).into_par_iter().for_each(|t| {
        // Capture the whole Send wrapper, not its raw-pointer field (edition 2021 disjoint captures).
        #[allow(clippy::redundant_locals)]
        let cp = cp;
        let (r0, c0) = ((t / cb) * GEMM_ROWS, (t % cb) * GEMM_COLS);
        let (mr, nc) = (GEMM_ROWS.min(m - r0), GEMM_COLS.min(n - c0));
        // SAFETY: the operands were bounds-checked above; the output blocks of the grid are
        // disjoint and lie inside `c` (checked above), so no two tasks write the same element.
        unsafe {
            let out = cp.0.add(c_off + r0 * ldc + c0);
            if k == 0 {
                for i in 0..mr {
                    for j in 0..nc {
                        let p = out.add(i * ldc + j);
                        *p = if beta == T::zero() { T::zero() } else { *p * beta };
                    }
                }
                return;
            }
            T::gemm_raw(
                mr, k, nc, alpha,
                a.data.as_ptr().add(a.off + r0 * a.rs), a.rs as isize, a.cs as isize,
                b.data.as_ptr().add(b.off + c0 * b.cs), b.rs as isize, b.cs as isize,
                beta, out, ldc as isize, 1,
            );
        }
    });
}

/// Σ v² over `rows × cols` entries at stride `ld` (f64, fixed-order reduction over rows).
fn sum_sq<T: Real>(v: &[T], off: usize, rows: usize, cols: usize, ld: usize) -> f64 {
    let per: Vec<f64> = (0..rows)
        .into_par_iter()
        .map(|i| v[off + i * ld..off + i * ld + cols].iter().map(|&x| { let x = x.to_f64_(); x * x }).sum())
        .collect();
    per.iter().sum()
}

fn check_in<T: Real>(name: &str, x: &[T], n: usize, d: usize) -> Result<()> {
    if n == 0 || d == 0 {
        return Err(Error::Shape(format!("{name} must be non-empty, got shape ({n}, {d})")));
    }
    check_len(name, x.len(), n, d)?;
    check_finite(name, x)
}

/// S = Σ_{k≠l} (aᵀb)_kl² (`b` = None: b = a, the symmetric form), and with `grads`
/// the gradients ∂S/∂a (and ∂S/∂b for the cross form) written into the given n×d buffers.
///
/// In the symmetric form `ga` receives ∂S/∂x (the full derivative: both factors) and `gb`
/// is unused.
pub fn offdiag_sq<T: Real>(
    a: &[T], b: Option<&[T]>, n: usize, d: usize, path: Path, grads: Option<(&mut [T], &mut [T])>,
) -> Result<f64> {
    check_in("a", a, n, d)?;
    if let Some(b) = b {
        check_in("b", b, n, d)?;
    }
    if let Some((ga, gb)) = &grads {
        check_len("ga", ga.len(), n, d)?;
        if b.is_some() {
            check_len("gb", gb.len(), n, d)?;
        }
    }
    Ok(if path.samples(n, d) { samples(a, b, n, d, grads) } else { features(a, b, n, d, grads) })
}

fn features<T: Real>(a: &[T], b: Option<&[T]>, n: usize, d: usize, grads: Option<(&mut [T], &mut [T])>) -> f64 {
    let two = T::c(2.0);
    let four = T::c(4.0);
    let mut tile = vec![T::zero(); FEAT_TILE.min(d) * d];
    let mut total = 0.0f64;
    let mut grads = grads;
    if let Some((ga, gb)) = grads.as_mut() {
        ga.iter_mut().for_each(|v| *v = T::zero());
        if b.is_some() {
            gb.iter_mut().for_each(|v| *v = T::zero());
        }
    }
    for k0 in (0..d).step_by(FEAT_TILE) {
        let k1 = (k0 + FEAT_TILE).min(d);
        let bk = k1 - k0;
        let ak = Op::cols_of(a, n, d, k0, k1).t(); // bk × n
        match b {
            Some(b) => {
                // C[K, :] = a[:, K]ᵀ b  (bk × d, row stride d)
                pgemm(T::one(), ak, Op::cols_of(b, n, d, 0, d), T::zero(), &mut tile, 0, d);
                for i in 0..bk {
                    tile[i * d + k0 + i] = T::zero();
                }
                total += sum_sq(&tile, 0, bk, d, d);
                if let Some((ga, gb)) = grads.as_mut() {
                    let t = Op::cols_of(&tile[..], bk, d, 0, d); // bk × d
                    // ga[:, K] = 2 b C[K, :]ᵀ
                    pgemm(two, Op::cols_of(b, n, d, 0, d), t.t(), T::zero(), ga, k0, d);
                    // gb += 2 a[:, K] C[K, :]
                    pgemm(two, ak.t(), t, T::one(), gb, 0, d);
                }
            }
            None => {
                let w = d - k0;
                // C[K, K..] = x[:, K]ᵀ x[:, K..]  (bk × w, row stride w)
                pgemm(T::one(), ak, Op::cols_of(a, n, d, k0, d), T::zero(), &mut tile, 0, w);
                for i in 0..bk {
                    tile[i * w + i] = T::zero();
                }
                total += sum_sq(&tile, 0, bk, bk, w) + 2.0 * sum_sq(&tile, bk, bk, w - bk, w);
                if let Some((gx, _)) = grads.as_mut() {
                    let t = Op { data: &tile[..], off: 0, rows: bk, cols: w, rs: w, cs: 1 };
                    // gx[:, K] += 4 x[:, K..] C[K, K..]ᵀ
                    pgemm(four, Op::cols_of(a, n, d, k0, d), t.t(), T::one(), gx, k0, d);
                    if w > bk {
                        // gx[:, K1..] += 4 x[:, K] C[K, K1..]
                        let right = Op { data: &tile[..], off: bk, rows: bk, cols: w - bk, rs: w, cs: 1 };
                        pgemm(four, ak.t(), right, T::one(), gx, k1, d);
                    }
                }
            }
        }
    }
    total
}

/// Σ_n a_nk b_nk for every k, in f64 (fixed order).
fn col_dots<T: Real>(a: &[T], b: &[T], n: usize, d: usize) -> Vec<f64> {
    (0..d.div_ceil(GEMM_COLS))
        .into_par_iter()
        .flat_map_iter(|cb| {
            let (c0, c1) = (cb * GEMM_COLS, ((cb + 1) * GEMM_COLS).min(d));
            let mut acc = vec![0.0f64; c1 - c0];
            for i in 0..n {
                let (ra, rb) = (&a[i * d + c0..i * d + c1], &b[i * d + c0..i * d + c1]);
                for ((s, &x), &y) in acc.iter_mut().zip(ra).zip(rb) {
                    *s += x.to_f64_() * y.to_f64_();
                }
            }
            acc
        })
        .collect()
}

fn samples<T: Real>(a: &[T], b: Option<&[T]>, n: usize, d: usize, grads: Option<(&mut [T], &mut [T])>) -> f64 {
    let cross = b.is_some();
    let bb = b.unwrap_or(a);
    let blocks = n.div_ceil(ROW_BLOCK);
    let want = grads.is_some();
    // Per row block: ⟨Ka[I,:], Kb[I,:]⟩ and the gradient rows (2 Kb[I,:] a, 2 Ka[I,:] b).
    let (gap, gbp) = match &grads {
        Some((ga, gb)) => (Ptr(ga.as_ptr() as *mut T), Ptr(gb.as_ptr() as *mut T)),
        None => (Ptr(std::ptr::null_mut()), Ptr(std::ptr::null_mut())),
    };
    let two = T::c(2.0);
    let four = T::c(4.0);
    let parts: Vec<f64> = (0..blocks)
        .into_par_iter()
        .map(|ib| {
            let (gap, gbp) = (gap, gbp);
            let (r0, r1) = (ib * ROW_BLOCK, ((ib + 1) * ROW_BLOCK).min(n));
            let m = r1 - r0;
            let mut ka = vec![T::zero(); m * n];
            crate::linalg::gemm(
                T::one(),
                crate::linalg::MatRef::new(&a[r0 * d..r1 * d], m, d),
                crate::linalg::MatRef::new(a, n, d).t(),
                T::zero(),
                &mut ka,
            );
            let mut kb = if cross { vec![T::zero(); m * n] } else { Vec::new() };
            if cross {
                crate::linalg::gemm(
                    T::one(),
                    crate::linalg::MatRef::new(&bb[r0 * d..r1 * d], m, d),
                    crate::linalg::MatRef::new(bb, n, d).t(),
                    T::zero(),
                    &mut kb,
                );
            }
            let s: f64 = if cross {
                ka.iter().zip(&kb).map(|(&x, &y)| x.to_f64_() * y.to_f64_()).sum()
            } else {
                ka.iter().map(|&x| { let x = x.to_f64_(); x * x }).sum()
            };
            if want {
                // SAFETY: block ib writes only rows r0..r1 of the gradient buffers (disjoint across tasks),
                // whose length n·d was checked by the caller.
                let ga_rows = unsafe { std::slice::from_raw_parts_mut(gap.0.add(r0 * d), m * d) };
                if cross {
                    let gb_rows = unsafe { std::slice::from_raw_parts_mut(gbp.0.add(r0 * d), m * d) };
                    crate::linalg::gemm(two, crate::linalg::MatRef::new(&kb, m, n), crate::linalg::MatRef::new(a, n, d), T::zero(), ga_rows);
                    crate::linalg::gemm(two, crate::linalg::MatRef::new(&ka, m, n), crate::linalg::MatRef::new(bb, n, d), T::zero(), gb_rows);
                } else {
                    crate::linalg::gemm(four, crate::linalg::MatRef::new(&ka, m, n), crate::linalg::MatRef::new(a, n, d), T::zero(), ga_rows);
                }
            }
            s
        })
        .collect();
    let diag = col_dots(a, bb, n, d);
    let total = parts.iter().sum::<f64>() - diag.iter().map(|c| c * c).sum::<f64>();
    if let Some((ga, gb)) = grads {
        // Remove the diagonal's share: ∂Σ_k c_kk²/∂a_nk = 2 c_kk b_nk (symmetric: 4 c_kk x_nk).
        let dg: Vec<T> = diag.iter().map(|&c| T::c(c)).collect();
        let f = if cross { two } else { four };
        ga.par_chunks_mut(d).zip(bb.par_chunks(d)).for_each(|(g, y)| {
            for ((gv, &yv), &c) in g.iter_mut().zip(y).zip(&dg) {
                *gv -= f * c * yv;
            }
        });
        if cross {
            gb.par_chunks_mut(d).zip(a.par_chunks(d)).for_each(|(g, x)| {
                for ((gv, &xv), &c) in g.iter_mut().zip(x).zip(&dg) {
                    *gv -= f * c * xv;
                }
            });
        }
    }
    total.max(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::losses::common::testutil::Rng;

    fn brute(a: &[f64], b: &[f64], n: usize, d: usize) -> (f64, Vec<f64>, Vec<f64>) {
        let mut c = vec![0.0; d * d];
        for k in 0..d {
            for l in 0..d {
                c[k * d + l] = (0..n).map(|i| a[i * d + k] * b[i * d + l]).sum();
            }
        }
        let mut s = 0.0;
        let (mut ga, mut gb) = (vec![0.0; n * d], vec![0.0; n * d]);
        for k in 0..d {
            for l in 0..d {
                if k != l {
                    let v = c[k * d + l];
                    s += v * v;
                    for i in 0..n {
                        ga[i * d + k] += 2.0 * v * b[i * d + l];
                        gb[i * d + l] += 2.0 * v * a[i * d + k];
                    }
                }
            }
        }
        (s, ga, gb)
    }

    fn close(x: &[f64], y: &[f64], tol: f64) {
        let scale = y.iter().fold(1.0f64, |m, v| m.max(v.abs()));
        for (p, q) in x.iter().zip(y) {
            assert!((p - q).abs() <= tol * scale, "{p} vs {q}");
        }
    }

    #[test]
    fn both_paths_match_brute_force() {
        let mut r = Rng(7);
        for &(n, d) in &[(5usize, 3usize), (3, 17), (40, 300), (9, 520), (1, 4)] {
            let a = r.normal_vec(n * d);
            let b = r.normal_vec(n * d);
            let (s, ga, gb) = brute(&a, &b, n, d);
            let (ss, gs, _) = brute(&a, &a, n, d);
            let gs: Vec<f64> = gs.iter().zip(&brute(&a, &a, n, d).2).map(|(x, y)| x + y).collect();
            for path in [Path::Features, Path::Samples, Path::Auto] {
                let (mut g1, mut g2) = (vec![0.0; n * d], vec![0.0; n * d]);
                let v = offdiag_sq(&a, Some(&b), n, d, path, Some((&mut g1, &mut g2))).unwrap();
                close(&[v], &[s], 1e-10);
                close(&g1, &ga, 1e-10);
                close(&g2, &gb, 1e-10);
                let v0 = offdiag_sq(&a, Some(&b), n, d, path, None).unwrap();
                close(&[v0], &[s], 1e-10);
                let (mut g3, mut g4) = (vec![0.0; n * d], vec![]);
                let v = offdiag_sq(&a, None, n, d, path, Some((&mut g3, &mut g4))).unwrap();
                close(&[v], &[ss], 1e-10);
                close(&g3, &gs, 1e-10);
            }
        }
    }

    #[test]
    fn thread_count_does_not_change_bits() {
        let mut r = Rng(3);
        let (n, d) = (70, 600);
        let a: Vec<f32> = r.normal_vec(n * d).iter().map(|&v| v as f32).collect();
        let b: Vec<f32> = r.normal_vec(n * d).iter().map(|&v| v as f32).collect();
        let run = |t: usize, path: Path, sym: bool| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(t).build().unwrap();
            pool.install(|| {
                let (mut g1, mut g2) = (vec![0f32; n * d], vec![0f32; n * d]);
                let v = offdiag_sq(&a, if sym { None } else { Some(&b) }, n, d, path, Some((&mut g1, &mut g2))).unwrap();
                (v, g1, g2)
            })
        };
        for path in [Path::Features, Path::Samples] {
            for sym in [false, true] {
                let x = run(1, path, sym);
                let y = run(3, path, sym);
                assert_eq!(x.0.to_bits(), y.0.to_bits());
                assert!(x.1 == y.1 && x.2 == y.2);
            }
        }
    }

    #[test]
    fn rejects_bad_input() {
        assert!(offdiag_sq(&[1.0f64, f64::NAN], None, 1, 2, Path::Auto, None).is_err());
        assert!(offdiag_sq(&[1.0f64, 2.0], Some(&[1.0]), 1, 2, Path::Auto, None).is_err());
        assert!(offdiag_sq::<f64>(&[], None, 0, 2, Path::Auto, None).is_err());
        assert!(Path::parse("x").is_err());
    }
}
