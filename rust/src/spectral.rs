//! Laplacian eigenmaps: kNN affinity graphs and the generalized eigenproblem
//! `L v = λ D v` (or `L v = λ v` for the unnormalised variant).
//!
//! With W the symmetric affinity matrix, D = diag(W·1) and L = D − W, the
//! smallest eigenvalues of `L v = λ D v` are found as the LARGEST eigenvalues
//! μ = 1 − λ of the normalised operator `M = D^{−1/2} W D^{−1/2}`, whose unit
//! eigenvectors u give `v = D^{−1/2} u` (so `vᵀ D v = 1`, the constraint that
//! stops the embedding collapsing). The trivial solution (λ = 0, v constant)
//! is dropped.
//!
//! Disconnected graphs (c components, found by union-find): λ = 0 has
//! multiplicity c, spanned by the component indicators. The result is then
//! defined as follows (finite and deterministic): after dropping the global
//! constant, the first `min(c − 1, n_components)` coordinates are the
//! indicators of components 1, 2, … (numbered by lowest point index),
//! Gram–Schmidt-orthogonalised (D-inner product) against the constant and
//! each other, with eigenvalue 0; the remaining coordinates are the next
//! smallest eigenvalues, found with all c indicators deflated. A point with
//! no positive affinity is treated as having a unit self-loop (its own
//! component), so D is invertible.

use crate::sparse::{components, Csr};
use crate::eigen::{fix_sign, top_eigs, LanczosOpts};
use crate::error::{Error, Result};
use crate::knn::Knn;
use crate::Real;
use rayon::prelude::*;

/// Edge weights of the kNN graph.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Weights {
    /// `w_ij = exp(−d_ij² / t)`; `None` = automatic t (see [`auto_bandwidth`]).
    Heat(Option<f64>),
    /// `w_ij = 1` for every edge.
    Connectivity,
}

/// Automatic heat-kernel bandwidth: the median of the squared kNN distances
/// (numpy's median: mean of the two middle values for an even count). If that
/// median is 0 (mostly duplicate points) the mean of the positive squared
/// distances is used, and 1 if there are none.
pub fn auto_bandwidth(sq: &[f64]) -> f64 {
    if sq.is_empty() {
        return 1.0;
    }
    let mut s = sq.to_vec();
    s.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    let m = s.len();
    let med = if m % 2 == 1 { s[m / 2] } else { 0.5 * (s[m / 2 - 1] + s[m / 2]) };
    if med > 0.0 {
        return med;
    }
    let pos: Vec<f64> = s.into_iter().filter(|&v| v > 0.0).collect();
    if pos.is_empty() { 1.0 } else { pos.iter().sum::<f64>() / pos.len() as f64 }
}

/// Symmetric affinity matrix of a kNN graph whose `distances` are Euclidean
/// (not squared). The graph is symmetrised as a union: i and j are linked when
/// either is among the other's neighbours, with weight `kernel(d_ij)` (the
/// larger of the two stored values if they differ, e.g. for an approximate kNN).
/// Returns the CSR matrix (columns sorted) and the bandwidth used (NaN for
/// connectivity weights).
pub fn knn_affinity<T: Real>(knn: &Knn<T>, weights: Weights) -> Result<(Csr, f64)> {
    let (n, k) = (knn.n, knn.k);
    if knn.indices.len() != n * k || knn.distances.len() != n * k {
        return Err(Error::Shape("kNN lists do not match n x k".into()));
    }
    let sq: Vec<f64> = knn.distances.iter().map(|d| d.to_f64_() * d.to_f64_()).collect();
    if sq.iter().any(|v| !v.is_finite()) {
        return Err(Error::NonFinite("kNN distances contain NaN or infinity".into()));
    }
    let t = match weights {
        Weights::Heat(Some(t)) => {
            if !(t > 0.0 && t.is_finite()) {
                return Err(Error::InvalidParameter(format!("heat-kernel t must be a positive finite number, got {t}")));
            }
            t
        }
        Weights::Heat(None) => auto_bandwidth(&sq),
        Weights::Connectivity => f64::NAN,
    };
    let kernel = |s: f64| if weights == Weights::Connectivity { 1.0 } else { (-s / t).exp() };
    // Reverse lists by counting sort (deterministic order: by source row).
    let mut cnt = vec![0usize; n + 1];
    for &j in &knn.indices {
        cnt[j as usize + 1] += 1;
    }
    for i in 0..n {
        cnt[i + 1] += cnt[i];
    }
    let mut pos = cnt.clone();
    let mut rev = vec![(0u32, 0.0f64); n * k];
    for i in 0..n {
        for t2 in 0..k {
            let j = knn.indices[i * k + t2] as usize;
            if j >= n {
                return Err(Error::InvalidInput(format!("kNN index {j} out of range for {n} points")));
            }
            rev[pos[j]] = (i as u32, sq[i * k + t2]);
            pos[j] += 1;
        }
    }
    let rows: Vec<Vec<(u32, f64)>> = (0..n).into_par_iter().map(|i| {
        let mut r: Vec<(u32, f64)> = (0..k).map(|t2| (knn.indices[i * k + t2], kernel(sq[i * k + t2]))).collect();
        r.extend(rev[cnt[i]..cnt[i + 1]].iter().map(|&(j, s)| (j, kernel(s))));
        r.retain(|e| e.0 as usize != i);
        r.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.partial_cmp(&a.1).unwrap_or(std::cmp::Ordering::Equal)));
        r.dedup_by_key(|e| e.0); // keeps the first = largest weight per column
        r
    }).collect();
    let mut indptr = Vec::with_capacity(n + 1);
    indptr.push(0);
    let total: usize = rows.iter().map(|r| r.len()).sum();
    let mut indices = Vec::with_capacity(total);
    let mut data = Vec::with_capacity(total);
    for r in rows {
        for (j, w) in r {
            indices.push(j);
            data.push(w);
        }
        indptr.push(indices.len());
    }
    Ok((Csr { n, indptr, indices, data }, t))
}

/// Result of [`laplacian_eigenmaps`].
#[derive(Clone, Debug)]
pub struct Eigenmap {
    /// Row-major `n × n_components` embedding v (D-orthonormal columns when normalised).
    pub embedding: Vec<f64>,
    /// The eigenvalues λ of `L v = λ D v` (or `L v = λ v`), ascending.
    pub eigenvalues: Vec<f64>,
    /// Number of connected components of the graph.
    pub n_graph_components: usize,
}

/// Solver settings for [`laplacian_eigenmaps`].
#[derive(Clone, Debug)]
pub struct EigenmapOpts {
    pub n_components: usize,
    pub normalized: bool,
    pub seed: u64,
    /// Relative Ritz-residual tolerance of the Krylov solver.
    pub tol: f64,
}

/// Laplacian eigenmaps of the symmetric non-negative affinity matrix `w`
/// (diagonal entries are ignored). See the module docs for the definition.
pub fn laplacian_eigenmaps(w: &Csr, opts: &EigenmapOpts) -> Result<Eigenmap> {
    let n = w.n;
    let k = opts.n_components;
    if k == 0 {
        return Err(Error::InvalidParameter("n_components must be at least 1".into()));
    }
    if n < k + 2 {
        return Err(Error::InvalidParameter(format!(
            "n_components={k} needs at least {} points (the trivial eigenvector is dropped), got {n}",
            k + 2
        )));
    }
    if w.data.iter().any(|&v| v < 0.0 || !v.is_finite()) {
        return Err(Error::InvalidInput("affinities must be finite and non-negative".into()));
    }
    // Drop the diagonal (self-affinities do not change L = D − W).
    let mut w = w.clone();
    {
        let mut indptr = vec![0usize];
        let (mut idx, mut val) = (Vec::new(), Vec::new());
        for i in 0..n {
            let (ri, rv) = w.row(i);
            for (&j, &v) in ri.iter().zip(rv) {
                if j as usize != i && v != 0.0 {
                    idx.push(j);
                    val.push(v);
                }
            }
            indptr.push(idx.len());
        }
        w = Csr { n, indptr, indices: idx, data: val };
    }
    if !w.is_symmetric(1e-10) {
        return Err(Error::InvalidInput("the affinity matrix must be symmetric".into()));
    }
    let deg = w.row_sums();
    let (nc, label) = components(&w);
    let isolated: Vec<bool> = deg.iter().map(|&d| d <= 0.0).collect();
    let deg: Vec<f64> = deg.iter().map(|&d| if d > 0.0 { d } else { 1.0 }).collect();
    let unit = |mut v: Vec<f64>| {
        let s = v.iter().map(|x| x * x).sum::<f64>().sqrt();
        v.iter_mut().for_each(|x| *x /= s);
        v
    };
    // Null-space basis in the u-coordinates: D^{1/2}·1_c (normalised) or 1_c.
    let weight = |i: usize| if opts.normalized { deg[i].sqrt() } else { 1.0 };
    let mut basis: Vec<Vec<f64>> = vec![unit((0..n).map(weight).collect())];
    for c in 0..nc.saturating_sub(1) {
        let mut z: Vec<f64> = (0..n).map(|i| if label[i] == c { weight(i) } else { 0.0 }).collect();
        for b in &basis {
            let p: f64 = z.iter().zip(b).map(|(x, y)| x * y).sum();
            z.iter_mut().zip(b).for_each(|(x, y)| *x -= p * y);
        }
        basis.push(unit(z));
    }
    let n_null = (nc - 1).min(k);
    let n_rest = k - n_null;
    let mut cols: Vec<Vec<f64>> = basis[1..1 + n_null].to_vec();
    let mut lams: Vec<f64> = vec![0.0; n_null];
    if n_rest > 0 {
        let lopts = LanczosOpts {
            nev: n_rest,
            ncv: (2 * n_rest + 20).max(40),
            tol: opts.tol,
            max_matvecs: 50_000 + 20 * n,
            seed: opts.seed,
        };
        if opts.normalized {
            let dis: Vec<f64> = deg.iter().map(|d| 1.0 / d.sqrt()).collect();
            let mut scaled = Vec::with_capacity(w.data.len());
            for i in 0..n {
                let (ri, rv) = w.row(i);
                scaled.extend(ri.iter().zip(rv).map(|(&j, &v)| v * dis[i] * dis[j as usize]));
            }
            let m = Csr { n, indptr: w.indptr.clone(), indices: w.indices.clone(), data: scaled };
            let op = |x: &[f64], y: &mut [f64]| {
                m.matvec(x, y);
                for (i, yi) in y.iter_mut().enumerate() {
                    if isolated[i] {
                        *yi += x[i];
                    }
                }
            };
            let (mu, u) = top_eigs(n, op, &basis, &lopts)?;
            lams.extend(mu.iter().map(|m| 1.0 - m));
            cols.extend(u);
        } else {
            // Largest of σI − L, σ = 2·max degree ≥ λ_max(L) (Gershgorin).
            let sigma = 2.0 * w.row_sums().iter().fold(0.0f64, |a, &b| a.max(b));
            let rs = w.row_sums();
            let op = |x: &[f64], y: &mut [f64]| {
                w.matvec(x, y);
                for (i, yi) in y.iter_mut().enumerate() {
                    *yi += (sigma - rs[i]) * x[i];
                }
            };
            let (mu, u) = top_eigs(n, op, &basis, &lopts)?;
            lams.extend(mu.iter().map(|m| sigma - m));
            cols.extend(u);
        }
    }
    let mut embedding = vec![0.0; n * k];
    for (c, mut u) in cols.into_iter().enumerate() {
        if opts.normalized {
            u.iter_mut().zip(&deg).for_each(|(x, d)| *x /= d.sqrt());
        }
        fix_sign(&mut u);
        for i in 0..n {
            embedding[i * k + c] = u[i];
        }
    }
    Ok(Eigenmap { embedding, eigenvalues: lams, n_graph_components: nc })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::distances::Metric;
    use crate::knn::knn_exact;

    #[test]
    fn affinity_is_symmetric_union_with_heat_weights() {
        let x: Vec<f64> = vec![0.0, 1.0, 3.0, 7.0, 7.5];
        let knn = knn_exact(&x, 5, 1, 1, Metric::Euclidean).unwrap();
        let (w, t) = knn_affinity(&knn, Weights::Heat(None)).unwrap();
        assert!(w.is_symmetric(0.0));
        // nearest: 0→1, 1→0, 2→1, 3→4, 4→3; squared distances 1,1,4,0.25,0.25 → median 1
        assert_eq!(t, 1.0);
        assert_eq!(w.indptr, vec![0, 1, 3, 4, 5, 6]);
        assert_eq!(w.indices, vec![1, 0, 2, 1, 4, 3]);
        assert!((w.data[2] - (-4.0f64).exp()).abs() < 1e-15);
        let (c, _) = knn_affinity(&knn, Weights::Connectivity).unwrap();
        assert!(c.data.iter().all(|&v| v == 1.0));
    }

    #[test]
    fn path_graph_eigenmap_known_spectrum() {
        // Unweighted path: normalised-Laplacian eigenvectors are known in closed form;
        // check the generalized residual and D-orthonormality instead.
        let n = 400;
        let mut indptr = vec![0];
        let mut idx = Vec::new();
        for i in 0..n {
            if i > 0 { idx.push((i - 1) as u32); }
            if i + 1 < n { idx.push((i + 1) as u32); }
            indptr.push(idx.len());
        }
        let data = vec![1.0; idx.len()];
        let w = Csr::new(n, indptr, idx, data).unwrap();
        let deg = w.row_sums();
        for normalized in [true, false] {
            let e = laplacian_eigenmaps(&w, &EigenmapOpts { n_components: 3, normalized, seed: 0, tol: 1e-12 }).unwrap();
            assert_eq!(e.n_graph_components, 1);
            for c in 0..3 {
                let v: Vec<f64> = (0..n).map(|i| e.embedding[i * 3 + c]).collect();
                let mut wv = vec![0.0; n];
                w.matvec(&v, &mut wv);
                let lam = e.eigenvalues[c];
                let rhs = |i: usize| if normalized { lam * deg[i] * v[i] } else { lam * v[i] };
                let res: f64 = (0..n).map(|i| (deg[i] * v[i] - wv[i] - rhs(i)).powi(2)).sum::<f64>().sqrt();
                assert!(res < 1e-8, "residual {res}");
                let dn: f64 = (0..n).map(|i| if normalized { deg[i] } else { 1.0 } * v[i] * v[i]).sum();
                assert!((dn - 1.0).abs() < 1e-10);
            }
            assert!(e.eigenvalues.windows(2).all(|p| p[0] <= p[1] + 1e-12));
        }
        // Normalized path Laplacian spectrum: 1 − cos(πj/(n−1)).
        let e = laplacian_eigenmaps(&w, &EigenmapOpts { n_components: 2, normalized: true, seed: 0, tol: 1e-12 }).unwrap();
        for (j, lam) in e.eigenvalues.iter().enumerate() {
            let want = 1.0 - (std::f64::consts::PI * (j + 1) as f64 / (n - 1) as f64).cos();
            assert!((lam - want).abs() < 1e-10, "{lam} vs {want}");
        }
    }

    #[test]
    fn disconnected_graph_gives_indicator_coordinates() {
        // Two triangles plus an isolated point.
        let edges = [(0, 1), (1, 2), (0, 2), (3, 4), (4, 5), (3, 5)];
        let n = 7;
        let mut rows = vec![Vec::new(); n];
        for &(a, b) in &edges {
            rows[a].push(b as u32);
            rows[b].push(a as u32);
        }
        let mut indptr = vec![0];
        let mut idx = Vec::new();
        for r in rows.iter_mut() {
            r.sort();
            idx.extend_from_slice(r);
            indptr.push(idx.len());
        }
        let data = vec![1.0; idx.len()];
        let w = Csr::new(n, indptr, idx, data).unwrap();
        let e = laplacian_eigenmaps(&w, &EigenmapOpts { n_components: 3, normalized: true, seed: 0, tol: 1e-12 }).unwrap();
        assert_eq!(e.n_graph_components, 3);
        assert_eq!(&e.eigenvalues[..2], &[0.0, 0.0]);
        assert!(e.embedding.iter().all(|v| v.is_finite()));
        // Coordinates 0 and 1 are constant on each component.
        for c in 0..2 {
            assert!((e.embedding[c] - e.embedding[3 + c]).abs() < 1e-12);
            assert!((e.embedding[9 + c] - e.embedding[15 + c]).abs() < 1e-12);
        }
        // Triangle eigenvalue of the normalised Laplacian: 3/2.
        assert!((e.eigenvalues[2] - 1.5).abs() < 1e-12);
    }
}
