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
//! gradient, [`xent_forward_backward`] produces it from the forward's own tiles
//! (O(n·d) state, one pass over the tiles instead of two).

use super::common::{exp_slice, ordered_sum, Space};
use crate::error::{check_finite, check_len, Error, Result};
use crate::Real;

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

/// Loss value and the per-row log-sum-exp.
pub fn xent_forward<T: Real>(p: &Xent<T>) -> Result<(f64, Vec<T>)> {
    let m = p.validate()?;
    let parts = p.space().map_tiles(|r0, r1, s| {
        let mut lse = Vec::with_capacity(r1 - r0);
        let mut acc = 0.0f64;
        let mut buf = vec![T::zero(); m];
        for i in r0..r1 {
            let row = &s[(i - r0) * m..(i - r0 + 1) * m];
            buf.copy_from_slice(row);
            p.mask.blank(i, &mut buf);
            let mx = buf.iter().fold(T::neg_infinity(), |a, &b| a.max(b));
            buf.iter_mut().for_each(|v| *v -= mx);
            exp_slice(&mut buf);
            let sum: T = buf.iter().copied().sum();
            let l = mx + sum.ln();
            acc += (l - row[p.targets[i] as usize]).to_f64_();
            lse.push(l);
        }
        (acc, lse)
    });
    let loss = ordered_sum(parts.iter().map(|v| v.0)) / p.n as f64;
    let lse = parts.into_iter().flat_map(|v| v.1).collect();
    Ok((loss, lse))
}

/// ∂L/∂q into `gq` (n×d) and, with separate keys, ∂L/∂k into `gk` (m×d).
pub fn xent_backward<T: Real>(p: &Xent<T>, lse: &[T], gq: &mut [T], gk: &mut [T]) -> Result<()> {
    let m = p.validate()?;
    if lse.len() != p.n {
        return Err(Error::Shape("log-sum-exp state does not match the batch".into()));
    }
    gq.iter_mut().for_each(|v| *v = T::zero());
    gk.iter_mut().for_each(|v| *v = T::zero());
    let inv_n = T::c(1.0 / p.n as f64);
    let same = p.k.is_none();
    let t = p.targets;
    p.space().backward(
        same,
        |r0, r1, s, c| {
            let mut other = vec![T::zero(); if same { m } else { 0 }];
            for i in r0..r1 {
                let srow = &s[(i - r0) * m..(i - r0 + 1) * m];
                let crow = &mut c[(i - r0) * m..(i - r0 + 1) * m];
                for (cv, &sv) in crow.iter_mut().zip(srow) {
                    *cv = sv - lse[i];
                }
                p.mask.blank(i, crow);
                exp_slice(crow);
                if same {
                    // Row j's softmax also holds s_ji = s_ij: the unordered total.
                    for ((o, &sv), &lj) in other.iter_mut().zip(srow).zip(lse) {
                        *o = sv - lj;
                    }
                    p.mask.blank(i, &mut other);
                    exp_slice(&mut other);
                    for (cv, &o) in crow.iter_mut().zip(&other) {
                        *cv += o;
                    }
                    for (j, &tj) in t.iter().enumerate() {
                        if tj as usize == i {
                            crow[j] -= T::one();
                        }
                    }
                }
                crow[t[i] as usize] -= T::one();
                crow.iter_mut().for_each(|v| *v *= inv_n);
            }
        },
        gq,
        gk,
    );
    Ok(())
}

/// Forward and gradient in one pass: each tile's softmax needs only its own
/// rows' log-sum-exp, so ∂L/∂q and ∂L/∂k (for a unit upstream gradient,
/// O((n+m)·d) memory) come out of the forward's tiles and backward has no tile
/// to recompute. With k = q (NT-Xent) both roles are summed into `gq` and `gk`
/// is unused. Returns the loss.
pub fn xent_forward_backward<T: Real>(p: &Xent<T>, gq: &mut [T], gk: &mut [T]) -> Result<f64> {
    let m = p.validate()?;
    check_len("grad_q", gq.len(), p.n, p.d)?;
    if p.k.is_some() {
        check_len("grad_k", gk.len(), m, p.d)?;
    }
    gq.iter_mut().for_each(|v| *v = T::zero());
    gk.iter_mut().for_each(|v| *v = T::zero());
    let space = p.space();
    let slots: Vec<std::sync::Mutex<f64>> = (0..space.n_tiles()).map(|_| std::sync::Mutex::new(0.0)).collect();
    let inv_n = T::c(1.0 / p.n as f64);
    space.backward(
        false,
        |r0, r1, s, c| {
            let mut acc = 0.0f64;
            for i in r0..r1 {
                let srow = &s[(i - r0) * m..(i - r0 + 1) * m];
                let crow = &mut c[(i - r0) * m..(i - r0 + 1) * m];
                crow.copy_from_slice(srow);
                p.mask.blank(i, crow);
                let mx = crow.iter().fold(T::neg_infinity(), |a, &b| a.max(b));
                crow.iter_mut().for_each(|v| *v -= mx);
                exp_slice(crow);
                let sum: T = crow.iter().copied().sum();
                let ti = p.targets[i] as usize;
                acc += (mx + sum.ln() - srow[ti]).to_f64_();
                let w = inv_n / sum;
                crow.iter_mut().for_each(|v| *v *= w);
                crow[ti] -= inv_n;
            }
            *slots[r0 / super::common::TILE].lock().unwrap_or_else(|e| e.into_inner()) = acc;
        },
        gq,
        gk,
    );
    let total = ordered_sum(slots.into_iter().map(|v| v.into_inner().unwrap_or_else(|e| e.into_inner())));
    Ok(total / p.n as f64)
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
