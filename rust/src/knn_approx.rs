//! Approximate k-nearest neighbours for large n: a forest of random-projection
//! trees seeds each point's list, then rounds of neighbour-of-neighbour
//! refinement (NN-descent, "pull" form) improve it.
//!
//! Determinism for any thread count: every tree draws from its own seeded
//! stream and is built sequentially; in each refinement round every point
//! reads a snapshot of the graph and writes only its own list, which keeps the
//! k smallest (distance, index) pairs it was offered — a set that does not
//! depend on the order of the offers.

use crate::distances::{unit_rows, Metric};
use crate::error::{check_finite, check_len, Error, Result};
use crate::knn::{knn_exact, Knn};
use crate::linalg::dot;
use crate::tsne::SplitMix;
use crate::Real;
use rayon::prelude::*;

const ROWS_TILE: usize = 64;

crate::simd::multiversion! {
    /// Σ (a_k − b_k)², AVX2 where available, with 32 independent accumulators: the
    /// search is bound by this call, and one 8-lane accumulator would serialise on
    /// the add latency. The summation order is fixed (independent of threads).
    fn dist2<T>(a: &[T], b: &[T]) -> T {
        let n = a.len().min(b.len());
        let (a, b) = (&a[..n], &b[..n]);
        let mut acc = [T::zero(); 32];
        let chunks = n / 32;
        for c in 0..chunks {
            for l in 0..32 {
                let t = a[c * 32 + l] - b[c * 32 + l];
                acc[l] += t * t;
            }
        }
        let mut s = T::zero();
        for i in chunks * 32..n {
            let t = a[i] - b[i];
            s += t * t;
        }
        for w in [16, 8, 4, 2, 1] {
            for l in 0..w {
                acc[l] += acc[l + w];
            }
        }
        s + acc[0]
    }
}

/// A bounded max-heap of (distance, index): keeps the k smallest distinct indices offered.
struct Heap<'a, T> {
    d: &'a mut [T],
    i: &'a mut [u32],
    new: &'a mut [bool],
}

#[inline(always)]
fn gt<T: Real>(a: (T, u32), b: (T, u32)) -> bool {
    a.0 > b.0 || (a.0 == b.0 && a.1 > b.1)
}

impl<'a, T: Real> Heap<'a, T> {
    #[inline]
    fn would_accept(&self, dist: T, idx: u32) -> bool {
        gt((self.d[0], self.i[0]), (dist, idx))
    }
    #[inline]
    fn contains(&self, idx: u32) -> bool {
        self.i.contains(&idx)
    }
    /// Inserts (dist, idx) if it is among the k smallest and not present.
    fn push(&mut self, dist: T, idx: u32) -> bool {
        if !self.would_accept(dist, idx) || self.contains(idx) {
            return false;
        }
        let k = self.d.len();
        let mut pos = 0;
        loop {
            let (l, r) = (2 * pos + 1, 2 * pos + 2);
            let mut big = pos;
            let mut bv = (dist, idx);
            if l < k && gt((self.d[l], self.i[l]), bv) {
                big = l;
                bv = (self.d[l], self.i[l]);
            }
            if r < k && gt((self.d[r], self.i[r]), bv) {
                big = r;
            }
            if big == pos {
                break;
            }
            self.d[pos] = self.d[big];
            self.i[pos] = self.i[big];
            self.new[pos] = self.new[big];
            pos = big;
        }
        self.d[pos] = dist;
        self.i[pos] = idx;
        self.new[pos] = true;
        true
    }
}

/// Leaves of one random-projection tree: `perm` split into ranges by `bounds`.
struct RpTree {
    perm: Vec<u32>,
    bounds: Vec<u32>,
    leaf_of: Vec<u32>,
}

fn build_tree<T: Real>(x: &[T], n: usize, d: usize, leaf: usize, seed: u64) -> RpTree {
    let mut rng = SplitMix(seed);
    let mut perm: Vec<u32> = (0..n as u32).collect();
    let mut leaves: Vec<(usize, usize)> = Vec::new();
    let mut stack = vec![(0usize, n)];
    let mut normal = vec![T::zero(); d];
    let mut side = Vec::new();
    while let Some((s, e)) = stack.pop() {
        let len = e - s;
        if len <= leaf {
            leaves.push((s, e));
            continue;
        }
        let a = perm[s + rng.below(len)] as usize;
        let mut b = perm[s + rng.below(len)] as usize;
        for _ in 0..3 {
            if b != a {
                break;
            }
            b = perm[s + rng.below(len)] as usize;
        }
        let (xa, xb) = (&x[a * d..a * d + d], &x[b * d..b * d + d]);
        let mut off = T::zero();
        for t in 0..d {
            normal[t] = xa[t] - xb[t];
            off += normal[t] * (xa[t] + xb[t]) * T::c(0.5);
        }
        side.clear();
        side.extend(perm[s..e].iter().map(|&p| dot(&normal, &x[p as usize * d..p as usize * d + d]) > off));
        let n_left = side.iter().filter(|&&v| !v).count();
        let mid = if n_left == 0 || n_left == len {
            // Degenerate split (duplicates): cut the range in half.
            s + len / 2
        } else {
            let seg = &mut perm[s..e];
            let mut left: Vec<u32> = Vec::with_capacity(n_left);
            let mut right: Vec<u32> = Vec::with_capacity(len - n_left);
            for (&p, &r) in seg.iter().zip(side.iter()) {
                if r { right.push(p) } else { left.push(p) }
            }
            seg[..n_left].copy_from_slice(&left);
            seg[n_left..].copy_from_slice(&right);
            s + n_left
        };
        stack.push((mid, e));
        stack.push((s, mid));
    }
    leaves.sort_unstable();
    let mut bounds = Vec::with_capacity(leaves.len() + 1);
    let mut leaf_of = vec![0u32; n];
    bounds.push(0u32);
    for (l, &(s, e)) in leaves.iter().enumerate() {
        bounds.push(e as u32);
        for &p in &perm[s..e] {
            leaf_of[p as usize] = l as u32;
        }
    }
    RpTree { perm, bounds, leaf_of }
}

/// Approximate kNN (same contract as [`knn_exact`]: rows sorted by distance,
/// then index; distances in the requested metric). Falls back to the exact
/// search for small n.
pub fn knn_approx<T: Real>(x: &[T], n: usize, d: usize, k: usize, metric: Metric, seed: u64) -> Result<Knn<T>> {
    check_len("x", x.len(), n, d)?;
    check_finite("x", x)?;
    if n < 2 || d == 0 {
        return Err(Error::Shape(format!("kNN needs at least 2 points with 1 feature, got ({n}, {d})")));
    }
    if k == 0 || k >= n {
        return Err(Error::InvalidParameter(format!("k must be in 1..={} for {n} points, got {k}", n - 1)));
    }
    let leaf = (k + 1).max(32);
    if n <= 4 * leaf {
        return knn_exact(x, n, d, k, metric);
    }
    let unit;
    let data: &[T] = if metric == Metric::Cosine {
        unit = unit_rows(x, n, d).0;
        &unit
    } else {
        x
    };
    let n_trees = if n < 50_000 { 6 } else { 8 };
    let trees: Vec<RpTree> = (0..n_trees)
        .into_par_iter()
        .map(|t| build_tree(data, n, d, leaf, seed.wrapping_mul(0x2545_F491_4F6C_DD1D).wrapping_add(t as u64 + 1)))
        .collect();
    let mut hd = vec![T::infinity(); n * k];
    let mut hi = vec![u32::MAX; n * k];
    let mut hn = vec![false; n * k];
    let row = |i: usize| &data[i * d..i * d + d];
    // Seed each list with its leaf-mates in every tree.
    hd.par_chunks_mut(ROWS_TILE * k)
        .zip(hi.par_chunks_mut(ROWS_TILE * k))
        .zip(hn.par_chunks_mut(ROWS_TILE * k))
        .enumerate()
        .for_each(|(t, ((dd, ii), nn))| {
            for (r, ((dr, ir), nr)) in dd.chunks_mut(k).zip(ii.chunks_mut(k)).zip(nn.chunks_mut(k)).enumerate() {
                let i = t * ROWS_TILE + r;
                let mut h = Heap { d: dr, i: ir, new: nr };
                for tr in &trees {
                    let l = tr.leaf_of[i] as usize;
                    for &j in &tr.perm[tr.bounds[l] as usize..tr.bounds[l + 1] as usize] {
                        if j as usize != i {
                            let dist = dist2(row(i), row(j as usize));
                            h.push(dist, j);
                        }
                    }
                }
            }
        });
    drop(trees);
    // Neighbour-of-neighbour refinement.
    let s1 = k.min(40);
    let s2 = k.min(20);
    let mut snap_i = vec![0u32; n * k];
    let mut snap_new = vec![false; n * k];
    for _round in 0..8 {
        // Snapshot: each row sorted ascending, with its "new" flags; then clear flags.
        snap_i.par_chunks_mut(k).zip(snap_new.par_chunks_mut(k)).enumerate().for_each(|(i, (si, sn))| {
            let mut v: Vec<(T, u32, bool)> = (0..k).map(|t| (hd[i * k + t], hi[i * k + t], hn[i * k + t])).collect();
            v.sort_unstable_by(|a, b| a.0.partial_cmp(&b.0).unwrap_or(std::cmp::Ordering::Equal).then(a.1.cmp(&b.1)));
            for (t, e) in v.iter().enumerate() {
                si[t] = e.1;
                sn[t] = e.2;
            }
        });
        hn.par_iter_mut().for_each(|v| *v = false);
        // Reverse lists of the first s2 neighbours (in index order, deterministic).
        let mut rcount = vec![0usize; n + 1];
        for i in 0..n {
            for &j in &snap_i[i * k..i * k + s2] {
                if j != u32::MAX {
                    rcount[j as usize + 1] += 1;
                }
            }
        }
        for i in 0..n {
            rcount[i + 1] += rcount[i];
        }
        let mut rnext = rcount.clone();
        let mut rev = vec![0u32; rcount[n]];
        for i in 0..n {
            for &j in &snap_i[i * k..i * k + s2] {
                if j != u32::MAX {
                    rev[rnext[j as usize]] = i as u32;
                    rnext[j as usize] += 1;
                }
            }
        }
        let updates: usize = hd
            .par_chunks_mut(ROWS_TILE * k)
            .zip(hi.par_chunks_mut(ROWS_TILE * k))
            .zip(hn.par_chunks_mut(ROWS_TILE * k))
            .enumerate()
            .map(|(t, ((dd, ii), nn))| {
                let mut cand: Vec<u32> = Vec::with_capacity(s1 * s2 + 64);
                let mut count = 0;
                for (r, ((dr, ir), nr)) in dd.chunks_mut(k).zip(ii.chunks_mut(k)).zip(nn.chunks_mut(k)).enumerate() {
                    let i = t * ROWS_TILE + r;
                    cand.clear();
                    let my = &snap_i[i * k..i * k + k];
                    let my_new = &snap_new[i * k..i * k + k];
                    for a in 0..s1 {
                        let j = my[a];
                        if j == u32::MAX {
                            continue;
                        }
                        let j = j as usize;
                        for b in 0..s2 {
                            let l = snap_i[j * k + b];
                            if l != u32::MAX && (my_new[a] || snap_new[j * k + b]) {
                                cand.push(l);
                            }
                        }
                    }
                    let rv = &rev[rcount[i]..rcount[i + 1]];
                    for &r2 in rv.iter().take(2 * s1) {
                        cand.push(r2);
                        for b in 0..s2 {
                            let l = snap_i[r2 as usize * k + b];
                            if l != u32::MAX && snap_new[r2 as usize * k + b] {
                                cand.push(l);
                            }
                        }
                    }
                    cand.sort_unstable();
                    cand.dedup();
                    let mut h = Heap { d: dr, i: ir, new: nr };
                    for &c in &cand {
                        if c as usize == i {
                            continue;
                        }
                        // Distance before the O(k) membership scan: most candidates are
                        // farther than the current k-th and are rejected without it.
                        let dist = dist2(row(i), row(c as usize));
                        if h.push(dist, c) {
                            count += 1;
                        }
                    }
                }
                count
            })
            .sum();
        if (updates as f64) < 0.001 * (n * k) as f64 {
            break;
        }
    }
    drop((snap_i, snap_new, hn));
    // A row the forest and the refinement left short (possible only for pathological
    // inputs, e.g. tiny leaves of duplicates) is completed by a brute-force scan.
    hd.par_chunks_mut(k).zip(hi.par_chunks_mut(k)).enumerate().for_each(|(i, (dr, ir))| {
        if ir.contains(&u32::MAX) {
            let mut nr = vec![false; k];
            let mut h = Heap { d: dr, i: ir, new: &mut nr };
            for j in 0..n {
                if j != i {
                    h.push(dist2(row(i), row(j)), j as u32);
                }
            }
        }
    });
    // Sort rows in place and convert distances (the heaps become the output: no second n × k copy).
    hi.par_chunks_mut(k).zip(hd.par_chunks_mut(k)).for_each(|(io, dout)| {
        let mut v: Vec<(T, u32)> = dout.iter().cloned().zip(io.iter().cloned()).collect();
        v.sort_unstable_by(|a, b| a.0.partial_cmp(&b.0).unwrap_or(std::cmp::Ordering::Equal).then(a.1.cmp(&b.1)));
        for (t, e) in v.iter().enumerate() {
            io[t] = e.1;
            dout[t] = match metric {
                Metric::SqEuclidean => e.0,
                Metric::Euclidean => e.0.sqrt(),
                Metric::Cosine => e.0 * T::c(0.5),
            };
        }
    });
    Ok(Knn { n, k, indices: hi, distances: hd })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn high_recall_on_clusters() {
        let (n, d, k) = (3000, 10, 15);
        let mut rng = SplitMix(11);
        let x: Vec<f64> = (0..n * d).map(|t| rng.uniform() + ((t / d) % 7) as f64 * 0.3).collect();
        let ex = knn_exact(&x, n, d, k, Metric::SqEuclidean).unwrap();
        let ap = knn_approx(&x, n, d, k, Metric::SqEuclidean, 5).unwrap();
        let mut hit = 0;
        for i in 0..n {
            let e = &ex.indices[i * k..i * k + k];
            hit += ap.indices[i * k..i * k + k].iter().filter(|j| e.contains(j)).count();
        }
        let recall = hit as f64 / (n * k) as f64;
        assert!(recall > 0.95, "recall {recall}");
        let again = knn_approx(&x, n, d, k, Metric::SqEuclidean, 5).unwrap();
        assert_eq!(again.indices, ap.indices);
    }
}
