//! t-SNE (and SNE / symmetric SNE with a Gaussian output kernel).
//!
//! * [`affinity`]: perplexity calibration on kNN distances and the symmetric,
//!   normalised sparse input affinities P (CSR).
//! * [`bh`]: Barnes-Hut repulsion on a quadtree (2-D) or octree (3-D).
//! * [`exact`]: the O(N²) gradient and KL, in fixed tiles of rows.
//! * [`optimize`]: gradient descent with early exaggeration, momentum,
//!   delta-bar-delta gains and a bound on the step norm; placing new points
//!   against a fixed embedding.
//!
//! Gradient unit: the kernels return ∂C/∂y / 4 (openTSNE's convention), so a
//! learning rate η here equals η/4 in scikit-learn's convention.
//! Everything in the optimiser is `f64` (the output is low-dimensional).

pub mod affinity;
pub mod bh;
pub mod exact;
pub mod optimize;
pub mod simd;

pub use affinity::Csr;

/// Output-space similarity kernel.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Kernel {
    /// Student-t with `dof` degrees of freedom: w = (1 + d²/α)^(−α); α = 1 is t-SNE.
    StudentT(f64),
    /// Symmetric SNE: q_ij = exp(−d²_ij) / Σ_{k≠l} exp(−d²_kl), P symmetric.
    Gaussian,
    /// Asymmetric SNE: q_{j|i} = exp(−d²_ij) / Σ_{k≠i} exp(−d²_ik), P conditional.
    Sne,
}

/// A small seeded PRNG (splitmix64): one stream per item, never per thread.
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
    #[inline]
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}
