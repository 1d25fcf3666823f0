//! Contrastive (pair) loss, Hadsell et al. 2006, with d the [`Metric`]'s distance:
//! same label → d², different label → max(0, margin − d)².
//!
//! Forward returns per-anchor values and counts (see [`contrastive_forward`])
//! so that the caller forms any reduction; backward takes ∂L/∂per.
//! [`pair_tuple_forward`] / [`pair_tuple_backward`] evaluate the same pair
//! loss over given (positive, negative) index pairs in O(T·d).

use super::common::{check_upstream, index_pairs, sparse_backward, Batch, Metric, Rows};
use crate::error::{Error, Result};
use crate::linalg::sq_dist;
use crate::Real;
use rayon::prelude::*;

fn check_margin(margin: f64) -> Result<()> {
    if !margin.is_finite() || margin < 0.0 {
        return Err(Error::InvalidParameter(format!("margin must be finite and >= 0, got {margin}")));
    }
    Ok(())
}

/// ℓ(d) of a positive (`pos`) or negative pair.
#[inline]
fn pair_loss<T: Real>(pos: bool, d: T, mg: T) -> T {
    if pos {
        d * d
    } else {
        let h = (mg - d).max(T::zero());
        h * h
    }
}

/// ∂ℓ/∂d.
#[inline]
fn pair_dloss<T: Real>(pos: bool, d: T, mg: T) -> T {
    if pos { T::c(2.0) * d } else { -T::c(2.0) * (mg - d).max(T::zero()) }
}

/// Per-anchor values and counts `(per, cnt)`, each of length n.
///
/// Without refs the unordered pair (i, j) is split half/half: per_i =
/// ½ Σ_{j≠i} ℓ_ij, cnt_i = (n−1)/2. With refs per_i = Σ_j ℓ_ij, cnt_i = m.
/// Σ cnt is the number of pairs, so Σper / Σcnt is the mean pair loss.
pub fn contrastive_forward<T: Real>(b: &Batch<T>, margin: f64, metric: Metric) -> Result<(Vec<T>, Vec<T>)> {
    b.validate()?;
    check_margin(margin)?;
    let (_, m, rl) = b.r();
    let same = b.same();
    let mg = T::c(margin);
    let half = T::c(0.5);
    let parts = b.space().map_tiles(|r0, r1, s| {
        (r0..r1)
            .map(|i| {
                let row = &mut s[(i - r0) * m..(i - r0 + 1) * m];
                metric.row(row);
                let yi = b.labels[i];
                let mut a = T::zero();
                for (j, (&v, &yj)) in row.iter().zip(rl).enumerate() {
                    if !(same && j == i) {
                        a += pair_loss(yi == yj, v, mg);
                    }
                }
                if same { a * half } else { a }
            })
            .collect::<Vec<T>>()
    });
    let cnt = if same { T::c((b.n - 1) as f64 * 0.5) } else { T::c(m as f64) };
    Ok((parts.concat(), vec![cnt; b.n]))
}

/// Σ_i g_i ∂per_i/∂x into `gx` (n×d) and, with refs, ∂/∂refs into `gr` (m×d).
/// Without refs the pair (i, j) has weight ½(g_i + g_j).
pub fn contrastive_backward<T: Real>(
    b: &Batch<T>, margin: f64, metric: Metric, g: &[T], gx: &mut [T], gr: &mut [T],
) -> Result<()> {
    b.validate()?;
    check_margin(margin)?;
    check_upstream(g, b.n)?;
    gx.iter_mut().for_each(|v| *v = T::zero());
    gr.iter_mut().for_each(|v| *v = T::zero());
    let (_, m, rl) = b.r();
    let same = b.same();
    let mg = T::c(margin);
    let half = T::c(0.5);
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
                    // Symmetric weight without refs: c holds the unordered pair's total.
                    let w = if same { half * (g[i] + g[j]) } else { g[i] };
                    let dd = metric.of_sq(row[j]);
                    cr[j] = metric.coef(row[j], w * pair_dloss(b.labels[i] == rl[j], dd, mg));
                }
            }
        },
        gx,
        gr,
    );
    Ok(())
}

/// The checked pairs: positives first, then negatives, with their kind.
fn tuple_pairs<T: Real>(
    rows: &Rows<T>, pos: (&[i64], &[i64]), neg: (&[i64], &[i64]),
) -> Result<Vec<(u32, u32, bool)>> {
    let m = rows.r().1;
    let p = index_pairs(pos.0, pos.1, rows.n, m, "positive pair")?;
    let q = index_pairs(neg.0, neg.1, rows.n, m, "negative pair")?;
    Ok(p.into_iter().map(|(i, j)| (i, j, true)).chain(q.into_iter().map(|(i, j)| (i, j, false))).collect())
}

/// Pair loss over given pairs: per = [ℓ of each positive pair (pos.0[k], pos.1[k])]
/// ++ [ℓ of each negative pair (neg.0[k], neg.1[k])], rows of x against rows
/// of the partners. Distances computed directly per pair.
pub fn pair_tuple_forward<T: Real>(
    rows: &Rows<T>, pos: (&[i64], &[i64]), neg: (&[i64], &[i64]), margin: f64, metric: Metric,
) -> Result<Vec<T>> {
    rows.validate()?;
    check_margin(margin)?;
    let pairs = tuple_pairs(rows, pos, neg)?;
    let (r, _) = rows.r();
    let (x, d, mg) = (rows.x, rows.d, T::c(margin));
    Ok(pairs
        .par_iter()
        .map(|&(i, j, p)| {
            let (i, j) = (i as usize, j as usize);
            let s = sq_dist(&x[i * d..(i + 1) * d], &r[j * d..(j + 1) * d]);
            pair_loss(p, metric.of_sq(s), mg)
        })
        .collect())
}

/// Σ_k g_k ∂per_k/∂x into `gx` and, with refs, ∂/∂refs into `gr`; g has
/// one entry per pair (positives, then negatives).
#[allow(clippy::too_many_arguments)]
pub fn pair_tuple_backward<T: Real>(
    rows: &Rows<T>, pos: (&[i64], &[i64]), neg: (&[i64], &[i64]), margin: f64, metric: Metric, g: &[T],
    gx: &mut [T], gr: &mut [T],
) -> Result<()> {
    rows.validate()?;
    check_margin(margin)?;
    let pairs = tuple_pairs(rows, pos, neg)?;
    check_upstream(g, pairs.len())?;
    gx.iter_mut().for_each(|v| *v = T::zero());
    gr.iter_mut().for_each(|v| *v = T::zero());
    let (r, m) = rows.r();
    let (x, d, mg) = (rows.x, rows.d, T::c(margin));
    let coefs: Vec<(u32, u32, T)> = pairs
        .par_iter()
        .zip(g.par_iter())
        .map(|(&(i, j, p), &gk)| {
            let (iu, ju) = (i as usize, j as usize);
            let s = sq_dist(&x[iu * d..(iu + 1) * d], &r[ju * d..(ju + 1) * d]);
            (i, j, metric.coef(s, gk * pair_dloss(p, metric.of_sq(s), mg)))
        })
        .collect();
    let coefs: Vec<(u32, u32, T)> = coefs.into_iter().filter(|c| c.2 != T::zero()).collect();
    sparse_backward(x, rows.n, r, m, d, rows.same(), &coefs, gx, gr);
    Ok(())
}

#[cfg(test)]
#[allow(clippy::needless_range_loop)] // index loops mirror the definitions
mod tests {
    use super::*;
    use crate::losses::common::testutil::*;

    const METRICS: [Metric; 3] = [Metric::Euclidean, Metric::SqEuclidean, Metric::Cosine];

    fn ell(pos: bool, dd: f64, mg: f64) -> f64 {
        if pos { dd * dd } else { (mg - dd).max(0.0).powi(2) }
    }

    /// Enumerated (per, cnt) by the definition.
    #[allow(clippy::type_complexity)]
    fn brute(
        x: &[f64], n: usize, l: &[i64], r: Option<(&[f64], usize, &[i64])>, d: usize, mg: f64, mt: Metric,
    ) -> (Vec<f64>, Vec<f64>) {
        let (rx, m, rl) = r.unwrap_or((x, n, l));
        let mut per = vec![0.0; n];
        let mut cnt = vec![0.0; n];
        for i in 0..n {
            for j in 0..m {
                if r.is_none() && j == i {
                    continue;
                }
                let v = ell(l[i] == rl[j], mt.of_sq(dist(x, i, rx, j, d)), mg);
                let w = if r.is_none() { 0.5 } else { 1.0 };
                per[i] += w * v;
                cnt[i] += w;
            }
        }
        (per, cnt)
    }

    /// The mean over pairs as the old kernel defined it (unordered i<j without refs).
    fn old_mean(x: &[f64], n: usize, l: &[i64], r: Option<(&[f64], usize, &[i64])>, d: usize, mg: f64, mt: Metric) -> f64 {
        let (rx, m, rl) = r.unwrap_or((x, n, l));
        let (mut s, mut c) = (0.0, 0.0);
        for i in 0..n {
            for j in 0..m {
                if r.is_none() && j <= i {
                    continue;
                }
                s += ell(l[i] == rl[j], mt.of_sq(dist(x, i, rx, j, d)), mg);
                c += 1.0;
            }
        }
        if c == 0.0 { 0.0 } else { s / c }
    }

    fn dot(a: &[f64], b: &[f64]) -> f64 {
        a.iter().zip(b).map(|(u, v)| u * v).sum()
    }

    #[test]
    fn matches_brute_force_and_finite_differences() {
        let mut rng = Rng(3);
        // (n, m, d, classes); 150 spans two 128-row tiles.
        for &(n, m, d, k) in &[(9usize, 0usize, 3usize, 3u64), (40, 0, 4, 5), (11, 30, 3, 4), (1, 0, 2, 1), (150, 0, 3, 4), (140, 20, 2, 3)] {
            let x: Vec<f64> = rng.normal_vec(n * d).iter().map(|v| v * 0.5).collect();
            let l = rng.labels(n, k);
            let rx: Vec<f64> = rng.normal_vec(m * d).iter().map(|v| v * 0.5).collect();
            let rl = rng.labels(m, k);
            let refs = if m > 0 { Some((&rx[..], m, &rl[..])) } else { None };
            let b = Batch { x: &x, n, d, labels: &l, refs };
            let g: Vec<f64> = (0..n).map(|_| rng.unif() * 2.0 - 0.5).collect();
            let big = n > 64;
            for mt in METRICS {
                let (per, cnt) = contrastive_forward(&b, 1.2, mt).unwrap();
                let (bp, bc) = brute(&x, n, &l, refs, d, 1.2, mt);
                assert_close(&per, &bp, 1e-10);
                assert_eq!(cnt, bc);
                let (sp, sc): (f64, f64) = (per.iter().sum(), cnt.iter().sum());
                let mean = if sc > 0.0 { sp / sc } else { 0.0 };
                let want = old_mean(&x, n, &l, refs, d, 1.2, mt);
                assert!((mean - want).abs() < 1e-10 * (1.0 + want), "{mt:?}: {mean} vs {want}");

                let mut gx = vec![0.0; n * d];
                let mut gr = vec![0.0; m * d];
                contrastive_backward(&b, 1.2, mt, &g, &mut gx, &mut gr).unwrap();
                let obj = |xx: &[f64], rr: &[f64]| {
                    let refs2 = if m > 0 { Some((rr, m, &rl[..])) } else { None };
                    dot(&brute(xx, n, &l, refs2, d, 1.2, mt).0, &g)
                };
                if big {
                    // Directional derivatives (full finite differences are slow here).
                    for _ in 0..3 {
                        assert_dir(&gx, &x, &rng.normal_vec(n * d), &|xx| obj(xx, &rx), 1e-5);
                    }
                } else {
                    assert_close(&gx, &fd_grad(&x, &|xx| obj(xx, &rx)), 1e-5);
                }
                if m > 0 {
                    if big {
                        assert_dir(&gr, &rx, &rng.normal_vec(m * d), &|rr| obj(&x, rr), 1e-5);
                    } else {
                        assert_close(&gr, &fd_grad(&rx, &|rr| obj(&x, rr)), 1e-5);
                    }
                }
            }
        }
    }

    #[test]
    fn results_do_not_depend_on_the_thread_count() {
        let (n, d) = (300usize, 5usize);
        let mut rng = Rng(8);
        let x: Vec<f32> = rng.normal_vec(n * d).iter().map(|&v| v as f32).collect();
        let l = rng.labels(n, 6);
        let g: Vec<f32> = (0..n).map(|_| rng.unif() as f32).collect();
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            pool.install(|| {
                let b = Batch { x: &x, n, d, labels: &l, refs: None };
                let (per, _) = contrastive_forward(&b, 1.0, Metric::Euclidean).unwrap();
                let mut gx = vec![0.0f32; n * d];
                contrastive_backward(&b, 1.0, Metric::Euclidean, &g, &mut gx, &mut []).unwrap();
                per.iter().chain(&gx).map(|v| v.to_bits()).collect::<Vec<_>>()
            })
        };
        assert_eq!(run(1), run(2));
    }

    #[test]
    fn duplicates_give_finite_gradient_f32() {
        let x = vec![1.0f32, 2.0, 1.0, 2.0, 0.0, 0.0];
        let l = vec![0i64, 1, 1];
        let b = Batch { x: &x, n: 3, d: 2, labels: &l, refs: None };
        for mt in METRICS {
            let (per, cnt) = contrastive_forward(&b, 1.0, mt).unwrap();
            assert!(per.iter().all(|v| v.is_finite()) && cnt == vec![1.0f32; 3]);
            let mut gx = vec![0.0f32; 6];
            contrastive_backward(&b, 1.0, mt, &[1.0, 0.5, 2.0], &mut gx, &mut []).unwrap();
            assert!(gx.iter().all(|v| v.is_finite()));
        }
        assert!(contrastive_backward(&b, 1.0, Metric::Euclidean, &[1.0f32], &mut [0.0; 6], &mut []).is_err());
    }

    #[test]
    fn tuple_loss_matches_brute_force_and_finite_differences() {
        let mut rng = Rng(21);
        let (n, m, d) = (7usize, 5usize, 3usize);
        let x = rng.normal_vec(n * d);
        let rx = rng.normal_vec(m * d);
        for with_refs in [false, true] {
            let mm = if with_refs { m } else { n };
            let rows = Rows { x: &x, n, d, refs: if with_refs { Some((&rx[..], m)) } else { None } };
            let pick = |rng: &mut Rng, len: usize, hi: usize| -> Vec<i64> { (0..len).map(|_| (rng.next_u64() % hi as u64) as i64).collect() };
            let (a1, p) = (pick(&mut rng, 6, n), pick(&mut rng, 6, mm));
            let (a2, q) = (pick(&mut rng, 9, n), pick(&mut rng, 9, mm));
            let g: Vec<f64> = (0..15).map(|_| rng.unif() - 0.3).collect();
            for mt in METRICS {
                let brute = |xx: &[f64], rr: &[f64]| -> Vec<f64> {
                    let r = if with_refs { rr } else { xx };
                    let mut v: Vec<f64> = a1.iter().zip(&p).map(|(&i, &j)| ell(true, mt.of_sq(dist(xx, i as usize, r, j as usize, d)), 1.5)).collect();
                    v.extend(a2.iter().zip(&q).map(|(&i, &j)| ell(false, mt.of_sq(dist(xx, i as usize, r, j as usize, d)), 1.5)));
                    v
                };
                let per = pair_tuple_forward(&rows, (&a1, &p), (&a2, &q), 1.5, mt).unwrap();
                assert_close(&per, &brute(&x, &rx), 1e-12);
                let mut gx = vec![0.0; n * d];
                let mut gr = vec![0.0; if with_refs { m * d } else { 0 }];
                pair_tuple_backward(&rows, (&a1, &p), (&a2, &q), 1.5, mt, &g, &mut gx, &mut gr).unwrap();
                assert_close(&gx, &fd_grad(&x, &|xx| dot(&brute(xx, &rx), &g)), 1e-5);
                if with_refs {
                    assert_close(&gr, &fd_grad(&rx, &|rr| dot(&brute(&x, rr), &g)), 1e-5);
                }
            }
        }
    }

    #[test]
    fn tuple_indices_out_of_range_are_errors() {
        let x = vec![0.0f32, 1.0, 2.0, 3.0];
        let rows = Rows { x: &x, n: 2, d: 2, refs: None };
        let ok: &[i64] = &[0, 1];
        for bad in [&[0i64, 2][..], &[-1, 0][..]] {
            let e = pair_tuple_forward(&rows, (ok, bad), (ok, ok), 1.0, Metric::Euclidean).unwrap_err();
            assert!(matches!(e, Error::InvalidInput(ref s) if s.contains("index out of range")), "{e:?}");
            assert!(pair_tuple_forward(&rows, (ok, ok), (bad, ok), 1.0, Metric::Euclidean).is_err());
            let g = [1.0f32; 4];
            assert!(pair_tuple_backward(&rows, (bad, ok), (ok, ok), 1.0, Metric::Cosine, &g, &mut [0.0; 4], &mut []).is_err());
        }
        let r = [0.0f32; 2];
        let rows = Rows { x: &x, n: 2, d: 2, refs: Some((&r[..], 1)) };
        assert!(pair_tuple_forward(&rows, (ok, &[0, 1]), (&[], &[]), 1.0, Metric::Euclidean).is_err());
        assert!(pair_tuple_forward(&rows, (ok, &[0]), (&[], &[]), 1.0, Metric::Euclidean).is_err());
        // f32 smoke test with refs, empty negatives.
        let per = pair_tuple_forward(&rows, (ok, &[0, 0]), (&[], &[]), 1.0, Metric::SqEuclidean).unwrap();
        assert_eq!(per, vec![1.0f32, 169.0]);
        let mut gx = [0.0f32; 4];
        let mut gr = [0.0f32; 2];
        // ℓ = s², ∂ℓ/∂x_i = 4s (x_i − r_0).
        pair_tuple_backward(&rows, (ok, &[0, 0]), (&[], &[]), 1.0, Metric::SqEuclidean, &[1.0, 1.0], &mut gx, &mut gr).unwrap();
        assert_eq!(gx, [0.0, 4.0, 104.0, 156.0]);
        assert_eq!(gr, [-104.0, -160.0]);
    }
}
