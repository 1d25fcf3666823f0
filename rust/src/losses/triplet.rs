//! Triplet margin loss with on-line mining, the standalone miners, and the
//! loss over given triplets.
//!
//! Per triplet (a, p, n) with y_a = y_p, a ≠ p, y_n ≠ y_a:
//! ℓ = max(0, d(a,p) − d(a,n) + margin), or softplus(d(a,p) − d(a,n) + margin)
//! when `soft`, with d the [`Metric`]'s distance.
//!
//! Forward returns per-anchor values `per` and counts `cnt` (the anchor's share
//! of the normaliser; the old mean is Σper / Σcnt) and backward takes ∂L/∂per:
//! * `All`: per_a = Σ ℓ over a's valid triplets, cnt_a = their number;
//!   `BatchAll`: the same sum, cnt_a = number with ℓ > 0 (soft: all). Neither
//!   enumerates triplets: per anchor the negatives' distances are sorted once
//!   and the hinge sums come from prefix sums (O(B log B) per anchor); the soft
//!   variant loops over positives × negatives.
//! * `BatchHard`: per anchor the farthest positive and the nearest negative.
//! * `SemiHard`: per positive pair, the nearest negative with d(a,n) > d(a,p),
//!   else the farthest negative. Sparse minings: per_a = Σ ℓ over a's mined
//!   triplets, cnt_a = their number.
//!
//! Ties are broken towards the lowest reference index.

use super::common::{check_upstream, index_triplets, sigmoid, softplus, sparse_backward, Batch, Metric, Rows};
use crate::error::{Error, Result};
use crate::linalg::sq_dist;
use crate::Real;
use rayon::prelude::*;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mining {
    All,
    BatchAll,
    BatchHard,
    SemiHard,
}

impl Mining {
    pub const NAMES: &'static [&'static str] = &["all", "batch_all", "batch_hard", "semi_hard"];
    pub fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "all" => Mining::All,
            "batch_all" => Mining::BatchAll,
            "batch_hard" => Mining::BatchHard,
            "semi_hard" => Mining::SemiHard,
            _ => {
                return Err(Error::InvalidParameter(format!(
                    "unknown mining {s:?}; accepted: {}",
                    Mining::NAMES.join(", ")
                )))
            }
        })
    }
    /// Mined triplets (kept between forward and backward) rather than dense tiles.
    pub fn sparse(self) -> bool {
        matches!(self, Mining::BatchHard | Mining::SemiHard)
    }
}

#[derive(Clone, Copy, Debug)]
pub struct TripletCfg {
    pub margin: f64,
    pub metric: Metric,
    pub soft: bool,
    pub mining: Mining,
}

/// Forward result: per-anchor values and counts (length n each) and, for the
/// sparse minings, the mined triplets backward needs (empty otherwise).
#[derive(Clone, Debug, Default)]
pub struct TripletOut<T> {
    pub per: Vec<T>,
    pub cnt: Vec<T>,
    pub triplets: Vec<[u32; 3]>,
}

fn check_margin(margin: f64) -> Result<()> {
    if !margin.is_finite() {
        return Err(Error::InvalidParameter(format!("margin must be finite, got {margin}")));
    }
    Ok(())
}

/// Sorts (distance, index) pairs by distance, then index.
fn sort_pairs<T: Real>(v: &mut [(T, u32)]) {
    v.sort_unstable_by(|a, b| a.0.partial_cmp(&b.0).unwrap_or(std::cmp::Ordering::Equal).then(a.1.cmp(&b.1)));
}

fn sort_vals<T: Real>(v: &mut [T]) {
    v.sort_unstable_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
}

/// Mines the triplets of anchor `i` (its row `dr` of d values) into `out`.
#[allow(clippy::too_many_arguments)]
fn mine_row<T: Real>(
    kind: Mining, i: usize, dr: &[T], yi: i64, rl: &[i64], same: bool, margin: T, out: &mut Vec<[u32; 3]>,
) {
    let is_pos = |j: usize| rl[j] == yi && !(same && j == i);
    match kind {
        Mining::BatchHard => {
            let (mut bp, mut bn) = (None::<usize>, None::<usize>);
            for (j, &v) in dr.iter().enumerate() {
                if rl[j] != yi {
                    if bn.map_or(true, |k| v < dr[k]) {
                        bn = Some(j);
                    }
                } else if is_pos(j) && bp.map_or(true, |k| v > dr[k]) {
                    bp = Some(j);
                }
            }
            if let (Some(p), Some(n)) = (bp, bn) {
                out.push([i as u32, p as u32, n as u32]);
            }
        }
        Mining::SemiHard => {
            let mut negs: Vec<(T, u32)> =
                dr.iter().enumerate().filter(|(j, _)| rl[*j] != yi).map(|(j, &v)| (v, j as u32)).collect();
            if negs.is_empty() {
                return;
            }
            sort_pairs(&mut negs);
            let dmax = negs[negs.len() - 1].0;
            let far = negs[negs.partition_point(|e| e.0 < dmax)].1;
            for (p, &v) in dr.iter().enumerate() {
                if !is_pos(p) {
                    continue;
                }
                let k = negs.partition_point(|e| e.0 <= v);
                let n = if k < negs.len() { negs[k].1 } else { far };
                out.push([i as u32, p as u32, n]);
            }
        }
        Mining::BatchAll | Mining::All => {
            let negs: Vec<usize> = (0..dr.len()).filter(|&j| rl[j] != yi).collect();
            for (p, &v) in dr.iter().enumerate() {
                if !is_pos(p) {
                    continue;
                }
                let t = v + margin;
                for &n in &negs {
                    if kind == Mining::All || t - dr[n] > T::zero() {
                        out.push([i as u32, p as u32, n as u32]);
                    }
                }
            }
        }
    }
}

/// Standalone miner: (anchor, positive, negative) triplets in anchor order,
/// then positive index, then negative index. `BatchAll` keeps the triplets
/// with d(a,p) − d(a,n) + margin > 0; `All` keeps every valid triplet.
pub fn mine<T: Real>(b: &Batch<T>, kind: Mining, margin: f64, metric: Metric) -> Result<Vec<[u32; 3]>> {
    b.validate()?;
    check_margin(margin)?;
    let (_, m, rl) = b.r();
    let same = b.same();
    let mg = T::c(margin);
    let parts = b.space().map_tiles(|r0, r1, s| {
        let mut out = Vec::new();
        for i in r0..r1 {
            let row = &mut s[(i - r0) * m..(i - r0 + 1) * m];
            metric.row(row);
            mine_row(kind, i, row, b.labels[i], rl, same, mg, &mut out);
        }
        out
    });
    Ok(parts.concat())
}

/// Squared distance of row i of x to row j of r, computed directly (exact for near-duplicates).
#[inline]
fn pair_sq<T: Real>(x: &[T], i: usize, r: &[T], j: usize, d: usize) -> T {
    sq_dist(&x[i * d..(i + 1) * d], &r[j * d..(j + 1) * d])
}

/// ℓ of each triplet (indices already checked), in triplet order.
fn triplet_values<T: Real>(x: &[T], r: &[T], d: usize, ts: &[[u32; 3]], mg: T, metric: Metric, soft: bool) -> Vec<T> {
    ts.par_iter()
        .map(|t| {
            let (a, p, n) = (t[0] as usize, t[1] as usize, t[2] as usize);
            let z = metric.of_sq(pair_sq(x, a, r, p, d)) - metric.of_sq(pair_sq(x, a, r, n, d)) + mg;
            if soft { softplus(z) } else { z.max(T::zero()) }
        })
        .collect()
}

/// Σ_k w(k) ∂ℓ_k/∂(x, r) through [`sparse_backward`]; triplets with no gradient are dropped.
#[allow(clippy::too_many_arguments)]
fn triplet_grad<T: Real, W: Fn(usize) -> T + Sync>(
    rows: &Rows<T>, ts: &[[u32; 3]], w: W, mg: T, metric: Metric, soft: bool, gx: &mut [T], gr: &mut [T],
) {
    let (r, m) = rows.r();
    let (x, d) = (rows.x, rows.d);
    let per: Vec<Option<[(u32, u32, T); 2]>> = ts
        .par_iter()
        .enumerate()
        .map(|(k, t)| {
            let wk = w(k);
            if wk == T::zero() {
                return None;
            }
            let (a, p, n) = (t[0] as usize, t[1] as usize, t[2] as usize);
            let (sp, sn) = (pair_sq(x, a, r, p, d), pair_sq(x, a, r, n, d));
            let z = metric.of_sq(sp) - metric.of_sq(sn) + mg;
            let gz = if soft { sigmoid(z) } else if z > T::zero() { T::one() } else { return None };
            let gz = gz * wk;
            Some([(t[0], t[1], metric.coef(sp, gz)), (t[0], t[2], metric.coef(sn, -gz))])
        })
        .collect();
    let pairs: Vec<(u32, u32, T)> = per.into_iter().flatten().flatten().collect();
    sparse_backward(x, rows.n, r, m, d, rows.same(), &pairs, gx, gr);
}

/// Per-anchor sums of the dense ("all"/"batch_all") forward: (loss sum,
/// triplets with ℓ > 0, all triplets).
fn dense_row<T: Real>(dr: &[T], i: usize, yi: i64, rl: &[i64], same: bool, cfg: &TripletCfg) -> (f64, f64, f64) {
    let mg = T::c(cfg.margin);
    let mut negs: Vec<T> = dr.iter().enumerate().filter(|(j, _)| rl[*j] != yi).map(|(_, &v)| v).collect();
    let pos = dr.iter().enumerate().filter(|(j, _)| rl[*j] == yi && !(same && *j == i)).map(|(_, &v)| v);
    let nn = negs.len();
    let (mut sum, mut act, mut tot) = (0.0f64, 0.0f64, 0.0f64);
    if nn == 0 {
        return (0.0, 0.0, 0.0);
    }
    if cfg.soft {
        for vp in pos {
            let mut a = T::zero();
            for &vn in &negs {
                a += softplus(vp - vn + mg);
            }
            sum += a.to_f64_();
            tot += nn as f64;
        }
        return (sum, tot, tot);
    }
    sort_vals(&mut negs);
    let mut prefix = Vec::with_capacity(nn + 1);
    prefix.push(0.0f64);
    for &v in &negs {
        prefix.push(prefix[prefix.len() - 1] + v.to_f64_());
    }
    for vp in pos {
        let t = vp + mg;
        let c = negs.partition_point(|&v| v < t);
        sum += c as f64 * t.to_f64_() - prefix[c];
        act += c as f64;
        tot += nn as f64;
    }
    (sum, act, tot)
}

/// Per-anchor values and counts, and the mined triplets of a sparse mining.
pub fn triplet_forward<T: Real>(b: &Batch<T>, cfg: &TripletCfg) -> Result<TripletOut<T>> {
    b.validate()?;
    check_margin(cfg.margin)?;
    let (r, m, rl) = b.r();
    let n = b.n;
    if cfg.mining.sparse() {
        let triplets = mine(b, cfg.mining, cfg.margin, cfg.metric)?;
        let vals = triplet_values(b.x, r, b.d, &triplets, T::c(cfg.margin), cfg.metric, cfg.soft);
        // O(T) scatter in triplet order (deterministic).
        let (mut per, mut cnt) = (vec![T::zero(); n], vec![T::zero(); n]);
        for (t, &v) in triplets.iter().zip(&vals) {
            per[t[0] as usize] += v;
            cnt[t[0] as usize] += T::one();
        }
        return Ok(TripletOut { per, cnt, triplets });
    }
    let same = b.same();
    let parts = b.space().map_tiles(|r0, r1, s| {
        (r0..r1)
            .map(|i| {
                let row = &mut s[(i - r0) * m..(i - r0 + 1) * m];
                cfg.metric.row(row);
                let (sum, act, tot) = dense_row(row, i, b.labels[i], rl, same, cfg);
                (T::c(sum), T::c(if cfg.mining == Mining::All { tot } else { act }))
            })
            .collect::<Vec<(T, T)>>()
    });
    let flat = parts.concat();
    Ok(TripletOut { per: flat.iter().map(|v| v.0).collect(), cnt: flat.iter().map(|v| v.1).collect(), triplets: Vec::new() })
}

/// Σ_a g_a ∂per_a/∂x into `gx` (n×d) and, with references, ∂/∂refs into `gr`
/// (m×d). Sparse minings take the forward's `triplets` (anchor = first index);
/// dense minings ignore them and recompute tiles.
pub fn triplet_backward<T: Real>(
    b: &Batch<T>, cfg: &TripletCfg, triplets: &[[u32; 3]], g: &[T], gx: &mut [T], gr: &mut [T],
) -> Result<()> {
    b.validate()?;
    check_margin(cfg.margin)?;
    check_upstream(g, b.n)?;
    gx.iter_mut().for_each(|v| *v = T::zero());
    gr.iter_mut().for_each(|v| *v = T::zero());
    let (_, m, rl) = b.r();
    let mg = T::c(cfg.margin);
    let metric = cfg.metric;
    if cfg.mining.sparse() {
        if triplets.iter().any(|t| t[0] as usize >= b.n || t[1] as usize >= m || t[2] as usize >= m) {
            return Err(Error::InvalidInput("triplet index out of range".into()));
        }
        let rows = Rows { x: b.x, n: b.n, d: b.d, refs: b.refs.map(|(r, m, _)| (r, m)) };
        triplet_grad(&rows, triplets, |k| g[triplets[k][0] as usize], mg, metric, cfg.soft, gx, gr);
        return Ok(());
    }
    let same = b.same();
    b.space().backward(
        false,
        |r0, r1, s, c| {
            for i in r0..r1 {
                let w = g[i];
                if w == T::zero() {
                    continue;
                }
                let srow = &s[(i - r0) * m..(i - r0 + 1) * m];
                let crow = &mut c[(i - r0) * m..(i - r0 + 1) * m];
                let yi = b.labels[i];
                let dv = |j: usize| metric.of_sq(srow[j]);
                let pos: Vec<usize> = (0..m).filter(|&j| rl[j] == yi && !(same && j == i)).collect();
                let neg: Vec<usize> = (0..m).filter(|&j| rl[j] != yi).collect();
                if pos.is_empty() || neg.is_empty() {
                    continue;
                }
                // crow first holds ∂(w·per_i)/∂d, then the distance coefficient.
                if cfg.soft {
                    for &p in &pos {
                        let dp = dv(p);
                        let mut gp = T::zero();
                        for &n in &neg {
                            let sg = sigmoid(dp - dv(n) + mg) * w;
                            gp += sg;
                            crow[n] -= sg;
                        }
                        crow[p] = gp;
                    }
                } else {
                    let mut nd: Vec<T> = neg.iter().map(|&n| dv(n)).collect();
                    sort_vals(&mut nd);
                    let mut th: Vec<T> = pos.iter().map(|&p| dv(p) + mg).collect();
                    for (&p, &t) in pos.iter().zip(&th) {
                        crow[p] = T::c(nd.partition_point(|&v| v < t) as f64) * w;
                    }
                    sort_vals(&mut th);
                    for &n in &neg {
                        let dn = dv(n);
                        let cnt = th.len() - th.partition_point(|&t| t <= dn);
                        crow[n] = -T::c(cnt as f64) * w;
                    }
                }
                for j in pos.iter().chain(neg.iter()) {
                    crow[*j] = metric.coef(srow[*j], crow[*j]);
                }
            }
        },
        gx,
        gr,
    );
    Ok(())
}

/// Triplet loss over given triplets (a[k], p[k], n[k]) — rows of x, rows of
/// the partners, rows of the partners: per[k] = ℓ of triplet k.
#[allow(clippy::too_many_arguments)]
pub fn triplet_tuple_forward<T: Real>(
    rows: &Rows<T>, a: &[i64], p: &[i64], n: &[i64], margin: f64, metric: Metric, soft: bool,
) -> Result<Vec<T>> {
    rows.validate()?;
    check_margin(margin)?;
    let (r, m) = rows.r();
    let ts = index_triplets(a, p, n, rows.n, m)?;
    Ok(triplet_values(rows.x, r, rows.d, &ts, T::c(margin), metric, soft))
}

/// Σ_k g_k ∂per_k/∂x into `gx` and, with refs, ∂/∂refs into `gr` (g: one per triplet).
#[allow(clippy::too_many_arguments)]
pub fn triplet_tuple_backward<T: Real>(
    rows: &Rows<T>, a: &[i64], p: &[i64], n: &[i64], margin: f64, metric: Metric, soft: bool, g: &[T],
    gx: &mut [T], gr: &mut [T],
) -> Result<()> {
    rows.validate()?;
    check_margin(margin)?;
    let ts = index_triplets(a, p, n, rows.n, rows.r().1)?;
    check_upstream(g, ts.len())?;
    gx.iter_mut().for_each(|v| *v = T::zero());
    gr.iter_mut().for_each(|v| *v = T::zero());
    triplet_grad(rows, &ts, |k| g[k], T::c(margin), metric, soft, gx, gr);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::losses::common::testutil::*;

    /// Σper / Σcnt (0 when Σcnt = 0): the mean loss of the old kernels.
    fn mean_of(o: &TripletOut<f64>) -> f64 {
        let c: f64 = o.cnt.iter().sum();
        if c > 0.0 { o.per.iter().sum::<f64>() / c } else { 0.0 }
    }

    const METRICS: [Metric; 3] = [Metric::Euclidean, Metric::SqEuclidean, Metric::Cosine];
    const MININGS: [Mining; 4] = [Mining::All, Mining::BatchAll, Mining::BatchHard, Mining::SemiHard];

    /// The n×m matrix of d values, brute force.
    fn dmat(x: &[f64], n: usize, r: &[f64], m: usize, d: usize, mt: Metric) -> Vec<f64> {
        (0..n).flat_map(|i| (0..m).map(move |j| mt.of_sq(dist(x, i, r, j, d)))).collect()
    }

    struct Case<'a> {
        n: usize,
        l: &'a [i64],
        m: usize,
        rl: &'a [i64],
        d: usize,
        same: bool,
    }

    /// Every valid triplet in (anchor, positive, negative) order.
    fn all_triplets(c: &Case) -> Vec<[u32; 3]> {
        let mut v = Vec::new();
        for a in 0..c.n {
            for p in 0..c.m {
                if c.rl[p] != c.l[a] || (c.same && p == a) {
                    continue;
                }
                for q in 0..c.m {
                    if c.rl[q] != c.l[a] {
                        v.push([a as u32, p as u32, q as u32]);
                    }
                }
            }
        }
        v
    }

    fn brute_mine(c: &Case, dm: &[f64], kind: Mining, mg: f64) -> Vec<[u32; 3]> {
        let m = c.m;
        let dd = |a: usize, j: usize| dm[a * m + j];
        let all = all_triplets(c);
        match kind {
            Mining::All => all,
            Mining::BatchAll => all.into_iter().filter(|t| dd(t[0] as usize, t[1] as usize) - dd(t[0] as usize, t[2] as usize) + mg > 0.0).collect(),
            Mining::BatchHard => {
                let mut out = Vec::new();
                for a in 0..c.n {
                    let pos: Vec<usize> = (0..m).filter(|&p| c.rl[p] == c.l[a] && !(c.same && p == a)).collect();
                    let neg: Vec<usize> = (0..m).filter(|&q| c.rl[q] != c.l[a]).collect();
                    if pos.is_empty() || neg.is_empty() {
                        continue;
                    }
                    // Strict comparisons keep the lowest index on ties.
                    let bp = pos.iter().copied().fold(pos[0], |b, p| if dd(a, p) > dd(a, b) { p } else { b });
                    let bn = neg.iter().copied().fold(neg[0], |b, q| if dd(a, q) < dd(a, b) { q } else { b });
                    out.push([a as u32, bp as u32, bn as u32]);
                }
                out
            }
            Mining::SemiHard => {
                let mut out = Vec::new();
                for a in 0..c.n {
                    let neg: Vec<usize> = (0..m).filter(|&q| c.rl[q] != c.l[a]).collect();
                    if neg.is_empty() {
                        continue;
                    }
                    for p in (0..m).filter(|&p| c.rl[p] == c.l[a] && !(c.same && p == a)) {
                        let semi: Vec<usize> = neg.iter().copied().filter(|&q| dd(a, q) > dd(a, p)).collect();
                        let pick = if let Some(&s0) = semi.first() {
                            semi.iter().copied().fold(s0, |b, q| if dd(a, q) < dd(a, b) { q } else { b })
                        } else {
                            neg.iter().copied().fold(neg[0], |b, q| if dd(a, q) > dd(a, b) { q } else { b })
                        };
                        out.push([a as u32, p as u32, pick as u32]);
                    }
                }
                out
            }
        }
    }

    fn ell(dm: &[f64], m: usize, t: &[u32; 3], mg: f64, soft: bool) -> f64 {
        let z = dm[t[0] as usize * m + t[1] as usize] - dm[t[0] as usize * m + t[2] as usize] + mg;
        if soft { softplus(z) } else { z.max(0.0) }
    }

    /// (per, cnt) by the definitions, enumerating triplets.
    fn brute_per(c: &Case, x: &[f64], r: &[f64], cfg: &TripletCfg) -> (Vec<f64>, Vec<f64>) {
        let dm = dmat(x, c.n, r, c.m, c.d, cfg.metric);
        let kind = if cfg.mining.sparse() { cfg.mining } else { Mining::All };
        let (mut per, mut cnt) = (vec![0.0; c.n], vec![0.0; c.n]);
        for t in brute_mine(c, &dm, kind, cfg.margin) {
            let v = ell(&dm, c.m, &t, cfg.margin, cfg.soft);
            per[t[0] as usize] += v;
            if cfg.mining != Mining::BatchAll || cfg.soft || v > 0.0 {
                cnt[t[0] as usize] += 1.0;
            }
        }
        (per, cnt)
    }

    /// The old kernels' mean loss: over all valid / positive-loss / mined triplets.
    fn old_loss(c: &Case, x: &[f64], r: &[f64], cfg: &TripletCfg) -> f64 {
        let dm = dmat(x, c.n, r, c.m, c.d, cfg.metric);
        let kind = if cfg.mining.sparse() { cfg.mining } else { Mining::All };
        let (mut s, mut k) = (0.0, 0.0);
        for t in brute_mine(c, &dm, kind, cfg.margin) {
            let v = ell(&dm, c.m, &t, cfg.margin, cfg.soft);
            s += v;
            if cfg.mining != Mining::BatchAll || v > 0.0 {
                k += 1.0;
            }
        }
        if k > 0.0 { s / k } else { 0.0 }
    }

    fn dot(a: &[f64], b: &[f64]) -> f64 {
        a.iter().zip(b).map(|(u, v)| u * v).sum()
    }

    /// Checks ∇·v against central differences along `v` (a few random v) or,
    /// for small inputs, every coordinate.
    fn check_grad(rng: &mut Rng, grad: &[f64], at: &[f64], f: &dyn Fn(&[f64]) -> f64, full: bool) {
        if full {
            assert_close(grad, &fd_grad(at, f), 1e-4);
            return;
        }
        for _ in 0..3 {
            assert_dir(grad, at, &rng.normal_vec(at.len()), f, 1e-4);
        }
    }

    #[test]
    fn miners_and_losses_match_brute_force() {
        let mut rng = Rng(11);
        // (n, m, d, classes): no refs / refs, one tile and two (rows > 128), one class.
        for &(n, m, d, k) in &[(12usize, 0usize, 3usize, 3u64), (40, 0, 2, 6), (9, 45, 3, 4), (5, 0, 2, 1), (140, 0, 2, 7), (132, 16, 3, 3)] {
            let x = rng.normal_vec(n * d);
            let l = rng.labels(n, k);
            let rx = rng.normal_vec(m * d);
            let rl = rng.labels(m, k);
            let same = m == 0;
            let refs = if same { None } else { Some((&rx[..], m, &rl[..])) };
            let b = Batch { x: &x, n, d, labels: &l, refs };
            let (rr, mm, rrl) = b.r();
            let case = Case { n, l: &l, m: mm, rl: rrl, d, same };
            let full = n <= 40;
            let g: Vec<f64> = (0..n).map(|_| rng.unif() * 2.0 - 0.5).collect();
            for mt in METRICS {
                let dm = dmat(&x, n, rr, mm, d, mt);
                for kind in MININGS {
                    assert_eq!(mine(&b, kind, 0.3, mt).unwrap(), brute_mine(&case, &dm, kind, 0.3), "{kind:?} {mt:?}");
                    for soft in [false, true] {
                        let cfg = TripletCfg { margin: 0.3, metric: mt, soft, mining: kind };
                        let out = triplet_forward(&b, &cfg).unwrap();
                        let (bp, bc) = brute_per(&case, &x, rr, &cfg);
                        assert_close(&out.per, &bp, 1e-9);
                        assert_eq!(out.cnt, bc, "{cfg:?}");
                        let want = old_loss(&case, &x, rr, &cfg);
                        let v = mean_of(&out);
                        assert!((v - want).abs() < 1e-9 * (1.0 + want.abs()), "{cfg:?}: {v} vs {want}");
                        assert_eq!(out.triplets.is_empty(), !kind.sparse() || bc.iter().all(|&c| c == 0.0));
                        let mut gx = vec![0.0; n * d];
                        let mut gr = vec![0.0; m * d];
                        triplet_backward(&b, &cfg, &out.triplets, &g, &mut gx, &mut gr).unwrap();
                        // Finite differences of Σ g·per with the mined set re-mined (locally constant).
                        let fx = |xx: &[f64]| {
                            let r2 = if same { xx } else { &rx[..] };
                            dot(&brute_per(&case, xx, r2, &cfg).0, &g)
                        };
                        check_grad(&mut rng, &gx, &x, &fx, full);
                        if !same {
                            let fr = |r2: &[f64]| dot(&brute_per(&case, &x, r2, &cfg).0, &g);
                            check_grad(&mut rng, &gr, &rx, &fr, full);
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn results_do_not_depend_on_the_thread_count() {
        let (n, d) = (300usize, 4usize);
        let mut rng = Rng(4);
        let x: Vec<f32> = rng.normal_vec(n * d).iter().map(|&v| v as f32).collect();
        let l = rng.labels(n, 5);
        let g: Vec<f32> = (0..n).map(|_| rng.unif() as f32).collect();
        for kind in MININGS {
            let cfg = TripletCfg { margin: 0.2, metric: Metric::Euclidean, soft: false, mining: kind };
            let run = |threads: usize| {
                let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
                pool.install(|| {
                    let b = Batch { x: &x, n, d, labels: &l, refs: None };
                    let out = triplet_forward(&b, &cfg).unwrap();
                    let mut gx = vec![0.0f32; n * d];
                    triplet_backward(&b, &cfg, &out.triplets, &g, &mut gx, &mut []).unwrap();
                    out.per.iter().chain(&out.cnt).chain(&gx).map(|v| v.to_bits()).collect::<Vec<_>>()
                })
            };
            assert_eq!(run(1), run(2), "{kind:?}");
        }
    }

    #[test]
    fn f32_smoke_and_bad_triplets() {
        let x: Vec<f32> = vec![0.0, 0.0, 1.0, 0.0, 0.0, 2.0, 3.0, 3.0];
        let l = vec![0i64, 0, 1, 1];
        let b = Batch { x: &x, n: 4, d: 2, labels: &l, refs: None };
        for mining in MININGS {
            for metric in METRICS {
                let cfg = TripletCfg { margin: 0.5, metric, soft: false, mining };
                let out = triplet_forward(&b, &cfg).unwrap();
                assert!(out.per.iter().all(|v| v.is_finite() && *v >= 0.0));
                let mut gx = vec![0.0f32; 8];
                triplet_backward(&b, &cfg, &out.triplets, &[1.0; 4], &mut gx, &mut []).unwrap();
                assert!(gx.iter().all(|v| v.is_finite()));
            }
        }
        let cfg = TripletCfg { margin: 0.5, metric: Metric::Euclidean, soft: false, mining: Mining::BatchHard };
        assert!(triplet_backward(&b, &cfg, &[[0, 1, 4]], &[1.0; 4], &mut [0.0; 8], &mut []).is_err());
        assert!(triplet_backward(&b, &cfg, &[[0, 1, 2]], &[1.0; 3], &mut [0.0; 8], &mut []).is_err());
    }

    #[test]
    fn tuple_loss_matches_brute_force_and_finite_differences() {
        let mut rng = Rng(17);
        let (n, m, d) = (8usize, 6usize, 3usize);
        let x = rng.normal_vec(n * d);
        let rx = rng.normal_vec(m * d);
        let pick = |rng: &mut Rng, len: usize, hi: usize| -> Vec<i64> { (0..len).map(|_| (rng.next_u64() % hi as u64) as i64).collect() };
        for with_refs in [false, true] {
            let mm = if with_refs { m } else { n };
            let rows = Rows { x: &x, n, d, refs: if with_refs { Some((&rx[..], m)) } else { None } };
            let (a, p, q) = (pick(&mut rng, 10, n), pick(&mut rng, 10, mm), pick(&mut rng, 10, mm));
            let g: Vec<f64> = (0..10).map(|_| rng.unif() - 0.3).collect();
            for mt in METRICS {
                for soft in [false, true] {
                    let brute = |xx: &[f64], rr: &[f64]| -> Vec<f64> {
                        let r = if with_refs { rr } else { xx };
                        (0..a.len())
                            .map(|k| {
                                let dd = |j: i64| mt.of_sq(dist(xx, a[k] as usize, r, j as usize, d));
                                let z = dd(p[k]) - dd(q[k]) + 0.4;
                                if soft { softplus(z) } else { z.max(0.0) }
                            })
                            .collect()
                    };
                    let per = triplet_tuple_forward(&rows, &a, &p, &q, 0.4, mt, soft).unwrap();
                    assert_close(&per, &brute(&x, &rx), 1e-12);
                    let mut gx = vec![0.0; n * d];
                    let mut gr = vec![0.0; if with_refs { m * d } else { 0 }];
                    triplet_tuple_backward(&rows, &a, &p, &q, 0.4, mt, soft, &g, &mut gx, &mut gr).unwrap();
                    assert_close(&gx, &fd_grad(&x, &|xx| dot(&brute(xx, &rx), &g)), 1e-5);
                    if with_refs {
                        assert_close(&gr, &fd_grad(&rx, &|rr| dot(&brute(&x, rr), &g)), 1e-5);
                    }
                }
            }
        }
    }

    #[test]
    fn tuple_indices_out_of_range_are_errors() {
        let x = vec![0.0f32, 1.0, 2.0, 3.0, 4.0, 5.0];
        let rows = Rows { x: &x, n: 3, d: 2, refs: None };
        let ok: &[i64] = &[0, 1];
        for bad in [&[0i64, 3][..], &[-1, 0][..], &[i64::MAX, 0][..]] {
            for (a, p, q) in [(bad, ok, ok), (ok, bad, ok), (ok, ok, bad)] {
                let e = triplet_tuple_forward(&rows, a, p, q, 0.1, Metric::Euclidean, false).unwrap_err();
                assert!(matches!(e, Error::InvalidInput(ref s) if s.contains("index out of range")), "{e:?}");
                let r = triplet_tuple_backward(&rows, a, p, q, 0.1, Metric::Euclidean, true, &[1.0; 2], &mut [0.0; 6], &mut []);
                assert!(r.is_err());
            }
        }
        assert!(triplet_tuple_forward(&rows, ok, ok, &[0], 0.1, Metric::Euclidean, false).is_err());
        let r = [0.0f32; 2];
        let rows = Rows { x: &x, n: 3, d: 2, refs: Some((&r[..], 1)) };
        assert!(triplet_tuple_forward(&rows, &[2], &[0], &[1], 0.1, Metric::Euclidean, false).is_err());
        // f32 smoke: anchor 2 = (4, 5) against ref 0 = (0, 0) twice: ℓ = margin.
        let per = triplet_tuple_forward(&rows, &[2], &[0], &[0], 0.25, Metric::Cosine, false).unwrap();
        assert_eq!(per, vec![0.25f32]);
        let (mut gx, mut gr) = ([0.0f32; 6], [0.0f32; 2]);
        triplet_tuple_backward(&rows, &[2], &[0], &[0], 0.25, Metric::Cosine, false, &[1.0], &mut gx, &mut gr).unwrap();
        assert!(gx.iter().chain(&gr).all(|v| *v == 0.0));
        assert_eq!(triplet_tuple_forward::<f32>(&rows, &[], &[], &[], 0.25, Metric::Cosine, false).unwrap(), vec![]);
    }
}
