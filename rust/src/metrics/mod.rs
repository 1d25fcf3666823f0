//! Kernels of `reprkit.metrics`: exact streamed neighbour searches that keep
//! only O(rows · k) state, for retrieval metrics (PML's AccuracyCalculator
//! definitions), kNN between two sets, and the neighbour ranks behind
//! trustworthiness and continuity (Venna & Kaski 2001).
//!
//! A set searched against itself (retrieval and kNN with `reference=None`)
//! goes through the symmetric scan of [`scan::symmetric`]: each block of the
//! guarded GEMM of [`SqEuclid`] is computed once for both of its row blocks
//! (half the arithmetic) while every row's candidate buffer stays alive, up
//! to [`scan::SYM_BUDGET`] bytes. Otherwise (a separate reference set, or
//! buffers above the budget) fixed query tiles stream against fixed
//! candidate blocks. Either way a row keeps the exact top k of its pairs in
//! the (distance, index) order whatever order they arrive in, so the output
//! is bit-identical for any thread count. Ties go to the lower reference
//! index, as in [`crate::knn`].

use crate::distances::{unit_rows, Metric, SqEuclid};
use crate::error::{check_finite, check_len, Error, Result};
use crate::knn::Knn;
use crate::linalg::sq_dist;
use crate::Real;
use rayon::prelude::*;
use std::cmp::Ordering;

mod scan;

use scan::{before, blocked, cmp_pair, symmetric, symmetric_rows, unblocked, Best, Row, SYM_BUDGET};
use std::sync::Mutex;

/// Reference rows sampled to start each row of the symmetric scan at a bound
/// on its cap-th distance: at most n/32 of them (their distances cost 2s/n of
/// the scan's GEMM), none below 32.
const SAMPLE: usize = 2048;

const QUERY_TILE: usize = 256;
const CAND_BLOCK: usize = 2048;
/// Candidate slots per query tile: a tile of queries keeping R neighbours each
/// holds at most ~1.25R of them, so big classes shrink the tile instead of
/// asking for tile × n memory.
const TILE_SLOTS: usize = 1 << 22;

/// `vals` (distances to columns c0..) without column `skip`, as the one or two
/// runs around it: a self-match is cut out once per block row, not tested per entry.
#[inline]
fn runs<T>(c0: usize, vals: &[T], skip: usize) -> [(usize, &[T]); 2] {
    if skip >= c0 && skip < c0 + vals.len() {
        let t = skip - c0;
        [(c0, &vals[..t]), (skip + 1, &vals[t + 1..])]
    } else {
        [(c0, vals), (c0 + vals.len(), &vals[..0])]
    }
}

/// Query rows and reference rows, prepared for blocked squared distances.
/// `exclude[q]` is the reference index query q must skip (itself), if any.
struct Scan<'a, T> {
    prep: SqEuclid<'a, T>,
    q: &'a [T],
    r: &'a [T],
    nr: usize,
}

impl<'a, T: Real> Scan<'a, T> {
    /// Squared distances of queries r0..r1 to every reference, one candidate
    /// block at a time: `visit(local query, first column, values)`.
    fn blocks(&self, r0: usize, r1: usize, mut visit: impl FnMut(usize, usize, &[T])) {
        let mut block = vec![T::zero(); (r1 - r0) * CAND_BLOCK.min(self.nr)];
        let mut c0 = 0;
        while c0 < self.nr {
            let c1 = (c0 + CAND_BLOCK).min(self.nr);
            let w = c1 - c0;
            self.prep.fill_block_sq(r0, r1, c0, c1, &mut block[..(r1 - r0) * w]);
            for q in 0..r1 - r0 {
                visit(q, c0, &block[q * w..(q + 1) * w]);
            }
            c0 = c1;
        }
    }
}

/// Owned unit rows for the cosine metric (kept alive while a [`Scan`] borrows them).
struct Prepared<T> {
    q: Option<Vec<T>>,
    r: Option<Vec<T>>,
}

fn check_rows<T: Real>(name: &str, x: &[T], n: usize, d: usize) -> Result<()> {
    check_len(name, x.len(), n, d)?;
    if n == 0 || d == 0 {
        return Err(Error::Shape(format!("{name}: needs at least 1 row and 1 feature, got ({n}, {d})")));
    }
    check_finite(name, x)
}

fn prepare<T: Real>(q: &[T], nq: usize, r: Option<(&[T], usize)>, d: usize, metric: Metric) -> Result<Prepared<T>> {
    check_rows("query", q, nq, d)?;
    if let Some((rd, nr)) = r {
        check_rows("reference", rd, nr, d)?;
    }
    Ok(if metric == Metric::Cosine {
        Prepared { q: Some(unit_rows(q, nq, d).0), r: r.map(|(rd, nr)| unit_rows(rd, nr, d).0) }
    } else {
        Prepared { q: None, r: None }
    })
}

fn scan<'a, T: Real>(p: &'a Prepared<T>, q: &'a [T], nq: usize, r: Option<(&'a [T], usize)>, d: usize) -> Scan<'a, T> {
    let qs: &[T] = p.q.as_deref().unwrap_or(q);
    let rr = r.map(|(rd, nr)| (p.r.as_deref().unwrap_or(rd), nr));
    let (rs, nr) = rr.unwrap_or((qs, nq));
    Scan { prep: SqEuclid::new(qs, nq, rr, d), q: qs, r: rs, nr }
}

fn to_metric<T: Real>(v: T, metric: Metric) -> T {
    match metric {
        Metric::SqEuclidean => v,
        Metric::Euclidean => v.sqrt(),
        // ‖x̂ − ŷ‖² = 2 − 2cos, so cosine distance = ‖x̂ − ŷ‖² / 2.
        Metric::Cosine => v * T::c(0.5),
    }
}

fn check_exclude(exclude: Option<&[u32]>, nq: usize, nr: usize) -> Result<()> {
    if let Some(e) = exclude {
        if e.len() != nq {
            return Err(Error::Shape(format!("exclude: {} indices for {nq} queries", e.len())));
        }
        if e.iter().any(|&j| j as usize >= nr) {
            return Err(Error::InvalidParameter(format!("exclude: indices must be in 0..{nr}")));
        }
    }
    Ok(())
}

/// A starting threshold per row for the symmetric scan: the j-th smallest
/// distance of row i to a fixed random sample of `s` rows (itself left out),
/// j = ⌈μ + 4√μ + 4⌉ with μ = s·cap/(n − 1) the expected number of sampled
/// rows among its `cap` nearest, so that the threshold lies above the cap-th
/// distance but for ~4σ events; +∞ where j would exceed the sample. Rows then
/// buffer ~1.5–2·cap candidates instead of several cap, and cut a few times
/// instead of ~15–20. A row the bound leaves with fewer than `cap` pairs is
/// redone exactly ([`top_rows`]). The sample is drawn with a fixed seed:
/// thresholds do not depend on the thread count.
fn sampled_thresholds<T: Real>(x: &[T], n: usize, d: usize, cap_of: &(dyn Fn(usize) -> usize + Sync), sample: usize) -> Vec<T> {
    let s = sample.min(n / 32);
    if s < 32 {
        return vec![T::infinity(); n];
    }
    // Partial Fisher–Yates with splitmix64 (fixed seed).
    let mut idx: Vec<u32> = (0..n as u32).collect();
    let mut z = 0x5eed_5eed_u64;
    for c in 0..s {
        z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut r = z;
        r = (r ^ (r >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        r = (r ^ (r >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        r ^= r >> 31;
        let pick = c + (r % (n - c) as u64) as usize;
        idx.swap(c, pick);
    }
    let picked = &idx[..s];
    let mut col_of = vec![u32::MAX; n];
    for (c, &j) in picked.iter().enumerate() {
        col_of[j as usize] = c as u32;
    }
    let rows: Vec<T> = picked.iter().flat_map(|&j| x[j as usize * d..(j as usize + 1) * d].iter().copied()).collect();
    let prep = SqEuclid::new(x, n, Some((&rows, s)), d);
    let mut thr = vec![T::infinity(); n];
    thr.par_chunks_mut(QUERY_TILE).enumerate().for_each_init(
        || vec![T::zero(); QUERY_TILE * s],
        |blk, (t, out)| {
            let r0 = t * QUERY_TILE;
            let r1 = r0 + out.len();
            let blk = &mut blk[..out.len() * s];
            prep.fill_block_sq(r0, r1, 0, s, blk);
            for (qi, o) in out.iter_mut().enumerate() {
                let i = r0 + qi;
                let cap = cap_of(i);
                let mu = (s * cap) as f64 / (n - 1) as f64;
                let j = (mu + 4.0 * mu.sqrt() + 4.0).ceil() as usize;
                if cap == 0 || j >= s {
                    continue;
                }
                let row = &mut blk[qi * s..(qi + 1) * s];
                if let Some(c) = row.get_mut(col_of[i] as usize) {
                    *c = T::infinity();
                }
                let (_, v, _) = row.select_nth_unstable_by(j - 1, |a, b| a.partial_cmp(b).unwrap_or(Ordering::Equal));
                *o = *v;
            }
        },
    );
    thr
}

/// Every row's top `cap_of(i)` pairs (and, with `labels`, its nearest
/// same-label row) over the set `s` against itself, by the fused symmetric
/// scan started at sampled thresholds; the rare rows a threshold left short
/// are rescanned from +∞ (only their row blocks' distance blocks), so the
/// result is the exact one whatever the sample.
fn top_rows<T: Real>(
    s: &Scan<'_, T>, n: usize, d: usize, cap_of: &(dyn Fn(usize) -> usize + Sync), labels: Option<&[u32]>, sample: usize,
) -> Vec<Row<T>> {
    top_rows_from(s, n, cap_of, labels, sampled_thresholds(s.q, n, d, cap_of, sample))
}

/// [`top_rows`] from given starting thresholds (any: exact whatever they are).
fn top_rows_from<T: Real>(
    s: &Scan<'_, T>, n: usize, cap_of: &(dyn Fn(usize) -> usize + Sync), labels: Option<&[u32]>, thr: Vec<T>,
) -> Vec<Row<T>> {
    let rows = blocked(n, |i| Row::below(cap_of(i), thr[i]));
    drop(thr);
    symmetric_rows(&s.prep, n, &rows, labels);
    let mut states = unblocked(rows);
    let short: Vec<bool> = states.iter().map(|st| st.best.short()).collect();
    if short.iter().any(|&w| w) {
        let redo = blocked(n, |i| Row::new(if short[i] { cap_of(i) } else { 0 }));
        let wanted: Vec<bool> = short.chunks(scan::SYM_TILE).map(|c| c.iter().any(|&w| w)).collect();
        let feed = |st: &mut Row<T>, i: usize, c0: usize, vals: &[T]| match labels {
            Some(l) => st.offer(c0, vals, &l[c0..c0 + vals.len()], l[i], true),
            None => st.offer(c0, vals, &[], 0, false),
        };
        symmetric(&s.prep, n, &redo, &|b| wanted[b], &feed);
        for (i, st) in unblocked(redo).into_iter().enumerate() {
            if short[i] {
                states[i] = st;
            }
        }
    }
    states
}

/// Exact kNN of `nq` query rows among `nr` reference rows (`r = None`: the
/// queries themselves, each skipping itself). `exclude[q]` names a reference
/// row query q must skip (a sampled query's own row). Distances are exact
/// (recomputed directly for the chosen neighbours) in `metric`.
pub fn knn_cross<T: Real>(
    q: &[T], nq: usize, r: Option<(&[T], usize)>, d: usize, k: usize, metric: Metric, exclude: Option<&[u32]>,
) -> Result<Knn<T>> {
    knn_cross_in(q, nq, r, d, k, metric, exclude, SYM_BUDGET, SAMPLE)
}

/// [`knn_cross`] with the memory the symmetric scan may take (0: always stream)
/// and the size of its threshold sample (0: none).
#[allow(clippy::too_many_arguments)]
fn knn_cross_in<T: Real>(
    q: &[T], nq: usize, r: Option<(&[T], usize)>, d: usize, k: usize, metric: Metric, exclude: Option<&[u32]>,
    budget: usize, sample: usize,
) -> Result<Knn<T>> {
    let p = prepare(q, nq, r, d, metric)?;
    let s = scan(&p, q, nq, r, d);
    let same = r.is_none();
    check_exclude(exclude, nq, s.nr)?;
    let skips = same || exclude.is_some();
    let avail = s.nr - usize::from(skips);
    if k == 0 || k > avail {
        return Err(Error::InvalidParameter(format!(
            "k must be in 1..={avail} for {} reference rows{}, got {k}",
            s.nr,
            if skips { " (a query never retrieves itself)" } else { "" }
        )));
    }
    let skip_of = |i: usize| -> usize {
        if same {
            i
        } else {
            exclude.map_or(usize::MAX, |e| e[i] as usize)
        }
    };
    let mut indices = vec![0u32; nq * k];
    let mut distances = vec![T::zero(); nq * k];
    // Exact distances of the winners (the GEMM form rounds at eps·‖x‖²), re-sorted.
    let write = |i: usize, b: Best<T>, it: &mut [u32], dt: &mut [T]| {
        let xi = &s.q[i * d..(i + 1) * d];
        let mut pairs: Vec<(T, u32)> =
            b.finish().into_iter().map(|(_, j)| (sq_dist(xi, &s.r[j as usize * d..(j as usize + 1) * d]), j)).collect();
        pairs.sort_unstable_by(cmp_pair);
        for (c, &(v, j)) in pairs.iter().enumerate() {
            it[c] = j;
            dt[c] = to_metric(v, metric);
        }
    };
    if same && nq * Best::<T>::slots(k) * std::mem::size_of::<(T, u32)>() <= budget {
        // A set against itself: each distance block once, fed to both of its row blocks.
        let best = top_rows(&s, nq, d, &|_| k, None, sample);
        indices.par_chunks_mut(k).zip(distances.par_chunks_mut(k)).zip(best).enumerate().for_each(
            |(i, ((it, dt), b))| write(i, b.best, it, dt),
        );
        return Ok(Knn { n: nq, k, indices, distances });
    }
    indices.par_chunks_mut(QUERY_TILE * k).zip(distances.par_chunks_mut(QUERY_TILE * k)).enumerate().for_each(
        |(t, (it, dt))| {
            let r0 = t * QUERY_TILE;
            let r1 = (r0 + QUERY_TILE).min(nq);
            let mut best: Vec<Best<T>> = (r0..r1).map(|_| Best::new(k)).collect();
            s.blocks(r0, r1, |qi, c0, row| {
                for (c, v) in runs(c0, row, skip_of(r0 + qi)) {
                    best[qi].offer(c, v);
                }
            });
            for (qi, b) in best.into_iter().enumerate() {
                write(r0 + qi, b, &mut it[qi * k..(qi + 1) * k], &mut dt[qi * k..(qi + 1) * k]);
            }
        },
    );
    Ok(Knn { n: nq, k, indices, distances })
}

/// Per-query retrieval scores, as PML's AccuracyCalculator defines them.
/// `r_count[q]` is R, the number of references sharing the query's label
/// (itself excluded); queries with R = 0 carry zeros and are to be left out.
#[derive(Clone, Debug, Default)]
pub struct Retrieval {
    pub r_count: Vec<u32>,
    pub precision_at_1: Vec<f64>,
    pub r_precision: Vec<f64>,
    pub map_at_r: Vec<f64>,
    pub reciprocal_rank: Vec<f64>,
}

/// Retrieval scores of each query against the reference set (`r = None`:
/// the queries themselves, self-matches excluded).
///
/// With `k = None` every query ranks the whole reference set, as PML does
/// with `k=None`: precision@1, R-precision and MAP@R read the top R, and the
/// reciprocal rank of the first match is exact even beyond R (a second pass
/// counts the references closer than the nearest match, only for queries
/// with no match in their top R). With `k = Some(k)` the ranking stops at k:
/// R-precision reads min(R, k) places, MAP@R sums the top min(R, k) but
/// divides by R (as PML does), and a query with no match in its top k has
/// reciprocal rank 0.
pub fn retrieval<T: Real>(
    q: &[T], nq: usize, q_labels: &[u32], r: Option<(&[T], usize, &[u32])>, d: usize, k: Option<usize>, metric: Metric,
) -> Result<Retrieval> {
    retrieval_in(q, nq, q_labels, r, d, k, metric, SYM_BUDGET, SAMPLE)
}

/// [`retrieval`] with the memory the symmetric scan may take (0: always stream)
/// and the size of its threshold sample (0: none).
#[allow(clippy::too_many_arguments)]
fn retrieval_in<T: Real>(
    q: &[T], nq: usize, q_labels: &[u32], r: Option<(&[T], usize, &[u32])>, d: usize, k: Option<usize>, metric: Metric,
    budget: usize, sample: usize,
) -> Result<Retrieval> {
    let rr = r.map(|(a, n, _)| (a, n));
    let p = prepare(q, nq, rr, d, metric)?;
    let s = scan(&p, q, nq, rr, d);
    let same = r.is_none();
    let r_labels: &[u32] = r.map_or(q_labels, |(_, _, l)| l);
    if q_labels.len() != nq {
        return Err(Error::Shape(format!("query_labels: {} labels for {nq} queries", q_labels.len())));
    }
    if r_labels.len() != s.nr {
        return Err(Error::Shape(format!("reference_labels: {} labels for {} references", r_labels.len(), s.nr)));
    }
    let avail = s.nr - usize::from(same);
    if let Some(k) = k {
        if k == 0 || k > avail {
            return Err(Error::InvalidParameter(format!("k must be in 1..={avail} (reference rows available to a query), got {k}")));
        }
    }
    let n_lab = q_labels.iter().chain(r_labels).map(|&l| l as usize + 1).max().unwrap_or(0);
    let mut counts = vec![0u32; n_lab];
    for &l in r_labels {
        counts[l as usize] += 1;
    }
    let r_of = |i: usize| -> u32 { counts[q_labels[i] as usize].saturating_sub(u32::from(same)) };
    let cap_of = |i: usize| -> usize {
        match (r_of(i), k) {
            (0, _) => 0,
            (_, Some(k)) => k,
            (rc, None) => rc as usize,
        }
    };
    let track = k.is_none();
    // Scores of a query from its top list; `None` in the last place: no match in the top R
    // (k = None), the reciprocal rank needs the second pass.
    let score = |i: usize, st: Row<T>| -> ([f64; 4], bool) {
        let rc = r_of(i) as usize;
        if rc == 0 {
            return ([0.0; 4], false);
        }
        let lq = q_labels[i];
        let top = st.best.finish();
        let hit = |c: usize| r_labels[top[c].1 as usize] == lq;
        let r_eff = rc.min(top.len());
        let (mut cum, mut ap) = (0usize, 0.0f64);
        for c in 0..r_eff {
            if hit(c) {
                cum += 1;
                ap += cum as f64 / (c + 1) as f64;
            }
        }
        let first = (0..top.len()).find(|&c| hit(c));
        let rr = first.map_or(0.0, |c| 1.0 / (c + 1) as f64);
        // PML divides MAP@R by the full R even when k clips the ranking (R-precision by min(R, k)).
        ([f64::from(u8::from(hit(0))), cum as f64 / r_eff as f64, ap / rc as f64, rr], first.is_none() && track)
    };
    // Rank of the nearest match = 1 + references before it in (distance, index) order.
    let count_before = |near: (T, u32), c0: usize, vals: &[T]| -> usize {
        vals.iter().enumerate().filter(|&(t, &v)| before((v, (c0 + t) as u32), near)).count()
    };
    let slots: usize = (0..nq).map(|i| Best::<T>::slots(cap_of(i))).sum();
    let out: Vec<[f64; 4]> = if same && slots * std::mem::size_of::<(T, u32)>() <= budget {
        // Queries = references: each distance block once, fed to both of its row blocks.
        let states = top_rows(&s, nq, d, &cap_of, track.then_some(q_labels), sample);
        let nears: Vec<(T, u32)> = states.iter().map(|st| st.near).collect();
        let (mut out, second): (Vec<[f64; 4]>, Vec<bool>) =
            states.into_par_iter().enumerate().map(|(i, st)| score(i, st)).unzip();
        if second.iter().any(|&w| w) {
            // The rare queries with no match in their top R: the blocks of their row blocks again.
            let counts: Vec<Mutex<Vec<usize>>> = blocked(nq, |_| 0usize);
            let wanted_block: Vec<bool> = second.chunks(scan::SYM_TILE).map(|c| c.iter().any(|&w| w)).collect();
            let feed = |c: &mut usize, i: usize, c0: usize, vals: &[T]| {
                if second[i] {
                    *c += count_before(nears[i], c0, vals);
                }
            };
            symmetric(&s.prep, nq, &counts, &|b| wanted_block[b], &feed);
            for (i, c) in unblocked(counts).into_iter().enumerate() {
                if second[i] {
                    out[i][3] = 1.0 / (c + 1) as f64;
                }
            }
        }
        out
    } else {
        let max_cap = (0..nq).map(cap_of).max().unwrap_or(0);
        // The tile shrinks with the largest R so that its candidate buffers stay bounded.
        let tile = (TILE_SLOTS / Best::<T>::slots(max_cap).max(1)).clamp(1, QUERY_TILE);
        let n_tiles = nq.div_ceil(tile);
        let per_tile: Vec<Vec<[f64; 4]>> = (0..n_tiles)
            .into_par_iter()
            .map(|t| {
                let r0 = t * tile;
                let r1 = (r0 + tile).min(nq);
                let mut rows: Vec<Row<T>> = (r0..r1).map(|i| Row::new(cap_of(i))).collect();
                s.blocks(r0, r1, |qi, c0, row| {
                    let i = r0 + qi;
                    for (c, v) in runs(c0, row, if same { i } else { usize::MAX }) {
                        rows[qi].offer(c, v, &r_labels[c..c + v.len()], q_labels[i], track);
                    }
                });
                let nears: Vec<(T, u32)> = rows.iter().map(|st| st.near).collect();
                let (mut out, second): (Vec<[f64; 4]>, Vec<bool>) =
                    rows.into_iter().enumerate().map(|(qi, st)| score(r0 + qi, st)).unzip();
                if second.iter().any(|&w| w) {
                    let mut closer = vec![0usize; r1 - r0];
                    s.blocks(r0, r1, |qi, c0, row| {
                        if second[qi] {
                            for (c, v) in runs(c0, row, if same { r0 + qi } else { usize::MAX }) {
                                closer[qi] += count_before(nears[qi], c, v);
                            }
                        }
                    });
                    for (qi, c) in closer.into_iter().enumerate() {
                        if second[qi] {
                            out[qi][3] = 1.0 / (c + 1) as f64;
                        }
                    }
                }
                out
            })
            .collect();
        per_tile.into_iter().flatten().collect()
    };
    let mut res = Retrieval::default();
    for (i, v) in out.into_iter().enumerate() {
        res.r_count.push(r_of(i));
        res.precision_at_1.push(v[0]);
        res.r_precision.push(v[1]);
        res.map_at_r.push(v[2]);
        res.reciprocal_rank.push(v[3]);
    }
    Ok(res)
}

/// For each query row `rows[q]` of `x` (all rows when `rows = None`), the
/// 1-based rank among the other rows of `x` — ascending distance, ties to the
/// lower index, as a stable argsort orders them — of each of its `k` given
/// neighbours `nbrs[q * k..]` (indices into x). Memory O(rows · k).
///
/// A neighbour's own distance is computed directly, and its column in the
/// streamed blocks is recognised by index (never by value), so it is never
/// counted before itself whatever the GEMM rounding; any other column within
/// rounding of a threshold is compared by its direct distance too, so exact
/// ties (duplicate rows) order by index.
pub fn neighbour_ranks<T: Real>(
    x: &[T], n: usize, d: usize, rows: Option<&[u32]>, nbrs: &[u32], k: usize, metric: Metric,
) -> Result<Vec<u32>> {
    check_rows("X", x, n, d)?;
    let nq = rows.map_or(n, |r| r.len());
    if k == 0 || nbrs.len() != nq * k {
        return Err(Error::Shape(format!("neighbours: {} indices for {nq} rows × k = {k}", nbrs.len())));
    }
    if let Some(r) = rows {
        if r.iter().any(|&i| i as usize >= n) {
            return Err(Error::InvalidParameter(format!("rows: indices must be in 0..{n}")));
        }
    }
    if nbrs.iter().any(|&j| j as usize >= n) {
        return Err(Error::InvalidParameter(format!("neighbours: indices must be in 0..{n}")));
    }
    let gathered: Option<Vec<T>> =
        rows.map(|r| r.iter().flat_map(|&i| x[i as usize * d..(i as usize + 1) * d].iter().copied()).collect());
    let (qd, rr) = match &gathered {
        Some(g) => (&g[..], Some((x, n))),
        None => (x, None),
    };
    let p = prepare(qd, nq, rr, d, metric)?;
    let s = scan(&p, qd, nq, rr, d);
    let self_of = |q: usize| rows.map_or(q, |r| r[q] as usize);
    let mut ranks = vec![0u32; nq * k];
    ranks.par_chunks_mut(QUERY_TILE * k).enumerate().for_each(|(t, out)| {
        let r0 = t * QUERY_TILE;
        let r1 = (r0 + QUERY_TILE).min(nq);
        // Per query: thresholds sorted by (distance, index), neighbours sorted by index
        // (with the position of their threshold), and a difference array of counts.
        let mut thr: Vec<Vec<(T, u32)>> = Vec::with_capacity(r1 - r0);
        let mut by_idx: Vec<Vec<(u32, T)>> = Vec::with_capacity(r1 - r0);
        for q in r0..r1 {
            let xi = &s.q[q * d..(q + 1) * d];
            let mut th: Vec<(T, u32)> =
                nbrs[q * k..(q + 1) * k].iter().map(|&j| (sq_dist(xi, &s.r[j as usize * d..(j as usize + 1) * d]), j)).collect();
            let mut bi: Vec<(u32, T)> = th.iter().map(|&(v, j)| (j, v)).collect();
            bi.sort_unstable_by_key(|p| p.0);
            th.sort_unstable_by(cmp_pair);
            thr.push(th);
            by_idx.push(bi);
        }
        // Error bound of a streamed distance the guard did not recompute: ~√d·eps of the squared
        // norms (absolute), and, as it exceeds CANCEL_TOL·norms, ~√d·eps/CANCEL_TOL of itself
        // (relative). The smaller bound makes the window: with concentrated distances (high d)
        // the relative one alone catches most columns and sends them to the exact pass.
        let c = T::EPS * T::c(4.0 * (d as f64).sqrt() + 8.0);
        let win = c / T::CANCEL_TOL;
        let ny_max = s.prep.max_sq_norm_y();
        // Per threshold t: columns certainly before it (streamed value below its rounding
        // window) are counted by a branch-free pass; the rare columns inside the window
        // are decided by their direct distance; the query's own column and the
        // neighbours' columns are corrected by index, so none is miscounted by rounding.
        let mut cnt = vec![vec![0i64; k]; r1 - r0];
        s.blocks(r0, r1, |qi, c0, row| {
            let c1 = c0 + row.len();
            let skip = self_of(r0 + qi);
            let th = &thr[qi];
            let bi = &by_idx[qi];
            let xi = &s.q[(r0 + qi) * d..(r0 + qi + 1) * d];
            let special = |j: usize| j == skip || bi.binary_search_by_key(&(j as u32), |p| p.0).is_ok();
            let ct = &mut cnt[qi];
            let abs = c * (s.prep.sq_norm_x(r0 + qi) + ny_max);
            let lower = |tv: T| tv - if abs < win * tv { abs } else { win * tv };
            for (t, &(tv, tj)) in th.iter().enumerate() {
                let lo = lower(tv);
                let hi = tv + (tv - lo);
                // One branch-free (vectorisable) pass: the count below the window and whether any
                // column falls inside it; the rare rows with such a column take the exact pass.
                let below: u32 = row.iter().map(|&v| u32::from(v < lo)).sum();
                let near: u32 = row.iter().map(|&v| u32::from(v >= lo) & u32::from(v <= hi)).sum();
                ct[t] += i64::from(below);
                if near == 0 {
                    continue;
                }
                for (jj, &v) in row.iter().enumerate() {
                    if v >= lo && v <= hi {
                        let j = c0 + jj;
                        if special(j) {
                            continue;
                        }
                        let e = sq_dist(xi, &s.r[j * d..(j + 1) * d]);
                        ct[t] += i64::from(cmp_pair(&(e, j as u32), &(tv, tj)) == Ordering::Less);
                    }
                }
            }
            if (c0..c1).contains(&skip) {
                let v = row[skip - c0];
                for (t, &(tv, _)) in th.iter().enumerate() {
                    ct[t] -= i64::from(v < lower(tv));
                }
            }
            for &(j, e) in bi.iter() {
                let j = j as usize;
                if !(c0..c1).contains(&j) || j == skip {
                    continue;
                }
                let v = row[j - c0];
                for (t, &(tv, tj)) in th.iter().enumerate() {
                    let counted = v < lower(tv);
                    let before = cmp_pair(&(e, j as u32), &(tv, tj)) == Ordering::Less;
                    ct[t] += i64::from(before) - i64::from(counted);
                }
            }
        });
        for qi in 0..r1 - r0 {
            for c in 0..k {
                out[qi * k + c] = (cnt[qi][c] + 1) as u32;
            }
        }
        // `out` holds ranks in threshold order; put them back in the caller's neighbour order.
        for qi in 0..r1 - r0 {
            let q = r0 + qi;
            let sorted: Vec<(u32, u32)> = thr[qi].iter().zip(&out[qi * k..(qi + 1) * k]).map(|(&(_, j), &rk)| (j, rk)).collect();
            for c in 0..k {
                let j = nbrs[q * k + c];
                // Neighbour lists hold distinct indices; find this one's rank.
                let rk = sorted.iter().find(|p| p.0 == j).map_or(0, |p| p.1);
                out[qi * k + c] = rk;
            }
        }
    });
    Ok(ranks)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(n: usize, d: usize, seed: u64) -> Vec<f64> {
        let mut s = seed;
        (0..n * d)
            .map(|_| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((s >> 11) as f64) / (1u64 << 53) as f64
            })
            .collect()
    }

    fn sorted_row(x: &[f64], d: usize, i: usize, n: usize) -> Vec<(f64, u32)> {
        let xi = &x[i * d..(i + 1) * d];
        let mut v: Vec<(f64, u32)> = (0..n).filter(|&j| j != i).map(|j| (sq_dist(xi, &x[j * d..(j + 1) * d]), j as u32)).collect();
        v.sort_by(cmp_pair);
        v
    }

    #[test]
    fn knn_cross_matches_brute_force_across_blocks() {
        let (n, d, k) = (2300, 3, 5);
        let mut x = data(n, d, 3);
        x[2200 * d..2201 * d].copy_from_slice(&[0.5, 0.5, 0.5]);
        x[7 * d..8 * d].copy_from_slice(&[0.5, 0.5, 0.5]);
        let knn = knn_cross(&x, n, None, d, k, Metric::SqEuclidean, None).unwrap();
        for i in [0usize, 7, 255, 256, 2200, 2299] {
            let want: Vec<u32> = sorted_row(&x, d, i, n)[..k].iter().map(|p| p.1).collect();
            assert_eq!(&knn.indices[i * k..(i + 1) * k], &want[..], "row {i}");
        }
        // Sampled queries against the full set, skipping their own rows, agree with the full search.
        let rows = [7u32, 2200, 100];
        let q: Vec<f64> = rows.iter().flat_map(|&i| x[i as usize * d..(i as usize + 1) * d].to_vec()).collect();
        let sub = knn_cross(&q, 3, Some((&x, n)), d, k, Metric::SqEuclidean, Some(&rows)).unwrap();
        for (a, &i) in rows.iter().enumerate() {
            assert_eq!(&sub.indices[a * k..(a + 1) * k], &knn.indices[i as usize * k..(i as usize + 1) * k]);
        }
    }

    #[test]
    fn ranks_match_stable_sort_with_ties() {
        let (n, d, k) = (300, 2, 4);
        let mut x = data(n, d, 11);
        // Exact ties: duplicates of row 0.
        for i in [5usize, 9, 200] {
            let r = x[..d].to_vec();
            x[i * d..(i + 1) * d].copy_from_slice(&r);
        }
        // Distinct neighbours other than the row itself, spread over the set.
        let nbrs: Vec<u32> = (0..n).flat_map(|i| (0..k).map(move |c| ((i + 1 + c * 37) % n) as u32)).collect();
        let ranks = neighbour_ranks(&x, n, d, None, &nbrs, k, Metric::Euclidean).unwrap();
        for i in 0..n {
            let row = sorted_row(&x, d, i, n);
            for c in 0..k {
                let j = nbrs[i * k + c];
                let want = row.iter().position(|p| p.1 == j).unwrap() as u32 + 1;
                assert_eq!(ranks[i * k + c], want, "row {i} neighbour {j}");
            }
        }
    }

    #[test]
    fn retrieval_against_loop() {
        let (n, d) = (2200, 3);
        let x = data(n, d, 5);
        let labels: Vec<u32> = (0..n as u32).map(|i| (i * 13 % 7) % 5).collect();
        for k in [None, Some(20)] {
            let res = retrieval(&x, n, &labels, None, d, k, Metric::Euclidean).unwrap();
            for i in 0..n {
                let row = sorted_row(&x, d, i, n);
                let row = &row[..k.unwrap_or(n - 1)];
                let rc = labels.iter().filter(|&&l| l == labels[i]).count() - 1;
                let re = rc.min(row.len());
                let hits: Vec<bool> = row.iter().map(|p| labels[p.1 as usize] == labels[i]).collect();
                let cum: Vec<usize> = hits.iter().scan(0, |a, &h| { *a += h as usize; Some(*a) }).collect();
                let rp = cum[re - 1] as f64 / re as f64;
                let ap: f64 = (0..re).filter(|&c| hits[c]).map(|c| cum[c] as f64 / (c + 1) as f64).sum::<f64>() / rc as f64;
                let rr = hits.iter().position(|&h| h).map_or(0.0, |c| 1.0 / (c + 1) as f64);
                assert_eq!(res.r_count[i] as usize, rc);
                assert_eq!(res.precision_at_1[i], f64::from(u8::from(hits[0])));
                assert!((res.r_precision[i] - rp).abs() < 1e-12 && (res.map_at_r[i] - ap).abs() < 1e-12, "row {i}");
                assert!((res.reciprocal_rank[i] - rr).abs() < 1e-12, "row {i} rr {} {rr}", res.reciprocal_rank[i]);
            }
        }
    }

    /// Small integers and their negatives (column mean exactly 0): the centred GEMM
    /// distances are exact, so the data's many ties are exact ties.
    fn grid(n: usize, d: usize, seed: u64) -> Vec<f64> {
        let h: Vec<f64> = data(n / 2, d, seed).iter().map(|v| (v * 5.0).floor() - 2.0).collect();
        let mut x: Vec<f64> = h.iter().copied().chain(h.iter().map(|v| -v)).collect();
        // Interleave the halves so both reach every block.
        for i in (0..n / 2).step_by(3) {
            for c in 0..d {
                x.swap(i * d + c, (n / 2 + i) * d + c);
            }
        }
        x
    }

    fn grid_labels(n: usize) -> Vec<u32> {
        let mut y: Vec<u32> = (0..n as u32).map(|i| (i * 7 + i / 13) % 8).collect();
        y[5] = 100; // present once: left out
        y[40] = 101; // a class of two across blocks: second pass
        y[1900] = 101;
        for i in (700..n).step_by(37) {
            y[i] = 102;
        }
        y
    }

    fn assert_same(a: &Retrieval, b: &Retrieval, what: &str) {
        assert_eq!(a.r_count, b.r_count, "{what}");
        assert_eq!(a.precision_at_1, b.precision_at_1, "{what}");
        assert_eq!(a.r_precision, b.r_precision, "{what}");
        assert_eq!(a.map_at_r, b.map_at_r, "{what}");
        assert_eq!(a.reciprocal_rank, b.reciprocal_rank, "{what}");
    }

    #[test]
    fn symmetric_scan_equals_streaming_with_exact_ties() {
        let (n, d) = (2600, 3);
        let x = grid(n, d, 7);
        let xf: Vec<f32> = x.iter().map(|&v| v as f32).collect();
        let y = grid_labels(n);
        for k in [None, Some(9)] {
            let sym = retrieval_in(&x, n, &y, None, d, k, Metric::Euclidean, usize::MAX, SAMPLE).unwrap();
            let st = retrieval_in(&x, n, &y, None, d, k, Metric::Euclidean, 0, SAMPLE).unwrap();
            assert_same(&sym, &st, "f64");
            assert!(sym.reciprocal_rank.iter().zip(&sym.r_count).any(|(&rr, &rc)| rc > 0 && rr < 1.0 / rc as f64 - 1e-12 && rr > 0.0)
                || k.is_some(), "some query needs the second pass");
            let sym = retrieval_in(&xf, n, &y, None, d, k, Metric::Euclidean, usize::MAX, SAMPLE).unwrap();
            let st = retrieval_in(&xf, n, &y, None, d, k, Metric::Euclidean, 0, SAMPLE).unwrap();
            assert_same(&sym, &st, "f32");
            // Cosine: unit rows through the same scan (random rows: no ties within rounding).
            let z = data(n, d, 8);
            let sym = retrieval_in(&z, n, &y, None, d, k, Metric::Cosine, usize::MAX, SAMPLE).unwrap();
            let st = retrieval_in(&z, n, &y, None, d, k, Metric::Cosine, 0, SAMPLE).unwrap();
            assert_same(&sym, &st, "cosine");
        }
        let a = knn_cross_in(&x, n, None, d, 6, Metric::Euclidean, None, usize::MAX, SAMPLE).unwrap();
        let b = knn_cross_in(&x, n, None, d, 6, Metric::Euclidean, None, 0, SAMPLE).unwrap();
        assert_eq!(a.indices, b.indices);
        assert_eq!(a.distances, b.distances);
        for i in [0usize, 5, scan::SYM_TILE - 1, scan::SYM_TILE, 2599] {
            let want: Vec<u32> = sorted_row(&x, d, i, n)[..6].iter().map(|p| p.1).collect();
            assert_eq!(&a.indices[i * 6..(i + 1) * 6], &want[..], "row {i}");
        }
    }

    /// Rows whose starting threshold is too tight (here: forced) are rescanned: the
    /// result equals the scan from +∞ and the streaming scan, for k = None (near
    /// tracking, classes of varying R) and a fixed k, on label-sorted data with
    /// duplicate rows.
    #[test]
    fn tight_thresholds_are_redone_exactly() {
        let (n, d) = (3000, 4);
        let mut x = grid(n, d, 21);
        // Sorted by label (R varies per class), duplicates across blocks.
        let mut y: Vec<u32> = (0..n as u32).map(|i| (i * i / 997) % 9).collect();
        y.sort_unstable();
        for (a, b) in [(3usize, 2800usize), (600, 601), (10, 2000)] {
            let r = x[a * d..(a + 1) * d].to_vec();
            x[b * d..(b + 1) * d].copy_from_slice(&r);
        }
        let p = prepare(&x, n, None, d, Metric::Euclidean).unwrap();
        let s = scan(&p, &x, n, None, d);
        let mut counts = [0usize; 9];
        y.iter().for_each(|&l| counts[l as usize] += 1);
        for fixed_k in [None, Some(7usize)] {
            let cap_of = |i: usize| fixed_k.unwrap_or(counts[y[i] as usize] - 1);
            let labels = fixed_k.is_none().then_some(&y[..]);
            let free = top_rows_from(&s, n, &cap_of, labels, vec![f64::INFINITY; n]);
            // Too tight for every third row (0: only exact duplicates pass), loose elsewhere.
            let thr: Vec<f64> = (0..n).map(|i| if i % 3 == 0 { 0.0 } else { 1e9 }).collect();
            let tight = top_rows_from(&s, n, &cap_of, labels, thr);
            for (i, (a, b)) in free.into_iter().zip(tight).enumerate() {
                assert_eq!(a.near, b.near, "row {i}");
                assert_eq!(a.best.finish(), b.best.finish(), "row {i}");
            }
        }
        // Through the public path (sampled thresholds) against the streaming scan.
        for k in [None, Some(5)] {
            let sym = retrieval_in(&x, n, &y, None, d, k, Metric::Euclidean, usize::MAX, 64).unwrap();
            let st = retrieval_in(&x, n, &y, None, d, k, Metric::Euclidean, 0, 64).unwrap();
            assert_same(&sym, &st, "sorted labels");
        }
        let a = knn_cross_in(&x, n, None, d, 3, Metric::Euclidean, None, usize::MAX, 64).unwrap();
        let b = knn_cross_in(&x, n, None, d, 3, Metric::Euclidean, None, 0, 64).unwrap();
        assert_eq!(a.indices, b.indices);
        assert_eq!(a.distances, b.distances);
    }

    /// Tiny sets (no sample) and a sample that covers most of a small set.
    #[test]
    fn symmetric_scan_tiny_sets() {
        for n in [2usize, 3, 17, 40, 70] {
            let x = data(n, 2, n as u64);
            let y: Vec<u32> = (0..n as u32).map(|i| i % 3).collect();
            for k in [None, Some(1)] {
                let sym = retrieval_in(&x, n, &y, None, 2, k, Metric::Euclidean, usize::MAX, SAMPLE).unwrap();
                let st = retrieval_in(&x, n, &y, None, 2, k, Metric::Euclidean, 0, SAMPLE).unwrap();
                assert_same(&sym, &st, "tiny");
            }
        }
    }

    #[test]
    fn symmetric_scan_thread_count_invariant() {
        let (n, d) = (2400, 5);
        let x: Vec<f32> = data(n, d, 9).iter().map(|&v| v as f32).collect();
        let y: Vec<u32> = (0..n as u32).map(|i| (i * 31 % 11) % 6).collect();
        let in_pool = |t: usize| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(t).build().unwrap();
            pool.install(|| {
                (retrieval(&x, n, &y, None, d, None, Metric::Euclidean).unwrap(), knn_cross(&x, n, None, d, 4, Metric::Euclidean, None).unwrap())
            })
        };
        let (r1, k1) = in_pool(1);
        for t in [2, 4] {
            let (r, kk) = in_pool(t);
            assert_same(&r, &r1, "threads");
            assert_eq!(kk.indices, k1.indices);
            assert_eq!(kk.distances, k1.distances);
        }
    }

    #[test]
    fn best_keeps_the_top_in_any_arrival_order() {
        // Many exact ties: the kept set is the first `cap` by (distance, index) whatever the order.
        let pairs: Vec<(f64, u32)> = (0..3000u32).map(|j| (f64::from((j * 7919) % 97 / 3), j)).collect();
        let mut want = pairs.clone();
        want.sort_by(cmp_pair);
        for cap in [1usize, 5, 40, 333] {
            for seed in 0..4u64 {
                let mut order = pairs.clone();
                let r = data(order.len(), 1, seed);
                let mut keyed: Vec<(f64, (f64, u32))> = r.into_iter().zip(order.drain(..)).collect();
                keyed.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap());
                let mut b = Best::new(cap);
                for (_, (v, j)) in keyed {
                    b.push(v, j);
                }
                assert_eq!(b.finish(), want[..cap].to_vec(), "cap {cap} seed {seed}");
            }
            // Block-row offers (the vectorised filter) in index order agree too.
            let vals: Vec<f64> = pairs.iter().map(|p| p.0).collect();
            let mut b = Best::new(cap);
            b.offer(0, &vals[..1234]);
            b.offer(1234, &vals[1234..]);
            assert_eq!(b.finish(), want[..cap].to_vec(), "offer cap {cap}");
        }
    }

    #[test]
    fn rejects_bad_input() {
        let x = [0.0f32, 1.0, 2.0];
        assert!(knn_cross(&x, 3, None, 1, 3, Metric::Euclidean, None).is_err());
        assert!(retrieval(&x, 3, &[0, 1], None, 1, None, Metric::Euclidean).is_err());
        let bad = [0.0f32, f32::NAN, 2.0];
        assert!(knn_cross(&bad, 3, None, 1, 1, Metric::Euclidean, None).is_err());
    }
}
