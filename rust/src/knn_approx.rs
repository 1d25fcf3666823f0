//! Approximate k-nearest neighbours for large n: a forest of random-projection
//! trees seeds each point's list (all pairs within each leaf), then rounds of
//! NN-descent's local join (Dong, Moses & Li 2011, "Efficient k-nearest neighbor
//! graph construction for generic similarity measures"; sampled candidate lists
//! as in pynndescent) refine it.
//!
//! Local join: each point u samples at most `max_candidates` "new" (not yet
//! joined) and "old" neighbours from its forward and reverse lists; every pair
//! among new × (new ∪ old) is one distance, offered to both endpoints. This needs
//! far fewer distances than each point scanning its neighbours' neighbours.
//!
//! Memory locality: the search runs on a copy of the rows permuted into the leaf
//! order of the first tree, so that neighbours are mostly near in memory (at
//! 250k × 50 float32 the data is 50 MB, far beyond cache); indices are mapped
//! back at the end.
//!
//! Determinism for any thread count: trees draw from their own seeded streams;
//! candidate sampling uses a hash of (seed, round, pair) as the priority; offers
//! are applied under a per-row lock to a bounded heap that keeps the k smallest
//! distinct (distance, index) pairs offered — a set independent of the order of
//! the offers (an evicted entry can never come back: the heap's maximum only
//! decreases), and every read of a list is order-independent.

use crate::distances::{unit_rows, Metric};
use crate::error::{check_finite, check_len, Error, Result};
use crate::knn::{knn_exact, Knn};
use crate::linalg::dot;
use crate::rng::splitmix64;
use crate::tsne::SplitMix;
use crate::Real;
use rayon::prelude::*;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

const ROWS_TILE: usize = 64;
/// Rounds stop when fewer than this fraction of the n·k entries changed
/// (pynndescent's δ, whose default is 0.001: the last rounds of a converging
/// search change little of recall@k — on the 100k × 50 mixture δ = 0.004 gave
/// 0.990 and δ = 0.015 0.975 — and cost as much as the first).
const DELTA: f64 = 0.01;
const MAX_ROUNDS: usize = 12;
/// Flags of heap entries: already joined, not yet joined, inserted in this round.
const OLD: u8 = 0;
const NEW: u8 = 1;
const FRESH: u8 = 2;
const EMPTY: u64 = u64::MAX;

/// Σ (a_k − b_k)²: 8 lanes (one AVX register of f32) over the 8-element chunks,
/// the tail added serially, then the lanes reduced pairwise. The summation order
/// is fixed by the element index (independent of threads, of the instruction set
/// — no contraction into FMA — and of which row is `a`), so sq_dist(a, b) ==
/// sq_dist(b, a) bit for bit; [`sq_dist4`] computes the same bits.
#[inline(always)]
fn sq_dist<T: Real>(a: &[T], b: &[T]) -> T {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [T::zero(); 8];
    for (x, y) in a.chunks_exact(8).zip(b.chunks_exact(8)) {
        for l in 0..8 {
            let t = x[l] - y[l];
            acc[l] += t * t;
        }
    }
    let mut s = T::zero();
    for i in n / 8 * 8..n {
        let t = a[i] - b[i];
        s += t * t;
    }
    reduce8(acc, s)
}

#[inline(always)]
fn reduce8<T: Real>(mut acc: [T; 8], s: T) -> T {
    for l in 0..4 {
        acc[l] += acc[l + 4];
    }
    for l in 0..2 {
        acc[l] += acc[l + 2];
    }
    s + (acc[0] + acc[1])
}

/// [`sq_dist`] of `a` against four rows at once (the loads of `a` shared, four
/// independent accumulators in flight), the same bits as four calls.
#[inline(always)]
fn sq_dist4<T: Real>(a: &[T], b: [&[T]; 4]) -> [T; 4] {
    let n = b.iter().fold(a.len(), |m, r| m.min(r.len()));
    let a = &a[..n];
    let (b0, b1, b2, b3) = (&b[0][..n], &b[1][..n], &b[2][..n], &b[3][..n]);
    let mut acc = [[T::zero(); 8]; 4];
    let mut c = 0;
    while c + 8 <= n {
        let x = &a[c..c + 8];
        let (y0, y1, y2, y3) = (&b0[c..c + 8], &b1[c..c + 8], &b2[c..c + 8], &b3[c..c + 8]);
        for l in 0..8 {
            let t0 = x[l] - y0[l];
            let t1 = x[l] - y1[l];
            let t2 = x[l] - y2[l];
            let t3 = x[l] - y3[l];
            acc[0][l] += t0 * t0;
            acc[1][l] += t1 * t1;
            acc[2][l] += t2 * t2;
            acc[3][l] += t3 * t3;
        }
        c += 8;
    }
    let mut s = [T::zero(); 4];
    for i in c..n {
        for (j, y) in [b0, b1, b2, b3].iter().enumerate() {
            let t = a[i] - y[i];
            s[j] += t * t;
        }
    }
    [reduce8(acc[0], s[0]), reduce8(acc[1], s[1]), reduce8(acc[2], s[2]), reduce8(acc[3], s[3])]
}

/// Hints the cache lines of `v` into L1: the join reads ~30 rows and heaps
/// scattered over memory, and issuing their loads together overlaps the misses.
#[inline(always)]
fn prefetch<V>(v: &[V]) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let bytes = std::mem::size_of_val(v);
        let p = v.as_ptr() as *const i8;
        let mut o = 0;
        while o < bytes {
            // SAFETY: a hint on an address inside `v`; prefetches never fault.
            #[allow(unused_unsafe)]
            unsafe {
                _mm_prefetch::<_MM_HINT_T0>(p.add(o))
            };
            o += 64;
        }
        if bytes > 0 {
            // The last line, when the slice is not line-aligned.
            #[allow(unused_unsafe)]
            unsafe {
                _mm_prefetch::<_MM_HINT_T0>(p.add(bytes - 1))
            };
        }
    }
}

/// Hints the cache line at `p` into L1 (see [`prefetch`]); any address is allowed.
#[inline(always)]
fn prefetch_line<V>(p: *const V) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        // SAFETY: a hint; prefetches never fault and `p` is not dereferenced.
        #[allow(unused_unsafe)]
        unsafe {
            _mm_prefetch::<_MM_HINT_T0>(p as *const i8)
        };
    }
}

crate::simd::multiversion! {
    /// [`sq_dist`], AVX2 where available.
    fn dist2<T>(a: &[T], b: &[T]) -> T {
        sq_dist(a, b)
    }
}

crate::simd::multiversion! {
    /// The distances of one join block: rows `idx` of the n × d `x`, of which the
    /// first `a` are "new"; out[s·L + t] for s < a, s < t < L (L = idx.len()) is
    /// [`sq_dist`] of rows idx[s] and idx[t] — the same bits as [`dist2`], so the
    /// values stay a fixed, symmetric function of the pair. One dispatch per block.
    fn block_dist<T>(x: &[T], d: usize, idx: &[u32], a: usize, out: &mut [T]) -> () {
        let l = idx.len();
        let row = |i: u32| &x[i as usize * d..i as usize * d + d];
        for s in 0..a.min(l) {
            let xs = row(idx[s]);
            let mut t = s + 1;
            while t + 4 <= l {
                let v = sq_dist4(xs, [row(idx[t]), row(idx[t + 1]), row(idx[t + 2]), row(idx[t + 3])]);
                out[s * l + t..s * l + t + 4].copy_from_slice(&v);
                t += 4;
            }
            for t in t..l {
                out[s * l + t] = sq_dist(xs, row(idx[t]));
            }
        }
    }
}

/// A bounded max-heap of (distance, index): keeps the k smallest distinct indices offered.
struct Heap<'a, T> {
    d: &'a mut [T],
    i: &'a mut [u32],
    flag: &'a mut [u8],
}

#[inline(always)]
fn gt<T: Real>(a: (T, u32), b: (T, u32)) -> bool {
    a.0 > b.0 || (a.0 == b.0 && a.1 > b.1)
}

impl<'a, T: Real> Heap<'a, T> {
    /// Inserts (dist, idx) if it is among the k smallest and not present.
    fn push(&mut self, dist: T, idx: u32) -> bool {
        // Compare first: most offers are farther than the k-th and skip the O(k) scan.
        if !gt((self.d[0], self.i[0]), (dist, idx)) || has(self.i, idx) {
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
            self.flag[pos] = self.flag[big];
            pos = big;
        }
        self.d[pos] = dist;
        self.i[pos] = idx;
        self.flag[pos] = FRESH;
        true
    }
}

/// Whether `v` occurs in `h`: a branch-free OR over the row, which vectorises
/// (`contains` stops at the first hit and does not).
#[inline(always)]
fn has<V: Copy + PartialEq>(h: &[V], v: V) -> bool {
    h.iter().fold(false, |a, &x| a | (x == v))
}

/// A bounded max-heap of u64 keys (priority << 32 | index): keeps the `len` smallest distinct keys.
fn key_push(h: &mut [u64], key: u64) {
    if key >= h[0] || has(h, key) {
        return;
    }
    let m = h.len();
    let mut pos = 0;
    loop {
        let (l, r) = (2 * pos + 1, 2 * pos + 2);
        let mut big = pos;
        let mut bv = key;
        if l < m && h[l] > bv {
            big = l;
            bv = h[l];
        }
        if r < m && h[r] > bv {
            big = r;
        }
        if big == pos {
            break;
        }
        h[pos] = h[big];
        pos = big;
    }
    h[pos] = key;
}

/// Per-row spin locks. Every list is written only under its row's lock; threads
/// hold one lock at a time, so there is no deadlock.
struct Locks(Vec<AtomicBool>);

impl Locks {
    #[inline]
    fn lock(&self, r: usize) {
        let mut spins = 0u32;
        while self.0[r].compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed).is_err() {
            spins += 1;
            if spins < 64 {
                std::hint::spin_loop();
            } else {
                // A preempted holder (loaded box): let it run.
                std::thread::yield_now();
            }
        }
    }
    #[inline]
    fn unlock(&self, r: usize) {
        self.0[r].store(false, Ordering::Release);
    }
}

/// The n × k heaps, shared by the workers; row r is touched only under lock r.
struct Graph<T> {
    d: *mut T,
    i: *mut u32,
    flag: *mut u8,
    /// Row r's current k-th distance (f64 bits), read without the lock as a
    /// filter: a stale value is larger (the maximum only decreases), so the filter
    /// never rejects an offer the heap would take.
    thr: Vec<AtomicU64>,
    k: usize,
}

// SAFETY: rows are disjoint and every write to row r happens under `Locks` r.
unsafe impl<T: Send> Send for Graph<T> {}
unsafe impl<T: Sync> Sync for Graph<T> {}

impl<T: Real> Graph<T> {
    /// # Safety
    /// The caller holds lock `r` (or no other thread touches row r).
    #[inline]
    #[allow(clippy::mut_from_ref)]
    unsafe fn heap(&self, r: usize) -> Heap<'_, T> {
        let k = self.k;
        Heap {
            d: std::slice::from_raw_parts_mut(self.d.add(r * k), k),
            i: std::slice::from_raw_parts_mut(self.i.add(r * k), k),
            flag: std::slice::from_raw_parts_mut(self.flag.add(r * k), k),
        }
    }
    /// Hints row r's cached threshold and the heads of its heap (the first
    /// reads of a push) into cache.
    #[inline(always)]
    fn prefetch_row(&self, r: usize) {
        prefetch_line(self.thr.as_ptr().wrapping_add(r));
        prefetch_line(self.d.wrapping_add(r * self.k));
        prefetch_line(self.i.wrapping_add(r * self.k));
    }
    /// (index, flag) of heap slot `e`.
    ///
    /// # Safety
    /// No thread writes slot `e` meanwhile.
    #[inline]
    unsafe fn entry(&self, e: usize) -> (u32, u8) {
        (*self.i.add(e), *self.flag.add(e))
    }
    /// Offers the batch to row r under one hold of its lock (the heap's set does
    /// not depend on the order of the offers).
    #[inline]
    fn offer_all(&self, locks: &Locks, r: usize, offers: &[(T, u32)]) {
        if offers.is_empty() {
            return;
        }
        locks.lock(r);
        // SAFETY: lock r is held.
        let mut h = unsafe { self.heap(r) };
        let mut changed = false;
        for &(dist, idx) in offers {
            changed |= h.push(dist, idx);
        }
        if changed {
            self.thr[r].store(h.d[0].to_f64_().to_bits(), Ordering::Relaxed);
        }
        locks.unlock(r);
    }
}

/// Scratch of [`join_block`], one per worker.
struct JoinBuf<T> {
    dist: Vec<T>,
    offers: Vec<(T, u32)>,
}

impl<T: Real> JoinBuf<T> {
    fn new() -> Self {
        JoinBuf { dist: Vec::new(), offers: Vec::new() }
    }
}

/// One join block over rows `idx` of `x`, the first `a` of them new: each pair
/// (s, t), s < t, with s < a and idx[s] ≠ idx[t] is one distance, offered to both
/// ends. The offers are batched per row: those within the row's cached k-th
/// distance are pushed under one lock hold, instead of one lock (and one
/// threshold load from far memory) per offer. Returns the number of pairs.
fn join_block<T: Real>(g: &Graph<T>, locks: &Locks, x: &[T], d: usize, idx: &[u32], a: usize, buf: &mut JoinBuf<T>) -> usize {
    let l = idx.len();
    let a = a.min(l);
    buf.dist.resize(l * l, T::zero());
    for &c in idx {
        prefetch(&x[c as usize * d..c as usize * d + d]);
        g.prefetch_row(c as usize);
    }
    block_dist(x, d, idx, a, &mut buf.dist);
    for t in 0..l {
        let c = idx[t];
        let thr = f64::from_bits(g.thr[c as usize].load(Ordering::Relaxed));
        buf.offers.clear();
        // Pairs (s, t) with s < t: s new; (t, s) with s > t: t new.
        for s in 0..t.min(a) {
            let v = buf.dist[s * l + t];
            if idx[s] != c && v.to_f64_() <= thr {
                buf.offers.push((v, idx[s]));
            }
        }
        if t < a {
            for s in t + 1..l {
                let v = buf.dist[t * l + s];
                if idx[s] != c && v.to_f64_() <= thr {
                    buf.offers.push((v, idx[s]));
                }
            }
        }
        g.offer_all(locks, c as usize, &buf.offers);
    }
    (0..a).map(|s| l - s - 1).sum()
}

/// Candidate lists (n × m keys), shared like the graph.
struct Cands {
    p: *mut u64,
    m: usize,
}
// SAFETY: as for Graph.
unsafe impl Send for Cands {}
unsafe impl Sync for Cands {}
impl Cands {
    /// # Safety
    /// The caller holds lock `r` (or no other thread touches row r).
    #[inline]
    #[allow(clippy::mut_from_ref)]
    unsafe fn row(&self, r: usize) -> &mut [u64] {
        std::slice::from_raw_parts_mut(self.p.add(r * self.m), self.m)
    }
}

/// Sampling priority of the pair {a, b} in one round: symmetric, so the pair
/// reached from both ends is one key.
#[inline]
fn priority(round_seed: u64, a: u32, b: u32) -> u64 {
    let (lo, hi) = if a < b { (a, b) } else { (b, a) };
    splitmix64(round_seed ^ ((hi as u64) << 32 | lo as u64)) >> 32
}

/// Leaves of one random-projection tree: `perm` split into ranges by `bounds`.
struct RpTree {
    perm: Vec<u32>,
    bounds: Vec<u32>,
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
    bounds.push(0u32);
    bounds.extend(leaves.iter().map(|&(_, e)| e as u32));
    RpTree { perm, bounds }
}

/// Per-round figures, printed to stderr when `REPRKIT_KNN_TRACE` is set.
fn trace_on() -> bool {
    std::env::var_os("REPRKIT_KNN_TRACE").is_some()
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
    if n > u32::MAX as usize - 1 {
        return Err(Error::Shape(format!("approximate kNN indexes rows with u32: n must be < {}, got {n}", u32::MAX)));
    }
    let trace = trace_on();
    let t0 = std::time::Instant::now();
    let unit: Option<Vec<T>> = if metric == Metric::Cosine { Some(unit_rows(x, n, d).0) } else { None };
    let data: &[T] = unit.as_deref().unwrap_or(x);
    let n_trees = tree_count(n);
    let trees: Vec<RpTree> = (0..n_trees)
        .into_par_iter()
        .map(|t| build_tree(data, n, d, leaf, seed.wrapping_mul(0x2545_F491_4F6C_DD1D).wrapping_add(t as u64 + 1)))
        .collect();
    // Rows permuted into the first tree's leaf order: `order[p]` is the original
    // row at position p, `pos[i]` the position of original row i.
    let order = trees[0].perm.clone();
    let mut pos = vec![0u32; n];
    for (p, &i) in order.iter().enumerate() {
        pos[i as usize] = p as u32;
    }
    let mut xp = vec![T::zero(); n * d];
    xp.par_chunks_mut(ROWS_TILE * d).enumerate().for_each(|(t, c)| {
        for (r, dst) in c.chunks_mut(d).enumerate() {
            let i = order[t * ROWS_TILE + r] as usize;
            dst.copy_from_slice(&data[i * d..i * d + d]);
        }
    });
    drop(unit);
    let row = |p: usize| &xp[p * d..p * d + d];

    let mut hd = vec![T::infinity(); n * k];
    let mut hi = vec![u32::MAX; n * k];
    let mut hf = vec![OLD; n * k];
    let g = Graph { d: hd.as_mut_ptr(), i: hi.as_mut_ptr(), flag: hf.as_mut_ptr(), thr: (0..n).map(|_| AtomicU64::new(f64::INFINITY.to_bits())).collect(), k };
    let locks = Locks((0..n).map(|_| AtomicBool::new(false)).collect());
    // Seed: all pairs within each leaf of every tree (in permuted indices; the
    // first tree's leaves are contiguous ranges).
    let leaves: Vec<(usize, usize)> = trees.iter().enumerate().flat_map(|(t, tr)| (0..tr.bounds.len() - 1).map(move |l| (t, l))).collect();
    let mut seed_pairs = 0usize;
    leaves.par_iter().with_min_len(16).for_each_init(
        || (Vec::new(), JoinBuf::new()),
        |(members, buf): &mut (Vec<u32>, JoinBuf<T>), &(t, l)| {
            let tr = &trees[t];
            members.clear();
            members.extend(tr.perm[tr.bounds[l] as usize..tr.bounds[l + 1] as usize].iter().map(|&i| pos[i as usize]));
            join_block(&g, &locks, &xp, d, members, members.len(), buf);
        },
    );
    if trace {
        seed_pairs = trees.iter().map(|tr| tr.bounds.windows(2).map(|w| { let m = (w[1] - w[0]) as usize; m * (m - 1) / 2 }).sum::<usize>()).sum();
    }
    drop(trees);
    drop(leaves);
    if trace {
        eprintln!("[knn_approx] n {n} k {k} trees {n_trees} leaf {leaf}: forest + seed {:.2} s, {seed_pairs} pairs", t0.elapsed().as_secs_f64());
    }
    // Rounds of local join.
    let m = max_candidates(k);
    let mut newc = vec![EMPTY; n * m];
    let mut oldc = vec![EMPTY; n * m];
    for round in 0..MAX_ROUNDS {
        let tr = std::time::Instant::now();
        let rs = splitmix64(seed ^ 0xA076_1D64_78BD_642F ^ (round as u64).wrapping_mul(0xE703_7ED1_A0B4_28DB));
        newc.par_iter_mut().for_each(|v| *v = EMPTY);
        oldc.par_iter_mut().for_each(|v| *v = EMPTY);
        let cn = Cands { p: newc.as_mut_ptr(), m };
        let co = Cands { p: oldc.as_mut_ptr(), m };
        let tf = tr.elapsed().as_secs_f64();
        // Forward candidates: each row fills its own lists (no other writer in this pass).
        (0..n).into_par_iter().with_min_len(ROWS_TILE).for_each(|i| {
            // SAFETY: row i is written only by this task in this pass.
            let (ni, oi) = unsafe { (cn.row(i), co.row(i)) };
            for t in 0..k {
                // SAFETY: the heaps are not written in this pass.
                let (j, f) = unsafe { g.entry(i * k + t) };
                if j != u32::MAX {
                    let key = priority(rs, i as u32, j) << 32 | j as u64;
                    key_push(if f == OLD { &mut *oi } else { &mut *ni }, key);
                }
            }
        });
        let tfw = tr.elapsed().as_secs_f64();
        // Reverse candidates: i into j's lists, under lock j.
        (0..n).into_par_iter().with_min_len(ROWS_TILE).for_each(|i| {
            for t in 0..k {
                // The lists written are scattered: hint the one a few entries ahead.
                if t + 8 < k {
                    // SAFETY: the heaps are not written in this pass.
                    let (j, f) = unsafe { g.entry(i * k + t + 8) };
                    if j != u32::MAX {
                        prefetch_line(if f == OLD { co.p } else { cn.p }.wrapping_add(j as usize * m));
                    }
                }
                // SAFETY: the heaps are not written in this pass.
                let (j, f) = unsafe { g.entry(i * k + t) };
                if j != u32::MAX {
                    let key = priority(rs, i as u32, j) << 32 | i as u64;
                    let j = j as usize;
                    locks.lock(j);
                    // SAFETY: lock j is held.
                    unsafe { key_push(if f == OLD { co.row(j) } else { cn.row(j) }, key) };
                    locks.unlock(j);
                }
            }
        });
        let trv = tr.elapsed().as_secs_f64();
        // Entries sampled as new candidates are joined now: mark them old; the
        // rest stay new for a later round. The list keeps the m smallest distinct
        // keys offered, so an offered key is in it exactly when it is at most the
        // list's maximum (EMPTY, larger than any key, while the list is not full):
        // one comparison instead of a scan of the list.
        (0..n).into_par_iter().with_min_len(ROWS_TILE).for_each(|i| {
            // SAFETY: row i of the heap and of the lists is touched only by this task in this pass.
            let (h, ni) = unsafe { (g.heap(i), cn.row(i)) };
            let top = ni[0];
            for t in 0..k {
                if h.flag[t] != OLD {
                    let key = priority(rs, i as u32, h.i[t]) << 32 | h.i[t] as u64;
                    if key <= top {
                        h.flag[t] = OLD;
                    }
                }
            }
        });
        let t_cands = tr.elapsed().as_secs_f64();
        // Local join: pairs among new × (new ∪ old), each offered to both ends.
        let joined: usize = (0..n)
            .into_par_iter()
            .with_min_len(ROWS_TILE)
            .map_init(
                || (Vec::with_capacity(2 * m), JoinBuf::new()),
                |(cv, buf): &mut (Vec<u32>, JoinBuf<T>), u| {
                    // SAFETY: the lists are not written in this pass.
                    let (ni, oi) = unsafe { (&*cn.row(u), &*co.row(u)) };
                    // New then old, each sorted by index: the pairs visited do not
                    // depend on the heaps' layout.
                    cv.clear();
                    cv.extend(ni.iter().filter(|&&v| v != EMPTY).map(|&v| v as u32));
                    let a = cv.len();
                    cv.sort_unstable();
                    cv.extend(oi.iter().filter(|&&v| v != EMPTY).map(|&v| v as u32));
                    cv[a..].sort_unstable();
                    join_block(&g, &locks, &xp, d, cv, a, buf)
                },
            )
            .sum();
        // Updates: entries inserted in this round that survived (order-independent).
        let updates: usize = hf
            .par_chunks_mut(ROWS_TILE * k)
            .map(|c| {
                let mut u = 0;
                for f in c.iter_mut() {
                    if *f == FRESH {
                        *f = NEW;
                        u += 1;
                    }
                }
                u
            })
            .sum();
        if trace {
            eprintln!("[knn_approx] round {round}: {joined} distances, {updates} updates, {:.2} s ({t_cands:.2} s candidates: fill {tf:.2} fwd {tfw:.2} rev {trv:.2})", tr.elapsed().as_secs_f64());
        }
        if (updates as f64) < DELTA * (n * k) as f64 {
            break;
        }
    }
    drop((newc, oldc, hf));
    // A row the forest and the refinement left short (possible only for pathological
    // inputs, e.g. tiny leaves of duplicates) is completed by a brute-force scan.
    hd.par_chunks_mut(k).zip(hi.par_chunks_mut(k)).enumerate().for_each(|(i, (dr, ir))| {
        if ir.contains(&u32::MAX) {
            let mut fr = vec![OLD; k];
            let mut h = Heap { d: dr, i: ir, flag: &mut fr };
            for j in 0..n {
                if j != i {
                    h.push(dist2(row(i), row(j)), j as u32);
                }
            }
        }
    });
    drop(xp);
    // Original indices, rows sorted in place, distances converted (the heaps become
    // the output: no second n × k copy) ...
    hi.par_chunks_mut(k).zip(hd.par_chunks_mut(k)).for_each(|(io, dout)| {
        let mut v: Vec<(T, u32)> = dout.iter().cloned().zip(io.iter().map(|&j| order[j as usize])).collect();
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
    // ... then moved to their original positions (row i ← row pos[i]) by following cycles.
    permute_rows(&mut hi, k, &pos);
    permute_rows(&mut hd, k, &pos);
    if trace {
        eprintln!("[knn_approx] total {:.2} s", t0.elapsed().as_secs_f64());
    }
    Ok(Knn { n, k, indices: hi, distances: hd })
}

/// Number of trees: more for larger n, where a leaf covers a smaller part of each
/// neighbourhood and the seed needs more trees to match the refinement's needs.
fn tree_count(n: usize) -> usize {
    if n < 50_000 { 6 } else { 8 }
}

/// Candidates sampled per point and round, for new and for old neighbours: a
/// round costs about n·m·(3m/2) distances, but a larger m needs fewer rounds
/// before δ stops the search, most of all at large n. Mixture × 50 at k = 90
/// (`benches/bench_knn_approx.py`, quiet box, wall s / recall@90): m = 15 (the
/// old k/6) 72.5 s / 0.888 at 1M (12 rounds, the cap, still changing 1.5 % of
/// the entries), m = 24 (4k/15) 92.4 s / 0.9625 (9 rounds); at 250k 15 s / 0.9625
/// against 21 s / 0.991; at 100k 5.6 s / 0.984 against 5.2 s / 0.996.
fn max_candidates(k: usize) -> usize {
    k.min((k * 4 / 15).max(12))
}

/// In place: row i of the n × k `a` becomes the old row `src[i]` (`src` a permutation).
fn permute_rows<V: Copy>(a: &mut [V], k: usize, src: &[u32]) {
    let n = src.len();
    let mut done = vec![false; n];
    let mut tmp: Vec<V> = Vec::with_capacity(k);
    for s in 0..n {
        if done[s] || src[s] as usize == s {
            done[s] = true;
            continue;
        }
        tmp.clear();
        tmp.extend_from_slice(&a[s * k..s * k + k]);
        let mut cur = s;
        loop {
            done[cur] = true;
            let from = src[cur] as usize;
            if from == s {
                a[cur * k..cur * k + k].copy_from_slice(&tmp);
                break;
            }
            a.copy_within(from * k..from * k + k, cur * k);
            cur = from;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clusters(n: usize, d: usize, seed: u64) -> Vec<f64> {
        let mut rng = SplitMix(seed);
        (0..n * d).map(|t| rng.uniform() + ((t / d) % 7) as f64 * 0.3).collect()
    }

    fn recall(ap: &Knn<f64>, ex: &Knn<f64>) -> f64 {
        let (n, k) = (ex.n, ex.k);
        let mut hit = 0;
        for i in 0..n {
            let e = &ex.indices[i * k..i * k + k];
            hit += ap.indices[i * k..i * k + k].iter().filter(|j| e.contains(j)).count();
        }
        hit as f64 / (n * k) as f64
    }

    #[test]
    fn high_recall_on_clusters() {
        let (n, d, k) = (3000, 10, 15);
        let x = clusters(n, d, 11);
        let ex = knn_exact(&x, n, d, k, Metric::SqEuclidean).unwrap();
        let ap = knn_approx(&x, n, d, k, Metric::SqEuclidean, 5).unwrap();
        let r = recall(&ap, &ex);
        assert!(r > 0.95, "recall {r}");
        let again = knn_approx(&x, n, d, k, Metric::SqEuclidean, 5).unwrap();
        assert_eq!(again.indices, ap.indices);
    }

    /// The search runs on rows permuted into the first tree's leaf order: the
    /// output must be back in the input's indexing — each listed distance is the
    /// distance between the input rows it names, rows sorted, never the point itself.
    #[test]
    fn permuted_search_maps_back_to_input_rows() {
        let (n, d, k) = (4000, 12, 20);
        let x = clusters(n, d, 3);
        let ap = knn_approx(&x, n, d, k, Metric::Euclidean, 9).unwrap();
        for i in 0..n {
            let (ir, dr) = (&ap.indices[i * k..i * k + k], &ap.distances[i * k..i * k + k]);
            for t in 0..k {
                let j = ir[t] as usize;
                assert_ne!(j, i);
                let want = (0..d).map(|c| (x[i * d + c] - x[j * d + c]).powi(2)).sum::<f64>().sqrt();
                assert!((dr[t] - want).abs() <= 1e-12 * (1.0 + want), "row {i}: {} vs {want}", dr[t]);
                if t > 0 {
                    assert!(dr[t - 1] < dr[t] || (dr[t - 1] == dr[t] && ir[t - 1] < ir[t]));
                }
            }
        }
        let ex = knn_exact(&x, n, d, k, Metric::Euclidean).unwrap();
        assert!(recall(&ap, &ex) > 0.95);
        // The same points in another row order: the same neighbour sets up to relabelling
        // is not guaranteed (the trees see another order), but recall must hold.
        let rev: Vec<f64> = (0..n).rev().flat_map(|i| x[i * d..i * d + d].to_vec()).collect();
        let ar = knn_approx(&rev, n, d, k, Metric::Euclidean, 9).unwrap();
        let exr = knn_exact(&rev, n, d, k, Metric::Euclidean).unwrap();
        assert!(recall(&ar, &exr) > 0.95);
    }

    #[test]
    fn identical_for_any_thread_count() {
        let (n, d, k) = (6000, 16, 30);
        let x = clusters(n, d, 21);
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            pool.install(|| knn_approx(&x, n, d, k, Metric::SqEuclidean, 4).unwrap())
        };
        let one = run(1);
        for t in [2, 3, 4] {
            let other = run(t);
            assert_eq!(other.indices, one.indices, "{t} threads");
            assert_eq!(other.distances, one.distances, "{t} threads");
        }
    }

    #[test]
    fn permute_rows_follows_cycles() {
        let src = [2u32, 0, 1, 4, 3, 5];
        let mut a: Vec<u32> = (0..12).collect(); // row r = [2r, 2r + 1]
        permute_rows(&mut a, 2, &src);
        let want: Vec<u32> = src.iter().flat_map(|&s| [2 * s, 2 * s + 1]).collect();
        assert_eq!(a, want);
    }
}
