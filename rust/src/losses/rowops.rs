//! Row primitives of the softmax kernels. Reductions run over 8 fixed lanes
//! (a fixed summation order that the compiler can vectorise), and [`simd`]
//! runs a block of them compiled for AVX2+FMA when the CPU has it (wheels
//! target the x86-64 baseline). No mul+add is contracted into an FMA, so both
//! builds give the same bits.

use super::common::exp_f32;
use crate::Real;
use std::any::TypeId;

const LANES: usize = 8;

#[cfg(target_arch = "x86_64")]
fn has_avx2() -> bool {
    use std::sync::OnceLock;
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"))
}

/// Runs `f`, inlined into a frame compiled for AVX2+FMA when available, so the
/// `#[inline(always)]` loops below vectorise 8-wide inside it.
#[inline(always)]
pub fn simd<R, F: FnOnce() -> R>(f: F) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx2,fma")]
        unsafe fn avx2<R, F: FnOnce() -> R>(f: F) -> R {
            f()
        }
        if has_avx2() {
            // SAFETY: the CPU supports AVX2 and FMA (checked at run time).
            return unsafe { avx2(f) };
        }
    }
    f()
}

/// e^x: the vectorisable polynomial of [`exp_f32`] for f32 (0 below −87,
/// also for −∞), the standard library for f64.
#[inline(always)]
pub fn exp1<T: Real>(x: T) -> T {
    if TypeId::of::<T>() == TypeId::of::<f32>() {
        // SAFETY: T is f32 (checked above); the copies are same-size bit casts.
        unsafe {
            let y = exp_f32(std::mem::transmute_copy::<T, f32>(&x));
            std::mem::transmute_copy::<f32, T>(&y)
        }
    } else {
        x.exp()
    }
}

/// Largest entry (−∞ for an empty slice).
#[inline(always)]
pub fn max<T: Real>(v: &[T]) -> T {
    let mut acc = [T::neg_infinity(); LANES];
    let ch = v.chunks_exact(LANES);
    let tail = ch.remainder();
    for c in ch {
        for l in 0..LANES {
            acc[l] = if c[l] > acc[l] { c[l] } else { acc[l] };
        }
    }
    let mut m = T::neg_infinity();
    for &x in acc.iter().chain(tail) {
        m = if x > m { x } else { m };
    }
    m
}

/// Smallest entry (+∞ for an empty slice).
#[inline(always)]
pub fn min<T: Real>(v: &[T]) -> T {
    let mut acc = [T::infinity(); LANES];
    let ch = v.chunks_exact(LANES);
    let tail = ch.remainder();
    for c in ch {
        for l in 0..LANES {
            acc[l] = if c[l] < acc[l] { c[l] } else { acc[l] };
        }
    }
    let mut m = T::infinity();
    for &x in acc.iter().chain(tail) {
        m = if x < m { x } else { m };
    }
    m
}

#[inline(always)]
fn fold_lanes<T: Real>(acc: [T; LANES], tail: T) -> T {
    ((acc[0] + acc[4]) + (acc[2] + acc[6])) + ((acc[1] + acc[5]) + (acc[3] + acc[7])) + tail
}

/// `out_j = e^{src_j − shift}`; returns Σ_j out_j.
#[inline(always)]
pub fn exp_shift_into<T: Real>(out: &mut [T], src: &[T], shift: T) -> T {
    let n = out.len().min(src.len());
    let (out, src) = (&mut out[..n], &src[..n]);
    let mut acc = [T::zero(); LANES];
    let full = n - n % LANES;
    for (o, s) in out[..full].chunks_exact_mut(LANES).zip(src[..full].chunks_exact(LANES)) {
        for l in 0..LANES {
            o[l] = exp1(s[l] - shift);
            acc[l] += o[l];
        }
    }
    let mut tail = T::zero();
    for (o, &s) in out[full..].iter_mut().zip(&src[full..]) {
        *o = exp1(s - shift);
        tail += *o;
    }
    fold_lanes(acc, tail)
}

/// `v_j ← e^{v_j − shift}` in place; returns Σ_j v_j.
#[inline(always)]
pub fn exp_shift<T: Real>(v: &mut [T], shift: T) -> T {
    let mut acc = [T::zero(); LANES];
    let full = v.len() - v.len() % LANES;
    let (head, rest) = v.split_at_mut(full);
    for c in head.chunks_exact_mut(LANES) {
        for l in 0..LANES {
            c[l] = exp1(c[l] - shift);
            acc[l] += c[l];
        }
    }
    let mut tail = T::zero();
    for x in rest.iter_mut() {
        *x = exp1(*x - shift);
        tail += *x;
    }
    fold_lanes(acc, tail)
}

/// `v ← a·v`.
#[inline(always)]
pub fn scale<T: Real>(v: &mut [T], a: T) {
    v.iter_mut().for_each(|x| *x *= a);
}

/// `y ← y + a·x`.
#[inline(always)]
pub fn axpy<T: Real>(y: &mut [T], a: T, x: &[T]) {
    for (yv, &xv) in y.iter_mut().zip(x) {
        *yv += a * xv;
    }
}

/// `y ← y + x`.
#[inline(always)]
pub fn add<T: Real>(y: &mut [T], x: &[T]) {
    for (yv, &xv) in y.iter_mut().zip(x) {
        *yv += xv;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reductions_match_naive() {
        let v: Vec<f64> = (0..37).map(|i| ((i * 7919) % 101) as f64 / 10.0 - 5.0).collect();
        assert_eq!(simd(|| max(&v)), v.iter().cloned().fold(f64::NEG_INFINITY, f64::max));
        assert_eq!(simd(|| min(&v)), v.iter().cloned().fold(f64::INFINITY, f64::min));
        let mut out = vec![0.0; v.len()];
        let s = simd(|| exp_shift_into(&mut out, &v, 1.0));
        let want: f64 = v.iter().map(|x| (x - 1.0).exp()).sum();
        assert!((s - want).abs() < 1e-12 * want);
        let mut w = v.clone();
        assert_eq!(exp_shift(&mut w, 1.0), s);
        assert_eq!(w, out);
        let v32: Vec<f32> = v.iter().map(|&x| x as f32).collect();
        let mut o32 = vec![0.0f32; v.len()];
        // The AVX2 build and the baseline build agree bit for bit.
        let a = simd(|| exp_shift_into(&mut o32, &v32, 0.5));
        let mut p32 = vec![0.0f32; v.len()];
        let b = exp_shift_into(&mut p32, &v32, 0.5);
        assert_eq!(a.to_bits(), b.to_bits());
        assert_eq!(o32, p32);
    }
}
