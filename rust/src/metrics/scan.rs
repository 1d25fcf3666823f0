//! The two building blocks of the exact searches in [`super`]:
//!
//! * [`Best`], the `cap` smallest (distance, index) pairs of a row whatever
//!   order its candidates arrive in (ties: lower index first), fed a block row
//!   at a time through a vectorised threshold filter ([`Best::offer`],
//!   [`Row::offer`]): chunks of 16 are tested with one compare per lane and
//!   only a chunk holding a candidate goes to the scalar pass;
//! * [`symmetric`], the scan of a set against itself that computes every
//!   distance block once (block i ≤ block j) and feeds it to the rows of
//!   block i and, transposed, to the rows of block j: half the GEMM of a
//!   row-wise stream, with one computed value per pair (i, j) for both rows.
//!
//! Determinism: the blocks reach a row in an order that depends on the
//! thread schedule, so every per-row state here is a function of the *set*
//! of pairs it was fed (a top-k by the total (distance, index) order, a
//! minimum by that order, a count), never of their order. Results are
//! bit-identical for any thread count.

use crate::distances::SqEuclid;
use crate::simd::multiversion;
use crate::Real;
use rayon::prelude::*;
use std::cmp::Ordering;
use std::sync::{Mutex, MutexGuard};

/// Rows and columns of a square block of the symmetric scan: square so the
/// GEMM packs both operands at full rate (k = d ≈ 384 fits one panel). 1024
/// rather than 512: packing the operands is a smaller share of each block's
/// GEMM, while the block (4 MiB in f32) is still read once, in row order.
/// A scratch A/B of retrieval at 30k × 384 on 2 cores: 3.9 s at 1024, 5.3 s
/// at 512, 4.3 s at 2048.
pub(super) const SYM_TILE: usize = 1024;
/// Bytes of candidate buffers the symmetric scan may hold (every row's `Best`
/// is alive at once): 100k rows keeping R ≈ 1000 need ~1 GiB in f32. Above
/// it the searches stream query tiles instead (each row's state lives only
/// while its tile is scanned: the full GEMM, bounded memory).
pub(super) const SYM_BUDGET: usize = 2 << 30;
/// Lanes of the threshold filter.
const CHUNK: usize = 16;

#[inline]
pub(super) fn cmp_pair<T: Real>(a: &(T, u32), b: &(T, u32)) -> Ordering {
    a.0.partial_cmp(&b.0).unwrap_or(Ordering::Equal).then(a.1.cmp(&b.1))
}

/// Whether `a` comes strictly before `b` in the (distance, index) order.
#[inline]
pub(super) fn before<T: Real>(a: (T, u32), b: (T, u32)) -> bool {
    a.0 < b.0 || (a.0 == b.0 && a.1 < b.1)
}

/// Whether any of the 16 values is ≤ t: branch-free, so it compiles to a few
/// vector compares and an or-reduction.
#[inline(always)]
fn any_le<T: Real>(v: &[T; CHUNK], t: T) -> bool {
    v.iter().fold(false, |a, &x| a | (x <= t))
}

/// Bit o set iff v[o] ≤ t (branch-free: a chunk's candidates are then visited
/// by their set bits, with no mispredicted branch per rejected lane).
#[inline(always)]
fn mask_le<T: Real>(v: &[T; CHUNK], t: T) -> u32 {
    v.iter().enumerate().fold(0u32, |m, (o, &x)| m | (u32::from(x <= t) << o))
}

/// Bit o set iff v[o] ≤ t[o] (each lane against its own threshold).
#[inline(always)]
fn mask_le_each<T: Real>(v: &[T; CHUNK], t: &[T; CHUNK]) -> u32 {
    v.iter().zip(t).enumerate().fold(0u32, |m, (o, (&x, &y))| m | (u32::from(x <= y) << o))
}

/// Bit o set iff l[o] = x.
#[inline(always)]
fn mask_eq(l: &[u32; CHUNK], x: u32) -> u32 {
    l.iter().enumerate().fold(0u32, |m, (o, &y)| m | (u32::from(y == x) << o))
}

/// The `cap` smallest (distance, index) pairs seen so far, in the total order
/// (distance, then index). Pairs before a running threshold — the cap-th pair
/// of the last cut — are buffered and cut back to `cap` when the buffer holds
/// `cap + cap/4 + 16`: amortised O(1) per candidate, and ~1.25·cap slots per
/// row (the symmetric scan keeps every row's buffer alive). Any pair rejected
/// has `cap` pairs before it, so the result is the exact top `cap` for any
/// arrival order: a pair tied with the threshold wins iff its index is lower.
///
/// Pairs are buffered as their integer keys ([`Real::pair_key`]; distances are
/// ≥ 0 here), so the cuts and the final sort compare plain integers: the final
/// sort of ~1000 keys takes about half the time of a sort by a computed key.
pub(super) struct Best<T: Real> {
    buf: Vec<T::PairKey>,
    pub cap: usize,
    lim: usize,
    /// The running threshold as a key: (t, u32::MAX) at the start, then the
    /// cap-th pair of the last cut.
    thr_key: T::PairKey,
}

impl<T: Real> Best<T> {
    pub fn new(cap: usize) -> Self {
        Self::below(cap, T::infinity())
    }

    /// Keeps only pairs at distance ≤ `t` (a sampled bound on the cap-th
    /// distance). Exact iff at least `cap` pairs pass it: see [`Self::short`].
    pub fn below(cap: usize, t: T) -> Self {
        debug_assert!(t >= T::zero());
        Best { buf: Vec::new(), cap, lim: Self::slots(cap), thr_key: t.pair_key(u32::MAX) }
    }

    /// The running threshold's distance: pairs beyond it are never kept.
    #[inline]
    pub fn thr(&self) -> T {
        T::from_pair_key(self.thr_key).0
    }

    /// Whether fewer than `cap` pairs passed the threshold: the row's top
    /// `cap` is then not known (its starting threshold was too tight).
    pub fn short(&self) -> bool {
        self.buf.len() < self.cap
    }

    /// Buffer slots a row keeping `cap` pairs may hold.
    pub fn slots(cap: usize) -> usize {
        if cap == 0 {
            0
        } else {
            cap + cap / 4 + 16
        }
    }

    /// Offers one pair; `d` ≥ 0 (the key order is the pair order only there).
    #[inline]
    pub fn push(&mut self, d: T, j: u32) {
        debug_assert!(d >= T::zero());
        let k = d.pair_key(j);
        if k < self.thr_key {
            if self.buf.capacity() == 0 {
                // Exact size once: growth by doubling would overshoot to 2·lim.
                self.buf.reserve_exact(self.lim);
            }
            self.buf.push(k);
            if self.buf.len() >= self.lim {
                self.cut();
                self.thr_key = self.buf[self.cap - 1];
            }
        }
    }

    /// Offers the distances `vals` to columns `c0, c0 + 1, ...`.
    #[inline]
    pub fn offer(&mut self, c0: usize, vals: &[T]) {
        if self.cap == 0 {
            return;
        }
        let chunks = vals.chunks_exact(CHUNK);
        let rest = chunks.remainder();
        let mut j0 = c0;
        for v in chunks {
            if let Ok(v) = <&[T; CHUNK]>::try_from(v) {
                let t = self.thr();
                if any_le(v, t) {
                    let mut m = mask_le(v, t);
                    while m != 0 {
                        let o = m.trailing_zeros() as usize;
                        self.push(v[o], (j0 + o) as u32);
                        m &= m - 1;
                    }
                }
            }
            j0 += CHUNK;
        }
        for (o, &x) in rest.iter().enumerate() {
            self.push(x, (j0 + o) as u32);
        }
    }

    fn cut(&mut self) {
        if self.buf.len() > self.cap {
            self.buf.select_nth_unstable(self.cap - 1);
            self.buf.truncate(self.cap);
        }
    }

    /// The kept pairs in (distance, index) order.
    pub fn finish(mut self) -> Vec<(T, u32)> {
        if self.cap == 0 {
            return Vec::new();
        }
        self.cut();
        self.buf.sort_unstable();
        self.buf.into_iter().map(T::from_pair_key).collect()
    }
}

/// A retrieval query's state: its top `cap` and, when `track` (k = None),
/// its nearest reference of the same label over the whole set (for the
/// reciprocal rank of a query with no match in its top R).
pub(super) struct Row<T: Real> {
    pub best: Best<T>,
    pub near: (T, u32),
}

impl<T: Real> Row<T> {
    pub fn new(cap: usize) -> Self {
        Self::below(cap, T::infinity())
    }

    /// A row whose top list starts at the threshold `t` (see [`Best::below`]).
    pub fn below(cap: usize, t: T) -> Self {
        Row { best: Best::below(cap, t), near: (T::infinity(), u32::MAX) }
    }

    /// The values the fused filter of [`symmetric_rows`] compares with: any
    /// value ≤ the first is a candidate, a same-label value ≤ the second
    /// may improve `near` (−∞ when no test applies: a row with cap 0, or a
    /// nearest match already within the threshold, which the first test finds).
    #[inline]
    fn filt(&self, track: bool) -> (T, T) {
        if self.best.cap == 0 {
            (T::neg_infinity(), T::neg_infinity())
        } else if track && self.near.0 > self.best.thr() {
            (self.best.thr(), self.near.0)
        } else {
            (self.best.thr(), T::neg_infinity())
        }
    }

    /// Offers the distances `vals` to columns `c0, ...` whose labels are `labs`.
    /// A chunk goes to the scalar pass only if one of its values is within the
    /// threshold or is a same-label value within the nearest match so far;
    /// once the nearest match is found (early, for all but outliers) the
    /// second test is almost never true.
    #[inline]
    pub fn offer(&mut self, c0: usize, vals: &[T], labs: &[u32], lq: u32, track: bool) {
        if self.best.cap == 0 {
            return;
        }
        if !track {
            return self.best.offer(c0, vals);
        }
        let n = vals.len().min(labs.len());
        let full = n - n % CHUNK;
        let mut j0 = 0;
        while j0 < full {
            let v = <&[T; CHUNK]>::try_from(&vals[j0..j0 + CHUNK]);
            let l = <&[u32; CHUNK]>::try_from(&labs[j0..j0 + CHUNK]);
            if let (Ok(v), Ok(l)) = (v, l) {
                let (t, nd) = (self.best.thr(), self.near.0);
                // A same-label value that improves the nearest match lies below it; once the
                // nearest match is within the threshold, the threshold test alone finds it.
                let same = nd > t && v.iter().zip(l).fold(false, |a, (&x, &y)| a | ((y == lq) & (x <= nd)));
                if any_le(v, t) | same {
                    let mut m = mask_le(v, t);
                    if same {
                        m |= v.iter().zip(l).enumerate().fold(0u32, |m, (o, (&x, &y))| m | (u32::from((y == lq) & (x <= nd)) << o));
                    }
                    while m != 0 {
                        let o = m.trailing_zeros() as usize;
                        self.one((v[o], (c0 + j0 + o) as u32), l[o] == lq);
                        m &= m - 1;
                    }
                }
            }
            j0 += CHUNK;
        }
        self.scalar(c0 + full, &vals[full..n], &labs[full..n], lq);
    }

    /// Offers one pair. Its value is clamped at +0 here: the symmetric scan reads its
    /// blocks unclamped (a rounding-negative value passes every filter test that +0
    /// passes, as all thresholds are ≥ 0 or −∞), so the pair is kept as the finished
    /// block would have it.
    #[inline]
    pub fn one(&mut self, p: (T, u32), same_label: bool) {
        let p = (if p.0 > T::zero() { p.0 } else { T::zero() }, p.1);
        self.best.push(p.0, p.1);
        if same_label && before(p, self.near) {
            self.near = p;
        }
    }

    fn scalar(&mut self, c0: usize, vals: &[T], labs: &[u32], lq: u32) {
        for (o, (&x, &y)) in vals.iter().zip(labs).enumerate() {
            self.one((x, (c0 + o) as u32), y == lq);
        }
    }
}

/// `feed(state, row, first column, distances)`: see [`symmetric`].
pub(super) type Feed<'a, S, T> = dyn Fn(&mut S, usize, usize, &[T]) + Sync + 'a;

fn lock<S>(m: &Mutex<S>) -> MutexGuard<'_, S> {
    // A feed never panics; were one to, its row states are still whole values.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Feeds every pair (i, j ≠ i) of the `n` rows of `s` (a set against itself)
/// to row i's state: `feed(state, i, c0, vals)` with `vals[t]` the squared
/// distance of row i to row c0 + t. States are held per [`SYM_TILE`] rows in
/// `rows` (rows[b][t] is row b·SYM_TILE + t). Only blocks b with `want(b)`
/// are fed (the pairs touching no wanted block are not computed).
///
/// Each block pair a ≤ b is one GEMM; it is fed to block a's rows, then,
/// transposed, to block b's rows, each under that block's lock (one at a
/// time: no lock order to keep). A diagonal block's lower half is its upper
/// half mirrored, so d(i, j) and d(j, i) are one value; the diagonal entry
/// (a row's self-match) is never fed.
pub(super) fn symmetric<T: Real, S: Send>(
    s: &SqEuclid<'_, T>, n: usize, rows: &[Mutex<Vec<S>>], want: &(dyn Fn(usize) -> bool + Sync), feed: &Feed<'_, S, T>,
) {
    let nb = n.div_ceil(SYM_TILE);
    debug_assert_eq!(rows.len(), nb);
    let pairs: Vec<(usize, usize)> =
        (0..nb).flat_map(|a| (a..nb).map(move |b| (a, b))).filter(|&(a, b)| want(a) || want(b)).collect();
    let span = |b: usize| (b * SYM_TILE, ((b + 1) * SYM_TILE).min(n));
    let tt = SYM_TILE.min(n);
    pairs.par_iter().for_each_init(
        || (vec![T::zero(); tt * tt], vec![T::zero(); tt * (tt + 16)]),
        |(blk, tr), &(a, b)| {
            let ((r0, r1), (c0, c1)) = (span(a), span(b));
            let (h, w) = (r1 - r0, c1 - c0);
            let blk = &mut blk[..h * w];
            s.fill_block_sq(r0, r1, c0, c1, blk);
            if a == b {
                for i in 1..h {
                    for j in 0..i {
                        blk[i * w + j] = blk[j * w + i];
                    }
                }
                let mut g = lock(&rows[a]);
                for (t, st) in g.iter_mut().enumerate().take(h) {
                    let row = &blk[t * w..(t + 1) * w];
                    feed(st, r0 + t, c0, &row[..t]);
                    feed(st, r0 + t, c0 + t + 1, &row[t + 1..]);
                }
                return;
            }
            if want(a) {
                let mut g = lock(&rows[a]);
                for (t, st) in g.iter_mut().enumerate().take(h) {
                    feed(st, r0 + t, c0, &blk[t * w..(t + 1) * w]);
                }
            }
            if want(b) {
                // Transposed in 32 × 32 squares, rows padded by 16 values: at a power-of-two
                // stride every column of a square would fall in the same few cache sets.
                let ht = h + 16;
                let tr = &mut tr[..w * ht];
                for i0 in (0..h).step_by(32) {
                    for j0 in (0..w).step_by(32) {
                        for i in i0..(i0 + 32).min(h) {
                            for j in j0..(j0 + 32).min(w) {
                                tr[j * ht + i] = blk[i * w + j];
                            }
                        }
                    }
                }
                let mut g = lock(&rows[b]);
                for (t, st) in g.iter_mut().enumerate().take(w) {
                    feed(st, c0 + t, r0, &tr[t * ht..t * ht + h]);
                }
            }
        },
    );
}

/// Per-row states grouped in [`SYM_TILE`] blocks for [`symmetric`].
pub(super) fn blocked<S>(n: usize, mut make: impl FnMut(usize) -> S) -> Vec<Mutex<Vec<S>>> {
    (0..n.div_ceil(SYM_TILE))
        .map(|b| Mutex::new((b * SYM_TILE..((b + 1) * SYM_TILE).min(n)).map(&mut make).collect()))
        .collect()
}

/// The states of [`blocked`] back in row order.
pub(super) fn unblocked<S>(rows: Vec<Mutex<Vec<S>>>) -> Vec<S> {
    rows.into_iter().flat_map(|m| m.into_inner().unwrap_or_else(|e| e.into_inner())).collect()
}

/// One block row of the fused pass of [`symmetric_rows`]: the distances
/// `vals` of row `i` (state `ri`, label `li`) to the rows whose states are
/// `cols` (first index `c0`, labels `labs`), offered in ONE read both to row
/// i (against its scalar threshold) and to each column's row (against the
/// vector `ct`/`cn` of their thresholds, refreshed here when one changes).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn fused_row<T: Real, const TRACK: bool>(
    ri: &mut Row<T>, i: usize, li: u32, vals: &[T], c0: usize, cols: &mut [Row<T>], ct: &mut [T], cn: &mut [T],
    labs: &[u32], col_near: &mut bool,
) {
    let w = vals.len();
    debug_assert!(cols.len() == w && ct.len() == w && cn.len() == w && (!TRACK || labs.len() == w));
    let (mut rt, mut rn) = ri.filt(TRACK);
    let ninf = T::neg_infinity();
    let full = w - w % CHUNK;
    let mut j0 = 0;
    while j0 < full {
        let v = <&[T; CHUNK]>::try_from(&vals[j0..j0 + CHUNK]);
        let t = <&[T; CHUNK]>::try_from(&ct[j0..j0 + CHUNK]);
        let u = <&[T; CHUNK]>::try_from(&cn[j0..j0 + CHUNK]);
        if let (Ok(v), Ok(t), Ok(u)) = (v, t, u) {
            // Branch-free: one or-reduction over the chunk; the rare chunks holding a
            // candidate for either side build their bit masks. The label test is
            // needed only while some nearest match lies beyond its row's threshold
            // (`rn`, `col_near`): early in the scan, for a few outliers later.
            let hit = if TRACK && (rn > ninf || *col_near) {
                let l = <&[u32; CHUNK]>::try_from(&labs[j0..j0 + CHUNK]).unwrap_or(&[u32::MAX; CHUNK]);
                (0..CHUNK).fold(false, |a, o| {
                    let x = v[o];
                    a | (x <= rt) | (x <= t[o]) | ((l[o] == li) & ((x <= rn) | (x <= u[o])))
                })
            } else {
                (0..CHUNK).fold(false, |a, o| a | (v[o] <= rt) | (v[o] <= t[o]))
            };
            if hit {
                let same = |o: usize| TRACK && labs[j0 + o] == li;
                // Whole-chunk masks (one vector compare each; a mask register under AVX-512).
                let mut mr = mask_le(v, rt);
                let mut mc = mask_le_each(v, t);
                if TRACK {
                    if let Ok(l) = <&[u32; CHUNK]>::try_from(&labs[j0..j0 + CHUNK]) {
                        let ms = mask_eq(l, li);
                        if ms != 0 {
                            mr |= ms & mask_le(v, rn);
                            mc |= ms & mask_le_each(v, u);
                        }
                    }
                }
                if mr != 0 {
                    while mr != 0 {
                        let o = mr.trailing_zeros() as usize;
                        ri.one((v[o], (c0 + j0 + o) as u32), same(o));
                        mr &= mr - 1;
                    }
                    (rt, rn) = ri.filt(TRACK);
                }
                while mc != 0 {
                    let o = mc.trailing_zeros() as usize;
                    let c = &mut cols[j0 + o];
                    c.one((v[o], i as u32), same(o));
                    (ct[j0 + o], cn[j0 + o]) = c.filt(TRACK);
                    *col_near |= cn[j0 + o] > ninf;
                    mc &= mc - 1;
                }
            }
        }
        j0 += CHUNK;
    }
    for o in full..w {
        let x = vals[o];
        let s = TRACK && labs[o] == li;
        if (x <= rt) | (s & (x <= rn)) {
            ri.one((x, (c0 + o) as u32), s);
            (rt, rn) = ri.filt(TRACK);
        }
        if (x <= ct[o]) | (s & (x <= cn[o])) {
            cols[o].one((x, i as u32), s);
            (ct[o], cn[o]) = cols[o].filt(TRACK);
            *col_near |= cn[o] > ninf;
        }
    }
}

/// Every pair (i, j ≠ i) of the `n` rows of `s` offered to both rows' [`Row`]
/// states (`labels`: track each row's nearest same-label row; `None` for a
/// plain top-k). Like [`symmetric`], each block pair a ≤ b is one GEMM, but
/// the block is read once: each entry is tested against its row's threshold
/// and, lane-wise, against its column's (the thresholds of block b's rows in
/// a small local array), so no transposed copy is made. Both row blocks are
/// locked for the pass, in the order a then b (a < b: no deadlock).
pub(super) fn symmetric_rows<T: Real>(s: &SqEuclid<'_, T>, n: usize, rows: &[Mutex<Vec<Row<T>>>], labels: Option<&[u32]>) {
    match labels {
        Some(l) => symmetric_rows_in::<T, true>(s, n, rows, l),
        None => symmetric_rows_in::<T, false>(s, n, rows, &[]),
    }
}

fn symmetric_rows_in<T: Real, const TRACK: bool>(s: &SqEuclid<'_, T>, n: usize, rows: &[Mutex<Vec<Row<T>>>], labels: &[u32]) {
    let nb = n.div_ceil(SYM_TILE);
    debug_assert_eq!(rows.len(), nb);
    let queue = Mutex::new(PairQueue::new(nb));
    let span = |b: usize| (b * SYM_TILE, ((b + 1) * SYM_TILE).min(n));
    let tt = SYM_TILE.min(n);
    // One worker per pool thread, each taking pairs from the shared queue.
    (0..rayon::current_num_threads()).into_par_iter().for_each(|_| {
        let (mut blk, mut ct, mut cn) = (vec![T::zero(); tt * tt], vec![T::zero(); tt], vec![T::zero(); tt]);
        loop {
            // Its own statement: a guard in a `while let` head would live through the body.
            let next = lock(&queue).take();
            let Some((a, b)) = next else { break };
            let ((r0, r1), (c0, c1)) = (span(a), span(b));
            let (h, w) = (r1 - r0, c1 - c0);
            let blk = &mut blk[..h * w];
            // Unclamped: `Row::one` clamps the few values it keeps.
            s.fill_block_raw(r0, r1, c0, c1, blk);
            let (ct, cn) = (&mut ct[..w], &mut cn[..w]);
            let labs = if TRACK { labels } else { &labels[..0] };
            if a == b {
                let mut g = lock(&rows[a]);
                fused_block(blk, w, r0, c0, &mut g[..h], &mut [], ct, cn, labs, TRACK);
            } else {
                let mut ga = lock(&rows[a]);
                let mut gb = lock(&rows[b]);
                fused_block(blk, w, r0, c0, &mut ga[..h], &mut gb[..w], ct, cn, labs, TRACK);
            }
            lock(&queue).done(a, b);
        }
    });
}

/// The block pairs a ≤ b of [`symmetric_rows`], handed out so that threads
/// rarely wait on each other's row-block locks: a taken pair claims its two
/// blocks until it is done, and a thread takes the first pair whose blocks
/// are unclaimed (the first pair at all when every one left conflicts; it
/// then waits on the locks). With rayon splitting the list between threads, the
/// last pairs, which share their blocks, ran one at a time: the last ~4 s of a
/// 36 s scan at 100k rows on 2 threads. The order pairs are taken in does not
/// change the result (each row keeps its exact top list), only who waits.
struct PairQueue {
    left: Vec<(usize, usize)>,
    claimed: Vec<u32>,
}

impl PairQueue {
    fn new(nb: usize) -> Self {
        PairQueue { left: (0..nb).flat_map(|a| (a..nb).map(move |b| (a, b))).collect(), claimed: vec![0; nb] }
    }

    fn take(&mut self) -> Option<(usize, usize)> {
        if self.left.is_empty() {
            return None;
        }
        let free = self.left.iter().position(|&(a, b)| self.claimed[a] == 0 && self.claimed[b] == 0);
        let p = self.left.remove(free.unwrap_or(0));
        self.claimed[p.0] += 1;
        self.claimed[p.1] += 1;
        Some(p)
    }

    fn done(&mut self, a: usize, b: usize) {
        self.claimed[a] -= 1;
        self.claimed[b] -= 1;
    }
}

multiversion! {
    /// One block of [`symmetric_rows`] through the fused filter (compiled for AVX2
    /// where available: the 16-lane tests are most of the scan's work after the GEMM).
    /// `blk` is h × w for rows r0.. (states `ga`) against columns c0.. (states `gb`);
    /// `gb` empty means a diagonal block (c0 = r0, w = h), read on its upper triangle
    /// only: entry (t, u > t) is d(t, u) = d(u, t) for both rows. `labels`: all rows'
    /// labels when `track`.
    fn fused_block<T>(
        blk: &[T], w: usize, r0: usize, c0: usize, ga: &mut [Row<T>], gb: &mut [Row<T>], ct: &mut [T], cn: &mut [T],
        labels: &[u32], track: bool,
    ) -> () {
        if track {
            fused_block_in::<T, true>(blk, w, r0, c0, ga, gb, ct, cn, labels)
        } else {
            fused_block_in::<T, false>(blk, w, r0, c0, ga, gb, ct, cn, labels)
        }
    }
}

#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn fused_block_in<T: Real, const TRACK: bool>(
    blk: &[T], w: usize, r0: usize, c0: usize, ga: &mut [Row<T>], gb: &mut [Row<T>], ct: &mut [T], cn: &mut [T],
    labels: &[u32],
) {
    let h = ga.len();
    let li = |i: usize| if TRACK { labels[i] } else { 0 };
    let lab = |c: usize| if TRACK { &labels[c..c0 + w] } else { &labels[..0] };
    if gb.is_empty() {
        for (u, st) in ga.iter().enumerate().take(w) {
            (ct[u], cn[u]) = st.filt(TRACK);
        }
        // Conservative: whether any row of the block still tracks its nearest match.
        let mut col_near = cn.iter().any(|&x| x > T::neg_infinity());
        for t in 0..h {
            let (left, right) = ga.split_at_mut(t + 1);
            let vals = &blk[t * w + t + 1..(t + 1) * w];
            fused_row::<T, TRACK>(
                &mut left[t], r0 + t, li(r0 + t), vals, c0 + t + 1, &mut right[..w - t - 1], &mut ct[t + 1..],
                &mut cn[t + 1..], lab(c0 + t + 1), &mut col_near,
            );
        }
        return;
    }
    for (u, st) in gb.iter().enumerate().take(w) {
        (ct[u], cn[u]) = st.filt(TRACK);
    }
    let mut col_near = cn.iter().any(|&x| x > T::neg_infinity());
    for (t, ri) in ga.iter_mut().enumerate() {
        let vals = &blk[t * w..(t + 1) * w];
        fused_row::<T, TRACK>(ri, r0 + t, li(r0 + t), vals, c0, gb, ct, cn, lab(c0), &mut col_near);
    }
}
