//! Standalone miners with pytorch-metric-learning's definitions, computed per
//! anchor from 64-row distance / similarity tiles (no B×M matrix, no B³
//! enumeration). Positives of anchor i: references with its label (not i
//! itself without references); negatives: references with another label.
//! Outputs are ordered by anchor, then by reference index.

use super::common::{Batch, Metric, Space};
use crate::error::{Error, Result};
use crate::rng::{splitmix64, SplitMix};
use crate::Real;

/// Which triplets [`mine_triplet_margin`] keeps, with t = d(a,n) − d(a,p).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TripletType {
    /// t ≤ margin.
    All,
    /// t ≤ margin and t ≤ 0.
    Hard,
    /// 0 < t ≤ margin.
    SemiHard,
    /// t > margin.
    Easy,
}

impl TripletType {
    pub const NAMES: &'static [&'static str] = &["all", "hard", "semihard", "easy"];
    pub fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "all" => TripletType::All,
            "hard" => TripletType::Hard,
            "semihard" => TripletType::SemiHard,
            "easy" => TripletType::Easy,
            _ => {
                return Err(Error::InvalidParameter(format!(
                    "unknown triplet type {s:?}; accepted: {}",
                    TripletType::NAMES.join(", ")
                )))
            }
        })
    }
}

fn check_param(name: &str, v: f64) -> Result<()> {
    if !v.is_finite() {
        return Err(Error::InvalidParameter(format!("{name} must be finite, got {v}")));
    }
    Ok(())
}

/// Validates the batch and that indices fit the u32 triplets.
fn check_batch<T: Real>(b: &Batch<T>) -> Result<()> {
    b.validate()?;
    if b.n > u32::MAX as usize || b.r().1 > u32::MAX as usize {
        return Err(Error::Shape("more than 2^32 rows".into()));
    }
    Ok(())
}

/// Work space of one anchor of the triplet-margin miner.
#[derive(Default)]
struct TripletScratch {
    /// Negatives' reference indices, in index order.
    neg: Vec<u32>,
    /// (order key of the distance, position into `neg`), sorted.
    keys: Vec<(u64, u32)>,
    /// rank[q]: where `neg[q]` sits in the sorted order.
    rank: Vec<u32>,
    pick: Vec<u32>,
}

/// An integer key ordered as the float (for sorting without float comparisons).
#[inline]
fn order_key<T: Real>(v: T) -> u64 {
    let b = v.to_f64_().to_bits();
    if b >> 63 == 1 { !b } else { b | (1 << 63) }
}

/// Triplets of anchor `i` (its row `dr` of distances). With few positives,
/// each one scans the negatives (P·M ≤ M log M). Otherwise the negatives are
/// sorted by distance once: the kept negatives of a positive are one run of
/// them (t is monotone in d(a,n)), found by binary search and listed in index
/// order, by a scan when the run is dense, else by sorting the run. Either way
/// the cost is O(output + M log M) per anchor.
#[allow(clippy::too_many_arguments)]
fn triplet_row<T: Real>(
    ty: TripletType, mg: T, i: usize, dr: &[T], yi: i64, rl: &[i64], same: bool, w: &mut TripletScratch,
    out: &mut Vec<[u32; 3]>,
) {
    let is_pos = |j: usize| rl[j] == yi && !(same && j == i);
    let np = (0..dr.len()).filter(|&j| is_pos(j)).count();
    if np == 0 {
        return;
    }
    w.neg.clear();
    w.neg.extend((0..dr.len() as u32).filter(|&j| rl[j as usize] != yi));
    let nn = w.neg.len();
    if nn == 0 {
        return;
    }
    // t = d_an − d_ap is evaluated exactly as the definition does.
    let keep = |t: T| match ty {
        TripletType::All => t <= mg,
        TripletType::Hard => t <= mg && t <= T::zero(),
        TripletType::SemiHard => t > T::zero() && t <= mg,
        TripletType::Easy => t > mg,
    };
    if np <= 2 * (usize::BITS - nn.leading_zeros()) as usize + 2 {
        for (p, &dp) in dr.iter().enumerate() {
            if is_pos(p) {
                out.extend(w.neg.iter().filter(|&&j| keep(dr[j as usize] - dp)).map(|&j| [i as u32, p as u32, j]));
            }
        }
        return;
    }
    w.keys.clear();
    w.keys.extend(w.neg.iter().enumerate().map(|(q, &j)| (order_key(dr[j as usize]), q as u32)));
    w.keys.sort_unstable();
    w.rank.resize(nn, 0);
    for (k, &(_, q)) in w.keys.iter().enumerate() {
        w.rank[q as usize] = k as u32;
    }
    let (neg, keys) = (&w.neg, &w.keys);
    let sv = |k: usize| dr[neg[keys[k].1 as usize] as usize];
    // First sorted position where `f` (true on a prefix) fails.
    let first_not = |f: &dyn Fn(T) -> bool| {
        let (mut lo, mut hi) = (0usize, nn);
        while lo < hi {
            let mid = (lo + hi) / 2;
            if f(sv(mid)) { lo = mid + 1 } else { hi = mid }
        }
        lo
    };
    for (p, &dp) in dr.iter().enumerate() {
        if !is_pos(p) {
            continue;
        }
        // Each condition holds on a prefix of the sorted negatives.
        let le_m = first_not(&|v| v - dp <= mg);
        let (lo, hi) = match ty {
            TripletType::All => (0, le_m),
            TripletType::Hard => (0, first_not(&|v| v - dp <= mg && v - dp <= T::zero())),
            TripletType::SemiHard => (first_not(&|v| v - dp <= T::zero()), le_m),
            TripletType::Easy => (le_m, nn),
        };
        if hi <= lo {
            continue;
        }
        let (lo32, hi32) = (lo as u32, hi as u32);
        if (hi - lo) * 8 >= nn {
            for (q, &r) in w.rank.iter().enumerate() {
                if r >= lo32 && r < hi32 {
                    out.push([i as u32, p as u32, w.neg[q]]);
                }
            }
        } else {
            w.pick.clear();
            w.pick.extend(w.keys[lo..hi].iter().map(|&(_, q)| q));
            w.pick.sort_unstable();
            out.extend(w.pick.iter().map(|&q| [i as u32, p as u32, w.neg[q as usize]]));
        }
    }
}

/// PML's TripletMarginMiner: every valid triplet (a, p, n) whose
/// t = d(a,n) − d(a,p) meets `ty`, ordered by anchor, positive, negative.
pub fn mine_triplet_margin<T: Real>(b: &Batch<T>, margin: f64, ty: TripletType, metric: Metric) -> Result<Vec<[u32; 3]>> {
    check_batch(b)?;
    check_param("margin", margin)?;
    let (_, m, rl) = b.r();
    let same = b.same();
    let mg = T::c(margin);
    let parts = b.space().map_tiles(|r0, r1, s| {
        let mut w = TripletScratch::default();
        let mut out = Vec::new();
        for i in r0..r1 {
            let row = &mut s[(i - r0) * m..(i - r0 + 1) * m];
            metric.row(row);
            triplet_row(ty, mg, i, row, b.labels[i], rl, same, &mut w, &mut out);
        }
        out
    });
    Ok(parts.concat())
}

/// Positive and negative (anchor, reference) pairs.
pub type PairSets = (Vec<[u32; 2]>, Vec<[u32; 2]>);

/// Runs `row(i, values, pos, neg)` on every anchor's tile row, collecting pairs in order.
fn collect_pairs<T: Real, F>(space: Space<'_, T>, row: F) -> PairSets
where
    F: Fn(usize, &mut [T], &mut Vec<[u32; 2]>, &mut Vec<[u32; 2]>) + Sync,
{
    let m = space.m;
    let parts = space.map_tiles(|r0, r1, s| {
        let (mut pos, mut neg) = (Vec::new(), Vec::new());
        for i in r0..r1 {
            row(i, &mut s[(i - r0) * m..(i - r0 + 1) * m], &mut pos, &mut neg);
        }
        (pos, neg)
    });
    let (p, n): (Vec<_>, Vec<_>) = parts.into_iter().unzip();
    (p.concat(), n.concat())
}

/// PML's PairMarginMiner: positive pairs with d > `pos_margin`, negative
/// pairs with d < `neg_margin`.
pub fn mine_pair_margin<T: Real>(b: &Batch<T>, pos_margin: f64, neg_margin: f64, metric: Metric) -> Result<PairSets> {
    check_batch(b)?;
    check_param("pos_margin", pos_margin)?;
    check_param("neg_margin", neg_margin)?;
    let (_, _, rl) = b.r();
    let same = b.same();
    let (pm, nm) = (T::c(pos_margin), T::c(neg_margin));
    Ok(collect_pairs(b.space(), |i, row, pos, neg| {
        metric.row(row);
        let yi = b.labels[i];
        for (j, &v) in row.iter().enumerate() {
            if rl[j] == yi {
                if v > pm && !(same && j == i) {
                    pos.push([i as u32, j as u32]);
                }
            } else if v < nm {
                neg.push([i as u32, j as u32]);
            }
        }
    }))
}

/// PML's MultiSimilarityMiner on cosine similarities S = u·v of unit rows:
/// for an anchor with a positive and a negative, the negatives with
/// S + ε > min positive S and the positives with S − ε < max negative S.
pub fn mine_multi_similarity<T: Real>(b: &Batch<T>, epsilon: f64) -> Result<PairSets> {
    check_batch(b)?;
    check_param("epsilon", epsilon)?;
    let (_, _, rl) = b.r();
    let same = b.same();
    let eps = T::c(epsilon);
    let space = Space::dot(b.x, b.n, b.refs.map(|(r, m, _)| (r, m)), b.d, T::one());
    Ok(collect_pairs(space, |i, row, pos, neg| {
        let yi = b.labels[i];
        let is_pos = |j: usize| rl[j] == yi && !(same && j == i);
        let (mut minp, mut maxn) = (T::infinity(), T::neg_infinity());
        let (mut hp, mut hn) = (false, false);
        for (j, &v) in row.iter().enumerate() {
            if rl[j] != yi {
                hn = true;
                maxn = maxn.max(v);
            } else if is_pos(j) {
                hp = true;
                minp = minp.min(v);
            }
        }
        if !(hp && hn) {
            return;
        }
        for (j, &v) in row.iter().enumerate() {
            if rl[j] != yi {
                if v + eps > minp {
                    neg.push([i as u32, j as u32]);
                }
            } else if is_pos(j) && v - eps < maxn {
                pos.push([i as u32, j as u32]);
            }
        }
    }))
}

/// The random stream of anchor `i`: independent of how anchors are split over threads.
fn anchor_stream(seed: u64, i: usize) -> SplitMix {
    SplitMix(splitmix64(seed) ^ (i as u64).wrapping_mul(0xD1B5_4A32_D192_ED03))
}

/// PML's DistanceWeightedMiner (Wu et al. 2017) on Euclidean distances of
/// unit rows: for every (anchor, positive) pair one negative drawn with
/// probability ∝ w, where q = max(d, cutoff),
/// log w = (2 − dim)·ln q − ((dim − 3)/2)·ln(1 − q²/4),
/// and w = 0 for q ≥ `nonzero_loss_cutoff` or a non-finite log w. Each row is
/// normalised by its own max log w (the draw does not depend on a row's scale;
/// PML's global max can underflow whole rows). Anchors whose negatives all
/// weigh 0 give no triplet.
pub fn mine_distance_weighted<T: Real>(
    b: &Batch<T>, cutoff: f64, nonzero_loss_cutoff: f64, seed: u64,
) -> Result<Vec<[u32; 3]>> {
    check_batch(b)?;
    check_param("cutoff", cutoff)?;
    if nonzero_loss_cutoff.is_nan() {
        return Err(Error::InvalidParameter("nonzero_loss_cutoff must not be NaN".into()));
    }
    let (_, m, rl) = b.r();
    let same = b.same();
    let dim = b.d as f64;
    let parts = b.space().map_tiles(|r0, r1, s| {
        let mut out = Vec::new();
        let (mut cand, mut cum) = (Vec::new(), Vec::new());
        for i in r0..r1 {
            let row = &mut s[(i - r0) * m..(i - r0 + 1) * m];
            let yi = b.labels[i];
            let is_pos = |j: usize| rl[j] == yi && !(same && j == i);
            if !(0..m).any(is_pos) {
                continue;
            }
            Metric::Euclidean.row(row);
            // Log weights of the candidate negatives, then e^{lw − row max}, cumulated.
            cand.clear();
            cum.clear();
            let mut mx = f64::NEG_INFINITY;
            for (j, &v) in row.iter().enumerate() {
                if rl[j] == yi {
                    continue;
                }
                let q = v.to_f64_().max(cutoff);
                if q >= nonzero_loss_cutoff || q.is_nan() {
                    continue;
                }
                let lw = (2.0 - dim) * q.ln() - ((dim - 3.0) / 2.0) * (1.0 - 0.25 * q * q).ln();
                if lw.is_finite() {
                    cand.push(j as u32);
                    cum.push(lw);
                    mx = mx.max(lw);
                }
            }
            let mut tot = 0.0f64;
            let mut kept = 0;
            for k in 0..cand.len() {
                let wk = (cum[k] - mx).exp();
                if wk > 0.0 {
                    tot += wk;
                    cand[kept] = cand[k];
                    cum[kept] = tot;
                    kept += 1;
                }
            }
            if kept == 0 {
                continue;
            }
            cand.truncate(kept);
            cum.truncate(kept);
            let mut rng = anchor_stream(seed, i);
            for p in (0..m).filter(|&p| is_pos(p)) {
                let u = rng.uniform() * tot;
                let k = cum.partition_point(|&c| c <= u).min(kept - 1);
                out.push([i as u32, p as u32, cand[k]]);
            }
        }
        out
    });
    Ok(parts.concat())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::losses::common::testutil::*;
    use crate::losses::pairsim::testkit::{sims, unit_rows};

    struct Case {
        x: Vec<f64>,
        l: Vec<i64>,
        rx: Vec<f64>,
        rl: Vec<i64>,
        n: usize,
        m: usize,
        d: usize,
    }

    impl Case {
        fn batch(&self) -> Batch<'_, f64> {
            let refs = if self.m == 0 { None } else { Some((&self.rx[..], self.m, &self.rl[..])) };
            Batch { x: &self.x, n: self.n, d: self.d, labels: &self.l, refs }
        }
        /// (references, their count, their labels, same)
        fn r(&self) -> (&[f64], usize, &[i64], bool) {
            if self.m == 0 { (&self.x, self.n, &self.l, true) } else { (&self.rx, self.m, &self.rl, false) }
        }
        fn dist(&self, i: usize, j: usize, metric: Metric) -> f64 {
            let (r, _, _, _) = self.r();
            metric.of_sq(dist(&self.x, i, r, j, self.d))
        }
        fn is_pos(&self, i: usize, j: usize) -> bool {
            let (_, _, rl, same) = self.r();
            rl[j] == self.l[i] && !(same && i == j)
        }
        fn is_neg(&self, i: usize, j: usize) -> bool {
            self.r().2[j] != self.l[i]
        }
    }

    /// Layouts: small, two tiles, references, one class, singletons; unit rows (for cosine).
    fn cases() -> Vec<Case> {
        let mut rng = Rng(17);
        let mut out = Vec::new();
        for &(n, m, d, k) in &[(12usize, 0usize, 3usize, 3u64), (70, 0, 3, 6), (9, 75, 3, 4), (5, 0, 2, 1), (8, 0, 3, 1000), (7, 9, 2, 1000), (40, 0, 3, 2), (10, 60, 3, 2)] {
            let x = unit_rows(&mut rng, n, d);
            let l = rng.labels(n, k);
            let rx = unit_rows(&mut rng, m, d);
            let rl = rng.labels(m, k);
            out.push(Case { x, l, rx, rl, n, m, d });
        }
        out
    }

    const METRICS: [Metric; 3] = [Metric::Euclidean, Metric::SqEuclidean, Metric::Cosine];
    const TYPES: [TripletType; 4] = [TripletType::All, TripletType::Hard, TripletType::SemiHard, TripletType::Easy];

    fn brute_triplets(c: &Case, margin: f64, ty: TripletType, metric: Metric) -> Vec<[u32; 3]> {
        let mm = c.r().1;
        let mut out = Vec::new();
        for a in 0..c.n {
            for p in (0..mm).filter(|&p| c.is_pos(a, p)) {
                for q in (0..mm).filter(|&q| c.is_neg(a, q)) {
                    let t = c.dist(a, q, metric) - c.dist(a, p, metric);
                    let keep = match ty {
                        TripletType::All => t <= margin,
                        TripletType::Hard => t <= margin && t <= 0.0,
                        TripletType::SemiHard => t > 0.0 && t <= margin,
                        TripletType::Easy => t > margin,
                    };
                    if keep {
                        out.push([a as u32, p as u32, q as u32]);
                    }
                }
            }
        }
        out
    }

    #[test]
    fn triplet_margin_matches_brute_force() {
        for c in cases() {
            for metric in METRICS {
                for ty in TYPES {
                    for margin in [0.2, 0.05, -0.1, 10.0] {
                        let got = mine_triplet_margin(&c.batch(), margin, ty, metric).unwrap();
                        assert_eq!(got, brute_triplets(&c, margin, ty, metric), "{ty:?} {metric:?} {margin}");
                    }
                }
            }
        }
    }

    #[test]
    fn triplet_margin_dense_and_sparse_runs_agree() {
        // Many negatives per anchor and a wide margin range: runs listed both by scan and by sort.
        let mut rng = Rng(3);
        let (n, d) = (150usize, 4usize);
        let c = Case { x: unit_rows(&mut rng, n, d), l: rng.labels(n, 3), rx: vec![], rl: vec![], n, m: 0, d };
        for margin in [0.001, 0.01, 0.1, 0.5, 2.0] {
            for ty in TYPES {
                let got = mine_triplet_margin(&c.batch(), margin, ty, Metric::Euclidean).unwrap();
                assert_eq!(got, brute_triplets(&c, margin, ty, Metric::Euclidean));
            }
        }
    }

    #[test]
    fn pair_margin_matches_brute_force() {
        for c in cases() {
            let mm = c.r().1;
            for metric in METRICS {
                for (pm, nm) in [(0.2, 0.8), (0.5, 0.5), (-1.0, 10.0)] {
                    let (mut wp, mut wn) = (Vec::new(), Vec::new());
                    for a in 0..c.n {
                        for j in 0..mm {
                            let v = c.dist(a, j, metric);
                            if c.is_pos(a, j) && v > pm {
                                wp.push([a as u32, j as u32]);
                            }
                            if c.is_neg(a, j) && v < nm {
                                wn.push([a as u32, j as u32]);
                            }
                        }
                    }
                    assert_eq!(mine_pair_margin(&c.batch(), pm, nm, metric).unwrap(), (wp, wn));
                }
            }
        }
    }

    #[test]
    fn multi_similarity_matches_brute_force() {
        for c in cases() {
            let (r, mm, _, _) = c.r();
            let s = sims(&c.x, c.n, r, mm, c.d);
            for eps in [0.1, 0.0, 0.5, -0.05] {
                let (mut wp, mut wn) = (Vec::new(), Vec::new());
                for a in 0..c.n {
                    let ps: Vec<usize> = (0..mm).filter(|&j| c.is_pos(a, j)).collect();
                    let ns: Vec<usize> = (0..mm).filter(|&j| c.is_neg(a, j)).collect();
                    if ps.is_empty() || ns.is_empty() {
                        continue;
                    }
                    let minp = ps.iter().map(|&j| s[a * mm + j]).fold(f64::INFINITY, f64::min);
                    let maxn = ns.iter().map(|&j| s[a * mm + j]).fold(f64::NEG_INFINITY, f64::max);
                    wp.extend(ps.iter().filter(|&&j| s[a * mm + j] - eps < maxn).map(|&j| [a as u32, j as u32]));
                    wn.extend(ns.iter().filter(|&&j| s[a * mm + j] + eps > minp).map(|&j| [a as u32, j as u32]));
                }
                assert_eq!(mine_multi_similarity(&c.batch(), eps).unwrap(), (wp, wn), "eps {eps}");
            }
        }
    }

    /// The sampling weights of anchor a's negatives (0 where excluded), brute force.
    fn dw_weights(c: &Case, a: usize, cutoff: f64, nzc: f64) -> Vec<f64> {
        let mm = c.r().1;
        let dim = c.d as f64;
        let lw: Vec<Option<f64>> = (0..mm)
            .map(|j| {
                if !c.is_neg(a, j) {
                    return None;
                }
                let q = c.dist(a, j, Metric::Euclidean).max(cutoff);
                let v = (2.0 - dim) * q.ln() - ((dim - 3.0) / 2.0) * (1.0 - 0.25 * q * q).ln();
                (q < nzc && v.is_finite()).then_some(v)
            })
            .collect();
        let mx = lw.iter().flatten().cloned().fold(f64::NEG_INFINITY, f64::max);
        let w: Vec<f64> = lw.iter().map(|v| v.map_or(0.0, |v| (v - mx).exp())).collect();
        let s: f64 = w.iter().sum();
        w.iter().map(|v| if s > 0.0 { v / s } else { 0.0 }).collect()
    }

    #[test]
    fn distance_weighted_gives_valid_triplets_and_none_without_weight() {
        for c in cases() {
            let mm = c.r().1;
            for (cutoff, nzc) in [(0.5, 1.4), (0.0, f64::INFINITY), (0.5, 0.3)] {
                let t = mine_distance_weighted(&c.batch(), cutoff, nzc, 9).unwrap();
                // One triplet per (anchor, positive) pair of anchors with a weighted negative, in order.
                let mut want = Vec::new();
                for a in 0..c.n {
                    let w = dw_weights(&c, a, cutoff, nzc);
                    if w.iter().all(|&v| v == 0.0) {
                        continue;
                    }
                    want.extend((0..mm).filter(|&p| c.is_pos(a, p)).map(|p| (a as u32, p as u32)));
                }
                let got: Vec<(u32, u32)> = t.iter().map(|t| (t[0], t[1])).collect();
                assert_eq!(got, want);
                for tr in &t {
                    let w = dw_weights(&c, tr[0] as usize, cutoff, nzc);
                    assert!(w[tr[2] as usize] > 0.0, "negative {tr:?} has weight 0");
                }
                if nzc < cutoff {
                    assert!(t.is_empty());
                }
            }
        }
    }

    #[test]
    fn distance_weighted_frequencies_follow_the_weights() {
        // 6 unit rows in 5-d, two classes; anchor 0 has 2 positives and 3 negatives.
        let mut rng = Rng(8);
        let (n, d) = (6usize, 5usize);
        let c = Case { x: unit_rows(&mut rng, n, d), l: vec![0, 0, 1, 1, 0, 1], rx: vec![], rl: vec![], n, m: 0, d };
        let (cutoff, nzc) = (0.5, 1.9);
        let draws = 40_000u64;
        let mut counts = vec![vec![0.0f64; n]; n];
        let mut per_anchor = vec![0.0f64; n];
        for seed in 0..draws {
            for t in mine_distance_weighted(&c.batch(), cutoff, nzc, seed).unwrap() {
                counts[t[0] as usize][t[2] as usize] += 1.0;
                per_anchor[t[0] as usize] += 1.0;
            }
        }
        let mut checked = 0;
        for a in 0..n {
            let w = dw_weights(&c, a, cutoff, nzc);
            for j in 0..n {
                if per_anchor[a] == 0.0 {
                    continue;
                }
                let f = counts[a][j] / per_anchor[a];
                let sd = (w[j] * (1.0 - w[j]) / per_anchor[a]).sqrt();
                assert!((f - w[j]).abs() <= 5.0 * sd + 1e-12, "anchor {a} neg {j}: {f} vs {}", w[j]);
                checked += (w[j] > 0.0 && w[j] < 1.0) as usize;
            }
        }
        assert!(checked >= 6, "too few non-trivial weights ({checked})");
    }

    #[test]
    fn distance_weighted_does_not_depend_on_the_thread_count() {
        let mut rng = Rng(2);
        let (n, m, d) = (200usize, 150usize, 6usize);
        let x: Vec<f32> = unit_rows(&mut rng, n, d).into_iter().map(|v| v as f32).collect();
        let rx: Vec<f32> = unit_rows(&mut rng, m, d).into_iter().map(|v| v as f32).collect();
        let l = rng.labels(n, 10);
        let rl = rng.labels(m, 10);
        for refs in [None, Some((&rx[..], m, &rl[..]))] {
            let b = Batch { x: &x, n, d, labels: &l, refs };
            let run = |t: usize| {
                let pool = rayon::ThreadPoolBuilder::new().num_threads(t).build().unwrap();
                pool.install(|| mine_distance_weighted(&b, 0.5, 1.4, 123).unwrap())
            };
            let one = run(1);
            assert!(!one.is_empty());
            assert_eq!(one, run(2));
            assert_ne!(one, pool_free_other_seed(&b));
        }
    }

    fn pool_free_other_seed(b: &Batch<f32>) -> Vec<[u32; 3]> {
        mine_distance_weighted(b, 0.5, 1.4, 124).unwrap()
    }

    #[test]
    fn bad_input_is_an_error() {
        let x = vec![1.0f64, 0.0, 0.0, 1.0];
        let l = vec![0i64, 1];
        let b = Batch { x: &x, n: 2, d: 2, labels: &l, refs: None };
        assert!(mine_triplet_margin(&b, f64::NAN, TripletType::All, Metric::Euclidean).is_err());
        assert!(mine_pair_margin(&b, 0.1, f64::INFINITY, Metric::Cosine).is_err());
        assert!(mine_multi_similarity(&b, f64::NAN).is_err());
        assert!(mine_distance_weighted(&b, f64::NAN, 1.4, 0).is_err());
        assert!(TripletType::parse("hardest").is_err());
        let bad = Batch { x: &x, n: 2, d: 2, labels: &l[..1], refs: None };
        assert!(mine_triplet_margin(&bad, 0.1, TripletType::All, Metric::Euclidean).is_err());
        let xn = vec![f64::NAN, 0.0, 0.0, 1.0];
        let bn = Batch { x: &xn, n: 2, d: 2, labels: &l, refs: None };
        assert!(mine_multi_similarity(&bn, 0.1).is_err());
    }
}
