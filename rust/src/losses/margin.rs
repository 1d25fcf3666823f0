//! Margin-softmax losses (classification-style metric learning), one fused kernel:
//!
//! cos_ic = ẑ_i·ŵ_c (ẑ, ŵ unit rows; with K sub-centres per class cos_ic = max_k ẑ_i·ŵ_{c,k}),
//! logits l_ic = s·cos_ic for c ≠ y_i and l_{i,y_i} = s·f(cos_{i,y_i}; m_{y_i}),
//! L = 1/n Σ_i [ logsumexp_c l_ic − l_{i,y_i} ].
//!
//! * normalised softmax: f(c) = c;  CosFace (Wang 2018): f(c) = c − m;
//! * ArcFace (Deng 2019): f(c) = cos(θ + m) = c·cos m − sin θ·sin m, sin θ = √(1 − c²) (no acos).
//!   Past θ + m > π the function is not monotone: as insightface, f(c) = c − m·sin m when
//!   c ≤ cos(π − m); with `easy`, f(c) = c when c ≤ 0 (the margin only where cos > 0).
//!   The derivative c/sin θ of the sin term is taken as 0 where sin θ = 0 (c = ±1), so the
//!   gradient is finite there (the tangent direction ŵ − c·ẑ vanishes anyway).
//! * `Linear`: no normalisation, l = s·z·wᵀ (the linear head of the center loss).
//!
//! W rows are never normalised into a copy: cos tiles are ẑ·W_tileᵀ (GEMM) times the rows'
//! inverse norms. The forward runs over tiles of classes with an online log-sum-exp and keeps
//! per-row log-sum-exp values (O(n) state); the backward recomputes every tile (three GEMMs:
//! the cos tile, ∂ẑ += A·W_tile, ∂W_tile = Aᵀ·ẑ) and writes ∂W rows of each tile directly.
//! [`margin_fused`] computes the loss and both gradients in one pass with three GEMMs (the batch
//! in strips of [`STRIP`] rows, O(STRIP·C·K) state): what training calls use; the
//! forward/backward pair above remains for forward-only calls (O(n) state, one GEMM).
//! No n×C matrix exists at any time. Tiles, row blocks and groups are fixed sizes, and partial
//! sums are reduced in a fixed order, so results are bit-identical for any thread count.

use super::common::{ordered_sum, unit_rows, unit_rows_backward};
use super::rowops;
use crate::error::{check_finite, check_len, Error, Result};
use crate::linalg::{gemm, MatRef};
use crate::Real;
use rayon::prelude::*;

/// Which target logit f(cos; m) the loss uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Unnormalised linear head, l = s·z·wᵀ, no margin.
    Linear,
    /// Normalised softmax, f(c) = c.
    Normalized,
    /// CosFace, f(c) = c − m.
    CosFace,
    /// ArcFace, f(c) = cos(θ + m) (see the module docs for the θ + m > π branch).
    ArcFace { easy: bool },
}

impl Kind {
    /// "linear", "normalized", "cosface", "arcface" (with `easy` for the easy margin).
    pub fn parse(s: &str, easy: bool) -> Result<Self> {
        Ok(match s {
            "linear" => Kind::Linear,
            "normalized" => Kind::Normalized,
            "cosface" => Kind::CosFace,
            "arcface" => Kind::ArcFace { easy },
            _ => return Err(Error::InvalidParameter(format!("unknown margin loss kind {s:?}"))),
        })
    }
    fn normalizes(self) -> bool {
        self != Kind::Linear
    }
}

/// The problem: embeddings z (n×d), class weights w ((classes·sub_centers)×d, class-major:
/// row c·K + k is sub-centre k of class c), labels, margins (one shared or one per class).
#[derive(Clone, Copy)]
pub struct MarginSoftmax<'a, T> {
    pub z: &'a [T],
    pub n: usize,
    pub d: usize,
    pub w: &'a [T],
    pub classes: usize,
    pub sub_centers: usize,
    pub labels: &'a [i64],
    pub margins: &'a [f64],
    pub scale: f64,
    pub kind: Kind,
}

/// Rows of the norm clamp, as `torch.nn.functional.normalize` (‖x‖ ≥ 1e-12).
const NORM_EPS: f64 = 1e-12;
/// W rows per class tile (rounded down to whole classes), batch rows per block, and the most
/// partial ∂ẑ sums the backward keeps (tiles are grouped into at most this many tasks).
const TILE_W: usize = 512;
const ROW_BLOCK: usize = 256;
const MAX_GROUPS: usize = 16;

/// The per-row target transform f and f', precomputed from the row's margin.
#[derive(Clone, Copy)]
struct Tgt<T> {
    m: T,
    cos_m: T,
    sin_m: T,
    th: T,
    mm: T,
}

/// Normalised operands: ẑ (n×d), 1/‖z_i‖, 1/‖w_r‖, and the targets' transforms.
struct Prep<T> {
    zh: Vec<T>,
    inz: Vec<T>,
    iw: Vec<T>,
    tgt: Vec<Tgt<T>>,
}

impl<'a, T: Real> MarginSoftmax<'a, T> {
    fn rows_w(&self) -> usize {
        self.classes * self.sub_centers
    }
    fn validate(&self) -> Result<()> {
        if self.n == 0 || self.d == 0 {
            return Err(Error::Shape(format!("embeddings must be non-empty, got shape ({}, {})", self.n, self.d)));
        }
        if self.classes == 0 || self.sub_centers == 0 {
            return Err(Error::InvalidParameter("num_classes and sub_centers must be at least 1".into()));
        }
        check_len("embeddings", self.z.len(), self.n, self.d)?;
        check_len("weight", self.w.len(), self.rows_w(), self.d)?;
        check_finite("embeddings", self.z)?;
        check_finite("weight", self.w)?;
        if self.labels.len() != self.n {
            return Err(Error::Shape(format!("labels has length {}, expected {}", self.labels.len(), self.n)));
        }
        for (i, &y) in self.labels.iter().enumerate() {
            if y < 0 || y as usize >= self.classes {
                return Err(Error::InvalidInput(format!(
                    "labels: label {y} of row {i} is outside [0, {}) (num_classes = {})",
                    self.classes, self.classes
                )));
            }
        }
        if self.margins.len() != 1 && self.margins.len() != self.classes {
            return Err(Error::Shape(format!(
                "margin must be one value or one per class ({}), got {}",
                self.classes,
                self.margins.len()
            )));
        }
        if self.margins.iter().any(|m| !m.is_finite()) {
            return Err(Error::NonFinite("margin contains NaN or infinity".into()));
        }
        if !(self.scale.is_finite() && self.scale > 0.0) {
            return Err(Error::InvalidParameter(format!("scale must be finite and > 0, got {}", self.scale)));
        }
        Ok(())
    }

    fn prep(&self) -> Prep<T> {
        let (n, d) = (self.n, self.d);
        let eps = T::c(NORM_EPS);
        let norm = self.kind.normalizes();
        let (zh, inz) = if norm { unit_rows(&self.z[..n * d], d) } else { (self.z[..n * d].to_vec(), vec![T::one(); n]) };
        let rw = self.rows_w();
        let mut iw = vec![T::one(); rw];
        if norm {
            iw.par_iter_mut().enumerate().for_each(|(r, iv)| {
                let row = &self.w[r * d..(r + 1) * d];
                let nr = crate::linalg::dot(row, row).sqrt();
                *iv = T::one() / if nr > eps { nr } else { eps };
            });
        }
        let tgt = self
            .labels
            .iter()
            .map(|&y| {
                let m = if self.margins.len() == 1 { self.margins[0] } else { self.margins[y as usize] };
                let pm = std::f64::consts::PI - m;
                Tgt { m: T::c(m), cos_m: T::c(m.cos()), sin_m: T::c(m.sin()), th: T::c(pm.cos()), mm: T::c(pm.sin() * m) }
            })
            .collect();
        Prep { zh, inz, iw, tgt }
    }

    /// (f(c), f'(c)) of the target logit's cosine transform.
    #[inline]
    fn target(&self, t: &Tgt<T>, c: T) -> (T, T) {
        match self.kind {
            Kind::Linear | Kind::Normalized => (c, T::one()),
            Kind::CosFace => (c - t.m, T::one()),
            Kind::ArcFace { easy } => {
                let one = T::one();
                let s2 = one - c * c;
                let sin = if s2 > T::zero() { s2.sqrt() } else { T::zero() };
                let phi = c * t.cos_m - sin * t.sin_m;
                let dphi = t.cos_m + if sin > T::zero() { t.sin_m * c / sin } else { T::zero() };
                let use_phi = if easy { c > T::zero() } else { c > t.th };
                if use_phi {
                    (phi, dphi)
                } else if easy {
                    (c, one)
                } else {
                    (c - t.mm, one)
                }
            }
        }
    }

    /// Classes per tile and tile count.
    fn tiling(&self) -> (usize, usize) {
        let cc = (TILE_W / self.sub_centers).max(1);
        (cc, self.classes.div_ceil(cc))
    }

    /// Logits of rows r0..r1 against classes c0..c1 into `lg` ((r1−r0)×(c1−c0)); `raw` holds the
    /// W-row cosines ((r1−r0)×(c1−c0)·K) and `arg` the winning sub-centre of each class (K > 1).
    /// Returns nothing; target entries are the transformed ones.
    #[allow(clippy::too_many_arguments)]
    fn tile_logits(
        &self, pr: &Prep<T>, r0: usize, r1: usize, c0: usize, c1: usize, raw: &mut [T], lg: &mut [T], arg: &mut [u32],
    ) {
        let (d, k) = (self.d, self.sub_centers);
        let (w0, w1) = (c0 * k, c1 * k);
        let (nr, wr, nc) = (r1 - r0, w1 - w0, c1 - c0);
        let zm = MatRef::new(&pr.zh, self.n, d).rows_range(r0, r1);
        let wm = MatRef::new(&self.w[w0 * d..w1 * d], wr, d);
        let raw = &mut raw[..nr * wr];
        gemm(T::one(), zm, wm.t(), T::zero(), raw);
        let s = T::c(self.scale);
        let iw = &pr.iw[w0..w1];
        let norm = self.kind.normalizes();
        for (ii, row) in raw.chunks_exact_mut(wr).enumerate() {
            let out = &mut lg[ii * nc..(ii + 1) * nc];
            if k == 1 {
                cos_logits(row, iw, norm, s, out);
            } else {
                if norm {
                    scale_by(row, iw);
                }
                let ar = &mut arg[ii * nc..(ii + 1) * nc];
                for c in 0..nc {
                    let sub = &row[c * k..(c + 1) * k];
                    let (mut best, mut bj) = (sub[0], 0u32);
                    for (j, &v) in sub.iter().enumerate().skip(1) {
                        if v > best {
                            best = v;
                            bj = j as u32;
                        }
                    }
                    out[c] = s * best;
                    ar[c] = bj;
                }
            }
            let i = r0 + ii;
            let y = self.labels[i] as usize;
            if y >= c0 && y < c1 {
                let j = y - c0;
                let cy = if k == 1 { row[j] } else { row[j * k + arg[ii * nc + j] as usize] };
                out[j] = s * self.target(&pr.tgt[i], cy).0;
            }
        }
    }
}

// The per-entry passes over a tile, compiled for AVX2+FMA too (crate::simd): at C = 10⁴ they
// cost as much as the GEMMs when left to the x86-64 baseline's SSE2.
crate::simd::multiversion! {
    /// `out_c = s·raw_c·iw_c` (normalised kinds; `raw` keeps the cosines) or `s·raw_c`.
    fn cos_logits<T>(raw: &mut [T], iw: &[T], norm: bool, s: T, out: &mut [T]) -> () {
        if norm {
            for ((o, v), &q) in out.iter_mut().zip(raw.iter_mut()).zip(iw) {
                *v *= q;
                *o = s * *v;
            }
        } else {
            for (o, &v) in out.iter_mut().zip(raw.iter()) {
                *o = s * v;
            }
        }
    }
}

crate::simd::multiversion! {
    /// `v ← v·iw`.
    fn scale_by<T>(v: &mut [T], iw: &[T]) -> () {
        for (x, &q) in v.iter_mut().zip(iw) {
            *x *= q;
        }
    }
}

crate::simd::multiversion! {
    /// The row's max and Σ e^{l − max}, leaving the exponentials in `row`.
    fn max_exp_sum<T>(row: &mut [T]) -> (T, T) {
        let mx = rowops::max(row);
        let sum = rowops::exp_shift(row, mx);
        (mx, sum)
    }
}

crate::simd::multiversion! {
    /// `v ← a·e^{v − lse}` (the softmax times the upstream scale).
    fn exp_scaled<T>(v: &mut [T], lse: T, a: T) -> () {
        for x in v.iter_mut() {
            *x = rowops::exp1(*x - lse) * a;
        }
    }
}

crate::simd::multiversion! {
    /// From ∂L/∂cos `dc` and the cosines in `a`: q_r += dc_r·cos_r and a_r ← dc_r·iw_r.
    fn cos_coefs<T>(a: &mut [T], dc: &[T], q: &mut [T], iw: &[T]) -> () {
        for (((x, &g), qr), &w) in a.iter_mut().zip(dc).zip(q.iter_mut()).zip(iw) {
            *qr += g * *x;
            *x = g * w;
        }
    }
}

/// One row of a class tile, from ∂L/∂(class logit) `dc` (one per class) to the GEMM's
/// coefficients in `raw` (the row's cosines on entry, one per W row): with K sub-centres only
/// each class's dominant centre `arg[c]` gets a gradient, q_r += dc·cos_r and raw_r ← dc·iw_r;
/// the others get zero.
fn tile_coefs<T: Real>(raw: &mut [T], dc: &[T], q: &mut [T], iw: &[T], arg: &[u32], k: usize) {
    if k == 1 {
        return cos_coefs(raw, dc, q, iw);
    }
    for (c, &g) in dc.iter().enumerate() {
        let bj = arg[c] as usize;
        for j in 0..k {
            let r = c * k + j;
            if j == bj {
                q[r] += g * raw[r];
                raw[r] = g * iw[r];
            } else {
                raw[r] = T::zero();
            }
        }
    }
}

/// The forward's O(n) state: per-row log-sum-exp and target logit.
pub struct MarginState<T> {
    pub lse: Vec<T>,
    pub target_logit: Vec<T>,
}

/// One class tile's forward result: per-row (max, Σ e^{l − max}) and the (row, target logit) found in it.
type TilePart<T> = (Vec<(T, f64)>, Vec<(usize, T)>);

/// Loss value and state (per-row log-sum-exp and target logit).
pub fn margin_forward<T: Real>(p: &MarginSoftmax<T>) -> Result<(f64, MarginState<T>)> {
    p.validate()?;
    let pr = p.prep();
    let n = p.n;
    let (cc, nt) = p.tiling();
    // Per tile: per-row (max, Σ e^{l − max}) and the targets found in the tile.
    let parts: Vec<TilePart<T>> = (0..nt)
        .into_par_iter()
        .map(|t| {
            let (c0, c1) = (t * cc, ((t + 1) * cc).min(p.classes));
            let nc = c1 - c0;
            let rb = ROW_BLOCK.min(n);
            let mut raw = vec![T::zero(); rb * nc * p.sub_centers];
            let mut lg = vec![T::zero(); rb * nc];
            let mut arg = vec![0u32; if p.sub_centers > 1 { rb * nc } else { 0 }];
            let mut ms = Vec::with_capacity(n);
            let mut tg = Vec::new();
            for r0 in (0..n).step_by(ROW_BLOCK) {
                let r1 = (r0 + ROW_BLOCK).min(n);
                p.tile_logits(&pr, r0, r1, c0, c1, &mut raw, &mut lg, &mut arg);
                for (ii, row) in lg[..(r1 - r0) * nc].chunks_exact_mut(nc).enumerate() {
                    let i = r0 + ii;
                    let y = p.labels[i] as usize;
                    if y >= c0 && y < c1 {
                        tg.push((i, row[y - c0]));
                    }
                    let (mx, sum) = max_exp_sum(row);
                    ms.push((mx, sum.to_f64_()));
                }
            }
            (ms, tg)
        })
        .collect();
    let mut lse = vec![T::zero(); n];
    let mut tl = vec![T::zero(); n];
    for (_, tg) in &parts {
        for &(i, v) in tg {
            tl[i] = v;
        }
    }
    lse.par_iter_mut().enumerate().for_each(|(i, l)| {
        let mx = parts.iter().map(|pt| pt.0[i].0.to_f64_()).fold(f64::NEG_INFINITY, f64::max);
        let s: f64 = parts.iter().map(|pt| pt.0[i].1 * (pt.0[i].0.to_f64_() - mx).exp()).sum();
        *l = T::c(mx + s.ln());
    });
    let loss = ordered_sum((0..n).map(|i| {
        let v = lse[i].to_f64_() - tl[i].to_f64_();
        if v > 0.0 {
            v
        } else {
            0.0
        }
    })) / n as f64;
    Ok((loss, MarginState { lse, target_logit: tl }))
}

/// Gradients for an upstream gradient `g` of the (mean) loss: ∂L/∂z into `gz` (n×d) and
/// ∂L/∂W into `gw` ((classes·K)×d), recomputing every tile from the inputs and `lse`.
pub fn margin_backward<T: Real>(p: &MarginSoftmax<T>, lse: &[T], g: f64, gz: &mut [T], gw: &mut [T]) -> Result<()> {
    p.validate()?;
    let (n, d, k) = (p.n, p.d, p.sub_centers);
    if lse.len() != n {
        return Err(Error::Shape("log-sum-exp state does not match the batch".into()));
    }
    check_len("grad_embeddings", gz.len(), n, d)?;
    check_len("grad_weight", gw.len(), p.rows_w(), d)?;
    let pr = p.prep();
    let (cc, nt) = p.tiling();
    let tpg = nt.div_ceil(MAX_GROUPS);
    let s = T::c(p.scale);
    let gn = T::c(g / n as f64);
    let norm = p.kind.normalizes();
    let partials: Vec<Vec<T>> = gw
        .par_chunks_mut(tpg * cc * k * d)
        .enumerate()
        .map(|(grp, gwg)| {
            let mut dzh = vec![T::zero(); n * d];
            let rb = ROW_BLOCK.min(n);
            let mut raw = vec![T::zero(); rb * cc * k];
            let mut lg = vec![T::zero(); rb * cc];
            let mut arg = vec![0u32; if k > 1 { rb * cc } else { 0 }];
            let cg0 = grp * tpg * cc;
            for t in grp * tpg..((grp + 1) * tpg).min(nt) {
                let (c0, c1) = (t * cc, ((t + 1) * cc).min(p.classes));
                let (nc, wr) = (c1 - c0, (c1 - c0) * k);
                let gwt = &mut gwg[(c0 - cg0) * k * d..(c1 - cg0) * k * d];
                let mut q = vec![T::zero(); wr];
                for (b, r0) in (0..n).step_by(ROW_BLOCK).enumerate() {
                    let r1 = (r0 + ROW_BLOCK).min(n);
                    let nr = r1 - r0;
                    p.tile_logits(&pr, r0, r1, c0, c1, &mut raw, &mut lg, &mut arg);
                    // ∂L/∂cos per class, then A_ir = ∂L/∂cos_ir · 1/‖w_r‖ in `raw` (zero off the argmax).
                    for ii in 0..nr {
                        let i = r0 + ii;
                        let row = &mut lg[ii * nc..(ii + 1) * nc];
                        exp_scaled(row, lse[i], gn * s);
                        let y = p.labels[i] as usize;
                        let rraw = &mut raw[ii * wr..(ii + 1) * wr];
                        if y >= c0 && y < c1 {
                            let j = y - c0;
                            let cy = if k == 1 { rraw[j] } else { rraw[j * k + arg[ii * nc + j] as usize] };
                            let (_, df) = p.target(&pr.tgt[i], cy);
                            row[j] = (row[j] - gn * s) * df;
                        }
                        let ar = if k > 1 { &arg[ii * nc..(ii + 1) * nc] } else { &[][..] };
                        tile_coefs(rraw, row, &mut q, &pr.iw[c0 * k..c1 * k], ar, k);
                    }
                    let am = MatRef::new(&raw[..nr * wr], nr, wr);
                    let wm = MatRef::new(&p.w[c0 * k * d..c1 * k * d], wr, d);
                    gemm(T::one(), am, wm, T::one(), &mut dzh[r0 * d..r1 * d]);
                    let zm = MatRef::new(&pr.zh, n, d).rows_range(r0, r1);
                    let beta = if b == 0 { T::zero() } else { T::one() };
                    gemm(T::one(), am.t(), zm, beta, gwt);
                }
                if norm {
                    // ∂cos_ir/∂w_r = ẑ_i/‖w_r‖ − cos_ir·w_r/‖w_r‖²: subtract q_r·w_r/‖w_r‖².
                    for (r, gr) in gwt.chunks_exact_mut(d).enumerate() {
                        let wrow = &p.w[(c0 * k + r) * d..(c0 * k + r + 1) * d];
                        let iv = pr.iw[c0 * k + r];
                        if iv < T::one() / T::c(NORM_EPS) {
                            rowops::axpy(gr, -(q[r] * iv * iv), wrow);
                        }
                    }
                }
            }
            dzh
        })
        .collect();
    gz[..n * d].par_chunks_mut(d).enumerate().for_each(|(i, gr)| {
        gr.copy_from_slice(&partials[0][i * d..(i + 1) * d]);
        for pt in &partials[1..] {
            rowops::add(gr, &pt[i * d..(i + 1) * d]);
        }
        if norm {
            let zr = &pr.zh[i * d..(i + 1) * d];
            let iv = pr.inz[i];
            if iv < T::one() / T::c(NORM_EPS) {
                let pd = crate::linalg::dot(zr, gr);
                rowops::axpy(gr, -pd, zr);
            }
            rowops::scale(gr, iv);
        }
    });
    Ok(())
}

/// Batch rows per strip of [`margin_fused`]: the strip's cosines against every W row
/// (STRIP·C·K values, 51 MB at C = 10⁵ in float32) are the only state that grows with C.
pub const STRIP: usize = 128;

/// `v` cut into `count` consecutive chunks of `size` (the last one shorter), or `count`
/// empty slices when `v` is empty (the unused sub-centre index of K = 1).
fn chunks_or_empty<U>(v: &mut [U], size: usize, count: usize) -> Vec<&mut [U]> {
    if v.is_empty() {
        (0..count).map(|_| <&mut [U]>::default()).collect()
    } else {
        v.chunks_mut(size).collect()
    }
}

crate::simd::multiversion! {
    /// `out_c ← a·e^{s·src_c − lse}` (a K = 1 row's softmax times the upstream scale, from its cosines).
    fn softmax_of<T>(out: &mut [T], src: &[T], s: T, lse: T, a: T) -> () {
        for (o, &v) in out.iter_mut().zip(src) {
            *o = rowops::exp1(s * v - lse) * a;
        }
    }
}

/// Loss and both gradients (upstream 1) in one pass with three GEMMs per (row, W row), the
/// count plain autograd does (cos, ∂ẑ = A·W, ∂W = Aᵀ·ẑ), instead of the four of
/// [`margin_forward`] + [`margin_backward`], which recompute the cos tiles.
///
/// The batch runs in strips of [`STRIP`] rows. For a strip: (1) the cosines against every
/// class tile (one task per tile) go into a strip×(C·K) buffer, with per-row (max, Σ e^{l−max})
/// per tile; (2) the per-row log-sum-exp, combined over tiles in tile order; (3) per fixed group
/// of tiles (one task each, owning its ∂W rows: no races) the coefficients
/// A_ir = ∂L/∂cos_ir / ‖w_r‖ overwrite the buffer, ∂W_tile += Aᵀ·ẑ_strip and a per-group
/// partial ∂ẑ_strip += A·W_tile, the partials summed in group order. The sizes are fixed, so
/// the result is bit-identical for any thread count. Extra memory beyond the gradients:
/// STRIP·C·K values (+ STRIP·C u32 sub-centre indices when K > 1), ẑ (n×d),
/// MAX_GROUPS partials of STRIP×d, one float per W row. `gz`/`gw` None skip that gradient.
pub fn margin_fused<T: Real>(p: &MarginSoftmax<T>, gz: Option<&mut [T]>, gw: Option<&mut [T]>) -> Result<f64> {
    margin_fused_weighted(p, None, gz, gw)
}

/// [`margin_fused`] for the weighted sum Σ_i c_i·ℓ_i of the per-row losses (`row_weights` c,
/// length n) instead of their mean (None: c_i = 1/n, the same bits as [`margin_fused`]).
/// Proxy-NCA's reductions and sample weights are such sums.
pub fn margin_fused_weighted<T: Real>(
    p: &MarginSoftmax<T>, row_weights: Option<&[f64]>, mut gz: Option<&mut [T]>, mut gw: Option<&mut [T]>,
) -> Result<f64> {
    p.validate()?;
    if let Some(c) = row_weights {
        if c.len() != p.n {
            return Err(Error::Shape(format!("row weights have length {}, expected {}", c.len(), p.n)));
        }
        if c.iter().any(|v| !v.is_finite()) {
            return Err(Error::NonFinite("row weights contain NaN or infinity".into()));
        }
    }
    let (n, d, k, rw) = (p.n, p.d, p.sub_centers, p.rows_w());
    if let Some(g) = gz.as_deref() {
        check_len("grad_embeddings", g.len(), n, d)?;
    }
    if let Some(g) = gw.as_deref() {
        check_len("grad_weight", g.len(), rw, d)?;
    }
    let need_z = gz.is_some();
    let pr = p.prep();
    let (cc, nt) = p.tiling();
    let tpg = nt.div_ceil(MAX_GROUPS);
    let ng = nt.div_ceil(tpg);
    let s = T::c(p.scale);
    let gs = T::c(p.scale / n as f64);
    // The upstream scale of row i's logits: s·c_i.
    let gsr = |i: usize| row_weights.map_or(gs, |c| T::c(p.scale * c[i]));
    let norm = p.kind.normalizes();
    let sh = STRIP.min(n);
    let mut buf = vec![T::zero(); sh * rw];
    let mut arg = vec![0u32; if k > 1 { sh * p.classes } else { 0 }];
    let mut q = vec![T::zero(); rw];
    let mut lse = vec![T::zero(); n];
    let mut tl = vec![T::zero(); n];
    for r0 in (0..n).step_by(STRIP) {
        let r1 = (r0 + STRIP).min(n);
        let nr = r1 - r0;
        let buf = &mut buf[..nr * rw];
        let arg = &mut arg[..if k > 1 { nr * p.classes } else { 0 }];
        // (1) Tile t's block of `buf` is its nr×(nc·K) cosines, contiguous.
        let parts: Vec<TilePart<T>> = chunks_or_empty(buf, cc * k * nr, nt)
            .into_par_iter()
            .zip(chunks_or_empty(arg, cc * nr, nt))
            .enumerate()
            .map(|(t, (blk, ab))| {
                let (c0, c1) = (t * cc, ((t + 1) * cc).min(p.classes));
                let nc = c1 - c0;
                let mut lg = vec![T::zero(); nr * nc];
                p.tile_logits(&pr, r0, r1, c0, c1, blk, &mut lg, ab);
                let mut ms = Vec::with_capacity(nr);
                let mut tg = Vec::new();
                for (ii, row) in lg.chunks_exact_mut(nc).enumerate() {
                    let y = p.labels[r0 + ii] as usize;
                    if y >= c0 && y < c1 {
                        tg.push((r0 + ii, row[y - c0]));
                    }
                    let (mx, sum) = max_exp_sum(row);
                    ms.push((mx, sum.to_f64_()));
                }
                (ms, tg)
            })
            .collect();
        // (2)
        for (_, tg) in &parts {
            for &(i, v) in tg {
                tl[i] = v;
            }
        }
        lse[r0..r1].par_iter_mut().enumerate().for_each(|(ii, l)| {
            let mx = parts.iter().map(|pt| pt.0[ii].0.to_f64_()).fold(f64::NEG_INFINITY, f64::max);
            let sm: f64 = parts.iter().map(|pt| pt.0[ii].1 * (pt.0[ii].0.to_f64_() - mx).exp()).sum();
            *l = T::c(mx + sm.ln());
        });
        drop(parts);
        // (3)
        let (lse, tl) = (&lse, &tl);
        let gw_groups: Vec<Option<&mut [T]>> = match gw.as_deref_mut() {
            Some(g) => g.chunks_mut(tpg * cc * k * d).map(Some).collect(),
            None => (0..ng).map(|_| None).collect(),
        };
        let partials: Vec<Vec<T>> = chunks_or_empty(buf, tpg * cc * k * nr, ng)
            .into_par_iter()
            .zip(chunks_or_empty(arg, tpg * cc * nr, ng))
            .zip(q.par_chunks_mut(tpg * cc * k))
            .zip(gw_groups)
            .enumerate()
            .map(|(grp, (((bg, ag), qg), mut wg))| {
                let mut dz = vec![T::zero(); if need_z { nr * d } else { 0 }];
                let mut lg = vec![T::zero(); cc];
                let cg0 = grp * tpg * cc;
                for t in grp * tpg..((grp + 1) * tpg).min(nt) {
                    let (c0, c1) = (t * cc, ((t + 1) * cc).min(p.classes));
                    let (nc, wr, off) = (c1 - c0, (c1 - c0) * k, (c0 - cg0) * k);
                    let blk = &mut bg[off * nr..(off + wr) * nr];
                    let ab: &[u32] = if k > 1 { &ag[(c0 - cg0) * nr..(c1 - cg0) * nr] } else { &[] };
                    let qt = &mut qg[off..off + wr];
                    for ii in 0..nr {
                        let i = r0 + ii;
                        let rraw = &mut blk[ii * wr..(ii + 1) * wr];
                        let row = &mut lg[..nc];
                        let gs = gsr(i);
                        if k == 1 {
                            softmax_of(row, rraw, s, lse[i], gs);
                        } else {
                            for (c, v) in row.iter_mut().enumerate() {
                                *v = s * rraw[c * k + ab[ii * nc + c] as usize];
                            }
                            exp_scaled(row, lse[i], gs);
                        }
                        let y = p.labels[i] as usize;
                        if y >= c0 && y < c1 {
                            let j = y - c0;
                            let cy = if k == 1 { rraw[j] } else { rraw[j * k + ab[ii * nc + j] as usize] };
                            let (_, df) = p.target(&pr.tgt[i], cy);
                            // The target's softmax is of its transformed logit.
                            row[j] = (rowops::exp1(tl[i] - lse[i]) * gs - gs) * df;
                        }
                        let ar = if k > 1 { &ab[ii * nc..(ii + 1) * nc] } else { &[][..] };
                        tile_coefs(rraw, row, qt, &pr.iw[c0 * k..c1 * k], ar, k);
                    }
                    let am = MatRef::new(&blk[..nr * wr], nr, wr);
                    if need_z {
                        let wm = MatRef::new(&p.w[c0 * k * d..c1 * k * d], wr, d);
                        gemm(T::one(), am, wm, T::one(), &mut dz);
                    }
                    if let Some(wg) = wg.as_deref_mut() {
                        let zm = MatRef::new(&pr.zh, n, d).rows_range(r0, r1);
                        let beta = if r0 == 0 { T::zero() } else { T::one() };
                        gemm(T::one(), am.t(), zm, beta, &mut wg[off * d..(off + wr) * d]);
                    }
                }
                dz
            })
            .collect();
        if let Some(gz) = gz.as_deref_mut() {
            gz[r0 * d..r1 * d].par_chunks_mut(d).enumerate().for_each(|(ii, gr)| {
                gr.copy_from_slice(&partials[0][ii * d..(ii + 1) * d]);
                for pt in &partials[1..] {
                    rowops::add(gr, &pt[ii * d..(ii + 1) * d]);
                }
            });
        }
    }
    if let (Some(gw), true) = (gw, norm) {
        // ∂cos_ir/∂w_r = ẑ_i/‖w_r‖ − cos_ir·w_r/‖w_r‖²: subtract q_r·w_r/‖w_r‖².
        gw.par_chunks_mut(d).zip(q.par_iter()).enumerate().for_each(|(r, (gr, &qr))| {
            let iv = pr.iw[r];
            if iv < T::one() / T::c(NORM_EPS) {
                rowops::axpy(gr, -(qr * iv * iv), &p.w[r * d..(r + 1) * d]);
            }
        });
    }
    if let (Some(gz), true) = (gz, norm) {
        // ∂ẑ → ∂z: project out ẑ and divide by ‖z‖.
        unit_rows_backward(&mut gz[..n * d], &pr.zh, &pr.inz, d);
    }
    let per = |i: usize| (lse[i].to_f64_() - tl[i].to_f64_()).max(0.0);
    Ok(match row_weights {
        None => ordered_sum((0..n).map(per)) / n as f64,
        Some(c) => ordered_sum((0..n).map(|i| c[i] * per(i))),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::losses::common::testutil::*;

    /// Dense f64 loop reference of the loss.
    fn brute(z: &[f64], w: &[f64], p: &MarginSoftmax<f64>) -> f64 {
        let (n, d, k) = (p.n, p.d, p.sub_centers);
        let nrm = |v: &[f64]| if p.kind.normalizes() { v.iter().map(|x| x * x).sum::<f64>().sqrt().max(1e-12) } else { 1.0 };
        let mut tot = 0.0;
        for i in 0..n {
            let zi = &z[i * d..(i + 1) * d];
            let nz = nrm(zi);
            let y = p.labels[i] as usize;
            let m = if p.margins.len() == 1 { p.margins[0] } else { p.margins[y] };
            let logits: Vec<f64> = (0..p.classes)
                .map(|c| {
                    let cos = (0..k)
                        .map(|j| {
                            let wr = &w[(c * k + j) * d..(c * k + j + 1) * d];
                            zi.iter().zip(wr).map(|(a, b)| a * b).sum::<f64>() / (nz * nrm(wr))
                        })
                        .fold(f64::NEG_INFINITY, f64::max);
                    let f = if c != y {
                        cos
                    } else {
                        match p.kind {
                            Kind::Linear | Kind::Normalized => cos,
                            Kind::CosFace => cos - m,
                            Kind::ArcFace { easy } => {
                                let phi = (cos.clamp(-1.0, 1.0).acos() + m).cos();
                                if easy {
                                    if cos > 0.0 { phi } else { cos }
                                } else if cos > (std::f64::consts::PI - m).cos() {
                                    phi
                                } else {
                                    cos - (std::f64::consts::PI - m).sin() * m
                                }
                            }
                        }
                    };
                    p.scale * f
                })
                .collect();
            let mx = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let lse = mx + logits.iter().map(|l| (l - mx).exp()).sum::<f64>().ln();
            tot += lse - logits[y];
        }
        tot / n as f64
    }

    #[test]
    fn matches_brute_force_and_finite_differences() {
        let mut rng = Rng(11);
        let kinds = [
            Kind::Linear,
            Kind::Normalized,
            Kind::CosFace,
            Kind::ArcFace { easy: false },
            Kind::ArcFace { easy: true },
        ];
        // (n, classes, K, d): several tiles (TILE_W = 512 W rows) and row blocks.
        for &(n, classes, k, d) in &[(7usize, 5usize, 1usize, 4usize), (300, 700, 1, 3), (9, 400, 3, 5), (1, 1, 1, 2)] {
            for kind in kinds {
                let z = rng.normal_vec(n * d);
                let w: Vec<f64> = rng.normal_vec(classes * k * d).iter().map(|v| v * 0.5).collect();
                let labels = rng.labels(n, classes as u64);
                let margins: Vec<f64> = (0..classes).map(|c| 0.1 + 0.3 * (c % 3) as f64).collect();
                let scale = if kind == Kind::Linear { 1.0 } else { 3.0 };
                let p = MarginSoftmax { z: &z, n, d, w: &w, classes, sub_centers: k, labels: &labels, margins: &margins, scale, kind };
                let (v, st) = margin_forward(&p).unwrap();
                let want = brute(&z, &w, &p);
                assert!((v - want).abs() < 1e-10 * (1.0 + want.abs()), "{kind:?} {n} {classes}: {v} vs {want}");
                let (mut gz, mut gw) = (vec![0.0; n * d], vec![0.0; classes * k * d]);
                margin_backward(&p, &st.lse, 1.0, &mut gz, &mut gw).unwrap();
                if n * classes * k < 2000 {
                    let fz = fd_grad(&z, &|zz| brute(zz, &w, &MarginSoftmax { z: zz, ..p }));
                    assert_close(&gz, &fz, 1e-5);
                    let fw = fd_grad(&w, &|ww| brute(&z, ww, &MarginSoftmax { w: ww, ..p }));
                    assert_close(&gw, &fw, 1e-5);
                }
            }
        }
    }

    #[test]
    fn finite_at_cos_one_and_labels_checked() {
        // z equal to its class row: cos = 1 exactly; ArcFace gradient stays finite.
        let w = vec![1.0f32, 0.0, 0.0, 1.0, -1.0, 0.0];
        let z = vec![1.0f32, 0.0, -1.0, 0.0];
        let labels = vec![0i64, 2];
        let p = MarginSoftmax {
            z: &z, n: 2, d: 2, w: &w, classes: 3, sub_centers: 1, labels: &labels, margins: &[0.5], scale: 64.0,
            kind: Kind::ArcFace { easy: false },
        };
        let (v, st) = margin_forward(&p).unwrap();
        assert!(v.is_finite());
        let (mut gz, mut gw) = (vec![0.0f32; 4], vec![0.0f32; 6]);
        margin_backward(&p, &st.lse, 1.0, &mut gz, &mut gw).unwrap();
        assert!(gz.iter().chain(&gw).all(|x| x.is_finite()));
        let bad = vec![0i64, 3];
        let e = margin_forward(&MarginSoftmax { labels: &bad, ..p }).err().unwrap();
        assert!(matches!(e, Error::InvalidInput(_)));
    }

    #[test]
    fn fused_matches_forward_then_backward() {
        let mut rng = Rng(23);
        let kinds = [Kind::Linear, Kind::Normalized, Kind::CosFace, Kind::ArcFace { easy: false }, Kind::ArcFace { easy: true }];
        // (n, classes, K, d): several strips (STRIP = 128 rows), tiles and tile groups.
        for &(n, classes, k, d) in &[(300usize, 9000usize, 1usize, 3usize), (130, 700, 3, 5), (1, 1, 1, 2), (5, 3, 2, 4)] {
            for kind in kinds {
                let z = rng.normal_vec(n * d);
                let w: Vec<f64> = rng.normal_vec(classes * k * d).iter().map(|v| v * 0.5).collect();
                let labels = rng.labels(n, classes as u64);
                let margins: Vec<f64> = (0..classes).map(|c| 0.1 + 0.3 * (c % 3) as f64).collect();
                let scale = if kind == Kind::Linear { 1.0 } else { 3.0 };
                let p = MarginSoftmax { z: &z, n, d, w: &w, classes, sub_centers: k, labels: &labels, margins: &margins, scale, kind };
                let (v, st) = margin_forward(&p).unwrap();
                let (mut gz, mut gw) = (vec![0.0; n * d], vec![0.0; classes * k * d]);
                margin_backward(&p, &st.lse, 1.0, &mut gz, &mut gw).unwrap();
                let (mut fz, mut fw) = (vec![7.0; n * d], vec![7.0; classes * k * d]);
                let fv = margin_fused(&p, Some(&mut fz), Some(&mut fw)).unwrap();
                assert!((v - fv).abs() < 1e-12 * (1.0 + v.abs()), "{kind:?} {n} {classes}: {v} vs {fv}");
                assert_close(&fz, &gz, 1e-10);
                assert_close(&fw, &gw, 1e-10);
                if n * classes * k < 2000 {
                    let want = brute(&z, &w, &p);
                    assert!((fv - want).abs() < 1e-10 * (1.0 + want.abs()));
                    assert_close(&fz, &fd_grad(&z, &|zz| brute(zz, &w, &MarginSoftmax { z: zz, ..p })), 1e-5);
                    assert_close(&fw, &fd_grad(&w, &|ww| brute(&z, ww, &MarginSoftmax { w: ww, ..p })), 1e-5);
                }
                // One gradient alone is the same as with both.
                let mut oz = vec![0.0; n * d];
                assert_eq!(margin_fused(&p, Some(&mut oz), None).unwrap().to_bits(), fv.to_bits());
                assert_eq!(oz, fz);
                let mut ow = vec![0.0; classes * k * d];
                margin_fused(&p, None, Some(&mut ow)).unwrap();
                assert_eq!(ow, fw);
            }
        }
        let (z, w, labels) = (vec![1.0f64; 4], vec![1.0f64; 6], vec![0i64, 3]);
        let p = MarginSoftmax {
            z: &z, n: 2, d: 2, w: &w, classes: 3, sub_centers: 1, labels: &labels, margins: &[0.5], scale: 4.0, kind: Kind::CosFace,
        };
        assert!(matches!(margin_fused(&p, None, None), Err(Error::InvalidInput(_))));
        let mut short = vec![0.0; 3];
        let ok = MarginSoftmax { labels: &[0, 2], ..p };
        assert!(matches!(margin_fused(&ok, Some(&mut short), None), Err(Error::Shape(_))));
    }

    #[test]
    fn results_do_not_depend_on_the_thread_count() {
        let (n, classes, d) = (300usize, 9000usize, 8usize);
        let mut rng = Rng(5);
        let z: Vec<f32> = rng.normal_vec(n * d).iter().map(|&v| v as f32).collect();
        let w: Vec<f32> = rng.normal_vec(classes * d).iter().map(|&v| v as f32).collect();
        let labels = rng.labels(n, classes as u64);
        let p = MarginSoftmax {
            z: &z, n, d, w: &w, classes, sub_centers: 1, labels: &labels, margins: &[0.5], scale: 30.0,
            kind: Kind::ArcFace { easy: false },
        };
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            pool.install(|| {
                let (v, st) = margin_forward(&p).unwrap();
                let (mut gz, mut gw) = (vec![0.0f32; n * d], vec![0.0f32; classes * d]);
                margin_backward(&p, &st.lse, 1.0, &mut gz, &mut gw).unwrap();
                let (mut fz, mut fw) = (vec![0.0f32; n * d], vec![0.0f32; classes * d]);
                let fv = margin_fused(&p, Some(&mut fz), Some(&mut fw)).unwrap();
                let bits = gz.iter().chain(&gw).chain(&st.lse).chain(&fz).chain(&fw).map(|x| x.to_bits());
                (v.to_bits(), fv.to_bits(), bits.collect::<Vec<_>>())
            })
        };
        let one = run(1);
        assert_eq!(one, run(2));
        assert_eq!(one, run(3));
    }
}
