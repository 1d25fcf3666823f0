//! t-SNE (and SNE / symmetric SNE with a Gaussian output kernel).
//!
//! * [`affinity`]: perplexity calibration on kNN distances and the symmetric,
//!   normalised sparse input affinities P (CSR).
//! * [`bh`]: Barnes-Hut repulsion on a quadtree (2-D) or octree (3-D).
//! * [`exact`]: the O(N²) gradient and KL, in fixed tiles of rows.
//! * [`fft`]: FFT-interpolated repulsion on a regular grid (1-D and 2-D).
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
pub mod fft;
pub mod locality;
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

pub use crate::rng::SplitMix;
