//! Conversions between NumPy arrays and the row-major slices the kernels take.

use numpy::{PyArray2, PyArrayMethods};
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;

/// A borrowed, C-contiguous 2-D float array of either precision.
pub enum Arr2<'py> {
    F32(Bound<'py, PyArray2<f32>>),
    F64(Bound<'py, PyArray2<f64>>),
}

impl<'py> Arr2<'py> {
    pub fn extract(obj: &Bound<'py, PyAny>, name: &str) -> PyResult<Self> {
        if let Ok(a) = obj.cast::<PyArray2<f32>>() {
            return Ok(Arr2::F32(a.clone()));
        }
        if let Ok(a) = obj.cast::<PyArray2<f64>>() {
            return Ok(Arr2::F64(a.clone()));
        }
        Err(PyTypeError::new_err(format!("{name}: expected a 2-D float32 or float64 numpy array")))
    }
}

/// Borrows a typed 2-D array as a contiguous slice (the Python layer guarantees C order).
pub fn slice_of<'a, T: numpy::Element>(a: &'a Bound<'_, PyArray2<T>>, name: &str) -> PyResult<&'a [T]> {
    // SAFETY: the array stays alive for 'a and the kernels only read it; the
    // Python layer never hands the same array out for writing during a call.
    unsafe { a.as_slice() }.map_err(|_| PyTypeError::new_err(format!("{name}: array must be C-contiguous")))
}

/// A new 2-D array owning `v` (row-major `rows × cols`).
pub fn to_pyarray<'py, T: numpy::Element>(py: Python<'py>, v: Vec<T>, rows: usize, cols: usize) -> PyResult<Bound<'py, PyArray2<T>>> {
    numpy::PyArray1::from_vec(py, v).reshape([rows, cols])
}
