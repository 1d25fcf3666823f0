//! Triplet margin loss with on-line mining, and the standalone miners.
//!
//! Per triplet (a, p, n) with y_a = y_p, a ≠ p, y_n ≠ y_a:
//! ℓ = max(0, d(a,p) − d(a,n) + margin), or softplus(d(a,p) − d(a,n) + margin)
//! when `soft`, with d = D² when `squared` else D (Euclidean).
//!
//! * `All`: mean over every valid triplet; `BatchAll`: mean over the triplets
//!   with ℓ > 0. Neither enumerates triplets: per anchor the negatives'
//!   distances are sorted once and the hinge sums come from prefix sums
//!   (O(B log B) per anchor); the soft variant loops over positives × negatives.
//! * `BatchHard`: per anchor the farthest positive and the nearest negative.
//! * `SemiHard`: per positive pair, the nearest negative with d(a,n) > d(a,p),
//!   else the farthest negative.
//!
//! Ties are broken towards the lowest reference index.

use super::common::{ordered_sum, sigmoid, softplus, sparse_backward, sqrt_and_inv, Batch};
use crate::error::{Error, Result};
use crate::linalg::sq_dist;
use crate::Real;

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
    fn sparse(self) -> bool {
        matches!(self, Mining::BatchHard | Mining::SemiHard)
    }
}

#[derive(Clone, Copy, Debug)]
pub struct TripletCfg {
    pub margin: f64,
    pub squared: bool,
    pub soft: bool,
    pub mining: Mining,
}

/// What backward needs: the mined triplets (sparse mining) and the normaliser.
#[derive(Clone, Debug, Default)]
pub struct TripletState {
    pub triplets: Vec<[u32; 3]>,
    pub norm: f64,
}

fn check_margin(margin: f64) -> Result<()> {
    if !margin.is_finite() {
        return Err(Error::InvalidParameter(format!("margin must be finite, got {margin}")));
    }
    Ok(())
}

/// Turns a tile row of squared distances into the loss's d in place.
#[inline]
fn to_d<T: Real>(row: &mut [T], squared: bool) {
    if !squared {
        row.iter_mut().for_each(|v| *v = v.sqrt());
    }
}

/// Sorts (distance, index) pairs by distance, then index.
fn sort_pairs<T: Real>(v: &mut [(T, u32)]) {
    v.sort_unstable_by(|a, b| a.0.partial_cmp(&b.0).unwrap_or(std::cmp::Ordering::Equal).then(a.1.cmp(&b.1)));
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
pub fn mine<T: Real>(b: &Batch<T>, kind: Mining, margin: f64, squared: bool) -> Result<Vec<[u32; 3]>> {
    b.validate()?;
    check_margin(margin)?;
    let (_, m, rl) = b.r();
    let same = b.same();
    let mg = T::c(margin);
    let parts = b.space().map_tiles(|r0, r1, s| {
        let mut out = Vec::new();
        for i in r0..r1 {
            let row = &mut s[(i - r0) * m..(i - r0 + 1) * m];
            to_d(row, squared);
            mine_row(kind, i, row, b.labels[i], rl, same, mg, &mut out);
        }
        out
    });
    Ok(parts.concat())
}

/// d(i, j) computed directly from the rows (exact for near-duplicates).
#[inline]
fn pair_d<T: Real>(x: &[T], i: usize, r: &[T], j: usize, d: usize, squared: bool) -> T {
    let s = sq_dist(&x[i * d..(i + 1) * d], &r[j * d..(j + 1) * d]);
    if squared { s } else { s.sqrt() }
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
    negs.sort_unstable_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
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

/// Loss value and the state its backward needs.
pub fn triplet_forward<T: Real>(b: &Batch<T>, cfg: &TripletCfg) -> Result<(f64, TripletState)> {
    b.validate()?;
    check_margin(cfg.margin)?;
    let (r, _, rl) = b.r();
    let d = b.d;
    if cfg.mining.sparse() {
        let triplets = mine(b, cfg.mining, cfg.margin, cfg.squared)?;
        let mg = T::c(cfg.margin);
        let mut sum = 0.0f64;
        for t in &triplets {
            let z = pair_d(b.x, t[0] as usize, r, t[1] as usize, d, cfg.squared)
                - pair_d(b.x, t[0] as usize, r, t[2] as usize, d, cfg.squared)
                + mg;
            sum += if cfg.soft { softplus(z) } else { z.max(T::zero()) }.to_f64_();
        }
        let norm = triplets.len() as f64;
        let loss = if norm > 0.0 { sum / norm } else { 0.0 };
        return Ok((loss, TripletState { triplets, norm }));
    }
    let m = b.r().1;
    let same = b.same();
    let parts = b.space().map_tiles(|r0, r1, s| {
        let mut acc = (0.0, 0.0, 0.0);
        for i in r0..r1 {
            let row = &mut s[(i - r0) * m..(i - r0 + 1) * m];
            to_d(row, cfg.squared);
            let (a, c, t) = dense_row(row, i, b.labels[i], rl, same, cfg);
            acc.0 += a;
            acc.1 += c;
            acc.2 += t;
        }
        acc
    });
    let sum = ordered_sum(parts.iter().map(|p| p.0));
    let norm = match cfg.mining {
        Mining::All => ordered_sum(parts.iter().map(|p| p.2)),
        _ => ordered_sum(parts.iter().map(|p| p.1)),
    };
    let loss = if norm > 0.0 { sum / norm } else { 0.0 };
    Ok((loss, TripletState { triplets: Vec::new(), norm }))
}

/// ∂L/∂embeddings into `gx` (n×d) and, with references, ∂L/∂refs into `gr` (m×d).
pub fn triplet_backward<T: Real>(
    b: &Batch<T>, cfg: &TripletCfg, state: &TripletState, gx: &mut [T], gr: &mut [T],
) -> Result<()> {
    b.validate()?;
    check_margin(cfg.margin)?;
    gx.iter_mut().for_each(|v| *v = T::zero());
    gr.iter_mut().for_each(|v| *v = T::zero());
    if state.norm <= 0.0 {
        return Ok(());
    }
    let (r, m, rl) = b.r();
    let d = b.d;
    let mg = T::c(cfg.margin);
    let w = T::c(1.0 / state.norm);
    let two = T::c(2.0);
    // Chain from ∂L/∂d to a distance coefficient (see Space::backward).
    let chain = |s: T| if cfg.squared { two } else { sqrt_and_inv(s).1 };
    if cfg.mining.sparse() {
        let mut pairs = Vec::with_capacity(2 * state.triplets.len());
        for t in &state.triplets {
            let (a, p, n) = (t[0] as usize, t[1] as usize, t[2] as usize);
            if a >= b.n || p >= m || n >= m {
                return Err(Error::InvalidInput("triplet index out of range".into()));
            }
            let sp = sq_dist(&b.x[a * d..(a + 1) * d], &r[p * d..(p + 1) * d]);
            let sn = sq_dist(&b.x[a * d..(a + 1) * d], &r[n * d..(n + 1) * d]);
            let (dp, dn) = if cfg.squared { (sp, sn) } else { (sp.sqrt(), sn.sqrt()) };
            let z = dp - dn + mg;
            let g = w * if cfg.soft { sigmoid(z) } else if z > T::zero() { T::one() } else { T::zero() };
            pairs.push((a as u32, p as u32, g * chain(sp)));
            pairs.push((a as u32, n as u32, -g * chain(sn)));
        }
        sparse_backward(b.x, b.n, r, m, d, b.same(), &pairs, gx, gr);
        return Ok(());
    }
    let same = b.same();
    b.space().backward(
        false,
        |r0, r1, s, c| {
            for i in r0..r1 {
                let srow = &s[(i - r0) * m..(i - r0 + 1) * m];
                let crow = &mut c[(i - r0) * m..(i - r0 + 1) * m];
                let yi = b.labels[i];
                let dv = |j: usize| if cfg.squared { srow[j] } else { srow[j].sqrt() };
                let pos: Vec<usize> = (0..m).filter(|&j| rl[j] == yi && !(same && j == i)).collect();
                let neg: Vec<usize> = (0..m).filter(|&j| rl[j] != yi).collect();
                if pos.is_empty() || neg.is_empty() {
                    continue;
                }
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
                    nd.sort_unstable_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
                    let mut th: Vec<T> = pos.iter().map(|&p| dv(p) + mg).collect();
                    for (&p, &t) in pos.iter().zip(&th) {
                        crow[p] = T::c(nd.partition_point(|&v| v < t) as f64) * w;
                    }
                    th.sort_unstable_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
                    for &n in &neg {
                        let dn = dv(n);
                        let cnt = th.len() - th.partition_point(|&t| t <= dn);
                        crow[n] = -T::c(cnt as f64) * w;
                    }
                }
                for j in pos.iter().chain(neg.iter()) {
                    crow[*j] *= chain(srow[*j]);
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

    fn dd(x: &[f64], i: usize, r: &[f64], j: usize, d: usize, sq: bool) -> f64 {
        let s = dist(x, i, r, j, d);
        if sq { s } else { s.sqrt() }
    }

    /// Every valid triplet, enumerated.
    fn all_triplets(n: usize, l: &[i64], m: usize, rl: &[i64], same: bool) -> Vec<[usize; 3]> {
        let mut v = Vec::new();
        for a in 0..n {
            for p in 0..m {
                if rl[p] != l[a] || (same && p == a) {
                    continue;
                }
                for nn in 0..m {
                    if rl[nn] != l[a] {
                        v.push([a, p, nn]);
                    }
                }
            }
        }
        v
    }

    fn brute_mine(x: &[f64], n: usize, l: &[i64], r: &[f64], m: usize, rl: &[i64], d: usize, same: bool, kind: Mining, mg: f64, sq: bool) -> Vec<[u32; 3]> {
        let all = all_triplets(n, l, m, rl, same);
        let mut out = Vec::new();
        match kind {
            Mining::All => all.iter().for_each(|t| out.push([t[0] as u32, t[1] as u32, t[2] as u32])),
            Mining::BatchAll => {
                for t in &all {
                    if dd(x, t[0], r, t[1], d, sq) - dd(x, t[0], r, t[2], d, sq) + mg > 0.0 {
                        out.push([t[0] as u32, t[1] as u32, t[2] as u32]);
                    }
                }
            }
            Mining::BatchHard => {
                for a in 0..n {
                    let ts: Vec<_> = all.iter().filter(|t| t[0] == a).collect();
                    if ts.is_empty() {
                        continue;
                    }
                    let mut bp = ts[0][1];
                    let mut bn = ts[0][2];
                    for t in &ts {
                        let (p, q) = (t[1], t[2]);
                        if dd(x, a, r, p, d, sq) > dd(x, a, r, bp, d, sq) || (dd(x, a, r, p, d, sq) == dd(x, a, r, bp, d, sq) && p < bp) { bp = p; }
                        if dd(x, a, r, q, d, sq) < dd(x, a, r, bn, d, sq) || (dd(x, a, r, q, d, sq) == dd(x, a, r, bn, d, sq) && q < bn) { bn = q; }
                    }
                    out.push([a as u32, bp as u32, bn as u32]);
                }
            }
            Mining::SemiHard => {
                let mut last = (usize::MAX, usize::MAX);
                for t in &all {
                    if (t[0], t[1]) == last { continue; }
                    last = (t[0], t[1]);
                    let (a, p) = last;
                    let dp = dd(x, a, r, p, d, sq);
                    let negs: Vec<usize> = all.iter().filter(|u| u[0] == a && u[1] == p).map(|u| u[2]).collect();
                    let semi: Vec<usize> = negs.iter().copied().filter(|&q| dd(x, a, r, q, d, sq) > dp).collect();
                    let pick = if !semi.is_empty() {
                        *semi.iter().min_by(|&&u, &&v| dd(x, a, r, u, d, sq).partial_cmp(&dd(x, a, r, v, d, sq)).unwrap().then(u.cmp(&v))).unwrap()
                    } else {
                        *negs.iter().min_by(|&&u, &&v| dd(x, a, r, v, d, sq).partial_cmp(&dd(x, a, r, u, d, sq)).unwrap().then(u.cmp(&v))).unwrap()
                    };
                    out.push([a as u32, p as u32, pick as u32]);
                }
            }
        }
        out
    }

    fn brute_loss(x: &[f64], n: usize, l: &[i64], r: &[f64], m: usize, rl: &[i64], d: usize, same: bool, cfg: &TripletCfg) -> f64 {
        let ts = if cfg.mining.sparse() {
            brute_mine(x, n, l, r, m, rl, d, same, cfg.mining, cfg.margin, cfg.squared)
        } else {
            brute_mine(x, n, l, r, m, rl, d, same, Mining::All, cfg.margin, cfg.squared)
        };
        let (mut s, mut c) = (0.0, 0.0);
        for t in &ts {
            let z = dd(x, t[0] as usize, r, t[1] as usize, d, cfg.squared) - dd(x, t[0] as usize, r, t[2] as usize, d, cfg.squared) + cfg.margin;
            let v = if cfg.soft { softplus(z) } else { z.max(0.0) };
            s += v;
            if cfg.mining != Mining::BatchAll || v > 0.0 { c += 1.0; }
        }
        if c > 0.0 { s / c } else { 0.0 }
    }

    #[test]
    fn miners_and_losses_match_brute_force() {
        let mut rng = Rng(11);
        for &(n, m, d, k) in &[(12usize, 0usize, 3usize, 3u64), (70, 0, 2, 6), (9, 75, 3, 4), (5, 0, 2, 1)] {
            let x = rng.normal_vec(n * d);
            let l = rng.labels(n, k);
            let rx = rng.normal_vec(m * d);
            let rl = rng.labels(m, k);
            let same = m == 0;
            let refs = if same { None } else { Some((&rx[..], m, &rl[..])) };
            let b = Batch { x: &x, n, d, labels: &l, refs };
            let (rr, mm, rrl) = b.r();
            for kind in [Mining::All, Mining::BatchAll, Mining::BatchHard, Mining::SemiHard] {
                for sq in [false, true] {
                    assert_eq!(mine(&b, kind, 0.3, sq).unwrap(), brute_mine(&x, n, &l, rr, mm, rrl, d, same, kind, 0.3, sq), "{kind:?}");
                    for soft in [false, true] {
                        let cfg = TripletCfg { margin: 0.3, squared: sq, soft, mining: kind };
                        let (v, st) = triplet_forward(&b, &cfg).unwrap();
                        let want = brute_loss(&x, n, &l, rr, mm, rrl, d, same, &cfg);
                        assert!((v - want).abs() < 1e-9 * (1.0 + want.abs()), "{kind:?} sq={sq} soft={soft}: {v} vs {want}");
                        let mut gx = vec![0.0; n * d];
                        let mut gr = vec![0.0; m * d];
                        triplet_backward(&b, &cfg, &st, &mut gx, &mut gr).unwrap();
                        // Finite differences with the mined set held fixed (it is locally constant).
                        let f = |xx: &[f64]| {
                            let bb = Batch { x: xx, n, d, labels: &l, refs };
                            let (rr2, mm2, rrl2) = bb.r();
                            brute_loss(xx, n, &l, rr2, mm2, rrl2, d, same, &cfg)
                        };
                        assert_close(&gx, &fd_grad(&x, &f), 1e-4);
                        if !same {
                            let fr = |rr2: &[f64]| brute_loss(&x, n, &l, rr2, m, &rl, d, false, &cfg);
                            assert_close(&gr, &fd_grad(&rx, &fr), 1e-4);
                        }
                    }
                }
            }
        }
    }
}
