//! Circle loss (Sun et al. 2020) on cosine similarities S of unit rows, as
//! pytorch-metric-learning defines it: with O_p = 1 + m, O_n = −m, Δ_p = 1 − m, Δ_n = m,
//!
//! α_p = relu(O_p − S_ip), α_n = relu(S_in − O_n)   (constants in the gradient: PML detaches them),
//! per_i = softplus(lse_{p∈P(i)} [−γ α_p (S_ip − Δ_p)] + lse_{n∈N(i)} [γ α_n (S_in − Δ_n)])
//!
//! when anchor i has a positive and a negative, else 0; cnt_i = [per_i > 0]
//! (PML's AvgNonZeroReducer). P/N come from labels or from given pairs.

use super::common::{sigmoid, softplus, Batch};
use super::pairsim::{dense_backward, dense_forward, dense_forward_backward, given_backward, given_forward, GivenPairs, RowLoss};
use crate::error::{Error, Result};
use crate::Real;

/// The loss's parameters (PML defaults: m 0.4, gamma 80).
#[derive(Clone, Copy, Debug)]
pub struct Circle {
    pub m: f64,
    pub gamma: f64,
}

impl Default for Circle {
    fn default() -> Self {
        Circle { m: 0.4, gamma: 80.0 }
    }
}

struct Ci<T> {
    gamma: T,
    op: T,
    on: T,
    dp: T,
    dn: T,
}

impl Circle {
    fn typed<T: Real>(&self) -> Result<Ci<T>> {
        if !self.m.is_finite() {
            return Err(Error::InvalidParameter(format!("m must be finite, got {}", self.m)));
        }
        if !(self.gamma.is_finite() && self.gamma > 0.0) {
            return Err(Error::InvalidParameter(format!("gamma must be finite and > 0, got {}", self.gamma)));
        }
        let m = self.m;
        Ok(Ci { gamma: T::c(self.gamma), op: T::c(1.0 + m), on: T::c(-m), dp: T::c(1.0 - m), dn: T::c(m) })
    }
}

impl<T: Real> RowLoss<T> for Ci<T> {
    const ADD_ONE: bool = false;
    #[inline(always)]
    fn pos(&self, s: T) -> (T, T) {
        let a = (self.op - s).max(T::zero());
        let k = -self.gamma * a;
        (k * (s - self.dp), k)
    }
    #[inline(always)]
    fn neg(&self, s: T) -> (T, T) {
        let a = (s - self.on).max(T::zero());
        let k = self.gamma * a;
        (k * (s - self.dn), k)
    }
    #[inline(always)]
    fn combine(&self, lp: T, ln: T, has_p: bool, has_n: bool) -> (T, T, T) {
        if !(has_p && has_n) {
            return (T::zero(), T::zero(), T::zero());
        }
        let z = lp + ln;
        let sg = sigmoid(z);
        (softplus(z), sg, sg)
    }
    #[inline(always)]
    fn count(&self, per: T) -> T {
        if per > T::zero() { T::one() } else { T::zero() }
    }
}

/// Per-anchor values and counts (n each) over the label-defined pairs.
pub fn circle_forward<T: Real>(b: &Batch<T>, cfg: &Circle) -> Result<(Vec<T>, Vec<T>)> {
    dense_forward(b, &cfg.typed::<T>()?)
}

/// (per, cnt) and the gradient of Σ_i per_i in one pass (for the mean: scale by 1/Σcnt).
pub fn circle_forward_backward<T: Real>(b: &Batch<T>, cfg: &Circle, gx: &mut [T], gr: &mut [T]) -> Result<(Vec<T>, Vec<T>)> {
    dense_forward_backward(b, &cfg.typed::<T>()?, gx, gr)
}

/// Σ_i g_i ∂per_i/∂x into `gx` (n×d) and, with references, ∂/∂refs into `gr` (m×d).
pub fn circle_backward<T: Real>(b: &Batch<T>, cfg: &Circle, g: &[T], gx: &mut [T], gr: &mut [T]) -> Result<()> {
    dense_backward(b, &cfg.typed::<T>()?, g, gx, gr)
}

/// Per-anchor values and counts (n each) over given pairs.
pub fn circle_pairs_forward<T: Real>(p: &GivenPairs<T>, cfg: &Circle) -> Result<(Vec<T>, Vec<T>)> {
    given_forward(p, &cfg.typed::<T>()?)
}

/// Σ_i g_i ∂per_i/∂x into `gx` and, with references, ∂/∂refs into `gr`.
pub fn circle_pairs_backward<T: Real>(
    p: &GivenPairs<T>, cfg: &Circle, g: &[T], gx: &mut [T], gr: &mut [T],
) -> Result<()> {
    given_backward(p, &cfg.typed::<T>()?, g, gx, gr)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::losses::pairsim::testkit::{check, check_threads, sims, BruteFn, Sets};

    /// The formula with α_p, α_n taken from the frozen similarities `s0` (detached).
    fn brute(cfg: Circle) -> BruteFn {
        Box::new(move |x: &[f64], r: &[f64], m: usize, ps: &Sets, ns: &Sets, s0: &[f64]| {
            let n = ps.len();
            let d = x.len() / n;
            let s = sims(x, n, r, m, d);
            let (g, mm) = (cfg.gamma, cfg.m);
            (0..n)
                .map(|i| {
                    if ps[i].is_empty() || ns[i].is_empty() {
                        return 0.0;
                    }
                    let a: f64 = ps[i]
                        .iter()
                        .map(|&j| (-g * (1.0 + mm - s0[i * m + j]).max(0.0) * (s[i * m + j] - (1.0 - mm))).exp())
                        .sum();
                    let b: f64 =
                        ns[i].iter().map(|&j| (g * (s0[i * m + j] + mm).max(0.0) * (s[i * m + j] - mm)).exp()).sum();
                    (1.0 + a * b).ln()
                })
                .collect()
        })
    }

    #[test]
    fn matches_brute_force_and_finite_differences() {
        for cfg in [Circle::default(), Circle { m: 0.25, gamma: 5.0 }] {
            let br = brute(cfg);
            check(
                &|b| circle_forward(b, &cfg),
                &|b, g, gx, gr| circle_backward(b, &cfg, g, gx, gr),
                &|p| circle_pairs_forward(p, &cfg),
                &|p, g, gx, gr| circle_pairs_backward(p, &cfg, g, gx, gr),
                &br,
                &|v| if v > 0.0 { 1.0 } else { 0.0 },
            );
        }
    }

    #[test]
    fn thread_count_does_not_change_bits() {
        let cfg = Circle::default();
        check_threads(
            &|b| circle_forward(b, &cfg),
            &|b, g, gx, gr| circle_backward(b, &cfg, g, gx, gr),
            &|p| circle_pairs_forward(p, &cfg),
            &|p, g, gx, gr| circle_pairs_backward(p, &cfg, g, gx, gr),
        );
    }

    #[test]
    fn bad_parameters_are_errors() {
        let x = vec![1.0f64, 0.0, 0.0, 1.0];
        let l = vec![0i64, 1];
        let b = Batch { x: &x, n: 2, d: 2, labels: &l, refs: None };
        for cfg in [Circle { m: f64::NAN, gamma: 80.0 }, Circle { m: 0.4, gamma: 0.0 }, Circle { m: 0.4, gamma: f64::INFINITY }] {
            assert!(circle_forward(&b, &cfg).is_err());
        }
    }

    #[test]
    fn large_gamma_stays_finite_in_f32() {
        let x: Vec<f32> = vec![1.0, 0.0, 0.0, 1.0, 0.6, 0.8, -1.0, 0.0, 0.8, 0.6];
        let l = vec![0i64, 0, 1, 1, 0];
        let b = Batch { x: &x, n: 5, d: 2, labels: &l, refs: None };
        let cfg = Circle { m: 0.25, gamma: 1024.0 };
        let (per, cnt) = circle_forward(&b, &cfg).unwrap();
        assert!(per.iter().all(|v| v.is_finite()));
        assert!(cnt.iter().all(|&c| c == 0.0 || c == 1.0));
        let mut gx = vec![0.0f32; 10];
        circle_backward(&b, &cfg, &[1.0; 5], &mut gx, &mut []).unwrap();
        assert!(gx.iter().all(|v| v.is_finite()));
    }
}
