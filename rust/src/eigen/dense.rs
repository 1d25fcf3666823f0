//! Dense symmetric eigensolver: Householder reduction to tridiagonal form,
//! then implicit QL iterations with Wilkinson-type shifts, all in f64.
//!
//! Eigenvectors are accumulated as *rows* (row r of the result is the
//! eigenvector of eigenvalue r), so every Givens rotation touches two
//! contiguous rows.

use crate::error::{Error, Result};
use rayon::prelude::*;

/// Rows per parallel task in the Householder reduction (fixed, thread-count independent).
const ROWS: usize = 32;

/// Eigen-decomposition of the symmetric `n × n` row-major matrix `a`
/// (only its lower triangle is read after symmetrisation `(A + Aᵀ)/2`).
///
/// Returns `(values, vectors)` with values in DESCENDING order and
/// `vectors[r*n..(r+1)*n]` the unit eigenvector of `values[r]`.
pub fn sym_eig(a: &[f64], n: usize) -> Result<(Vec<f64>, Vec<f64>)> {
    if a.len() != n * n {
        return Err(Error::Shape(format!("sym_eig: expected {n}x{n} values, got {}", a.len())));
    }
    if a.iter().any(|v| !v.is_finite()) {
        return Err(Error::NonFinite("sym_eig: matrix contains NaN or infinity".into()));
    }
    if n == 0 {
        return Ok((Vec::new(), Vec::new()));
    }
    let mut m = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..n {
            m[i * n + j] = 0.5 * (a[i * n + j] + a[j * n + i]);
        }
    }
    let (mut d, mut e, mut z) = tridiagonalize(&mut m, n);
    tridiag_ql(&mut d, &mut e, &mut z, n)?;
    // Sort descending (stable on ties, by original position).
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&i, &j| d[j].partial_cmp(&d[i]).unwrap_or(std::cmp::Ordering::Equal).then(i.cmp(&j)));
    let vals = order.iter().map(|&i| d[i]).collect();
    let mut vecs = vec![0.0; n * n];
    for (r, &i) in order.iter().enumerate() {
        vecs[r * n..(r + 1) * n].copy_from_slice(&z[i * n..(i + 1) * n]);
    }
    Ok((vals, vecs))
}

/// The `k` largest eigenpairs of the symmetric `n × n` matrix `a` (same
/// conventions as [`sym_eig`]). For `k ≤ n/4` (and n ≥ 64) only eigenvalues are
/// computed by QL; the k eigenvectors of the tridiagonal matrix come from
/// inverse iteration (vectors of eigenvalues closer than 1e-3·‖T‖ are
/// re-orthogonalised, as LAPACK's dstein does) and are mapped back with the
/// reflectors: ~(4/3)n³ flops instead of ~8n³.
pub fn sym_eig_top(a: &[f64], n: usize, k: usize) -> Result<(Vec<f64>, Vec<f64>)> {
    if k * 4 > n || n < 64 {
        let (vals, vecs) = sym_eig(a, n)?;
        let k = k.min(n);
        return Ok((vals[..k].to_vec(), vecs[..k * n].to_vec()));
    }
    if a.len() != n * n {
        return Err(Error::Shape(format!("sym_eig_top: expected {n}x{n} values, got {}", a.len())));
    }
    if a.iter().any(|v| !v.is_finite()) {
        return Err(Error::NonFinite("sym_eig_top: matrix contains NaN or infinity".into()));
    }
    let mut m = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..n {
            m[i * n + j] = 0.5 * (a[i * n + j] + a[j * n + i]);
        }
    }
    let (d, e, vs) = householder(&mut m, n);
    let (mut dv, mut ev) = (d.clone(), e.clone());
    tridiag_ql(&mut dv, &mut ev, &mut [], n)?;
    dv.sort_by(|x, y| y.partial_cmp(x).unwrap_or(std::cmp::Ordering::Equal));
    let vals = dv[..k].to_vec();
    let tnorm = (0..n).map(|i| d[i].abs() + e[i].abs() + if i > 0 { e[i - 1].abs() } else { 0.0 }).fold(0.0f64, f64::max);
    let tiny = f64::EPSILON * tnorm.max(f64::MIN_POSITIVE);
    let mut ys: Vec<Vec<f64>> = Vec::with_capacity(k);
    for (r, &lam) in vals.iter().enumerate() {
        let mut y: Vec<f64> = (0..n).map(|i| crate::rng::uniform_pm1(0x5eed + r as u64, i as u64)).collect();
        let f = TridiagLu::new(&d, &e, lam, tiny);
        for _ in 0..4 {
            f.solve(&mut y);
            for (prev, &pl) in ys.iter().zip(&vals) {
                if (pl - lam).abs() <= 1e-3 * tnorm {
                    let p: f64 = prev.iter().zip(&y).map(|(a, b)| a * b).sum();
                    y.iter_mut().zip(prev).for_each(|(x, &q)| *x -= p * q);
                }
            }
            let nrm = y.iter().map(|x| x * x).sum::<f64>().sqrt();
            if nrm == 0.0 || !nrm.is_finite() {
                return sym_eig(a, n).map(|(v, x)| (v[..k].to_vec(), x[..k * n].to_vec()));
            }
            y.iter_mut().for_each(|x| *x /= nrm);
        }
        ys.push(y);
    }
    // Back-transform: x = Q y = H_0 ⋯ H_last y (reflectors in reverse order).
    let mut vecs = vec![0.0; k * n];
    for (r, mut y) in ys.into_iter().enumerate() {
        for (kk, tau, v) in vs.iter().rev() {
            let seg = &mut y[kk + 1..];
            let p: f64 = v.iter().zip(seg.iter()).map(|(a, b)| a * b).sum::<f64>() * tau;
            seg.iter_mut().zip(v).for_each(|(x, &vi)| *x -= p * vi);
        }
        vecs[r * n..(r + 1) * n].copy_from_slice(&y);
    }
    Ok((vals, vecs))
}

/// LU factors (partial pivoting) of the tridiagonal `T − λI`, for inverse iteration.
struct TridiagLu {
    dl: Vec<f64>,
    dd: Vec<f64>,
    du: Vec<f64>,
    du2: Vec<f64>,
    piv: Vec<bool>,
}

impl TridiagLu {
    fn new(d: &[f64], e: &[f64], lam: f64, tiny: f64) -> Self {
        let n = d.len();
        let mut dd: Vec<f64> = d.iter().map(|x| x - lam).collect();
        let mut dl: Vec<f64> = e[..n.saturating_sub(1)].to_vec();
        let mut du: Vec<f64> = dl.clone();
        let mut du2 = vec![0.0; n.saturating_sub(2)];
        let mut piv = vec![false; n.saturating_sub(1)];
        for i in 0..n.saturating_sub(1) {
            if dd[i].abs() >= dl[i].abs() {
                if dd[i] == 0.0 {
                    dd[i] = tiny;
                }
                let fact = dl[i] / dd[i];
                dl[i] = fact;
                dd[i + 1] -= fact * du[i];
            } else {
                let fact = dd[i] / dl[i];
                dd[i] = dl[i];
                dl[i] = fact;
                let temp = du[i];
                du[i] = dd[i + 1];
                dd[i + 1] = temp - fact * dd[i + 1];
                if i + 2 < n {
                    du2[i] = du[i + 1];
                    du[i + 1] *= -fact;
                }
                piv[i] = true;
            }
        }
        if n > 0 && dd[n - 1] == 0.0 {
            dd[n - 1] = tiny;
        }
        for x in dd.iter_mut() {
            if x.abs() < tiny {
                *x = if *x < 0.0 { -tiny } else { tiny };
            }
        }
        TridiagLu { dl, dd, du, du2, piv }
    }

    fn solve(&self, b: &mut [f64]) {
        let n = b.len();
        for i in 0..n.saturating_sub(1) {
            if self.piv[i] {
                b.swap(i, i + 1);
            }
            b[i + 1] -= self.dl[i] * b[i];
        }
        for i in (0..n).rev() {
            let mut s = b[i];
            if i + 1 < n {
                s -= self.du[i] * b[i + 1];
            }
            if i + 2 < n {
                s -= self.du2[i] * b[i + 2];
            }
            b[i] = s / self.dd[i];
            if b[i].abs() > 1e150 {
                // Rescale the whole system (solved part and remaining right-hand
                // side) so the direction is kept without overflow.
                let m = b.iter().fold(0.0f64, |a, x| a.max(x.abs()));
                b.iter_mut().for_each(|x| *x /= m);
            }
        }
    }
}

/// Householder reduction `A = Q T Qᵀ`. Returns the diagonal `d`, the
/// off-diagonal `e` (`e[i]` couples i and i+1, `e[n-1] = 0`) and `Qᵀ`
/// row-major (row r = column r of Q). `m` is overwritten.
fn tridiagonalize(m: &mut [f64], n: usize) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let (d, e, vs) = householder(m, n);
    (d, e, form_qt(&vs, n))
}

/// Householder reflectors `H_k = I − τ v vᵀ` (v supported on k+1..n).
type Reflectors = Vec<(usize, f64, Vec<f64>)>;

/// Reduces `m` to tridiagonal form; returns (diagonal, off-diagonal, reflectors).
fn householder(m: &mut [f64], n: usize) -> (Vec<f64>, Vec<f64>, Reflectors) {
    let mut e = vec![0.0; n];
    let mut vs: Vec<(usize, f64, Vec<f64>)> = Vec::new(); // (k, tau, v on k+1..n)
    let mut p = vec![0.0; n];
    for k in 0..n.saturating_sub(2) {
        let len = n - k - 1;
        let mut v: Vec<f64> = (k + 1..n).map(|i| m[i * n + k]).collect();
        let scale: f64 = v.iter().map(|x| x.abs()).fold(0.0, f64::max);
        if scale == 0.0 {
            e[k] = 0.0;
            continue;
        }
        let norm = scale * v.iter().map(|x| (x / scale) * (x / scale)).sum::<f64>().sqrt();
        let alpha = if v[0] > 0.0 { -norm } else { norm };
        v[0] -= alpha;
        let vtv: f64 = v.iter().map(|x| x * x).sum();
        if vtv == 0.0 {
            e[k] = m[(k + 1) * n + k];
            continue;
        }
        let tau = 2.0 / vtv;
        // p = tau · A22 v ; q = p − (tau/2)(vᵀp) v ; A22 −= v qᵀ + q vᵀ.
        // Rows are independent: parallel over fixed row chunks, each dot sequential
        // (bit-identical for any thread count).
        {
            let mm: &[f64] = m;
            p[..len].par_chunks_mut(ROWS).enumerate().for_each(|(c, pc)| {
                for (o, pi) in pc.iter_mut().enumerate() {
                    let i = k + 1 + c * ROWS + o;
                    let row = &mm[i * n + k + 1..i * n + n];
                    *pi = tau * row.iter().zip(&v).map(|(a, b)| a * b).sum::<f64>();
                }
            });
        }
        let kk = 0.5 * tau * p[..len].iter().zip(&v).map(|(a, b)| a * b).sum::<f64>();
        for ii in 0..len {
            p[ii] -= kk * v[ii];
        }
        {
            let q = &p[..len];
            m[(k + 1) * n..].par_chunks_mut(ROWS * n).enumerate().for_each(|(c, rows)| {
                for (o, full) in rows.chunks_mut(n).enumerate() {
                    let ii = c * ROWS + o;
                    let (vi, qi) = (v[ii], q[ii]);
                    for (jj, x) in full[k + 1..].iter_mut().enumerate() {
                        *x -= vi * q[jj] + qi * v[jj];
                    }
                }
            });
        }
        e[k] = alpha;
        vs.push((k, tau, v));
    }
    if n >= 2 {
        e[n - 2] = m[(n - 1) * n + n - 2];
    }
    let d: Vec<f64> = (0..n).map(|i| m[i * n + i]).collect();
    (d, e, vs)
}

/// Qᵀ = H_{last} ⋯ H_0 (row-major): the reflectors applied in forward order on the left.
fn form_qt(vs: &Reflectors, n: usize) -> Vec<f64> {
    let mut qt = vec![0.0; n * n];
    for i in 0..n {
        qt[i * n + i] = 1.0;
    }
    let mut w = vec![0.0; n];
    for (k, tau, v) in vs {
        w.iter_mut().for_each(|x| *x = 0.0);
        for (ii, &vi) in v.iter().enumerate() {
            let row = &qt[(k + 1 + ii) * n..(k + 2 + ii) * n];
            for (wj, &r) in w.iter_mut().zip(row) {
                *wj += vi * r;
            }
        }
        for (ii, &vi) in v.iter().enumerate() {
            let f = tau * vi;
            let row = &mut qt[(k + 1 + ii) * n..(k + 2 + ii) * n];
            for (r, &wj) in row.iter_mut().zip(&w) {
                *r -= f * wj;
            }
        }
    }
    qt
}

/// Implicit QL with shifts on the tridiagonal (d, e); rotations are applied
/// to the rows of `z`, which start as Qᵀ and end as the eigenvectors.
fn tridiag_ql(d: &mut [f64], e: &mut [f64], z: &mut [f64], n: usize) -> Result<()> {
    // Off-diagonals below eps·(local diagonal) deflate; so do those below
    // eps·1e-3·‖T‖, or clusters of noise-level eigenvalues (rank-deficient
    // matrices) would never satisfy the purely local test.
    let anorm = (0..n).map(|i| d[i].abs() + e[i].abs()).fold(0.0f64, f64::max);
    let floor = 1e-3 * anorm;
    for l in 0..n {
        let mut iter = 0;
        loop {
            let mut m = l;
            while m + 1 < n {
                let dd = d[m].abs() + d[m + 1].abs();
                if e[m].abs() <= f64::EPSILON * dd.max(floor) {
                    break;
                }
                m += 1;
            }
            if m == l {
                break;
            }
            iter += 1;
            if iter > 100 {
                return Err(Error::InvalidInput("dense eigensolver did not converge".into()));
            }
            let mut g = (d[l + 1] - d[l]) / (2.0 * e[l]);
            let mut r = g.hypot(1.0);
            g = d[m] - d[l] + e[l] / (g + if g >= 0.0 { r } else { -r });
            let (mut s, mut c, mut p) = (1.0f64, 1.0f64, 0.0f64);
            let mut early = false;
            let mut i = m;
            while i > l {
                i -= 1;
                let f = s * e[i];
                let b = c * e[i];
                r = f.hypot(g);
                e[i + 1] = r;
                if r == 0.0 {
                    d[i + 1] -= p;
                    e[m] = 0.0;
                    early = true;
                    break;
                }
                s = f / r;
                c = g / r;
                g = d[i + 1] - p;
                r = (d[i] - g) * s + 2.0 * c * b;
                p = s * r;
                d[i + 1] = g + p;
                g = c * r - b;
                if z.is_empty() {
                    continue; // eigenvalues only
                }
                let (lo, hi) = z.split_at_mut((i + 1) * n);
                let zi = &mut lo[i * n..];
                let zi1 = &mut hi[..n];
                for (a, bb) in zi.iter_mut().zip(zi1.iter_mut()) {
                    let f2 = *bb;
                    *bb = s * *a + c * f2;
                    *a = c * *a - s * f2;
                }
            }
            if early {
                continue;
            }
            d[l] -= p;
            e[l] = g;
            e[m] = 0.0;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(a: &[f64], n: usize, vals: &[f64], vecs: &[f64], tol: f64) {
        for r in 0..n {
            let v = &vecs[r * n..(r + 1) * n];
            for i in 0..n {
                let av: f64 = (0..n).map(|j| a[i * n + j] * v[j]).sum();
                assert!((av - vals[r] * v[i]).abs() < tol, "residual row {r}");
            }
            for s in 0..n {
                let dot: f64 = (0..n).map(|i| v[i] * vecs[s * n + i]).sum();
                let want = if s == r { 1.0 } else { 0.0 };
                assert!((dot - want).abs() < tol, "orthonormality {r},{s}");
            }
        }
    }

    #[test]
    fn path_laplacian_known_spectrum() {
        // Laplacian of the path graph on n vertices: eigenvalues 2 − 2cos(πk/n).
        let n = 37;
        let mut a = vec![0.0; n * n];
        for i in 0..n {
            let deg = if i == 0 || i == n - 1 { 1.0 } else { 2.0 };
            a[i * n + i] = deg;
            if i + 1 < n {
                a[i * n + i + 1] = -1.0;
                a[(i + 1) * n + i] = -1.0;
            }
        }
        let (vals, vecs) = sym_eig(&a, n).unwrap();
        let mut want: Vec<f64> = (0..n).map(|k| 2.0 - 2.0 * (std::f64::consts::PI * k as f64 / n as f64).cos()).collect();
        want.sort_by(|x, y| y.partial_cmp(x).unwrap());
        for (g, w) in vals.iter().zip(&want) {
            assert!((g - w).abs() < 1e-12, "{g} vs {w}");
        }
        check(&a, n, &vals, &vecs, 1e-11);
    }

    #[test]
    fn top_k_by_inverse_iteration_matches_full() {
        let n = 200;
        let mut a = vec![0.0; n * n];
        for i in 0..n {
            for j in 0..=i {
                let v = crate::rng::uniform_pm1(4, (i * n + j) as u64);
                a[i * n + j] = v;
                a[j * n + i] = v;
            }
        }
        let (fv, fx) = sym_eig(&a, n).unwrap();
        let (tv, tx) = sym_eig_top(&a, n, 5).unwrap();
        for r in 0..5 {
            assert!((fv[r] - tv[r]).abs() < 1e-12);
            let dot: f64 = (0..n).map(|i| fx[r * n + i] * tx[r * n + i]).sum();
            assert!((dot.abs() - 1.0).abs() < 1e-10, "vector {r}: {dot}");
        }
        // A cluster: identity + small rank-2 bump; top 4 = {1+2s, 1+s, 1, 1}.
        let mut b = vec![0.0; n * n];
        let u: Vec<f64> = (0..n).map(|i| ((i as f64) * 0.37).sin()).collect();
        let un = u.iter().map(|x| x * x).sum::<f64>().sqrt();
        for i in 0..n {
            b[i * n + i] = 1.0;
            for j in 0..n {
                b[i * n + j] += 0.5 * u[i] * u[j] / (un * un);
            }
        }
        let (tv, tx) = sym_eig_top(&b, n, 4).unwrap();
        assert!((tv[0] - 1.5).abs() < 1e-12 && tv[1..].iter().all(|v| (v - 1.0).abs() < 1e-12));
        check_partial(&b, n, &tv, &tx, 4, 1e-10);
    }

    fn check_partial(a: &[f64], n: usize, vals: &[f64], vecs: &[f64], k: usize, tol: f64) {
        for r in 0..k {
            let v = &vecs[r * n..(r + 1) * n];
            for i in 0..n {
                let av: f64 = (0..n).map(|j| a[i * n + j] * v[j]).sum();
                assert!((av - vals[r] * v[i]).abs() < tol, "residual {r}");
            }
            for s in 0..k {
                let dot: f64 = (0..n).map(|i| v[i] * vecs[s * n + i]).sum();
                assert!((dot - if s == r { 1.0 } else { 0.0 }).abs() < tol, "orthonormality {r} {s}");
            }
        }
    }

    #[test]
    fn random_matrix_and_repeated_eigenvalues() {
        let n = 50;
        let mut a = vec![0.0; n * n];
        for i in 0..n {
            for j in 0..=i {
                let v = crate::rng::uniform_pm1(3, (i * n + j) as u64);
                a[i * n + j] = v;
                a[j * n + i] = v;
            }
        }
        let (vals, vecs) = sym_eig(&a, n).unwrap();
        check(&a, n, &vals, &vecs, 1e-10);
        let tr: f64 = (0..n).map(|i| a[i * n + i]).sum();
        assert!((vals.iter().sum::<f64>() - tr).abs() < 1e-10);
        // Identity plus a rank-one term: eigenvalue 1 with multiplicity n−1.
        let mut b = vec![0.0; n * n];
        for i in 0..n {
            for j in 0..n {
                b[i * n + j] = if i == j { 1.0 } else { 0.0 } + 1.0 / n as f64;
            }
        }
        let (vals, vecs) = sym_eig(&b, n).unwrap();
        assert!((vals[0] - 2.0).abs() < 1e-12);
        assert!(vals[1..].iter().all(|v| (v - 1.0).abs() < 1e-12));
        check(&b, n, &vals, &vecs, 1e-11);
        // Tiny sizes.
        assert_eq!(sym_eig(&[3.0], 1).unwrap().0, vec![3.0]);
        let (v2, _) = sym_eig(&[2.0, 1.0, 1.0, 2.0], 2).unwrap();
        assert!((v2[0] - 3.0).abs() < 1e-14 && (v2[1] - 1.0).abs() < 1e-14);
        // Rank-deficient Gram matrix (rank 3 of 120): many noise-level eigenvalues.
        let (n, r) = (120, 3);
        let x: Vec<f64> = (0..n * r).map(|i| crate::rng::uniform_pm1(5, i as u64)).collect();
        let mut g = vec![0.0; n * n];
        for i in 0..n {
            for j in 0..n {
                g[i * n + j] = (0..r).map(|a| x[i * r + a] * x[j * r + a]).sum();
            }
        }
        let (vals, vecs) = sym_eig(&g, n).unwrap();
        assert!(vals[3..].iter().all(|v| v.abs() < 1e-12));
        check(&g, n, &vals, &vecs, 1e-10);
    }
}
