//! Supervised contrastive loss (Khosla et al. 2020, "Supervised Contrastive
//! Learning", the L_out form) on unit rows z_i (n×d) with group ids g_i:
//!
//! s_ij = scale · z_i·z_j,  P(i) = { p ≠ i : g_p = g_i },
//! L = 1/|A| Σ_{i∈A} [ logsumexp_{j≠i} s_ij − 1/|P(i)| Σ_{p∈P(i)} s_ip ],  A = { i : |P(i)| > 0 }.
//!
//! Rows without positives are left out of the mean (pytorch-metric-learning's
//! convention); when no row has a positive the loss is 0 with a zero gradient.
//! SimCLR / NT-Xent is the case of two views per group.
//!
//! * The B×B part (the masked softmax over the non-self columns) runs on the
//!   symmetric block kernel of `xent_sym`: pass 1 the per-row log-sum-exp over
//!   upper-triangle blocks (an online (max, Σe) merge in a fixed order),
//!   pass 2 recomputes the blocks for the gradient ∂/∂z_k = scale Σ_j
//!   (a_k P_kj + a_j P_jk) z_j (a_i = 1/|A| for i∈A, else 0, realised by a
//!   +∞ log-sum-exp for rows outside A). State between passes: the n
//!   log-sum-exps.
//! * The positives enter linearly, and |P(i)| depends only on the group, so
//!   their sum comes from the per-group sums S_c = Σ_{g_i=c} z_i in O(n·d):
//!   Σ_{p∈P(i)} s_ip = scale (z_i·S_{g_i} − ‖z_i‖²), and its gradient is
//!   2 scale / (|A|·|P_c|) · (S_c − z_k). Both are ordered, sequential sums.
//!
//! Results do not depend on the thread count (fixed blocks, ordered merges).

use super::xent_sym::{Sym, SYM_GROUP, SYM_TILE};
use crate::error::{check_finite, check_len, Error, Result};
use crate::Real;
use rayon::prelude::*;

/// The problem: unit rows `z` (n×d), `scale` = 1/τ, one group id per row.
#[derive(Clone, Copy)]
pub struct SupCon<'a, T> {
    pub z: &'a [T],
    pub n: usize,
    pub d: usize,
    pub scale: f64,
    pub groups: &'a [i64],
}

/// Per-group facts: each row's dense group index, the groups' sizes and row sums (f64).
struct Groups {
    of: Vec<usize>,
    size: Vec<usize>,
    sum: Vec<f64>,
}

impl<'a, T: Real> SupCon<'a, T> {
    fn validate(&self) -> Result<()> {
        if self.n == 0 || self.d == 0 {
            return Err(Error::Shape(format!("embeddings must be non-empty, got shape ({}, {})", self.n, self.d)));
        }
        check_len("embeddings", self.z.len(), self.n, self.d)?;
        check_finite("embeddings", self.z)?;
        if !(self.scale.is_finite() && self.scale > 0.0) {
            return Err(Error::InvalidParameter(format!("scale (1/temperature) must be finite and > 0, got {}", self.scale)));
        }
        if self.groups.len() != self.n {
            return Err(Error::Shape(format!("labels has length {}, expected {}", self.groups.len(), self.n)));
        }
        Ok(())
    }

    fn groups(&self) -> Groups {
        let (n, d) = (self.n, self.d);
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by_key(|&i| (self.groups[i], i));
        let mut of = vec![0usize; n];
        let mut size = Vec::new();
        let mut prev = None;
        for &i in &order {
            if prev != Some(self.groups[i]) {
                size.push(0);
                prev = Some(self.groups[i]);
            }
            of[i] = size.len() - 1;
            *size.last_mut().expect("a group was opened") += 1;
        }
        let mut sum = vec![0.0f64; size.len() * d];
        for i in 0..n {
            let s = &mut sum[of[i] * d..(of[i] + 1) * d];
            for (a, &v) in s.iter_mut().zip(&self.z[i * d..(i + 1) * d]) {
                *a += v.to_f64_();
            }
        }
        Groups { of, size, sum }
    }

    fn sym(&self) -> Sym<'a, T> {
        Sym::new(self.z, self.n, self.d, T::c(self.scale), &[], true, SYM_TILE, SYM_GROUP)
    }
}

/// Rows with at least one positive.
fn n_active(g: &Groups) -> usize {
    g.size.iter().filter(|&&s| s > 1).sum()
}

/// The loss and the per-row log-sum-exp over the non-self columns (empty when
/// no row has a positive).
pub fn supcon_forward<T: Real>(p: &SupCon<T>) -> Result<(f64, Vec<T>)> {
    p.validate()?;
    let g = p.groups();
    let a = n_active(&g);
    if a == 0 {
        return Ok((0.0, Vec::new()));
    }
    let lse = p.sym().lse();
    Ok((loss_of(p, &g, &lse, a), lse))
}

fn loss_of<T: Real>(p: &SupCon<T>, g: &Groups, lse: &[T], a: usize) -> f64 {
    let d = p.d;
    let mut tot = 0.0f64;
    for (i, &l) in lse.iter().enumerate() {
        let c = g.of[i];
        let cnt = g.size[c] - 1;
        if cnt == 0 {
            continue;
        }
        let zi = &p.z[i * d..(i + 1) * d];
        let sc = &g.sum[c * d..(c + 1) * d];
        let (mut dot, mut sq) = (0.0f64, 0.0f64);
        for (&v, &s) in zi.iter().zip(sc) {
            let v = v.to_f64_();
            dot += v * s;
            sq += v * v;
        }
        let mean_pos = p.scale * (dot - sq) / cnt as f64;
        // lse_i ≥ mean_pos + ln|P(i)| ≥ mean_pos; the two sides round differently.
        tot += (l.to_f64_() - mean_pos).max(0.0);
    }
    tot / a as f64
}

/// ∂L/∂z into `gz` (n×d, overwritten) from the forward's log-sum-exps
/// (recomputes the similarity blocks).
pub fn supcon_backward<T: Real>(p: &SupCon<T>, lse: &[T], gz: &mut [T]) -> Result<()> {
    p.validate()?;
    check_len("grad", gz.len(), p.n, p.d)?;
    let g = p.groups();
    let a = n_active(&g);
    if a == 0 {
        gz[..p.n * p.d].iter_mut().for_each(|v| *v = T::zero());
        return Ok(());
    }
    if lse.len() != p.n {
        return Err(Error::Shape("log-sum-exp state does not match the batch".into()));
    }
    grad(p, &g, lse, a, gz);
    Ok(())
}

/// Loss and gradient (unit upstream) in one call: 2 passes over the upper-triangle blocks.
pub fn supcon_forward_backward<T: Real>(p: &SupCon<T>, gz: &mut [T]) -> Result<f64> {
    p.validate()?;
    check_len("grad", gz.len(), p.n, p.d)?;
    let g = p.groups();
    let a = n_active(&g);
    if a == 0 {
        gz[..p.n * p.d].iter_mut().for_each(|v| *v = T::zero());
        return Ok(0.0);
    }
    let lse = p.sym().lse();
    grad(p, &g, &lse, a, gz);
    Ok(loss_of(p, &g, &lse, a))
}

fn grad<T: Real>(p: &SupCon<T>, g: &Groups, lse: &[T], a: usize, gz: &mut [T]) {
    let (n, d) = (p.n, p.d);
    // Rows outside A take no part as anchors: e^{s − ∞} = 0.
    let masked: Vec<T> = (0..n).map(|i| if g.size[g.of[i]] > 1 { lse[i] } else { T::infinity() }).collect();
    p.sym().grad(&masked, None, gz);
    // The kernel weights each anchor by 1/n; ours is 1/|A|.
    let ratio = T::c(n as f64 / a as f64);
    let two_scale_over_a = 2.0 * p.scale / a as f64;
    gz[..n * d].par_chunks_mut(d).enumerate().for_each(|(k, gk)| {
        let c = g.of[k];
        let cnt = g.size[c] - 1;
        gk.iter_mut().for_each(|v| *v *= ratio);
        if cnt == 0 {
            return;
        }
        let w = two_scale_over_a / cnt as f64;
        let sc = &g.sum[c * d..(c + 1) * d];
        for ((gv, &s), &z) in gk.iter_mut().zip(sc).zip(&p.z[k * d..(k + 1) * d]) {
            *gv -= T::c(w * (s - z.to_f64_()));
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::losses::common::testutil::*;

    fn unit_rows(v: Vec<f64>, d: usize) -> Vec<f64> {
        v.chunks(d)
            .flat_map(|r| {
                let nn = r.iter().map(|x| x * x).sum::<f64>().sqrt();
                r.iter().map(move |x| x / nn).collect::<Vec<_>>()
            })
            .collect()
    }

    /// The definition, loop by loop (works on any rows, unit or not).
    fn brute(z: &[f64], n: usize, d: usize, sc: f64, g: &[i64]) -> f64 {
        let s = |i: usize, j: usize| sc * (0..d).map(|k| z[i * d + k] * z[j * d + k]).sum::<f64>();
        let (mut tot, mut a) = (0.0, 0);
        for i in 0..n {
            let pos: Vec<usize> = (0..n).filter(|&j| j != i && g[j] == g[i]).collect();
            if pos.is_empty() {
                continue;
            }
            let lse = (0..n).filter(|&j| j != i).map(|j| s(i, j).exp()).sum::<f64>().ln();
            tot += lse - pos.iter().map(|&p| s(i, p)).sum::<f64>() / pos.len() as f64;
            a += 1;
        }
        if a == 0 { 0.0 } else { tot / a as f64 }
    }

    #[test]
    fn matches_brute_force_and_finite_differences() {
        let mut rng = Rng(11);
        // (n, d, scale, classes); n > SYM_TILE spans several blocks with a partial last one.
        for &(n, d, sc, k) in &[(7usize, 3usize, 2.0, 3u64), (12, 4, 10.0, 2), (300, 3, 5.0, 40), (9, 2, 1.0, 1)] {
            let z = unit_rows(rng.normal_vec(n * d), d);
            let g = rng.labels(n, k);
            let p = SupCon { z: &z, n, d, scale: sc, groups: &g };
            let (v, lse) = supcon_forward(&p).unwrap();
            let want = brute(&z, n, d, sc, &g);
            assert!((v - want).abs() < 1e-10 * (1.0 + want.abs()), "{v} vs {want}");
            let mut gz = vec![0.0; n * d];
            let fv = supcon_forward_backward(&p, &mut gz).unwrap();
            assert!((fv - v).abs() < 1e-12 * (1.0 + v.abs()));
            let mut gb = vec![0.0; n * d];
            supcon_backward(&p, &lse, &mut gb).unwrap();
            assert_close(&gz, &gb, 1e-12);
            if n <= 12 {
                assert_close(&gz, &fd_grad(&z, &|zz| brute(zz, n, d, sc, &g)), 1e-6);
            } else {
                let v = rng.normal_vec(n * d);
                assert_dir(&gz, &z, &v, &|zz| brute(zz, n, d, sc, &g), 1e-6);
            }
        }
    }

    #[test]
    fn singletons_are_left_out_and_no_positive_gives_zero() {
        let d = 3;
        let z = unit_rows(Rng(3).normal_vec(5 * d), d);
        let g = [0i64, 0, 1, 2, 2];
        let p = SupCon { z: &z, n: 5, d, scale: 3.0, groups: &g };
        let mut gz = vec![0.0; 5 * d];
        let v = supcon_forward_backward(&p, &mut gz).unwrap();
        assert!((v - brute(&z, 5, d, 3.0, &g)).abs() < 1e-12);
        assert_close(&gz, &fd_grad(&z, &|zz| brute(zz, 5, d, 3.0, &g)), 1e-6);
        let lone = [0i64, 1, 2, 3, 4];
        let p = SupCon { z: &z, n: 5, d, scale: 3.0, groups: &lone };
        let mut gz = vec![1.0; 5 * d];
        assert_eq!(supcon_forward_backward(&p, &mut gz).unwrap(), 0.0);
        assert!(gz.iter().all(|&v| v == 0.0));
        let p = SupCon { z: &z[..d], n: 1, d, scale: 3.0, groups: &lone[..1] };
        assert_eq!(supcon_forward(&p).unwrap().0, 0.0);
    }

    #[test]
    fn low_temperature_and_duplicates_are_finite() {
        let z: Vec<f32> = vec![1.0, 0.0, 1.0, 0.0, 0.6, 0.8, -1.0, 0.0, 0.6, 0.8];
        let g = [0i64, 0, 1, 1, 0];
        let p = SupCon { z: &z, n: 5, d: 2, scale: 100.0, groups: &g };
        let mut gz = vec![0.0f32; 10];
        let v = supcon_forward_backward(&p, &mut gz).unwrap();
        assert!(v.is_finite() && gz.iter().all(|x| x.is_finite()));
    }

    #[test]
    fn results_do_not_depend_on_the_thread_count() {
        let (n, d) = (700usize, 8usize);
        let mut rng = Rng(5);
        let z: Vec<f32> = unit_rows(rng.normal_vec(n * d), d).iter().map(|&v| v as f32).collect();
        let g: Vec<i64> = rng.labels(n, 90);
        let p = SupCon { z: &z, n, d, scale: 10.0, groups: &g };
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            pool.install(|| {
                let mut gz = vec![0.0f32; n * d];
                let v = supcon_forward_backward(&p, &mut gz).unwrap();
                (v.to_bits(), gz.iter().map(|x| x.to_bits()).collect::<Vec<_>>())
            })
        };
        let one = run(1);
        assert_eq!(one, run(2));
        assert_eq!(one, run(3));
    }
}
