//! Contrastive (pair) loss, Hadsell et al. 2006:
//! same label → D², different label → max(0, margin − D)², mean over the
//! unordered pairs i<j of the batch (or over all batch × reference pairs).

use super::common::{ordered_sum, sqrt_and_inv, Batch};
use crate::error::{Error, Result};
use crate::Real;

fn check_margin(margin: f64) -> Result<()> {
    if !margin.is_finite() || margin < 0.0 {
        return Err(Error::InvalidParameter(format!("margin must be finite and >= 0, got {margin}")));
    }
    Ok(())
}

fn n_pairs<T: Real>(b: &Batch<T>) -> f64 {
    match b.refs {
        None => (b.n * (b.n - 1) / 2) as f64,
        Some((_, m, _)) => (b.n * m) as f64,
    }
}

/// The loss value (0 when there is no pair).
pub fn contrastive_forward<T: Real>(b: &Batch<T>, margin: f64) -> Result<f64> {
    b.validate()?;
    check_margin(margin)?;
    let np = n_pairs(b);
    if np == 0.0 {
        return Ok(0.0);
    }
    let (_, m, rl) = b.r();
    let same = b.same();
    let mg = T::c(margin);
    let sums = b.space().map_tiles(|r0, r1, s| {
        let mut acc = 0.0f64;
        for i in r0..r1 {
            let row = &s[(i - r0) * m..(i - r0 + 1) * m];
            let j0 = if same { i + 1 } else { 0 };
            let mut a = T::zero();
            for j in j0..m {
                a += if b.labels[i] == rl[j] {
                    row[j]
                } else {
                    let h = (mg - row[j].sqrt()).max(T::zero());
                    h * h
                };
            }
            acc += a.to_f64_();
        }
        acc
    });
    Ok(ordered_sum(sums) / np)
}

/// ∂L/∂embeddings into `gx` (n×d) and, with references, ∂L/∂refs into `gr` (m×d).
pub fn contrastive_backward<T: Real>(b: &Batch<T>, margin: f64, gx: &mut [T], gr: &mut [T]) -> Result<()> {
    b.validate()?;
    check_margin(margin)?;
    gx.iter_mut().for_each(|v| *v = T::zero());
    gr.iter_mut().for_each(|v| *v = T::zero());
    let np = n_pairs(b);
    if np == 0.0 {
        return Ok(());
    }
    let (_, m, rl) = b.r();
    let same = b.same();
    let mg = T::c(margin);
    let w = T::c(2.0 / np);
    b.space().backward(
        true,
        |r0, r1, s, c| {
            for i in r0..r1 {
                let row = &s[(i - r0) * m..(i - r0 + 1) * m];
                let cr = &mut c[(i - r0) * m..(i - r0 + 1) * m];
                for j in 0..m {
                    if same && i == j {
                        continue;
                    }
                    cr[j] = if b.labels[i] == rl[j] {
                        w
                    } else {
                        let (dd, inv) = sqrt_and_inv(row[j]);
                        -w * (mg - dd).max(T::zero()) * inv
                    };
                }
            }
        },
        gx,
        gr,
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::losses::common::testutil::*;

    fn brute(x: &[f64], n: usize, l: &[i64], r: Option<(&[f64], usize, &[i64])>, d: usize, mg: f64) -> f64 {
        let (rx, m, rl) = r.unwrap_or((x, n, l));
        let (mut s, mut c) = (0.0, 0.0);
        for i in 0..n {
            for j in 0..m {
                if r.is_none() && j <= i {
                    continue;
                }
                let dd = dist(x, i, rx, j, d);
                s += if l[i] == rl[j] { dd } else { (mg - dd.sqrt()).max(0.0).powi(2) };
                c += 1.0;
            }
        }
        if c == 0.0 { 0.0 } else { s / c }
    }

    #[test]
    fn matches_brute_force_and_finite_differences() {
        let mut rng = Rng(3);
        for &(n, m, d, k) in &[(9usize, 0usize, 3usize, 3u64), (70, 0, 4, 5), (11, 80, 3, 4), (1, 0, 2, 1)] {
            let x = rng.normal_vec(n * d);
            let l = rng.labels(n, k);
            let rx = rng.normal_vec(m * d);
            let rl = rng.labels(m, k);
            let refs = if m > 0 { Some((&rx[..], m, &rl[..])) } else { None };
            let b = Batch { x: &x, n, d, labels: &l, refs };
            let v = contrastive_forward(&b, 1.5).unwrap();
            assert!((v - brute(&x, n, &l, refs, d, 1.5)).abs() < 1e-10);
            let mut gx = vec![0.0; n * d];
            let mut gr = vec![0.0; m * d];
            contrastive_backward(&b, 1.5, &mut gx, &mut gr).unwrap();
            let fx = fd_grad(&x, &|xx| brute(xx, n, &l, refs, d, 1.5));
            assert_close(&gx, &fx, 1e-5);
            if m > 0 {
                let fr = fd_grad(&rx, &|rr| brute(&x, n, &l, Some((rr, m, &rl)), d, 1.5));
                assert_close(&gr, &fr, 1e-5);
            }
        }
    }

    #[test]
    fn duplicates_give_finite_gradient() {
        let x = vec![1.0f32, 2.0, 1.0, 2.0, 0.0, 0.0];
        let l = vec![0i64, 1, 1];
        let b = Batch { x: &x, n: 3, d: 2, labels: &l, refs: None };
        let mut gx = vec![0.0f32; 6];
        contrastive_backward(&b, 1.0, &mut gx, &mut []).unwrap();
        assert!(gx.iter().all(|v| v.is_finite()));
    }
}
