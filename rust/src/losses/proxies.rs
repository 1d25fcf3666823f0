//! Proxy losses: every class c has a learnable proxy w_c (C×d), and the loss
//! depends on the cosines cos_ic = û_i·ŵ_c of the L2-normalised embeddings
//! (û, normalised by the caller) and proxies (ŵ = w / max(‖w‖, 1e-12),
//! normalised here, one class tile at a time: no normalised copy of W is kept).
//!
//! * Proxy-Anchor (Kim et al. 2020, CVPR), per class c with positives P_c = {i : y_i = c}
//!   and negatives N_c = {i : y_i ≠ c}:
//!   pos_c = log(1 + Σ_{i∈P_c} e^{−α(cos_ic − δ)}),  neg_c = log(1 + Σ_{i∈N_c} e^{α(cos_ic + δ)});
//!   the kernel returns the per-class vectors (and the class counts), the caller forms
//!   L = Σ_c pos_c / |{c : P_c ≠ ∅}| + Σ_c neg_c / C.
//! * Proxy-NCA (Movshovitz-Attias et al. 2017, ICCV), per sample i with logits z_ic = σ·cos_ic:
//!   per_i = logsumexp_c z_ic − z_{i,y_i}  (σ = 2·scale reproduces pytorch-metric-learning's
//!   softmax of −scale·‖û − ŵ‖² = 2·scale·cos − 2·scale).
//!
//! Layout: the classes are cut into fixed tiles of [`CT`] classes and the tiles into at most
//! [`MAX_GROUPS`] contiguous groups (fixed by C alone); one parallel task per group walks its
//! tiles in order and, inside a tile, fixed tiles of [`RB`] rows. Every cosine tile comes from
//! one GEMM on normalised rows. Proxy-Anchor's per-class log-sum-exps are accumulated across
//! row tiles in order (online, starting from the "1 +" term e⁰); Proxy-NCA's per-row
//! log-sum-exps are accumulated online across the class tiles of a group and the groups'
//! partials merged in group order. Backward recomputes the tiles from the O(B + C) state
//! (per-class or per-row log-sum-exps), so no B×C matrix is ever stored; each task holds its
//! own B×d share of ∂L/∂û, summed in group order. Results do not depend on the thread count.

use super::common::{ordered_sum, unit_rows, unit_rows_backward};
use super::margin::{margin_fused_weighted, Kind, MarginSoftmax};
use super::rowops;
use crate::error::{check_finite, check_len, Error, Result};
use crate::linalg::{dot, gemm, MatRef};
use crate::simd::multiversion;
use crate::Real;
use rayon::prelude::*;

/// Classes per tile.
pub const CT: usize = 256;
/// Rows (samples) per tile.
pub const RB: usize = 256;
/// At most this many parallel tasks (groups of class tiles); each holds a B×d gradient share.
pub const MAX_GROUPS: usize = 16;
/// Bytes the groups' ∂L/∂û shares may hold together (see [`Proxies::groups`]).
pub const SHARE_BUDGET: usize = 256 << 20;
/// Bytes of CT × n cosine buffers the fused Proxy-Anchor pass may hold (one per running task);
/// above it the two-pass kernels (CT × [`RB`] tiles) serve the call.
pub const FUSED_BUDGET: usize = 512 << 20;
/// The floor of a norm in the normalisation (torch.nn.functional.normalize's eps).
pub const NORM_EPS: f64 = 1e-12;

/// Embeddings `u` (n×d, unit rows), proxies `w` (c×d, any norm), labels in [0, c).
#[derive(Clone, Copy)]
pub struct Proxies<'a, T> {
    pub u: &'a [T],
    pub n: usize,
    pub w: &'a [T],
    pub c: usize,
    pub d: usize,
    pub labels: &'a [i64],
}

impl<'a, T: Real> Proxies<'a, T> {
    pub fn validate(&self) -> Result<()> {
        if self.n == 0 || self.d == 0 {
            return Err(Error::Shape(format!("embeddings must be non-empty, got shape ({}, {})", self.n, self.d)));
        }
        if self.c == 0 {
            return Err(Error::Shape("proxies must have at least one class".into()));
        }
        check_len("embeddings", self.u.len(), self.n, self.d)?;
        check_len("proxies", self.w.len(), self.c, self.d)?;
        check_finite("embeddings", self.u)?;
        check_finite("proxies", self.w)?;
        if self.labels.len() != self.n {
            return Err(Error::Shape(format!("labels has length {}, expected {}", self.labels.len(), self.n)));
        }
        if let Some((i, &y)) = self.labels.iter().enumerate().find(|(_, &y)| y < 0 || y as u64 >= self.c as u64) {
            return Err(Error::InvalidInput(format!(
                "label {y} of sample {i} is outside [0, {}) (the number of proxies)",
                self.c
            )));
        }
        Ok(())
    }

    /// Class ranges of the parallel tasks: whole tiles, balanced, fixed by C, n and d (never by
    /// the thread count). Each group holds its own n×d share of ∂L/∂û, so the shares together
    /// stay within [`SHARE_BUDGET`] (at least one group): 16 shares of a 65,536 × 512 batch
    /// would be 2 GiB in f32.
    fn groups(&self) -> Vec<(usize, usize)> {
        let tiles = self.c.div_ceil(CT);
        let share = (self.n * self.d * std::mem::size_of::<T>()).max(1);
        let g = tiles.min(MAX_GROUPS).min((SHARE_BUDGET / share).max(1));
        (0..g)
            .map(|k| ((k * tiles / g) * CT, (((k + 1) * tiles / g) * CT).min(self.c)))
            .collect()
    }

    /// Normalised proxies c0..c1 into `out` ((c1−c0)×d); their 1/max(‖w‖, eps) into `inv`.
    fn norm_tile(&self, c0: usize, c1: usize, out: &mut [T], inv: &mut [T]) {
        let d = self.d;
        let eps = T::c(NORM_EPS);
        for (k, c) in (c0..c1).enumerate() {
            let row = &self.w[c * d..(c + 1) * d];
            let nrm = dot(row, row).sqrt();
            let iv = T::one() / if nrm > eps { nrm } else { eps };
            inv[k] = iv;
            for (o, &v) in out[k * d..(k + 1) * d].iter_mut().zip(row) {
                *o = v * iv;
            }
        }
    }
}

/// Rows of `u` with a label in [c0, c1) and row index in [r0, r1): (row − r0, class − c0).
fn positives_in(labels: &[i64], r0: usize, r1: usize, c0: usize, c1: usize) -> Vec<(usize, usize)> {
    (r0..r1)
        .filter_map(|i| {
            let y = labels[i] as usize;
            (y >= c0 && y < c1).then(|| (i - r0, y - c0))
        })
        .collect()
}

/// (m, s) ← the log-sum-exp pair of {m + ln s} ∪ {v}.
#[inline]
fn push<T: Real>(m: &mut T, s: &mut T, v: T) {
    if v > *m {
        *s = *s * rowops::exp1(*m - v) + T::one();
        *m = v;
    } else {
        *s += rowops::exp1(v - *m);
    }
}

multiversion! {
    /// Merges the finite entries of `row` into the log-sum-exp pair (m, s) (m finite).
    fn merge_row<T>(m: &mut T, s: &mut T, row: &mut [T]) -> () {
        let tm = rowops::max(row);
        let nm = if tm > *m { tm } else { *m };
        let add = rowops::exp_shift(row, nm);
        *s = *s * rowops::exp1(*m - nm) + add;
        *m = nm;
    }
}

multiversion! {
    /// `v ← s·e^{a·v + b}` (−∞ entries become 0).
    fn affine_exp<T>(v: &mut [T], a: T, b: T, s: T) -> () {
        for x in v.iter_mut() {
            *x = rowops::exp1(a * *x + b) * s;
        }
    }
}

multiversion! {
    /// `v ← a·(v + b)`.
    fn affine<T>(v: &mut [T], a: T, b: T) -> () {
        for x in v.iter_mut() {
            *x = a * (*x + b);
        }
    }
}

/// Per-class Proxy-Anchor terms.
#[derive(Clone, Debug, Default)]
pub struct AnchorTerms<T> {
    /// pos_c = log(1 + Σ_{i∈P_c} e^{−α(cos_ic − δ)}) (0 for a class absent from the batch).
    pub pos: Vec<T>,
    /// neg_c = log(1 + Σ_{i∈N_c} e^{α(cos_ic + δ)}).
    pub neg: Vec<T>,
    /// |P_c|, the number of samples of class c.
    pub count: Vec<T>,
}

fn check_anchor_params(margin: f64, alpha: f64) -> Result<()> {
    if !margin.is_finite() {
        return Err(Error::InvalidParameter(format!("margin must be finite, got {margin}")));
    }
    if !(alpha.is_finite() && alpha > 0.0) {
        return Err(Error::InvalidParameter(format!("alpha must be finite and > 0, got {alpha}")));
    }
    Ok(())
}

/// Proxy-Anchor forward: the per-class terms (see the module docs), O(C) output.
pub fn proxy_anchor_forward<T: Real>(p: &Proxies<T>, margin: f64, alpha: f64) -> Result<AnchorTerms<T>> {
    p.validate()?;
    check_anchor_params(margin, alpha)?;
    let (n, c, d) = (p.n, p.c, p.d);
    let (a, dl) = (T::c(alpha), T::c(margin));
    let um = MatRef::new(p.u, n, d);
    let mut out = AnchorTerms { pos: vec![T::zero(); c], neg: vec![T::zero(); c], count: vec![T::zero(); c] };
    for &y in p.labels {
        out.count[y as usize] += T::one();
    }
    let groups = p.groups();
    let mut pos_s = split_by(&mut out.pos, &groups, 1);
    let mut neg_s = split_by(&mut out.neg, &groups, 1);
    pos_s.par_iter_mut().zip(neg_s.par_iter_mut()).zip(groups.par_iter()).for_each(|((pos, neg), &(g0, g1))| {
        let mut wt = vec![T::zero(); CT * d];
        let mut inv = vec![T::zero(); CT];
        let mut s = vec![T::zero(); CT * RB.min(n)];
        for t0 in (g0..g1).step_by(CT) {
            let t1 = (t0 + CT).min(g1);
            let ct = t1 - t0;
            p.norm_tile(t0, t1, &mut wt, &mut inv);
            let wm = MatRef::new(&wt, ct, d);
            // (max, sum) pairs of the "1 + Σ" log-sum-exps: the 1 is e⁰.
            let mut pm = vec![T::zero(); ct];
            let mut ps = vec![T::one(); ct];
            let mut nm = vec![T::zero(); ct];
            let mut ns = vec![T::one(); ct];
            for r0 in (0..n).step_by(RB) {
                let r1 = (r0 + RB).min(n);
                let rb = r1 - r0;
                let st = &mut s[..ct * rb];
                gemm(T::one(), wm, um.rows_range(r0, r1).t(), T::zero(), st);
                for (i, k) in positives_in(p.labels, r0, r1, t0, t1) {
                    let cos = st[k * rb + i];
                    push(&mut pm[k], &mut ps[k], -a * (cos - dl));
                    st[k * rb + i] = T::neg_infinity();
                }
                for k in 0..ct {
                    let row = &mut st[k * rb..(k + 1) * rb];
                    affine(row, a, dl);
                    merge_row(&mut nm[k], &mut ns[k], row);
                }
            }
            for k in 0..ct {
                pos[t0 - g0 + k] = pm[k] + ps[k].ln();
                neg[t0 - g0 + k] = nm[k] + ns[k].ln();
            }
        }
    });
    Ok(out)
}

/// Proxy-Anchor backward for upstream gradients `g_pos`, `g_neg` of the per-class terms and the
/// forward's `pos`, `neg`: ∂/∂û into `gu` (n×d), ∂/∂w into `gw` (c×d), both overwritten.
#[allow(clippy::too_many_arguments)]
pub fn proxy_anchor_backward<T: Real>(
    p: &Proxies<T>, margin: f64, alpha: f64, pos: &[T], neg: &[T], g_pos: &[T], g_neg: &[T], gu: &mut [T],
    gw: &mut [T],
) -> Result<()> {
    p.validate()?;
    check_anchor_params(margin, alpha)?;
    for (name, v) in [("pos", pos), ("neg", neg), ("upstream gradient of pos", g_pos), ("upstream gradient of neg", g_neg)] {
        if v.len() != p.c {
            return Err(Error::Shape(format!("{name} has length {}, expected {}", v.len(), p.c)));
        }
        check_finite(name, v)?;
    }
    let (a, dl) = (T::c(alpha), T::c(margin));
    // Class-major tiles S (ct × rb): the coefficient of row k is ∂L/∂cos_{·,c}.
    let coef = |t0: usize, t1: usize, r0: usize, r1: usize, st: &mut [T]| {
        let rb = r1 - r0;
        let pc: Vec<(usize, usize, T)> =
            positives_in(p.labels, r0, r1, t0, t1).into_iter().map(|(i, k)| (i, k, st[k * rb + i])).collect();
        for k in 0..t1 - t0 {
            let c = t0 + k;
            affine_exp(&mut st[k * rb..(k + 1) * rb], a, a * dl - neg[c], g_neg[c] * a);
        }
        for (i, k, cos) in pc {
            let c = t0 + k;
            st[k * rb + i] = -g_pos[c] * a * rowops::exp1(-a * (cos - dl) - pos[c]);
        }
    };
    tiles_backward(p, true, T::one(), &coef, gu, gw)
}

/// One group's Proxy-NCA partials: per-row (max, sum) of the log-sum-exp, and (row, target logit).
type NcaPart<T> = (Vec<T>, Vec<T>, Vec<(usize, T)>);

fn check_nca_scale(sigma: f64) -> Result<()> {
    if !(sigma.is_finite() && sigma > 0.0) {
        return Err(Error::InvalidParameter(format!("scale must be finite and > 0, got {sigma}")));
    }
    Ok(())
}

/// Proxy-NCA forward with logits z = σ·cos: (per_i = lse_i − z_{i,y_i} ≥ 0, lse_i).
pub fn proxy_nca_forward<T: Real>(p: &Proxies<T>, sigma: f64) -> Result<(Vec<T>, Vec<T>)> {
    p.validate()?;
    check_nca_scale(sigma)?;
    let (n, d) = (p.n, p.d);
    let sg = T::c(sigma);
    let um = MatRef::new(p.u, n, d);
    let groups = p.groups();
    // Per group: (max, sum) of each row's log-sum-exp over the group's classes, and the
    // target logits of the rows whose class lies in the group.
    let parts: Vec<NcaPart<T>> = groups
        .par_iter()
        .map(|&(g0, g1)| {
            let mut m = vec![T::neg_infinity(); n];
            let mut sm = vec![T::zero(); n];
            let mut tg = Vec::new();
            let mut wt = vec![T::zero(); CT * d];
            let mut inv = vec![T::zero(); CT];
            let mut s = vec![T::zero(); CT * RB.min(n)];
            for t0 in (g0..g1).step_by(CT) {
                let t1 = (t0 + CT).min(g1);
                let ct = t1 - t0;
                p.norm_tile(t0, t1, &mut wt, &mut inv);
                let wm = MatRef::new(&wt, ct, d);
                for r0 in (0..n).step_by(RB) {
                    let r1 = (r0 + RB).min(n);
                    let st = &mut s[..(r1 - r0) * ct];
                    gemm(sg, um.rows_range(r0, r1), wm.t(), T::zero(), st);
                    for (i, k) in positives_in(p.labels, r0, r1, t0, t1) {
                        tg.push((r0 + i, st[i * ct + k]));
                    }
                    for (ii, row) in st.chunks_exact_mut(ct).enumerate() {
                        let i = r0 + ii;
                        if m[i] == T::neg_infinity() {
                            let mx = rowops::max(row);
                            sm[i] = rowops::exp_shift(row, mx);
                            m[i] = mx;
                        } else {
                            merge_row(&mut m[i], &mut sm[i], row);
                        }
                    }
                }
            }
            (m, sm, tg)
        })
        .collect();
    let mut lse = vec![T::zero(); n];
    let mut target = vec![T::zero(); n];
    for (i, l) in lse.iter_mut().enumerate() {
        let (mut m, mut s) = (parts[0].0[i], parts[0].1[i]);
        for part in &parts[1..] {
            let (m2, s2) = (part.0[i], part.1[i]);
            let nm = if m2 > m { m2 } else { m };
            s = s * rowops::exp1(m - nm) + s2 * rowops::exp1(m2 - nm);
            m = nm;
        }
        *l = m + s.ln();
    }
    for part in &parts {
        for &(i, v) in &part.2 {
            target[i] = v;
        }
    }
    let per = lse.iter().zip(&target).map(|(&l, &t)| if l > t { l - t } else { T::zero() }).collect();
    Ok((per, lse))
}

/// Proxy-NCA backward for the upstream gradient `g` of `per` (n) and the forward's `lse`:
/// ∂/∂û into `gu` (n×d), ∂/∂w into `gw` (c×d), both overwritten.
pub fn proxy_nca_backward<T: Real>(p: &Proxies<T>, sigma: f64, lse: &[T], g: &[T], gu: &mut [T], gw: &mut [T]) -> Result<()> {
    p.validate()?;
    check_nca_scale(sigma)?;
    for (name, v) in [("lse", lse), ("upstream gradient", g)] {
        if v.len() != p.n {
            return Err(Error::Shape(format!("{name} has length {}, expected {}", v.len(), p.n)));
        }
        check_finite(name, v)?;
    }
    let sg = T::c(sigma);
    // Row-major tiles S (rb × ct) of logits σ·cos into ∂L/∂cos = g_i·σ·(softmax − [c = y_i]).
    let coef = |t0: usize, t1: usize, r0: usize, r1: usize, st: &mut [T]| {
        let ct = t1 - t0;
        for (ii, row) in st.chunks_exact_mut(ct).enumerate() {
            let i = r0 + ii;
            affine_exp(row, T::one(), -lse[i], g[i] * sg);
        }
        for (i, k) in positives_in(p.labels, r0, r1, t0, t1) {
            st[i * ct + k] -= g[r0 + i] * sg;
        }
    };
    tiles_backward(p, false, sg, &coef, gu, gw)
}

/// `v` cut into the slices of the given class ranges (times `width` values per class).
fn split_by<'v, T>(mut v: &'v mut [T], ranges: &[(usize, usize)], width: usize) -> Vec<&'v mut [T]> {
    let mut out = Vec::with_capacity(ranges.len());
    for &(a, b) in ranges {
        let (head, tail) = std::mem::take(&mut v).split_at_mut((b - a) * width);
        out.push(head);
        v = tail;
    }
    out
}

/// The shared backward: per group, per class tile, per row tile: S = tile of `s_scale`·cosines
/// (class-major ct×rb when `class_major`, else row-major rb×ct), `coef` turns it into
/// ∂L/∂cos in place, then ∂L/∂ŵ_tile += Sᵀ-or-S · û_rows and the group's ∂L/∂û_rows += S · ŵ_tile.
/// ∂L/∂w goes through the normalisation of each proxy; the groups' ∂L/∂û shares are summed in order.
fn tiles_backward<T: Real, F>(p: &Proxies<T>, class_major: bool, s_scale: T, coef: &F, gu: &mut [T], gw: &mut [T]) -> Result<()>
where
    F: Fn(usize, usize, usize, usize, &mut [T]) + Sync,
{
    let (n, c, d) = (p.n, p.c, p.d);
    check_len("grad_embeddings", gu.len(), n, d)?;
    check_len("grad_proxies", gw.len(), c, d)?;
    let um = MatRef::new(p.u, n, d);
    let groups = p.groups();
    let mut gws = split_by(&mut gw[..c * d], &groups, d);
    let parts: Vec<Vec<T>> = gws
        .par_iter_mut()
        .zip(groups.par_iter())
        .map(|(gwg, &(g0, g1))| {
            let mut gup = vec![T::zero(); n * d];
            let mut wt = vec![T::zero(); CT * d];
            let mut inv = vec![T::zero(); CT];
            let mut s = vec![T::zero(); CT * RB.min(n)];
            for t0 in (g0..g1).step_by(CT) {
                let t1 = (t0 + CT).min(g1);
                let ct = t1 - t0;
                p.norm_tile(t0, t1, &mut wt, &mut inv);
                let wm = MatRef::new(&wt, ct, d);
                let gwt = &mut gwg[(t0 - g0) * d..(t1 - g0) * d];
                for (rt, r0) in (0..n).step_by(RB).enumerate() {
                    let r1 = (r0 + RB).min(n);
                    let rb = r1 - r0;
                    let st = &mut s[..ct * rb];
                    let ur = um.rows_range(r0, r1);
                    if class_major {
                        gemm(s_scale, wm, ur.t(), T::zero(), st);
                    } else {
                        gemm(s_scale, ur, wm.t(), T::zero(), st);
                    }
                    coef(t0, t1, r0, r1, st);
                    let sm = if class_major { MatRef::new(st, ct, rb) } else { MatRef::new(st, rb, ct).t() };
                    // sm is ct × rb (class-major view of the coefficients).
                    let beta = if rt == 0 { T::zero() } else { T::one() };
                    gemm(T::one(), sm, ur, beta, gwt);
                    gemm(T::one(), sm.t(), wm, T::one(), &mut gup[r0 * d..r1 * d]);
                }
                through_norm(gwt, &wt, &inv, d);
            }
            gup
        })
        .collect();
    sum_parts(&mut gu[..n * d], &parts, d);
    Ok(())
}

/// ∂L/∂w of a tile from ∂L/∂ŵ in place, through ŵ = w / max(‖w‖, eps) (`wt` the tile's ŵ,
/// `inv` its 1/max(‖w‖, eps)): (g − (g·ŵ)ŵ)/‖w‖, or g/eps below eps.
fn through_norm<T: Real>(gwt: &mut [T], wt: &[T], inv: &[T], d: usize) {
    let eps = T::c(NORM_EPS);
    for (k, g) in gwt.chunks_exact_mut(d).enumerate() {
        let wh = &wt[k * d..(k + 1) * d];
        let iv = inv[k];
        if T::one() / iv > eps {
            let gd = dot(g, wh);
            for (gv, &wv) in g.iter_mut().zip(wh) {
                *gv = (*gv - gd * wv) * iv;
            }
        } else {
            g.iter_mut().for_each(|gv| *gv *= iv);
        }
    }
}

/// `out` ← Σ of the groups' shares `parts` in group order, parallel over fixed row blocks.
fn sum_parts<T: Real>(out: &mut [T], parts: &[Vec<T>], d: usize) {
    out.par_chunks_mut(RB * d).enumerate().for_each(|(b, blk)| {
        let off = b * RB * d;
        let len = blk.len();
        blk.copy_from_slice(&parts[0][off..off + len]);
        for pt in &parts[1..] {
            rowops::add(blk, &pt[off..off + len]);
        }
    });
}

/// Proxy-Anchor loss L = Σ pos / |classes present| + Σ neg / C and, optionally, its gradients
/// with respect to the *raw* embeddings `p.u` (normalised here, as `F.normalize`) into `gx`
/// (n×d) and to the proxies into `gw` (c×d), both overwritten, in one pass with three GEMMs
/// (cos, ∂ŵ, ∂û) instead of the four of [`proxy_anchor_forward`] + [`proxy_anchor_backward`].
///
/// Proxy-Anchor's sums run over the batch per class, so the pass is class-tile-major: per
/// group of class tiles (the layout of the two-pass kernels, fixed by C), per tile of [`CT`]
/// classes, one GEMM gives the tile's cosines against all n rows (a CT×n buffer per running
/// task, the only state beyond the gradients), each class's two log-sum-exps come from that
/// buffer, which is then overwritten by ∂L/∂cos (the negatives' exponentials are already
/// there: one exp per entry), and ∂W_tile = A·û, the group's ∂û += Aᵀ·ŵ_tile. The groups'
/// ∂û shares are summed in group order: bit-identical for any thread count.
pub fn proxy_anchor_fused<T: Real>(
    p: &Proxies<T>, margin: f64, alpha: f64, mut gx: Option<&mut [T]>, mut gw: Option<&mut [T]>,
) -> Result<f64> {
    p.validate()?;
    check_anchor_params(margin, alpha)?;
    let (n, c, d) = (p.n, p.c, p.d);
    if let Some(g) = gx.as_deref() {
        check_len("grad_embeddings", g.len(), n, d)?;
    }
    if let Some(g) = gw.as_deref() {
        check_len("grad_proxies", g.len(), c, d)?;
    }
    let (a, dl) = (T::c(alpha), T::c(margin));
    let (uh, inx) = unit_rows(&p.u[..n * d], d);
    // By the group count, not the thread count: the path taken must not depend on the pool.
    if p.groups().len() * CT.min(c) * n * std::mem::size_of::<T>() > FUSED_BUDGET {
        return anchor_two_pass(p, &uh, &inx, margin, alpha, gx, gw);
    }
    let um = MatRef::new(&uh, n, d);
    let mut terms = AnchorTerms { pos: vec![T::zero(); c], neg: vec![T::zero(); c], count: vec![T::zero(); c] };
    for &y in p.labels {
        terms.count[y as usize] += T::one();
    }
    // The upstream gradients of Σ pos / present and Σ neg / C.
    let present = terms.count.iter().filter(|&&v| v > T::zero()).count().max(1);
    let (gp, gn) = (T::c(1.0 / present as f64), T::c(1.0 / c as f64));
    let need_x = gx.is_some();
    let groups = p.groups();
    let pos_s = split_by(&mut terms.pos, &groups, 1);
    let neg_s = split_by(&mut terms.neg, &groups, 1);
    let gw_s: Vec<Option<&mut [T]>> = match gw.as_deref_mut() {
        Some(g) => split_by(&mut g[..c * d], &groups, d).into_iter().map(Some).collect(),
        None => groups.iter().map(|_| None).collect(),
    };
    let parts: Vec<Vec<T>> = pos_s
        .into_par_iter()
        .zip(neg_s)
        .zip(gw_s)
        .zip(groups.par_iter())
        .map(|(((pos, neg), mut gwg), &(g0, g1))| {
            let mut gup = vec![T::zero(); if need_x { n * d } else { 0 }];
            let mut wt = vec![T::zero(); CT * d];
            let mut inv = vec![T::zero(); CT];
            let mut s = vec![T::zero(); CT.min(g1 - g0) * n];
            for t0 in (g0..g1).step_by(CT) {
                let t1 = (t0 + CT).min(g1);
                let ct = t1 - t0;
                p.norm_tile(t0, t1, &mut wt, &mut inv);
                let wm = MatRef::new(&wt[..ct * d], ct, d);
                let st = &mut s[..ct * n];
                gemm(T::one(), wm, um.t(), T::zero(), st);
                // Positives: their terms, then −∞ so that the negatives' pass skips them.
                let pc = positives_in(p.labels, 0, n, t0, t1);
                let mut pm = vec![T::zero(); ct];
                let mut ps = vec![T::one(); ct];
                let pcos: Vec<T> = pc.iter().map(|&(i, k)| st[k * n + i]).collect();
                for (&(i, k), &cos) in pc.iter().zip(&pcos) {
                    push(&mut pm[k], &mut ps[k], -a * (cos - dl));
                    st[k * n + i] = T::neg_infinity();
                }
                for (k, row) in st.chunks_exact_mut(n).enumerate() {
                    // (max, sum) of the "1 + Σ" log-sum-exp, the 1 being e⁰; the row is left
                    // holding e^{α(cos + δ) − max}, so ∂L/∂cos = gn·α·row / sum.
                    let (mut nm, mut ns) = (T::zero(), T::one());
                    affine(row, a, dl);
                    merge_row(&mut nm, &mut ns, row);
                    neg[t0 - g0 + k] = nm + ns.ln();
                    pos[t0 - g0 + k] = pm[k] + ps[k].ln();
                    rowops::scale(row, gn * a / ns);
                }
                for (&(i, k), &cos) in pc.iter().zip(&pcos) {
                    st[k * n + i] = -gp * a * rowops::exp1(-a * (cos - dl) - pos[t0 - g0 + k]);
                }
                let sm = MatRef::new(st, ct, n);
                if let Some(gwg) = gwg.as_deref_mut() {
                    let gwt = &mut gwg[(t0 - g0) * d..(t1 - g0) * d];
                    gemm(T::one(), sm, um, T::zero(), gwt);
                    through_norm(gwt, &wt, &inv, d);
                }
                if need_x {
                    gemm(T::one(), sm.t(), wm, T::one(), &mut gup);
                }
            }
            gup
        })
        .collect();
    if let Some(gx) = gx.as_deref_mut() {
        sum_parts(&mut gx[..n * d], &parts, d);
        unit_rows_backward(&mut gx[..n * d], &uh, &inx, d);
    }
    Ok(proxy_anchor_loss(&terms))
}

/// [`proxy_anchor_fused`]'s results from the two-pass kernels on the normalised rows `uh`
/// (1/‖u‖ in `inx`): for batches whose CT × n cosine buffers would exceed [`FUSED_BUDGET`].
fn anchor_two_pass<T: Real>(
    p: &Proxies<T>, uh: &[T], inx: &[T], margin: f64, alpha: f64, gx: Option<&mut [T]>, gw: Option<&mut [T]>,
) -> Result<f64> {
    let (n, c, d) = (p.n, p.c, p.d);
    let q = Proxies { u: uh, ..*p };
    let terms = proxy_anchor_forward(&q, margin, alpha)?;
    if gx.is_some() || gw.is_some() {
        let present = terms.count.iter().filter(|&&v| v > T::zero()).count().max(1);
        let g_pos = vec![T::c(1.0 / present as f64); c];
        let g_neg = vec![T::c(1.0 / c as f64); c];
        let mut gu = vec![T::zero(); n * d];
        let mut gwl = vec![T::zero(); c * d];
        proxy_anchor_backward(&q, margin, alpha, &terms.pos, &terms.neg, &g_pos, &g_neg, &mut gu, &mut gwl)?;
        if let Some(g) = gx {
            g[..n * d].copy_from_slice(&gu);
            unit_rows_backward(&mut g[..n * d], uh, inx, d);
        }
        if let Some(g) = gw {
            g[..c * d].copy_from_slice(&gwl);
        }
    }
    Ok(proxy_anchor_loss(&terms))
}

/// Proxy-NCA's weighted loss Σ_i c_i·per_i (`row_weights` c: the reduction and sample weights,
/// e.g. 1/n for the mean) and, optionally, its gradients with respect to the *raw* embeddings
/// `p.u` (normalised here) into `gx` and to the proxies into `gw`, in one pass with three GEMMs.
/// Proxy-NCA is a normalised softmax with scale σ over all proxies (no margin), so this is
/// the margin-softmax fused kernel ([`super::margin::margin_fused_weighted`]).
pub fn proxy_nca_fused<T: Real>(
    p: &Proxies<T>, sigma: f64, row_weights: &[f64], gx: Option<&mut [T]>, gw: Option<&mut [T]>,
) -> Result<f64> {
    p.validate()?;
    check_nca_scale(sigma)?;
    let m = MarginSoftmax {
        z: p.u,
        n: p.n,
        d: p.d,
        w: p.w,
        classes: p.c,
        sub_centers: 1,
        labels: p.labels,
        margins: &[0.0],
        scale: sigma,
        kind: Kind::Normalized,
    };
    margin_fused_weighted(&m, Some(row_weights), gx, gw)
}

/// The Proxy-Anchor loss from its per-class terms: Σ pos / |classes present| + Σ neg / C.
pub fn proxy_anchor_loss<T: Real>(t: &AnchorTerms<T>) -> f64 {
    let present = t.count.iter().filter(|&&v| v > T::zero()).count().max(1);
    ordered_sum(t.pos.iter().map(|v| v.to_f64_())) / present as f64
        + ordered_sum(t.neg.iter().map(|v| v.to_f64_())) / t.neg.len().max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::losses::common::testutil::*;

    fn unit(x: &[f64], n: usize, d: usize) -> Vec<f64> {
        let mut u = x.to_vec();
        for i in 0..n {
            let r = &mut u[i * d..(i + 1) * d];
            let nr = r.iter().map(|v| v * v).sum::<f64>().sqrt().max(NORM_EPS);
            r.iter_mut().for_each(|v| *v /= nr);
        }
        u
    }

    fn cosines(u: &[f64], n: usize, w: &[f64], c: usize, d: usize) -> Vec<f64> {
        let wh = unit(w, c, d);
        let mut s = vec![0.0; n * c];
        for i in 0..n {
            for k in 0..c {
                s[i * c + k] = (0..d).map(|a| u[i * d + a] * wh[k * d + a]).sum();
            }
        }
        s
    }

    fn lse1(v: &[f64]) -> f64 {
        // log(1 + Σ e^v)
        let m = v.iter().cloned().fold(0.0, f64::max);
        m + ((-m).exp() + v.iter().map(|x| (x - m).exp()).sum::<f64>()).ln()
    }

    fn brute_anchor(u: &[f64], n: usize, w: &[f64], c: usize, d: usize, y: &[i64], m: f64, a: f64) -> f64 {
        let s = cosines(u, n, w, c, d);
        let mut pos = 0.0;
        let mut neg = 0.0;
        let mut present = 0;
        for k in 0..c {
            let pv: Vec<f64> = (0..n).filter(|&i| y[i] as usize == k).map(|i| -a * (s[i * c + k] - m)).collect();
            let nv: Vec<f64> = (0..n).filter(|&i| y[i] as usize != k).map(|i| a * (s[i * c + k] + m)).collect();
            if !pv.is_empty() {
                present += 1;
            }
            pos += lse1(&pv);
            neg += lse1(&nv);
        }
        pos / present as f64 + neg / c as f64
    }

    fn brute_nca(u: &[f64], n: usize, w: &[f64], c: usize, d: usize, y: &[i64], sg: f64, g: &[f64]) -> f64 {
        let s = cosines(u, n, w, c, d);
        (0..n)
            .map(|i| {
                let z: Vec<f64> = (0..c).map(|k| sg * s[i * c + k]).collect();
                let m = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                g[i] * (m + z.iter().map(|v| (v - m).exp()).sum::<f64>().ln() - z[y[i] as usize])
            })
            .sum()
    }

    /// Upstream gradients of the per-class terms for L = Σpos/present + Σneg/C.
    fn anchor_up(t: &AnchorTerms<f64>) -> (Vec<f64>, Vec<f64>) {
        let c = t.pos.len();
        let present = t.count.iter().filter(|&&v| v > 0.0).count() as f64;
        (vec![1.0 / present; c], vec![1.0 / c as f64; c])
    }

    #[test]
    fn anchor_matches_brute_force_and_finite_differences() {
        let mut rng = Rng(3);
        // (n, c, d): several class tiles and groups, several row tiles, one class, absent classes.
        for &(n, c, d) in &[(7usize, 5usize, 3usize), (300, 9, 4), (20, 600, 3), (5, 1, 2)] {
            let x = rng.normal_vec(n * d);
            let u = unit(&x, n, d);
            let w = rng.normal_vec(c * d);
            let y = rng.labels(n, c.min(4) as u64);
            let p = Proxies { u: &u, n, w: &w, c, d, labels: &y };
            let t = proxy_anchor_forward(&p, 0.1, 8.0).unwrap();
            let v = proxy_anchor_loss(&t);
            let want = brute_anchor(&u, n, &w, c, d, &y, 0.1, 8.0);
            assert!((v - want).abs() < 1e-10 * (1.0 + want.abs()), "{v} vs {want}");
            let (gp, gn) = anchor_up(&t);
            let (mut gu, mut gw) = (vec![0.0; n * d], vec![0.0; c * d]);
            proxy_anchor_backward(&p, 0.1, 8.0, &t.pos, &t.neg, &gp, &gn, &mut gu, &mut gw).unwrap();
            if n * d <= 60 {
                assert_close(&gu, &fd_grad(&u, &|uu| brute_anchor(uu, n, &w, c, d, &y, 0.1, 8.0)), 1e-5);
            } else {
                let v = rng.normal_vec(n * d);
                assert_dir(&gu, &u, &v, &|uu| brute_anchor(uu, n, &w, c, d, &y, 0.1, 8.0), 1e-5);
            }
            if c * d <= 60 {
                assert_close(&gw, &fd_grad(&w, &|ww| brute_anchor(&u, n, ww, c, d, &y, 0.1, 8.0)), 1e-5);
            } else {
                let v = rng.normal_vec(c * d);
                assert_dir(&gw, &w, &v, &|ww| brute_anchor(&u, n, ww, c, d, &y, 0.1, 8.0), 1e-5);
            }
        }
    }

    #[test]
    fn nca_matches_brute_force_and_finite_differences() {
        let mut rng = Rng(5);
        for &(n, c, d) in &[(7usize, 5usize, 3usize), (300, 9, 4), (20, 600, 3), (5, 1, 2)] {
            let x = rng.normal_vec(n * d);
            let u = unit(&x, n, d);
            let w = rng.normal_vec(c * d);
            let y = rng.labels(n, c as u64);
            let g: Vec<f64> = (0..n).map(|i| 0.5 + (i % 3) as f64 * 0.25).collect();
            let p = Proxies { u: &u, n, w: &w, c, d, labels: &y };
            let (per, lse) = proxy_nca_forward(&p, 3.0).unwrap();
            let v: f64 = per.iter().zip(&g).map(|(a, b)| a * b).sum();
            let want = brute_nca(&u, n, &w, c, d, &y, 3.0, &g);
            assert!((v - want).abs() < 1e-10 * (1.0 + want.abs()), "{v} vs {want}");
            let (mut gu, mut gw) = (vec![0.0; n * d], vec![0.0; c * d]);
            proxy_nca_backward(&p, 3.0, &lse, &g, &mut gu, &mut gw).unwrap();
            let fu = |uu: &[f64]| brute_nca(uu, n, &w, c, d, &y, 3.0, &g);
            let fw = |ww: &[f64]| brute_nca(&u, n, ww, c, d, &y, 3.0, &g);
            let v = rng.normal_vec(n * d);
            assert_dir(&gu, &u, &v, &fu, 1e-5);
            let v = rng.normal_vec(c * d);
            assert_dir(&gw, &w, &v, &fw, 1e-5);
        }
    }

    #[test]
    fn results_do_not_depend_on_the_thread_count() {
        let (n, c, d) = (300usize, 5000usize, 8usize);
        let mut rng = Rng(11);
        let x = rng.normal_vec(n * d);
        let u: Vec<f32> = unit(&x, n, d).iter().map(|&v| v as f32).collect();
        let w: Vec<f32> = rng.normal_vec(c * d).iter().map(|&v| v as f32).collect();
        let y = rng.labels(n, c as u64);
        let p = Proxies { u: &u, n, w: &w, c, d, labels: &y };
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            pool.install(|| {
                let t = proxy_anchor_forward(&p, 0.1, 32.0).unwrap();
                let gp = vec![0.5f32; c];
                let gn = vec![0.25f32; c];
                let (mut gu, mut gw) = (vec![0.0f32; n * d], vec![0.0f32; c * d]);
                proxy_anchor_backward(&p, 0.1, 32.0, &t.pos, &t.neg, &gp, &gn, &mut gu, &mut gw).unwrap();
                let (per, lse) = proxy_nca_forward(&p, 16.0).unwrap();
                let g = vec![1.0f32; n];
                let (mut hu, mut hw) = (vec![0.0f32; n * d], vec![0.0f32; c * d]);
                proxy_nca_backward(&p, 16.0, &lse, &g, &mut hu, &mut hw).unwrap();
                let (mut fx, mut fw) = (vec![0.0f32; n * d], vec![0.0f32; c * d]);
                let fa = proxy_anchor_fused(&p, 0.1, 32.0, Some(&mut fx), Some(&mut fw)).unwrap();
                let cw = vec![1.0 / n as f64; n];
                let (mut kx, mut kw) = (vec![0.0f32; n * d], vec![0.0f32; c * d]);
                let fnca = proxy_nca_fused(&p, 16.0, &cw, Some(&mut kx), Some(&mut kw)).unwrap();
                let mut bits: Vec<u64> = t.pos.iter().chain(&t.neg).chain(&gu).chain(&gw).chain(&per).chain(&lse)
                    .chain(&hu).chain(&hw).chain(&fx).chain(&fw).chain(&kx).chain(&kw)
                    .map(|v| v.to_bits() as u64)
                    .collect();
                bits.extend([fa.to_bits(), fnca.to_bits()]);
                bits
            })
        };
        let one = run(1);
        assert_eq!(one, run(2));
        assert_eq!(one, run(3));
    }

    #[test]
    fn groups_keep_the_gradient_shares_within_the_budget() {
        let none: [f64; 0] = [];
        let g = |n: usize, c: usize, d: usize| Proxies { u: &none, n, w: &none, c, d, labels: &[] }.groups();
        // Small batches: one group per tile up to MAX_GROUPS, covering 0..c in whole tiles.
        assert_eq!(g(512, 100 * CT, 64).len(), MAX_GROUPS);
        assert_eq!(g(512, 3 * CT + 1, 64).len(), 4);
        // 16 f64 shares of 65,536 × 512 would be 4 GiB: the budget allows one.
        let big = g(65_536, 100 * CT, 512);
        assert_eq!(big.len(), (SHARE_BUDGET / (65_536 * 512 * 8)).max(1));
        for gs in [g(512, 3 * CT + 1, 64), big] {
            assert_eq!(gs[0].0, 0);
            assert_eq!(gs.last().unwrap().1, if gs.len() == 4 { 3 * CT + 1 } else { 100 * CT });
            assert!(gs.windows(2).all(|w| w[0].1 == w[1].0 && w[0].1 % CT == 0));
        }
    }

    #[test]
    fn the_two_pass_fallback_equals_the_fused_pass() {
        let mut rng = Rng(23);
        for &(n, c, d) in &[(7usize, 5usize, 3usize), (300, 600, 4), (40, 1, 2)] {
            let x: Vec<f64> = rng.normal_vec(n * d).iter().map(|v| 3.0 * v).collect();
            let w = rng.normal_vec(c * d);
            let y = rng.labels(n, c.min(5) as u64);
            let p = Proxies { u: &x, n, w: &w, c, d, labels: &y };
            let (mut gx, mut gw) = (vec![7.0; n * d], vec![7.0; c * d]);
            let v = proxy_anchor_fused(&p, 0.1, 8.0, Some(&mut gx), Some(&mut gw)).unwrap();
            let (uh, inx) = unit_rows(&x, d);
            let (mut hx, mut hw) = (vec![-3.0; n * d], vec![-3.0; c * d]);
            let t = anchor_two_pass(&p, &uh, &inx, 0.1, 8.0, Some(&mut hx), Some(&mut hw)).unwrap();
            assert!((t - v).abs() < 1e-12 * (1.0 + v.abs()), "{t} vs {v}");
            assert_close(&hx, &gx, 1e-10);
            assert_close(&hw, &gw, 1e-10);
            assert_eq!(anchor_two_pass(&p, &uh, &inx, 0.1, 8.0, None, None).unwrap().to_bits(), t.to_bits());
        }
    }

    #[test]
    fn fused_matches_brute_force_and_the_two_pass_kernels() {
        let mut rng = Rng(17);
        // (n, c, d): several class tiles and groups, a batch wider than a row tile, one class,
        // absent classes; raw (unnormalised) embeddings, one of them tiny.
        for &(n, c, d) in &[(7usize, 5usize, 3usize), (300, 9, 4), (20, 4200, 3), (5, 1, 2)] {
            let mut x: Vec<f64> = rng.normal_vec(n * d).iter().map(|v| 2.0 * v).collect();
            x[..d].iter_mut().for_each(|v| *v *= 1e-3);
            let u = unit(&x, n, d);
            let w = rng.normal_vec(c * d);
            let y = rng.labels(n, c.min(4) as u64);
            let px = Proxies { u: &x, n, w: &w, c, d, labels: &y };
            let pu = Proxies { u: &u, ..px };
            // Proxy-Anchor: the loss, and both gradients against finite differences of the brute
            // force and against the two-pass kernels (∂û taken through the normalisation by hand).
            let fa = |xx: &[f64], ww: &[f64]| brute_anchor(&unit(xx, n, d), n, ww, c, d, &y, 0.1, 8.0);
            let (mut gx, mut gw) = (vec![7.0; n * d], vec![7.0; c * d]);
            let v = proxy_anchor_fused(&px, 0.1, 8.0, Some(&mut gx), Some(&mut gw)).unwrap();
            let want = fa(&x, &w);
            assert!((v - want).abs() < 1e-10 * (1.0 + want.abs()), "{v} vs {want}");
            let t = proxy_anchor_forward(&pu, 0.1, 8.0).unwrap();
            assert!((proxy_anchor_loss(&t) - v).abs() < 1e-12 * (1.0 + v.abs()));
            let (gp, gn) = anchor_up(&t);
            let (mut gu2, mut gw2) = (vec![0.0; n * d], vec![0.0; c * d]);
            proxy_anchor_backward(&pu, 0.1, 8.0, &t.pos, &t.neg, &gp, &gn, &mut gu2, &mut gw2).unwrap();
            let inv: Vec<f64> = (0..n).map(|i| 1.0 / x[i * d..(i + 1) * d].iter().map(|v| v * v).sum::<f64>().sqrt()).collect();
            unit_rows_backward(&mut gu2, &u, &inv, d);
            assert_close(&gx, &gu2, 1e-10);
            assert_close(&gw, &gw2, 1e-10);
            let dx = rng.normal_vec(n * d);
            assert_dir(&gx, &x, &dx, &|xx| fa(xx, &w), 1e-5);
            let dw = rng.normal_vec(c * d);
            assert_dir(&gw, &w, &dw, &|ww| fa(&x, ww), 1e-5);
            // One gradient alone: the same bits.
            let mut ox = vec![0.0; n * d];
            assert_eq!(proxy_anchor_fused(&px, 0.1, 8.0, Some(&mut ox), None).unwrap().to_bits(), v.to_bits());
            assert_eq!(ox, gx);
            let mut ow = vec![0.0; c * d];
            proxy_anchor_fused(&px, 0.1, 8.0, None, Some(&mut ow)).unwrap();
            assert_eq!(ow, gw);
            // Proxy-NCA with per-row weights.
            let cw: Vec<f64> = (0..n).map(|i| 0.5 + (i % 3) as f64 * 0.25).collect();
            let fnca = |xx: &[f64], ww: &[f64]| brute_nca(&unit(xx, n, d), n, ww, c, d, &y, 3.0, &cw);
            let (mut hx, mut hw) = (vec![7.0; n * d], vec![7.0; c * d]);
            let v = proxy_nca_fused(&px, 3.0, &cw, Some(&mut hx), Some(&mut hw)).unwrap();
            let want = fnca(&x, &w);
            assert!((v - want).abs() < 1e-10 * (1.0 + want.abs()), "{v} vs {want}");
            let (_, lse) = proxy_nca_forward(&pu, 3.0).unwrap();
            let (mut hu2, mut hw2) = (vec![0.0; n * d], vec![0.0; c * d]);
            proxy_nca_backward(&pu, 3.0, &lse, &cw, &mut hu2, &mut hw2).unwrap();
            unit_rows_backward(&mut hu2, &u, &inv, d);
            assert_close(&hx, &hu2, 1e-10);
            assert_close(&hw, &hw2, 1e-10);
            assert_dir(&hx, &x, &dx, &|xx| fnca(xx, &w), 1e-5);
            assert_dir(&hw, &w, &dw, &|ww| fnca(&x, ww), 1e-5);
        }
        let (x, w) = (vec![1.0f64; 4], vec![1.0f64; 6]);
        let p = Proxies { u: &x, n: 2, w: &w, c: 3, d: 2, labels: &[0, 3] };
        assert!(matches!(proxy_anchor_fused(&p, 0.1, 32.0, None, None), Err(Error::InvalidInput(_))));
        assert!(matches!(proxy_nca_fused(&p, 1.0, &[0.5, 0.5], None, None), Err(Error::InvalidInput(_))));
        let ok = Proxies { labels: &[0, 2], ..p };
        let mut short = vec![0.0; 3];
        assert!(matches!(proxy_anchor_fused(&ok, 0.1, 32.0, Some(&mut short), None), Err(Error::Shape(_))));
        assert!(matches!(proxy_nca_fused(&ok, 1.0, &[0.5], None, None), Err(Error::Shape(_))));
    }

    #[test]
    fn labels_outside_the_classes_are_an_error() {
        let u = vec![1.0f64, 0.0, 0.0, 1.0];
        let w = vec![1.0f64, 0.0, 0.0, 1.0];
        for bad in [[0i64, 2], [-1, 0]] {
            let p = Proxies { u: &u, n: 2, w: &w, c: 2, d: 2, labels: &bad };
            assert!(matches!(proxy_anchor_forward(&p, 0.1, 32.0), Err(Error::InvalidInput(_))));
            assert!(matches!(proxy_nca_forward(&p, 1.0), Err(Error::InvalidInput(_))));
        }
    }

    #[test]
    fn huge_scales_stay_finite() {
        let mut rng = Rng(2);
        let (n, c, d) = (40usize, 30usize, 4usize);
        let x = rng.normal_vec(n * d);
        let u: Vec<f32> = unit(&x, n, d).iter().map(|&v| v as f32).collect();
        let w: Vec<f32> = rng.normal_vec(c * d).iter().map(|&v| v as f32).collect();
        let y = rng.labels(n, c as u64);
        let p = Proxies { u: &u, n, w: &w, c, d, labels: &y };
        let t = proxy_anchor_forward(&p, 0.1, 1e4).unwrap();
        assert!(t.pos.iter().chain(&t.neg).all(|v| v.is_finite()));
        let (mut gu, mut gw) = (vec![0.0f32; n * d], vec![0.0f32; c * d]);
        proxy_anchor_backward(&p, 0.1, 1e4, &t.pos, &t.neg, &vec![1.0; c], &vec![1.0; c], &mut gu, &mut gw).unwrap();
        assert!(gu.iter().chain(&gw).all(|v| v.is_finite()));
        let (per, lse) = proxy_nca_forward(&p, 1e4).unwrap();
        assert!(per.iter().all(|v| v.is_finite() && *v >= 0.0));
        proxy_nca_backward(&p, 1e4, &lse, &vec![1.0; n], &mut gu, &mut gw).unwrap();
        assert!(gu.iter().chain(&gw).all(|v| v.is_finite()));
    }
}
