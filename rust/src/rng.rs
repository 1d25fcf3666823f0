//! A tiny seeded PRNG (splitmix64) for start vectors and random projections.
//!
//! Values are derived from `(seed, index)` so each vector entry is seeded per
//! item: the result never depends on how work is split across threads.

/// One splitmix64 step: a well-mixed 64-bit hash of `x`.
#[inline]
pub fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// A uniform value in (−1, 1) for entry `i` of stream `seed`.
#[inline]
pub fn uniform_pm1(seed: u64, i: u64) -> f64 {
    let h = splitmix64(splitmix64(seed) ^ i.wrapping_mul(0xD1B5_4A32_D192_ED03));
    // 53 random bits → [0, 1), then map to (−1, 1) avoiding exact 0 bias.
    let u = ((h >> 11) as f64 + 0.5) * (1.0 / (1u64 << 53) as f64);
    2.0 * u - 1.0
}

/// `n` uniform(−1, 1) values of stream `seed`.
pub fn uniform_vec(seed: u64, n: usize) -> Vec<f64> {
    (0..n as u64).map(|i| uniform_pm1(seed, i)).collect()
}

/// A sequential splitmix64 stream, for work done item by item in a fixed order
/// (one stream per item or per tree, never per thread).
#[derive(Clone, Debug)]
pub struct SplitMix(pub u64);

impl SplitMix {
    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, n).
    #[inline]
    pub fn below(&mut self, n: usize) -> usize {
        (((self.next_u64() >> 11) as u128 * n as u128) >> 53) as usize
    }
    /// Uniform in [0, 1).
    #[inline]
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn deterministic_and_centred() {
        let a = uniform_vec(7, 10_000);
        assert_eq!(a, uniform_vec(7, 10_000));
        assert_ne!(a, uniform_vec(8, 10_000));
        let mean = a.iter().sum::<f64>() / a.len() as f64;
        assert!(mean.abs() < 0.03);
        assert!(a.iter().all(|v| v.abs() < 1.0));
    }
}
