//! Shared driver of the per-anchor pair-similarity losses (Multi-Similarity,
//! Circle): per_i = F(L⁺_i, L⁻_i) with L^± = log(k₀ + Σ_{j∈P(i) / N(i)} e^{l^±(S_ij)}),
//! k₀ ∈ {0, 1}, on dot-product similarities S of unit rows.
//!
//! Dense sets (from labels) walk fixed row tiles of similarities and recompute
//! them in backward. Given pair sets (PML's `(a1, p, a2, n)`) are grouped by
//! anchor and evaluated pair by pair, O((P + N)·d), or, when they cover a good
//! part of the n×m pairs (a miner's output often does), on the same tiles.

use super::common::{group_pairs, Batch, Space};
use super::rowops;
use crate::error::{check_finite, check_len, Error, Result};
use crate::linalg::dot;
use crate::Real;
use rayon::prelude::*;

/// The per-element logits and the per-anchor combination of one loss.
pub(crate) trait RowLoss<T: Real>: Sync {
    /// Whether each log-sum has the implicit e⁰ term (log(1 + Σ e^l)).
    const ADD_ONE: bool;
    /// Logit of a positive similarity, and its derivative (detached parts held constant).
    fn pos(&self, s: T) -> (T, T);
    /// Logit of a negative similarity, and its derivative.
    fn neg(&self, s: T) -> (T, T);
    /// (per, ∂per/∂L⁺, ∂per/∂L⁻) from the log-sums; `has_p`/`has_n` say whether the sets are non-empty.
    fn combine(&self, lp: T, ln: T, has_p: bool, has_n: bool) -> (T, T, T);
    /// The anchor's count (the reducer's denominator share) for its value.
    fn count(&self, per: T) -> T;
}

/// A log-sum from its shift (the logits' max, or max(·, 0) with `ADD_ONE`) and
/// Σ e^{l − shift}: −∞ for an empty set without the implicit term.
#[inline]
fn log_sum<T: Real>(add_one: bool, shift: T, sum: T) -> T {
    let extra = if add_one { (-shift).exp() } else { T::zero() };
    shift + (sum + extra).ln()
}

#[inline]
fn shift_of<T: Real>(add_one: bool, mx: T) -> T {
    if add_one {
        mx.max(T::zero())
    } else if mx == T::neg_infinity() {
        T::zero()
    } else {
        mx
    }
}

/// e^{shift − L}: the factor turning e^{l − shift} into e^{l − L} (0 for an empty set).
#[inline]
fn back_factor<T: Real>(has: bool, shift: T, l: T) -> T {
    if has { (shift - l).exp() } else { T::zero() }
}

/// The references of each label: `idx[range]` lists, in index order, the
/// references labelled `labels[k]` for the k-th distinct label.
struct Classes {
    labels: Vec<i64>,
    start: Vec<usize>,
    idx: Vec<u32>,
}

impl Classes {
    fn new(rl: &[i64]) -> Self {
        let mut idx: Vec<u32> = (0..rl.len() as u32).collect();
        idx.sort_by_key(|&j| (rl[j as usize], j));
        let (mut labels, mut start) = (Vec::new(), Vec::new());
        for (k, &j) in idx.iter().enumerate() {
            if labels.last() != Some(&rl[j as usize]) {
                labels.push(rl[j as usize]);
                start.push(k);
            }
        }
        start.push(idx.len());
        Classes { labels, start, idx }
    }
    /// References labelled `y` (empty if none).
    fn of(&self, y: i64) -> &[u32] {
        match self.labels.binary_search(&y) {
            Ok(k) => &self.idx[self.start[k]..self.start[k + 1]],
            Err(_) => &[],
        }
    }
}

/// Statistics of one anchor's row: the log-sums, their shifts, and whether the sets are non-empty.
struct RowStats<T> {
    per: T,
    lp: T,
    ln: T,
    sp: T,
    sn: T,
    hp: bool,
    hn: bool,
}

/// One dense row: similarities `s` (m wide) of anchor `i`, whose label's
/// references are `cls` (`same`: the anchor's own column is in neither set).
/// Negatives are every column outside `cls`, so their logits are computed for
/// the whole row in vectorisable passes and the class columns blanked after;
/// positives (usually few) go through `ep`. On return `buf` holds
/// e^{l_j − shift⁻} for negatives (0 elsewhere) and `ep` e^{l_p − shift⁺}.
#[inline]
fn dense_row<T: Real, L: RowLoss<T>>(
    loss: &L, s: &[T], i: usize, cls: &[u32], same: bool, buf: &mut [T], ep: &mut Vec<T>,
) -> RowStats<T> {
    for (b, &v) in buf.iter_mut().zip(s) {
        *b = loss.neg(v).0;
    }
    for &j in cls {
        buf[j as usize] = T::neg_infinity();
    }
    let hn = cls.len() < s.len();
    let sn = shift_of(L::ADD_ONE, rowops::max(buf));
    let an = rowops::exp_shift(buf, sn);
    ep.clear();
    ep.extend(cls.iter().filter(|&&j| !(same && j as usize == i)).map(|&j| loss.pos(s[j as usize]).0));
    let hp = !ep.is_empty();
    let sp = shift_of(L::ADD_ONE, ep.iter().copied().fold(T::neg_infinity(), T::max));
    let mut ap = T::zero();
    for e in ep.iter_mut() {
        *e = rowops::exp1(*e - sp);
        ap += *e;
    }
    let (lp, ln) = (log_sum(L::ADD_ONE, sp, ap), log_sum(L::ADD_ONE, sn, an));
    let per = loss.combine(lp, ln, hp, hn).0;
    RowStats { per, lp, ln, sp, sn, hp, hn }
}

/// Row i's gradient coefficients into `crow` for upstream `gi` (one evaluation of the row, as the
/// forward's): c_j = g·∂F/∂L·e^{l_j − L}·∂l_j/∂S, from e^{l_j − shift} (0 off the sets). Returns per_i.
#[allow(clippy::too_many_arguments)]
#[inline]
fn row_coefs<T: Real, L: RowLoss<T>>(
    loss: &L, row: &[T], i: usize, cls: &[u32], same: bool, gi: T, crow: &mut [T], ep: &mut Vec<T>,
) -> T {
    let st = dense_row(loss, row, i, cls, same, crow, ep);
    let (_, fp, fnn) = loss.combine(st.lp, st.ln, st.hp, st.hn);
    let kp = gi * fp * back_factor(st.hp, st.sp, st.lp);
    let kn = gi * fnn * back_factor(st.hn, st.sn, st.ln);
    for (cv, &v) in crow.iter_mut().zip(row) {
        *cv *= kn * loss.neg(v).1;
    }
    let pos = cls.iter().filter(|&&j| !(same && j as usize == i));
    for (&j, &e) in pos.zip(ep.iter()) {
        let j = j as usize;
        crow[j] = kp * e * loss.pos(row[j]).1;
    }
    st.per
}

fn sim_space<'a, T: Real>(b: &Batch<'a, T>) -> Space<'a, T> {
    let r = b.refs.map(|(r, m, _)| (r, m));
    Space::dot(b.x, b.n, r, b.d, T::one())
}

/// Validates the batch and that reference indices fit in u32.
fn check_batch<T: Real>(b: &Batch<T>) -> Result<()> {
    b.validate()?;
    if b.r().1 > u32::MAX as usize {
        return Err(Error::Shape("more than 2^32 reference rows".into()));
    }
    Ok(())
}

/// Per-anchor values and counts over the label-defined pair sets.
pub(crate) fn dense_forward<T: Real, L: RowLoss<T>>(b: &Batch<T>, loss: &L) -> Result<(Vec<T>, Vec<T>)> {
    check_batch(b)?;
    let (_, m, rl) = b.r();
    let same = b.same();
    let classes = Classes::new(rl);
    let parts = sim_space(b).map_tiles(|r0, r1, s| {
        let (mut buf, mut ep) = (vec![T::zero(); m], Vec::new());
        (r0..r1)
            .map(|i| {
                let row = &s[(i - r0) * m..(i - r0 + 1) * m];
                let per = dense_row(loss, row, i, classes.of(b.labels[i]), same, &mut buf, &mut ep).per;
                (per, loss.count(per))
            })
            .collect::<Vec<_>>()
    });
    Ok(parts.into_iter().flatten().unzip())
}

fn check_upstream<T: Real>(g: &[T], n: usize) -> Result<()> {
    if g.len() != n {
        return Err(Error::Shape(format!("upstream gradient has length {}, expected {n}", g.len())));
    }
    check_finite("upstream gradient", g)
}

/// Σ_i g_i ∂per_i/∂x into `gx` and, with references, ∂/∂refs into `gr`.
pub(crate) fn dense_backward<T: Real, L: RowLoss<T>>(
    b: &Batch<T>, loss: &L, g: &[T], gx: &mut [T], gr: &mut [T],
) -> Result<()> {
    check_batch(b)?;
    check_upstream(g, b.n)?;
    let (_, m, rl) = b.r();
    check_len("grad_x", gx.len(), b.n, b.d)?;
    if !b.same() {
        check_len("grad_ref", gr.len(), m, b.d)?;
    }
    gx.iter_mut().for_each(|v| *v = T::zero());
    gr.iter_mut().for_each(|v| *v = T::zero());
    let same = b.same();
    let classes = Classes::new(rl);
    sim_space(b).backward(
        false,
        |r0, r1, s, c| {
            let mut ep = Vec::new();
            for i in r0..r1 {
                if g[i] == T::zero() {
                    continue;
                }
                let row = &s[(i - r0) * m..(i - r0 + 1) * m];
                let crow = &mut c[(i - r0) * m..(i - r0 + 1) * m];
                row_coefs(loss, row, i, classes.of(b.labels[i]), same, g[i], crow, &mut ep);
            }
        },
        gx,
        gr,
    );
    Ok(())
}

/// Forward and the gradient of Σ_i per_i in one pass over the similarity tiles (no recompute): the
/// default mean reduction needs only this gradient scaled by 1/Σcnt, which the caller applies.
pub(crate) fn dense_forward_backward<T: Real, L: RowLoss<T>>(
    b: &Batch<T>, loss: &L, gx: &mut [T], gr: &mut [T],
) -> Result<(Vec<T>, Vec<T>)> {
    check_batch(b)?;
    let (_, m, rl) = b.r();
    check_len("grad_x", gx.len(), b.n, b.d)?;
    if !b.same() {
        check_len("grad_ref", gr.len(), m, b.d)?;
    }
    gx.iter_mut().for_each(|v| *v = T::zero());
    gr.iter_mut().for_each(|v| *v = T::zero());
    let same = b.same();
    let classes = Classes::new(rl);
    // Each tile writes its own rows once: one lock per tile.
    let per = std::sync::Mutex::new(vec![T::zero(); b.n]);
    sim_space(b).backward(
        false,
        |r0, r1, s, c| {
            let mut ep = Vec::new();
            let mut rows = Vec::with_capacity(r1 - r0);
            for i in r0..r1 {
                let row = &s[(i - r0) * m..(i - r0 + 1) * m];
                let crow = &mut c[(i - r0) * m..(i - r0 + 1) * m];
                rows.push(row_coefs(loss, row, i, classes.of(b.labels[i]), same, T::one(), crow, &mut ep));
            }
            per.lock().unwrap_or_else(|e| e.into_inner())[r0..r1].copy_from_slice(&rows);
        },
        gx,
        gr,
    );
    let per = per.into_inner().unwrap_or_else(|e| e.into_inner());
    let cnt = per.iter().map(|&v| loss.count(v)).collect();
    Ok((per, cnt))
}

/// Given pair sets: anchors `a1[k]` with positives `p[k]`, anchors `a2[k]`
/// with negatives `neg[k]` (indices into the references; duplicates count as given).
#[derive(Clone, Copy)]
pub struct GivenPairs<'a, T> {
    pub x: &'a [T],
    pub n: usize,
    pub d: usize,
    /// Reference rows and their count (None: the batch itself).
    pub refs: Option<(&'a [T], usize)>,
    pub a1: &'a [i64],
    pub p: &'a [i64],
    pub a2: &'a [i64],
    pub neg: &'a [i64],
}

/// Pairs grouped by anchor in their given order: anchor i's positives are
/// `pos[ps[i]..ps[i+1]]`, its negatives `neg[ns[i]..ns[i+1]]`.
struct Groups {
    ps: Vec<usize>,
    pos: Vec<u32>,
    ns: Vec<usize>,
    neg: Vec<u32>,
}

fn group(n: usize, m: usize, a: &[i64], o: &[i64], what: &str) -> Result<(Vec<usize>, Vec<u32>)> {
    if a.len() != o.len() {
        return Err(Error::Shape(format!("{what} pairs: {} anchors but {} partners", a.len(), o.len())));
    }
    // Range checks in parallel (fixed chunks; the first bad chunk reports).
    const CH: usize = 1 << 16;
    let bad = a.par_chunks(CH).zip(o.par_chunks(CH)).map(|(ac, oc)| {
        let ba = ac.iter().find(|&&v| v < 0 || v as u64 >= n as u64);
        let bo = oc.iter().find(|&&v| v < 0 || v as u64 >= m as u64);
        (ba.copied(), bo.copied())
    });
    if let Some((ba, bo)) = bad.find_first(|v| v.0.is_some() || v.1.is_some()) {
        return Err(match (ba, bo) {
            (Some(v), _) => Error::InvalidInput(format!("{what} pair anchor index {v} out of range [0, {n})")),
            (_, v) => Error::InvalidInput(format!("{what} pair index {} out of range [0, {m})", v.unwrap_or(0))),
        });
    }
    let mut start = vec![0usize; n + 1];
    for &ai in a {
        start[ai as usize + 1] += 1;
    }
    for k in 0..n {
        start[k + 1] += start[k];
    }
    // Miners list pairs by anchor already: then the partners are the grouped list.
    if a.windows(2).all(|w| w[0] <= w[1]) {
        return Ok((start, o.par_iter().map(|&v| v as u32).collect()));
    }
    let mut fill = start.clone();
    let mut idx = vec![0u32; a.len()];
    for (&ai, &oi) in a.iter().zip(o) {
        idx[fill[ai as usize]] = oi as u32;
        fill[ai as usize] += 1;
    }
    Ok((start, idx))
}

impl<'a, T: Real> GivenPairs<'a, T> {
    fn r(&self) -> (&'a [T], usize) {
        self.refs.unwrap_or((self.x, self.n))
    }
    fn validate(&self) -> Result<Groups> {
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
        let m = self.r().1;
        if self.n > u32::MAX as usize || m > u32::MAX as usize {
            return Err(Error::Shape("more than 2^32 rows".into()));
        }
        let (ps, pos) = group(self.n, m, self.a1, self.p, "positive")?;
        let (ns, neg) = group(self.n, m, self.a2, self.neg, "negative")?;
        Ok(Groups { ps, pos, ns, neg })
    }
}

/// Work space of one anchor of given pairs: the similarities of its positives
/// and negatives, and their e^{l − shift}.
#[derive(Default)]
struct Scratch<T> {
    sp: Vec<T>,
    sn: Vec<T>,
    ep: Vec<T>,
    en: Vec<T>,
}

/// e_k = e^{f(s_k) − shift} into `e`; returns (shift, log-sum).
#[inline]
fn exp_sum<T: Real, L: RowLoss<T>, F: Fn(T) -> T>(s: &[T], e: &mut Vec<T>, f: F) -> (T, T) {
    e.clear();
    e.extend(s.iter().map(|&v| f(v)));
    let sh = shift_of(L::ADD_ONE, rowops::max(e));
    (sh, log_sum(L::ADD_ONE, sh, rowops::exp_shift(e, sh)))
}

/// Anchor i of given pairs, with `sim(j)` its similarity to reference j:
/// fills `w` and returns its row statistics.
fn given_row<T: Real, L: RowLoss<T>, S: Fn(u32) -> T>(loss: &L, gr: &Groups, i: usize, sim: S, w: &mut Scratch<T>) -> RowStats<T> {
    w.sp.clear();
    w.sp.extend(gr.pos[gr.ps[i]..gr.ps[i + 1]].iter().map(|&j| sim(j)));
    w.sn.clear();
    w.sn.extend(gr.neg[gr.ns[i]..gr.ns[i + 1]].iter().map(|&j| sim(j)));
    let (sp, lp) = exp_sum::<T, L, _>(&w.sp, &mut w.ep, |v| loss.pos(v).0);
    let (sn, ln) = exp_sum::<T, L, _>(&w.sn, &mut w.en, |v| loss.neg(v).0);
    let (hp, hn) = (!w.sp.is_empty(), !w.sn.is_empty());
    let per = loss.combine(lp, ln, hp, hn).0;
    RowStats { per, lp, ln, sp, sn, hp, hn }
}

/// Whether given pairs are evaluated on similarity tiles (GEMM, O(n·m·d))
/// rather than pair by pair (O((P + N)·d) at a far lower rate per operation).
fn use_tiles(gr: &Groups, n: usize, m: usize) -> bool {
    #[cfg(test)]
    if let Some(f) = FORCE_TILES.with(|c| c.get()) {
        return f;
    }
    ((gr.pos.len() + gr.neg.len()) as f64) * 16.0 >= n as f64 * m as f64
}

#[cfg(test)]
thread_local! {
    /// Tests: force the tiled (Some(true)) or pair-by-pair (Some(false)) evaluation of given pairs.
    pub(crate) static FORCE_TILES: std::cell::Cell<Option<bool>> = const { std::cell::Cell::new(None) };
}

fn given_space<'a, T: Real>(q: &GivenPairs<'a, T>) -> Space<'a, T> {
    Space::dot(q.x, q.n, q.refs, q.d, T::one())
}

/// Per-anchor values and counts (n each) over given pair sets.
pub(crate) fn given_forward<T: Real, L: RowLoss<T>>(q: &GivenPairs<T>, loss: &L) -> Result<(Vec<T>, Vec<T>)> {
    let gr = q.validate()?;
    let (r, m) = q.r();
    let d = q.d;
    if use_tiles(&gr, q.n, m) {
        let parts = given_space(q).map_tiles(|r0, r1, s| {
            let mut w = Scratch::default();
            (r0..r1)
                .map(|i| {
                    let row = &s[(i - r0) * m..(i - r0 + 1) * m];
                    let per = given_row(loss, &gr, i, |j| row[j as usize], &mut w).per;
                    (per, loss.count(per))
                })
                .collect::<Vec<_>>()
        });
        return Ok(parts.into_iter().flatten().unzip());
    }
    let rows: Vec<(T, T)> = (0..q.n)
        .into_par_iter()
        .map_init(Scratch::default, |w, i| {
            let xi = &q.x[i * d..(i + 1) * d];
            let per = given_row(loss, &gr, i, |j| dot(xi, &r[j as usize * d..(j as usize + 1) * d]), w).per;
            (per, loss.count(per))
        })
        .collect();
    Ok(rows.into_iter().unzip())
}

/// Adds anchor i's coefficients ∂(g_i per_i)/∂S_ij to `put(j, c)`, in pair order.
fn given_coefs<T: Real, L: RowLoss<T>>(
    loss: &L, gr: &Groups, i: usize, gi: T, st: &RowStats<T>, w: &Scratch<T>, mut put: impl FnMut(u32, T),
) {
    let (_, fp, fnn) = loss.combine(st.lp, st.ln, st.hp, st.hn);
    let kp = gi * fp * back_factor(st.hp, st.sp, st.lp);
    let kn = gi * fnn * back_factor(st.hn, st.sn, st.ln);
    for ((&j, &e), &s) in gr.pos[gr.ps[i]..gr.ps[i + 1]].iter().zip(&w.ep).zip(&w.sp) {
        put(j, kp * e * loss.pos(s).1);
    }
    for ((&j, &e), &s) in gr.neg[gr.ns[i]..gr.ns[i + 1]].iter().zip(&w.en).zip(&w.sn) {
        put(j, kn * e * loss.neg(s).1);
    }
}

/// Σ_i g_i ∂per_i/∂x into `gx` and, with references, ∂/∂refs into `gr`.
pub(crate) fn given_backward<T: Real, L: RowLoss<T>>(
    q: &GivenPairs<T>, loss: &L, g: &[T], gx: &mut [T], gref: &mut [T],
) -> Result<()> {
    let gr = q.validate()?;
    check_upstream(g, q.n)?;
    let (r, m) = q.r();
    let d = q.d;
    check_len("grad_x", gx.len(), q.n, d)?;
    if q.refs.is_some() {
        check_len("grad_ref", gref.len(), m, d)?;
    }
    gx.iter_mut().for_each(|v| *v = T::zero());
    gref.iter_mut().for_each(|v| *v = T::zero());
    let has_pairs = |i: usize| gr.ps[i + 1] > gr.ps[i] || gr.ns[i + 1] > gr.ns[i];
    if use_tiles(&gr, q.n, m) {
        // Duplicated pairs add up in the coefficient tile.
        given_space(q).backward(
            false,
            |r0, r1, s, c| {
                let mut w = Scratch::default();
                for i in r0..r1 {
                    if g[i] == T::zero() || !has_pairs(i) {
                        continue;
                    }
                    let row = &s[(i - r0) * m..(i - r0 + 1) * m];
                    let crow = &mut c[(i - r0) * m..(i - r0 + 1) * m];
                    let st = given_row(loss, &gr, i, |j| row[j as usize], &mut w);
                    given_coefs(loss, &gr, i, g[i], &st, &w, |j, v| crow[j as usize] += v);
                }
            },
            gx,
            gref,
        );
        return Ok(());
    }
    // Coefficients of every given pair, in anchor order.
    let coefs: Vec<Vec<(u32, u32, T)>> = (0..q.n)
        .into_par_iter()
        .map_init(Scratch::default, |w, i| {
            let mut out = Vec::new();
            if g[i] == T::zero() || !has_pairs(i) {
                return out;
            }
            let xi = &q.x[i * d..(i + 1) * d];
            let st = given_row(loss, &gr, i, |j| dot(xi, &r[j as usize * d..(j as usize + 1) * d]), w);
            given_coefs(loss, &gr, i, g[i], &st, w, |j, v| out.push((i as u32, j, v)));
            out
        })
        .collect();
    let pairs: Vec<(u32, u32, T)> = coefs.concat();
    sparse_dot_backward(q.x, q.n, r, m, d, q.refs.is_none(), &pairs, gx, gref);
    Ok(())
}

/// Gradient of a loss through a sparse set of dot products: each `(i, j, c)`
/// adds c·r_j to ∂L/∂x_i and c·x_i to ∂L/∂r_j (into `gx` when `same`).
/// Contributions to one row are summed in the order of `pairs` (deterministic).
#[allow(clippy::too_many_arguments)]
pub(crate) fn sparse_dot_backward<T: Real>(
    x: &[T], n: usize, r: &[T], m: usize, d: usize, same: bool, pairs: &[(u32, u32, T)], gx: &mut [T], gr: &mut [T],
) {
    let (rs, ri) = group_pairs(pairs, |p| p.0 as usize, n);
    gx[..n * d].par_chunks_mut(d).enumerate().for_each(|(i, g)| {
        for &q in &ri[rs[i]..rs[i + 1]] {
            let (_, j, c) = pairs[q as usize];
            let rj = &r[j as usize * d..(j as usize + 1) * d];
            for (gv, &b) in g.iter_mut().zip(rj) {
                *gv += c * b;
            }
        }
    });
    let (cs, ci) = group_pairs(pairs, |p| p.1 as usize, m);
    let target: &mut [T] = if same { gx } else { gr };
    target[..m * d].par_chunks_mut(d).enumerate().for_each(|(j, g)| {
        let mut acc = vec![T::zero(); d];
        for &q in &ci[cs[j]..cs[j + 1]] {
            let (i, _, c) = pairs[q as usize];
            let xi = &x[i as usize * d..(i as usize + 1) * d];
            for (a, &v) in acc.iter_mut().zip(xi) {
                *a += c * v;
            }
        }
        for (gv, a) in g.iter_mut().zip(acc) {
            *gv += a;
        }
    });
}

/// Shared checks of the pair-similarity losses against a brute-force reference.
#[cfg(test)]
pub(crate) mod testkit {
    use super::*;
    use crate::losses::common::testutil::*;

    /// Explicit per-anchor partner lists (duplicates allowed).
    pub type Sets = Vec<Vec<usize>>;
    /// Brute-force per-anchor values: (x, r, m, positives, negatives, frozen S (n×m) for detached factors).
    pub type BruteFn = Box<dyn Fn(&[f64], &[f64], usize, &Sets, &Sets, &[f64]) -> Vec<f64>>;
    type Brute<'a> = &'a BruteFn;
    type Idx<'a> = (&'a [i64], &'a [i64], &'a [i64], &'a [i64]);
    type Fwd<'a> = &'a dyn Fn(&Batch<f64>) -> Result<(Vec<f64>, Vec<f64>)>;
    type Bwd<'a> = &'a dyn Fn(&Batch<f64>, &[f64], &mut [f64], &mut [f64]) -> Result<()>;
    type PFwd<'a> = &'a dyn Fn(&GivenPairs<f64>) -> Result<(Vec<f64>, Vec<f64>)>;
    type PBwd<'a> = &'a dyn Fn(&GivenPairs<f64>, &[f64], &mut [f64], &mut [f64]) -> Result<()>;

    pub fn unit_rows(rng: &mut Rng, n: usize, d: usize) -> Vec<f64> {
        let mut v = rng.normal_vec(n * d);
        for r in v.chunks_mut(d) {
            let s = r.iter().map(|a| a * a).sum::<f64>().sqrt();
            r.iter_mut().for_each(|a| *a /= s);
        }
        v
    }

    pub fn sims(x: &[f64], n: usize, r: &[f64], m: usize, d: usize) -> Vec<f64> {
        let mut s = vec![0.0; n * m];
        for i in 0..n {
            for j in 0..m {
                s[i * m + j] = (0..d).map(|k| x[i * d + k] * r[j * d + k]).sum();
            }
        }
        s
    }

    pub fn label_sets(l: &[i64], rl: &[i64], same: bool) -> (Sets, Sets) {
        let p = l.iter().enumerate().map(|(i, &y)| (0..rl.len()).filter(|&j| rl[j] == y && !(same && j == i)).collect()).collect();
        let q = l.iter().map(|&y| (0..rl.len()).filter(|&j| rl[j] != y).collect()).collect();
        (p, q)
    }

    fn flat(s: &Sets) -> (Vec<i64>, Vec<i64>) {
        let mut a = Vec::new();
        let mut o = Vec::new();
        for (i, v) in s.iter().enumerate() {
            for &j in v {
                a.push(i as i64);
                o.push(j as i64);
            }
        }
        (a, o)
    }

    fn shuffled((a, o): (Vec<i64>, Vec<i64>), rng: &mut Rng) -> (Vec<i64>, Vec<i64>) {
        let mut k: Vec<(u64, i64, i64)> = a.iter().zip(&o).map(|(&x, &y)| (rng.next_u64(), x, y)).collect();
        k.sort_unstable();
        (k.iter().map(|t| t.1).collect(), k.iter().map(|t| t.2).collect())
    }

    /// Σ_i g_i per_i, for finite differences with the detached factors frozen at `s0`.
    fn weighted(brute: Brute, x: &[f64], r: &[f64], m: usize, (p, q, s0): (&Sets, &Sets, &[f64]), g: &[f64]) -> f64 {
        brute(x, r, m, p, q, s0).iter().zip(g).map(|(a, b)| a * b).sum()
    }

    /// Dense and given-pairs variants against `brute` (values, counts, finite-difference
    /// gradients), dense vs given with the dense sets, given sets with duplicates, and index errors.
    pub fn check(fwd: Fwd, bwd: Bwd, pfwd: PFwd, pbwd: PBwd, brute: Brute, count: &dyn Fn(f64) -> f64) {
        let mut rng = Rng(21);
        // (n, m (0 = no refs), d, classes); 70 rows span two tiles; k = 1 has no negatives; k = 1000 singletons.
        for &(n, m, d, k) in &[(10usize, 0usize, 3usize, 3u64), (70, 0, 4, 5), (9, 75, 3, 4), (5, 0, 2, 1), (8, 0, 3, 1000), (6, 7, 3, 1000)] {
            let x = unit_rows(&mut rng, n, d);
            let l = rng.labels(n, k);
            let rx = unit_rows(&mut rng, m, d);
            let rl = rng.labels(m, k);
            let same = m == 0;
            let refs = if same { None } else { Some((&rx[..], m, &rl[..])) };
            let b = Batch { x: &x, n, d, labels: &l, refs };
            let (r, mm, rls) = b.r();
            let r = r.to_vec();
            let (ps, ns) = label_sets(&l, rls, same);
            let s0 = sims(&x, n, &r, mm, d);
            let want = brute(&x, &r, mm, &ps, &ns, &s0);
            let (per, cnt) = fwd(&b).unwrap();
            assert_close(&per, &want, 1e-11);
            let wc: Vec<f64> = want.iter().map(|&v| count(v)).collect();
            assert_eq!(cnt, wc);
            // Backward against central differences of Σ g_i per_i.
            let g = rng.normal_vec(n);
            let (mut gx, mut gr) = (vec![0.0; n * d], vec![0.0; m * d]);
            bwd(&b, &g, &mut gx, &mut gr).unwrap();
            let fx = if same {
                fd_grad(&x, &|xx| weighted(brute, xx, xx, mm, (&ps, &ns, &s0), &g))
            } else {
                fd_grad(&x, &|xx| weighted(brute, xx, &r, mm, (&ps, &ns, &s0), &g))
            };
            assert_close(&gx, &fx, 1e-5);
            if !same {
                assert_close(&gr, &fd_grad(&rx, &|rr| weighted(brute, &x, rr, mm, (&ps, &ns, &s0), &g)), 1e-5);
            }
            let (mut hx, mut hr) = (vec![0.0; n * d], vec![0.0; m * d]);
            // Both evaluations of given pairs: pair by pair and on tiles.
            for force in [false, true] {
                FORCE_TILES.with(|c| c.set(Some(force)));
                // Given pairs = the dense sets: the same values and gradients.
                let (a1, p) = flat(&ps);
                let (a2, nn) = flat(&ns);
                let gp = GivenPairs { x: &x, n, d, refs: refs.map(|(r, m, _)| (r, m)), a1: &a1, p: &p, a2: &a2, neg: &nn };
                let (pp, pc) = pfwd(&gp).unwrap();
                assert_close(&pp, &per, 1e-12);
                assert_eq!(pc, cnt);
                pbwd(&gp, &g, &mut hx, &mut hr).unwrap();
                assert_close(&hx, &gx, 1e-10);
                assert_close(&hr, &gr, 1e-10);
                // Random given sets with duplicates (and self pairs), against brute force.
                let mut rs: Vec<Sets> = Vec::new();
                for _ in 0..2 {
                    rs.push((0..n).map(|_| (0..(rng.next_u64() % 4) as usize).map(|_| (rng.next_u64() % mm as u64) as usize).collect()).collect());
                }
                let (rp, rn) = (rs[0].clone(), rs[1].clone());
                // Pairs in a random order (not grouped by anchor).
                let (a1, p) = shuffled(flat(&rp), &mut rng);
                let (a2, nn) = shuffled(flat(&rn), &mut rng);
                let gp = GivenPairs { x: &x, n, d, refs: refs.map(|(r, m, _)| (r, m)), a1: &a1, p: &p, a2: &a2, neg: &nn };
                let want = brute(&x, &r, mm, &rp, &rn, &s0);
                let (pp, pc) = pfwd(&gp).unwrap();
                assert_close(&pp, &want, 1e-11);
                assert_eq!(pc, want.iter().map(|&v| count(v)).collect::<Vec<_>>());
                pbwd(&gp, &g, &mut hx, &mut hr).unwrap();
                let fx = if same {
                    fd_grad(&x, &|xx| weighted(brute, xx, xx, mm, (&rp, &rn, &s0), &g))
                } else {
                    fd_grad(&x, &|xx| weighted(brute, xx, &r, mm, (&rp, &rn, &s0), &g))
                };
                assert_close(&hx, &fx, 1e-5);
                if !same {
                    assert_close(&hr, &fd_grad(&rx, &|rr| weighted(brute, &x, rr, mm, (&rp, &rn, &s0), &g)), 1e-5);
                }
            }
            FORCE_TILES.with(|c| c.set(None));
            // Bad indices and lengths are errors, not panics.
            let bad = [n as i64];
            let badm = [mm as i64];
            let neg1 = [-1i64];
            let zero = [0i64];
            let cases: [Idx; 5] = [
                (&bad, &zero, &[], &[]),
                (&zero, &badm, &[], &[]),
                (&[], &[], &neg1, &zero),
                (&[], &[], &zero, &neg1),
                (&zero, &[], &[], &[]),
            ];
            for (a1, p, a2, nn) in cases {
                let gp = GivenPairs { x: &x, n, d, refs: refs.map(|(r, m, _)| (r, m)), a1, p, a2, neg: nn };
                assert!(pfwd(&gp).is_err());
                assert!(pbwd(&gp, &g, &mut hx, &mut hr).is_err());
            }
        }
    }

    type Fwd32<'a> = &'a (dyn Fn(&Batch<f32>) -> Result<(Vec<f32>, Vec<f32>)> + Sync);
    type Bwd32<'a> = &'a (dyn Fn(&Batch<f32>, &[f32], &mut [f32], &mut [f32]) -> Result<()> + Sync);
    type PFwd32<'a> = &'a (dyn Fn(&GivenPairs<f32>) -> Result<(Vec<f32>, Vec<f32>)> + Sync);
    type PBwd32<'a> = &'a (dyn Fn(&GivenPairs<f32>, &[f32], &mut [f32], &mut [f32]) -> Result<()> + Sync);

    /// Forward and backward, dense and given pairs (both evaluations), are
    /// bit-identical for 1, 2 and 3 threads (several tiles, f32).
    pub fn check_threads(
        fwd: Fwd32, bwd: Bwd32, pfwd: PFwd32, pbwd: PBwd32,
    ) {
        let mut rng = Rng(5);
        let (n, m, d) = (300usize, 230usize, 8usize);
        let to32 = |v: Vec<f64>| v.into_iter().map(|a| a as f32).collect::<Vec<f32>>();
        let x = to32(unit_rows(&mut rng, n, d));
        let rx = to32(unit_rows(&mut rng, m, d));
        let l = rng.labels(n, 20);
        let rl = rng.labels(m, 20);
        let g = to32(rng.normal_vec(n));
        let idx = |len: usize, hi: usize, rng: &mut Rng| (0..len).map(|_| (rng.next_u64() % hi as u64) as i64).collect::<Vec<_>>();
        for refs in [None, Some((&rx[..], m, &rl[..]))] {
            let b = Batch { x: &x, n, d, labels: &l, refs };
            let mm = if refs.is_some() { m } else { 0 };
            let mr = if refs.is_some() { m } else { n };
            let (a1, p, a2, nn) = (idx(900, n, &mut rng), idx(900, mr, &mut rng), idx(2000, n, &mut rng), idx(2000, mr, &mut rng));
            let gp = GivenPairs { x: &x, n, d, refs: refs.map(|(r, m, _)| (r, m)), a1: &a1, p: &p, a2: &a2, neg: &nn };
            let run = |t: usize| {
                let pool = rayon::ThreadPoolBuilder::new().num_threads(t).build().unwrap();
                pool.install(|| {
                    let (per, cnt) = fwd(&b).unwrap();
                    let (mut gx, mut gr) = (vec![0.0f32; n * d], vec![0.0f32; mm * d]);
                    bwd(&b, &g, &mut gx, &mut gr).unwrap();
                    let mut bits: Vec<u32> = per.iter().chain(&cnt).chain(&gx).chain(&gr).map(|v| v.to_bits()).collect();
                    for force in [false, true] {
                        FORCE_TILES.with(|c| c.set(Some(force)));
                        let (per, cnt) = pfwd(&gp).unwrap();
                        pbwd(&gp, &g, &mut gx, &mut gr).unwrap();
                        bits.extend(per.iter().chain(&cnt).chain(&gx).chain(&gr).map(|v| v.to_bits()));
                        FORCE_TILES.with(|c| c.set(None));
                    }
                    bits
                })
            };
            let one = run(1);
            assert!(one.iter().all(|&v| f32::from_bits(v).is_finite()));
            assert_eq!(one, run(2));
            assert_eq!(one, run(3));
        }
    }
}
