//! A memory order for the optimiser's points that keeps each point's
//! P-neighbours near it in memory.
//!
//! The attraction reads y_j for the ~150 P-neighbours of every point: in the
//! input's order those reads are random, and at 10⁶ points (Y is 16 MB) they
//! dominate an iteration. Stored in the Z-order (Morton) of the embedding,
//! neighbours share cache lines and consecutive points share neighbourhoods:
//! at 1M × 50 one FFT iteration went from 520 to 191 ms on 2 cores.
//!
//! P moves with the points (rows and column labels; leaving its rows in place
//! and relabelling only columns measured 580 ms: rows read out of memory order
//! cost what the locality saved). It is rebuilt one array at a time, so the
//! extra memory of a reorder is P's value array (1.2 GB at 1M points), not a
//! second P. Summation orders change with the order: the gradient agrees up to
//! rounding.

use super::affinity::Csr;
use rayon::prelude::*;

/// Where every point is stored: `row[p]` is the original index of position p,
/// `pos[i]` the position of original point i.
#[derive(Clone, Debug)]
pub struct Locality {
    pub row: Vec<u32>,
    pub pos: Vec<u32>,
}

/// Below this many points everything fits in cache: no reordering.
pub const MIN_POINTS: usize = 20_000;
/// Iterations between reorderings (the embedding moves; a reorder costs about two iterations).
pub const EVERY: usize = 100;

/// Spreads the low 21 bits of `v` to every third bit (3-D Morton), or every second (2-D).
fn spread(v: u64, dim: usize) -> u64 {
    let mut out = 0u64;
    for b in 0..(64 / dim).min(21) {
        out |= ((v >> b) & 1) << (dim * b);
    }
    out
}

/// The positions' new order: `perm[q]` is the current position stored at q,
/// sorted by the Morton key of `y` (rows of `dim`, 1 ≤ dim ≤ 3), ties by position.
pub fn morton_order(y: &[f64], n: usize, dim: usize) -> Vec<u32> {
    let bits = (63 / dim).min(21);
    let cells = ((1u64 << bits) - 1) as f64;
    let (mut lo, mut hi) = ([f64::INFINITY; 3], [f64::NEG_INFINITY; 3]);
    for p in y.chunks(dim) {
        for d in 0..dim {
            lo[d] = lo[d].min(p[d]);
            hi[d] = hi[d].max(p[d]);
        }
    }
    let width = (0..dim).map(|d| hi[d] - lo[d]).fold(0.0f64, f64::max);
    let scale = if width > 0.0 && width.is_finite() {
        cells / width
    } else {
        0.0
    };
    let mut keys: Vec<(u64, u32)> = (0..n)
        .into_par_iter()
        .with_min_len(4096)
        .map(|i| {
            let mut k = 0u64;
            for d in 0..dim {
                let q = ((y[i * dim + d] - lo[d]) * scale).clamp(0.0, cells) as u64;
                k |= spread(q, dim) << d;
            }
            (k, i as u32)
        })
        .collect();
    keys.par_sort_unstable();
    keys.into_iter().map(|(_, i)| i).collect()
}

/// Moves P's rows and relabels its columns: new row q is old row `perm[q]`, its
/// columns mapped through `old_to_new` and sorted. One array is rebuilt at a
/// time (the extra memory is the value array, not a second P).
pub fn permute_csr(p: &mut Csr, perm: &[u32], old_to_new: &[u32]) {
    let n = p.n;
    let mut indptr = vec![0usize; n + 1];
    for (q, &r) in perm.iter().enumerate() {
        indptr[q + 1] = indptr[q] + (p.indptr[r as usize + 1] - p.indptr[r as usize]);
    }
    let bounds: Vec<(usize, usize)> = perm
        .iter()
        .map(|&r| (p.indptr[r as usize], p.indptr[r as usize + 1]))
        .collect();
    p.data = gather_segments(&p.data, &indptr, &bounds, |v| v);
    p.indices = gather_segments(&p.indices, &indptr, &bounds, |j| old_to_new[j as usize]);
    p.indptr = indptr;
    // Columns sorted within each row (values follow): neighbours are then read in memory order.
    let mut rows: Vec<(&mut [u32], &mut [f64])> = Vec::with_capacity(n);
    let (mut ri, mut rd) = (&mut p.indices[..], &mut p.data[..]);
    for w in p.indptr.windows(2) {
        let (a, b) = std::mem::take(&mut ri).split_at_mut(w[1] - w[0]);
        let (c, d) = std::mem::take(&mut rd).split_at_mut(w[1] - w[0]);
        rows.push((a, c));
        ri = b;
        rd = d;
    }
    rows.par_iter_mut().with_min_len(1024).for_each_init(
        Vec::new,
        |buf: &mut Vec<(u32, f64)>, (ix, dv)| {
            buf.clear();
            buf.extend(ix.iter().copied().zip(dv.iter().copied()));
            buf.sort_unstable_by_key(|e| e.0);
            for (t, &(j, v)) in buf.iter().enumerate() {
                ix[t] = j;
                dv[t] = v;
            }
        },
    );
}

/// out[indptr[q]..indptr[q+1]] = f(src[bounds[q].0..bounds[q].1]).
fn gather_segments<V: Copy + Send + Sync + Default>(
    src: &[V],
    indptr: &[usize],
    bounds: &[(usize, usize)],
    f: impl Fn(V) -> V + Sync,
) -> Vec<V> {
    let mut out = vec![V::default(); src.len()];
    let n = bounds.len();
    // Chunks of 4096 rows, split off the output by their extents.
    let mut parts: Vec<(usize, &mut [V])> = Vec::new();
    let mut rest = &mut out[..];
    let mut q = 0;
    while q < n {
        let e = (q + 4096).min(n);
        let (a, b) = std::mem::take(&mut rest).split_at_mut(indptr[e] - indptr[q]);
        parts.push((q, a));
        rest = b;
        q = e;
    }
    parts.par_iter_mut().for_each(|(q0, dst)| {
        let mut o = 0;
        for &(a, b) in &bounds[*q0..(*q0 + 4096).min(n)] {
            for (t, v) in src[a..b].iter().enumerate() {
                dst[o + t] = f(*v);
            }
            o += b - a;
        }
    });
    out
}

/// Moves rows of the n × dim `a` so that new row q is old row `perm[q]`.
pub fn gather_rows(a: &mut Vec<f64>, perm: &[u32], dim: usize) {
    let mut out = vec![0.0; a.len()];
    out.par_chunks_mut(dim * 1024)
        .enumerate()
        .for_each(|(t, c)| {
            for (r, dst) in c.chunks_mut(dim).enumerate() {
                let s = perm[t * 1024 + r] as usize;
                dst.copy_from_slice(&a[s * dim..s * dim + dim]);
            }
        });
    *a = out;
}

/// Inverse of a permutation.
pub fn inverse(perm: &[u32]) -> Vec<u32> {
    let mut inv = vec![0u32; perm.len()];
    for (q, &p) in perm.iter().enumerate() {
        inv[p as usize] = q as u32;
    }
    inv
}
