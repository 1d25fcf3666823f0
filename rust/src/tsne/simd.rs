//! Hand-vectorised 2-D inner loops (AVX2 + FMA, picked at run time; the
//! portable versions are the reference and the fallback).
//!
//! Both loops sum, over a list of points j with weights, the Cauchy kernel
//! b = 1 / (1 + ‖q − y_j‖²) terms of the t-SNE gradient.

/// Σ_j m_j b_j, Σ_j m_j b_j² (q − y_j): Barnes-Hut interaction lists (m = cell sizes).
#[inline]
pub fn cauchy_list_2d(q: [f64; 2], xs: &[f64], ys: &[f64], ms: &[f64], avx: bool) -> (f64, [f64; 2]) {
    #[cfg(target_arch = "x86_64")]
    if avx {
        // SAFETY: the caller checked AVX2 + FMA support.
        return unsafe { cauchy_list_2d_avx2(q, xs, ys, ms) };
    }
    let _ = avx;
    cauchy_list_2d_scalar(q, xs, ys, ms)
}

pub fn cauchy_list_2d_scalar(q: [f64; 2], xs: &[f64], ys: &[f64], ms: &[f64]) -> (f64, [f64; 2]) {
    let (mut z, mut fx, mut fy) = (0.0, 0.0, 0.0);
    for j in 0..xs.len() {
        let dx = q[0] - xs[j];
        let dy = q[1] - ys[j];
        let b = 1.0 / (1.0 + dx * dx + dy * dy);
        let mb = ms[j] * b;
        z += mb;
        fx += mb * b * dx;
        fy += mb * b * dy;
    }
    (z, [fx, fy])
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn hsum(v: std::arch::x86_64::__m256d) -> f64 {
    let mut a = [0.0f64; 4];
    std::arch::x86_64::_mm256_storeu_pd(a.as_mut_ptr(), v);
    (a[0] + a[1]) + (a[2] + a[3])
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn cauchy_list_2d_avx2(q: [f64; 2], xs: &[f64], ys: &[f64], ms: &[f64]) -> (f64, [f64; 2]) {
    use std::arch::x86_64::*;
    let n = xs.len().min(ys.len()).min(ms.len());
    let one = _mm256_set1_pd(1.0);
    let qx = _mm256_set1_pd(q[0]);
    let qy = _mm256_set1_pd(q[1]);
    let (mut z, mut fx, mut fy) = (_mm256_setzero_pd(), _mm256_setzero_pd(), _mm256_setzero_pd());
    let mut j = 0;
    while j + 4 <= n {
        let dx = _mm256_sub_pd(qx, _mm256_loadu_pd(xs.as_ptr().add(j)));
        let dy = _mm256_sub_pd(qy, _mm256_loadu_pd(ys.as_ptr().add(j)));
        let d2 = _mm256_fmadd_pd(dx, dx, _mm256_mul_pd(dy, dy));
        let b = _mm256_div_pd(one, _mm256_add_pd(one, d2));
        let mb = _mm256_mul_pd(_mm256_loadu_pd(ms.as_ptr().add(j)), b);
        z = _mm256_add_pd(z, mb);
        let mbb = _mm256_mul_pd(mb, b);
        fx = _mm256_fmadd_pd(mbb, dx, fx);
        fy = _mm256_fmadd_pd(mbb, dy, fy);
        j += 4;
    }
    let (mut zs, mut fxs, mut fys) = (hsum(z), hsum(fx), hsum(fy));
    let (zt, ft) = cauchy_list_2d_scalar(q, &xs[j..n], &ys[j..n], &ms[j..n]);
    zs += zt;
    fxs += ft[0];
    fys += ft[1];
    (zs, [fxs, fys])
}

/// Exact-method row: (Σ_j p_j b_j (q − y_j), Σ_j b_j² (q − y_j), Σ_j b_j) over a contiguous range.
#[inline]
pub fn cauchy_row_2d(q: [f64; 2], xs: &[f64], ys: &[f64], ps: &[f64], avx: bool) -> ([f64; 2], [f64; 2], f64) {
    #[cfg(target_arch = "x86_64")]
    if avx {
        // SAFETY: the caller checked AVX2 + FMA support.
        return unsafe { cauchy_row_2d_avx2(q, xs, ys, ps) };
    }
    let _ = avx;
    cauchy_row_2d_scalar(q, xs, ys, ps)
}

pub fn cauchy_row_2d_scalar(q: [f64; 2], xs: &[f64], ys: &[f64], ps: &[f64]) -> ([f64; 2], [f64; 2], f64) {
    let (mut ax, mut ay, mut fx, mut fy, mut z) = (0.0, 0.0, 0.0, 0.0, 0.0);
    for j in 0..xs.len() {
        let dx = q[0] - xs[j];
        let dy = q[1] - ys[j];
        let b = 1.0 / (1.0 + dx * dx + dy * dy);
        let pb = ps[j] * b;
        let bb = b * b;
        z += b;
        ax += pb * dx;
        ay += pb * dy;
        fx += bb * dx;
        fy += bb * dy;
    }
    ([ax, ay], [fx, fy], z)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn cauchy_row_2d_avx2(q: [f64; 2], xs: &[f64], ys: &[f64], ps: &[f64]) -> ([f64; 2], [f64; 2], f64) {
    use std::arch::x86_64::*;
    let n = xs.len().min(ys.len()).min(ps.len());
    let one = _mm256_set1_pd(1.0);
    let qx = _mm256_set1_pd(q[0]);
    let qy = _mm256_set1_pd(q[1]);
    let zero = _mm256_setzero_pd();
    let (mut ax, mut ay, mut fx, mut fy, mut z) = (zero, zero, zero, zero, zero);
    let mut j = 0;
    while j + 4 <= n {
        let dx = _mm256_sub_pd(qx, _mm256_loadu_pd(xs.as_ptr().add(j)));
        let dy = _mm256_sub_pd(qy, _mm256_loadu_pd(ys.as_ptr().add(j)));
        let d2 = _mm256_fmadd_pd(dx, dx, _mm256_mul_pd(dy, dy));
        let b = _mm256_div_pd(one, _mm256_add_pd(one, d2));
        z = _mm256_add_pd(z, b);
        let pb = _mm256_mul_pd(_mm256_loadu_pd(ps.as_ptr().add(j)), b);
        let bb = _mm256_mul_pd(b, b);
        ax = _mm256_fmadd_pd(pb, dx, ax);
        ay = _mm256_fmadd_pd(pb, dy, ay);
        fx = _mm256_fmadd_pd(bb, dx, fx);
        fy = _mm256_fmadd_pd(bb, dy, fy);
        j += 4;
    }
    let (a, f, zt) = cauchy_row_2d_scalar(q, &xs[j..n], &ys[j..n], &ps[j..n]);
    ([hsum(ax) + a[0], hsum(ay) + a[1]], [hsum(fx) + f[0], hsum(fy) + f[1]], hsum(z) + zt)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn avx2_matches_scalar() {
        let m = 37;
        let xs: Vec<f64> = (0..m).map(|j| (j as f64 * 0.37).sin() * 3.0).collect();
        let ys: Vec<f64> = (0..m).map(|j| (j as f64 * 0.91).cos() * 2.0).collect();
        let ws: Vec<f64> = (0..m).map(|j| 1.0 + (j % 5) as f64).collect();
        let q = [0.3, -0.2];
        let (z0, f0) = cauchy_list_2d_scalar(q, &xs, &ys, &ws);
        let (z1, f1) = cauchy_list_2d(q, &xs, &ys, &ws, crate::simd::has_avx2());
        assert!((z0 - z1).abs() < 1e-12 * z0.abs());
        assert!((f0[0] - f1[0]).abs() < 1e-12 && (f0[1] - f1[1]).abs() < 1e-12);
        let (a0, g0, y0) = cauchy_row_2d_scalar(q, &xs, &ys, &ws);
        let (a1, g1, y1) = cauchy_row_2d(q, &xs, &ys, &ws, crate::simd::has_avx2());
        assert!((y0 - y1).abs() < 1e-12 && (a0[0] - a1[0]).abs() < 1e-12 && (g0[1] - g1[1]).abs() < 1e-12);
        let inter: Vec<f64> = xs.iter().zip(&ys).flat_map(|(a, b)| [*a, *b]).collect();
        let idx: Vec<u32> = (0..m as u32).rev().step_by(2).collect();
        let ps: Vec<f64> = idx.iter().map(|&j| 0.01 * j as f64).collect();
        let r0 = attract_row_2d_scalar(q, &idx, &ps, &inter);
        let r1 = attract_row_2d(q, &idx, &ps, &inter, crate::simd::has_avx2());
        assert!((r0[0] - r1[0]).abs() < 1e-12 && (r0[1] - r1[1]).abs() < 1e-12);
    }
}

/// Attractive term of one row: Σ_j p_j b_ij (q − y_j) with y interleaved `[x0, y0, x1, y1, …]`.
#[inline]
pub fn attract_row_2d(q: [f64; 2], idx: &[u32], ps: &[f64], y: &[f64], avx: bool) -> [f64; 2] {
    #[cfg(target_arch = "x86_64")]
    if avx && y.len() < (i32::MAX as usize) {
        // SAFETY: AVX2 + FMA checked by the caller; indices are < n (validated P) so 2j+1 < y.len() fits i32.
        return unsafe { attract_row_2d_avx2(q, idx, ps, y) };
    }
    let _ = avx;
    attract_row_2d_scalar(q, idx, ps, y)
}

pub fn attract_row_2d_scalar(q: [f64; 2], idx: &[u32], ps: &[f64], y: &[f64]) -> [f64; 2] {
    let (mut ax, mut ay) = (0.0, 0.0);
    for (&j, &p) in idx.iter().zip(ps) {
        let j = j as usize;
        let dx = q[0] - y[2 * j];
        let dy = q[1] - y[2 * j + 1];
        let pb = p / (1.0 + dx * dx + dy * dy);
        ax += pb * dx;
        ay += pb * dy;
    }
    [ax, ay]
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn attract_row_2d_avx2(q: [f64; 2], idx: &[u32], ps: &[f64], y: &[f64]) -> [f64; 2] {
    use std::arch::x86_64::*;
    let n = idx.len().min(ps.len());
    let one = _mm256_set1_pd(1.0);
    let qx = _mm256_set1_pd(q[0]);
    let qy = _mm256_set1_pd(q[1]);
    let (mut ax, mut ay) = (_mm256_setzero_pd(), _mm256_setzero_pd());
    let base = y.as_ptr();
    let mut t = 0;
    while t + 4 <= n {
        let j = _mm_loadu_si128(idx.as_ptr().add(t) as *const __m128i);
        let j2 = _mm_slli_epi32::<1>(j);
        let xj = _mm256_i32gather_pd::<8>(base, j2);
        let yj = _mm256_i32gather_pd::<8>(base.add(1), j2);
        let dx = _mm256_sub_pd(qx, xj);
        let dy = _mm256_sub_pd(qy, yj);
        let d2 = _mm256_fmadd_pd(dx, dx, _mm256_mul_pd(dy, dy));
        let pb = _mm256_div_pd(_mm256_loadu_pd(ps.as_ptr().add(t)), _mm256_add_pd(one, d2));
        ax = _mm256_fmadd_pd(pb, dx, ax);
        ay = _mm256_fmadd_pd(pb, dy, ay);
        t += 4;
    }
    let tail = attract_row_2d_scalar(q, &idx[t..n], &ps[t..n], y);
    [hsum(ax) + tail[0], hsum(ay) + tail[1]]
}
