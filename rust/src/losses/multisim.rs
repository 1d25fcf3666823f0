//! Multi-Similarity loss (Wang et al. 2019) on cosine similarities S of unit
//! rows, as pytorch-metric-learning defines it:
//!
//! per_i = (1/α)·log(1 + Σ_{p∈P(i)} e^{−α(S_ip − base)}) + (1/β)·log(1 + Σ_{n∈N(i)} e^{β(S_in − base)}),
//!
//! cnt_i = 1 for every anchor (PML's mean runs over all rows, pair-less rows
//! included with per = 0). P/N come from labels or from given pairs.

use super::common::Batch;
use super::pairsim::{dense_backward, dense_forward, dense_forward_backward, given_backward, given_forward, GivenPairs, RowLoss};
use crate::error::{Error, Result};
use crate::Real;

/// The loss's parameters (PML defaults: alpha 2, beta 50, base 0.5).
#[derive(Clone, Copy, Debug)]
pub struct MultiSimilarity {
    pub alpha: f64,
    pub beta: f64,
    pub base: f64,
}

impl Default for MultiSimilarity {
    fn default() -> Self {
        MultiSimilarity { alpha: 2.0, beta: 50.0, base: 0.5 }
    }
}

struct Ms<T> {
    alpha: T,
    beta: T,
    base: T,
    inv_a: T,
    inv_b: T,
}

impl MultiSimilarity {
    fn typed<T: Real>(&self) -> Result<Ms<T>> {
        for (name, v) in [("alpha", self.alpha), ("beta", self.beta)] {
            if !(v.is_finite() && v > 0.0) {
                return Err(Error::InvalidParameter(format!("{name} must be finite and > 0, got {v}")));
            }
        }
        if !self.base.is_finite() {
            return Err(Error::InvalidParameter(format!("base must be finite, got {}", self.base)));
        }
        Ok(Ms {
            alpha: T::c(self.alpha),
            beta: T::c(self.beta),
            base: T::c(self.base),
            inv_a: T::c(1.0 / self.alpha),
            inv_b: T::c(1.0 / self.beta),
        })
    }
}

impl<T: Real> RowLoss<T> for Ms<T> {
    const ADD_ONE: bool = true;
    #[inline(always)]
    fn pos(&self, s: T) -> (T, T) {
        (-self.alpha * (s - self.base), -self.alpha)
    }
    #[inline(always)]
    fn neg(&self, s: T) -> (T, T) {
        (self.beta * (s - self.base), self.beta)
    }
    #[inline(always)]
    fn combine(&self, lp: T, ln: T, _: bool, _: bool) -> (T, T, T) {
        (lp * self.inv_a + ln * self.inv_b, self.inv_a, self.inv_b)
    }
    #[inline(always)]
    fn count(&self, _: T) -> T {
        T::one()
    }
}

/// Per-anchor values and counts (n each) over the label-defined pairs.
pub fn multi_similarity_forward<T: Real>(b: &Batch<T>, cfg: &MultiSimilarity) -> Result<(Vec<T>, Vec<T>)> {
    dense_forward(b, &cfg.typed::<T>()?)
}

/// (per, cnt) and the gradient of Σ_i per_i in one pass (for the mean: scale by 1/Σcnt).
pub fn multi_similarity_forward_backward<T: Real>(b: &Batch<T>, cfg: &MultiSimilarity, gx: &mut [T], gr: &mut [T]) -> Result<(Vec<T>, Vec<T>)> {
    dense_forward_backward(b, &cfg.typed::<T>()?, gx, gr)
}

/// Σ_i g_i ∂per_i/∂x into `gx` (n×d) and, with references, ∂/∂refs into `gr` (m×d).
pub fn multi_similarity_backward<T: Real>(
    b: &Batch<T>, cfg: &MultiSimilarity, g: &[T], gx: &mut [T], gr: &mut [T],
) -> Result<()> {
    dense_backward(b, &cfg.typed::<T>()?, g, gx, gr)
}

/// Per-anchor values and counts (n each) over given pairs.
pub fn multi_similarity_pairs_forward<T: Real>(p: &GivenPairs<T>, cfg: &MultiSimilarity) -> Result<(Vec<T>, Vec<T>)> {
    given_forward(p, &cfg.typed::<T>()?)
}

/// Σ_i g_i ∂per_i/∂x into `gx` and, with references, ∂/∂refs into `gr`.
pub fn multi_similarity_pairs_backward<T: Real>(
    p: &GivenPairs<T>, cfg: &MultiSimilarity, g: &[T], gx: &mut [T], gr: &mut [T],
) -> Result<()> {
    given_backward(p, &cfg.typed::<T>()?, g, gx, gr)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::losses::pairsim::testkit::{check, check_threads, sims, BruteFn, Sets};

    fn brute(cfg: MultiSimilarity) -> BruteFn {
        Box::new(move |x: &[f64], r: &[f64], m: usize, ps: &Sets, ns: &Sets, _: &[f64]| {
            let n = ps.len();
            let d = x.len() / n;
            let s = sims(x, n, r, m, d);
            (0..n)
                .map(|i| {
                    let a: f64 = ps[i].iter().map(|&j| (-cfg.alpha * (s[i * m + j] - cfg.base)).exp()).sum();
                    let b: f64 = ns[i].iter().map(|&j| (cfg.beta * (s[i * m + j] - cfg.base)).exp()).sum();
                    (1.0 + a).ln() / cfg.alpha + (1.0 + b).ln() / cfg.beta
                })
                .collect()
        })
    }

    #[test]
    fn matches_brute_force_and_finite_differences() {
        for cfg in [MultiSimilarity::default(), MultiSimilarity { alpha: 0.7, beta: 3.0, base: -0.2 }] {
            let br = brute(cfg);
            check(
                &|b| multi_similarity_forward(b, &cfg),
                &|b, g, gx, gr| multi_similarity_backward(b, &cfg, g, gx, gr),
                &|p| multi_similarity_pairs_forward(p, &cfg),
                &|p, g, gx, gr| multi_similarity_pairs_backward(p, &cfg, g, gx, gr),
                &br,
                &|_| 1.0,
            );
        }
    }

    #[test]
    fn thread_count_does_not_change_bits() {
        let cfg = MultiSimilarity::default();
        check_threads(
            &|b| multi_similarity_forward(b, &cfg),
            &|b, g, gx, gr| multi_similarity_backward(b, &cfg, g, gx, gr),
            &|p| multi_similarity_pairs_forward(p, &cfg),
            &|p, g, gx, gr| multi_similarity_pairs_backward(p, &cfg, g, gx, gr),
        );
    }

    #[test]
    fn bad_parameters_are_errors() {
        let x = vec![1.0f64, 0.0, 0.0, 1.0];
        let l = vec![0i64, 1];
        let b = Batch { x: &x, n: 2, d: 2, labels: &l, refs: None };
        for cfg in [
            MultiSimilarity { alpha: 0.0, ..Default::default() },
            MultiSimilarity { beta: f64::NAN, ..Default::default() },
            MultiSimilarity { base: f64::INFINITY, ..Default::default() },
        ] {
            assert!(multi_similarity_forward(&b, &cfg).is_err());
        }
        let cfg = MultiSimilarity::default();
        let (mut gx, mut gr) = (vec![0.0; 4], vec![]);
        assert!(multi_similarity_backward(&b, &cfg, &[1.0], &mut gx, &mut gr).is_err());
        assert!(multi_similarity_backward(&b, &cfg, &[1.0, f64::NAN], &mut gx, &mut gr).is_err());
    }

    #[test]
    fn large_beta_stays_finite_in_f32() {
        let x: Vec<f32> = vec![1.0, 0.0, 0.0, 1.0, 0.6, 0.8, -1.0, 0.0, 0.8, 0.6];
        let l = vec![0i64, 0, 1, 1, 0];
        let b = Batch { x: &x, n: 5, d: 2, labels: &l, refs: None };
        let cfg = MultiSimilarity { alpha: 200.0, beta: 500.0, base: 0.0 };
        let (per, _) = multi_similarity_forward(&b, &cfg).unwrap();
        assert!(per.iter().all(|v| v.is_finite()));
        let mut gx = vec![0.0f32; 10];
        multi_similarity_backward(&b, &cfg, &[1.0; 5], &mut gx, &mut []).unwrap();
        assert!(gx.iter().all(|v| v.is_finite()));
    }
}
