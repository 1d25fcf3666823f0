//! Pairwise distances (Euclidean, squared Euclidean, cosine) and their
//! analytic backward pass.
//!
//! Forward uses the fast product form ‖x‖² + ‖y‖² − 2x·y on *centred* data
//! (distances are translation invariant, and centring shrinks the norms that
//! cancel), computed with a tiled GEMM. Any entry whose squared distance is
//! small against the squared norms (`Real::CANCEL_TOL`) has lost digits to
//! cancellation and is recomputed directly as Σ(x−y)² on the original rows, so
//! a row's distance to itself is exactly 0 and near-duplicates keep full
//! relative precision. Cosine distance is ‖x̂−ŷ‖²/2 on the unit vectors, so it
//! gets the same treatment.

use crate::error::{check_finite, check_len, Error, Result};
use crate::linalg::{col_means, gemm, par_gemm, row_sq_norms, sq_dist, MatRef, ROW_TILE};
use crate::Real;
use rayon::prelude::*;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Metric {
    Euclidean,
    SqEuclidean,
    Cosine,
}

impl Metric {
    pub const NAMES: &'static [&'static str] = &["euclidean", "sqeuclidean", "cosine"];

    pub fn parse(name: &str) -> Result<Self> {
        match name {
            "euclidean" => Ok(Metric::Euclidean),
            "sqeuclidean" => Ok(Metric::SqEuclidean),
            "cosine" => Ok(Metric::Cosine),
            _ => Err(Error::InvalidParameter(format!(
                "unknown metric {name:?}; accepted: {}",
                Metric::NAMES.join(", ")
            ))),
        }
    }
}

/// Row-major `n × d` input rows (`y = None` means "y is x").
#[derive(Clone, Copy)]
pub struct Rows<'a, T> {
    pub data: &'a [T],
    pub n: usize,
}

fn validate<T: Real>(x: Rows<T>, y: Option<Rows<T>>, d: usize) -> Result<()> {
    if x.n == 0 || d == 0 {
        return Err(Error::Shape(format!("x must be non-empty, got shape ({}, {d})", x.n)));
    }
    check_len("x", x.data.len(), x.n, d)?;
    check_finite("x", x.data)?;
    if let Some(y) = y {
        if y.n == 0 {
            return Err(Error::Shape(format!("y must be non-empty, got shape (0, {d})")));
        }
        check_len("y", y.data.len(), y.n, d)?;
        check_finite("y", y.data)?;
    }
    Ok(())
}

/// Unit rows (zero rows stay zero) and each row's norm.
fn normalise<T: Real>(x: &[T], n: usize, d: usize) -> (Vec<T>, Vec<T>) {
    // Norms that survive underflow and overflow of the sum of squares (tiny or huge rows).
    let norms: Vec<T> = row_sq_norms(x, n, d)
        .into_iter()
        .enumerate()
        .map(|(i, ss)| {
            if ss >= T::min_positive_value() && ss.is_finite() {
                return ss.sqrt();
            }
            let row = &x[i * d..(i + 1) * d];
            let mx = row.iter().fold(T::zero(), |a, &v| a.max(v.abs()));
            if mx == T::zero() {
                return T::zero();
            }
            mx * row.iter().map(|&v| (v / mx) * (v / mx)).sum::<T>().sqrt()
        })
        .collect();
    let mut u = x.to_vec();
    u.par_chunks_mut(d).zip(norms.par_iter()).for_each(|(row, &nr)| {
        if nr > T::zero() {
            let inv = T::one() / nr;
            row.iter_mut().for_each(|v| *v *= inv);
        }
    });
    (u, norms)
}

fn centred<T: Real>(x: &[T], n: usize, d: usize, mean: &[f64]) -> Vec<T> {
    let mut c = x.to_vec();
    c.par_chunks_mut(d).take(n).for_each(|row| {
        for (v, &m) in row.iter_mut().zip(mean) {
            *v = T::c(v.to_f64_() - m);
        }
    });
    c
}

/// Squared Euclidean distances prepared for tiled evaluation: both sets centred
/// on their joint mean, with squared norms, plus the original rows for the
/// direct recomputation of cancelled entries.
pub struct SqEuclid<'a, T> {
    x: &'a [T],
    y: &'a [T],
    xc: Vec<T>,
    yc: Option<Vec<T>>,
    nx: Vec<T>,
    ny: Option<Vec<T>>,
    pub n: usize,
    pub m: usize,
    pub d: usize,
    same: bool,
}

impl<'a, T: Real> SqEuclid<'a, T> {
    /// `y = None` means the rows of `x` against themselves.
    pub fn new(x: &'a [T], n: usize, y: Option<(&'a [T], usize)>, d: usize) -> Self {
        let same = y.is_none();
        let (y, m) = y.unwrap_or((x, n));
        let mut mean = col_means(x, n, d);
        if !same {
            let my = col_means(y, m, d);
            let w = n as f64 / (n + m) as f64;
            for (a, b) in mean.iter_mut().zip(&my) {
                *a = w * *a + (1.0 - w) * b;
            }
        }
        let xc = centred(x, n, d, &mean);
        let nx = row_sq_norms(&xc, n, d);
        let (yc, ny) = if same {
            (None, None)
        } else {
            let yc = centred(y, m, d, &mean);
            let ny = row_sq_norms(&yc, m, d);
            (Some(yc), Some(ny))
        };
        SqEuclid { x, y, xc, yc, nx, ny, n, m, d, same }
    }

    /// Writes the squared distances of rows `r0..r1` of x to all rows of y into
    /// `out` ((r1−r0) × m, row-major). Single-threaded: callers parallelise over tiles.
    pub fn fill_rows(&self, r0: usize, r1: usize, out: &mut [T]) {
        let (m, d) = (self.m, self.d);
        let yc = self.yc.as_deref().unwrap_or(&self.xc);
        let ny = self.ny.as_deref().unwrap_or(&self.nx);
        let a = MatRef::new(&self.xc, self.n, d).rows_range(r0, r1);
        let b = MatRef::new(yc, m, d).t();
        gemm(-T::c(2.0), a, b, T::zero(), out);
        let tol = T::CANCEL_TOL;
        for i in r0..r1 {
            let row = &mut out[(i - r0) * m..(i - r0 + 1) * m];
            let xi = &self.x[i * d..(i + 1) * d];
            let nxi = self.nx[i];
            for (j, v) in row.iter_mut().enumerate() {
                let scale = nxi + ny[j];
                let mut s = *v + scale;
                if s <= tol * scale {
                    s = if self.same && i == j { T::zero() } else { sq_dist(xi, &self.y[j * d..(j + 1) * d]) };
                }
                *v = s.max(T::zero());
            }
        }
    }
}

/// Squared Euclidean distances into `out` (n × m) with the cancellation guard.
fn sq_euclidean_into<T: Real>(x: &[T], n: usize, y: &[T], m: usize, d: usize, same: bool, out: &mut [T]) {
    let prep = SqEuclid::new(x, n, if same { None } else { Some((y, m)) }, d);
    out[..n * m].par_chunks_mut(ROW_TILE * m).enumerate().for_each(|(t, tile)| {
        let r0 = t * ROW_TILE;
        prep.fill_rows(r0, (r0 + ROW_TILE).min(n), tile);
    });
}

/// Unit rows (zero rows stay zero) and each row's norm. Public for kNN on cosine.
pub fn unit_rows<T: Real>(x: &[T], n: usize, d: usize) -> (Vec<T>, Vec<T>) {
    normalise(x, n, d)
}

/// Pairwise distances between the rows of `x` and of `y` (or of `x` with
/// itself when `y` is `None`), written row-major into `out` (`x.n × y.n`).
pub fn pairwise<T: Real>(x: Rows<T>, y: Option<Rows<T>>, d: usize, metric: Metric, out: &mut [T]) -> Result<()> {
    validate(x, y, d)?;
    let same = y.is_none();
    let y = y.unwrap_or(x);
    let (n, m) = (x.n, y.n);
    check_len("out", out.len(), n, m)?;
    match metric {
        Metric::Euclidean | Metric::SqEuclidean => {
            sq_euclidean_into(x.data, n, y.data, m, d, same, out);
            if metric == Metric::Euclidean {
                out.par_iter_mut().for_each(|v| *v = v.sqrt());
            }
        }
        Metric::Cosine => {
            let (ux, nxs) = normalise(x.data, n, d);
            let (uy_owned, nys_owned);
            let (uy, nys): (&[T], &[T]) = if same {
                (&ux, &nxs)
            } else {
                (uy_owned, nys_owned) = normalise(y.data, m, d);
                (&uy_owned, &nys_owned)
            };
            sq_euclidean_into(&ux, n, uy, m, d, same, out);
            let half = T::c(0.5);
            let two = T::c(2.0);
            out.par_chunks_mut(m).enumerate().for_each(|(i, row)| {
                for (j, v) in row.iter_mut().enumerate() {
                    *v = if same && i == j {
                        T::zero()
                    } else if nxs[i] == T::zero() || nys[j] == T::zero() {
                        // A zero vector has no direction: similarity 0, distance 1.
                        T::one()
                    } else {
                        (*v * half).min(two)
                    };
                }
            });
        }
    }
    Ok(())
}

/// Backward of [`pairwise`]: given the forward output `dist` and the upstream
/// gradient `grad` (both `n × m`), writes ∂L/∂x into `gx` (n × d) and ∂L/∂y
/// into `gy` (m × d). When `y` is `None` (self distances) both roles of `x`
/// are summed into `gx` and `gy` is left untouched.
///
/// * Euclidean: W = G ⊘ D (0 where D = 0, so duplicates get a zero gradient),
///   ∂x_i = x_i Σ_j W_ij − Σ_j W_ij y_j.
/// * squared Euclidean: the same with W = 2G.
/// * cosine: with c = 1 − D, ∂x_i = −(Σ_j G_ij ŷ_j − (Σ_j G_ij c_ij) x̂_i) / ‖x_i‖.
#[allow(clippy::too_many_arguments)]
pub fn pairwise_backward<T: Real>(
    x: Rows<T>, y: Option<Rows<T>>, d: usize, metric: Metric,
    dist: &[T], grad: &[T], gx: &mut [T], gy: &mut [T],
) -> Result<()> {
    let same = y.is_none();
    let y = y.unwrap_or(x);
    let (n, m) = (x.n, y.n);
    check_len("x", x.data.len(), n, d)?;
    check_len("y", y.data.len(), m, d)?;
    check_len("dist", dist.len(), n, m)?;
    check_len("grad", grad.len(), n, m)?;
    check_len("grad_x", gx.len(), n, d)?;
    if !same {
        check_len("grad_y", gy.len(), m, d)?;
    }
    match metric {
        Metric::Euclidean | Metric::SqEuclidean => {
            let mut w = vec![T::zero(); n * m];
            let two = T::c(2.0);
            w.par_chunks_mut(m).zip(dist.par_chunks(m).zip(grad.par_chunks(m))).for_each(|(wr, (dr, gr))| {
                for ((wv, &dv), &gv) in wr.iter_mut().zip(dr).zip(gr) {
                    *wv = match metric {
                        Metric::Euclidean => {
                            if dv > T::zero() { gv / dv } else { T::zero() }
                        }
                        _ => two * gv,
                    };
                }
            });
            let ones_x = vec![T::one(); n];
            let ones_y = vec![T::one(); m];
            weighted_grad(&w, &ones_x, &ones_y, x.data, y.data, x.data, y.data, n, m, d, same, gx, gy);
        }
        Metric::Cosine => {
            let (ux, nx) = normalise(x.data, n, d);
            let (uy, ny) = if same { (ux.clone(), nx.clone()) } else { normalise(y.data, m, d) };
            // Σ_j G_ij c_ij per row / per column enters as the "diagonal" weight,
            // Σ_j G_ij ŷ_j as the product term: the same shape as the Euclidean case.
            let mut gc = vec![T::zero(); n * m];
            gc.par_chunks_mut(m).zip(dist.par_chunks(m).zip(grad.par_chunks(m))).for_each(|(r, (dr, gr))| {
                for ((o, &dv), &gv) in r.iter_mut().zip(dr).zip(gr) {
                    *o = gv * (T::one() - dv);
                }
            });
            let rows_c: Vec<T> = gc.par_chunks(m).map(|r| r.iter().copied().sum()).collect();
            let cols_c = col_sums(&gc, n, m);
            drop(gc);
            // gx_i = (rows_c_i x̂_i − (G ŷ)_i) / ‖x_i‖, so pass "x" = x̂ and scale afterwards.
            let zero_safe_inv = |v: &[T]| -> Vec<T> {
                v.iter().map(|&r| if r > T::zero() { T::one() / r } else { T::zero() }).collect()
            };
            let ix = zero_safe_inv(&nx);
            let iy = zero_safe_inv(&ny);
            cosine_grad(grad, &rows_c, &cols_c, &ux, &uy, &ix, &iy, n, m, d, same, gx, gy);
        }
    }
    Ok(())
}

fn col_sums<T: Real>(w: &[T], n: usize, m: usize) -> Vec<T> {
    // Column sums in fixed row blocks, then combined in order: deterministic.
    let partial: Vec<Vec<T>> = w
        .par_chunks(ROW_TILE * m)
        .map(|blk| {
            let mut acc = vec![T::zero(); m];
            for r in blk.chunks(m) {
                for (a, &v) in acc.iter_mut().zip(r) {
                    *a += v;
                }
            }
            acc
        })
        .collect();
    let mut out = vec![T::zero(); m];
    for p in partial {
        for (o, v) in out.iter_mut().zip(p) {
            *o += v;
        }
    }
    let _ = n;
    out
}

/// gx_i = sx_i·(Σ_j W_ij)·px_i − Σ_j W_ij qy_j and symmetrically for y,
/// where p* are the rows scaled by the row sums and q* the rows multiplied.
#[allow(clippy::too_many_arguments)]
fn weighted_grad<T: Real>(
    w: &[T], sx: &[T], sy: &[T], px: &[T], py: &[T], qx: &[T], qy: &[T],
    n: usize, m: usize, d: usize, same: bool, gx: &mut [T], gy: &mut [T],
) {
    let wm = MatRef::new(w, n, m);
    let rs: Vec<T> = w.par_chunks(m).map(|r| r.iter().copied().sum()).collect();
    let cs = col_sums(w, n, m);
    if same {
        // x plays both roles: gx = (rs + cs) x − (W + Wᵀ) x.
        par_gemm(-T::one(), wm, MatRef::new(qx, n, d), T::zero(), gx);
        par_gemm(-T::one(), wm.t(), MatRef::new(qx, n, d), T::one(), gx);
        gx.par_chunks_mut(d).enumerate().for_each(|(i, g)| {
            let s = sx[i] * (rs[i] + cs[i]);
            for (gv, &xv) in g.iter_mut().zip(&px[i * d..(i + 1) * d]) {
                *gv += s * xv;
            }
        });
    } else {
        par_gemm(-T::one(), wm, MatRef::new(qy, m, d), T::zero(), gx);
        par_gemm(-T::one(), wm.t(), MatRef::new(qx, n, d), T::zero(), gy);
        gx.par_chunks_mut(d).enumerate().for_each(|(i, g)| {
            let s = sx[i] * rs[i];
            for (gv, &xv) in g.iter_mut().zip(&px[i * d..(i + 1) * d]) {
                *gv += s * xv;
            }
        });
        gy.par_chunks_mut(d).enumerate().for_each(|(j, g)| {
            let s = sy[j] * cs[j];
            for (gv, &yv) in g.iter_mut().zip(&py[j * d..(j + 1) * d]) {
                *gv += s * yv;
            }
        });
    }
}

#[allow(clippy::too_many_arguments)]
fn cosine_grad<T: Real>(
    g: &[T], rows_c: &[T], cols_c: &[T], ux: &[T], uy: &[T], ix: &[T], iy: &[T],
    n: usize, m: usize, d: usize, same: bool, gx: &mut [T], gy: &mut [T],
) {
    let gm = MatRef::new(g, n, m);
    let scale_rows = |out: &mut [T], u: &[T], c: &[T], inv: &[T]| {
        out.par_chunks_mut(d).enumerate().for_each(|(i, o)| {
            for (ov, &uv) in o.iter_mut().zip(&u[i * d..(i + 1) * d]) {
                *ov = (*ov + c[i] * uv) * inv[i];
            }
        });
    };
    if same {
        par_gemm(-T::one(), gm, MatRef::new(uy, m, d), T::zero(), gx);
        par_gemm(-T::one(), gm.t(), MatRef::new(ux, n, d), T::one(), gx);
        let c: Vec<T> = rows_c.iter().zip(cols_c).map(|(&a, &b)| a + b).collect();
        scale_rows(gx, ux, &c, ix);
    } else {
        par_gemm(-T::one(), gm, MatRef::new(uy, m, d), T::zero(), gx);
        par_gemm(-T::one(), gm.t(), MatRef::new(ux, n, d), T::zero(), gy);
        scale_rows(gx, ux, rows_c, ix);
        scale_rows(gy, uy, cols_c, iy);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lcg(seed: u64, len: usize) -> Vec<f64> {
        let mut s = seed;
        (0..len)
            .map(|_| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((s >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
            })
            .collect()
    }

    fn naive(x: &[f64], n: usize, y: &[f64], m: usize, d: usize, metric: Metric) -> Vec<f64> {
        let mut out = vec![0.0; n * m];
        for i in 0..n {
            for j in 0..m {
                let (a, b) = (&x[i * d..(i + 1) * d], &y[j * d..(j + 1) * d]);
                out[i * m + j] = match metric {
                    Metric::SqEuclidean => a.iter().zip(b).map(|(p, q)| (p - q) * (p - q)).sum(),
                    Metric::Euclidean => a.iter().zip(b).map(|(p, q)| (p - q) * (p - q)).sum::<f64>().sqrt(),
                    Metric::Cosine => {
                        let ab: f64 = a.iter().zip(b).map(|(p, q)| p * q).sum();
                        let aa: f64 = a.iter().map(|p| p * p).sum();
                        let bb: f64 = b.iter().map(|p| p * p).sum();
                        1.0 - ab / (aa.sqrt() * bb.sqrt())
                    }
                };
            }
        }
        out
    }

    #[test]
    fn forward_matches_naive() {
        for &metric in &[Metric::Euclidean, Metric::SqEuclidean, Metric::Cosine] {
            for &(n, m, d) in &[(1, 1, 1), (3, 70, 5), (130, 2, 17)] {
                let x = lcg(1, n * d);
                let y = lcg(2, m * d);
                let mut out = vec![0.0; n * m];
                pairwise(Rows { data: &x, n }, Some(Rows { data: &y, n: m }), d, metric, &mut out).unwrap();
                let want = naive(&x, n, &y, m, d, metric);
                for (a, b) in out.iter().zip(&want) {
                    assert!((a - b).abs() < 1e-10, "{metric:?} {a} {b}");
                }
            }
        }
    }

    #[test]
    fn self_distance_is_exactly_zero_and_near_duplicates_are_accurate() {
        let d = 64;
        let base: Vec<f32> = lcg(3, d).into_iter().map(|v| v as f32 + 100.0).collect();
        let mut x = base.clone();
        let delta: Vec<f32> = lcg(4, d).into_iter().map(|v| (v * 1e-4) as f32).collect();
        x.extend(base.iter().zip(&delta).map(|(a, b)| a + b));
        let mut out = vec![0.0f32; 4];
        pairwise(Rows { data: &x, n: 2 }, None, d, Metric::Euclidean, &mut out).unwrap();
        assert_eq!(out[0], 0.0);
        assert_eq!(out[3], 0.0);
        let truth: f64 = (0..d)
            .map(|k| {
                let t = x[d + k] as f64 - x[k] as f64;
                t * t
            })
            .sum::<f64>()
            .sqrt();
        assert!(((out[1] as f64) - truth).abs() / truth < 1e-2, "{} vs {truth}", out[1]);
    }

    fn loss_and_grad(x: &[f64], n: usize, y: &[f64], m: usize, d: usize, metric: Metric, gw: &[f64]) -> f64 {
        let mut out = vec![0.0; n * m];
        pairwise(Rows { data: x, n }, Some(Rows { data: y, n: m }), d, metric, &mut out).unwrap();
        out.iter().zip(gw).map(|(a, b)| a * b).sum()
    }

    #[test]
    fn backward_matches_finite_differences() {
        let (n, m, d) = (5, 4, 3);
        for &metric in &[Metric::Euclidean, Metric::SqEuclidean, Metric::Cosine] {
            let x = lcg(5, n * d);
            let y = lcg(6, m * d);
            let g = lcg(7, n * m);
            let mut dist = vec![0.0; n * m];
            pairwise(Rows { data: &x, n }, Some(Rows { data: &y, n: m }), d, metric, &mut dist).unwrap();
            let (mut gx, mut gy) = (vec![0.0; n * d], vec![0.0; m * d]);
            pairwise_backward(Rows { data: &x, n }, Some(Rows { data: &y, n: m }), d, metric, &dist, &g, &mut gx, &mut gy).unwrap();
            let h = 1e-6;
            for k in 0..n * d {
                let (mut xp, mut xm) = (x.clone(), x.clone());
                xp[k] += h;
                xm[k] -= h;
                let fd = (loss_and_grad(&xp, n, &y, m, d, metric, &g) - loss_and_grad(&xm, n, &y, m, d, metric, &g)) / (2.0 * h);
                assert!((fd - gx[k]).abs() < 1e-6, "{metric:?} x[{k}] {fd} {}", gx[k]);
            }
            for k in 0..m * d {
                let (mut yp, mut ym) = (y.clone(), y.clone());
                yp[k] += h;
                ym[k] -= h;
                let fd = (loss_and_grad(&x, n, &yp, m, d, metric, &g) - loss_and_grad(&x, n, &ym, m, d, metric, &g)) / (2.0 * h);
                assert!((fd - gy[k]).abs() < 1e-6, "{metric:?} y[{k}] {fd} {}", gy[k]);
            }
            // Self distances: gx must equal gx + gy of the two-argument call with y = x.
            let mut ds = vec![0.0; n * n];
            pairwise(Rows { data: &x, n }, None, d, metric, &mut ds).unwrap();
            let gs = lcg(8, n * n);
            let mut g1 = vec![0.0; n * d];
            pairwise_backward(Rows { data: &x, n }, None, d, metric, &ds, &gs, &mut g1, &mut []).unwrap();
            let (mut ga, mut gb) = (vec![0.0; n * d], vec![0.0; n * d]);
            pairwise_backward(Rows { data: &x, n }, Some(Rows { data: &x, n }), d, metric, &ds, &gs, &mut ga, &mut gb).unwrap();
            for k in 0..n * d {
                assert!((g1[k] - ga[k] - gb[k]).abs() < 1e-9);
            }
        }
    }

    #[test]
    fn errors_not_panics() {
        let x = [1.0f64, f64::NAN];
        let mut out = [0.0; 1];
        assert!(matches!(pairwise(Rows { data: &x, n: 1 }, None, 2, Metric::Euclidean, &mut out), Err(Error::NonFinite(_))));
        assert!(matches!(pairwise(Rows { data: &x[..0], n: 0 }, None, 2, Metric::Euclidean, &mut out), Err(Error::Shape(_))));
        assert!(Metric::parse("manhattan").is_err());
    }
}
