//! Barnes-Hut repulsion: a 2^D-ary space-partitioning tree (quadtree for
//! D = 2, octree for D = 3) over the embedding, rebuilt every iteration.
//!
//! For point i the repulsive sums are
//!   Z_i = Σ_{j≠i} w_ij,   F_i = Σ_{j≠i} w_ij · b_ij · (y_i − y_j),
//! with b = 1 / (1 + d²/α) and w = b^α (Student-t with α = dof). A cell whose
//! side s satisfies s < θ·‖y_i − c‖ (c its centre of mass) and that does not
//! contain i is replaced by |cell| copies of a point at c; θ = 0 gives the
//! exact sums. Leaves hold up to `LEAF` points, evaluated directly.
//!
//! The tree lives in one arena (`Vec<Node>`); the children of a node are
//! contiguous. The build is a deterministic top-down partition of a point
//! permutation, so the tree depends only on the coordinates. Points are
//! traversed in tree order in fixed tiles (nearby points share their paths),
//! so results do not depend on the thread count. Memory is O(N).

use rayon::prelude::*;

const LEAF: usize = 8;
const MAX_DEPTH: usize = 40;
/// Points per parallel task of the traversal.
const TILE: usize = 128;
/// Largest group of points sharing one interaction list.
const GROUP: usize = 64;

#[derive(Clone, Copy, Debug)]
struct Node<const D: usize> {
    com: [f64; D],
    count: f64,
    /// Squared side length of the cell.
    width2: f64,
    start: u32,
    end: u32,
    /// Index of the first child (children are contiguous); 0 means leaf.
    child: u32,
    nchild: u32,
    /// A leaf of more than `LEAF` points, cut at the depth or size limit: its points coincide
    /// (to 1e-12 of the root's extent), so it acts as one mass at `com` even for its own members.
    /// Without it, a collapsed embedding (all points equal) costs N² per iteration.
    point_mass: bool,
}

/// The tree and the points in tree order.
pub struct Tree<const D: usize> {
    nodes: Vec<Node<D>>,
    /// perm[q] = original index of the q-th point in tree order.
    pub perm: Vec<u32>,
    /// inv[i] = tree-order position of point i.
    pub inv: Vec<u32>,
    pts: Vec<[f64; D]>,
}

impl<const D: usize> Tree<D> {
    /// Builds the tree over `y` (`n × D`, row-major).
    pub fn build(y: &[f64], n: usize) -> Self {
        let orig: Vec<[f64; D]> = (0..n).map(|i| std::array::from_fn(|d| y[i * D + d])).collect();
        let mut lo = [f64::INFINITY; D];
        let mut hi = [f64::NEG_INFINITY; D];
        for p in &orig {
            for d in 0..D {
                lo[d] = lo[d].min(p[d]);
                hi[d] = hi[d].max(p[d]);
            }
        }
        let center: [f64; D] = std::array::from_fn(|d| 0.5 * (lo[d] + hi[d]));
        let mut half = 0.0f64;
        for d in 0..D {
            half = half.max(0.5 * (hi[d] - lo[d]));
        }
        half = half * (1.0 + 1e-9) + 1e-300;
        let mut perm: Vec<u32> = (0..n as u32).collect();
        let min_half = half * 1e-12;
        let nodes = build_par(&orig, &mut perm, 0, center, half, min_half, 0);
        let pts: Vec<[f64; D]> = perm.iter().map(|&i| orig[i as usize]).collect();
        let mut inv = vec![0u32; n];
        for (q, &i) in perm.iter().enumerate() {
            inv[i as usize] = q as u32;
        }
        Tree { nodes, perm, inv, pts }
    }

    pub fn n_nodes(&self) -> usize {
        self.nodes.len()
    }

    /// Repulsive sums for a query at `yq`; `self_pos` is its tree position
    /// (skipped and never summarised) or `u32::MAX` for an outside point.
    #[inline]
    pub fn query<K: Fn(f64) -> (f64, f64)>(&self, yq: &[f64; D], self_pos: u32, theta2: f64, kern: &K, stack: &mut Vec<u32>) -> (f64, [f64; D]) {
        let mut z = 0.0;
        let mut f = [0.0f64; D];
        stack.clear();
        stack.push(0);
        while let Some(id) = stack.pop() {
            let nd = &self.nodes[id as usize];
            let mut diff = [0.0f64; D];
            let mut d2 = 0.0;
            for d in 0..D {
                diff[d] = yq[d] - nd.com[d];
                d2 += diff[d] * diff[d];
            }
            let inside = self_pos >= nd.start && self_pos < nd.end;
            if nd.point_mass {
                let m = nd.count - if inside { 1.0 } else { 0.0 };
                let (w, wb) = kern(d2);
                z += m * w;
                for d in 0..D {
                    f[d] += m * wb * diff[d];
                }
            } else if !inside && nd.width2 < theta2 * d2 {
                let (w, wb) = kern(d2);
                z += nd.count * w;
                let c = nd.count * wb;
                for d in 0..D {
                    f[d] += c * diff[d];
                }
            } else if nd.child == 0 {
                for r in nd.start..nd.end {
                    if r == self_pos {
                        continue;
                    }
                    let p = &self.pts[r as usize];
                    let mut dd = [0.0f64; D];
                    let mut e2 = 0.0;
                    for d in 0..D {
                        dd[d] = yq[d] - p[d];
                        e2 += dd[d] * dd[d];
                    }
                    let (w, wb) = kern(e2);
                    z += w;
                    for d in 0..D {
                        f[d] += wb * dd[d];
                    }
                }
            } else {
                for c in (nd.child..nd.child + nd.nchild).rev() {
                    stack.push(c);
                }
            }
        }
        (z, f)
    }

    /// Tree nodes holding at most `g` points whose parent holds more, in tree order.
    fn groups(&self, g: usize) -> Vec<u32> {
        let mut out = Vec::new();
        let mut stack = vec![0u32];
        while let Some(id) = stack.pop() {
            let nd = &self.nodes[id as usize];
            if (nd.end - nd.start) as usize <= g || nd.child == 0 {
                out.push(id);
            } else {
                for c in (nd.child..nd.child + nd.nchild).rev() {
                    stack.push(c);
                }
            }
        }
        out
    }

    /// Repulsion of every tree point against all others: writes F_i into
    /// `rep` (`n × D`, original order) and returns Z = Σ_i Z_i.
    ///
    /// Points are handled in groups (small subtrees): one traversal per group
    /// builds an interaction list with the group's bounding box in the opening
    /// test (a cell is summarised only if s < θ·dist(c, box), which implies the
    /// per-point test), then a tight loop evaluates the list for each member.
    /// A point meets itself in the list at distance 0 (w = 1, no force), which
    /// is subtracted from its Z.
    ///
    /// `cauchy_2d` (only for D = 2 with the dof = 1 kernel) evaluates the lists
    /// with the vectorised loop of [`super::simd`].
    pub fn repulsion<K: Fn(f64) -> (f64, f64) + Sync>(&self, theta: f64, kern: &K, rep: &mut [f64], cauchy_2d: bool) -> f64 {
        let n = self.pts.len();
        let theta2 = theta * theta;
        let groups = self.groups(GROUP);
        let fast = cauchy_2d && D == 2;
        let avx = crate::simd::has_avx2();
        let per_group: Vec<(Vec<[f64; D]>, f64)> = groups
            .par_iter()
            .with_max_len(4)
            .map_init(
                || (Vec::<u32>::with_capacity(256), Vec::<[f64; D]>::new(), Vec::<f64>::new(), Vec::<f64>::new(), Vec::<f64>::new()),
                |(stack, pos, mass, xs, ys), &gid| {
                    let g = &self.nodes[gid as usize];
                    let (gs, ge) = (g.start, g.end);
                    let mut lo = [f64::INFINITY; D];
                    let mut hi = [f64::NEG_INFINITY; D];
                    for p in &self.pts[gs as usize..ge as usize] {
                        for d in 0..D {
                            lo[d] = lo[d].min(p[d]);
                            hi[d] = hi[d].max(p[d]);
                        }
                    }
                    pos.clear();
                    mass.clear();
                    stack.clear();
                    stack.push(0);
                    while let Some(id) = stack.pop() {
                        let nd = &self.nodes[id as usize];
                        let overlaps = nd.start < ge && gs < nd.end;
                        if !overlaps {
                            let mut dmin2 = 0.0;
                            for d in 0..D {
                                let t = (lo[d] - nd.com[d]).max(nd.com[d] - hi[d]).max(0.0);
                                dmin2 += t * t;
                            }
                            if nd.width2 < theta2 * dmin2 {
                                pos.push(nd.com);
                                mass.push(nd.count);
                                continue;
                            }
                        }
                        if nd.point_mass {
                            // one entry for the coincident points; a member meets it at distance ~0,
                            // and its own unit of Z is subtracted below as for any point
                            pos.push(nd.com);
                            mass.push(nd.count);
                        } else if nd.child == 0 {
                            for r in nd.start..nd.end {
                                pos.push(self.pts[r as usize]);
                                mass.push(1.0);
                            }
                        } else {
                            for c in (nd.child..nd.child + nd.nchild).rev() {
                                stack.push(c);
                            }
                        }
                    }
                    let mut res = Vec::with_capacity((ge - gs) as usize);
                    let mut zg = 0.0;
                    if fast {
                        xs.clear();
                        ys.clear();
                        xs.extend(pos.iter().map(|p| p[0]));
                        ys.extend(pos.iter().map(|p| p[1]));
                        for q in gs..ge {
                            let yq = &self.pts[q as usize];
                            let (z, f2) = super::simd::cauchy_list_2d([yq[0], yq[1]], xs, ys, mass, avx);
                            zg += z - 1.0;
                            res.push(std::array::from_fn(|d| f2[d]));
                        }
                        return (res, zg);
                    }
                    for q in gs..ge {
                        let yq = &self.pts[q as usize];
                        let mut z = 0.0;
                        let mut f = [0.0f64; D];
                        for (p, &m) in pos.iter().zip(mass.iter()) {
                            let mut dd = [0.0f64; D];
                            let mut d2 = 0.0;
                            for d in 0..D {
                                dd[d] = yq[d] - p[d];
                                d2 += dd[d] * dd[d];
                            }
                            let (w, wb) = kern(d2);
                            z += m * w;
                            let c = m * wb;
                            for d in 0..D {
                                f[d] += c * dd[d];
                            }
                        }
                        zg += z - 1.0;
                        res.push(f);
                    }
                    (res, zg)
                },
            )
            .collect();
        let mut out = Vec::with_capacity(n);
        let mut ztot = 0.0;
        for (r, z) in per_group {
            out.extend_from_slice(&r);
            ztot += z;
        }
        rep.par_chunks_mut(TILE * D).enumerate().for_each(|(t, chunk)| {
            for (o, row) in chunk.chunks_mut(D).enumerate() {
                let i = t * TILE + o;
                row.copy_from_slice(&out[self.inv[i] as usize]);
            }
        });
        ztot
    }

    /// Per-point traversal (reference implementation of [`Self::repulsion`]).
    pub fn repulsion_per_point<K: Fn(f64) -> (f64, f64) + Sync>(&self, theta: f64, kern: &K, rep: &mut [f64]) -> f64 {
        let n = self.pts.len();
        let theta2 = theta * theta;
        let mut out = vec![[0.0f64; D]; n];
        let zs: Vec<f64> = out
            .par_chunks_mut(TILE)
            .enumerate()
            .map(|(t, chunk)| {
                let mut stack = Vec::with_capacity(64 * (1 << D));
                let mut zt = 0.0;
                for (o, slot) in chunk.iter_mut().enumerate() {
                    let q = t * TILE + o;
                    let (z, f) = self.query(&self.pts[q], q as u32, theta2, kern, &mut stack);
                    zt += z;
                    *slot = f;
                }
                zt
            })
            .collect();
        rep.par_chunks_mut(TILE * D).enumerate().for_each(|(t, chunk)| {
            for (o, row) in chunk.chunks_mut(D).enumerate() {
                let i = t * TILE + o;
                row.copy_from_slice(&out[self.inv[i] as usize]);
            }
        });
        zs.iter().sum()
    }
}

/// The child cell (bit d set when coordinate d is at or above the centre) of a point.
#[inline]
fn child_code<const D: usize>(p: &[f64; D], center: &[f64; D]) -> usize {
    let mut c = 0usize;
    for d in 0..D {
        if p[d] >= center[d] {
            c |= 1 << d;
        }
    }
    c
}

/// Splits `perm` (points of one cell, absolute start `offset`) into the 2^D
/// child cells: returns the sizes per child code, the permutation reordered by code.
fn partition<const D: usize>(orig: &[[f64; D]], perm: &mut [u32], center: [f64; D]) -> [usize; 8] {
    let code = |i: u32| child_code(&orig[i as usize], &center);
    let mut counts = [0usize; 8];
    for &i in perm.iter() {
        counts[code(i)] += 1;
    }
    let mut next = [0usize; 8];
    for q in 1..(1 << D) {
        next[q] = next[q - 1] + counts[q - 1];
    }
    let mut tmp = vec![0u32; perm.len()];
    for &i in perm.iter() {
        let c = code(i);
        tmp[next[c]] = i;
        next[c] += 1;
    }
    perm.copy_from_slice(&tmp);
    counts
}

/// Cells with more points than this, near the root, build their children in parallel.
const PAR_BUILD_MIN: usize = 8192;

/// Builds the subtree of one cell as its own arena (root at 0). Large cells
/// near the root build their children in parallel; the layout is the same as
/// a sequential build would give (children contiguous, subtrees in code order),
/// so the tree does not depend on the thread count.
#[allow(clippy::too_many_arguments)]
fn build_par<const D: usize>(
    orig: &[[f64; D]], perm: &mut [u32], offset: usize, center: [f64; D], half: f64, min_half: f64, depth: usize,
) -> Vec<Node<D>> {
    let cnt = perm.len();
    let blank = Node { com: [0.0; D], count: 0.0, width2: 0.0, start: 0, end: 0, child: 0, nchild: 0, point_mass: false };
    if cnt <= PAR_BUILD_MIN || depth >= 4 || half <= min_half {
        let mut nodes = Vec::with_capacity(2 * cnt / LEAF + 4);
        nodes.push(blank);
        let mut scratch = vec![0u32; cnt];
        build_rec(&mut nodes, 0, orig, perm, &mut scratch, offset, 0, cnt, center, half, min_half, depth);
        return nodes;
    }
    let mut com = [0.0f64; D];
    for &i in perm.iter() {
        for d in 0..D {
            com[d] += orig[i as usize][d];
        }
    }
    com.iter_mut().for_each(|c| *c /= cnt as f64);
    let counts = partition(orig, perm, center);
    let h2 = 0.5 * half;
    // Disjoint slices of the permutation, one per non-empty child, in code order.
    let mut parts: Vec<(usize, usize, &mut [u32])> = Vec::new();
    let mut rest: &mut [u32] = perm;
    let mut off = offset;
    for q in 0..(1usize << D) {
        let (a, b) = rest.split_at_mut(counts[q]);
        if counts[q] > 0 {
            parts.push((q, off, a));
        }
        off += counts[q];
        rest = b;
    }
    let subs: Vec<Vec<Node<D>>> = parts
        .into_par_iter()
        .map(|(q, off, slice)| {
            let c: [f64; D] = std::array::from_fn(|d| if q >> d & 1 == 1 { center[d] + h2 } else { center[d] - h2 });
            build_par(orig, slice, off, c, h2, min_half, depth + 1)
        })
        .collect();
    let nc = subs.len();
    let total: usize = 1 + subs.iter().map(|s| s.len()).sum::<usize>();
    let mut nodes = Vec::with_capacity(total);
    nodes.push(Node { com, count: cnt as f64, width2: 4.0 * half * half, start: offset as u32, end: (offset + cnt) as u32, child: 1, nchild: nc as u32, point_mass: false });
    nodes.extend(std::iter::repeat(blank).take(nc));
    for (k, sub) in subs.into_iter().enumerate() {
        let base = nodes.len();
        // Local index L ≥ 1 of the child's arena lands at base + L − 1.
        let remap = |nd: &Node<D>| {
            let mut m = *nd;
            if m.child != 0 {
                m.child = (base + m.child as usize - 1) as u32;
            }
            m
        };
        nodes[1 + k] = remap(&sub[0]);
        nodes.extend(sub[1..].iter().map(remap));
    }
    nodes
}

#[allow(clippy::too_many_arguments)]
fn build_rec<const D: usize>(
    nodes: &mut Vec<Node<D>>, id: usize, orig: &[[f64; D]], perm: &mut [u32], scratch: &mut [u32], offset: usize, start: usize, end: usize,
    center: [f64; D], half: f64, min_half: f64, depth: usize,
) {
    let cnt = end - start;
    let mut com = [0.0f64; D];
    for &i in &perm[start..end] {
        let p = &orig[i as usize];
        for d in 0..D {
            com[d] += p[d];
        }
    }
    let inv = 1.0 / cnt as f64;
    for c in com.iter_mut() {
        *c *= inv;
    }
    {
        let nd = &mut nodes[id];
        nd.com = com;
        nd.count = cnt as f64;
        nd.width2 = 4.0 * half * half;
        nd.start = (offset + start) as u32;
        nd.end = (offset + end) as u32;
    }
    if cnt <= LEAF {
        return;
    }
    if depth >= MAX_DEPTH || half <= min_half {
        nodes[id].point_mass = true;
        return;
    }
    let nq = 1usize << D;
    let code = |i: u32| child_code(&orig[i as usize], &center);
    let mut counts = [0usize; 8];
    for &i in &perm[start..end] {
        counts[code(i)] += 1;
    }
    let mut offs = [0usize; 9];
    for q in 0..nq {
        offs[q + 1] = offs[q] + counts[q];
    }
    let mut next = offs;
    for &i in &perm[start..end] {
        let c = code(i);
        scratch[start + next[c]] = i;
        next[c] += 1;
    }
    perm[start..end].copy_from_slice(&scratch[start..end]);
    let nonempty: Vec<usize> = (0..nq).filter(|&q| counts[q] > 0).collect();
    let first = nodes.len();
    for _ in &nonempty {
        nodes.push(Node { com: [0.0; D], count: 0.0, width2: 0.0, start: 0, end: 0, child: 0, nchild: 0, point_mass: false });
    }
    nodes[id].child = first as u32;
    nodes[id].nchild = nonempty.len() as u32;
    let h2 = 0.5 * half;
    for (t, &q) in nonempty.iter().enumerate() {
        let c: [f64; D] = std::array::from_fn(|d| if q >> d & 1 == 1 { center[d] + h2 } else { center[d] - h2 });
        build_rec(nodes, first + t, orig, perm, scratch, offset, start + offs[q], start + offs[q + 1], c, h2, min_half, depth + 1);
    }
}

/// Student-t kernel of the repulsion: returns (w, w·b) for a squared distance.
#[inline(always)]
pub fn student_t(dof: f64) -> impl Fn(f64) -> (f64, f64) + Sync + Copy {
    move |d2: f64| {
        let b = 1.0 / (1.0 + d2 / dof);
        let w = b.powf(dof);
        (w, w * b)
    }
}

/// The α = 1 (Cauchy) kernel: (b, b²).
#[inline(always)]
pub fn cauchy(d2: f64) -> (f64, f64) {
    let b = 1.0 / (1.0 + d2);
    (b, b * b)
}

/// Barnes-Hut repulsion for `D`-dimensional `y`: F into `rep`, returns Z.
pub fn bh_repulsion<const D: usize>(y: &[f64], n: usize, theta: f64, dof: f64, rep: &mut [f64]) -> f64 {
    let tree = Tree::<D>::build(y, n);
    if dof == 1.0 {
        tree.repulsion(theta, &cauchy, rep, true)
    } else {
        tree.repulsion(theta, &student_t(dof), rep, false)
    }
}

#[cfg(test)]
pub(crate) fn tests_brute(y: &[f64], n: usize, dim: usize, dof: f64) -> (Vec<f64>, f64) {
    tests::brute(y, n, dim, dof)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tsne::SplitMix;

    pub(super) fn brute(y: &[f64], n: usize, dim: usize, dof: f64) -> (Vec<f64>, f64) {
        let mut rep = vec![0.0; n * dim];
        let mut z = 0.0;
        for i in 0..n {
            for j in 0..n {
                if i == j {
                    continue;
                }
                let d2: f64 = (0..dim).map(|d| (y[i * dim + d] - y[j * dim + d]).powi(2)).sum();
                let b = 1.0 / (1.0 + d2 / dof);
                let w = b.powf(dof);
                z += w;
                for d in 0..dim {
                    rep[i * dim + d] += w * b * (y[i * dim + d] - y[j * dim + d]);
                }
            }
        }
        (rep, z)
    }

    #[test]
    fn theta_zero_is_exact_and_theta_half_close() {
        let mut rng = SplitMix(7);
        for &(dim, dof) in &[(2usize, 1.0f64), (3, 1.0), (2, 0.6)] {
            let n = 300;
            let mut y: Vec<f64> = (0..n * dim).map(|_| rng.uniform() * 10.0 - 5.0).collect();
            // A few duplicates.
            for d in 0..dim {
                y[5 * dim + d] = y[6 * dim + d];
            }
            let (want, zw) = brute(&y, n, dim, dof);
            let mut rep = vec![0.0; n * dim];
            let z = if dim == 2 { bh_repulsion::<2>(&y, n, 0.0, dof, &mut rep) } else { bh_repulsion::<3>(&y, n, 0.0, dof, &mut rep) };
            assert!((z - zw).abs() < 1e-9 * zw);
            for (a, b) in rep.iter().zip(&want) {
                assert!((a - b).abs() < 1e-9, "{a} {b}");
            }
            let z5 = if dim == 2 { bh_repulsion::<2>(&y, n, 0.5, dof, &mut rep) } else { bh_repulsion::<3>(&y, n, 0.5, dof, &mut rep) };
            assert!((z5 - zw).abs() < 2e-2 * zw);
        }
    }
}

#[cfg(test)]
mod collapse_tests {
    use super::*;
    use crate::tsne::SplitMix;

    /// Collapsed embeddings (all points equal, or a few clusters of exact copies plus spread points)
    /// give the exact sums, through the point-mass leaves, for both traversals and both kernels' paths.
    #[test]
    fn coincident_points_are_one_mass_and_exact() {
        let mut rng = SplitMix(3);
        for &(dim, dof) in &[(2usize, 1.0f64), (3, 1.0), (2, 0.7)] {
            for case in 0..2 {
                let n = 400;
                let mut y = vec![0.25; n * dim];
                if case == 1 {
                    for i in 0..n {
                        let src = if i % 4 == 0 { i } else { (i % 3) * 4 };
                        for d in 0..dim {
                            y[i * dim + d] = if i % 4 == 0 { rng.uniform() * 6.0 - 3.0 } else { 0.0 };
                        }
                        if i % 4 != 0 {
                            for d in 0..dim {
                                y[i * dim + d] = (src as f64) * 0.5 + d as f64;
                            }
                        }
                    }
                }
                let (want, zw) = super::tests_brute(&y, n, dim, dof);
                let t2 = |theta: f64, per_point: bool| -> (f64, Vec<f64>) {
                    let mut rep = vec![0.0; n * dim];
                    let kern = student_t(dof);
                    let z = match (dim, per_point) {
                        (2, false) => Tree::<2>::build(&y, n).repulsion(theta, &kern, &mut rep, dof == 1.0),
                        (2, true) => Tree::<2>::build(&y, n).repulsion_per_point(theta, &kern, &mut rep),
                        (_, false) => Tree::<3>::build(&y, n).repulsion(theta, &kern, &mut rep, false),
                        (_, true) => Tree::<3>::build(&y, n).repulsion_per_point(theta, &kern, &mut rep),
                    };
                    (z, rep)
                };
                for per_point in [false, true] {
                    let (z, rep) = t2(0.0, per_point);
                    assert!((z - zw).abs() < 1e-9 * zw, "case {case} dim {dim}: Z {z} vs {zw}");
                    for (a, b) in rep.iter().zip(&want) {
                        assert!((a - b).abs() < 1e-9 * (1.0 + b.abs()), "case {case} dim {dim}: {a} vs {b}");
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod build_tests {
    use super::*;
    use crate::tsne::SplitMix;

    #[test]
    fn parallel_build_matches_sequential_and_exact() {
        let mut rng = SplitMix(9);
        let n = 40_000;
        let y: Vec<f64> = (0..n * 2).map(|_| rng.uniform() * 100.0).collect();
        let t = Tree::<2>::build(&y, n);
        // A purely sequential build of the same points.
        let orig: Vec<[f64; 2]> = (0..n).map(|i| [y[2 * i], y[2 * i + 1]]).collect();
        let mut perm: Vec<u32> = (0..n as u32).collect();
        let mut scratch = vec![0u32; n];
        let mut nodes = vec![Node { com: [0.0; 2], count: 0.0, width2: 0.0, start: 0, end: 0, child: 0, nchild: 0, point_mass: false }];
        let (mut lo, mut hi) = ([f64::INFINITY; 2], [f64::NEG_INFINITY; 2]);
        for p in &orig {
            for d in 0..2 {
                lo[d] = lo[d].min(p[d]);
                hi[d] = hi[d].max(p[d]);
            }
        }
        let center = [0.5 * (lo[0] + hi[0]), 0.5 * (lo[1] + hi[1])];
        let half = (0.5 * (hi[0] - lo[0])).max(0.5 * (hi[1] - lo[1])) * (1.0 + 1e-9) + 1e-300;
        build_rec(&mut nodes, 0, &orig, &mut perm, &mut scratch, 0, 0, n, center, half, half * 1e-12, 0);
        assert_eq!(perm, t.perm);
        assert_eq!(nodes.len(), t.nodes.len());
        for (a, b) in nodes.iter().zip(&t.nodes) {
            assert_eq!((a.start, a.end, a.child, a.nchild), (b.start, b.end, b.child, b.nchild));
            assert!((a.com[0] - b.com[0]).abs() < 1e-9 && (a.count - b.count).abs() == 0.0);
        }
    }
}
