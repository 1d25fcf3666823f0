//! The float trait the kernels are generic over, with the per-type GEMM.

use num_traits::{Float, FromPrimitive, NumAssign};
use std::fmt::Debug;
use std::iter::Sum;

pub trait Real:
    Float + FromPrimitive + NumAssign + Sum + Debug + Default + Send + Sync + Copy + 'static
{
    /// Machine epsilon of the type.
    const EPS: Self;
    /// Relative size of a squared distance (against the squared norms) under
    /// which the fast product form ‖x‖²+‖y‖²−2x·y is recomputed as Σ(x−y)².
    const CANCEL_TOL: Self;

    /// The (value, index) order as one integer, for values ≥ 0: the bit patterns
    /// of non-negative floats order as the values do (`+ 0.0` turns a −0 into +0).
    /// 64 bits for f32, so a top-k cut compares one word per step.
    type PairKey: Ord + Copy + Send + Sync + Debug;
    fn pair_key(self, j: u32) -> Self::PairKey;
    /// The pair a key was made from (a −0 comes back as +0).
    fn from_pair_key(k: Self::PairKey) -> (Self, u32);

    /// `C = alpha * A·B + beta * C` with arbitrary (row, column) strides.
    ///
    /// # Safety
    /// The pointers and strides must describe valid `m×k`, `k×n`, `m×n` matrices,
    /// and `c` must not alias `a` or `b`.
    #[allow(clippy::too_many_arguments)]
    unsafe fn gemm_raw(
        m: usize, k: usize, n: usize, alpha: Self,
        a: *const Self, rsa: isize, csa: isize,
        b: *const Self, rsb: isize, csb: isize,
        beta: Self, c: *mut Self, rsc: isize, csc: isize,
    );

    #[inline(always)]
    fn c(v: f64) -> Self {
        Self::from_f64(v).unwrap()
    }
    #[inline(always)]
    fn to_f64_(self) -> f64 {
        self.to_f64().unwrap()
    }
}

impl Real for f32 {
    const EPS: Self = f32::EPSILON;
    const CANCEL_TOL: Self = 1.0 / 1024.0;
    type PairKey = u64;
    #[inline(always)]
    fn pair_key(self, j: u32) -> u64 {
        (u64::from((self + 0.0).to_bits()) << 32) | u64::from(j)
    }
    #[inline(always)]
    fn from_pair_key(k: u64) -> (f32, u32) {
        (f32::from_bits((k >> 32) as u32), k as u32)
    }
    unsafe fn gemm_raw(
        m: usize, k: usize, n: usize, alpha: f32,
        a: *const f32, rsa: isize, csa: isize,
        b: *const f32, rsb: isize, csb: isize,
        beta: f32, c: *mut f32, rsc: isize, csc: isize,
    ) {
        gemm_any::<f32>(m, k, n, alpha, a, rsa, csa, b, rsb, csb, beta, c, rsc, csc)
    }
}

impl Real for f64 {
    const EPS: Self = f64::EPSILON;
    const CANCEL_TOL: Self = 1.0e-7;
    type PairKey = u128;
    #[inline(always)]
    fn pair_key(self, j: u32) -> u128 {
        (u128::from((self + 0.0).to_bits()) << 32) | u128::from(j)
    }
    #[inline(always)]
    fn from_pair_key(k: u128) -> (f64, u32) {
        (f64::from_bits((k >> 32) as u64), k as u32)
    }
    unsafe fn gemm_raw(
        m: usize, k: usize, n: usize, alpha: f64,
        a: *const f64, rsa: isize, csa: isize,
        b: *const f64, rsb: isize, csb: isize,
        beta: f64, c: *mut f64, rsc: isize, csc: isize,
    ) {
        gemm_any::<f64>(m, k, n, alpha, a, rsa, csa, b, rsb, csb, beta, c, rsc, csc)
    }
}

/// `C = alpha·A·B + beta·C` through the `gemm` crate's run-time dispatched micro-kernels
/// (AVX-512 or FMA/AVX2 on x86-64, through the `x86-v4` feature; about 95 GFLOP/s per core with AVX2 on an
/// earlier box against matrixmultiply's 80, about 100 with AVX-512 on the Xeon of BENCHMARKS.md).
/// Called single-threaded: reprkit's kernels parallelise over their own fixed tiles, so the order
/// of a product's sums never depends on the thread count.
#[allow(clippy::too_many_arguments)]
#[inline]
unsafe fn gemm_any<T: Real>(
    m: usize, k: usize, n: usize, alpha: T,
    a: *const T, rsa: isize, csa: isize,
    b: *const T, rsb: isize, csb: isize,
    beta: T, c: *mut T, rsc: isize, csc: isize,
) {
    // The crate's convention is dst := alpha·dst + beta·lhs·rhs, with read_dst = false meaning
    // dst is write-only (so a NaN left in an uninitialised buffer never leaks through 0·NaN).
    let read_dst = beta != T::zero();
    gemm::gemm(
        m, n, k, c, csc, rsc, read_dst, a, csa, rsa, b, csb, rsb, beta, alpha, false, false, false,
        gemm::Parallelism::None,
    )
}
