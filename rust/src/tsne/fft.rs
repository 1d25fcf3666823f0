//! FFT-accelerated interpolation of the t-SNE repulsion (Linderman et al.
//! 2019, "Fast interpolation-based t-SNE for improved visualization of
//! single-cell RNA-seq data", Nature Methods 16: FIt-SNE / openTSNE "fft"),
//! for 1-D and 2-D embeddings, every stage parallel and deterministic.
//!
//! Kernels (Student-t with α = dof, w = (1 + d²/α)^(−α), b = 1/(1 + d²/α)):
//! the repulsion needs R_i = Σ_j w_ij b_ij (y_i − y_j) / Z, i.e. sums of the
//! single kernel K(d) = w·b = (1 + d²/α)^(−(α+1)) (the squared Cauchy kernel
//! for α = 1). Z needs Σ w = Σ K·(1 + d²/α), and d²_ij = |y_i|² − 2 y_i·y_j +
//! |y_j|², so both come from K convolved with the charges {1, y, y²} (1-D) or
//! {1, y₁, y₂, |y|²} (2-D):
//!
//!   φ_c(i) = Σ_j K(y_i − y_j) q_c(j),
//!   F_i    = y_i φ₁(i) − φ_y(i),
//!   Z      = Σ_i [(1 + |y_i|²/α) φ₁(i) − (2/α) y_i·φ_y(i) + φ_{|y|²}(i)/α] − N
//!
//! (the −N removes the self-pairs, K(0) = 1). This holds for every α, so no
//! second convolution is needed for heavy tails (openTSNE runs one); the
//! coordinates are shifted to the grid centre first, which keeps the
//! cancellation in Z small.
//!
//! Grid: `boxes` boxes per side of width `width` ≈ 1 embedding unit, at least
//! [`MIN_BOXES`], 5-smooth (FFT-friendly), at most [`MAX_BOXES_2D`] /
//! [`MAX_BOXES_1D`] (beyond the cap the boxes widen instead). Outliers: when
//! the extent would widen the boxes and a few points (at most
//! [`max_outliers`]) hold most of it, the grid covers only the bulk — the box
//! between the (k+1)-th smallest and largest coordinate per axis, plus a margin
//! — and the points outside it interact exactly: each outlier with every other
//! point, each bulk point with every outlier (O(N·outliers), bounded by
//! [`OUTLIER_WORK`]). So a point flying out costs neither time (the grid
//! stays at the bulk's size) nor accuracy (openTSNE #174). 3 equispaced Lagrange nodes
//! per box (nodes at (k + ½)·width/3); a point spreads its charges onto the
//! 3 (1-D) or 3×3 (2-D) nodes of its own box. The node-to-node sums are a
//! Toeplitz product, evaluated as a circular convolution on the grid doubled
//! per side, by FFT (rustfft); two real charge grids travel as the real and
//! imaginary parts of one complex grid (K is real and even, so its transform
//! is real). The box width is snapped to a geometric ladder (steps of 2^(1/16))
//! so the kernel's transform is reused across iterations until the spread
//! moves a step ([`Cache`]).
//!
//! Parallel and deterministic: points are bucketed by box row (a stable
//! counting sort); each box row writes only its own 3 node rows, in point
//! order, so the spreading is parallel without a reduction; the FFTs run
//! row by row (rows, transpose, rows); the gather is per point; Z is a sum
//! in fixed chunks. Results are bit-identical for any thread count.

use super::exact::fsum;
use crate::error::{Error, Result};
use rayon::prelude::*;
use rustfft::num_complex::Complex;
use rustfft::{Fft, FftPlanner};
use std::sync::Arc;

type C64 = Complex<f64>;

/// Fewest boxes per side (openTSNE's `min_num_intervals`).
pub const MIN_BOXES: usize = 50;
/// Most boxes per side in 2-D: the FFT is (6·256)² = 1536², ~40 ms of FFTs per
/// gradient on one core. Beyond it the boxes widen (see the module docs).
pub const MAX_BOXES_2D: usize = 256;
/// Most boxes in 1-D (the FFT has 6·boxes points: cheap).
pub const MAX_BOXES_1D: usize = 20_000;
/// Lagrange nodes per box.
const P: usize = 3;
/// Most exact kernel evaluations per direction spent on outliers (N · outliers).
pub const OUTLIER_WORK: usize = 1 << 24;

/// Most points treated as outliers at N points: ≤ 64, ≤ N/64 and ≤ [`OUTLIER_WORK`] / N.
pub fn max_outliers(n: usize) -> usize {
    64.min(n / 64).min(OUTLIER_WORK / n.max(1))
}
/// Points per parallel task in the gather.
const CHUNK: usize = 2048;

/// Smallest 5-smooth integer ≥ n (sizes rustfft handles with its fastest butterflies).
pub fn friendly(n: usize) -> usize {
    let mut m = n.max(1);
    loop {
        let mut r = m;
        for f in [2, 3, 5] {
            while r % f == 0 {
                r /= f;
            }
        }
        if r == 1 {
            return m;
        }
        m += 1;
    }
}

/// Largest 5-smooth integer ≤ n.
fn friendly_below(n: usize) -> usize {
    (1..=n).rev().find(|&m| friendly(m) == m).unwrap_or(1)
}

/// The grid for an embedding of spread `spread` (max over axes of max − min).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Geometry {
    pub boxes: usize,
    /// Box width (embedding units).
    pub width: f64,
}

impl Geometry {
    pub fn of(spread: f64, dim: usize) -> Self {
        let cap = friendly_below(if dim == 1 { MAX_BOXES_1D } else { MAX_BOXES_2D });
        // Snap the covered span up to the ladder 2^(k/16) so the geometry (and the
        // cached kernel transform) only changes when the spread moves ~4.4 %.
        let s = spread.max(1e-12) * (1.0 + 1e-9);
        let span = (2f64).powf((s.log2() * 16.0).ceil() / 16.0);
        // 1-D: boxes of a quarter unit (the 1-D FFT is cheap and 1-D sums cancel more).
        let per_unit = if dim == 1 { 4.0 } else { 1.0 };
        if span * per_unit <= MIN_BOXES as f64 {
            Geometry { boxes: MIN_BOXES, width: span / MIN_BOXES as f64 }
        } else {
            let b = friendly((span * per_unit).ceil() as usize);
            if b <= cap {
                Geometry { boxes: b, width: span / b as f64 }
            } else {
                Geometry { boxes: cap, width: span / cap as f64 }
            }
        }
    }
    fn nodes(&self) -> usize {
        P * self.boxes
    }
}

/// Kernel transform and FFT plans, kept across gradient evaluations of one fit.
#[derive(Default)]
pub struct Cache {
    key: Option<(usize, usize, u64, u64)>,
    khat: Vec<f64>,
    fwd: Option<Arc<dyn Fft<f64>>>,
    inv: Option<Arc<dyn Fft<f64>>>,
    /// How many times the kernel transform was (re)computed (tests, profiling).
    pub kernel_builds: usize,
}

/// Quadratic Lagrange weights of the nodes at ½, 3⁄2, 5⁄2 for local coordinate t ∈ [0, 3].
#[inline(always)]
fn lagrange(t: f64) -> [f64; 3] {
    let (a, b, c) = (t - 0.5, t - 1.5, t - 2.5);
    [0.5 * b * c, -a * c, 0.5 * a * b]
}

/// Box index and local coordinate of x on an axis starting at `lo`.
#[inline(always)]
fn locate(x: f64, lo: f64, inv_h: f64, boxes: usize) -> (usize, [f64; 3]) {
    let u = (x - lo) * inv_h; // in node spacings
    let b = ((u / P as f64).floor().max(0.0) as usize).min(boxes - 1);
    (b, lagrange(u - (P * b) as f64))
}

fn kernel_fn(alpha: f64) -> impl Fn(f64) -> f64 + Sync {
    move |d2: f64| {
        let b = 1.0 / (1.0 + d2 / alpha);
        if alpha == 1.0 {
            b * b
        } else {
            b.powf(alpha + 1.0)
        }
    }
}

/// In-place FFT of `rows` consecutive rows of length m, in parallel (each row
/// independently, so the result does not depend on the split).
fn fft_rows(data: &mut [C64], m: usize, plan: &Arc<dyn Fft<f64>>) {
    let per = 16;
    let scratch_len = plan.get_inplace_scratch_len();
    data.par_chunks_mut(m * per).for_each(|rows| {
        let mut scratch = vec![C64::new(0.0, 0.0); scratch_len];
        for row in rows.chunks_mut(m) {
            plan.process_with_scratch(row, &mut scratch);
        }
    });
}

/// dst[i·m + j] = src[j·m + i] for i < rows_out, all j (src is m × m).
fn transpose(src: &[C64], dst: &mut [C64], m: usize, rows_out: usize) {
    const T: usize = 32;
    dst[..rows_out * m].par_chunks_mut(T * m).enumerate().for_each(|(t, out)| {
        let i0 = t * T;
        let ni = out.len() / m;
        for j0 in (0..m).step_by(T) {
            let j1 = (j0 + T).min(m);
            for j in j0..j1 {
                let s = &src[j * m + i0..j * m + i0 + ni];
                for (k, v) in s.iter().enumerate() {
                    out[k * m + j] = *v;
                }
            }
        }
    });
}

struct Plan<'a> {
    m: usize,
    nodes: usize,
    khat: &'a [f64],
    fwd: &'a Arc<dyn Fft<f64>>,
    inv: &'a Arc<dyn Fft<f64>>,
}

impl Plan<'_> {
    /// 2-D: grid (m × m, charges in rows/cols < nodes, zeros elsewhere) ←
    /// its circular convolution with the kernel (valid in rows/cols < nodes).
    fn convolve_2d(&self, grid: &mut [C64], tmp: &mut [C64]) {
        let (m, nn) = (self.m, self.nodes);
        fft_rows(&mut grid[..nn * m], m, self.fwd); // rows ≥ nodes are zero
        transpose(grid, tmp, m, m);
        fft_rows(tmp, m, self.fwd);
        tmp.par_chunks_mut(4096).zip(self.khat.par_chunks(4096)).for_each(|(t, k)| {
            for (v, &kv) in t.iter_mut().zip(k) {
                *v *= kv;
            }
        });
        fft_rows(tmp, m, self.inv);
        transpose(tmp, grid, m, nn); // only rows < nodes are needed
        fft_rows(&mut grid[..nn * m], m, self.inv);
    }

    fn convolve_1d(&self, v: &mut [C64]) {
        let mut scratch = vec![C64::new(0.0, 0.0); self.fwd.get_inplace_scratch_len().max(self.inv.get_inplace_scratch_len())];
        self.fwd.process_with_scratch(v, &mut scratch);
        v.iter_mut().zip(self.khat).for_each(|(x, &k)| *x *= k);
        self.inv.process_with_scratch(v, &mut scratch);
    }
}

impl Cache {
    /// Plans and the kernel transform for this geometry (recomputed only when it changed).
    fn prepare(&mut self, geo: Geometry, dim: usize, alpha: f64) -> Plan<'_> {
        let nn = geo.nodes();
        let m = 2 * nn;
        let key = (dim, geo.boxes, geo.width.to_bits(), alpha.to_bits());
        if self.key != Some(key) {
            let mut planner = FftPlanner::<f64>::new();
            let fwd = planner.plan_fft_forward(m);
            let inv = planner.plan_fft_inverse(m);
            let h = geo.width / P as f64;
            let k = kernel_fn(alpha);
            // Offsets on the circulant: g ≤ m/2 → g, else g − m.
            let off = |g: usize| -> f64 { (if g <= nn { g as f64 } else { g as f64 - m as f64 }) * h };
            let norm = if dim == 1 { 1.0 / m as f64 } else { 1.0 / (m * m) as f64 };
            let khat = if dim == 1 {
                let mut v: Vec<C64> = (0..m).map(|g| C64::new(k(off(g) * off(g)), 0.0)).collect();
                let mut s = vec![C64::new(0.0, 0.0); fwd.get_inplace_scratch_len()];
                fwd.process_with_scratch(&mut v, &mut s);
                v.iter().map(|c| c.re * norm).collect()
            } else {
                let mut g = vec![C64::new(0.0, 0.0); m * m];
                g.par_chunks_mut(m).enumerate().for_each(|(r, row)| {
                    let dy = off(r);
                    for (c, v) in row.iter_mut().enumerate() {
                        let dx = off(c);
                        *v = C64::new(k(dx * dx + dy * dy), 0.0);
                    }
                });
                fft_rows(&mut g, m, &fwd);
                let mut t = vec![C64::new(0.0, 0.0); m * m];
                transpose(&g, &mut t, m, m);
                fft_rows(&mut t, m, &fwd);
                // K is even in both axes and symmetric under swapping them, so its
                // transform is real and equal to its transpose: layout-independent.
                t.par_iter().map(|c| c.re * norm).collect()
            };
            self.key = Some(key);
            self.khat = khat;
            self.fwd = Some(fwd);
            self.inv = Some(inv);
            self.kernel_builds += 1;
        }
        Plan { m, nodes: nn, khat: &self.khat, fwd: self.fwd.as_ref().unwrap(), inv: self.inv.as_ref().unwrap() }
    }
}

fn extent(y: &[f64], dim: usize, axis: usize) -> (f64, f64) {
    y.par_chunks(dim * 4096)
        .map(|c| c.iter().skip(axis).step_by(dim).fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| (a.min(v), b.max(v))))
        .reduce(|| (f64::INFINITY, f64::NEG_INFINITY), |(a, b), (c, d)| (a.min(c), b.max(d)))
}

/// Stable counting sort of points by bucket: (bucket starts, point order).
fn bucket(keys: &[u32], nb: usize) -> (Vec<usize>, Vec<u32>) {
    let mut start = vec![0usize; nb + 1];
    for &k in keys {
        start[k as usize + 1] += 1;
    }
    for b in 0..nb {
        start[b + 1] += start[b];
    }
    let mut pos = start.clone();
    let mut order = vec![0u32; keys.len()];
    for (i, &k) in keys.iter().enumerate() {
        order[pos[k as usize]] = i as u32;
        pos[k as usize] += 1;
    }
    (start, order)
}

/// Writes R_i (see the module docs: the repulsion divided by Z) into `rep`
/// (`n × dim`, dim 1 or 2) and returns ln Z.
pub fn fft_repulsion(y: &[f64], n: usize, dim: usize, alpha: f64, cache: &mut Cache, rep: &mut [f64]) -> Result<f64> {
    if !(1..=2).contains(&dim) {
        return Err(Error::InvalidParameter(format!("method='fft' supports n_components 1 or 2, got {dim}; use 'barnes_hut'")));
    }
    if y.iter().any(|v| !v.is_finite()) {
        return Err(Error::NonFinite("the embedding diverged (NaN or infinity); try a smaller learning_rate".into()));
    }
    let ext: Vec<(f64, f64)> = (0..dim).map(|a| extent(y, dim, a)).collect();
    let full_spread = ext.iter().map(|(a, b)| b - a).fold(0.0, f64::max);
    let (ext, outliers) = bulk_box(y, n, dim, &ext, full_spread);
    let spread = ext.iter().map(|(a, b)| b - a).fold(0.0, f64::max);
    let geo = Geometry::of(spread, dim);
    let span = geo.width * geo.boxes as f64;
    let centre: Vec<f64> = ext.iter().map(|(a, b)| 0.5 * (a + b)).collect();
    let lo: Vec<f64> = centre.iter().map(|c| c - 0.5 * span).collect();
    let inv_h = P as f64 / geo.width;
    // Outliers sit outside the grid: bucket `boxes`, never spread (their gathered values are replaced below).
    let mut is_out = Vec::new();
    if !outliers.is_empty() {
        is_out = vec![false; n];
        outliers.iter().for_each(|&i| is_out[i] = true);
    }
    let plan = cache.prepare(geo, dim, alpha);
    let (m, nn) = (plan.m, plan.nodes);
    let mut zs: Vec<f64> = if dim == 1 {
        repulsion_1d(y, n, &plan, geo.boxes, lo[0], centre[0], inv_h, alpha, &is_out, rep)
    } else {
        repulsion_2d(y, n, &plan, geo.boxes, [lo[0], lo[1]], [centre[0], centre[1]], inv_h, alpha, m, nn, &is_out, rep)
    };
    if !outliers.is_empty() {
        exact_outliers(y, n, dim, alpha, &outliers, &is_out, rep, &mut zs);
    }
    // The grid sums include each bulk point's self-pair (K(0) = 1); the outliers' exact sums do not.
    let z = fsum(&zs) - (n - outliers.len()) as f64;
    if !(z > 0.0) || !z.is_finite() {
        return Err(Error::NonFinite(format!("FFT repulsion: normaliser Z = {z} is not positive (embedding spread {full_spread})")));
    }
    let inv = 1.0 / z;
    rep.par_chunks_mut(4096).for_each(|c| c.iter_mut().for_each(|v| *v *= inv));
    Ok(z.ln())
}

/// The k + 1 smallest and k + 1 largest values of one axis (each sorted from the extreme inwards).
fn tails(y: &[f64], dim: usize, axis: usize, k: usize) -> (Vec<f64>, Vec<f64>) {
    // Insert v into a list of at most k + 1 values kept sorted by `before` (the extreme first).
    fn keep(t: &mut Vec<f64>, v: f64, k: usize, before: impl Fn(f64, f64) -> bool) {
        if t.len() > k && !before(v, t[k]) {
            return;
        }
        let pos = t.iter().position(|&u| before(v, u)).unwrap_or(t.len());
        t.insert(pos, v);
        t.truncate(k + 1);
    }
    let lt = |a: f64, b: f64| a < b;
    let gt = |a: f64, b: f64| a > b;
    // Order statistics do not depend on the chunking: deterministic for any thread count.
    y.par_chunks(dim * 4096)
        .map(|c| {
            let (mut lo, mut hi) = (Vec::with_capacity(k + 2), Vec::with_capacity(k + 2));
            for &v in c.iter().skip(axis).step_by(dim) {
                keep(&mut lo, v, k, lt);
                keep(&mut hi, v, k, gt);
            }
            (lo, hi)
        })
        .reduce(
            || (Vec::new(), Vec::new()),
            |(mut a, mut b), (c, d)| {
                c.into_iter().for_each(|v| keep(&mut a, v, k, lt));
                d.into_iter().for_each(|v| keep(&mut b, v, k, gt));
                (a, b)
            },
        )
}

/// The box the grid covers and the points outside it (ascending): the full
/// extent unless it would widen the boxes beyond the cap and dropping at most
/// [`max_outliers`] points shrinks the spread at least twofold.
fn bulk_box(y: &[f64], n: usize, dim: usize, ext: &[(f64, f64)], spread: f64) -> (Vec<(f64, f64)>, Vec<usize>) {
    let keep_all = (ext.to_vec(), Vec::new());
    let cap = friendly_below(if dim == 1 { MAX_BOXES_1D } else { MAX_BOXES_2D });
    let per_unit = if dim == 1 { 4.0 } else { 1.0 };
    let k = max_outliers(n) / (2 * dim);
    if k == 0 || spread * per_unit <= cap as f64 {
        return keep_all;
    }
    let mut bx = Vec::with_capacity(dim);
    for a in 0..dim {
        let (lo, hi) = tails(y, dim, a, k);
        bx.push((lo[k], hi[k]));
    }
    // A margin of 5 % of the bulk's spread plus one unit: points just outside the
    // k-th order statistic are not outliers, they stay on the grid.
    let inner = bx.iter().map(|(a, b)| b - a).fold(0.0, f64::max);
    let margin = 0.05 * inner + 1.0;
    bx.iter_mut().for_each(|(a, b)| {
        *a -= margin;
        *b += margin;
    });
    let robust = bx.iter().map(|(a, b)| b - a).fold(0.0, f64::max);
    if 2.0 * robust > spread {
        return keep_all;
    }
    let outside = |i: usize| (0..dim).any(|a| { let v = y[i * dim + a]; v < bx[a].0 || v > bx[a].1 });
    let out: Vec<usize> = (0..n).into_par_iter().with_min_len(CHUNK).filter(|&i| outside(i)).collect();
    // The grid spans the bulk's own extent (not the margin): the same grid as without the outliers.
    let bulk: Vec<(f64, f64)> = (0..dim)
        .map(|a| {
            (0..n)
                .into_par_iter()
                .with_min_len(CHUNK)
                .filter(|&i| !outside(i))
                .map(|i| (y[i * dim + a], y[i * dim + a]))
                .reduce(|| (f64::INFINITY, f64::NEG_INFINITY), |(a, b), (c, d)| (a.min(c), b.max(d)))
        })
        .collect();
    (bulk, out)
}

/// Student-t terms of one pair at squared distance d2: (K = w·b, w).
#[inline(always)]
fn pair_kernel(d2: f64, alpha: f64) -> (f64, f64) {
    let b = 1.0 / (1.0 + d2 / alpha);
    let w = if alpha == 1.0 { b } else { b.powf(alpha) };
    (w * b, w)
}

/// Exact interactions of the outliers (see the module docs): `rep` and `zs`
/// of each outlier are replaced by its exact sums over all other points; each
/// bulk point adds its exact sums over the outliers.
#[allow(clippy::too_many_arguments)]
fn exact_outliers(y: &[f64], n: usize, dim: usize, alpha: f64, out: &[usize], is_out: &[bool], rep: &mut [f64], zs: &mut [f64]) {
    // Each outlier against every point, in fixed chunks summed in order.
    let own: Vec<([f64; 2], f64)> = out
        .par_iter()
        .map(|&i| {
            let yi = &y[i * dim..i * dim + dim];
            let parts: Vec<([f64; 2], f64)> = (0..n.div_ceil(CHUNK))
                .into_par_iter()
                .map(|c| {
                    let (mut r, mut z) = ([0.0; 2], 0.0);
                    for j in c * CHUNK..((c + 1) * CHUNK).min(n) {
                        if j == i {
                            continue;
                        }
                        let yj = &y[j * dim..j * dim + dim];
                        let d2: f64 = (0..dim).map(|a| (yi[a] - yj[a]) * (yi[a] - yj[a])).sum();
                        let (kk, w) = pair_kernel(d2, alpha);
                        for a in 0..dim {
                            r[a] += kk * (yi[a] - yj[a]);
                        }
                        z += w;
                    }
                    (r, z)
                })
                .collect();
            parts.iter().fold(([0.0; 2], 0.0), |(r, z), (pr, pz)| ([r[0] + pr[0], r[1] + pr[1]], z + pz))
        })
        .collect();
    // Every bulk point against the outliers (few: a sequential loop per point).
    rep.par_chunks_mut(dim * CHUNK).zip(zs.par_chunks_mut(CHUNK)).enumerate().for_each(|(t, (r, z))| {
        for (k, (rv, zv)) in r.chunks_mut(dim).zip(z.iter_mut()).enumerate() {
            let i = t * CHUNK + k;
            if is_out[i] {
                continue;
            }
            let yi = &y[i * dim..i * dim + dim];
            for &j in out {
                let yj = &y[j * dim..j * dim + dim];
                let d2: f64 = (0..dim).map(|a| (yi[a] - yj[a]) * (yi[a] - yj[a])).sum();
                let (kk, w) = pair_kernel(d2, alpha);
                for a in 0..dim {
                    rv[a] += kk * (yi[a] - yj[a]);
                }
                *zv += w;
            }
        }
    });
    for (&i, (r, z)) in out.iter().zip(own) {
        rep[i * dim..i * dim + dim].copy_from_slice(&r[..dim]);
        zs[i] = z;
    }
}

#[allow(clippy::too_many_arguments)]
fn repulsion_1d(
    y: &[f64], n: usize, plan: &Plan, boxes: usize, lo: f64, c: f64, inv_h: f64, alpha: f64, is_out: &[bool], rep: &mut [f64],
) -> Vec<f64> {
    let m = plan.m;
    let keys: Vec<u32> = y
        .par_iter()
        .enumerate()
        .with_min_len(CHUNK)
        .map(|(i, &x)| if is_out.get(i) == Some(&true) { boxes as u32 } else { locate(x, lo, inv_h, boxes).0 as u32 })
        .collect();
    let (start, order) = bucket(&keys, boxes + 1);
    // Two complex grids: (1 + i·y) and (y² + i·0).
    let mut ga = vec![C64::new(0.0, 0.0); m];
    let mut gb = vec![C64::new(0.0, 0.0); m];
    ga[..P * boxes].par_chunks_mut(P).zip(gb[..P * boxes].par_chunks_mut(P)).enumerate().with_min_len(16).for_each(|(b, (na, nb))| {
        for &i in &order[start[b]..start[b + 1]] {
            let x = y[i as usize];
            let (_, w) = locate(x, lo, inv_h, boxes);
            let xs = x - c;
            for k in 0..P {
                na[k] += C64::new(w[k], w[k] * xs);
                nb[k].re += w[k] * xs * xs;
            }
        }
    });
    plan.convolve_1d(&mut ga);
    plan.convolve_1d(&mut gb);
    let ia = 1.0 / alpha;
    let mut zs = vec![0.0; n];
    rep.par_chunks_mut(CHUNK).zip(zs.par_chunks_mut(CHUNK)).enumerate().for_each(|(t, (r, z))| {
        for (k, (rv, zv)) in r.iter_mut().zip(z.iter_mut()).enumerate() {
            let x = y[t * CHUNK + k];
            let (b, w) = locate(x, lo, inv_h, boxes);
            let (mut p1, mut py, mut pyy) = (0.0, 0.0, 0.0);
            for q in 0..P {
                let (a, bb) = (ga[P * b + q], gb[P * b + q]);
                p1 += w[q] * a.re;
                py += w[q] * a.im;
                pyy += w[q] * bb.re;
            }
            let xs = x - c;
            *rv = xs * p1 - py;
            *zv = (1.0 + xs * xs * ia) * p1 - 2.0 * ia * xs * py + ia * pyy;
        }
    });
    zs
}

#[allow(clippy::too_many_arguments)]
fn repulsion_2d(
    y: &[f64], n: usize, plan: &Plan, boxes: usize, lo: [f64; 2], c: [f64; 2], inv_h: f64, alpha: f64, m: usize, nn: usize,
    is_out: &[bool], rep: &mut [f64],
) -> Vec<f64> {
    // Grid rows follow axis 1, columns axis 0.
    let keys: Vec<u32> = y
        .par_chunks(2)
        .enumerate()
        .with_min_len(CHUNK)
        .map(|(i, p)| if is_out.get(i) == Some(&true) { boxes as u32 } else { locate(p[1], lo[1], inv_h, boxes).0 as u32 })
        .collect();
    let (start, order) = bucket(&keys, boxes + 1);
    // Complex grids: (1 + i·y₁) and (y₂ + i·|y|²), centred coordinates.
    let mut ga = vec![C64::new(0.0, 0.0); m * m];
    let mut gb = vec![C64::new(0.0, 0.0); m * m];
    ga[..nn * m].par_chunks_mut(P * m).zip(gb[..nn * m].par_chunks_mut(P * m)).enumerate().for_each(|(br, (ra, rb))| {
        for &i in &order[start[br]..start[br + 1]] {
            let (x0, x1) = (y[2 * i as usize], y[2 * i as usize + 1]);
            let (bx, wx) = locate(x0, lo[0], inv_h, boxes);
            let (_, wy) = locate(x1, lo[1], inv_h, boxes);
            let (s0, s1) = (x0 - c[0], x1 - c[1]);
            let s2 = s0 * s0 + s1 * s1;
            for a in 0..P {
                let base = a * m + P * bx;
                for b in 0..P {
                    let w = wy[a] * wx[b];
                    ra[base + b] += C64::new(w, w * s0);
                    rb[base + b] += C64::new(w * s1, w * s2);
                }
            }
        }
    });
    let mut tmp = vec![C64::new(0.0, 0.0); m * m];
    plan.convolve_2d(&mut ga, &mut tmp);
    plan.convolve_2d(&mut gb, &mut tmp);
    drop(tmp);
    let ia = 1.0 / alpha;
    let mut zs = vec![0.0; n];
    rep.par_chunks_mut(2 * CHUNK).zip(zs.par_chunks_mut(CHUNK)).enumerate().for_each(|(t, (r, z))| {
        for (k, (rv, zv)) in r.chunks_mut(2).zip(z.iter_mut()).enumerate() {
            let i = t * CHUNK + k;
            let (x0, x1) = (y[2 * i], y[2 * i + 1]);
            let (bx, wx) = locate(x0, lo[0], inv_h, boxes);
            let (by, wy) = locate(x1, lo[1], inv_h, boxes);
            let (mut p1, mut p0, mut q1, mut p2) = (0.0, 0.0, 0.0, 0.0);
            for a in 0..P {
                let base = (P * by + a) * m + P * bx;
                for b in 0..P {
                    let w = wy[a] * wx[b];
                    let (u, v) = (ga[base + b], gb[base + b]);
                    p1 += w * u.re;
                    p0 += w * u.im;
                    q1 += w * v.re;
                    p2 += w * v.im;
                }
            }
            let (s0, s1) = (x0 - c[0], x1 - c[1]);
            rv[0] = s0 * p1 - p0;
            rv[1] = s1 * p1 - q1;
            *zv = (1.0 + (s0 * s0 + s1 * s1) * ia) * p1 - 2.0 * ia * (s0 * p0 + s1 * q1) + ia * p2;
        }
    });
    zs
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tsne::exact::exact_repulsion;
    use crate::tsne::{Kernel, SplitMix};

    fn cloud(n: usize, dim: usize, scale: f64, seed: u64) -> Vec<f64> {
        let mut rng = SplitMix(seed);
        (0..n * dim).map(|_| (rng.uniform() - 0.5) * scale).collect()
    }

    fn rel_err(a: &[f64], b: &[f64]) -> f64 {
        let num: f64 = a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum();
        let den: f64 = b.iter().map(|y| y * y).sum();
        (num / den).sqrt()
    }

    #[test]
    fn friendly_sizes() {
        assert_eq!(friendly(50), 50);
        assert_eq!(friendly(51), 54);
        assert_eq!(friendly(257), 270);
        assert_eq!(friendly_below(MAX_BOXES_2D), 256);
        let g = Geometry::of(1e6, 2);
        assert_eq!(g.boxes, 256);
        assert!(g.width * 256.0 >= 1e6);
        let g = Geometry::of(10.0, 2);
        assert_eq!(g.boxes, MIN_BOXES);
        assert!(g.width * 50.0 >= 10.0 && g.width * 50.0 < 10.0 * 1.05);
    }

    #[test]
    fn matches_exact_1d_and_2d() {
        let (mut worst_g, mut worst_z) = (0.0f64, 0.0f64);
        for &dim in &[1usize, 2] {
            for &alpha in &[1.0, 0.5] {
                // Densities of real embeddings (≥ ~1 point per unit² / unit): the
                // error is that of interpolating the near field of each point.
                for &scale in &[5.0, 20.0, 50.0] {
                    let n = if dim == 1 { 700 } else { 3000 };
                    let y = cloud(n, dim, scale, 11);
                    let mut re = vec![0.0; n * dim];
                    let lz = exact_repulsion(&y, n, dim, Kernel::StudentT(alpha), &mut re);
                    let mut rf = vec![0.0; n * dim];
                    let mut cache = Cache::default();
                    let lzf = fft_repulsion(&y, n, dim, alpha, &mut cache, &mut rf).unwrap();
                    let e = rel_err(&rf, &re);
                    eprintln!("dim {dim} α {alpha} scale {scale}: gradient rel err {e:.2e}, ln Z err {:.2e}", lzf - lz);
                    worst_g = worst_g.max(e);
                    worst_z = worst_z.max((lzf - lz).abs());
                }
            }
        }
        assert!(worst_g < 5e-2, "gradient rel err {worst_g}");
        assert!(worst_z < 5e-3, "ln Z err {worst_z}");
    }

    #[test]
    fn kernel_cached_and_outliers_capped() {
        let n = 2000;
        let mut y = cloud(n, 2, 30.0, 5);
        let mut cache = Cache::default();
        let mut r = vec![0.0; n * 2];
        fft_repulsion(&y, n, 2, 1.0, &mut cache, &mut r).unwrap();
        // A tiny move inside the same ladder step reuses the kernel transform.
        y.iter_mut().for_each(|v| *v *= 1.0001);
        fft_repulsion(&y, n, 2, 1.0, &mut cache, &mut r).unwrap();
        assert_eq!(cache.kernel_builds, 1);
        // One point flies out to 1e5: the grid stays at the bulk's size (an outlier, exact).
        y[0] = 1e5;
        fft_repulsion(&y, n, 2, 1.0, &mut cache, &mut r).unwrap();
        assert_eq!(cache.key.unwrap().1, MIN_BOXES);
    }

    #[test]
    fn outliers_exact_and_bulk_accurate() {
        // Bulk in [-20, 20]² plus far outliers (both axes, both sides, one pair close to
        // each other): the gradient of every point and Z match the exact sums as they
        // do without outliers.
        for &(dim, alpha) in &[(2usize, 1.0), (2, 0.5), (1, 1.0)] {
            let n = if dim == 1 { 1400 } else { 3000 };
            let mut y = cloud(n, dim, 40.0, 3);
            let far = [1e4, -3e3, 5e5, 5e5 + 2.0, -7e4];
            for (t, &v) in far.iter().enumerate() {
                y[t * 17 * dim] = v;
                if dim == 2 {
                    y[t * 17 * dim + 1] = if t % 2 == 0 { -v } else { 0.5 * v };
                }
            }
            let mut re = vec![0.0; n * dim];
            let lz = exact_repulsion(&y, n, dim, Kernel::StudentT(alpha), &mut re);
            let mut rf = vec![0.0; n * dim];
            let mut cache = Cache::default();
            let lzf = fft_repulsion(&y, n, dim, alpha, &mut cache, &mut rf).unwrap();
            let e = rel_err(&rf, &re);
            let eo: f64 = (0..far.len()).map(|t| rel_err(&rf[t * 17 * dim..t * 17 * dim + dim], &re[t * 17 * dim..t * 17 * dim + dim])).fold(0.0, f64::max);
            eprintln!("outliers dim {dim} α {alpha}: gradient rel err {e:.2e} (outliers {eo:.2e}), ln Z err {:.2e}, boxes {}", lzf - lz, cache.key.unwrap().1);
            assert!(e < 5e-2, "gradient rel err {e}");
            // The outliers' sums are exact: their only error is the (shared) error of Z.
            let ez = ((lz - lzf).exp() - 1.0).abs();
            assert!((eo - ez).abs() < 1e-9, "outlier rel err {eo} vs Z's {ez}");
            assert!((lzf - lz).abs() < 5e-3);
            assert!(cache.key.unwrap().1 <= if dim == 1 { 200 } else { MIN_BOXES });
        }
    }

    #[test]
    fn tails_are_order_statistics() {
        let n = 10_000;
        let y = cloud(n, 2, 10.0, 9);
        let (lo, hi) = tails(&y, 2, 1, 6);
        let mut v: Vec<f64> = y.iter().skip(1).step_by(2).copied().collect();
        v.sort_by(f64::total_cmp);
        assert_eq!(lo, v[..7].to_vec());
        assert_eq!(hi, v[n - 7..].iter().rev().copied().collect::<Vec<_>>());
    }
}
