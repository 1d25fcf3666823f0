//! `reprkit._core`: the thin PyO3 layer over `reprkit-core`.
//!
//! Each binding takes NumPy arrays (C-contiguous float32/float64, prepared by
//! the Python layer), releases the GIL, runs the kernel in reprkit's own rayon
//! pool through [`runtime::run`], and returns NumPy arrays. Validation with
//! friendly messages happens in Python; the kernels re-check what they rely on
//! and their errors are mapped to `reprkit.errors` classes.

use pyo3::prelude::*;

mod arrays;
mod distances;
mod distillation;
mod held;
mod knn;
mod losses;
mod margin;
mod metrics;
mod multimodal;
mod neighbor_embedding;
mod pairs;
mod proxies;
mod redundancy;
mod runtime;
mod spectral;
mod supcon;
mod tsne;
mod xent_rows;

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    runtime::register(m)?;
    distances::register(m)?;
    distillation::register(m)?;
    losses::register(m)?;
    knn::register(m)?;
    margin::register(m)?;
    metrics::register(m)?;
    pairs::register(m)?;
    proxies::register(m)?;
    redundancy::register(m)?;
    multimodal::register(m)?;
    spectral::register(m)?;
    supcon::register(m)?;
    tsne::register(m)?;
    neighbor_embedding::register(m)?;
    xent_rows::register(m)?;
    Ok(())
}
