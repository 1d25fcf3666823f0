//! The error type every kernel returns; the Python layer maps each variant to
//! a `reprkit.errors` class (ValueError or TypeError subclasses).

use std::fmt;

#[derive(Debug, Clone, PartialEq)]
pub enum Error {
    /// Wrong shapes or sizes (mismatched dimensions, empty input, buffer length).
    Shape(String),
    /// NaN or infinity where finite values are required.
    NonFinite(String),
    /// A parameter outside its valid range (perplexity >= n, unknown metric, ...).
    InvalidParameter(String),
    /// Anything else that makes the input unusable.
    InvalidInput(String),
    /// The computation was interrupted (e.g. Ctrl-C seen by a callback).
    Interrupted,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Shape(m) | Error::NonFinite(m) | Error::InvalidParameter(m) | Error::InvalidInput(m) => {
                f.write_str(m)
            }
            Error::Interrupted => f.write_str("interrupted"),
        }
    }
}

impl std::error::Error for Error {}

pub type Result<T> = std::result::Result<T, Error>;

/// Checks that a row-major buffer holds `rows * cols` values.
pub fn check_len(name: &str, len: usize, rows: usize, cols: usize) -> Result<()> {
    if rows.checked_mul(cols) != Some(len) {
        return Err(Error::Shape(format!(
            "{name}: buffer has {len} values, expected {rows} x {cols}"
        )));
    }
    Ok(())
}

/// Checks that every value is finite.
pub fn check_finite<T: crate::Real>(name: &str, v: &[T]) -> Result<()> {
    if v.iter().any(|x| !x.is_finite()) {
        return Err(Error::NonFinite(format!("{name} contains NaN or infinity")));
    }
    Ok(())
}
