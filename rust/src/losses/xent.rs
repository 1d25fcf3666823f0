//! Softmax cross-entropy over scaled dot products, the kernel shared by the
//! N-pair, NT-Xent and InfoNCE losses:
//!
//! s_ij = scale · q_i·k_j,   L = 1/n Σ_i [ logsumexp_{j valid for i} s_ij − s_{i,t_i} ].
//!
//! * N-pair (Sohn 2016): q = anchors, k = positives, t_i = i, scale 1, all columns.
//! * InfoNCE without a queue: q, k unit rows, t_i = i, scale 1/τ, all columns.
//! * InfoNCE with a queue: k = [positive keys; queue], row i sees column i and the queue.
//! * NT-Xent: q = k = the 2N unit views, t_i = partner of i, the diagonal excluded.
//!
//! [`xent_forward`] keeps the per-row log-sum-exp (O(n) state) and
//! [`xent_backward`] recomputes the similarity tiles; when the inputs need a
//! gradient, [`xent_forward_backward`] produces it in one call. With q ≠ k that
//! is one pass over chunks of rows (3 GEMMs of n·m·d: s, c·k, cᵀ·q); with k = q
//! and a symmetric mask (NT-Xent) it is the two-pass kernel of `xent_sym`,
//! which computes only the upper-triangle blocks (2 GEMM units instead of 3).

use super::common::{ordered_sum, Space};
use super::rowops;
use crate::simd::multiversion;
use super::xent_sym::{Sym, SYM_GROUP, SYM_TILE};
use crate::error::{check_finite, check_len, Error, Result};
use crate::linalg::{gemm, MatRef};
use crate::Real;
use rayon::prelude::*;

/// Which columns enter row i's softmax.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mask {
    /// Every column.
    All,
    /// Every column but j = i (q and k the same rows).
    NoDiag,
    /// Column i and the columns from the given index on (a shared queue).
    OwnAndTail(usize),
}

impl Mask {
    /// Sets the entries of row i outside the mask to −∞ (their exponential is 0).
    fn blank<T: Real>(self, i: usize, row: &mut [T]) {
        match self {
            Mask::All => {}
            Mask::NoDiag => row[i] = T::neg_infinity(),
            Mask::OwnAndTail(t) => {
                let keep = row[i];
                let end = t.min(row.len());
                row[..end].iter_mut().for_each(|v| *v = T::neg_infinity());
                row[i] = keep;
            }
        }
    }

    #[inline]
    fn valid(self, i: usize, j: usize) -> bool {
        match self {
            Mask::All => true,
            Mask::NoDiag => i != j,
            Mask::OwnAndTail(t) => j == i || j >= t,
        }
    }
}

/// The problem: `q` (n×d), `k` (m×d, `None` = q itself), targets and mask.
#[derive(Clone, Copy)]
pub struct Xent<'a, T> {
    pub q: &'a [T],
    pub n: usize,
    pub k: Option<(&'a [T], usize)>,
    pub d: usize,
    pub scale: f64,
    pub targets: &'a [i64],
    pub mask: Mask,
}

impl<'a, T: Real> Xent<'a, T> {
    fn validate(&self) -> Result<usize> {
        if self.n == 0 || self.d == 0 {
            return Err(Error::Shape(format!("inputs must be non-empty, got shape ({}, {})", self.n, self.d)));
        }
        check_len("query", self.q.len(), self.n, self.d)?;
        check_finite("query", self.q)?;
        let m = match self.k {
            Some((k, m)) => {
                check_len("keys", k.len(), m, self.d)?;
                check_finite("keys", k)?;
                m
            }
            None => self.n,
        };
        if !(self.scale.is_finite() && self.scale > 0.0) {
            return Err(Error::InvalidParameter(format!("scale (1/temperature) must be finite and > 0, got {}", self.scale)));
        }
        if self.targets.len() != self.n {
            return Err(Error::Shape(format!("targets has length {}, expected {}", self.targets.len(), self.n)));
        }
        for (i, &t) in self.targets.iter().enumerate() {
            if t < 0 || t as usize >= m || !self.mask.valid(i, t as usize) {
                return Err(Error::InvalidInput(format!("target {t} of row {i} is not a valid column")));
            }
        }
        Ok(m)
    }
    fn space(&self) -> Space<'a, T> {
        Space::dot(self.q, self.n, self.k, self.d, T::c(self.scale))
    }
}

/// Rows per GEMM chunk of the q ≠ k kernel, and chunks per parallel task (each
/// task accumulates its m×d share of ∂L/∂k in place; shares are summed in task
/// order). Fixed, so results do not depend on the thread count.
const CHUNK: usize = 256;
const CHUNKS_PER_TASK: usize = 1;

impl<'a, T: Real> Xent<'a, T> {
    /// The symmetric two-pass kernel, when k = q and the mask is symmetric.
    fn sym(&self) -> Option<Sym<'a, T>> {
        let nodiag = match self.mask {
            Mask::All => false,
            Mask::NoDiag => true,
            Mask::OwnAndTail(_) => return None,
        };
        if self.k.is_some() {
            return None;
        }
        Some(Sym::new(self.q, self.n, self.d, T::c(self.scale), self.targets, nodiag, SYM_TILE, SYM_GROUP))
    }
}

/// Loss value and the per-row log-sum-exp.
pub fn xent_forward<T: Real>(p: &Xent<T>) -> Result<(f64, Vec<T>)> {
    let m = p.validate()?;
    if let Some(sym) = p.sym() {
        let lse = sym.lse();
        return Ok((sym.loss(&lse), lse));
    }
    let (loss, lse, _) = forward_tiles(p, m, false);
    Ok((loss, lse))
}

/// Per-row values `per_i = lse_i − s_{i,t_i}` (clamped at 0, which they can
/// only miss by rounding) and the per-row log-sum-exp, for reductions other
/// than the mean (`per.sum()`, weighted sums); [`xent_backward_rows`] takes the
/// upstream gradient of `per`.
pub fn xent_forward_rows<T: Real>(p: &Xent<T>) -> Result<(Vec<T>, Vec<T>)> {
    let m = p.validate()?;
    if let Some(sym) = p.sym() {
        let lse = sym.lse();
        return Ok((sym.rows(&lse), lse));
    }
    let (_, lse, per) = forward_tiles(p, m, true);
    Ok((per, lse))
}

/// Tiles of rows: (summed loss / n, lse, per-row values if `keep`).
fn forward_tiles<T: Real>(p: &Xent<T>, m: usize, keep: bool) -> (f64, Vec<T>, Vec<T>) {
    let parts = p.space().map_tiles(|r0, r1, s| {
        let mut lse = Vec::with_capacity(r1 - r0);
        let mut per = Vec::with_capacity(if keep { r1 - r0 } else { 0 });
        let mut acc = 0.0f64;
        let mut buf = vec![T::zero(); m];
        for i in r0..r1 {
            let row = &s[(i - r0) * m..(i - r0 + 1) * m];
            buf.copy_from_slice(row);
            p.mask.blank(i, &mut buf);
            let (mx, sum) = max_and_exp_sum(&mut buf);
            let l = mx + sum.ln();
            let v = l - row[p.targets[i] as usize];
            acc += v.to_f64_();
            if keep {
                per.push(v.max(T::zero()));
            }
            lse.push(l);
        }
        (acc, lse, per)
    });
    let loss = ordered_sum(parts.iter().map(|v| v.0)) / p.n as f64;
    let mut lse = Vec::with_capacity(p.n);
    let mut per = Vec::with_capacity(if keep { p.n } else { 0 });
    for (_, l, v) in parts {
        lse.extend(l);
        per.extend(v);
    }
    (loss, lse, per)
}

/// ∂L/∂q into `gq` (n×d) and, with separate keys, ∂L/∂k into `gk` (m×d).
pub fn xent_backward<T: Real>(p: &Xent<T>, lse: &[T], gq: &mut [T], gk: &mut [T]) -> Result<()> {
    let m = p.validate()?;
    if lse.len() != p.n {
        return Err(Error::Shape("log-sum-exp state does not match the batch".into()));
    }
    check_grads(p, m, gq, gk)?;
    if let Some(sym) = p.sym() {
        sym.grad(lse, None, gq);
        return Ok(());
    }
    rows_pass(p, m, Some(lse), None, gq, gk);
    Ok(())
}

/// The gradient of Σ_i g_i·per_i (per as in [`xent_forward_rows`]) for an
/// arbitrary upstream `g` (n): ∂/∂s_ij = g_i (softmax_ij − [j = t_i]). Outputs
/// as in [`xent_backward`] (which is the case g_i = 1/n).
pub fn xent_backward_rows<T: Real>(p: &Xent<T>, lse: &[T], g: &[T], gq: &mut [T], gk: &mut [T]) -> Result<()> {
    let m = p.validate()?;
    if lse.len() != p.n {
        return Err(Error::Shape("log-sum-exp state does not match the batch".into()));
    }
    if g.len() != p.n {
        return Err(Error::Shape(format!("upstream gradient has length {}, expected {}", g.len(), p.n)));
    }
    check_finite("upstream gradient", g)?;
    check_grads(p, m, gq, gk)?;
    if let Some(sym) = p.sym() {
        sym.grad(lse, Some(g), gq);
        return Ok(());
    }
    rows_pass(p, m, Some(lse), Some(g), gq, gk);
    Ok(())
}

/// Forward and gradient in one call, for a unit upstream gradient (O((n+m)·d)
/// memory, no tile computed twice beyond what the kernel needs). With k = q
/// (NT-Xent) both roles are summed into `gq` and `gk` is unused. Returns the loss.
pub fn xent_forward_backward<T: Real>(p: &Xent<T>, gq: &mut [T], gk: &mut [T]) -> Result<f64> {
    let m = p.validate()?;
    check_grads(p, m, gq, gk)?;
    if let Some(sym) = p.sym() {
        let lse = sym.lse();
        sym.grad(&lse, None, gq);
        return Ok(sym.loss(&lse));
    }
    Ok(rows_pass(p, m, None, None, gq, gk))
}

fn check_grads<T: Real>(p: &Xent<T>, m: usize, gq: &[T], gk: &[T]) -> Result<()> {
    check_len("grad_q", gq.len(), p.n, p.d)?;
    if p.k.is_some() {
        check_len("grad_k", gk.len(), m, p.d)?;
    }
    Ok(())
}

/// Chunks of rows against all keys: s = scale·q_c·kᵀ, coefficients
/// c = ∂L/∂s in place (from the chunk's own softmax, or from `lse`), then
/// ∂L/∂q_c = scale·c·k and ∂L/∂k += scale·cᵀ·q_c. Overwrites `gq` (and `gk`
/// with separate keys; with k = q the key role is added to `gq`). Row i is
/// weighted by `g_i` (None: 1/n). Returns the loss when `lse` is None (0 otherwise).
fn rows_pass<T: Real>(p: &Xent<T>, m: usize, lse: Option<&[T]>, g: Option<&[T]>, gq: &mut [T], gk: &mut [T]) -> f64 {
    let (n, d) = (p.n, p.d);
    let same = p.k.is_none();
    let k = p.k.map_or(p.q, |v| v.0);
    let scale = T::c(p.scale);
    let inv_n = T::c(1.0 / n as f64);
    let (qm, km) = (MatRef::new(p.q, n, d), MatRef::new(k, m, d));
    let per_task = CHUNK * CHUNKS_PER_TASK;
    let parts: Vec<(f64, Vec<T>)> = gq[..n * d]
        .par_chunks_mut(per_task * d)
        .enumerate()
        .map(|(task, gqt)| {
            let base = task * per_task;
            let rows_here = gqt.len() / d;
            let mut s = vec![T::zero(); CHUNK.min(rows_here) * m];
            let mut part = vec![T::zero(); m * d];
            let mut loss = 0.0f64;
            for (c, r0) in (0..rows_here).step_by(CHUNK).enumerate() {
                let r1 = (r0 + CHUNK).min(rows_here);
                let (a0, a1) = (base + r0, base + r1);
                let sb = &mut s[..(r1 - r0) * m];
                gemm(scale, qm.rows_range(a0, a1), km.t(), T::zero(), sb);
                loss += coef_rows(p, a0, m, sb, lse, g, inv_n);
                let cm = MatRef::new(sb, r1 - r0, m);
                gemm(scale, cm, km, T::zero(), &mut gqt[r0 * d..r1 * d]);
                let beta = if c == 0 { T::zero() } else { T::one() };
                gemm(scale, cm.t(), qm.rows_range(a0, a1), beta, &mut part);
            }
            (loss, part)
        })
        .collect();
    // ∂L/∂k: the tasks' shares in task order, parallel over fixed row blocks.
    let target: &mut [T] = if same { gq } else { gk };
    target[..m * d].par_chunks_mut(CHUNK * d).enumerate().for_each(|(b, blk)| {
        let off = b * CHUNK * d;
        let len = blk.len();
        if !same {
            blk.copy_from_slice(&parts[0].1[off..off + len]);
        }
        for (_, pt) in &parts[usize::from(!same)..] {
            rowops::add(blk, &pt[off..off + len]);
        }
    });
    ordered_sum(parts.iter().map(|v| v.0)) / n as f64
}

multiversion! {
    /// Rows a0.. of a chunk of similarities `s` (each m wide) into coefficients
    /// ∂L/∂s_ij = w_i (softmax_ij − [j = t_i]), w_i = g_i (`g` None: 1/n); returns
    /// the rows' summed loss when their log-sum-exp is computed here (`lse` None).
    fn coef_rows<T>(p: &Xent<T>, a0: usize, m: usize, s: &mut [T], lse: Option<&[T]>, g: Option<&[T]>, inv_n: T) -> f64 {
        let mut loss = 0.0f64;
        for (ii, row) in s.chunks_exact_mut(m).enumerate() {
            let i = a0 + ii;
            let w = g.map_or(inv_n, |g| g[i]);
            let ti = p.targets[i] as usize;
            let st = row[ti];
            p.mask.blank(i, row);
            match lse {
                None => {
                    let mx = rowops::max(row);
                    let sum = rowops::exp_shift(row, mx);
                    loss += (mx + sum.ln() - st).to_f64_();
                    rowops::scale(row, w / sum);
                }
                Some(l) => {
                    rowops::exp_shift(row, l[i]);
                    rowops::scale(row, w);
                }
            }
            row[ti] -= w;
        }
        loss
    }
}

multiversion! {
    /// (max, Σ e^{v − max}) of a row, leaving e^{v − max} in it.
    fn max_and_exp_sum<T>(v: &mut [T]) -> (T, T) {
        let mx = rowops::max(v);
        (mx, rowops::exp_shift(v, mx))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::losses::common::testutil::*;

    fn brute(q: &[f64], n: usize, k: &[f64], m: usize, d: usize, sc: f64, t: &[i64], mask: Mask) -> f64 {
        let mut tot = 0.0;
        for i in 0..n {
            let s: Vec<f64> = (0..m).map(|j| sc * (0..d).map(|a| q[i * d + a] * k[j * d + a]).sum::<f64>()).collect();
            let z: f64 = (0..m).filter(|&j| mask.valid(i, j)).map(|j| s[j].exp()).sum();
            tot += z.ln() - s[t[i] as usize];
        }
        tot / n as f64
    }

    #[test]
    fn matches_brute_force_and_finite_differences() {
        let mut rng = Rng(7);
        // (n, m (0 = same), d, scale, mask)
        let cases = [
            (9usize, 9usize, 3usize, 1.0, Mask::All),
            (70, 70, 4, 2.0, Mask::All),
            (6, 20, 3, 3.0, Mask::OwnAndTail(6)),
            (70, 0, 3, 2.0, Mask::NoDiag),
            (8, 0, 3, 5.0, Mask::NoDiag),
        ];
        for &(n, m, d, sc, mask) in &cases {
            let q = rng.normal_vec(n * d);
            let kk = rng.normal_vec(m * d);
            let same = m == 0;
            let targets: Vec<i64> = (0..n as i64).map(|i| if same { (i + n as i64 / 2) % n as i64 } else { i }).collect();
            let p = Xent { q: &q, n, k: if same { None } else { Some((&kk[..], m)) }, d, scale: sc, targets: &targets, mask };
            let (v, lse) = xent_forward(&p).unwrap();
            let (kr, mm) = if same { (&q[..], n) } else { (&kk[..], m) };
            {
                let (mut fq, mut fk) = (vec![0.0; n * d], vec![0.0; m * d]);
                let fv = xent_forward_backward(&p, &mut fq, &mut fk).unwrap();
                assert!((fv - v).abs() < 1e-12 * (1.0 + v.abs()));
                let (mut bq, mut bk) = (vec![0.0; n * d], vec![0.0; m * d]);
                xent_backward(&p, &lse, &mut bq, &mut bk).unwrap();
                assert_close(&fq, &bq, 1e-11);
                assert_close(&fk, &bk, 1e-11);
            }
            let want = brute(&q, n, kr, mm, d, sc, &targets, mask);
            assert!((v - want).abs() < 1e-9 * (1.0 + want.abs()));
            let mut gq = vec![0.0; n * d];
            let mut gk = vec![0.0; m * d];
            xent_backward(&p, &lse, &mut gq, &mut gk).unwrap();
            if same {
                assert_close(&gq, &fd_grad(&q, &|qq| brute(qq, n, qq, n, d, sc, &targets, mask)), 1e-5);
            } else {
                assert_close(&gq, &fd_grad(&q, &|qq| brute(qq, n, &kk, m, d, sc, &targets, mask)), 1e-5);
                assert_close(&gk, &fd_grad(&kk, &|k2| brute(&q, n, k2, m, d, sc, &targets, mask)), 1e-5);
            }
        }
    }

    #[test]
    fn low_temperature_is_finite() {
        let q: Vec<f32> = vec![1.0, 0.0, 0.0, 1.0, 0.6, 0.8, -1.0, 0.0];
        let t = vec![1i64, 0, 3, 2];
        let p = Xent { q: &q, n: 4, k: None, d: 2, scale: 100.0, targets: &t, mask: Mask::NoDiag };
        let (v, lse) = xent_forward(&p).unwrap();
        assert!(v.is_finite());
        let mut g = vec![0.0f32; 8];
        xent_backward(&p, &lse, &mut g, &mut []).unwrap();
        assert!(g.iter().all(|x| x.is_finite()));
    }
}

#[cfg(test)]
mod thread_tests {
    use super::*;
    use crate::losses::common::testutil::*;

    #[test]
    fn fused_results_do_not_depend_on_the_thread_count() {
        // n spans several tasks with a partial last chunk; queue mask and k = q too.
        let (n, m, d) = (1300usize, 900usize, 8usize);
        let mut rng = Rng(9);
        let q: Vec<f32> = rng.normal_vec(n * d).iter().map(|&v| v as f32).collect();
        let k: Vec<f32> = rng.normal_vec(m * d).iter().map(|&v| v as f32).collect();
        let t: Vec<i64> = (0..n as i64).map(|i| i % m as i64).collect();
        let ts: Vec<i64> = (0..n as i64).map(|i| (i + 1) % n as i64).collect();
        let tq: Vec<i64> = (0..n as i64).map(|i| if i < n as i64 / 2 { i } else { n as i64 - 1 }).collect();
        let probs = [
            Xent { q: &q, n, k: Some((&k[..], m)), d, scale: 2.0, targets: &t, mask: Mask::All },
            Xent { q: &q, n, k: None, d, scale: 2.0, targets: &ts, mask: Mask::NoDiag },
            Xent { q: &q, n, k: None, d, scale: 2.0, targets: &tq, mask: Mask::OwnAndTail(n / 2) },
        ];
        for p in &probs {
            let run = |threads: usize| {
                let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
                pool.install(|| {
                    let mm = if p.k.is_some() { m } else { 0 };
                    let (mut gq, mut gk) = (vec![0.0f32; n * d], vec![0.0f32; mm * d]);
                    let loss = xent_forward_backward(p, &mut gq, &mut gk).unwrap();
                    let (l2, lse) = xent_forward(p).unwrap();
                    let (mut bq, mut bk) = (vec![0.0f32; n * d], vec![0.0f32; mm * d]);
                    xent_backward(p, &lse, &mut bq, &mut bk).unwrap();
                    let bits = gq.iter().chain(&gk).chain(&lse).chain(&bq).chain(&bk).map(|v| v.to_bits()).collect::<Vec<_>>();
                    (loss.to_bits(), l2.to_bits(), bits)
                })
            };
            let one = run(1);
            assert_eq!(one, run(2));
            assert_eq!(one, run(3));
        }
    }

    #[test]
    fn chunked_kernel_matches_brute_force_across_chunks() {
        // n spans several chunks with a partial last one; OwnAndTail with k = q
        // takes the chunked kernel with both roles summed into gq.
        let (n, m, d) = (530usize, 40usize, 3usize);
        let mut rng = Rng(4);
        let q = rng.normal_vec(n * d);
        let k = rng.normal_vec(m * d);
        let t: Vec<i64> = (0..n as i64).map(|i| i % m as i64).collect();
        let p = Xent { q: &q, n, k: Some((&k[..], m)), d, scale: 1.5, targets: &t, mask: Mask::All };
        let (mut gq, mut gk) = (vec![0.0; n * d], vec![0.0; m * d]);
        let loss = xent_forward_backward(&p, &mut gq, &mut gk).unwrap();
        // Dense reference gradient.
        let (mut wq, mut wk) = (vec![0.0; n * d], vec![0.0; m * d]);
        let mut want = 0.0;
        for i in 0..n {
            let s: Vec<f64> = (0..m).map(|j| 1.5 * (0..d).map(|a| q[i * d + a] * k[j * d + a]).sum::<f64>()).collect();
            let mx = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let lse = mx + s.iter().map(|v| (v - mx).exp()).sum::<f64>().ln();
            want += lse - s[t[i] as usize];
            for j in 0..m {
                let c = 1.5 * ((s[j] - lse).exp() - if j == t[i] as usize { 1.0 } else { 0.0 }) / n as f64;
                for a in 0..d {
                    wq[i * d + a] += c * k[j * d + a];
                    wk[j * d + a] += c * q[i * d + a];
                }
            }
        }
        assert!((loss - want / n as f64).abs() < 1e-10);
        assert_close(&gq, &wq, 1e-10);
        assert_close(&gk, &wk, 1e-10);
        // k = q with the queue mask: the chunked kernel, both roles into gq.
        let zz = rng.normal_vec(n * d);
        let ts: Vec<i64> = (0..n as i64).map(|i| if i < 300 { i } else { 400 }).collect();
        let ps = Xent { q: &zz, n, k: None, d, scale: 1.0, targets: &ts, mask: Mask::OwnAndTail(300) };
        let mut g = vec![0.0; n * d];
        let v = xent_forward_backward(&ps, &mut g, &mut []).unwrap();
        let f = |z: &[f64]| {
            let pp = Xent { q: z, n, k: None, d, scale: 1.0, targets: &ts, mask: Mask::OwnAndTail(300) };
            xent_forward(&pp).unwrap().0
        };
        assert!((v - f(&zz)).abs() < 1e-12);
        assert_close(&g, &fd_grad(&zz, &f), 1e-6);
    }
}

#[cfg(test)]
mod rows_tests {
    use super::*;
    use crate::losses::common::testutil::*;

    /// Per-row values and the gradient of Σ_i g_i per_i from the dense matrix, in f64
    /// (k = None: q itself, both roles summed into gq).
    #[allow(clippy::type_complexity)]
    fn brute_rows(
        q: &[f64], n: usize, k: Option<&[f64]>, m: usize, d: usize, sc: f64, t: &[i64], mask: Mask, g: &[f64],
    ) -> (Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>) {
        let kr = k.unwrap_or(q);
        let (mut per, mut lses) = (vec![0.0; n], vec![0.0; n]);
        let (mut gq, mut gk) = (vec![0.0; n * d], vec![0.0; m * d]);
        for i in 0..n {
            let s: Vec<f64> = (0..m).map(|j| sc * (0..d).map(|a| q[i * d + a] * kr[j * d + a]).sum::<f64>()).collect();
            let mx = (0..m).filter(|&j| mask.valid(i, j)).map(|j| s[j]).fold(f64::NEG_INFINITY, f64::max);
            let lse = mx + (0..m).filter(|&j| mask.valid(i, j)).map(|j| (s[j] - mx).exp()).sum::<f64>().ln();
            let ti = t[i] as usize;
            per[i] = lse - s[ti];
            lses[i] = lse;
            for j in (0..m).filter(|&j| mask.valid(i, j)) {
                let c = sc * g[i] * ((s[j] - lse).exp() - if j == ti { 1.0 } else { 0.0 });
                for a in 0..d {
                    gq[i * d + a] += c * kr[j * d + a];
                    if k.is_some() {
                        gk[j * d + a] += c * q[i * d + a];
                    } else {
                        gq[j * d + a] += c * q[i * d + a];
                    }
                }
            }
        }
        (per, lses, gq, gk)
    }

    fn weighted(q: &[f64], n: usize, k: Option<(&[f64], usize)>, d: usize, sc: f64, t: &[i64], mask: Mask, g: &[f64]) -> f64 {
        let p = Xent { q, n, k, d, scale: sc, targets: t, mask };
        let (per, _) = xent_forward_rows(&p).unwrap();
        per.iter().zip(g).map(|(a, b)| a * b).sum()
    }

    fn targets_for(n: usize, m: usize, same: bool, mask: Mask) -> Vec<i64> {
        (0..n)
            .map(|i| match mask {
                Mask::OwnAndTail(_) => i as i64,
                _ if same => ((i + n / 2) % n) as i64,
                Mask::NoDiag => ((i + 1) % m) as i64,
                Mask::All => (i % m) as i64,
            })
            .collect()
    }

    #[test]
    fn rows_and_weighted_backward_match_brute_force_and_finite_differences() {
        let mut rng = Rng(21);
        // (n, m (0 = k is q), d, scale, mask, finite differences)
        let cases = [
            (9usize, 9usize, 3usize, 1.0, Mask::All, true),
            (70, 70, 4, 2.0, Mask::All, true),
            (6, 20, 3, 3.0, Mask::OwnAndTail(6), true),
            (7, 12, 3, 2.0, Mask::NoDiag, true),
            (9, 0, 3, 1.5, Mask::All, true),
            (70, 0, 3, 2.0, Mask::NoDiag, true),
            (8, 0, 3, 5.0, Mask::NoDiag, true),
            (10, 0, 3, 2.0, Mask::OwnAndTail(4), true),
            (530, 40, 3, 1.5, Mask::All, false),
            (300, 0, 4, 10.0, Mask::NoDiag, false),
            (300, 0, 4, 3.0, Mask::All, false),
            (290, 0, 3, 2.0, Mask::OwnAndTail(100), false),
        ];
        for &(n, m, d, sc, mask, fd) in &cases {
            let same = m == 0;
            let mm = if same { n } else { m };
            let q = rng.normal_vec(n * d);
            let kk = rng.normal_vec(m * d);
            let t = targets_for(n, mm, same, mask);
            let g = rng.normal_vec(n);
            let k = if same { None } else { Some((&kk[..], m)) };
            let p = Xent { q: &q, n, k, d, scale: sc, targets: &t, mask };
            let (per, lse) = xent_forward_rows(&p).unwrap();
            let (loss, lse0) = xent_forward(&p).unwrap();
            assert_eq!(lse, lse0, "rows and mean forward share the lse");
            assert!((per.iter().sum::<f64>() / n as f64 - loss).abs() < 1e-12 * (1.0 + loss.abs()));
            assert!(per.iter().all(|&v| v >= 0.0));
            let (wper, wlse, wq, wk) = brute_rows(&q, n, if same { None } else { Some(&kk) }, mm, d, sc, &t, mask, &g);
            assert_close(&per, &wper, 1e-10);
            assert_close(&lse, &wlse, 1e-10);
            let (mut gq, mut gk) = (vec![f64::NAN; n * d], vec![f64::NAN; m * d]);
            xent_backward_rows(&p, &lse, &g, &mut gq, &mut gk).unwrap();
            assert_close(&gq, &wq, 1e-10);
            if !same {
                assert_close(&gk, &wk, 1e-10);
            }
            // g = 1/n is the mean's gradient.
            let u = vec![1.0 / n as f64; n];
            let (mut uq, mut uk) = (vec![0.0; n * d], vec![0.0; m * d]);
            xent_backward_rows(&p, &lse, &u, &mut uq, &mut uk).unwrap();
            let (mut bq, mut bk) = (vec![0.0; n * d], vec![0.0; m * d]);
            xent_backward(&p, &lse, &mut bq, &mut bk).unwrap();
            assert_close(&uq, &bq, 1e-12);
            assert_close(&uk, &bk, 1e-12);
            if fd {
                if same {
                    assert_close(&gq, &fd_grad(&q, &|z| weighted(z, n, None, d, sc, &t, mask, &g)), 1e-5);
                } else {
                    assert_close(&gq, &fd_grad(&q, &|z| weighted(z, n, k, d, sc, &t, mask, &g)), 1e-5);
                    assert_close(&gk, &fd_grad(&kk, &|k2| weighted(&q, n, Some((k2, m)), d, sc, &t, mask, &g)), 1e-5);
                }
            }
        }
    }

    #[test]
    fn weighted_backward_handles_zero_and_one_hot_weights() {
        // g = e_r: the gradient of row r's loss alone; g = 0: zero.
        let mut rng = Rng(5);
        let (n, d) = (12usize, 3usize);
        let z = rng.normal_vec(n * d);
        let t: Vec<i64> = (0..n as i64).map(|i| (i + 6) % 12).collect();
        let p = Xent { q: &z, n, k: None, d, scale: 2.0, targets: &t, mask: Mask::NoDiag };
        let (_, lse) = xent_forward_rows(&p).unwrap();
        let mut gz = vec![1.0; n * d];
        xent_backward_rows(&p, &lse, &vec![0.0; n], &mut gz, &mut []).unwrap();
        assert!(gz.iter().all(|&v| v == 0.0));
        let mut e = vec![0.0; n];
        e[3] = 1.0;
        xent_backward_rows(&p, &lse, &e, &mut gz, &mut []).unwrap();
        let (_, _, want, _) = brute_rows(&z, n, None, n, d, 2.0, &t, Mask::NoDiag, &e);
        assert_close(&gz, &want, 1e-12);
    }

    #[test]
    fn f32_rows_and_backward_agree_with_f64() {
        let mut rng = Rng(8);
        let cases = [(40usize, 30usize, Mask::All), (40, 0, Mask::NoDiag), (300, 0, Mask::All), (20, 50, Mask::OwnAndTail(20))];
        for &(n, m, mask) in &cases {
            let d = 5;
            let same = m == 0;
            let mm = if same { n } else { m };
            let q = rng.normal_vec(n * d);
            let kk = rng.normal_vec(m * d);
            let t = targets_for(n, mm, same, mask);
            let g = rng.normal_vec(n);
            let (wper, _, wq, wk) = brute_rows(&q, n, if same { None } else { Some(&kk) }, mm, d, 2.0, &t, mask, &g);
            let q32: Vec<f32> = q.iter().map(|&v| v as f32).collect();
            let k32: Vec<f32> = kk.iter().map(|&v| v as f32).collect();
            let g32: Vec<f32> = g.iter().map(|&v| v as f32).collect();
            let p = Xent { q: &q32, n, k: if same { None } else { Some((&k32[..], m)) }, d, scale: 2.0, targets: &t, mask };
            let (per, lse) = xent_forward_rows(&p).unwrap();
            for (a, b) in per.iter().zip(&wper) {
                assert!((*a as f64 - b).abs() <= 1e-4 * (1.0 + b.abs()), "{a} vs {b}");
            }
            let (mut gq, mut gk) = (vec![0.0f32; n * d], vec![0.0f32; m * d]);
            xent_backward_rows(&p, &lse, &g32, &mut gq, &mut gk).unwrap();
            for (got, want) in [(&gq, &wq), (&gk, &wk)] {
                let gmax = want.iter().fold(0.0f64, |a, b| a.max(b.abs()));
                for (a, b) in got.iter().zip(want.iter()) {
                    assert!(a.is_finite() && (*a as f64 - b).abs() <= 1e-4 * gmax.max(1e-3), "{a} vs {b}");
                }
            }
        }
    }

    #[test]
    fn lone_target_rows_are_not_negative() {
        // n = 1 with all columns: per = lse − s_00 = 0 exactly (up to rounding, clamped).
        let q = [0.3f32, -0.7, 1.1];
        let p = Xent { q: &q, n: 1, k: None, d: 3, scale: 7.0, targets: &[0], mask: Mask::All };
        let (per, _) = xent_forward_rows(&p).unwrap();
        assert!(per[0] >= 0.0 && per[0] < 1e-5);
        let k = [0.3f32, -0.7, 1.1];
        let p = Xent { q: &q, n: 1, k: Some((&k[..], 1)), d: 3, scale: 7.0, targets: &[0], mask: Mask::All };
        let (per, _) = xent_forward_rows(&p).unwrap();
        assert!(per[0] >= 0.0 && per[0] < 1e-5);
    }

    #[test]
    fn bad_upstream_gradients_are_errors() {
        let q = [1.0, 0.0, 0.0, 1.0];
        let p = Xent { q: &q, n: 2, k: None, d: 2, scale: 1.0, targets: &[1, 0], mask: Mask::NoDiag };
        let (_, lse) = xent_forward_rows(&p).unwrap();
        let mut gz = vec![0.0; 4];
        assert!(xent_backward_rows(&p, &lse, &[1.0], &mut gz, &mut []).is_err());
        assert!(xent_backward_rows(&p, &lse, &[1.0, f64::NAN], &mut gz, &mut []).is_err());
        assert!(xent_backward_rows(&p, &lse[..1], &[1.0, 1.0], &mut gz, &mut []).is_err());
    }

    #[test]
    fn rows_results_do_not_depend_on_the_thread_count() {
        let (n, m, d) = (1300usize, 900usize, 8usize);
        let mut rng = Rng(19);
        let q: Vec<f32> = rng.normal_vec(n * d).iter().map(|&v| v as f32).collect();
        let k: Vec<f32> = rng.normal_vec(m * d).iter().map(|&v| v as f32).collect();
        let g: Vec<f32> = rng.normal_vec(n).iter().map(|&v| v as f32).collect();
        let t: Vec<i64> = (0..n as i64).map(|i| i % m as i64).collect();
        let ts: Vec<i64> = (0..n as i64).map(|i| (i + 1) % n as i64).collect();
        let tq: Vec<i64> = (0..n as i64).map(|i| if i < n as i64 / 2 { i } else { n as i64 - 1 }).collect();
        let probs = [
            Xent { q: &q, n, k: Some((&k[..], m)), d, scale: 2.0, targets: &t, mask: Mask::All },
            Xent { q: &q, n, k: None, d, scale: 2.0, targets: &ts, mask: Mask::NoDiag },
            Xent { q: &q, n, k: None, d, scale: 30.0, targets: &ts, mask: Mask::NoDiag },
            Xent { q: &q, n, k: None, d, scale: 2.0, targets: &tq, mask: Mask::OwnAndTail(n / 2) },
        ];
        for p in &probs {
            let run = |threads: usize| {
                let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
                pool.install(|| {
                    let mm = if p.k.is_some() { m } else { 0 };
                    let (per, lse) = xent_forward_rows(p).unwrap();
                    let (mut gq, mut gk) = (vec![0.0f32; n * d], vec![0.0f32; mm * d]);
                    xent_backward_rows(p, &lse, &g, &mut gq, &mut gk).unwrap();
                    per.iter().chain(&lse).chain(&gq).chain(&gk).map(|v| v.to_bits()).collect::<Vec<_>>()
                })
            };
            let one = run(1);
            assert_eq!(one, run(2));
            assert_eq!(one, run(3));
        }
    }
}
