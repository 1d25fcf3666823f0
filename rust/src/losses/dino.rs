//! DINO's multi-crop cross-entropy (Caron et al. 2021, "Emerging Properties in
//! Self-Supervised Vision Transformers").
//!
//! Teacher views t = 0..T−1 and student views s = 0..S−1 (the first T student
//! views are the same crops as the teacher's), each a B×K matrix; c the centre
//! (K), τ_t, τ_s the temperatures. Per sample b:
//!
//! p_tb = softmax((x_tb − c)/τ_t),   log q_sb = log_softmax(x_sb/τ_s),
//! L = 1/(n·B) Σ_b Σ_{t≠s} −p_tb·log q_sb,   n = T·S − min(T, S)  (pairs t = s excluded).
//!
//! Since Σ_k p = 1, −p_tb·log q_sb = lse_sb − (p_tb·x_sb)/τ_s with lse_sb the
//! log-sum-exp of x_sb/τ_s. The forward walks each sample's T+S rows once, in
//! column tiles: an online (rescaled) log-sum-exp per row and the T×S dot
//! products p̃_tb·x_sb with the unnormalised p̃; it keeps only the per-row
//! log-sum-exps (O(B·(T+S)) state). The teacher gets no gradient (stop-gradient,
//! as in the authors' code). The backward recomputes the tiles:
//!
//! ∂L/∂x_sb = g/(n·B·τ_s) · (W_s·q_sb − Σ_{t≠s} p_tb),   W_s = T − [s < T].
//!
//! Work is split over samples, reductions run in a fixed order (per-sample
//! values summed in sample order), so the result is bit-identical for any thread
//! count.

use super::common::ordered_sum;
use super::rowops;
use crate::error::{Error, Result};
use crate::Real;
use rayon::prelude::*;

/// Columns per tile (independent of the thread count).
const TILE: usize = 2048;

/// The inputs of one DINO loss evaluation: views as row-major B×K slices.
pub struct Dino<'a, T> {
    pub teacher: Vec<&'a [T]>,
    pub student: Vec<&'a [T]>,
    pub center: &'a [T],
    pub b: usize,
    pub k: usize,
    pub teacher_temp: f64,
    pub student_temp: f64,
}

/// What the backward needs: the log-sum-exp of every teacher row of (x − c)/τ_t
/// (index t·B + b) and of every student row of x/τ_s (index s·B + b).
pub struct DinoState<T> {
    pub teacher_lse: Vec<T>,
    pub student_lse: Vec<T>,
}

impl<'a, T: Real> Dino<'a, T> {
    /// The number of (teacher, student) pairs with different views.
    pub fn n_terms(&self) -> usize {
        let (t, s) = (self.teacher.len(), self.student.len());
        t * s - t.min(s)
    }

    fn validate(&self) -> Result<()> {
        if self.teacher.is_empty() || self.student.is_empty() {
            return Err(Error::Shape("DINO needs at least one teacher and one student view".into()));
        }
        if self.n_terms() == 0 {
            return Err(Error::Shape(
                "DINO needs at least two views in total: the same-view pair is excluded, leaving no term".into(),
            ));
        }
        if self.b == 0 || self.k == 0 {
            return Err(Error::Shape("DINO views must be non-empty".into()));
        }
        for (i, v) in self.teacher.iter().enumerate() {
            crate::error::check_len(&format!("teacher view {i}"), v.len(), self.b, self.k)?;
        }
        for (i, v) in self.student.iter().enumerate() {
            crate::error::check_len(&format!("student view {i}"), v.len(), self.b, self.k)?;
        }
        if self.center.len() != self.k {
            return Err(Error::Shape(format!("center has {} values, expected {}", self.center.len(), self.k)));
        }
        for (name, t) in [("teacher_temp", self.teacher_temp), ("student_temp", self.student_temp)] {
            if !(t.is_finite() && t > 0.0) {
                return Err(Error::InvalidParameter(format!("{name} must be a finite number > 0, got {t}")));
            }
        }
        Ok(())
    }

    fn check_finite(&self) -> Result<()> {
        let bad = |v: &[T]| v.iter().any(|x| !x.is_finite());
        if self.teacher.par_iter().any(|v| bad(v)) {
            return Err(Error::NonFinite("teacher outputs contain NaN or infinity".into()));
        }
        if self.student.par_iter().any(|v| bad(v)) {
            return Err(Error::NonFinite("student outputs contain NaN or infinity".into()));
        }
        if bad(self.center) {
            return Err(Error::NonFinite("center contains NaN or infinity".into()));
        }
        Ok(())
    }
}

/// Fixed-lane dot product (same order in every build).
#[inline(always)]
fn dot<T: Real>(a: &[T], b: &[T]) -> T {
    const L: usize = 8;
    let mut acc = [T::zero(); L];
    let n = a.len().min(b.len());
    let (ca, cb) = (a[..n].chunks_exact(L), b[..n].chunks_exact(L));
    let tail: T = ca.remainder().iter().zip(cb.remainder()).fold(T::zero(), |s, (&x, &y)| s + x * y);
    for (x, y) in ca.zip(cb) {
        for l in 0..L {
            acc[l] += x[l] * y[l];
        }
    }
    ((acc[0] + acc[4]) + (acc[2] + acc[6])) + ((acc[1] + acc[5]) + (acc[3] + acc[7])) + tail
}

crate::simd::multiversion! {
    /// One sample's forward: Σ_{t≠s} (lse_s − p_t·x_s/τ_s) and the rows' log-sum-exps.
    fn sample_forward<T>(cfg: &Dino<'_, T>, b: usize, buf: &mut Vec<T>, t_lse: &mut [T], s_lse: &mut [T]) -> f64 {
        let (nt, ns, k) = (cfg.teacher.len(), cfg.student.len(), cfg.k);
        let (it, is) = (T::c(1.0 / cfg.teacher_temp), T::c(1.0 / cfg.student_temp));
        buf.resize(TILE, T::zero());
        // Online state: teacher max / sum / dots (nt × ns), student max / sum.
        let mut tm = vec![T::neg_infinity(); nt];
        let mut tz = vec![T::zero(); nt];
        let mut acc = vec![T::zero(); nt * ns];
        let mut sm = vec![T::neg_infinity(); ns];
        let mut sz = vec![T::zero(); ns];
        #[inline(always)]
        fn row<T>(v: &[T], off: usize, c0: usize, c1: usize) -> &[T] {
            &v[off + c0..off + c1]
        }
        let off = b * k;
        let mut c0 = 0;
        while c0 < k {
            let c1 = (c0 + TILE).min(k);
            let w = c1 - c0;
            let tile = &mut buf[..w];
            for s in 0..ns {
                let xs = row(cfg.student[s], off, c0, c1);
                for (o, &x) in tile.iter_mut().zip(xs) {
                    *o = x * is;
                }
                let mx = rowops::max(tile);
                if mx > sm[s] {
                    sz[s] *= rowops::exp1(sm[s] - mx);
                    sm[s] = mx;
                }
                sz[s] += rowops::exp_shift(tile, sm[s]);
            }
            let cen = &cfg.center[c0..c1];
            for t in 0..nt {
                let xt = row(cfg.teacher[t], off, c0, c1);
                for ((o, &x), &c) in tile.iter_mut().zip(xt).zip(cen) {
                    *o = (x - c) * it;
                }
                let mx = rowops::max(tile);
                if mx > tm[t] {
                    let r = rowops::exp1(tm[t] - mx);
                    tz[t] *= r;
                    acc[t * ns..(t + 1) * ns].iter_mut().for_each(|a| *a *= r);
                    tm[t] = mx;
                }
                tz[t] += rowops::exp_shift(tile, tm[t]);
                for s in 0..ns {
                    if s != t {
                        acc[t * ns + s] += dot(tile, row(cfg.student[s], off, c0, c1));
                    }
                }
            }
            c0 = c1;
        }
        for s in 0..ns {
            s_lse[s] = sm[s] + sz[s].ln();
        }
        let mut total = 0.0f64;
        for t in 0..nt {
            t_lse[t] = tm[t] + tz[t].ln();
            let inv_z = 1.0 / tz[t].to_f64_();
            for s in 0..ns {
                if s != t {
                    total += s_lse[s].to_f64_() - acc[t * ns + s].to_f64_() * inv_z / cfg.student_temp;
                }
            }
        }
        total
    }
}

/// Loss value and the per-row log-sum-exps.
pub fn dino_forward<T: Real>(cfg: &Dino<'_, T>) -> Result<(f64, DinoState<T>)> {
    cfg.validate()?;
    cfg.check_finite()?;
    let (nt, ns, b) = (cfg.teacher.len(), cfg.student.len(), cfg.b);
    // Per sample: (loss term, teacher lse [nt], student lse [ns]).
    let per: Vec<(f64, Vec<T>, Vec<T>)> = (0..b)
        .into_par_iter()
        .map_init(Vec::new, |buf, i| {
            let mut tl = vec![T::zero(); nt];
            let mut sl = vec![T::zero(); ns];
            let v = sample_forward(cfg, i, buf, &mut tl, &mut sl);
            (v, tl, sl)
        })
        .collect();
    let mut teacher_lse = vec![T::zero(); nt * b];
    let mut student_lse = vec![T::zero(); ns * b];
    for (i, (_, tl, sl)) in per.iter().enumerate() {
        for t in 0..nt {
            teacher_lse[t * b + i] = tl[t];
        }
        for s in 0..ns {
            student_lse[s * b + i] = sl[s];
        }
    }
    let loss = ordered_sum(per.iter().map(|p| p.0)) / (cfg.n_terms() * b) as f64;
    Ok((loss, DinoState { teacher_lse, student_lse }))
}

crate::simd::multiversion! {
    /// One sample's gradient rows (one per student view), for upstream g.
    fn sample_backward<T>(cfg: &Dino<'_, T>, st: &DinoState<T>, g: f64, b: usize, bufs: &mut Vec<T>, out: &mut [&mut [T]]) -> () {
        let (nt, ns, k, nb) = (cfg.teacher.len(), cfg.student.len(), cfg.k, cfg.b);
        let (it, is) = (T::c(1.0 / cfg.teacher_temp), T::c(1.0 / cfg.student_temp));
        let coef = T::c(g / ((cfg.n_terms() * nb) as f64 * cfg.student_temp));
        bufs.resize((nt + 1) * TILE, T::zero());
        let (ps, psum) = bufs.split_at_mut(nt * TILE);
        let mut c0 = 0;
        while c0 < k {
            let c1 = (c0 + TILE).min(k);
            let w = c1 - c0;
            let cen = &cfg.center[c0..c1];
            let sum = &mut psum[..w];
            sum.iter_mut().for_each(|v| *v = T::zero());
            for t in 0..nt {
                let p = &mut ps[t * TILE..t * TILE + w];
                let xt = &cfg.teacher[t][b * k + c0..b * k + c1];
                for ((o, &x), &c) in p.iter_mut().zip(xt).zip(cen) {
                    *o = (x - c) * it;
                }
                rowops::exp_shift(p, st.teacher_lse[t * nb + b]);
                rowops::add(sum, p);
            }
            for s in 0..ns {
                let xs = &cfg.student[s][b * k + c0..b * k + c1];
                let o = &mut out[s][c0..c1];
                let lse = st.student_lse[s * nb + b];
                let ws = T::c((nt - usize::from(s < nt)) as f64);
                // One plain loop per case (the exponential vectorises outside lane-structured loops).
                if s < nt {
                    let p = &ps[s * TILE..s * TILE + w];
                    for (((ov, &x), &pv), &sv) in o.iter_mut().zip(xs).zip(p).zip(sum.iter()) {
                        *ov = (ws * rowops::exp1(x * is - lse) - (sv - pv)) * coef;
                    }
                } else {
                    for ((ov, &x), &sv) in o.iter_mut().zip(xs).zip(sum.iter()) {
                        *ov = (ws * rowops::exp1(x * is - lse) - sv) * coef;
                    }
                }
            }
            c0 = c1;
        }
    }
}

/// The gradient of `g·L` with respect to every student view (S arrays B×K, row-major).
pub fn dino_backward<T: Real>(cfg: &Dino<'_, T>, st: &DinoState<T>, g: f64) -> Result<Vec<Vec<T>>> {
    cfg.validate()?;
    let (nt, ns, b, k) = (cfg.teacher.len(), cfg.student.len(), cfg.b, cfg.k);
    if st.teacher_lse.len() != nt * b || st.student_lse.len() != ns * b {
        return Err(Error::Shape("DINO log-sum-exp state does not match the views".into()));
    }
    if !g.is_finite() {
        return Err(Error::NonFinite("upstream gradient is not finite".into()));
    }
    let mut grads: Vec<Vec<T>> = (0..ns).map(|_| crate::mem::zeroed_large::<T>(b * k)).collect();
    {
        // rows[i] = the i-th row of every student gradient.
        let mut rows: Vec<Vec<&mut [T]>> = (0..b).map(|_| Vec::with_capacity(ns)).collect();
        for gs in grads.iter_mut() {
            for (i, r) in gs.chunks_mut(k).enumerate() {
                rows[i].push(r);
            }
        }
        rows.into_par_iter().enumerate().for_each_init(Vec::new, |bufs, (i, mut out)| {
            sample_backward(cfg, st, g, i, bufs, &mut out);
        });
    }
    Ok(grads)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SplitMix;

    /// Direct formula in f64: full softmaxes, every pair.
    fn naive(t: &[Vec<f64>], s: &[Vec<f64>], c: &[f64], b: usize, k: usize, tt: f64, ts: f64) -> (f64, Vec<Vec<f64>>) {
        let sm = |v: &[f64]| {
            let m = v.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let z: f64 = v.iter().map(|x| (x - m).exp()).sum();
            v.iter().map(|x| (x - m).exp() / z).collect::<Vec<_>>()
        };
        let n = (t.len() * s.len() - t.len().min(s.len())) as f64;
        let mut loss = 0.0;
        let mut grads = vec![vec![0.0; b * k]; s.len()];
        for i in 0..b {
            for (ti, tv) in t.iter().enumerate() {
                let y: Vec<f64> = (0..k).map(|j| (tv[i * k + j] - c[j]) / tt).collect();
                let p = sm(&y);
                for (si, sv) in s.iter().enumerate() {
                    if si == ti {
                        continue;
                    }
                    let z: Vec<f64> = (0..k).map(|j| sv[i * k + j] / ts).collect();
                    let q = sm(&z);
                    for j in 0..k {
                        loss -= p[j] * q[j].ln() / (n * b as f64);
                        grads[si][i * k + j] += (q[j] - p[j]) / ts / (n * b as f64);
                    }
                }
            }
        }
        (loss, grads)
    }

    fn views(rng: &mut SplitMix, nv: usize, b: usize, k: usize) -> Vec<Vec<f64>> {
        (0..nv).map(|_| (0..b * k).map(|_| 4.0 * (rng.uniform() - 0.5)).collect()).collect()
    }

    #[test]
    fn matches_naive_formula_across_tiles() {
        let mut rng = SplitMix(7);
        for &(nt, ns, b, k) in &[(2usize, 8usize, 3usize, 5000usize), (2, 2, 4, 17), (1, 3, 2, 2049), (3, 2, 2, 9)] {
            let t = views(&mut rng, nt, b, k);
            let s = views(&mut rng, ns, b, k);
            let c: Vec<f64> = (0..k).map(|_| rng.uniform() - 0.5).collect();
            let cfg = Dino {
                teacher: t.iter().map(|v| v.as_slice()).collect(),
                student: s.iter().map(|v| v.as_slice()).collect(),
                center: &c,
                b,
                k,
                teacher_temp: 0.04,
                student_temp: 0.1,
            };
            let (loss, st) = dino_forward(&cfg).unwrap();
            let grads = dino_backward(&cfg, &st, 1.0).unwrap();
            let (want, want_g) = naive(&t, &s, &c, b, k, 0.04, 0.1);
            assert!((loss - want).abs() < 1e-10 * want.abs().max(1.0), "{loss} vs {want}");
            for (g, w) in grads.iter().zip(&want_g) {
                for (a, e) in g.iter().zip(w) {
                    assert!((a - e).abs() < 1e-12, "{a} vs {e}");
                }
            }
            // f32 agrees loosely.
            let t32: Vec<Vec<f32>> = t.iter().map(|v| v.iter().map(|&x| x as f32).collect()).collect();
            let s32: Vec<Vec<f32>> = s.iter().map(|v| v.iter().map(|&x| x as f32).collect()).collect();
            let c32: Vec<f32> = c.iter().map(|&x| x as f32).collect();
            let cfg32 = Dino {
                teacher: t32.iter().map(|v| v.as_slice()).collect(),
                student: s32.iter().map(|v| v.as_slice()).collect(),
                center: &c32,
                b,
                k,
                teacher_temp: 0.04,
                student_temp: 0.1,
            };
            let (l32, _) = dino_forward(&cfg32).unwrap();
            assert!((l32 - want).abs() < 1e-4 * want.abs().max(1.0), "{l32} vs {want}");
        }
    }

    #[test]
    fn refuses_bad_inputs() {
        let v = vec![0.0f64; 6];
        let c = vec![0.0f64; 3];
        let one = Dino { teacher: vec![&v[..]], student: vec![&v[..]], center: &c, b: 2, k: 3, teacher_temp: 0.04, student_temp: 0.1 };
        assert!(matches!(dino_forward(&one), Err(Error::Shape(_))));
        let short = Dino { teacher: vec![&v[..]], student: vec![&v[..], &v[..5]], center: &c, b: 2, k: 3, teacher_temp: 0.04, student_temp: 0.1 };
        assert!(matches!(dino_forward(&short), Err(Error::Shape(_))));
        let temp = Dino { teacher: vec![&v[..]], student: vec![&v[..], &v[..]], center: &c, b: 2, k: 3, teacher_temp: 0.0, student_temp: 0.1 };
        assert!(matches!(dino_forward(&temp), Err(Error::InvalidParameter(_))));
        let mut nan = v.clone();
        nan[2] = f64::NAN;
        let bad = Dino { teacher: vec![&v[..]], student: vec![&v[..], &nan[..]], center: &c, b: 2, k: 3, teacher_temp: 0.04, student_temp: 0.1 };
        assert!(matches!(dino_forward(&bad), Err(Error::NonFinite(_))));
    }

    #[test]
    fn thread_count_does_not_change_bits() {
        let mut rng = SplitMix(3);
        let (b, k) = (9, 4100);
        let t: Vec<Vec<f32>> = (0..2).map(|_| (0..b * k).map(|_| (rng.uniform() * 6.0 - 3.0) as f32).collect()).collect();
        let s: Vec<Vec<f32>> = (0..5).map(|_| (0..b * k).map(|_| (rng.uniform() * 6.0 - 3.0) as f32).collect()).collect();
        let c = vec![0.1f32; k];
        let cfg = Dino {
            teacher: t.iter().map(|v| v.as_slice()).collect(),
            student: s.iter().map(|v| v.as_slice()).collect(),
            center: &c,
            b,
            k,
            teacher_temp: 0.05,
            student_temp: 0.1,
        };
        let run = |n: usize| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(n).build().unwrap();
            pool.install(|| {
                let (l, st) = dino_forward(&cfg).unwrap();
                (l, dino_backward(&cfg, &st, 0.5).unwrap())
            })
        };
        let (l1, g1) = run(1);
        let (l3, g3) = run(3);
        assert_eq!(l1.to_bits(), l3.to_bits());
        assert_eq!(g1, g3);
    }
}
