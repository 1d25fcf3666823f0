//! Image–text contrastive losses over the n×n matrix of paired rows x_i
//! (images) and y_j (texts), G_ij = x_i·y_j, row i and column i a matching pair.
//!
//! * CLIP (Radford et al. 2021): symmetric InfoNCE over s_ij = scale·G_ij,
//!   L = 1/(2n) Σ_i [(lse_j s_ij − s_ii) + (lse_j s_ji − s_ii)] (row and column
//!   log-sum-exps). [`clip_forward`] takes one pass over 256×256 tiles of s and
//!   returns both log-sum-exps (O(n) state): each tile gives its rows a partial
//!   (max, Σe^{s−max}) and its columns one (from the same exponentials,
//!   weighted by e^{rowmax − blockmax}; recomputed against the column's own max
//!   when that underflows), merged in block-row order. [`clip_backward`]
//!   recomputes the tiles: ∂L/∂s_ij = c_ij = (e^{s_ij − lr_i} + e^{s_ij − lc_j})/(2n)
//!   − [i = j]/n, ∂L/∂x = scale·C·y, ∂L/∂y = scale·Cᵀ·x, ∂L/∂scale = Σ c_ij G_ij.
//! * SigLIP (Zhai et al. 2023): l_ij = scale·G_ij + bias, z_ij = 1 if i = j
//!   else −1, L = 1/n Σ_ij softplus(−z_ij·l_ij) = −1/n Σ_ij log σ(z_ij l_ij).
//!   Every pair is independent, so [`siglip_forward_backward`] fuses the loss
//!   and the gradient in one pass over the tiles (c_ij = −z_ij σ(−z_ij l_ij)/n;
//!   ∂L/∂bias = Σ c_ij, ∂L/∂scale = Σ c_ij G_ij).
//!
//! ∂L/∂scale is taken as Σ_i x_i·(C·y)_i from the unscaled C·y rows, with no
//! extra pass over the tiles. Nothing n×n is kept: per running task a tile and,
//! for the column gradients, an n×d partial; block-rows run in parallel and
//! their column partials are added in block-row order, so results are
//! bit-identical for any thread count.

use super::common::{exp_f32, ordered_sum, sigmoid, softplus};
use super::xent_sym::{coef, col_sums, merge, row_stats, Part, COL_TINY};
use super::rowops;
use crate::error::{check_finite, check_len, Error, Result};
use crate::linalg::{dot, gemm, transpose, MatRef};
use crate::simd::multiversion;
use crate::Real;
use rayon::prelude::*;
use std::any::TypeId;

/// Rows and columns per tile (the GEMM runs near peak at 256×d×256).
pub const MM_TILE: usize = 256;
/// Bytes of column-gradient partials held at once (block-rows per group =
/// this / (n·d·size), clamped to 2..=32): a function of the problem only, never
/// of the thread count.
const PARTIAL_BUDGET: usize = 128 << 20;

/// n paired rows: `x` (images) and `y` (texts), both n×d row-major.
#[derive(Clone, Copy)]
pub struct Pairs<'a, T> {
    pub x: &'a [T],
    pub y: &'a [T],
    pub n: usize,
    pub d: usize,
}

impl<'a, T: Real> Pairs<'a, T> {
    fn validate(&self) -> Result<()> {
        if self.n == 0 || self.d == 0 {
            return Err(Error::Shape(format!("features must be non-empty, got shape ({}, {})", self.n, self.d)));
        }
        check_len("image_features", self.x.len(), self.n, self.d)?;
        check_len("text_features", self.y.len(), self.n, self.d)?;
        check_finite("image_features", self.x)?;
        check_finite("text_features", self.y)
    }
}

fn check_param(name: &str, v: f64) -> Result<()> {
    if !v.is_finite() {
        return Err(Error::InvalidParameter(format!("{name} must be finite, got {v}")));
    }
    Ok(())
}

fn check_grads<T>(p: &Pairs<T>, gx: &[T], gy: &[T]) -> Result<()> {
    check_len("grad_image", gx.len(), p.n, p.d)?;
    check_len("grad_text", gy.len(), p.n, p.d)
}

/// The tiled problem (`tb` rows per tile, `group` block-rows per merge).
struct Tiles<'a, T> {
    x: &'a [T],
    y: &'a [T],
    n: usize,
    d: usize,
    tb: usize,
    group: usize,
    /// yᵀ (d×n row-major): GEMM operands packed from contiguous runs.
    yt: Vec<T>,
}

impl<'a, T: Real> Tiles<'a, T> {
    fn new(p: &Pairs<'a, T>, tb: usize, group: usize) -> Self {
        Tiles { x: p.x, y: p.y, n: p.n, d: p.d, tb, group, yt: transpose(p.y, p.n, p.d) }
    }
    fn auto(p: &Pairs<'a, T>) -> Self {
        let per = p.n * p.d * std::mem::size_of::<T>();
        let group = (PARTIAL_BUDGET / per.max(1)).clamp(2, 32);
        Self::new(p, MM_TILE, group)
    }
    fn nb(&self) -> usize {
        self.n.div_ceil(self.tb)
    }
    fn range(&self, t: usize) -> (usize, usize) {
        (t * self.tb, ((t + 1) * self.tb).min(self.n))
    }
    fn xm(&self) -> MatRef<'_, T> {
        MatRef::new(self.x, self.n, self.d)
    }
    fn ym(&self) -> MatRef<'_, T> {
        MatRef::new(self.y, self.n, self.d)
    }
    /// `buf` = alpha·x_t·y_uᵀ + beta·buf (rows of tile t, columns of tile u), row-major.
    fn block(&self, t: usize, u: usize, alpha: T, beta: T, buf: &mut [T]) {
        let ((a0, a1), (b0, b1)) = (self.range(t), self.range(u));
        let yt = MatRef { data: &self.yt[b0..], rows: self.d, cols: b1 - b0, rs: self.n as isize, cs: 1 };
        gemm(alpha, self.xm().rows_range(a0, a1), yt, beta, &mut buf[..(a1 - a0) * (b1 - b0)]);
    }
    /// Block-rows in groups of `group` (ascending).
    fn groups(&self) -> Vec<Vec<usize>> {
        (0..self.nb()).collect::<Vec<_>>().chunks(self.group).map(|g| g.to_vec()).collect()
    }

    /// Runs `task(t, gx_t)` over every block-row (`gx_t`: its rows of `accx`),
    /// each returning a scalar and its n×d column partial; adds the partials
    /// into `accy` in block-row order. Returns the scalars in block-row order.
    fn grad_sweep<S: Send + Sync, F>(&self, accx: &mut [T], accy: &mut [T], task: F) -> Vec<S>
    where
        F: Fn(usize, &mut [T]) -> (S, Vec<T>) + Sync,
    {
        let (n, d, tb) = (self.n, self.d, self.tb);
        let mut tiles: Vec<Option<&mut [T]>> = accx[..n * d].chunks_mut(tb * d).map(Some).collect();
        accy[..n * d].iter_mut().for_each(|v| *v = T::zero());
        let mut scalars = Vec::with_capacity(self.nb());
        for group in self.groups() {
            let work: Vec<(usize, &mut [T])> = group.iter().map(|&t| (t, tiles[t].take().expect("each tile once"))).collect();
            let outs: Vec<(S, Vec<T>)> = work.into_par_iter().map(|(t, gt)| task(t, gt)).collect();
            accy[..n * d].par_chunks_mut(tb * d).enumerate().for_each(|(v, blk)| {
                let off = v * tb * d;
                for (_, part) in &outs {
                    rowops::add(blk, &part[off..off + blk.len()]);
                }
            });
            scalars.extend(outs.into_iter().map(|o| o.0));
        }
        scalars
    }
}

/// Σ_i x_i·a_i over row-major n×d matrices, in f64 (ordered).
fn row_dots<T: Real>(x: &[T], a: &[T], n: usize, d: usize, tb: usize) -> f64 {
    let parts: Vec<f64> = x[..n * d]
        .par_chunks(tb * d)
        .zip(a[..n * d].par_chunks(tb * d))
        .map(|(xs, as_)| xs.chunks(d).zip(as_.chunks(d)).map(|(u, v)| dot(u, v).to_f64_()).sum::<f64>())
        .collect();
    ordered_sum(parts)
}

/// `v ← a·v` in parallel over fixed chunks.
fn scale_all<T: Real>(v: &mut [T], a: T) {
    v.par_chunks_mut(1 << 14).for_each(|c| rowops::scale(c, a));
}

// ----------------------------------------------------------------- CLIP

/// CLIP forward: the loss and the per-row / per-column log-sum-exps of s = scale·x·yᵀ.
pub struct ClipState<T> {
    pub loss: f64,
    pub lse_rows: Vec<T>,
    pub lse_cols: Vec<T>,
}

/// Loss and the O(n) state of CLIP's symmetric InfoNCE (one pass over the tiles).
pub fn clip_forward<T: Real>(p: &Pairs<T>, scale: f64) -> Result<ClipState<T>> {
    p.validate()?;
    check_param("logit_scale", scale)?;
    Ok(clip_forward_tiles(&Tiles::auto(p), T::c(scale)))
}

fn clip_forward_tiles<T: Real>(k: &Tiles<T>, scale: T) -> ClipState<T> {
    let n = k.n;
    let empty: Part<T> = (T::neg_infinity(), T::zero());
    let mut col = vec![empty; n];
    let mut lse_rows = vec![T::zero(); n];
    for group in k.groups() {
        let outs: Vec<(Vec<T>, Vec<Part<T>>)> = group.par_iter().map(|&t| clip_lse_blockrow(k, t, scale)).collect();
        for (&t, (rl, _)) in group.iter().zip(&outs) {
            let (a0, a1) = k.range(t);
            lse_rows[a0..a1].copy_from_slice(rl);
        }
        // Column partials merged in block-row order, parallel over fixed column blocks.
        col.par_chunks_mut(k.tb).enumerate().for_each(|(v, blk)| {
            let off = v * k.tb;
            for (_, cs) in &outs {
                let len = blk.len();
                for (acc, &c) in blk.iter_mut().zip(&cs[off..off + len]) {
                    *acc = merge(*acc, c);
                }
            }
        });
    }
    let lse_cols: Vec<T> = col.iter().map(|&(m, s)| m + s.ln()).collect();
    let (x, y, d) = (k.x, k.y, k.d);
    let parts: Vec<f64> = (0..k.nb())
        .into_par_iter()
        .map(|t| {
            let (a0, a1) = k.range(t);
            (a0..a1)
                .map(|i| {
                    let sii = scale * dot(&x[i * d..(i + 1) * d], &y[i * d..(i + 1) * d]);
                    // lse ≥ s_ii exactly; this dot rounds differently from the tile GEMM.
                    ((lse_rows[i] - sii).max(T::zero()) + (lse_cols[i] - sii).max(T::zero())).to_f64_()
                })
                .sum::<f64>()
        })
        .collect();
    let loss = ordered_sum(parts) / (2.0 * n as f64);
    ClipState { loss, lse_rows, lse_cols }
}

/// Block-row t against every column tile: its rows' log-sum-exps and its
/// (max, sum) partial of every column.
fn clip_lse_blockrow<T: Real>(k: &Tiles<T>, t: usize, scale: T) -> (Vec<T>, Vec<Part<T>>) {
    let (n, tb) = (k.n, k.tb);
    let (a0, a1) = k.range(t);
    let rows = a1 - a0;
    let empty: Part<T> = (T::neg_infinity(), T::zero());
    let mut rs = vec![empty; rows];
    let mut cs = vec![empty; n];
    let mut s = vec![T::zero(); rows * tb];
    let mut e = vec![T::zero(); rows * tb];
    let mut rmax = vec![T::zero(); rows];
    let mut w = vec![T::zero(); rows];
    let mut colsum = vec![T::zero(); tb];
    let tiny = T::c(COL_TINY);
    for u in 0..k.nb() {
        let (b0, b1) = k.range(u);
        let cols = b1 - b0;
        k.block(t, u, scale, T::zero(), &mut s);
        let (s, e) = (&s[..rows * cols], &mut e[..rows * cols]);
        row_stats(s, e, cols, &mut rs, &mut rmax);
        let bm = col_sums(e, cols, &rmax, &mut w, &mut colsum[..cols]);
        for (j, &c) in colsum[..cols].iter().enumerate() {
            cs[b0 + j] = if c >= tiny {
                (bm, c)
            } else {
                // Lost to underflow against the block maximum: the column's own maximum.
                let cm = (0..rows).map(|i| s[i * cols + j]).fold(T::neg_infinity(), |a, b| a.max(b));
                (cm, (0..rows).map(|i| (s[i * cols + j] - cm).exp()).fold(T::zero(), |a, b| a + b))
            };
        }
    }
    (rs.iter().map(|&(m, v)| m + v.ln()).collect(), cs)
}

/// CLIP backward for an upstream gradient `g`: ∂L/∂x into `gx`, ∂L/∂y into
/// `gy` (both n×d, overwritten); returns ∂L/∂scale (times g). Recomputes the tiles.
#[allow(clippy::too_many_arguments)]
pub fn clip_backward<T: Real>(
    p: &Pairs<T>, scale: f64, lse_rows: &[T], lse_cols: &[T], g: f64, gx: &mut [T], gy: &mut [T],
) -> Result<f64> {
    p.validate()?;
    check_param("logit_scale", scale)?;
    check_param("upstream gradient", g)?;
    if lse_rows.len() != p.n || lse_cols.len() != p.n {
        return Err(Error::Shape("log-sum-exp state does not match the batch".into()));
    }
    check_grads(p, gx, gy)?;
    Ok(clip_backward_tiles(&Tiles::auto(p), T::c(scale), lse_rows, lse_cols, g, gx, gy))
}

fn clip_backward_tiles<T: Real>(k: &Tiles<T>, scale: T, lr: &[T], lc: &[T], g: f64, gx: &mut [T], gy: &mut [T]) -> f64 {
    let (n, d, tb) = (k.n, k.d, k.tb);
    let inv = T::c(0.5 / n as f64);
    let (xm, ym) = (k.xm(), k.ym());
    k.grad_sweep(gx, gy, |t, gt| {
        let (a0, a1) = k.range(t);
        let rows = a1 - a0;
        let mut colbuf = vec![T::zero(); n * d];
        let mut s = vec![T::zero(); rows * tb];
        let mut beta = vec![T::zero(); tb];
        for u in 0..k.nb() {
            let (b0, b1) = k.range(u);
            let cols = b1 - b0;
            k.block(t, u, scale, T::zero(), &mut s);
            let w = &mut s[..rows * cols];
            coef(w, cols, &lr[a0..a1], &lc[b0..b1], inv, &mut beta);
            if u == t {
                (0..rows).for_each(|i| w[i * cols + i] -= inv + inv);
            }
            let wm = MatRef::new(w, rows, cols);
            let first = if u == 0 { T::zero() } else { T::one() };
            gemm(T::one(), wm, ym.rows_range(b0, b1), first, gt);
            gemm(T::one(), wm.t(), xm.rows_range(a0, a1), T::zero(), &mut colbuf[b0 * d..b1 * d]);
        }
        ((), colbuf)
    });
    let gs = row_dots(k.x, gx, n, d, tb) * g;
    let f = scale * T::c(g);
    scale_all(gx, f);
    scale_all(gy, f);
    gs
}

// ----------------------------------------------------------------- SigLIP

/// SigLIP's loss and, when asked, the gradients w.r.t. scale and bias.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SiglipOut {
    pub loss: f64,
    pub d_scale: f64,
    pub d_bias: f64,
}

/// SigLIP loss value only (one GEMM unit).
pub fn siglip_forward<T: Real>(p: &Pairs<T>, scale: f64, bias: f64) -> Result<f64> {
    p.validate()?;
    check_param("logit_scale", scale)?;
    check_param("logit_bias", bias)?;
    Ok(siglip_tiles(&Tiles::auto(p), T::c(scale), T::c(bias), None).loss)
}

/// SigLIP loss and its gradients (unit upstream) in one fused pass: ∂L/∂x into
/// `gx`, ∂L/∂y into `gy` (n×d, overwritten), ∂L/∂scale and ∂L/∂bias returned.
pub fn siglip_forward_backward<T: Real>(p: &Pairs<T>, scale: f64, bias: f64, gx: &mut [T], gy: &mut [T]) -> Result<SiglipOut> {
    p.validate()?;
    check_param("logit_scale", scale)?;
    check_param("logit_bias", bias)?;
    check_grads(p, gx, gy)?;
    Ok(siglip_tiles(&Tiles::auto(p), T::c(scale), T::c(bias), Some((gx, gy))))
}

fn siglip_tiles<T: Real>(k: &Tiles<T>, scale: T, bias: T, grads: Option<(&mut [T], &mut [T])>) -> SiglipOut {
    let (n, d) = (k.n, k.d);
    let inv = T::c(1.0 / n as f64);
    match grads {
        None => {
            let parts: Vec<f64> = (0..k.nb()).into_par_iter().map(|t| siglip_blockrow(k, t, scale, bias, inv, None).0).collect();
            SiglipOut { loss: ordered_sum(parts) / n as f64, d_scale: 0.0, d_bias: 0.0 }
        }
        Some((gx, gy)) => {
            let (xm, ym) = (k.xm(), k.ym());
            let sums = k.grad_sweep(gx, gy, |t, gt| {
                let mut colbuf = vec![T::zero(); n * d];
                let sc = siglip_blockrow(k, t, scale, bias, inv, Some((gt, &mut colbuf, xm, ym)));
                (sc, colbuf)
            });
            let d_bias = ordered_sum(sums.iter().map(|v| v.1));
            let d_scale = row_dots(k.x, gx, n, d, k.tb);
            scale_all(gx, scale);
            scale_all(gy, scale);
            SiglipOut { loss: ordered_sum(sums.iter().map(|v| v.0)) / n as f64, d_scale, d_bias }
        }
    }
}

type SigGrad<'b, 'm, T> = (&'b mut [T], &'b mut [T], MatRef<'m, T>, MatRef<'m, T>);

/// Block-row t: Σ of its softplus terms and Σ of its coefficients; with
/// `grad`, (C·y) rows added into gt and Cᵀ·x_t written into the column partial.
fn siglip_blockrow<T: Real>(k: &Tiles<T>, t: usize, scale: T, bias: T, inv: T, mut grad: Option<SigGrad<'_, '_, T>>) -> (f64, f64) {
    let tb = k.tb;
    let (a0, a1) = k.range(t);
    let rows = a1 - a0;
    let mut s = vec![T::zero(); rows * tb];
    let mut diag = vec![T::zero(); rows];
    let mut scratch = vec![T::zero(); tb];
    let (mut loss, mut csum) = (0.0f64, 0.0f64);
    for u in 0..k.nb() {
        let (b0, b1) = k.range(u);
        let cols = b1 - b0;
        let l = &mut s[..rows * cols];
        // l = scale·x·yᵀ + bias straight from the GEMM.
        l.iter_mut().for_each(|v| *v = bias);
        k.block(t, u, scale, T::one(), l);
        if u == t {
            // The positives: taken out of the vectorised pass (−∞ gives 0 there) and done exactly.
            for i in 0..rows {
                diag[i] = l[i * cols + i];
                l[i * cols + i] = T::neg_infinity();
            }
        }
        let (ls, cs) = if grad.is_some() { neg_tile_grad(l, cols, inv, &mut scratch) } else { (neg_tile_loss(l, cols), 0.0) };
        loss += ls;
        csum += cs;
        if u == t {
            for (i, &li) in diag.iter().enumerate() {
                loss += softplus(-li).to_f64_();
                let c = -sigmoid(-li) * inv;
                l[i * cols + i] = c;
                csum += c.to_f64_();
            }
        }
        if let Some((gt, colbuf, xm, ym)) = grad.as_mut() {
            let d = k.d;
            let cm = MatRef::new(l, rows, cols);
            let first = if u == 0 { T::zero() } else { T::one() };
            gemm(T::one(), cm, ym.rows_range(b0, b1), first, gt);
            gemm(T::one(), cm.t(), xm.rows_range(a0, a1), T::zero(), &mut colbuf[b0 * d..b1 * d]);
        }
    }
    (loss, csum)
}

#[inline(always)]
fn is_f32<T: 'static>() -> bool {
    TypeId::of::<T>() == TypeId::of::<f32>()
}

/// log(1 + u) for u in [0, 1]: 2·atanh(w), w = u/(2+u) ≤ 1/3, by its series to
/// w¹⁵ (relative error < 2e-8: f32 accuracy, and a loop that vectorises).
#[inline(always)]
fn log1p_unit_f32(u: f32) -> f32 {
    let w = u / (2.0 + u);
    let w2 = w * w;
    let p = 1.0 / 13.0 + w2 * (1.0 / 15.0);
    let p = 1.0 / 11.0 + w2 * p;
    let p = 1.0 / 9.0 + w2 * p;
    let p = 1.0 / 7.0 + w2 * p;
    let p = 1.0 / 5.0 + w2 * p;
    let p = 1.0 / 3.0 + w2 * p;
    let p = 1.0 + w2 * p;
    2.0 * w * p
}

/// softplus(l) = max(l, 0) + log(1 + e^{−|l|}) and σ(l) of a negative pair, f32.
#[inline(always)]
fn neg_pair_f32(l: f32) -> (f32, f32) {
    let u = exp_f32(-l.abs());
    let sp = l.max(0.0) + log1p_unit_f32(u);
    let sig = (if l >= 0.0 { 1.0 } else { u }) / (1.0 + u);
    (sp, sig)
}

#[inline(always)]
fn neg_pair<T: Real>(l: T) -> (T, T) {
    let u = (-l.abs()).exp();
    let sp = l.max(T::zero()) + u.ln_1p();
    let sig = (if l >= T::zero() { T::one() } else { u }) / (T::one() + u);
    (sp, sig)
}

const LANES: usize = 8;

/// Σ v over 8 fixed lanes (a fixed order the compiler vectorises).
#[inline(always)]
fn lane_sum<U: Real>(v: &[U]) -> U {
    let mut acc = [U::zero(); LANES];
    let ch = v.chunks_exact(LANES);
    let tail = ch.remainder().iter().fold(U::zero(), |a, &b| a + b);
    for c in ch {
        for l in 0..LANES {
            acc[l] += c[l];
        }
    }
    ((acc[0] + acc[4]) + (acc[2] + acc[6])) + ((acc[1] + acc[5]) + (acc[3] + acc[7])) + tail
}

fn as_f32<T: Real>(v: &mut [T]) -> &mut [f32] {
    debug_assert!(is_f32::<T>());
    // SAFETY: only called when T is f32 (checked by the callers), same layout.
    unsafe { &mut *(v as *mut [T] as *mut [f32]) }
}

// Plain element loops (they vectorise; a lane-structured loop around the
// exponential does not), then lane sums.

multiversion! {
    /// Σ softplus(l) over a tile of negative-pair logits (rows `cols` wide), in f64 by rows;
    /// overwrites the tile with the terms.
    fn neg_tile_loss<T>(l: &mut [T], cols: usize) -> f64 {
        let mut tot = 0.0f64;
        if is_f32::<T>() {
            for row in as_f32(l).chunks_exact_mut(cols) {
                for v in row.iter_mut() {
                    *v = neg_pair_f32(*v).0;
                }
                tot += lane_sum(row) as f64;
            }
        } else {
            for row in l.chunks_exact_mut(cols) {
                for v in row.iter_mut() {
                    *v = neg_pair(*v).0;
                }
                tot += lane_sum(row).to_f64_();
            }
        }
        tot
    }
}

multiversion! {
    /// Σ softplus(l) and Σ c over a tile of negative-pair logits, turning each
    /// logit into its coefficient c = σ(l)·inv in place (`scratch`: one row).
    fn neg_tile_grad<T>(l: &mut [T], cols: usize, inv: T, scratch: &mut [T]) -> (f64, f64) {
        let (mut tot, mut cs) = (0.0f64, 0.0f64);
        if is_f32::<T>() {
            let inv = inv.to_f32().unwrap_or(f32::NAN);
            let sp = &mut as_f32(scratch)[..cols];
            for row in as_f32(l).chunks_exact_mut(cols) {
                for (v, o) in row.iter_mut().zip(sp.iter_mut()) {
                    let (a, sig) = neg_pair_f32(*v);
                    *o = a;
                    *v = sig * inv;
                }
                tot += lane_sum(sp) as f64;
                cs += lane_sum(row) as f64;
            }
        } else {
            let sp = &mut scratch[..cols];
            for row in l.chunks_exact_mut(cols) {
                for (v, o) in row.iter_mut().zip(sp.iter_mut()) {
                    let (a, sig) = neg_pair(*v);
                    *o = a;
                    *v = sig * inv;
                }
                tot += lane_sum(sp).to_f64_();
                cs += lane_sum(row).to_f64_();
            }
        }
        (tot, cs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::losses::common::testutil::*;

    fn gram(x: &[f64], y: &[f64], n: usize, d: usize) -> Vec<f64> {
        (0..n * n).map(|ij| (0..d).map(|a| x[ij / n * d + a] * y[ij % n * d + a]).sum()).collect()
    }

    fn lse(v: impl Iterator<Item = f64> + Clone) -> f64 {
        let m = v.clone().fold(f64::NEG_INFINITY, f64::max);
        m + v.map(|a| (a - m).exp()).sum::<f64>().ln()
    }

    fn clip_brute(x: &[f64], y: &[f64], n: usize, d: usize, sc: f64) -> f64 {
        let g = gram(x, y, n, d);
        let mut tot = 0.0;
        for i in 0..n {
            tot += lse((0..n).map(|j| sc * g[i * n + j])) - sc * g[i * n + i];
            tot += lse((0..n).map(|j| sc * g[j * n + i])) - sc * g[i * n + i];
        }
        tot / (2.0 * n as f64)
    }

    fn siglip_brute(x: &[f64], y: &[f64], n: usize, d: usize, sc: f64, b: f64) -> f64 {
        let g = gram(x, y, n, d);
        let mut tot = 0.0;
        for i in 0..n {
            for j in 0..n {
                let z = if i == j { 1.0 } else { -1.0 };
                tot += softplus(-z * (sc * g[i * n + j] + b));
            }
        }
        tot / n as f64
    }

    fn unit_rows(rng: &mut Rng, n: usize, d: usize) -> Vec<f64> {
        let mut z = rng.normal_vec(n * d);
        for r in z.chunks_mut(d) {
            let nr = r.iter().map(|v| v * v).sum::<f64>().sqrt();
            r.iter_mut().for_each(|v| *v /= nr);
        }
        z
    }

    /// Full finite differences for small problems, a few random directions for large ones.
    fn check_grad(g: &[f64], x: &[f64], f: &dyn Fn(&[f64]) -> f64, tol: f64, rng: &mut Rng) {
        if x.len() <= 200 {
            assert_close(g, &fd_grad(x, f), tol);
        } else {
            for _ in 0..3 {
                let v = rng.normal_vec(x.len());
                assert_dir(g, x, &v, f, tol);
            }
        }
    }

    fn d_scalar(f: &dyn Fn(f64) -> f64, v: f64) -> f64 {
        let h = 1e-6 * (1.0 + v.abs());
        (f(v + h) - f(v - h)) / (2.0 * h)
    }

    // (n, d, tile, group, scale): n below, at and between tile multiples.
    const CASES: [(usize, usize, usize, usize, f64); 7] = [
        (1, 3, 4, 2, 2.0),
        (2, 3, 4, 2, 5.0),
        (5, 4, 4, 2, 1.0),
        (17, 3, 4, 3, 3.0),
        (33, 5, 8, 2, 10.0),
        (40, 3, 8, 8, 100.0), // τ = 0.01
        (300, 4, MM_TILE, 2, 14.0),
    ];

    #[test]
    fn clip_matches_brute_force_and_finite_differences() {
        let mut rng = Rng(21);
        for &(n, d, tb, group, sc) in &CASES {
            let x = unit_rows(&mut rng, n, d);
            let y = unit_rows(&mut rng, n, d);
            let p = Pairs { x: &x, y: &y, n, d };
            let k = Tiles::new(&p, tb, group);
            let st = clip_forward_tiles(&k, sc);
            let want = clip_brute(&x, &y, n, d, sc);
            assert!((st.loss - want).abs() < 1e-10 * (1.0 + want), "n={n}: {} vs {want}", st.loss);
            let (mut gx, mut gy) = (vec![f64::NAN; n * d], vec![f64::NAN; n * d]);
            let gs = clip_backward_tiles(&k, sc, &st.lse_rows, &st.lse_cols, 1.5, &mut gx, &mut gy);
            let tol = 1e-5 * (1.0 + sc / 10.0);
            check_grad(&gx, &x, &|xx| 1.5 * clip_brute(xx, &y, n, d, sc), tol, &mut rng);
            check_grad(&gy, &y, &|yy| 1.5 * clip_brute(&x, yy, n, d, sc), tol, &mut rng);
            let fs = 1.5 * d_scalar(&|s| clip_brute(&x, &y, n, d, s), sc);
            assert!((gs - fs).abs() < tol * (1.0 + fs.abs()), "n={n}: d_scale {gs} vs {fs}");
            // f32 agrees to f32 accuracy.
            let (x32, y32): (Vec<f32>, Vec<f32>) = (x.iter().map(|&v| v as f32).collect(), y.iter().map(|&v| v as f32).collect());
            let p32 = Pairs { x: &x32, y: &y32, n, d };
            let k32 = Tiles::new(&p32, tb, group);
            let s32 = clip_forward_tiles(&k32, sc as f32);
            assert!((s32.loss - want).abs() < 2e-5 * (1.0 + want) * (1.0 + sc / 10.0), "f32 n={n}: {} vs {want}", s32.loss);
            let (mut gx32, mut gy32) = (vec![0.0f32; n * d], vec![0.0f32; n * d]);
            let gs32 = clip_backward_tiles(&k32, sc as f32, &s32.lse_rows, &s32.lse_cols, 1.5, &mut gx32, &mut gy32);
            let gmax = gx.iter().chain(&gy).fold(0.0f64, |a, b| a.max(b.abs())).max(1e-3);
            for (a, b) in gx32.iter().chain(&gy32).zip(gx.iter().chain(&gy)) {
                assert!((*a as f64 - b).abs() <= 1e-4 * gmax * (1.0 + sc / 10.0), "f32 n={n}: {a} vs {b}");
            }
            assert!((gs32 - gs).abs() < 1e-4 * (1.0 + gs.abs()) * (1.0 + sc / 10.0));
        }
    }

    #[test]
    fn siglip_matches_brute_force_and_finite_differences() {
        let mut rng = Rng(22);
        for &(n, d, tb, group, sc) in &CASES {
            for &b in &[-10.0, 0.5] {
                let x = unit_rows(&mut rng, n, d);
                let y = unit_rows(&mut rng, n, d);
                let p = Pairs { x: &x, y: &y, n, d };
                let k = Tiles::new(&p, tb, group);
                let want = siglip_brute(&x, &y, n, d, sc, b);
                let only = siglip_tiles(&k, sc, b, None);
                assert!((only.loss - want).abs() < 1e-12 * (1.0 + want), "n={n}: {} vs {want}", only.loss);
                let (mut gx, mut gy) = (vec![f64::NAN; n * d], vec![f64::NAN; n * d]);
                let out = siglip_tiles(&k, sc, b, Some((&mut gx, &mut gy)));
                assert_eq!(out.loss.to_bits(), only.loss.to_bits());
                let tol = 1e-5 * (1.0 + sc / 10.0);
                check_grad(&gx, &x, &|xx| siglip_brute(xx, &y, n, d, sc, b), tol, &mut rng);
                check_grad(&gy, &y, &|yy| siglip_brute(&x, yy, n, d, sc, b), tol, &mut rng);
                let fs = d_scalar(&|s| siglip_brute(&x, &y, n, d, s, b), sc);
                let fb = d_scalar(&|bb| siglip_brute(&x, &y, n, d, sc, bb), b);
                assert!((out.d_scale - fs).abs() < tol * (1.0 + fs.abs()), "d_scale {} vs {fs}", out.d_scale);
                assert!((out.d_bias - fb).abs() < tol * (1.0 + fb.abs()), "d_bias {} vs {fb}", out.d_bias);
                let (x32, y32): (Vec<f32>, Vec<f32>) = (x.iter().map(|&v| v as f32).collect(), y.iter().map(|&v| v as f32).collect());
                let p32 = Pairs { x: &x32, y: &y32, n, d };
                let k32 = Tiles::new(&p32, tb, group);
                let (mut gx32, mut gy32) = (vec![0.0f32; n * d], vec![0.0f32; n * d]);
                let o32 = siglip_tiles(&k32, sc as f32, b as f32, Some((&mut gx32, &mut gy32)));
                assert!((o32.loss - want).abs() < 1e-5 * (1.0 + want) * (1.0 + sc / 10.0), "f32 n={n}: {} vs {want}", o32.loss);
                let gmax = gx.iter().chain(&gy).fold(0.0f64, |a, b| a.max(b.abs())).max(1e-3);
                for (a, b) in gx32.iter().chain(&gy32).zip(gx.iter().chain(&gy)) {
                    assert!((*a as f64 - b).abs() <= 1e-4 * gmax * (1.0 + sc / 10.0), "f32 n={n}: {a} vs {b}");
                }
            }
        }
    }

    #[test]
    fn log1p_series_is_accurate() {
        for k in 0..=10_000 {
            let u = k as f32 / 10_000.0;
            let want = (u as f64).ln_1p();
            assert!((log1p_unit_f32(u) as f64 - want).abs() <= 3e-7 * want.max(1e-30), "{u}");
        }
        assert_eq!(log1p_unit_f32(0.0), 0.0);
    }

    #[test]
    fn huge_scales_and_duplicate_rows_stay_finite() {
        // Duplicate rows (columns tie), τ = 1e-3 and a bias far from the logits.
        let (n, d) = (12usize, 3usize);
        let mut rng = Rng(5);
        let mut x = unit_rows(&mut rng, n, d);
        x.copy_within(0..d, 5 * d);
        let y = x.clone();
        let p = Pairs { x: &x, y: &y, n, d };
        for sc in [1e3, 1e5] {
            let k = Tiles::new(&p, 4, 2);
            let st = clip_forward_tiles(&k, sc);
            assert!((st.loss - clip_brute(&x, &y, n, d, sc)).abs() < 1e-8 * sc);
            let (mut gx, mut gy) = (vec![0.0; n * d], vec![0.0; n * d]);
            let gs = clip_backward_tiles(&k, sc, &st.lse_rows, &st.lse_cols, 1.0, &mut gx, &mut gy);
            assert!(gs.is_finite() && gx.iter().chain(&gy).all(|v| v.is_finite()));
            let mut g2 = (vec![0.0; n * d], vec![0.0; n * d]);
            let o = siglip_tiles(&k, sc, -1e4, Some((&mut g2.0, &mut g2.1)));
            assert!((o.loss - siglip_brute(&x, &y, n, d, sc, -1e4)).abs() < 1e-9 * (1.0 + o.loss));
            assert!(o.d_scale.is_finite() && g2.0.iter().all(|v| v.is_finite()));
        }
    }

    #[test]
    fn public_entry_points_validate() {
        let x = [1.0f32, 0.0, 0.0, 1.0];
        let p = Pairs { x: &x, y: &x, n: 2, d: 2 };
        assert!(clip_forward(&p, f64::NAN).is_err());
        assert!(siglip_forward(&p, 1.0, f64::INFINITY).is_err());
        let bad = [1.0f32, f32::NAN, 0.0, 1.0];
        assert!(clip_forward(&Pairs { x: &x, y: &bad, n: 2, d: 2 }, 1.0).is_err());
        assert!(clip_forward(&Pairs { x: &x, y: &x[..3], n: 2, d: 2 }, 1.0).is_err());
        let st = clip_forward(&p, 2.0).unwrap();
        let (mut gx, mut gy) = (vec![0.0f32; 4], vec![0.0f32; 3]);
        assert!(clip_backward(&p, 2.0, &st.lse_rows, &st.lse_cols, 1.0, &mut gx, &mut gy).is_err());
        assert!(clip_backward(&p, 2.0, &st.lse_rows[..1], &st.lse_cols, 1.0, &mut gx, &mut vec![0.0; 4]).is_err());
    }

    #[test]
    fn results_do_not_depend_on_the_thread_count() {
        let (n, d) = (700usize, 8usize);
        let mut rng = Rng(6);
        let x: Vec<f32> = unit_rows(&mut rng, n, d).iter().map(|&v| v as f32).collect();
        let y: Vec<f32> = unit_rows(&mut rng, n, d).iter().map(|&v| v as f32).collect();
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            pool.install(|| {
                let p = Pairs { x: &x, y: &y, n, d };
                let k = Tiles::new(&p, 64, 3);
                let st = clip_forward_tiles(&k, 20.0f32);
                let (mut gx, mut gy) = (vec![0.0f32; n * d], vec![0.0f32; n * d]);
                let gs = clip_backward_tiles(&k, 20.0, &st.lse_rows, &st.lse_cols, 1.0, &mut gx, &mut gy);
                let (mut hx, mut hy) = (vec![0.0f32; n * d], vec![0.0f32; n * d]);
                let o = siglip_tiles(&k, 10.0, -10.0, Some((&mut hx, &mut hy)));
                let bits: Vec<u32> = st.lse_rows.iter().chain(&st.lse_cols).chain(&gx).chain(&gy).chain(&hx).chain(&hy).map(|v| v.to_bits()).collect();
                (st.loss.to_bits(), gs.to_bits(), o.loss.to_bits(), o.d_scale.to_bits(), o.d_bias.to_bits(), bits)
            })
        };
        let one = run(1);
        assert_eq!(one, run(2));
        assert_eq!(one, run(4));
    }
}
