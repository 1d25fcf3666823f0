//! reprkit-core: the numerical kernels of reprkit, in plain Rust.
//!
//! Every kernel works on row-major slices, is generic over `f32`/`f64` through
//! [`Real`], runs its parallel loops on the *current* rayon pool (the Python
//! layer installs reprkit's own pool around each call) and returns
//! [`Result`] instead of panicking on bad input.
//!
//! Parallel loops split work into fixed-size tiles that do not depend on the
//! number of threads, so results are bit-identical for any thread count.

pub mod distances;
pub mod error;
pub mod knn;
pub mod linalg;
pub mod mem;
pub mod losses;
pub mod real;
pub mod rng;
pub mod sparse;
pub(crate) mod simd;

pub use error::{Error, Result};
pub use real::Real;
pub mod eigen;
pub mod spectral;
pub mod pca;
pub mod mds;
pub mod tsne;
pub mod knn_approx;
pub mod metrics;
