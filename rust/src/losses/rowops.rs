//! Row primitives of the softmax kernels. Reductions run over 8 fixed lanes
//! (a fixed summation order that the compiler can vectorise), and functions
//! declared with `multiversion!` (crate::simd) are also compiled for AVX2+FMA, chosen when the
//! CPU has it (wheels target the x86-64 baseline). No mul+add is contracted into an FMA, so both
//! builds give the same bits.

use super::common::exp_f32;
use crate::Real;
use std::any::TypeId;

const LANES: usize = 8;


#[inline(always)]
fn is_f32<T: 'static>() -> bool {
    TypeId::of::<T>() == TypeId::of::<f32>()
}
/// The slice as f32 (only called when T is f32).
#[inline(always)]
fn f32s<T: Real>(v: &[T]) -> &[f32] {
    debug_assert!(is_f32::<T>());
    // SAFETY: T is f32 (checked by every caller), so the layout is identical.
    unsafe { &*(v as *const [T] as *const [f32]) }
}
#[inline(always)]
fn f32s_mut<T: Real>(v: &mut [T]) -> &mut [f32] {
    debug_assert!(is_f32::<T>());
    // SAFETY: as in `f32s`.
    unsafe { &mut *(v as *mut [T] as *mut [f32]) }
}
#[inline(always)]
fn to32<T: Real>(x: T) -> f32 {
    x.to_f32().unwrap_or(f32::NAN)
}
#[inline(always)]
fn from32<T: Real>(x: f32) -> T {
    T::from_f32(x).unwrap_or_else(T::nan)
}

/// e^x: the vectorisable polynomial of [`exp_f32`] for f32 (0 below −87,
/// also for −∞), the standard library for f64.
#[inline(always)]
pub fn exp1<T: Real>(x: T) -> T {
    if is_f32::<T>() {
        from32(exp_f32(to32(x)))
    } else {
        x.exp()
    }
}

/// Largest entry (−∞ for an empty slice).
#[inline(always)]
pub fn max<T: Real>(v: &[T]) -> T {
    if is_f32::<T>() {
        return from32(max_impl(f32s(v)));
    }
    max_impl(v)
}

#[inline(always)]
fn max_impl<U: Real>(v: &[U]) -> U {
    let mut acc = [U::neg_infinity(); LANES];
    let ch = v.chunks_exact(LANES);
    let tail = ch.remainder();
    for c in ch {
        for l in 0..LANES {
            acc[l] = if c[l] > acc[l] { c[l] } else { acc[l] };
        }
    }
    let mut m = U::neg_infinity();
    for &x in acc.iter().chain(tail) {
        m = if x > m { x } else { m };
    }
    m
}

/// Smallest entry (+∞ for an empty slice).
#[inline(always)]
pub fn min<T: Real>(v: &[T]) -> T {
    let mut m = T::infinity();
    for &x in v {
        m = if x < m { x } else { m };
    }
    m
}

#[inline(always)]
fn fold_lanes<U: Real>(acc: [U; LANES], tail: U) -> U {
    ((acc[0] + acc[4]) + (acc[2] + acc[6])) + ((acc[1] + acc[5]) + (acc[3] + acc[7])) + tail
}

/// `out_j = e^{src_j − shift}`; returns Σ_j out_j.
#[inline(always)]
pub fn exp_shift_into<T: Real>(out: &mut [T], src: &[T], shift: T) -> T {
    if is_f32::<T>() {
        return from32(exp_shift_into_impl(f32s_mut(out), f32s(src), to32(shift), exp_f32));
    }
    exp_shift_into_impl(out, src, shift, |x: T| x.exp())
}

#[inline(always)]
fn exp_shift_into_impl<U: Real, E: Fn(U) -> U>(out: &mut [U], src: &[U], shift: U, e: E) -> U {
    // Two plain loops: the exponential vectorises only outside a lane-structured loop.
    for (o, &x) in out.iter_mut().zip(src) {
        *o = e(x - shift);
    }
    sum_impl(&out[..out.len().min(src.len())])
}

#[inline(always)]
fn sum_impl<U: Real>(v: &[U]) -> U {
    let mut acc = [U::zero(); LANES];
    let ch = v.chunks_exact(LANES);
    let tail = ch.remainder().iter().fold(U::zero(), |a, &b| a + b);
    for c in ch {
        for l in 0..LANES {
            acc[l] += c[l];
        }
    }
    fold_lanes(acc, tail)
}

/// `v_j ← e^{v_j − shift}` in place; returns Σ_j v_j.
#[inline(always)]
pub fn exp_shift<T: Real>(v: &mut [T], shift: T) -> T {
    if is_f32::<T>() {
        return from32(exp_shift_impl(f32s_mut(v), to32(shift), exp_f32));
    }
    exp_shift_impl(v, shift, |x: T| x.exp())
}

#[inline(always)]
fn exp_shift_impl<U: Real, E: Fn(U) -> U>(v: &mut [U], shift: U, e: E) -> U {
    for x in v.iter_mut() {
        *x = e(*x - shift);
    }
    sum_impl(v)
}

/// `v_j ← e^{v_j − shift}·(a + b_j)`.
#[inline(always)]
pub fn exp_shift_mul<T: Real>(v: &mut [T], shift: T, a: T, b: &[T]) {
    if is_f32::<T>() {
        let (shift, a) = (to32(shift), to32(a));
        for (x, &bj) in f32s_mut(v).iter_mut().zip(f32s(b)) {
            *x = exp_f32(*x - shift) * (a + bj);
        }
        return;
    }
    for (x, &bj) in v.iter_mut().zip(b) {
        *x = (*x - shift).exp() * (a + bj);
    }
}

/// `v_j ← (e^{v_j − a} + e^{v_j − b_j})·c`.
#[inline(always)]
pub fn exp2_sum<T: Real>(v: &mut [T], a: T, b: &[T], c: T) {
    if is_f32::<T>() {
        let (a, c) = (to32(a), to32(c));
        for (x, &bj) in f32s_mut(v).iter_mut().zip(f32s(b)) {
            *x = (exp_f32(*x - a) + exp_f32(*x - bj)) * c;
        }
        return;
    }
    for (x, &bj) in v.iter_mut().zip(b) {
        *x = ((*x - a).exp() + (*x - bj).exp()) * c;
    }
}

/// `v_j ← a_w·e^{v_j − a} + b_w_j·e^{v_j − b_j}`.
#[inline(always)]
pub fn exp2_wsum<T: Real>(v: &mut [T], a: T, aw: T, b: &[T], bw: &[T]) {
    if is_f32::<T>() {
        let (a, aw) = (to32(a), to32(aw));
        for ((x, &bj), &wj) in f32s_mut(v).iter_mut().zip(f32s(b)).zip(f32s(bw)) {
            *x = aw * exp_f32(*x - a) + wj * exp_f32(*x - bj);
        }
        return;
    }
    for ((x, &bj), &wj) in v.iter_mut().zip(b).zip(bw) {
        *x = aw * (*x - a).exp() + wj * (*x - bj).exp();
    }
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
        assert_eq!(max(&v), v.iter().cloned().fold(f64::NEG_INFINITY, f64::max));
        assert_eq!(min(&v), v.iter().cloned().fold(f64::INFINITY, f64::min));
        let mut out = vec![0.0; v.len()];
        let s = exp_shift_into(&mut out, &v, 1.0);
        let want: f64 = v.iter().map(|x| (x - 1.0).exp()).sum();
        assert!((s - want).abs() < 1e-12 * want);
        let mut w = v.clone();
        assert_eq!(exp_shift(&mut w, 1.0), s);
        assert_eq!(w, out);
        let v32: Vec<f32> = v.iter().map(|&x| x as f32).collect();
        let mut o32 = vec![0.0f32; v.len()];
        // The AVX2 build and the baseline build agree bit for bit.
        crate::simd::multiversion! {
            fn both<T>(o: &mut [T], v: &[T]) -> T { exp_shift_into(o, v, T::c(0.5)) }
        }
        let a = both(&mut o32, &v32);
        let mut p32 = vec![0.0f32; v.len()];
        let b = exp_shift_into(&mut p32, &v32, 0.5);
        assert_eq!(a.to_bits(), b.to_bits());
        assert_eq!(o32, p32);
    }
}
