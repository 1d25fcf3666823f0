//! Softmax cross-entropy of rows against themselves (NT-Xent: q = k, the
//! diagonal masked or not), using s_ij = s_ji: only the blocks (t, u), u ≥ t,
//! of the n×n similarity matrix are ever computed.
//!
//! * Pass 1 (log-sum-exp): block (t, u) gives the rows of tile t a partial
//!   (max, Σe^{s−max}) over the columns of tile u and, for u > t, the rows of
//!   tile u one over the rows of tile t. Partials are merged in a fixed order
//!   (row i of tile v: block-rows 0..v−1, then its own block-row).
//! * Pass 2 (gradient): the unordered-pair coefficient
//!   W_ij = (P_ij + P_ji − [j = t_i] − [i = t_j]) / n, P_ij = e^{s_ij − lse_i},
//!   gives ∂L/∂z_i = scale Σ_j W_ij z_j, so block (t, u) adds W·z_u to tile t
//!   and Wᵀ·z_t to tile u.
//!
//! Cost: half a GEMM unit (n²d) per pass for the blocks plus one for W·z:
//! 2 units instead of 3. A parallel task is the pair of block-rows k and
//! nb−1−k (equal work); tasks run in fixed groups of `group`, whose column
//! partials are summed in ascending block-row order after the group: results
//! do not depend on the thread count, and memory is O(group·n·d) besides the
//! output.

use super::rowops::{self, exp1};
use crate::simd::multiversion;
use crate::linalg::{dot, gemm, MatRef};
use crate::Real;
use rayon::prelude::*;

/// Rows per block (256: the GEMM runs near peak at 256×128×256).
pub(super) const SYM_TILE: usize = 256;
/// Tasks (pairs of block-rows) run in parallel between two ordered merges;
/// their column partials, O(group·n·d), are held at once.
pub(super) const SYM_GROUP: usize = 8;

/// Below this a column's partial sum taken against the block maximum may have
/// lost digits to underflow, so it is recomputed against the column's own max.
pub(super) const COL_TINY: f64 = 1e-12;
/// Largest spread of the log-sum-exps within a block for which pass 2 uses one
/// exponential per entry (e^{s−hi}·(e^{hi−lse_i} + e^{hi−lse_j})): terms lost to
/// underflow are then below e^{−87+30} of their row's total.
const LSE_SPREAD: f64 = 30.0;

/// A (max, Σ e^{x − max}) pair; (−∞, 0) is empty.
pub(super) type Part<T> = (T, T);
/// A block-row's index, its rows' partials and the column partials of the rows after it.
type RowStats<T> = (usize, Vec<Part<T>>, Vec<Part<T>>);

#[inline]
pub(super) fn merge<T: Real>(a: Part<T>, b: Part<T>) -> Part<T> {
    if a.0 == T::neg_infinity() {
        return b;
    }
    if b.0 == T::neg_infinity() {
        return a;
    }
    if a.0 >= b.0 {
        (a.0, a.1 + b.1 * (b.0 - a.0).exp())
    } else {
        (b.0, b.1 + a.1 * (a.0 - b.0).exp())
    }
}

pub(super) struct Sym<'a, T> {
    pub z: &'a [T],
    pub n: usize,
    pub d: usize,
    pub scale: T,
    /// Row i's target column; empty: no target terms (the caller adds its own).
    pub targets: &'a [i64],
    /// Mask j = i out of row i's softmax.
    pub nodiag: bool,
    pub tb: usize,
    pub group: usize,
    /// zᵀ, d×n row-major ([`Sym::new`] makes it).
    zt: Vec<T>,
}

impl<'a, T: Real> Sym<'a, T> {
    #[allow(clippy::too_many_arguments)]
    pub fn new(z: &'a [T], n: usize, d: usize, scale: T, targets: &'a [i64], nodiag: bool, tb: usize, group: usize) -> Self {
        Sym { z, n, d, scale, targets, nodiag, tb, group, zt: crate::linalg::transpose(z, n, d) }
    }
    fn nb(&self) -> usize {
        self.n.div_ceil(self.tb)
    }
    fn range(&self, t: usize) -> (usize, usize) {
        (t * self.tb, ((t + 1) * self.tb).min(self.n))
    }
    fn zm(&self) -> MatRef<'a, T> {
        MatRef::new(self.z, self.n, self.d)
    }
    /// Block s_ij = scale·z_i·z_j, i in tile t, j in tile u, into `buf` (row-major);
    /// masked diagonal entries are −∞.
    fn block(&self, t: usize, u: usize, buf: &mut [T]) {
        let ((a0, a1), (b0, b1)) = (self.range(t), self.range(u));
        let (rows, cols) = (a1 - a0, b1 - b0);
        // Columns b0..b1 of zᵀ (d×n, contiguous rows: packs faster than a strided z).
        let zt = MatRef { data: &self.zt[b0..], rows: self.d, cols, rs: self.n as isize, cs: 1 };
        gemm(self.scale, self.zm().rows_range(a0, a1), zt, T::zero(), &mut buf[..rows * cols]);
        if t == u && self.nodiag {
            (0..rows).for_each(|i| buf[i * cols + i] = T::neg_infinity());
        }
    }

    /// Parallel tasks of equal work: block-rows k and nb−1−k (nb−k and k+1
    /// blocks), in groups of `group` tasks.
    fn task_groups(&self) -> Vec<Vec<Vec<usize>>> {
        let nb = self.nb();
        let tasks: Vec<Vec<usize>> =
            (0..nb.div_ceil(2)).map(|k| if k == nb - 1 - k { vec![k] } else { vec![k, nb - 1 - k] }).collect();
        tasks.chunks(self.group).map(|g| g.to_vec()).collect()
    }

    /// Pass 1: the log-sum-exp of every row over its valid columns.
    pub fn lse(&self) -> Vec<T> {
        let n = self.n;
        let empty = (T::neg_infinity(), T::zero());
        let mut col = vec![empty; n];
        let mut row = vec![empty; n];
        for group in self.task_groups() {
            let outs: Vec<Vec<RowStats<T>>> = group
                .par_iter()
                .map(|task| task.iter().map(|&t| { let (rs, cs) = self.lse_blockrow(t); (t, rs, cs) }).collect())
                .collect();
            let mut outs: Vec<_> = outs.into_iter().flatten().collect();
            // Column partials merged in ascending block-row order within a group
            // (groups in order): a fixed order for every row.
            outs.sort_by_key(|o| o.0);
            for (t, rs, cs) in outs {
                let (a0, a1) = self.range(t);
                row[a0..a1].copy_from_slice(&rs);
                for (acc, &c) in col[a1..].iter_mut().zip(&cs) {
                    *acc = merge(*acc, c);
                }
            }
        }
        col.iter().zip(&row).map(|(&c, &r)| {
            let (m, s) = merge(c, r);
            m + s.ln()
        })
        .collect()
    }

    /// Blocks (t, u ≥ t): the row partials of tile t and the column partials of
    /// the rows after tile t.
    fn lse_blockrow(&self, t: usize) -> (Vec<Part<T>>, Vec<Part<T>>) {
        let (n, tb) = (self.n, self.tb);
        let (a0, a1) = self.range(t);
        let rows = a1 - a0;
        let empty = (T::neg_infinity(), T::zero());
        let mut rs = vec![empty; rows];
        let mut cs = vec![empty; n - a1];
        let mut s = vec![T::zero(); rows * tb];
        let mut e = vec![T::zero(); rows * tb];
        let mut rmax = vec![T::zero(); rows];
        let mut w = vec![T::zero(); rows];
        let mut colsum = vec![T::zero(); tb];
        let tiny = T::c(COL_TINY);
        for u in t..self.nb() {
            let (b0, b1) = self.range(u);
            let cols = b1 - b0;
            self.block(t, u, &mut s);
            let (s, e) = (&s[..rows * cols], &mut e[..rows * cols]);
            row_stats(s, e, cols, &mut rs, &mut rmax);
            if u == t {
                continue;
            }
            let bm = col_sums(e, cols, &rmax, &mut w, &mut colsum[..cols]);
            for (j, &c) in colsum[..cols].iter().enumerate() {
                cs[b0 - a1 + j] = if c >= tiny {
                    (bm, c)
                } else {
                    // Recomputed against the column's own maximum.
                    let cm = (0..rows).map(|i| s[i * cols + j]).fold(T::neg_infinity(), |a, b| a.max(b));
                    (cm, (0..rows).map(|i| (s[i * cols + j] - cm).exp()).fold(T::zero(), |a, b| a + b))
                };
            }
        }
        (rs, cs)
    }

    /// lse_i − s_{i,t_i}, row i's loss.
    #[inline]
    fn row_loss(&self, lse: &[T], i: usize) -> T {
        let (d, z) = (self.d, self.z);
        let ti = self.targets[i] as usize;
        let st = self.scale * dot(&z[i * d..(i + 1) * d], &z[ti * d..(ti + 1) * d]);
        // lse_i ≥ s_{i,t_i} exactly; this dot rounds differently from the block GEMM,
        // so a lone-target row (n = 1) could come out a rounding error below 0.
        (lse[i] - st).max(T::zero())
    }

    /// Σ_i (lse_i − s_{i,t_i}) / n.
    pub fn loss(&self, lse: &[T]) -> f64 {
        let tot: f64 = (0..self.n).map(|i| self.row_loss(lse, i).to_f64_()).sum();
        tot / self.n as f64
    }

    /// The rows' losses lse_i − s_{i,t_i}.
    pub fn rows(&self, lse: &[T]) -> Vec<T> {
        (0..self.n).map(|i| self.row_loss(lse, i)).collect()
    }

    /// Pass 2: ∂L/∂z into `gz` (n×d, overwritten), L = Σ_i g_i·loss_i
    /// (`g` None: g_i = 1/n, the mean).
    pub fn grad(&self, lse: &[T], g: Option<&[T]>, gz: &mut [T]) {
        let (n, d, tb) = (self.n, self.d, self.tb);
        let mut acc = vec![T::zero(); n * d];
        let mut tiles: Vec<Option<&mut [T]>> = gz[..n * d].chunks_mut(tb * d).map(Some).collect();
        for group in self.task_groups() {
            let work: Vec<Vec<(usize, &mut [T])>> = group
                .iter()
                .map(|task| task.iter().map(|&t| (t, tiles[t].take().expect("each tile once"))).collect())
                .collect();
            let bufs: Vec<Vec<(usize, Vec<T>)>> = work
                .into_par_iter()
                .map(|task| task.into_iter().map(|(t, gt)| (t, self.grad_blockrow(t, lse, g, gt))).collect())
                .collect();
            let mut bufs: Vec<(usize, Vec<T>)> = bufs.into_iter().flatten().collect();
            bufs.sort_by_key(|b| b.0);
            // Tile v gets block-row t's Wᵀ·z_t (t < v) in ascending t within the group.
            acc.par_chunks_mut(tb * d).enumerate().for_each(|(v, blk)| {
                for (t, b) in &bufs {
                    if *t < v {
                        let off = (v - t - 1) * tb * d;
                        rowops::add(blk, &b[off..off + blk.len()]);
                    }
                }
            });
        }
        gz[..n * d].par_chunks_mut(tb * d).zip(acc.par_chunks(tb * d)).for_each(|(g, a)| rowops::add(g, a));
    }

    /// Blocks (t, u ≥ t): writes tile t's W·z sums into `gt` and returns the
    /// Wᵀ·z_t contributions to the rows after tile t.
    fn grad_blockrow(&self, t: usize, lse: &[T], g: Option<&[T]>, gt: &mut [T]) -> Vec<T> {
        let (n, d, tb) = (self.n, self.d, self.tb);
        let (a0, a1) = self.range(t);
        let rows = a1 - a0;
        let zm = self.zm();
        let mut colbuf = vec![T::zero(); (n - a1) * d];
        let mut s = vec![T::zero(); rows * tb];
        let mut beta = vec![T::zero(); tb];
        for u in t..self.nb() {
            let (b0, b1) = self.range(u);
            let cols = b1 - b0;
            self.block(t, u, &mut s);
            let w = &mut s[..rows * cols];
            self.coef_block(w, (a0, a1), (b0, b1), lse, g, &mut beta);
            let wm = MatRef::new(w, rows, cols);
            let first = if u == t { T::zero() } else { T::one() };
            gemm(self.scale, wm, zm.rows_range(b0, b1), first, gt);
            if u > t {
                gemm(self.scale, wm.t(), zm.rows_range(a0, a1), T::zero(), &mut colbuf[(b0 - a1) * d..(b1 - a1) * d]);
            }
        }
        colbuf
    }

    /// Turns the block of similarities `w` (rows a0..a1, columns b0..b1) into W in place:
    /// W_ij = g_i (P_ij − [j = t_i]) + g_j (P_ji − [i = t_j]) (`g` None: g = 1/n).
    #[allow(clippy::too_many_arguments)]
    fn coef_block(
        &self, w: &mut [T], (a0, a1): (usize, usize), (b0, b1): (usize, usize), lse: &[T], g: Option<&[T]>,
        beta: &mut [T],
    ) {
        let (rows, cols) = (a1 - a0, b1 - b0);
        let inv_n = T::c(1.0 / self.n as f64);
        let (lr, lc) = (&lse[a0..a1], &lse[b0..b1]);
        let wt = |i: usize| g.map_or(inv_n, |g| g[i]);
        match g {
            None => coef(w, cols, lr, lc, inv_n, beta),
            Some(g) => coef_weighted(w, cols, lr, lc, &g[a0..a1], &g[b0..b1], beta),
        }
        if self.targets.is_empty() {
            return; // no target terms (SupCon adds its positives itself)
        }
        for i in 0..rows {
            let ti = self.targets[a0 + i] as usize;
            if (b0..b1).contains(&ti) {
                w[i * cols + ti - b0] -= wt(a0 + i);
            }
        }
        for j in 0..cols {
            let tj = self.targets[b0 + j] as usize;
            if (a0..a1).contains(&tj) {
                w[(tj - a0) * cols + j] -= wt(b0 + j);
            }
        }
    }
}

multiversion! {
    /// e = e^{s − rowmax} row by row (cols wide); the rows' (max, sum) merged
    /// into `rs` and their max kept in `rmax`.
    pub(super) fn row_stats<T>(s: &[T], e: &mut [T], cols: usize, rs: &mut [Part<T>], rmax: &mut [T]) -> () {
        for (i, (srow, erow)) in s.chunks_exact(cols).zip(e.chunks_exact_mut(cols)).enumerate() {
            let mx = rowops::max(srow);
            rmax[i] = mx;
            if mx == T::neg_infinity() {
                continue; // a lone masked diagonal: nothing to add
            }
            let sum = rowops::exp_shift_into(erow, srow, mx);
            rs[i] = merge(rs[i], (mx, sum));
        }
    }
}

multiversion! {
    /// Column sums against the block maximum bm (returned):
    /// colsum_j = Σ_i e^{s_ij − bm} = Σ_i w_i e_ij with w_i = e^{rowmax_i − bm}.
    pub(super) fn col_sums<T>(e: &[T], cols: usize, rmax: &[T], w: &mut [T], colsum: &mut [T]) -> T {
        let bm = rowops::max(rmax);
        for (wi, &r) in w.iter_mut().zip(rmax) {
            *wi = exp1(r - bm);
        }
        colsum.iter_mut().for_each(|v| *v = T::zero());
        for (erow, &wi) in e.chunks_exact(cols).zip(w.iter()) {
            rowops::axpy(colsum, wi, erow);
        }
        bm
    }
}

multiversion! {
    /// W_ij = (e^{s_ij − lr_i} + e^{s_ij − lc_j})/n in place (target terms aside),
    /// with one exponential per entry when the log-sum-exps are close.
    pub(super) fn coef<T>(w: &mut [T], cols: usize, lr: &[T], lc: &[T], inv_n: T, beta: &mut [T]) -> () {
        let hi = rowops::max(lr).max(rowops::max(lc));
        let lo = rowops::min(lr).min(rowops::min(lc));
        if hi - lo <= T::c(LSE_SPREAD) {
            let beta = &mut beta[..cols];
            for (bj, &l) in beta.iter_mut().zip(lc) {
                *bj = exp1(hi - l) * inv_n;
            }
            for (row, &li) in w.chunks_exact_mut(cols).zip(lr) {
                rowops::exp_shift_mul(row, hi, exp1(hi - li) * inv_n, beta);
            }
        } else {
            for (row, &li) in w.chunks_exact_mut(cols).zip(lr) {
                rowops::exp2_sum(row, li, lc, inv_n);
            }
        }
    }
}

multiversion! {
    /// W_ij = g_i e^{s_ij − lr_i} + g_j e^{s_ij − lc_j} in place (target terms aside),
    /// for per-row weights gr (rows) and gc (columns); as [`coef`], one
    /// exponential per entry when the log-sum-exps are close.
    fn coef_weighted<T>(w: &mut [T], cols: usize, lr: &[T], lc: &[T], gr: &[T], gc: &[T], beta: &mut [T]) -> () {
        let hi = rowops::max(lr).max(rowops::max(lc));
        let lo = rowops::min(lr).min(rowops::min(lc));
        if hi - lo <= T::c(LSE_SPREAD) {
            let beta = &mut beta[..cols];
            for ((bj, &l), &gj) in beta.iter_mut().zip(lc).zip(gc) {
                *bj = exp1(hi - l) * gj;
            }
            for ((row, &li), &gi) in w.chunks_exact_mut(cols).zip(lr).zip(gr) {
                rowops::exp_shift_mul(row, hi, exp1(hi - li) * gi, beta);
            }
        } else {
            for ((row, &li), &gi) in w.chunks_exact_mut(cols).zip(lr).zip(gr) {
                rowops::exp2_wsum(row, li, gi, lc, gc);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::losses::common::testutil::*;

    /// Loss and gradient from the dense n×n matrix, in f64.
    fn brute(z: &[f64], n: usize, d: usize, sc: f64, t: &[i64], nodiag: bool) -> (f64, Vec<f64>) {
        let s: Vec<f64> = (0..n * n).map(|ij| sc * (0..d).map(|a| z[ij / n * d + a] * z[ij % n * d + a]).sum::<f64>()).collect();
        let valid = |i: usize, j: usize| !(nodiag && i == j);
        let mut g = vec![0.0; n * n];
        let mut loss = 0.0;
        for i in 0..n {
            let mx = (0..n).filter(|&j| valid(i, j)).map(|j| s[i * n + j]).fold(f64::NEG_INFINITY, f64::max);
            let lse = mx + (0..n).filter(|&j| valid(i, j)).map(|j| (s[i * n + j] - mx).exp()).sum::<f64>().ln();
            loss += lse - s[i * n + t[i] as usize];
            for j in (0..n).filter(|&j| valid(i, j)) {
                g[i * n + j] = (s[i * n + j] - lse).exp() / n as f64;
            }
            g[i * n + t[i] as usize] -= 1.0 / n as f64;
        }
        let mut gz = vec![0.0; n * d];
        for i in 0..n {
            for j in 0..n {
                let w = sc * (g[i * n + j] + g[j * n + i]);
                for a in 0..d {
                    gz[i * d + a] += w * z[j * d + a];
                }
            }
        }
        (loss / n as f64, gz)
    }

    fn partners(n: usize) -> Vec<i64> {
        let h = n / 2;
        (0..n).map(|i| if n % 2 == 0 { ((i + h) % n) as i64 } else { ((i + 1) % n) as i64 }).collect()
    }

    fn unit_rows(rng: &mut Rng, n: usize, d: usize) -> Vec<f64> {
        let mut z = rng.normal_vec(n * d);
        for r in z.chunks_mut(d) {
            let nr = r.iter().map(|v| v * v).sum::<f64>().sqrt();
            r.iter_mut().for_each(|v| *v /= nr);
        }
        z
    }

    #[test]
    fn symmetric_kernel_matches_dense_brute_force() {
        let mut rng = Rng(11);
        // (n, d, tile, group, scale): n below, at and between tile multiples; 1-row last tiles.
        let cases = [
            (2usize, 3usize, 16usize, 2usize, 2.0),
            (5, 4, 16, 2, 1.0),
            (17, 3, 16, 2, 3.0),
            (33, 5, 16, 2, 10.0),
            (100, 6, 16, 3, 5.0),
            (300, 4, SYM_TILE, SYM_GROUP, 10.0),
            (40, 3, 8, 8, 100.0), // τ = 0.01: the guarded (two-exponential) branches
        ];
        for &(n, d, tb, group, sc) in &cases {
            let z = unit_rows(&mut rng, n, d);
            let t = partners(n);
            for nodiag in [true, false] {
                let sym = Sym::new(&z, n, d, sc, &t, nodiag, tb, group);
                let lse = sym.lse();
                let loss = sym.loss(&lse);
                let mut gz = vec![f64::NAN; n * d];
                sym.grad(&lse, None, &mut gz);
                let (want, gwant) = brute(&z, n, d, sc, &t, nodiag);
                assert!((loss - want).abs() < 1e-10 * (1.0 + want.abs()), "n={n} tb={tb}: {loss} vs {want}");
                assert_close(&gz, &gwant, 1e-10);
                // f32 agrees to f32 accuracy (fast exponential, f32 GEMM).
                let z32: Vec<f32> = z.iter().map(|&v| v as f32).collect();
                let s32 = Sym::new(&z32, n, d, sc as f32, &t, nodiag, tb, group);
                let l32 = s32.lse();
                let mut g32 = vec![f32::NAN; n * d];
                s32.grad(&l32, None, &mut g32);
                assert!((s32.loss(&l32) - want).abs() < 1e-4 * (1.0 + want.abs()));
                let g64: Vec<f64> = g32.iter().map(|&v| v as f64).collect();
                let gmax = gwant.iter().fold(0.0f64, |a, b| a.max(b.abs()));
                for (a, b) in g64.iter().zip(&gwant) {
                    assert!((a - b).abs() <= 1e-4 * gmax.max(1e-3), "n={n} f32: {a} vs {b}");
                }
            }
        }
    }

    #[test]
    fn near_duplicates_at_low_temperature_stay_accurate() {
        // Rows whose own block holds a near-duplicate far above everything else
        // in another block: column sums against the block maximum underflow there.
        let (n, d) = (24usize, 3usize);
        let mut rng = Rng(3);
        let mut z = unit_rows(&mut rng, n, d);
        z.copy_within(0..d, 8 * d); // row 8 = row 0
        let t = partners(n);
        let sym = Sym::new(&z, n, d, 200.0, &t, true, 8, 2);
        let lse = sym.lse();
        let mut gz = vec![0.0; n * d];
        sym.grad(&lse, None, &mut gz);
        let (want, gwant) = brute(&z, n, d, 200.0, &t, true);
        assert!((sym.loss(&lse) - want).abs() < 1e-9 * (1.0 + want.abs()));
        assert_close(&gz, &gwant, 1e-9);
    }

    #[test]
    fn underflow_guards_keep_f32_accurate() {
        // Rows 0 and 2 are duplicates (s = scale = bm of block (0, 1)); row 3 is
        // orthogonal to every row, so its column in that block sits 100 below bm
        // (e^{−100} underflows in f32) while holding 2 of the 5 equal terms of its
        // softmax, and the block's log-sum-exps spread over ~100.
        let (n, d, sc) = (6usize, 3usize, 100.0);
        let z = [1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.6, 0.0, 0.8, 0.8, 0.0, -0.6];
        let t = partners(n);
        let (want, gwant) = brute(&z, n, d, sc, &t, true);
        let z32: Vec<f32> = z.iter().map(|&v| v as f32).collect();
        let sym = Sym::new(&z32, n, d, sc as f32, &t, true, 2, 2);
        let lse = sym.lse();
        let mut g = vec![0.0f32; n * d];
        sym.grad(&lse, None, &mut g);
        assert!((sym.loss(&lse) - want).abs() < 1e-5 * (1.0 + want.abs()), "{} vs {want}", sym.loss(&lse));
        let gmax = gwant.iter().fold(0.0f64, |a, b| a.max(b.abs()));
        for (a, b) in g.iter().zip(&gwant) {
            assert!((*a as f64 - b).abs() <= 1e-4 * gmax, "{a} vs {b}");
        }
    }

    #[test]
    fn results_do_not_depend_on_the_thread_count() {
        let (n, d) = (700usize, 8usize);
        let mut rng = Rng(5);
        let z: Vec<f32> = unit_rows(&mut rng, n, d).iter().map(|&v| v as f32).collect();
        let t = partners(n);
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            pool.install(|| {
                let sym = Sym::new(&z, n, d, 10.0f32, &t, true, 64, 3);
                let lse = sym.lse();
                let mut gz = vec![0.0f32; n * d];
                sym.grad(&lse, None, &mut gz);
                (sym.loss(&lse).to_bits(), lse.iter().chain(&gz).map(|v| v.to_bits()).collect::<Vec<_>>())
            })
        };
        let one = run(1);
        assert_eq!(one, run(2));
        assert_eq!(one, run(3));
    }
}

#[cfg(test)]
mod weighted_tests {
    use super::*;
    use crate::losses::common::testutil::*;

    /// Σ_i g_i loss_i's gradient from the dense n×n matrix, in f64.
    fn brute_w(z: &[f64], n: usize, d: usize, sc: f64, t: &[i64], nodiag: bool, g: &[f64]) -> Vec<f64> {
        let s: Vec<f64> = (0..n * n).map(|ij| sc * (0..d).map(|a| z[ij / n * d + a] * z[ij % n * d + a]).sum::<f64>()).collect();
        let valid = |i: usize, j: usize| !(nodiag && i == j);
        let mut c = vec![0.0; n * n];
        for i in 0..n {
            let mx = (0..n).filter(|&j| valid(i, j)).map(|j| s[i * n + j]).fold(f64::NEG_INFINITY, f64::max);
            let lse = mx + (0..n).filter(|&j| valid(i, j)).map(|j| (s[i * n + j] - mx).exp()).sum::<f64>().ln();
            for j in (0..n).filter(|&j| valid(i, j)) {
                c[i * n + j] = g[i] * (s[i * n + j] - lse).exp();
            }
            c[i * n + t[i] as usize] -= g[i];
        }
        let mut gz = vec![0.0; n * d];
        for i in 0..n {
            for j in 0..n {
                let w = sc * (c[i * n + j] + c[j * n + i]);
                for a in 0..d {
                    gz[i * d + a] += w * z[j * d + a];
                }
            }
        }
        gz
    }

    #[test]
    fn weighted_gradient_matches_dense_brute_force() {
        let mut rng = Rng(31);
        // Small tiles and groups: several groups, partial last tiles, and τ = 0.01
        // (the two-exponential branch of coef_weighted).
        let cases = [(2usize, 3usize, 16usize, 2usize, 2.0), (33, 5, 16, 2, 10.0), (100, 6, 16, 3, 5.0), (40, 3, 8, 2, 100.0)];
        for &(n, d, tb, group, sc) in &cases {
            let mut z = rng.normal_vec(n * d);
            for r in z.chunks_mut(d) {
                let nr = r.iter().map(|v| v * v).sum::<f64>().sqrt();
                r.iter_mut().for_each(|v| *v /= nr);
            }
            let t: Vec<i64> = (0..n).map(|i| ((i + n / 2) % n) as i64).collect();
            let g = rng.normal_vec(n);
            for nodiag in [true, false] {
                if n == 2 && !nodiag {
                    continue;
                }
                let sym = Sym::new(&z, n, d, sc, &t, nodiag, tb, group);
                let lse = sym.lse();
                let mut gz = vec![f64::NAN; n * d];
                sym.grad(&lse, Some(&g), &mut gz);
                assert_close(&gz, &brute_w(&z, n, d, sc, &t, nodiag, &g), 1e-10);
                let z32: Vec<f32> = z.iter().map(|&v| v as f32).collect();
                let g32: Vec<f32> = g.iter().map(|&v| v as f32).collect();
                let s32 = Sym::new(&z32, n, d, sc as f32, &t, nodiag, tb, group);
                let l32 = s32.lse();
                let mut g32o = vec![f32::NAN; n * d];
                s32.grad(&l32, Some(&g32), &mut g32o);
                let want = brute_w(&z, n, d, sc, &t, nodiag, &g);
                let gmax = want.iter().fold(0.0f64, |a, b| a.max(b.abs()));
                for (a, b) in g32o.iter().zip(&want) {
                    assert!((*a as f64 - b).abs() <= 2e-4 * gmax.max(1e-3), "n={n} f32: {a} vs {b}");
                }
            }
        }
    }

    #[test]
    fn weighted_results_do_not_depend_on_the_thread_count() {
        let (n, d) = (700usize, 8usize);
        let mut rng = Rng(6);
        let z: Vec<f32> = rng.normal_vec(n * d).iter().map(|&v| v as f32 * 0.4).collect();
        let g: Vec<f32> = rng.normal_vec(n).iter().map(|&v| v as f32).collect();
        let t: Vec<i64> = (0..n).map(|i| ((i + n / 2) % n) as i64).collect();
        for sc in [2.0f32, 60.0] {
            let run = |threads: usize| {
                let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
                pool.install(|| {
                    let sym = Sym::new(&z, n, d, sc, &t, true, 64, 3);
                    let lse = sym.lse();
                    let mut gz = vec![0.0f32; n * d];
                    sym.grad(&lse, Some(&g), &mut gz);
                    sym.rows(&lse).iter().chain(&gz).map(|v| v.to_bits()).collect::<Vec<_>>()
                })
            };
            let one = run(1);
            assert_eq!(one, run(2));
            assert_eq!(one, run(3));
        }
    }
}
