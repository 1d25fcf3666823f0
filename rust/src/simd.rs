//! Element-wise loops compiled for the x86-64 baseline, AVX2+FMA and AVX-512,
//! chosen at run time (wheels must run on any x86-64, so no
//! `-C target-cpu=native`). The bodies are plain loops the compiler vectorises.

use crate::Real;

/// What the fused finishing pass turns a squared distance into.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Finish {
    Squared,
    Sqrt,
    /// Cosine on unit rows: d²/2, capped at 2.
    HalfCapped,
    /// Squared, not clamped: may be slightly negative (rounding); the caller clamps at +0.
    Raw,
}

/// Whether the AVX2+FMA builds of the hot loops can run here (detected once).
pub(crate) fn has_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        use std::sync::OnceLock;
        static HAS: OnceLock<bool> = OnceLock::new();
        *HAS.get_or_init(|| is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"))
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether the AVX-512 builds of the hot loops can run here (F, BW, DQ, VL with
/// AVX2, FMA and BMI; detected once). 16 f32 lanes per compare: the threshold
/// filters' masks come straight from a mask register.
pub(crate) fn has_avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        use std::sync::OnceLock;
        static HAS: OnceLock<bool> = OnceLock::new();
        *HAS.get_or_init(|| {
            has_avx2()
                && is_x86_feature_detected!("avx512f")
                && is_x86_feature_detected!("avx512bw")
                && is_x86_feature_detected!("avx512dq")
                && is_x86_feature_detected!("avx512vl")
                && is_x86_feature_detected!("bmi1")
                && is_x86_feature_detected!("bmi2")
                && std::env::var_os("REPRKIT_NO_AVX512").is_none()
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Declares `$vis fn $name<T: Real>(..)` whose body is compiled three times, for
/// the x86-64 baseline, AVX2+FMA and AVX-512, the best chosen at run time (the
/// same operations in the same order: results do not depend on which runs). Helpers the
/// body calls should be `#[inline(always)]` so that their loops vectorise in it.
macro_rules! multiversion {
    ($(#[$m:meta])* $vis:vis fn $name:ident<$T:ident>($($arg:ident : $ty:ty),* $(,)?) -> $ret:ty $body:block) => {
        $(#[$m])*
        #[allow(clippy::too_many_arguments)]
        $vis fn $name<$T: Real>($($arg: $ty),*) -> $ret {
            #[inline(always)]
            #[allow(clippy::too_many_arguments)]
            fn body<$T: Real>($($arg: $ty),*) -> $ret $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma,bmi1,bmi2")]
                #[allow(clippy::too_many_arguments)]
                unsafe fn avx512<$T: Real>($($arg: $ty),*) -> $ret {
                    body($($arg),*)
                }
                if $crate::simd::has_avx512() {
                    // SAFETY: the CPU supports these AVX-512 subsets, AVX2, FMA and BMI (checked at run time).
                    return unsafe { avx512($($arg),*) };
                }
                #[target_feature(enable = "avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                unsafe fn avx2<$T: Real>($($arg: $ty),*) -> $ret {
                    body($($arg),*)
                }
                if $crate::simd::has_avx2() {
                    // SAFETY: the CPU supports AVX2 and FMA (checked at run time).
                    return unsafe { avx2($($arg),*) };
                }
            }
            body($($arg),*)
        }
    };
}
pub(crate) use multiversion;

multiversion! {
    /// row_j ← row_j + nx + ny_j (turning −2x·y into ‖x−y‖²); returns whether any
    /// entry is ≤ tol·(nx + ny_j), i.e. lost its digits to cancellation.
    pub fn add_norms<T>(row: &mut [T], nx: T, ny: &[T], tol: T) -> bool {
        let mut bad = false;
        for (v, &nyj) in row.iter_mut().zip(ny) {
            let scale = nx + nyj;
            let s = *v + scale;
            bad |= s <= tol * scale;
            *v = s;
        }
        bad
    }
}

multiversion! {
    /// Clamps squared distances at 0 and applies the metric's last step.
    pub fn finish<T>(row: &mut [T], how: Finish) -> () {
        let zero = T::zero();
        match how {
            Finish::Raw => {}
            Finish::Squared => row.iter_mut().for_each(|v| *v = if *v > zero { *v } else { zero }),
            Finish::Sqrt => row.iter_mut().for_each(|v| *v = (if *v > zero { *v } else { zero }).sqrt()),
            Finish::HalfCapped => {
                let (half, two) = (T::c(0.5), T::c(2.0));
                row.iter_mut().for_each(|v| {
                    let s = if *v > zero { *v * half } else { zero };
                    *v = if s < two { s } else { two };
                })
            }
        }
    }
}

multiversion! {
    /// out_j ← g_j / d_j where d_j > 0, else 0 (Euclidean backward weights).
    pub fn div_or_zero<T>(out: &mut [T], g: &[T], d: &[T]) -> () {
        let zero = T::zero();
        for ((o, &gv), &dv) in out.iter_mut().zip(g).zip(d) {
            let safe = if dv > zero { dv } else { T::one() };
            *o = if dv > zero { gv / safe } else { zero };
        }
    }
}

multiversion! {
    /// w_j ← (w_j + g_j) / d_j where d_j > 0, else 0 (symmetrised Euclidean weights).
    pub fn add_div_or_zero<T>(w: &mut [T], g: &[T], d: &[T]) -> () {
        let zero = T::zero();
        for ((o, &gv), &dv) in w.iter_mut().zip(g).zip(d) {
            let safe = if dv > zero { dv } else { T::one() };
            *o = if dv > zero { (*o + gv) / safe } else { zero };
        }
    }
}

multiversion! {
    /// out[i·ldo + j] = src[j·lds + i] for i < rows, j < cols. Goes through 8 × 8
    /// blocks in a local array, which the compiler turns into register shuffles
    /// (a strided loop moves one value at a time). 32 source rows are read
    /// along their full length at a time (long runs the prefetcher can follow),
    /// while 32 × 32 sub-blocks keep the lines in use in cache.
    pub fn transpose_into<T>(src: &[T], lds: usize, rows: usize, cols: usize, out: &mut [T], ldo: usize) -> () {
        let (r8, c8) = (rows / 8 * 8, cols / 8 * 8);
        for jb in (0..c8).step_by(32) {
            for ib in (0..r8).step_by(32) {
                for j0 in (jb..(jb + 32).min(c8)).step_by(8) {
                    for i0 in (ib..(ib + 32).min(r8)).step_by(8) {
                        let mut b = [[T::zero(); 8]; 8];
                        for (jj, bj) in b.iter_mut().enumerate() {
                            bj.copy_from_slice(&src[(j0 + jj) * lds + i0..(j0 + jj) * lds + i0 + 8]);
                        }
                        for ii in 0..8 {
                            let o = &mut out[(i0 + ii) * ldo + j0..(i0 + ii) * ldo + j0 + 8];
                            for (jj, v) in o.iter_mut().enumerate() {
                                *v = b[jj][ii];
                            }
                        }
                    }
                }
            }
        }
        // Ragged edges: the last cols % 8 columns of every row, then the last rows % 8 rows.
        for i in 0..rows {
            for j in (if i < r8 { c8 } else { 0 })..cols {
                out[i * ldo + j] = src[j * lds + i];
            }
        }
    }
}

multiversion! {
    /// Σ_j g_j (1 − d_j) (cosine backward row sums).
    pub fn dot_one_minus<T>(g: &[T], d: &[T]) -> T {
        let mut acc = [T::zero(); 8];
        let n = g.len().min(d.len());
        let chunks = n / 8;
        for c in 0..chunks {
            for l in 0..8 {
                acc[l] += g[c * 8 + l] * (T::one() - d[c * 8 + l]);
            }
        }
        let mut s = T::zero();
        for k in chunks * 8..n {
            s += g[k] * (T::one() - d[k]);
        }
        s + ((acc[0] + acc[4]) + (acc[2] + acc[6])) + ((acc[1] + acc[5]) + (acc[3] + acc[7]))
    }
}

multiversion! {
    /// acc_j += w_j (column sums, one row at a time in a fixed order).
    pub fn add_assign<T>(acc: &mut [T], w: &[T]) -> () {
        for (a, &v) in acc.iter_mut().zip(w) {
            *a += v;
        }
    }
}

multiversion! {
    /// Whether any 0 < d_j² ≤ tol·(a + b_j): a near pair whose backward weight 1/d is
    /// huge (pairs at distance exactly 0 have weight 0 and need nothing).
    pub fn any_near<T>(dist: &[T], a: T, b: &[T], tol: T) -> bool {
        let mut any = false;
        for (&dv, &bv) in dist.iter().zip(b) {
            any |= (dv > T::zero()) & (dv * dv <= tol * (a + bv));
        }
        any
    }
}

multiversion! {
    /// Σ v with eight independent accumulators (a plain fold is one long dependency chain).
    pub fn sum<T>(v: &[T]) -> T {
        let mut acc = [T::zero(); 8];
        let chunks = v.len() / 8;
        for c in 0..chunks {
            for l in 0..8 {
                acc[l] += v[c * 8 + l];
            }
        }
        let mut s = T::zero();
        for &x in &v[chunks * 8..] {
            s += x;
        }
        s + ((acc[0] + acc[4]) + (acc[2] + acc[6])) + ((acc[1] + acc[5]) + (acc[3] + acc[7]))
    }
}
