//! Classical (Torgerson) multidimensional scaling.
//!
//! With D⁽²⁾ the matrix of squared distances and J = I − 11ᵀ/n, the
//! double-centred matrix `B = −½ J D⁽²⁾ J` is the Gram matrix of centred
//! coordinates; the embedding is `U_k Λ_k^{1/2}` for its top-k eigenpairs.
//! Coordinates of non-positive eigenvalues (non-Euclidean input) are set to 0.
//!
//! For Euclidean data `B = Xc Xcᵀ` exactly, so [`classical_mds_euclidean`]
//! obtains the same eigenpairs without forming any n × n matrix: from the
//! d × d covariance (PCA), with eigenvalues `(n − 1)·explained_variance` and
//! embedding `Xc w` (= u √λ). [`classical_mds_precomputed`] double-centres a
//! given distance matrix and solves it densely (small n) or by Lanczos.

use crate::eigen::{top_eigs, LanczosOpts};
use crate::error::{check_finite, check_len, Error, Result};
use crate::pca::{pca_fit, scores, Solver};
use crate::Real;
use rayon::prelude::*;

/// Result of classical MDS.
#[derive(Clone, Debug)]
pub struct Mds {
    /// Row-major `n × k`.
    pub embedding: Vec<f64>,
    /// Top-k eigenvalues of B, descending.
    pub eigenvalues: Vec<f64>,
    /// trace(B) = Σ of all eigenvalues (the total "variance" · n−1 for Euclidean input).
    pub trace: f64,
}

/// Classical MDS of the rows of `x` (n × d) under Euclidean distances.
pub fn classical_mds_euclidean<T: Real>(x: &[T], n: usize, d: usize, k: usize) -> Result<Mds> {
    let (fit, xc) = pca_fit(x, n, d, k, Solver::Full)?;
    let s = scores(&xc, n, d, &fit.components, k);
    let nm1 = (n - 1) as f64;
    Ok(Mds {
        embedding: s.iter().map(|v| v.to_f64_()).collect(),
        eigenvalues: fit.explained_variance.iter().map(|v| v * nm1).collect(),
        trace: fit.total_variance * nm1,
    })
}

/// Classical MDS of a symmetric, non-negative `n × n` distance matrix.
pub fn classical_mds_precomputed<T: Real>(dist: &[T], n: usize, k: usize, seed: u64) -> Result<Mds> {
    check_len("distance matrix", dist.len(), n, n)?;
    check_finite("distance matrix", dist)?;
    if n < 2 {
        return Err(Error::Shape(format!("classical MDS needs at least 2 points, got {n}")));
    }
    if k == 0 || k >= n {
        return Err(Error::InvalidParameter(format!("n_components must be in 1..={} for {n} points, got {k}", n - 1)));
    }
    if dist.iter().any(|&v| v < T::zero()) {
        return Err(Error::InvalidInput("a distance matrix must not contain negative values".into()));
    }
    let scale = dist.iter().fold(0.0f64, |a, v| a.max(v.to_f64_()));
    let tol = 1e-6 * scale.max(f64::MIN_POSITIVE) * if std::mem::size_of::<T>() == 4 { 100.0 } else { 1.0 };
    let asym = (0..n).into_par_iter().any(|i| (0..i).any(|j| (dist[i * n + j].to_f64_() - dist[j * n + i].to_f64_()).abs() > tol));
    if asym {
        return Err(Error::InvalidInput("the distance matrix must be symmetric".into()));
    }
    // Row means of D² (f64), grand mean, then B = −½(D²_ij − r_i − r_j + g).
    let r: Vec<f64> = (0..n).into_par_iter().map(|i| {
        dist[i * n..(i + 1) * n].iter().map(|v| v.to_f64_() * v.to_f64_()).sum::<f64>() / n as f64
    }).collect();
    let g = r.iter().sum::<f64>() / n as f64;
    let mut b = vec![T::zero(); n * n];
    b.par_chunks_mut(n).enumerate().for_each(|(i, row)| {
        for (j, o) in row.iter_mut().enumerate() {
            let d = dist[i * n + j].to_f64_();
            *o = T::c(-0.5 * (0.5 * (d * d + dist[j * n + i].to_f64_().powi(2)) - r[i] - r[j] + g));
        }
    });
    let trace: f64 = (0..n).map(|i| b[i * n + i].to_f64_()).sum();
    const TILE: usize = 64;
    let op = |x: &[f64], y: &mut [f64]| {
        y.par_chunks_mut(TILE).enumerate().for_each(|(t, yt)| {
            for (o, yi) in yt.iter_mut().enumerate() {
                let row = &b[(t * TILE + o) * n..(t * TILE + o + 1) * n];
                *yi = row.iter().zip(x).map(|(a, &c)| a.to_f64_() * c).sum();
            }
        })
    };
    let opts = LanczosOpts { nev: k, ncv: (2 * k + 20).max(40), tol: 1e-10, max_matvecs: 20_000 + 10 * n, seed };
    let (vals, vecs) = top_eigs(n, op, &[], &opts)?;
    let mut embedding = vec![0.0; n * k];
    for (c, (lam, u)) in vals.iter().zip(&vecs).enumerate() {
        let s = lam.max(0.0).sqrt();
        for i in 0..n {
            embedding[i * k + c] = u[i] * s;
        }
    }
    Ok(Mds { embedding, eigenvalues: vals, trace })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::uniform_pm1;

    #[test]
    fn precomputed_equals_euclidean_and_reproduces_distances() {
        for n in [40usize, 350] {
            let d = 3;
            let x: Vec<f64> = (0..n * d).map(|i| uniform_pm1(2, i as u64) * (1 + i % d) as f64).collect();
            let mut dist = vec![0.0; n * n];
            for i in 0..n {
                for j in 0..n {
                    dist[i * n + j] = (0..d).map(|a| (x[i * d + a] - x[j * d + a]).powi(2)).sum::<f64>().sqrt();
                }
            }
            let e = classical_mds_euclidean(&x, n, d, d).unwrap();
            let p = classical_mds_precomputed(&dist, n, d, 0).unwrap();
            for c in 0..d {
                assert!((e.eigenvalues[c] - p.eigenvalues[c]).abs() < 1e-8 * e.eigenvalues[0]);
            }
            assert!((e.trace - p.trace).abs() < 1e-8 * e.trace);
            // The embedding reproduces all distances (rank d).
            for i in 0..n {
                for j in 0..n {
                    let de = (0..d).map(|a| (p.embedding[i * d + a] - p.embedding[j * d + a]).powi(2)).sum::<f64>().sqrt();
                    assert!((de - dist[i * n + j]).abs() < 1e-8);
                }
            }
        }
    }
}
