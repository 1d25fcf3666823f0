//! Pairwise distances (Euclidean, squared Euclidean, cosine) and their
//! analytic backward pass.
//!
//! Forward uses the fast product form ‖x‖² + ‖y‖² − 2x·y on *centred* data
//! (distances are translation invariant, and centring shrinks the norms that
//! cancel), computed by GEMM in cache-sized blocks with the finishing steps
//! (guard, clamp, square root) fused into each block. Any entry whose squared
//! distance is small against the squared norms (`Real::CANCEL_TOL`) has lost
//! digits to cancellation and is recomputed directly as Σ(x−y)² on the
//! original rows, so a row's distance to itself is exactly 0 and
//! near-duplicates keep full relative precision. Cosine distance is ‖x̂−ŷ‖²/2
//! on the unit vectors, so it gets the same treatment.
//!
//! Distances of a set to itself compute only the upper block triangle and
//! mirror it: half the arithmetic, and an exactly symmetric result.
//!
//! Backward never materialises an n×m weight matrix: weights are formed tile
//! by tile from the upstream gradient and the saved distances, and each tile
//! feeds GEMMs for ∂x (W·y) and ∂y (Wᵀ·x). Self distances are exactly
//! symmetric, so there the two roles of x merge into one weight matrix built
//! from G + Gᵀ and one GEMM per tile.

use crate::error::{check_finite, check_len, Error, Result};
use crate::linalg::{col_means, gemm, row_sq_norms, sq_dist, transpose, MatRef, ROW_TILE};
use crate::simd::{self, Finish};
use crate::Real;
use rayon::prelude::*;
use std::collections::HashMap;

/// Columns per GEMM block: a ROW_TILE × COL_BLOCK block of f32 is 128 KiB, so the
/// fused finishing pass reads it back from L2.
const COL_BLOCK: usize = 512;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Metric {
    Euclidean,
    SqEuclidean,
    Cosine,
}

impl Metric {
    pub const NAMES: &'static [&'static str] = &["euclidean", "sqeuclidean", "cosine"];

    pub fn parse(name: &str) -> Result<Self> {
        match name {
            "euclidean" => Ok(Metric::Euclidean),
            "sqeuclidean" => Ok(Metric::SqEuclidean),
            "cosine" => Ok(Metric::Cosine),
            _ => Err(Error::InvalidParameter(format!(
                "unknown metric {name:?}; accepted: {}",
                Metric::NAMES.join(", ")
            ))),
        }
    }
}

/// Row-major `n × d` input rows (`y = None` means "y is x").
#[derive(Clone, Copy)]
pub struct Rows<'a, T> {
    pub data: &'a [T],
    pub n: usize,
}

fn validate<T: Real>(x: Rows<T>, y: Option<Rows<T>>, d: usize) -> Result<()> {
    if x.n == 0 || d == 0 {
        return Err(Error::Shape(format!("x must be non-empty, got shape ({}, {d})", x.n)));
    }
    check_len("x", x.data.len(), x.n, d)?;
    check_finite("x", x.data)?;
    if let Some(y) = y {
        if y.n == 0 {
            return Err(Error::Shape(format!("y must be non-empty, got shape (0, {d})")));
        }
        check_len("y", y.data.len(), y.n, d)?;
        check_finite("y", y.data)?;
    }
    Ok(())
}

/// Unit rows (zero rows stay zero) and each row's norm.
fn normalise<T: Real>(x: &[T], n: usize, d: usize) -> (Vec<T>, Vec<T>) {
    // Norms that survive underflow and overflow of the sum of squares (tiny or huge rows).
    let norms: Vec<T> = row_sq_norms(x, n, d)
        .into_iter()
        .enumerate()
        .map(|(i, ss)| {
            if ss >= T::min_positive_value() && ss.is_finite() {
                return ss.sqrt();
            }
            let row = &x[i * d..(i + 1) * d];
            let mx = row.iter().fold(T::zero(), |a, &v| a.max(v.abs()));
            if mx == T::zero() {
                return T::zero();
            }
            mx * row.iter().map(|&v| (v / mx) * (v / mx)).sum::<T>().sqrt()
        })
        .collect();
    let mut u = x.to_vec();
    u.par_chunks_mut(d).zip(norms.par_iter()).for_each(|(row, &nr)| {
        if nr > T::zero() {
            let inv = T::one() / nr;
            row.iter_mut().for_each(|v| *v *= inv);
        }
    });
    (u, norms)
}

/// Unit rows (zero rows stay zero) and each row's norm. Public for kNN on cosine.
pub fn unit_rows<T: Real>(x: &[T], n: usize, d: usize) -> (Vec<T>, Vec<T>) {
    normalise(x, n, d)
}

fn centred<T: Real>(x: &[T], n: usize, d: usize, mean: &[f64]) -> Vec<T> {
    let mut c = x.to_vec();
    c.par_chunks_mut(d).take(n).for_each(|row| {
        for (v, &m) in row.iter_mut().zip(mean) {
            *v = T::c(v.to_f64_() - m);
        }
    });
    c
}


/// Rows borrowed from the caller, or an owned (scaled) copy.
enum Data<'a, T> {
    Borrowed(&'a [T]),
    Owned(Vec<T>),
}

impl<T> std::ops::Deref for Data<'_, T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        match self {
            Data::Borrowed(v) => v,
            Data::Owned(v) => v,
        }
    }
}

/// Squared Euclidean distances prepared for blocked evaluation: both sets
/// centred on their joint mean, with squared norms, plus the original rows for
/// the direct recomputation of cancelled entries.
pub struct SqEuclid<'a, T> {
    x: Data<'a, T>,
    y: Data<'a, T>,
    /// Group id of every row (x's rows, then y's unless y is x) when some rows are exact
    /// duplicates: a cancelled entry between two rows of one group is exactly 0, no recompute.
    /// With it, whether the row has a duplicate at all (rows without one skip the marking pass).
    dup: Option<(Vec<u32>, Vec<bool>)>,
    /// 1/s when the rows were scaled by a power of two s to keep squares inside the range.
    unscale: Option<T>,
    xc: Vec<T>,
    yc: Option<Vec<T>>,
    /// The centred rows transposed (d × n, d × m): GEMM packs contiguous runs from these.
    xct: Vec<T>,
    yct: Option<Vec<T>>,
    nx: Vec<T>,
    ny: Option<Vec<T>>,
    pub n: usize,
    pub m: usize,
    pub d: usize,
    same: bool,
}

impl<'a, T: Real> SqEuclid<'a, T> {
    /// `y = None` means the rows of `x` against themselves.
    pub fn new(x: &'a [T], n: usize, y: Option<(&'a [T], usize)>, d: usize) -> Self {
        let ys = y.map(|(v, _)| v);
        let mut s = match range_scale(x, ys, d) {
            None => Self::centred_only(x, n, y, d),
            Some(sc) => {
                // Squares of rows this large (or small) would overflow (underflow): compute on rows
                // scaled by a power of two (exact) and scale the results back (see `unscale_row`).
                let xs = scaled_rows(x, sc);
                let yv = ys.map(|v| scaled_rows(v, sc));
                let mut p = Self::centred_owned(Data::Owned(xs), n, yv.map(|v| (Data::Owned(v), y.map_or(0, |r| r.1))), d);
                p.unscale = Some(T::c(1.0 / sc));
                p
            }
        };
        s.dup = duplicate_ids(&s.x, n, if s.same { None } else { Some((s.yrows(), s.m)) }, d);
        s.xct = transpose(&s.xc, n, d);
        s.yct = s.yc.as_ref().map(|v| transpose(v, s.m, d));
        s
    }

    /// Centred rows and norms without the transposed copies that only the
    /// forward GEMM reads (the backward uses the rows as they are).
    fn centred_only(x: &'a [T], n: usize, y: Option<(&'a [T], usize)>, d: usize) -> Self {
        Self::centred_owned(Data::Borrowed(x), n, y.map(|(v, m)| (Data::Borrowed(v), m)), d)
    }

    fn centred_owned(x: Data<'a, T>, n: usize, y: Option<(Data<'a, T>, usize)>, d: usize) -> Self {
        let same = y.is_none();
        // y stays empty when it is x (`yrows` reads x then).
        let (y, m) = y.unwrap_or((Data::Borrowed(&[]), n));
        let (x_, y_): (&[T], &[T]) = (&x, if same { &x } else { &y });
        let mut mean = col_means(x_, n, d);
        if !same {
            let my = col_means(y_, m, d);
            let w = n as f64 / (n + m) as f64;
            for (a, b) in mean.iter_mut().zip(&my) {
                *a = w * *a + (1.0 - w) * b;
            }
        }
        let xc = centred(x_, n, d, &mean);
        let nx = row_sq_norms(&xc, n, d);
        let (yc, ny) = if same {
            (None, None)
        } else {
            let yc = centred(y_, m, d, &mean);
            let ny = row_sq_norms(&yc, m, d);
            (Some(yc), Some(ny))
        };
        SqEuclid { x, y, dup: None, unscale: None, xc, yc, xct: Vec::new(), yct: None, nx, ny, n, m, d, same }
    }

    /// The squared norms that bound the rounding of a streamed squared distance, in the
    /// output's units: an entry (i, j) not recomputed by the guard is off by at most about
    /// √d·eps·(sq_norm_x(i) + sq_norm_y(j)) (the norms are those of the centred rows the GEMM
    /// multiplies, times the range scale's square when the rows were rescaled).
    pub fn sq_norm_x(&self, i: usize) -> T {
        let u = self.unscale.unwrap_or_else(T::one);
        self.nx[i] * u * u
    }

    /// The largest of those norms over y's rows (see [`Self::sq_norm_x`]).
    pub fn max_sq_norm_y(&self) -> T {
        let u = self.unscale.unwrap_or_else(T::one);
        let ny = self.ny.as_deref().unwrap_or(&self.nx);
        ny.iter().fold(T::zero(), |a, &b| if b > a { b } else { a }) * u * u
    }

    fn yrows(&self) -> &[T] {
        if self.same {
            &self.x
        } else {
            &self.y
        }
    }

    /// Squared distances of rows `r0..r1` of x to rows `c0..c1` of y, written
    /// into `out` with row stride `ld`, then finished by `finish`.
    #[allow(clippy::too_many_arguments)]
    fn fill_block(&self, r0: usize, r1: usize, c0: usize, c1: usize, out: &mut [T], ld: usize, finish: Finish) {
        if r0 == r1 || c0 == c1 {
            return;
        }
        let d = self.d;
        let yct = self.yct.as_deref().unwrap_or(&self.xct);
        let ny = self.ny.as_deref().unwrap_or(&self.nx);
        // A = rows r0..r1 of xc, read from xcᵀ; B = columns c0..c1 of ycᵀ.
        let a = MatRef { data: &self.xct[r0..], rows: r1 - r0, cols: d, rs: 1, cs: self.n as isize };
        let b = MatRef { data: &yct[c0..], rows: d, cols: c1 - c0, rs: self.m as isize, cs: 1 };
        let (bm, bn, bk) = (r1 - r0, c1 - c0, d);
        assert!(out.len() >= (bm - 1) * ld + bn);
        // SAFETY: `out` holds bm rows of stride ld with at least bn values each (checked above).
        unsafe {
            T::gemm_raw(
                bm, bk, bn, -T::c(2.0), a.data.as_ptr(), a.rs, a.cs, b.data.as_ptr(), b.rs, b.cs, T::zero(),
                out.as_mut_ptr(), ld as isize, 1,
            );
        }
        let ny = &ny[c0..c1];
        for i in r0..r1 {
            let row = &mut out[(i - r0) * ld..(i - r0) * ld + bn];
            // A row's distance to itself is exactly 0; +∞ keeps it out of the cancellation
            // test below, which would otherwise send every diagonal row to the scalar loop.
            // Lazy: `i - c0` underflows when i lies left of the block.
            let diag = (self.same && (c0..c1).contains(&i)).then(|| i - c0);
            if let Some(jj) = diag {
                row[jj] = T::infinity();
            }
            // Exact duplicates of row i (collapsed embeddings) are cancelled entries whose value is
            // exactly 0: like the diagonal, +∞ keeps them out of the scalar recompute, so a batch of
            // equal rows costs about what distinct rows cost. Branch-free select passes.
            let group = match &self.dup {
                Some((g, has)) if has[i] => Some((g[i], &g[if self.same { c0 } else { self.n + c0 }..][..bn])),
                _ => None,
            };
            if let Some((gi, gy)) = group {
                row.iter_mut().zip(gy).for_each(|(v, &gj)| *v = if gj == gi { T::infinity() } else { *v });
            }
            // Vectorised pass; the rare cancelled entries are fixed up afterwards.
            if simd::add_norms(row, self.nx[i], ny, T::CANCEL_TOL) {
                let xi = &self.x[i * d..(i + 1) * d];
                let scale_i = self.nx[i];
                for (jj, v) in row.iter_mut().enumerate() {
                    if *v <= T::CANCEL_TOL * (scale_i + ny[jj]) {
                        let j = c0 + jj;
                        *v = sq_dist(xi, &self.yrows()[j * d..(j + 1) * d]);
                    }
                }
            }
            if let Some((gi, gy)) = group {
                row.iter_mut().zip(gy).for_each(|(v, &gj)| *v = if gj == gi { T::zero() } else { *v });
            }
            if let Some(jj) = diag {
                row[jj] = T::zero();
            }
            if finish != Finish::Raw {
                simd::finish(row, finish);
            }
            if let Some(inv) = self.unscale {
                unscale_row(row, inv, finish);
            }
        }
    }

    /// Squared distances of rows `r0..r1` of x to rows `c0..c1` of y into `out`
    /// ((r1−r0) × (c1−c0), row-major). Single-threaded: callers parallelise.
    pub fn fill_block_sq(&self, r0: usize, r1: usize, c0: usize, c1: usize, out: &mut [T]) {
        self.fill_block(r0, r1, c0, c1, out, c1 - c0, Finish::Squared);
    }

    /// [`Self::fill_block_sq`] without the clamp at 0: entries may be slightly negative
    /// (rounding of the GEMM form), saving a pass for callers that clamp what they keep.
    pub fn fill_block_raw(&self, r0: usize, r1: usize, c0: usize, c1: usize, out: &mut [T]) {
        self.fill_block(r0, r1, c0, c1, out, c1 - c0, Finish::Raw);
    }

    /// Writes the squared distances of rows `r0..r1` of x to all rows of y into
    /// `out` ((r1−r0) × m, row-major). Single-threaded: callers parallelise over tiles.
    pub fn fill_rows(&self, r0: usize, r1: usize, out: &mut [T]) {
        let m = self.m;
        let mut c0 = 0;
        while c0 < m {
            let c1 = (c0 + COL_BLOCK).min(m);
            self.fill_block(r0, r1, c0, c1, &mut out[c0..], m, Finish::Squared);
            c0 = c1;
        }
    }

    /// The full n × m matrix, finished by `finish`, in parallel over row tiles.
    fn fill_all(&self, out: &mut [T], finish: Finish) {
        let (n, m) = (self.n, self.m);
        if self.same {
            return self.fill_self(out, finish);
        }
        out[..n * m].par_chunks_mut(ROW_TILE * m).enumerate().for_each(|(t, tile)| {
            let r0 = t * ROW_TILE;
            let r1 = (r0 + ROW_TILE).min(n);
            let mut c0 = 0;
            while c0 < m {
                let c1 = (c0 + COL_BLOCK).min(m);
                self.fill_block(r0, r1, c0, c1, &mut tile[c0..], m, finish);
                c0 = c1;
            }
        });
    }

    /// Self distances: each row tile computes only the blocks on or right of
    /// the diagonal, into a cache-resident buffer, and writes every block both
    /// in place and transposed below the diagonal while it is still in cache
    /// (half the arithmetic, and an exactly symmetric result).
    ///
    /// Task t (rows r0..r1) writes rows r0..r1 at columns ≥ r0 and rows ≥ r1 at
    /// columns r0..r1. Tasks before it write only columns < r0 and tasks after
    /// it only columns ≥ r1 and rows ≥ r1 outside r0..r1: the sets are disjoint.
    fn fill_self(&self, out: &mut [T], finish: Finish) {
        struct Ptr<T>(*mut T);
        unsafe impl<T> Send for Ptr<T> {}
        unsafe impl<T> Sync for Ptr<T> {}
        let n = self.n;
        assert!(out.len() >= n * n);
        let p = Ptr(out.as_mut_ptr());
        // A run of `len` values of row `i` from column `j`, owned by the calling task (see above).
        let run = |p: &Ptr<T>, i: usize, j: usize, len: usize| -> &mut [T] {
            debug_assert!(i < n && j + len <= n);
            // SAFETY: in bounds (out holds n × n values), and no other task touches the run.
            unsafe { std::slice::from_raw_parts_mut(p.0.add(i * n + j), len) }
        };
        (0..n.div_ceil(ROW_TILE)).into_par_iter().for_each(|t| {
            let r0 = t * ROW_TILE;
            let r1 = (r0 + ROW_TILE).min(n);
            let rows = r1 - r0;
            let mut blk = vec![T::zero(); rows * COL_BLOCK];
            let mut tr = vec![T::zero(); COL_BLOCK * rows];
            let mut c0 = r0;
            while c0 < n {
                let c1 = (c0 + COL_BLOCK).min(n);
                let cb = c1 - c0;
                let blk = &mut blk[..rows * cb];
                self.fill_block(r0, r1, c0, c1, blk, cb, finish);
                if c0 == r0 {
                    // The diagonal square: its lower half copies the upper one.
                    for i in 1..rows {
                        for j in 0..i {
                            blk[i * cb + j] = blk[j * cb + i];
                        }
                    }
                }
                for (i, row) in blk.chunks(cb).enumerate() {
                    run(&p, r0 + i, c0, cb).copy_from_slice(row);
                }
                // Columns r1.. of the block, transposed into rows r1.. at columns r0..r1.
                let j0 = c0.max(r1);
                if j0 < c1 {
                    let nj = c1 - j0;
                    simd::transpose_into(&blk[j0 - c0..], cb, nj, rows, &mut tr, rows);
                    for (jj, row) in tr[..nj * rows].chunks(rows).enumerate() {
                        run(&p, j0 + jj, r0, rows).copy_from_slice(row);
                    }
                }
                c0 = c1;
            }
        });
    }
}

/// The power of two s to scale rows by so that their squared distances neither overflow nor
/// underflow, or None when the rows are already in the safe range. Safe: the largest |value| M
/// has 4·d·M² ≤ max/64 (no overflow in the norms or the GEMM) and M² ≥ min_positive/ε (squares of
/// differences of size M keep full relative precision).
fn range_scale<T: Real>(x: &[T], y: Option<&[T]>, d: usize) -> Option<f64> {
    let mx = |v: &[T]| v.iter().fold(T::zero(), |a, &b| a.max(b.abs())).to_f64_();
    let m = mx(x).max(y.map_or(0.0, mx));
    if m == 0.0 {
        return None;
    }
    let (big, tiny, eps) = (T::max_value().to_f64_(), T::min_positive_value().to_f64_(), T::EPS.to_f64_());
    if 4.0 * d as f64 * m * m <= big / 64.0 && m * m >= tiny / eps {
        return None;
    }
    // s·M in [1, 2): the exponent is clamped so that both s and 1/s are normal numbers of T.
    let emax = big.log2().floor() as i32 - 1;
    let e = (-(m.log2().floor() as i32)).clamp(-emax, emax);
    Some(2f64.powi(e))
}

fn scaled_rows<T: Real>(v: &[T], s: f64) -> Vec<T> {
    let st = T::c(s);
    v.par_iter().map(|&a| a * st).collect()
}

/// Finished distances of scaled rows back to the data's scale: √ scales by 1/s, squares by
/// 1/s² (two exact steps, so the result is inf only when the true value exceeds the range).
fn unscale_row<T: Real>(row: &mut [T], inv: T, finish: Finish) {
    match finish {
        Finish::Sqrt => row.iter_mut().for_each(|v| *v *= inv),
        Finish::Squared | Finish::Raw => row.iter_mut().for_each(|v| *v = *v * inv * inv),
        Finish::HalfCapped => {}
    }
}

/// Group ids of exactly equal rows over x (n rows) and y (m rows, if given), or None when all
/// rows are distinct (a row's id is the index of the first row equal to it; −0 equals +0), with
/// whether each row has a duplicate.
fn duplicate_ids<T: Real>(x: &[T], n: usize, y: Option<(&[T], usize)>, d: usize) -> Option<(Vec<u32>, Vec<bool>)> {
    let m = y.map_or(0, |r| r.1);
    if n + m < 2 || n + m > u32::MAX as usize {
        return None;
    }
    let row = |k: usize| -> &[T] {
        if k < n {
            &x[k * d..(k + 1) * d]
        } else {
            let yv = y.map_or(&[][..], |r| r.0);
            &yv[(k - n) * d..(k - n + 1) * d]
        }
    };
    let hashes: Vec<u64> = (0..n + m)
        .into_par_iter()
        .map(|k| {
            row(k).iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &v| {
                let f = v.to_f64_();
                let bits = if f == 0.0 { 0 } else { f.to_bits() };
                (h.rotate_left(5) ^ bits).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95)
            })
        })
        .collect();
    let mut first: HashMap<u64, Vec<u32>> = HashMap::with_capacity(n + m);
    let mut ids: Vec<u32> = (0..(n + m) as u32).collect();
    let mut any = false;
    for (k, &h) in hashes.iter().enumerate() {
        let reps = first.entry(h).or_default();
        match reps.iter().find(|&&r| row(r as usize) == row(k)) {
            Some(&r) => {
                ids[k] = r;
                any = true;
            }
            None => reps.push(k as u32),
        }
    }
    if !any {
        return None;
    }
    let mut size = vec![0u32; n + m];
    ids.iter().for_each(|&g| size[g as usize] += 1);
    let has = ids.iter().map(|&g| size[g as usize] > 1).collect();
    Some((ids, has))
}

/// Pairwise distances between the rows of `x` and of `y` (or of `x` with
/// itself when `y` is `None`), written row-major into `out` (`x.n × y.n`).
pub fn pairwise<T: Real>(x: Rows<T>, y: Option<Rows<T>>, d: usize, metric: Metric, out: &mut [T]) -> Result<()> {
    validate(x, y, d)?;
    let same = y.is_none();
    let (n, m) = (x.n, y.map_or(x.n, |r| r.n));
    check_len("out", out.len(), n, m)?;
    match metric {
        Metric::Euclidean | Metric::SqEuclidean => {
            let prep = SqEuclid::new(x.data, n, y.map(|r| (r.data, r.n)), d);
            prep.fill_all(out, if metric == Metric::Euclidean { Finish::Sqrt } else { Finish::Squared });
        }
        Metric::Cosine => {
            let (ux, nxs) = normalise(x.data, n, d);
            let uy = y.map(|r| normalise(r.data, r.n, d));
            let prep = SqEuclid::new(&ux, n, uy.as_ref().map(|(u, _)| (u.as_slice(), m)), d);
            prep.fill_all(out, Finish::HalfCapped);
            let nys: &[T] = uy.as_ref().map_or(&nxs, |(_, nr)| nr);
            // A zero vector has no direction: similarity 0, distance 1 (0 to itself).
            let zx: Vec<usize> = (0..n).filter(|&i| nxs[i] == T::zero()).collect();
            let zy: Vec<usize> = (0..m).filter(|&j| nys[j] == T::zero()).collect();
            for &i in &zx {
                out[i * m..(i + 1) * m].iter_mut().for_each(|v| *v = T::one());
            }
            for &j in &zy {
                (0..n).for_each(|i| out[i * m + j] = T::one());
            }
            if same {
                for &i in &zx {
                    out[i * m + i] = T::zero();
                }
            }
        }
    }
    Ok(())
}

/// The upstream gradient G (n × m) of the distances, broadcast as in numpy:
/// `data` is `rows × cols` with rows ∈ {1, n} and cols ∈ {1, m}, and
/// G_ij = data[min(i, rows − 1), min(j, cols − 1)]. After `.sum()`
/// torch hands backward one value expanded to n × m; passing that value
/// instead of a dense copy saves writing and reading an n × m array.
#[derive(Clone, Copy)]
pub struct Grad<'a, T> {
    pub data: &'a [T],
    pub rows: usize,
    pub cols: usize,
}

impl<'a, T: Real> Grad<'a, T> {
    /// A dense n × m gradient.
    pub fn dense(data: &'a [T], n: usize, m: usize) -> Self {
        Grad { data, rows: n, cols: m }
    }

    fn validate(&self, n: usize, m: usize) -> Result<()> {
        if !(self.rows == 1 || self.rows == n) || !(self.cols == 1 || self.cols == m) {
            return Err(Error::Shape(format!(
                "grad of shape ({}, {}) does not broadcast to the distances' shape ({n}, {m})",
                self.rows, self.cols
            )));
        }
        check_len("grad", self.data.len(), self.rows, self.cols)
    }

    /// Columns c0..c1 of row i: a slice of `data`, or `buf` filled with the row's one value.
    #[inline]
    fn row<'b>(&'b self, i: usize, c0: usize, c1: usize, buf: &'b mut Vec<T>) -> &'b [T] {
        let r = if self.rows == 1 { 0 } else { i };
        if self.cols == 1 {
            buf.clear();
            buf.resize(c1 - c0, self.data[r]);
            buf
        } else {
            &self.data[r * self.cols + c0..r * self.cols + c1]
        }
    }

    /// out[ii·ldo + jj] = G[c0 + jj, r0 + ii] for ii < rows, jj < cb: a block of Gᵀ.
    fn transposed_block(&self, r0: usize, rows: usize, c0: usize, cb: usize, out: &mut [T], ldo: usize) {
        let fill_rows = |out: &mut [T], val: &dyn Fn(usize) -> T| {
            for ii in 0..rows {
                out[ii * ldo..ii * ldo + cb].iter_mut().for_each(|v| *v = val(ii));
            }
        };
        match (self.rows == 1, self.cols == 1) {
            (false, false) => simd::transpose_into(&self.data[c0 * self.cols + r0..], self.cols, rows, cb, out, ldo),
            // G_ji = data[j]: every row of the block is data[c0..c0 + cb].
            (false, true) => {
                for ii in 0..rows {
                    out[ii * ldo..ii * ldo + cb].copy_from_slice(&self.data[c0..c0 + cb]);
                }
            }
            // G_ji = data[i]: row ii of the block is constant.
            (true, false) => fill_rows(out, &|ii| self.data[r0 + ii]),
            (true, true) => fill_rows(out, &|_| self.data[0]),
        }
    }
}

/// Rows the Euclidean backward needs to treat near-zero distances exactly:
/// there W = G/D is huge and the product form Σ_j W_ij (x_i − y_j) =
/// x_i Σ_j W_ij − Σ_j W_ij y_j would cancel, so those pairs are left out of
/// the GEMM and added directly from the exact differences.
#[derive(Clone, Copy)]
struct Near<'a, T> {
    x: &'a [T],
    y: &'a [T],
    cnx: &'a [T],
    cny: &'a [T],
    d: usize,
}

/// The backward weight matrices, formed tile by tile from G and D:
/// W multiplies the rows, S is summed by rows and by columns.
#[derive(Clone, Copy)]
enum Weights<'a, T> {
    /// W = S = G ⊘ D (0 where D = 0).
    Euclidean { g: Grad<'a, T>, dist: &'a [T], near: Near<'a, T> },
    /// W = S = 2G.
    SqEuclidean { g: Grad<'a, T> },
    /// W = G, S = G ∘ (1 − D).
    Cosine { g: Grad<'a, T>, dist: &'a [T] },
}

impl<T: Real> Weights<'_, T> {
    /// Fills `w` with row i of W, adds row i of S into the column sums `cs`, and
    /// returns the row sum of S. Near pairs (Euclidean) are zeroed in W (and so in
    /// S); their exact terms W_ij (x_i − y_j) go to `dx` (row i, d values) with a
    /// plus sign and to `dy` (m × d, allocated on first use) with a minus sign.
    /// `gbuf` is scratch for a broadcast row of G.
    #[allow(clippy::too_many_arguments)]
    #[inline]
    fn row(&self, i: usize, m: usize, w: &mut [T], cs: &mut [T], dx: &mut [T], dy: &mut Option<Vec<T>>, gbuf: &mut Vec<T>) -> T {
        let r = i * m..(i + 1) * m;
        match *self {
            Weights::Euclidean { g, dist, near } => {
                simd::div_or_zero(w, g.row(i, 0, m, gbuf), &dist[r.clone()]);
                let dr = &dist[r];
                if simd::any_near(dr, near.cnx[i], near.cny, T::CANCEL_TOL) {
                    let d = near.d;
                    let xi = &near.x[i * d..(i + 1) * d];
                    for j in 0..m {
                        let dv = dr[j];
                        if w[j] == T::zero() || dv * dv > T::CANCEL_TOL * (near.cnx[i] + near.cny[j]) {
                            continue;
                        }
                        let wij = w[j];
                        w[j] = T::zero();
                        let yj = &near.y[j * d..(j + 1) * d];
                        let dyv = dy.get_or_insert_with(|| vec![T::zero(); m * d]);
                        for k in 0..d {
                            let term = wij * (xi[k] - yj[k]);
                            dx[k] += term;
                            dyv[j * d + k] -= term;
                        }
                    }
                }
                simd::add_assign(cs, w);
                simd::sum(w)
            }
            Weights::SqEuclidean { g } => {
                w.iter_mut().zip(g.row(i, 0, m, gbuf)).for_each(|(o, &v)| *o = v + v);
                simd::add_assign(cs, w);
                simd::sum(w)
            }
            Weights::Cosine { g, dist } => {
                let gr = g.row(i, 0, m, gbuf);
                w.copy_from_slice(gr);
                cs.iter_mut().zip(gr).zip(&dist[r.clone()]).for_each(|((a, &gv), &dv)| *a += gv * (T::one() - dv));
                simd::dot_one_minus(gr, &dist[r])
            }
        }
    }
}

/// What [`weighted_products`] returns: W·q, row sums of S, Wᵀ·p, column sums of
/// S, and the direct terms of near pairs for the rows (n × d) and columns (m × d).
struct Products<T> {
    wq: Vec<T>,
    rs: Vec<T>,
    wtp: Vec<T>,
    cs: Vec<T>,
    direct_x: Vec<T>,
    direct_y: Vec<T>,
}

/// Rows per backward tile: large enough that re-packing the m × d operand per
/// tile is cheap against the tile's GEMM work.
const BACK_TILE: usize = 256;

/// Computes in one pass over G and D, without materialising the n × m weights:
/// W·q (n × d), Wᵀ·p (m × d), and the row and column sums of S.
///
/// Rows are split into a fixed number of groups (from the shapes alone, never
/// the thread count); each group accumulates its own Wᵀ·p and column sums, and
/// the groups are added in order, so results are identical for any thread count.
fn weighted_products<T: Real>(n: usize, m: usize, d: usize, wts: Weights<T>, q: &[T], p: &[T]) -> Products<T> {
    let tiles = n.div_ceil(BACK_TILE);
    // At most 8 groups, and at most ~256 MiB of per-group partials.
    let per_group_bytes = (2 * m * d + m) * std::mem::size_of::<T>();
    let groups = tiles.min(8).min((256usize << 20) / per_group_bytes.max(1)).max(1);
    let rows_per_group = tiles.div_ceil(groups) * BACK_TILE;
    let mut wq = vec![T::zero(); n * d];
    let mut rs = vec![T::zero(); n];
    let mut direct_x = vec![T::zero(); n * d];
    let partials: Vec<(Vec<T>, Vec<T>, Option<Vec<T>>)> = wq
        .par_chunks_mut(rows_per_group * d)
        .zip(rs.par_chunks_mut(rows_per_group))
        .zip(direct_x.par_chunks_mut(rows_per_group * d))
        .enumerate()
        .map(|(gi, ((wq_g, rs_g), dx_g))| {
            let g0 = gi * rows_per_group;
            let g1 = (g0 + rows_per_group).min(n);
            let mut wtp = vec![T::zero(); m * d];
            let mut cs = vec![T::zero(); m];
            let mut dy: Option<Vec<T>> = None;
            let mut buf = vec![T::zero(); BACK_TILE.min(g1 - g0) * m];
            let mut gbuf = Vec::new();
            let mut r0 = g0;
            while r0 < g1 {
                let r1 = (r0 + BACK_TILE).min(g1);
                let rows = r1 - r0;
                for i in r0..r1 {
                    let k = i - g0;
                    let (wrow, dxi) = (&mut buf[(i - r0) * m..(i - r0 + 1) * m], &mut dx_g[k * d..(k + 1) * d]);
                    rs_g[k] = wts.row(i, m, wrow, &mut cs, dxi, &mut dy, &mut gbuf);
                }
                let w_tile = MatRef::new(&buf[..rows * m], rows, m);
                gemm(T::one(), w_tile, MatRef::new(q, m, d), T::zero(), &mut wq_g[(r0 - g0) * d..(r1 - g0) * d]);
                gemm(T::one(), w_tile.t(), MatRef::new(&p[r0 * d..r1 * d], rows, d), T::one(), &mut wtp);
                r0 = r1;
            }
            (wtp, cs, dy)
        })
        .collect();
    let mut wtp = vec![T::zero(); m * d];
    let mut cs = vec![T::zero(); m];
    let mut direct_y = vec![T::zero(); m * d];
    for (pw, pc, pd) in partials {
        simd::add_assign(&mut wtp, &pw);
        simd::add_assign(&mut cs, &pc);
        if let Some(pd) = pd {
            simd::add_assign(&mut direct_y, &pd);
        }
    }
    Products { wq, rs, wtp, cs, direct_x, direct_y }
}

/// Columns per block of the self backward: a BACK_TILE × SYM_BLOCK weight block
/// (256 KiB of f32) stays in L2 between being formed and being multiplied.
const SYM_BLOCK: usize = 256;

/// Backward of self distances (y = x), all three metrics. The forward mirrors
/// its upper triangle, so D is exactly symmetric and the two roles of x
/// combine into one symmetric weight matrix built from G + Gᵀ:
/// ∂x_i = c · (u_i Σ_j S_ij − Σ_j W_ij u_j + exact near terms), with
/// * Euclidean: W = S = (G + Gᵀ) ⊘ D (0 where D = 0), c = 1, u = centred rows;
/// * squared Euclidean: W = S = G + Gᵀ, c = 2;
/// * cosine: W = G + Gᵀ, S = W ∘ (1 − D), c = 1/‖x_i‖, u = unit rows.
///
/// One GEMM per block instead of W·u and Wᵀ·u. Tiles of BACK_TILE rows are
/// independent and summed in a fixed order, so results do not depend on the
/// thread count.
#[allow(clippy::too_many_arguments)]
fn self_backward<T: Real>(
    n: usize, d: usize, metric: Metric, grad: Grad<T>, dist: &[T], u: &[T], near: Option<Near<T>>,
    scale: Option<&[T]>, gx: &mut [T],
) {
    gx.par_chunks_mut(BACK_TILE * d).enumerate().for_each(|(t, gx_t)| {
        let r0 = t * BACK_TILE;
        let r1 = (r0 + BACK_TILE).min(n);
        let rows = r1 - r0;
        let mut buf = vec![T::zero(); rows * SYM_BLOCK.min(n)];
        let mut rs = vec![T::zero(); rows];
        let mut wu = vec![T::zero(); rows * d];
        let mut direct = vec![T::zero(); rows * d];
        let mut gbuf = Vec::new();
        for c0 in (0..n).step_by(SYM_BLOCK) {
            let c1 = (c0 + SYM_BLOCK).min(n);
            let cb = c1 - c0;
            let w = &mut buf[..rows * cb];
            // Gᵀ part of the block (G[c0..c1, r0..r1]ᵀ); the G part is added row by row below.
            grad.transposed_block(r0, rows, c0, cb, w, cb);
            for i in r0..r1 {
                let wr = &mut w[(i - r0) * cb..(i - r0 + 1) * cb];
                let (g, dr) = (grad.row(i, c0, c1, &mut gbuf), &dist[i * n + c0..i * n + c1]);
                rs[i - r0] += match metric {
                    Metric::Euclidean => {
                        simd::add_div_or_zero(wr, g, dr);
                        let nr = near.expect("Euclidean needs the near-pair data");
                        if simd::any_near(dr, nr.cnx[i], &nr.cny[c0..c1], T::CANCEL_TOL) {
                            // Near pairs leave the product form; W is symmetric and so is the
                            // test, so row j adds the opposite term for the same pair.
                            let xi = &nr.x[i * d..(i + 1) * d];
                            let di = &mut direct[(i - r0) * d..(i - r0 + 1) * d];
                            for (jj, wv) in wr.iter_mut().enumerate() {
                                let (j, dv) = (c0 + jj, dr[jj]);
                                if *wv == T::zero() || dv * dv > T::CANCEL_TOL * (nr.cnx[i] + nr.cny[j]) {
                                    continue;
                                }
                                let xj = &nr.x[j * d..(j + 1) * d];
                                for k in 0..d {
                                    di[k] += *wv * (xi[k] - xj[k]);
                                }
                                *wv = T::zero();
                            }
                        }
                        simd::sum(wr)
                    }
                    Metric::SqEuclidean => {
                        simd::add_assign(wr, g);
                        simd::sum(wr)
                    }
                    Metric::Cosine => {
                        simd::add_assign(wr, g);
                        simd::dot_one_minus(wr, dr)
                    }
                };
            }
            let beta = if c0 == 0 { T::zero() } else { T::one() };
            gemm(T::one(), MatRef::new(w, rows, cb), MatRef::new(&u[c0 * d..c1 * d], cb, d), beta, &mut wu);
        }
        for (k, o) in gx_t.chunks_mut(d).enumerate() {
            let i = r0 + k;
            let c = match metric {
                Metric::SqEuclidean => T::c(2.0),
                _ => scale.map_or(T::one(), |s| s[i]),
            };
            let (ui, wui, di) = (&u[i * d..(i + 1) * d], &wu[k * d..(k + 1) * d], &direct[k * d..(k + 1) * d]);
            for q in 0..d {
                o[q] = c * (rs[k] * ui[q] - wui[q] + di[q]);
            }
        }
    });
}

/// out_i = scale_i · (c_i · u_i − Σ minus_i + Σ plus_i) row by row (the shared last step of every backward).
fn combine<T: Real>(out: &mut [T], d: usize, c: &[T], u: &[T], minus: &[&[T]], plus: &[&[T]], scale: Option<&[T]>) {
    out.par_chunks_mut(d).enumerate().for_each(|(i, o)| {
        let sc = scale.map_or(T::one(), |s| s[i]);
        for k in 0..d {
            let mut v = c[i] * u[i * d + k];
            for a in minus {
                v -= a[i * d + k];
            }
            for a in plus {
                v += a[i * d + k];
            }
            o[k] = sc * v;
        }
    });
}

/// Backward of [`pairwise`]: given the forward output `dist` (`n × m`) and the
/// upstream gradient `grad` (`n × m`, or broadcast to it: see [`Grad`]), writes ∂L/∂x into `gx` (n × d) and ∂L/∂y
/// into `gy` (m × d). When `y` is `None` (self distances) both roles of `x`
/// are summed into `gx` and `gy` is left untouched.
///
/// * Euclidean: W = G ⊘ D (0 where D = 0, so duplicates get a zero gradient),
///   ∂x_i = x_i Σ_j W_ij − Σ_j W_ij y_j, ∂y_j = y_j Σ_i W_ij − Σ_i W_ij x_i.
/// * squared Euclidean: the same with W = 2G.
/// * cosine: with c = 1 − D, ∂x_i = (x̂_i Σ_j G_ij c_ij − Σ_j G_ij ŷ_j) / ‖x_i‖.
#[allow(clippy::too_many_arguments)]
pub fn pairwise_backward<T: Real>(
    x: Rows<T>, y: Option<Rows<T>>, d: usize, metric: Metric,
    dist: &[T], grad: Grad<T>, gx: &mut [T], gy: &mut [T],
) -> Result<()> {
    let same = y.is_none();
    let y = y.unwrap_or(x);
    let (n, m) = (x.n, y.n);
    check_len("x", x.data.len(), n, d)?;
    check_len("y", y.data.len(), m, d)?;
    check_len("dist", dist.len(), n, m)?;
    grad.validate(n, m)?;
    check_len("grad_x", gx.len(), n, d)?;
    if !same {
        check_len("grad_y", gy.len(), m, d)?;
    }
    match metric {
        Metric::Euclidean | Metric::SqEuclidean => {
            // Centred rows: the product form below is translation invariant, and
            // centring keeps its terms small (as in the forward pass).
            let prep = SqEuclid::centred_only(x.data, n, if same { None } else { Some((y.data, m)) }, d);
            let xc = &prep.xc;
            let yc: &[T] = prep.yc.as_deref().unwrap_or(xc);
            let cny: &[T] = prep.ny.as_deref().unwrap_or(&prep.nx);
            let near = Near { x: x.data, y: y.data, cnx: &prep.nx, cny, d };
            if same {
                self_backward(n, d, metric, grad, dist, xc, Some(near), None, gx);
            } else {
                let wts = if metric == Metric::Euclidean {
                    Weights::Euclidean { g: grad, dist, near }
                } else {
                    Weights::SqEuclidean { g: grad }
                };
                let pr = weighted_products(n, m, d, wts, yc, xc);
                combine(gx, d, &pr.rs, xc, &[&pr.wq], &[&pr.direct_x], None);
                combine(gy, d, &pr.cs, yc, &[&pr.wtp], &[&pr.direct_y], None);
            }
        }
        Metric::Cosine => {
            let (ux, nx) = normalise(x.data, n, d);
            let inv = |v: &[T]| -> Vec<T> { v.iter().map(|&r| if r > T::zero() { T::one() / r } else { T::zero() }).collect() };
            if same {
                self_backward(n, d, metric, grad, dist, &ux, None, Some(&inv(&nx)), gx);
            } else {
                let (uy, ny) = normalise(y.data, m, d);
                let wts = Weights::Cosine { g: grad, dist };
                let pr = weighted_products(n, m, d, wts, &uy, &ux);
                combine(gx, d, &pr.rs, &ux, &[&pr.wq], &[], Some(&inv(&nx)));
                combine(gy, d, &pr.cs, &uy, &[&pr.wtp], &[], Some(&inv(&ny)));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lcg(seed: u64, len: usize) -> Vec<f64> {
        let mut s = seed;
        (0..len)
            .map(|_| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((s >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
            })
            .collect()
    }

    fn naive(x: &[f64], n: usize, y: &[f64], m: usize, d: usize, metric: Metric) -> Vec<f64> {
        let mut out = vec![0.0; n * m];
        for i in 0..n {
            for j in 0..m {
                let (a, b) = (&x[i * d..(i + 1) * d], &y[j * d..(j + 1) * d]);
                out[i * m + j] = match metric {
                    Metric::SqEuclidean => a.iter().zip(b).map(|(p, q)| (p - q) * (p - q)).sum(),
                    Metric::Euclidean => a.iter().zip(b).map(|(p, q)| (p - q) * (p - q)).sum::<f64>().sqrt(),
                    Metric::Cosine => {
                        let ab: f64 = a.iter().zip(b).map(|(p, q)| p * q).sum();
                        let aa: f64 = a.iter().map(|p| p * p).sum();
                        let bb: f64 = b.iter().map(|p| p * p).sum();
                        1.0 - ab / (aa.sqrt() * bb.sqrt())
                    }
                };
            }
        }
        out
    }

    #[test]
    fn forward_matches_naive() {
        for &metric in &[Metric::Euclidean, Metric::SqEuclidean, Metric::Cosine] {
            for &(n, m, d) in &[(1, 1, 1), (3, 70, 5), (130, 2, 17), (200, 1100, 3)] {
                let x = lcg(1, n * d);
                let y = lcg(2, m * d);
                let mut out = vec![0.0; n * m];
                pairwise(Rows { data: &x, n }, Some(Rows { data: &y, n: m }), d, metric, &mut out).unwrap();
                let want = naive(&x, n, &y, m, d, metric);
                for (a, b) in out.iter().zip(&want) {
                    assert!((a - b).abs() < 1e-10, "{metric:?} {a} {b}");
                }
            }
        }
    }

    #[test]
    fn self_distances_are_exactly_symmetric_across_blocks() {
        let (n, d) = (700, 5);
        let x = lcg(9, n * d);
        for &metric in &[Metric::Euclidean, Metric::Cosine] {
            let mut out = vec![0.0; n * n];
            pairwise(Rows { data: &x, n }, None, d, metric, &mut out).unwrap();
            let want = naive(&x, n, &x, n, d, metric);
            for i in 0..n {
                assert_eq!(out[i * n + i], 0.0);
                for j in 0..n {
                    assert_eq!(out[i * n + j], out[j * n + i]);
                    assert!((out[i * n + j] - want[i * n + j]).abs() < 1e-10);
                }
            }
        }
    }

    #[test]
    fn self_distance_is_exactly_zero_and_near_duplicates_are_accurate() {
        let d = 64;
        let base: Vec<f32> = lcg(3, d).into_iter().map(|v| v as f32 + 100.0).collect();
        let mut x = base.clone();
        let delta: Vec<f32> = lcg(4, d).into_iter().map(|v| (v * 1e-4) as f32).collect();
        x.extend(base.iter().zip(&delta).map(|(a, b)| a + b));
        let mut out = vec![0.0f32; 4];
        pairwise(Rows { data: &x, n: 2 }, None, d, Metric::Euclidean, &mut out).unwrap();
        assert_eq!(out[0], 0.0);
        assert_eq!(out[3], 0.0);
        let truth: f64 = (0..d)
            .map(|k| {
                let t = x[d + k] as f64 - x[k] as f64;
                t * t
            })
            .sum::<f64>()
            .sqrt();
        assert!(((out[1] as f64) - truth).abs() / truth < 1e-2, "{} vs {truth}", out[1]);
    }

    #[test]
    fn duplicate_rows_are_exact_zeros_and_the_rest_matches_naive() {
        // Rows 0, 2, 5 of x and rows 1, 3 of y are one point; x's rows 4 and 6 are another.
        let d = 9;
        let (n, m) = (7, 5);
        let mut x = lcg(21, n * d);
        let mut y = lcg(22, m * d);
        let p: Vec<f64> = (0..d).map(|k| 3.0 + k as f64).collect();
        for &i in &[0usize, 2, 5] {
            x[i * d..(i + 1) * d].copy_from_slice(&p);
        }
        for &j in &[1usize, 3] {
            y[j * d..(j + 1) * d].copy_from_slice(&p);
        }
        x[4 * d] = 0.0;
        let q: Vec<f64> = x[4 * d..5 * d].to_vec();
        x[6 * d..7 * d].copy_from_slice(&q);
        x[6 * d] = -0.0; // −0 and +0 are the same coordinate
        for &metric in &[Metric::Euclidean, Metric::SqEuclidean, Metric::Cosine] {
            let mut out = vec![1.0; n * m];
            pairwise(Rows { data: &x, n }, Some(Rows { data: &y, n: m }), d, metric, &mut out).unwrap();
            let want = naive(&x, n, &y, m, d, metric);
            for &i in &[0usize, 2, 5] {
                for &j in &[1usize, 3] {
                    assert_eq!(out[i * m + j], 0.0, "{metric:?} ({i}, {j})");
                }
            }
            for (a, b) in out.iter().zip(&want) {
                assert!((a - b).abs() <= 1e-12 * (1.0 + b.abs()), "{metric:?}: {a} vs {b}");
            }
            let mut own = vec![1.0; n * n];
            pairwise(Rows { data: &x, n }, None, d, metric, &mut own).unwrap();
            for &(i, j) in &[(0usize, 2usize), (2, 5), (0, 5), (4, 6)] {
                assert_eq!(own[i * n + j], 0.0, "{metric:?} self ({i}, {j})");
                assert_eq!(own[j * n + i], 0.0, "{metric:?} self ({j}, {i})");
            }
            let want = naive(&x, n, &x, n, d, metric);
            for (a, b) in own.iter().zip(&want) {
                assert!((a - b).abs() <= 1e-12 * (1.0 + b.abs()), "{metric:?} self: {a} vs {b}");
            }
        }
    }

    #[test]
    fn huge_and_tiny_rows_neither_overflow_nor_underflow() {
        let (n, m, d) = (6, 4, 5);
        let x = lcg(31, n * d);
        let y = lcg(32, m * d);
        for &scale in &[1e30f64, 1e-30] {
            let xs: Vec<f32> = x.iter().map(|&v| (v * scale) as f32).collect();
            let ys: Vec<f32> = y.iter().map(|&v| (v * scale) as f32).collect();
            let (x64, y64): (Vec<f64>, Vec<f64>) = (xs.iter().map(|&v| v as f64).collect(), ys.iter().map(|&v| v as f64).collect());
            let want = naive(&x64, n, &y64, m, d, Metric::Euclidean);
            let mut out = vec![0.0f32; n * m];
            pairwise(Rows { data: &xs, n }, Some(Rows { data: &ys, n: m }), d, Metric::Euclidean, &mut out).unwrap();
            for (a, b) in out.iter().zip(&want) {
                assert!(((*a as f64) - b).abs() <= 1e-5 * b, "scale {scale}: {a} vs {b}");
            }
            // Squared distances of 1e30-sized rows exceed f32: +inf, never NaN; of 1e-30 rows underflow to 0.
            pairwise(Rows { data: &xs, n }, Some(Rows { data: &ys, n: m }), d, Metric::SqEuclidean, &mut out).unwrap();
            for (a, b) in out.iter().zip(&want) {
                let t = b * b;
                if t > f32::MAX as f64 {
                    assert_eq!(*a, f32::INFINITY);
                } else {
                    assert!(((*a as f64) - t).abs() <= 1e-5 * t + 1e-44, "scale {scale}: {a} vs {t}");
                }
            }
            let mut own = vec![1.0f32; n * n];
            pairwise(Rows { data: &xs, n }, None, d, Metric::Euclidean, &mut own).unwrap();
            let want = naive(&x64, n, &x64, n, d, Metric::Euclidean);
            for (a, b) in own.iter().zip(&want) {
                assert!(((*a as f64) - b).abs() <= 1e-5 * b, "self, scale {scale}: {a} vs {b}");
            }
        }
        // f64 at 1e300.
        let xs: Vec<f64> = x.iter().map(|&v| v * 1e300).collect();
        let mut out = vec![0.0; n * n];
        pairwise(Rows { data: &xs, n }, None, d, Metric::Euclidean, &mut out).unwrap();
        let want = naive(&x, n, &x, n, d, Metric::Euclidean);
        for (a, b) in out.iter().zip(&want) {
            assert!((a - b * 1e300).abs() <= 1e-12 * b * 1e300, "{a} vs {}", b * 1e300);
        }
    }

    fn loss_and_grad(x: &[f64], n: usize, y: &[f64], m: usize, d: usize, metric: Metric, gw: &[f64]) -> f64 {
        let mut out = vec![0.0; n * m];
        pairwise(Rows { data: x, n }, Some(Rows { data: y, n: m }), d, metric, &mut out).unwrap();
        out.iter().zip(gw).map(|(a, b)| a * b).sum()
    }

    #[test]
    fn backward_matches_finite_differences() {
        let (n, m, d) = (5, 4, 3);
        for &metric in &[Metric::Euclidean, Metric::SqEuclidean, Metric::Cosine] {
            let x = lcg(5, n * d);
            let y = lcg(6, m * d);
            let g = lcg(7, n * m);
            let mut dist = vec![0.0; n * m];
            pairwise(Rows { data: &x, n }, Some(Rows { data: &y, n: m }), d, metric, &mut dist).unwrap();
            let (mut gx, mut gy) = (vec![0.0; n * d], vec![0.0; m * d]);
            pairwise_backward(Rows { data: &x, n }, Some(Rows { data: &y, n: m }), d, metric, &dist, Grad::dense(&g, n, m), &mut gx, &mut gy).unwrap();
            let h = 1e-6;
            for k in 0..n * d {
                let (mut xp, mut xm) = (x.clone(), x.clone());
                xp[k] += h;
                xm[k] -= h;
                let fd = (loss_and_grad(&xp, n, &y, m, d, metric, &g) - loss_and_grad(&xm, n, &y, m, d, metric, &g)) / (2.0 * h);
                assert!((fd - gx[k]).abs() < 1e-6, "{metric:?} x[{k}] {fd} {}", gx[k]);
            }
            for k in 0..m * d {
                let (mut yp, mut ym) = (y.clone(), y.clone());
                yp[k] += h;
                ym[k] -= h;
                let fd = (loss_and_grad(&x, n, &yp, m, d, metric, &g) - loss_and_grad(&x, n, &ym, m, d, metric, &g)) / (2.0 * h);
                assert!((fd - gy[k]).abs() < 1e-6, "{metric:?} y[{k}] {fd} {}", gy[k]);
            }
            // Self distances: gx must equal gx + gy of the two-argument call with y = x.
            let mut ds = vec![0.0; n * n];
            pairwise(Rows { data: &x, n }, None, d, metric, &mut ds).unwrap();
            let gs = lcg(8, n * n);
            let mut g1 = vec![0.0; n * d];
            pairwise_backward(Rows { data: &x, n }, None, d, metric, &ds, Grad::dense(&gs, n, n), &mut g1, &mut []).unwrap();
            let (mut ga, mut gb) = (vec![0.0; n * d], vec![0.0; n * d]);
            pairwise_backward(Rows { data: &x, n }, Some(Rows { data: &x, n }), d, metric, &ds, Grad::dense(&gs, n, n), &mut ga, &mut gb).unwrap();
            for k in 0..n * d {
                assert!((g1[k] - ga[k] - gb[k]).abs() < 1e-9);
            }
        }
    }

    #[test]
    fn backward_over_many_tiles_and_groups_matches_naive() {
        let (n, m, d) = (1100, 70, 3);
        let x = lcg(11, n * d);
        let mut y = lcg(12, m * d);
        y[..d].copy_from_slice(&x[..d]); // a duplicate pair: zero distance, zero weight
        let g = lcg(13, n * m);
        let mut dist = vec![0.0; n * m];
        pairwise(Rows { data: &x, n }, Some(Rows { data: &y, n: m }), d, Metric::Euclidean, &mut dist).unwrap();
        let (mut gx, mut gy) = (vec![0.0; n * d], vec![0.0; m * d]);
        pairwise_backward(Rows { data: &x, n }, Some(Rows { data: &y, n: m }), d, Metric::Euclidean, &dist, Grad::dense(&g, n, m), &mut gx, &mut gy).unwrap();
        let (mut wx, mut wy) = (vec![0.0; n * d], vec![0.0; m * d]);
        for i in 0..n {
            for j in 0..m {
                let dv = dist[i * m + j];
                if dv == 0.0 {
                    continue;
                }
                for k in 0..d {
                    let t = g[i * m + j] * (x[i * d + k] - y[j * d + k]) / dv;
                    wx[i * d + k] += t;
                    wy[j * d + k] -= t;
                }
            }
        }
        for (a, b) in gx.iter().zip(&wx).chain(gy.iter().zip(&wy)) {
            assert!((a - b).abs() < 1e-9, "{a} {b}");
        }
    }

    #[test]
    fn self_backward_over_many_tiles_matches_naive() {
        let (n, d) = (600, 3);
        let mut x = lcg(14, n * d);
        let dup = x[300 * d..301 * d].to_vec();
        x[7 * d..8 * d].copy_from_slice(&dup); // exact duplicate rows 7 and 300
        x[9 * d] = x[400 * d] + 1e-9; // a near pair: rows 9 and 400 differ only slightly
        x[9 * d + 1] = x[400 * d + 1];
        x[9 * d + 2] = x[400 * d + 2];
        let g = lcg(15, n * n);
        let norm = |i: usize| x[i * d..(i + 1) * d].iter().map(|v| v * v).sum::<f64>().sqrt();
        for &metric in &[Metric::Euclidean, Metric::SqEuclidean, Metric::Cosine] {
            let mut dist = vec![0.0; n * n];
            pairwise(Rows { data: &x, n }, None, d, metric, &mut dist).unwrap();
            let mut gx = vec![0.0; n * d];
            pairwise_backward(Rows { data: &x, n }, None, d, metric, &dist, Grad::dense(&g, n, n), &mut gx, &mut []).unwrap();
            let mut want = vec![0.0; n * d];
            for i in 0..n {
                for j in 0..n {
                    let gs = g[i * n + j] + g[j * n + i];
                    if metric == Metric::Cosine {
                        // ∂(1 − x̂_i·x̂_j)/∂x_i = ((x̂_i·x̂_j) x̂_i − x̂_j) / ‖x_i‖
                        let (ni, nj) = (norm(i), norm(j));
                        let dot: f64 = (0..d).map(|k| x[i * d + k] * x[j * d + k]).sum::<f64>() / (ni * nj);
                        for k in 0..d {
                            want[i * d + k] += gs * (dot * x[i * d + k] / ni - x[j * d + k] / nj) / ni;
                        }
                        continue;
                    }
                    let w = match metric {
                        Metric::Euclidean if dist[i * n + j] == 0.0 => 0.0,
                        Metric::Euclidean => gs / dist[i * n + j],
                        _ => 2.0 * gs,
                    };
                    for k in 0..d {
                        want[i * d + k] += w * (x[i * d + k] - x[j * d + k]);
                    }
                }
            }
            for (a, b) in gx.iter().zip(&want) {
                assert!((a - b).abs() < 1e-8 * (1.0 + b.abs()), "{metric:?} {a} {b}");
            }
        }
    }

    #[test]
    fn broadcast_gradients_equal_their_dense_expansion() {
        // (n, m, d): several tiles and column blocks in the self case.
        for &(n, m, d) in &[(7usize, 5usize, 3usize), (300, 270, 4)] {
            let x = lcg(21, n * d);
            let y = lcg(22, m * d);
            for &metric in &[Metric::Euclidean, Metric::SqEuclidean, Metric::Cosine] {
                for same in [false, true] {
                    let mm = if same { n } else { m };
                    let yr = if same { None } else { Some(Rows { data: &y[..], n: m }) };
                    let mut dist = vec![0.0; n * mm];
                    pairwise(Rows { data: &x, n }, yr, d, metric, &mut dist).unwrap();
                    for &(rows, cols) in &[(1, 1), (n, 1), (1, mm)] {
                        let small = lcg(23, rows * cols);
                        let dense: Vec<f64> = (0..n * mm)
                            .map(|k| small[(k / mm).min(rows - 1) * cols + (k % mm).min(cols - 1)])
                            .collect();
                        let run = |g: Grad<f64>| {
                            let (mut gx, mut gy) = (vec![0.0; n * d], vec![0.0; mm * d]);
                            pairwise_backward(Rows { data: &x, n }, yr, d, metric, &dist, g, &mut gx, &mut gy).unwrap();
                            (gx, gy)
                        };
                        let (bx, by) = run(Grad { data: &small, rows, cols });
                        let (dx, dy) = run(Grad::dense(&dense, n, mm));
                        for (a, b) in bx.iter().zip(&dx).chain(by.iter().zip(&dy)) {
                            assert!((a - b).abs() < 1e-10 * (1.0 + b.abs()), "{metric:?} same={same} ({rows},{cols}) {a} {b}");
                        }
                    }
                    let bad = [1.0; 2];
                    let (mut gx, mut gy) = (vec![0.0; n * d], vec![0.0; mm * d]);
                    let r = pairwise_backward(Rows { data: &x, n }, yr, d, metric, &dist, Grad { data: &bad, rows: 2, cols: 1 }, &mut gx, &mut gy);
                    assert!(matches!(r, Err(Error::Shape(_))));
                }
            }
        }
    }

    #[test]
    fn errors_not_panics() {
        let x = [1.0f64, f64::NAN];
        let mut out = [0.0; 1];
        assert!(matches!(pairwise(Rows { data: &x, n: 1 }, None, 2, Metric::Euclidean, &mut out), Err(Error::NonFinite(_))));
        assert!(matches!(pairwise(Rows { data: &x[..0], n: 0 }, None, 2, Metric::Euclidean, &mut out), Err(Error::Shape(_))));
        assert!(Metric::parse("manhattan").is_err());
    }
}
