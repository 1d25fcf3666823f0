//! Shared machinery of the loss kernels: the batch description, tiled
//! evaluation of distance / similarity rows, and the two backward helpers
//! (dense tiles recomputed on the fly, and sparse mined pairs).
//!
//! Nothing here keeps a B×B matrix: every pass walks fixed 64-row tiles of the
//! (anchors × references) matrix, so memory is O(64·M) per running task.

use crate::distances::SqEuclid;
use crate::error::{check_finite, check_len, Error, Result};
use crate::linalg::{col_means, gemm, MatRef, ROW_TILE};
use crate::Real;
use rayon::prelude::*;

/// Rows per tile (fixed: results do not depend on the thread count).
pub const TILE: usize = 2 * ROW_TILE;
/// Tiles whose column partials are held at once when references need gradients.
const GROUP: usize = 8;

/// How a loss turns the squared Euclidean distance s = ‖x_i − r_j‖² into its distance d.
///
/// `Cosine` expects unit rows (the caller L2-normalises them): for unit rows
/// ½‖u − v‖² = 1 − cos θ, so the guarded squared-distance tiles serve all three.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Metric {
    /// d = √s (Euclidean distance).
    Euclidean,
    /// d = s.
    SqEuclidean,
    /// d = s / 2 = 1 − cos θ on unit rows.
    Cosine,
}

impl Metric {
    pub const NAMES: &'static [&'static str] = &["euclidean", "sqeuclidean", "cosine"];

    pub fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "euclidean" => Metric::Euclidean,
            "sqeuclidean" => Metric::SqEuclidean,
            "cosine" => Metric::Cosine,
            _ => {
                return Err(Error::InvalidParameter(format!(
                    "unknown distance {s:?}; accepted: {}",
                    Metric::NAMES.join(", ")
                )))
            }
        })
    }

    /// The loss's distance d from the squared distance s.
    #[inline]
    pub fn of_sq<T: Real>(self, s: T) -> T {
        match self {
            Metric::Euclidean => s.sqrt(),
            Metric::SqEuclidean => s,
            Metric::Cosine => s * T::c(0.5),
        }
    }

    /// A tile row of squared distances turned into d in place.
    #[inline]
    pub fn row<T: Real>(self, row: &mut [T]) {
        match self {
            Metric::Euclidean => row.iter_mut().for_each(|v| *v = v.sqrt()),
            Metric::SqEuclidean => {}
            Metric::Cosine => row.iter_mut().for_each(|v| *v *= T::c(0.5)),
        }
    }

    /// The distance coefficient c of [`Space::backward`] / [`sparse_backward`]
    /// (∂L/∂x_i = c·(x_i − r_j)) for ∂L/∂d = `g` at squared distance `s`:
    /// c = 2·g·∂d/∂s. Euclidean: g/D, taken as 0 at D = 0 (never NaN).
    #[inline]
    pub fn coef<T: Real>(self, s: T, g: T) -> T {
        match self {
            Metric::Euclidean => g * sqrt_and_inv(s).1,
            Metric::SqEuclidean => g * T::c(2.0),
            Metric::Cosine => g,
        }
    }
}

/// A labelled batch, optionally with cross-batch references (anchors come from
/// `x`, positives and negatives from `refs`; without refs they come from `x`).
#[derive(Clone, Copy)]
pub struct Batch<'a, T> {
    pub x: &'a [T],
    pub n: usize,
    pub d: usize,
    pub labels: &'a [i64],
    pub refs: Option<(&'a [T], usize, &'a [i64])>,
}

impl<'a, T: Real> Batch<'a, T> {
    pub fn validate(&self) -> Result<()> {
        if self.n == 0 || self.d == 0 {
            return Err(Error::Shape(format!("embeddings must be non-empty, got shape ({}, {})", self.n, self.d)));
        }
        check_len("embeddings", self.x.len(), self.n, self.d)?;
        check_finite("embeddings", self.x)?;
        if self.labels.len() != self.n {
            return Err(Error::Shape(format!("labels has length {}, expected {}", self.labels.len(), self.n)));
        }
        if let Some((r, m, rl)) = self.refs {
            if m == 0 {
                return Err(Error::Shape("ref_embeddings must be non-empty".into()));
            }
            check_len("ref_embeddings", r.len(), m, self.d)?;
            check_finite("ref_embeddings", r)?;
            if rl.len() != m {
                return Err(Error::Shape(format!("ref_labels has length {}, expected {m}", rl.len())));
            }
        }
        Ok(())
    }
    /// Reference rows, their count and labels (the batch itself without refs).
    pub fn r(&self) -> (&'a [T], usize, &'a [i64]) {
        self.refs.unwrap_or((self.x, self.n, self.labels))
    }
    pub fn same(&self) -> bool {
        self.refs.is_none()
    }
    /// Squared-distance space of anchors against references.
    pub fn space(&self) -> Space<'a, T> {
        let (r, m, _) = self.r();
        Space::dist(self.x, self.n, if self.same() { None } else { Some((r, m)) }, self.d)
    }
}

/// Unlabelled rows for losses over given tuples: anchors from `x` (n×d),
/// partners from `refs` (m×d), or from `x` itself without refs.
#[derive(Clone, Copy)]
pub struct Rows<'a, T> {
    pub x: &'a [T],
    pub n: usize,
    pub d: usize,
    pub refs: Option<(&'a [T], usize)>,
}

impl<'a, T: Real> Rows<'a, T> {
    pub fn validate(&self) -> Result<()> {
        if self.n == 0 || self.d == 0 {
            return Err(Error::Shape(format!("embeddings must be non-empty, got shape ({}, {})", self.n, self.d)));
        }
        check_len("embeddings", self.x.len(), self.n, self.d)?;
        check_finite("embeddings", self.x)?;
        if let Some((r, m)) = self.refs {
            if m == 0 {
                return Err(Error::Shape("ref_embeddings must be non-empty".into()));
            }
            check_len("ref_embeddings", r.len(), m, self.d)?;
            check_finite("ref_embeddings", r)?;
        }
        Ok(())
    }
    /// Partner rows and their count (the rows themselves without refs).
    pub fn r(&self) -> (&'a [T], usize) {
        self.refs.unwrap_or((self.x, self.n))
    }
    pub fn same(&self) -> bool {
        self.refs.is_none()
    }
}

/// Checks an upstream gradient ∂L/∂per: length `len`, finite.
pub fn check_upstream<T: Real>(g: &[T], len: usize) -> Result<()> {
    if g.len() != len {
        return Err(Error::Shape(format!("upstream gradient has length {}, expected {len}", g.len())));
    }
    check_finite("upstream gradient", g)
}

/// One index column checked against a row count (also < 2³², the width the
/// sparse backward stores).
fn check_index(v: i64, rows: usize, what: &str) -> Result<u32> {
    if v < 0 || v as u64 >= rows as u64 || v > u32::MAX as i64 {
        return Err(Error::InvalidInput(format!("{what} index out of range: {v} (have {rows} rows)")));
    }
    Ok(v as u32)
}

/// Pairs (a[k] row of x, b[k] row of the partners) from two int64 columns.
pub fn index_pairs(a: &[i64], b: &[i64], n: usize, m: usize, what: &str) -> Result<Vec<(u32, u32)>> {
    if a.len() != b.len() {
        return Err(Error::Shape(format!("{what} index arrays have lengths {} and {}", a.len(), b.len())));
    }
    a.iter().zip(b).map(|(&i, &j)| Ok((check_index(i, n, what)?, check_index(j, m, what)?))).collect()
}

/// Triplets (a[k] row of x; p[k], q[k] rows of the partners) from three int64 columns.
pub fn index_triplets(a: &[i64], p: &[i64], q: &[i64], n: usize, m: usize) -> Result<Vec<[u32; 3]>> {
    if a.len() != p.len() || a.len() != q.len() {
        return Err(Error::Shape(format!(
            "triplet index arrays have lengths {}, {} and {}",
            a.len(),
            p.len(),
            q.len()
        )));
    }
    (0..a.len())
        .map(|k| Ok([check_index(a[k], n, "triplet")?, check_index(p[k], m, "triplet")?, check_index(q[k], m, "triplet")?]))
        .collect()
}

enum Kind<'a, T> {
    /// Squared Euclidean distances (guarded product form).
    Dist(SqEuclid<'a, T>),
    /// Scaled dot products `scale · x_i·r_j`.
    Dot(T),
}

/// Rows `x` (n×d) against rows `r` (m×d): the matrix walked in tiles.
pub struct Space<'a, T> {
    pub x: &'a [T],
    pub n: usize,
    pub r: &'a [T],
    pub m: usize,
    pub d: usize,
    pub same: bool,
    kind: Kind<'a, T>,
}

impl<'a, T: Real> Space<'a, T> {
    /// Squared Euclidean distances; `r = None` means x against itself.
    pub fn dist(x: &'a [T], n: usize, r: Option<(&'a [T], usize)>, d: usize) -> Self {
        let same = r.is_none();
        let (rr, m) = r.unwrap_or((x, n));
        Space { x, n, r: rr, m, d, same, kind: Kind::Dist(SqEuclid::new(x, n, r, d)) }
    }
    /// Dot products times `scale`; `r = None` means x against itself.
    pub fn dot(x: &'a [T], n: usize, r: Option<(&'a [T], usize)>, d: usize, scale: T) -> Self {
        let same = r.is_none();
        let (rr, m) = r.unwrap_or((x, n));
        Space { x, n, r: rr, m, d, same, kind: Kind::Dot(scale) }
    }

    pub fn n_tiles(&self) -> usize {
        self.n.div_ceil(TILE)
    }

    /// Values of rows `r0..r1` against all references into `out` ((r1−r0)×m).
    pub fn fill(&self, r0: usize, r1: usize, out: &mut [T]) {
        match &self.kind {
            Kind::Dist(p) => p.fill_rows(r0, r1, out),
            Kind::Dot(s) => {
                let a = MatRef::new(self.x, self.n, self.d).rows_range(r0, r1);
                let b = MatRef::new(self.r, self.m, self.d).t();
                gemm(*s, a, b, T::zero(), out);
            }
        }
    }

    /// Calls `f(r0, r1, tile)` on every tile in parallel; results in tile order.
    pub fn map_tiles<R: Send, F: Fn(usize, usize, &mut [T]) -> R + Sync>(&self, f: F) -> Vec<R> {
        (0..self.n_tiles())
            .into_par_iter()
            .map(|t| {
                let r0 = t * TILE;
                let r1 = (r0 + TILE).min(self.n);
                let mut buf = vec![T::zero(); (r1 - r0) * self.m];
                self.fill(r0, r1, &mut buf);
                f(r0, r1, &mut buf)
            })
            .collect()
    }

    /// Gradient of a loss that depends on the tile values, recomputing tiles.
    ///
    /// `coef(r0, r1, vals, c)` turns a tile of values into coefficients `c` with
    /// * distances: ∂L/∂x_i = Σ_j c_ij (x_i − r_j) and ∂L/∂r_j = −Σ_i c_ij (x_i − r_j)
    ///   (so c = 2·∂L/∂D² = ∂L/∂D / D);
    /// * dot products: c = ∂L/∂s, ∂L/∂x_i = scale Σ_j c_ij r_j, ∂L/∂r_j = scale Σ_i c_ij x_i.
    ///
    /// `symmetric` (only with x = r) says that `c` already holds the total
    /// coefficient of the unordered pair (both roles of every row), so the
    /// column pass is skipped. Writes ∂L/∂x into `gx` and, with separate
    /// references, ∂L/∂r into `gr` (which must then be m×d).
    pub fn backward<F>(&self, symmetric: bool, coef: F, gx: &mut [T], gr: &mut [T])
    where
        F: Fn(usize, usize, &[T], &mut [T]) + Sync,
    {
        let (n, m, d) = (self.n, self.m, self.d);
        let is_dist = matches!(self.kind, Kind::Dist(_));
        let scale = match self.kind {
            Kind::Dot(s) => s,
            Kind::Dist(_) => T::one(),
        };
        let need_cols = !(self.same && symmetric);
        // Distances: Σ_j c_ij (x_i − r_j) is formed as (Σ_j c_ij) x_i − Σ_j c_ij r_j, which cancels when the
        // rows sit far from the origin relative to their spread (a collapsed batch). Centring both on their
        // joint mean (a translation: the differences are unchanged) keeps the gradient's relative precision.
        let centred = if is_dist { Some(centre(self.x, n, if self.same { None } else { Some((self.r, m)) }, d)) } else { None };
        let (xv, rv): (&[T], &[T]) = match &centred {
            Some((cx, cr)) => (cx, if self.same { cx } else { cr }),
            None => (self.x, self.r),
        };
        let xs = MatRef::new(xv, n, d);
        let rs = MatRef::new(rv, m, d);
        // Pairs whose distance is tiny against the rows' norms (near-duplicates: the forward recomputed them
        // directly) still cancel in the product form; their terms c·(x_i − r_j) are added directly instead.
        let sq_norms = |v: &[T], rows: usize| -> Vec<T> { (0..rows).map(|i| v[i * d..(i + 1) * d].iter().map(|&a| a * a).sum()).collect() };
        let (nx, nr) = if is_dist {
            let nx = sq_norms(xv, n);
            let nr = if self.same { nx.clone() } else { sq_norms(rv, m) };
            (nx, nr)
        } else {
            (Vec::new(), Vec::new())
        };
        let direct_term = |i: usize, j: usize, cij: T, out: &mut [T]| {
            let (xi, rj) = (&xv[i * d..(i + 1) * d], &rv[j * d..(j + 1) * d]);
            for ((o, &a), &b) in out.iter_mut().zip(xi).zip(rj) {
                *o += cij * (a - b);
            }
        };
        // One tile: row gradients into `gt`; with need_cols, returns (column sums, cᵀ·x_tile).
        let tile = |t: usize, gt: &mut [T]| -> Option<(Vec<T>, Vec<T>)> {
            let r0 = t * TILE;
            let r1 = (r0 + TILE).min(n);
            let rows = r1 - r0;
            let mut vals = vec![T::zero(); rows * m];
            self.fill(r0, r1, &mut vals);
            let mut c = vec![T::zero(); rows * m];
            coef(r0, r1, &vals, &mut c);
            let mut direct: Vec<(usize, usize, T)> = Vec::new();
            if is_dist {
                for i in 0..rows {
                    let ni = nx[r0 + i];
                    for j in 0..m {
                        let k = i * m + j;
                        if c[k] != T::zero() && vals[k] <= T::CANCEL_TOL * (ni + nr[j]) {
                            direct.push((i, j, c[k]));
                            c[k] = T::zero();
                        }
                    }
                }
            }
            drop(vals);
            let cm = MatRef::new(&c, rows, m);
            if is_dist {
                gemm(-T::one(), cm, rs, T::zero(), gt);
                for i in 0..rows {
                    let s: T = c[i * m..(i + 1) * m].iter().copied().sum();
                    let xi = &xv[(r0 + i) * d..(r0 + i + 1) * d];
                    for (g, &v) in gt[i * d..(i + 1) * d].iter_mut().zip(xi) {
                        *g += s * v;
                    }
                }
                for &(i, j, cij) in &direct {
                    direct_term(r0 + i, j, cij, &mut gt[i * d..(i + 1) * d]);
                }
            } else {
                gemm(scale, cm, rs, T::zero(), gt);
            }
            if !need_cols {
                return None;
            }
            let mut p = vec![T::zero(); m * d];
            gemm(T::one(), cm.t(), xs.rows_range(r0, r1), T::zero(), &mut p);
            // The column side of a direct pair, −c·(x_i − r_j), enters the final colsum·r_j − p_j through p.
            for &(i, j, cij) in &direct {
                direct_term(r0 + i, j, cij, &mut p[j * d..(j + 1) * d]);
            }
            let mut cs = vec![T::zero(); m];
            if is_dist {
                for i in 0..rows {
                    for (a, &v) in cs.iter_mut().zip(&c[i * m..(i + 1) * m]) {
                        *a += v;
                    }
                }
            }
            Some((cs, p))
        };
        let nt = self.n_tiles();
        if !need_cols {
            gx[..n * d].par_chunks_mut(TILE * d).enumerate().for_each(|(t, gt)| {
                tile(t, gt);
            });
            return;
        }
        let mut acc = vec![T::zero(); m * d];
        let mut colsum = vec![T::zero(); m];
        let mut g0 = 0;
        while g0 < nt {
            let g1 = (g0 + GROUP).min(nt);
            let lo = g0 * TILE * d;
            let hi = (g1 * TILE).min(n) * d;
            let parts: Vec<(Vec<T>, Vec<T>)> = gx[lo..hi]
                .par_chunks_mut(TILE * d)
                .enumerate()
                .map(|(k, gt)| tile(g0 + k, gt).expect("column partials requested"))
                .collect();
            // Added in tile order, parallel over fixed row blocks: deterministic.
            acc.par_chunks_mut(TILE * d).enumerate().for_each(|(b, blk)| {
                let off = b * TILE * d;
                let len = blk.len();
                for (_, p) in &parts {
                    for (a, &v) in blk.iter_mut().zip(&p[off..off + len]) {
                        *a += v;
                    }
                }
            });
            for (cs, _) in &parts {
                for (a, &v) in colsum.iter_mut().zip(cs) {
                    *a += v;
                }
            }
            g0 = g1;
        }
        let target: &mut [T] = if self.same { gx } else { gr };
        target[..m * d].par_chunks_mut(d).enumerate().for_each(|(j, g)| {
            let a = &acc[j * d..(j + 1) * d];
            if is_dist {
                let rj = &rv[j * d..(j + 1) * d];
                for ((gv, &av), &rv) in g.iter_mut().zip(a).zip(rj) {
                    *gv += colsum[j] * rv - av;
                }
            } else {
                for (gv, &av) in g.iter_mut().zip(a) {
                    *gv += scale * av;
                }
            }
        });
    }
}

/// Rows of x (and r) minus the mean of all their rows, in parallel (fixed row order: deterministic).
fn centre<T: Real>(x: &[T], n: usize, r: Option<(&[T], usize)>, d: usize) -> (Vec<T>, Vec<T>) {
    let mut mu = col_means(x, n, d);
    let total = n + r.map_or(0, |(_, m)| m);
    if let Some((rr, m)) = r {
        let mr = col_means(rr, m, d);
        for (a, b) in mu.iter_mut().zip(&mr) {
            *a = (*a * n as f64 + b * m as f64) / total as f64;
        }
    }
    let mu: Vec<T> = mu.into_iter().map(T::c).collect();
    let shift = |src: &[T]| -> Vec<T> {
        let mut out = src.to_vec();
        out.par_chunks_mut(d).for_each(|row| row.iter_mut().zip(&mu).for_each(|(v, &c)| *v -= c));
        out
    };
    (shift(&x[..n * d]), r.map_or_else(Vec::new, |(rr, m)| shift(&rr[..m * d])))
}

/// Positions of `pairs` grouped by `key` (a row in 0..len), in CSR form: the pairs of row
/// k are `idx[start[k]..start[k + 1]]`, in their order in `pairs` (so per-row sums are
/// deterministic).
pub(crate) fn group_pairs<T>(pairs: &[(u32, u32, T)], key: impl Fn(&(u32, u32, T)) -> usize, len: usize) -> (Vec<usize>, Vec<u32>) {
    let mut start = vec![0usize; len + 1];
    for p in pairs {
        start[key(p) + 1] += 1;
    }
    for k in 0..len {
        start[k + 1] += start[k];
    }
    let mut fill = start.clone();
    let mut idx = vec![0u32; pairs.len()];
    for (q, p) in pairs.iter().enumerate() {
        let k = key(p);
        idx[fill[k]] = q as u32;
        fill[k] += 1;
    }
    (start, idx)
}

/// Gradient of a loss that depends on a sparse set of distances: each
/// `(i, j, c)` adds c·(x_i − r_j) to ∂L/∂x_i and −c·(x_i − r_j) to ∂L/∂r_j.
/// Contributions to one row are summed in the order of `pairs` (deterministic).
#[allow(clippy::too_many_arguments)]
pub fn sparse_backward<T: Real>(
    x: &[T], n: usize, r: &[T], m: usize, d: usize, same: bool, pairs: &[(u32, u32, T)], gx: &mut [T], gr: &mut [T],
) {
    let (rs, ri) = group_pairs(pairs, |p| p.0 as usize, n);
    gx[..n * d].par_chunks_mut(d).enumerate().for_each(|(i, g)| {
        let xi = &x[i * d..(i + 1) * d];
        for &q in &ri[rs[i]..rs[i + 1]] {
            let (_, j, c) = pairs[q as usize];
            let rj = &r[j as usize * d..(j as usize + 1) * d];
            for ((gv, &a), &b) in g.iter_mut().zip(xi).zip(rj) {
                *gv += c * (a - b);
            }
        }
    });
    let (cs, ci) = group_pairs(pairs, |p| p.1 as usize, m);
    let mut gcol = vec![T::zero(); m * d];
    gcol.par_chunks_mut(d).enumerate().for_each(|(j, g)| {
        let rj = &r[j * d..(j + 1) * d];
        for &q in &ci[cs[j]..cs[j + 1]] {
            let (i, _, c) = pairs[q as usize];
            let xi = &x[i as usize * d..(i as usize + 1) * d];
            for ((gv, &a), &b) in g.iter_mut().zip(xi).zip(rj) {
                *gv -= c * (a - b);
            }
        }
    });
    let target: &mut [T] = if same { gx } else { gr };
    target[..m * d].par_iter_mut().zip(gcol.par_iter()).for_each(|(a, &b)| *a += b);
}

/// Euclidean distance from a squared one, and the factor 1/D that turns
/// ∂L/∂D into a distance coefficient (0 at D = 0: the gradient of the
/// distance between duplicates is taken as 0, never NaN).
#[inline]
pub fn sqrt_and_inv<T: Real>(s: T) -> (T, T) {
    let dd = s.sqrt();
    (dd, if dd > T::zero() { T::one() / dd } else { T::zero() })
}

/// log(e^a + e^b) without overflow; −∞ when both are −∞.
#[inline]
pub fn logaddexp<T: Real>(a: T, b: T) -> T {
    let mx = a.max(b);
    if mx == T::neg_infinity() {
        return mx;
    }
    mx + ((a - mx).exp() + (b - mx).exp()).ln()
}

/// Numerically stable softplus log(1 + e^z).
#[inline]
pub fn softplus<T: Real>(z: T) -> T {
    if z > T::zero() {
        z + (-z).exp().ln_1p()
    } else {
        z.exp().ln_1p()
    }
}

/// Logistic sigmoid 1/(1 + e^{−z}), stable for large |z|.
#[inline]
pub fn sigmoid<T: Real>(z: T) -> T {
    if z >= T::zero() {
        T::one() / (T::one() + (-z).exp())
    } else {
        let e = z.exp();
        e / (T::one() + e)
    }
}

/// e^x of every entry in place. f32 uses a branch-free polynomial that the
/// compiler vectorises (relative error ~2e-7, e^x = 0 below −87, which also
/// maps −∞ to 0); f64 uses the standard library.
pub fn exp_slice<T: Real>(v: &mut [T]) {
    if std::any::TypeId::of::<T>() == std::any::TypeId::of::<f32>() {
        // SAFETY: T is f32 (checked above), so the slice has the same layout.
        let v32: &mut [f32] = unsafe { &mut *(v as *mut [T] as *mut [f32]) };
        v32.iter_mut().for_each(|x| *x = exp_f32(*x));
    } else {
        v.iter_mut().for_each(|x| *x = x.exp());
    }
}

#[inline(always)]
pub(crate) fn exp_f32(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    const SHIFTER: f32 = 12_582_912.0; // 1.5·2^23: adding it rounds to an integer
    let xc = x.clamp(-87.0, 88.0);
    let t = xc * LOG2E + SHIFTER;
    let n = t - SHIFTER;
    let ni = (t.to_bits() as i32).wrapping_sub(0x4B40_0000);
    let r = xc - n * LN2_HI - n * LN2_LO;
    let p = ((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r + 1.666_666_5e-1) * r
        + 0.5;
    let e = p * r * r + r + 1.0;
    let scale = f32::from_bits(((ni + 127) as u32) << 23);
    if x < -87.0 { 0.0 } else { e * scale }
}

/// The floor of a norm in [`unit_rows`] (torch.nn.functional.normalize's eps).
pub const UNIT_EPS: f64 = 1e-12;

/// Unit rows x̂ = x / max(‖x‖, 1e-12) of `x` (rows of `d`), as `F.normalize`, and the 1/max(‖x‖, eps).
pub fn unit_rows<T: Real>(x: &[T], d: usize) -> (Vec<T>, Vec<T>) {
    let eps = T::c(UNIT_EPS);
    let mut xh = x.to_vec();
    let mut inv = vec![T::one(); x.len() / d.max(1)];
    xh.par_chunks_mut(d).zip(inv.par_iter_mut()).for_each(|(row, iv)| {
        let nr = crate::linalg::dot(row, row).sqrt();
        *iv = T::one() / if nr > eps { nr } else { eps };
        super::rowops::scale(row, *iv);
    });
    (xh, inv)
}

/// ∂/∂x from ∂/∂x̂ in place, for [`unit_rows`]' x̂ and `inv`: (g − (g·x̂)x̂)/‖x‖, or g/eps below eps.
pub fn unit_rows_backward<T: Real>(g: &mut [T], xh: &[T], inv: &[T], d: usize) {
    g.par_chunks_mut(d).zip(xh.par_chunks(d)).zip(inv.par_iter()).for_each(|((gr, zr), &iv)| {
        if iv < T::one() / T::c(UNIT_EPS) {
            let pd = crate::linalg::dot(zr, gr);
            super::rowops::axpy(gr, -pd, zr);
        }
        super::rowops::scale(gr, iv);
    });
}

/// Sum of f64 partials in order (deterministic reduction of per-tile results).
pub fn ordered_sum<I: IntoIterator<Item = f64>>(it: I) -> f64 {
    it.into_iter().fold(0.0, |a, b| a + b)
}

#[cfg(test)]
mod tests {
    #[test]
    fn fast_exp_is_accurate() {
        let mut v: Vec<f32> = (-2000..=880).map(|i| i as f32 * 0.1).collect();
        v.push(f32::NEG_INFINITY);
        let want: Vec<(f32, f64)> = v.iter().map(|&x| (x, (x as f64).exp())).collect();
        super::exp_slice(&mut v);
        for (a, (x, b)) in v.iter().zip(&want) {
            if *x < -87.0 {
                assert_eq!(*a, 0.0);
            } else {
                assert!(((*a as f64) - b).abs() <= 4e-7 * b, "{a} vs {b}");
            }
        }
    }
}

#[cfg(test)]
pub mod testutil {
    /// Small deterministic PRNG for tests: the crate's splitmix64 stream.
    pub struct Rng(pub u64);
    impl Rng {
        pub fn next_u64(&mut self) -> u64 {
            let mut s = crate::rng::SplitMix(self.0);
            let v = s.next_u64();
            self.0 = s.0;
            v
        }
        pub fn unif(&mut self) -> f64 {
            let mut s = crate::rng::SplitMix(self.0);
            let v = s.uniform();
            self.0 = s.0;
            v
        }
        pub fn normal_vec(&mut self, len: usize) -> Vec<f64> {
            (0..len)
                .map(|_| {
                    let (u, v) = (self.unif().max(1e-12), self.unif());
                    (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
                })
                .collect()
        }
        pub fn labels(&mut self, n: usize, k: u64) -> Vec<i64> {
            (0..n).map(|_| (self.next_u64() % k) as i64).collect()
        }
    }

    pub fn dist(x: &[f64], i: usize, r: &[f64], j: usize, d: usize) -> f64 {
        (0..d).map(|k| (x[i * d + k] - r[j * d + k]).powi(2)).sum::<f64>()
    }

    /// Central finite-difference gradient of `f` at `x`.
    pub fn fd_grad(x: &[f64], f: &dyn Fn(&[f64]) -> f64) -> Vec<f64> {
        let h = 1e-6;
        let mut xp = x.to_vec();
        (0..x.len())
            .map(|k| {
                let v = xp[k];
                xp[k] = v + h;
                let a = f(&xp);
                xp[k] = v - h;
                let b = f(&xp);
                xp[k] = v;
                (a - b) / (2.0 * h)
            })
            .collect()
    }

    /// Checks ∇f·v at `x` against central differences along `v`. Hinge losses
    /// over many tuples may have a kink inside one step, so a second, smaller
    /// step is tried before failing.
    pub fn assert_dir(grad: &[f64], x: &[f64], v: &[f64], f: &dyn Fn(&[f64]) -> f64, tol: f64) {
        let want: f64 = grad.iter().zip(v).map(|(a, b)| a * b).sum();
        let at = |t: f64| f(&x.iter().zip(v).map(|(a, b)| a + t * b).collect::<Vec<_>>());
        let fds: Vec<f64> = [1e-6, 1e-7].iter().map(|&h| (at(h) - at(-h)) / (2.0 * h)).collect();
        assert!(fds.iter().any(|fd| (want - fd).abs() <= tol * (1.0 + fd.abs())), "directional {want} vs {fds:?}");
    }

    pub fn assert_close(a: &[f64], b: &[f64], tol: f64) {
        assert_eq!(a.len(), b.len());
        for (k, (x, y)) in a.iter().zip(b).enumerate() {
            assert!((x - y).abs() <= tol * (1.0 + y.abs()), "index {k}: {x} vs {y}");
        }
    }
}
